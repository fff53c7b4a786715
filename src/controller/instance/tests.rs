//! Reconciles of `VpnInstance` against the in-process Kubernetes fake and the Altostrat simulator.
#![cfg(feature = "simulator")]

use std::time::Duration;

use http::Method;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::runtime::controller::Action;
use serde_json::json;

use crate::altostrat::model::Instance;
use crate::altostrat::{ApiError, Endpoint};
use crate::controller::testing::{Harness, condition, condition_message, instance, peer};
use crate::crd::FINALIZER;

fn ready(h: &Harness, obj: &crate::crd::VpnInstance) -> Option<(String, String)> {
    let stored = h.stored(obj)?;
    condition(&stored.status?.conditions, "Ready")
}

fn ready_message(h: &Harness, obj: &crate::crd::VpnInstance) -> String {
    let conditions = h.stored(obj).unwrap().status.unwrap().conditions;
    condition_message(&conditions, "Ready").expect("a Ready condition")
}

#[tokio::test]
async fn a_new_instance_is_created_once_recorded_and_ready_in_one_reconcile() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();

    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::ListRegions, Endpoint::CreateInstance]
    );
    let stored = h.stored(&obj).unwrap();
    assert!(
        stored
            .metadata
            .finalizers
            .unwrap()
            .contains(&FINALIZER.to_owned())
    );
    let status = stored.status.unwrap();
    assert_eq!(
        status.instance_id.as_deref(),
        Some(h.altostrat.instances()[0].id.as_str())
    );
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));
    assert_eq!(h.kube.events(), vec![("Normal".into(), "Created".into())]);

    // What users read with kubectl: the status as the API server stores it.
    let shown = serde_json::to_value(&status).unwrap();
    for flag in ["configured", "rsaReady", "diffieHellmanReady", "serverReady"] {
        assert_eq!(shown[flag], json!(true), "{flag} in {shown}");
    }
    let hub = &h.altostrat.instances()[0];
    assert_eq!(
        shown["hostname"],
        json!("hub-one.vpn.altostr.at"),
        "the full hostname, not the spec's label"
    );
    assert_eq!(status.hostname.as_deref(), Some(hub.hostname.as_str()));
    assert!(status.pending_changes.is_empty(), "{status:?}");
    let created = h.kube.notes("Created");
    assert!(
        created[0].starts_with(&format!("Created Altostrat instance {}", hub.id)),
        "{created:?}"
    );
}

#[tokio::test]
async fn the_id_is_written_before_the_configuration_is_applied() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({"pushedRoutes": ["10.0.0.0/8"]})));
    h.altostrat.refuse(
        Endpoint::UpdateInstance,
        ApiError::Server {
            endpoint: Endpoint::UpdateInstance,
            status: 503,
            message: "maintenance".into(),
        },
    );
    assert!(h.reconcile(&obj).await.is_err());
    let status = h.stored(&obj).unwrap().status.unwrap();
    assert!(status.instance_id.is_some(), "the id survives a later failure");
    assert_eq!(ready(&h, &obj), Some(("False".into(), "ApiError".into())));

    assert_eq!(
        h.reconcile_calls(&obj).await,
        vec![Endpoint::UpdateInstance],
        "the create's answer is a fresh enough observation"
    );
    assert_eq!(h.altostrat.instances().len(), 1);
}

#[tokio::test]
async fn a_converged_resync_makes_no_write_to_either_api() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({"pushedRoutes": ["10.0.0.0/8"]})));
    h.reconcile(&obj).await.unwrap();
    h.altostrat.clear_calls();
    h.kube.clear_calls();

    h.reconcile(&obj).await.unwrap();
    assert!(
        h.altostrat.calls().is_empty(),
        "observed within the drift interval"
    );
    assert!(
        h.kube.calls().iter().all(|c| c.method == Method::GET),
        "{:?}",
        h.kube.calls()
    );
    h.observations_expire();
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![Endpoint::ListInstances], "then by list");
    assert!(h.kube.calls().iter().all(|c| c.method == Method::GET));
}

#[tokio::test]
async fn a_lost_create_answer_is_found_and_adopted_not_repeated() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.altostrat.lose_answer(Endpoint::CreateInstance);
    let error = h.reconcile(&obj).await.unwrap_err();
    assert_eq!(error.category(), "transport");
    assert!(h.stored(&obj).unwrap().status.unwrap().instance_id.is_none());

    assert_eq!(
        h.reconcile_calls(&obj).await,
        vec![Endpoint::ListInstances],
        "looked up, not posted again"
    );
    let instances = h.altostrat.instances();
    assert_eq!(instances.len(), 1, "never two hubs");
    let status = h.stored(&obj).unwrap().status.unwrap();
    assert_eq!(status.instance_id, Some(instances[0].id.clone()));
    assert!(h.kube.events().contains(&("Normal".into(), "Adopted".into())));
    let adopted = h.kube.notes("Adopted");
    let expected = format!(
        "Adopted Altostrat instance {}, created by this resource's claimed create",
        instances[0].id
    );
    assert!(adopted[0].starts_with(&expected), "{adopted:?}");
}

#[tokio::test]
async fn a_hostname_taken_out_of_sight_is_reported_without_a_retry_loop() {
    let h = Harness::new();
    h.altostrat.take_hostname_elsewhere("hub-one");
    let obj = h.apply(instance("hub-one", json!({})));
    let error = h.reconcile(&obj).await.unwrap_err();
    assert!(error.needs_user_action());
    assert_eq!(
        h.altostrat.calls(),
        vec![
            Endpoint::ListRegions,
            Endpoint::CreateInstance,
            Endpoint::ListInstances
        ]
    );
    assert_eq!(ready(&h, &obj), Some(("False".into(), "HostnameTaken".into())));
    assert!(
        error.to_string().contains("cannot see"),
        "says why no hub is named: {error}"
    );
    let message = ready_message(&h, &obj);
    assert!(
        message.contains("cannot see") && message.contains("hostname_taken"),
        "says the hostname is taken, by whom it cannot say: {message}"
    );
    assert!(h.altostrat.instances().is_empty());
}

#[tokio::test]
async fn a_hub_made_out_of_band_with_our_hostname_is_neither_adopted_nor_deleted() {
    let h = Harness::new();
    let theirs = h.altostrat.add_instance("hub-one", "2026-01-01T00:00:00Z");
    let obj = h.apply(instance("hub-one", json!({"pushedRoutes": ["10.0.0.0/8"]})));
    let error = h.reconcile(&obj).await.unwrap_err();
    assert!(
        error.to_string().contains(&theirs.id),
        "names the conflicting hub: {error}"
    );
    assert_eq!(ready(&h, &obj), Some(("False".into(), "HostnameTaken".into())));
    assert!(
        h.stored(&obj)
            .unwrap()
            .metadata
            .annotations
            .unwrap_or_default()
            .is_empty(),
        "claim withdrawn"
    );
    assert!(
        h.reconcile(&obj).await.is_err(),
        "a later attempt is refused the same way"
    );

    h.delete(&obj);
    h.altostrat.clear_calls();
    h.reconcile(&obj).await.unwrap();
    assert!(
        h.altostrat.calls().is_empty(),
        "no claim stands, so nothing is looked for"
    );
    assert_eq!(
        h.altostrat.instances(),
        vec![theirs],
        "untouched: no update, no delete"
    );
    assert!(!h.holds_finalizer(&obj));
}

