//! Reconciler of `VpnInstance`: observe → [`decide`](decide::decide) → act, one step at a
//! time, until a step ends the round.

mod decide;
#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio::time::Instant;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::cleanup::{CleanupObserved, CleanupStep, DeleteAnswer, decide_cleanup};
use super::conditions::{self, ConditionState, READY, SYNCED, reason};
use super::context::{Context, DRIFT_REUSE, LazyToken};
use super::driver::{Handle, Reconciler};
use super::error::{Error, Result};
use super::events::reason as event;
use super::finalizer::{FinalizerState, has_finalizer};
use super::observation::{Look, Repeat, defer_drift_check};
use super::ownership::{self, Claim, Ownership};
use super::plan;
use super::policy::{Gate, reconcile_request};
use super::record::{self, Holding, OwnRecord, instance_record};
use super::status::HasStatus;
use crate::altostrat::Urgency;
use crate::altostrat::model::{Instance, InstanceUpdate};
use crate::altostrat::{ApiError, ApiToken, VpnApi};
use crate::crd::{
    Holder, ManagementPolicy, PlannedCall, RecordOrigin, RecordRole, VpnInstance, VpnInstanceSpec,
    VpnInstanceStatus,
};
use decide::{
    Observed, Remote, Step, decide, desired_conditions, missing_conditions, next_look, observed_status,
    recorded_conditions, time_in_state, withheld_status,
};
use k8s_openapi::jiff::Timestamp;

/// Re-check interval while the instance waits for its VpnPeers to be deleted.
const PEER_DRAIN_POLL: Duration = Duration::from_secs(5);
/// More steps than the longest path of one reconcile (finalizer, fetch, forget, search, claim,
/// create, update, record: 8): reaching it means the decisions loop, which is a bug, not a
/// reason to go on.
const MAX_STEPS: usize = 10;

impl HasStatus for VpnInstance {
    type Status = VpnInstanceStatus;
    fn status(&self) -> Option<&VpnInstanceStatus> {
        self.status.as_ref()
    }
    fn management_policy(&self) -> ManagementPolicy {
        self.spec.management_policy
    }
    fn adopted_id(&self) -> Option<&str> {
        self.spec.instance_id.as_deref()
    }
}

impl Reconciler for VpnInstance {
    const CONTROLLER: &'static str = "vpninstance";

    async fn converge<A: VpnApi>(&self, ctx: &Context<A>, handle: &mut Handle<Self>) -> Result<Action> {
        let namespace = self.namespace().unwrap_or_default();
        let mut token = LazyToken::new(ctx, &namespace, self.spec.credentials_secret_ref.as_ref());
        let started = Instant::now();
        let gate = Gate::of(self);
        let mut hub = HubRecord::look(self, ctx).await?;
        handle
            .status
            .set_deletion_policy(hub.holding().deletion_policy(self.spec.deletion_policy));
        let mut observed = first_look(self, hub.holding());
        for _ in 0..MAX_STEPS {
            let step = decide(&observed);
            tracing::debug!(?step, "next step");
            match step {
                Step::AddFinalizer => observed.finalizer = handle.add_finalizer(self).await?,
                Step::Claim => {
                    // Validated before the claim: a spec that cannot be created claims nothing.
                    ctx.check_region(&token.get().await?, &self.spec.region).await?;
                    claim(self, ctx, handle, (&mut hub, &mut observed)).await?;
                }
                Step::Own { id, role } => {
                    hub.own(self, ctx, &id, role).await?;
                    let policy = hub.holding().deletion_policy(self.spec.deletion_policy);
                    handle.status.set_deletion_policy(policy);
                    observed.refresh(hub.holding());
                }
                Step::Requeue(after) => return Ok(Action::requeue(after)),
                Step::Fetch(id) => match look(self, ctx, handle, (&token.get().await?, id), gate).await? {
                    Ok(remote) => observed.remote = remote,
                    Err(deferred) => return Ok(deferred),
                },
                Step::Forget(id) => forget(self, ctx, handle, (&mut hub, &mut observed), &id).await?,
                Step::Search => observed.remote = search(self, ctx, &token.get().await?, started).await?,
                Step::Create => {
                    observed.remote = create(self, ctx, handle, &mut hub, &token.get().await?).await?;
                    observed.refresh(hub.holding());
                }
                Step::Adopt(found) => {
                    hub.record_id(ctx, Some(&found.id)).await?;
                    observed.refresh(hub.holding());
                    observed.remote = Remote::Found(adopt(handle, found).await?);
                }
                Step::Update { id, body, fields } => {
                    let token = token.get().await?;
                    let update = Update {
                        id,
                        body,
                        fields,
                        token,
                    };
                    observed.remote = send_update(self, ctx, handle, update, &observed.remote).await?;
                    observed.updated = matches!(observed.remote, Remote::Found(_));
                }
                Step::Missing => return missing(self, ctx, handle, &token.get().await?).await,
                Step::Withhold(calls) => {
                    return withhold(self, ctx, handle, (&observed.remote, calls), &mut token).await;
                }
                Step::Record(instance) => {
                    ctx.looked(self);
                    let drift = ctx.drift_interval(&token.get().await?);
                    return record(self, ctx, handle, &instance, drift).await;
                }
                Step::WithdrawClaim(error) => {
                    hub.withdraw_claim(ctx).await?;
                    return Err(error);
                }
                Step::GiveUp(error) => return Err(error),
            }
        }
        Err(Error::Unsettled(VpnInstance::CONTROLLER))
    }

