//! The deletion lifecycle of both kinds as one pure decision.

use super::error::Result;
use super::ownership::Ownership;
use crate::altostrat::ApiResult;
use crate::crd::{DeletionPolicy, ManagementPolicy};

/// What a deleting reconcile knows at this point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CleanupObserved {
    pub has_finalizer: bool,
    /// `spec.managementPolicy`: only `Full` management deletes anything.
    pub management: ManagementPolicy,
    pub policy: DeletionPolicy,
    /// Whether anything of this resource can exist in Altostrat: an id was recorded or a
    /// create was claimed (and, for a peer, its instance is known).
    pub may_exist: bool,
    /// Resources that still reference this one (peers of an instance); `None`: not counted yet.
    pub dependents: Option<usize>,
    /// The Altostrat id the resource's record holds for it to manage (not one only observed).
    pub known_id: Option<String>,
    /// Another live resource that adopts `known_id` explicitly and validly (a hand-over, such as
    /// a GitOps rename): the object goes to it. `None`: not looked for yet; `Some(None)`: there
    /// is none.
    pub handed_over_to: Option<Option<String>>,
    /// What a search for an unrecorded create found, and whose it is; `None`: not looked yet.
    pub search: Option<Option<(String, Ownership)>>,
    /// Whether the object `known_id` names is what the resource describes (an instance's hostname,
    /// a peer's type and user or site), looked at before it is deleted; `None`: not looked yet.
    pub alike: Option<bool>,
    /// An earlier reconcile saw Altostrat accept this resource's DELETE and the object stay:
    /// its teardown is watched, not asked for again.
    pub teardown_started: bool,
    /// Altostrat's answer to this reconcile's DELETE.
    pub delete_answer: Option<DeleteAnswer>,
    /// Whether the object still exists, seen after any DELETE; `None`: not looked yet.
    pub still_exists: Option<bool>,
}

/// What Altostrat answered a DELETE. Only a look afterwards says whether the object is gone:
/// teardown may be asynchronous, and a 404 may mean that deleting is not offered at this path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DeleteAnswer {
    /// 2xx: deleted, or a teardown begun.
    Accepted,
    /// 404.
    NotFound,
    /// Any other answer that repeating the request cannot change (405, 403, 409, ...), with
    /// Altostrat's explanation.
    Refused(String),
}