#[tokio::test]
async fn a_hub_of_another_namespace_is_not_taken_over_by_the_same_hostname() {
    let h = Harness::new();
    let mut a = instance("hub-one", json!({}));
    a.metadata.namespace = Some("team-b".into());
    let a = h.apply(a);
    h.reconcile(&a).await.unwrap();
    let hub = h.altostrat.instances()[0].clone();

    h.altostrat.clear_calls();
    let b = h.apply(instance("hub-one", json!({"pushedRoutes": ["192.168.0.0/16"]})));
    let refused = h.reconcile(&b).await.unwrap_err();
    assert_eq!(ready(&h, &b), Some(("False".into(), "NotOwned".into())));
    assert!(
        refused.to_string().contains("team-b/hub-one"),
        "names the holder: {refused}"
    );
    assert_eq!(
        writes(&h),
        vec![],
        "the hostname's record is held: not even a create is tried"
    );
    h.delete(&b);
    h.reconcile(&b).await.unwrap();
    assert_eq!(
        h.altostrat.instances(),
        vec![hub],
        "A's hub is neither changed nor deleted"
    );
}

#[tokio::test]
async fn a_resource_that_failed_before_its_create_deletes_nothing() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({"region": "mars"})));
    assert!(h.reconcile(&obj).await.is_err());
    let theirs = h.altostrat.add_instance("hub-one", "2026-01-01T00:00:00Z");
    h.delete(&obj);
    h.altostrat.clear_calls();
    h.reconcile(&obj).await.unwrap();
    assert!(
        h.altostrat.calls().is_empty(),
        "no claim, so nothing of ours can exist"
    );
    assert_eq!(h.altostrat.instances(), vec![theirs]);
}

#[tokio::test]
async fn a_gitops_rename_hands_the_hub_over_instead_of_deleting_it() {
    let h = Harness::new();
    let old = h.apply(instance("hub-one", json!({})));
    h.reconcile(&old).await.unwrap();
    let id = h.altostrat.instances()[0].id.clone();

    let mut renamed = instance("hub-one", json!({"instanceId": id}));
    renamed.metadata.name = Some("hub-renamed".into());
    let renamed = h.apply(renamed);
    let waiting = h.reconcile(&renamed).await.unwrap_err();
    assert_eq!(waiting.reason(), "NotOwned", "one holder at a time: {waiting}");

    h.delete(&old);
    assert!(
        h.reconcile_calls(&old).await.is_empty(),
        "{:?}",
        h.altostrat.calls()
    );
    assert_eq!(h.altostrat.instances().len(), 1, "the hub survives the rename");
    assert!(!h.holds_finalizer(&old));
    let records = h.kube.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].spec.holder.name, "hub-renamed",
        "the record moved to the successor"
    );
    assert_eq!(
        h.kube.notes("Orphaned"),
        vec![format!(
            "Altostrat instance {id} is managed by VpnInstance team-a/hub-renamed now; left in place"
        )]
    );
    h.reconcile(&renamed).await.unwrap();
    assert_eq!(ready(&h, &renamed), Some(("True".into(), "Available".into())));
}

#[tokio::test]
async fn a_rename_to_a_resource_whose_adoption_is_invalid_follows_the_deletion_policy() {
    let h = Harness::new();
    let old = h.apply(instance("hub-one", json!({})));
    h.reconcile(&old).await.unwrap();
    let id = h.altostrat.instances()[0].id.clone();
    let mut wrong = instance("hub-two", json!({"instanceId": id}));
    wrong.metadata.name = Some("hub-wrong".into());
    h.apply(wrong);
    h.delete(&old);
    h.altostrat.clear_calls();
    h.reconcile(&old).await.unwrap();
    assert_eq!(
        writes(&h),
        vec![Endpoint::DeleteInstance],
        "no hand-over to another hostname"
    );
    assert!(h.kube.records().is_empty());
}

#[tokio::test]
async fn a_resource_restored_from_its_manifest_owns_its_hub_again() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();
    let id = h.altostrat.instances()[0].id.clone();
    // A backup keeps metadata and status; the restored object is a new one (new uid), and the
    // record still names the old one until the sweep frees it.
    let mut restored = h.stored(&obj).unwrap();
    restored.metadata.finalizers = None;
    restored.metadata.uid = None;
    h.remove(&obj);
    let restored = h.apply(restored);
    h.altostrat.clear_calls();
    let held = h.reconcile(&restored).await.unwrap_err();
    assert_eq!(held.reason(), "NotOwned", "{held}");
    assert!(held.to_string().contains("earlier"), "{held}");
    assert_eq!(writes(&h), vec![]);

    let missing = crate::controller::upkeep::sweep_once(&h.ctx.client, &h.ctx.records, &Default::default())
        .await
        .unwrap();
    crate::controller::upkeep::sweep_once(&h.ctx.client, &h.ctx.records, &missing)
        .await
        .unwrap();
    assert!(
        h.kube.records().is_empty(),
        "freed at the second sweep that finds its holder gone"
    );
    let unbacked = h.reconcile(&restored).await.unwrap_err();
    assert_eq!(unbacked.reason(), "NotOwned");
    assert!(
        unbacked.to_string().contains("set spec.instanceId to"),
        "{unbacked}"
    );
    h.delete(&restored);
    h.reconcile(&restored).await.unwrap();
    assert_eq!(
        writes(&h),
        vec![],
        "a resource that cannot prove its hub deletes nothing"
    );
    assert_eq!(h.altostrat.instances().len(), 1);

    // Restore is explicit adoption; left without deletionPolicy, it orphans on deletion.
    let adopted = h.apply(instance("hub-one", json!({"instanceId": id})));
    h.reconcile(&adopted).await.unwrap();
    assert_eq!(ready(&h, &adopted), Some(("True".into(), "Available".into())));
    assert_eq!(
        status(&h, &adopted).deletion_policy,
        Some(crate::crd::DeletionPolicy::Orphan)
    );
    h.delete(&adopted);
    h.reconcile(&adopted).await.unwrap();
    assert_eq!(writes(&h), vec![]);
    assert_eq!(h.altostrat.instances().len(), 1);
}

