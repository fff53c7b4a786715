#!/usr/bin/env bash
# Follows README "Install on your cluster" (steps 1-4 and Uninstall) step by step, as a new user
# would, against the local control plane in KUBECONFIG (an admin kubeconfig; the caller starts
# and stops the plane, e.g. `scripts/control-plane.sh up DIR`). The README's own commands are
# read from README.md and run as written, in its namespaces (altostrat-system, vpn), from a
# copy of the checkout whose examples carry the edits step 3 asks for. What cannot run here is
# replaced, and the script says so as it goes:
#   - step 0 (build and push an image) and `rollout status`/`helm test`: there is no container
#     runtime and no kubelet, so the chart's Pod never runs. Instead the operator binary runs
#     outside the cluster as the chart's ServiceAccount (a kubeconfig with a token of it), with
#     the environment of the chart's Deployment as read back from the API server: the chart's
#     RBAC and configuration, so a permission the chart lacks fails this script;
#   - Altostrat: the bundled simulator (`vpn-operator simulate`, token sim-token).
# Every claim the README makes on the way is a PASS/FAIL check; a step that cannot go on stops
# the script with a message. Everything it created, except the CRDs the README says are kept,
# is removed at the end, also on failure; the CRDs are deleted once the keep is checked.
#
#   KUBECONFIG=... [HELM=/path/to/helm] scripts/readme-path.sh [PATH_TO_vpn-operator]
#
# It needs a cluster a new user could have: no altostrat-system or vpn namespace, no release
# altostrat-vpn-operator. CRDs left by earlier suites are deleted first when no VpnInstance or
# VpnPeer exists (a new user's cluster has none, and `helm install` as written would refuse
# them); otherwise it stops.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
: "${KUBECONFIG:?KUBECONFIG must point at the local control plane (admin)}"
KUBECONFIG="$(realpath "$KUBECONFIG")"; export KUBECONFIG
HELM="${HELM:-$(scripts/control-plane.sh bin-dir)/helm}"
BIN="${1:-${VPN_OPERATOR_BIN:-${CARGO_TARGET_DIR:-target}/debug/vpn-operator}}"
for tool in "$HELM" "$BIN" kubectl jq curl python3 setsid timeout; do
  command -v "$tool" >/dev/null || { echo "FAIL required tool not found: $tool"; exit 1; }
done
HELM="$(realpath "$(command -v "$HELM")")"
BIN="$(realpath "$(command -v "$BIN")")"
export NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"
started=$SECONDS

work="$(mktemp -d "${TMPDIR:-/tmp}/readme-path.XXXXXX")"
export HELM_CACHE_HOME="$work/helm-cache" HELM_CONFIG_HOME="$work/helm-config" HELM_DATA_HOME="$work/helm-data"
# The README's commands call `helm`: this one.
mkdir -p "$work/bin" && ln -s "$HELM" "$work/bin/helm"
export PATH="$work/bin:$PATH"

failures=0
say() { printf '\n\033[1m[readme-path]\033[0m %s\n' "$*"; }
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
die() { printf 'STOP %s\n' "$*"; exit 1; }
check() { # check DESCRIPTION COMMAND...  (the command's output is shown only on failure)
  local what="$1"; shift
  local out; if out="$("$@" 2>&1)"; then pass "$what"; else fail "$what"; printf '%s\n' "$out" | tail -20 | sed 's/^/    /'; return 1; fi
}
# wait_for SECONDS DESCRIPTION COMMAND...: polls until COMMAND succeeds; fails at the deadline,
# or at once when COMMAND exits 99 (it will never succeed).
wait_for() {
  local deadline=$((SECONDS + $1)) what="$2" rc; shift 2
  while :; do
    rc=0; "$@" >/dev/null 2>&1 || rc=$?
    ((rc == 0)) && return 0
    ((rc != 99)) || { echo "gave up: $what"; return 1; }
    ((SECONDS < deadline)) || { echo "not within the deadline: $what"; return 1; }
    sleep 0.5
  done
}
# readme SECONDS LINE: runs one README command as written, from the user's checkout, and shows
# its output; the output is kept in $work/out for the checks that follow.
readme() {
  local limit="$1" line="$2"
  printf '  $ %s\n' "$line"
  if (cd "$work/checkout" && timeout "$limit" bash -c "set -o pipefail; $line") >"$work/out" 2>&1; then
    sed 's/^/    /' "$work/out"; pass "README: $line"
  else
    sed 's/^/    /' "$work/out"; fail "README: $line"; return 1
  fi
}

