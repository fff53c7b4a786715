//! Reconciles of `VpnPeer` against the in-process Kubernetes fake and the Altostrat simulator.
#![cfg(feature = "simulator")]

use serde_json::json;

use crate::altostrat::{ApiError, Endpoint};
use crate::controller::testing::{Harness, NS, condition, instance, peer};
use crate::crd::{VpnInstance, VpnPeer};

/// A harness with a Ready hub `hub` in [`NS`].
async fn with_hub() -> (Harness, VpnInstance) {
    let h = Harness::new();
    let hub = h.apply(instance("hub", json!({})));
    h.reconcile(&hub).await.unwrap();
    h.altostrat.clear_calls();
    (h, hub)
}

fn hub_id(h: &Harness, hub: &VpnInstance) -> String {
    h.stored(hub).unwrap().status.unwrap().instance_id.unwrap()
}

fn ready(h: &Harness, obj: &VpnPeer) -> Option<(String, String)> {
    condition(&h.stored(obj)?.status?.conditions, "Ready")
}

#[tokio::test]
async fn a_peer_waits_for_its_instance_without_claiming_or_calling() {
    let h = Harness::new();
    let obj = h.apply(peer("alice", "hub", json!({})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(ready(&h, &obj), Some(("False".into(), "InstanceNotFound".into())));
    let synced = condition(&h.stored(&obj).unwrap().status.unwrap().conditions, "Synced");
    assert_eq!(
        synced,
        Some(("False".into(), "InstanceNotFound".into())),
        "Altostrat holds nothing of it"
    );
    assert!(!h.holds_finalizer(&obj), "nothing to clean up yet");
    assert!(h.altostrat.calls().is_empty());
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.kube.notes("InstanceNotFound"),
        vec![r#"VpnInstance "hub" does not exist in this namespace"#.to_owned()],
        "one Warning when the wait begins, none on the next look"
    );
}

#[tokio::test]
async fn a_hub_of_the_same_name_in_another_namespace_is_not_used() {
    let h = Harness::new();
    let mut foreign = instance("hub", json!({}));
    foreign.metadata.namespace = Some("team-b".into());
    let foreign = h.apply(foreign);
    h.reconcile(&foreign).await.unwrap();
    h.altostrat.clear_calls();

    let obj = h.apply(peer("alice", "hub", json!({})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(ready(&h, &obj), Some(("False".into(), "InstanceNotFound".into())));
    assert!(h.altostrat.calls().is_empty());
    assert_eq!(h.stored(&obj).unwrap().metadata.namespace.as_deref(), Some(NS));
}

#[tokio::test]
async fn a_peer_is_claimed_created_and_recorded_once() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![Endpoint::CreatePeer]);
    assert!(h.holds_finalizer(&obj));
    let peers = h.altostrat.peers(&hub_id(&h, &hub));
    let status = h.stored(&obj).unwrap().status.unwrap();
    assert_eq!(status.peer_id, Some(peers[0].id.clone()));
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));
    let created = h.kube.notes("Created");
    let expected = format!("Created Altostrat peer {}", peers[0].id);
    assert!(
        created.iter().any(|note| note.starts_with(&expected)),
        "{created:?}"
    );

    h.altostrat.clear_calls();
    h.kube.clear_calls();
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![],
        "a converged resync within the drift interval makes no call"
    );
    let kube = h.kube.calls();
    assert!(
        kube.iter().all(|c| c.method == http::Method::GET) && kube.len() == 2,
        "two reads (the peer's and its hub's ownership records), no write: {kube:?}"
    );
}

#[tokio::test]
async fn a_lost_create_answer_is_found_and_adopted() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({})));
    h.altostrat.lose_answer(Endpoint::CreatePeer);
    assert!(h.reconcile(&obj).await.is_err());
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::CreatePeer, Endpoint::ListPeers],
        "looked up, not posted again"
    );
    let peers = h.altostrat.peers(&hub_id(&h, &hub));
    assert_eq!(peers.len(), 1);
    assert_eq!(
        h.stored(&obj).unwrap().status.unwrap().peer_id,
        Some(peers[0].id.clone())
    );
}