#[tokio::test]
async fn adopting_a_hub_that_another_namespace_records_is_refused_and_never_deleted() {
    let h = Harness::new();
    let mut a = instance("hub-one", json!({}));
    a.metadata.namespace = Some("team-b".into());
    let a = h.apply(a);
    h.reconcile(&a).await.unwrap();
    let id = h.altostrat.instances()[0].id.clone();

    let b = h.apply(instance("hub-one", json!({"instanceId": id})));
    assert!(h.reconcile(&b).await.is_err());
    assert_eq!(ready(&h, &b), Some(("False".into(), "NotOwned".into())));
    h.delete(&b);
    assert!(h.reconcile_calls(&b).await.is_empty());
    assert_eq!(h.altostrat.instances().len(), 1);
}

#[tokio::test]
async fn an_unknown_region_is_refused_before_any_create() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({"region": "mars"})));
    let error = h.reconcile(&obj).await.unwrap_err();
    assert!(
        error.to_string().contains("sjc"),
        "lists the valid regions: {error}"
    );
    assert_eq!(h.altostrat.calls(), vec![Endpoint::ListRegions]);
    assert_eq!(ready(&h, &obj), Some(("False".into(), "InvalidSpec".into())));
    assert!(!h.holds_finalizer(&obj), "nothing to clean up");
    assert!(h.kube.records().is_empty(), "no ownership record");
    assert!(h.reconcile(&obj).await.is_err());
    assert!(!h.holds_finalizer(&obj), "nor at a later attempt");
    assert!(h.kube.records().is_empty());
}

#[tokio::test]
async fn routes_admitted_before_the_cidr_rule_stall_the_hub_naming_the_entry_and_are_never_sent() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({"pushedRoutes": ["10.0.0.0/8"]})));
    h.reconcile(&obj).await.unwrap();
    let edited = h.edit(&obj, |o| {
        o.spec.pushed_routes = vec!["172.16.0.0/12".into(), "10.0.0.1/8".into()];
    });
    h.altostrat.clear_calls();

    let refused = h.reconcile(&edited).await.unwrap_err();
    assert_eq!(refused.reason(), "InvalidSpec", "{refused}");
    assert_eq!(h.altostrat.calls(), vec![], "nothing is read or sent");
    let stored = status(&h, &obj);
    assert!(conditions_hold(&stored, "Stalled"), "{:?}", stored.conditions);
    let named = r#"spec.pushedRoutes[1]: "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?"#;
    for type_ in ["Synced", "Stalled"] {
        let message = condition_message(&stored.conditions, type_).unwrap();
        assert!(message.contains(named), "{type_}: {message}");
    }
    assert_eq!(h.altostrat.instances()[0].pushed_routes, vec!["10.0.0.0/8"]);
}

#[tokio::test]
async fn a_recorded_instance_deleted_out_of_band_is_created_again() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();
    let first = h.altostrat.instances()[0].id.clone();
    h.altostrat.remove_instance(&first);
    h.observations_expire();
    h.altostrat.clear_calls();

    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![
            Endpoint::ListInstances,
            Endpoint::GetInstance,
            Endpoint::CreateInstance
        ],
        "missing from the list, confirmed gone; the list also shows no create of the old claim"
    );
    let second = h.altostrat.instances()[0].id.clone();
    assert_ne!(first, second);
    assert_eq!(h.stored(&obj).unwrap().status.unwrap().instance_id, Some(second));
    assert!(h.kube.events().contains(&("Warning".into(), "Recreating".into())));
}

#[tokio::test]
async fn a_spec_instance_id_that_does_not_exist_is_never_created() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({"instanceId": "i-404"})));
    let error = h.reconcile(&obj).await.unwrap_err();
    assert!(error.to_string().contains("i-404"), "{error}");
    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::ListInstances, Endpoint::GetInstance]
    );
    assert_eq!(ready(&h, &obj), Some(("False".into(), "InvalidSpec".into())));
}

#[tokio::test]
async fn a_spec_instance_id_naming_a_hub_of_another_hostname_is_refused_and_never_deleted() {
    let h = Harness::new();
    let other = h.altostrat.add_instance("hub-two", "2026-01-01T00:00:00Z");
    let obj = h.apply(instance(
        "hub-one",
        json!({"instanceId": other.id, "deletionPolicy": "Delete", "pushedRoutes": ["10.0.0.0/8"]}),
    ));
    let refused = h.reconcile(&obj).await.unwrap_err();
    assert_eq!(refused.reason(), "InvalidSpec", "{refused}");
    assert!(
        refused.to_string().contains("\"hub-one\"")
            && refused.to_string().contains("\"hub-two.vpn.altostr.at\""),
        "names both hostnames: {refused}"
    );
    assert_eq!(ready(&h, &obj), Some(("False".into(), "InvalidSpec".into())));
    assert_eq!(writes(&h), vec![], "not even the spec's routes are applied");
    assert!(h.kube.records().is_empty(), "the hub is not taken");

    h.delete(&obj);
    h.altostrat.clear_calls();
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        writes(&h),
        vec![],
        "deletionPolicy Delete covers no hub it never held"
    );
    assert_eq!(h.altostrat.instances(), vec![other]);
    assert!(!h.holds_finalizer(&obj));
}

#[tokio::test]
async fn a_provisioning_instance_is_polled_then_configured_once_ready() {
    let h = Harness::new();
    h.altostrat.hold_provisioning();
    let obj = h.apply(instance("hub-one", json!({"pushedRoutes": ["10.0.0.0/8"]})));
    let action = h.reconcile(&obj).await.unwrap();
    assert_eq!(ready(&h, &obj), Some(("False".into(), "Provisioning".into())));
    assert!(!status(&h, &obj).server_ready, "shown as Altostrat reports it");
    assert!(
        format!("{action:?}").contains("requeue_after: Some(1s)"),
        "{action:?}"
    );
    assert_eq!(
        h.altostrat.count(Endpoint::UpdateInstance),
        0,
        "no update before provisioning"
    );

    h.altostrat.provision_all();
    assert_eq!(
        h.reconcile_calls(&obj).await,
        vec![Endpoint::ListInstances, Endpoint::UpdateInstance],
        "each poll looks at a list newer than its previous look, not at the create's answer"
    );
    assert_eq!(h.altostrat.instances()[0].pushed_routes, vec!["10.0.0.0/8"]);
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));
    let id = status(&h, &obj).instance_id.unwrap();
    let events = h.kube.noted_events();
    assert!(events.len() <= 3, "no more events than steps: {events:?}");
    assert_eq!(events[0].reason, "Created", "{events:?}");
    assert!(events[0].note.contains(&id), "{events:?}");
    assert!(
        events.iter().any(|e| e
            .note
            .contains("instance hub-one.vpn.altostr.at is provisioned and in sync")),
        "{events:?}"
    );
}

