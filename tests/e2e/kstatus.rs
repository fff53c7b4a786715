//! kstatus, the library Flux's health checks use (`sigs.k8s.io/cli-utils`), over the operator's
//! resources in every state the docs describe. The operator brings each resource to its state
//! against the simulator; the objects are then read from kube-apiserver as they are, and
//! `kstatus-check` (hack/tools, built by `scripts/dev-tools.sh build`) computes their status.
//! What kstatus must say is the docs' own table (between `<!-- kstatus:begin -->` and
//! `<!-- kstatus:end -->` in one file of docs/), keyed by the `Ready` reason: a statement there
//! that stops being true, or a reason there that no case here reaches, fails this test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use altostrat_vpn_operator::crd::{APPROVE_PLAN_ANNOTATION, PAUSED_ANNOTATION, VpnInstance, VpnPeer};
use altostrat_vpn_operator::simulator::{RunningSimulator, Simulator, SimulatorConfig};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::support::*;

const BEGIN: &str = "<!-- kstatus:begin -->";
const END: &str = "<!-- kstatus:end -->";
const KSTATUSES: &[&str] = &["Current", "InProgress", "Failed", "Terminating"];

/// Reasons of the docs' table that no case here reaches, and why the table's word for them
/// still holds.
const NOT_REACHED: &[(&str, &str)] = &[
    (
        "TearingDown",
        "only while a resource is deleted, where deletionTimestamp decides, as for Deleting",
    ),
    (
        "TokenAccepted",
        "a VpnCredentials state: credentials::shared_credentials_… reaches it and checks kstatus against this table \
         (its controller is cluster-wide, so it runs in that test alone)",
    ),
    ("TokenRejected", "as TokenAccepted"),
    (
        "TokenChecking",
        "a VpnCredentials' first moments, before any answer: Ready=False without Stalled, InProgress as every such reason",
    ),
    (
        "TokenRefused",
        "a refused token within the rotation grace: Ready=False without Stalled, InProgress as TokenChecking",
    ),
];

const USER: &str = "a1b2c3d4-e5f6-7890-1234-567890abcdef";
const DELETED_USER: &str = "0d6c7a3e-2f41-4d7b-9a58-3c1e5b7f9a20";
const DELETED_SITE: &str = "7e2b9c14-5a3d-4f86-b1c7-9d0e2f4a6b83";

/// One resource brought to one state, named by its `Ready` reason once there.
struct Case {
    namespace: String,
    kind: &'static str,
    name: &'static str,
    reason: &'static str,
    /// A condition that must also be True before the state counts as reached (`Paused`: the
    /// `Ready` reason alone was there before the pause).
    also: Option<&'static str>,
}

