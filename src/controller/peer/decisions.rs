//! The lifecycle's decisions for a peer.

use super::super::conditions::{ConditionState, reason};
use super::super::finalizer::{FinalizerState, STALE_RETRY};
use super::super::lifecycle::decide::{Candidate, Observed, Remote, Step, decide};
use super::super::ownership::Claim;
use super::super::policy::Gate;
use super::super::record::Holding;
use super::status::*;
use crate::altostrat::model::Peer;
use crate::crd::{RecordRole, VpnInstance, VpnInstanceSpec, VpnInstanceStatus, VpnPeer, VpnPeerSpec};

fn spec(extra: serde_json::Value) -> VpnPeerSpec {
    let mut base = serde_json::json!({
        "instanceRef": {"name": "hub"}, "type": "client", "protocol": "wireguard",
        "userId": "a1b2c3d4-e5f6-7890-1234-567890abcdef"
    });
    base.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    serde_json::from_value(base).unwrap()
}

fn altostrat_peer(id: &str) -> Peer {
    Peer {
        id: id.into(),
        user_id: Some("a1b2c3d4-e5f6-7890-1234-567890abcdef".into()),
        ..Peer::default()
    }
}

fn observed<'a>(
    spec: &'a VpnPeerSpec,
    finalizer: FinalizerState,
    recorded: Option<&str>,
    remote: Remote<Peer>,
) -> Observed<'a, VpnPeer> {
    // The claim follows the finalizer, as a claim takes both: held since an earlier
    // reconcile, made by this one, or none.
    let at = "2026-11-27T10:00:00Z".parse().unwrap();
    let claim = match (finalizer, recorded) {
        (_, Some(_)) => Claim::None,
        (FinalizerState::Added, None) => Claim::Fresh(at),
        (FinalizerState::Held, None) => Claim::Held(at),
        _ => Claim::None,
    };
    Observed {
        spec,
        gate: Gate::default(),
        parent: Ok("i-1".into()),
        finalizer,
        claim,
        held_elsewhere: None,
        observed_id: None,
        recorded_id: recorded.map(str::to_owned),
        holds_record: recorded.is_some() || claim != Claim::None,
        status_id: recorded.map(str::to_owned),
        remote,
        updated: false,
        approval: Default::default(),
    }
}

fn instance(status: Option<VpnInstanceStatus>) -> VpnInstance {
    let spec: VpnInstanceSpec =
        serde_json::from_value(serde_json::json!({"name": "hub", "hostname": "hub-one", "region": "sjc"}))
            .unwrap();
    let mut i = VpnInstance::new("hub", spec);
    i.status = status;
    i
}

#[test]
fn a_peer_waits_for_a_missing_or_unprovisioned_instance_before_anything_else() {
    let s = spec(serde_json::json!({}));
    let mut o = observed(&s, FinalizerState::Missing, None, Remote::Unknown);
    o.parent = usable_instance_id(None, "hub");
    assert!(matches!(decide(&o), Step::Wait(w) if w.reason == "InstanceNotFound"));
    let provisioning = instance(Some(VpnInstanceStatus {
        instance_id: Some("i-1".into()),
        ..Default::default()
    }));
    o.parent = usable_instance_id(Some(&provisioning), "hub");
    assert!(matches!(decide(&o), Step::Wait(w) if w.reason == "WaitingForInstance"));
    let mut deleting = instance(Some(VpnInstanceStatus {
        instance_id: Some("i-1".into()),
        server_ready: true,
        ..Default::default()
    }));
    assert_eq!(usable_instance_id(Some(&deleting), "hub"), Ok("i-1".into()));
    deleting.metadata.deletion_timestamp = Some(super::super::conditions::now());
    assert_eq!(
        usable_instance_id(Some(&deleting), "hub").unwrap_err().reason,
        "WaitingForInstance"
    );
}

#[test]
fn a_create_is_claimed_with_the_finalizer_first() {
    let s = spec(serde_json::json!({}));
    let o = observed(&s, FinalizerState::Missing, None, Remote::Unknown);
    assert!(matches!(decide(&o), Step::Claim));
}

#[test]
fn a_claim_made_now_is_followed_by_the_create() {
    let s = spec(serde_json::json!({}));
    let o = observed(&s, FinalizerState::Added, None, Remote::Unknown);
    assert!(matches!(decide(&o), Step::Create));
}

#[test]
fn a_claim_found_without_a_recorded_id_is_searched_before_any_create() {
    // The process died, or the answer was lost, between the claim and recording the id.
    let s = spec(serde_json::json!({}));
    let o = observed(&s, FinalizerState::Held, None, Remote::Unknown);
    assert!(matches!(decide(&o), Step::Search));
}

fn candidate(id: &str, created_at: &str, recorded_by: Option<&str>) -> Candidate<Peer> {
    Candidate {
        object: Peer {
            created_at: Some(created_at.into()),
            ..altostrat_peer(id)
        },
        recorded_by: recorded_by.map(str::to_owned),
    }
}