#[tokio::test]
async fn drift_is_corrected_with_one_update() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({"pushedRoutes": ["10.0.0.0/8"]})));
    h.reconcile(&obj).await.unwrap();
    let id = h.altostrat.instances()[0].id.clone();
    h.altostrat
        .edit_instance(&id, |i| i.pushed_routes = vec!["192.168.0.0/16".into()]);
    h.observations_expire();
    h.altostrat.clear_calls();

    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::ListInstances, Endpoint::UpdateInstance]
    );
    assert_eq!(h.altostrat.instances()[0].pushed_routes, vec!["10.0.0.0/8"]);
    let updated = h.kube.notes("Updated");
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert!(
        updated[0].starts_with("Applied changes to pushedRoutes"),
        "names the field: {updated:?}"
    );
}

#[tokio::test]
async fn missing_credentials_are_reported_without_any_altostrat_call() {
    let h = Harness::new();
    let obj = h.apply(instance(
        "hub-one",
        json!({"credentialsSecretRef": {"name": "absent"}}),
    ));
    let error = h.reconcile(&obj).await.unwrap_err();
    assert!(error.to_string().contains("absent"), "{error}");
    assert!(h.altostrat.calls().is_empty());
    assert_eq!(ready(&h, &obj), Some(("False".into(), "CredentialsError".into())));
}

#[tokio::test]
async fn only_a_secret_marked_as_credentials_is_used() {
    let h = Harness::new();
    let mut unmarked = credentials("any-secret");
    unmarked.metadata.labels = None;
    h.kube.put(&unmarked);
    let obj = h.apply(instance(
        "hub-one",
        json!({"credentialsSecretRef": {"name": "any-secret"}}),
    ));
    let error = h.reconcile(&obj).await.unwrap_err();
    assert!(
        error.to_string().contains("vpn.altostrat.io/credentials=true"),
        "{error}"
    );
    assert!(h.altostrat.calls().is_empty());

    let mut marked = unmarked.clone();
    marked.metadata.labels = Some([("vpn.altostrat.io/credentials".to_owned(), "true".to_owned())].into());
    h.kube.put(&marked);
    h.reconcile(&obj).await.unwrap();
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));
}

#[tokio::test]
async fn a_failure_seen_on_a_copy_older_than_the_recorded_id_never_erases_it() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();
    let id = h.stored(&obj).unwrap().status.unwrap().instance_id;
    assert!(id.is_some());
    // The cache delivers the claim but not yet the status write that recorded the id: the
    // reconcile looks for the claimed create, and that fails.
    let mut stale = h.stored(&obj).unwrap();
    stale.status = None;
    h.altostrat.refuse(
        Endpoint::ListInstances,
        ApiError::Server {
            endpoint: Endpoint::ListInstances,
            status: 500,
            message: "boom".into(),
        },
    );
    let result = crate::controller::lifecycle::reconcile(std::sync::Arc::new(stale), h.ctx.clone()).await;
    assert!(
        result.is_ok(),
        "the id is in the record, not only in status: {result:?}"
    );
    let status = h.stored(&obj).unwrap().status.unwrap();
    assert_eq!(status.instance_id, id, "the recorded id survives");
    assert_eq!(h.altostrat.instances().len(), 1);
}

fn credentials(name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(crate::controller::testing::NS.into()),
            labels: Some([("vpn.altostrat.io/credentials".to_owned(), "true".to_owned())].into()),
            ..ObjectMeta::default()
        },
        string_data: Some([("token".to_owned(), "team-token".to_owned())].into()),
        ..Secret::default()
    }
}

fn secret_finalizers(h: &Harness, name: &str) -> Vec<String> {
    h.kube
        .get(&credentials(name))
        .unwrap()
        .metadata
        .finalizers
        .unwrap_or_default()
}

#[tokio::test]
async fn a_credentials_secret_is_kept_until_the_last_hub_using_it_is_cleaned_up() {
    let h = Harness::new();
    h.kube.put(&credentials("team-creds"));
    let uses_it = json!({"credentialsSecretRef": {"name": "team-creds"}});
    let one = h.apply(instance("hub-one", uses_it.clone()));
    let two = h.apply(instance("hub-two", uses_it));
    h.reconcile(&one).await.unwrap();
    h.reconcile(&two).await.unwrap();
    assert_eq!(
        secret_finalizers(&h, "team-creds"),
        vec!["vpn.altostrat.io/credentials-in-use"]
    );
    h.kube.clear_calls();
    h.reconcile(&one).await.unwrap();
    assert!(
        h.kube.calls().iter().all(|c| c.method == Method::GET),
        "kept without a write once held"
    );

    h.delete(&one);
    h.reconcile(&one).await.unwrap();
    assert!(!h.holds_finalizer(&one));
    assert_eq!(
        secret_finalizers(&h, "team-creds").len(),
        1,
        "hub-two still needs it"
    );

    h.delete(&two);
    h.reconcile(&two).await.unwrap();
    assert!(secret_finalizers(&h, "team-creds").is_empty());
    assert!(
        h.altostrat.instances().is_empty(),
        "both deleted with the Secret's token"
    );
}

#[tokio::test]
async fn a_stale_copy_claims_nothing_and_sends_no_create() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    let stale = obj.clone();
    h.apply(obj.clone()); // a newer version exists now
    let ctx = h.ctx.clone();
    let action = crate::controller::lifecycle::reconcile(std::sync::Arc::new(stale), ctx)
        .await
        .unwrap();
    assert!(format!("{action:?}").contains("500ms"), "{action:?}");
    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::ListRegions],
        "only the spec's validation"
    );
    assert!(h.stored(&obj).unwrap().metadata.annotations.is_none(), "no claim");
}

#[tokio::test]
async fn deletion_waits_for_peers_then_deletes_the_hub() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();
    let id = status(&h, &obj).instance_id.unwrap();
    let alice = h.apply(peer("alice", "hub-one", json!({})));
    h.delete(&obj);
    h.altostrat.clear_calls();

    h.reconcile(&obj).await.unwrap();
    assert!(
        h.altostrat.calls().is_empty(),
        "nothing is deleted while a peer references the hub"
    );
    assert_eq!(ready(&h, &obj), Some(("False".into(), "Deleting".into())));
    let message = ready_message(&h, &obj);
    let named = "Waiting for the VpnPeers that reference this instance to be deleted: alice";
    assert_eq!(message, named);
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.kube.notes("DeletionBlocked"),
        vec![named.to_owned()],
        "one Warning when the wait begins, none on the next look"
    );

    h.remove(&alice);
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::DeleteInstance, Endpoint::GetInstance],
        "deleted, then seen gone: a GET on its id answers 404"
    );
    assert!(h.altostrat.instances().is_empty());
    assert!(!h.holds_finalizer(&obj));
    assert!(h.kube.events().contains(&("Normal".into(), "Deleted".into())));
    assert_eq!(
        h.kube.notes("Deleted"),
        vec![format!("Deleted Altostrat instance {id}")]
    );
}

