//! Rules that hold for every decision, checked over every combination of what a decision
//! looks at (both kinds), not over hand-picked cases.

use super::super::cleanup::{CleanupObserved, CleanupStep, DeleteAnswer, decide_cleanup};
use super::super::conditions::ConditionState;
use super::super::finalizer::FinalizerState;
use super::super::ownership::{Claim, Ownership};
use super::super::policy::Gate;
use super::decide::{Candidate, Kind, Observed, Remote, Step, decide};
use crate::altostrat::model::{Identified, Instance, Peer};
use crate::altostrat::{ApiError, Endpoint};
use crate::crd::{DeletionPolicy, ManagementPolicy, RecordRole, VpnInstance, VpnPeer};

/// The claim every combination uses; objects are made before or after it.
const CLAIMED: &str = "2026-11-27T10:00:00Z";
const BEFORE: &str = "2026-11-01T10:00:00Z";
const AFTER: &str = "2026-11-27T10:00:05Z";

trait Sample: Kind + Sized + std::fmt::Debug {
    fn spec(id: Option<&str>) -> Self::Spec;
    fn object(id: &str, created_at: &str) -> Self::Object;
    /// The instance the object lives on.
    fn parents() -> Vec<Result<String, ConditionState>>;
}

impl Sample for VpnInstance {
    fn spec(id: Option<&str>) -> Self::Spec {
        let spec = serde_json::json!({"name": "Hub", "hostname": "hub-one", "region": "sjc",
            "pushedRoutes": ["10.9.0.0/16"], "instanceId": id});
        serde_json::from_value(spec).unwrap()
    }
    fn object(id: &str, created_at: &str) -> Instance {
        Instance {
            id: id.into(),
            hostname: "hub-one.vpn.altostr.at".into(),
            configured: true,
            rsa_ready: true,
            diffie_hellman_ready: true,
            server_ready: true,
            created_at: Some(created_at.into()),
            ..Instance::default()
        }
    }
    fn parents() -> Vec<Result<String, ConditionState>> {
        vec![Ok(String::new())]
    }
}

impl Sample for VpnPeer {
    fn spec(id: Option<&str>) -> Self::Spec {
        let spec = serde_json::json!({"instanceRef": {"name": "hub"}, "type": "client",
            "protocol": "wireguard", "userId": "a1b2c3d4-e5f6-7890-1234-567890abcdef",
            "routeAll": true, "peerId": id});
        serde_json::from_value(spec).unwrap()
    }
    fn object(id: &str, created_at: &str) -> Peer {
        Peer {
            id: id.into(),
            user_id: Some("a1b2c3d4-e5f6-7890-1234-567890abcdef".into()),
            created_at: Some(created_at.into()),
            ..Peer::default()
        }
    }
    fn parents() -> Vec<Result<String, ConditionState>> {
        let waiting = ConditionState::new("Ready", false, "WaitingForInstance", "waiting");
        vec![Ok("i-1".into()), Err(waiting)]
    }
}

fn gates() -> [Gate; 4] {
    let gate = |policy, paused| Gate { policy, paused };
    [
        gate(ManagementPolicy::Full, false),
        gate(ManagementPolicy::Full, true),
        gate(ManagementPolicy::Plan, false),
        gate(ManagementPolicy::ObserveOnly, false),
    ]
}

fn remotes<K: Sample>() -> Vec<Remote<K::Object>> {
    let candidate = |id, at, by: Option<&str>| Candidate {
        object: K::object(id, at),
        recorded_by: by.map(str::to_owned),
    };
    let conflict = ApiError::Conflict {
        endpoint: Endpoint::CreateInstance,
        code: "taken".into(),
        message: "taken".into(),
    };
    vec![
        Remote::Unknown,
        Remote::Found(K::object("a", AFTER)),
        Remote::Found(K::object("b", BEFORE)),
        Remote::Gone("a".into()),
        Remote::Searched(vec![]),
        Remote::Searched(vec![candidate("a", AFTER, None)]),
        Remote::Searched(vec![candidate("b", BEFORE, None)]),
        Remote::Searched(vec![candidate("c", AFTER, Some("team-b/other"))]),
        Remote::Taken {
            conflict,
            visible: Some(K::object("b", BEFORE)),
        },
    ]
}

