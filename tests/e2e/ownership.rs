//! End to end: the one ownership rule (README, "Behaviour and design choices"). The operator
//! writes to, adopts or deletes an Altostrat object only when an ownership record (written by
//! the operator alone, cluster-scoped) proves the object is the resource's own. These tests
//! run the ways a tenant could try to take over or destroy another namespace's objects
//! against a real kube-apiserver and the simulator over HTTP, and end with exactly the
//! expected Altostrat objects.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use altostrat_vpn_operator::altostrat::model::{Instance, PeerCreate, PeerType, Protocol};
use altostrat_vpn_operator::altostrat::{ApiToken, HttpClient, HttpClientConfig, VpnApi};
use altostrat_vpn_operator::controller::WatchScope;
use altostrat_vpn_operator::crd::{VpnInstance, VpnPeer};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use serde_json::json;

const USER: &str = "a1b2c3d4-e5f6-7890-1234-567890abcdef";
const CREATE: &str = "POST /vpn/instances";
const UPDATE: &str = "PUT /vpn/instances/{instanceId}";
const DELETE: &str = "DELETE /vpn/instances/{instanceId}";

/// The instance id a resource records.
fn recorded_id(obj: &VpnInstance) -> Option<String> {
    obj.status.as_ref().and_then(|s| s.instance_id.clone())
}

/// The holder a hub's ownership record names, as `namespace/name`.
async fn holder_of(client: &kube::Client, hostname: &str) -> Option<String> {
    let record = ownership_record(client, &format!("instance.{hostname}")).await?;
    Some(format!(
        "{}/{}",
        record.spec.holder.namespace, record.spec.holder.name
    ))
}

/// The writes the simulator counted (PUT, POST, DELETE), by endpoint.
async fn writes(simc: &SimClient) -> BTreeMap<String, u64> {
    let mut calls = simc.calls().await;
    calls.retain(|k, _| !k.starts_with("GET "));
    calls
}

/// Waits until Ready is False with `reason`; returns its message.
async fn wait_not_ready(api: &Api<VpnInstance>, name: &str, reason: &str) -> String {
    let message = wait_instance_reason(api, name, reason).await;
    let obj = api.get(name).await.unwrap();
    let ready = condition(&obj.status.unwrap().conditions, "Ready").unwrap();
    assert_eq!(ready.0, "False", "{ready:?}");
    message
}

/// What the tests compare to prove a hub was not changed: everything the operator could write.
fn configuration(i: &Instance) -> (String, String, String, Vec<String>, Vec<String>, Vec<String>) {
    (
        i.id.clone(),
        i.name.clone(),
        i.hostname.clone(),
        i.pushed_routes.clone(),
        i.public_dns.clone(),
        i.domains.clone(),
    )
}

