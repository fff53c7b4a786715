//! Status conditions following the Kubernetes API conventions, so kstatus (Flux `wait`),
//! Argo CD health checks and `kubectl wait --for=condition=Ready` work unchanged.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

use crate::crd::{
    ApprovedPlan, DeletionPolicy, ManagementPolicy, PlannedCall, VpnInstance, VpnInstanceStatus, VpnPeer,
    VpnPeerStatus,
};

pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";
/// kstatus' `Stalled`: True while only a person can make progress (the spec, the credentials
/// or the ownership of the Altostrat object must change), so Flux and other kstatus readers
/// fail at once instead of at their timeout. Absent otherwise.
pub const STALLED: &str = "Stalled";
/// True while the resource carries the pause annotation (absent otherwise): nothing is written
/// to Altostrat, drift is still observed and shown in `Synced`.
pub const PAUSED: &str = "Paused";
/// With `spec.profileSecret`: True while the Secret holds the peer's current client profile.
/// Written by the profile delivery alone, after the peer is in sync; absent otherwise.
pub const PROFILE_READY: &str = "ProfileReady";

/// Conditions a stage of their own writes (see [`replace_one`]): every other write keeps them
/// as they are, and a `Stalled` of the profile delivery's (see [`profile_stall`]).
const CARRIED: &[&str] = &[PROFILE_READY];

/// The `ProfileReady` reasons only a person can resolve: they stall the resource too.
pub const PROFILE_STALLS: &[&str] = &[
    reason::PROFILE_NOT_AVAILABLE,
    reason::SECRET_CONFLICT,
    reason::SHARE_TOKEN_REJECTED,
];

fn carried(c: &Condition) -> bool {
    CARRIED.contains(&c.type_.as_str()) || (c.type_ == STALLED && PROFILE_STALLS.contains(&c.reason.as_str()))
}

/// Machine-readable reasons used in conditions and events.
pub mod reason {
    pub const AVAILABLE: &str = "Available";
    pub const PROVISIONING: &str = "Provisioning";
    pub const UPDATING: &str = "Updating";
    pub const RECONCILE_SUCCESS: &str = "ReconcileSuccess";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const API_ERROR: &str = "ApiError";
    pub const CREDENTIALS_ERROR: &str = "CredentialsError";
    /// A VpnCredentials' token: accepted by Altostrat (or refused within a rotation's grace).
    pub const TOKEN_ACCEPTED: &str = "TokenAccepted";
    /// A VpnCredentials' token no answer has judged yet.
    pub const TOKEN_CHECKING: &str = "TokenChecking";
    /// A VpnCredentials' token refused and never accepted, within the grace.
    pub const TOKEN_REFUSED: &str = "TokenRefused";
    /// A VpnCredentials' token refused for longer than the grace.
    pub const TOKEN_REJECTED: &str = "TokenRejected";
    pub const DELETING: &str = "Deleting";
    pub const WAITING_FOR_INSTANCE: &str = "WaitingForInstance";
    pub const INSTANCE_NOT_FOUND: &str = "InstanceNotFound";
    pub const NOT_PERMITTED: &str = "NotPermitted";
    pub const HOSTNAME_TAKEN: &str = "HostnameTaken";
    pub const NOT_OWNED: &str = "NotOwned";
    /// The API budget of the resource's credentials holds its next request back for now.
    pub const THROTTLED: &str = "Throttled";
    /// Altostrat normalises a value of the spec, so applying it again would change nothing.
    pub const NOT_CONVERGING: &str = "NotConverging";
    /// Altostrat accepted the deletion and still holds the object: its teardown is watched.
    pub const TEARING_DOWN: &str = "TearingDown";
    /// Altostrat refuses to delete the object (and still holds it).
    pub const DELETE_REFUSED: &str = "DeleteRefused";
    /// The peer's user (resp. site) does not exist in Altostrat.
    pub const USER_NOT_FOUND: &str = "UserNotFound";
    pub const SITE_NOT_FOUND: &str = "SiteNotFound";
    /// A seat, quota or subscription limit refuses the object.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// The resource is paused: its writes to Altostrat are withheld.
    pub const RECONCILE_PAUSED: &str = "ReconcilePaused";
    /// Altostrat differs from the spec and the correction is withheld (paused, or
    /// `ObserveOnly`); the message names the fields.
    pub const DRIFTED: &str = "Drifted";
    /// (`Plan`) The next writes are listed in `status.plan`, not sent.
    pub const PLANNED: &str = "Planned";
    /// (`Plan`) The plan differs from the one approved: nothing is sent.
    pub const PLAN_CHANGED: &str = "PlanChanged";
    /// (`ObserveOnly`) Altostrat matches the fields the spec sets.
    pub const OBSERVED: &str = "Observed";
    /// (`ObserveOnly`) No object to observe was found.
    pub const NOT_FOUND: &str = "NotFound";
    /// (`ProfileReady`) The Secret holds the peer's current client profile.
    pub const DELIVERED: &str = "Delivered";
    /// (`ProfileReady`) The profile waits for the peer or its instance (being created, or
    /// still applying changes).
    pub const PROFILE_PENDING: &str = "ProfilePending";
    /// (`ProfileReady`) Altostrat issues no client profile for this peer (a site peer, no
    /// share token), or answered one in a form the operator does not know.
    pub const PROFILE_NOT_AVAILABLE: &str = "ProfileNotAvailable";
    /// (`ProfileReady`) A Secret of that name exists and is not this peer's: left untouched.
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    /// (`ProfileReady`) Altostrat refused the peer's share token, a freshly observed one too.
    pub const SHARE_TOKEN_REJECTED: &str = "ShareTokenRejected";
}

