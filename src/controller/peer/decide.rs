//! The lifecycle of a `VpnPeer` as pure decisions: what is known → the next step.

use std::time::Duration;

use kube::Resource;

use super::super::conditions::{ConditionState, READY, SYNCED, reason};
use super::super::error::Error;
use super::super::finalizer::{FinalizerState, STALE_RETRY};
use super::super::ownership::Claim;
use super::super::ownership::{self, Ownership};
use super::super::policy::Gate;
use super::super::record::Holding;
use super::super::{plan, planned};
use crate::altostrat::model::{Peer, PeerUpdate};
use crate::crd::{PlannedCall, RecordRole, VpnInstance, VpnPeerSpec, VpnPeerStatus};
use k8s_openapi::jiff::Timestamp;

/// What is known of the Altostrat side at this point of a reconcile.
#[derive(Clone, Debug)]
pub(crate) enum Remote {
    /// Not looked at yet.
    Unknown,
    /// The peer as Altostrat last returned it (GET, POST or PUT).
    Found(Peer),
    /// The recorded id answered 404.
    Gone(String),
    /// The peers of our type and user/site, looked for because a claimed create may have been
    /// applied without its id being recorded.
    Searched(Vec<Candidate>),
}

/// A peer a search found, and the other resource of the cluster that records it, if any.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub peer: Peer,
    pub recorded_by: Option<String>,
}

/// Everything the decision looks at.
#[derive(Clone, Debug)]
pub(crate) struct Observed<'a> {
    pub spec: &'a VpnPeerSpec,
    /// What this reconcile may write to Altostrat.
    pub gate: Gate,
    /// The Altostrat id of the referenced instance, or why the peer has to wait for it.
    pub instance: Result<String, ConditionState>,
    pub finalizer: FinalizerState,
    /// The create claim of the peer's record.
    pub claim: Claim,
    /// Who else holds the peer `spec.peerId` names (or this resource's record).
    pub held_elsewhere: Option<String>,
    /// The peer id the record holds for this resource to observe: never its own.
    pub observed_id: Option<String>,
    /// The peer id the record holds for this resource to manage, if it was recorded on the
    /// instance the peer uses now (a peer recorded on a previous incarnation of the instance
    /// went away with it).
    pub recorded_id: Option<String>,
    /// Whether this resource holds a record at all.
    pub holds_record: bool,
    /// `status.peerId`: what the status says, which proves nothing.
    pub status_id: Option<String>,
    pub remote: Remote,
    /// A PUT was sent in this reconcile already: its answer is final for this round.
    pub updated: bool,
}

/// The next step of a converging reconcile.
#[derive(Debug)]
pub(crate) enum Step {
    /// The instance is missing or not usable yet; the instance watch re-triggers the peer.
    Wait(ConditionState),
    /// Our copy was stale: look again shortly.
    Requeue(Duration),
    /// Restore the finalizer of a recorded peer.
    AddFinalizer,
    /// Record a create claim (with the finalizer) right before the create: Altostrat documents
    /// no unique key for peers, so every POST is preceded by a claim on a current copy.
    Claim,
    Fetch(String),
    /// The recorded peer vanished: forget its id before creating again, so that a lost answer
    /// to the new POST is looked for by the next attempt, not repeated.
    Forget(String),
    /// A claimed create may have been applied without its id being recorded: look for it.
    Search,
    /// Our own lost create, proven by the claim: record it.
    Adopt(Peer),
    /// The peer found is the one to manage (or observe): take or update the record before any
    /// write to it.
    Own {
        id: String,
        role: RecordRole,
    },
    Create,
    Update {
        id: String,
        body: PeerUpdate,
        field: &'static str,
    },
    /// Converged as far as this round goes: record what Altostrat holds.
    Record(Peer),
    /// The next step would write to Altostrat and the gate withholds it: record these calls
    /// (what the step would have sent) and what Altostrat holds.
    Withhold(Vec<PlannedCall>),
    GiveUp(Error),
}

