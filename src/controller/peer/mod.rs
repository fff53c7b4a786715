//! `VpnPeer`: what the one lifecycle needs to know of a peer, its instance and its Altostrat peer.

#[cfg(test)]
mod decisions;
pub(crate) mod grant;
mod status;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tokio::time::Instant;

use super::conditions::{self, ConditionState, reason};
use super::context::{Context, DRIFT_REUSE};
use super::credentials::Wanted;
use super::error::{Error, Result};
use super::events::reason as event;
use super::lifecycle::decide::{Candidate, Kind, Remote};
use super::lifecycle::{Conn, Handle, Managed};
use super::observation::Look;
use super::policy::{Gate, reconcile_request};
use super::record::{self, instance_record, peer_record};
use super::{namespaces, profile};
use super::{plan, planned};
use crate::altostrat::model::{Peer, PeerUpdate};
use crate::altostrat::{ApiResult, ApiToken, Urgency, VpnApi};
use crate::crd::{
    DeletionPolicy, Holder, OwnershipRecordSpec, PlannedCall, VpnInstance, VpnPeer, VpnPeerSpec,
    VpnPeerStatus, cidr,
};
use status::{
    attached, observed_status, ready_conditions, usable_instance_id, waiting_conditions, withheld_status,
};

impl Kind for VpnPeer {
    type Spec = VpnPeerSpec;
    type Object = Peer;
    type Update = PeerUpdate;

    const NOUN: &'static str = "peer";
    const ID_FIELD: &'static str = "spec.peerId";
    const UNIQUE: bool = false;
    const HINT: &'static str = "delete it in Altostrat or wait for it to be recorded";

    fn spec_id(spec: &VpnPeerSpec) -> Option<&str> {
        spec.peer_id.as_deref()
    }
    fn invalid(spec: &VpnPeerSpec) -> Option<String> {
        cidr::refused_entries("spec.subnets", spec.subnets.as_deref().unwrap_or_default())
    }
    fn describe(spec: &VpnPeerSpec) -> String {
        spec.peer_id
            .as_deref()
            .map_or("this resource's peer".to_owned(), |id| {
                format!("Altostrat peer {id}")
            })
    }
    fn unlike(spec: &VpnPeerSpec, object: &Peer) -> Option<String> {
        plan::matching_peers(std::slice::from_ref(object), spec)
            .is_empty()
            .then(|| {
                format!(
                    "Altostrat peer {} is a peer of another type, user or site than this VpnPeer names",
                    object.id
                )
            })
    }
    fn update(spec: &VpnPeerSpec, object: &Peer, observes: bool) -> Option<(PeerUpdate, Vec<&'static str>)> {
        let body = match observes {
            true => plan::observed_peer_drift(spec, object),
            false => plan::peer_update(spec, object),
        }?;
        let field = if body.subnets.is_some() {
            "subnets"
        } else {
            "routeAll"
        };
        Some((body, vec![field]))
    }
    fn planned_create(spec: &VpnPeerSpec, parent: &str) -> Vec<PlannedCall> {
        vec![planned::create_peer_call(parent, spec)]
    }
    fn planned_update(parent: &str, id: &str, body: &PeerUpdate, current: Option<&Peer>) -> PlannedCall {
        planned::update_peer_call(parent, id, body, current)
    }
}

impl Managed for VpnPeer {
    const CONTROLLER: &'static str = "vpnpeer";
    const DELETE_IS_FINAL: bool = true;

    fn spec(&self) -> &VpnPeerSpec {
        &self.spec
    }
    fn deletion_policy(&self) -> Option<DeletionPolicy> {
        self.spec.deletion_policy
    }

    /// `peer.<uid>`: Altostrat has no unique key for peers, so the record is the resource's.
    fn record_name(&self) -> String {
        peer_record(&self.uid().unwrap_or_default())
    }
    fn record_id(record: &OwnershipRecordSpec) -> Option<&String> {
        record.peer_id.as_ref()
    }
    fn record_parent(record: &OwnershipRecordSpec) -> Option<&str> {
        record.instance_id.as_deref()
    }
    fn stamp(&self, record: &mut OwnershipRecordSpec, parent: &str, id: Option<String>) {
        record.instance_id = Some(parent.to_owned());
        record.peer_id = id;
    }
    /// Of the records naming one peer, the oldest holds it (read now).
    async fn holder_of<A: VpnApi>(ctx: &Context<A>, id: &str, me: &Holder) -> Result<Option<String>> {
        ctx.records.peer_held_elsewhere(id, me).await
    }