# --- the README ------------------------------------------------------------------------------
section="$(awk '/^## Install on your cluster/ {on = 1; next} on && /^## / {exit} on' README.md)"
[[ -n "$section" ]] || die "README.md has no section \"Install on your cluster\""
# block N: the commands of the Nth ```sh block of the section (from 0), one line per command
# (backslash continuations joined), comment lines left out.
block() {
  awk -v n="$1" '/^```sh/ {i++; inb = (i - 1 == n); next} /^```/ {inb = 0; next} inb' <<<"$section" |
    sed -e ':a' -e '/\\$/N; s/[[:space:]]*\\\n[[:space:]]*/ /; ta' | grep -Ev '^[[:space:]]*(#|$)' || true
}
# The commands of the Uninstall paragraph, in the README's order (quoted in backticks).
uninstall_cmds() {
  awk '/^\*\*Uninstall\*\*/ {on = 1} on && /^$/ {exit} on' <<<"$section" | tr '\n' ' ' |
    grep -oE '`(kubectl|helm) [^`]+`' | tr -d '`'
}

# --- cleanup, also on failure ----------------------------------------------------------------
op_pid="" sim_pid=""
crds=(vpninstances.vpn.altostrat.io vpnpeers.vpn.altostrat.io)
stop() { # stop PID: SIGTERM, then SIGKILL after 30 s (the Pod's terminationGracePeriodSeconds)
  [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null || return 0
  kill "$1" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$1" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  kill -9 "$1" 2>/dev/null || true
}
cleanup() {
  local status=$?
  set +e # best effort: every step of the cleanup runs
  trap - EXIT
  # Resources go while the operator still runs (it deletes their simulated hubs and removes its
  # finalizers); whatever still holds a finalizer afterwards is released so the namespace goes.
  if kubectl get namespace vpn >/dev/null 2>&1; then
    [[ -n "$op_pid" ]] && kill -0 "$op_pid" 2>/dev/null &&
      kubectl -n vpn delete vpnpeers,vpninstances --all --timeout=60s >/dev/null 2>&1
    stop "$op_pid"
    for r in $(kubectl -n vpn get vpnpeers,vpninstances -o name 2>/dev/null); do
      kubectl -n vpn patch "$r" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    done
  fi
  stop "$op_pid"; stop "$sim_pid"
  "$HELM" uninstall altostrat-vpn-operator -n altostrat-system --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete namespace vpn altostrat-system --ignore-not-found --timeout=90s >/dev/null 2>&1 ||
    echo "warning: namespaces vpn/altostrat-system not deleted within 90s"
  # The CRDs the README keeps are this release's (deploy-checks, run again on this cluster, would
  # find them labelled for another release): they go too, once the keep was checked, and the
  # cluster is as a new user's again.
  for c in "${crds[@]}"; do
    [[ "$(kubectl get crd "$c" -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}' 2>/dev/null)" == altostrat-vpn-operator ]] &&
      kubectl delete crd "$c" --timeout=60s >/dev/null 2>&1
  done
  if ((status)) && [[ -f "$work/operator.log" ]]; then
    echo "--- operator log (last 30 lines) ---"; tail -30 "$work/operator.log"
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# --- a cluster as a new user's ---------------------------------------------------------------
say "preconditions: a cluster without the operator"
gone() { [[ -z "$(kubectl get "$@" --ignore-not-found -o name 2>/dev/null)" ]]; }
# deploy-checks deletes altostrat-system (and namespaces holding custom resources) just before.
check "no namespace altostrat-system or vpn (waited for earlier deletions to finish)" \
  wait_for 90 "namespaces altostrat-system and vpn gone" gone namespace altostrat-system vpn ||
  die "namespace altostrat-system or vpn exists: the README path needs a cluster without them"
check "no release altostrat-vpn-operator and no ClusterRole altostrat-vpn-operator" \
  bash -c '! "$1" status altostrat-vpn-operator -n altostrat-system >/dev/null 2>&1 &&
    [[ -z "$(kubectl get clusterrole altostrat-vpn-operator --ignore-not-found -o name)" ]]' _ "$HELM" ||
  die "the operator is installed already"
if ! gone crd "${crds[@]}"; then
  no_resources() { gone vpninstances -A && gone vpnpeers -A; }
  wait_for 60 "no VpnInstance or VpnPeer left" no_resources ||
    die "the CRDs exist with resources of theirs: a new user's cluster has neither (kubectl get altostrat -A)"
  echo "  the CRDs exist (left by earlier suites or checks) and hold no resource: deleting them, as a new user's cluster has none"
  kubectl delete crd "${crds[@]}" --ignore-not-found --timeout=60s >/dev/null
fi
check "no CRDs of vpn.altostrat.io" gone crd "${crds[@]}" || die "the CRDs could not be deleted"

say "the Altostrat simulator"
sim_port="$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()')"
sim_url="http://127.0.0.1:$sim_port"
setsid "$BIN" simulate --listen "127.0.0.1:$sim_port" --provision-delay 2s >"$work/simulator.log" 2>&1 </dev/null &
sim_pid=$!
check "simulator answers on $sim_url" wait_for 30 "simulator up" curl -fsS "$sim_url/_admin/calls" ||
  die "the simulator did not start: $(tail -5 "$work/simulator.log")"
sim_instances() { curl -fsS -H "Authorization: Bearer sim-token" "$sim_url/vpn/instances"; }

# The user's clone: the chart as it is, the examples as step 3 tells the user to edit them.
mkdir -p "$work/checkout/examples"
ln -s "$repo/deploy" "$work/checkout/deploy"

# --- 0. An image -----------------------------------------------------------------------------
say "step 0: an image: skipped (no container runtime here; the Pod never runs, so any name does)"
export IMAGE=localhost/readme-path/altostrat-vpn-operator
echo "  IMAGE=$IMAGE"

# --- 1. A namespace and the token Secret ------------------------------------------------------
say "step 1: a namespace and the token Secret"
export ALTOSTRAT_TOKEN=sim-token
mapfile -t cmds < <(block 1)
((${#cmds[@]})) || die "README step 1 has no commands"
for line in "${cmds[@]}"; do readme 60 "$line" || die "README step 1 failed"; done

# --- 2. The operator -------------------------------------------------------------------------
say "step 2: the operator"
mapfile -t cmds < <(block 2)
deployment="" dns=""
for line in "${cmds[@]}"; do
  case "$line" in
    *"rollout status"*)
      # The Deployment to run is the one the README waits for.
      deployment="$(grep -oE 'deployment/[a-z0-9.-]+' <<<"$line" | cut -d/ -f2)"
      dns="$(grep -oE '(-n|--namespace)[ =][a-z0-9-]+' <<<"$line" | awk '{print $NF}' | sed 's/.*=//')"
      echo "  (skipped: $line — no kubelet here; the Deployment's Pod is run below as a process instead)" ;;
    "helm test"*)
      echo "  (skipped: $line — optional, and its Pod needs a kubelet; /readyz is requested below instead)" ;;
    *) readme 120 "$line" || die "README step 2 failed" ;;
  esac
done
[[ -n "$deployment" && -n "$dns" ]] || die "README step 2 no longer waits for a Deployment with rollout status: update this script"

kubectl -n "$dns" get deployment "$deployment" -o json >"$work/deployment.json" ||
  die "the chart installed no Deployment $dns/$deployment"
pod_spec() { jq -r ".spec.template.spec$1" "$work/deployment.json"; }
sa="$(pod_spec '.serviceAccountName // "default"')"
container_json="$(jq -c '.spec.template.spec.containers[0]' "$work/deployment.json")"
check "Deployment $dns/$deployment: one container, image $IMAGE:<appVersion>, env without envFrom" \
  jq -e --arg img "$IMAGE:" '(.spec.template.spec.containers | length) == 1
    and (.spec.template.spec.containers[0].image | startswith($img))
    and (.spec.template.spec.containers[0].envFrom == null)' "$work/deployment.json" || true

# The kubeconfig a Pod of the Deployment would have: its ServiceAccount's token, and the API
# server and CA of this cluster (taken from the admin kubeconfig; in a Pod they come from the
# projected token volume and KUBERNETES_SERVICE_HOST, which do not exist outside one).
server="$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')"
ca="$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
if [[ -z "$ca" ]]; then
  ca_file="$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')"
  [[ -n "$ca_file" ]] && ca="$(base64 -w0 "$ca_file")"
fi
sa_token="$(kubectl -n "$dns" create token "$sa" --duration=1h)" ||
  die "no token for ServiceAccount $dns/$sa (does the chart create it?)"
cat >"$work/sa.kubeconfig" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: $server
    ${ca:+certificate-authority-data: $ca}
users:
- name: $sa
  user:
    token: $sa_token
contexts:
- name: $sa
  context: {cluster: cluster, user: $sa, namespace: $dns}
current-context: $sa
KCFG
chmod 600 "$work/sa.kubeconfig"
check "the operator's kubeconfig authenticates as system:serviceaccount:$dns:$sa, which may not manage RBAC" bash -c '
  who="$(kubectl --kubeconfig "$1" auth whoami -o jsonpath="{.status.userInfo.username}")"
  [[ "$who" == "system:serviceaccount:$2:$3" ]] || { echo "whoami: $who"; exit 1; }
  [[ "$(kubectl --kubeconfig "$1" auth can-i create clusterroles 2>/dev/null)" == no ]]' _ "$work/sa.kubeconfig" "$dns" "$sa" ||
  die "cannot act as the chart's ServiceAccount"

# The container's environment, value by value from the Deployment; replaced are only the values
# that cannot work outside a Pod (each says why). Anything else this script cannot map stops it.
metrics_port="$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()')"
pod_name="$deployment-readme-path"
op_env=()
while IFS= read -r e; do
  name="$(jq -r .name <<<"$e")"
  if jq -e '.valueFrom == null' <<<"$e" >/dev/null; then
    value="$(jq -r '.value // ""' <<<"$e")" # the API server omits an empty value
  else
    field="$(jq -r '.valueFrom.fieldRef.fieldPath // empty' <<<"$e")"
    case "$field" in
      # The downward API: a Pod of the Deployment lives in its namespace; its name would be
      # <deployment>-<hash>-<suffix>, and there is no Pod, so a name of that kind stands in.
      metadata.namespace) value="$dns" ;;
      metadata.name) value="$pod_name" ;;
      *) die "env $name: valueFrom $(jq -c .valueFrom <<<"$e") has no mapping outside a Pod: update this script" ;;
    esac
  fi
  case "$name" in
    ALTOSTRAT_API_URL)
      # The real Altostrat API needs a real token; the local simulator stands in for it.
      echo "  $name: $value -> $sim_url (the simulator)"; value="$sim_url" ;;
    ALTOSTRAT_API_TOKEN_FILE)
      # The file is the Secret volume the kubelet would mount: the Secret's key, as that volume
      # maps it, is written to a local file (read with the admin's credentials, as the kubelet's
      # own would, not the ServiceAccount's).
      mount="$(jq -r --arg f "$value" '[.volumeMounts[] | select(.mountPath as $m | $f | startswith($m + "/"))][0] | "\(.name) \(.mountPath)"' <<<"$container_json")"
      read -r vol mpath <<<"$mount"
      rel="${value#"$mpath"/}"
      secret="$(pod_spec ".volumes[] | select(.name == \"$vol\") | .secret.secretName")"
      key="$(pod_spec ".volumes[] | select(.name == \"$vol\") | (.secret.items // [] | map(select(.path == \"$rel\")) | .[0].key) // \"$rel\"")"
      [[ -n "$secret" && "$secret" != null ]] || die "env $name: $value is not in a Secret volume of the Deployment"
      mkdir -p "$work/secrets"
      kubectl -n "$dns" get secret "$secret" -o json | jq -er --arg k "$key" '.data[$k] | @base64d' >"$work/secrets/$rel" ||
        die "Secret $dns/$secret has no key $key (volume $vol)"
      chmod 600 "$work/secrets/$rel"
      echo "  $name: $value -> $work/secrets/$rel (key $key of Secret $secret, as volume $vol mounts it)"
      value="$work/secrets/$rel" ;;
    METRICS_ADDR)
      # A Pod has a network namespace of its own; on this host the port may be taken, and
      # 0.0.0.0 would expose it: a free loopback port, where the probes are requested below.
      echo "  $name: $value -> 127.0.0.1:$metrics_port (a Pod's port is its own)"
      [[ "$value" == *:* ]] || die "env $name: $value is not host:port"
      value="127.0.0.1:$metrics_port" ;;
    POD_NAME | POD_NAMESPACE) echo "  $name: fieldRef -> $value" ;;
  esac
  op_env+=("$name=$value")
