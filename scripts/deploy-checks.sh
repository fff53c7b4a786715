#!/usr/bin/env bash
# Deployment checks against a running control plane (KUBECONFIG must point at it; the caller
# starts and stops it, e.g. `scripts/control-plane.sh up DIR`):
#   - the control plane's own selftest (namespace deletion and garbage collection work),
#   - the chart's CRDs are templates: exactly the CRDs of crds/ plus helm.sh/resource-policy: keep
#     and the chart's labels, none with crds.install=false, and `helm upgrade` updates an
#     installed CRD (a field a stale CRD lacked appears, same uid),
#   - CRDs protected against prune and uninstall in every install path: the kustomize base
#     renders none, deploy/kustomize/crds carries the Flux and Argo CD annotations,
#     `helm uninstall` and `kubectl delete -k deploy/kustomize/base` leave them (and a custom
#     resource) in place, the GitOps examples deploy them through a Kustomization/Application of
#     their own that does not prune,
#   - Helm: lint --strict, values schema, rendering rules (renders with defaults, a missing token Secret
#     fails a render against the cluster, leader election on by default,
#     Recreate without it, Roles with watchNamespaces, security context), server-side dry runs, real
#     installs with RBAC checked through `kubectl auth can-i`, uninstall,
#   - the Secrets admission policy (chart and kustomize base): rendered, or not with
#     profileSecrets.admissionPolicy.enabled=false; on the real install, requests made as the
#     operator's ServiceAccount prove what it may and may not do to Secrets, and that other users
#     are not affected,
#   - Helm chart conventions: name overrides, commonLabels, pod labels/annotations, image digest,
#     OpenShift security contexts, spread constraints, revisionHistoryLimit, extra env/volumes,
#     use as a subchart, NetworkPolicy (and the kustomize component's equal to it), the `helm test` Pod, kubeVersion, Artifact Hub metadata,
#     the optional PrometheusRule and Grafana dashboard,
#   - kustomize: base applied server-side, an overlay into another namespace applied server-side
#     with its RBAC checked through `kubectl auth can-i`, the example overlay validated,
#   - examples and the Argo CD health check (its Lua is table-tested when lua5.1 is installed),
#   - the README's install path, last, on a control plane of its own (scripts/readme-path.sh;
#     needs the operator binary,
#     $VPN_OPERATOR_BIN or $CARGO_TARGET_DIR/debug/vpn-operator, SKIP without it),
#   - with the Go tools of scripts/dev-tools.sh (SKIP lines without them): alert and dashboard
#     expressions parsed as PromQL with their metric names checked against src/metrics.rs, the
#     chart README generated from values.yaml, actionlint on .github/workflows.
#
#   KUBECONFIG=... [HELM=/path/to/helm] scripts/deploy-checks.sh
# Prints one PASS/FAIL/SKIP line per check; exits non-zero when any check failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HELM="${HELM:-$(scripts/control-plane.sh bin-dir)/helm}"
CHART=deploy/helm/altostrat-vpn-operator
NS=altostrat-system
: "${KUBECONFIG:?KUBECONFIG must point at the local control plane}"
for tool in "$HELM" kubectl jq; do
  command -v "$tool" >/dev/null || { echo "FAIL required tool not found: $tool"; exit 1; }
done
work="$(mktemp -d "${TMPDIR:-/tmp}/deploy-checks.XXXXXX")"
export HELM_CACHE_HOME="$work/helm-cache" HELM_CONFIG_HOME="$work/helm-config" HELM_DATA_HOME="$work/helm-data"

failures=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
check() { # check DESCRIPTION COMMAND...  (the command's output is shown only on failure)
  local what="$1"; shift
  local out; if out="$("$@" 2>&1)"; then pass "$what"; else fail "$what"; printf '%s\n' "$out" | tail -20 | sed 's/^/    /'; fi
}
# The real installs are removed again, also when a check fails or a previous run was interrupted.
uninstall_releases() {
  "$HELM" uninstall avo -n "$NS" --ignore-not-found >/dev/null 2>&1 || true
  "$HELM" uninstall avo-ns -n avo-ns-system --ignore-not-found >/dev/null 2>&1 || true
  "$HELM" uninstall avo-keep -n avo-keep-system --ignore-not-found >/dev/null 2>&1 || true
}
trap 'uninstall_releases; rm -rf "$work"' EXIT
uninstall_releases

render() { "$HELM" template avo "$CHART" -n "$NS" "$@"; }
# deployment_json [helm flags...]: the rendered Deployment as JSON.
deployment_json() { render "$@" -s templates/deployment.yaml | kubectl create --dry-run=client -o json -f -; }
# objects_json [helm flags...]: every rendered object (kinds the API server knows) as a JSON array.
objects_json() { render "$@" | kubectl create --dry-run=client -o json -f - | jq -s .; }
env_of() { jq -r --arg n "$2" '.spec.template.spec.containers[0].env[] | select(.name == $n) | .value' <<<"$1"; }
namespace() { kubectl create namespace "$1" --dry-run=client -o yaml | kubectl apply -f - >/dev/null; }
can_i() { # can_i EXPECTED SA VERB RESOURCE NAMESPACE [extra kubectl flags]
  local want="$1" sa="$2" verb="$3" resource="$4" ns="$5"; shift 5
  local got; got="$(kubectl auth can-i "$verb" "$resource" --as="system:serviceaccount:$sa" -n "$ns" "$@" 2>/dev/null || true)"
  [[ "$got" == "$want" ]] || { echo "can-i $verb $resource $* in $ns as $sa: got '$got', want '$want'"; return 1; }
}

# --- the control plane itself ---------------------------------------------------------------
# The uninstall checks below rely on namespace deletion; the e2e suites on garbage collection.
check "control plane: a deleted namespace with a ConfigMap goes away, a dependent of a deleted owner is garbage-collected (kube-controller-manager)" \
  scripts/control-plane.sh selftest