/// Calls `check` with the decision on every combination of inputs.
fn every_decision<K: Sample>(check: impl Fn(&Observed<K>, &Step<K>)) -> usize {
    let claimed = CLAIMED.parse().unwrap();
    let ids = [None, Some("a"), Some("b")];
    let specs: Vec<K::Spec> = ids.iter().map(|id| K::spec(*id)).collect();
    let finalizers = [
        FinalizerState::Held,
        FinalizerState::Added,
        FinalizerState::Missing,
        FinalizerState::Stale,
    ];
    let claims = [Claim::None, Claim::Held(claimed), Claim::Fresh(claimed)];
    let mut count = 0;
    for (spec, gate, parent) in combinations(&specs, gates(), K::parents()) {
        for (finalizer, claim, recorded, observed) in inputs(&finalizers, &claims, &ids) {
            for (held_elsewhere, status_id, updated) in others() {
                for remote in remotes::<K>() {
                    let o = Observed::<K> {
                        spec,
                        gate,
                        parent: parent.clone(),
                        finalizer,
                        claim,
                        recorded_id: recorded.map(str::to_owned),
                        observed_id: observed.map(str::to_owned),
                        held_elsewhere: held_elsewhere.map(str::to_owned),
                        holds_record: recorded.is_some() || observed.is_some() || claim != Claim::None,
                        status_id: status_id.map(str::to_owned),
                        remote,
                        updated,
                        approval: Default::default(),
                    };
                    check(&o, &decide(&o));
                    count += 1;
                }
            }
        }
    }
    count
}

fn combinations<S>(
    specs: &[S],
    gates: [Gate; 4],
    parents: Vec<Result<String, ConditionState>>,
) -> Vec<(&S, Gate, Result<String, ConditionState>)> {
    let mut all = Vec::new();
    for spec in specs {
        for gate in gates {
            for parent in &parents {
                all.push((spec, gate, parent.clone()));
            }
        }
    }
    all
}

type Inputs<'i> = (FinalizerState, Claim, Option<&'i str>, Option<&'i str>);

fn inputs<'i>(finalizers: &[FinalizerState], claims: &[Claim], ids: &[Option<&'i str>]) -> Vec<Inputs<'i>> {
    let mut all = Vec::new();
    for finalizer in finalizers {
        for claim in claims {
            // A record holds a claim only until an id is recorded (`Holding::claim`).
            for recorded in ids.iter().filter(|id| id.is_none() || *claim == Claim::None) {
                for observed in ids {
                    all.push((*finalizer, *claim, *recorded, *observed));
                }
            }
        }
    }
    all
}

fn others() -> Vec<(Option<&'static str>, Option<&'static str>, bool)> {
    let mut all = Vec::new();
    for held in [None, Some("team-b/other")] {
        for status in [None, Some("a"), Some("z")] {
            for updated in [false, true] {
                all.push((held, status, updated));
            }
        }
    }
    all
}

/// A step that writes to Altostrat, or leads straight to a write.
fn writes<K: Kind>(step: &Step<K>) -> bool {
    matches!(
        step,
        Step::Claim | Step::Create | Step::Update { .. } | Step::Forget(_)
    )
}

fn the_rules_hold<K: Sample>() {
    let checked = every_decision::<K>(|o, step| {
        let case = || format!("{step:?} from {o:?}");
        // Nothing is written while the gate is closed, and an observer takes no object as its own.
        assert!(o.gate.open() || !writes(step), "{}", case());
        if o.gate.observes() {
            assert!(!matches!(step, Step::Adopt(_)), "{}", case());
            assert!(
                !matches!(
                    step,
                    Step::Own {
                        role: RecordRole::Manage,
                        ..
                    }
                ),
                "{}",
                case()
            );
        }
        // A resource waiting for its instance does nothing else.
        if o.parent.is_err() {
            assert!(matches!(step, Step::Wait(_)), "{}", case());
        }
        // Only an object the record holds for this resource is updated.
        if let Step::Update { id, .. } = step {
            let held = if o.gate.observes() {
                &o.observed_id
            } else {
                &o.recorded_id
            };
            assert_eq!(held.as_deref(), Some(id.as_str()), "{}", case());
        }
        // A create follows a claim made in this reconcile, and never an id already known.
        if matches!(step, Step::Create) {
            assert!(
                matches!(o.claim, Claim::Fresh(_)) && o.recorded_id.is_none(),
                "{}",
                case()
            );
        }
        // Only our own lost create is adopted: made after our claim, held by no other record.
        if let Step::Adopt(object) = step {
            let at = object.created_at().unwrap_or_default();
            assert!(o.claim.at().is_some() && at >= CLAIMED, "{}", case());
        }
        // An object someone else holds is never written to, adopted or taken.
        if o.held_elsewhere.is_some() {
            let allowed = matches!(step, Step::Wait(_) | Step::Requeue(_) | Step::GiveUp(_));
            assert!(allowed, "{}", case());
        }
    });
    assert!(checked > 50_000, "{checked} combinations");
}