done < <(jq -c '.env // [] | .[]' <<<"$container_json")
mapfile -t args < <(jq -r '.args // [] | .[]' <<<"$container_json")
echo "  args: ${args[*]}"
# Nothing of this shell's environment leaks in (a Pod has the image's and the Deployment's only);
# KUBECONFIG replaces the in-cluster configuration a Pod would have.
say "starting the operator as $dns/$sa (log: $work/operator.log)"
env -i PATH=/usr/bin:/bin HOME="$work" KUBECONFIG="$work/sa.kubeconfig" "${op_env[@]}" \
  setsid "$BIN" "${args[@]}" >"$work/operator.log" 2>&1 </dev/null &
op_pid=$!
# In place of `rollout status`: the Deployment's readiness probe, run as the kubelet runs it (the
# image's /vpn-operator is this build's binary, with the container's env).
mapfile -t probe_cmd < <(jq -r '.readinessProbe.exec.command // [] | .[]' <<<"$container_json")
[[ "${probe_cmd[0]:-}" == /vpn-operator ]] || die "the Deployment has no exec readiness probe of /vpn-operator to run"
ready() {
  kill -0 "$op_pid" 2>/dev/null || return 99
  env -i PATH=/usr/bin:/bin "${op_env[@]}" "$BIN" "${probe_cmd[@]:1}"
}
check "the operator (as the chart's ServiceAccount, with the chart's env) passes its readiness probe (${probe_cmd[*]}) within 60s" \
  wait_for 60 "readiness probe" ready || die "the operator did not become ready"