    /// Deletion: honour `deletionPolicy`, wait for peers that still reference the instance,
    /// delete only what is provably this resource's own, and treat "already gone" as done.
    async fn cleanup<A: VpnApi>(&self, ctx: &Context<A>, handle: &mut Handle<Self>) -> Result<Action> {
        let namespace = self.namespace().unwrap_or_default();
        let mut token = LazyToken::new(ctx, &namespace, self.spec.credentials_secret_ref.as_ref());
        let hub = HubRecord::look(self, ctx).await?;
        let mut observed = cleanup_look(self, &hub);
        let mut successor = None;
        let started = Instant::now();
        for _ in 0..MAX_STEPS {
            match decide_cleanup(&observed) {
                CleanupStep::Nothing => return Ok(Action::await_change()),
                CleanupStep::Orphan => {
                    let note = "deletionPolicy is Orphan; the Altostrat instance is left running";
                    handle.activity.record(event::ORPHANED, note);
                    return release(self, ctx, handle, (hub, None)).await;
                }
                CleanupStep::Unmanaged(policy) => {
                    let note =
                        format!("managementPolicy is {policy:?}; the Altostrat instance is left running");
                    handle.activity.record(event::ORPHANED, note);
                    return release(self, ctx, handle, (hub, None)).await;
                }
                CleanupStep::HandOver { id, to } => {
                    let note = format!("Altostrat instance {id} is managed by {to} now; left running");
                    handle.activity.record(event::ORPHANED, note);
                    return release(self, ctx, handle, (hub, successor)).await;
                }
                CleanupStep::CountDependents => observed.dependents = Some(count_dependents(self, ctx)),
                CleanupStep::FindSuccessor(id) => {
                    successor = find_successor(self, ctx, &id).await?;
                    observed.handed_over_to = Some(successor.as_ref().map(record::holder_name));
                }
                CleanupStep::WaitForDependents(n) => return wait_for_dependents(handle, n).await,
                CleanupStep::Search => {
                    let found = search(self, ctx, &token.get().await?, started).await?;
                    let claim = hub.holding().claim(|r| r.instance_id.as_ref());
                    observed.search = Some(judge_found(claim, found));
                }
                CleanupStep::LeaveAlone { id, verdict } => {
                    let what = format!("Altostrat instance {id}");
                    let note = format!(
                        "{}; not deleted",
                        ownership::explain(&verdict, &what, "nothing to delete")
                    );
                    ctx.publish(self, EventType::Warning, event::LEFT_ALONE, note)
                        .await;
                    return release(self, ctx, handle, (hub, None)).await;
                }
                CleanupStep::Inspect(id) => {
                    inspect(self, ctx, (&token.get().await?, &id), &mut observed).await?
                }
                CleanupStep::Delete(id) => delete(ctx, &token.get().await?, &id, &mut observed).await?,
                CleanupStep::Confirm(id) => {
                    let token = token.get().await?;
                    let just_asked = observed.delete_answer.is_some();
                    observed.still_exists =
                        Some(confirm(self, ctx, handle, (&token, &id), just_asked).await?);
                }
                CleanupStep::WaitForTeardown(id) => return wait_for_teardown(ctx, handle, &id).await,
                CleanupStep::Refused { id, message } => {
                    let what = format!("Altostrat instance {id}");
                    return Err(Error::DeleteRefused { what, message });
                }
                CleanupStep::Release => return release(self, ctx, handle, (hub, None)).await,
            }
        }
        Err(Error::Unsettled(VpnInstance::CONTROLLER))
    }
}

