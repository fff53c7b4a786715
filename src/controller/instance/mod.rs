//! Reconciler of `VpnInstance`: observe → [`decide`](decide::decide) → act, one step at a
//! time, until a step ends the round.

mod decide;
#[cfg(test)]
mod tests;

use std::time::Duration;

use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::cleanup::{CleanupObserved, CleanupStep, decide_cleanup};
use super::conditions::{self, ConditionState, READY, SYNCED, reason};
use super::context::{Context, LazyToken};
use super::driver::{Handle, Reconciler};
use super::error::{Error, Result};
use super::events::reason as event;
use super::finalizer::{FinalizerState, has_finalizer};
use super::plan;
use super::status::HasStatus;
use crate::altostrat::model::Instance;
use crate::altostrat::{ApiError, ApiToken, VpnApi};
use crate::crd::{VpnInstance, VpnInstanceStatus, VpnPeer};
use decide::{Observed, Remote, Step, decide, desired_conditions, next_look, observed_status};

/// Re-check interval while the instance waits for its VpnPeers to be deleted.
const PEER_DRAIN_POLL: Duration = Duration::from_secs(5);
/// More steps than the longest path of one reconcile (finalizer, fetch, create, adopt, update,
/// record): reaching it means the decisions loop, which is a bug, not a reason to go on.
const MAX_STEPS: usize = 8;

impl HasStatus for VpnInstance {
    type Status = VpnInstanceStatus;
    fn status(&self) -> Option<&VpnInstanceStatus> {
        self.status.as_ref()
    }
}

impl Reconciler for VpnInstance {
    const CONTROLLER: &'static str = "vpninstance";

    async fn converge<A: VpnApi>(&self, ctx: &Context<A>, handle: &mut Handle<Self>) -> Result<Action> {
        let obj = self;
        let namespace = obj.namespace().unwrap_or_default();
        let mut token = LazyToken::new(ctx, &namespace, obj.spec.credentials_secret_ref.as_ref());
        let recorded_id = obj.status.as_ref().and_then(|s| s.instance_id.clone());
        let mut observed = Observed {
            spec: &obj.spec,
            finalizer: FinalizerState::of(obj),
            recorded_id: recorded_id.as_deref(),
            remote: Remote::Unknown,
            updated: false,
        };
        for _ in 0..MAX_STEPS {
            let step = decide(&observed);
            tracing::debug!(?step, "next step");
            match step {
                Step::AddFinalizer => {
                    observed.finalizer = match handle.add_finalizer(obj).await? {
                        true => FinalizerState::Added,
                        false => FinalizerState::Stale,
                    }
                }
                Step::Requeue(after) => return Ok(Action::requeue(after)),
                Step::Fetch(id) => observed.remote = fetch(ctx, &token.get().await?, id).await?,
                Step::Create { replacing } => {
                    observed.remote = create(obj, ctx, handle, &token.get().await?, replacing).await?
                }
                Step::Adopt(found) => observed.remote = Remote::Found(adopt(handle, found).await?),
                Step::Update { id, body, fields } => {
                    let updated = ctx.api.update_instance(&token.get().await?, &id, &body).await?;
                    let fields = fields.join(", ");
                    handle
                        .activity
                        .record(event::UPDATED, format!("applied changes to {fields}"));
                    observed.remote = Remote::Found(updated);
                    observed.updated = true;
                }
                Step::Record(instance) => return record(obj, ctx, handle, &instance).await,
                Step::GiveUp(error) => return Err(error),
            }
        }
        Err(Error::Unsettled(VpnInstance::CONTROLLER))
    }

