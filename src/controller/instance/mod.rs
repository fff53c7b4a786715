//! `VpnInstance`: what the one lifecycle needs to know of the resource and its Altostrat instance.

#[cfg(test)]
mod approval_tests;
#[cfg(test)]
mod decisions;
mod status;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tokio::time::Instant;

use super::conditions::{self, ConditionState, READY, SYNCED, reason};
use super::context::{Context, DRIFT_REUSE};
use super::credentials::Wanted;
use super::error::{Error, Result};
use super::events::reason as event;
use super::lifecycle::decide::{Candidate, Kind, Remote};
use super::lifecycle::{Conn, Handle, Managed};
use super::observation::Look;
use super::policy::{Gate, reconcile_request};
use super::record::{self, instance_record};
use super::{plan, planned};
use crate::altostrat::model::{Instance, InstanceUpdate};
use crate::altostrat::{ApiError, ApiResult, ApiToken, Urgency, VpnApi};
use crate::crd::{
    DeletionPolicy, Holder, ManagementPolicy, NamespacePeers, OwnershipRecordSpec, PlannedCall, VpnInstance,
    VpnInstanceSpec, VpnInstanceStatus, VpnPeer, cidr,
};
pub(crate) use status::{desired_conditions, observed_status};
use status::{missing_conditions, next_look, recorded_conditions, time_in_state, withheld_status};

/// What an instance names for its credentials (its peers name the same).
pub(crate) fn wanted_by(instance: &VpnInstance) -> Wanted {
    Wanted {
        secret: instance.spec.credentials_secret_ref.clone(),
        named: instance.spec.credentials_ref.as_ref().map(|r| r.name.clone()),
    }
}

/// Re-check interval while the instance waits for its VpnPeers to be deleted.
const PEER_DRAIN_POLL: Duration = Duration::from_secs(5);

impl Kind for VpnInstance {
    type Spec = VpnInstanceSpec;
    type Object = Instance;
    type Update = InstanceUpdate;

    const NOUN: &'static str = "instance";
    const ID_FIELD: &'static str = "spec.instanceId";
    const UNIQUE: bool = true;
    const HINT: &'static str = "to manage it from this resource, set spec.instanceId to its id";

    fn spec_id(spec: &VpnInstanceSpec) -> Option<&str> {
        spec.instance_id.as_deref()
    }
    fn invalid(spec: &VpnInstanceSpec) -> Option<String> {
        cidr::refused_entries("spec.pushedRoutes", &spec.pushed_routes)
    }
    fn describe(spec: &VpnInstanceSpec) -> String {
        format!("the Altostrat instance with hostname {:?}", spec.hostname)
    }
    fn unlike(spec: &VpnInstanceSpec, object: &Instance) -> Option<String> {
        (!object.hostname_label().eq_ignore_ascii_case(&spec.hostname)).then(|| {
            format!(
                "spec.hostname {:?} does not match the adopted instance's hostname {:?}",
                spec.hostname, object.hostname
            )
        })
    }
    /// Altostrat only accepts configuration once the server is provisioned.
    fn update(
        spec: &VpnInstanceSpec,
        object: &Instance,
        observes: bool,
    ) -> Option<(InstanceUpdate, Vec<&'static str>)> {
        if !object.is_provisioned() {
            return None;
        }
        let body = match observes {
            true => plan::observed_instance_drift(spec, object),
            false => plan::instance_update(spec, object),
        }?;
        let fields = plan::instance_changed_fields(&body, object);
        Some((body, fields))
    }
    fn planned_create(spec: &VpnInstanceSpec, _: &str) -> Vec<PlannedCall> {
        planned::create_instance_calls(spec)
    }
    fn planned_update(_: &str, id: &str, body: &InstanceUpdate, current: Option<&Instance>) -> PlannedCall {
        planned::update_instance_call(id, body, current)
    }
}

impl Managed for VpnInstance {
    const CONTROLLER: &'static str = "vpninstance";
    const DELETE_IS_FINAL: bool = false;

    fn spec(&self) -> &VpnInstanceSpec {
        &self.spec
    }
    fn deletion_policy(&self) -> Option<DeletionPolicy> {
        self.spec.deletion_policy
    }