#[tokio::test]
async fn a_claim_left_by_a_failed_post_leads_to_one_create() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({})));
    let refused = ApiError::Server {
        endpoint: Endpoint::CreatePeer,
        status: 503,
        message: "Service Unavailable".into(),
    };
    h.altostrat.refuse(Endpoint::CreatePeer, refused);
    assert!(h.reconcile(&obj).await.is_err());
    assert!(h.holds_finalizer(&obj));
    assert_eq!(
        h.reconcile_calls(&obj).await,
        vec![Endpoint::ListPeers, Endpoint::CreatePeer],
        "the claim in the record is searched for before the create is sent again"
    );
    assert_eq!(h.altostrat.peers(&hub_id(&h, &hub)).len(), 1);
}

#[tokio::test]
async fn a_vanished_peer_whose_recreation_answer_is_lost_ends_as_one_peer() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({})));
    h.reconcile(&obj).await.unwrap();
    let id = hub_id(&h, &hub);
    let first = h.altostrat.peers(&id)[0].id.clone();
    h.altostrat.remove_peer(&id, &first);
    h.observations_expire();
    h.altostrat.lose_answer(Endpoint::CreatePeer);

    assert!(h.reconcile(&obj).await.is_err());
    assert_eq!(
        h.stored(&obj).unwrap().status.unwrap().peer_id,
        None,
        "the vanished id is forgotten"
    );
    h.reconcile(&obj).await.unwrap();
    let peers = h.altostrat.peers(&id);
    assert_eq!(peers.len(), 1);
    assert_eq!(
        h.altostrat.count(Endpoint::CreatePeer),
        2,
        "one create per attempt, never a blind repeat"
    );
    assert!(h.kube.events().contains(&("Warning".into(), "Recreating".into())));
}

#[tokio::test]
async fn a_peer_made_out_of_band_for_the_same_user_is_never_taken_over() {
    let (h, hub) = with_hub().await;
    let id = hub_id(&h, &hub);
    let portal_spec = peer("portal", "hub", json!({})).spec;
    let body = crate::controller::plan::peer_create(&portal_spec);
    let portal = h.altostrat.add_peer(&id, &body, "2026-01-01T00:00:00Z");
    let obj = h.apply(peer("alice", "hub", json!({"routeAll": true})));

    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::CreatePeer],
        "a fresh claim creates its own"
    );
    // Even after a lost answer, the search adopts only what was created after the claim.
    h.altostrat.lose_answer(Endpoint::DeletePeer);
    h.delete(&obj);
    assert!(h.reconcile(&obj).await.is_err());
    h.reconcile(&obj).await.unwrap();
    let left = h.altostrat.peers(&id);
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].id, portal.id,
        "the portal's peer is neither changed nor deleted"
    );
    assert!(!left[0].route_all);
}

#[tokio::test]
async fn after_a_lost_answer_only_the_peer_created_after_the_claim_is_adopted() {
    let (h, hub) = with_hub().await;
    let id = hub_id(&h, &hub);
    let obj = h.apply(peer("alice", "hub", json!({})));
    let portal = h.altostrat.add_peer(
        &id,
        &crate::controller::plan::peer_create(&obj.spec),
        "2026-01-01T00:00:00Z",
    );
    h.altostrat.lose_answer(Endpoint::CreatePeer);
    assert!(h.reconcile(&obj).await.is_err());
    h.reconcile(&obj).await.unwrap();
    let recorded = h.stored(&obj).unwrap().status.unwrap().peer_id.unwrap();
    assert_ne!(recorded, portal.id);
    assert_eq!(
        h.altostrat.peers(&id).len(),
        2,
        "ours adopted, the portal's left alone, no third"
    );
}

#[tokio::test]
async fn drift_is_corrected_with_one_update() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({"routeAll": true})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![Endpoint::CreatePeer]);
    assert!(h.altostrat.peers(&hub_id(&h, &hub))[0].route_all);

    let edited = h.edit(&obj, |o| o.spec.route_all = Some(false));
    assert_eq!(
        h.reconcile_calls(&edited).await,
        vec![Endpoint::UpdatePeer],
        "the create's answer is a fresh enough observation"
    );
    let updated = h.kube.notes("Updated");
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert!(
        updated[0].starts_with("Applied changes to routeAll"),
        "names the field: {updated:?}"
    );
    assert_eq!(
        h.stored(&obj).unwrap().status.unwrap().observed_generation,
        Some(2)
    );
}