/// What a deletion knows before it looks at Altostrat.
fn cleanup_look(obj: &VpnInstance, hub: &HubRecord) -> CleanupObserved {
    let managed = hub.holding().mine_as(RecordRole::Manage);
    CleanupObserved {
        has_finalizer: has_finalizer(obj),
        management: obj.spec.management_policy,
        policy: hub.holding().deletion_policy(obj.spec.deletion_policy),
        may_exist: managed.is_some(),
        dependents: None,
        handed_over_to: None,
        known_id: managed.and_then(|r| r.instance_id.clone()),
        search: None,
        alike: None,
        teardown_started: tearing_down(obj),
        delete_answer: None,
        still_exists: None,
    }
}

/// Claims a create: the finalizer first (a record must never outlive its resource's cleanup),
/// then the hub's record with a fresh claim.
async fn claim<A>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    handle: &mut Handle<VpnInstance>,
    (hub, observed): (&mut HubRecord, &mut Observed<'_>),
) -> Result<()> {
    observed.finalizer = handle.add_finalizer(obj).await?;
    if observed.finalizer == FinalizerState::Stale {
        return Ok(());
    }
    let at = claim_time(handle);
    hub.claim(obj, ctx, at).await?;
    observed.refresh(hub.holding());
    if hub.holding().mine().is_some() {
        observed.claim = Claim::Fresh(at);
    }
    Ok(())
}

/// Forgets a recorded instance that vanished, in the record and then in status, so the create
/// that follows is claimed afresh.
async fn forget<A>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    handle: &mut Handle<VpnInstance>,
    (hub, observed): (&mut HubRecord, &mut Observed<'_>),
    id: &str,
) -> Result<()> {
    let note = format!("Altostrat instance {id} no longer exists; creating it again");
    ctx.publish(obj, EventType::Warning, event::RECREATING, note)
        .await;
    hub.record_id(ctx, None).await?;
    handle.status.update_fields(|s| s.instance_id = None).await?;
    observed.refresh(hub.holding());
    observed.status_id = None;
    observed.remote = Remote::Unknown;
    Ok(())
}

/// The instance `id` as the view holds it, or as a look within the budget finds it; `Err` with
/// the action that defers a drift check the budget holds back.
async fn look<A: VpnApi>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    handle: &Handle<VpnInstance>,
    (token, id): (&ApiToken, String),
    gate: Gate,
) -> Result<std::result::Result<Remote, Action>> {
    // How long a list may be reused for drift checks (see DRIFT_REUSE).
    let reuse = ctx.drift_interval(token).mul_f64(DRIFT_REUSE);
    if let Some(settled) = settled_in_view(obj, ctx, token, (&id, reuse)) {
        return Ok(Ok(Remote::Found(settled)));
    }
    let look = look_for(obj, ctx, reuse, handle, gate);
    match fetch(ctx, token, id, look).await {
        Ok(remote) => Ok(Ok(remote)),
        Err(deferred) => defer_drift_check(deferred, look).map(Err),
    }
}