#[tokio::test]
async fn a_deletion_that_cannot_read_its_credentials_says_so() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();
    let mut moved = h.stored(&obj).unwrap();
    moved.spec.credentials_secret_ref = Some(crate::crd::SecretReference { name: "gone".into() });
    h.apply(moved);
    h.delete(&obj);
    let error = h.reconcile(&obj).await.unwrap_err();
    assert_eq!(error.reason(), "CredentialsError");
    let conditions = h.stored(&obj).unwrap().status.unwrap().conditions;
    assert_eq!(
        condition(&conditions, "Synced"),
        Some(("False".into(), "CredentialsError".into()))
    );
    assert!(
        h.kube
            .events()
            .contains(&("Warning".into(), "CredentialsError".into()))
    );
    assert_eq!(
        h.altostrat.instances().len(),
        1,
        "nothing deleted without credentials"
    );
    assert!(h.holds_finalizer(&obj));
}

#[tokio::test]
async fn orphan_policy_leaves_the_hub_running() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({"deletionPolicy": "Orphan"})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.kube.records().len(), 1, "held while the resource exists");
    h.delete(&obj);
    h.altostrat.clear_calls();

    h.reconcile(&obj).await.unwrap();
    assert!(h.altostrat.calls().is_empty());
    assert_eq!(h.altostrat.instances().len(), 1);
    assert!(!h.holds_finalizer(&obj));
    assert!(
        h.kube.records().is_empty(),
        "freed: another resource may adopt the hub"
    );
    assert!(h.kube.events().contains(&("Normal".into(), "Orphaned".into())));
    assert_eq!(
        h.kube.notes("Orphaned"),
        vec!["The Altostrat instance is left in place: deletionPolicy is Orphan".to_owned()]
    );
}

#[tokio::test]
async fn deleting_after_a_lost_create_answer_finds_the_hub_by_hostname() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.altostrat.lose_answer(Endpoint::CreateInstance);
    assert!(h.reconcile(&obj).await.is_err());
    h.delete(&obj);
    h.altostrat.clear_calls();

    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![
            Endpoint::ListInstances,
            Endpoint::DeleteInstance,
            Endpoint::GetInstance
        ]
    );
    assert!(h.altostrat.instances().is_empty());
}

#[tokio::test]
async fn an_asynchronous_teardown_is_watched_without_a_second_delete_until_the_hub_is_gone() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();
    h.altostrat.tear_down_slowly();
    h.delete(&obj);
    h.altostrat.clear_calls();

    let action = h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::DeleteInstance, Endpoint::GetInstance]
    );
    assert_eq!(action, Action::requeue(h.ctx.settings.provisioning_poll));
    assert_eq!(ready(&h, &obj), Some(("False".into(), "TearingDown".into())));
    assert!(h.holds_finalizer(&obj), "the hub still exists");

    assert_eq!(
        h.reconcile_calls(&obj).await,
        vec![Endpoint::ListInstances],
        "the teardown is watched by the shared list, not asked for again"
    );
    assert!(h.holds_finalizer(&obj));

    h.altostrat.finish_teardowns();
    assert_eq!(
        h.reconcile_calls(&obj).await,
        vec![Endpoint::ListInstances, Endpoint::GetInstance]
    );
    assert!(!h.holds_finalizer(&obj));
    assert!(h.kube.events().contains(&("Normal".into(), "Deleted".into())));
}

#[tokio::test]
async fn a_refused_delete_holds_the_resource_until_its_policy_is_orphan() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();
    let not_offered = ApiError::Refused {
        endpoint: Endpoint::DeleteInstance,
        status: 405,
        message: "The DELETE method is not supported for route vpn/instances/x.".into(),
    };
    h.altostrat.refuse(Endpoint::DeleteInstance, not_offered);
    h.delete(&obj);

    let error = h.reconcile(&obj).await.unwrap_err();
    assert_eq!(error.reason(), "DeleteRefused");
    assert!(error.stalls(), "only a person can go on");
    assert!(error.to_string().contains("deletionPolicy to Orphan"), "{error}");
    assert_eq!(ready(&h, &obj), Some(("False".into(), "DeleteRefused".into())));
    assert!(h.holds_finalizer(&obj));
    assert_eq!(h.altostrat.instances().len(), 1);

    let orphaned = h.edit(&obj, |o| {
        o.spec.deletion_policy = Some(crate::crd::DeletionPolicy::Orphan)
    });
    assert!(h.reconcile_calls(&orphaned).await.is_empty());
    assert!(!h.holds_finalizer(&obj), "released, the hub left in Altostrat");
    assert_eq!(h.altostrat.instances().len(), 1);
}

#[tokio::test]
async fn a_404_to_the_delete_of_a_hub_still_listed_is_a_refusal_not_a_release() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();
    let not_found = ApiError::NotFound {
        endpoint: Endpoint::DeleteInstance,
        message: "Not Found".into(),
    };
    h.altostrat.refuse(Endpoint::DeleteInstance, not_found);
    h.delete(&obj);

    let error = h.reconcile(&obj).await.unwrap_err();
    assert_eq!(error.reason(), "DeleteRefused");
    assert!(error.to_string().contains("404"), "{error}");
    assert!(h.holds_finalizer(&obj), "a billed hub is never orphaned by a 404");
}

#[tokio::test]
async fn an_adopted_hub_takes_the_spec_as_its_whole_configuration() {
    // Documented choice: explicit adoption manages the hub fully; lists left unset in the spec
    // become empty, unset publicDns keeps the hub's resolvers.
    let h = Harness::new();
    let hub = h.altostrat.add_instance("hub-one", "2026-01-01T00:00:00Z");
    h.altostrat
        .edit_instance(&hub.id, |i| i.pushed_routes = vec!["172.16.0.0/12".into()]);
    let obj = h.apply(instance("hub-one", json!({"instanceId": hub.id})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::ListInstances, Endpoint::UpdateInstance]
    );
    let adopted = h.altostrat.instances()[0].clone();
    assert!(adopted.pushed_routes.is_empty());
    assert_eq!(adopted.public_dns, hub.public_dns);
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));
}

#[tokio::test]
async fn the_longest_path_of_one_reconcile_settles() {
    // Finalizer removed by hand, the recorded hub gone, an old claim: restore the finalizer,
    // fetch, forget, search, claim again, create, update, record.
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({"pushedRoutes": ["10.0.0.0/8"]})));
    h.reconcile(&obj).await.unwrap();
    let first = h.altostrat.instances()[0].id.clone();
    h.altostrat.remove_instance(&first);
    let mut unfinalized = h.stored(&obj).unwrap();
    unfinalized.metadata.finalizers = None;
    h.apply(unfinalized);
    h.observations_expire();
    assert_eq!(
        h.reconcile_calls(&obj).await,
        vec![
            Endpoint::ListInstances,
            Endpoint::GetInstance,
            Endpoint::CreateInstance,
            Endpoint::UpdateInstance
        ]
    );
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));
}