    /// `instance.<hostname>`: the API server's name uniqueness allows one holder of an instance.
    fn record_name(&self) -> String {
        instance_record(&self.spec.hostname)
    }
    fn record_id(record: &OwnershipRecordSpec) -> Option<&String> {
        record.instance_id.as_ref()
    }
    fn record_parent(_: &OwnershipRecordSpec) -> Option<&str> {
        Some("")
    }
    fn stamp(&self, record: &mut OwnershipRecordSpec, _: &str, id: Option<String>) {
        record.hostname = Some(self.spec.hostname.clone());
        record.instance_id = id;
    }
    /// The record's name is the instance's: no other record can hold it.
    async fn holder_of<A: VpnApi>(_: &Context<A>, _: &str, _: &Holder) -> Result<Option<String>> {
        Ok(None)
    }

    async fn credentials<A: VpnApi>(&self, _: &Context<A>) -> Result<(String, Wanted)> {
        Ok((self.namespace().unwrap_or_default(), wanted_by(self)))
    }
    async fn parent<A: VpnApi>(&self, _: &Context<A>) -> Result<std::result::Result<String, ConditionState>> {
        Ok(Ok(String::new()))
    }

    async fn validate<A: VpnApi>(conn: &mut Conn<'_, Self, A>) -> Result<()> {
        let token = conn.token().await?;
        conn.ctx.check_region(&token, &conn.obj.spec.region).await
    }
    fn look_for<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken, gate: Gate, now: &Time) -> Look {
        look_for(conn, token, gate, now)
    }
    fn settled<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken, id: &str) -> Option<Instance> {
        settled_in_view(conn, token, id)
    }
    async fn fetch<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        id: &str,
        look: Look,
    ) -> Result<Option<Instance>> {
        Ok(conn
            .ctx
            .observations
            .instance(&*conn.ctx.api, token, id, look)
            .await?)
    }
    /// Right after a DELETE, a GET on its id; while its teardown is watched, the token's
    /// instance list (one per poll interval serves every instance being torn down), an absence
    /// confirmed by a GET.
    async fn fetch_now<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        id: &str,
        just_asked: bool,
    ) -> Result<Option<Instance>> {
        let (obj, ctx) = (conn.obj, conn.ctx);
        let found = if just_asked {
            ctx.observations.instance_now(&*ctx.api, token, id).await?
        } else {
            let look = ctx.poll_look(obj, ctx.settings.provisioning_poll);
            ctx.observations.instance(&*ctx.api, token, id, look).await?
        };
        ctx.looked(obj);
        Ok(found)
    }
    /// The instance with this resource's hostname, from a list sent after `since` (the start
    /// of this reconcile: no create of ours is in flight then).
    async fn search<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        since: Instant,
    ) -> Result<Vec<Candidate<Instance>>> {
        let look = Look {
            fresh_since: since,
            urgency: Urgency::Poll,
        };
        let existing = conn
            .ctx
            .observations
            .instances(&*conn.ctx.api, token, look)
            .await?;
        let found = plan::find_instance_by_hostname(&existing, &conn.obj.spec.hostname);
        Ok(found
            .map(|object| Candidate {
                object: object.clone(),
                recorded_by: None,
            })
            .into_iter()
            .collect())
    }
    /// A conflict means the hostname is held by an object that is not ours: our claim is
    /// fresh, so no create of ours can have been applied since.
    async fn create<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken) -> Result<Remote<Instance>> {
        let (obj, ctx) = (conn.obj, conn.ctx);
        match ctx
            .api
            .create_instance(token, &plan::instance_create(&obj.spec))
            .await
        {
            Ok(created) => Ok(Remote::Found(created)),
            Err(conflict @ ApiError::Conflict { .. }) => {
                let look = Look::fresh(Urgency::Poll);
                let existing = ctx.observations.instances(&*ctx.api, token, look).await?;
                let visible = plan::find_instance_by_hostname(&existing, &obj.spec.hostname).cloned();
                Ok(Remote::Taken { conflict, visible })
            }
            Err(e) => Err(e.into()),
        }
    }
    async fn update<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        id: &str,
        body: &InstanceUpdate,
    ) -> ApiResult<Instance> {
        conn.ctx.api.update_instance(token, id, body).await
    }
    async fn delete<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken, id: &str) -> ApiResult<()> {
        conn.ctx.api.delete_instance(token, id).await
    }
    fn wrote<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken, id: &str, object: Option<&Instance>) {
        match object {
            Some(instance) => conn.ctx.observations.wrote_instance(token, instance),
            None => conn.ctx.observations.deleted_instance(token, id),
        }
    }
    fn known_gone<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken, id: &str) -> bool {
        conn.ctx.observations.instance_known_gone(token, id)
    }
    fn fields(object: &Instance) -> serde_json::Value {
        plan::instance_fields(object)
    }
    fn busy(object: &Instance) -> bool {
        !object.status.is_empty()
    }
    /// With `publicDns` unset, the note names the resolvers an update had to add.
    fn update_note(&self, fields: &[&str], body: &InstanceUpdate) -> String {
        let mut note = format!("applied changes to {}", fields.join(", "));
        if self.spec.public_dns.is_none() && fields.contains(&"publicDns") {
            note.push_str(&format!(
                " (spec.publicDns is unset and Altostrat held fewer than the {} public resolvers an update \
                 must carry: sent {})",
                plan::MIN_PUBLIC_DNS,
                body.public_dns.join(", ")
            ));
        }
        note
    }

    async fn record_found<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        handle: &mut Handle<Self>,
        instance: &Instance,
    ) -> Result<()> {
        let pending = pending(conn.obj, instance, handle.status.gate());
        let desired = desired_conditions(instance, &pending);
        let status = observed_with_peers(conn.obj, conn.ctx, instance);
        handle.status.write(status, &desired).await
    }
    async fn record<A: VpnApi>(
        conn: &mut Conn<'_, Self, A>,
        handle: &mut Handle<Self>,
        instance: &Instance,
    ) -> Result<Action> {
        record(conn, handle, instance).await
    }
    async fn withhold<A: VpnApi>(
        conn: &mut Conn<'_, Self, A>,
        handle: &mut Handle<Self>,
        remote: &Remote<Instance>,
        calls: Vec<PlannedCall>,
    ) -> Result<Action> {
        record_withheld(conn, handle, remote, calls).await
    }
    async fn missing<A: VpnApi>(conn: &mut Conn<'_, Self, A>, handle: &mut Handle<Self>) -> Result<Action> {
        let desired = missing_conditions(&conn.obj.spec);
        handle
            .status
            .write(VpnInstanceStatus::default(), &desired)
            .await?;
        let token = conn.token().await?;
        Ok(Action::requeue(conn.ctx.drift_interval(&token)))
    }
    async fn forget_status(&self, handle: &mut Handle<Self>, _: &str) -> Result<()> {
        handle.status.update_fields(|s| s.instance_id = None).await
    }

    /// VpnPeers of every namespace that reference it, as the peer caches of every watch scope
    /// have them (the peer watch re-triggers nothing here; the drain poll looks again): by name
    /// in its own namespace, as `namespace/name` in others.
    fn dependents<A: VpnApi>(&self, ctx: &Context<A>) -> Vec<String> {
        let own = self.namespace().unwrap_or_default();
        let mut names: Vec<String> = referencing(self, &ctx.all_peers())
            .map(|p| match p.namespace().unwrap_or_default() {
                ns if ns == own => p.name_any(),
                ns => format!("{ns}/{}", p.name_any()),
            })
            .collect();
        names.sort();
        names
    }
    /// Names the peers of its own namespace it waits for and counts those of others (their
    /// names belong to their namespaces), with one Warning when the wait begins.
    async fn wait_for_dependents(handle: &mut Handle<Self>, dependents: &[String]) -> Result<Action> {
        let message = format!(
            "Waiting for the VpnPeers that reference this instance to be deleted: {}",
            dependents_named(dependents)
        );
        if handle.status.ready_reason() != Some(reason::DELETING) {
            handle.activity.warn(event::DELETION_BLOCKED, message.clone());
        }
        still_deleting(handle, reason::DELETING, message, PEER_DRAIN_POLL).await
    }
    async fn successor<A: VpnApi>(&self, ctx: &Context<A>, id: &str) -> Result<Option<Holder>> {
        find_successor(self, ctx, id).await
    }
    fn teardown_started(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| conditions::ready_reason(&s.conditions) == Some(reason::TEARING_DOWN))
    }
    /// Altostrat accepted the deletion and still lists the instance: the status says so (and
    /// marks the teardown as begun, so no second DELETE is sent), and the provisioning poll
    /// looks again.
    async fn wait_for_teardown<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        handle: &mut Handle<Self>,
        id: &str,
    ) -> Result<Action> {
        let message = format!("Altostrat is tearing down instance {id}; this resource goes once it is gone");
        let after = conn.ctx.settings.provisioning_poll;
        still_deleting(handle, reason::TEARING_DOWN, message, after).await
    }
    /// The credentials Secret it no longer needs.
    async fn released<A: VpnApi>(&self, ctx: &Context<A>) -> Result<()> {
        ctx.release_secret(self).await
    }
}

