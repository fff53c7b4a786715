//! Reconciler of `VpnPeer`.

use std::future::Future;
use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::conditions::{self, ConditionState, READY, SYNCED, reason};
use super::{
    Activity, Context, Reconciled, Result, STALE_RETRY, apply_status, ensure_finalizer, has_finalizer, plan,
    release,
};
use crate::altostrat::model::Peer;
use crate::altostrat::{ApiToken, VpnApi};
use crate::crd::{DeletionPolicy, VpnInstance, VpnPeer, VpnPeerStatus};

impl Reconciled for VpnPeer {
    type Status = VpnPeerStatus;
    const CONTROLLER: &'static str = "vpnpeer";

    fn status(&self) -> Option<&VpnPeerStatus> {
        self.status.as_ref()
    }

    fn converge<A: VpnApi>(
        &self,
        ctx: &Context<A>,
        api: &Api<Self>,
        current: &mut Option<VpnPeerStatus>,
        activity: &mut Activity,
    ) -> impl Future<Output = Result<Action>> + Send {
        converge(self, ctx, api, current, activity)
    }

    fn cleanup<A: VpnApi>(
        &self,
        ctx: &Context<A>,
        api: &Api<Self>,
    ) -> impl Future<Output = Result<Action>> + Send {
        cleanup(self, ctx, api)
    }
}

/// The instance a peer points at, looked up in the instance controller's cache. A reference
/// is a name in the peer's own namespace, so a peer can never attach to another namespace's hub.
fn referenced_instance<A>(obj: &VpnPeer, ctx: &Context<A>) -> Option<Arc<VpnInstance>> {
    let namespace = obj.namespace().unwrap_or_default();
    ctx.instances
        .get(&ObjectRef::new(&obj.spec.instance_ref.name).within(&namespace))
}

/// The Altostrat id of a provisioned, live instance; `Err` carries why the peer must wait.
fn usable_instance_id(instance: Option<&VpnInstance>, name: &str) -> Result<String, ConditionState> {
    let Some(instance) = instance else {
        return Err(ConditionState::new(
            READY,
            false,
            reason::INSTANCE_NOT_FOUND,
            format!("VpnInstance {name:?} does not exist in this namespace"),
        ));
    };
    if instance.meta().deletion_timestamp.is_some() {
        return Err(ConditionState::new(
            READY,
            false,
            reason::WAITING_FOR_INSTANCE,
            format!("VpnInstance {name:?} is being deleted"),
        ));
    }
    match instance.status.as_ref() {
        Some(s) if s.server_ready && s.instance_id.is_some() => Ok(s.instance_id.clone().unwrap_or_default()),
        _ => Err(ConditionState::new(
            READY,
            false,
            reason::WAITING_FOR_INSTANCE,
            format!("Waiting for VpnInstance {name:?} to be provisioned"),
        )),
    }
}