/// The desired value of one condition, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionState {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl ConditionState {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// The current time at the one-second precision the API server stores, so that a status we
/// write compares equal to the one we read back (otherwise every reconcile would write).
pub fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Builds the condition list from the desired states. `lastTransitionTime` is carried over
/// from `existing` unless the status flipped, so a no-op reconcile produces identical
/// conditions. Conditions of other types in `existing` are dropped (this operator owns them
/// all), except those of the `CARRIED` types, which are kept as they are.
pub fn merge(
    existing: &[Condition],
    desired: &[ConditionState],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let carried = existing
        .iter()
        .filter(|c| carried(c) && !desired.iter().any(|d| d.type_ == c.type_))
        .cloned();
    let merged: Vec<Condition> = desired
        .iter()
        .map(|d| condition(existing, d, generation, now))
        .collect();
    merged.into_iter().chain(carried).collect()
}

/// `existing` with the condition of type `type_` set to `desired`, or removed (`None`); the
/// others stay as they are.
pub fn replace_one(
    existing: &[Condition],
    type_: &str,
    desired: Option<&ConditionState>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let others = existing.iter().filter(|c| c.type_ != type_).cloned();
    let replaced = desired.map(|d| condition(existing, d, generation, now));
    others.chain(replaced).collect()
}

/// `conditions` with `Stalled` as the profile delivery has it: True with the `ProfileReady`
/// reason while that reason needs a person, absent once it no longer does. A stall of the
/// reconcile's own (a failure) is left as it is: it says more.
pub fn profile_stall(conditions: Vec<Condition>, generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let stalls = |c: &Condition| PROFILE_STALLS.iter().copied().find(|r| *r == c.reason);
    let stalled = conditions.iter().find(|c| c.type_ == STALLED);
    if stalled.is_some_and(|s| stalls(s).is_none()) {
        return conditions;
    }
    let profile = conditions
        .iter()
        .find(|c| c.type_ == PROFILE_READY && c.status == "False")
        .and_then(|c| Some(ConditionState::new(STALLED, true, stalls(c)?, c.message.clone())));
    match (profile, stalled) {
        (None, None) => conditions,
        (desired, _) => replace_one(&conditions, STALLED, desired.as_ref(), generation, now),
    }
}