impl DeleteAnswer {
    /// Reads a DELETE's answer; failures worth retrying stay errors.
    pub(crate) fn read(answer: ApiResult<()>) -> Result<Self> {
        match answer {
            Ok(()) => Ok(Self::Accepted),
            Err(e) if e.is_not_found() => Ok(Self::NotFound),
            Err(e) if e.is_refusal() => Ok(Self::Refused(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }
}

/// The next step of a deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CleanupStep {
    /// Not ours to clean up (no finalizer): nothing to do.
    Nothing,
    /// `deletionPolicy: Orphan`: leave the Altostrat object, release the finalizer.
    Orphan,
    /// The resource does not manage its object (`managementPolicy` is not `Full`): leave it,
    /// release the finalizer.
    Unmanaged(ManagementPolicy),
    CountDependents,
    /// Dependents are deleted through their own resources first, so each one's policy is
    /// honoured and none is left pointing at a vanished object.
    WaitForDependents(usize),
    /// A create may have happened without its id being recorded: look for the object.
    Search,
    /// Look for a resource the recorded object is handed over to instead of being deleted.
    FindSuccessor(String),
    /// Look at the recorded object before deleting it: is it what the resource describes?
    Inspect(String),
    Delete(String),
    /// Look whether the object is gone.
    Confirm(String),
    /// Altostrat accepted the DELETE and the object is still there: its teardown is under way.
    WaitForTeardown(String),
    /// Altostrat refuses to delete the object and it is still there: only a person can go on
    /// (delete it in Altostrat, or set `deletionPolicy: Orphan`).
    Refused {
        id: String,
        message: String,
    },
    /// The object is another resource's now: release without deleting.
    HandOver {
        id: String,
        to: String,
    },
    /// The object found is not provably this resource's: release without deleting.
    LeaveAlone {
        id: String,
        verdict: Ownership,
    },
    /// The Altostrat side is done: release the finalizer.
    Release,
}

pub(crate) fn decide_cleanup(o: &CleanupObserved) -> CleanupStep {
    if !o.has_finalizer {
        return CleanupStep::Nothing;
    }
    if o.management != ManagementPolicy::Full {
        return CleanupStep::Unmanaged(o.management);
    }
    if o.policy == DeletionPolicy::Orphan {
        return CleanupStep::Orphan;
    }
    match o.dependents {
        None => return CleanupStep::CountDependents,
        Some(n) if n > 0 => return CleanupStep::WaitForDependents(n),
        Some(_) => {}
    }
    if o.still_exists == Some(false) || !o.may_exist {
        return CleanupStep::Release;
    }
    match (&o.known_id, &o.handed_over_to, &o.search) {
        (Some(id), None, _) => CleanupStep::FindSuccessor(id.clone()),
        (Some(id), Some(Some(to)), _) => CleanupStep::HandOver {
            id: id.clone(),
            to: to.clone(),
        },
        (Some(id), Some(None), _) => match o.alike {
            None if o.delete_answer.is_none() && !o.teardown_started => CleanupStep::Inspect(id.clone()),
            Some(false) => CleanupStep::LeaveAlone {
                id: id.clone(),
                verdict: Ownership::Unlike,
            },
            _ => removal(id, o),
        },
        (None, _, None) => CleanupStep::Search,
        (None, _, Some(None)) => CleanupStep::Release,
        (None, _, Some(Some((id, Ownership::Ours)))) => removal(id, o),
        (None, _, Some(Some((id, verdict)))) => CleanupStep::LeaveAlone {
            id: id.clone(),
            verdict: verdict.clone(),
        },
    }
}

/// Deleting `id`, an object this resource owns: one DELETE, then looks until it is gone.
fn removal(id: &str, o: &CleanupObserved) -> CleanupStep {
    let id = id.to_owned();
    if o.delete_answer.is_none() && !o.teardown_started {
        return CleanupStep::Delete(id);
    }
    if o.still_exists.is_none() {
        return CleanupStep::Confirm(id);
    }
    match &o.delete_answer {
        _ if o.teardown_started => CleanupStep::WaitForTeardown(id),
        Some(DeleteAnswer::Accepted) | None => CleanupStep::WaitForTeardown(id),
        Some(DeleteAnswer::NotFound) => CleanupStep::Refused {
            id,
            message: "Altostrat answered the DELETE with 404 (not found), yet still lists the object: \
                      deleting may not be offered at this path"
                .into(),
        },
        Some(DeleteAnswer::Refused(message)) => CleanupStep::Refused {
            id,
            message: message.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deleting() -> CleanupObserved {
        CleanupObserved {
            has_finalizer: true,
            management: ManagementPolicy::Full,
            policy: DeletionPolicy::Delete,
            may_exist: true,
            dependents: Some(0),
            known_id: Some("i-1".into()),
            handed_over_to: Some(None),
            search: None,
            alike: Some(true),
            teardown_started: false,
            delete_answer: None,
            still_exists: None,
        }
    }

    fn answered(answer: DeleteAnswer, still_exists: Option<bool>) -> CleanupObserved {
        CleanupObserved {
            delete_answer: Some(answer),
            still_exists,
            ..deleting()
        }
    }

    #[test]
    fn without_the_finalizer_there_is_nothing_to_clean_up() {
        let o = CleanupObserved {
            has_finalizer: false,
            ..deleting()
        };
        assert_eq!(decide_cleanup(&o), CleanupStep::Nothing);
    }

    #[test]
    fn orphan_policy_leaves_the_object_and_does_not_wait_for_dependents() {
        let o = CleanupObserved {
            policy: DeletionPolicy::Orphan,
            dependents: Some(3),
            ..deleting()
        };
        assert_eq!(decide_cleanup(&o), CleanupStep::Orphan);
    }

    #[test]
    fn an_object_the_resource_does_not_manage_is_never_deleted_nor_waited_for() {
        let o = CleanupObserved {
            management: ManagementPolicy::ObserveOnly,
            dependents: Some(3),
            ..deleting()
        };
        assert_eq!(
            decide_cleanup(&o),
            CleanupStep::Unmanaged(ManagementPolicy::ObserveOnly)
        );
    }

    #[test]
    fn deletion_counts_then_waits_for_dependents() {
        let uncounted = CleanupObserved {
            dependents: None,
            ..deleting()
        };
        assert_eq!(decide_cleanup(&uncounted), CleanupStep::CountDependents);
        let with_peers = CleanupObserved {
            dependents: Some(2),
            ..deleting()
        };
        assert_eq!(decide_cleanup(&with_peers), CleanupStep::WaitForDependents(2));
    }

    #[test]
    fn a_recorded_object_is_looked_at_first_and_left_alone_unless_it_is_what_the_resource_describes() {
        let unseen = CleanupObserved {
            alike: None,
            ..deleting()
        };
        assert_eq!(decide_cleanup(&unseen), CleanupStep::Inspect("i-1".into()));
        let unlike = CleanupObserved {
            alike: Some(false),
            ..deleting()
        };
        assert_eq!(
            decide_cleanup(&unlike),
            CleanupStep::LeaveAlone {
                id: "i-1".into(),
                verdict: Ownership::Unlike
            }
        );
        let watching = CleanupObserved {
            alike: None,
            teardown_started: true,
            ..deleting()
        };
        assert_eq!(
            decide_cleanup(&watching),
            CleanupStep::Confirm("i-1".into()),
            "deleted already"
        );
    }

    #[test]
    fn a_recorded_id_is_deleted_seen_gone_then_the_finalizer_released() {
        assert_eq!(decide_cleanup(&deleting()), CleanupStep::Delete("i-1".into()));
        let accepted = answered(DeleteAnswer::Accepted, None);
        assert_eq!(decide_cleanup(&accepted), CleanupStep::Confirm("i-1".into()));
        let gone = answered(DeleteAnswer::Accepted, Some(false));
        assert_eq!(decide_cleanup(&gone), CleanupStep::Release);
    }

    #[test]
    fn an_accepted_delete_of_an_object_still_there_is_a_teardown_watched_without_a_second_delete() {
        let tearing_down = answered(DeleteAnswer::Accepted, Some(true));
        assert_eq!(
            decide_cleanup(&tearing_down),
            CleanupStep::WaitForTeardown("i-1".into())
        );
        let next_reconcile = CleanupObserved {
            teardown_started: true,
            ..deleting()
        };
        assert_eq!(
            decide_cleanup(&next_reconcile),
            CleanupStep::Confirm("i-1".into()),
            "no second DELETE"
        );
        let still_there = CleanupObserved {
            still_exists: Some(true),
            ..next_reconcile.clone()
        };
        assert_eq!(
            decide_cleanup(&still_there),
            CleanupStep::WaitForTeardown("i-1".into())
        );
        let gone = CleanupObserved {
            still_exists: Some(false),
            ..next_reconcile
        };
        assert_eq!(decide_cleanup(&gone), CleanupStep::Release);
    }

    #[test]
    fn a_404_on_delete_releases_only_once_a_look_confirms_the_object_gone() {
        let not_found = answered(DeleteAnswer::NotFound, None);
        assert_eq!(decide_cleanup(&not_found), CleanupStep::Confirm("i-1".into()));
        assert_eq!(
            decide_cleanup(&answered(DeleteAnswer::NotFound, Some(false))),
            CleanupStep::Release
        );
        let CleanupStep::Refused { id, message } =
            decide_cleanup(&answered(DeleteAnswer::NotFound, Some(true)))
        else {
            panic!("a 404 for an object still listed is a refusal, never a release")
        };
        assert_eq!(id, "i-1");
        assert!(message.contains("404"), "{message}");
    }

    #[test]
    fn a_refused_delete_holds_the_finalizer_until_the_object_is_gone_or_the_policy_is_orphan() {
        let refused = |still_exists| {
            answered(
                DeleteAnswer::Refused("405 Method Not Allowed".into()),
                still_exists,
            )
        };
        assert_eq!(decide_cleanup(&refused(None)), CleanupStep::Confirm("i-1".into()));
        assert_eq!(
            decide_cleanup(&refused(Some(true))),
            CleanupStep::Refused {
                id: "i-1".into(),
                message: "405 Method Not Allowed".into()
            }
        );
        assert_eq!(
            decide_cleanup(&refused(Some(false))),
            CleanupStep::Release,
            "deleted meanwhile in Altostrat"
        );
        let orphaned = CleanupObserved {
            policy: DeletionPolicy::Orphan,
            ..refused(Some(true))
        };
        assert_eq!(decide_cleanup(&orphaned), CleanupStep::Orphan);
    }

    #[test]
    fn an_unrecorded_create_is_looked_for_before_release() {
        let unrecorded = CleanupObserved {
            known_id: None,
            ..deleting()
        };
        assert_eq!(decide_cleanup(&unrecorded), CleanupStep::Search);
        let found = CleanupObserved {
            search: Some(Some(("i-9".into(), Ownership::Ours))),
            ..unrecorded.clone()
        };
        assert_eq!(decide_cleanup(&found), CleanupStep::Delete("i-9".into()));
        let someone_elses = CleanupObserved {
            search: Some(Some(("i-8".into(), Ownership::NotOurs))),
            ..unrecorded.clone()
        };
        assert_eq!(
            decide_cleanup(&someone_elses),
            CleanupStep::LeaveAlone {
                id: "i-8".into(),
                verdict: Ownership::NotOurs
            },
            "a resource that never created anything deletes nothing"
        );
        let not_found = CleanupObserved {
            search: Some(None),
            ..unrecorded
        };
        assert_eq!(decide_cleanup(&not_found), CleanupStep::Release);
    }

    #[test]
    fn a_successor_is_looked_for_only_once_dependents_are_gone_and_before_any_delete() {
        let unlooked = CleanupObserved {
            handed_over_to: None,
            ..deleting()
        };
        assert_eq!(
            decide_cleanup(&unlooked),
            CleanupStep::FindSuccessor("i-1".into())
        );
        let draining = CleanupObserved {
            dependents: Some(2),
            ..unlooked.clone()
        };
        assert_eq!(decide_cleanup(&draining), CleanupStep::WaitForDependents(2));
        let orphaned = CleanupObserved {
            policy: DeletionPolicy::Orphan,
            ..unlooked
        };
        assert_eq!(decide_cleanup(&orphaned), CleanupStep::Orphan);
    }

    #[test]
    fn an_object_handed_over_to_another_resource_is_released_not_deleted() {
        let o = CleanupObserved {
            handed_over_to: Some(Some("team-a/hub-renamed".into())),
            ..deleting()
        };
        assert_eq!(
            decide_cleanup(&o),
            CleanupStep::HandOver {
                id: "i-1".into(),
                to: "team-a/hub-renamed".into()
            }
        );
    }

    #[test]
    fn a_peer_whose_instance_never_existed_is_released_without_calls() {
        let o = CleanupObserved {
            may_exist: false,
            known_id: None,
            ..deleting()
        };
        assert_eq!(decide_cleanup(&o), CleanupStep::Release);
    }
}