async fn converge<A: VpnApi>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    api: &Api<VpnPeer>,
    current: &mut Option<VpnPeerStatus>,
    activity: &mut Activity,
) -> Result<Action> {
    let spec = &obj.spec;
    let instance = referenced_instance(obj, ctx);
    let instance_id = match usable_instance_id(instance.as_deref(), &spec.instance_ref.name) {
        Ok(id) => id,
        Err(waiting) => {
            // No hot loop: the instance watch re-triggers this peer when the instance changes.
            let synced = ConditionState::new(SYNCED, true, waiting.reason, "Nothing to apply yet");
            let mut status = obj.status.clone().unwrap_or_default();
            status.creation_started = false;
            status.observed_generation = obj.metadata.generation;
            status.conditions = conditions::merge(
                &status.conditions,
                &[waiting, synced],
                obj.metadata.generation,
                &conditions::now(),
            );
            if obj.status.as_ref() != Some(&status) {
                apply_status(api, obj, &status).await?;
            }
            return Ok(Action::requeue(ctx.settings.resync_interval));
        }
    };
    let namespace = obj.namespace().unwrap_or_default();
    let instance_secret = instance
        .as_ref()
        .and_then(|i| i.spec.credentials_secret_ref.clone());
    let token = ctx.token(&namespace, instance_secret.as_ref()).await?;

    // A peer recorded on a previous incarnation of the instance went away with it.
    let known_id = current
        .as_ref()
        .filter(|s| s.instance_id.as_deref() == Some(instance_id.as_str()))
        .and_then(|s| s.peer_id.clone());
    let mut observed = match known_id {
        None => {
            let Some(peer) = create_or_adopt(obj, ctx, api, &token, &instance_id, current, activity).await?
            else {
                return Ok(Action::requeue(STALE_RETRY));
            };
            peer
        }
        // Only if someone removed it: the finalizer is added with the create claim.
        Some(_) if !ensure_finalizer(api, obj).await? => return Ok(Action::requeue(STALE_RETRY)),
        Some(peer_id) => match ctx.api.get_peer(&token, &instance_id, &peer_id).await {
            Ok(peer) => peer,
            Err(e) if e.is_not_found() => {
                ctx.publish(
                    obj,
                    EventType::Warning,
                    "Recreating",
                    "Create",
                    format!("Altostrat peer {peer_id} no longer exists; creating it again"),
                )
                .await;
                // Forget the vanished id first: with the finalizer held and no id recorded, a
                // lost answer to the new POST is looked up by the next attempt, not repeated.
                let mut forgotten = current.clone().unwrap_or_default();
                forgotten.peer_id = None;
                apply_status(api, obj, &forgotten).await?;
                *current = Some(forgotten);
                let Some(peer) =
                    create_or_adopt(obj, ctx, api, &token, &instance_id, current, activity).await?
                else {
                    return Ok(Action::requeue(STALE_RETRY));
                };
                peer
            }
            Err(e) => return Err(e.into()),
        },
    };

    if let Some(update) = plan::peer_update(spec, &observed) {
        observed = ctx
            .api
            .update_peer(&token, &instance_id, &observed.id, &update)
            .await?;
        let field = if update.subnets.is_some() {
            "subnets"
        } else {
            "routeAll"
        };
        activity.record("Updated", "Update", format!("applied changes to {field}"));
    }

    let was_ready = obj
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_ready(&s.conditions));
    let status = status_from(&observed, &instance_id, obj, current.as_ref());
    if current.as_ref() != Some(&status) {
        apply_status(api, obj, &status).await?;
        *current = Some(status);
    }
    if !was_ready {
        activity.record("Ready", "Reconcile", format!("peer {} is in sync", observed.id));
    }
    Ok(Action::requeue(plan::jittered(
        ctx.settings.resync_interval,
        fastrand::f64(),
    )))
}

/// Whether a previous attempt may have sent the create: our finalizer is the claim made just
/// before every POST, so holding it without a recorded peer id means the answer may have been
/// lost (crash, timeout). A peer recorded on another instance counts as not recorded.
fn create_may_have_happened(
    holds_finalizer: bool,
    status: Option<&VpnPeerStatus>,
    instance_id: &str,
) -> bool {
    holds_finalizer
        && !status.is_some_and(|s| s.peer_id.is_some() && s.instance_id.as_deref() == Some(instance_id))
}

/// Creates the peer, never twice. Altostrat documents no unique key for peers, so the POST is
/// claimed first: the finalizer is added with the copy's `resourceVersion` as a precondition,
/// which fails on a stale copy that could predate an earlier attempt. A reconcile that finds
/// the claim without a peer id first looks for a peer of the same type and user/site and adopts
/// it. The id is recorded as soon as it is known. Returns `None` when the copy was stale.
async fn create_or_adopt<A: VpnApi>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    api: &Api<VpnPeer>,
    token: &ApiToken,
    instance_id: &str,
    current: &mut Option<VpnPeerStatus>,
    activity: &mut Activity,
) -> Result<Option<Peer>> {
    let mut adopted = None;
    if create_may_have_happened(has_finalizer(obj), current.as_ref(), instance_id) {
        let existing = ctx
            .api
            .list_peers(token, instance_id, Some(plan::peer_type(obj.spec.kind)))
            .await?;
        adopted = plan::find_matching_peer(&existing, &obj.spec).cloned();
    } else if !ensure_finalizer(api, obj).await? {
        return Ok(None);
    }
    let peer = match adopted {
        Some(found) => {
            activity.record(
                "Adopted",
                "Create",
                format!("adopted existing Altostrat peer {}", found.id),
            );
            found
        }
        None => {
            let created = ctx
                .api
                .create_peer(token, instance_id, &plan::peer_create(&obj.spec))
                .await?;
            activity.record(
                "Created",
                "Create",
                format!("created Altostrat peer {}", created.id),
            );
            created
        }
    };
    let status = status_from(&peer, instance_id, obj, current.as_ref());
    apply_status(api, obj, &status).await?;
    *current = Some(status);
    Ok(Some(peer))
}

