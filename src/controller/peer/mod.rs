//! Reconciler of `VpnPeer`: observe → [`decide`](decide::decide) → act, one step at a time,
//! until a step ends the round.

mod decide;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;

use super::cleanup::{CleanupObserved, CleanupStep, DeleteAnswer, decide_cleanup};
use super::conditions::{self, ConditionState};
use super::context::{Context, DRIFT_REUSE, LazyToken};
use super::driver::{Handle, Reconciler};
use super::error::{Error, Result};
use super::events::reason as event;
use super::finalizer::{FinalizerState, has_finalizer};
use super::observation::{Look, Repeat, defer_drift_check};
use super::ownership::{self, Claim, Ownership};
use super::plan;
use super::policy::{Gate, reconcile_request};
use super::profile;
use super::record::{self, Holding, OwnRecord, instance_record, peer_record};
use super::status::HasStatus;
use crate::altostrat::model::{Peer, PeerUpdate};
use crate::altostrat::{ApiToken, Urgency, VpnApi};
use crate::crd::{
    ManagementPolicy, PlannedCall, RecordOrigin, RecordRole, VpnInstance, VpnPeer, VpnPeerStatus,
};
use decide::{
    Candidate, Observed, Remote, Step, attached, decide, judge_all, observed_status, ready_conditions,
    usable_instance_id, waiting_conditions, withheld_status,
};
use k8s_openapi::jiff::Timestamp;

/// More steps than the longest path of one reconcile (finalizer, fetch, forget, search, claim,
/// create, update, record: 8): reaching it means the decisions loop, a bug.
const MAX_STEPS: usize = 10;

impl HasStatus for VpnPeer {
    type Status = VpnPeerStatus;
    fn status(&self) -> Option<&VpnPeerStatus> {
        self.status.as_ref()
    }
    fn management_policy(&self) -> ManagementPolicy {
        self.spec.management_policy
    }
    fn adopted_id(&self) -> Option<&str> {
        self.spec.peer_id.as_deref()
    }
}

impl Reconciler for VpnPeer {
    const CONTROLLER: &'static str = "vpnpeer";

    async fn converge<A: VpnApi>(&self, ctx: &Context<A>, handle: &mut Handle<Self>) -> Result<Action> {
        let instance = referenced_instance(self, ctx);
        let usable = usable_instance(ctx, instance.as_deref(), &self.spec.instance_ref.name).await?;
        let namespace = self.namespace().unwrap_or_default();
        let secret = instance
            .as_ref()
            .and_then(|i| i.spec.credentials_secret_ref.as_ref());
        let mut token = LazyToken::new(ctx, &namespace, secret);
        let gate = Gate::of(self);
        let mut own = PeerRecord::look(self, ctx).await?;
        handle
            .status
            .set_deletion_policy(own.holding().deletion_policy(self.spec.deletion_policy));
        let mut observed = first_look(self, usable.clone(), own.holding());
        observed.held_elsewhere = held_elsewhere(self, ctx, &own).await?;
        let instance_id = usable.unwrap_or_default();
        let started = Instant::now();
        for _ in 0..MAX_STEPS {
            let step = decide(&observed);
            tracing::debug!(?step, "next step");
            match step {
                Step::Wait(waiting) => return wait(self, ctx, handle, waiting).await,
                Step::Requeue(after) => return Ok(Action::requeue(after)),
                Step::AddFinalizer => match handle.add_finalizer(self).await? {
                    FinalizerState::Added => observed.finalizer = FinalizerState::Held,
                    other => observed.finalizer = other,
                },
                Step::Claim => claim(self, ctx, handle, (&mut own, &mut observed), &instance_id).await?,
                Step::Own { id, role } => {
                    observed.held_elsewhere = own.adopt(ctx, (&instance_id, &id), role).await?;
                    let policy = own.holding().deletion_policy(self.spec.deletion_policy);
                    handle.status.set_deletion_policy(policy);
                    observed.refresh(own.holding(), &instance_id);
                }
                Step::GiveUp(error) => return Err(error),
                Step::Fetch(id) => {
                    let token = token.get().await?;
                    let look = look_for(self, ctx, &token, gate);
                    match fetch(ctx, &token, &instance_id, id, look).await {
                        Ok(remote) => observed.remote = remote,
                        Err(deferred) => return defer_drift_check(deferred, look),
                    }
                }
                Step::Forget(id) => {
                    forget(self, ctx, handle, (&mut own, &mut observed), (&instance_id, &id)).await?
                }
                Step::Search => {
                    let candidates = search(self, ctx, &token.get().await?, &instance_id, started).await?;
                    observed.remote = Remote::Searched(candidates);
                }
                Step::Adopt(found) => {
                    own.record_id(ctx, &instance_id, Some(&found.id)).await?;
                    observed.refresh(own.holding(), &instance_id);
                    let note = format!("adopted existing Altostrat peer {}", found.id);
                    let adopted = record_id(handle, found, &instance_id, (event::ADOPTED, note)).await?;
                    observed.remote = Remote::Found(adopted);
                }
                Step::Create => {
                    let at = (&token.get().await?, instance_id.as_str());
                    observed.remote = Remote::Found(create(self, ctx, handle, &mut own, at).await?);
                    observed.refresh(own.holding(), &instance_id);
                }
                Step::Update { id, body, field } => {
                    let at = (&token.get().await?, instance_id.as_str(), id.as_str());
                    observed.remote = send_update(ctx, handle, at, (body, field), &observed.remote).await?;
                    observed.updated = matches!(observed.remote, Remote::Found(_));
                }
                Step::Record(peer) => {
                    let at = (&peer, instance_id.as_str(), &token.get().await?);
                    return record_and_deliver(self, ctx, handle, at, gate).await;
                }
                Step::Withhold(calls) => {
                    let withheld = (&observed.remote, instance_id.as_str(), calls);
                    return withhold(self, ctx, handle, withheld, &mut token).await;
                }
            }
        }
        Err(Error::Unsettled(VpnPeer::CONTROLLER))
    }