/// What keeps the resources of a scene in their state until they are read: the simulator and
/// the operator.
struct Scene {
    _simulator: Option<RunningSimulator>,
    operator: Operator,
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn kstatus_of_every_documented_state_is_what_the_docs_say() {
    let Some(tool) = kstatus_check() else { return };
    let docs = docs_table();
    let client = kube().await;
    let mut cases = Vec::new();
    let scenes = vec![
        serving_stalled_and_held(&client, &mut cases).await,
        provisioning_and_updating(&client, &mut cases).await,
        throttled(&client, &mut cases).await,
        unreachable(&client, &mut cases).await,
    ];
    let objects = read_back(&client, &cases).await;
    let verdicts = run_kstatus(&tool, &objects);
    for scene in scenes {
        scene.operator.stop().await;
    }
    let mut failures = disagreements(&cases, &objects, &verdicts, &docs);
    failures.extend(unreached(&cases, &docs));
    assert!(
        failures.is_empty(),
        "kstatus and the docs disagree:\n  {}",
        failures.join("\n  ")
    );
}

/// Namespace with a fast simulator: serving resources (plain, paused, observed), every Stalled
/// reason that a spec, the credentials or Altostrat's answers bring, the states a policy holds
/// back, a peer whose instance is missing, one its hub does not admit, and two deletions.
async fn serving_stalled_and_held(client: &Client, cases: &mut Vec<Case>) -> Scene {
    let ns = namespace(client, "e2e-kstatus").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    simc.delete_user(DELETED_USER).await;
    simc.delete_site(DELETED_SITE).await;
    // Altostrat sorts the public resolvers: an update in another order never sticks.
    sim.simulator().core().rewrite_updates(|i| i.public_dns.sort());
    let operator = start_operator(client, &simc.base_url, &ns, OperatorOptions::default());
    let mut scene = Cases::new(client, &ns, cases);
    simc.create_instance("taken", &scene.host("taken")).await;
    simc.create_instance("observed", &scene.host("observed")).await;
    create_credentials_secrets(client, &ns).await;
    scene.hub("ready", "ready", json!({}), "Available").await;
    scene.hub("to-pause", "to-pause", json!({}), "Available").await;
    scene.hub("doomed", "doomed", json!({}), "Available").await;
    scene.hub("stuck", "stuck", json!({}), "Available").await;
    scene
        .peer("alice", client_peer_manifest("alice", "ready", USER), "Available")
        .await;
    let keeps_doomed = client_peer_manifest("keeps-doomed", "doomed", USER);
    scene.peer("keeps-doomed", keeps_doomed, "Available").await;
    stalled_by_spec_or_credentials(&mut scene).await;
    stalled_by_altostrat(&mut scene, &simc).await;
    held_back_by_a_policy(&mut scene).await;
    let orphan = client_peer_manifest("orphan", "missing", USER);
    scene.peer("orphan", orphan, "InstanceNotFound").await;
    not_permitted(&mut scene, client).await;
    deletions(&mut scene, &simc).await;
    scene.reach_all().await;
    Scene {
        _simulator: Some(sim),
        operator,
    }
}

/// A peer naming a hub of another namespace that does not grant its namespace (the hub only
/// has to exist: the grant is judged first).
async fn not_permitted(scene: &mut Cases<'_>, client: &Client) {
    let elsewhere = namespace(client, "e2e-kstatus-hub").await;
    let hubs: Api<VpnInstance> = Api::namespaced(client.clone(), &elsewhere);
    apply(
        &hubs,
        &instance_manifest("private", &scene.host("private"), json!({})),
    )
    .await;
    let mut refused = client_peer_manifest("refused", "private", USER);
    refused.spec.instance_ref.namespace = Some(elsewhere);
    scene.peer("refused", refused, "NotPermitted").await;
}

async fn stalled_by_spec_or_credentials(scene: &mut Cases<'_>) {
    scene
        .hub("bad-region", "region", json!({"region": "zzz"}), "InvalidSpec")
        .await;
    let absent = json!({"credentialsSecretRef": {"name": "absent"}});
    scene
        .hub("creds-absent", "absent", absent, "CredentialsError")
        .await;
    let unlabelled = json!({"credentialsSecretRef": {"name": "unlabelled"}});
    scene
        .hub("creds-unlabelled", "unlabelled", unlabelled, "CredentialsError")
        .await;
    let rejected = json!({"credentialsSecretRef": {"name": "rejected"}});
    scene
        .hub("creds-rejected", "rejected", rejected, "CredentialsError")
        .await;
    scene.hub("taken", "taken", json!({}), "HostnameTaken").await;
    let unsorted = json!({"publicDns": ["9.9.9.9", "1.1.1.1"]});
    scene
        .hub("diverging", "diverging", unsorted, "NotConverging")
        .await;
}

/// A Secret without the credentials label, and a labelled one Altostrat rejects (401).
async fn create_credentials_secrets(client: &Client, ns: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let label = json!({"vpn.altostrat.io/credentials": "true"});
    for (name, labels, token) in [
        ("unlabelled", json!({}), TOKEN),
        ("rejected", label, "a-token-altostrat-rejects"),
    ] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "stringData": {"token": token},
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
    }
}