/// What a reconcile knows before it looks at Altostrat.
fn first_look<'a>(obj: &'a VpnInstance, holding: &Holding) -> Observed<'a> {
    let mut observed = Observed {
        spec: &obj.spec,
        gate: Gate::of(obj),
        finalizer: FinalizerState::of(obj),
        claim: Claim::None,
        recorded_id: None,
        observed_id: None,
        held_elsewhere: None,
        status_id: obj.status.as_ref().and_then(|s| s.instance_id.as_deref()),
        remote: Remote::Unknown,
        updated: false,
    };
    observed.refresh(holding);
    observed
}

impl Observed<'_> {
    /// What the hub's record says, as the decision reads it. A claim this reconcile made stays
    /// fresh.
    fn refresh(&mut self, holding: &Holding) {
        let id_as = |role| holding.mine_as(role).and_then(|r| r.instance_id.clone());
        self.recorded_id = id_as(RecordRole::Manage);
        self.observed_id = id_as(RecordRole::Observe);
        self.held_elsewhere = holding.other().map(str::to_owned);
        self.claim = holding.refreshed_claim(self.claim, |r| r.instance_id.as_ref());
    }
}

/// The hub's ownership record, `instance.<hostname>`, and what this resource does with it.
struct HubRecord(OwnRecord);

impl HubRecord {
    async fn look<A>(obj: &VpnInstance, ctx: &Context<A>) -> Result<Self> {
        let name = instance_record(&obj.spec.hostname);
        Ok(Self(
            OwnRecord::look(&ctx.records, name, record::holder(obj)).await?,
        ))
    }

    fn holding(&self) -> &Holding {
        &self.0.holding
    }

    /// Takes the record for a create, or renews the claim of the record held: an object found
    /// later is this create's only if created at or after `at`.
    async fn claim<A>(&mut self, obj: &VpnInstance, ctx: &Context<A>, at: Timestamp) -> Result<()> {
        let kind = (RecordRole::Manage, RecordOrigin::Created);
        let hostname = obj.spec.hostname.clone();
        self.0
            .write(&ctx.records, kind, |r| {
                r.claimed_at = Some(at.to_string());
                r.hostname = Some(hostname);
                r.instance_id = None;
            })
            .await
    }

    /// Takes (or changes) the record to hold instance `id` in `role`: an explicit adoption, an
    /// observation, or an observer turning manager. Only a free record is taken.
    async fn own<A>(
        &mut self,
        obj: &VpnInstance,
        ctx: &Context<A>,
        id: &str,
        role: RecordRole,
    ) -> Result<()> {
        let (hostname, id) = (obj.spec.hostname.clone(), id.to_owned());
        self.0
            .write(&ctx.records, (role, RecordOrigin::Adopted), |r| {
                r.role = role;
                r.hostname = Some(hostname);
                r.instance_id = Some(id);
                r.taken_at = Timestamp::now().to_string();
            })
            .await
    }

    /// Records the id of this resource's own create (or forgets a vanished one), before status.
    async fn record_id<A>(&mut self, ctx: &Context<A>, id: Option<&str>) -> Result<()> {
        let id = id.map(str::to_owned);
        self.0.update(&ctx.records, |r| r.instance_id = id).await
    }

    /// Withdraws the claim of a create that was refused: nothing of ours can stem from it.
    async fn withdraw_claim<A>(&mut self, ctx: &Context<A>) -> Result<()> {
        match self.0.holding.mine() {
            Some(r) if r.instance_id.is_none() => self.0.free(&ctx.records).await,
            _ => Ok(()),
        }
    }
}

/// Looks at the recorded instance before deleting it (from a list within the resync
/// interval): gone already, or whether it has this resource's hostname, as one this resource
/// created or adopted always has.
async fn inspect<A: VpnApi>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    (token, id): (&ApiToken, &str),
    observed: &mut CleanupObserved,
) -> Result<()> {
    let look = Look::within(ctx.settings.resync_interval, Urgency::Poll);
    match ctx.observations.instance(&*ctx.api, token, id, look).await? {
        Some(found) => observed.alike = Some(found.hostname_label().eq_ignore_ascii_case(&obj.spec.hostname)),
        None => observed.still_exists = Some(false),
    }
    Ok(())
}

