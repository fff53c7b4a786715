//! End to end: how much the operator may do for a resource (`managementPolicy`, the pause
//! annotation) and when it looks (reconcile requests), against a real kube-apiserver and the
//! simulator over HTTP, counted by the simulator's call log.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use altostrat_vpn_operator::crd::{
    ManagementPolicy, PAUSED_ANNOTATION, PlannedCall, RECONCILE_REQUEST_ANNOTATION, VpnInstance, VpnPeer,
};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

/// Whether the condition `type_` has `status` and `reason`, written for the current generation.
fn has_condition(o: &VpnInstance, type_: &str, status: &str, reason: &str) -> bool {
    let Some(s) = o.status.as_ref() else { return false };
    s.observed_generation == o.metadata.generation
        && condition(&s.conditions, type_).is_some_and(|c| c.0 == status && c.1 == reason)
}

/// Sets (or, with `null`, removes) the annotation `key` of instance `name`.
async fn annotate(api: &Api<VpnInstance>, name: &str, key: &str, value: Value) {
    merge_patch(api, name, json!({"metadata": {"annotations": {key: value}}})).await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_paused_hub_gets_no_writes_after_a_spec_edit_and_resumes_when_unpaused() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-pause").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(&api, &instance_manifest("hub", "paused-hub", json!({}))).await;
    let id = wait_instance(&api, "hub", "Ready", instance_ready)
        .await
        .status
        .unwrap()
        .instance_id
        .unwrap();
    annotate(&api, "hub", PAUSED_ANNOTATION, json!("true")).await;
    wait_instance(&api, "hub", "Paused", |o| {
        has_condition(o, "Paused", "True", "ReconcilePaused")
    })
    .await;

    simc.reset_calls().await;
    let routes = json!({"spec": {"pushedRoutes": ["10.10.0.0/16", "172.16.0.0/12"]}});
    merge_patch(&api, "hub", routes).await;
    let drifted = wait_instance(&api, "hub", "the edit shown as drift", |o| {
        has_condition(o, "Synced", "False", "Drifted")
    })
    .await;
    let status = drifted.status.unwrap();
    let synced = condition(&status.conditions, "Synced").unwrap();
    assert!(synced.2.contains("pushedRoutes"), "{synced:?}");
    assert_eq!(condition(&status.conditions, "Ready").unwrap().0, "True");
    let plan: Vec<_> = status
        .plan
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str()))
        .collect();
    assert_eq!(plan, vec![("PUT", format!("/vpn/instances/{id}").as_str())]);
    assert_eq!(simc.writes().await, 0, "{:?}", simc.calls().await);
    assert_eq!(
        simc.instance(&id).await.unwrap().pushed_routes,
        vec!["10.10.0.0/16"]
    );

    annotate(&api, "hub", PAUSED_ANNOTATION, Value::Null).await;
    let resumed = wait_instance(&api, "hub", "Ready and Synced once unpaused", |o| {
        instance_ready(o) && has_condition(o, "Synced", "True", "ReconcileSuccess")
    })
    .await;
    let status = resumed.status.unwrap();
    assert_eq!(condition(&status.conditions, "Paused"), None);
    assert!(status.plan.is_empty());
    let remote = simc.instance(&id).await.unwrap();
    assert_eq!(remote.pushed_routes, vec!["10.10.0.0/16", "172.16.0.0/12"]);
    assert_eq!(
        simc.writes().await,
        1,
        "the planned PUT: {:?}",
        simc.calls().await
    );
    assert_eq!(simc.count("PUT /vpn/instances/{instanceId}").await, 1);
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn deleting_a_paused_hub_follows_its_deletion_policy() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-pausedel").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(&api, &instance_manifest("doomed", "paused-doomed", json!({}))).await;
    let orphan = json!({"deletionPolicy": "Orphan"});
    apply(&api, &instance_manifest("kept", "paused-kept", orphan)).await;
    let mut ids = Vec::new();
    for name in ["doomed", "kept"] {
        let ready = wait_instance(&api, name, "Ready", instance_ready).await;
        ids.push(ready.status.unwrap().instance_id.unwrap());
        annotate(&api, name, PAUSED_ANNOTATION, json!("true")).await;
        wait_instance(&api, name, "Paused", |o| {
            has_condition(o, "Paused", "True", "ReconcilePaused")
        })
        .await;
    }

    for name in ["doomed", "kept"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_gone(&api, "doomed").await;
    wait_gone(&api, "kept").await;
    assert!(
        simc.instance(&ids[0]).await.is_none(),
        "Delete: deleted though paused"
    );
    assert!(simc.instance(&ids[1]).await.is_some(), "Orphan: left running");
    assert_eq!(simc.count("DELETE /vpn/instances/{instanceId}").await, 1);
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_reconcile_request_triggers_one_observation_and_is_acknowledged() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-request").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    // The resync (5 min) is far away: only the request can make the operator look.
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    apply(&api, &instance_manifest("hub", "request-hub", json!({}))).await;
    wait_instance(&api, "hub", "Ready", instance_ready).await;

    simc.reset_calls().await;
    let at = "2026-11-27T10:00:00Z";
    annotate(&api, "hub", RECONCILE_REQUEST_ANNOTATION, json!(at)).await;
    wait_instance(&api, "hub", "the request acknowledged", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some(at)
    })
    .await;
    assert_eq!(
        simc.calls().await,
        BTreeMap::from([("GET /vpn/instances".to_owned(), 1)]),
        "one look at Altostrat, by list"
    );
    operator.stop().await;
}