/// Refusals only a person can lift: a second resource for a hub another one holds, a peer of
/// a user or site deleted in Altostrat, and one a quota refuses.
async fn stalled_by_altostrat(scene: &mut Cases<'_>, simc: &SimClient) {
    scene.reach_all().await;
    let ready_id = instance_id(scene.client, &scene.namespace, "ready").await;
    let copy = json!({"instanceId": ready_id});
    scene.hub("copy", "ready", copy, "NotOwned").await;
    let lost_user = client_peer_manifest("lost-user", "ready", DELETED_USER);
    scene.peer("lost-user", lost_user, "UserNotFound").await;
    let lost_site = site_peer_manifest("lost-site", "ready", DELETED_SITE, &["192.168.7.0/24"]);
    scene.peer("lost-site", lost_site, "SiteNotFound").await;
    // The next peer create is refused for a quota: every other peer is created or refused by now.
    scene.reach_all().await;
    let quota = json!({"fail_next": 1, "status": 402, "message": "seat limit reached"});
    simc.set_faults(json!({"rules": {"POST /vpn/instances/{instanceId}/peers": quota}}))
        .await;
    let over_quota = client_peer_manifest("over-quota", "ready", USER);
    scene.peer("over-quota", over_quota, "QuotaExceeded").await;
}

/// What a policy holds back: a paused resource that serves and one not created, a planned
/// create, and `ObserveOnly` finding a hub and finding none.
async fn held_back_by_a_policy(scene: &mut Cases<'_>) {
    let paused = json!({"metadata": {"annotations": {PAUSED_ANNOTATION: "true"}}});
    merge_patch(&scene.instances(), "to-pause", paused).await;
    scene.expect("VpnInstance", "to-pause", "Available", Some("Paused"));
    let mut never_created = instance_manifest("paused-new", &scene.host("paused"), json!({}));
    never_created
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(PAUSED_ANNOTATION.into(), "true".into());
    apply(&scene.instances(), &never_created).await;
    scene.expect("VpnInstance", "paused-new", "ReconcilePaused", None);
    let plan = json!({"managementPolicy": "Plan"});
    scene.hub("planned", "planned", plan.clone(), "Planned").await;
    // An approval of a plan that is not the one the operator would now carry out.
    let mut stale = instance_manifest("approved-stale", &scene.host("stale"), plan);
    stale
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(APPROVE_PLAN_ANNOTATION.into(), "0000000000000000".into());
    apply(&scene.instances(), &stale).await;
    scene.expect("VpnInstance", "approved-stale", "PlanChanged", None);
    let observe = json!({"managementPolicy": "ObserveOnly"});
    scene
        .hub("observed", "observed", observe.clone(), "Available")
        .await;
    scene.hub("unobserved", "nothing", observe, "NotFound").await;
}

/// A hub whose deletion waits for its peer, and one whose DELETE Altostrat refuses.
async fn deletions(scene: &mut Cases<'_>, simc: &SimClient) {
    scene.reach_all().await;
    let refused = json!({"fail_next": 1000, "status": 405, "message": "deletion not allowed"});
    simc.set_faults(json!({"rules": {"DELETE /vpn/instances/{instanceId}": refused}}))
        .await;
    let instances = scene.instances();
    for (name, reason) in [("doomed", "Deleting"), ("stuck", "DeleteRefused")] {
        instances.delete(name, &DeleteParams::default()).await.unwrap();
        scene.expect("VpnInstance", name, reason, None);
    }
    // The peer that holds the hub back waits for an instance that is going away.
    scene.expect("VpnPeer", "keeps-doomed", "WaitingForInstance", None);
}

/// Namespace with a simulator whose pending changes stay: a hub being updated, one being
/// provisioned (held), and a peer waiting for it.
async fn provisioning_and_updating(client: &Client, cases: &mut Vec<Case>) -> Scene {
    let ns = namespace(client, "e2e-kstatus-progress").await;
    let config = SimulatorConfig {
        provision_delay: Duration::from_millis(300),
        status_clear_delay: Duration::from_secs(3600),
        ..SimulatorConfig::default()
    };
    let sim = Simulator::spawn(config).await.expect("start the simulator");
    let operator = start_operator(client, &sim.base_url(), &ns, OperatorOptions::default());
    let mut scene = Cases::new(client, &ns, cases);
    // Once provisioned, the routes and DNS resolvers go out in an update, which stays pending.
    scene.hub("updating", "updating", json!({}), "Updating").await;
    scene.reach_all().await;
    sim.simulator().core().hold_provisioning();
    scene
        .hub("provisioning", "provisioning", json!({}), "Provisioning")
        .await;
    let waiting = client_peer_manifest("waiting", "provisioning", USER);
    scene.peer("waiting", waiting, "WaitingForInstance").await;
    scene.reach_all().await;
    Scene {
        _simulator: Some(sim),
        operator,
    }
}