    async fn cleanup<A: VpnApi>(&self, ctx: &Context<A>, handle: &mut Handle<Self>) -> Result<Action> {
        let instance = referenced_instance(self, ctx);
        let own = PeerRecord::look(self, ctx).await?;
        let namespace = self.namespace().unwrap_or_default();
        let secret = instance
            .as_ref()
            .and_then(|i| i.spec.credentials_secret_ref.as_ref());
        let mut token = LazyToken::new(ctx, &namespace, secret);
        let (mut observed, instance_id) = cleanup_look(self, &own);
        let started = Instant::now();
        for _ in 0..MAX_STEPS {
            match decide_cleanup(&observed) {
                CleanupStep::Nothing => return Ok(Action::await_change()),
                // The finalizer is held, so a create was claimed and may have succeeded without
                // its id being recorded.
                CleanupStep::Search => {
                    let candidates = search(self, ctx, &token.get().await?, &instance_id, started).await?;
                    let claim = own.holding().claim(|r| r.peer_id.as_ref());
                    observed.search = Some(judge_candidates(claim, &candidates));
                }
                CleanupStep::LeaveAlone { id, verdict } => {
                    let what = format!("Altostrat peer {id}");
                    let note = format!(
                        "{}; not deleted",
                        ownership::explain(&verdict, &what, "nothing to delete")
                    );
                    ctx.publish(self, EventType::Warning, event::LEFT_ALONE, note)
                        .await;
                    return own.release(self, ctx, handle).await;
                }
                CleanupStep::Inspect(id) => {
                    let token = token.get().await?;
                    inspect(self, ctx, (&token, &instance_id, &id), &mut observed).await?;
                }
                CleanupStep::Delete(id) => {
                    let token = token.get().await?;
                    delete(ctx, handle, (&token, &instance_id, &id), &mut observed).await?;
                }
                CleanupStep::Confirm(id) => {
                    let token = token.get().await?;
                    observed.still_exists = Some(confirm(ctx, handle, (&token, &instance_id, &id)).await?);
                }
                CleanupStep::WaitForTeardown(_) => {
                    return Ok(Action::requeue(ctx.settings.provisioning_poll));
                }
                CleanupStep::Refused { id, message } => {
                    let what = format!("Altostrat peer {id}");
                    return Err(Error::DeleteRefused { what, message });
                }
                CleanupStep::Unmanaged(policy) => {
                    let note = format!("managementPolicy is {policy:?}; the Altostrat peer is left in place");
                    handle.activity.record(event::ORPHANED, note);
                    return own.release(self, ctx, handle).await;
                }
                CleanupStep::Orphan | CleanupStep::HandOver { .. } | CleanupStep::Release => {
                    return own.release(self, ctx, handle).await;
                }
                // Peers have no dependents and no successors.
                CleanupStep::CountDependents
                | CleanupStep::WaitForDependents(_)
                | CleanupStep::FindSuccessor(_) => {
                    break;
                }
            }
        }
        Err(Error::Unsettled(VpnPeer::CONTROLLER))
    }
}

