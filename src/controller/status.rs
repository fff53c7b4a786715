//! The one status writer: every `.status` write of a reconcile goes through [`StatusWriter`],
//! which merges conditions, applies the one `observedGeneration` rule and skips writes that
//! would not change anything.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};

use super::FIELD_MANAGER;
use super::approval;
use super::conditions::{self, ConditionState, ConditionedStatus, HasStatus, READY, STALLED, SYNCED};
use super::error::{Error, Result, Retry};
use super::policy::{self, Gate};
use crate::crd::{APPROVE_PLAN_ANNOTATION, ApprovedPlan, DeletionPolicy};

/// What every status one reconcile writes carries, whatever else it says: the policy it was
/// written under, the `Paused` condition while the resource is paused, and the reconcile
/// request it handles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub gate: Gate,
    /// The value of a reconcile request this reconcile handles (see [`policy::reconcile_request`]).
    pub request: Option<String>,
    /// The id the spec adopts explicitly (`instanceId`, `peerId`).
    pub adopted: Option<String>,
    /// The deletion policy in force, once this reconcile has read the object's record.
    pub deletion: Option<DeletionPolicy>,
}

impl Stamp {
    pub fn of<K: HasStatus>(obj: &K) -> Self {
        Self {
            gate: Gate::of(obj),
            request: policy::reconcile_request(obj),
            adopted: obj.adopted_id().map(str::to_owned),
            deletion: None,
        }
    }

    /// Marks `next` as written under this reconcile's policy. An id observed under
    /// `ObserveOnly` is never carried into a status of another policy, where it would count
    /// as the resource's own: only an explicit adoption of that id keeps it.
    fn mark_policy<S: ConditionedStatus>(&self, stored: Option<&S>, next: &mut S) {
        let observed = policy::observed_id(stored);
        let carried = observed.is_some() && next.recorded_id() == observed;
        if !self.gate.observes() && carried && self.adopted.as_deref() != observed {
            next.forget_recorded_id();
        }
        next.set_management_policy(self.gate.policy);
        next.set_deletion_policy(self.deletion.or(stored.and_then(|s| s.deletion_policy())));
    }

    /// Acknowledges the request this reconcile handles; otherwise keeps the one acknowledged
    /// before.
    fn acknowledge<S: ConditionedStatus>(&self, stored: Option<&S>, next: &mut S) {
        let before = stored.and_then(|s| s.last_handled_reconcile_at());
        let handled = self.request.as_deref().or(before).map(str::to_owned);
        next.set_last_handled_reconcile_at(handled);
    }

    /// `desired` and the conditions every write of this reconcile carries.
    fn conditions(&self, desired: &[ConditionState]) -> Vec<ConditionState> {
        let mut all = desired.to_vec();
        if self.gate.paused {
            all.push(policy::paused_condition());
        }
        all
    }
}

/// Writes the status of one object during one reconcile, and remembers what is stored.
///
/// The `observedGeneration` rule: a status written by [`StatusWriter::write`] describes the
/// current generation, so it carries it, top level and in every condition. Only a failure that
/// leaves a working resource Ready (see [`failed_status`]) keeps the previous top-level value.
pub(crate) struct StatusWriter<K: HasStatus> {
    api: Api<K>,
    name: String,
    generation: Option<i64>,
    now: Time,
    stored: Option<K::Status>,
    stamp: Stamp,
    /// The object's `resourceVersion` after this reconcile's last write to it: the
    /// precondition of a later metadata patch in the same reconcile, which would otherwise
    /// find its own status write in the way.
    version: Option<String>,
    created: Option<Time>,
    /// Set when this reconcile wrote the object's first `Ready=True` (see [`turns_ready_first`]):
    /// how long after its creation.
    first_ready: Option<std::time::Duration>,
    /// The approval every status this reconcile writes records (`status.approvedPlan`): the
    /// stored one, until a call of an approved plan is sent.
    approved: Option<ApprovedPlan>,
    /// The digest approved that the plan no longer has: a plan written is shown as changed.
    plan_changed: Option<String>,
}

