//! End to end: the one ownership rule (README, "Behaviour and design choices"). The operator
//! writes to, adopts or deletes an Altostrat object only when it can prove the object is the
//! resource's own; these tests mirror the reconcile tests of the same scenarios
//! (`src/controller/{instance,peer}/tests.rs`) against a real kube-apiserver and the simulator
//! over HTTP.
//! Run through `scripts/test.sh` (it starts the control plane and sets KUBECONFIG).
#![cfg(feature = "simulator")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use altostrat_vpn_operator::altostrat::model::{Instance, PeerCreate, PeerType, Protocol};
use altostrat_vpn_operator::altostrat::{ApiToken, HttpClient, HttpClientConfig, VpnApi};
use altostrat_vpn_operator::controller::WatchScope;
use altostrat_vpn_operator::crd::{CREATE_CLAIM_ANNOTATION, VpnInstance, VpnPeer};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use serde_json::json;
use support::*;

const USER: &str = "a1b2c3d4-e5f6-7890-1234-567890abcdef";
const CREATE: &str = "POST /vpn/instances";
const UPDATE: &str = "PUT /vpn/instances/{instanceId}";
const DELETE: &str = "DELETE /vpn/instances/{instanceId}";

/// The instance id a resource records.
fn recorded_id(obj: &VpnInstance) -> Option<String> {
    obj.status.as_ref().and_then(|s| s.instance_id.clone())
}

fn claim(obj: &VpnInstance) -> Option<String> {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CREATE_CLAIM_ANNOTATION).cloned())
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
    let message = wait_not_ready(&api_b, "hub", "HostnameTaken").await;
    assert!(message.contains(&id), "names A's hub: {message}");
    let refused = api_b.get("hub").await.unwrap();
    assert_eq!(recorded_id(&refused), None, "B records nothing");
    assert_eq!(claim(&refused), None, "B's claim is withdrawn");
    // The create is refused; the listing finds A's hub, which B must not adopt.
    assert_eq!(
        simc.calls_by_status().await,
        calls(&[("POST /vpn/instances 409", 1), ("GET /vpn/instances 200", 1)])
    );

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
    assert_eq!(claim(&failed), None, "validated before the claim: no claim");
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
    let renamed = wait_instance(&api, "renamed", "renamed Ready", instance_ready).await;
    assert_eq!(recorded_id(&renamed).as_deref(), Some(id.as_str()));
    assert_eq!(simc.count(CREATE).await, 0);
    assert_eq!(simc.count(UPDATE).await, 0, "the spec already matches");

    simc.reset_calls().await;
    api.delete("old", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "old").await;
    // Released at once as handed over: no call at all, in particular no DELETE.
    assert_eq!(simc.calls().await, BTreeMap::new());
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
            .find(|note| note.contains("left running"))
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
async fn a_resource_restored_from_its_manifest_owns_its_hub_again() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-own-restore").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(&api, &instance_manifest("hub", "restore-hub", json!({}))).await;
    let original = wait_instance(&api, "hub", "Ready", instance_ready).await;
    let id = recorded_id(&original).unwrap();
    assert!(claim(&original).is_some(), "the create was claimed");
    assert_eq!(simc.count(CREATE).await, 1);

    // Lose the resource but keep the hub, as a cluster rebuilt from backups would.
    merge_patch(&api, "hub", json!({"spec": {"deletionPolicy": "Orphan"}})).await;
    api.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "hub").await;
    assert!(simc.instance(&id).await.is_some(), "orphaned, not deleted");
    assert_eq!(simc.count(DELETE).await, 0);

    // The backup keeps metadata (with the claim) and the spec, and drops everything else.
    simc.reset_calls().await;
    let restored = VpnInstance {
        metadata: ObjectMeta {
            name: original.metadata.name.clone(),
            labels: original.metadata.labels.clone(),
            annotations: original.metadata.annotations.clone(),
            ..ObjectMeta::default()
        },
        spec: original.spec.clone(),
        status: None,
    };
    api.create(&PostParams::default(), &restored).await.unwrap();
    let ready = wait_instance(&api, "hub", "the restored resource Ready", |o| {
        instance_ready(o) && recorded_id(o).is_some()
    })
    .await;
    assert_eq!(recorded_id(&ready).as_deref(), Some(id.as_str()), "the same hub");
    assert_ne!(ready.metadata.uid, original.metadata.uid, "a new object");
    // Found by its claim and adopted: one listing, no create, no write.
    assert_eq!(
        simc.calls_by_status().await,
        calls(&[("GET /vpn/instances 200", 1)])
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
