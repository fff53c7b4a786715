#!/usr/bin/env bash
# Regenerates deploy/helm/altostrat-vpn-operator/README.md from the chart's README.md.gotmpl
# and the `# --` comments in its values.yaml (hack/tools/chart-readme, built and cached by
# scripts/dev-tools.sh). scripts/deploy-checks.sh fails when the committed README is stale.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/dev-tools.sh build
"$(scripts/dev-tools.sh path chart-readme)" -w deploy/helm/altostrat-vpn-operator
echo "wrote deploy/helm/altostrat-vpn-operator/README.md"