impl<K> StatusWriter<K>
where
    K: HasStatus + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    /// A writer for `obj`, which starts from the status `obj` carries; `now` stamps every
    /// condition transition of this reconcile.
    pub fn new(api: Api<K>, obj: &K, now: Time) -> Self {
        Self {
            api,
            name: obj.name_any(),
            generation: obj.meta().generation,
            now,
            stored: obj.status().cloned(),
            stamp: Stamp::of(obj),
            version: obj.resource_version(),
            created: obj.meta().creation_timestamp.clone(),
            first_ready: None,
            // Removing the annotation withdraws an approval, spent or not.
            approved: policy::annotation(obj, APPROVE_PLAN_ANNOTATION)
                .and(obj.status().and_then(|s| s.approved_plan()).cloned()),
            plan_changed: None,
        }
    }

    /// Records the approval as it stands after a call of an approved plan was sent.
    pub fn set_approved(&mut self, approved: ApprovedPlan) {
        self.approved = Some(approved);
    }

    /// Notes that `approved` was approved and is not the plan now (see [`plan_changed`]).
    pub fn set_plan_changed(&mut self, approved: Option<String>) {
        self.plan_changed = approved;
    }

    /// How long after its creation the object turned Ready for the first time, if this
    /// reconcile wrote that `Ready=True`.
    pub fn first_ready(&self) -> Option<std::time::Duration> {
        self.first_ready
    }

    /// The status as stored, including this reconcile's own writes.
    pub fn stored(&self) -> Option<&K::Status> {
        self.stored.as_ref()
    }

    /// The reason of the stored `Ready` condition, this reconcile's own writes included: a
    /// different one about to be written is a transition.
    pub fn ready_reason(&self) -> Option<&str> {
        self.stored
            .as_ref()
            .and_then(|s| conditions::ready_reason(s.conditions()))
    }

    /// See the `version` field.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Notes the version a metadata patch of this reconcile produced.
    pub fn set_version(&mut self, version: Option<String>) {
        self.version = version;
    }

    /// Notes the deletion policy in force, which every status this reconcile writes shows.
    pub fn set_deletion_policy(&mut self, policy: DeletionPolicy) {
        self.stamp.deletion = Some(policy);
    }

    /// What this reconcile may write to Altostrat (as every status it writes says).
    pub fn gate(&self) -> Gate {
        self.stamp.gate
    }

    /// The time this reconcile stamps on condition transitions.
    pub fn now(&self) -> &Time {
        &self.now
    }

    /// Writes `next` with `desired` conditions for the current generation; nothing is sent
    /// when that is what is stored already.
    pub async fn write(&mut self, mut next: K::Status, desired: &[ConditionState]) -> Result<()> {
        let existing = self.stored.as_ref().map(|s| s.conditions()).unwrap_or_default();
        let mut desired = self.stamp.conditions(desired);
        if let (Some(approved), Some(now)) = (&self.plan_changed, approval::digest(next.plan())) {
            desired = plan_changed(desired, approved, &now);
        }
        next.set_conditions(conditions::merge(existing, &desired, self.generation, &self.now));
        next.set_observed_generation(self.generation);
        self.stamp.acknowledge(self.stored.as_ref(), &mut next);
        self.stamp.mark_policy(self.stored.as_ref(), &mut next);
        self.store(next).await
    }

    /// Writes `desired` conditions over the recorded fields, for a step that plans nothing
    /// (a wait, a deletion): a plan shown before is no longer what comes next.
    pub async fn write_conditions(&mut self, desired: &[ConditionState]) -> Result<()> {
        let mut next = self.stored.clone().unwrap_or_default();
        next.set_plan(Vec::new());
        self.write(next, desired).await
    }

    /// Writes the condition of type `type_` that a stage of its own owns (see
    /// [`conditions::replace_one`]; `None` removes it) with the fields that go with it; the
    /// other conditions and the generation stay as stored.
    pub async fn write_stage(
        &mut self,
        (type_, desired): (&'static str, Option<ConditionState>),
        change: impl FnOnce(&mut K::Status),
    ) -> Result<()> {
        let mut next = self.stored.clone().unwrap_or_default();
        change(&mut next);
        let existing = next.conditions().to_vec();
        let merged = conditions::replace_one(&existing, type_, desired.as_ref(), self.generation, &self.now);
        next.set_conditions(conditions::profile_stall(merged, self.generation, &self.now));
        self.store(next).await
    }

    /// Changes recorded fields (not conditions, not the generation) of the stored status.
    pub async fn update_fields(&mut self, change: impl FnOnce(&mut K::Status)) -> Result<()> {
        let mut next = self.stored.clone().unwrap_or_default();
        change(&mut next);
        self.store(next).await
    }

    /// Records a failed attempt on top of what is stored, if its outcome is reported. Returns
    /// whether the status changed, so that a repeating error is neither a write loop nor an
    /// event storm.
    ///
    /// Only the conditions, `observedGeneration` and the handled reconcile request are sent, as
    /// a merge patch: the copy this reconcile started from may predate an id an earlier
    /// reconcile recorded, and a failure must never erase it.
    pub async fn record_failure(&mut self, error: &Error) -> bool {
        if error.outcome().event.is_none() {
            return false;
        }
        let now = &self.now;
        let next = failed_status(self.stored.as_ref(), error, (self.generation, now), &self.stamp);
        if self.stored.as_ref() == Some(&next) {
            return false;
        }
        match merge_conditions(&self.api, &self.name, &next).await {
            Ok(version) => {
                self.version = version.or(self.version.take());
                self.stored = Some(next);
            }
            Err(e) => tracing::warn!(error = %e, "failed to record the failure in status"),
        }
        true
    }

    async fn store(&mut self, mut next: K::Status) -> Result<()> {
        next.set_plan_digest(approval::digest(next.plan()));
        next.set_approved_plan(self.approved.clone());
        if self.stored.as_ref() == Some(&next) {
            return Ok(());
        }
        if let Some(version) = apply_status(&self.api, &self.name, &next).await? {
            self.version = Some(version);
        }
        let before = self.stored.as_ref().map(|s| s.conditions()).unwrap_or_default();
        if turns_ready_first(self.generation, before, next.conditions())
            && let Some(created) = &self.created
        {
            let age = self.now.0.duration_since(created.0);
            self.first_ready = Some(age.unsigned_abs());
        }
        self.stored = Some(next);
        Ok(())
    }
}