fn calls(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
    entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_hub_of_another_namespace_is_not_taken_over_by_the_same_hostname() {
    // One operator for all namespaces, as deployed by default, so that B's reconcile sees A's
    // resource; the label keeps it to this test's resources while other tests run in parallel.
    let client = kube().await;
    let ns_a = namespace(&client, "e2e-own-a").await;
    let ns_b = namespace(&client, "e2e-own-b").await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let label = ("e2e.vpn.altostrat.io/run".to_owned(), run.clone());
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator_scoped(
        &client,
        &simc.base_url,
        WatchScope::AllNamespaces,
        Some(format!("{}={}", label.0, label.1)),
        OperatorOptions::default(),
    );
    let api_a: Api<VpnInstance> = Api::namespaced(client.clone(), &ns_a);
    let api_b: Api<VpnInstance> = Api::namespaced(client.clone(), &ns_b);

    let mut a = instance_manifest("hub", "shared-hub", json!({}));
    a.metadata.labels = Some(BTreeMap::from([label.clone()]));
    apply(&api_a, &a).await;
    let ready_a = wait_instance(&api_a, "hub", "A Ready", instance_ready).await;
    let id = recorded_id(&ready_a).unwrap();
    let hub_before = simc.instance(&id).await.unwrap();
    assert_eq!(hub_before.pushed_routes, vec!["10.10.0.0/16"]);
    simc.reset_calls().await;

    let mut b = instance_manifest("hub", "shared-hub", json!({"pushedRoutes": ["192.168.0.0/16"]}));
    b.metadata.labels = Some(BTreeMap::from([label]));
    apply(&api_b, &b).await;
    let message = wait_not_ready(&api_b, "hub", "NotOwned").await;
    assert!(
        message.contains(&format!("{ns_a}/hub")),
        "names A's resource: {message}"
    );
    let refused = api_b.get("hub").await.unwrap();
    assert_eq!(recorded_id(&refused), None, "B records nothing");
    assert_eq!(
        holder_of(&client, "shared-hub").await,
        Some(format!("{ns_a}/hub"))
    );
    // The hostname's record is A's: B does not even try a create.
    assert_eq!(simc.calls().await, BTreeMap::new());

    simc.reset_calls().await;
    api_b.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&api_b, "hub").await;
    // B's cleanup is finished once it is gone (it held the finalizer until then): with no
    // recorded id and no claim, it had nothing to look for.
    assert_eq!(simc.calls().await, BTreeMap::new(), "B's deletion calls nothing");
    let hub_after = simc.instance(&id).await.expect("A's hub survives");
    assert_eq!(configuration(&hub_after), configuration(&hub_before));
    assert_eq!(simc.instances().await.len(), 1);
    let a_after = api_a.get("hub").await.unwrap();
    assert!(instance_ready(&a_after));
    assert_eq!(recorded_id(&a_after).as_deref(), Some(id.as_str()));
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_resource_that_failed_before_its_create_deletes_nothing() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-mars").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(
        &api,
        &instance_manifest("hub", "mars-hub", json!({"region": "mars"})),
    )
    .await;
    let message = wait_not_ready(&api, "hub", "InvalidSpec").await;
    assert!(message.contains("mars"), "{message}");
    let failed = api.get("hub").await.unwrap();
    assert_eq!(
        holder_of(&client, "mars-hub").await,
        None,
        "validated before the claim: no record"
    );
    assert_eq!(recorded_id(&failed), None);
    assert_eq!(
        failed.metadata.finalizers, None,
        "nothing to clean up, so no finalizer"
    );
    assert_eq!(
        simc.calls_by_status().await,
        calls(&[("GET /vpn/servers/regions 200", 1)])
    );

    let theirs = simc.create_instance("their hub", "mars-hub").await;
    simc.reset_calls().await;
    api.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "hub").await;
    // Without a finalizer the API server removed it without the operator. A valid instance
    // made afterwards becoming Ready shows the operator at work since the deletion: its own
    // create and configuration are the only calls.
    apply(&api, &instance_manifest("witness", "mars-witness", json!({}))).await;
    let witness = wait_instance(&api, "witness", "the witness Ready", instance_ready).await;
    let mut seen = simc.calls().await;
    assert_eq!(seen.remove(CREATE), Some(1), "the witness's create: {seen:?}");
    // The witness's provisioning is observed by list, and its configuration applied.
    seen.remove("GET /vpn/instances");
    seen.remove(UPDATE);
    assert_eq!(seen, BTreeMap::new(), "nothing fetched by id or deleted");
    let left = simc.instances().await;
    assert_eq!(left.len(), 2);
    let kept = left.iter().find(|i| i.id == theirs.id).expect("theirs survives");
    assert_eq!(configuration(kept), configuration(&theirs));
    assert_ne!(recorded_id(&witness).as_deref(), Some(theirs.id.as_str()));
    assert_eq!(simc.count(DELETE).await, 0);
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_gitops_rename_hands_the_hub_over_instead_of_deleting_it() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-rename").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(&api, &instance_manifest("old", "rename-hub", json!({}))).await;
    let old = wait_instance(&api, "old", "old Ready", instance_ready).await;
    let id = recorded_id(&old).unwrap();
    let hub_before = simc.instance(&id).await.unwrap();
    simc.reset_calls().await;

    // The same configuration under a new name, adopting the hub explicitly.
    apply(
        &api,
        &instance_manifest(
            "renamed",
            "rename-hub",
            json!({"name": "old hub", "instanceId": id}),
        ),
    )
    .await;
    // One holder at a time: the successor waits for the record, writing nothing.
    let message = wait_not_ready(&api, "renamed", "NotOwned").await;
    assert!(message.contains(&format!("{ns}/old")), "{message}");
    assert_eq!(writes(&simc).await, BTreeMap::new());

    simc.reset_calls().await;
    api.delete("old", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "old").await;
    // Released at once as handed over: no call at all, in particular no DELETE.
    assert_eq!(simc.calls().await, BTreeMap::new());
    assert_eq!(
        holder_of(&client, "rename-hub").await,
        Some(format!("{ns}/renamed"))
    );
    wait_instance(&api, "renamed", "renamed Ready", instance_ready).await;
    assert_eq!(writes(&simc).await, BTreeMap::new(), "the spec already matches");
    let hub_after = simc.instance(&id).await.expect("the hub survives the rename");
    assert_eq!(configuration(&hub_after), configuration(&hub_before));
    assert_eq!(simc.instances().await.len(), 1);
    // The old resource says why it left the hub running.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let note = eventually("the hand-over event of the old resource", TIMEOUT, || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("old"))
            .filter_map(|e| e.note)
            .find(|note| note.contains("left in place"))
    })
    .await;
    assert!(note.contains(&id) && note.contains("renamed"), "{note}");
    let renamed = api.get("renamed").await.unwrap();
    assert!(instance_ready(&renamed), "{:?}", renamed.status);
    assert_eq!(recorded_id(&renamed).as_deref(), Some(id.as_str()));
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_restore_is_an_explicit_adoption_and_orphans_by_default() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-restore").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(&api, &instance_manifest("hub", "restore-hub", json!({}))).await;
    let original = wait_instance(&api, "hub", "Ready", instance_ready).await;
    let id = recorded_id(&original).unwrap();
    assert_eq!(simc.count(CREATE).await, 1);

    // Lose the resource but keep the hub, as a cluster rebuilt from backups would.
    merge_patch(&api, "hub", json!({"spec": {"deletionPolicy": "Orphan"}})).await;
    api.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "hub").await;
    assert!(simc.instance(&id).await.is_some(), "orphaned, not deleted");
    assert_eq!(
        holder_of(&client, "restore-hub").await,
        None,
        "the record is freed with it"
    );

    // The backup keeps metadata and the spec, but no record: nothing proves the hub is its own.
    simc.reset_calls().await;
    let mut spec = original.spec.clone();
    spec.deletion_policy = None;
    let restored = VpnInstance {
        metadata: ObjectMeta {
            name: original.metadata.name.clone(),
            labels: original.metadata.labels.clone(),
            annotations: original.metadata.annotations.clone(),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    api.create(&PostParams::default(), &restored).await.unwrap();
    let message = wait_not_ready(&api, "hub", "HostnameTaken").await;
    assert!(
        message.contains("spec.instanceId"),
        "says how to adopt: {message}"
    );
    assert_eq!(simc.count(UPDATE).await + simc.count(DELETE).await, 0);

    // The documented procedure: adopt explicitly. Unset, its deletion policy is Orphan.
    merge_patch(&api, "hub", json!({"spec": {"instanceId": id}})).await;
    let adopted = wait_instance(&api, "hub", "the restored resource Ready", |o| {
        instance_ready(o) && recorded_id(o).is_some()
    })
    .await;
    assert_eq!(
        recorded_id(&adopted).as_deref(),
        Some(id.as_str()),
        "the same hub"
    );
    let policy = adopted.status.as_ref().and_then(|s| s.deletion_policy);
    assert_eq!(policy, Some(altostrat_vpn_operator::crd::DeletionPolicy::Orphan));
    simc.reset_calls().await;
    api.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "hub").await;
    assert_eq!(
        writes(&simc).await,
        BTreeMap::new(),
        "an adopted hub is orphaned by default"
    );
    assert_eq!(simc.instances().await.len(), 1);
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_peer_made_out_of_band_for_the_same_user_is_never_taken_over() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-peer").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);

    apply(&instances, &instance_manifest("hub", "peer-own-hub", json!({}))).await;
    let hub = wait_instance(&instances, "hub", "Ready", instance_ready).await;
    let hub_id = recorded_id(&hub).unwrap();

    // Someone adds a peer for the same user in the portal.
    let portal = HttpClient::new(HttpClientConfig {
        base_url: simc.base_url.clone(),
        ..HttpClientConfig::default()
    })
    .unwrap();
    let theirs = portal
        .create_peer(
            &ApiToken::new(TOKEN),
            &hub_id,
            &PeerCreate {
                peer_type: PeerType::Client,
                protocol: Protocol::Wireguard,
                site_id: None,
                user_id: Some(USER.into()),
                subnets: None,
                route_all: Some(false),
            },
        )
        .await
        .unwrap();
    simc.reset_calls().await;

    apply(&peers, &client_peer_manifest("alice", "hub", USER)).await;
    let alice = wait_peer(&peers, "alice", "Ready", peer_ready).await;
    let ours = alice.status.unwrap().peer_id.unwrap();
    assert_ne!(ours, theirs.id, "a peer of its own, not the portal's");
    assert_eq!(simc.count("POST /vpn/instances/{instanceId}/peers").await, 1);
    let mut remote: Vec<String> = simc.peers(&hub_id).await.into_iter().map(|p| p.id).collect();
    remote.sort();
    let mut expected = vec![ours.clone(), theirs.id.clone()];
    expected.sort();
    assert_eq!(remote, expected);

    simc.reset_calls().await;
    peers.delete("alice", &DeleteParams::default()).await.unwrap();
    wait_gone(&peers, "alice").await;
    // Taken before this test's own reads, which the simulator counts too.
    let deletion_calls = simc.calls().await;
    let left = simc.peers(&hub_id).await;
    assert_eq!(
        left.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec![theirs.id.as_str()],
        "ours deleted, the portal's left"
    );
    assert_eq!(left[0].user_id.as_deref(), Some(USER));
    assert_eq!(left[0].route_all, theirs.route_all, "unchanged");
    assert_eq!(
        deletion_calls,
        BTreeMap::from([("DELETE /vpn/instances/{instanceId}/peers/{peerId}".to_owned(), 1)])
    );
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_mismatching_spec_instance_id_is_neither_written_nor_deleted() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-mismatch").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let theirs = simc.create_instance("other hub", "other-host").await;
    eventually("the other hub to be provisioned", TIMEOUT, || async {
        simc.instance(&theirs.id).await.filter(Instance::is_provisioned)
    })
    .await;
    simc.reset_calls().await;
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(
        &api,
        &instance_manifest(
            "hub",
            "mine",
            json!({"instanceId": theirs.id, "pushedRoutes": ["10.99.0.0/16"]}),
        ),
    )
    .await;
    let message = wait_not_ready(&api, "hub", "InvalidSpec").await;
    assert!(
        message.contains("does not match") && message.contains("other-host"),
        "says the hostnames differ: {message}"
    );
    assert_eq!(recorded_id(&api.get("hub").await.unwrap()), None);
    assert_eq!(
        simc.calls_by_status().await,
        calls(&[("GET /vpn/instances 200", 1)]),
        "read, never written"
    );

    simc.reset_calls().await;
    api.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "hub").await;
    assert_eq!(simc.calls().await, BTreeMap::new(), "nothing deleted");
    let left = simc.instance(&theirs.id).await.expect("still exists");
    assert_eq!(configuration(&left), configuration(&theirs));
    assert!(left.pushed_routes.is_empty());
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_secret_that_did_not_opt_in_is_never_used_as_credentials() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-optin").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let unlabelled = serde_json::from_value(json!({
        "metadata": {"name": "some-app-secret"}, "stringData": {"token": TOKEN}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &unlabelled).await.unwrap();
    simc.reset_calls().await;
    let borrowing = json!({"credentialsSecretRef": {"name": "some-app-secret"}});
    apply(&api, &instance_manifest("hub", "optin-hub", borrowing)).await;
    let message = wait_instance_reason(&api, "hub", "CredentialsError").await;
    assert!(message.contains("vpn.altostrat.io/credentials=true"), "{message}");
    assert_eq!(
        simc.calls().await.values().sum::<u64>(),
        0,
        "no call with a borrowed token"
    );
    let secret = secrets.get("some-app-secret").await.unwrap();
    assert!(
        secret.metadata.finalizers.is_none(),
        "an unused Secret is not touched"
    );
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_resource_that_leaves_the_label_selector_holding_its_finalizer_is_warned_about() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-scope").await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator_scoped(
        &client,
        &simc.base_url,
        WatchScope::Namespace(ns.clone()),
        Some(format!("e2e.vpn.altostrat.io/run={run}")),
        OperatorOptions::default(),
    );
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let mut hub = instance_manifest("hub", "scope-hub", json!({}));
    hub.metadata.labels = Some(BTreeMap::from([("e2e.vpn.altostrat.io/run".to_owned(), run)]));
    apply(&api, &hub).await;
    wait_instance(&api, "hub", "Ready", instance_ready).await;

    merge_patch(
        &api,
        "hub",
        json!({"metadata": {"labels": {"e2e.vpn.altostrat.io/run": null}}}),
    )
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let note = eventually("the LeftScope warning", TIMEOUT, || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("LeftScope"))
            .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("hub"))
            .and_then(|e| e.note)
    })
    .await;
    assert!(note.contains("vpn.altostrat.io/cleanup"), "{note}");
    assert_eq!(
        simc.instances().await.len(),
        1,
        "leaving the scope deletes nothing"
    );
    operator.stop().await;
}