#[test]
fn what_a_search_finds_after_a_lost_answer_is_adopted() {
    let s = spec(serde_json::json!({}));
    let mine = vec![candidate("p-1", "2026-11-27T10:00:00Z", None)];
    let o = observed(&s, FinalizerState::Held, None, Remote::Searched(mine));
    assert!(matches!(decide(&o), Step::Adopt(p) if p.id == "p-1"));
}

#[test]
fn only_a_peer_created_after_our_claim_is_adopted() {
    let s = spec(serde_json::json!({}));
    let candidates = vec![
        candidate("p-portal", "2026-11-01T08:00:00Z", None),
        candidate("p-mine", "2026-11-27T10:00:01Z", None),
    ];
    let found = observed(&s, FinalizerState::Held, None, Remote::Searched(candidates));
    assert!(matches!(decide(&found), Step::Adopt(p) if p.id == "p-mine"));
}

#[test]
fn a_peer_made_elsewhere_is_never_taken_over_a_fresh_claim_and_create_follow() {
    let s = spec(serde_json::json!({}));
    let others = vec![
        candidate("p-portal", "2026-11-01T08:00:00Z", None),
        candidate("p-other", "2026-11-27T10:00:05Z", Some("team-a/bob")),
    ];
    let held = observed(&s, FinalizerState::Held, None, Remote::Searched(others.clone()));
    assert!(
        matches!(decide(&held), Step::Claim),
        "an old claim is refreshed before the create"
    );
    let fresh = observed(&s, FinalizerState::Added, None, Remote::Searched(others));
    assert!(matches!(decide(&fresh), Step::Create));
    let nothing = observed(&s, FinalizerState::Added, None, Remote::Searched(vec![]));
    assert!(matches!(decide(&nothing), Step::Create));
}

#[test]
fn a_peer_that_may_be_our_lost_create_but_cannot_be_proven_stops_the_create() {
    let s = spec(serde_json::json!({}));
    let unsure = vec![candidate("p-1", "2026-11-27T09:59:30Z", None)];
    let o = observed(&s, FinalizerState::Held, None, Remote::Searched(unsure));
    let Step::GiveUp(error) = decide(&o) else {
        panic!("expected GiveUp")
    };
    assert_eq!(error.reason(), "NotOwned");
    assert!(error.to_string().contains("p-1"), "{error}");
}

#[test]
fn a_recorded_peer_is_fetched_and_a_removed_finalizer_restored_first() {
    let s = spec(serde_json::json!({}));
    let o = observed(&s, FinalizerState::Held, Some("p-1"), Remote::Unknown);
    assert!(matches!(decide(&o), Step::Fetch(id) if id == "p-1"));
    let unfinalized = observed(&s, FinalizerState::Missing, Some("p-1"), Remote::Unknown);
    assert!(
        matches!(decide(&unfinalized), Step::AddFinalizer),
        "restoring the finalizer of a recorded peer is not a create claim"
    );
}

#[test]
fn a_peer_attaches_only_to_a_hub_its_instance_resource_holds_the_record_of() {
    use crate::crd::{Holder, OwnershipRecord, OwnershipRecordSpec, RecordOrigin};
    let record = |uid: &str, id: Option<&str>| {
        let spec = OwnershipRecordSpec {
            holder: Holder {
                kind: "VpnInstance".into(),
                namespace: "team-a".into(),
                name: "hub".into(),
                uid: uid.into(),
            },
            role: RecordRole::Observe,
            origin: RecordOrigin::Adopted,
            installation: "ops/a".into(),
            taken_at: "2026-11-27T10:00:00Z".into(),
            claimed_at: None,
            hostname: Some("hub-one".into()),
            instance_id: id.map(str::to_owned),
            peer_id: None,
        };
        Some(OwnershipRecord::new("instance.hub-one", spec))
    };
    let me = record("uid-hub", None).unwrap().spec.holder;
    let held = Holding::of(record("uid-hub", Some("i-1")), &me, "ops/a");
    assert_eq!(
        attached(Ok("i-1".into()), &held, "hub"),
        Ok("i-1".into()),
        "an observed hub works too"
    );
    // A status patched to another hub's id, a record of another resource, or none at all.
    let other_id = attached(Ok("i-2".into()), &held, "hub").unwrap_err();
    assert_eq!(other_id.reason, reason::WAITING_FOR_INSTANCE);
    assert!(
        other_id.message.contains("ownership record"),
        "{}",
        other_id.message
    );
    let theirs = Holding::of(record("uid-other", Some("i-1")), &me, "ops/a");
    assert!(attached(Ok("i-1".into()), &theirs, "hub").is_err());
    assert!(attached(Ok("i-1".into()), &Holding::Free, "hub").is_err());
}

#[test]
fn an_id_in_status_without_a_record_is_never_acted_on() {
    let s = spec(serde_json::json!({}));
    let mut o = observed(&s, FinalizerState::Held, None, Remote::Unknown);
    (o.claim, o.holds_record, o.status_id) = (Claim::None, false, Some("p-9".into()));
    assert!(
        matches!(decide(&o), Step::GiveUp(e) if e.reason() == "NotOwned" && e.to_string().contains("spec.peerId"))
    );
}