#[tokio::test]
async fn a_value_altostrat_normalises_is_sent_once_not_in_a_loop() {
    let h = Harness::new();
    // Altostrat sorts the public resolvers: the spec's order never sticks.
    h.altostrat.normalise_updates(|i| i.public_dns.sort());
    let obj = h.apply(instance("hub-one", json!({"publicDns": ["9.9.9.9", "1.1.1.1"]})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.count(Endpoint::UpdateInstance), 1);
    let again = h.reconcile(&obj).await.unwrap_err();
    assert_eq!(again.reason(), "NotConverging", "{again}");
    assert!(again.to_string().contains("publicDns"), "{again}");
    assert!(
        !again.to_string().contains("someone else"),
        "Altostrat normalises: {again}"
    );
    for _ in 0..3 {
        h.observations_expire();
        assert!(h.reconcile(&obj).await.is_err());
    }
    assert_eq!(
        h.altostrat.count(Endpoint::UpdateInstance),
        1,
        "never repeated while nothing changes"
    );
    assert_eq!(ready(&h, &obj).map(|r| r.1), Some("NotConverging".into()));

    let edited = h.edit(&obj, |o| {
        o.spec.public_dns = Some(vec!["1.1.1.1".into(), "9.9.9.9".into()])
    });
    h.reconcile(&edited).await.unwrap();
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));
}

#[tokio::test]
async fn a_value_written_back_by_someone_else_is_corrected_once_then_not_fought_over() {
    // Another manager (a second cluster adopting the same hub) keeps the routes it wants.
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({"pushedRoutes": ["10.1.0.0/16"]})));
    h.reconcile(&obj).await.unwrap();
    let id = status(&h, &obj).instance_id.unwrap();
    let theirs = |i: &mut Instance| i.pushed_routes = vec!["10.2.0.0/16".into()];
    h.altostrat.edit_instance(&id, theirs);
    h.observations_expire();
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.count(Endpoint::UpdateInstance),
        2,
        "drift is corrected once"
    );

    h.altostrat.edit_instance(&id, theirs);
    for _ in 0..3 {
        h.observations_expire();
        let refused = h.reconcile(&obj).await.unwrap_err();
        assert_eq!(refused.reason(), "NotConverging", "{refused}");
        assert!(
            refused.to_string().contains("pushedRoutes") && refused.to_string().contains("A to B to A"),
            "{refused}"
        );
    }
    assert_eq!(h.altostrat.count(Endpoint::UpdateInstance), 2, "no update war");
    assert!(
        h.kube
            .events()
            .iter()
            .any(|(t, r)| t == "Warning" && r == "NotConverging"),
        "{:?}",
        h.kube.events()
    );

    let edited = h.edit(&obj, |o| o.spec.pushed_routes = vec!["10.3.0.0/16".into()]);
    h.reconcile(&edited).await.unwrap();
    assert_eq!(
        h.altostrat.count(Endpoint::UpdateInstance),
        3,
        "a new spec is sent"
    );
}

#[tokio::test]
async fn a_request_refused_by_the_leader_fence_leaves_the_status_to_the_new_leader() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();
    let before = h.stored(&obj).unwrap().status;
    let edited = h.edit(&obj, |o| o.spec.name = "Renamed".into());
    h.altostrat.refuse(
        Endpoint::UpdateInstance,
        ApiError::Fenced {
            endpoint: Endpoint::UpdateInstance,
        },
    );
    h.kube.clear_calls();
    let error = h.reconcile(&edited).await.unwrap_err();
    assert_eq!(error.category(), "fenced");
    assert_eq!(h.stored(&obj).unwrap().status, before, "no failure recorded");
    assert!(
        !h.kube.events().iter().any(|(kind, _)| kind == "Warning"),
        "no warning event"
    );
}

#[tokio::test]
async fn an_update_altostrat_is_still_applying_is_waited_for_not_repeated() {
    let h = Harness::new();
    // Altostrat answers with the old routes and a pending change, and applies it later.
    h.altostrat.normalise_updates(|i| {
        i.pushed_routes.clear();
        i.status = vec!["routes".into()];
    });
    let obj = h.apply(instance("hub-one", json!({"pushedRoutes": ["10.0.0.0/8"]})));
    h.reconcile(&obj).await.unwrap();
    h.observations_expire();
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.count(Endpoint::UpdateInstance),
        1,
        "not sent again while pending"
    );
    assert_eq!(ready(&h, &obj), Some(("False".into(), "Updating".into())));
}

#[tokio::test]
async fn a_put_the_budget_held_back_is_retried_without_observing_again() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({"pushedRoutes": ["10.0.0.0/8"]})));
    h.altostrat.refuse(
        Endpoint::UpdateInstance,
        ApiError::Throttled {
            endpoint: Endpoint::UpdateInstance,
            expected_wait: Duration::from_secs(3),
        },
    );
    let held = h.reconcile(&obj).await.unwrap_err();
    assert_eq!(held.reason(), "Throttled");
    assert_eq!(
        h.reconcile_calls(&obj).await,
        vec![Endpoint::UpdateInstance],
        "a provisioned instance with nothing pending needs no new list before its PUT"
    );
}

pub(super) fn status(h: &Harness, obj: &crate::crd::VpnInstance) -> crate::crd::VpnInstanceStatus {
    h.stored(obj).unwrap().status.unwrap()
}

/// The writes the simulator received since its calls were last cleared.
pub(super) fn writes(h: &Harness) -> Vec<Endpoint> {
    let reads = [
        Endpoint::ListRegions,
        Endpoint::ListInstances,
        Endpoint::GetInstance,
    ];
    h.altostrat
        .calls()
        .into_iter()
        .filter(|e| !reads.contains(e))
        .collect()
}

/// `(method, path)` of each planned call, as the status shows it.
fn planned(status: &crate::crd::VpnInstanceStatus) -> Vec<(String, String)> {
    status
        .plan
        .iter()
        .map(|c| (c.method.clone(), c.path.clone()))
        .collect()
}

const PAUSED: &str = crate::crd::PAUSED_ANNOTATION;