/// Asks Altostrat to delete the instance, unless it already said it is gone (a cleanup running
/// on a copy older than its first cleanup's release).
async fn delete<A: VpnApi>(
    ctx: &Context<A>,
    token: &ApiToken,
    id: &str,
    observed: &mut CleanupObserved,
) -> Result<()> {
    if ctx.observations.instance_known_gone(token, id) {
        observed.still_exists = Some(false);
    } else {
        observed.delete_answer = Some(DeleteAnswer::read(ctx.api.delete_instance(token, id).await)?);
    }
    Ok(())
}

/// Whether the instance still exists: right after a DELETE, from a GET on its id; while its
/// teardown is watched, from the token's instance list (one per poll interval serves every
/// hub being torn down), an absence confirmed by a GET. The deletion is recorded once it is gone.
async fn confirm<A: VpnApi>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    handle: &mut Handle<VpnInstance>,
    (token, id): (&ApiToken, &str),
    just_asked: bool,
) -> Result<bool> {
    let found = if just_asked {
        ctx.observations.instance_now(&*ctx.api, token, id).await?
    } else {
        let look = ctx.poll_look(obj, ctx.settings.provisioning_poll);
        ctx.observations.instance(&*ctx.api, token, id, look).await?
    };
    ctx.looked(obj);
    if found.is_none() {
        ctx.observations.deleted_instance(token, id);
        handle
            .activity
            .record(event::DELETED, format!("deleted Altostrat instance {id}"));
    }
    Ok(found.is_some())
}

/// Whether an earlier reconcile saw this instance's teardown begin.
fn tearing_down(obj: &VpnInstance) -> bool {
    obj.status
        .as_ref()
        .is_some_and(|s| conditions::ready_reason(&s.conditions) == Some(reason::TEARING_DOWN))
}

/// Altostrat accepted the deletion and still lists the instance: the status says so (and
/// marks the teardown as begun, so no second DELETE is sent), and the provisioning poll looks
/// again.
async fn wait_for_teardown<A>(
    ctx: &Context<A>,
    handle: &mut Handle<VpnInstance>,
    id: &str,
) -> Result<Action> {
    let message = format!("Altostrat is tearing down instance {id}; this resource goes once it is gone");
    let after = ctx.settings.provisioning_poll;
    still_deleting(handle, reason::TEARING_DOWN, message, after).await
}

/// An update the decision chose, with the token to send it with.
struct Update {
    id: String,
    body: InstanceUpdate,
    fields: Vec<&'static str>,
    token: ApiToken,
}

/// Sends the update, unless it would repeat one Altostrat is still applying (nothing to do
/// this round) or one whose values it normalises (`NotConverging`); returns what Altostrat
/// holds afterwards. An instance gone since it was observed answers 404: it is `Gone` now.
async fn send_update<A: VpnApi>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    handle: &mut Handle<VpnInstance>,
    Update {
        id,
        body,
        fields,
        token,
    }: Update,
    remote: &Remote,
) -> Result<Remote> {
    let current = decide::found(remote);
    let before = current.map(plan::instance_fields);
    if let Some(current) = current
        && let Some(repeat) = ctx.observations.would_repeat(&id, &body, (current, &before))
    {
        if repeat == Repeat::Normalised && !current.status.is_empty() {
            // Altostrat is still applying the last update: wait for it.
            return Ok(remote.clone());
        }
        return Err(Error::NotConverging {
            fields: fields.join(", "),
            reverted: repeat == Repeat::Reverted,
        });
    }
    let updated = match ctx.api.update_instance(&token, &id, &body).await {
        Ok(updated) => updated,
        Err(e) if e.is_not_found() => {
            ctx.observations.deleted_instance(&token, &id);
            return Ok(Remote::Gone(id));
        }
        Err(e) => return Err(e.into()),
    };
    ctx.observations.wrote_instance(&token, &updated);
    ctx.observations.updated(&id, &body, &before, &updated);
    let note = update_note(&obj.spec, &fields, &body);
    handle.activity.record(event::UPDATED, note);
    Ok(Remote::Found(updated))
}

