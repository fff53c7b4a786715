//! Reconciler of `VpnInstance`.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::conditions::{self, ConditionState, READY, SYNCED, reason};
use super::{
    Activity, Context, Error, Reconciled, Result, STALE_RETRY, apply_status, ensure_finalizer, has_finalizer,
    plan, release,
};
use crate::altostrat::model::Instance;
use crate::altostrat::{ApiError, ApiToken, VpnApi};
use crate::crd::{DeletionPolicy, FirewallRuleStatus, VpnInstance, VpnInstanceStatus, VpnPeer};

/// Re-check interval while the instance waits for its VpnPeers to be deleted.
const PEER_DRAIN_POLL: Duration = Duration::from_secs(5);

impl Reconciled for VpnInstance {
    type Status = VpnInstanceStatus;
    const CONTROLLER: &'static str = "vpninstance";

    fn status(&self) -> Option<&VpnInstanceStatus> {
        self.status.as_ref()
    }

    fn converge<A: VpnApi>(
        &self,
        ctx: &Context<A>,
        api: &Api<Self>,
        current: &mut Option<VpnInstanceStatus>,
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

/// Create/adopt, update and observe the Altostrat instance, then record what was seen.
async fn converge<A: VpnApi>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    api: &Api<VpnInstance>,
    current: &mut Option<VpnInstanceStatus>,
    activity: &mut Activity,
) -> Result<Action> {
    // Before anything exists in Altostrat that would need cleaning up.
    if !ensure_finalizer(api, obj).await? {
        return Ok(Action::requeue(STALE_RETRY));
    }
    let spec = &obj.spec;
    let namespace = obj.namespace().unwrap_or_default();
    let token = ctx
        .token(&namespace, spec.credentials_secret_ref.as_ref())
        .await?;
    let known_id = obj
        .status
        .as_ref()
        .and_then(|s| s.instance_id.clone())
        .or_else(|| spec.instance_id.clone());

    let mut observed = match known_id {
        None => {
            let (instance, written) = create_or_adopt(obj, ctx, api, &token, activity).await?;
            *current = Some(written);
            instance
        }
        Some(id) => match ctx.api.get_instance(&token, &id).await {
            Ok(instance) => instance,
            Err(e) if e.is_not_found() && spec.instance_id.is_none() => {
                ctx.publish(
                    obj,
                    EventType::Warning,
                    "Recreating",
                    "Create",
                    format!("Altostrat instance {id} no longer exists; creating it again"),
                )
                .await;
                let (instance, written) = create_or_adopt(obj, ctx, api, &token, activity).await?;
                *current = Some(written);
                instance
            }
            Err(e) if e.is_not_found() => {
                return Err(Error::InvalidSpec(format!(
                    "spec.instanceId {id} does not exist in Altostrat"
                )));
            }
            Err(e) => return Err(e.into()),
        },
    };
    if !observed.hostname_label().eq_ignore_ascii_case(&spec.hostname) {
        return Err(Error::InvalidSpec(format!(
            "spec.hostname {:?} does not match the adopted instance's hostname {:?}",
            spec.hostname, observed.hostname
        )));
    }

    // Altostrat only accepts configuration once the server is provisioned.
    if observed.is_provisioned()
        && let Some(update) = plan::instance_update(spec, &observed)
    {
        let fields = plan::instance_changed_fields(&update, &observed).join(", ");
        observed = ctx.api.update_instance(&token, &observed.id, &update).await?;
        activity.record("Updated", "Update", format!("applied changes to {fields}"));
    }

    let was_ready = obj
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_ready(&s.conditions));
    let out_of_sync = plan::instance_update(spec, &observed).is_some();
    let desired = desired_conditions(&observed, out_of_sync);
    let status = status_from(&observed, obj, current.as_ref(), &desired);
    if current.as_ref() != Some(&status) {
        apply_status(api, obj, &status).await?;
        *current = Some(status.clone());
    }
    let ready = conditions::is_ready(&status.conditions);
    if ready && !was_ready {
        activity.record(
            "Ready",
            "Reconcile",
            format!("instance {} is provisioned and in sync", observed.hostname),
        );
    }
    Ok(requeue(&status, ready, ctx))
}

