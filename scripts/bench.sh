#!/usr/bin/env bash
# Benchmarks (see BENCHMARKS.md). Two arms, chosen with --arm (default: scale):
#   scripts/bench.sh [--arm scale] [--instances 500] [--peers 2000] [--resync 30s]
#                    [--operator-concurrency 32] [--breakdown] [--raw-status operator|minimal]
#                    [--profile-dir DIR]                                   (benches/scale.rs)
#   scripts/bench.sh --arm budget [--instances 500] [--peers 2000] [--scale 10] [--rate 60]
#                    [--operator-env KEY=VALUE]... (more: benches/budget/main.rs)
# Starts a dedicated local control plane, builds the operator in release mode and runs the
# benchmark against it; prints a markdown report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
arm=scale
if [[ "${1:-}" == "--arm" ]]; then
  arm="${2:?--arm scale|budget}"
  shift 2
fi
case "$arm" in
  scale | budget) ;;
  *) echo "scripts/bench.sh: --arm scale|budget, not $arm" >&2; exit 2 ;;
esac
CACHE="${ALTOSTRAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/altostrat-vpn-operator}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"
export NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"
cargo build --release --locked --bin vpn-operator
dir="$(mktemp -d "${TMPDIR:-/tmp}/altostrat-bench.XXXXXX")"
trap 'scripts/control-plane.sh down "$dir" >/dev/null 2>&1 || true' EXIT
scripts/control-plane.sh up "$dir"
export KUBECONFIG="$dir/kubeconfig"
CONTROL_PLANE_PIDS="$(cat "$dir/kube-apiserver.pid" "$dir/etcd.pid" | tr '\n' ' ')"
export CONTROL_PLANE_PIDS
VPN_OPERATOR_BIN="$CARGO_TARGET_DIR/release/vpn-operator" cargo bench --locked --bench "$arm" -- "$@"
