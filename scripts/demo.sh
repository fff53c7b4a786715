#!/usr/bin/env bash
# Local demo: control plane + Altostrat simulator + operator + the examples going Ready.
#
#   scripts/demo.sh          build what is missing, start everything, apply examples/, watch
#   scripts/demo.sh down     stop the operator, the simulator and the control plane
#
# Everything runs on loopback; state lives under $ALTOSTRAT_CACHE/run/demo. After the
# resources are Ready the demo leaves them running: explore with the printed KUBECONFIG.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${ALTOSTRAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/altostrat-vpn-operator}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"
export NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"
RUN="$CACHE/run/demo"
CP="$RUN/control-plane"
SIM_PORT="${SIM_PORT:-18080}"
METRICS_PORT="${METRICS_PORT:-18081}"
BIN="$CARGO_TARGET_DIR/debug/vpn-operator"

say() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }

stop_pid() { # stop_pid FILE
  local p; p=$(cat "$1" 2>/dev/null) || return 0
  kill "$p" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  rm -f "$1"
}

down() {
  stop_pid "$RUN/operator.pid"
  stop_pid "$RUN/simulator.pid"
  scripts/control-plane.sh down "$CP" 2>/dev/null || true
  say "stopped"
}

if [[ "${1:-}" == "down" ]]; then down; exit 0; fi

mkdir -p "$RUN"
say "building the operator (first run compiles dependencies: a few minutes)"
cargo build --locked --bin vpn-operator
say "starting the local control plane (first run builds kube-apiserver from source: ~20 minutes)"
cluster_was_running=false
[[ -f "$CP/kube-apiserver.pid" ]] && kill -0 "$(cat "$CP/kube-apiserver.pid")" 2>/dev/null && cluster_was_running=true
scripts/control-plane.sh up "$CP"
export KUBECONFIG="$CP/kubeconfig"
if ! $cluster_was_running; then
  # A new cluster has none of the resources that made the simulated hubs of an earlier run:
  # those hubs would (rightly) count as someone else's, so the simulator starts empty too.
  stop_pid "$RUN/simulator.pid"
  rm -f "$RUN/simulator-state.json"
fi

if ! curl -fsS "http://127.0.0.1:$SIM_PORT/_admin/calls" >/dev/null 2>&1; then
  say "starting the Altostrat simulator on 127.0.0.1:$SIM_PORT (instances provision in ${PROVISION_DELAY:-8s})"
  setsid "$BIN" simulate --listen "127.0.0.1:$SIM_PORT" --provision-delay "${PROVISION_DELAY:-8s}" \
    --state-file "$RUN/simulator-state.json" >"$RUN/simulator.log" 2>&1 </dev/null &
  echo $! >"$RUN/simulator.pid"
  for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$SIM_PORT/_admin/calls" >/dev/null 2>&1 && break; sleep 0.2; done
fi

say "installing the CRDs"
kubectl apply --server-side -k crds/ >/dev/null
kubectl wait --for=condition=Established crd/vpninstances.vpn.altostrat.io crd/vpnpeers.vpn.altostrat.io --timeout=60s >/dev/null

stop_pid "$RUN/operator.pid"
say "starting the operator (logs: $RUN/operator.log, metrics: http://127.0.0.1:$METRICS_PORT/metrics)"
ALTOSTRAT_API_URL="http://127.0.0.1:$SIM_PORT" ALTOSTRAT_API_TOKEN=sim-token \
  METRICS_ADDR="127.0.0.1:$METRICS_PORT" LOG_FORMAT=text RESYNC_INTERVAL=30s \
  setsid "$BIN" run >"$RUN/operator.log" 2>&1 </dev/null &
echo $! >"$RUN/operator.pid"

say "applying examples/instance.yaml, examples/client-peer.yaml, examples/site-peer.yaml"
kubectl apply -f examples/instance.yaml -f examples/client-peer.yaml -f examples/site-peer.yaml

say "the invalid example is refused by the API server's validation:"
kubectl apply -f examples/invalid-instance.yaml 2>&1 | sed 's/^/    /' || true

say "waiting for everything to become Ready"
deadline=$((SECONDS + 180))
while :; do
  printf '\033[2J\033[H'
  kubectl get vpninstances,vpnpeers -o wide 2>/dev/null || true
  not_ready=$(kubectl get vpninstances,vpnpeers -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -vc '^True$' || true)
  total=$(kubectl get vpninstances,vpnpeers --no-headers 2>/dev/null | wc -l)
  echo; say "$((total - not_ready))/$total Ready"
  ((not_ready == 0 && total > 0)) && break
  ((SECONDS < deadline)) || { say "not Ready after 180s; see $RUN/operator.log"; exit 1; }
  sleep 1
done

cat <<MSG

All resources are Ready. Explore:
  export KUBECONFIG=$KUBECONFIG
  kubectl get altostrat                      # both kinds, via the category
  kubectl describe vpninstance demo-hub      # status flags, conditions, events
  kubectl explain vpninstance.spec
  curl -s http://127.0.0.1:$SIM_PORT/_admin/state | python3 -m json.tool   # the simulator's view
  curl -s http://127.0.0.1:$METRICS_PORT/metrics | grep vpn_operator_
Stop everything with: scripts/demo.sh down
MSG
