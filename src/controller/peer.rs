//! Reconciler of `VpnPeer`.

use std::future::Future;
use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::conditions::{self, ConditionState, READY, SYNCED, reason};
use super::{Context, Reconciled, Result, apply_status, apply_status_if_current, plan, remove_finalizer};
use crate::altostrat::model::Peer;
use crate::altostrat::{ApiToken, VpnApi};
use crate::crd::{DeletionPolicy, VpnInstance, VpnPeer, VpnPeerStatus};

/// When our copy of a peer was stale, look again after the watch has caught up.
const STALE_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

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
    ) -> impl Future<Output = Result<Action>> + Send {
        converge(self, ctx, api, current)
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
) -> Result<Action> {
    let spec = &obj.spec;
    let instance = referenced_instance(obj, ctx);
    let instance_id = match usable_instance_id(instance.as_deref(), &spec.instance_ref.name) {
        Ok(id) => id,
        Err(waiting) => {
            // No hot loop: the instance watch re-triggers this peer when the instance changes.
            let synced = ConditionState::new(SYNCED, true, waiting.reason, "Nothing to apply yet");
            let mut status = obj.status.clone().unwrap_or_default();
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
            let Some(peer) = create_or_adopt(obj, ctx, api, &token, &instance_id, current).await? else {
                return Ok(Action::requeue(STALE_RETRY));
            };
            peer
        }
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
                let Some(peer) = create_or_adopt(obj, ctx, api, &token, &instance_id, current).await? else {
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
        ctx.publish(
            obj,
            EventType::Normal,
            "Updated",
            "Update",
            format!("Applied changes to {field}"),
        )
        .await;
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
        ctx.publish(
            obj,
            EventType::Normal,
            "Ready",
            "Reconcile",
            format!("Peer {} is in sync", observed.id),
        )
        .await;
    }
    Ok(Action::requeue(plan::jittered(
        ctx.settings.resync_interval,
        fastrand::f64(),
    )))
}

/// Whether a previous attempt may have sent the create: `creationStarted` is recorded before
/// every POST and survives failure reporting.
fn create_may_have_happened(status: Option<&VpnPeerStatus>, instance_id: &str) -> bool {
    status.is_some_and(|s| {
        s.creation_started && s.peer_id.is_none() && s.instance_id.as_deref() == Some(instance_id)
    })
}

/// Creates the peer, never twice: Altostrat documents no unique key for peers, so the status
/// is marked `Creating` before the POST; a reconcile that finds that mark without a peer id
/// (the answer was lost to a crash or timeout) first looks for a peer of the same type and
/// user/site and adopts it. The id is recorded as soon as it is known.
async fn create_or_adopt<A: VpnApi>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    api: &Api<VpnPeer>,
    token: &ApiToken,
    instance_id: &str,
    current: &mut Option<VpnPeerStatus>,
) -> Result<Option<Peer>> {
    let mut adopted = None;
    if create_may_have_happened(current.as_ref(), instance_id) {
        let existing = ctx
            .api
            .list_peers(token, instance_id, Some(plan::peer_type(obj.spec.kind)))
            .await?;
        adopted = plan::find_matching_peer(&existing, &obj.spec).cloned();
    } else {
        let marker = VpnPeerStatus {
            creation_started: true,
            peer_id: None,
            instance_id: Some(instance_id.to_owned()),
            connected: false,
            connected_from: None,
            observed_generation: obj.metadata.generation,
            conditions: conditions::merge(
                current
                    .as_ref()
                    .map(|s| s.conditions.as_slice())
                    .unwrap_or_default(),
                &[
                    ConditionState::new(READY, false, reason::CREATING, "Creating the peer in Altostrat"),
                    ConditionState::new(SYNCED, true, reason::CREATING, "Create in progress"),
                ],
                obj.metadata.generation,
                &conditions::now(),
            ),
        };
        // Conditional on our copy being current: a stale copy could predate an earlier
        // create whose mark and id we have not seen yet.
        if !apply_status_if_current(api, obj, &marker).await? {
            return Ok(None);
        }
        *current = Some(marker);
    }
    let peer = match adopted {
        Some(found) => {
            ctx.publish(
                obj,
                EventType::Normal,
                "Adopted",
                "Create",
                format!("Adopted existing Altostrat peer {}", found.id),
            )
            .await;
            found
        }
        None => {
            let created = ctx
                .api
                .create_peer(token, instance_id, &plan::peer_create(&obj.spec))
                .await?;
            ctx.publish(
                obj,
                EventType::Normal,
                "Created",
                "Create",
                format!("Created Altostrat peer {}", created.id),
            )
            .await;
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
    if !obj.finalizers().iter().any(|f| f == crate::crd::FINALIZER) {
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
                None if !create_may_have_happened(Some(&status), &instance_id) => None,
                // A create may have succeeded without its id being recorded.
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
    remove_finalizer(api, obj).await?;
    Ok(Action::await_change())
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
    fn only_a_started_creation_on_the_same_instance_triggers_a_lookup() {
        let started = VpnPeerStatus {
            creation_started: true,
            instance_id: Some("hub-1".into()),
            ..VpnPeerStatus::default()
        };
        assert!(create_may_have_happened(Some(&started), "hub-1"));
        assert!(
            !create_may_have_happened(Some(&started), "hub-2"),
            "a new instance has no peers of ours"
        );
        let recorded = VpnPeerStatus {
            peer_id: Some("p".into()),
            ..started.clone()
        };
        assert!(!create_may_have_happened(Some(&recorded), "hub-1"));
        let fresh = VpnPeerStatus {
            creation_started: false,
            ..started
        };
        assert!(!create_may_have_happened(Some(&fresh), "hub-1"));
        assert!(!create_may_have_happened(None, "hub-1"));
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
