# shellcheck shell=bash
# Sourced by scripts/demo.sh and scripts/test.sh, which build and start a local control plane
# unless USE_EXISTING_CLUSTER=1 asks them to use the cluster KUBECONFIG names instead. Only the
# switch does: a KUBECONFIG in the environment is no request (CI machines may carry one for a
# cluster nobody meant to test against). Apart from absolute_kubeconfig, the functions run from
# the repository root.

# absolute_kubeconfig: KUBECONFIG with absolute paths, called before the scripts change to the
# repository root (a relative path names a file in the caller's directory).
absolute_kubeconfig() {
  [[ -n "${KUBECONFIG:-}" ]] || return 0
  local parts part absolute=()
  IFS=: read -ra parts <<<"$KUBECONFIG"
  for part in "${parts[@]}"; do absolute+=("$(realpath -m -- "$part")"); done
  KUBECONFIG="$(IFS=:; echo "${absolute[*]}")"
  export KUBECONFIG
}

# existing_cluster: succeeds when the switch is on (1 or true); exits on any other value, and
# on the switch without KUBECONFIG.
existing_cluster() {
  case "${USE_EXISTING_CLUSTER:-}" in
    "" | 0 | false) return 1 ;;
    1 | true) ;;
    *) echo "USE_EXISTING_CLUSTER=$USE_EXISTING_CLUSTER: set 1 to use the cluster in KUBECONFIG, or leave it unset for the local control plane" >&2
       exit 2 ;;
  esac
  [[ -n "${KUBECONFIG:-}" ]] ||
    { echo "USE_EXISTING_CLUSTER=1 needs KUBECONFIG naming the cluster's kubeconfig file" >&2; exit 2; }
}

# cluster_name: "context (server)" of KUBECONFIG; fails with a message when it does not answer.
cluster_name() {
  local context server
  context="$(kubectl config current-context)" || { echo "KUBECONFIG=$KUBECONFIG has no current context" >&2; return 1; }
  server="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  kubectl get --raw /version --request-timeout=15s >/dev/null ||
    { echo "the cluster of context $context ($server) does not answer" >&2; return 1; }
  echo "$context ($server)"
}

# refuse_if_operator_installed: an operator deployed in the cluster would reconcile the demo's
# or the tests' resources too, against the Altostrat API it is configured with.
refuse_if_operator_installed() {
  local found
  if ! found="$(kubectl get deployments -A -l app.kubernetes.io/name=altostrat-vpn-operator \
                  -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name} {end}' 2>&1)"; then
    echo "warning: could not check the cluster for an installed operator ($found)" >&2
    return 0
  fi
  [[ -z "$found" ]] && return 0
  echo "the operator is deployed in this cluster (${found% }): it would reconcile these resources against its own Altostrat API. Use a cluster without it." >&2
  return 1
}

# install_crds: this checkout's CRDs, server-side, established. It overwrites what the cluster
# had: use a cluster for development, not one where the operator manages real hubs.
install_crds() {
  kubectl apply --server-side --force-conflicts -k crds/ >/dev/null
  kubectl wait --for=condition=Established --timeout=60s \
    crd/vpninstances.vpn.altostrat.io crd/vpnpeers.vpn.altostrat.io >/dev/null
}

# remove_e2e_objects RUN: what the e2e suites of run RUN left (they label it, tests/e2e/support):
# namespaces, and cluster-scoped objects (ClusterRoles, bindings, CRD copies). Their operators
# have stopped, so the finalizers they put on resources and Secrets are removed first: nobody
# else would, and the namespaces would stay Terminating. So are the ownership records whose
# holder lived in those namespaces: no operator of the run is left to free them, and a later
# run reuses the hostnames.
remove_e2e_objects() {
  local selector="vpn.altostrat.io/e2e-run=$1" ns kind deadline=$((SECONDS + 180))
  for ns in $(kubectl get namespaces -l "$selector" -o jsonpath='{.items[*].metadata.name}'); do
    for kind in vpnpeers.vpn.altostrat.io vpninstances.vpn.altostrat.io secrets; do
      kubectl -n "$ns" get "$kind" -o name 2>/dev/null |
        xargs -r -I{} kubectl -n "$ns" patch {} --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null
    done
  done
  local namespaces
  namespaces="$(kubectl get namespaces -l "$selector" -o jsonpath='{.items[*].metadata.name}')"
  kubectl get ownershiprecords.vpn.altostrat.io -o json 2>/dev/null |
    jq -r --arg ns " $namespaces " '.items[] | select($ns | contains(" " + .spec.holder.namespace + " ")) | .metadata.name' |
    xargs -r kubectl delete ownershiprecords.vpn.altostrat.io >/dev/null
  kubectl delete namespaces -l "$selector" --wait=false >/dev/null
  kubectl delete clusterrolebindings,clusterroles,customresourcedefinitions -l "$selector" >/dev/null
  while [[ -n "$(kubectl get namespaces -l "$selector" -o name)" ]]; do
    ((SECONDS < deadline)) || { echo "namespaces of run $1 still there after 180s: kubectl get namespaces -l $selector" >&2; return 1; }
    sleep 2
  done
}