#[test]
fn no_write_under_a_closed_gate_and_none_without_ownership_for_a_hub() {
    the_rules_hold::<VpnInstance>();
}

#[test]
fn no_write_under_a_closed_gate_and_none_without_ownership_for_a_peer() {
    the_rules_hold::<VpnPeer>();
}

/// Every deletion input: an object is deleted only when the record holds it for this resource
/// (and it looks like what the resource describes) or a search proved it our own lost create;
/// never against the policies, and never while dependents remain.
#[test]
fn nothing_is_deleted_without_ownership() {
    let mut checked = 0;
    for o in cleanup_inputs() {
        let step = decide_cleanup(&o);
        checked += 1;
        let CleanupStep::Delete(id) = &step else { continue };
        let case = format!("{step:?} from {o:?}");
        assert!(
            o.has_finalizer && o.management == ManagementPolicy::Full,
            "{case}"
        );
        assert_eq!(o.policy, DeletionPolicy::Delete, "{case}");
        assert_eq!(o.dependents, Some(0), "{case}");
        let recorded = o.known_id.as_deref() == Some(id.as_str())
            && o.handed_over_to == Some(None)
            && o.alike == Some(true);
        let ours =
            o.known_id.is_none() && matches!(&o.search, Some(Some((found, Ownership::Ours))) if found == id);
        assert!(recorded || ours, "{case}");
    }
    assert!(checked > 10_000, "{checked} combinations");
}

fn cleanup_inputs() -> Vec<CleanupObserved> {
    let verdicts = [
        None,
        Some(None),
        Some(Some(("s".to_owned(), Ownership::Ours))),
        Some(Some(("s".to_owned(), Ownership::NotOurs))),
        Some(Some(("s".to_owned(), Ownership::Unprovable))),
    ];
    let mut all = Vec::new();
    for (management, policy) in [ManagementPolicy::Full, ManagementPolicy::ObserveOnly]
        .into_iter()
        .flat_map(|m| [(m, DeletionPolicy::Delete), (m, DeletionPolicy::Orphan)])
    {
        for (has_finalizer, may_exist, teardown_started) in bools3() {
            for dependents in [None, Some(0), Some(2)] {
                for known_id in [None, Some("k".to_owned())] {
                    for handed_over_to in [None, Some(None), Some(Some("team-a/next".to_owned()))] {
                        for search in verdicts.clone() {
                            for alike in [None, Some(true), Some(false)] {
                                for (delete_answer, still_exists) in answers() {
                                    all.push(CleanupObserved {
                                        has_finalizer,
                                        management,
                                        policy,
                                        may_exist,
                                        dependents,
                                        known_id: known_id.clone(),
                                        handed_over_to: handed_over_to.clone(),
                                        search: search.clone(),
                                        alike,
                                        teardown_started,
                                        delete_answer,
                                        still_exists,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    all
}

fn bools3() -> Vec<(bool, bool, bool)> {
    (0..8).map(|n| (n & 1 == 1, n & 2 == 2, n & 4 == 4)).collect()
}

fn answers() -> Vec<(Option<DeleteAnswer>, Option<bool>)> {
    let answers = [
        None,
        Some(DeleteAnswer::Accepted),
        Some(DeleteAnswer::NotFound),
        Some(DeleteAnswer::Refused("no".into())),
    ];
    answers
        .into_iter()
        .flat_map(|a| [None, Some(true), Some(false)].map(|s| (a.clone(), s)))
        .collect()
}
