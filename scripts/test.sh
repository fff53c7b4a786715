#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it through .ci/run):
#   formatting, clippy, unit and HTTP contract tests, then the end-to-end suites against a
#   local kube-apiserver + etcd, the deployment checks (Helm/kustomize) and schemathesis
#   against the simulator. Exits non-zero on the first failure.
#
# Everything it needs is built or installed by itself and cached outside the repository
# (ALTOSTRAT_CACHE, default ~/.cache/altostrat-vpn-operator).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${ALTOSTRAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/altostrat-vpn-operator}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"
export NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

step "control plane binaries (kube-apiserver, etcd, helm)"
scripts/control-plane.sh build

step "deployment-check tools (promql-check, chart-readme, actionlint)"
scripts/dev-tools.sh build

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "unit, CRD drift and simulator contract tests"
cargo test --locked

step "end-to-end suites against a local control plane"
cp_dir="$(mktemp -d "${TMPDIR:-/tmp}/altostrat-cp.XXXXXX")"
trap 'scripts/control-plane.sh down "$cp_dir" >/dev/null 2>&1 || true' EXIT
scripts/control-plane.sh up "$cp_dir"
export KUBECONFIG="$cp_dir/kubeconfig"
cargo test --locked --test 'e2e_*' -- --ignored --test-threads="${E2E_THREADS:-3}"

if [[ -x scripts/deploy-checks.sh ]]; then
  step "deployment checks (helm lint/template/install, kustomize)"
  HELM="$(scripts/control-plane.sh bin-dir)/helm" scripts/deploy-checks.sh
fi

if [[ -x scripts/schemathesis.sh ]]; then
  step "schemathesis against the simulator"
  scripts/schemathesis.sh "$CARGO_TARGET_DIR/debug/vpn-operator"
fi

step "all checks passed in $((SECONDS - started))s"