/// Namespace whose simulator answers every request 429 with a long Retry-After.
async fn throttled(client: &Client, cases: &mut Vec<Case>) -> Scene {
    let ns = namespace(client, "e2e-kstatus-throttled").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let limited = json!({"fail_next": 1000, "status": 429, "retry_after_secs": 600});
    simc.set_faults(json!({"rules": {"*": limited}})).await;
    let operator = start_operator(client, &simc.base_url, &ns, OperatorOptions::default());
    let mut scene = Cases::new(client, &ns, cases);
    scene.hub("throttled", "throttled", json!({}), "Throttled").await;
    scene.reach_all().await;
    Scene {
        _simulator: Some(sim),
        operator,
    }
}

/// Namespace whose operator calls an address where nothing listens.
async fn unreachable(client: &Client, cases: &mut Vec<Case>) -> Scene {
    let ns = namespace(client, "e2e-kstatus-unreachable").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let operator = start_operator(
        client,
        &format!("http://{closed}"),
        &ns,
        OperatorOptions::default(),
    );
    let mut scene = Cases::new(client, &ns, cases);
    scene
        .hub("unreachable", "unreachable", json!({}), "ApiError")
        .await;
    scene.reach_all().await;
    Scene {
        _simulator: None,
        operator,
    }
}

/// The cases of one namespace: applies resources, records the state each must reach, and
/// waits for them.
struct Cases<'a> {
    client: &'a Client,
    namespace: String,
    all: &'a mut Vec<Case>,
    /// Ends every hostname: ownership records, keyed by hostname, are cluster-wide and outlive
    /// the namespace of a run.
    suffix: String,
}

impl<'a> Cases<'a> {
    fn new(client: &'a Client, namespace: &str, all: &'a mut Vec<Case>) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            all,
            suffix: uuid::Uuid::new_v4().simple().to_string()[..4].to_owned(),
        }
    }

    /// This run's hostname for `label` (at most 12 characters).
    fn host(&self, label: &str) -> String {
        format!("ks-{label}-{}", self.suffix)
    }

    fn instances(&self) -> Api<VpnInstance> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Applies a hub (`spec` overrides fields of the usual one) with the hostname of `label`
    /// that must reach `reason`.
    async fn hub(&mut self, name: &'static str, label: &str, spec: Value, reason: &'static str) {
        let hub = instance_manifest(name, &self.host(label), spec);
        apply(&self.instances(), &hub).await;
        self.expect("VpnInstance", name, reason, None);
    }

    async fn peer(&mut self, name: &'static str, manifest: VpnPeer, reason: &'static str) {
        let peers: Api<VpnPeer> = Api::namespaced(self.client.clone(), &self.namespace);
        apply(&peers, &manifest).await;
        self.expect("VpnPeer", name, reason, None);
    }

    /// Records the state a resource must reach, in place of one recorded before.
    fn expect(
        &mut self,
        kind: &'static str,
        name: &'static str,
        reason: &'static str,
        also: Option<&'static str>,
    ) {
        let namespace = self.namespace.clone();
        self.all
            .retain(|c| (c.namespace.as_str(), c.kind, c.name) != (namespace.as_str(), kind, name));
        self.all.push(Case {
            namespace,
            kind,
            name,
            reason,
            also,
        });
    }

    /// Waits until every case of this namespace is in its state.
    async fn reach_all(&self) {
        for case in self.all.iter().filter(|c| c.namespace == self.namespace) {
            reach(self.client, case).await;
        }
    }
}