/// A hub made in the portal (by the simulator's API, as another tool would), provisioned.
async fn portal_hub(simc: &SimClient, name: &str, hostname: &str) -> String {
    let id = simc.create_instance(name, hostname).await.id;
    eventually("the portal's hub provisioned", TIMEOUT, || async {
        simc.instance(&id).await.filter(|i| i.server_ready).map(drop)
    })
    .await;
    id
}

/// A VpnInstance that only observes the hub with `hostname` (named `name` in the portal).
fn observer(name: &str, hostname: &str) -> VpnInstance {
    serde_json::from_value(json!({
        "apiVersion": "vpn.altostrat.io/v1alpha1",
        "kind": "VpnInstance",
        "metadata": {"name": "hub"},
        "spec": {"name": name, "hostname": hostname, "region": "sjc", "managementPolicy": "ObserveOnly"},
    }))
    .unwrap()
}

fn observes(o: &VpnInstance, id: &str) -> bool {
    let Some(s) = o.status.as_ref() else { return false };
    s.instance_id.as_deref() == Some(id) && s.management_policy == Some(ManagementPolicy::ObserveOnly)
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn an_observed_hub_changed_in_altostrat_shows_drift_gets_no_writes_and_outlives_its_resource() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-observe").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let id = portal_hub(&simc, "Portal hub", "observed-hub").await;
    simc.reset_calls().await;
    let options = OperatorOptions {
        resync_interval: Duration::from_secs(2),
        ..Default::default()
    };
    let operator = start_operator(&client, &simc.base_url, &ns, options);
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(&api, &observer("Portal hub", "observed-hub")).await;
    wait_instance(&api, "hub", "the hub observed, in sync", |o| {
        observes(o, &id) && instance_ready(o) && has_condition(o, "Synced", "True", "Observed")
    })
    .await;

    let portal_edit = json!({"name": "Renamed in portal", "pushed_routes": ["0.0.0.0/0"]});
    simc.drift(&id, portal_edit).await;
    let drifted = wait_instance(&api, "hub", "the portal's edit shown as drift", |o| {
        has_condition(o, "Synced", "False", "Drifted")
    })
    .await;
    let synced = condition(&drifted.status.as_ref().unwrap().conditions, "Synced").unwrap();
    assert!(
        synced.2.contains("name") && !synced.2.contains("pushedRoutes"),
        "only what the spec sets is compared: {synced:?}"
    );
    assert!(instance_ready(&drifted), "the hub still works");

    // Leaving ObserveOnly is an adoption: the API server refuses it without spec.instanceId.
    let takeover = json!({"spec": {"managementPolicy": "Full"}});
    let refused = api
        .patch("hub", &PatchParams::default(), &Patch::Merge(&takeover))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("set spec.instanceId"), "{refused}");

    api.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "hub").await;
    let remote = simc.instance(&id).await.expect("left running");
    assert_eq!(remote.name, "Renamed in portal", "never corrected");
    assert_eq!(simc.writes().await, 0, "{:?}", simc.calls().await);
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_peer_attaches_to_an_observed_hub() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-observe-peer").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let id = portal_hub(&simc, "Portal hub", "observed-peers").await;
    simc.reset_calls().await;
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);

    apply(&instances, &observer("Portal hub", "observed-peers")).await;
    let user = "a1b2c3d4-e5f6-7890-1234-567890abcdef";
    apply(&peers, &client_peer_manifest("alice", "hub", user)).await;
    let alice = wait_peer(&peers, "alice", "the peer Ready", peer_ready).await;
    let peer_id = alice.status.unwrap().peer_id.unwrap();
    assert_eq!(simc.peers(&id).await.len(), 1);
    let calls = simc.calls().await;
    let writes: BTreeMap<_, _> = calls.iter().filter(|(k, _)| !k.starts_with("GET ")).collect();
    let create = "POST /vpn/instances/{instanceId}/peers".to_owned();
    assert_eq!(
        writes,
        BTreeMap::from([(&create, &1)]),
        "the hub itself untouched: {calls:?}"
    );

    // An observed peer is found by id only: the API server refuses one without it.
    let mut no_id = client_peer_manifest("bob", "hub", user);
    no_id.spec.management_policy = ManagementPolicy::ObserveOnly;
    let refused = peers
        .patch("bob", &PatchParams::apply("e2e-tests"), &Patch::Apply(&no_id))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("needs spec.peerId"), "{refused}");

    peers.delete("alice", &DeleteParams::default()).await.unwrap();
    wait_gone(&peers, "alice").await;
    assert!(
        simc.peers(&id).await.iter().all(|p| p.id != peer_id),
        "a Full peer is deleted"
    );
    operator.stop().await;
}