/// The peers that name `hub` in their `spec.instanceRef`, of any namespace.
fn referencing<'a>(
    hub: &'a VpnInstance,
    peers: &'a [Arc<VpnPeer>],
) -> impl Iterator<Item = &'a Arc<VpnPeer>> {
    let (namespace, name) = (hub.namespace().unwrap_or_default(), hub.name_any());
    peers
        .iter()
        .filter(move |p| p.spec.instance_ref.name == name && p.instance_namespace() == namespace)
}

/// How many peers of each namespace are attached to `hub` (their status names its Altostrat
/// instance `id`), by namespace. A count, shown to the hub's readers: nothing here is proof.
fn attached_peers(hub: &VpnInstance, id: &str, peers: &[Arc<VpnPeer>]) -> Vec<NamespacePeers> {
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for p in referencing(hub, peers) {
        if p.status.as_ref().and_then(|s| s.instance_id.as_deref()) == Some(id) {
            *counts.entry(p.namespace().unwrap_or_default()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(namespace, peers)| NamespacePeers { namespace, peers })
        .collect()
}

/// The status mirroring `instance`, with the peers attached to it counted.
fn observed_with_peers<A>(obj: &VpnInstance, ctx: &Context<A>, instance: &Instance) -> VpnInstanceStatus {
    VpnInstanceStatus {
        attached_peers: attached_peers(obj, &instance.id, &ctx.all_peers()),
        ..observed_status(instance)
    }
}

/// The dependents as a deletion message shows them: own peers by name, others counted by
/// namespace.
fn dependents_named(dependents: &[String]) -> String {
    let mut others = std::collections::BTreeMap::<&str, usize>::new();
    let mut own = Vec::new();
    for dependent in dependents {
        match dependent.split_once('/') {
            Some((namespace, _)) => *others.entry(namespace).or_default() += 1,
            None => own.push(dependent.clone()),
        }
    }
    let mut parts = Vec::new();
    if !own.is_empty() {
        parts.push(named(&own));
    }
    parts.extend(others.into_iter().map(|(ns, n)| format!("{n} in namespace {ns}")));
    parts.join("; ")
}

/// Records a reconcile whose next writes the gate withholds: what Altostrat holds, the calls
/// withheld, and when to look again (as a Ready instance would, or at the resync when nothing
/// was found to watch).
async fn record_withheld<A: VpnApi>(
    conn: &mut Conn<'_, VpnInstance, A>,
    handle: &mut Handle<VpnInstance>,
    remote: &Remote<Instance>,
    calls: Vec<PlannedCall>,
) -> Result<Action> {
    let (obj, ctx) = (conn.obj, conn.ctx);
    let gate = Gate::of(obj);
    let creates = remote.found().is_none();
    if creates && gate.policy == ManagementPolicy::Plan {
        // A planned create is checked as the create would be: a region Altostrat does not
        // offer is the spec's error, not a plan.
        VpnInstance::validate(conn).await?;
    }
    let stored = handle.status.stored().cloned().unwrap_or_default();
    let (mut status, desired) = withheld_status(stored, remote, calls, gate);
    if let Some(instance) = remote.found() {
        status.attached_peers = attached_peers(obj, &instance.id, &ctx.all_peers());
    }
    handle.status.write(status, &desired).await?;
    if creates {
        return Ok(Action::requeue(ctx.settings.resync_interval));
    }
    ctx.looked(obj);
    let drift = ctx.drift_interval(&conn.token().await?);
    Ok(Action::requeue(pace(conn, handle, drift, desired[0].status)))
}

/// Records what Altostrat holds and schedules the next look.
async fn record<A: VpnApi>(
    conn: &mut Conn<'_, VpnInstance, A>,
    handle: &mut Handle<VpnInstance>,
    instance: &Instance,
) -> Result<Action> {
    let obj = conn.obj;
    conn.ctx.looked(obj);
    let drift = conn.ctx.drift_interval(&conn.token().await?);
    let was_ready = obj
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_ready(&s.conditions));
    let gate = Gate::of(obj);
    let desired = recorded_conditions(instance, &pending(obj, instance, gate), gate);
    let status = observed_with_peers(obj, conn.ctx, instance);
    handle.status.write(status, &desired).await?;
    let ready = desired[0].status;
    if ready && !was_ready {
        let note = format!("instance {} is provisioned and in sync", instance.hostname);
        handle.activity.record(event::READY, note);
    }
    Ok(Action::requeue(pace(conn, handle, drift, ready)))
}

/// The fields the spec sets that Altostrat does not hold yet and this resource is to send
/// (none when its writes are withheld).
fn pending(obj: &VpnInstance, instance: &Instance, gate: Gate) -> Vec<&'static str> {
    match plan::instance_update(&obj.spec, instance) {
        Some(update) if gate.open() => plan::instance_changed_fields(&update, instance),
        _ => Vec::new(),
    }
}