/// The one place where the peer lifecycle is decided: the next step, through the gate.
pub(crate) fn decide(o: &Observed) -> Step {
    withhold(lifecycle(o), o)
}

/// The gate: while writes to Altostrat are withheld, a step that would write becomes the calls
/// it would have made. Forgetting a vanished id only prepares the create that follows it, so
/// it is withheld with the create.
fn withhold(step: Step, o: &Observed) -> Step {
    // A peer waits for its instance before anything else: no write comes before it is known.
    let (false, Ok(instance_id)) = (o.gate.open(), &o.instance) else {
        return step;
    };
    match step {
        Step::Claim | Step::Create | Step::Forget(_) => {
            Step::Withhold(vec![planned::peer_create(instance_id, o.spec)])
        }
        Step::Update { id, body, .. } => {
            let current = found(&o.remote);
            Step::Withhold(vec![planned::peer_update(instance_id, &id, &body, current)])
        }
        other => other,
    }
}

/// The peer the reconcile has seen, if any.
pub(crate) fn found(remote: &Remote) -> Option<&Peer> {
    match remote {
        Remote::Found(peer) => Some(peer),
        _ => None,
    }
}

fn lifecycle(o: &Observed) -> Step {
    if let Err(waiting) = &o.instance {
        return Step::Wait(waiting.clone());
    }
    if let Some(step) = refuse_adoption(o) {
        return step;
    }
    if o.gate.observes() {
        return observe(o);
    }
    match (&o.remote, o.finalizer) {
        (_, FinalizerState::Stale) => Step::Requeue(STALE_RETRY),
        (Remote::Unknown, finalizer) => match (o.recorded_id.as_ref().or(o.spec.peer_id.as_ref()), finalizer)
        {
            (Some(_), FinalizerState::Missing) => Step::AddFinalizer,
            (Some(id), _) => Step::Fetch(id.clone()),
            (None, _) => match o.claim {
                Claim::Fresh(_) => Step::Create,
                Claim::Held(_) => Step::Search,
                Claim::None => Step::Claim,
            },
        },
        (Remote::Gone(id), _) if o.recorded_id.is_none() && o.spec.peer_id.is_some() => missing_adoption(id),
        (Remote::Gone(id), _) => Step::Forget(id.clone()),
        (Remote::Searched(candidates), _) => adopt_or_create(o, candidates),
        (Remote::Found(peer), _) => compare(o, peer),
    }
}

/// `ObserveOnly`: fetch the peer `spec.peerId` names and report how it differs from the spec;
/// the gate withholds the update that difference amounts to. Nothing is ever created.
fn observe(o: &Observed) -> Step {
    let Some(id) = &o.spec.peer_id else {
        return Step::GiveUp(Error::InvalidSpec(
            "managementPolicy ObserveOnly needs spec.peerId: a peer is found only by its id".into(),
        ));
    };
    match (&o.remote, o.finalizer) {
        (_, FinalizerState::Stale) => Step::Requeue(STALE_RETRY),
        (Remote::Unknown, FinalizerState::Missing) => Step::AddFinalizer,
        (Remote::Gone(id), _) => missing_adoption(id),
        (Remote::Found(peer), _) => compare(o, peer),
        _ => Step::Fetch(id.clone()),
    }
}