#[test]
fn a_found_peer_is_taken_into_the_record_before_any_write() {
    let s = spec(serde_json::json!({"peerId": "p-7", "routeAll": true}));
    let o = observed(
        &s,
        FinalizerState::Held,
        None,
        Remote::Found(altostrat_peer("p-7")),
    );
    assert!(matches!(decide(&o), Step::Own { id, role: RecordRole::Manage } if id == "p-7"));
}

#[test]
fn a_vanished_peer_is_forgotten_then_claimed_anew_before_its_create() {
    // Forgetting drops the id and the old claim from the record: the new create is claimed
    // afresh, so a lost answer to it is looked for by the next attempt, not repeated.
    let s = spec(serde_json::json!({}));
    let mut o = observed(&s, FinalizerState::Held, Some("p-1"), Remote::Gone("p-1".into()));
    assert!(matches!(decide(&o), Step::Forget(id) if id == "p-1"));
    (o.recorded_id, o.status_id) = (None, None);
    o.remote = Remote::Unknown;
    assert!(matches!(decide(&o), Step::Claim));
    o.claim = Claim::Held("2026-11-27T10:00:00Z".parse().unwrap());
    assert!(
        matches!(decide(&o), Step::Search),
        "a claim left by a crash is searched first"
    );
}

#[test]
fn drift_is_one_update_and_its_answer_is_final() {
    let s = spec(serde_json::json!({"routeAll": true}));
    let mut o = observed(
        &s,
        FinalizerState::Held,
        Some("p-1"),
        Remote::Found(altostrat_peer("p-1")),
    );
    assert!(matches!(
        decide(&o),
        Step::Update { ref fields, .. } if fields == &["routeAll"]
    ));
    o.updated = true;
    assert!(matches!(decide(&o), Step::Record(_)));
}

#[test]
fn an_explicitly_adopted_peer_is_fetched_and_checked_never_searched_or_created() {
    let s = spec(serde_json::json!({"peerId": "p-7"}));
    let o = observed(&s, FinalizerState::Missing, None, Remote::Unknown);
    assert!(
        matches!(decide(&o), Step::AddFinalizer),
        "no create claim for an adoption"
    );
    let o = observed(&s, FinalizerState::Held, None, Remote::Unknown);
    assert!(matches!(decide(&o), Step::Fetch(id) if id == "p-7"));
    let mine = observed(
        &s,
        FinalizerState::Held,
        Some("p-7"),
        Remote::Found(altostrat_peer("p-7")),
    );
    assert!(matches!(decide(&mine), Step::Record(_)));
    let other_user = Peer {
        user_id: Some("someone-else".into()),
        ..altostrat_peer("p-7")
    };
    let theirs = observed(&s, FinalizerState::Held, None, Remote::Found(other_user));
    assert!(matches!(decide(&theirs), Step::GiveUp(e) if e.reason() == "InvalidSpec"));
    let gone = observed(&s, FinalizerState::Held, None, Remote::Gone("p-7".into()));
    assert!(matches!(decide(&gone), Step::GiveUp(e) if e.to_string().contains("does not exist")));
}

#[test]
fn an_adoption_of_another_namespaces_peer_or_a_second_peer_is_refused() {
    let s = spec(serde_json::json!({"peerId": "p-7"}));
    let mut o = observed(&s, FinalizerState::Held, None, Remote::Unknown);
    o.held_elsewhere = Some("team-b/bob".into());
    assert!(matches!(decide(&o), Step::GiveUp(e) if e.reason() == "NotOwned"));
    let managing_another = observed(&s, FinalizerState::Held, Some("p-1"), Remote::Unknown);
    assert!(matches!(decide(&managing_another), Step::GiveUp(e) if e.reason() == "InvalidSpec"));
}

#[test]
fn a_stale_copy_waits_for_the_watch() {
    let s = spec(serde_json::json!({}));
    let o = observed(&s, FinalizerState::Stale, None, Remote::Unknown);
    assert!(matches!(decide(&o), Step::Requeue(d) if d == STALE_RETRY));
}

#[test]
fn an_ipv6_subnet_stops_the_peer_naming_the_entry_before_it_waits_for_its_instance() {
    let s = spec(serde_json::json!({
        "type": "site", "protocol": "wireguard", "userId": null,
        "siteId": "b1b2c3d4-e5f6-7890-1234-567890abcdef", "subnets": ["192.168.10.0/24", "fd00::/64"]
    }));
    let mut o = observed(
        &s,
        FinalizerState::Held,
        Some("p-1"),
        Remote::Found(altostrat_peer("p-1")),
    );
    let expected = "spec.subnets[1]: \"fd00::/64\" is an IPv6 network; Altostrat documents IPv4 networks only, \
                    so IPv6 entries are refused";
    assert!(matches!(decide(&o), Step::GiveUp(e) if e.to_string() == format!("invalid spec: {expected}")));
    o.parent = Err(ConditionState::new(
        "Ready",
        false,
        reason::INSTANCE_NOT_FOUND,
        "no instance hub",
    ));
    assert!(matches!(decide(&o), Step::GiveUp(e) if e.reason() == "InvalidSpec"));
}