#[tokio::test]
async fn deleting_a_peer_deletes_it_in_altostrat_and_releases_the_finalizer() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({})));
    h.reconcile(&obj).await.unwrap();
    let id = h.stored(&obj).unwrap().status.unwrap().peer_id.unwrap();
    h.delete(&obj);
    assert_eq!(h.reconcile_calls(&obj).await, vec![Endpoint::DeletePeer]);
    assert!(h.altostrat.peers(&hub_id(&h, &hub)).is_empty());
    assert!(!h.holds_finalizer(&obj));
    assert_eq!(
        h.kube.notes("Deleted"),
        vec![format!("Deleted Altostrat peer {id}")]
    );
}

#[tokio::test]
async fn an_orphaned_peer_is_left_in_altostrat() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({"deletionPolicy": "Orphan"})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(peer_records(&h), vec!["alice"], "held while the resource exists");
    h.delete(&obj);
    assert!(h.reconcile_calls(&obj).await.is_empty());
    assert_eq!(h.altostrat.peers(&hub_id(&h, &hub)).len(), 1);
    assert!(!h.holds_finalizer(&obj));
    assert!(
        peer_records(&h).is_empty(),
        "freed: another resource may adopt the peer"
    );
    assert_eq!(h.kube.records().len(), 1, "the hub's record stays");
    assert_eq!(
        h.kube.notes("Orphaned"),
        vec!["The Altostrat peer is left in place: deletionPolicy is Orphan".to_owned()]
    );
}

/// The names of the resources holding a peer's ownership record.
fn peer_records(h: &Harness) -> Vec<String> {
    h.kube
        .records()
        .into_iter()
        .filter(|r| r.spec.holder.kind == "VpnPeer")
        .map(|r| r.spec.holder.name)
        .collect()
}

#[tokio::test]
async fn deleting_after_a_lost_create_answer_finds_and_deletes_the_peer() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({})));
    h.altostrat.lose_answer(Endpoint::CreatePeer);
    assert!(h.reconcile(&obj).await.is_err());
    h.delete(&obj);
    assert_eq!(
        h.reconcile_calls(&obj).await,
        vec![Endpoint::ListPeers, Endpoint::DeletePeer]
    );
    assert!(h.altostrat.peers(&hub_id(&h, &hub)).is_empty());
}

#[tokio::test]
async fn a_peer_adopted_explicitly_is_managed_and_a_mismatching_one_left_alone() {
    let (h, hub) = with_hub().await;
    let id = hub_id(&h, &hub);
    let body = crate::controller::plan::peer_create(&peer("x", "hub", json!({})).spec);
    let existing = h.altostrat.add_peer(&id, &body, "2026-01-01T00:00:00Z");

    let obj = h.apply(peer("alice", "hub", json!({"peerId": existing.id})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::ListPeers],
        "observed, never created"
    );
    assert_eq!(
        h.stored(&obj).unwrap().status.unwrap().peer_id,
        Some(existing.id.clone())
    );
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));

    let second = h.apply(peer("alice-2", "hub", json!({"peerId": existing.id})));
    assert!(h.reconcile(&second).await.is_err());
    assert_eq!(
        ready(&h, &second),
        Some(("False".into(), "NotOwned".into())),
        "held by alice"
    );

    let another = h.altostrat.add_peer(&id, &body, "2026-01-01T00:00:00Z");
    let other_user = json!({"peerId": another.id, "userId": "0b1b2c3d-e5f6-7890-1234-567890abcdef"});
    let wrong = h.apply(peer("mallory", "hub", other_user));
    assert!(h.reconcile(&wrong).await.is_err());
    assert_eq!(ready(&h, &wrong), Some(("False".into(), "InvalidSpec".into())));
    h.delete(&wrong);
    h.altostrat.clear_calls();
    h.reconcile(&wrong).await.unwrap();
    assert!(
        h.altostrat.calls().is_empty(),
        "a refused adoption deletes nothing"
    );
    assert_eq!(h.altostrat.peers(&id).len(), 2);
}

#[tokio::test]
async fn a_peer_gone_since_it_was_observed_is_created_again_when_its_update_finds_it_missing() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({})));
    h.reconcile(&obj).await.unwrap();
    let id = hub_id(&h, &hub);
    let first = h.altostrat.peers(&id)[0].id.clone();
    h.altostrat.remove_peer(&id, &first);
    let edited = h.edit(&obj, |o| o.spec.route_all = Some(true));
    assert_eq!(
        h.reconcile_calls(&edited).await,
        vec![Endpoint::UpdatePeer, Endpoint::CreatePeer],
        "the 404 of the update says it is gone: forgotten, claimed anew and created once"
    );
    let peers = h.altostrat.peers(&id);
    assert_eq!(peers.len(), 1);
    assert_ne!(peers[0].id, first);
}