fn dynamic_api(client: &Client, namespace: &str, kind: &str) -> Api<DynamicObject> {
    let resource = match kind {
        "VpnInstance" => ApiResource::erase::<VpnInstance>(&()),
        _ => ApiResource::erase::<VpnPeer>(&()),
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

async fn reach(client: &Client, case: &Case) {
    let api = dynamic_api(client, &case.namespace, case.kind);
    let what = format!(
        "{} {}/{} to reach {}",
        case.kind, case.namespace, case.name, case.reason
    );
    eventually(&what, TIMEOUT, || async {
        let object = serde_json::to_value(api.get_opt(case.name).await.ok()??).ok()?;
        let ready = current_condition(&object, "Ready")?;
        let also = case
            .also
            .is_none_or(|type_| current_condition(&object, type_).is_some_and(|c| c["status"] == "True"));
        (ready["reason"] == case.reason && also).then_some(())
    })
    .await;
}

/// The condition of this type, if it describes the object's current generation.
fn current_condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    let generation = &object["metadata"]["generation"];
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && &c["observedGeneration"] == generation)
}

async fn instance_id(client: &Client, namespace: &str, name: &str) -> String {
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), namespace);
    let hub = api.get(name).await.unwrap();
    hub.status
        .and_then(|s| s.instance_id)
        .expect("a Ready hub has an id")
}

/// Every case's object as kube-apiserver serves it, keyed by namespace, kind and name.
async fn read_back(client: &Client, cases: &[Case]) -> BTreeMap<(String, String, String), Value> {
    let mut objects = BTreeMap::new();
    for case in cases {
        let api = dynamic_api(client, &case.namespace, case.kind);
        let mut object = serde_json::to_value(api.get(case.name).await.unwrap()).unwrap();
        object["kind"] = json!(case.kind);
        object["apiVersion"] = json!("vpn.altostrat.io/v1alpha1");
        objects.insert(key(&case.namespace, case.kind, case.name), object);
    }
    objects
}

fn key(namespace: &str, kind: &str, name: &str) -> (String, String, String) {
    (namespace.to_owned(), kind.to_owned(), name.to_owned())
}

#[derive(serde::Deserialize)]
struct Verdict {
    namespace: String,
    name: String,
    kind: String,
    status: String,
    message: String,
}

/// Runs `kstatus-check` over the objects, as one JSON list.
fn run_kstatus(
    tool: &Path,
    objects: &BTreeMap<(String, String, String), Value>,
) -> BTreeMap<(String, String, String), Verdict> {
    let dump = tempfile::NamedTempFile::new().unwrap();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects.values().collect::<Vec<_>>()});
    std::fs::write(dump.path(), serde_json::to_vec_pretty(&list).unwrap()).unwrap();
    let out = std::process::Command::new(tool)
        .args(["-o", "json"])
        .arg(dump.path())
        .output()
        .expect("run kstatus-check");
    assert!(
        out.status.success(),
        "kstatus-check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Verdict> = serde_json::from_slice(&out.stdout).expect("kstatus-check's JSON");
    for v in &verdicts {
        eprintln!("{}/{} {} {} {}", v.namespace, v.name, v.kind, v.status, v.message);
    }
    verdicts
        .into_iter()
        .map(|v| (key(&v.namespace, &v.kind, &v.name), v))
        .collect()
}

/// Every case where kstatus says other than the docs, or fails without the operator's message.
fn disagreements(
    cases: &[Case],
    objects: &BTreeMap<(String, String, String), Value>,
    verdicts: &BTreeMap<(String, String, String), Verdict>,
    docs: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let id = key(&case.namespace, case.kind, case.name);
        let what = format!(
            "{} {}/{} (Ready reason {})",
            case.kind, case.namespace, case.name, case.reason
        );
        let Some(expected) = docs.get(case.reason) else {
            failures.push(format!(
                "{what}: the docs' kstatus table has no row for {}",
                case.reason
            ));
            continue;
        };
        let Some(verdict) = verdicts.get(&id) else {
            failures.push(format!("{what}: kstatus-check said nothing about it"));
            continue;
        };
        if &verdict.status != expected {
            failures.push(format!(
                "{what}: kstatus says {} ({:?}), the docs say {expected}",
                verdict.status, verdict.message
            ));
        } else if verdict.status == "Failed" {
            let stalled = current_condition(&objects[&id], "Stalled").map(|c| c["message"].clone());
            if stalled != Some(json!(verdict.message)) {
                failures.push(format!(
                    "{what}: Failed with {:?}, not the Stalled message {stalled:?}",
                    verdict.message
                ));
            }
        }
    }
    failures
}

