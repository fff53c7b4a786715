//! The one ownership rule. The operator writes to, adopts or deletes an Altostrat object only
//! when it can prove the object is this resource's own, and the proof is always an
//! ownership record (see [`super::record`]) that names this resource:
//!
//! 1. the record was taken for this resource's own create (before the create was sent) and
//!    holds the id the create returned, or
//! 2. the record was taken for an explicit adoption (`spec.instanceId`, `spec.peerId`), which
//!    takes a free record only, and only when the object matches the spec, or
//! 3. the object is this resource's own lost create: its record holds a create claim, the
//!    object was created at or after the claim, and no other record holds the object.
//!
//! Status, annotations and spec are inputs, never proof: an id recorded in status without a
//! record behind it is left alone. Anything else is left alone too: no write, no delete, a
//! condition that names the object and, where there is one, its holder.
//! Altostrat's `created_at` and the cluster's clock may disagree: an object created less than
//! [`CLOCK_SKEW_TOLERANCE`] before the claim may be a lost create seen through a slow clock,
//! but may as well be someone else's, so it is not provably ours either; the message says how
//! to adopt it explicitly.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::policy::Gate;
use crate::crd::RecordRole;

/// How far Altostrat's clock may be behind the cluster's before an object created after our
/// claim looks older than it; within it, an object is neither provably ours nor provably not.
pub const CLOCK_SKEW_TOLERANCE: Duration = Duration::from_secs(120);

/// The create claim of a resource's record, as far as this reconcile knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    None,
    /// Made by an earlier reconcile, whose create may have been applied.
    Held(Timestamp),
    /// Made by this reconcile: no create was sent since.
    Fresh(Timestamp),
}

impl Claim {
    pub fn at(self) -> Option<Timestamp> {
        match self {
            Self::Held(at) | Self::Fresh(at) => Some(at),
            Self::None => None,
        }
    }
}

/// The role in which a resource must hold the object `id` it found before it acts on it (a
/// write, or an observation), if its record does not hold it so yet: `Observe` for an
/// observer, `Manage` for a resource whose writes go out. A paused or planning resource takes
/// no record: it writes nothing.
pub(crate) fn record_needed(
    gate: Gate,
    (managed, observed): (Option<&str>, Option<&str>),
    id: &str,
) -> Option<RecordRole> {
    let (role, held) = match gate {
        gate if gate.observes() => (RecordRole::Observe, observed),
        gate if gate.open() => (RecordRole::Manage, managed),
        _ => return None,
    };
    (held != Some(id)).then_some(role)
}

/// The verdict on an object found without a recorded id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// Created at or after this resource's claim, and held by no other record.
    Ours,
    /// Another record holds it (its holder, for the message).
    RecordedElsewhere(String),
    /// No create was claimed, or the object predates the claim: someone else's.
    NotOurs,
    /// Created just before the claim, within the clock-skew tolerance; or its creation time
    /// is unknown.
    Unprovable,
    /// The object the record names is not what the resource describes (another hostname;
    /// another type, user or site): a record from a status an earlier version trusted.
    Unlike,
}

/// Judges an object found by a search (pure).
pub(crate) fn judge(
    claim: Option<Timestamp>,
    created_at: Option<&str>,
    recorded_by: Option<String>,
) -> Ownership {
    if let Some(other) = recorded_by {
        return Ownership::RecordedElsewhere(other);
    }
    let Some(claim) = claim else {
        return Ownership::NotOurs;
    };
    let Some(created) = created_at.and_then(|t| t.parse::<Timestamp>().ok()) else {
        return Ownership::Unprovable;
    };
    if created >= claim {
        Ownership::Ours
    } else if claim.duration_since(created).unsigned_abs() <= CLOCK_SKEW_TOLERANCE {
        Ownership::Unprovable
    } else {
        Ownership::NotOurs
    }
}

/// Why an object is left alone, for the condition message.
pub(crate) fn explain(ownership: &Ownership, what: &str, how_to_adopt: &str) -> String {
    match ownership {
        Ownership::Ours => format!("{what} is this resource's own"),
        Ownership::RecordedElsewhere(other) => format!("{what} belongs to {other}"),
        Ownership::NotOurs => format!("{what} was not created by this resource; {how_to_adopt}"),
        Ownership::Unlike => format!(
            "{what} is not what this resource describes (another hostname, or another type, user or site), \
             although its record names it; {how_to_adopt}"
        ),
        Ownership::Unprovable => format!(
            "{what} may be this resource's own lost create, but its creation time does not prove it \
             (clock skew tolerance {}s); {how_to_adopt}",
            CLOCK_SKEW_TOLERANCE.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Option<Timestamp> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_object_created_after_the_claim_is_ours() {
        let claim = at("2026-11-27T10:00:00Z");
        assert_eq!(judge(claim, Some("2026-11-27T10:00:00Z"), None), Ownership::Ours);
        assert_eq!(
            judge(claim, Some("2026-11-27T10:00:03+00:00"), None),
            Ownership::Ours
        );
    }

    #[test]
    fn an_object_older_than_the_claim_is_not_ours() {
        let claim = at("2026-11-27T10:00:00Z");
        assert_eq!(
            judge(claim, Some("2026-11-26T09:00:00Z"), None),
            Ownership::NotOurs
        );
    }

    #[test]
    fn an_object_created_just_before_the_claim_is_not_provably_ours() {
        let claim = at("2026-11-27T10:00:00Z");
        assert_eq!(
            judge(claim, Some("2026-11-27T09:59:30Z"), None),
            Ownership::Unprovable
        );
        assert_eq!(judge(claim, None, None), Ownership::Unprovable);
        assert_eq!(judge(claim, Some("yesterday"), None), Ownership::Unprovable);
    }

    #[test]
    fn clock_skew_either_way_never_makes_someone_elses_object_ours() {
        // The claim was taken at 10:00:00 by the cluster's clock.
        let claim = at("2026-11-27T10:00:00Z");
        // Altostrat's clock 90 s behind: our own create, sent at 10:00:01, says 09:58:31. Not
        // provable, so nothing is adopted: an explicit adoption is asked for instead.
        assert_eq!(
            judge(claim, Some("2026-11-27T09:58:31Z"), None),
            Ownership::Unprovable
        );
        // More than the tolerance behind: indistinguishable from an older instance, left alone.
        assert_eq!(
            judge(claim, Some("2026-11-27T09:55:00Z"), None),
            Ownership::NotOurs
        );
        // Altostrat's clock ahead: a create of ours looks later still, and is ours; someone
        // else's object is never found this way for an instance (its POST would have been refused as
        // taken) unless made within the skew before the claim, the documented limit.
        assert_eq!(judge(claim, Some("2026-11-27T10:01:30Z"), None), Ownership::Ours);
        // Whatever the clocks say, an object another record holds is not ours.
        let held = Some("VpnPeer team-b/bob".to_owned());
        assert_eq!(
            judge(claim, Some("2026-11-27T10:01:30Z"), held),
            Ownership::RecordedElsewhere("VpnPeer team-b/bob".into())
        );
    }

    #[test]
    fn without_a_claim_nothing_found_is_ours() {
        assert_eq!(
            judge(None, Some("2030-01-01T00:00:00Z"), None),
            Ownership::NotOurs
        );
    }

    #[test]
    fn an_object_another_resource_records_is_never_ours() {
        let claim = at("2026-11-27T10:00:00Z");
        assert_eq!(
            judge(claim, Some("2026-11-27T10:00:01Z"), Some("team-b/hub".into())),
            Ownership::RecordedElsewhere("team-b/hub".into())
        );
    }
}