#[tokio::test]
async fn a_cleanup_on_a_copy_older_than_the_first_release_sends_no_second_delete() {
    let (h, _hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({})));
    h.reconcile(&obj).await.unwrap();
    h.delete(&obj);
    let older = h.stored(&obj).unwrap();
    assert_eq!(h.reconcile_calls(&obj).await, vec![Endpoint::DeletePeer]);
    // The watch delivers the copy from before the release once more.
    h.apply(older.clone());
    h.reconcile(&older).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::DeletePeer],
        "no second DELETE"
    );
}

#[tokio::test]
async fn a_peer_whose_user_was_deleted_in_altostrat_waits_for_a_person_instead_of_recreating() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({})));
    h.reconcile(&obj).await.unwrap();
    let id = hub_id(&h, &hub);
    // Deleting a user in Altostrat removes their peers, and refuses new ones for them.
    let user = obj.spec.user_id.clone().expect("a client peer");
    h.altostrat.delete_user(&user);
    assert!(h.altostrat.peers(&id).is_empty());
    h.observations_expire();
    h.altostrat.clear_calls();

    let error = h.reconcile(&obj).await.unwrap_err();
    assert_eq!(error.reason(), "UserNotFound");
    assert!(
        error.stalls(),
        "only a person can go on: another userId, or the user restored"
    );
    let resync = h.ctx.settings.resync_interval;
    assert_eq!(
        crate::controller::error::requeue_after_error(&error, 5, resync),
        resync.max(std::time::Duration::from_secs(60)),
        "no backoff loop: the next try waits for the slow resync or an edit"
    );
    assert_eq!(
        h.altostrat.count(Endpoint::CreatePeer),
        1,
        "one create per attempt"
    );
    let conditions = h.stored(&obj).unwrap().status.unwrap().conditions;
    assert_eq!(
        condition(&conditions, "Ready"),
        Some(("False".into(), "UserNotFound".into()))
    );
}

#[tokio::test]
async fn a_404_to_a_peer_delete_releases_once_a_look_confirms_the_peer_gone() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({})));
    h.reconcile(&obj).await.unwrap();
    let id = hub_id(&h, &hub);
    let first = h.altostrat.peers(&id)[0].id.clone();
    h.altostrat.remove_peer(&id, &first);
    h.delete(&obj);
    assert_eq!(
        h.reconcile_calls(&obj).await,
        vec![Endpoint::DeletePeer, Endpoint::GetPeer]
    );
    assert!(!h.holds_finalizer(&obj));
}

const PAUSED: &str = crate::crd::PAUSED_ANNOTATION;

fn planned(h: &Harness, obj: &VpnPeer) -> Vec<(String, String)> {
    let status = h.stored(obj).unwrap().status.unwrap();
    status
        .plan
        .iter()
        .map(|c| (c.method.clone(), c.path.clone()))
        .collect()
}

#[tokio::test]
async fn a_paused_peer_withholds_its_create_and_its_updates() {
    let (h, hub) = with_hub().await;
    let instance_id = hub_id(&h, &hub);
    let mut obj = peer("alice", "hub", json!({}));
    obj.metadata.annotations = Some([(PAUSED.to_owned(), "true".to_owned())].into());
    let obj = h.apply(obj);
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![]);
    assert_eq!(ready(&h, &obj), Some(("False".into(), "ReconcilePaused".into())));
    let peers_path = format!("/vpn/instances/{instance_id}/peers");
    assert_eq!(planned(&h, &obj), vec![("POST".into(), peers_path.clone())]);

    h.annotate(&obj, PAUSED, None);
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![Endpoint::CreatePeer]);
    let peer_id = h.stored(&obj).unwrap().status.unwrap().peer_id.unwrap();

    h.annotate(&obj, PAUSED, Some("true"));
    let edited = h.edit(&obj, |o| o.spec.route_all = Some(true));
    assert_eq!(
        h.reconcile_calls(&edited).await,
        vec![],
        "the create's answer is fresh enough"
    );
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));
    let conditions = h.stored(&obj).unwrap().status.unwrap().conditions;
    assert_eq!(
        condition(&conditions, "Synced"),
        Some(("False".into(), "Drifted".into()))
    );
    assert_eq!(
        planned(&h, &obj),
        vec![("PUT".into(), format!("{peers_path}/{peer_id}"))]
    );
    assert!(!h.altostrat.peers(&instance_id)[0].route_all);
}