#[tokio::test]
async fn a_paused_instance_writes_nothing_shows_its_drift_and_resumes_when_unpaused() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();
    let id = status(&h, &obj).instance_id.unwrap();
    h.annotate(&obj, PAUSED, Some("true"));
    let edited = h.edit(&obj, |o| o.spec.pushed_routes = vec!["10.0.0.0/8".into()]);
    h.altostrat.clear_calls();

    h.reconcile(&edited).await.unwrap();
    assert_eq!(writes(&h), vec![], "{:?}", h.altostrat.calls());
    let paused = status(&h, &obj);
    assert_eq!(
        condition(&paused.conditions, "Paused"),
        Some(("True".into(), "ReconcilePaused".into()))
    );
    assert_eq!(
        condition(&paused.conditions, "Synced"),
        Some(("False".into(), "Drifted".into()))
    );
    assert_eq!(
        ready(&h, &obj),
        Some(("True".into(), "Available".into())),
        "the hub works"
    );
    assert!(!conditions_hold(&paused, "Stalled"), "paused is not stalled");
    assert_eq!(paused.observed_generation, Some(2));
    assert_eq!(
        planned(&paused),
        vec![("PUT".into(), format!("/vpn/instances/{id}"))]
    );
    // The PUT also carries a second public resolver: Altostrat creates a hub with one, and a
    // PUT needs two to four.
    let change = paused.plan[0]
        .changes
        .iter()
        .find(|c| c.field != "publicDns")
        .expect("a change besides the resolvers");
    assert_eq!(
        (
            change.field.as_str(),
            change.old.as_deref(),
            change.new.as_deref()
        ),
        ("pushedRoutes", Some("[]"), Some(r#"["10.0.0.0/8"]"#))
    );

    h.annotate(&obj, PAUSED, None);
    h.altostrat.clear_calls();
    h.reconcile(&edited).await.unwrap();
    assert_eq!(
        writes(&h),
        vec![Endpoint::UpdateInstance],
        "exactly the planned call"
    );
    let resumed = status(&h, &obj);
    assert_eq!(condition(&resumed.conditions, "Paused"), None);
    assert_eq!(
        condition(&resumed.conditions, "Synced"),
        Some(("True".into(), "ReconcileSuccess".into()))
    );
    assert!(resumed.plan.is_empty());
}

fn conditions_hold(status: &crate::crd::VpnInstanceStatus, type_: &str) -> bool {
    condition(&status.conditions, type_).is_some_and(|(s, _)| s == "True")
}

#[tokio::test]
async fn a_paused_new_instance_claims_nothing_and_its_plan_is_what_unpausing_sends() {
    let h = Harness::new();
    let mut obj = instance("hub-one", json!({"pushedRoutes": ["10.0.0.0/8"]}));
    obj.metadata.annotations = Some([(PAUSED.to_owned(), "true".to_owned())].into());
    let obj = h.apply(obj);
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![]);
    assert!(!h.holds_finalizer(&obj), "no claim, no finalizer");
    assert!(h.kube.records().is_empty(), "no ownership record");
    assert_eq!(ready(&h, &obj), Some(("False".into(), "ReconcilePaused".into())));
    let plan = planned(&status(&h, &obj));
    assert_eq!(
        plan,
        vec![
            ("POST".into(), "/vpn/instances".into()),
            ("PUT".into(), "/vpn/instances/{instanceId}".into())
        ]
    );

    h.annotate(&obj, PAUSED, Some("false"));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        writes(&h),
        vec![Endpoint::CreateInstance, Endpoint::UpdateInstance],
        "the plan's calls, in its order"
    );
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));
}

#[tokio::test]
async fn deleting_a_paused_instance_follows_its_deletion_policy() {
    let h = Harness::new();
    let doomed = h.apply(instance("hub-one", json!({})));
    let kept = h.apply(instance("hub-two", json!({"deletionPolicy": "Orphan"})));
    for obj in [&doomed, &kept] {
        h.reconcile(obj).await.unwrap();
        h.annotate(obj, PAUSED, Some("true"));
        h.reconcile(obj).await.unwrap();
        h.delete(obj);
    }
    h.altostrat.clear_calls();
    h.reconcile(&doomed).await.unwrap();
    h.reconcile(&kept).await.unwrap();
    assert_eq!(writes(&h), vec![Endpoint::DeleteInstance]);
    assert!(!h.holds_finalizer(&doomed) && !h.holds_finalizer(&kept));
    let left: Vec<String> = h.altostrat.instances().into_iter().map(|i| i.hostname).collect();
    assert_eq!(left, vec!["hub-two.vpn.altostr.at"]);
}

const REQUEST: &str = crate::crd::RECONCILE_REQUEST_ANNOTATION;

#[tokio::test]
async fn a_reconcile_request_looks_at_altostrat_at_once_and_is_acknowledged() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.reconcile_calls(&obj).await,
        vec![],
        "the create's answer is fresh enough for a resync"
    );

    let at = "2026-11-27T10:00:00Z";
    h.annotate(&obj, REQUEST, Some(at));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::ListInstances],
        "one look, by list"
    );
    assert_eq!(status(&h, &obj).last_handled_reconcile_at.as_deref(), Some(at));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![Endpoint::ListInstances], "handled once");
}

/// A hub made in the portal, and a resource that observes it by hostname.
async fn observed_hub(h: &Harness) -> (crate::altostrat::model::Instance, crate::crd::VpnInstance) {
    let portal = h.altostrat.add_instance("hub-one", "2026-01-01T00:00:00Z");
    let spec = json!({"name": "Made elsewhere", "managementPolicy": "ObserveOnly"});
    let obj = h.apply(instance("hub-one", spec));
    h.reconcile(&obj).await.unwrap();
    (portal, obj)
}

#[tokio::test]
async fn an_observer_finds_the_hub_by_hostname_reports_drift_and_never_writes_or_deletes_it() {
    let h = Harness::new();
    let (portal, obj) = observed_hub(&h).await;
    assert_eq!(h.altostrat.calls(), vec![Endpoint::ListInstances]);
    let seen = status(&h, &obj);
    assert_eq!(seen.instance_id.as_deref(), Some(portal.id.as_str()));
    assert_eq!(
        seen.management_policy,
        Some(crate::crd::ManagementPolicy::ObserveOnly)
    );
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));
    assert_eq!(
        condition(&seen.conditions, "Synced"),
        Some(("True".into(), "Observed".into())),
        "lists the spec leaves empty are not compared"
    );
    assert!(
        h.holds_finalizer(&obj),
        "its deletion must be seen, to say what is left"
    );

    h.altostrat
        .edit_instance(&portal.id, |i| i.name = "Renamed in portal".into());
    h.observations_expire();
    h.reconcile(&obj).await.unwrap();
    let drifted = status(&h, &obj);
    let synced = drifted.conditions.iter().find(|c| c.type_ == "Synced").unwrap();
    assert_eq!(
        (synced.status.as_str(), synced.reason.as_str()),
        ("False", "Drifted")
    );
    assert!(synced.message.contains("name"), "{}", synced.message);
    assert!(drifted.plan.is_empty(), "an observer plans nothing");
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));

    h.delete(&obj);
    h.altostrat.clear_calls();
    h.reconcile(&obj).await.unwrap();
    assert_eq!(writes(&h), vec![]);
    assert!(!h.holds_finalizer(&obj));
    assert_eq!(h.altostrat.instances().len(), 1, "left running");
    assert!(h.kube.events().contains(&("Normal".into(), "Orphaned".into())));
    assert_eq!(
        h.altostrat
            .calls()
            .iter()
            .filter(|e| **e != Endpoint::ListInstances)
            .count(),
        0
    );
}

#[tokio::test]
async fn an_observer_finds_nothing_without_creating_anything() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({"managementPolicy": "ObserveOnly"})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![Endpoint::ListInstances]);
    assert_eq!(ready(&h, &obj), Some(("False".into(), "NotFound".into())));
    assert!(h.kube.records().is_empty(), "no ownership record");
}

