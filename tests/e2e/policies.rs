//! What kube-apiserver refuses about `managementPolicy` (the CRDs' CEL rules), and a plan
//! approval through the real API server and watches, counted in the simulator's call log. What
//! the operator does under each policy, the pause annotation and reconcile requests is tested
//! in the fast tier (`src/controller/{instance,peer}/tests.rs`, `instance/approval_tests.rs`).

use std::time::Duration;

use altostrat_vpn_operator::crd::{APPROVE_PLAN_ANNOTATION, ManagementPolicy, VpnInstance, VpnPeer};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::support::*;

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn leaving_observe_only_and_observing_a_peer_need_the_id_at_admission() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-policy-admission").await;
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);

    let observer = json!({"managementPolicy": "ObserveOnly"});
    apply(&instances, &instance_manifest("hub", "observed-hub", observer)).await;
    // Leaving ObserveOnly adopts the observed hub: refused without spec.instanceId.
    let takeover = json!({"spec": {"managementPolicy": "Full"}});
    let refused = instances
        .patch("hub", &PatchParams::default(), &Patch::Merge(&takeover))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("set spec.instanceId"), "{refused}");

    // A peer is found by its id only: observing one needs spec.peerId.
    let mut no_id = client_peer_manifest("bob", "hub", "a1b2c3d4-e5f6-7890-1234-567890abcdef");
    no_id.spec.management_policy = ManagementPolicy::ObserveOnly;
    let refused = peers
        .patch("bob", &PatchParams::apply("e2e-tests"), &Patch::Apply(&no_id))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("needs spec.peerId"), "{refused}");
}

/// A hostname of this run alone (at most 20 bytes): ownership records outlive a test's namespace.
fn unique_hostname(label: &str, namespace: &str) -> String {
    let suffix = namespace.rsplit('-').next().unwrap_or_default();
    format!("{label}-{suffix}")
}

/// Waits until the hub's status describes its current spec with `Synced` reason `reason`.
async fn wait_synced(instances: &Api<VpnInstance>, reason: &str) -> VpnInstance {
    wait_instance(instances, "hub", reason, |o| {
        let status = o.status.as_ref();
        status.and_then(|s| s.observed_generation) == o.metadata.generation
            && status
                .and_then(|s| condition(&s.conditions, "Synced"))
                .is_some_and(|c| c.1 == reason)
    })
    .await
}

/// The writes the simulator received since its calls were last reset, per route.
async fn writes(simc: &SimClient) -> Vec<(String, u64)> {
    let calls = simc.calls().await;
    calls
        .into_iter()
        .filter(|(route, _)| !route.starts_with("GET "))
        .collect()
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn an_approved_plan_is_applied_with_exactly_its_calls_and_a_changed_one_sends_nothing() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-approve-plan").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let routes = json!({"pushedRoutes": ["10.0.0.0/8"]});
    let hostname = unique_hostname("edit", &ns);
    apply(&instances, &instance_manifest("hub", &hostname, routes)).await;
    wait_instance_reason(&instances, "hub", "Available").await;

    let plan = json!({"spec": {"managementPolicy": "Plan", "pushedRoutes": ["192.168.0.0/16"]}});
    merge_patch(&instances, "hub", plan).await;
    let planned = wait_synced(&instances, "Planned").await;
    let approved = planned.status.unwrap().plan_digest.expect("a digest");
    simc.reset_calls().await;

    // Approved, but edited in the same breath: the approval names a plan that is no longer it.
    let edited = json!({
        "metadata": {"annotations": {APPROVE_PLAN_ANNOTATION: approved}},
        "spec": {"pushedRoutes": ["172.16.0.0/12"]}
    });
    merge_patch(&instances, "hub", edited).await;
    let changed = wait_synced(&instances, "PlanChanged").await.status.unwrap();
    assert_eq!(writes(&simc).await, vec![], "nothing sent");
    let now = changed.plan_digest.expect("the new plan's digest");
    assert_ne!(now, approved);

    let approve = json!({"metadata": {"annotations": {APPROVE_PLAN_ANNOTATION: now}}});
    merge_patch(&instances, "hub", approve).await;
    let done = wait_instance(&instances, "hub", "the approval spent", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.approved_plan.as_ref())
            .is_some_and(|a| a.spent_at.is_some())
    })
    .await;
    let id = done.status.unwrap().instance_id.unwrap();
    assert_eq!(
        writes(&simc).await,
        vec![("PUT /vpn/instances/{instanceId}".to_owned(), 1)],
        "exactly the planned call"
    );
    let hub = simc.instance(&id).await.unwrap();
    assert_eq!(hub.pushed_routes, vec!["172.16.0.0/12"]);
    wait_synced(&instances, "ReconcileSuccess").await;

    // Spent: the next edit is planned, not sent.
    simc.reset_calls().await;
    merge_patch(
        &instances,
        "hub",
        json!({"spec": {"pushedRoutes": ["10.9.0.0/16"]}}),
    )
    .await;
    wait_synced(&instances, "Planned").await;
    assert_eq!(writes(&simc).await, vec![], "a spent approval sends nothing");
    operator.stop().await;
}