/// What a deletion knows before it looks at Altostrat, and the instance its peer is on (as
/// the record holds it: status proves nothing).
fn cleanup_look(obj: &VpnPeer, own: &PeerRecord) -> (CleanupObserved, String) {
    let managed = own.holding().mine_as(RecordRole::Manage);
    let instance_id = managed.and_then(|r| r.instance_id.clone());
    let observed = CleanupObserved {
        has_finalizer: has_finalizer(obj),
        management: obj.spec.management_policy,
        policy: own.holding().deletion_policy(obj.spec.deletion_policy),
        may_exist: instance_id.is_some(),
        dependents: Some(0),
        known_id: managed.and_then(|r| r.peer_id.clone()),
        // A peer has no successor: peers are never adopted by another resource's deletion.
        handed_over_to: Some(None),
        search: None,
        alike: None,
        // Deleting a peer is documented as immediate and permanent: no teardown to watch.
        teardown_started: false,
        delete_answer: None,
        still_exists: None,
    };
    (observed, instance_id.unwrap_or_default())
}

/// What a reconcile knows before it looks at Altostrat.
fn first_look<'a>(
    obj: &'a VpnPeer,
    usable: Result<String, ConditionState>,
    holding: &Holding,
) -> Observed<'a> {
    let instance_id = usable.clone().unwrap_or_default();
    let mut observed = Observed {
        spec: &obj.spec,
        gate: Gate::of(obj),
        instance: usable,
        finalizer: FinalizerState::of(obj),
        claim: Claim::None,
        held_elsewhere: None,
        observed_id: None,
        recorded_id: None,
        holds_record: false,
        status_id: obj.status.as_ref().and_then(|s| s.peer_id.clone()),
        remote: Remote::Unknown,
        updated: false,
    };
    observed.refresh(holding, &instance_id);
    observed
}

impl Observed<'_> {
    /// What the peer's record says, as the decision reads it: the peer it holds counts only on
    /// the instance the peer uses now. A claim this reconcile made stays fresh.
    fn refresh(&mut self, holding: &Holding, instance_id: &str) {
        let on_instance = |role| {
            holding
                .mine_as(role)
                .filter(|r| r.instance_id.as_deref() == Some(instance_id))
                .and_then(|r| r.peer_id.clone())
        };
        self.recorded_id = on_instance(RecordRole::Manage);
        self.observed_id = on_instance(RecordRole::Observe);
        self.holds_record = holding.mine().is_some();
        if let Some(other) = holding.other() {
            self.held_elsewhere = Some(other.to_owned());
        }
        self.claim = holding.refreshed_claim(self.claim, |r| r.peer_id.as_ref());
    }
}

/// The instance a peer points at, looked up in the instance controller's cache. A reference
/// is a name in the peer's own namespace, so a peer can never attach to another namespace's hub.
fn referenced_instance<A>(obj: &VpnPeer, ctx: &Context<A>) -> Option<Arc<VpnInstance>> {
    let namespace = obj.namespace().unwrap_or_default();
    ctx.instances
        .get(&ObjectRef::new(&obj.spec.instance_ref.name).within(&namespace))
}