#[tokio::test]
async fn deleting_a_paused_peer_follows_its_deletion_policy() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({})));
    h.reconcile(&obj).await.unwrap();
    h.annotate(&obj, PAUSED, Some("true"));
    h.reconcile(&obj).await.unwrap();
    h.delete(&obj);
    assert_eq!(h.reconcile_calls(&obj).await, vec![Endpoint::DeletePeer]);
    assert!(h.altostrat.peers(&hub_id(&h, &hub)).is_empty());
    assert!(!h.holds_finalizer(&obj));
}

#[tokio::test]
async fn a_reconcile_request_looks_at_the_peer_at_once_and_is_acknowledged() {
    let (h, _hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({})));
    h.reconcile(&obj).await.unwrap();
    h.altostrat.clear_calls();
    let at = "2026-11-27T10:00:00Z";
    h.annotate(&obj, crate::crd::RECONCILE_REQUEST_ANNOTATION, Some(at));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![Endpoint::ListPeers]);
    let status = h.stored(&obj).unwrap().status.unwrap();
    assert_eq!(status.last_handled_reconcile_at.as_deref(), Some(at));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![Endpoint::ListPeers], "handled once");
}

#[tokio::test]
async fn a_peer_attaches_to_a_hub_that_is_only_observed() {
    let h = Harness::new();
    let portal = h.altostrat.add_instance("hub", "2026-01-01T00:00:00Z");
    let hub = h.apply(instance(
        "hub",
        json!({"name": "Made elsewhere", "managementPolicy": "ObserveOnly"}),
    ));
    h.reconcile(&hub).await.unwrap();
    let obj = h.apply(peer("alice", "hub", json!({})));
    assert_eq!(h.reconcile_calls(&obj).await, vec![Endpoint::CreatePeer]);
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));
    assert_eq!(h.altostrat.peers(&portal.id).len(), 1);

    h.delete(&hub);
    h.reconcile(&hub).await.unwrap();
    assert!(
        !h.holds_finalizer(&hub),
        "an observer does not wait for peers: it deletes nothing"
    );
    assert_eq!(h.altostrat.instances().len(), 1);
}

#[tokio::test]
async fn an_observed_peer_shows_its_drift_and_is_never_written_or_deleted() {
    let (h, hub) = with_hub().await;
    let id = hub_id(&h, &hub);
    let body = crate::controller::plan::peer_create(&peer("x", "hub", json!({})).spec);
    let portal = h.altostrat.add_peer(&id, &body, "2026-01-01T00:00:00Z");
    let spec = json!({"peerId": portal.id, "managementPolicy": "ObserveOnly", "routeAll": true});
    let obj = h.apply(peer("alice", "hub", spec));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![Endpoint::ListPeers]);
    let status = h.stored(&obj).unwrap().status.unwrap();
    assert_eq!(status.peer_id, Some(portal.id.clone()));
    assert_eq!(
        condition(&status.conditions, "Synced"),
        Some(("False".into(), "Drifted".into()))
    );
    assert!(status.plan.is_empty());
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));

    h.delete(&obj);
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![Endpoint::ListPeers], "no DELETE");
    assert!(!h.holds_finalizer(&obj));
    assert!(!h.altostrat.peers(&id)[0].route_all, "never updated");
}

#[tokio::test]
async fn an_observer_without_a_peer_id_has_nothing_to_find() {
    let (h, _hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({"managementPolicy": "ObserveOnly"})));
    let error = h.reconcile(&obj).await.unwrap_err();
    assert_eq!(error.reason(), "InvalidSpec");
    assert!(h.altostrat.calls().is_empty());
}

#[tokio::test]
async fn a_planned_peer_is_created_by_the_switch_to_full_and_nothing_before() {
    let (h, hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({"managementPolicy": "Plan"})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![]);
    assert!(!h.holds_finalizer(&obj), "no claim");
    let path = format!("/vpn/instances/{}/peers", hub_id(&h, &hub));
    assert_eq!(planned(&h, &obj), vec![("POST".into(), path)]);
    assert_eq!(ready(&h, &obj), Some(("False".into(), "Planned".into())));

    let full = h.edit(&obj, |o| {
        o.spec.management_policy = crate::crd::ManagementPolicy::Full
    });
    h.reconcile(&full).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![Endpoint::CreatePeer]);
    assert!(planned(&h, &obj).is_empty());
}