# --- CRDs ----------------------------------------------------------------------------------
check "crds/kustomization.yaml lists exactly the CRD files" bash -c '
  diff <(kubectl kustomize crds | grep -E "^  name: .*\.vpn\.altostrat\.io$" | sort) \
       <(for f in crds/*.vpn.altostrat.io.yaml; do printf "  name: %s\n" "$(basename "$f" .yaml)"; done | sort)'

# Prune and uninstall protection of the CRDs (deleting a CRD deletes every VpnInstance and
# VpnPeer, and the running operator then deletes their Altostrat hubs and peers).
# as_json: YAML documents on stdin as one JSON array, parsed offline (any kind, known or not).
as_json() { kubectl annotate --local -f - no-such-annotation- -o json | jq -s .; }
crd_files() { for f in crds/*.vpn.altostrat.io.yaml; do basename "$f" .yaml; done | sort; }
# crds_protected JSON-ARRAY: the array is exactly the CRDs of crds/, and each carries the
# annotations that stop Flux and Argo CD from pruning or deleting it.
crds_protected() {
  local names; names="$(jq -r '.[] | select(.kind == "CustomResourceDefinition") | .metadata.name' <<<"$1" | sort)"
  [[ "$names" == "$(crd_files)" ]] || { echo "CRDs: $names; want: $(crd_files | tr '\n' ' ')"; return 1; }
  jq -e 'all(.[] | select(.kind == "CustomResourceDefinition"); .metadata.annotations as $a
    | $a["kustomize.toolkit.fluxcd.io/prune"] == "disabled"
    and ($a["argocd.argoproj.io/sync-options"] // "" | split(",") | map(gsub("^\\s+|\\s+$"; ""))
         | index("Prune=false") != null and index("Delete=false") != null))' <<<"$1" >/dev/null ||
    { jq -c '.[] | {name: .metadata.name, annotations: .metadata.annotations}' <<<"$1"; return 1; }
}
# crd_count PATH: how many CustomResourceDefinitions `kubectl kustomize PATH` renders.
crd_count() { kubectl kustomize "$1" | as_json | jq '[.[] | select(.kind == "CustomResourceDefinition")] | length'; }
check "kustomize base and example overlay render no CustomResourceDefinition (deleting or pruning them keeps the CRDs)" bash -c "
  $(declare -f as_json crd_count)
  for p in deploy/kustomize/base deploy/kustomize/overlays/example; do
    n=\$(crd_count \$p) && [[ \$n == 0 ]] || { echo \"\$p renders \$n CRDs\"; exit 1; }
  done"
check "deploy/kustomize/crds renders exactly the CRDs of crds/, each with kustomize.toolkit.fluxcd.io/prune=disabled and argocd sync-options Prune=false,Delete=false" \
  bash -c "$(declare -f as_json crd_files crds_protected); crds_protected \"\$(kubectl kustomize deploy/kustomize/crds | as_json)\""
# chart_crds [helm flags...]: the CustomResourceDefinitions the chart renders, as a JSON array.
chart_crds() { "$HELM" template avo "$CHART" --set altostrat.token=x "$@" | as_json | jq '[.[] | select(.kind == "CustomResourceDefinition")]'; }
# Templates, not the crds/ folder: Helm installs that once and never upgrades it, and a stale
# CRD silently drops the fields it lacks.
check "Helm: the chart renders the CRDs of crds/ as templates, identical but for helm.sh/resource-policy: keep and the chart's labels" bash -c '
  [[ ! -e "$1/crds" ]] || { echo "$1/crds exists: Helm would install it once and never upgrade it"; exit 1; }
  jq -e "length == $(ls crds/*.vpn.altostrat.io.yaml | wc -l) and all(.[]; .metadata.annotations == {\"helm.sh/resource-policy\": \"keep\"}
    and .metadata.labels[\"app.kubernetes.io/managed-by\"] == \"Helm\" and .metadata.labels[\"app.kubernetes.io/instance\"] == \"avo\")" <<<"$2" >/dev/null ||
    { jq -c ".[] | .metadata" <<<"$2"; exit 1; }
  diff <(jq -S "map(del(.metadata.annotations, .metadata.labels)) | sort_by(.metadata.name)" <<<"$2") \
       <(for f in crds/*.vpn.altostrat.io.yaml; do echo ---; cat "$f"; done | "$3" -c "$4; as_json" | jq -S "map(del(.metadata.annotations, .metadata.labels)) | sort_by(.metadata.name)")' \
  _ "$CHART" "$(chart_crds)" bash "$(declare -f as_json)"
check "Helm: crds.install=false renders no CustomResourceDefinition" bash -c '[[ "$1" == "[]" ]] || { echo "$1" | head -5; exit 1; }' \
  _ "$(chart_crds --set crds.install=false | jq -c .)"

# --- Helm: lint, schema and rendering rules -------------------------------------------------
printf 'altostrat:\n  token: lint-only-token\n' >"$work/token-values.yaml"
check "helm lint --strict (values file with a token)" "$HELM" lint --strict "$CHART" -f "$work/token-values.yaml"
check "helm lint --strict (existingSecret)" "$HELM" lint --strict "$CHART" --set altostrat.existingSecret=avo-token

# Without a token or existingSecret the chart expects the Secret <fullname>-token: an offline
# render (scanners, Argo CD) renders; a render against the cluster (install, upgrade,
# --dry-run=server) fails while that Secret is missing, naming it and altostrat.existingSecret.
check "helm template with default values renders (for scanners): the Deployment mounts Secret avo-altostrat-vpn-operator-token, key token; no Secret rendered" jq -e '
  (.[] | select(.kind == "Deployment") | .spec.template.spec.volumes[] | select(.name == "altostrat-token") | .secret)
    == {"secretName": "avo-altostrat-vpn-operator-token", "items": [{"key": "token", "path": "token"}]}
  and ([.[] | select(.kind == "Secret")] | length) == 0' <<<"$(objects_json)"
kubectl delete namespace avo-no-token --ignore-not-found >/dev/null 2>&1 || true
namespace avo-no-token
if out="$("$HELM" template avo "$CHART" -n avo-no-token --set crds.install=false --dry-run=server 2>&1)"; then
  fail "helm install without a token, existingSecret or Secret avo-altostrat-vpn-operator-token must fail"
elif grep -q 'altostrat.existingSecret' <<<"$out" && grep -q 'avo-altostrat-vpn-operator-token' <<<"$out"; then
  pass "helm install (render against the cluster) without a token, existingSecret or Secret avo-altostrat-vpn-operator-token fails, naming both"
else
  fail "helm install without a token fails, but without a clear message: $out"
fi
kubectl -n avo-no-token create secret generic avo-altostrat-vpn-operator-token --from-literal=token=x >/dev/null
check "helm install (render against the cluster) without a token value renders once Secret avo-altostrat-vpn-operator-token exists" \
  bash -c '"$1" template avo "$2" -n avo-no-token --set crds.install=false --dry-run=server | grep -q "secretName: avo-altostrat-vpn-operator-token"' _ "$HELM" "$CHART"
kubectl delete namespace avo-no-token --wait=false >/dev/null
if render --set altostrat.token=x --set logFormat=xml >/dev/null 2>&1; then
  fail "values.schema.json rejects logFormat=xml"
else pass "values.schema.json rejects logFormat=xml"; fi
if render --set altostrat.token=x --set unknownKey=1 >/dev/null 2>&1; then
  fail "values.schema.json rejects unknown keys"
else pass "values.schema.json rejects unknown keys"; fi
if render --set altostrat.token=x --set podDisruptionBudget.enabled=true >/dev/null 2>&1; then
  fail "a PodDisruptionBudget is refused for a single replica"
else pass "a PodDisruptionBudget is refused for a single replica"; fi

check "existingSecret: no Secret rendered, its key mounted as the token file" bash -c '
  out="$('"'$HELM'"' template avo '"'$CHART'"' --set altostrat.existingSecret=mine --set altostrat.existingSecretKey=api-token)"
  ! grep -q "^kind: Secret$" <<<"$out" &&
  grep -q "secretName: mine" <<<"$out" && grep -q "key: api-token" <<<"$out"'

dep="$(deployment_json --set altostrat.token=x)"
check "Deployment: defaults (1 replica, image tag = appVersion, command run, leader election on, rolling update)" jq -e '
  .spec.replicas == 1
  and .spec.template.spec.containers[0].image == "ghcr.io/altostrat/altostrat-vpn-operator:0.1.0"
  and .spec.template.spec.containers[0].args == ["run"]
  and (.spec.template.spec.containers[0].env[] | select(.name == "LEADER_ELECTION") | .value) == "true"
  and ((.spec.strategy.type // "RollingUpdate") == "RollingUpdate")' <<<"$dep"
check "Deployment: non-root 65532, read-only root fs, no capabilities, RuntimeDefault seccomp" jq -e '
  .spec.template.spec as $p | $p.containers[0].securityContext as $c
  | $p.securityContext.runAsNonRoot == true and $p.securityContext.runAsUser == 65532
  and $p.securityContext.seccompProfile.type == "RuntimeDefault"
  and $c.readOnlyRootFilesystem == true and $c.allowPrivilegeEscalation == false
  and $c.capabilities.drop == ["ALL"]' <<<"$dep"
check "Deployment: probes /healthz on port metrics (8080) and /readyz through the binary (its reason in the pod's events), token mounted read-only" jq -e '
  .spec.template.spec.containers[0] as $c
  | $c.livenessProbe.httpGet == {"path": "/healthz", "port": "metrics"}
  and $c.readinessProbe.exec.command == ["/vpn-operator", "probe", "readyz"]
  and ($c.ports[] | select(.name == "metrics") | .containerPort) == 8080
  and ($c.volumeMounts[] | select(.mountPath == "/var/run/secrets/altostrat") | .readOnly) == true
  and ($c.resources.requests | length) > 0' <<<"$dep"
check "Deployment: every operator setting is passed through the environment" bash -c '
  want="ALTOSTRAT_API_URL ALTOSTRAT_API_TOKEN_FILE ALTOSTRAT_API_RATE_LIMIT WATCH_NAMESPACES RESYNC_INTERVAL
        INSTANCE_CONCURRENCY PEER_CONCURRENCY METRICS_ADDR LOG_FORMAT RUST_LOG LEADER_ELECTION
        LEADER_ELECTION_LEASE_NAME POD_NAME POD_NAMESPACE"
  have="$(jq -r ".spec.template.spec.containers[0].env[].name" <<<"$1")"
  for v in $want; do grep -qx "$v" <<<"$have" || { echo "missing env $v"; exit 1; }; done
  [[ "$(jq -r ".spec.template.spec.containers[0].env[] | select(.name==\"ALTOSTRAT_API_TOKEN_FILE\") | .value" <<<"$1")" == /var/run/secrets/altostrat/token ]]' _ "$dep"

dep2="$(deployment_json --set altostrat.token=x --set replicaCount=2)"
if [[ "$(env_of "$dep2" LEADER_ELECTION)" == true ]] \
   && render --set altostrat.token=x --set replicaCount=2 | grep -q -- '-leader-election$'; then
  pass "replicaCount=2 turns leader election on (and renders the Lease Role)"
else fail "replicaCount=2 turns leader election on (and renders the Lease Role)"; fi
if render --set altostrat.token=x | grep -q -- '-leader-election$'; then
  pass "default: the Lease Role for leader election is rendered"
else fail "default: the Lease Role for leader election is rendered"; fi
if render --set altostrat.token=x --set leaderElection.enabled=false | grep -q -- '-leader-election$'; then
  fail "no Lease Role while leader election is off"
else pass "no Lease Role while leader election is off"; fi
# A rolling update never runs two active reconcilers: either leader election is on (the new
# pod waits for the Lease) or, without it, the Deployment is replaced with Recreate.
check "leader election off with one replica: Recreate strategy, LEADER_ELECTION=false" jq -e '
  .spec.strategy.type == "Recreate"
  and (.spec.template.spec.containers[0].env[] | select(.name == "LEADER_ELECTION") | .value) == "false"' \
  <<<"$(deployment_json --set altostrat.token=x --set leaderElection.enabled=false)"
check "replicaCount=2 with leaderElection.enabled=false still elects a leader and rolls" jq -e '
  (.spec.strategy.type // "RollingUpdate") == "RollingUpdate"
  and (.spec.template.spec.containers[0].env[] | select(.name == "LEADER_ELECTION") | .value) == "true"' \
  <<<"$(deployment_json --set altostrat.token=x --set replicaCount=2 --set leaderElection.enabled=false)"
check "kustomize base: LEADER_ELECTION=true with a Lease Role bound in the operator's namespace" bash -c '
  objs="$(kubectl kustomize deploy/kustomize/base | kubectl create --dry-run=client -o json -f - | jq -s .)"
  jq -e "
    (.[] | select(.kind == \"Deployment\") | .spec.template.spec.containers[0].env[] | select(.name == \"LEADER_ELECTION\") | .value) == \"true\"
    and ([.[] | select(.kind == \"Deployment\") | .spec.strategy.type // \"RollingUpdate\"] == [\"RollingUpdate\"])
    and ([.[] | select(.kind == \"Role\") | .rules[] | select(.resources == [\"leases\"])] | length) == 1
    and ([.[] | select(.kind == \"Role\") | .metadata.namespace] | unique) == ([.[] | select(.kind == \"Deployment\") | .metadata.namespace] | unique)
    and ([.[] | select(.kind == \"RoleBinding\") | .roleRef.name] | index(\"altostrat-vpn-operator-leader-election\")) != null" <<<"$objs"'

# The rules that stay cluster-wide: the start-up check reads the operator's CRDs, the
# ownership records (cluster-scoped) are read and written by every installation.
crd_rule='{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "resourceNames": ["ownershiprecords.vpn.altostrat.io", "vpncredentials.vpn.altostrat.io", "vpninstances.vpn.altostrat.io", "vpnpeers.vpn.altostrat.io"], "verbs": ["get"]}'
record_rule='{"apiGroups": ["vpn.altostrat.io"], "resources": ["ownershiprecords"], "verbs": ["get", "list", "create", "update", "delete"]}'
# Namespace labels (grants) and the shared credentials are cluster-wide too.
cluster_rules='[{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
  {"apiGroups": ["vpn.altostrat.io"], "resources": ["vpncredentials"], "verbs": ["get", "list", "watch"]},
  {"apiGroups": ["vpn.altostrat.io"], "resources": ["vpncredentials/status"], "verbs": ["get", "patch", "update"]}]'
rendered="$(render --set altostrat.token=x --set 'watchNamespaces={team-a,team-b}')"
if ! jq -e --argjson want "$crd_rule" --argjson records "$record_rule" --argjson cluster "$cluster_rules" '[.[] | select(.kind == "ClusterRole")] | length == 1
       and .[0].metadata.name == "avo-altostrat-vpn-operator-crds" and .[0].rules == [$want, $records] + $cluster' \
     <<<"$(objects_json --set altostrat.token=x --set 'watchNamespaces={team-a,team-b}')" >/dev/null; then
  fail "watchNamespaces: the only ClusterRole reads the operator's CRDs (get, by name), its ownership records, namespace labels and VpnCredentials"
elif [[ "$(grep -c '^kind: Role$' <<<"$rendered")" == 3 && "$(grep -c '^kind: RoleBinding$' <<<"$rendered")" == 3 ]] \
     && [[ "$(env_of "$(deployment_json --set altostrat.token=x --set 'watchNamespaces={team-a,team-b}')" WATCH_NAMESPACES)" == team-a,team-b ]]; then
  pass "watchNamespaces renders a Role+RoleBinding per namespace (plus the Lease Role), a ClusterRole only for the CRDs, the ownership records, namespaces and VpnCredentials, and WATCH_NAMESPACES=team-a,team-b"
else fail "watchNamespaces renders a Role+RoleBinding per namespace (plus the Lease Role), a ClusterRole only for the CRDs, the ownership records, namespaces and VpnCredentials, and WATCH_NAMESPACES=team-a,team-b"; fi
# The Secrets admission policy (templates/admission-policy.yaml): on by default, a policy and its
# binding, matching only the release's ServiceAccount.
# policy_rendered JSON-ARRAY USERNAME: one policy and one binding, bound to it with Deny, failing
# closed, on secrets CREATE/UPDATE/DELETE, for requests of USERNAME only.
policy_rendered() {
  jq -e --arg user "$2" '
    [.[] | select(.kind == "ValidatingAdmissionPolicy")] as $p | [.[] | select(.kind == "ValidatingAdmissionPolicyBinding")] as $b
    | ($p | length) == 1 and ($b | length) == 1
    and $b[0].spec.policyName == $p[0].metadata.name and $b[0].spec.validationActions == ["Deny"]
    and ($b[0].spec | has("matchResources") | not)
    and $p[0].spec.failurePolicy == "Fail"
    and $p[0].spec.matchConstraints.resourceRules == [{"apiGroups": [""], "apiVersions": ["v1"],
          "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["secrets"]}]
    and $p[0].spec.matchConditions == [{"name": "operator-service-account",
          "expression": "request.userInfo.username == '"'"'\($user)'"'"'"}]' <<<"$1" >/dev/null ||
    { jq -c '.[] | select(.kind | startswith("ValidatingAdmissionPolicy")) | {kind, name: .metadata.name, spec: (.spec | del(.variables, .validations))}' <<<"$1"; return 1; }
}
check "Secrets admission policy: rendered by default (policy + cluster-wide Deny binding, failurePolicy Fail), matching the release's ServiceAccount only" \
  policy_rendered "$(objects_json --set altostrat.token=x)" "system:serviceaccount:$NS:avo-altostrat-vpn-operator"
check "Secrets admission policy: an existing ServiceAccount in another release namespace is the one matched" \
  policy_rendered "$("$HELM" template avo "$CHART" -n ops --set altostrat.token=x --set serviceAccount.create=false \
    --set serviceAccount.name=vpn-sa | kubectl create --dry-run=client -o json -f - | jq -s .)" "system:serviceaccount:ops:vpn-sa"
check "Secrets admission policy: profileSecrets.admissionPolicy.enabled=false renders neither policy nor binding" bash -c '
  n="$(jq "[.[] | select(.kind | startswith(\"ValidatingAdmissionPolicy\"))] | length" <<<"$1")"; [[ "$n" == 0 ]] || { echo "$n rendered"; exit 1; }' \
  _ "$(objects_json --set altostrat.token=x --set profileSecrets.admissionPolicy.enabled=false)"
check "optional ServiceMonitor and PodDisruptionBudget render when enabled" bash -c '
  out="$('"'$HELM'"' template avo '"'$CHART'"' --set altostrat.token=x --set replicaCount=2 \
         --set metrics.serviceMonitor.enabled=true --set podDisruptionBudget.enabled=true)"
  grep -q "^kind: ServiceMonitor$" <<<"$out" && grep -q "^kind: PodDisruptionBudget$" <<<"$out"'

# --- Helm: chart conventions ----------------------------------------------------------------
check "fullnameOverride names every object, the token Secret and the bindings' subject" bash -c '
  jq -e "all(.[] | select(.kind != \"CustomResourceDefinition\"); .metadata.name | startswith(\"vpn-op\"))
    and (.[] | select(.kind == \"ClusterRoleBinding\") | .subjects[0].name) == \"vpn-op\"
    and (.[] | select(.kind == \"Deployment\") | .spec.template.spec.volumes[0].secret.secretName) == \"vpn-op-token\"" <<<"$1"
' _ "$(objects_json --set altostrat.token=x --set fullnameOverride=vpn-op)"
check "nameOverride changes the names and the app.kubernetes.io/name label" jq -e '
  (.[] | select(.kind == "Deployment") | .metadata.name == "avo-vpnop"
    and .spec.selector.matchLabels["app.kubernetes.io/name"] == "vpnop")' \
  <<<"$(objects_json --set altostrat.token=x --set nameOverride=vpnop)"
check "commonLabels on every object and the pod template; podLabels/podAnnotations on the pods only" jq -e '
  all(.[]; .metadata.labels.team == "net")
  and (.[] | select(.kind == "Deployment") | .spec.template.metadata as $m
       | $m.labels.team == "net" and $m.labels.tier == "ops" and $m.annotations.note == "x"
       and (.spec.selector.matchLabels | has("team") or has("tier") | not) and (.metadata.labels | has("tier") | not))' \
  <<<"$(objects_json --set altostrat.token=x --set commonLabels.team=net --set podLabels.tier=ops --set podAnnotations.note=x)"
digest="sha256:$(printf '%064d' 7)"
check "image.digest pins repository@digest (the tag is ignored)" jq -e --arg d "$digest" '
  .spec.template.spec.containers[0].image == "ghcr.io/altostrat/altostrat-vpn-operator@\($d)"' \
  <<<"$(deployment_json --set altostrat.token=x --set image.tag=9.9.9 --set "image.digest=$digest")"
if render --set altostrat.token=x --set image.digest=latest >/dev/null 2>&1; then
  fail "values.schema.json rejects an image.digest that is not sha256:<64 hex>"
else pass "values.schema.json rejects an image.digest that is not sha256:<64 hex>"; fi
printf 'podSecurityContext: {runAsUser: null, runAsGroup: null, fsGroup: null}\n' >"$work/openshift-values.yaml"
check "OpenShift: podSecurityContext nulls leave UID, GID and fsGroup to the platform (non-root and seccomp kept)" jq -e '
  .spec.template.spec.securityContext as $p | .spec.template.spec.containers[0].securityContext as $c
  | ($p | has("runAsUser") or has("runAsGroup") or has("fsGroup") | not)
  and $p.runAsNonRoot == true and $p.seccompProfile.type == "RuntimeDefault"
  and $c.readOnlyRootFilesystem == true and $c.capabilities.drop == ["ALL"] and ($c | has("runAsUser") | not)' \
  <<<"$(deployment_json --set altostrat.token=x -f "$work/openshift-values.yaml")"
check "security contexts are values: securityContext.runAsUser and podSecurityContext.fsGroup overridable" jq -e '
  .spec.template.spec.containers[0].securityContext.runAsUser == 1000730000
  and .spec.template.spec.securityContext.fsGroup == 1000730000' \
  <<<"$(deployment_json --set altostrat.token=x --set securityContext.runAsUser=1000730000 --set podSecurityContext.fsGroup=1000730000)"
cat >"$work/spread-values.yaml" <<'EOF'
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}
  - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {own: "yes"}}}
EOF
check "topologySpreadConstraints: the operator's selector labels when none given, a given labelSelector kept" jq -e '
  .spec.template.spec.topologySpreadConstraints as $t | ($t | length) == 2
  and $t[0].labelSelector.matchLabels == .spec.selector.matchLabels and $t[0].topologyKey == "topology.kubernetes.io/zone"
  and $t[1].labelSelector == {"matchLabels": {"own": "yes"}}' \
  <<<"$(deployment_json --set altostrat.token=x -f "$work/spread-values.yaml")"
check "revisionHistoryLimit: not rendered when unset, 0 rendered as 0" bash -c '
  jq -e ".spec | has(\"revisionHistoryLimit\") | not" <<<"$1" && jq -e ".spec.revisionHistoryLimit == 0" <<<"$2"' _ \
  "$(deployment_json --set altostrat.token=x)" "$(deployment_json --set altostrat.token=x --set revisionHistoryLimit=0)"
cat >"$work/extra-values.yaml" <<'EOF'
extraEnv:
  - {name: HTTPS_PROXY, value: "http://proxy.corp.example:3128"}
  - {name: NO_PROXY, value: "10.0.0.0/8,.svc,.cluster.local"}
extraVolumes:
  - {name: corp-ca, configMap: {name: corp-ca-bundle}}
extraVolumeMounts:
  - {name: corp-ca, mountPath: /etc/ssl/corp, readOnly: true}
EOF
check "extraEnv, extraVolumes and extraVolumeMounts are added after the chart's own" jq -e '
  .spec.template.spec as $s | $s.containers[0] as $c
  | ($c.env | map(.name) | .[-2:]) == ["HTTPS_PROXY", "NO_PROXY"] and ($c.env | map(.name) | index("ALTOSTRAT_API_URL")) == 0
  and ($c.volumeMounts | map(.name)) == ["altostrat-token", "corp-ca"]
  and ($s.volumes | map(.name)) == ["altostrat-token", "corp-ca"] and $s.volumes[1].configMap.name == "corp-ca-bundle"' \
  <<<"$(deployment_json --set altostrat.token=x -f "$work/extra-values.yaml")"

# Used as a subchart: Helm hands the subchart the parent's `global` values and, with a
# dependency condition, an `enabled` key; a strict schema must accept both.
mkdir -p "$work/umbrella/charts" "$work/umbrella/templates" && cp -r "$CHART" "$work/umbrella/charts/"
echo "platform installed" >"$work/umbrella/templates/NOTES.txt"
cat >"$work/umbrella/Chart.yaml" <<'EOF'
apiVersion: v2
name: platform
version: 1.0.0
dependencies:
  - name: altostrat-vpn-operator
    version: "*"
    condition: altostrat-vpn-operator.enabled
EOF
printf 'global: {imageRegistry: registry.corp.example}\naltostrat-vpn-operator:\n  enabled: true\n  altostrat: {existingSecret: avo-token}\n' \
  >"$work/umbrella/values.yaml"
check "usable as a subchart: an umbrella chart with global values and a condition renders and lints" bash -c '
  "$1" lint --strict "$2" >/dev/null && "$1" template p "$2" | grep -q "^kind: Deployment$"' _ "$HELM" "$work/umbrella"

if render --set altostrat.token=x | grep -q '^kind: NetworkPolicy$'; then
  fail "NetworkPolicy is off by default"
else pass "NetworkPolicy is off by default"; fi
check "NetworkPolicy (enabled): metrics ingress only; egress DNS, API server (443, 6443) and Altostrat (443) only" jq -e '
  .[] | select(.kind == "NetworkPolicy") | .spec
  | .podSelector.matchLabels["app.kubernetes.io/instance"] == "avo" and .policyTypes == ["Ingress", "Egress"]
  and .ingress == [{"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}]
  and (.egress | length) == 3
  and ([.egress[0].ports[].port] == [53, 53]) and .egress[1].to == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
  and [.egress[1].ports[].port] == [443, 6443] and [.egress[2].ports[].port] == [443] and (.egress[2] | has("to") | not)' \
  <<<"$(objects_json --set altostrat.token=x --set networkPolicy.enabled=true --set 'networkPolicy.apiServer.cidrs={10.0.0.1/32}' \
        --set 'networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name=monitoring')"

# The kustomize component is the chart's NetworkPolicy with its default values.
check "kustomize network-policy component: the chart's NetworkPolicy (defaults), selecting the pods of the base's Deployment in its namespace; off in the base" bash -c '
  chart="$(jq ".[] | select(.kind == \"NetworkPolicy\") | .spec | del(.podSelector)" <<<"$1" | jq -S .)"
  objs="$(kubectl kustomize deploy/kustomize/overlays/example | kubectl create --dry-run=client -o json -f - | jq -s .)"
  [[ "$(jq -S ".[] | select(.kind == \"NetworkPolicy\") | .spec | del(.podSelector)" <<<"$objs")" == "$chart" ]] ||
    { echo "component: $(jq -c ".[] | select(.kind == \"NetworkPolicy\") | .spec" <<<"$objs")"; echo "chart: $chart"; exit 1; }
  jq -e "(.[] | select(.kind == \"Deployment\")) as \$d | (.[] | select(.kind == \"NetworkPolicy\")) as \$n
    | \$n.metadata.namespace == \$d.metadata.namespace
    and (\$n.spec.podSelector.matchLabels | to_entries | all(\$d.spec.template.metadata.labels[.key] == .value))" <<<"$objs" >/dev/null &&
  ! kubectl kustomize deploy/kustomize/base | grep -q "^kind: NetworkPolicy$"' _ \
  "$(objects_json --set altostrat.token=x --set networkPolicy.enabled=true)"

check "helm test: a test-hook Pod requests /readyz through the metrics Service (none without the Service)" bash -c '
  pod="$(jq -c ".[] | select(.kind == \"Pod\")" <<<"$1")"
  jq -e ".metadata.annotations[\"helm.sh/hook\"] == \"test\"
    and (.spec.containers[0].args[-1] == \"http://avo-altostrat-vpn-operator-metrics.'"$NS"'.svc:8080/readyz\")
    and .spec.restartPolicy == \"Never\" and .spec.securityContext.runAsNonRoot == true
    and .spec.securityContext.runAsUser == 65532" <<<"$pod" >/dev/null &&
  ! "$2" template avo "$3" --set altostrat.token=x --set metrics.service.enabled=false | grep -q "^kind: Pod$"' _ \
  "$(objects_json --set altostrat.token=x)" "$HELM" "$CHART"

check "helm test Pod is admitted in a namespace enforcing the restricted Pod Security Standard" bash -c '
  kubectl create namespace avo-restricted --dry-run=client -o yaml |
    kubectl label --local -f - pod-security.kubernetes.io/enforce=restricted -o yaml | kubectl apply -f - >/dev/null &&
  "$1" template avo "$2" -n avo-restricted --set altostrat.token=x -s templates/tests/test-readyz.yaml |
    kubectl apply --dry-run=server -n avo-restricted -f - 2>&1 | tee /dev/stderr | grep -q "created (server dry run)" &&
  ! "$1" template avo "$2" -n avo-restricted --set altostrat.token=x --set securityContext.allowPrivilegeEscalation=true \
      -s templates/tests/test-readyz.yaml | kubectl apply --dry-run=server -n avo-restricted -f - >/dev/null 2>&1' _ "$HELM" "$CHART"
check "operator pod (defaults, and with the OpenShift values) admitted under the restricted Pod Security Standard" bash -c '
  for dep in "$1" "$2"; do
    jq "{apiVersion: \"v1\", kind: \"Pod\", metadata: {name: \"operator-pod\"}, spec: .spec.template.spec}" <<<"$dep" |
      kubectl apply --dry-run=server -n avo-restricted -f - || exit 1
  done' _ "$(deployment_json --set altostrat.token=x)" "$(deployment_json --set altostrat.token=x -f "$work/openshift-values.yaml")"
check "kubeVersion: refused on Kubernetes 1.30 (CEL IP/CIDR functions), accepted on 1.31" bash -c '
  ! out="$("$1" template avo "$2" --set altostrat.token=x --kube-version 1.30.14 2>&1)" && grep -q "kubeVersion" <<<"$out" &&
  "$1" template avo "$2" --set altostrat.token=x --kube-version 1.31.0 >/dev/null' _ "$HELM" "$CHART"

# Chart.yaml annotations are strings; read them through a ConfigMap so kubectl parses the YAML.
annotations_json="$( { printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: chart}\n'
  sed -n '/^annotations:/,$p' "$CHART/Chart.yaml" | sed 's/^annotations:/data:/'; } | kubectl create --dry-run=client -o json -f - | jq .data)"
as_list() { printf 'apiVersion: v1\nkind: List\nitems:\n'; sed 's/^/  /'; }
artifacthub_metadata() { # $1: annotations as JSON, $2: the rendered objects as JSON
  local names image license
  names="$(jq -r '.["artifacthub.io/crds"]' <<<"$1" | sed -n 's/^  name: //p' | sort)"
  [[ "$names" == "$(for f in crds/*.vpn.altostrat.io.yaml; do basename "$f" .yaml; done | sort)" ]] || { echo "crds: $names"; return 1; }
  image="$(jq -r '.["artifacthub.io/images"]' <<<"$1" | sed -n 's/^ *image: //p')"
  [[ "$image" == "$(jq -r '.[] | select(.kind == "Deployment") | .spec.template.spec.containers[0].image' <<<"$2")" ]] || { echo "images: $image"; return 1; }
  license="$(jq -r '.["artifacthub.io/license"]' <<<"$1")"
  grep -qx "license = \"$license\"" Cargo.toml && head -3 LICENSE | grep -q "Apache License" || { echo "license: $license"; return 1; }
}
check "Artifact Hub: crds names the CRDs in crds/, images the chart's default image, license matches Cargo.toml and LICENSE" \
  artifacthub_metadata "$annotations_json" "$(objects_json --set altostrat.token=x)"
check "optional PrometheusRule and Grafana dashboard render only when enabled" bash -c '
  ! "$1" template avo "$2" --set altostrat.token=x | grep -qE "^kind: PrometheusRule$|grafana_dashboard" &&
  out="$("$1" template avo "$2" --set altostrat.token=x --set metrics.prometheusRule.enabled=true --set metrics.grafanaDashboard.enabled=true)" &&
  grep -q "^kind: PrometheusRule$" <<<"$out" && grep -q "grafana_dashboard: \"1\"" <<<"$out"' _ "$HELM" "$CHART"
check "Grafana dashboard ConfigMap: valid server-side, its JSON is files/grafana-dashboard.json, which hack/grafana-dashboard.py generates" bash -c '
  cm="$("$1" template avo "$2" --set altostrat.token=x --set metrics.grafanaDashboard.enabled=true -s templates/grafana-dashboard.yaml)"
  kubectl apply --dry-run=server -f - <<<"$cm" >/dev/null &&
  diff <(kubectl create --dry-run=client -o json -f - <<<"$cm" | jq -r ".data[\"altostrat-vpn-operator.json\"]" | jq -S .) \
       <(jq -S . "$2/files/grafana-dashboard.json") &&
  python3 hack/grafana-dashboard.py "$3/dashboard.json" && diff "$3/dashboard.json" "$2/files/grafana-dashboard.json"' _ "$HELM" "$CHART" "$work"

# --- Go tools: PromQL, chart README, workflows (built and cached by scripts/dev-tools.sh) -----
promql_check="$(scripts/dev-tools.sh path promql-check)"
if [[ -x "$promql_check" ]]; then
  "$HELM" template avo "$CHART" -n "$NS" --set altostrat.token=x --set metrics.prometheusRule.enabled=true \
    -s templates/prometheusrule.yaml >"$work/prometheusrule.yaml"
  check "PromQL: every alert and dashboard expression parses; each metric it names is exported (src/metrics.rs)" \
    "$promql_check" -metrics src/metrics.rs "$work/prometheusrule.yaml" "$CHART/files/grafana-dashboard.json"
  printf '{"panels": [{"targets": [{"expr": "rate(vpn_operator_reconciles_total[5m])"}, {"expr": "vpn_operator_nonexistent"}]}]}' >"$work/bad1.json"
  printf '{"panels": [{"targets": [{"expr": "sum(rate(vpn_operator_reconciles_total[5m])"}]}]}' >"$work/bad2.json"
  check "PromQL check refuses an unknown metric name and an unparsable expression" bash -c '
    ! out1="$("$1" -metrics src/metrics.rs "$2")" && grep -q "not exported by the operator: vpn_operator_nonexistent" <<<"$out1" &&
    ! out2="$("$1" -metrics src/metrics.rs "$3")" && grep -q "unclosed left parenthesis" <<<"$out2"' _ "$promql_check" "$work/bad1.json" "$work/bad2.json"
else
  printf 'SKIP PromQL check of the alerts and the dashboard (run scripts/dev-tools.sh build)\n'
fi
chart_readme="$(scripts/dev-tools.sh path chart-readme)"
if [[ -x "$chart_readme" ]]; then
  check "chart README.md is current (generated from README.md.gotmpl and values.yaml; scripts/chart-readme.sh)" \
    bash -c 'diff -u "$2/README.md" <("$1" "$2")' _ "$chart_readme" "$CHART"
  check "chart README documents every top-level value" bash -c '
    for k in $(grep -oE "^[a-zA-Z]+:" "$1/values.yaml" | tr -d :); do
      grep -qE "^\| \`$k(\.|\`)" "$1/README.md" || { echo "not documented: $k"; exit 1; }
    done' _ "$CHART"
else
  printf 'SKIP chart README is current (run scripts/dev-tools.sh build)\n'
fi
actionlint="$(scripts/dev-tools.sh path actionlint)"
if [[ -x "$actionlint" ]]; then
  check "actionlint .github/workflows/*.yml" "$actionlint" -no-color .github/workflows/ci.yml .github/workflows/release.yml
else
  printf 'SKIP actionlint .github/workflows (run scripts/dev-tools.sh build)\n'
fi
check "release workflow: multi-arch cross build, SBOM, provenance, cosign keyless, chart pushed to OCI" bash -c '
  w=.github/workflows/release.yml
  grep -q "platforms: linux/amd64,linux/arm64" $w && grep -q "file: deploy/release/Dockerfile.cross" $w &&
  grep -q "sbom: true" $w && grep -q "provenance: mode=max" $w && grep -q "id-token: write" $w &&
  grep -q "cosign sign --yes" $w && grep -q "helm push .* \"\$registry\"" $w && grep -q "oci://ghcr.io/" $w &&
  grep -q "FROM --platform=\$BUILDPLATFORM" deploy/release/Dockerfile.cross &&
  grep -q -- "--release --locked --no-default-features --bin vpn-operator --target" deploy/release/Dockerfile.cross'

# --- Helm against the API server -------------------------------------------------------------
# The Secrets admission policy is proven with requests made as a ServiceAccount (impersonated).
# as_sa NAMESPACE:NAME KUBECTL-ARGS...: kubectl as that ServiceAccount, with its groups.
as_sa() { local sa="$1"; shift; kubectl "$@" --as="system:serviceaccount:$sa" --as-group=system:serviceaccounts --as-group="system:serviceaccounts:${sa%%:*}"; }
# refused_by POLICY COMMAND...: the command fails, refused by POLICY (not by RBAC or validation).
refused_by() {
  local policy="$1" out; shift
  if out="$("$@" 2>&1)"; then echo "allowed: $* ($out)"; return 1; fi
  grep -qF "ValidatingAdmissionPolicy '$policy' with binding '$policy' denied request" <<<"$out" ||
    { echo "refused, but not by $policy: $out"; return 1; }
}
# policy_in_force POLICY NAMESPACE:NAME NAMESPACE: POLICY refuses the ServiceAccount an unlabelled
# Secret (server dry run). A new policy takes effect once the API server has compiled and loaded
# it, a moment after its creation: retried until refused, 60s at most.
policy_in_force() {
  local policy="$1" sa="$2" ns="$3" deadline=$((SECONDS + 60)) out
  until out="$(refused_by "$policy" as_sa "$sa" -n "$ns" create secret generic policy-probe --from-literal=k=v --dry-run=server)"; do
    ((SECONDS < deadline)) || { echo "not refused by $policy within 60s: $out"; return 1; }
    sleep 0.5
  done
}
# secret_json NAME LABELLED(yes|no) [TYPE]: a Secret with a profile-like key, labelled
# vpn.altostrat.io/peer-uid or not (a service-account-token one names the ServiceAccount default).
secret_json() {
  jq -n --arg name "$1" --arg labelled "$2" --arg type "${3:-Opaque}" '{apiVersion: "v1", kind: "Secret",
    metadata: ({name: $name}
      + (if $labelled == "yes" then {labels: {"vpn.altostrat.io/peer-uid": "00000000-0000-4000-8000-00000000beef"}} else {} end)
      + (if $type == "kubernetes.io/service-account-token" then {annotations: {"kubernetes.io/service-account.name": "default"}} else {} end)),
    type: $type, data: {"wg0.conf": ("[Interface]\n" | @base64)}}'
}

namespace "$NS"; namespace team-a; namespace team-b
check "helm template | kubectl apply --server-side --dry-run=server (all namespaces)" bash -c \
  "'$HELM' template avo '$CHART' -n $NS --set altostrat.existingSecret=avo-token |
   kubectl apply --server-side --dry-run=server -f -"
check "helm template | kubectl apply --server-side --dry-run=server (watchNamespaces, 2 replicas, PDB)" bash -c \
  "'$HELM' template avo '$CHART' -n $NS --set altostrat.token=x --set 'watchNamespaces={team-a,team-b}' \
     --set replicaCount=2 --set podDisruptionBudget.enabled=true |
   kubectl apply --server-side --dry-run=server -f -"

# --take-ownership adopts CRDs that exist without belonging to a release (the e2e suites
# applied them), as docs/deploy.md tells users whose CRDs came from kubectl or an older chart.
check "helm install avo -n $NS --create-namespace --take-ownership (real)" \
  "$HELM" install avo "$CHART" -n "$NS" --create-namespace --take-ownership -f "$work/token-values.yaml"
check "installed: Deployment, ServiceAccount, ClusterRole, ClusterRoleBinding, Service, Secret, Secrets admission policy and binding" \
  kubectl -n "$NS" get deployment/avo-altostrat-vpn-operator serviceaccount/avo-altostrat-vpn-operator \
    clusterrole/avo-altostrat-vpn-operator clusterrolebinding/avo-altostrat-vpn-operator \
    service/avo-altostrat-vpn-operator-metrics secret/avo-altostrat-vpn-operator-token \
    validatingadmissionpolicy/avo-altostrat-vpn-operator-secrets validatingadmissionpolicybinding/avo-altostrat-vpn-operator-secrets
sa="$NS:avo-altostrat-vpn-operator"
check "RBAC (cluster-wide): exactly the verbs the operator uses (CRDs: get, the two by name)" bash -c "$(declare -f can_i); set -e
  for v in get list watch patch update; do can_i yes $sa \$v vpninstances.vpn.altostrat.io default; can_i yes $sa \$v vpnpeers.vpn.altostrat.io default; done
  for v in create delete; do can_i no $sa \$v vpninstances.vpn.altostrat.io default; done
  for v in get patch update; do can_i yes $sa \$v vpninstances.vpn.altostrat.io default --subresource=status; done
  can_i yes $sa update vpnpeers.vpn.altostrat.io default --subresource=finalizers
  for v in get create update patch delete; do can_i yes $sa \$v secrets any-namespace; done
  for v in list watch deletecollection; do can_i no $sa \$v secrets default; done
  can_i yes $sa create events.events.k8s.io default; can_i yes $sa patch events default
  can_i no $sa create configmaps default
  can_i yes $sa update leases.coordination.k8s.io $NS; can_i no $sa get leases.coordination.k8s.io default
  can_i yes $sa get customresourcedefinitions.apiextensions.k8s.io/vpninstances.vpn.altostrat.io default
  can_i yes $sa get customresourcedefinitions.apiextensions.k8s.io/vpnpeers.vpn.altostrat.io default
  can_i no $sa get customresourcedefinitions.apiextensions.k8s.io/other.example.com default
  for v in list watch update patch delete; do can_i no $sa \$v customresourcedefinitions.apiextensions.k8s.io default; done"

# The Secrets admission policy of the real install: what the operator's ServiceAccount may and
# may not do to Secrets (RBAC allows it all), in a namespace of its own; other users unaffected.
policy=avo-altostrat-vpn-operator-secrets operator_sa="$NS:avo-altostrat-vpn-operator" pns=avo-secret-policy
as_operator() { as_sa "$operator_sa" -n "$pns" "$@"; }
create_as_operator() { secret_json "$@" | as_operator create -f -; }
# remove_policy_probes [--wait]: the probe namespace, after removing finalizers left on its Secrets.
remove_policy_probes() {
  local wait=false; [[ "${1:-}" == --wait ]] && wait=true
  kubectl -n "$pns" get secrets -o name 2>/dev/null |
    xargs -r -I{} kubectl -n "$pns" patch {} --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  kubectl delete namespace "$pns" --ignore-not-found --wait="$wait" --timeout=90s >/dev/null 2>&1 || true
}
remove_policy_probes --wait
namespace "$pns"
kubectl -n "$pns" create secret generic app-credentials --from-literal=token=not-the-operators >/dev/null
# secret_state NAME: data, labels and finalizers of a Secret in the probe namespace (admin's view).
secret_state() { kubectl -n "$pns" get secret "$1" -o json | jq -cS '{data, labels: .metadata.labels, finalizers: .metadata.finalizers}'; }
finalizer_patch() { # finalizer_patch NAME FINALIZERS-JSON: the merge patch the operator sends
  as_operator patch secret "$1" --type merge -p "$(jq -cn --argjson f "$2" --arg rv "$(kubectl -n "$pns" get secret "$1" -o jsonpath='{.metadata.resourceVersion}')" \
    '{metadata: {finalizers: $f, resourceVersion: $rv}}')"
}
check "Secrets admission policy in force: the operator's ServiceAccount is refused an unlabelled Secret (server dry run, retried until the API server has loaded the policy, 60s at most)" \
  policy_in_force "$policy" "$operator_sa" "$pns"
policy_create_refused() {
  refused_by "$policy" create_as_operator unlabelled no || return 1
  [[ -z "$(kubectl -n "$pns" get secret unlabelled --ignore-not-found -o name)" ]] || { echo "created all the same"; return 1; }
}
check "Secrets admission policy: the operator may not create an unlabelled Secret" policy_create_refused
check "Secrets admission policy: the operator may create an Opaque Secret labelled vpn.altostrat.io/peer-uid" \
  create_as_operator profile yes
check "Secrets admission policy: the operator may not create a labelled kubernetes.io/service-account-token Secret (the control plane would fill it with a token)" \
  refused_by "$policy" create_as_operator sa-token yes kubernetes.io/service-account-token
policy_data_refused() {
  local before; before="$(secret_state app-credentials)"
  refused_by "$policy" as_operator patch secret app-credentials --type merge -p '{"data":{"token":"b3BlcmF0b3I="}}' || return 1
  refused_by "$policy" as_operator patch secret app-credentials --type merge -p '{"stringData":{"extra":"x"}}' || return 1
  [[ "$(secret_state app-credentials)" == "$before" ]] || { echo "changed: $before -> $(secret_state app-credentials)"; return 1; }
}
check "Secrets admission policy: the operator may not change the data of an unlabelled Secret (data, stringData)" policy_data_refused
policy_finalizer_allowed() {
  local before; before="$(secret_state app-credentials | jq -c 'del(.finalizers)')"
  finalizer_patch app-credentials '["vpn.altostrat.io/credentials-in-use"]' >/dev/null || return 1
  [[ "$(kubectl -n "$pns" get secret app-credentials -o jsonpath='{.metadata.finalizers}')" == '["vpn.altostrat.io/credentials-in-use"]' ]] ||
    { echo "finalizer not added: $(secret_state app-credentials)"; return 1; }
  finalizer_patch app-credentials 'null' >/dev/null || return 1
  [[ -z "$(kubectl -n "$pns" get secret app-credentials -o jsonpath='{.metadata.finalizers}')" ]] ||
    { echo "finalizer not removed: $(secret_state app-credentials)"; return 1; }
  [[ "$(secret_state app-credentials | jq -c 'del(.finalizers)')" == "$before" ]] || { echo "changed: $before -> $(secret_state app-credentials)"; return 1; }
}
check "Secrets admission policy: the operator may add and remove its finalizer vpn.altostrat.io/credentials-in-use on an unlabelled Secret (and nothing else changes)" \
  policy_finalizer_allowed
policy_adoption_refused() {
  refused_by "$policy" finalizer_patch app-credentials '["example.com/keep"]' || return 1
  refused_by "$policy" as_operator label secret app-credentials vpn.altostrat.io/peer-uid=00000000-0000-4000-8000-00000000beef || return 1
  refused_by "$policy" as_operator annotate secret app-credentials vpn.altostrat.io/peer=alice
}
check "Secrets admission policy: the operator may not add another finalizer to an unlabelled Secret, nor label or annotate it" \
  policy_adoption_refused
policy_delete_refused() {
  refused_by "$policy" as_operator delete secret app-credentials --wait=false || return 1
  kubectl -n "$pns" get secret app-credentials -o json | jq -e '.metadata.deletionTimestamp == null' >/dev/null || { echo "deleted all the same"; return 1; }
}
check "Secrets admission policy: the operator may not delete an unlabelled Secret (it is still there)" policy_delete_refused
policy_own_secret() {
  kubectl -n "$pns" get secret profile -o json | jq '.data["wg0.conf"] = ("[Interface]\nPrivateKey = replaced\n" | @base64)' |
    as_operator replace -f - >/dev/null || { echo "replace refused"; return 1; }
  refused_by "$policy" as_operator label secret profile vpn.altostrat.io/peer-uid- || return 1
  as_operator delete secret profile --wait=false >/dev/null || { echo "delete refused"; return 1; }
  [[ -z "$(kubectl -n "$pns" get secret profile --ignore-not-found -o name)" ]] || { echo "still there"; return 1; }
}
check "Secrets admission policy: the operator may replace a labelled Secret (PUT) and delete it, not remove its label" policy_own_secret
check "Secrets admission policy: another user (admin) is not affected: creates, changes and deletes an unlabelled Secret" bash -c "
  kubectl -n $pns create secret generic admin-made --from-literal=k=v >/dev/null &&
  kubectl -n $pns patch secret admin-made --type merge -p '{\"data\":{\"k\":\"eHg=\"},\"metadata\":{\"finalizers\":[\"example.com/keep\"]}}' >/dev/null &&
  kubectl -n $pns patch secret admin-made --type merge -p '{\"metadata\":{\"finalizers\":null}}' >/dev/null &&
  kubectl -n $pns delete secret admin-made >/dev/null"
remove_policy_probes
check "helm uninstall avo" "$HELM" uninstall avo -n "$NS"
check "helm uninstall avo removed the Secrets admission policy and its binding" bash -c '
  [[ -z "$(kubectl get validatingadmissionpolicy,validatingadmissionpolicybinding avo-altostrat-vpn-operator-secrets --ignore-not-found -o name)" ]]'
crd_state() { # crd_state NAME...: "name uid" per CRD that exists and is not being deleted
  local n; for n in "$@"; do
    kubectl get crd "$n" -o json 2>/dev/null | jq -r 'select(.metadata.deletionTimestamp == null) | "\(.metadata.name) \(.metadata.uid)"'
  done
}
crds_present() {
  local left; left="$(crd_state $(crd_files))"
  [[ -n "$left" && "$(wc -l <<<"$left")" == "$(crd_files | wc -l)" ]] || { echo "CRDs left (not terminating): '$left'"; return 1; }
}
check "helm uninstall avo leaves the CRDs it owned (present, not terminating)" crds_present
# Install, upgrade and uninstall with CRDs this release really created: a copy of the chart
# whose API group is renamed, so its CRDs cannot already exist (the suites before may have
# installed the real ones). It is first installed as an older chart whose VpnInstance CRD lacks
# spec.publicDns; `helm upgrade` to the current chart must add it to the installed CRD; then
# `helm uninstall` must leave the CRDs and their resources.
keep_group=keepcheck.altostrat.io
remove_keep_check() {
  kubectl delete vpninstances.$keep_group --all -n default --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete crd vpninstances.$keep_group vpnpeers.$keep_group --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete namespace avo-keep-system --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
remove_keep_check
cp -r "$CHART" "$work/keep-chart" && grep -rl 'vpn\.altostrat\.io' "$work/keep-chart" | xargs sed -i "s/vpn\.altostrat\.io/$keep_group/g"
keep_crds="vpninstances.$keep_group vpnpeers.$keep_group"
instance_template=templates/crds/vpninstances.vpn.altostrat.io.yaml
public_dns='.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.publicDns'
# The older chart: the same, but its VpnInstance CRD template (rendered, as JSON) lacks publicDns.
cp -r "$work/keep-chart" "$work/old-chart"
"$HELM" template avo-keep "$work/keep-chart" -n avo-keep-system --set altostrat.token=x -s "$instance_template" |
  as_json | jq ".[0] | del($public_dns)" >"$work/old-chart/$instance_template"
# --validate=warn: the API server's default for clients that ask for no field validation (only
# kubectl asks for strict), which drop unknown fields with a warning nobody sees.
keep_instance() {
  sed "s#^apiVersion: vpn\.altostrat\.io/#apiVersion: $keep_group/#" examples/instance.yaml |
    kubectl apply --validate=warn -n default -f - >/dev/null 2>&1
}
stored_public_dns() { kubectl get vpninstances.$keep_group demo-hub -n default -o jsonpath='{.spec.publicDns}'; }
helm_upgrades_crds() {
  "$HELM" install avo-keep "$work/old-chart" -n avo-keep-system --create-namespace -f "$work/token-values.yaml" >/dev/null || return 1
  kubectl wait --for=condition=Established --timeout=30s crd $keep_crds >/dev/null || return 1
  local crd=vpninstances.$keep_group before
  before="$(crd_state $crd)"
  kubectl get crd $crd -o json | jq -e "$public_dns == null" >/dev/null || { echo "the old chart's CRD has publicDns"; return 1; }
  # What a stale CRD does: the field is dropped without an error.
  keep_instance && [[ -z "$(stored_public_dns)" ]] || { echo "publicDns stored against the old CRD: $(stored_public_dns)"; return 1; }
  "$HELM" upgrade avo-keep "$work/keep-chart" -n avo-keep-system -f "$work/token-values.yaml" >/dev/null || return 1
  kubectl get crd $crd -o json | jq -e "$public_dns.type == \"array\" and .metadata.annotations[\"helm.sh/resource-policy\"] == \"keep\"" >/dev/null ||
    { echo "after helm upgrade: $(kubectl get crd $crd -o json | jq -c "{annotations: .metadata.annotations, publicDns: $public_dns}")"; return 1; }
  [[ "$(crd_state $crd)" == "$before" ]] || { echo "CRD replaced, not updated: $before -> $(crd_state $crd)"; return 1; }
  keep_instance && [[ "$(stored_public_dns)" == '["1.1.1.1","8.8.8.8"]' ]] || { echo "publicDns after the upgrade: $(stored_public_dns)"; return 1; }
}
check "helm upgrade updates an installed CRD (chart copy with its own API group): spec.publicDns, which the older chart's CRD lacked (and so dropped), is added in place" \
  helm_upgrades_crds
helm_keeps_crds() {
  local before; before="$(crd_state $keep_crds)"
  [[ "$(wc -l <<<"$before")" == 2 ]] || { echo "the release's CRDs: '$before'"; return 1; }
  [[ "$(kubectl get vpninstances.$keep_group -n default -o name | wc -l)" == 1 ]] || { echo "no VpnInstance before uninstall"; return 1; }
  "$HELM" uninstall avo-keep -n avo-keep-system >/dev/null || return 1
  kubectl get clusterrole avo-keep-altostrat-vpn-operator >/dev/null 2>&1 && { echo "uninstall left the ClusterRole"; return 1; }
  local after; after="$(crd_state $keep_crds)"
  [[ "$after" == "$before" ]] || { echo "CRDs before uninstall: $before; after: $after"; return 1; }
  [[ "$(kubectl get vpninstances.$keep_group -n default -o name | wc -l)" == 1 ]] || { echo "the VpnInstance is gone"; return 1; }
}
check "helm uninstall (chart copy with its own API group): the CRDs Helm created (helm.sh/resource-policy: keep) and a resource of theirs are kept" helm_keeps_crds
remove_keep_check

# A second release leaves the CRDs to the first (only one release can own them).
check "helm install avo-ns (watchNamespaces=team-a, 2 replicas, crds.install=false, real)" \
  "$HELM" install avo-ns "$CHART" -n avo-ns-system --create-namespace -f "$work/token-values.yaml" --set crds.install=false \
    --set 'watchNamespaces={team-a}' --set replicaCount=2 --set podDisruptionBudget.enabled=true
sa="avo-ns-system:avo-ns-altostrat-vpn-operator"
check "RBAC (namespaced): team-a only; Leases only in the release namespace; the two CRDs readable cluster-wide" bash -c "$(declare -f can_i); set -e
  ! kubectl get clusterrole avo-ns-altostrat-vpn-operator >/dev/null 2>&1
  can_i yes $sa watch vpninstances.vpn.altostrat.io team-a
  for v in get create update patch delete; do can_i yes $sa \$v secrets team-a; done
  for v in list watch; do can_i no $sa \$v secrets team-a; done
  can_i no $sa watch vpninstances.vpn.altostrat.io team-b
  for v in get create delete; do can_i no $sa \$v secrets team-b; can_i no $sa \$v secrets default; done
  for v in get create update patch; do can_i yes $sa \$v leases.coordination.k8s.io avo-ns-system; done
  can_i no $sa delete leases.coordination.k8s.io avo-ns-system; can_i no $sa get leases.coordination.k8s.io team-a
  can_i yes $sa get customresourcedefinitions.apiextensions.k8s.io/vpninstances.vpn.altostrat.io default
  can_i yes $sa get customresourcedefinitions.apiextensions.k8s.io/vpnpeers.vpn.altostrat.io default
  can_i no $sa get customresourcedefinitions.apiextensions.k8s.io/other.example.com default"
check "helm uninstall avo-ns" "$HELM" uninstall avo-ns -n avo-ns-system

# --- kustomize -------------------------------------------------------------------------------
check "kubectl apply --server-side -k deploy/kustomize/crds: the live CRDs carry the prune-protection annotations" bash -c "
  $(declare -f as_json crd_files crds_protected); set -e
  kubectl apply --server-side --force-conflicts -k deploy/kustomize/crds >/dev/null
  kubectl wait --for=condition=Established --timeout=30s crd $(crd_files | tr '\n' ' ') >/dev/null
  crds_protected \"\$(kubectl get crd $(crd_files | tr '\n' ' ') -o json | jq '.items')\""
check "kubectl apply -k deploy/kustomize/base (client-side apply, server dry run)" \
  kubectl apply -k deploy/kustomize/base --dry-run=server
check "kubectl apply --server-side -k deploy/kustomize/base" \
  kubectl apply --server-side --force-conflicts -k deploy/kustomize/base
check "kustomize base: Deployment in $NS mounts Secret altostrat-vpn-operator-token, image pinned" bash -c '
  kubectl -n '"$NS"' get deployment altostrat-vpn-operator -o json | jq -e "
    .spec.template.spec.volumes[0].secret.secretName == \"altostrat-vpn-operator-token\"
    and .spec.template.spec.containers[0].image == \"ghcr.io/altostrat/altostrat-vpn-operator:0.1.0\"
    and .spec.template.spec.securityContext.runAsUser == 65532"'
check "kustomize base: ClusterRole and Lease Role rules identical to the chart's" bash -c '
  rules() { kubectl create --dry-run=client -o json -f - | jq -cS --arg k "$1" "select(.kind == \$k) | .rules"; }
  [[ "$(kubectl kustomize deploy/kustomize/base | rules ClusterRole)" == "$('"'$HELM'"' template avo '"'$CHART'"' --set altostrat.token=x | rules ClusterRole)" ]] &&
  [[ "$(kubectl kustomize deploy/kustomize/base | rules Role)" == "$('"'$HELM'"' template avo '"'$CHART'"' --set altostrat.token=x --set replicaCount=2 | rules Role)" ]]'
# The base's policy is the chart's, rendered for the base's names (fullnameOverride gives the
# ServiceAccount and the policy the base's names, $NS its namespace).
check "kustomize base: the Secrets admission policy and its binding are the chart's (same spec), matching the base's ServiceAccount" bash -c '
  specs() { kubectl create --dry-run=client -o json -f - | jq -cS "select(.kind | startswith(\"ValidatingAdmissionPolicy\")) | {kind, name: .metadata.name, spec}"; }
  base="$(kubectl kustomize deploy/kustomize/base | specs)"
  chart="$("$1" template avo "$2" -n "$3" --set altostrat.token=x --set fullnameOverride=altostrat-vpn-operator | specs)"
  [[ "$(wc -l <<<"$base")" == 2 && "$base" == "$chart" ]] || { diff <(echo "$base") <(echo "$chart"); exit 1; }
  grep -qF "system:serviceaccount:$3:altostrat-vpn-operator" <<<"$base"' _ "$HELM" "$CHART" "$NS"
# An overlay that moves the base into another namespace (and prefixes the names, so it does
# not collide with the base's cluster-scoped objects applied above). The overlay lives in a
# copy of the tree because kustomize accepts only relative paths to a base.
renamed_ns=avo-renamed
remove_renamed() {
  kubectl delete namespace "$renamed_ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl delete clusterrolebinding,clusterrole renamed-altostrat-vpn-operator --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete validatingadmissionpolicybinding,validatingadmissionpolicy renamed-altostrat-vpn-operator-secrets --ignore-not-found >/dev/null 2>&1 || true
}
remove_renamed
mkdir -p "$work/tree/deploy/kustomize/overlays/renamed"
cp -r deploy/kustomize/base "$work/tree/deploy/kustomize/"
# With the patch of the admission policy's match condition that the base's admission-policy.yaml
# tells such an overlay to add.
cat >"$work/tree/deploy/kustomize/overlays/renamed/kustomization.yaml" <<EOF
namespace: $renamed_ns
namePrefix: renamed-
resources: [../../base]
patches:
  - target: {kind: ValidatingAdmissionPolicy, name: altostrat-vpn-operator-secrets}
    patch: |-
      - op: replace
        path: /spec/matchConditions/0/expression
        value: request.userInfo.username == 'system:serviceaccount:$renamed_ns:renamed-altostrat-vpn-operator'
EOF
cp -r deploy/kustomize/components "$work/tree/deploy/kustomize/"
printf 'components: [../../components/network-policy]\n' >>"$work/tree/deploy/kustomize/overlays/renamed/kustomization.yaml"
check "kustomize overlay into namespace $renamed_ns: applied server-side" \
  kubectl apply --server-side --force-conflicts -k "$work/tree/deploy/kustomize/overlays/renamed"
sa="$renamed_ns:renamed-altostrat-vpn-operator"
check "kustomize overlay into $renamed_ns: bindings name its ServiceAccount, which has the operator's permissions" bash -c "$(declare -f can_i); set -e
  kubectl -n $renamed_ns get deployment renamed-altostrat-vpn-operator -o jsonpath='{.spec.template.spec.serviceAccountName}' | grep -qx renamed-altostrat-vpn-operator
  for b in clusterrolebinding/renamed-altostrat-vpn-operator 'rolebinding/renamed-altostrat-vpn-operator-leader-election -n $renamed_ns'; do
    s=\"\$(kubectl get \$b -o jsonpath='{.subjects[0].namespace}/{.subjects[0].name}')\"
    [[ \"\$s\" == $renamed_ns/renamed-altostrat-vpn-operator ]] || { echo \"\$b subject: \$s\"; exit 1; }
  done
  for v in get list watch patch update; do can_i yes $sa \$v vpninstances.vpn.altostrat.io default; can_i yes $sa \$v vpnpeers.vpn.altostrat.io team-a; done
  can_i yes $sa patch vpnpeers.vpn.altostrat.io default --subresource=status
  for v in get create update patch delete; do can_i yes $sa \$v secrets team-b; done
  for v in list watch; do can_i no $sa \$v secrets team-b; done
  can_i yes $sa create events.events.k8s.io default
  for v in get create update patch; do can_i yes $sa \$v leases.coordination.k8s.io $renamed_ns; done
  can_i no $sa get leases.coordination.k8s.io $NS; can_i no $sa create vpninstances.vpn.altostrat.io default
  can_i yes $sa get customresourcedefinitions.apiextensions.k8s.io/vpnpeers.vpn.altostrat.io default
  can_i no $sa list customresourcedefinitions.apiextensions.k8s.io default"
renamed_np_selects_pod() {
  local sel labels
  sel="$(kubectl -n "$renamed_ns" get networkpolicy renamed-altostrat-vpn-operator -o json | jq -c .spec.podSelector.matchLabels)" || return 1
  labels="$(kubectl -n "$renamed_ns" get deployment renamed-altostrat-vpn-operator -o json | jq -c .spec.template.metadata.labels)" || return 1
  jq -en --argjson s "$sel" --argjson l "$labels" '$s | to_entries | length > 0 and all($l[.key] == .value)' >/dev/null ||
    { echo "selector $sel, pod labels $labels"; return 1; }
}
check "kustomize overlay into $renamed_ns with the network-policy component: its NetworkPolicy, in $renamed_ns, selects the overlay's operator pod" \
  renamed_np_selects_pod
renamed_policy() {
  local name; name="$(kubectl get validatingadmissionpolicybinding renamed-altostrat-vpn-operator-secrets -o jsonpath='{.spec.policyName}')"
  [[ "$name" == renamed-altostrat-vpn-operator-secrets ]] || { echo "the binding names the policy '$name'"; return 1; }
  policy_in_force renamed-altostrat-vpn-operator-secrets "$sa" team-b
}
check "kustomize overlay into $renamed_ns: its Secrets admission policy (match condition patched as the base says) refuses its ServiceAccount an unlabelled Secret" \
  renamed_policy
remove_renamed
check "kustomize base: the Secret is not part of it" bash -c '! kubectl kustomize deploy/kustomize/base | grep -q "^kind: Secret$"'
check "kubectl kustomize overlays/example | kubectl apply --server-side --dry-run=server" bash -c \
  "kubectl kustomize deploy/kustomize/overlays/example | kubectl apply --server-side --force-conflicts --dry-run=server -f -"
check "kustomize overlay: 2 replicas, WATCH_NAMESPACES, RESYNC_INTERVAL, base env kept" bash -c '
  kubectl kustomize deploy/kustomize/overlays/example | kubectl create --dry-run=client -o json -f - |
  jq -en "[inputs | select(.kind == \"Deployment\")] | length == 1 and (.[0] | .spec.replicas == 2 and
    ([.spec.template.spec.containers[0].env[] | {(.name): .value}] | add) as \$e |
    \$e.WATCH_NAMESPACES == \"team-a,team-b\" and \$e.RESYNC_INTERVAL == \"10m\" and \$e.LEADER_ELECTION == \"true\"
    and \$e.ALTOSTRAT_API_TOKEN_FILE == \"/var/run/secrets/altostrat/token\")"'

# Uninstalling the kustomize install: `kubectl delete -k deploy/kustomize/base` removes the
# operator, its RBAC and its namespace (the controller-manager finalizes it), and leaves the
# CRDs and the resources in other namespaces.
kustomize_delete_keeps_crds() {
  local before; before="$(crd_state $(crd_files))"
  [[ "$(wc -l <<<"$before")" == "$(crd_files | wc -l)" ]] || { echo "CRDs before: '$before'"; return 1; }
  namespace avo-uninstall
  kubectl apply -n avo-uninstall -f examples/instance.yaml >/dev/null || return 1
  kubectl delete -k deploy/kustomize/base --wait=false >/dev/null || return 1
  local deadline=$((SECONDS + 90))
  while [[ -n "$(kubectl get namespace "$NS" --ignore-not-found -o name)" ]]; do
    ((SECONDS < deadline)) || { echo "namespace $NS still exists 90s after kubectl delete -k"; return 1; }
    sleep 1
  done
  kubectl get clusterrole altostrat-vpn-operator >/dev/null 2>&1 && { echo "the base's ClusterRole is still there"; return 1; }
  kubectl get validatingadmissionpolicy altostrat-vpn-operator-secrets >/dev/null 2>&1 && { echo "the base's admission policy is still there"; return 1; }
  local after; after="$(crd_state $(crd_files))"
  [[ "$after" == "$before" ]] || { echo "CRDs before: $before; after: $after"; return 1; }
  [[ "$(kubectl get vpninstances -n avo-uninstall -o name | wc -l)" == 1 ]] || { echo "the VpnInstance is gone"; return 1; }
}
check "kubectl delete -k deploy/kustomize/base removes the operator and its namespace, and keeps the CRDs and a VpnInstance" \
  kustomize_delete_keeps_crds
kubectl delete namespace avo-uninstall --ignore-not-found --wait=false >/dev/null 2>&1 || true

# --- examples and GitOps -----------------------------------------------------------------------
check "examples validate server-side" \
  kubectl apply --dry-run=server -n default -f examples/instance.yaml -f examples/client-peer.yaml -f examples/site-peer.yaml \
    -f examples/observed-hub.yaml -f examples/wireguard-gateway.yaml
check "Artifact Hub: the chart's crdsExamples validate server-side" bash -c "
  $(declare -f as_list); jq -r '.[\"artifacthub.io/crdsExamples\"]' <<<'$annotations_json' | as_list |
  kubectl apply --dry-run=server -n default -f -"
check "examples/invalid-instance.yaml is refused, naming each of its four invalid fields" bash -c '
  if out="$(kubectl apply --dry-run=server -n default -f examples/invalid-instance.yaml 2>&1)"; then echo "accepted: $out"; exit 1; fi
  for field in spec.name spec.hostname "spec.pushedRoutes[0]" spec.publicDns; do
    grep -qF "$field: Invalid value" <<<"$out" || { echo "no error for $field in: $out"; exit 1; }
  done'
namespace argocd; namespace flux-system
check "Argo CD health checks merge into an existing argocd-cm (kubectl patch --type merge)" bash -c '
  kubectl -n argocd delete configmap argocd-cm --ignore-not-found >/dev/null
  kubectl -n argocd create configmap argocd-cm --from-literal=url=https://argocd.example >/dev/null
  kubectl -n argocd patch configmap argocd-cm --type merge --patch-file deploy/gitops/argocd-health.yaml >/dev/null
  keys="$(kubectl -n argocd get configmap argocd-cm -o json | jq -c ".data | keys")"
  kubectl -n argocd delete configmap argocd-cm >/dev/null
  [[ "$keys" == "[\"resource.customizations.health.vpn.altostrat.io_VpnInstance\",\"resource.customizations.health.vpn.altostrat.io_VpnPeer\",\"url\"]" ]] || { echo "keys: $keys"; exit 1; }'
# The Flux layout (deploy/gitops/flux) mirrors a user's repository: a Kustomization whose source
# is this repository names a path here, any other one a path inside the layout.
flux_layout() { local f; for f in deploy/gitops/flux/clusters/my-cluster/*.yaml; do echo ---; cat "$f"; done; }
check "GitOps examples parse and point at paths that exist (this repository, or deploy/gitops/flux for your own)" bash -c '
  d="$(mktemp -d)"; trap "rm -rf \"\$d\"" EXIT
  cp deploy/gitops/flux/clusters/my-cluster/*.yaml deploy/gitops/argocd-application.yaml "$d/"
  printf "resources: [%s]\n" "$(cd "$d" && ls *.yaml | paste -sd, -)" >"$d/kustomization.yaml"
  out="$(kubectl kustomize "$d" | kubectl annotate --local -f - no-such-annotation- -o json | jq -s .)"
  for kind in GitRepository Kustomization Application; do
    jq -e --arg k "$kind" "any(.[]; .kind == \$k)" <<<"$out" >/dev/null || { echo "no $kind"; exit 1; }
  done
  paths="$(jq -r ".[] | select(.kind == \"Kustomization\") | if .spec.sourceRef.name == \"altostrat-vpn-operator\"
      then .spec.path else \"deploy/gitops/flux/\" + (.spec.path | ltrimstr(\"./\")) end,
    (.[] | select(.kind == \"Application\") | .spec.source.path)" <<<"$out" | sed "s#^\./##")"
  [[ -n "$paths" ]] || { echo "no paths found"; exit 1; }
  for p in $paths; do [[ -f "$p/kustomization.yaml" ]] || { echo "path $p has no kustomization.yaml"; exit 1; }; done'
check "the Flux layout's vpn/ renders and validates server-side" bash -c '
  kubectl create namespace network --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  trap "kubectl delete namespace network --wait=false >/dev/null 2>&1" EXIT
  kubectl kustomize deploy/gitops/flux/vpn | kubectl apply --server-side --dry-run=server -f - >/dev/null'
# The GitOps examples: every Flux Kustomization and Argo CD Application that deploys from this
# repository is rendered; the ones that render CRDs must not prune (nor, for Argo CD, cascade on
# deletion) and their CRDs must carry the annotations; the operator's is ordered after the CRDs'.
gitops_crds_protected() {
  local objs apps
  objs="$(cat <(flux_layout) <(echo ---) deploy/gitops/argocd-application.yaml | as_json)" || { echo "the GitOps examples do not parse"; return 1; }
  apps="$(jq -c '(.[] | select(.kind == "Kustomization" and .spec.sourceRef.name == "altostrat-vpn-operator")
      | {tool: "flux", name: .metadata.name, path: (.spec.path | ltrimstr("./")), prunes: (.spec.prune != false),
         cascades: false, after: [.spec.dependsOn[]?.name]}),
    (.[] | select(.kind == "Application" and (.spec.source.repoURL | test("altostrat-vpn-operator")))
      | {tool: "argocd", name: .metadata.name, path: .spec.source.path,
         prunes: (.spec.syncPolicy.automated.prune == true and ((.spec.syncPolicy.syncOptions // []) | index("Prune=false") == null)),
         cascades: ((.metadata.finalizers // []) | any(startswith("resources-finalizer.argocd.argoproj.io"))),
         wave: (.metadata.annotations["argocd.argoproj.io/sync-wave"] // "0" | tonumber)})' <<<"$objs")" || return 1
  local tool app path rendered ncrd crd_app op_app
  for tool in flux argocd; do
    crd_app=""; op_app=""
    while read -r app; do
      path="$(jq -r .path <<<"$app")"
      [[ -f "$path/kustomization.yaml" ]] || { echo "$app: no kustomization.yaml in $path"; return 1; }
      rendered="$(kubectl kustomize "$path" | as_json)" || return 1
      ncrd="$(jq '[.[] | select(.kind == "CustomResourceDefinition")] | length' <<<"$rendered")"
      if ((ncrd > 0)); then
        jq -e '.prunes == false and .cascades == false' <<<"$app" >/dev/null || { echo "prunes or cascades over CRDs: $app"; return 1; }
        crds_protected "$rendered" || { echo "in $path"; return 1; }
        [[ -z "$crd_app" ]] || { echo "$tool: two apps deploy the CRDs"; return 1; }
        crd_app="$app"
      fi
      jq -e 'any(.[]; .kind == "Deployment")' <<<"$rendered" >/dev/null && op_app="$app"
    done < <(jq -c "select(.tool == \"$tool\")" <<<"$apps")
    [[ -n "$crd_app" && -n "$op_app" && "$crd_app" != "$op_app" ]] ||
      { echo "$tool: want one app for the CRDs and another for the operator; CRDs: '$crd_app', operator: '$op_app'"; return 1; }
    case "$tool" in
      flux) jq -e --arg c "$(jq -r .name <<<"$crd_app")" '.after | index($c) != null' <<<"$op_app" >/dev/null ||
              { echo "flux: $op_app does not depend on the CRD Kustomization"; return 1; } ;;
      argocd) (( $(jq .wave <<<"$crd_app") < $(jq .wave <<<"$op_app") )) ||
              { echo "argocd: the CRD Application does not sync in an earlier wave: $crd_app $op_app"; return 1; } ;;
    esac
  done
}
check "GitOps: the CRDs have their own Flux Kustomization and Argo CD Application, which do not prune; the operator's comes after them" \
  gitops_crds_protected

lua="$(command -v lua5.1 || true)"
if [[ -n "$lua" ]]; then
  health() { kubectl create --dry-run=client -f deploy/gitops/argocd-health.yaml -o jsonpath="{.data.resource\.customizations\.health\.vpn\.altostrat\.io_$1}"; }
  check "Argo CD health check: same script for VpnInstance and VpnPeer" bash -c "$(declare -f health); [[ -n \"\$(health VpnInstance)\" && \"\$(health VpnInstance)\" == \"\$(health VpnPeer)\" ]]"
  check "Argo CD health check: Lua table test (hack/argocd-health-test.lua)" bash -c "$(declare -f health); health VpnInstance | $lua hack/argocd-health-test.lua"
else
  printf 'SKIP Argo CD health check Lua table test (install lua5.1 to run it)\n'
fi

if command -v hadolint >/dev/null; then
  check "hadolint Dockerfile" hadolint Dockerfile
else
  printf 'SKIP hadolint Dockerfile (hadolint not installed)\n'
fi

# --- the README's install path ----------------------------------------------------------------
# It needs a cluster as a new user's, which the one checked above is not (the end-to-end suites
# may still be deleting their namespaces in it): a control plane of its own, started for it and
# stopped after. scripts/readme-path.sh runs README "Install on your cluster" command by command
# (its own PASS/FAIL lines), with the operator binary running as the chart's ServiceAccount.
bin="${VPN_OPERATOR_BIN:-${CARGO_TARGET_DIR:-target}/debug/vpn-operator}"
if [[ -x "$bin" ]]; then
  fresh="$(mktemp -d "${TMPDIR:-/tmp}/altostrat-readme-cp.XXXXXX")"
  if scripts/control-plane.sh up "$fresh" >/dev/null &&
    KUBECONFIG="$fresh/kubeconfig" HELM="$HELM" scripts/readme-path.sh "$bin"; then
    pass "README install path followed as written on a new cluster (scripts/readme-path.sh)"
  else
    fail "README install path followed as written on a new cluster (scripts/readme-path.sh)"
  fi
  scripts/control-plane.sh down "$fresh" >/dev/null 2>&1 || true
else
  printf 'SKIP README install path (no operator binary at %s: cargo build first, or set VPN_OPERATOR_BIN)\n' "$bin"
fi

if ((failures)); then echo "FAIL: $failures deployment check(s) failed"; exit 1; fi
echo "PASS: all deployment checks passed"
