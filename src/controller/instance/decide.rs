//! The lifecycle of a `VpnInstance` as pure decisions: what is known → the next step.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::super::conditions::{ConditionState, READY, SYNCED, reason};
use super::super::error::Error;
use super::super::finalizer::{FinalizerState, STALE_RETRY};
use super::super::ownership::Claim;
use super::super::ownership::{self, Ownership};
use super::super::policy::Gate;
use super::super::{plan, planned};
use crate::altostrat::ApiError;
use crate::altostrat::model::{Instance, InstanceUpdate};
use crate::crd::{FirewallRuleStatus, PlannedCall, RecordRole, VpnInstanceSpec, VpnInstanceStatus};

/// What is known of the Altostrat side at this point of a reconcile.
#[derive(Clone, Debug)]
pub(crate) enum Remote {
    /// Not looked at yet.
    Unknown,
    /// The instance as Altostrat last returned it (GET, POST or PUT).
    Found(Instance),
    /// The known id answered 404.
    Gone(String),
    /// The instance with our hostname among those these credentials can list, looked for
    /// because a claimed create may have been applied without its id being recorded (no other
    /// record can hold it: the hub's record is named after its hostname).
    Searched(Option<Instance>),
    /// Our create was refused as a conflict (the hostname is taken); `visible` is the instance
    /// holding it, if these credentials can see it.
    Taken {
        conflict: ApiError,
        visible: Option<Instance>,
    },
}

/// Everything the decision looks at.
#[derive(Clone, Debug)]
pub(crate) struct Observed<'a> {
    pub spec: &'a VpnInstanceSpec,
    /// What this reconcile may write to Altostrat.
    pub gate: Gate,
    pub finalizer: FinalizerState,
    pub claim: Claim,
    /// The instance id the hub's record holds for this resource to manage.
    pub recorded_id: Option<String>,
    /// The instance id the hub's record holds for this resource to observe: never its own.
    pub observed_id: Option<String>,
    /// Who else holds the hub's record (another resource, or another installation's).
    pub held_elsewhere: Option<String>,
    /// `status.instanceId`: what the status says, which proves nothing.
    pub status_id: Option<&'a str>,
    pub remote: Remote,
    /// A PUT was sent in this reconcile already: its answer is final for this round.
    pub updated: bool,
}

/// The next step of a converging reconcile.
#[derive(Debug)]
pub(crate) enum Step {
    /// Add the finalizer before anything exists in Altostrat that would need cleaning up.
    AddFinalizer,
    /// Our copy was stale: look again shortly.
    Requeue(Duration),
    Fetch(String),
    /// The recorded instance vanished: say so and forget its id before creating again.
    Forget(String),
    /// Look for a claimed create that may have been applied.
    Search,
    /// Record a create claim (with the finalizer) right before the create.
    Claim,
    Create,
    /// Our own lost create, proven by the claim: record it.
    Adopt(Instance),
    /// The instance found is the one to manage (or observe): take or update the hub's record
    /// before any write to it.
    Own {
        id: String,
        role: RecordRole,
    },
    /// Altostrat differs from the spec: send the full replacement.
    Update {
        id: String,
        body: InstanceUpdate,
        fields: Vec<&'static str>,
    },
    /// Converged as far as this round goes: record what Altostrat holds.
    Record(Instance),
    /// (`ObserveOnly`) No instance with the spec's hostname is visible: record that.
    Missing,
    /// The next step would write to Altostrat and the gate withholds it: record these calls
    /// (what the step would have sent) and what Altostrat holds.
    Withhold(Vec<PlannedCall>),
    /// Our create was refused: no object of ours stems from the claim; withdraw it, then
    /// give up with the error.
    WithdrawClaim(Error),
    GiveUp(Error),
}

const ADOPT_HINT: &str = "to manage it from this resource, set spec.instanceId to its id";

/// The one place where the instance lifecycle is decided: the next step, through the gate.
pub(crate) fn decide(o: &Observed) -> Step {
    withhold(lifecycle(o), o)
}