    /// What the instance's resource names, judged in the instance's namespace: a peer of
    /// another namespace uses its hub's credentials, never those of its own namespace.
    async fn credentials<A: VpnApi>(&self, ctx: &Context<A>) -> Result<(String, Wanted)> {
        let instance = referenced_instance(self, ctx).await?;
        let wanted = instance.map_or_else(Wanted::default, |i| crate::controller::instance::wanted_by(&i));
        Ok((self.instance_namespace(), wanted))
    }
    /// The Altostrat instance the peer may use: the instance its instance resource manages,
    /// provisioned, admitting the peer's namespace (read now) and held by that resource's
    /// record (read now); otherwise why the peer waits or is refused.
    async fn parent<A: VpnApi>(
        &self,
        ctx: &Context<A>,
    ) -> Result<std::result::Result<String, ConditionState>> {
        if let Err(not_watched) = watched(self, ctx) {
            return Ok(Err(not_watched));
        }
        let instance = referenced_instance(self, ctx).await?;
        let name = instance_label(self);
        if let Some(hub) = instance.as_deref()
            && let Err(why) = admitted(self, hub, ctx).await?
        {
            return Ok(Err(grant::not_permitted(why)));
        }
        let usable = usable_instance_id(instance.as_deref(), &name);
        let Some(instance) = instance.filter(|_| usable.is_ok()) else {
            return Ok(usable);
        };
        let record = ctx
            .records
            .look(
                &instance_record(&instance.spec.hostname),
                &record::holder(&*instance),
            )
            .await?;
        Ok(attached(usable, &record, &name))
    }