/// Two namespaces of one installation, each its own watch scope (as `WATCH_NAMESPACES=a,b`
/// runs them: each scope caches its own namespace only), sharing one simulator.
struct TwoScopes {
    client: kube::Client,
    _sim: altostrat_vpn_operator::simulator::RunningSimulator,
    simc: SimClient,
    ns_a: String,
    ns_b: String,
    api_a: Api<VpnInstance>,
    api_b: Api<VpnInstance>,
    peers_b: Api<VpnPeer>,
    operators: Vec<Operator>,
}

impl TwoScopes {
    async fn start(prefix: &str) -> Self {
        let client = kube().await;
        let ns_a = namespace(&client, &format!("{prefix}-a")).await;
        let ns_b = namespace(&client, &format!("{prefix}-b")).await;
        let sim = simulator(Duration::from_millis(300)).await;
        let simc = SimClient::new(&sim);
        let operators = [&ns_a, &ns_b]
            .map(|ns| start_operator(&client, &simc.base_url, ns, OperatorOptions::default()))
            .into();
        Self {
            api_a: Api::namespaced(client.clone(), &ns_a),
            api_b: Api::namespaced(client.clone(), &ns_b),
            peers_b: Api::namespaced(client.clone(), &ns_b),
            client,
            _sim: sim,
            simc,
            ns_a,
            ns_b,
            operators,
        }
    }

