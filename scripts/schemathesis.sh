#!/usr/bin/env bash
# Property-based API tests: schemathesis (from PyPI) generates requests from api/openapi.yaml
# and runs them against the simulator, checking that it never answers 5xx and that every
# answer conforms to the documented schemas.
#
#   scripts/schemathesis.sh [PATH_TO_vpn-operator]
#
# The virtualenv is cached outside the repository ($ALTOSTRAT_CACHE/venv-schemathesis-VERSION).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
CACHE="${ALTOSTRAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/altostrat-vpn-operator}"
VENV="$CACHE/venv-schemathesis-$SCHEMATHESIS_VERSION"
BIN="${1:-${CARGO_TARGET_DIR:-target}/debug/vpn-operator}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
export NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"

if [[ ! -x "$VENV/bin/schemathesis" ]]; then
  echo "[schemathesis] installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV.tmp"
  "$VENV.tmp/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  rm -rf "$VENV"; mv "$VENV.tmp" "$VENV"
  # The venv's scripts carry the temporary path in their shebang; re-point them.
  sed -i "1s|$VENV.tmp|$VENV|" "$VENV"/bin/*
fi

port="$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()')"
log="$(mktemp)"
"$BIN" simulate --listen "127.0.0.1:$port" --provision-delay 0s >"$log" 2>&1 &
sim_pid=$!
trap 'kill $sim_pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$port/_admin/calls" >/dev/null 2>&1 && break; sleep 0.1; done

echo "[schemathesis] running against the simulator on 127.0.0.1:$port (max $MAX_EXAMPLES examples per operation)"
status=0
"$VENV/bin/schemathesis" run api/openapi.yaml \
  --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer sim-token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$MAX_EXAMPLES" \
  --seed 42 \
  --no-color || status=$?
curl -fsS "http://127.0.0.1:$port/_admin/calls" | python3 -c 'import json,sys; c=json.load(sys.stdin); print("[schemathesis]", c["total"], "requests served by the simulator")'
exit $status