/// Records a reconcile whose next writes the gate withholds: what Altostrat holds, the calls
/// withheld, and when to look again (as a Ready instance would, or at the resync when nothing
/// was found to watch).
async fn withhold<A: VpnApi>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    handle: &mut Handle<VpnInstance>,
    (remote, calls): (&Remote, Vec<PlannedCall>),
    token: &mut LazyToken<'_, A>,
) -> Result<Action> {
    let gate = Gate::of(obj);
    let creates = decide::found(remote).is_none();
    if creates && gate.policy == ManagementPolicy::Plan {
        // A planned create is checked as the create would be: a region Altostrat does not
        // offer is the spec's error, not a plan.
        ctx.check_region(&token.get().await?, &obj.spec.region).await?;
    }
    let stored = handle.status.stored().cloned().unwrap_or_default();
    let (status, desired) = withheld_status(stored, remote, calls, gate);
    handle.status.write(status, &desired).await?;
    if creates {
        return Ok(Action::requeue(ctx.settings.resync_interval));
    }
    ctx.looked(obj);
    let drift = ctx.drift_interval(&token.get().await?);
    let stored = handle.status.stored().cloned().unwrap_or_default();
    let pace = (drift, ctx.settings.provisioning_poll);
    let ready = desired[0].status;
    Ok(Action::requeue(next_look(
        &stored,
        ready,
        pace,
        handle.status.now(),
        fastrand::f64(),
    )))
}

/// (`ObserveOnly`) Records that no instance with the spec's hostname is visible, and looks
/// again at the next drift check.
async fn missing<A>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    handle: &mut Handle<VpnInstance>,
    token: &ApiToken,
) -> Result<Action> {
    let desired = missing_conditions(&obj.spec);
    handle
        .status
        .write(VpnInstanceStatus::default(), &desired)
        .await?;
    Ok(Action::requeue(ctx.drift_interval(token)))
}

/// What an update changed, by field name; with `publicDns` unset, the resolvers it had to add.
fn update_note(spec: &VpnInstanceSpec, fields: &[&str], body: &InstanceUpdate) -> String {
    let mut note = format!("applied changes to {}", fields.join(", "));
    if spec.public_dns.is_none() && fields.contains(&"publicDns") {
        note.push_str(&format!(
            " (spec.publicDns is unset and Altostrat held fewer than the {} public resolvers an update \
             must carry: sent {})",
            plan::MIN_PUBLIC_DNS,
            body.public_dns.join(", ")
        ));
    }
    note
}

/// Frees the hub's record (or hands it to the resource that takes the hub over), then releases
/// the resource, then the credentials Secret it no longer needs: in this order, so a reconcile
/// that has to come back (stale copy) can still read its token.
async fn release<A>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    handle: &Handle<VpnInstance>,
    (mut hub, successor): (HubRecord, Option<Holder>),
) -> Result<Action> {
    match successor {
        Some(next) => hub.0.update(&ctx.records, |r| r.holder = next).await?,
        None => hub.0.free(&ctx.records).await?,
    }
    let action = handle.release(obj).await?;
    if action == Action::await_change() {
        ctx.release_secret(obj).await?;
    }
    Ok(action)
}

/// The claim time: now, at the second precision of the annotation (rounded down, so an object
/// created right after it never looks older).
fn claim_time(handle: &Handle<VpnInstance>) -> Timestamp {
    handle.status.now().0
}