probe=/readyz
leader_election="$(printf '%s\n' "${op_env[@]}" | sed -n 's/^LEADER_ELECTION=//p')"
if [[ "$leader_election" == true ]]; then
  lease="$(printf '%s\n' "${op_env[@]}" | sed -n 's/^LEADER_ELECTION_LEASE_NAME=//p')"
  # A standby is ready too: the probe may pass before the lease is won, and the new leader is
  # not ready while it fills its caches. So the leader's answer is waited for.
  says_leader() { [[ "$(curl -sS "$1")" == "ready: leader" ]]; }
  export -f says_leader
  check "leader election (on in the chart): /readyz says leader, and Lease $dns/$lease names $pod_name" bash -c '
    for _ in $(seq 60); do says_leader "$1" && break; sleep 0.5; done
    body="$(curl -sS "$1")"; [[ "$body" == "ready: leader" ]] || { echo "readyz: $body"; exit 1; }
    holder="$(kubectl -n "$2" get lease "$3" -o jsonpath="{.spec.holderIdentity}")"
    [[ "$holder" == "$4" ]] || { echo "holder: $holder"; exit 1; }' _ "http://127.0.0.1:$metrics_port$probe" "$dns" "$lease" "$pod_name" || true
fi

# --- 3. A hub and a peer ---------------------------------------------------------------------
say "step 3: a hub and a peer"
hostname="readme-$(od -An -N3 -tx1 /dev/urandom | tr -d " \n")" # at most 20 bytes (the CRD)
user_id="$(cat /proc/sys/kernel/random/uuid)"
region=sjc
echo "  editing examples/instance.yaml: region $region (a code the simulator lists), hostname $hostname;"
echo "  examples/client-peer.yaml: userId $user_id"
sed -E "s/^(  region: )[^ ]+/\1$region/; s/^(  hostname: )[^ ]+/\1$hostname/" examples/instance.yaml >"$work/checkout/examples/instance.yaml"
sed -E "s/^(  userId: )[^ ]+/\1$user_id/" examples/client-peer.yaml >"$work/checkout/examples/client-peer.yaml"
check "the edits took: spec.region=$region, spec.hostname=$hostname, spec.userId=$user_id" bash -c '
  [[ "$(kubectl create --dry-run=client -o jsonpath="{.spec.region} {.spec.hostname}" -f "$4/instance.yaml")" == "$1 $2" ]] &&
  [[ "$(kubectl create --dry-run=client -o jsonpath="{.spec.userId}" -f "$4/client-peer.yaml")" == "$3" ]]' \
  _ "$region" "$hostname" "$user_id" "$work/checkout/examples" || die "the examples changed shape: update the edits in this script"