/// `METHOD /path` of each planned call, with the instance id `id` written as the simulator's
/// route placeholder, counted: the shape of the simulator's call log.
fn planned_calls<'a>(plans: impl IntoIterator<Item = &'a PlannedCall>, id: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for call in plans {
        let path = match id {
            "" => call.path.clone(),
            id => call.path.replace(id, "{instanceId}"),
        };
        *calls.entry(format!("{} {path}", call.method)).or_default() += 1;
    }
    calls
}

/// The simulator's write calls (everything but reads), counted.
async fn write_calls(simc: &SimClient) -> BTreeMap<String, u64> {
    simc.calls()
        .await
        .into_iter()
        .filter(|(k, _)| !k.starts_with("GET "))
        .collect()
}

fn planning(o: &VpnInstance) -> bool {
    has_condition(o, "Synced", "False", "Planned")
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_plan_lists_exactly_the_calls_that_the_switch_to_full_makes() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-plan").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);
    let full = json!({"spec": {"managementPolicy": "Full"}});

    // A new hub: its create and the update that configures it, planned, then made.
    let plan_only = json!({"managementPolicy": "Plan"});
    apply(&instances, &instance_manifest("hub", "planned-hub", plan_only)).await;
    let planned = wait_instance(&instances, "hub", "the create planned", planning).await;
    let plan = planned_calls(&planned.status.unwrap().plan, "");
    let expected = [("POST /vpn/instances", 1), ("PUT /vpn/instances/{instanceId}", 1)];
    assert_eq!(plan, expected.map(|(k, v)| (k.to_owned(), v)).into());
    assert_eq!(simc.writes().await, 0, "{:?}", simc.calls().await);
    merge_patch(&instances, "hub", full.clone()).await;
    let created = wait_instance(&instances, "hub", "Ready under Full", |o| {
        instance_ready(o) && has_condition(o, "Synced", "True", "ReconcileSuccess")
    })
    .await;
    assert_eq!(write_calls(&simc).await, plan);
    let status = created.status.unwrap();
    assert!(status.plan.is_empty());
    let id = status.instance_id.unwrap();

    // An edit of the hub and a new peer, planned, then made.
    simc.reset_calls().await;
    let edit =
        json!({"spec": {"managementPolicy": "Plan", "pushedRoutes": ["10.10.0.0/16", "172.16.0.0/12"]}});
    merge_patch(&instances, "hub", edit).await;
    let mut alice = client_peer_manifest("alice", "hub", "a1b2c3d4-e5f6-7890-1234-567890abcdef");
    alice.spec.management_policy = ManagementPolicy::Plan;
    apply(&peers, &alice).await;
    let hub_plan = wait_instance(&instances, "hub", "the edit planned", planning).await;
    let hub_plan = hub_plan.status.unwrap().plan;
    let change = &hub_plan[0].changes[0];
    assert_eq!(
        (
            change.field.as_str(),
            change.old.as_deref(),
            change.new.as_deref()
        ),
        (
            "pushedRoutes",
            Some(r#"["10.10.0.0/16"]"#),
            Some(r#"["10.10.0.0/16","172.16.0.0/12"]"#)
        )
    );
    let peer_plan = wait_peer(&peers, "alice", "the peer planned", |p| {
        p.status.as_ref().is_some_and(|s| !s.plan.is_empty())
    })
    .await;
    let plan = planned_calls(hub_plan.iter().chain(&peer_plan.status.unwrap().plan), &id);
    let expected = [
        ("POST /vpn/instances/{instanceId}/peers", 1),
        ("PUT /vpn/instances/{instanceId}", 1),
    ];
    assert_eq!(plan, expected.map(|(k, v)| (k.to_owned(), v)).into());
    assert_eq!(simc.writes().await, 0, "{:?}", simc.calls().await);

    merge_patch(&instances, "hub", full.clone()).await;
    merge_patch(&peers, "alice", full).await;
    wait_peer(&peers, "alice", "the peer Ready", peer_ready).await;
    wait_instance(&instances, "hub", "the edit applied", |o| {
        instance_ready(o) && has_condition(o, "Synced", "True", "ReconcileSuccess")
    })
    .await;
    assert_eq!(write_calls(&simc).await, plan);
    operator.stop().await;
}