/// `desired` with each condition that says the calls are planned saying instead that the plan
/// is not the one approved (`approved`), but `now`, and that nothing is sent.
fn plan_changed(desired: Vec<ConditionState>, approved: &str, now: &str) -> Vec<ConditionState> {
    desired
        .into_iter()
        .map(|c| match c.reason {
            conditions::reason::PLANNED => {
                let message = format!(
                    "the plan approved ({approved}, vpn.altostrat.io/approve-plan) is no longer the plan; \
                     nothing is sent: the plan is now {now} (status.plan), approve it to apply it. {}",
                    c.message
                );
                ConditionState::new(c.type_, c.status, conditions::reason::PLAN_CHANGED, message)
            }
            _ => c,
        })
        .collect()
}

/// Whether a status write turns `Ready` True for what is taken as the first time: at
/// generation 1 (the spec as created), over a Ready condition that is missing or not True.
/// A new hub's Ready goes False from Provisioning to Updating (its routes and DNS) to True, and
/// an edited one's from True to Updating and back, so the reason cannot tell them apart; the
/// generation can. A resource edited before its first Ready is not counted; one never edited
/// that falls out of Ready (a correction of drift, a failure only an edit or a Secret fixes) and
/// recovers is counted again, with its whole age.
pub(crate) fn turns_ready_first(generation: Option<i64>, before: &[Condition], after: &[Condition]) -> bool {
    let ready = |conditions: &[Condition]| conditions.iter().any(|c| c.type_ == READY && c.status == "True");
    generation == Some(1) && ready(after) && !ready(before)
}

/// The status after a failed attempt (pure).
///
/// `Synced` turns False for the current generation, with the reason of the error's
/// [`Outcome`](super::error::Outcome), and `Stalled` True when the outcome stalls. When `Ready`
/// was True and the failure is not one only an edit can lift (its retry is not
/// [`Retry::WaitForChange`]), `Ready` is left untouched — the hub or peer still works — and
/// `observedGeneration` does not advance, so kstatus/Flux keep waiting for the new spec instead
/// of reporting it applied. Otherwise `Ready` turns False with the outcome's reason for the
/// current generation.
pub(crate) fn failed_status<S: ConditionedStatus>(
    stored: Option<&S>,
    error: &Error,
    (generation, now): (Option<i64>, &Time),
    stamp: &Stamp,
) -> S {
    let mut status = stored.cloned().unwrap_or_default();
    let outcome = error.outcome();
    // A request held back by the budget or the rate limit has not been handled: its look is
    // still to come.
    if outcome.reason != conditions::reason::THROTTLED {
        stamp.acknowledge(stored, &mut status);
    }
    let message = error.to_string();
    let kept_ready = status
        .conditions()
        .iter()
        .find(|c| c.type_ == READY && c.status == "True")
        .filter(|_| outcome.retry != Retry::WaitForChange)
        .cloned();
    let synced = ConditionState::new(SYNCED, false, outcome.reason, message.clone());
    let stalled = ConditionState::new(STALLED, true, outcome.reason, message.clone());
    let failed = if outcome.stalled {
        stamp.conditions(&[synced, stalled])
    } else {
        stamp.conditions(&[synced])
    };
    let failed = failed.as_slice();
    let merged = match kept_ready {
        Some(ready) => {
            let mut merged = conditions::merge(status.conditions(), failed, generation, now);
            merged.insert(0, ready);
            merged
        }
        None => {
            let ready = ConditionState::new(READY, false, outcome.reason, message);
            status.set_observed_generation(generation);
            let desired: Vec<ConditionState> = std::iter::once(ready).chain(failed.iter().cloned()).collect();
            conditions::merge(status.conditions(), &desired, generation, now)
        }
    };
    status.set_conditions(merged);
    status
}