fn status_from(
    observed: &Peer,
    instance_id: &str,
    obj: &VpnPeer,
    current: Option<&VpnPeerStatus>,
) -> VpnPeerStatus {
    let existing = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let desired = [
        ConditionState::new(READY, true, reason::AVAILABLE, "Peer exists and matches the spec"),
        ConditionState::new(
            SYNCED,
            true,
            reason::RECONCILE_SUCCESS,
            "Spec applied to Altostrat",
        ),
    ];
    VpnPeerStatus {
        creation_started: false,
        peer_id: Some(observed.id.clone()),
        instance_id: Some(instance_id.to_owned()),
        connected: observed.connected,
        connected_from: observed.connected_from.clone(),
        observed_generation: obj.metadata.generation,
        conditions: conditions::merge(existing, &desired, obj.metadata.generation, &conditions::now()),
    }
}

async fn cleanup<A: VpnApi>(obj: &VpnPeer, ctx: &Context<A>, api: &Api<VpnPeer>) -> Result<Action> {
    if !has_finalizer(obj) {
        return Ok(Action::await_change());
    }
    if obj.spec.deletion_policy == DeletionPolicy::Delete {
        let status = obj.status.clone().unwrap_or_default();
        let instance = referenced_instance(obj, ctx);
        let namespace = obj.namespace().unwrap_or_default();
        let secret = instance
            .as_ref()
            .and_then(|i| i.spec.credentials_secret_ref.clone());
        let instance_id = status.instance_id.clone().or_else(|| {
            instance
                .as_ref()
                .and_then(|i| i.status.as_ref())
                .and_then(|s| s.instance_id.clone())
        });
        if let Some(instance_id) = instance_id {
            let token = ctx.token(&namespace, secret.as_ref()).await?;
            let peer_id = match status.peer_id.clone() {
                Some(id) => Some(id),
                // The finalizer is held, so a create was claimed and may have succeeded
                // without its id being recorded.
                None => match ctx
                    .api
                    .list_peers(&token, &instance_id, Some(plan::peer_type(obj.spec.kind)))
                    .await
                {
                    Ok(peers) => plan::find_matching_peer(&peers, &obj.spec).map(|p| p.id.clone()),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(e.into()),
                },
            };
            if let Some(peer_id) = peer_id {
                match ctx.api.delete_peer(&token, &instance_id, &peer_id).await {
                    Ok(()) => {
                        ctx.publish(
                            obj,
                            EventType::Normal,
                            "Deleted",
                            "Delete",
                            format!("Deleted Altostrat peer {peer_id}"),
                        )
                        .await;
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    release(api, obj).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{VpnInstanceSpec, VpnInstanceStatus};

    fn instance(status: Option<VpnInstanceStatus>) -> VpnInstance {
        let spec: VpnInstanceSpec = serde_json::from_value(serde_json::json!({
            "name": "hub", "hostname": "hub-one", "region": "sjc"
        }))
        .unwrap();
        let mut i = VpnInstance::new("hub", spec);
        i.status = status;
        i
    }

    #[test]
    fn only_a_claimed_creation_without_a_recorded_id_triggers_a_lookup() {
        let recorded = VpnPeerStatus {
            peer_id: Some("p".into()),
            instance_id: Some("hub-1".into()),
            ..VpnPeerStatus::default()
        };
        assert!(!create_may_have_happened(true, Some(&recorded), "hub-1"));
        assert!(
            create_may_have_happened(true, Some(&recorded), "hub-2"),
            "a peer recorded on an earlier incarnation of the instance is not ours to skip the lookup"
        );
        let waiting = VpnPeerStatus {
            instance_id: Some("hub-1".into()),
            ..VpnPeerStatus::default()
        };
        assert!(create_may_have_happened(true, Some(&waiting), "hub-1"));
        assert!(create_may_have_happened(true, None, "hub-1"));
        assert!(
            !create_may_have_happened(false, Some(&waiting), "hub-1"),
            "no claim, no create"
        );
        assert!(!create_may_have_happened(false, None, "hub-1"));
    }

    #[test]
    fn peers_wait_for_a_missing_or_unprovisioned_instance() {
        let missing = usable_instance_id(None, "hub").unwrap_err();
        assert_eq!(missing.reason, "InstanceNotFound");
        let provisioning = instance(Some(VpnInstanceStatus {
            instance_id: Some("id".into()),
            ..Default::default()
        }));
        assert_eq!(
            usable_instance_id(Some(&provisioning), "hub").unwrap_err().reason,
            "WaitingForInstance"
        );
        let ready = instance(Some(VpnInstanceStatus {
            instance_id: Some("id".into()),
            server_ready: true,
            ..Default::default()
        }));
        assert_eq!(usable_instance_id(Some(&ready), "hub").unwrap(), "id");
    }
}
