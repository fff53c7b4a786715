//! A `VpnInstance`'s status: the conditions and fields that mirror its Altostrat instance.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::super::conditions::{ConditionState, READY, STALLED, SYNCED, reason};
use super::super::lifecycle::decide::Remote;
use super::super::lifecycle::{Withheld, withheld};
use super::super::plan;
use super::super::policy::Gate;
use crate::altostrat::model::Instance;
use crate::crd::{FirewallRuleStatus, PlannedCall, VpnInstance, VpnInstanceSpec, VpnInstanceStatus};

/// Ready/Synced for a successfully observed instance. `pending` names the fields the spec sets
/// that Altostrat does not hold yet (empty when nothing is to be sent, or when nothing may be).
pub(crate) fn desired_conditions(observed: &Instance, pending: &[&str]) -> [ConditionState; 2] {
    [
        ready_condition(observed, pending),
        synced_condition(observed, pending),
    ]
}

fn ready_condition(observed: &Instance, pending: &[&str]) -> ConditionState {
    if !observed.is_provisioned() {
        let flags = [
            ("configured", observed.configured),
            ("rsaReady", observed.rsa_ready),
            ("diffieHellmanReady", observed.diffie_hellman_ready),
            ("serverReady", observed.server_ready),
        ];
        let waiting: Vec<&str> = flags.iter().filter(|(_, v)| !v).map(|(n, _)| *n).collect();
        let message = format!(
            "Altostrat is provisioning the instance; waiting for {}",
            waiting.join(", ")
        );
        return ConditionState::new(READY, false, reason::PROVISIONING, message);
    }
    if !observed.status.is_empty() {
        let message = format!(
            "Altostrat is applying configuration changes: {}",
            observed.status.join(", ")
        );
        return ConditionState::new(READY, false, reason::UPDATING, message);
    }
    if !pending.is_empty() {
        let message = format!("Altostrat does not hold {} of the spec yet", pending.join(", "));
        return ConditionState::new(READY, false, reason::UPDATING, message);
    }
    ConditionState::new(
        READY,
        true,
        reason::AVAILABLE,
        "Instance is provisioned and matches the spec",
    )
}

/// `Synced` says whether Altostrat holds everything the spec asks for: a created instance
/// takes its configuration only once provisioned, and an update Altostrat is still applying
/// is compared again once it is done.
fn synced_condition(observed: &Instance, pending: &[&str]) -> ConditionState {
    if pending.is_empty() {
        return ConditionState::new(
            SYNCED,
            true,
            reason::RECONCILE_SUCCESS,
            "Altostrat holds the spec",
        );
    }
    let fields = pending.join(", ");
    if !observed.is_provisioned() {
        let message = format!("Instance created in Altostrat; {fields} are sent once it is provisioned");
        return ConditionState::new(SYNCED, false, reason::PROVISIONING, message);
    }
    let message = format!(
        "Altostrat is still applying the last update; {fields} are sent again if they still differ \
         once it is done"
    );
    ConditionState::new(SYNCED, false, reason::UPDATING, message)
}

/// Ready/Synced for an instance recorded as it is: an observer's `Synced` says the fields the
/// spec sets match, since it applies nothing.
pub(crate) fn recorded_conditions(observed: &Instance, pending: &[&str], gate: Gate) -> [ConditionState; 2] {
    let [ready, synced] = desired_conditions(observed, pending);
    if !gate.observes() {
        return [ready, synced];
    }
    let message = "Altostrat matches the fields the spec sets (managementPolicy ObserveOnly writes nothing)";
    [
        ready,
        ConditionState::new(SYNCED, true, reason::OBSERVED, message),
    ]
}

/// The conditions of an observer that finds no instance with its hostname: only a person (who
/// creates it, or changes the spec or the policy) can change that.
pub(crate) fn missing_conditions(spec: &VpnInstanceSpec) -> [ConditionState; 3] {
    let message = format!(
        "No Altostrat instance with hostname {:?} is visible to these credentials; managementPolicy \
         ObserveOnly creates nothing",
        spec.hostname
    );
    [
        ConditionState::new(READY, false, reason::NOT_FOUND, message.clone()),
        ConditionState::new(SYNCED, false, reason::NOT_FOUND, message.clone()),
        ConditionState::new(STALLED, true, reason::NOT_FOUND, message),
    ]
}

/// The status and conditions of a reconcile whose next writes are withheld: what Altostrat
/// holds, if anything was found (`Ready` says whether the instance works). A recorded instance that
/// vanished keeps its id (it is still this resource's to create again), but nothing of it is
/// mirrored any more: its peers must not take it as usable.
pub(crate) fn withheld_status(
    stored: VpnInstanceStatus,
    remote: &Remote<Instance>,
    calls: Vec<PlannedCall>,
    gate: Gate,
) -> (VpnInstanceStatus, Vec<ConditionState>) {
    let Withheld { plan, conditions } = withheld::<VpnInstance>(remote, calls, gate, |instance| {
        match ready_condition(instance, &[]) {
            ready if ready.reason == reason::AVAILABLE => {
                ConditionState::new(READY, true, reason::AVAILABLE, "Instance is provisioned")
            }
            ready => ready,
        }
    });
    let status = match remote {
        Remote::Found(instance) => observed_status(instance),
        Remote::Gone(id) => VpnInstanceStatus {
            instance_id: Some(id.clone()),
            ..VpnInstanceStatus::default()
        },
        _ => stored,
    };
    (VpnInstanceStatus { plan, ..status }, conditions)
}