/// The resource that takes over the hub of a resource being deleted (a GitOps rename): another
/// live VpnInstance of the namespace, read now (not from a cache a label selector may thin),
/// that adopts the same hub explicitly under the same hostname and would manage it.
async fn find_successor<A>(obj: &VpnInstance, ctx: &Context<A>, id: &str) -> Result<Option<Holder>> {
    let namespace = obj.namespace().unwrap_or_default();
    let api: kube::Api<VpnInstance> = kube::Api::namespaced(ctx.client.clone(), &namespace);
    let listed = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(Error::kube(format!("list of VpnInstances in {namespace}")))?;
    Ok(listed
        .items
        .iter()
        .find(|other| {
            other.uid() != obj.uid()
                && other.metadata.deletion_timestamp.is_none()
                && other.spec.instance_id.as_deref() == Some(id)
                && other.spec.hostname == obj.spec.hostname
                && other.spec.management_policy != ManagementPolicy::ObserveOnly
        })
        .map(record::holder))
}

/// How fresh the observation of this instance must be: a reconcile request asks for a list
/// sent from now on, as a poll (someone waits for the answer); a converged instance only needs a
/// drift check within the budget's cycle, and so does a provisioned one whose writes are
/// withheld (no write of its own can be waiting for the answer); one provisioning or with
/// changes to apply is looked at as often as its provisioning poll.
fn look_for<A>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    reuse: Duration,
    handle: &Handle<VpnInstance>,
    gate: Gate,
) -> Look {
    if reconcile_request(obj).is_some() {
        return Look::fresh(Urgency::Poll);
    }
    let status = obj.status.clone().unwrap_or_default();
    let converged = conditions::is_converged(
        &status.conditions,
        status.observed_generation,
        obj.metadata.generation,
    );
    if converged || (!gate.open() && status.server_ready) {
        return Look::within(reuse, Urgency::Drift);
    }
    let age = time_in_state(&status, handle.status.now());
    ctx.poll_look(
        obj,
        plan::provisioning_poll_interval(age, ctx.settings.provisioning_poll),
    )
}

/// A provisioned instance with nothing pending, as the view holds it within the drift
/// interval: nothing more is to be learnt about it before its own write (a spec edit, or a PUT
/// the budget held back), so no list is spent on it. The update carries nothing of Altostrat's
/// but `publicDns` when the spec leaves it unset. A reconcile request always looks anew.
fn settled_in_view<A>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    token: &ApiToken,
    (id, reuse): (&str, Duration),
) -> Option<Instance> {
    if reconcile_request(obj).is_some() {
        return None;
    }
    let look = Look::within(reuse, Urgency::Poll);
    ctx.observations
        .cached_instance(token, id, &look, |i| i.is_provisioned() && i.status.is_empty())
}

/// The instance as the shared observation has it (see [`Look`]); `Err` when the look could
/// not be made.
async fn fetch<A: VpnApi>(ctx: &Context<A>, token: &ApiToken, id: String, look: Look) -> Result<Remote> {
    match ctx.observations.instance(&*ctx.api, token, &id, look).await? {
        Some(instance) => Ok(Remote::Found(instance)),
        None => Ok(Remote::Gone(id)),
    }
}

/// The instance with this resource's hostname, from a list sent after `since` (the start of
/// this reconcile: no create of ours is in flight then).
async fn search<A: VpnApi>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    token: &ApiToken,
    since: Instant,
) -> Result<Remote> {
    let look = Look {
        fresh_since: since,
        urgency: Urgency::Poll,
    };
    let existing = ctx.observations.instances(&*ctx.api, token, look).await?;
    let found = plan::find_instance_by_hostname(&existing, &obj.spec.hostname).cloned();
    Ok(Remote::Searched(found))
}

fn judge_found(claim: Option<Timestamp>, found: Remote) -> Option<(String, Ownership)> {
    let Remote::Searched(Some(instance)) = found else {
        return None;
    };
    let verdict = ownership::judge(claim, instance.created_at.as_deref(), None);
    Some((instance.id, verdict))
}

