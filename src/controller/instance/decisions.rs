//! The lifecycle's decisions for a hub.

use super::super::finalizer::{FinalizerState, STALE_RETRY};
use super::super::lifecycle::decide::{Candidate, Observed, Remote, Step, decide};
use super::super::ownership::Claim;
use super::super::planned;
use super::super::policy::Gate;
use super::status::*;
use crate::altostrat::model::{Instance, InstanceUpdate};
use crate::altostrat::{ApiError, Endpoint};
use crate::controller::error::Error;
use crate::crd::{RecordRole, VpnInstance, VpnInstanceSpec};

fn spec(extra: serde_json::Value) -> VpnInstanceSpec {
    let mut base = serde_json::json!({"name": "Hub", "hostname": "hub-one", "region": "sjc"});
    base.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    serde_json::from_value(base).unwrap()
}

pub(super) fn provisioned(id: &str) -> Instance {
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

fn observed<'a>(
    spec: &'a VpnInstanceSpec,
    recorded: Option<&'a str>,
    remote: Remote<Instance>,
) -> Observed<'a, VpnInstance> {
    Observed {
        spec,
        gate: Gate::default(),
        parent: Ok(String::new()),
        finalizer: FinalizerState::Held,
        claim: Claim::Held(claimed_at()),
        recorded_id: recorded.map(str::to_owned),
        observed_id: None,
        held_elsewhere: None,
        holds_record: true,
        status_id: recorded.map(str::to_owned),
        remote,
        updated: false,
        approval: Default::default(),
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
    let nothing = observed(&s, None, Remote::Searched(vec![]));
    assert!(
        matches!(decide(&nothing), Step::Claim),
        "an old claim is refreshed before the create"
    );
}

#[test]
fn a_recorded_id_or_spec_instance_id_is_fetched() {
    let s = spec(serde_json::json!({}));
    assert!(matches!(decide(&observed(&s, Some("i-1"), Remote::Unknown)), Step::Fetch(id) if id == "i-1"));
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

fn searched(instance: Instance) -> Remote<Instance> {
    let found = Candidate {
        object: instance,
        recorded_by: None,
    };
    Remote::Searched(vec![found])
}

fn given_up(o: &Observed<VpnInstance>) -> Error {
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
    o.status_id = Some("i-9".into());
    (o.claim, o.holds_record) = (Claim::None, false);
    let error = given_up(&o);
    assert_eq!(error.reason(), "NotOwned");
    assert!(error.to_string().contains("spec.instanceId"), "{error}");
    let adopting = spec(serde_json::json!({"instanceId": "i-9"}));
    let mut explicit = observed(&adopting, None, Remote::Unknown);
    explicit.status_id = Some("i-9".into());
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
    let found = vec![Candidate {
        object: provisioned("i-7"),
        recorded_by: None,
    }];
    let mut observer = observed(&watch, None, Remote::searched::<VpnInstance>(found, true));
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
    let Step::Update { body, fields, .. } = decide(&observed(&s, Some("i-1"), Remote::Found(single.clone())))
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
    let paused = |mut o: Observed<'_, VpnInstance>| {
        o.gate = PAUSED;
        decide(&o)
    };
    let withheld = |step: Step<VpnInstance>| match step {
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
    let calls = vec![planned::update_instance_call(
        "i-1",
        &InstanceUpdate {
            pushed_routes: vec!["10.0.0.0/8".into()],
            ..InstanceUpdate::default()
        },
        None,
    )];
    let paused = PAUSED;
    let (status, conditions) = withheld_status(Default::default(), &remote, calls, paused);
    let [ready, synced] = conditions.as_slice() else {
        panic!("a found hub is not stalled: {conditions:?}")
    };
    assert_eq!((ready.status, ready.reason), (true, "Available"));
    assert_eq!((synced.status, synced.reason), (false, "Drifted"));
    assert!(synced.message.contains("pushedRoutes"), "{}", synced.message);
    assert_eq!(status.instance_id.as_deref(), Some("i-1"));
    assert_eq!(status.plan.len(), 1);

    let gone = Remote::Gone("i-1".into());
    let (status, conditions) = withheld_status(Default::default(), &gone, vec![], paused);
    let [ready, _, stalled] = conditions.as_slice() else {
        panic!("a hub that does not serve is stalled while paused: {conditions:?}")
    };
    assert_eq!((ready.status, ready.reason), (false, "ReconcilePaused"));
    assert_eq!((stalled.type_, stalled.status), ("Stalled", true));
    assert!(!status.server_ready, "its peers must not use a vanished hub");
}

#[test]
fn a_route_the_crd_now_refuses_stops_the_hub_naming_the_entry_under_every_policy() {
    // Admitted before the CEL rule existed: nothing is claimed, created, updated or planned.
    let s = spec(serde_json::json!({"pushedRoutes": ["172.16.0.0/12", "10.0.0.1/8"]}));
    let fresh = observed(&s, None, Remote::Unknown);
    let managed = observed(&s, Some("i-1"), Remote::Found(provisioned("i-1")));
    let planned = Observed {
        gate: PAUSED,
        ..fresh.clone()
    };
    for o in [fresh, managed, planned] {
        let Step::GiveUp(error) = decide(&o) else {
            panic!("expected GiveUp")
        };
        assert_eq!(error.reason(), "InvalidSpec");
        assert_eq!(
            error.to_string(),
            r#"invalid spec: spec.pushedRoutes[1]: "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?"#
        );
    }
}

#[test]
fn through_a_closed_gate_only_the_plan_approved_is_taken() {
    use crate::controller::approval::{Approval, digest};
    let s = spec(serde_json::json!({"pushedRoutes": ["10.0.0.0/8"]}));
    let planning = Gate {
        policy: crate::crd::ManagementPolicy::Plan,
        paused: false,
    };
    let found = Observed {
        gate: planning,
        ..observed(&s, Some("i-1"), Remote::Found(provisioned("i-1")))
    };
    let Step::Withhold(calls) = decide(&found) else {
        panic!("planned")
    };
    let approved = digest(&calls).unwrap();
    let with = |approval| Observed {
        approval,
        ..found.clone()
    };
    assert!(matches!(
        decide(&with(Approval::Offered(approved.clone()))),
        Step::Update { .. }
    ));
    let other = Approval::Offered("0123456789abcdef".into());
    assert!(matches!(decide(&with(other)), Step::Withhold(_)));
    assert!(matches!(
        decide(&with(Approval::Spent(approved))),
        Step::Withhold(_)
    ));

    let fresh = Observed {
        gate: planning,
        claim: Claim::None,
        ..observed(&s, None, Remote::Unknown)
    };
    let Step::Withhold(create) = decide(&fresh) else {
        panic!("planned")
    };
    let offered = Observed {
        approval: Approval::Offered(digest(&create).unwrap()),
        ..fresh
    };
    assert!(matches!(decide(&offered), Step::Claim), "the claim comes first");
}