/// The peer found, against the spec: one of another type, user or site than the spec names is
/// refused (unless this resource made it), a difference is one update, else it is recorded.
fn compare(o: &Observed, peer: &Peer) -> Step {
    if o.recorded_id.is_none() && plan::matching_peers(std::slice::from_ref(peer), o.spec).is_empty() {
        return Step::GiveUp(Error::InvalidSpec(format!(
            "spec.peerId {} is a peer of another type, user or site than this VpnPeer names",
            peer.id
        )));
    }
    // The record must hold it for this resource before anything is written (or observed).
    let held = (o.recorded_id.as_deref(), o.observed_id.as_deref());
    if let Some(role) = ownership::record_needed(o.gate, held, &peer.id) {
        let id = peer.id.clone();
        return Step::Own { id, role };
    }
    let update = match o.gate.observes() {
        true => plan::observed_peer_drift(o.spec, peer),
        false => plan::peer_update(o.spec, peer),
    };
    match update.filter(|_| !o.updated) {
        Some(body) => Step::Update {
            id: peer.id.clone(),
            field: if body.subnets.is_some() {
                "subnets"
            } else {
                "routeAll"
            },
            body,
        },
        None => Step::Record(peer.clone()),
    }
}

fn missing_adoption(id: &str) -> Step {
    Step::GiveUp(Error::InvalidSpec(format!(
        "spec.peerId {id} does not exist on the instance"
    )))
}

/// An adoption that must not go ahead: a peer this resource only observed, to be managed
/// without `spec.peerId` naming it; an id in status that no record backs; `spec.peerId`
/// differing from the peer this resource already manages; or a peer someone else holds.
fn refuse_adoption(o: &Observed) -> Option<Step> {
    if let Some(other) = &o.held_elsewhere {
        let what = o
            .spec
            .peer_id
            .as_deref()
            .map_or("this resource's peer".to_owned(), |id| {
                format!("Altostrat peer {id}")
            });
        return Some(Step::GiveUp(Error::NotOwned {
            reason: reason::NOT_OWNED,
            message: format!(
                "{what} is held by {other}; nothing is written to it or deleted on behalf of this resource"
            ),
        }));
    }
    if let Some(id) = &o.status_id
        && !o.holds_record
        && o.spec.peer_id.is_none()
        && !o.gate.observes()
    {
        return Some(Step::GiveUp(Error::NotOwned {
            reason: reason::NOT_OWNED,
            message: format!(
                "status.peerId {id} is not backed by an ownership record of this resource (restored or \
                 copied without it?), so the peer is not provably its own; to manage it, set spec.peerId \
                 to {id} (adopting it explicitly: deleting this resource then orphans it unless \
                 deletionPolicy is Delete)"
            ),
        }));
    }
    if let (Some(seen), None) = (&o.observed_id, &o.recorded_id)
        && !o.gate.observes()
        && o.spec.peer_id.as_ref() != Some(seen)
    {
        return Some(Step::GiveUp(Error::NotOwned {
            reason: reason::NOT_OWNED,
            message: format!(
                "Altostrat peer {seen} was only observed (managementPolicy ObserveOnly), never created or \
                 adopted by this resource; to manage it, set spec.peerId to {seen}"
            ),
        }));
    }
    let wanted = o.spec.peer_id.as_ref()?;
    if let Some(recorded) = &o.recorded_id
        && recorded != wanted
    {
        return Some(Step::GiveUp(Error::InvalidSpec(format!(
            "spec.peerId {wanted} differs from the peer {recorded} this resource manages"
        ))));
    }
    None
}

/// Each candidate with the ownership rule's verdict on it, for a resource claimed at `claim`.
pub(crate) fn judge_all(claim: Option<Timestamp>, candidates: &[Candidate]) -> Vec<(&Peer, Ownership)> {
    candidates
        .iter()
        .map(|c| {
            let verdict = ownership::judge(claim, c.peer.created_at.as_deref(), c.recorded_by.clone());
            (&c.peer, verdict)
        })
        .collect()
}