/// The gate: while writes to Altostrat are withheld, a step that would write becomes the calls
/// it would have made. Forgetting a vanished id only prepares the create that follows it, so
/// it is withheld with the create.
fn withhold(step: Step, o: &Observed) -> Step {
    if o.gate.open() {
        return step;
    }
    match step {
        Step::Claim | Step::Create | Step::Forget(_) => Step::Withhold(planned::instance_create(o.spec)),
        Step::Update { id, body, .. } => {
            Step::Withhold(vec![planned::instance_update(&id, &body, found(&o.remote))])
        }
        other => other,
    }
}

/// The instance the reconcile has seen, if any.
pub(crate) fn found(remote: &Remote) -> Option<&Instance> {
    match remote {
        Remote::Found(instance) | Remote::Searched(Some(instance)) => Some(instance),
        _ => None,
    }
}

fn lifecycle(o: &Observed) -> Step {
    if o.finalizer == FinalizerState::Stale {
        return Step::Requeue(STALE_RETRY);
    }
    if let Some(refusal) = refuse(o) {
        return refusal;
    }
    if o.gate.observes() {
        return observe(o);
    }
    match &o.remote {
        Remote::Unknown => match o.recorded_id.as_deref().or(o.spec.instance_id.as_deref()) {
            Some(_) if o.finalizer == FinalizerState::Missing => Step::AddFinalizer,
            Some(id) => Step::Fetch(id.to_owned()),
            None => claim_then_create(o),
        },
        Remote::Gone(id) if o.spec.instance_id.is_some() => missing_adoption(id),
        Remote::Gone(id) => Step::Forget(id.clone()),
        Remote::Searched(None) => claim_then_create(o),
        Remote::Searched(Some(instance)) => adopt_if_ours(o, instance),
        Remote::Taken { conflict, visible } => {
            let holder = match visible {
                Some(i) => format!("Altostrat instance {}", i.id),
                None => "an instance these credentials cannot see".to_owned(),
            };
            let message = format!(
                "hostname {:?} is taken by {holder} ({conflict}); if that hub is this resource's (a restore, \
                 a second cluster), {ADOPT_HINT}",
                o.spec.hostname
            );
            Step::WithdrawClaim(Error::NotOwned {
                reason: reason::HOSTNAME_TAKEN,
                message,
            })
        }
        Remote::Found(instance) => converged_or_update(o, instance),
    }
}

/// A spec the resource may not act on at all: `spec.instanceId` naming another hub than the
/// one it manages, a hub whose record someone else holds, an id in status that no record backs,
/// or (to manage) a hub it only observed.
fn refuse(o: &Observed) -> Option<Step> {
    if let (Some(wanted), Some(recorded)) = (o.spec.instance_id.as_deref(), o.recorded_id.as_deref())
        && wanted != recorded
    {
        return Some(Step::GiveUp(Error::InvalidSpec(format!(
            "spec.instanceId {wanted} differs from the instance {recorded} this resource manages; \
             a resource manages one hub: adopt {wanted} with a new resource"
        ))));
    }
    if let Some(other) = &o.held_elsewhere {
        let message = format!(
            "the Altostrat instance with hostname {:?} is held by {other}; nothing is written to it or \
             deleted on behalf of this resource",
            o.spec.hostname
        );
        return Some(not_owned(reason::NOT_OWNED, message));
    }
    if let Some(step) = refuse_unbacked(o) {
        return Some(step);
    }
    match (
        o.observed_id.as_deref(),
        o.recorded_id.as_deref(),
        o.spec.instance_id.as_deref(),
    ) {
        (Some(seen), None, None) if !o.gate.observes() => Some(not_owned(
            reason::NOT_OWNED,
            format!(
                "Altostrat instance {seen} was only observed (managementPolicy ObserveOnly), never created or \
                 adopted by this resource; to manage it, set spec.instanceId to {seen}"
            ),
        )),
        _ => None,
    }
}

/// An id in status that no record of this resource backs (a resource restored or copied
/// without its record, or a status written by someone else): never acted on, whatever it says.
fn refuse_unbacked(o: &Observed) -> Option<Step> {
    let id = o.status_id?;
    let backed = o.recorded_id.is_some() || o.observed_id.is_some() || o.claim != Claim::None;
    if backed || o.spec.instance_id.is_some() || o.gate.observes() {
        return None;
    }
    Some(not_owned(
        reason::NOT_OWNED,
        format!(
            "status.instanceId {id} is not backed by an ownership record of this resource (restored or \
             copied without it?), so the hub is not provably its own; {ADOPT_HINT} (adopting it \
             explicitly: deleting this resource then orphans it unless deletionPolicy is Delete)"
        ),
    ))
}