/// When to look again, from the status just written.
fn pace<A>(
    conn: &Conn<'_, VpnInstance, A>,
    handle: &Handle<VpnInstance>,
    drift: Duration,
    ready: bool,
) -> Duration {
    let stored = handle.status.stored().cloned().unwrap_or_default();
    let pace = (drift, conn.ctx.settings.provisioning_poll);
    next_look(&stored, ready, pace, handle.status.now(), fastrand::f64())
}

/// The first few of `names` and how many there are.
fn named(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let first = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    match names.len() {
        n if n > SHOWN => format!("{first} and {} more ({n} in all)", n - SHOWN),
        _ => first,
    }
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

/// The resource that takes over the instance of a resource being deleted (a GitOps rename): another
/// live VpnInstance of the namespace, read now (not from a cache a label selector may thin),
/// that adopts the same instance explicitly under the same hostname and would manage it.
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
fn look_for<A>(conn: &Conn<'_, VpnInstance, A>, token: &ApiToken, gate: Gate, now: &Time) -> Look {
    let (obj, ctx) = (conn.obj, conn.ctx);
    if reconcile_request(obj).is_some() {
        return Look::fresh(Urgency::Poll);
    }
    let status = obj.status.clone().unwrap_or_default();
    let converged = conditions::is_converged(
        &status.conditions,
        status.observed_generation,
        obj.metadata.generation,
    );
    // A withheld hub that serves has nothing to wait for, unless Altostrat is still applying
    // an update (an approved plan's, or one sent before the writes were withheld).
    let settled = status.server_ready && status.pending_changes.is_empty();
    if converged || (!gate.open() && settled) {
        return Look::within(reuse(conn, token), Urgency::Drift);
    }
    let age = time_in_state(&status, now);
    ctx.poll_look(
        obj,
        plan::provisioning_poll_interval(age, ctx.settings.provisioning_poll),
    )
}

/// How long a list may be reused for drift checks (see DRIFT_REUSE).
fn reuse<A>(conn: &Conn<'_, VpnInstance, A>, token: &ApiToken) -> Duration {
    conn.ctx.drift_interval(token).mul_f64(DRIFT_REUSE)
}

/// A provisioned instance with nothing pending, as the view holds it within the drift
/// interval: nothing more is to be learnt about it before its own write (a spec edit, or a PUT
/// the budget held back), so no list is spent on it. The update carries nothing of Altostrat's
/// but `publicDns` when the spec leaves it unset. A reconcile request always looks anew.
fn settled_in_view<A>(conn: &Conn<'_, VpnInstance, A>, token: &ApiToken, id: &str) -> Option<Instance> {
    if reconcile_request(conn.obj).is_some() {
        return None;
    }
    let look = Look::within(reuse(conn, token), Urgency::Poll);
    conn.ctx
        .observations
        .cached_instance(token, id, &look, |i| i.is_provisioned() && i.status.is_empty())
}
