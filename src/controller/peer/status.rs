//! A `VpnPeer`'s status, and the instance it waits for.

use kube::Resource;

use super::super::conditions::{ConditionState, READY, STALLED, SYNCED, reason};
use super::super::lifecycle::decide::Remote;
use super::super::lifecycle::{Withheld, withheld};
use super::super::policy::Gate;
use super::super::record::Holding;
use crate::altostrat::model::Peer;
use crate::crd::{PlannedCall, VpnInstance, VpnPeer, VpnPeerStatus};

/// The Altostrat id of a provisioned, live instance; `Err` carries why the peer must wait.
pub(crate) fn usable_instance_id(
    instance: Option<&VpnInstance>,
    name: &str,
) -> Result<String, ConditionState> {
    let Some(instance) = instance else {
        return Err(ConditionState::new(
            READY,
            false,
            reason::INSTANCE_NOT_FOUND,
            match name.contains('/') {
                true => format!("VpnInstance {name:?} does not exist"),
                false => format!("VpnInstance {name:?} does not exist in this namespace"),
            },
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

/// The instance id a peer may use: the one `usable` found, only if the instance resource holds
/// the instance's record for that id (in either role: a managed peer on an observed instance works).
/// An instance id in an instance's status proves nothing: a tenant can write it.
pub(crate) fn attached(
    usable: Result<String, ConditionState>,
    record: &Holding,
    name: &str,
) -> Result<String, ConditionState> {
    let id = usable?;
    match record.mine() {
        Some(record) if record.instance_id.as_deref() == Some(id.as_str()) => Ok(id),
        _ => Err(ConditionState::new(
            READY,
            false,
            reason::WAITING_FOR_INSTANCE,
            format!(
                "VpnInstance {name:?} does not hold the ownership record of Altostrat instance {id}; \
                 peers attach only to a hub their instance resource holds"
            ),
        )),
    }
}

/// The status fields that mirror the Altostrat peer (conditions are the writer's), still
/// naming the profile Secret `stored` names: the profile delivery, a step of its own, decides
/// whether it still holds.
pub(crate) fn observed_status(
    observed: &Peer,
    instance_id: &str,
    stored: Option<&VpnPeerStatus>,
) -> VpnPeerStatus {
    VpnPeerStatus {
        peer_id: Some(observed.id.clone()),
        instance_id: Some(instance_id.to_owned()),
        connected: observed.connected,
        connected_from: observed.connected_from.clone(),
        profile_secret: stored.and_then(|s| s.profile_secret.clone()),
        ..VpnPeerStatus::default()
    }
}

pub(crate) fn ready_conditions(gate: Gate) -> [ConditionState; 2] {
    let synced = match gate.observes() {
        true => ConditionState::new(
            SYNCED,
            true,
            reason::OBSERVED,
            "Altostrat matches the fields the spec sets (managementPolicy ObserveOnly writes nothing)",
        ),
        false => ConditionState::new(
            SYNCED,
            true,
            reason::RECONCILE_SUCCESS,
            "Altostrat holds the spec",
        ),
    };
    let ready = ConditionState::new(READY, true, reason::AVAILABLE, "Peer exists and matches the spec");
    [ready, synced]
}

/// The status and conditions of a reconcile whose next writes are withheld: the peer as
/// Altostrat holds it, if it exists (`Ready` says it does).
pub(crate) fn withheld_status(
    stored: VpnPeerStatus,
    (remote, instance_id): (&Remote<Peer>, &str),
    calls: Vec<PlannedCall>,
    gate: Gate,
) -> (VpnPeerStatus, Vec<ConditionState>) {
    let Withheld { plan, conditions } = withheld::<VpnPeer>(remote, calls, gate, |_| {
        ConditionState::new(READY, true, reason::AVAILABLE, "Peer exists")
    });
    let status = match remote.found() {
        Some(peer) => observed_status(peer, instance_id, Some(&stored)),
        None => stored,
    };
    (VpnPeerStatus { plan, ..status }, conditions)
}

/// The conditions of a peer that waits for its instance: nothing is sent to Altostrat. A peer
/// its hub does not admit is also `Stalled`: only a person can change the grant.
pub(crate) fn waiting_conditions(waiting: ConditionState) -> Vec<ConditionState> {
    if waiting.reason == reason::NOT_PERMITTED {
        let synced = ConditionState::new(
            SYNCED,
            false,
            reason::NOT_PERMITTED,
            format!(
                "{}; nothing is sent to Altostrat until the hub admits this namespace",
                waiting.message
            ),
        );
        let stalled = ConditionState::new(STALLED, true, reason::NOT_PERMITTED, waiting.message.clone());
        return vec![waiting, synced, stalled];
    }
    let message = format!(
        "{}; the peer is sent to Altostrat once its instance is usable",
        waiting.message
    );
    let synced = ConditionState::new(SYNCED, false, waiting.reason, message);
    vec![waiting, synced]
}