#[tokio::test]
async fn an_approved_peer_create_is_sent_once_and_a_changed_one_not_at_all() {
    let (h, _hub) = with_hub().await;
    let obj = h.apply(peer("alice", "hub", json!({"managementPolicy": "Plan"})));
    h.reconcile(&obj).await.unwrap();
    let digest = h.stored(&obj).unwrap().status.unwrap().plan_digest.unwrap();
    let key = crate::crd::APPROVE_PLAN_ANNOTATION;
    let approved = h.annotate(&obj, key, Some(&digest));
    let edited = h.edit(&approved, |o| o.spec.route_all = Some(true));
    h.reconcile(&edited).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![], "not the plan approved");
    let synced = |h: &Harness| condition(&h.stored(&obj).unwrap().status.unwrap().conditions, "Synced");
    assert_eq!(synced(&h), Some(("False".into(), "PlanChanged".into())));

    let digest = h.stored(&obj).unwrap().status.unwrap().plan_digest.unwrap();
    let reapproved = h.annotate(&obj, key, Some(&digest));
    h.reconcile(&reapproved).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![Endpoint::CreatePeer]);
    let status = h.stored(&obj).unwrap().status.unwrap();
    assert!(status.approved_plan.unwrap().spent_at.is_some());
    assert_eq!(synced(&h), Some(("True".into(), "ReconcileSuccess".into())));
}

/// A harness with a Ready hub `hub` in namespace `network` granting `grant`, and the
/// namespaces `apps` (labelled `team=apps`) and `data` (labelled `team=data`).
async fn with_shared_hub(grant: serde_json::Value) -> (Harness, VpnInstance) {
    let h = Harness::new();
    h.kube.namespace("apps", &[("team", "apps")]);
    h.kube.namespace("data", &[("team", "data")]);
    let mut hub = instance("hub", json!({"allowedPeers": {"namespaces": grant}}));
    hub.metadata.namespace = Some("network".into());
    let hub = h.apply(hub);
    h.reconcile(&hub).await.unwrap();
    h.altostrat.clear_calls();
    (h, hub)
}

/// A peer of namespace `namespace` naming the hub of `network`.
fn foreign_peer(name: &str, namespace: &str) -> VpnPeer {
    let mut obj = peer(
        name,
        "hub",
        json!({"instanceRef": {"name": "hub", "namespace": "network"}}),
    );
    obj.metadata.namespace = Some(namespace.into());
    obj
}

fn team_apps() -> serde_json::Value {
    json!({"from": "Selector", "selector": {"matchLabels": {"team": "apps"}}})
}

#[tokio::test]
async fn a_peer_of_a_granted_namespace_is_created_on_the_shared_hub() {
    let (h, hub) = with_shared_hub(team_apps()).await;
    let obj = h.apply(foreign_peer("alice", "apps"));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));
    assert_eq!(h.altostrat.calls(), vec![Endpoint::CreatePeer]);
    let status = h.stored(&obj).unwrap().status.unwrap();
    assert_eq!(status.instance_id, Some(hub_id(&h, &hub)));
    assert_eq!(
        h.stored(&obj).unwrap().metadata.namespace.as_deref(),
        Some("apps")
    );

    h.reconcile(&hub).await.unwrap();
    let counted = h.stored(&hub).unwrap().status.unwrap().attached_peers;
    assert_eq!(counted.len(), 1);
    assert_eq!((counted[0].namespace.as_str(), counted[0].peers), ("apps", 1));
}

#[tokio::test]
async fn a_peer_its_hub_does_not_grant_is_refused_without_a_call() {
    for grant in [json!({"from": "Same"}), team_apps()] {
        let (h, _) = with_shared_hub(grant.clone()).await;
        let obj = h.apply(foreign_peer("bob", "data"));
        h.reconcile(&obj).await.unwrap();
        h.reconcile(&obj).await.unwrap();
        let stored = h.stored(&obj).unwrap().status.unwrap();
        assert_eq!(
            condition(&stored.conditions, "Ready"),
            Some(("False".into(), "NotPermitted".into())),
            "{grant}"
        );
        assert_eq!(
            condition(&stored.conditions, "Stalled"),
            Some(("True".into(), "NotPermitted".into())),
            "only a person can grant it"
        );
        assert!(h.altostrat.calls().is_empty(), "{grant}");
        assert!(!h.holds_finalizer(&obj), "nothing to clean up");
        let warned = h.kube.notes("NotPermitted");
        assert_eq!(warned.len(), 1, "one Warning when the refusal begins: {warned:?}");
        assert!(warned[0].contains("VpnInstance network/hub"), "{warned:?}");
    }
}