/// Creates the instance, or adopts the one a previous attempt created: hostnames are unique
/// in Altostrat, so a create that was applied but whose answer was lost (crash, timeout) comes
/// back as 409 on the next attempt, and the instance with our hostname is ours. This costs no
/// extra call in the common case. The id is written to status before anything else happens.
async fn create_or_adopt<A: VpnApi>(
    obj: &VpnInstance,
    ctx: &Context<A>,
    api: &Api<VpnInstance>,
    token: &ApiToken,
    activity: &mut Activity,
) -> Result<(Instance, VpnInstanceStatus)> {
    let spec = &obj.spec;
    ctx.check_region(token, &spec.region).await?;
    let instance = match ctx.api.create_instance(token, &plan::instance_create(spec)).await {
        Ok(created) => {
            activity.record(
                "Created",
                "Create",
                format!(
                    "created Altostrat instance {} in region {}",
                    created.id, created.region
                ),
            );
            created
        }
        Err(conflict @ ApiError::Conflict { .. }) => {
            let existing = ctx.api.list_instances(token).await?;
            let Some(found) = plan::find_instance_by_hostname(&existing, &spec.hostname) else {
                // Taken by an instance these credentials cannot see.
                return Err(conflict.into());
            };
            activity.record(
                "Adopted",
                "Create",
                format!(
                    "adopted existing Altostrat instance {} with hostname {}",
                    found.id, found.hostname
                ),
            );
            found.clone()
        }
        Err(e) => return Err(e.into()),
    };
    let conditions = desired_conditions(&instance, true);
    let status = status_from(&instance, obj, obj.status.as_ref(), &conditions);
    apply_status(api, obj, &status).await?;
    Ok((instance, status))
}

/// Ready/Synced for a successfully observed instance (pure).
fn desired_conditions(observed: &Instance, out_of_sync: bool) -> [ConditionState; 2] {
    let ready = if !observed.is_provisioned() {
        let flags = [
            ("configured", observed.configured),
            ("rsaReady", observed.rsa_ready),
            ("diffieHellmanReady", observed.diffie_hellman_ready),
            ("serverReady", observed.server_ready),
        ];
        let waiting: Vec<&str> = flags.iter().filter(|(_, v)| !v).map(|(n, _)| *n).collect();
        ConditionState::new(
            READY,
            false,
            reason::PROVISIONING,
            format!(
                "Altostrat is provisioning the instance; waiting for {}",
                waiting.join(", ")
            ),
        )
    } else if !observed.status.is_empty() {
        ConditionState::new(
            READY,
            false,
            reason::UPDATING,
            format!(
                "Altostrat is applying configuration changes: {}",
                observed.status.join(", ")
            ),
        )
    } else if out_of_sync {
        ConditionState::new(
            READY,
            false,
            reason::UPDATING,
            "Configuration changes are being applied",
        )
    } else {
        ConditionState::new(
            READY,
            true,
            reason::AVAILABLE,
            "Instance is provisioned and matches the spec",
        )
    };
    [
        ready,
        ConditionState::new(
            SYNCED,
            true,
            reason::RECONCILE_SUCCESS,
            "Spec applied to Altostrat",
        ),
    ]
}

fn status_from(
    observed: &Instance,
    obj: &VpnInstance,
    current: Option<&VpnInstanceStatus>,
    desired: &[ConditionState],
) -> VpnInstanceStatus {
    let existing = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    VpnInstanceStatus {
        instance_id: Some(observed.id.clone()),
        hostname: Some(observed.hostname.clone()).filter(|h| !h.is_empty()),
        configured: observed.configured,
        rsa_ready: observed.rsa_ready,
        diffie_hellman_ready: observed.diffie_hellman_ready,
        server_ready: observed.server_ready,
        pending_changes: observed.status.clone(),
        firewall: observed
            .firewall
            .iter()
            .map(|r| FirewallRuleStatus {
                name: r.name.clone(),
                protocol: r.protocol.clone(),
                port: r.port.clone(),
                source: r.source.clone(),
                destination: r.destination.clone(),
            })
            .collect(),
        created_at: observed.created_at.clone(),
        observed_generation: obj.metadata.generation,
        conditions: conditions::merge(existing, desired, obj.metadata.generation, &conditions::now()),
    }
}