/// The hub an observer looks at: the one `spec.instanceId` names, else the one it recorded.
fn target<'a>(o: &'a Observed) -> Option<&'a str> {
    o.spec
        .instance_id
        .as_deref()
        .or(o.recorded_id.as_deref())
        .or(o.observed_id.as_deref())
}

/// `ObserveOnly`: find the hub by id, else by hostname, and report how it differs from the
/// spec; the gate withholds the update that difference amounts to. Nothing is ever created.
fn observe(o: &Observed) -> Step {
    match &o.remote {
        Remote::Unknown if o.finalizer == FinalizerState::Missing => Step::AddFinalizer,
        Remote::Unknown => target(o).map_or(Step::Search, |id| Step::Fetch(id.to_owned())),
        Remote::Gone(id) if o.spec.instance_id.is_some() => missing_adoption(id),
        // The hub observed so far is gone: whatever holds the hostname now is the one to observe.
        Remote::Gone(_) | Remote::Taken { .. } => Step::Search,
        Remote::Searched(None) => Step::Missing,
        Remote::Searched(Some(instance)) | Remote::Found(instance) => converged_or_update(o, instance),
    }
}

fn missing_adoption(id: &str) -> Step {
    Step::GiveUp(Error::InvalidSpec(format!(
        "spec.instanceId {id} does not exist in Altostrat"
    )))
}

fn claim_then_create(o: &Observed) -> Step {
    match o.claim {
        Claim::None => Step::Claim,
        Claim::Held(_) if matches!(o.remote, Remote::Unknown | Remote::Gone(_)) => Step::Search,
        Claim::Held(_) => Step::Claim,
        Claim::Fresh(_) => Step::Create,
    }
}

fn adopt_if_ours(o: &Observed, instance: &Instance) -> Step {
    let verdict = ownership::judge(o.claim.at(), instance.created_at.as_deref(), None);
    let what = format!(
        "Altostrat instance {} with hostname {:?}",
        instance.id, o.spec.hostname
    );
    match verdict {
        Ownership::Ours => Step::Adopt(instance.clone()),
        Ownership::NotOurs => not_owned(
            reason::HOSTNAME_TAKEN,
            ownership::explain(&verdict, &what, ADOPT_HINT),
        ),
        _ => not_owned(reason::NOT_OWNED, ownership::explain(&verdict, &what, ADOPT_HINT)),
    }
}

fn not_owned(reason: &'static str, message: String) -> Step {
    Step::GiveUp(Error::NotOwned { reason, message })
}

fn converged_or_update(o: &Observed, instance: &Instance) -> Step {
    if !instance.hostname_label().eq_ignore_ascii_case(&o.spec.hostname) {
        return Step::GiveUp(Error::InvalidSpec(format!(
            "spec.hostname {:?} does not match the adopted instance's hostname {:?}",
            o.spec.hostname, instance.hostname
        )));
    }
    // The record must hold it for this resource before anything is written (or observed).
    let held = (o.recorded_id.as_deref(), o.observed_id.as_deref());
    if let Some(role) = ownership::record_needed(o.gate, held, &instance.id) {
        let id = instance.id.clone();
        return Step::Own { id, role };
    }
    // Altostrat only accepts configuration once the server is provisioned.
    let update = (instance.is_provisioned() && !o.updated)
        .then(|| match o.gate.observes() {
            true => plan::observed_instance_drift(o.spec, instance),
            false => plan::instance_update(o.spec, instance),
        })
        .flatten();
    match update {
        Some(body) => Step::Update {
            id: instance.id.clone(),
            fields: plan::instance_changed_fields(&body, instance),
            body,
        },
        None => Step::Record(instance.clone()),
    }
}