#[tokio::test]
async fn a_revoked_grant_keeps_the_peer_unwritten_until_its_resource_is_deleted() {
    let (h, hub) = with_shared_hub(team_apps()).await;
    let obj = h.apply(foreign_peer("alice", "apps"));
    h.reconcile(&obj).await.unwrap();
    let id = h.stored(&obj).unwrap().status.unwrap().peer_id.unwrap();
    h.altostrat.clear_calls();

    h.kube.namespace("apps", &[]);
    h.observations_expire();
    h.reconcile(&obj).await.unwrap();
    assert_eq!(ready(&h, &obj), Some(("False".into(), "NotPermitted".into())));
    assert!(h.altostrat.calls().is_empty(), "not written, not deleted");
    assert_eq!(h.altostrat.peers(&hub_id(&h, &hub)).len(), 1, "kept");
    assert_eq!(h.stored(&obj).unwrap().status.unwrap().peer_id, Some(id));
    assert!(h.holds_finalizer(&obj));

    // Its own record still proves the Altostrat peer its own: deleting the resource deletes it.
    h.delete(&obj);
    h.reconcile(&obj).await.unwrap();
    assert!(h.altostrat.calls().contains(&Endpoint::DeletePeer));
    assert!(h.altostrat.peers(&hub_id(&h, &hub)).is_empty());
}

#[tokio::test]
async fn a_hub_waits_for_the_peers_of_every_namespace_and_names_only_its_own() {
    let (h, hub) = with_shared_hub(json!({"from": "All"})).await;
    let own = h.apply({
        let mut p = peer("carol", "hub", json!({}));
        p.metadata.namespace = Some("network".into());
        p
    });
    let foreign = h.apply(foreign_peer("alice", "apps"));
    for p in [&own, &foreign] {
        h.reconcile(p).await.unwrap();
    }
    h.delete(&hub);
    h.reconcile(&hub).await.unwrap();
    let conditions = h.stored(&hub).unwrap().status.unwrap().conditions;
    let message = crate::controller::testing::condition_message(&conditions, "Ready").unwrap();
    assert!(message.ends_with("carol; 1 in namespace apps"), "{message}");
    assert!(!h.altostrat.calls().contains(&Endpoint::DeleteInstance));
}

#[tokio::test]
async fn a_hub_outside_the_watched_namespaces_serves_no_peer() {
    let (mut h, _) = with_shared_hub(json!({"from": "All"})).await;
    std::sync::Arc::get_mut(&mut h.ctx)
        .expect("no reconcile holds the context")
        .settings
        .watch_namespaces = vec!["apps".into()];
    let obj = h.apply(foreign_peer("alice", "apps"));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(ready(&h, &obj), Some(("False".into(), "NotPermitted".into())));
    let message = crate::controller::testing::condition_message(
        &h.stored(&obj).unwrap().status.unwrap().conditions,
        "Ready",
    )
    .unwrap();
    assert!(
        message.contains("does not watch (WATCH_NAMESPACES: apps)"),
        "{message}"
    );
    assert!(h.altostrat.calls().is_empty());
}

#[tokio::test]
async fn a_peer_of_another_namespace_uses_its_hubs_credentials_judged_in_the_hubs_namespace() {
    let (mut h, hub) = with_shared_hub(json!({"from": "All"})).await;
    let token = crate::altostrat::ApiToken::new(crate::controller::testing::TOKEN);
    let limited = crate::controller::DefaultToken::fixed(token).limited_to(vec!["network".into()]);
    std::sync::Arc::get_mut(&mut h.ctx)
        .expect("no reconcile holds the context")
        .default_token = std::sync::Arc::new(limited);
    let obj = h.apply(foreign_peer("alice", "apps"));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        ready(&h, &obj),
        Some(("True".into(), "Available".into())),
        "the operator's token is allowed in network, the hub's namespace, not in apps"
    );
    assert_eq!(h.altostrat.peers(&hub_id(&h, &hub)).len(), 1);
}
