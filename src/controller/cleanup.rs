//! The deletion lifecycle of both kinds as one pure decision.

use super::ownership::Ownership;
use crate::crd::DeletionPolicy;

/// What a deleting reconcile knows at this point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CleanupObserved {
    pub has_finalizer: bool,
    pub policy: DeletionPolicy,
    /// Whether anything of this resource can exist in Altostrat: an id was recorded or a
    /// create was claimed (and, for a peer, its instance is known).
    pub may_exist: bool,
    /// Resources that still reference this one (peers of an instance); `None`: not counted yet.
    pub dependents: Option<usize>,
    /// The Altostrat id recorded in status.
    pub known_id: Option<String>,
    /// Another live resource that records or explicitly adopted `known_id` (a hand-over, such
    /// as a GitOps rename): the object is its now.
    pub handed_over_to: Option<String>,
    /// What a search for an unrecorded create found, and whose it is; `None`: not looked yet.
    pub search: Option<Option<(String, Ownership)>>,
    /// The Altostrat object is gone (deleted now, or already).
    pub deleted: bool,
}

/// The next step of a deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CleanupStep {
    /// Not ours to clean up (no finalizer): nothing to do.
    Nothing,
    /// `deletionPolicy: Orphan`: leave the Altostrat object, release the finalizer.
    Orphan,
    CountDependents,
    /// Dependents are deleted through their own resources first, so each one's policy is
    /// honoured and none is left pointing at a vanished object.
    WaitForDependents(usize),
    /// A create may have happened without its id being recorded: look for the object.
    Search,
    Delete(String),
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
    if o.policy == DeletionPolicy::Orphan {
        return CleanupStep::Orphan;
    }
    match o.dependents {
        None => return CleanupStep::CountDependents,
        Some(n) if n > 0 => return CleanupStep::WaitForDependents(n),
        Some(_) => {}
    }
    if o.deleted || !o.may_exist {
        return CleanupStep::Release;
    }
    match (&o.known_id, &o.handed_over_to, &o.search) {
        (Some(id), Some(to), _) => CleanupStep::HandOver {
            id: id.clone(),
            to: to.clone(),
        },
        (Some(id), None, _) => CleanupStep::Delete(id.clone()),
        (None, _, None) => CleanupStep::Search,
        (None, _, Some(None)) => CleanupStep::Release,
        (None, _, Some(Some((id, Ownership::Ours)))) => CleanupStep::Delete(id.clone()),
        (None, _, Some(Some((id, verdict)))) => CleanupStep::LeaveAlone {
            id: id.clone(),
            verdict: verdict.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deleting() -> CleanupObserved {
        CleanupObserved {
            has_finalizer: true,
            policy: DeletionPolicy::Delete,
            may_exist: true,
            dependents: Some(0),
            known_id: Some("i-1".into()),
            handed_over_to: None,
            search: None,
            deleted: false,
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
    fn a_recorded_id_is_deleted_then_the_finalizer_released() {
        assert_eq!(decide_cleanup(&deleting()), CleanupStep::Delete("i-1".into()));
        let gone = CleanupObserved {
            deleted: true,
            ..deleting()
        };
        assert_eq!(decide_cleanup(&gone), CleanupStep::Release);
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
    fn an_object_handed_over_to_another_resource_is_released_not_deleted() {
        let o = CleanupObserved {
            handed_over_to: Some("team-a/hub-renamed".into()),
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