/// Adopts the candidate that is provably our own lost create. Peers of the same user made by
/// others do not stop a create (Altostrat has no unique key for peers), but one that may be
/// our own and cannot be proven so does: creating would risk a duplicate.
fn adopt_or_create(o: &Observed, candidates: &[Candidate]) -> Step {
    let verdicts = judge_all(o.claim.at(), candidates);
    if let Some((peer, _)) = verdicts.iter().find(|(_, v)| *v == Ownership::Ours) {
        return Step::Adopt((*peer).clone());
    }
    if let Some((peer, verdict)) = verdicts.iter().find(|(_, v)| *v == Ownership::Unprovable) {
        let what = format!("Altostrat peer {}", peer.id);
        let message = ownership::explain(
            verdict,
            &what,
            "delete it in Altostrat or wait for it to be recorded",
        );
        return Step::GiveUp(Error::NotOwned {
            reason: reason::NOT_OWNED,
            message,
        });
    }
    match o.claim {
        Claim::Fresh(_) => Step::Create,
        _ => Step::Claim,
    }
}

/// The Altostrat id of a provisioned, live instance; `Err` carries why the peer must wait.
pub(crate) fn usable_instance_id(
    instance: Option<&VpnInstance>,
    name: &str,
) -> Result<String, ConditionState> {
    let Some(instance) = instance else {
        return Err(ConditionState::new(
            READY,
            false,
            reason::INSTANCE_NOT_FOUND,
            format!("VpnInstance {name:?} does not exist in this namespace"),
        ));
    };
    if instance.meta().deletion_timestamp.is_some() {
        return Err(ConditionState::new(
            READY,
            false,
            reason::WAITING_FOR_INSTANCE,
            format!("VpnInstance {name:?} is being deleted"),
        ));
    }
    match instance.status.as_ref() {
        Some(s) if s.server_ready && s.instance_id.is_some() => Ok(s.instance_id.clone().unwrap_or_default()),
        _ => Err(ConditionState::new(
            READY,
            false,
            reason::WAITING_FOR_INSTANCE,
            format!("Waiting for VpnInstance {name:?} to be provisioned"),
        )),
    }
}

/// The instance id a peer may use: the one `usable` found, only if the instance resource holds
/// the hub's record for that id (in either role: a managed peer on an observed hub works).
/// A hub id in an instance's status proves nothing: a tenant can write it.
pub(crate) fn attached(
    usable: Result<String, ConditionState>,
    hub: &Holding,
    name: &str,
) -> Result<String, ConditionState> {
    let id = usable?;
    match hub.mine() {
        Some(record) if record.instance_id.as_deref() == Some(id.as_str()) => Ok(id),
        _ => Err(ConditionState::new(
            READY,
            false,
            reason::WAITING_FOR_INSTANCE,
            format!(
                "VpnInstance {name:?} does not hold the ownership record of Altostrat instance {id}; \
                 peers attach only to a hub their instance resource holds"
            ),
        )),
    }
}

/// The status fields that mirror the Altostrat peer (conditions are the writer's), still
/// naming the profile Secret `stored` names: the profile delivery, a step of its own, decides
/// whether it still holds.
pub(crate) fn observed_status(
    observed: &Peer,
    instance_id: &str,
    stored: Option<&VpnPeerStatus>,
) -> VpnPeerStatus {
    VpnPeerStatus {
        peer_id: Some(observed.id.clone()),
        instance_id: Some(instance_id.to_owned()),
        connected: observed.connected,
        connected_from: observed.connected_from.clone(),
        profile_secret: stored.and_then(|s| s.profile_secret.clone()),
        ..VpnPeerStatus::default()
    }
}

pub(crate) fn ready_conditions(gate: Gate) -> [ConditionState; 2] {
    let synced = match gate.observes() {
        true => ConditionState::new(
            SYNCED,
            true,
            reason::OBSERVED,
            "Altostrat matches the fields the spec sets (managementPolicy ObserveOnly writes nothing)",
        ),
        false => ConditionState::new(
            SYNCED,
            true,
            reason::RECONCILE_SUCCESS,
            "Spec applied to Altostrat",
        ),
    };
    let ready = ConditionState::new(READY, true, reason::AVAILABLE, "Peer exists and matches the spec");
    [ready, synced]
}