/// Approves the hub's current plan; returns its digest.
async fn approve_current(instances: &Api<VpnInstance>, planned: VpnInstance) -> String {
    let digest = planned.status.unwrap().plan_digest.expect("a digest");
    let approve = json!({"metadata": {"annotations": {APPROVE_PLAN_ANNOTATION: digest}}});
    merge_patch(instances, "hub", approve).await;
    digest
}

/// Waits until the approval `digest` is spent.
async fn wait_spent(instances: &Api<VpnInstance>, digest: &str) -> VpnInstance {
    wait_instance(instances, "hub", "the approval spent", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.approved_plan.as_ref())
            .is_some_and(|a| a.digest == digest && a.spent_at.is_some())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn an_approved_create_completes_and_a_change_in_altostrat_since_the_approval_sends_nothing() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-approve-create").await;
    let sim = simulator(Duration::from_millis(1500)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"managementPolicy": "Plan", "pushedRoutes": ["10.0.0.0/8"]});
    let hostname = unique_hostname("create", &ns);
    apply(&instances, &instance_manifest("hub", &hostname, spec)).await;
    let planned = wait_synced(&instances, "Planned").await;
    assert_eq!(writes(&simc).await, vec![]);
    let digest = approve_current(&instances, planned).await;
    let created = wait_spent(&instances, &digest).await;
    assert_eq!(
        writes(&simc).await,
        vec![
            ("POST /vpn/instances".to_owned(), 1),
            ("PUT /vpn/instances/{instanceId}".to_owned(), 1)
        ],
        "the POST, then the PUT once provisioned: exactly the planned calls"
    );
    let id = created.status.unwrap().instance_id.unwrap();
    wait_instance_reason(&instances, "hub", "Available").await;

    merge_patch(
        &instances,
        "hub",
        json!({"spec": {"pushedRoutes": ["192.168.0.0/16"]}}),
    )
    .await;
    let planned = wait_synced(&instances, "Planned").await;
    // Someone changes the hub in Altostrat after the plan was shown, before it is approved.
    let core = sim.simulator().core();
    core.edit_instance(&id, |i| i.pushed_routes = vec!["10.1.0.0/16".into()])
        .expect("the hub exists");
    simc.reset_calls().await;
    approve_current(&instances, planned).await;
    let changed = wait_synced(&instances, "PlanChanged").await;
    assert_eq!(writes(&simc).await, vec![], "nothing sent");
    let digest = approve_current(&instances, changed).await;
    wait_spent(&instances, &digest).await;
    assert_eq!(
        writes(&simc).await,
        vec![("PUT /vpn/instances/{instanceId}".to_owned(), 1)]
    );
    assert_eq!(
        simc.instance(&id).await.unwrap().pushed_routes,
        vec!["192.168.0.0/16"]
    );
    operator.stop().await;
}
