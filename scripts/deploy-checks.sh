#!/usr/bin/env bash
# Deployment checks against a running control plane (KUBECONFIG must point at it):
# Helm lint/template/install/uninstall, kustomize base and overlay, chart CRDs == crds/.
#   HELM=/path/to/helm scripts/deploy-checks.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HELM="${HELM:-$(scripts/control-plane.sh bin-dir)/helm}"
CHART=deploy/helm/altostrat-vpn-operator
: "${KUBECONFIG:?KUBECONFIG must point at the local control plane}"
export HELM_CACHE_HOME="${TMPDIR:-/tmp}/helm-cache" HELM_CONFIG_HOME="${TMPDIR:-/tmp}/helm-config" HELM_DATA_HOME="${TMPDIR:-/tmp}/helm-data"

failures=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
check() { # check DESCRIPTION COMMAND...
  local what="$1"; shift
  local out; if out="$("$@" 2>&1)"; then pass "$what"; else fail "$what"; printf '%s\n' "$out" | tail -20; fi
}

check "chart CRDs are identical to crds/" diff -r -x kustomization.yaml crds "$CHART/crds"
check "helm lint --strict" "$HELM" lint --strict "$CHART" --set altostrat.token=dummy
check "helm template | kubectl apply --dry-run=server" \
  bash -c "kubectl create namespace altostrat-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null &&
           '$HELM' template avo '$CHART' -n altostrat-system --set altostrat.existingSecret=avo-token --include-crds |
           kubectl apply --server-side --dry-run=server -f -"

if "$HELM" template avo "$CHART" >/dev/null 2>&1; then
  fail "helm template without any token must fail"
else
  pass "helm template without any token fails with a clear message"
fi
rendered="$("$HELM" template avo "$CHART" --set altostrat.token=x --set replicaCount=2)"
grep -A1 'name: LEADER_ELECTION$' <<<"$rendered" | grep -q '"true"' && pass "replicaCount=2 turns leader election on" || fail "replicaCount=2 turns leader election on"
rendered="$("$HELM" template avo "$CHART" --set altostrat.token=x --set 'watchNamespaces={team-a,team-b}')"
if grep -q '^kind: ClusterRole$' <<<"$rendered"; then fail "watchNamespaces renders Roles only"
elif [[ "$(grep -c '^kind: Role$' <<<"$rendered")" == 2 ]]; then pass "watchNamespaces renders one Role per namespace"
else fail "watchNamespaces renders one Role per namespace"; fi
if "$HELM" template avo "$CHART" --set altostrat.token=x --set logFormat=xml >/dev/null 2>&1; then
  fail "values.schema.json rejects logFormat=xml"
else
  pass "values.schema.json rejects invalid values"
fi

check "helm install (real) into altostrat-system" \
  "$HELM" install avo "$CHART" -n altostrat-system --create-namespace --set altostrat.token=dummy --set metrics.serviceMonitor.enabled=false --wait=false
check "installed Deployment, ServiceAccount, ClusterRole(Binding), Service, Secret exist" \
  kubectl -n altostrat-system get deployment/avo-altostrat-vpn-operator serviceaccount/avo-altostrat-vpn-operator \
    clusterrole/avo-altostrat-vpn-operator clusterrolebinding/avo-altostrat-vpn-operator \
    service/avo-altostrat-vpn-operator-metrics secret/avo-altostrat-vpn-operator-token
check "installed ServiceAccount may patch VpnInstance status and read Secrets, but not delete Secrets" bash -c '
  sa=system:serviceaccount:altostrat-system:avo-altostrat-vpn-operator
  [[ $(kubectl auth can-i patch vpninstances.vpn.altostrat.io/status --as=$sa -n default) == yes ]] &&
  [[ $(kubectl auth can-i get secrets --as=$sa -n default) == yes ]] &&
  [[ $(kubectl auth can-i delete secrets --as=$sa -n default 2>/dev/null || true) == no ]]'
check "helm uninstall" "$HELM" uninstall avo -n altostrat-system --wait=false

check "kubectl apply -k deploy/kustomize/base (server-side)" kubectl apply --server-side --force-conflicts -k deploy/kustomize/base
check "kustomize overlay validates server-side" \
  bash -c "kubectl kustomize deploy/kustomize/overlays/example | kubectl apply --server-side --force-conflicts --dry-run=server -f -"
check "examples validate server-side" kubectl apply --dry-run=server -n default -f examples/instance.yaml -f examples/client-peer.yaml -f examples/site-peer.yaml
check "the invalid example is refused" bash -c "! kubectl apply --dry-run=server -n default -f examples/invalid-instance.yaml"
check "Argo CD health-check ConfigMap validates server-side" \
  bash -c "kubectl create namespace argocd --dry-run=client -o yaml | kubectl apply -f - >/dev/null &&
           kubectl apply --dry-run=server -f deploy/gitops/argocd-health.yaml"

if ((failures)); then echo "$failures deployment check(s) failed"; exit 1; fi
echo "all deployment checks passed"
