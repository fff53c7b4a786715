#!/usr/bin/env bash
# Local demo: control plane + Altostrat simulator + operator + the examples going Ready.
#
#   scripts/demo.sh          build what is missing, start everything, apply examples/, watch
#   scripts/demo.sh down     stop the operator, the simulator and the control plane
#
# Everything runs on loopback; state lives under $ALTOSTRAT_CACHE/run/demo. After the
# resources are Ready the demo leaves them running: explore with the printed KUBECONFIG.
#
# USE_EXISTING_CLUSTER=1 KUBECONFIG=... scripts/demo.sh uses that cluster instead of a local
# control plane: it applies this checkout's CRDs server-side and the examples into the namespace
# $DEMO_NAMESPACE (default altostrat-demo), which the operator, still running here against the
# simulator, watches alone. `scripts/demo.sh down` then deletes the examples (the operator
# still running deletes their simulated hubs) and the namespace, and keeps the CRDs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/existing-cluster.sh"
absolute_kubeconfig
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${ALTOSTRAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/altostrat-vpn-operator}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"
export NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"
RUN="$CACHE/run/demo"
CP="$RUN/control-plane"
SIM_PORT="${SIM_PORT:-18080}"
METRICS_PORT="${METRICS_PORT:-18081}"
BIN="$CARGO_TARGET_DIR/debug/vpn-operator"
# Present while a demo runs against an existing cluster: its KUBECONFIG and namespace.
EXISTING="$RUN/existing-cluster"

say() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }

stop_pid() { # stop_pid FILE
  local p; p=$(cat "$1" 2>/dev/null) || return 0
  kill "$p" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  rm -f "$1"
}

operator_running() { [[ -f "$RUN/operator.pid" ]] && kill -0 "$(cat "$RUN/operator.pid")" 2>/dev/null; }

# The examples go while the operator still runs (it deletes their simulated hubs and removes its
# finalizers); without it they would hold the namespace Terminating.
remove_existing_demo() {
  local kubeconfig ns
  { read -r kubeconfig; read -r ns; } <"$EXISTING"
  export KUBECONFIG="$kubeconfig"
  if operator_running; then
    say "deleting the demo's resources in namespace $ns"
    kubectl -n "$ns" delete vpnpeers,vpninstances --all --timeout=120s >/dev/null ||
      { say "not deleted within 120s; see $RUN/operator.log"; return 1; }
  else
    say "the operator is not running: deleting namespace $ns may wait for the finalizers of its resources"
  fi
  kubectl delete namespace "$ns" --ignore-not-found --timeout=120s >/dev/null
  say "namespace $ns deleted; the CRDs stay (kubectl delete -k crds/ deletes them, and every VpnInstance and VpnPeer)"
  rm -f "$EXISTING"
}

down() {
  [[ -f "$EXISTING" ]] && remove_existing_demo
  stop_pid "$RUN/operator.pid"
  stop_pid "$RUN/simulator.pid"
  scripts/control-plane.sh down "$CP" 2>/dev/null || true
  say "stopped"
}

if [[ "${1:-}" == "down" ]]; then down; exit 0; fi

# Starts the local control plane (or finds it running) and points KUBECONFIG at it.
local_cluster() {
  [[ ! -f "$EXISTING" ]] ||
    { say "a demo runs against an existing cluster ($(head -1 "$EXISTING")): stop it first with scripts/demo.sh down"; exit 1; }
  say "starting the local control plane (first run builds kube-apiserver from source: ~20 minutes)"
  scripts/control-plane.sh up "$CP"
  export KUBECONFIG="$CP/kubeconfig"
}

# Uses the cluster in KUBECONFIG, and records it for `down`.
existing_cluster_demo() {
  [[ ! -f "$CP/kube-apiserver.pid" ]] ||
    { say "the local demo is running: stop it first with scripts/demo.sh down"; exit 1; }
  local name; name="$(cluster_name)"
  refuse_if_operator_installed
  say "using the existing cluster $name, namespace $DEMO_NS"
  kubectl create namespace "$DEMO_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  printf '%s\n%s\n' "$KUBECONFIG" "$DEMO_NS" >"$EXISTING"
}

