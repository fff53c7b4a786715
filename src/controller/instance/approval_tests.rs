//! Plan approval of a `VpnInstance`, against the in-process Kubernetes fake and the Altostrat
//! simulator: exactly the approved calls are sent, or nothing.
#![cfg(feature = "simulator")]

use serde_json::json;

use super::tests::{status, writes};
use crate::altostrat::Endpoint;
use crate::controller::testing::{Harness, condition, instance};
use crate::crd::ManagementPolicy::Plan;
use crate::crd::{APPROVE_PLAN_ANNOTATION, VpnInstance};

fn synced(h: &Harness, obj: &VpnInstance) -> Option<(String, String)> {
    condition(&status(h, obj).conditions, "Synced")
}

fn approve(h: &Harness, obj: &VpnInstance, digest: &str) -> VpnInstance {
    h.annotate(obj, APPROVE_PLAN_ANNOTATION, Some(digest))
}

/// A hub created under `Full` with `10.0.0.0/8`, then put under `Plan` with `routes`: planned,
/// nothing sent. Returns the resource and the digest of its plan.
async fn planned_edit(h: &Harness, routes: &[&str]) -> (VpnInstance, String) {
    let obj = h.apply(instance("hub-one", json!({"pushedRoutes": ["10.0.0.0/8"]})));
    h.reconcile(&obj).await.unwrap();
    let routes: Vec<String> = routes.iter().map(|r| (*r).to_owned()).collect();
    let edited = h.edit(&obj, |o| {
        o.spec.management_policy = Plan;
        o.spec.pushed_routes = routes;
    });
    h.altostrat.clear_calls();
    h.reconcile(&edited).await.unwrap();
    assert_eq!(writes(h), vec![], "planned only");
    let digest = status(h, &obj)
        .plan_digest
        .expect("a planned change has a digest");
    (edited, digest)
}

#[tokio::test]
async fn an_approved_edit_is_sent_once_then_the_approval_is_spent() {
    let h = Harness::new();
    let (obj, digest) = planned_edit(&h, &["192.168.0.0/16", "172.16.0.0/12"]).await;
    assert_eq!(synced(&h, &obj), Some(("False".into(), "Planned".into())));

    let approved = approve(&h, &obj, &digest);
    h.reconcile(&approved).await.unwrap();
    assert_eq!(
        writes(&h),
        vec![Endpoint::UpdateInstance],
        "exactly the planned call"
    );
    assert_eq!(
        h.altostrat.instances()[0].pushed_routes,
        vec!["192.168.0.0/16", "172.16.0.0/12"]
    );
    let done = status(&h, &obj);
    assert!(done.plan.is_empty() && done.plan_digest.is_none(), "{done:?}");
    let spent = done.approved_plan.expect("recorded");
    assert_eq!(spent.digest, digest);
    assert!(
        spent.spent_at.is_some() && spent.remaining.is_empty(),
        "{spent:?}"
    );
    assert_eq!(synced(&h, &obj), Some(("True".into(), "ReconcileSuccess".into())));

    h.altostrat.clear_calls();
    let edited = h.edit(&obj, |o| o.spec.pushed_routes = vec!["10.9.0.0/16".into()]);
    h.reconcile(&edited).await.unwrap();
    assert_eq!(writes(&h), vec![], "a spent approval authorises nothing");
    assert_eq!(synced(&h, &obj), Some(("False".into(), "Planned".into())));
    let next = status(&h, &obj).plan_digest.unwrap();
    assert_ne!(next, digest);

    let approved = approve(&h, &edited, &next);
    h.reconcile(&approved).await.unwrap();
    assert_eq!(writes(&h), vec![Endpoint::UpdateInstance]);
    assert_eq!(h.altostrat.instances()[0].pushed_routes, vec!["10.9.0.0/16"]);
}

