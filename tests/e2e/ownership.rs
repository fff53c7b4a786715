//! The one ownership rule (docs/behaviour.md) where it needs a real
//! cluster: ownership records are cluster-scoped objects kube-apiserver creates atomically,
//! read by watch scopes that cache different namespaces, by a second installation and by a
//! second cluster restored from the same manifests; admission refuses ids that are not plain
//! path segments. What the rule decides for each resource is tested in the fast tier
//! (`src/controller/{instance,peer}/tests.rs` and their `decide.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use altostrat_vpn_operator::altostrat::model::Instance;
use altostrat_vpn_operator::controller::WatchScope;
use altostrat_vpn_operator::crd::{VpnInstance, VpnPeer};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
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

/// A GitOps rename over real watches, with one operator for all namespaces as deployed by
/// default: the successor, refused while the old resource holds the hub, is re-run by the old
/// one's deletion (a refused adoption is otherwise retried at the resync, five minutes away
/// here), and the old resource's event says why the hub was left in place. What each side
/// decides is tested in the fast tier.
#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_rename_wakes_the_successor_as_soon_as_the_old_resource_is_gone() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-rename").await;
    // The label keeps the operator to this test's resources while other tests run in parallel.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let label = ("e2e.vpn.altostrat.io/run".to_owned(), run);
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator_scoped(
        &client,
        &simc.base_url,
        WatchScope::AllNamespaces,
        Some(format!("{}={}", label.0, label.1)),
        OperatorOptions::default(),
    );
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let labelled = |mut obj: VpnInstance| {
        obj.metadata.labels = Some(BTreeMap::from([label.clone()]));
        obj
    };

    apply(&api, &labelled(instance_manifest("old", "rename-hub", json!({})))).await;
    let old = wait_instance(&api, "old", "old Ready", instance_ready).await;
    let id = recorded_id(&old).unwrap();
    // The same configuration under a new name, adopting the hub explicitly.
    let adopting = json!({"name": "old hub", "instanceId": id});
    apply(
        &api,
        &labelled(instance_manifest("renamed", "rename-hub", adopting)),
    )
    .await;
    wait_not_ready(&api, "renamed", "NotOwned").await;

    api.delete("old", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "old").await;
    let renamed = wait_instance(&api, "renamed", "renamed Ready", instance_ready).await;
    assert_eq!(recorded_id(&renamed).as_deref(), Some(id.as_str()));
    assert_eq!(simc.count(DELETE).await, 0, "handed over, not deleted");
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