mkdir -p "$RUN"
existing=false
existing_cluster && existing=true
DEMO_NS=default
$existing && DEMO_NS="${DEMO_NAMESPACE:-altostrat-demo}"
say "building the operator (first run compiles dependencies: a few minutes)"
cargo build --locked --bin vpn-operator
if $existing; then existing_cluster_demo; else local_cluster; fi
# The simulator's hubs belong to the resources of one cluster: in another (or a new local one)
# they would (rightly) count as someone else's, so the simulator starts empty there.
cluster_id="$(kubectl get namespace kube-system -o jsonpath='{.metadata.uid}')"
if [[ "$(cat "$RUN/cluster-id" 2>/dev/null)" != "$cluster_id" ]]; then
  stop_pid "$RUN/simulator.pid"
  rm -f "$RUN/simulator-state.json"
  echo "$cluster_id" >"$RUN/cluster-id"
fi

if ! curl -fsS "http://127.0.0.1:$SIM_PORT/_admin/calls" >/dev/null 2>&1; then
  say "starting the Altostrat simulator on 127.0.0.1:$SIM_PORT (instances provision in ${PROVISION_DELAY:-8s})"
  setsid "$BIN" simulate --listen "127.0.0.1:$SIM_PORT" --provision-delay "${PROVISION_DELAY:-8s}" \
    --state-file "$RUN/simulator-state.json" >"$RUN/simulator.log" 2>&1 </dev/null &
  echo $! >"$RUN/simulator.pid"
  for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$SIM_PORT/_admin/calls" >/dev/null 2>&1 && break; sleep 0.2; done
fi

say "installing the CRDs (server-side)"
install_crds

stop_pid "$RUN/operator.pid"
say "starting the operator (logs: $RUN/operator.log, metrics: http://127.0.0.1:$METRICS_PORT/metrics)"
operator_env=(ALTOSTRAT_API_URL="http://127.0.0.1:$SIM_PORT" ALTOSTRAT_API_TOKEN=sim-token
  METRICS_ADDR="127.0.0.1:$METRICS_PORT" LOG_FORMAT=text RESYNC_INTERVAL=30s)
# In a cluster of the user's own the operator watches the demo's namespace only.
$existing && operator_env+=(WATCH_NAMESPACES="$DEMO_NS")
env "${operator_env[@]}" setsid "$BIN" run >"$RUN/operator.log" 2>&1 </dev/null &
echo $! >"$RUN/operator.pid"

say "applying examples/instance.yaml, examples/client-peer.yaml, examples/site-peer.yaml"
kubectl -n "$DEMO_NS" apply -f examples/instance.yaml -f examples/client-peer.yaml -f examples/site-peer.yaml

say "the invalid example is refused by the API server's validation:"
kubectl -n "$DEMO_NS" apply -f examples/invalid-instance.yaml 2>&1 | sed 's/^/    /' || true

say "waiting for everything to become Ready"
deadline=$((SECONDS + 180))
while :; do
  printf '\033[2J\033[H'
  kubectl -n "$DEMO_NS" get vpninstances,vpnpeers -o wide 2>/dev/null || true
  not_ready=$(kubectl -n "$DEMO_NS" get vpninstances,vpnpeers -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -vc '^True$' || true)
  total=$(kubectl -n "$DEMO_NS" get vpninstances,vpnpeers --no-headers 2>/dev/null | wc -l)
  echo; say "$((total - not_ready))/$total Ready"
  ((not_ready == 0 && total > 0)) && break
  ((SECONDS < deadline)) || { say "not Ready after 180s; see $RUN/operator.log"; exit 1; }
  sleep 1
done

stop_hint="Stop everything with: scripts/demo.sh down"
$existing && stop_hint="Remove the demo with: scripts/demo.sh down (deletes its resources while the operator runs,
then namespace $DEMO_NS, then stops the operator and the simulator; the CRDs stay)"
cat <<MSG

All resources are Ready. Explore:
  export KUBECONFIG=$KUBECONFIG
  kubectl -n $DEMO_NS get altostrat                      # both kinds, via the category
  kubectl -n $DEMO_NS describe vpninstance demo-hub      # status flags, conditions, events
  kubectl -n $DEMO_NS get secret alice-laptop-vpn -o jsonpath='{.data.wg0\.conf}' | base64 -d   # alice's profile
  kubectl explain vpninstance.spec
  curl -s http://127.0.0.1:$SIM_PORT/_admin/state | python3 -m json.tool   # the simulator's view
  curl -s http://127.0.0.1:$METRICS_PORT/metrics | grep vpn_operator_
$stop_hint
MSG