/// Sends the create, right after the claim, and records the id at once. A conflict means the
/// hostname is held by an object that is not ours: our claim is fresh, so no create of ours
/// can have been applied since.
async fn create<A: VpnApi>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    handle: &mut Handle<VpnInstance>,
    hub: &mut HubRecord,
    token: &ApiToken,
) -> Result<Remote> {
    ctx.check_region(token, &obj.spec.region).await?;
    match ctx
        .api
        .create_instance(token, &plan::instance_create(&obj.spec))
        .await
    {
        Ok(created) => {
            ctx.observations.wrote_instance(token, &created);
            let note = format!(
                "created Altostrat instance {} in region {}",
                created.id, created.region
            );
            handle.activity.record(event::CREATED, note);
            hub.record_id(ctx, Some(&created.id)).await?;
            record_id(handle, &created).await?;
            Ok(Remote::Found(created))
        }
        Err(conflict @ ApiError::Conflict { .. }) => {
            let existing = ctx
                .observations
                .instances(&*ctx.api, token, Look::fresh(Urgency::Poll))
                .await?;
            let visible = plan::find_instance_by_hostname(&existing, &obj.spec.hostname).cloned();
            Ok(Remote::Taken { conflict, visible })
        }
        Err(e) => Err(e.into()),
    }
}

async fn adopt(handle: &mut Handle<VpnInstance>, found: Instance) -> Result<Instance> {
    let note = format!(
        "adopted Altostrat instance {} with hostname {}, created by this resource's claimed create",
        found.id, found.hostname
    );
    handle.activity.record(event::ADOPTED, note);
    record_id(handle, &found).await?;
    Ok(found)
}

/// Writes the id the moment it is known, before anything else can fail.
async fn record_id(handle: &mut Handle<VpnInstance>, instance: &Instance) -> Result<()> {
    handle
        .status
        .write(observed_status(instance), &desired_conditions(instance, true))
        .await
}

/// Records what Altostrat holds and schedules the next look.
async fn record<A>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    handle: &mut Handle<VpnInstance>,
    instance: &Instance,
    drift: Duration,
) -> Result<Action> {
    let was_ready = obj
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_ready(&s.conditions));
    let gate = Gate::of(obj);
    let out_of_sync = gate.open() && plan::instance_update(&obj.spec, instance).is_some();
    let desired = recorded_conditions(instance, out_of_sync, gate);
    handle.status.write(observed_status(instance), &desired).await?;
    let ready = desired[0].status;
    if ready && !was_ready {
        let note = format!("instance {} is provisioned and in sync", instance.hostname);
        handle.activity.record(event::READY, note);
    }
    let stored = handle.status.stored().cloned().unwrap_or_default();
    let after = next_look(
        &stored,
        ready,
        (drift, ctx.settings.provisioning_poll),
        handle.status.now(),
        fastrand::f64(),
    );
    Ok(Action::requeue(after))
}

/// VpnPeers in the instance's namespace that reference it, as the peer cache has them (the
/// peer watch re-triggers nothing here; the drain poll looks again).
fn count_dependents<A>(obj: &VpnInstance, ctx: &Context<A>) -> usize {
    let namespace = obj.namespace();
    let name = obj.name_any();
    ctx.peers
        .state()
        .iter()
        .filter(|p| p.namespace() == namespace && p.spec.instance_ref.name == name)
        .count()
}

async fn wait_for_dependents(handle: &mut Handle<VpnInstance>, count: usize) -> Result<Action> {
    let message = format!("Waiting for {count} VpnPeer(s) referencing this instance to be deleted");
    still_deleting(handle, reason::DELETING, message, PEER_DRAIN_POLL).await
}

/// A deletion that goes on: `Ready=False` says what it waits for, and it looks again `after`.
async fn still_deleting(
    handle: &mut Handle<VpnInstance>,
    why: &'static str,
    message: String,
    after: Duration,
) -> Result<Action> {
    let desired = [
        ConditionState::new(READY, false, why, message),
        ConditionState::new(SYNCED, true, reason::DELETING, "Deletion in progress"),
    ];
    handle.status.write_conditions(&desired).await?;
    Ok(Action::requeue(after))
}