/// Ready/Synced for a successfully observed instance.
pub(crate) fn desired_conditions(observed: &Instance, out_of_sync: bool) -> [ConditionState; 2] {
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

/// Ready/Synced for an instance recorded as it is: an observer's `Synced` says the fields the
/// spec sets match, since it applies nothing.
pub(crate) fn recorded_conditions(observed: &Instance, out_of_sync: bool, gate: Gate) -> [ConditionState; 2] {
    let [ready, synced] = desired_conditions(observed, out_of_sync);
    if !gate.observes() {
        return [ready, synced];
    }
    let message = "Altostrat matches the fields the spec sets (managementPolicy ObserveOnly writes nothing)";
    [
        ready,
        ConditionState::new(SYNCED, true, reason::OBSERVED, message),
    ]
}

/// The conditions of an observer that finds no instance with its hostname.
pub(crate) fn missing_conditions(spec: &VpnInstanceSpec) -> [ConditionState; 2] {
    let message = format!(
        "No Altostrat instance with hostname {:?} is visible to these credentials; managementPolicy \
         ObserveOnly creates nothing",
        spec.hostname
    );
    [
        ConditionState::new(READY, false, reason::NOT_FOUND, message.clone()),
        ConditionState::new(SYNCED, false, reason::NOT_FOUND, message),
    ]
}

/// The status and conditions of a reconcile whose next writes are withheld: what Altostrat
/// holds, if anything was found (`Ready` says whether the hub works), `Synced` False naming
/// what is withheld, and the calls in `plan`.
pub(crate) fn withheld_status(
    stored: VpnInstanceStatus,
    remote: &Remote,
    calls: Vec<PlannedCall>,
    gate: Gate,
) -> (VpnInstanceStatus, [ConditionState; 2]) {
    if let Some(instance) = found(remote) {
        let fields = planned::changed_fields(&calls).join(", ");
        let message = format!(
            "Altostrat differs from the spec in {fields}; not corrected while {}",
            gate.why()
        );
        let [ready, _] = desired_conditions(instance, false);
        let ready = match ready.reason {
            reason::AVAILABLE => {
                ConditionState::new(READY, true, reason::AVAILABLE, "Instance is provisioned")
            }
            _ => ready,
        };
        let status = VpnInstanceStatus {
            plan: if gate.plans() { calls } else { Vec::new() },
            ..observed_status(instance)
        };
        return (
            status,
            [
                ready,
                ConditionState::new(SYNCED, false, gate.drift_reason(), message),
            ],
        );
    }
    // A recorded instance that vanished keeps its id (it is still this resource's to create
    // again), but nothing of it is mirrored any more: its peers must not take it as usable.
    let (status, what) = match remote {
        Remote::Gone(id) => (
            VpnInstanceStatus {
                instance_id: Some(id.clone()),
                ..VpnInstanceStatus::default()
            },
            format!("Altostrat instance {id} no longer exists; creating it again"),
        ),
        _ => (stored, "Creating the instance".to_owned()),
    };
    let message = format!("{what} is withheld while {}", gate.why());
    let desired = [
        ConditionState::new(READY, false, gate.reason(), message.clone()),
        ConditionState::new(SYNCED, false, gate.reason(), message),
    ];
    (
        VpnInstanceStatus {
            plan: calls,
            ..status
        },
        desired,
    )
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
    use super::*;
    use crate::altostrat::Endpoint;

    fn spec(extra: serde_json::Value) -> VpnInstanceSpec {
        let mut base = serde_json::json!({"name": "Hub", "hostname": "hub-one", "region": "sjc"});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        serde_json::from_value(base).unwrap()
    }

    fn provisioned(id: &str) -> Instance {
        Instance {
            id: id.into(),
            name: "Hub".into(),
            hostname: "hub-one.vpn.altostr.at".into(),
            configured: true,
            rsa_ready: true,
            diffie_hellman_ready: true,
            server_ready: true,
            public_dns: vec!["1.1.1.1".into(), "9.9.9.9".into()],
            ..Instance::default()
        }
    }

    const PAUSED: Gate = Gate {
        policy: crate::crd::ManagementPolicy::Full,
        paused: true,
    };

    fn claimed_at() -> k8s_openapi::jiff::Timestamp {
        "2026-11-27T10:00:00Z".parse().unwrap()
    }

    fn observed<'a>(spec: &'a VpnInstanceSpec, recorded: Option<&'a str>, remote: Remote) -> Observed<'a> {
        Observed {
            spec,
            gate: Gate::default(),
            finalizer: FinalizerState::Held,
            claim: Claim::Held(claimed_at()),
            recorded_id: recorded.map(str::to_owned),
            observed_id: None,
            held_elsewhere: None,
            status_id: recorded,
            remote,
            updated: false,
        }
    }

    fn created_at(instance: Instance, at: &str) -> Instance {
        Instance {
            created_at: Some(at.into()),
            ..instance
        }
    }

    fn conflict() -> ApiError {
        ApiError::Conflict {
            endpoint: Endpoint::CreateInstance,
            code: "hostname_taken".into(),
            message: "taken".into(),
        }
    }

    #[test]
    fn the_finalizer_comes_before_anything_in_altostrat() {
        let s = spec(serde_json::json!({}));
        let mut o = observed(&s, Some("i-1"), Remote::Unknown);
        o.finalizer = FinalizerState::Missing;
        assert!(matches!(decide(&o), Step::AddFinalizer));
        o.finalizer = FinalizerState::Stale;
        assert!(matches!(decide(&o), Step::Requeue(d) if d == STALE_RETRY));
    }

    #[test]
    fn a_create_is_claimed_then_sent() {
        let s = spec(serde_json::json!({}));
        let mut o = observed(&s, None, Remote::Unknown);
        o.finalizer = FinalizerState::Missing;
        o.claim = Claim::None;
        assert!(
            matches!(decide(&o), Step::Claim),
            "the claim carries the finalizer"
        );
        o.finalizer = FinalizerState::Added;
        o.claim = Claim::Fresh(claimed_at());
        assert!(matches!(decide(&o), Step::Create));
    }

    #[test]
    fn a_claim_without_a_recorded_id_is_searched_before_any_create() {
        // The process died, or the answer was lost, between the claim and recording the id.
        let s = spec(serde_json::json!({}));
        let o = observed(&s, None, Remote::Unknown);
        assert!(matches!(decide(&o), Step::Search));
        let nothing = observed(&s, None, Remote::Searched(None));
        assert!(
            matches!(decide(&nothing), Step::Claim),
            "an old claim is refreshed before the create"
        );
    }

    #[test]
    fn a_recorded_id_or_spec_instance_id_is_fetched() {
        let s = spec(serde_json::json!({}));
        assert!(
            matches!(decide(&observed(&s, Some("i-1"), Remote::Unknown)), Step::Fetch(id) if id == "i-1")
        );
        let pinned = spec(serde_json::json!({"instanceId": "i-7"}));
        assert!(matches!(decide(&observed(&pinned, None, Remote::Unknown)), Step::Fetch(id) if id == "i-7"));
    }

    #[test]
    fn a_vanished_recorded_instance_is_forgotten_then_created_again() {
        let s = spec(serde_json::json!({}));
        let mut o = observed(&s, Some("i-1"), Remote::Gone("i-1".into()));
        assert!(matches!(decide(&o), Step::Forget(id) if id == "i-1"));
        (o.recorded_id, o.status_id) = (None, None);
        o.remote = Remote::Unknown;
        o.claim = Claim::None;
        assert!(matches!(decide(&o), Step::Claim));
    }

    #[test]
    fn a_missing_spec_instance_id_is_an_invalid_spec_never_a_create() {
        let s = spec(serde_json::json!({"instanceId": "i-7"}));
        let o = observed(&s, None, Remote::Gone("i-7".into()));
        let Step::GiveUp(error) = decide(&o) else {
            panic!("expected GiveUp")
        };
        assert_eq!(error.reason(), "InvalidSpec");
        assert!(
            error.to_string().contains("spec.instanceId i-7 does not exist"),
            "{error}"
        );
    }

    fn searched(instance: Instance) -> Remote {
        Remote::Searched(Some(instance))
    }

    fn given_up(o: &Observed) -> Error {
        match decide(o) {
            Step::GiveUp(error) => error,
            other => panic!("expected GiveUp, got {other:?}"),
        }
    }

    #[test]
    fn a_lost_create_is_adopted_when_created_after_the_claim() {
        let s = spec(serde_json::json!({}));
        let mine = created_at(provisioned("i-1"), "2026-11-27T10:00:01Z");
        assert!(matches!(decide(&observed(&s, None, searched(mine))), Step::Adopt(i) if i.id == "i-1"));
    }

    #[test]
    fn a_hub_older_than_the_claim_is_never_adopted() {
        // E.g. the resource failed before its POST (region typo) and someone made the hub since.
        let s = spec(serde_json::json!({}));
        let old = created_at(provisioned("i-9"), "2026-10-01T00:00:00Z");
        let error = given_up(&observed(&s, None, searched(old)));
        assert_eq!(error.reason(), "HostnameTaken");
        let message = error.to_string();
        assert!(
            message.contains("i-9") && message.contains("spec.instanceId"),
            "{message}"
        );
    }

    #[test]
    fn a_hub_whose_record_another_resource_holds_is_never_touched() {
        // Whatever the spec, status or search say: create, adopt, observe or a found lost create.
        let theirs = created_at(provisioned("i-2"), "2026-11-27T10:00:01Z");
        let create = spec(serde_json::json!({}));
        let adopt = spec(serde_json::json!({"instanceId": "i-2"}));
        let observe = spec(serde_json::json!({"managementPolicy": "ObserveOnly"}));
        for (s, remote) in [
            (&create, Remote::Unknown),
            (&create, searched(theirs.clone())),
            (&adopt, Remote::Found(theirs.clone())),
            (&observe, Remote::Unknown),
        ] {
            let mut o = observed(s, None, remote);
            o.gate = Gate {
                policy: s.management_policy,
                paused: false,
            };
            o.held_elsewhere = Some("VpnInstance team-b/hub".into());
            let error = given_up(&o);
            assert_eq!(error.reason(), "NotOwned");
            assert!(error.to_string().contains("team-b/hub"), "{error}");
        }
    }

    #[test]
    fn an_id_in_status_without_a_record_is_never_acted_on() {
        // A restored or copied resource, or a status patched by a tenant.
        let s = spec(serde_json::json!({}));
        let mut o = observed(&s, None, Remote::Unknown);
        o.status_id = Some("i-9");
        o.claim = Claim::None;
        let error = given_up(&o);
        assert_eq!(error.reason(), "NotOwned");
        assert!(error.to_string().contains("spec.instanceId"), "{error}");
        let adopting = spec(serde_json::json!({"instanceId": "i-9"}));
        let mut explicit = observed(&adopting, None, Remote::Unknown);
        explicit.status_id = Some("i-9");
        assert!(matches!(decide(&explicit), Step::Fetch(id) if id == "i-9"));
    }

    #[test]
    fn a_found_hub_is_taken_into_the_record_before_any_write_and_only_while_writes_are_allowed() {
        let s = spec(serde_json::json!({"instanceId": "i-7", "pushedRoutes": ["10.9.0.0/16"]}));
        let o = observed(&s, None, Remote::Found(provisioned("i-7")));
        assert!(matches!(decide(&o), Step::Own { id, role: RecordRole::Manage } if id == "i-7"));
        let held = observed(&s, Some("i-7"), Remote::Found(provisioned("i-7")));
        assert!(
            matches!(decide(&held), Step::Update { .. }),
            "held: the update goes ahead"
        );
        let mut paused = observed(&s, None, Remote::Found(provisioned("i-7")));
        paused.gate = PAUSED;
        assert!(
            matches!(decide(&paused), Step::Withhold(_)),
            "a paused adopter takes nothing"
        );
        let watch = spec(serde_json::json!({"managementPolicy": "ObserveOnly"}));
        let mut observer = observed(&watch, None, searched(provisioned("i-7")));
        observer.gate = Gate {
            policy: crate::crd::ManagementPolicy::ObserveOnly,
            paused: false,
        };
        assert!(matches!(
            decide(&observer),
            Step::Own {
                role: RecordRole::Observe,
                ..
            }
        ));
    }

    #[test]
    fn a_hub_created_just_before_the_claim_needs_explicit_adoption() {
        let s = spec(serde_json::json!({}));
        let unsure = created_at(provisioned("i-3"), "2026-11-27T09:59:50Z");
        let error = given_up(&observed(&s, None, searched(unsure)));
        assert_eq!(error.reason(), "NotOwned");
    }

    #[test]
    fn a_conflict_after_a_fresh_claim_is_a_taken_hostname_never_an_adoption() {
        let s = spec(serde_json::json!({}));
        for visible in [Some(provisioned("i-1")), None] {
            let mut o = observed(
                &s,
                None,
                Remote::Taken {
                    conflict: conflict(),
                    visible,
                },
            );
            o.claim = Claim::Fresh(claimed_at());
            let Step::WithdrawClaim(error) = decide(&o) else {
                panic!("the refused claim is withdrawn")
            };
            assert_eq!((error.category(), error.reason()), ("not_owned", "HostnameTaken"));
        }
    }

    #[test]
    fn an_instance_id_added_after_creation_is_refused_not_ignored() {
        let s = spec(serde_json::json!({"instanceId": "i-7"}));
        let error = given_up(&observed(&s, Some("i-1"), Remote::Unknown));
        assert_eq!(error.reason(), "InvalidSpec");
        assert!(
            error.to_string().contains("i-7") && error.to_string().contains("i-1"),
            "{error}"
        );
        let same = spec(serde_json::json!({"instanceId": "i-1"}));
        assert!(matches!(
            decide(&observed(&same, Some("i-1"), Remote::Unknown)),
            Step::Fetch(_)
        ));
    }

    #[test]
    fn adopting_an_instance_another_namespace_records_is_refused_without_a_call() {
        let s = spec(serde_json::json!({"instanceId": "i-7"}));
        let mut o = observed(&s, None, Remote::Unknown);
        o.held_elsewhere = Some("team-b/hub".into());
        assert_eq!(given_up(&o).reason(), "NotOwned");
    }

    #[test]
    fn an_instance_with_another_hostname_is_refused() {
        let s = spec(serde_json::json!({"instanceId": "i-7"}));
        let mut other = provisioned("i-7");
        other.hostname = "someone-else.vpn.altostr.at".into();
        let Step::GiveUp(error) = decide(&observed(&s, None, Remote::Found(other))) else {
            panic!("expected GiveUp")
        };
        assert!(error.to_string().contains("does not match"), "{error}");
    }

    #[test]
    fn an_instance_still_provisioning_is_recorded_not_updated() {
        let s = spec(serde_json::json!({"pushedRoutes": ["10.0.0.0/8"]}));
        let mut provisioning = provisioned("i-1");
        provisioning.server_ready = false;
        assert!(matches!(
            decide(&observed(&s, Some("i-1"), Remote::Found(provisioning))),
            Step::Record(_)
        ));
    }

    #[test]
    fn drift_on_a_provisioned_instance_is_one_full_update() {
        let s = spec(serde_json::json!({"pushedRoutes": ["10.0.0.0/8"]}));
        let o = observed(&s, Some("i-1"), Remote::Found(provisioned("i-1")));
        let Step::Update { id, body, fields } = decide(&o) else {
            panic!("expected Update")
        };
        assert_eq!((id.as_str(), fields), ("i-1", vec!["pushedRoutes"]));
        assert_eq!(
            body.public_dns,
            vec!["1.1.1.1", "9.9.9.9"],
            "unset publicDns keeps Altostrat's resolvers"
        );
    }

    #[test]
    fn an_update_keeping_a_single_public_resolver_is_padded_to_the_two_altostrat_requires() {
        let s = spec(serde_json::json!({"pushedRoutes": ["10.0.0.0/8"]}));
        let single = Instance {
            public_dns: vec!["1.1.1.1".into()],
            ..provisioned("i-1")
        };
        let Step::Update { body, fields, .. } =
            decide(&observed(&s, Some("i-1"), Remote::Found(single.clone())))
        else {
            panic!("expected Update")
        };
        assert_eq!(body.public_dns, vec!["1.1.1.1", "9.9.9.9"]);
        assert_eq!(fields, vec!["pushedRoutes", "publicDns"], "the padding is named");
        let converged = spec(serde_json::json!({}));
        assert!(
            matches!(
                decide(&observed(&converged, Some("i-1"), Remote::Found(single))),
                Step::Record(_)
            ),
            "no update needed: the single resolver is left as it is"
        );
    }

    #[test]
    fn the_answer_to_an_update_is_final_for_the_round() {
        let s = spec(serde_json::json!({"pushedRoutes": ["10.0.0.0/8"]}));
        let mut o = observed(&s, Some("i-1"), Remote::Found(provisioned("i-1")));
        o.updated = true;
        assert!(
            matches!(decide(&o), Step::Record(_)),
            "a value Altostrat normalises differently must not cause a second PUT in one reconcile"
        );
    }

    #[test]
    fn a_converged_instance_is_recorded() {
        let s = spec(serde_json::json!({}));
        assert!(matches!(
            decide(&observed(&s, Some("i-1"), Remote::Found(provisioned("i-1")))),
            Step::Record(_)
        ));
    }

    #[test]
    fn under_a_pause_every_write_becomes_the_calls_it_would_make_and_reads_go_on() {
        let s = spec(serde_json::json!({"pushedRoutes": ["10.0.0.0/8"]}));
        let paused = |mut o: Observed<'_>| {
            o.gate = PAUSED;
            decide(&o)
        };
        let withheld = |step: Step| match step {
            Step::Withhold(calls) => calls
                .into_iter()
                .map(|c| format!("{} {}", c.method, c.path))
                .collect::<Vec<_>>(),
            other => panic!("expected Withhold, got {other:?}"),
        };
        let create = vec!["POST /vpn/instances", "PUT /vpn/instances/{instanceId}"];
        let mut unclaimed = observed(&s, None, Remote::Unknown);
        unclaimed.claim = Claim::None;
        assert_eq!(withheld(paused(unclaimed.clone())), create, "no claim");
        unclaimed.claim = Claim::Fresh(claimed_at());
        assert_eq!(withheld(paused(unclaimed)), create);
        let vanished = observed(&s, Some("i-1"), Remote::Gone("i-1".into()));
        assert_eq!(withheld(paused(vanished)), create, "not forgotten either");
        let drifted = observed(&s, Some("i-1"), Remote::Found(provisioned("i-1")));
        assert_eq!(withheld(paused(drifted)), vec!["PUT /vpn/instances/i-1"]);

        assert!(matches!(
            paused(observed(&s, Some("i-1"), Remote::Unknown)),
            Step::Fetch(_)
        ));
        assert!(matches!(
            paused(observed(&s, None, Remote::Unknown)),
            Step::Search
        ));
        let converged = spec(serde_json::json!({}));
        let found = observed(&converged, Some("i-1"), Remote::Found(provisioned("i-1")));
        assert!(matches!(paused(found), Step::Record(_)));
    }

    #[test]
    fn a_withheld_update_keeps_the_hub_ready_and_names_the_drift() {
        let remote = Remote::Found(provisioned("i-1"));
        let calls = vec![planned::instance_update(
            "i-1",
            &InstanceUpdate {
                pushed_routes: vec!["10.0.0.0/8".into()],
                ..InstanceUpdate::default()
            },
            None,
        )];
        let paused = PAUSED;
        let (status, [ready, synced]) = withheld_status(Default::default(), &remote, calls, paused);
        assert_eq!((ready.status, ready.reason), (true, "Available"));
        assert_eq!((synced.status, synced.reason), (false, "Drifted"));
        assert!(synced.message.contains("pushedRoutes"), "{}", synced.message);
        assert_eq!(status.instance_id.as_deref(), Some("i-1"));
        assert_eq!(status.plan.len(), 1);

        let gone = Remote::Gone("i-1".into());
        let (status, [ready, _]) = withheld_status(Default::default(), &gone, vec![], paused);
        assert_eq!((ready.status, ready.reason), (false, "ReconcilePaused"));
        assert!(!status.server_ready, "its peers must not use a vanished hub");
    }

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
            status: vec!["peer-created".into()],
            ..provisioned("i-1")
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

    #[test]
    fn polling_slows_with_the_time_not_ready_and_ready_waits_for_the_resync() {
        use super::super::super::conditions::merge;
        use k8s_openapi::jiff::Timestamp;
        let at = |s| Time(Timestamp::from_second(s).unwrap());
        let status = VpnInstanceStatus {
            conditions: merge(
                &[],
                &desired_conditions(&Instance::default(), false),
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