fn condition(
    existing: &[Condition],
    desired: &ConditionState,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if desired.status { "True" } else { "False" };
    let previous = existing.iter().find(|c| c.type_ == desired.type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now.clone(),
    };
    Condition {
        type_: desired.type_.to_owned(),
        status: status.to_owned(),
        reason: desired.reason.to_owned(),
        message: truncate(&desired.message, 1024),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The reason of the `Ready` condition, if there is one.
pub fn ready_reason(conditions: &[Condition]) -> Option<&str> {
    conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.as_str())
}

/// Whether the `Ready` condition is currently true.
pub fn is_ready(conditions: &[Condition]) -> bool {
    conditions.iter().any(|c| c.type_ == READY && c.status == "True")
}

/// Whether the last reconcile left the object converged: `Ready` and `Synced` true for the
/// current generation. Such an object's next look at Altostrat is a drift check.
pub fn is_converged(
    conditions: &[Condition],
    observed_generation: Option<i64>,
    generation: Option<i64>,
) -> bool {
    let holds = |type_: &str| conditions.iter().any(|c| c.type_ == type_ && c.status == "True");
    holds(READY) && holds(SYNCED) && observed_generation.is_some() && observed_generation == generation
}

fn truncate(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_owned();
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// The status types of both kinds, as far as their conditions and bookkeeping go.
pub(crate) trait ConditionedStatus: Clone + Default + PartialEq + serde::Serialize {
    fn conditions(&self) -> &[Condition];
    fn set_conditions(&mut self, conditions: Vec<Condition>);
    fn set_observed_generation(&mut self, generation: Option<i64>);
    fn set_plan(&mut self, plan: Vec<PlannedCall>);
    fn plan(&self) -> &[PlannedCall];
    fn set_plan_digest(&mut self, digest: Option<String>);
    fn approved_plan(&self) -> Option<&ApprovedPlan>;
    fn set_approved_plan(&mut self, approved: Option<ApprovedPlan>);
    fn last_handled_reconcile_at(&self) -> Option<&str>;
    fn set_last_handled_reconcile_at(&mut self, at: Option<String>);
    fn management_policy(&self) -> Option<ManagementPolicy>;
    fn set_management_policy(&mut self, policy: ManagementPolicy);
    fn deletion_policy(&self) -> Option<DeletionPolicy>;
    fn set_deletion_policy(&mut self, policy: Option<DeletionPolicy>);
    /// The Altostrat id of the object (`instanceId`, `peerId`).
    fn recorded_id(&self) -> Option<&str>;
    fn forget_recorded_id(&mut self);
}

/// Both status types carry the same bookkeeping fields; only the field of their Altostrat id
/// differs.
macro_rules! conditioned_status {
    ($status:ty, $id:ident) => {
        impl ConditionedStatus for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn set_conditions(&mut self, conditions: Vec<Condition>) {
                self.conditions = conditions;
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
            fn set_plan(&mut self, plan: Vec<PlannedCall>) {
                self.plan = plan;
            }
            fn plan(&self) -> &[PlannedCall] {
                &self.plan
            }
            fn set_plan_digest(&mut self, digest: Option<String>) {
                self.plan_digest = digest;
            }
            fn approved_plan(&self) -> Option<&ApprovedPlan> {
                self.approved_plan.as_ref()
            }
            fn set_approved_plan(&mut self, approved: Option<ApprovedPlan>) {
                self.approved_plan = approved;
            }
            fn last_handled_reconcile_at(&self) -> Option<&str> {
                self.last_handled_reconcile_at.as_deref()
            }
            fn set_last_handled_reconcile_at(&mut self, at: Option<String>) {
                self.last_handled_reconcile_at = at;
            }
            fn management_policy(&self) -> Option<ManagementPolicy> {
                self.management_policy
            }
            fn set_management_policy(&mut self, policy: ManagementPolicy) {
                self.management_policy = Some(policy);
            }
            fn deletion_policy(&self) -> Option<DeletionPolicy> {
                self.deletion_policy
            }
            fn set_deletion_policy(&mut self, policy: Option<DeletionPolicy>) {
                self.deletion_policy = policy;
            }
            fn recorded_id(&self) -> Option<&str> {
                self.$id.as_deref()
            }
            fn forget_recorded_id(&mut self) {
                self.$id = None;
            }
        }
    };
}

conditioned_status!(VpnInstanceStatus, instance_id);
conditioned_status!(VpnPeerStatus, peer_id);

/// The resource kinds, as far as their status is concerned.
pub(crate) trait HasStatus: Resource<DynamicType = ()> {
    type Status: ConditionedStatus + Send + Sync;
    fn status(&self) -> Option<&Self::Status>;
    fn management_policy(&self) -> ManagementPolicy;
    /// The id the spec adopts explicitly (`instanceId`, `peerId`).
    fn adopted_id(&self) -> Option<&str>;
}

/// Both kinds keep their status and policies under the same names; only the spec field that
/// adopts an existing object differs.
macro_rules! has_status {
    ($kind:ty, $status:ty, $adopts:ident) => {
        impl HasStatus for $kind {
            type Status = $status;
            fn status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn management_policy(&self) -> ManagementPolicy {
                self.spec.management_policy
            }
            fn adopted_id(&self) -> Option<&str> {
                self.spec.$adopts.as_deref()
            }
        }
    };
}

has_status!(VpnInstance, VpnInstanceStatus, instance_id);
has_status!(VpnPeer, VpnPeerStatus, peer_id);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn a_profile_only_a_person_can_deliver_stalls_until_it_is_delivered() {
        let state = |type_, status, reason| ConditionState::new(type_, status, reason, "m");
        let ready = state(READY, true, reason::AVAILABLE);
        let conflict = merge(
            &[],
            &[
                ready.clone(),
                state(PROFILE_READY, false, reason::SECRET_CONFLICT),
            ],
            Some(1),
            &at(1),
        );
        let stalled = profile_stall(conflict, Some(1), &at(1));
        let stall = stalled.iter().find(|c| c.type_ == STALLED).expect("stalled");
        assert_eq!(
            (stall.status.as_str(), stall.reason.as_str()),
            ("True", reason::SECRET_CONFLICT)
        );
        // The reconcile's next write keeps it; delivering the profile ends it.
        let rewritten = merge(&stalled, std::slice::from_ref(&ready), Some(1), &at(2));
        assert!(rewritten.iter().any(|c| c.type_ == STALLED), "carried");
        let delivered = replace_one(
            &rewritten,
            PROFILE_READY,
            Some(&state(PROFILE_READY, true, reason::DELIVERED)),
            Some(1),
            &at(3),
        );
        assert!(
            !profile_stall(delivered, Some(1), &at(3))
                .iter()
                .any(|c| c.type_ == STALLED)
        );
        // A failure's stall says more, and stays.
        let failed = merge(
            &[],
            &[
                ready,
                state(PROFILE_READY, false, reason::SECRET_CONFLICT),
                state(STALLED, true, reason::INVALID_SPEC),
            ],
            Some(1),
            &at(1),
        );
        let kept = profile_stall(failed, Some(1), &at(1));
        assert_eq!(
            kept.iter().find(|c| c.type_ == STALLED).unwrap().reason,
            reason::INVALID_SPEC
        );
    }

    #[test]
    fn transition_time_changes_only_when_status_flips() {
        let desired = [ConditionState::new(
            READY,
            false,
            reason::PROVISIONING,
            "creating",
        )];
        let first = merge(&[], &desired, Some(1), &at(100));
        assert_eq!(first[0].last_transition_time, at(100));

        let same_status_new_reason = [ConditionState::new(READY, false, reason::UPDATING, "pending")];
        let second = merge(&first, &same_status_new_reason, Some(2), &at(200));
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!(second[0].reason, "Updating");
        assert_eq!(second[0].observed_generation, Some(2));

        let flipped = [ConditionState::new(READY, true, reason::AVAILABLE, "ok")];
        let third = merge(&second, &flipped, Some(2), &at(300));
        assert_eq!(third[0].last_transition_time, at(300));
        assert!(is_ready(&third));
    }

    #[test]
    fn identical_inputs_give_identical_conditions() {
        let desired = [
            ConditionState::new(READY, true, reason::AVAILABLE, "ok"),
            ConditionState::new(SYNCED, true, reason::RECONCILE_SUCCESS, ""),
        ];
        let first = merge(&[], &desired, Some(3), &at(10));
        assert_eq!(merge(&first, &desired, Some(3), &at(99)), first);
    }

    #[test]
    fn a_stage_condition_survives_other_writes_and_is_replaced_only_by_its_stage() {
        let profile = ConditionState::new(PROFILE_READY, true, reason::DELIVERED, "in Secret vpn");
        let first = replace_one(&[], PROFILE_READY, Some(&profile), Some(1), &at(10));
        let ready = [ConditionState::new(READY, true, reason::AVAILABLE, "ok")];
        let second = merge(&first, &ready, Some(2), &at(20));
        assert_eq!(second.len(), 2);
        let kept = second.iter().find(|c| c.type_ == PROFILE_READY).unwrap();
        assert_eq!(
            (kept.observed_generation, &kept.last_transition_time),
            (Some(1), &at(10))
        );
        let removed = replace_one(&second, PROFILE_READY, None, Some(2), &at(30));
        assert_eq!(
            removed.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            [READY]
        );
    }

    #[test]
    fn now_has_second_precision() {
        assert_eq!(now().0.subsec_nanosecond(), 0);
    }

    #[test]
    fn long_messages_are_truncated_on_char_boundary() {
        let long = "é".repeat(1000);
        let c = merge(
            &[],
            &[ConditionState::new(READY, false, reason::API_ERROR, long)],
            None,
            &at(1),
        );
        assert!(c[0].message.len() <= 1024 + '…'.len_utf8());
    }
}