/// The status fields that mirror the Altostrat instance (conditions are the writer's).
pub(crate) fn observed_status(observed: &Instance) -> VpnInstanceStatus {
    VpnInstanceStatus {
        instance_id: Some(observed.id.clone()),
        hostname: Some(observed.hostname.clone()).filter(|h| !h.is_empty()),
        configured: observed.configured,
        rsa_ready: observed.rsa_ready,
        diffie_hellman_ready: observed.diffie_hellman_ready,
        server_ready: observed.server_ready,
        pending_changes: observed.status.clone(),
        public_dns: observed.public_dns.clone(),
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
        ..VpnInstanceStatus::default()
    }
}

/// When to look again: at the (jittered) drift interval once Ready, otherwise a provisioning
/// poll that slows down with the time since `Ready` last changed, up to `longest_poll`.
pub(crate) fn next_look(
    status: &VpnInstanceStatus,
    ready: bool,
    (drift, longest_poll): (Duration, Duration),
    now: &Time,
    sample: f64,
) -> Duration {
    if ready {
        return plan::jittered(drift, sample);
    }
    plan::provisioning_poll_interval(time_in_state(status, now), longest_poll)
}

/// How long `Ready` has had its current value.
pub(crate) fn time_in_state(status: &VpnInstanceStatus, now: &Time) -> Duration {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .and_then(|c| Duration::try_from(now.0.duration_since(c.last_transition_time.0)).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::decisions::provisioned;
    use super::*;

    #[test]
    fn provisioning_condition_names_the_missing_flags() {
        let observed = Instance {
            configured: true,
            rsa_ready: true,
            ..Instance::default()
        };
        let [ready, synced] = desired_conditions(&observed, &[]);
        assert!(!ready.status);
        assert_eq!(ready.reason, "Provisioning");
        assert!(
            ready.message.ends_with("diffieHellmanReady, serverReady"),
            "{}",
            ready.message
        );
        assert!(synced.status, "nothing is pending");
    }

    #[test]
    fn a_created_instance_is_not_synced_while_its_configuration_waits_for_provisioning() {
        let [ready, synced] = desired_conditions(&Instance::default(), &["pushedRoutes", "publicDns"]);
        assert_eq!((ready.status, ready.reason), (false, "Provisioning"));
        assert_eq!((synced.status, synced.reason), (false, "Provisioning"));
        assert_eq!(
            synced.message,
            "Instance created in Altostrat; pushedRoutes, publicDns are sent once it is provisioned"
        );
        let [_, synced] = desired_conditions(&Instance::default(), &[]);
        assert_eq!(
            (synced.status, synced.message.as_str()),
            (true, "Altostrat holds the spec")
        );
        let [ready, synced] = desired_conditions(&provisioned("i-1"), &["domains"]);
        assert_eq!((ready.status, ready.reason), (false, "Updating"));
        assert_eq!((synced.status, synced.reason), (false, "Updating"));
    }

    #[test]
    fn pending_changes_keep_the_instance_not_ready() {
        let observed = Instance {
            status: vec!["peer-created".into()],
            ..provisioned("i-1")
        };
        let [ready, _] = desired_conditions(&observed, &[]);
        assert_eq!((ready.status, ready.reason), (false, "Updating"));
        assert!(ready.message.contains("peer-created"));
        let converged = Instance {
            status: vec![],
            ..observed
        };
        let [ready, _] = desired_conditions(&converged, &[]);
        assert_eq!((ready.status, ready.reason), (true, "Available"));
    }

    #[test]
    fn polling_slows_with_the_time_not_ready_and_ready_waits_for_the_resync() {
        use super::super::super::conditions::merge;
        use k8s_openapi::jiff::Timestamp;
        let at = |s| Time(Timestamp::from_second(s).unwrap());
        let status = VpnInstanceStatus {
            conditions: merge(
                &[],
                &desired_conditions(&Instance::default(), &[]),
                Some(1),
                &at(1000),
            ),
            ..VpnInstanceStatus::default()
        };
        let pace = (Duration::from_secs(300), Duration::from_secs(30));
        let early = next_look(&status, false, pace, &at(1001), 0.5);
        let late = next_look(&status, false, pace, &at(1600), 0.5);
        assert!(
            early < late && late <= Duration::from_secs(30),
            "{early:?} {late:?}"
        );
        assert_eq!(next_look(&status, true, pace, &at(1001), 0.5), pace.0);
    }
}