/// The Altostrat instance the peer may use: its instance resource's hub, provisioned, and
/// held by that resource's record (read now); otherwise why the peer waits.
async fn usable_instance<A>(
    ctx: &Context<A>,
    instance: Option<&VpnInstance>,
    name: &str,
) -> Result<std::result::Result<String, ConditionState>> {
    let usable = usable_instance_id(instance, name);
    let Some(instance) = instance.filter(|_| usable.is_ok()) else {
        return Ok(usable);
    };
    let hub = ctx
        .records
        .look(
            &instance_record(&instance.spec.hostname),
            &record::holder(instance),
        )
        .await?;
    Ok(attached(usable, &hub, name))
}

/// Who else holds the peer `spec.peerId` names, while this resource's record does not hold it
/// yet: the oldest record naming it, read now.
async fn held_elsewhere<A>(obj: &VpnPeer, ctx: &Context<A>, own: &PeerRecord) -> Result<Option<String>> {
    if let Some(other) = own.holding().other() {
        return Ok(Some(other.to_owned()));
    }
    let Some(wanted) = obj.spec.peer_id.as_deref() else {
        return Ok(None);
    };
    if own.holding().mine().and_then(|r| r.peer_id.as_deref()) == Some(wanted) {
        return Ok(None);
    }
    ctx.records.peer_held_elsewhere(wanted, &own.0.me).await
}

/// The peer's ownership record, `peer.<uid>`, and what this resource does with it.
struct PeerRecord(OwnRecord);

impl PeerRecord {
    async fn look<A>(obj: &VpnPeer, ctx: &Context<A>) -> Result<Self> {
        let name = peer_record(&obj.uid().unwrap_or_default());
        Ok(Self(
            OwnRecord::look(&ctx.records, name, record::holder(obj)).await?,
        ))
    }

    fn holding(&self) -> &Holding {
        &self.0.holding
    }

    /// Takes the record for a create on `instance_id`, or renews its claim: a peer found later
    /// is this create's only if created at or after `at`.
    async fn claim<A>(&mut self, ctx: &Context<A>, instance_id: &str, at: Timestamp) -> Result<()> {
        let kind = (RecordRole::Manage, RecordOrigin::Created);
        self.0
            .write(&ctx.records, kind, |r| {
                (r.role, r.origin) = kind;
                r.claimed_at = Some(at.to_string());
                r.instance_id = Some(instance_id.to_owned());
                r.peer_id = None;
            })
            .await
    }

    /// Takes peer `id` in `role` (an explicit adoption, an observation, or an observer turning
    /// manager). Of two records naming one peer the older holds it: a younger one is freed at
    /// once, and the holder named.
    async fn adopt<A>(
        &mut self,
        ctx: &Context<A>,
        (instance_id, id): (&str, &str),
        role: RecordRole,
    ) -> Result<Option<String>> {
        self.0
            .write(&ctx.records, (role, RecordOrigin::Adopted), |r| {
                r.role = role;
                r.instance_id = Some(instance_id.to_owned());
                r.peer_id = Some(id.to_owned());
                r.taken_at = Timestamp::now().to_string();
            })
            .await?;
        if let Some(other) = self.holding().other() {
            return Ok(Some(other.to_owned()));
        }
        let Some(other) = ctx.records.peer_held_elsewhere(id, &self.0.me).await? else {
            return Ok(None);
        };
        self.0.free(&ctx.records).await?;
        Ok(Some(other))
    }

    /// Records the id of this resource's own create (or forgets a vanished one, with its
    /// claim), before status.
    async fn record_id<A>(&mut self, ctx: &Context<A>, instance_id: &str, id: Option<&str>) -> Result<()> {
        let (instance_id, id) = (instance_id.to_owned(), id.map(str::to_owned));
        self.0
            .update(&ctx.records, |r| {
                r.instance_id = Some(instance_id);
                if id.is_none() {
                    r.claimed_at = None;
                }
                r.peer_id = id;
            })
            .await
    }

    /// Frees the record, then releases the resource.
    async fn release<A>(
        mut self,
        obj: &VpnPeer,
        ctx: &Context<A>,
        handle: &Handle<VpnPeer>,
    ) -> Result<Action> {
        self.0.free(&ctx.records).await?;
        handle.release(obj).await
    }
}