    /// Deletion: honour `deletionPolicy`, wait for peers that still reference the instance, and
    /// treat "already gone" as done.
    async fn cleanup<A: VpnApi>(&self, ctx: &Context<A>, handle: &mut Handle<Self>) -> Result<Action> {
        let obj = self;
        let namespace = obj.namespace().unwrap_or_default();
        let mut token = LazyToken::new(ctx, &namespace, obj.spec.credentials_secret_ref.as_ref());
        let known_id = obj.status.as_ref().and_then(|s| s.instance_id.clone());
        let mut observed = CleanupObserved {
            has_finalizer: has_finalizer(obj),
            policy: obj.spec.deletion_policy,
            may_exist: true,
            dependents: None,
            known_id: known_id.or_else(|| obj.spec.instance_id.clone()),
            search: None,
            deleted: false,
        };
        for _ in 0..MAX_STEPS {
            match decide_cleanup(&observed) {
                CleanupStep::Nothing => return Ok(Action::await_change()),
                CleanupStep::Orphan => {
                    let note = "deletionPolicy is Orphan; the Altostrat instance is left running";
                    handle.activity.record(event::ORPHANED, note);
                    return handle.release(obj).await;
                }
                CleanupStep::CountDependents => observed.dependents = Some(count_dependents(obj, ctx).await?),
                CleanupStep::WaitForDependents(n) => return wait_for_dependents(handle, n).await,
                CleanupStep::Search => {
                    let existing = ctx.api.list_instances(&token.get().await?).await?;
                    let found = plan::find_instance_by_hostname(&existing, &obj.spec.hostname);
                    observed.search = Some(found.map(|i| i.id.clone()));
                }
                CleanupStep::Delete(id) => {
                    match ctx.api.delete_instance(&token.get().await?, &id).await {
                        Ok(()) => handle
                            .activity
                            .record(event::DELETED, format!("deleted Altostrat instance {id}")),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                    observed.deleted = true;
                }
                CleanupStep::Release => return handle.release(obj).await,
            }
        }
        Err(Error::Unsettled(VpnInstance::CONTROLLER))
    }
}

async fn fetch<A: VpnApi>(ctx: &Context<A>, token: &ApiToken, id: String) -> Result<Remote> {
    match ctx.api.get_instance(token, &id).await {
        Ok(instance) => Ok(Remote::Found(instance)),
        Err(e) if e.is_not_found() => Ok(Remote::Gone(id)),
        Err(e) => Err(e.into()),
    }
}

/// Sends the create and records the id at once. Hostnames are unique in Altostrat, so a
/// create that was applied but whose answer was lost (crash, timeout) comes back as 409 on
/// the next attempt; the instance is then looked for by hostname and [`Step::Adopt`]ed.
async fn create<A: VpnApi>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    handle: &mut Handle<VpnInstance>,
    token: &ApiToken,
    replacing: Option<String>,
) -> Result<Remote> {
    if let Some(vanished) = replacing {
        let note = format!("Altostrat instance {vanished} no longer exists; creating it again");
        ctx.publish(obj, EventType::Warning, event::RECREATING, note)
            .await;
    }
    ctx.check_region(token, &obj.spec.region).await?;
    match ctx
        .api
        .create_instance(token, &plan::instance_create(&obj.spec))
        .await
    {
        Ok(created) => {
            let note = format!(
                "created Altostrat instance {} in region {}",
                created.id, created.region
            );
            handle.activity.record(event::CREATED, note);
            record_id(handle, &created).await?;
            Ok(Remote::Found(created))
        }
        Err(conflict @ ApiError::Conflict { .. }) => {
            let existing = ctx.api.list_instances(token).await?;
            let visible = plan::find_instance_by_hostname(&existing, &obj.spec.hostname).cloned();
            Ok(Remote::Taken { conflict, visible })
        }
        Err(e) => Err(e.into()),
    }
}

async fn adopt(handle: &mut Handle<VpnInstance>, found: Instance) -> Result<Instance> {
    let note = format!(
        "adopted existing Altostrat instance {} with hostname {}",
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
) -> Result<Action> {
    let was_ready = obj
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_ready(&s.conditions));
    let out_of_sync = plan::instance_update(&obj.spec, instance).is_some();
    let desired = desired_conditions(instance, out_of_sync);
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
        ctx.settings.resync_interval,
        handle.status.now(),
        fastrand::f64(),
    );
    Ok(Action::requeue(after))
}

/// VpnPeers in the instance's namespace that reference it.
async fn count_dependents<A>(obj: &VpnInstance, ctx: &Context<A>) -> Result<usize> {
    let namespace = obj.namespace().unwrap_or_default();
    let peers: Api<VpnPeer> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = obj.name_any();
    let listed = peers
        .list(&ListParams::default())
        .await
        .map_err(Error::kube(format!("list of VpnPeers in {namespace}")))?;
    Ok(listed
        .items
        .iter()
        .filter(|p| p.spec.instance_ref.name == name)
        .count())
}

async fn wait_for_dependents(handle: &mut Handle<VpnInstance>, count: usize) -> Result<Action> {
    let message = format!("Waiting for {count} VpnPeer(s) referencing this instance to be deleted");
    let desired = [
        ConditionState::new(READY, false, reason::DELETING, message),
        ConditionState::new(SYNCED, true, reason::DELETING, "Deletion in progress"),
    ];
    let current = handle.status.stored().cloned().unwrap_or_default();
    handle.status.write(current, &desired).await?;
    Ok(Action::requeue(PEER_DRAIN_POLL))
}
