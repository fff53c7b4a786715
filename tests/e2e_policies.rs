//! End to end: how much the operator may do for a resource (the pause annotation) and when it
//! looks (reconcile requests), against a real kube-apiserver and the simulator over HTTP,
//! counted by the simulator's call log.
//! Run through `scripts/test.sh` (it starts the control plane and sets KUBECONFIG).
#![cfg(feature = "simulator")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use altostrat_vpn_operator::crd::{PAUSED_ANNOTATION, RECONCILE_REQUEST_ANNOTATION, VpnInstance};
use kube::Api;
use kube::api::DeleteParams;
use serde_json::{Value, json};
use support::*;

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