/// Reasons of the docs' table that no case reaches and [`NOT_REACHED`] does not explain.
fn unreached(cases: &[Case], docs: &BTreeMap<String, String>) -> Vec<String> {
    docs.keys()
        .filter(|reason| !cases.iter().any(|c| c.reason == reason.as_str()))
        .filter(|reason| !NOT_REACHED.iter().any(|(r, _)| r == reason))
        .map(|reason| format!("the docs' kstatus table states {reason}, which no case here reaches"))
        .collect()
}

/// The `Ready` reason -> kstatus table of the docs: the one file of docs/ holding the markers.
pub(crate) fn docs_table() -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let holders: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| (path.clone(), std::fs::read_to_string(&path).unwrap()))
        .filter(|(_, text)| text.contains(BEGIN))
        .collect();
    assert_eq!(
        holders.len(),
        1,
        "exactly one file of docs/ holds the kstatus table between {BEGIN} and {END}: {holders:?}",
        holders = holders.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    let (path, text) = &holders[0];
    parse_table(text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Rows `| reasons | kstatus | ... |` after a header and its separator; each reason is in
/// backticks.
fn parse_table(text: &str) -> Result<BTreeMap<String, String>, String> {
    let section = text
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .ok_or_else(|| format!("no {END} after {BEGIN}"))?
        .0;
    let mut table = BTreeMap::new();
    for row in section
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .skip(2)
    {
        let cells: Vec<&str> = row.trim().trim_matches('|').split('|').map(str::trim).collect();
        let [reasons, kstatus, ..] = cells.as_slice() else {
            return Err(format!("a row without a kstatus column: {row}"));
        };
        let kstatus = kstatus.trim_matches('*');
        if !KSTATUSES.contains(&kstatus) {
            return Err(format!("{kstatus:?} is not a kstatus ({KSTATUSES:?}) in: {row}"));
        }
        for reason in reasons.split('`').skip(1).step_by(2) {
            if table.insert(reason.to_owned(), kstatus.to_owned()).is_some() {
                return Err(format!("{reason} is in two rows"));
            }
        }
    }
    if table.is_empty() {
        return Err("the kstatus table has no rows".into());
    }
    Ok(table)
}

/// The `kstatus-check` binary: `KSTATUS_CHECK` (`scripts/test.sh` sets it; it must exist), else
/// where `scripts/dev-tools.sh` caches it. `None`, and the test skipped with a note, when it is
/// not built (against an existing cluster, Go is not required).
pub(crate) fn kstatus_check() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KSTATUS_CHECK") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "KSTATUS_CHECK={} does not exist: run scripts/dev-tools.sh build",
            path.display()
        );
        return Some(path);
    }
    let out = std::process::Command::new("scripts/dev-tools.sh")
        .args(["path", "kstatus-check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && path.is_file() {
        return Some(path);
    }
    eprintln!(
        "SKIPPED: kstatus-check is not built; run scripts/dev-tools.sh build (needs Go) or set KSTATUS_CHECK"
    );
    None
}

#[test]
fn the_docs_table_parses_into_reasons_and_kstatuses() {
    let text = format!(
        "intro\n{BEGIN}\n| Ready reason | kstatus | why |\n|---|---|---|\n\
         | `Available` | **Current** | serves |\n| `Provisioning`, `Updating` | InProgress | waits |\n{END}\n"
    );
    let table = parse_table(&text).unwrap();
    assert_eq!(table["Available"], "Current");
    assert_eq!(table["Updating"], "InProgress");
    assert_eq!(table.len(), 3);
    let twice = text.replace("`Updating`", "`Available`");
    assert!(parse_table(&twice).unwrap_err().contains("two rows"));
    assert!(parse_table(&text.replace("InProgress", "Pending")).is_err());
}