    fn look_for<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken, gate: Gate, _: &Time) -> Look {
        look_for(conn, token, gate)
    }
    async fn fetch<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        id: &str,
        look: Look,
    ) -> Result<Option<Peer>> {
        let ctx = conn.ctx;
        Ok(ctx
            .observations
            .peer(&*ctx.api, token, &conn.parent, id, look)
            .await?)
    }
    async fn fetch_now<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        id: &str,
        _: bool,
    ) -> Result<Option<Peer>> {
        let ctx = conn.ctx;
        Ok(ctx
            .observations
            .peer_now(&*ctx.api, token, &conn.parent, id)
            .await?)
    }
    /// The peers of this resource's type and user or site on its instance, from a list sent after
    /// `since` (the start of this reconcile: no create of ours is in flight then), each with
    /// the other record holding it, if any: that says it is not our lost create.
    async fn search<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        since: Instant,
    ) -> Result<Vec<Candidate<Peer>>> {
        let (obj, ctx) = (conn.obj, conn.ctx);
        let look = Look {
            fresh_since: since,
            urgency: Urgency::Poll,
        };
        let peers = ctx
            .observations
            .peers(&*ctx.api, token, &conn.parent, look)
            .await?
            .unwrap_or_default();
        let me = record::holder(obj);
        let mut candidates = Vec::new();
        for peer in plan::matching_peers(&peers, &obj.spec) {
            candidates.push(Candidate {
                recorded_by: ctx.records.peer_held_elsewhere(&peer.id, &me).await?,
                object: peer.clone(),
            });
        }
        Ok(candidates)
    }
    async fn create<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken) -> Result<Remote<Peer>> {
        let body = plan::peer_create(&conn.obj.spec);
        let created = conn.ctx.api.create_peer(token, &conn.parent, &body).await?;
        Ok(Remote::Found(created))
    }
    async fn update<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        id: &str,
        body: &PeerUpdate,
    ) -> ApiResult<Peer> {
        conn.ctx.api.update_peer(token, &conn.parent, id, body).await
    }
    async fn delete<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken, id: &str) -> ApiResult<()> {
        conn.ctx.api.delete_peer(token, &conn.parent, id).await
    }
    fn wrote<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken, id: &str, object: Option<&Peer>) {
        match object {
            Some(peer) => conn.ctx.observations.wrote_peer(token, &conn.parent, peer),
            None => conn.ctx.observations.deleted_peer(token, &conn.parent, id),
        }
    }
    fn known_gone<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken, id: &str) -> bool {
        conn.ctx.observations.peer_known_gone(token, &conn.parent, id)
    }
    fn fields(object: &Peer) -> serde_json::Value {
        plan::peer_fields(object)
    }
    fn update_note(&self, fields: &[&str], _: &PeerUpdate) -> String {
        format!("applied changes to {}", fields.join(", "))
    }

    async fn record_found<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        handle: &mut Handle<Self>,
        peer: &Peer,
    ) -> Result<()> {
        let next = observed_status(peer, &conn.parent, handle.status.stored());
        let desired = ready_conditions(handle.status.gate());
        handle.status.write(next, &desired).await
    }
    /// Records a converged peer, then delivers its profile (managed peers only, see `withhold`).
    async fn record<A: VpnApi>(
        conn: &mut Conn<'_, Self, A>,
        handle: &mut Handle<Self>,
        peer: &Peer,
    ) -> Result<Action> {
        let (obj, ctx) = (conn.obj, conn.ctx);
        ctx.looked(obj);
        let token = conn.token().await?;
        let was_ready = obj
            .status
            .as_ref()
            .is_some_and(|s| conditions::is_ready(&s.conditions));
        Self::record_found(conn, handle, peer).await?;
        if !was_ready {
            let note = format!("peer {} is in sync", peer.id);
            handle.activity.record(event::READY, note);
        }
        let action = Action::requeue(plan::jittered(ctx.drift_interval(&token), fastrand::f64()));
        let sooner = match Gate::of(obj).open() {
            true => profile::deliver(obj, ctx, handle, (peer, &conn.parent, &token)).await?,
            false => None,
        };
        Ok(sooner.map_or(action, Action::requeue))
    }
    /// Records a reconcile whose next writes the gate withholds: the peer as Altostrat holds
    /// it, the calls withheld, and the next look (a drift check). A profile Secret is left as
    /// it is: under `ObserveOnly` the peer is not this resource's, and while paused or planning
    /// nothing changes on its behalf.
    async fn withhold<A: VpnApi>(
        conn: &mut Conn<'_, Self, A>,
        handle: &mut Handle<Self>,
        remote: &Remote<Peer>,
        calls: Vec<PlannedCall>,
    ) -> Result<Action> {
        let (obj, ctx) = (conn.obj, conn.ctx);
        let stored = handle.status.stored().cloned().unwrap_or_default();
        let (status, desired) = withheld_status(stored, (remote, &conn.parent), calls, Gate::of(obj));
        handle.status.write(status, &desired).await?;
        if remote.found().is_none() {
            return Ok(Action::requeue(ctx.settings.resync_interval));
        }
        ctx.looked(obj);
        let drift = ctx.drift_interval(&conn.token().await?);
        Ok(Action::requeue(plan::jittered(drift, fastrand::f64())))
    }
    /// A peer waiting for its instance says so; the instance watch re-triggers it (and, for a
    /// grant, the namespace watch). An instance resource that does not exist may be a typo, and
    /// a hub that does not admit the peer needs a person: one Warning when the wait begins.
    async fn wait<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        handle: &mut Handle<Self>,
        waiting: ConditionState,
    ) -> Result<Action> {
        let warned = [
            (reason::INSTANCE_NOT_FOUND, event::INSTANCE_NOT_FOUND),
            (reason::NOT_PERMITTED, event::NOT_PERMITTED),
        ];
        let warning = warned.iter().find(|(r, _)| *r == waiting.reason);
        if let Some((why, event)) = warning
            && handle.status.ready_reason() != Some(*why)
        {
            handle.activity.warn(*event, waiting.message.clone());
        }
        let mut conditions = waiting_conditions(waiting);
        conditions.extend(profile::pending_until_ready(conn.obj));
        handle.status.write_conditions(&conditions).await?;
        Ok(Action::requeue(conn.ctx.settings.resync_interval))
    }
    /// A profile delivered for a vanished peer no longer connects.
    async fn forget_status(&self, handle: &mut Handle<Self>, id: &str) -> Result<()> {
        let forget_id = |status: &mut VpnPeerStatus| status.peer_id = None;
        match profile::outdated_by_loss(self, id) {
            Some(stale) => handle.status.write_stage(stale, forget_id).await,
            None => handle.status.update_fields(forget_id).await,
        }
    }
}