/// How fresh the observation of this peer must be: a reconcile request asks for a list sent
/// from now on, as a poll (someone waits for the answer); a converged peer only needs a drift check
/// within the budget's cycle, and so does an existing one whose writes are withheld. A Ready
/// peer whose spec was edited may use the same view (its update carries nothing of
/// Altostrat's), but as a poll, so the edit is not put off behind drift checks. Anything else
/// needs a list newer than its previous look.
fn look_for<A>(obj: &VpnPeer, ctx: &Context<A>, token: &ApiToken, gate: Gate) -> Look {
    if reconcile_request(obj).is_some() {
        return Look::fresh(Urgency::Poll);
    }
    let status = obj.status.clone().unwrap_or_default();
    let drift = ctx.drift_interval(token).mul_f64(DRIFT_REUSE);
    let converged = conditions::is_converged(
        &status.conditions,
        status.observed_generation,
        obj.metadata.generation,
    );
    if converged || (!gate.open() && conditions::is_ready(&status.conditions)) {
        Look::within(drift, Urgency::Drift)
    } else if conditions::is_ready(&status.conditions) {
        Look::within(drift, Urgency::Poll)
    } else {
        ctx.poll_look(obj, ctx.settings.provisioning_poll)
    }
}

/// The peer as the shared observation of its instance's peers has it.
async fn fetch<A: VpnApi>(
    ctx: &Context<A>,
    token: &ApiToken,
    instance_id: &str,
    id: String,
    look: Look,
) -> Result<Remote> {
    match ctx
        .observations
        .peer(&*ctx.api, token, instance_id, &id, look)
        .await?
    {
        Some(peer) => Ok(Remote::Found(peer)),
        None => Ok(Remote::Gone(id)),
    }
}

/// Forgets a peer Altostrat no longer has; a profile delivered for it no longer connects.
/// The id is forgotten in the record (with its claim, so the create that follows is claimed
/// afresh), then in status.
async fn forget<A>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    (own, observed): (&mut PeerRecord, &mut Observed<'_>),
    (instance_id, id): (&str, &str),
) -> Result<()> {
    let note = format!("Altostrat peer {id} no longer exists; creating it again");
    ctx.publish(obj, EventType::Warning, event::RECREATING, note)
        .await;
    own.record_id(ctx, instance_id, None).await?;
    let forget_id = |status: &mut VpnPeerStatus| status.peer_id = None;
    match profile::outdated_by_loss(obj, id) {
        Some(stale) => handle.status.write_stage(stale, forget_id).await?,
        None => handle.status.update_fields(forget_id).await?,
    }
    observed.refresh(own.holding(), instance_id);
    observed.status_id = None;
    observed.remote = Remote::Unknown;
    Ok(())
}

/// A peer waiting for its instance says so; the instance watch re-triggers it.
async fn wait<A>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    waiting: ConditionState,
) -> Result<Action> {
    let mut conditions = waiting_conditions(waiting).to_vec();
    conditions.extend(profile::pending_until_ready(obj));
    handle.status.write_conditions(&conditions).await?;
    Ok(Action::requeue(ctx.settings.resync_interval))
}

/// Claims a create: the finalizer first (a record must never outlive its resource's cleanup),
/// then the record with a fresh claim.
async fn claim<A>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    (own, observed): (&mut PeerRecord, &mut Observed<'_>),
    instance_id: &str,
) -> Result<()> {
    observed.finalizer = handle.add_finalizer(obj).await?;
    if observed.finalizer == FinalizerState::Stale {
        return Ok(());
    }
    let at = handle.status.now().0;
    own.claim(ctx, instance_id, at).await?;
    observed.refresh(own.holding(), instance_id);
    if own.holding().mine().is_some() {
        observed.claim = Claim::Fresh(at);
    }
    Ok(())
}

/// Records a converged peer, then delivers its profile (managed peers only, see `withhold`).
async fn record_and_deliver<A: VpnApi>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    (peer, instance_id, token): (&Peer, &str, &ApiToken),
    gate: Gate,
) -> Result<Action> {
    ctx.looked(obj);
    let drift = ctx.drift_interval(token);
    let action = record(obj, handle, peer, instance_id, drift).await?;
    let sooner = match gate.open() {
        true => profile::deliver(obj, ctx, handle, (peer, instance_id, token)).await?,
        false => None,
    };
    Ok(sooner.map_or(action, Action::requeue))
}