mapfile -t cmds < <(block 3)
((${#cmds[@]})) || die "README step 3 has no commands"
for line in "${cmds[@]}"; do
  # The simulator provisions in 2 s, not ~10 min: shorter timeouts.
  line="$(sed -E 's/--timeout=[0-9]+m/--timeout=90s/g' <<<"$line")"
  readme 120 "$line" || die "README step 3 failed"
done
check "the simulator holds one instance, $hostname in $region (created by the operator)" bash -c '
  out="$(curl -fsS -H "Authorization: Bearer sim-token" "$1/vpn/instances")"
  jq -e --arg h "$2" --arg r "$3" "length == 1 and (.[0].hostname | startswith(\$h + \".\")) and .[0].region == \$r" <<<"$out" >/dev/null ||
    { jq -c "map({hostname, region})" <<<"$out"; exit 1; }' _ "$sim_url" "$hostname" "$region" || true

profile_written() { [[ -n "$(kubectl -n vpn get secret alice-laptop-vpn -o jsonpath='{.data.wg0\.conf}' 2>/dev/null)" ]]; }
check "the operator (as the chart's ServiceAccount, under the chart's admission policy) wrote alice-laptop's profile into Secret alice-laptop-vpn" \
  wait_for 60 "Secret alice-laptop-vpn with wg0.conf" profile_written || true

# --- 4. The status ---------------------------------------------------------------------------
say "step 4: the status"
mapfile -t cmds < <(block 4)
((${#cmds[@]} >= 3)) || die "README step 4 lists fewer than three commands: update this script"
fqdn=""
for line in "${cmds[@]}"; do
  readme 30 "$line" || continue
  case "$line" in
    *"get altostrat -o wide"*)
      check "get altostrat -o wide shows both kinds Ready True, the hub with its region and hostname" bash -c '
        # col KIND HEADER: the value in column HEADER of the row of KIND (columns located by the
        # header of the kind'"'"'s own table: cells may be empty, so not by word count).
        col() { awk -v kind="$2" -v h="$3" "/^NAME / {p = index(\$0, \" \" h \" \") + 1; next}
          \$1 ~ (\"^\" kind) && p > 1 {split(substr(\$0, p), a, \" \"); print a[1]; exit}" "$1"; }
        hub=vpninstance.vpn.altostrat.io/demo-hub peer=vpnpeer.vpn.altostrat.io/alice-laptop
        [[ "$(col "$1" $hub READY)" == True && "$(col "$1" $peer READY)" == True ]] ||
          { echo "READY: hub $(col "$1" $hub READY), peer $(col "$1" $peer READY)"; exit 1; }
        [[ "$(col "$1" $hub REGION)" == "$2" ]] || { echo "REGION: $(col "$1" $hub REGION)"; exit 1; }
        [[ "$(col "$1" $hub HOSTNAME)" == "$3".* ]] || { echo "HOSTNAME: $(col "$1" $hub HOSTNAME)"; exit 1; }' \
        _ "$work/out" "$region" "$hostname" || true ;;
    *"describe vpninstance demo-hub"*)
      check "describe shows the conditions (Ready True), the Altostrat flags and events" bash -c '
        out="$(cat "$1")"
        grep -Eq "Type:[[:space:]]+Ready" <<<"$out" && grep -Eq "Status:[[:space:]]+True" <<<"$out" || { echo "no Ready condition"; exit 1; }
        for f in Configured "Server Ready" "Rsa Ready"; do grep -Eq "$f:[[:space:]]+true" <<<"$out" || { echo "no flag $f: true"; exit 1; }; done
        events="$(sed -n "/^Events:/,\$p" <<<"$out")"
        [[ -n "$events" ]] && ! grep -q "<none>" <<<"$events" || { echo "no events: $events"; exit 1; }' _ "$work/out" || true ;;
    *"{.status.hostname}"*)
      fqdn="$(tr -d '\n' <"$work/out")"
      check "status.hostname is the hub's public name ($hostname.*) as the simulator reports it" bash -c '
        [[ "$1" == "$2".* ]] || { echo "status.hostname: $1"; exit 1; }
        jq -e --arg f "$1" "any(.[]; .hostname == \$f or (.fqdn? // \"\") == \$f or (\$f | startswith(.hostname + \".\")))" <<<"$3" >/dev/null' \
        _ "$fqdn" "$hostname" "$(sim_instances)" || true ;;
  esac
done

# --- Uninstall -------------------------------------------------------------------------------
say "uninstall, in the README's order"
mapfile -t cmds < <(uninstall_cmds)
[[ "${#cmds[@]}" == 2 && "${cmds[0]}" == "kubectl -n vpn delete"* && "${cmds[1]}" == "helm uninstall"* ]] ||
  die "README Uninstall no longer names 'kubectl -n vpn delete ...' then 'helm uninstall ...': update this script (found: ${cmds[*]:-nothing})"
readme 120 "${cmds[0]}" || die "deleting the resources failed"
check "the resources are gone (the operator removed its finalizers)" \
  wait_for 60 "no VpnInstance or VpnPeer in vpn" gone -n vpn vpninstances,vpnpeers || true
check "the operator deleted the hub in Altostrat: GET /vpn/instances is empty" bash -c '
  out="$(curl -fsS -H "Authorization: Bearer sim-token" "$1/vpn/instances")"; jq -e "length == 0" <<<"$out" >/dev/null || { echo "$out"; exit 1; }' \
  _ "$sim_url" || true
check "the operator's log has no authorization failure (the chart's RBAC sufficed)" bash -c '
  if grep -qiE "forbidden|is not allowed|unauthorized" "$1"; then
    grep -iE "forbidden|is not allowed|unauthorized" "$1" | head -3 | cut -c1-400; exit 1
  fi' _ "$work/operator.log" || true
readme 120 "${cmds[1]}" || die "helm uninstall failed"
# helm uninstall deletes the Deployment, whose Pod the kubelet would stop: stop the process,
# which must exit on SIGTERM within the Pod's termination grace period.
grace="$(pod_spec '.terminationGracePeriodSeconds // 30')"
kill "$op_pid"
check "the operator exits on SIGTERM within terminationGracePeriodSeconds ($grace s)" \
  wait_for "$grace" "operator exited" bash -c '! kill -0 "$1" 2>/dev/null' _ "$op_pid" || true
stop "$op_pid"; op_pid=""
check "helm uninstall removed the Deployment, the ServiceAccount and the ClusterRole" bash -c '
  kubectl -n "$1" get deployment "$2" >/dev/null 2>&1 && { echo "Deployment left"; exit 1; }
  kubectl -n "$1" get serviceaccount "$3" >/dev/null 2>&1 && { echo "ServiceAccount left"; exit 1; }
  kubectl get clusterrole "$2" >/dev/null 2>&1 && { echo "ClusterRole left"; exit 1; }; true' _ "$dns" "$deployment" "$sa" || true
check "Helm left the CRDs (present, not terminating, helm.sh/resource-policy: keep), as the README says" bash -c '
  for c in "$@"; do
    kubectl get crd "$c" -o json | jq -e ".metadata.deletionTimestamp == null and .metadata.annotations[\"helm.sh/resource-policy\"] == \"keep\"" >/dev/null ||
      { echo "CRD $c missing, terminating or without the keep policy"; exit 1; }
  done' _ "${crds[@]}" || true
stop "$sim_pid"; sim_pid=""
check "namespaces vpn and altostrat-system deleted" \
  kubectl delete namespace vpn altostrat-system --timeout=90s || true

if ((failures)); then say "FAIL: $failures check(s) failed ($((SECONDS - started))s)"; exit 1; fi
say "PASS: the README's install path works as written ($((SECONDS - started))s)"