/// Writes `.status` by server-side apply under [`FIELD_MANAGER`] and returns the new
/// `resourceVersion`. A resource deleted meanwhile is not an error.
async fn apply_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<Option<String>>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
        Ok(written) => Ok(written.resource_version()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(Error::kube(format!("status write of {} {name}", K::kind(&())))(e)),
    }
}

/// Merge-patches only the conditions, `observedGeneration` and `lastHandledReconcileAt` of
/// `.status`.
async fn merge_conditions<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<Option<String>>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let full = serde_json::to_value(status).unwrap_or_default();
    let mut partial = serde_json::Map::new();
    for key in ["conditions", "observedGeneration", "lastHandledReconcileAt"] {
        if let Some(value) = full.get(key) {
            partial.insert(key.to_owned(), value.clone());
        }
    }
    let patch = serde_json::json!({ "status": partial });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
        Ok(written) => Ok(written.resource_version()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(Error::kube(format!("status patch of {} {name}", K::kind(&())))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::conditions::reason;
    use super::*;
    use crate::altostrat::{ApiError, Endpoint};
    use crate::crd::{ManagementPolicy, VpnPeerStatus};
    use k8s_openapi::jiff::Timestamp;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn ready_status(generation: i64) -> VpnPeerStatus {
        VpnPeerStatus {
            peer_id: Some("p".into()),
            observed_generation: Some(generation),
            conditions: conditions::merge(
                &[],
                &[
                    ConditionState::new(READY, true, "Available", "ok"),
                    ConditionState::new(SYNCED, true, "ReconcileSuccess", "ok"),
                ],
                Some(generation),
                &at(10),
            ),
            ..Default::default()
        }
    }

    fn server_error() -> Error {
        Error::Api(ApiError::Server {
            endpoint: Endpoint::UpdatePeer,
            status: 502,
            message: "bad gateway".into(),
        })
    }

    fn ready(status: bool, why: &'static str) -> Vec<Condition> {
        conditions::merge(
            &[],
            &[ConditionState::new(READY, status, why, "m")],
            Some(1),
            &at(10),
        )
    }

    #[test]
    fn the_first_ready_is_the_spec_as_created_turning_ready() {
        let available = ready(true, reason::AVAILABLE);
        // Created, provisioned, its configuration applied, or failed before it ever worked.
        for before in [
            vec![],
            ready(false, reason::PROVISIONING),
            ready(false, reason::UPDATING),
            ready(false, reason::CREDENTIALS_ERROR),
        ] {
            assert!(turns_ready_first(Some(1), &before, &available), "{before:?}");
            // An edited spec: the way to Ready is an update's, not a creation's.
            assert!(!turns_ready_first(Some(2), &before, &available), "{before:?}");
        }
        assert!(!turns_ready_first(Some(1), &available, &available));
        assert!(!turns_ready_first(
            Some(1),
            &[],
            &ready(false, reason::PROVISIONING)
        ));
    }

    #[test]
    fn a_transient_failure_keeps_a_working_resource_ready_and_its_generation() {
        let failed = failed_status(
            Some(&ready_status(1)),
            &server_error(),
            (Some(2), &at(20)),
            &Stamp::default(),
        );
        assert_eq!(
            failed.observed_generation,
            Some(1),
            "the new spec is not applied yet"
        );
        let ready = &failed.conditions[0];
        assert_eq!((ready.type_.as_str(), ready.status.as_str()), ("Ready", "True"));
        let synced = failed.conditions.iter().find(|c| c.type_ == "Synced").unwrap();
        assert_eq!(
            (synced.status.as_str(), synced.reason.as_str()),
            ("False", "ApiError")
        );
        assert_eq!(synced.observed_generation, Some(2));
        assert_eq!(failed.peer_id.as_deref(), Some("p"), "what was recorded stays");
    }

    #[test]
    fn an_error_only_the_user_can_fix_turns_ready_false_for_the_current_generation() {
        let error = Error::InvalidSpec("spec.hostname does not match".into());
        let failed = failed_status(
            Some(&ready_status(1)),
            &error,
            (Some(2), &at(20)),
            &Stamp::default(),
        );
        assert_eq!(failed.observed_generation, Some(2));
        for type_ in ["Ready", "Synced"] {
            let c = failed.conditions.iter().find(|c| c.type_ == type_).unwrap();
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("False", "InvalidSpec"),
                "{type_}"
            );
        }
        assert_eq!(failed.conditions[0].last_transition_time, at(20));
    }

    #[test]
    fn errors_only_a_person_can_fix_stall_and_transient_ones_do_not() {
        let stalled = |status: &VpnPeerStatus| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True")
        };
        let invalid = Error::InvalidSpec("bad".into());
        assert!(stalled(&failed_status(
            Some(&ready_status(1)),
            &invalid,
            (Some(2), &at(20)),
            &Stamp::default()
        )));
        let credentials = Error::Credentials("Secret missing".into());
        let failed = failed_status(
            Some(&ready_status(1)),
            &credentials,
            (Some(2), &at(20)),
            &Stamp::default(),
        );
        assert!(stalled(&failed), "even while the hub keeps working");
        assert!(!stalled(&failed_status(
            Some(&ready_status(1)),
            &server_error(),
            (Some(2), &at(20)),
            &Stamp::default()
        )));
        assert!(
            !stalled(&ready_status(1)),
            "a successful write carries no Stalled condition"
        );
    }

    #[test]
    fn a_failure_of_a_paused_resource_still_says_it_is_paused() {
        let paused = Stamp {
            gate: Gate {
                paused: true,
                ..Gate::default()
            },
            ..Stamp::default()
        };
        let failed = failed_status(
            Some(&ready_status(1)),
            &server_error(),
            (Some(2), &at(20)),
            &paused,
        );
        let condition = failed.conditions.iter().find(|c| c.type_ == "Paused").unwrap();
        assert_eq!(condition.status, "True");
    }

    #[test]
    fn a_failed_reconcile_acknowledges_its_request_unless_the_budget_held_its_look_back() {
        let request = Stamp {
            request: Some("2026-11-27T10:00:00Z".into()),
            ..Stamp::default()
        };
        let failed = failed_status(
            Some(&ready_status(1)),
            &server_error(),
            (Some(1), &at(20)),
            &request,
        );
        assert_eq!(
            failed.last_handled_reconcile_at.as_deref(),
            Some("2026-11-27T10:00:00Z")
        );
        let throttled = Error::Api(ApiError::Throttled {
            endpoint: Endpoint::ListInstances,
            expected_wait: std::time::Duration::from_secs(3),
        });
        let held_back = failed_status(Some(&ready_status(1)), &throttled, (Some(1), &at(20)), &request);
        assert_eq!(held_back.last_handled_reconcile_at, None);
    }

    #[test]
    fn an_observed_id_never_survives_into_a_managed_status_unless_adopted() {
        let observed = VpnPeerStatus {
            peer_id: Some("p-1".into()),
            management_policy: Some(ManagementPolicy::ObserveOnly),
            ..Default::default()
        };
        let written = |stamp: Stamp| {
            let mut next = observed.clone();
            stamp.mark_policy(Some(&observed), &mut next);
            (next.peer_id, next.management_policy)
        };
        let gate = |policy| Gate {
            policy,
            paused: false,
        };
        for policy in [ManagementPolicy::Full, ManagementPolicy::Plan] {
            let managing = Stamp {
                gate: gate(policy),
                ..Stamp::default()
            };
            assert_eq!(written(managing), (None, Some(policy)));
        }
        let adopting = Stamp {
            adopted: Some("p-1".into()),
            ..Stamp::default()
        };
        assert_eq!(
            written(adopting),
            (Some("p-1".into()), Some(ManagementPolicy::Full))
        );
        let observing = Stamp {
            gate: gate(ManagementPolicy::ObserveOnly),
            ..Stamp::default()
        };
        assert_eq!(
            written(observing),
            (Some("p-1".into()), Some(ManagementPolicy::ObserveOnly))
        );
    }

    #[test]
    fn repeating_the_same_failure_produces_the_same_status() {
        let once =
            failed_status::<VpnPeerStatus>(None, &server_error(), (Some(1), &at(20)), &Stamp::default());
        let twice = failed_status(
            Some(&once),
            &server_error(),
            (Some(1), &at(30)),
            &Stamp::default(),
        );
        assert_eq!(once, twice, "a repeating error must not be a write loop");
    }
}