/// The status and conditions of a reconcile whose next writes are withheld: the peer as
/// Altostrat holds it, if it exists (`Ready` says it does), `Synced` False naming what is
/// withheld, and the calls in `plan`.
pub(crate) fn withheld_status(
    stored: VpnPeerStatus,
    (remote, instance_id): (&Remote, &str),
    calls: Vec<PlannedCall>,
    gate: Gate,
) -> (VpnPeerStatus, [ConditionState; 2]) {
    if let Some(peer) = found(remote) {
        let fields = planned::changed_fields(&calls).join(", ");
        let message = format!(
            "Altostrat differs from the spec in {fields}; not corrected while {}",
            gate.why()
        );
        let status = VpnPeerStatus {
            plan: if gate.plans() { calls } else { Vec::new() },
            ..observed_status(peer, instance_id, Some(&stored))
        };
        let ready = ConditionState::new(READY, true, reason::AVAILABLE, "Peer exists");
        return (
            status,
            [
                ready,
                ConditionState::new(SYNCED, false, gate.drift_reason(), message),
            ],
        );
    }
    let what = match remote {
        Remote::Gone(id) => format!("Altostrat peer {id} no longer exists; creating it again"),
        _ => "Creating the peer".to_owned(),
    };
    let message = format!("{what} is withheld while {}", gate.why());
    let desired = [
        ConditionState::new(READY, false, gate.reason(), message.clone()),
        ConditionState::new(SYNCED, false, gate.reason(), message),
    ];
    (
        VpnPeerStatus {
            plan: calls,
            ..stored
        },
        desired,
    )
}

/// The conditions of a peer that waits for its instance.
pub(crate) fn waiting_conditions(waiting: ConditionState) -> [ConditionState; 2] {
    let synced = ConditionState::new(SYNCED, true, waiting.reason, "Nothing to apply yet");
    [waiting, synced]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{VpnInstanceSpec, VpnInstanceStatus};

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
        remote: Remote,
    ) -> Observed<'a> {
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
            instance: Ok("i-1".into()),
            finalizer,
            claim,
            held_elsewhere: None,
            observed_id: None,
            recorded_id: recorded.map(str::to_owned),
            holds_record: recorded.is_some() || claim != Claim::None,
            status_id: recorded.map(str::to_owned),
            remote,
            updated: false,
        }
    }

    fn instance(status: Option<VpnInstanceStatus>) -> VpnInstance {
        let spec: VpnInstanceSpec = serde_json::from_value(
            serde_json::json!({"name": "hub", "hostname": "hub-one", "region": "sjc"}),
        )
        .unwrap();
        let mut i = VpnInstance::new("hub", spec);
        i.status = status;
        i
    }

    #[test]
    fn a_peer_waits_for_a_missing_or_unprovisioned_instance_before_anything_else() {
        let s = spec(serde_json::json!({}));
        let mut o = observed(&s, FinalizerState::Missing, None, Remote::Unknown);
        o.instance = usable_instance_id(None, "hub");
        assert!(matches!(decide(&o), Step::Wait(w) if w.reason == "InstanceNotFound"));
        let provisioning = instance(Some(VpnInstanceStatus {
            instance_id: Some("i-1".into()),
            ..Default::default()
        }));
        o.instance = usable_instance_id(Some(&provisioning), "hub");
        assert!(matches!(decide(&o), Step::Wait(w) if w.reason == "WaitingForInstance"));
        let mut deleting = instance(Some(VpnInstanceStatus {
            instance_id: Some("i-1".into()),
            server_ready: true,
            ..Default::default()
        }));
        assert_eq!(usable_instance_id(Some(&deleting), "hub"), Ok("i-1".into()));
        deleting.metadata.deletion_timestamp = Some(super::super::super::conditions::now());
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

    fn candidate(id: &str, created_at: &str, recorded_by: Option<&str>) -> Candidate {
        Candidate {
            peer: Peer {
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
            Step::Update {
                field: "routeAll",
                ..
            }
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
}