#[tokio::test]
async fn an_approved_create_sends_its_post_then_its_put_once_provisioned() {
    let h = Harness::new();
    h.altostrat.hold_provisioning();
    let spec =
        json!({"managementPolicy": "Plan", "pushedRoutes": ["10.0.0.0/8"], "domains": ["corp.internal"]});
    let obj = h.apply(instance("hub-one", spec));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(writes(&h), vec![]);
    let planning = status(&h, &obj);
    assert_eq!(planning.plan.len(), 2, "{planning:?}");
    let digest = planning.plan_digest.unwrap();

    let approved = approve(&h, &obj, &digest);
    h.reconcile(&approved).await.unwrap();
    assert_eq!(writes(&h), vec![Endpoint::CreateInstance]);
    let taken = status(&h, &obj).approved_plan.expect("recorded");
    assert_eq!(
        taken.remaining,
        planning.plan[1..].to_vec(),
        "the update is still approved"
    );
    assert_eq!(taken.spent_at, None);

    h.altostrat.provision_all();
    let approved = h.stored(&obj).unwrap();
    h.reconcile(&approved).await.unwrap();
    assert_eq!(
        writes(&h),
        vec![Endpoint::CreateInstance, Endpoint::UpdateInstance],
        "exactly the planned calls: {:#?}",
        status(&h, &obj)
    );
    let hub = &h.altostrat.instances()[0];
    assert_eq!(
        (hub.pushed_routes.clone(), hub.domains.clone()),
        (vec!["10.0.0.0/8".into()], vec!["corp.internal".into()])
    );
    let spent = status(&h, &obj).approved_plan.unwrap();
    assert!(spent.spent_at.is_some(), "{spent:?}");
    assert_eq!(synced(&h, &obj), Some(("True".into(), "ReconcileSuccess".into())));
}

#[tokio::test]
async fn a_change_in_altostrat_after_the_approval_is_plan_changed_and_nothing_is_sent() {
    let h = Harness::new();
    let (obj, digest) = planned_edit(&h, &["192.168.0.0/16"]).await;
    let id = h.altostrat.instances()[0].id.clone();
    let approved = approve(&h, &obj, &digest);
    h.altostrat
        .edit_instance(&id, |i| i.pushed_routes = vec!["10.1.0.0/16".into()]);
    // No expiry of what the operator saw before: an approval always looks anew.
    h.reconcile(&approved).await.unwrap();
    assert_eq!(writes(&h), vec![], "not the plan approved");
    assert_eq!(synced(&h, &obj), Some(("False".into(), "PlanChanged".into())));
    let changed = status(&h, &obj);
    let now = changed.plan_digest.clone().unwrap();
    assert_ne!(now, digest);
    assert_eq!(
        changed.plan[0].changes[0].old.as_deref(),
        Some(r#"["10.1.0.0/16"]"#)
    );

    let reapproved = approve(&h, &approved, &now);
    h.reconcile(&reapproved).await.unwrap();
    assert_eq!(
        writes(&h),
        vec![Endpoint::UpdateInstance],
        "the new plan, approved"
    );
    assert_eq!(h.altostrat.instances()[0].pushed_routes, vec!["192.168.0.0/16"]);
}

#[tokio::test]
async fn a_spec_edit_after_the_approval_is_plan_changed_and_nothing_is_sent() {
    let h = Harness::new();
    let (obj, digest) = planned_edit(&h, &["192.168.0.0/16"]).await;
    approve(&h, &obj, &digest);
    let edited = h.edit(&obj, |o| o.spec.pushed_routes = vec!["172.16.0.0/12".into()]);
    h.reconcile(&edited).await.unwrap();
    assert_eq!(writes(&h), vec![]);
    assert_eq!(synced(&h, &obj), Some(("False".into(), "PlanChanged".into())));
    assert_eq!(h.altostrat.instances()[0].pushed_routes, vec!["10.0.0.0/8"]);
}

#[tokio::test]
async fn an_approved_update_of_an_adopted_hub_takes_its_record_before_writing() {
    let h = Harness::new();
    let hub = h.altostrat.add_instance("hub-one", "2026-01-01T00:00:00Z");
    let spec = json!({"instanceId": hub.id, "managementPolicy": "Plan", "pushedRoutes": ["10.0.0.0/8"]});
    let obj = h.apply(instance("hub-one", spec));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(writes(&h), vec![]);
    assert!(h.kube.records().is_empty(), "planning takes no record");
    let digest = status(&h, &obj).plan_digest.unwrap();

    let approved = approve(&h, &obj, &digest);
    h.reconcile(&approved).await.unwrap();
    assert_eq!(writes(&h), vec![Endpoint::UpdateInstance]);
    let records = h.kube.records();
    assert_eq!(records.len(), 1, "the hub is held as under Full: {records:?}");
    assert_eq!(records[0].spec.role, crate::crd::RecordRole::Manage);
}