/// Writes the id the moment it is known, before anything else can fail.
async fn record_id(
    handle: &mut Handle<VpnPeer>,
    peer: Peer,
    instance_id: &str,
    (reason, note): ((&'static str, &'static str), String),
) -> Result<Peer> {
    handle.activity.record(reason, note);
    let next = observed_status(&peer, instance_id, handle.status.stored());
    handle
        .status
        .write(next, &ready_conditions(handle.status.gate()))
        .await?;
    Ok(peer)
}

async fn record(
    obj: &VpnPeer,
    handle: &mut Handle<VpnPeer>,
    peer: &Peer,
    instance_id: &str,
    drift: Duration,
) -> Result<Action> {
    let was_ready = obj
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_ready(&s.conditions));
    let next = observed_status(peer, instance_id, handle.status.stored());
    handle
        .status
        .write(next, &ready_conditions(handle.status.gate()))
        .await?;
    if !was_ready {
        handle
            .activity
            .record(event::READY, format!("peer {} is in sync", peer.id));
    }
    Ok(Action::requeue(plan::jittered(drift, fastrand::f64())))
}

/// Creates the peer on the instance and records its id at once.
async fn create<A: VpnApi>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    own: &mut PeerRecord,
    (token, instance_id): (&ApiToken, &str),
) -> Result<Peer> {
    let body = plan::peer_create(&obj.spec);
    let created = ctx.api.create_peer(token, instance_id, &body).await?;
    ctx.observations.wrote_peer(token, instance_id, &created);
    own.record_id(ctx, instance_id, Some(&created.id)).await?;
    let note = (event::CREATED, format!("created Altostrat peer {}", created.id));
    record_id(handle, created, instance_id, note).await
}

/// Sends the update, unless it would repeat one whose values Altostrat normalises
/// (`NotConverging`); returns what Altostrat holds afterwards. A peer gone since it was
/// observed answers 404: it is `Gone` now.
async fn send_update<A: VpnApi>(
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    (token, instance_id, id): PeerAt<'_>,
    (body, field): (PeerUpdate, &'static str),
    remote: &Remote,
) -> Result<Remote> {
    let current = decide::found(remote);
    let before = current.map(plan::peer_fields);
    if let Some(current) = current
        && let Some(repeat) = ctx.observations.would_repeat(id, &body, (current, &before))
    {
        return Err(Error::NotConverging {
            fields: field.into(),
            reverted: repeat == Repeat::Reverted,
        });
    }
    let updated = match ctx.api.update_peer(token, instance_id, id, &body).await {
        Ok(updated) => updated,
        Err(e) if e.is_not_found() => {
            ctx.observations.deleted_peer(token, instance_id, id);
            return Ok(Remote::Gone(id.to_owned()));
        }
        Err(e) => return Err(e.into()),
    };
    ctx.observations.wrote_peer(token, instance_id, &updated);
    ctx.observations.updated(id, &body, &before, &updated);
    handle
        .activity
        .record(event::UPDATED, format!("applied changes to {field}"));
    Ok(Remote::Found(updated))
}

/// Records a reconcile whose next writes the gate withholds: the peer as Altostrat holds it,
/// the calls withheld, and the next look (a drift check). A profile Secret is left as it is:
/// under `ObserveOnly` the peer is not this resource's, and while paused or planning nothing
/// changes on its behalf.
async fn withhold<A: VpnApi>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    (remote, instance_id, calls): (&Remote, &str, Vec<PlannedCall>),
    token: &mut LazyToken<'_, A>,
) -> Result<Action> {
    let stored = handle.status.stored().cloned().unwrap_or_default();
    let (status, desired) = withheld_status(stored, (remote, instance_id), calls, Gate::of(obj));
    handle.status.write(status, &desired).await?;
    if decide::found(remote).is_none() {
        return Ok(Action::requeue(ctx.settings.resync_interval));
    }
    ctx.looked(obj);
    let drift = ctx.drift_interval(&token.get().await?);
    Ok(Action::requeue(plan::jittered(drift, fastrand::f64())))
}