/// Poll while Altostrat is still working, otherwise come back at the resync interval.
fn requeue<A>(status: &VpnInstanceStatus, ready: bool, ctx: &Context<A>) -> Action {
    if ready {
        return Action::requeue(plan::jittered(ctx.settings.resync_interval, fastrand::f64()));
    }
    let since = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| age(&c.last_transition_time))
        .unwrap_or_default();
    Action::requeue(plan::provisioning_poll_interval(since))
}

fn age(time: &Time) -> Duration {
    let now = conditions::now().0;
    Duration::try_from(now.duration_since(time.0)).unwrap_or_default()
}

/// Deletion: honour `deletionPolicy`, wait for peers that still reference the instance, and
/// treat "already gone" as done.
async fn cleanup<A: VpnApi>(obj: &VpnInstance, ctx: &Context<A>, api: &Api<VpnInstance>) -> Result<Action> {
    if !has_finalizer(obj) {
        return Ok(Action::await_change());
    }
    if obj.spec.deletion_policy == DeletionPolicy::Orphan {
        ctx.publish(
            obj,
            EventType::Normal,
            "Orphaned",
            "Delete",
            "deletionPolicy is Orphan; the Altostrat instance is left running".into(),
        )
        .await;
        return release(api, obj).await;
    }

    // Peers are deleted through their own resources first, so each peer's deletionPolicy is
    // honoured and no VpnPeer is left pointing at a vanished hub.
    let namespace = obj.namespace().unwrap_or_default();
    let peers: Api<VpnPeer> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = obj.name_any();
    let dependents = peers
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.spec.instance_ref.name == name)
        .count();
    if dependents > 0 {
        let mut status = obj.status.clone().unwrap_or_default();
        let message = format!("Waiting for {dependents} VpnPeer(s) referencing this instance to be deleted");
        let desired = [
            ConditionState::new(READY, false, reason::DELETING, message),
            ConditionState::new(SYNCED, true, reason::DELETING, "Deletion in progress"),
        ];
        status.conditions = conditions::merge(
            &status.conditions,
            &desired,
            obj.metadata.generation,
            &conditions::now(),
        );
        if obj.status.as_ref() != Some(&status) {
            apply_status(api, obj, &status).await?;
        }
        return Ok(Action::requeue(PEER_DRAIN_POLL));
    }

    let token = ctx
        .token(&namespace, obj.spec.credentials_secret_ref.as_ref())
        .await?;
    let known_id = obj
        .status
        .as_ref()
        .and_then(|s| s.instance_id.clone())
        .or_else(|| obj.spec.instance_id.clone());
    let id = match known_id {
        Some(id) => Some(id),
        // A create may have succeeded without its id being recorded: look it up by hostname.
        None => plan::find_instance_by_hostname(&ctx.api.list_instances(&token).await?, &obj.spec.hostname)
            .map(|i| i.id.clone()),
    };
    if let Some(id) = id {
        match ctx.api.delete_instance(&token, &id).await {
            Ok(()) => {
                ctx.publish(
                    obj,
                    EventType::Normal,
                    "Deleted",
                    "Delete",
                    format!("Deleted Altostrat instance {id}"),
                )
                .await;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    release(api, obj).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioning_condition_names_the_missing_flags() {
        let observed = Instance {
            configured: true,
            rsa_ready: true,
            ..Instance::default()
        };
        let [ready, synced] = desired_conditions(&observed, false);
        assert!(!ready.status);
        assert_eq!(ready.reason, "Provisioning");
        assert!(
            ready.message.ends_with("diffieHellmanReady, serverReady"),
            "{}",
            ready.message
        );
        assert!(synced.status);
    }

    #[test]
    fn pending_changes_keep_the_instance_not_ready() {
        let observed = Instance {
            configured: true,
            rsa_ready: true,
            diffie_hellman_ready: true,
            server_ready: true,
            status: vec!["peer-created".into()],
            ..Instance::default()
        };
        let [ready, _] = desired_conditions(&observed, false);
        assert_eq!((ready.status, ready.reason), (false, "Updating"));
        assert!(ready.message.contains("peer-created"));
        let converged = Instance {
            status: vec![],
            ..observed
        };
        let [ready, _] = desired_conditions(&converged, false);
        assert_eq!((ready.status, ready.reason), (true, "Available"));
    }
}