#[tokio::test]
async fn an_observer_refuses_a_hub_another_namespace_records() {
    let h = Harness::new();
    let mut theirs = instance("hub-one", json!({}));
    theirs.metadata.namespace = Some("team-b".into());
    let theirs = h.apply(theirs);
    h.reconcile(&theirs).await.unwrap();
    let obj = h.apply(instance("hub-one", json!({"managementPolicy": "ObserveOnly"})));
    h.altostrat.clear_calls();
    assert!(h.reconcile(&obj).await.is_err());
    assert_eq!(ready(&h, &obj), Some(("False".into(), "NotOwned".into())));
    assert_eq!(status(&h, &obj).instance_id, None, "nothing of it mirrored");
    assert_eq!(writes(&h), vec![]);
}

#[tokio::test]
async fn an_observer_switched_to_full_takes_the_hub_over_only_by_spec_instance_id() {
    let h = Harness::new();
    let (portal, obj) = observed_hub(&h).await;
    let managed = h.edit(&obj, |o| {
        o.spec.management_policy = crate::crd::ManagementPolicy::Full;
        o.spec.pushed_routes = vec!["10.0.0.0/8".into()];
    });
    h.altostrat.clear_calls();
    let refused = h.reconcile(&managed).await.unwrap_err();
    assert_eq!(refused.reason(), "NotOwned");
    assert!(refused.to_string().contains("spec.instanceId"), "{refused}");
    assert_eq!(writes(&h), vec![], "an observed id is no ownership");
    let seen = status(&h, &obj);
    assert_eq!(
        (seen.instance_id.as_deref(), seen.management_policy),
        (
            Some(portal.id.as_str()),
            Some(crate::crd::ManagementPolicy::ObserveOnly)
        ),
        "still recorded as observed"
    );

    let adopted = h.edit(&obj, |o| o.spec.instance_id = Some(portal.id.clone()));
    h.reconcile(&adopted).await.unwrap();
    assert_eq!(writes(&h), vec![Endpoint::UpdateInstance]);
    assert_eq!(
        status(&h, &obj).management_policy,
        Some(crate::crd::ManagementPolicy::Full)
    );
    assert_eq!(
        status(&h, &obj).deletion_policy,
        Some(crate::crd::DeletionPolicy::Orphan),
        "adopted, without deletionPolicy: orphaned"
    );
    h.delete(&obj);
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        writes(&h),
        vec![Endpoint::UpdateInstance],
        "what it did not create, it does not delete unless told to"
    );
}

#[tokio::test]
async fn an_observer_in_the_namespace_does_not_keep_the_owner_from_deleting_its_hub() {
    let h = Harness::new();
    let owner = h.apply(instance("hub-one", json!({})));
    h.reconcile(&owner).await.unwrap();
    let id = status(&h, &owner).instance_id.unwrap();
    let mut viewer = instance(
        "hub-one",
        json!({"managementPolicy": "ObserveOnly", "instanceId": id}),
    );
    viewer.metadata.name = Some("viewer".into());
    let viewer = h.apply(viewer);
    let refused = h.reconcile(&viewer).await.unwrap_err();
    assert_eq!(refused.reason(), "NotOwned", "the owner holds the hub's record");

    h.delete(&owner);
    h.altostrat.clear_calls();
    h.reconcile(&owner).await.unwrap();
    assert_eq!(
        writes(&h),
        vec![Endpoint::DeleteInstance],
        "no hand-over to an observer"
    );
}

fn with_policy(
    h: &Harness,
    obj: &crate::crd::VpnInstance,
    policy: crate::crd::ManagementPolicy,
) -> crate::crd::VpnInstance {
    h.edit(obj, |o| o.spec.management_policy = policy)
}

#[tokio::test]
async fn a_plan_lists_exactly_the_calls_that_the_switch_to_full_makes() {
    use crate::crd::ManagementPolicy::{Full, Plan};
    let h = Harness::new();
    let obj = h.apply(instance(
        "hub-one",
        json!({"managementPolicy": "Plan", "pushedRoutes": ["10.0.0.0/8"]}),
    ));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        h.altostrat.calls(),
        vec![Endpoint::ListRegions],
        "validated, nothing written"
    );
    assert!(!h.holds_finalizer(&obj), "no claim");
    let planning = status(&h, &obj);
    assert_eq!(
        planned(&planning),
        vec![
            ("POST".into(), "/vpn/instances".into()),
            ("PUT".into(), "/vpn/instances/{instanceId}".into())
        ]
    );
    assert_eq!(planning.management_policy, Some(Plan));
    assert_eq!(ready(&h, &obj), Some(("False".into(), "Planned".into())));

    let full = with_policy(&h, &obj, Full);
    h.reconcile(&full).await.unwrap();
    assert_eq!(
        writes(&h),
        vec![Endpoint::CreateInstance, Endpoint::UpdateInstance]
    );
    assert!(status(&h, &obj).plan.is_empty(), "cleared under Full");
    let id = status(&h, &obj).instance_id.unwrap();

    let edited = h.edit(&obj, |o| {
        o.spec.management_policy = Plan;
        o.spec.pushed_routes = vec!["192.168.0.0/16".into()];
    });
    h.altostrat.clear_calls();
    h.reconcile(&edited).await.unwrap();
    assert_eq!(writes(&h), vec![]);
    let planning = status(&h, &obj);
    assert_eq!(
        planned(&planning),
        vec![("PUT".into(), format!("/vpn/instances/{id}"))]
    );
    let change = &planning.plan[0].changes[0];
    assert_eq!(
        (change.old.as_deref(), change.new.as_deref()),
        (Some(r#"["10.0.0.0/8"]"#), Some(r#"["192.168.0.0/16"]"#))
    );
    assert_eq!(
        condition(&planning.conditions, "Synced"),
        Some(("False".into(), "Planned".into()))
    );
    assert_eq!(ready(&h, &obj), Some(("True".into(), "Available".into())));

    let full = with_policy(&h, &obj, Full);
    h.reconcile(&full).await.unwrap();
    assert_eq!(writes(&h), vec![Endpoint::UpdateInstance]);
    assert_eq!(
        h.altostrat.instances()[0].pushed_routes,
        vec!["192.168.0.0/16".to_owned()]
    );
}

#[tokio::test]
async fn deleting_a_planning_resource_deletes_nothing() {
    let h = Harness::new();
    let obj = h.apply(instance("hub-one", json!({})));
    h.reconcile(&obj).await.unwrap();
    let planning = with_policy(&h, &obj, crate::crd::ManagementPolicy::Plan);
    h.reconcile(&planning).await.unwrap();
    h.delete(&obj);
    assert_eq!(h.reconcile_calls(&obj).await, vec![]);
    assert!(!h.holds_finalizer(&obj));
    assert_eq!(h.altostrat.instances().len(), 1);
}