/// A peer by its token, instance id and id.
type PeerAt<'a> = (&'a ApiToken, &'a str, &'a str);

/// Deletes the peer, unless Altostrat already said it is gone (a cleanup running on a copy
/// older than its first cleanup's release). An accepted DELETE is final: Altostrat documents
/// it as removing the peer permanently. Any other answer is checked by a look.
async fn delete<A: VpnApi>(
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    (token, instance_id, id): PeerAt<'_>,
    observed: &mut CleanupObserved,
) -> Result<()> {
    if ctx.observations.peer_known_gone(token, instance_id, id) {
        observed.still_exists = Some(false);
        return Ok(());
    }
    let answer = DeleteAnswer::read(ctx.api.delete_peer(token, instance_id, id).await)?;
    if answer == DeleteAnswer::Accepted {
        gone(ctx, handle, (token, instance_id, id));
        observed.still_exists = Some(false);
    }
    observed.delete_answer = Some(answer);
    Ok(())
}

/// Looks at the recorded peer before deleting it (from its instance's peer list within the
/// resync interval): gone already, or whether it has this resource's type and user or site,
/// as one this resource created or adopted always has.
async fn inspect<A: VpnApi>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    at: PeerAt<'_>,
    observed: &mut CleanupObserved,
) -> Result<()> {
    let (token, instance_id, id) = at;
    let look = Look::within(ctx.settings.resync_interval, Urgency::Poll);
    match ctx
        .observations
        .peer(&*ctx.api, token, instance_id, id, look)
        .await?
    {
        Some(found) => {
            observed.alike = Some(!plan::matching_peers(std::slice::from_ref(&found), &obj.spec).is_empty())
        }
        None => observed.still_exists = Some(false),
    }
    Ok(())
}

/// Whether the peer still exists, from a GET on its id.
async fn confirm<A: VpnApi>(ctx: &Context<A>, handle: &mut Handle<VpnPeer>, at: PeerAt<'_>) -> Result<bool> {
    let (token, instance_id, id) = at;
    let found = ctx
        .observations
        .peer_now(&*ctx.api, token, instance_id, id)
        .await?;
    if found.is_none() {
        gone(ctx, handle, at);
    }
    Ok(found.is_some())
}

fn gone<A>(ctx: &Context<A>, handle: &mut Handle<VpnPeer>, (token, instance_id, id): PeerAt<'_>) {
    ctx.observations.deleted_peer(token, instance_id, id);
    handle
        .activity
        .record(event::DELETED, format!("deleted Altostrat peer {id}"));
}

/// The peers a lost create answer may have left, if the instance still exists, from a list
/// sent after `since` (the start of this reconcile: no create of ours is in flight then).
async fn search<A: VpnApi>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    token: &ApiToken,
    instance_id: &str,
    since: Instant,
) -> Result<Vec<Candidate>> {
    let look = Look {
        fresh_since: since,
        urgency: Urgency::Poll,
    };
    let peers = ctx
        .observations
        .peers(&*ctx.api, token, instance_id, look)
        .await?
        .unwrap_or_default();
    let me = record::holder(obj);
    let mut candidates = Vec::new();
    for peer in plan::matching_peers(&peers, &obj.spec) {
        candidates.push(Candidate {
            // Whether it is our lost create: another record holding it says it is not.
            recorded_by: ctx.records.peer_held_elsewhere(&peer.id, &me).await?,
            peer: peer.clone(),
        });
    }
    Ok(candidates)
}

/// The candidate to delete on cleanup: our own lost create if there is one, otherwise the
/// first one found, to be left alone with the reason.
fn judge_candidates(claim: Option<Timestamp>, candidates: &[Candidate]) -> Option<(String, Ownership)> {
    let verdicts = judge_all(claim, candidates);
    let ours = verdicts.iter().position(|(_, v)| *v == Ownership::Ours);
    let (peer, verdict) = verdicts.into_iter().nth(ours.unwrap_or(0))?;
    Some((peer.id.clone(), verdict))
}