    async fn stop(self) {
        for operator in self.operators {
            operator.stop().await;
        }
    }
}

/// A portal hub (made out of band), provisioned.
async fn portal_hub(simc: &SimClient, hostname: &str) -> Instance {
    let hub = simc.create_instance("portal hub", hostname).await;
    eventually("the portal hub to be provisioned", TIMEOUT, || async {
        simc.instance(&hub.id).await.filter(Instance::is_provisioned)
    })
    .await
}

/// Whether a simulator call key addresses Altostrat instance `id` (or its peers).
fn touches(key: &str, id: &str) -> bool {
    key.contains(id)
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn scoped_watches_all_read_the_same_records() {
    // WATCH_NAMESPACES=a,b: each scope has caches of its own namespace only, yet adopting the
    // other namespace's hub is refused, because the records are cluster-wide and read fresh.
    let two = TwoScopes::start("e2e-scoped").await;
    let (client, simc, ns_a) = (&two.client, &two.simc, &two.ns_a);
    let (api_a, api_b, peers_b) = (&two.api_a, &two.api_b, &two.peers_b);

    apply(api_a, &instance_manifest("hub", "scoped-hub", json!({}))).await;
    let id = recorded_id(&wait_instance(api_a, "hub", "A Ready", instance_ready).await).unwrap();
    let before = simc.instance(&id).await.unwrap();
    simc.reset_calls().await;

    let takeover = json!({"instanceId": id, "pushedRoutes": ["192.168.0.0/16"]});
    apply(api_b, &instance_manifest("hub", "scoped-hub", takeover)).await;
    let message = wait_not_ready(api_b, "hub", "NotOwned").await;
    assert!(
        message.contains(&format!("{ns_a}/hub")),
        "names the holder: {message}"
    );
    apply(peers_b, &client_peer_manifest("mallory", "hub", USER)).await;
    wait_peer_reason(peers_b, "mallory", "WaitingForInstance").await;

    peers_b.delete("mallory", &DeleteParams::default()).await.unwrap();
    api_b.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(peers_b, "mallory").await;
    wait_gone(api_b, "hub").await;
    assert_eq!(
        writes(simc).await,
        BTreeMap::new(),
        "nothing written, created or deleted"
    );
    assert!(simc.peers(&id).await.is_empty());
    assert_eq!(
        configuration(&simc.instance(&id).await.unwrap()),
        configuration(&before)
    );
    assert_eq!(holder_of(client, "scoped-hub").await, Some(format!("{ns_a}/hub")));
    two.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_forged_create_claim_adopts_nothing() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-forged").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let theirs = portal_hub(&simc, "forged-hub").await;
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    simc.reset_calls().await;

    // The annotation earlier versions trusted as a create claim, dated long before the hub.
    let mut forged = instance_manifest("hub", "forged-hub", json!({"pushedRoutes": ["192.168.0.0/16"]}));
    forged.metadata.annotations = Some(BTreeMap::from([(
        "vpn.altostrat.io/create-claimed-at".to_owned(),
        "2000-01-01T00:00:00Z".to_owned(),
    )]));
    apply(&api, &forged).await;
    let message = wait_not_ready(&api, "hub", "HostnameTaken").await;
    assert!(message.contains(&theirs.id), "{message}");
    api.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "hub").await;
    let written = writes(&simc).await;
    assert_eq!(written, calls(&[(CREATE, 1)]), "one refused create, nothing else");
    assert_eq!(
        configuration(&simc.instance(&theirs.id).await.unwrap()),
        configuration(&theirs)
    );
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_status_patched_to_another_hub_is_never_written_to_nor_deleted() {
    let two = TwoScopes::start("e2e-status").await;
    let simc = &two.simc;
    let (api_a, api_b, peers_b) = (&two.api_a, &two.api_b, &two.peers_b);
    apply(api_a, &instance_manifest("hub", "victim-hub", json!({}))).await;
    apply(api_b, &instance_manifest("hub", "tenant-hub", json!({}))).await;
    let victim = recorded_id(&wait_instance(api_a, "hub", "A Ready", instance_ready).await).unwrap();
    let tenant = recorded_id(&wait_instance(api_b, "hub", "B Ready", instance_ready).await).unwrap();
    let before = simc.instance(&victim).await.unwrap();
    simc.reset_calls().await;

    // The tenant writes the victim's id into its own status, and asks for a reconcile.
    let forged = json!({"status": {"instanceId": victim}});
    api_b
        .patch_status(
            "hub",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&forged),
        )
        .await
        .unwrap();
    apply(peers_b, &client_peer_manifest("mallory", "hub", USER)).await;
    let request = json!({"metadata": {"annotations": {"vpn.altostrat.io/reconcile-requested-at": "forged"}}});
    merge_patch(api_b, "hub", request).await;
    let mallory = wait_peer(peers_b, "mallory", "Ready", peer_ready).await;
    let attached = mallory.status.and_then(|s| s.instance_id);
    assert_eq!(
        attached.as_deref(),
        Some(tenant.as_str()),
        "on the tenant's own hub"
    );
    assert!(simc.peers(&victim).await.is_empty());

    peers_b.delete("mallory", &DeleteParams::default()).await.unwrap();
    wait_gone(peers_b, "mallory").await;
    api_b.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(api_b, "hub").await;
    let written = writes(simc).await;
    assert!(written.keys().all(|k| !touches(k, &victim)), "{written:?}");
    assert_eq!(
        simc.count(DELETE).await,
        1,
        "the tenant's own hub only: {written:?}"
    );
    assert!(simc.instance(&tenant).await.is_none());
    assert_eq!(
        configuration(&simc.instance(&victim).await.unwrap()),
        configuration(&before)
    );
    two.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn of_two_namespaces_adopting_one_hub_at_once_exactly_one_wins() {
    let two = TwoScopes::start("e2e-race").await;
    let (client, simc, ns_a, ns_b) = (&two.client, &two.simc, &two.ns_a, &two.ns_b);
    let (api_a, api_b) = (&two.api_a, &two.api_b);
    let hub = portal_hub(simc, "race-hub").await;
    simc.reset_calls().await;

    let a = instance_manifest(
        "hub",
        "race-hub",
        json!({"instanceId": hub.id, "pushedRoutes": ["10.1.0.0/16"]}),
    );
    let b = instance_manifest(
        "hub",
        "race-hub",
        json!({"instanceId": hub.id, "pushedRoutes": ["10.2.0.0/16"]}),
    );
    tokio::join!(apply(api_a, &a), apply(api_b, &b));
    let outcome = |o: &VpnInstance| {
        let ready = o.status.as_ref().and_then(|s| condition(&s.conditions, "Ready"));
        ready.map(|c| c.1)
    };
    let (winner, loser) = eventually("one Ready, one NotOwned", TIMEOUT, || async {
        let (a, b) = (api_a.get("hub").await.ok()?, api_b.get("hub").await.ok()?);
        match (outcome(&a)?.as_str(), outcome(&b)?.as_str()) {
            ("Available", "NotOwned") => Some((ns_a.clone(), b)),
            ("NotOwned", "Available") => Some((ns_b.clone(), a)),
            _ => None,
        }
    })
    .await;
    assert_eq!(holder_of(client, "race-hub").await, Some(format!("{winner}/hub")));
    let message = condition(&loser.status.unwrap().conditions, "Ready").unwrap().2;
    assert!(
        message.contains(&format!("{winner}/hub")),
        "names the winner: {message}"
    );
    assert_eq!(
        writes(simc).await,
        calls(&[(UPDATE, 1)]),
        "the winner's routes, once"
    );
    let winner_api: Api<VpnInstance> = Api::namespaced(client.clone(), &winner);
    let held = winner_api.get("hub").await.unwrap();
    assert!(
        held.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"vpn.altostrat.io/cleanup".to_owned())
    );
    two.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_second_manager_in_the_namespace_is_refused_instead_of_fighting() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-two").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let options = OperatorOptions {
        resync_interval: Duration::from_secs(1),
        ..OperatorOptions::default()
    };
    let operator = start_operator(&client, &simc.base_url, &ns, options);
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    apply(&api, &instance_manifest("hub", "two-hub", json!({}))).await;
    let id = recorded_id(&wait_instance(&api, "hub", "Ready", instance_ready).await).unwrap();
    simc.reset_calls().await;

    // A duplicated manifest (a half-done rename) adopting the same hub with other routes.
    let copy = json!({"instanceId": id, "pushedRoutes": ["172.16.0.0/12"]});
    apply(&api, &instance_manifest("copy", "two-hub", copy)).await;
    wait_not_ready(&api, "copy", "NotOwned").await;
    // Both are looked at again: the holder converged, the copy still refused, and no PUT.
    let request =
        |at: &str| json!({"metadata": {"annotations": {"vpn.altostrat.io/reconcile-requested-at": at}}});
    merge_patch(&api, "hub", request("again")).await;
    wait_instance(&api, "hub", "the request handled", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some("again")
    })
    .await;
    assert_eq!(simc.count(UPDATE).await, 0, "no update war");
    assert_eq!(
        simc.instance(&id).await.unwrap().pushed_routes,
        vec!["10.10.0.0/16"]
    );
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_restored_peer_with_its_status_but_no_record_creates_nothing() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-peer-restore").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);
    apply(
        &instances,
        &instance_manifest("hub", "peer-restore-hub", json!({})),
    )
    .await;
    let hub_id = recorded_id(&wait_instance(&instances, "hub", "Ready", instance_ready).await).unwrap();
    apply(&peers, &client_peer_manifest("alice", "hub", USER)).await;
    let alice = wait_peer(&peers, "alice", "Ready", peer_ready).await;
    let status = alice.status.clone().unwrap();
    merge_patch(&peers, "alice", json!({"spec": {"deletionPolicy": "Orphan"}})).await;
    peers.delete("alice", &DeleteParams::default()).await.unwrap();
    wait_gone(&peers, "alice").await;
    operator.stop().await;

    // Restored while the operator is down: the spec and the status, no finalizer, no record.
    let mut restored = client_peer_manifest("alice", "hub", USER);
    restored.metadata.labels = alice.metadata.labels.clone();
    peers.create(&PostParams::default(), &restored).await.unwrap();
    let recorded = json!({"status": {"peerId": status.peer_id, "instanceId": status.instance_id}});
    peers
        .patch_status(
            "alice",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&recorded),
        )
        .await
        .unwrap();
    simc.reset_calls().await;
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let message = wait_peer_reason(&peers, "alice", "NotOwned").await;
    assert!(message.contains("spec.peerId"), "says how to adopt: {message}");
    assert_eq!(writes(&simc).await, BTreeMap::new(), "no second peer");
    assert_eq!(simc.peers(&hub_id).await.len(), 1);
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_hub_is_not_handed_over_to_a_resource_whose_adoption_was_refused() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-handover").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    apply(&api, &instance_manifest("old", "handover-hub", json!({}))).await;
    let id = recorded_id(&wait_instance(&api, "old", "Ready", instance_ready).await).unwrap();
    let wrong = json!({"instanceId": id});
    apply(&api, &instance_manifest("wrong", "handover-other", wrong)).await;
    wait_not_ready(&api, "wrong", "InvalidSpec").await;

    api.delete("old", &DeleteParams::default()).await.unwrap();
    api.delete("wrong", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "old").await;
    wait_gone(&api, "wrong").await;
    assert!(
        simc.instance(&id).await.is_none(),
        "deleted by its creator, not leaked"
    );
    assert_eq!(simc.count(DELETE).await, 1);
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn ids_that_are_not_plain_path_segments_are_refused_at_admission() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-ids").await;
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);
    for id in ["..", "../x", "%2E%2E", "a/b"] {
        let hub = instance_manifest("hub", "ids-hub", json!({"instanceId": id}));
        let refused = api.create(&PostParams::default(), &hub).await.unwrap_err();
        assert!(refused.to_string().contains("instanceId"), "{id}: {refused}");
        let mut peer = client_peer_manifest("alice", "hub", USER);
        peer.spec.peer_id = Some(id.to_owned());
        let refused = peers.create(&PostParams::default(), &peer).await.unwrap_err();
        assert!(refused.to_string().contains("peerId"), "{id}: {refused}");
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn an_upgrade_records_the_ids_in_status_once_and_trusts_no_duplicate() {
    use altostrat_vpn_operator::controller::record::Records;
    use altostrat_vpn_operator::controller::upkeep;
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-migrate").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let hub = portal_hub(&simc, "migrate-hub").await;
    let other = portal_hub(&simc, "migrate-other").await;
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    // As the previous version left them: ids in status, no records; two resources recording one id.
    for (name, hostname, id) in [
        ("hub", "migrate-hub", &hub.id),
        ("one", "migrate-one", &other.id),
        ("two", "migrate-two", &other.id),
    ] {
        api.create(
            &PostParams::default(),
            &instance_manifest(name, hostname, json!({})),
        )
        .await
        .unwrap();
        let status = json!({"status": {"instanceId": id, "managementPolicy": "Full"}});
        api.patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
        .unwrap();
    }
    let run = uuid::Uuid::new_v4().simple().to_string();
    let records = Records::new(client.clone(), format!("e2e/migration-{run}"));
    let scopes = [WatchScope::Namespace(ns.clone())];
    upkeep::migrate(&client, &scopes, &records, None).await.unwrap();
    assert_eq!(holder_of(&client, "migrate-hub").await, Some(format!("{ns}/hub")));
    assert_eq!(
        holder_of(&client, "migrate-one").await,
        None,
        "an id recorded twice gets no record"
    );
    assert_eq!(holder_of(&client, "migrate-two").await, None);

    // Once: a status written after the migration never makes a record.
    let records_api: Api<altostrat_vpn_operator::crd::OwnershipRecord> = Api::all(client.clone());
    records_api
        .delete("instance.migrate-hub", &DeleteParams::default())
        .await
        .unwrap();
    upkeep::migrate(&client, &scopes, &records, None).await.unwrap();
    assert_eq!(holder_of(&client, "migrate-hub").await, None);
    let marker = ownership_record(&client, &format!("migration.e2e.migration-{run}")).await;
    assert!(marker.is_some(), "the migration is marked done");
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_restored_copy_in_a_second_cluster_adopts_nothing_and_its_teardown_deletes_nothing() {
    // Disaster recovery drill: production's manifest, with the annotations a backup keeps,
    // restored into a second cluster sharing the token (and so the simulator).
    let prod = kube().await;
    let Some(drill) = second_kube().await else {
        return;
    };
    let ns = namespace(&prod, "e2e-dr").await;
    let drill_ns = namespace(&drill, "e2e-dr").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let prod_operator = start_operator(&prod, &simc.base_url, &ns, OperatorOptions::default());
    let drill_operator = start_operator(&drill, &simc.base_url, &drill_ns, OperatorOptions::default());
    let prod_api: Api<VpnInstance> = Api::namespaced(prod.clone(), &ns);
    let drill_api: Api<VpnInstance> = Api::namespaced(drill.clone(), &drill_ns);
    apply(&prod_api, &instance_manifest("hub", "dr-hub", json!({}))).await;
    let original = wait_instance(&prod_api, "hub", "production Ready", instance_ready).await;
    let id = recorded_id(&original).unwrap();
    let before = simc.instance(&id).await.unwrap();
    simc.reset_calls().await;

    let mut copy = instance_manifest("hub", "dr-hub", json!({"pushedRoutes": ["10.99.0.0/16"]}));
    copy.metadata.annotations = Some(BTreeMap::from([(
        "vpn.altostrat.io/create-claimed-at".to_owned(),
        "2000-01-01T00:00:00Z".to_owned(),
    )]));
    apply(&drill_api, &copy).await;
    let message = wait_not_ready(&drill_api, "hub", "HostnameTaken").await;
    assert!(
        message.contains("spec.instanceId"),
        "says how to adopt: {message}"
    );
    drill_api.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&drill_api, "hub").await;
    assert_eq!(
        writes(&simc).await,
        calls(&[(CREATE, 1)]),
        "one refused create, nothing else"
    );
    assert_eq!(
        configuration(&simc.instance(&id).await.unwrap()),
        configuration(&before)
    );
    assert!(instance_ready(&prod_api.get("hub").await.unwrap()));
    prod_operator.stop().await;
    drill_operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn explicit_adopters_in_two_clusters_stop_after_one_alternation() {
    // Failover done by the book (spec.instanceId) while production still runs: two managers
    // that cannot see each other's records. Neither may turn the hub into an update war.
    let prod = kube().await;
    let Some(drill) = second_kube().await else {
        return;
    };
    let ns = namespace(&prod, "e2e-dr-war").await;
    let drill_ns = namespace(&drill, "e2e-dr-war").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let fast = || OperatorOptions {
        resync_interval: Duration::from_secs(1),
        ..OperatorOptions::default()
    };
    let prod_operator = start_operator(&prod, &simc.base_url, &ns, fast());
    let prod_api: Api<VpnInstance> = Api::namespaced(prod.clone(), &ns);
    let drill_api: Api<VpnInstance> = Api::namespaced(drill.clone(), &drill_ns);
    apply(&prod_api, &instance_manifest("hub", "dr-war-hub", json!({}))).await;
    let id = recorded_id(&wait_instance(&prod_api, "hub", "production Ready", instance_ready).await).unwrap();
    let drill_operator = start_operator(&drill, &simc.base_url, &drill_ns, fast());
    simc.reset_calls().await;

    let adopt = json!({"instanceId": id, "pushedRoutes": ["10.99.0.0/16"]});
    apply(&drill_api, &instance_manifest("hub", "dr-war-hub", adopt)).await;
    let stopped = eventually("one side stops writing", TIMEOUT, || async {
        for (api, cluster) in [(&drill_api, "drill"), (&prod_api, "production")] {
            let obj = api.get("hub").await.ok()?;
            let ready = obj
                .status
                .as_ref()
                .and_then(|s| condition(&s.conditions, "Synced"));
            if ready.is_some_and(|c| c.1 == "NotConverging") {
                return Some(cluster);
            }
        }
        None
    })
    .await;
    let puts = simc.count(UPDATE).await;
    assert!(puts <= 3, "one alternation at most: {puts} PUTs");
    // Both are looked at again; no further PUT.
    let request = json!({"metadata": {"annotations": {"vpn.altostrat.io/reconcile-requested-at": "again"}}});
    merge_patch(&prod_api, "hub", request.clone()).await;
    merge_patch(&drill_api, "hub", request).await;
    for api in [&prod_api, &drill_api] {
        wait_instance(api, "hub", "the request handled", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
                == Some("again")
        })
        .await;
    }
    assert_eq!(
        simc.count(UPDATE).await,
        puts,
        "{stopped} stopped, and nobody writes any more"
    );
    let events: Api<Event> = Api::namespaced(
        if stopped == "drill" {
            drill.clone()
        } else {
            prod.clone()
        },
        if stopped == "drill" { &drill_ns } else { &ns },
    );
    let warned = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|e| {
            e.reason.as_deref() == Some("NotConverging") && e.note.is_some_and(|n| n.contains("pushedRoutes"))
        });
    assert!(warned, "a Warning event names the fields");

    // The drill's teardown leaves the hub: adopted without deletionPolicy means Orphan.
    drill_api.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&drill_api, "hub").await;
    assert_eq!(simc.count(DELETE).await, 0);
    assert!(simc.instance(&id).await.is_some());
    prod_operator.stop().await;
    drill_operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_second_installation_neither_takes_nor_frees_the_first_ones_records() {
    use altostrat_vpn_operator::controller::record::Records;
    use altostrat_vpn_operator::controller::upkeep;
    let client = kube().await;
    let ns_a = namespace(&client, "e2e-install-a").await;
    let ns_b = namespace(&client, "e2e-install-b").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let team = |installation| OperatorOptions {
        installation,
        ..OperatorOptions::default()
    };
    let first = start_operator(&client, &simc.base_url, &ns_a, team("e2e/first"));
    let second = start_operator(&client, &simc.base_url, &ns_b, team("e2e/second"));
    let api_a: Api<VpnInstance> = Api::namespaced(client.clone(), &ns_a);
    let api_b: Api<VpnInstance> = Api::namespaced(client.clone(), &ns_b);
    apply(&api_a, &instance_manifest("hub", "install-hub", json!({}))).await;
    let id = recorded_id(&wait_instance(&api_a, "hub", "Ready", instance_ready).await).unwrap();
    simc.reset_calls().await;

    apply(
        &api_b,
        &instance_manifest("hub", "install-hub", json!({"instanceId": id})),
    )
    .await;
    let message = wait_not_ready(&api_b, "hub", "NotOwned").await;
    assert!(
        message.contains("\"e2e/first\""),
        "names the installation: {message}"
    );
    // The second installation's sweep leaves the first one's records alone, held or not.
    let records = Records::new(client.clone(), "e2e/second".into());
    let missing = upkeep::sweep_once(&client, &records, &Default::default())
        .await
        .unwrap();
    upkeep::sweep_once(&client, &records, &missing).await.unwrap();
    assert_eq!(
        holder_of(&client, "install-hub").await,
        Some(format!("{ns_a}/hub"))
    );
    api_b.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&api_b, "hub").await;
    assert_eq!(writes(&simc).await, BTreeMap::new());
    assert_eq!(
        holder_of(&client, "install-hub").await,
        Some(format!("{ns_a}/hub"))
    );
    first.stop().await;
    second.stop().await;
}