/// Whether a peer names an instance of another namespace.
pub(crate) fn crosses_namespaces(peer: &VpnPeer) -> bool {
    peer.namespace()
        .is_some_and(|own| peer.instance_namespace() != own)
}

/// The instance as a peer's messages name it: `name` in its own namespace, `namespace/name`
/// in another.
fn instance_label(peer: &VpnPeer) -> String {
    let name = &peer.spec.instance_ref.name;
    match crosses_namespaces(peer) {
        true => format!("{}/{name}", peer.instance_namespace()),
        false => name.clone(),
    }
}

/// The instance a peer points at. In its own namespace: from the instance controller's cache.
/// In another: read now, since its grant is judged on it (a grant is proof, and this scope's
/// cache may not hold that namespace at all).
async fn referenced_instance<A>(obj: &VpnPeer, ctx: &Context<A>) -> Result<Option<Arc<VpnInstance>>> {
    let namespace = obj.instance_namespace();
    let name = &obj.spec.instance_ref.name;
    if !crosses_namespaces(obj) {
        return Ok(ctx.instances.get(&ObjectRef::new(name).within(&namespace)));
    }
    let instances: Api<VpnInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    let instance = instances
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("read of VpnInstance {namespace}/{name}")))?;
    Ok(instance.map(Arc::new))
}

/// `Err` when the peer's instance is in a namespace outside `WATCH_NAMESPACES`: no reconcile of
/// that hub runs in this operator, so its record and status say nothing it could rely on.
fn watched<A>(obj: &VpnPeer, ctx: &Context<A>) -> std::result::Result<(), ConditionState> {
    let watched = &ctx.settings.watch_namespaces;
    let namespace = obj.instance_namespace();
    match watched.is_empty() || watched.contains(&namespace) {
        true => Ok(()),
        false => Err(grant::not_watched(
            &namespace,
            &obj.spec.instance_ref.name,
            watched,
        )),
    }
}

/// Whether `hub` admits the peer's namespace, on the namespace's labels read now (only when
/// the grant is a selector on them).
async fn admitted<A>(
    obj: &VpnPeer,
    hub: &VpnInstance,
    ctx: &Context<A>,
) -> Result<std::result::Result<(), String>> {
    let namespace = obj.namespace().unwrap_or_default();
    let labels = match grant::needs_labels(hub, &namespace) {
        true => namespaces::labels(&ctx.client, &namespace).await?,
        false => None,
    };
    Ok(grant::permits(hub, &namespace, labels.as_ref()))
}

/// How fresh the observation of this peer must be: a reconcile request asks for a list sent
/// from now on, as a poll (someone waits for the answer); a converged peer only needs a drift
/// check within the budget's cycle, and so does an existing one whose writes are withheld. A
/// Ready peer whose spec was edited may use the same view (its update carries nothing of
/// Altostrat's), but as a poll, so the edit is not put off behind drift checks. Anything else
/// needs a list newer than its previous look.
fn look_for<A>(conn: &Conn<'_, VpnPeer, A>, token: &ApiToken, gate: Gate) -> Look {
    let (obj, ctx) = (conn.obj, conn.ctx);
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
    let ready = conditions::is_ready(&status.conditions);
    if converged || (!gate.open() && ready) {
        Look::within(drift, Urgency::Drift)
    } else if ready {
        Look::within(drift, Urgency::Poll)
    } else {
        ctx.poll_look(obj, ctx.settings.provisioning_poll)
    }
}
