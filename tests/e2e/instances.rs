//! End to end: VpnInstance lifecycle against a real kube-apiserver and the simulator over HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use altostrat_vpn_operator::altostrat::model::InstanceCreate;
use altostrat_vpn_operator::altostrat::{ApiToken, HttpClient, HttpClientConfig, VpnApi};
use altostrat_vpn_operator::crd::VpnInstance;
use altostrat_vpn_operator::simulator::{self, Simulator, SimulatorConfig};
use kube::Api;
use kube::api::DeleteParams;
use serde_json::json;

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn instance_becomes_ready_with_every_readiness_flag_in_status() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-create").await;
    let sim = simulator(Duration::from_secs(2)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(&api, &instance_manifest("hub", "create-hub", json!({}))).await;
    let provisioning = wait_instance(&api, "hub", "instance id recorded", |o| {
        o.status.as_ref().is_some_and(|s| s.instance_id.is_some())
    })
    .await;
    let ready = wait_instance(&api, "hub", "Ready", instance_ready).await;

    let status = ready.status.unwrap();
    assert_eq!(
        status.instance_id,
        provisioning.status.unwrap().instance_id,
        "id stable across provisioning"
    );
    assert!(status.configured && status.rsa_ready && status.diffie_hellman_ready && status.server_ready);
    assert_eq!(status.hostname.as_deref(), Some("create-hub.vpn.altostr.at"));
    assert!(status.pending_changes.is_empty());
    assert_eq!(condition(&status.conditions, "Synced").unwrap().0, "True");
    assert!(
        ready
            .metadata
            .finalizers
            .unwrap()
            .contains(&"vpn.altostrat.io/cleanup".to_owned())
    );

    let remote = simc
        .instance(status.instance_id.as_deref().unwrap())
        .await
        .expect("exists in Altostrat");
    assert_eq!(remote.pushed_routes, vec!["10.10.0.0/16"]);
    assert_eq!(remote.public_dns, vec!["1.1.1.1", "8.8.8.8"]);
    assert_eq!(simc.count("POST /vpn/instances").await, 1);
    assert_eq!(simc.instances().await.len(), 1);

    // One Normal event per reconcile that changed something, the create first.
    let id = status.instance_id.clone().unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let notes = eventually("the event saying the instance is ready", TIMEOUT, || async {
        let mut listed: Vec<_> = events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("hub"))
            .collect();
        listed.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        let notes: Vec<(String, String)> = listed
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect();
        notes
            .iter()
            .any(|(_, note)| note.contains("provisioned and in sync"))
            .then_some(notes)
    })
    .await;
    assert_eq!(notes[0].0, "Created", "{notes:?}");
    assert!(notes[0].1.contains(&id), "{notes:?}");
    assert_eq!(
        notes.iter().filter(|(reason, _)| reason == "Created").count(),
        1,
        "{notes:?}"
    );
    assert!(
        notes.len() <= 3,
        "created, configured once provisioned, ready: no more events than steps: {notes:?}"
    );
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn spec_edit_makes_exactly_one_put_and_noop_resyncs_write_nothing() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-edit").await;
    let sim = simulator(Duration::from_millis(500)).await;
    let simc = SimClient::new(&sim);
    let resync = Duration::from_secs(2);
    let operator = start_operator(
        &client,
        &simc.base_url,
        &ns,
        OperatorOptions {
            resync_interval: resync,
            ..Default::default()
        },
    );
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(&api, &instance_manifest("hub", "edit-hub", json!({}))).await;
    let ready = wait_instance(&api, "hub", "Ready", instance_ready).await;
    let id = ready.status.as_ref().unwrap().instance_id.clone().unwrap();

    // Steady state: three resync periods must write nothing anywhere.
    simc.reset_calls().await;
    let before = api.get("hub").await.unwrap().metadata.resource_version;
    tokio::time::sleep(resync * 3).await;
    let calls = simc.calls().await;
    // Observed by list: one list per resync answers for every instance of the token.
    assert!(
        calls.get("GET /vpn/instances").copied().unwrap_or(0) >= 2,
        "resync reads: {calls:?}"
    );
    assert_eq!(
        calls.get("GET /vpn/instances/{instanceId}"),
        None,
        "no GET per object: {calls:?}"
    );
    assert_eq!(
        simc.writes().await,
        0,
        "no Altostrat writes during resync: {calls:?}"
    );
    assert_eq!(
        api.get("hub").await.unwrap().metadata.resource_version,
        before,
        "no Kubernetes writes during resync"
    );

    simc.reset_calls().await;
    merge_patch(
        &api,
        "hub",
        json!({"spec": {"pushedRoutes": ["10.10.0.0/16", "172.16.0.0/12"], "domains": ["corp.internal"]}}),
    )
    .await;
    wait_instance(&api, "hub", "Ready after edit", instance_ready).await;
    let remote = simc.instance(&id).await.unwrap();
    assert_eq!(remote.pushed_routes, vec!["10.10.0.0/16", "172.16.0.0/12"]);
    assert_eq!(remote.domains, vec!["corp.internal"]);
    tokio::time::sleep(resync * 2).await;
    assert_eq!(
        simc.count("PUT /vpn/instances/{instanceId}").await,
        1,
        "{:?}",
        simc.calls().await
    );
    assert_eq!(simc.count("POST /vpn/instances").await, 0);
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn out_of_band_change_is_corrected_on_resync() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-drift").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(
        &client,
        &simc.base_url,
        &ns,
        OperatorOptions {
            resync_interval: Duration::from_secs(2),
            ..Default::default()
        },
    );
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(&api, &instance_manifest("hub", "drift-hub", json!({}))).await;
    let ready = wait_instance(&api, "hub", "Ready", instance_ready).await;
    let id = ready.status.unwrap().instance_id.unwrap();

    simc.reset_calls().await;
    simc.drift(
        &id,
        json!({"name": "renamed in portal", "pushed_routes": ["0.0.0.0/0"]}),
    )
    .await;
    eventually("drift corrected", TIMEOUT, || async {
        let remote = simc.instance(&id).await?;
        (remote.name == "hub hub" && remote.pushed_routes == vec!["10.10.0.0/16"]).then_some(())
    })
    .await;
    assert_eq!(simc.count("PUT /vpn/instances/{instanceId}").await, 1);
    wait_instance(&api, "hub", "Ready after correction", instance_ready).await;
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn delete_removes_the_instance_and_orphan_policy_keeps_it() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-delete").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(&api, &instance_manifest("doomed", "doomed-hub", json!({}))).await;
    apply(
        &api,
        &instance_manifest("kept", "kept-hub", json!({"deletionPolicy": "Orphan"})),
    )
    .await;
    let doomed = wait_instance(&api, "doomed", "Ready", instance_ready)
        .await
        .status
        .unwrap()
        .instance_id
        .unwrap();
    let kept = wait_instance(&api, "kept", "Ready", instance_ready)
        .await
        .status
        .unwrap()
        .instance_id
        .unwrap();

    api.delete("doomed", &DeleteParams::default()).await.unwrap();
    api.delete("kept", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "doomed").await;
    wait_gone(&api, "kept").await;
    assert!(
        simc.instance(&doomed).await.is_none(),
        "Delete policy removes the Altostrat instance"
    );
    assert!(
        simc.instance(&kept).await.is_some(),
        "Orphan policy leaves it running"
    );
    assert_eq!(simc.count("DELETE /vpn/instances/{instanceId}").await, 1);
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_hub_made_out_of_band_with_our_hostname_is_neither_adopted_nor_deleted() {
    // The hub existed before this resource claimed its create: it is someone else's, so it is
    // reported, never written to, and left in place when the resource is deleted.
    let client = kube().await;
    let ns = namespace(&client, "e2e-adopt").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let existing = simc.create_instance("hub hub", "adopt-hub").await;
    simc.reset_calls().await;
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(
        &api,
        &instance_manifest("hub", "adopt-hub", json!({"pushedRoutes": ["10.9.0.0/16"]})),
    )
    .await;
    let message = wait_instance_reason(&api, "hub", "HostnameTaken").await;
    assert!(message.contains(&existing.id), "names the hub: {message}");
    assert_eq!(
        simc.count("POST /vpn/instances").await,
        1,
        "one create attempt, refused"
    );
    api.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "hub").await;
    let remote = simc.instances().await;
    assert_eq!(remote.len(), 1);
    assert!(
        remote[0].pushed_routes.is_empty(),
        "never updated: {:?}",
        remote[0]
    );
    assert_eq!(simc.count("PUT /vpn/instances/{instanceId}").await, 0);
    assert_eq!(simc.count("DELETE /vpn/instances/{instanceId}").await, 0);
    operator.stop().await;
}

/// Resync of the tests below: an invalid spec must wait for max(resync, 60 s) before its next
/// try, so a few resyncs of a valid instance must pass without a call for the invalid one.
const SHORT_RESYNC: Duration = Duration::from_secs(2);

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn unknown_region_is_invalid_spec_and_not_retried_early() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-region").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let options = OperatorOptions {
        resync_interval: SHORT_RESYNC,
        ..Default::default()
    };
    let operator = start_operator(&client, &simc.base_url, &ns, options);
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(
        &api,
        &instance_manifest("lost", "lost-hub", json!({"region": "atlantis"})),
    )
    .await;
    let message = wait_not_ready(&api, "lost", "InvalidSpec").await;
    assert!(
        message.contains("atlantis") && message.contains("sjc"),
        "lists valid regions: {message}"
    );
    // The region list is read, the instance is not created.
    assert_eq!(
        simc.calls_by_status().await,
        BTreeMap::from([("GET /vpn/servers/regions 200".to_owned(), 1)])
    );
    assert_quiet_while_a_valid_instance_resyncs(&api, &simc, "region-witness").await;
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn hostname_taken_in_another_account_is_reported_and_not_retried_early() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-taken").await;
    let sim = Simulator::spawn(SimulatorConfig {
        provision_delay: Duration::from_millis(300),
        status_clear_delay: Duration::from_millis(300),
        tokens: vec![
            simulator::ApiToken::all_scopes(TOKEN),
            simulator::ApiToken::all_scopes("elsewhere-token").in_account("elsewhere"),
        ],
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let simc = SimClient::new(&sim);
    let elsewhere = HttpClient::new(HttpClientConfig {
        base_url: simc.base_url.clone(),
        ..HttpClientConfig::default()
    })
    .unwrap();
    let body = InstanceCreate {
        name: "their hub".into(),
        hostname: "taken-hub".into(),
        region: "sjc".into(),
    };
    let theirs = elsewhere
        .create_instance(&ApiToken::new("elsewhere-token"), &body)
        .await
        .unwrap();
    assert!(
        simc.instances().await.is_empty(),
        "the operator's token cannot see it"
    );
    simc.reset_calls().await;
    let options = OperatorOptions {
        resync_interval: SHORT_RESYNC,
        ..Default::default()
    };
    let operator = start_operator(&client, &simc.base_url, &ns, options);
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    apply(&api, &instance_manifest("hub", "taken-hub", json!({}))).await;
    let message = wait_not_ready(&api, "hub", "HostnameTaken").await;
    assert!(
        message.contains("hostname_taken")
            && message.contains("'taken-hub' is already in use")
            && message.contains("cannot see"),
        "says the hostname is taken: {message}"
    );
    // The create is refused, and the instances the token can see hold none to adopt.
    assert_eq!(
        simc.calls_by_status().await,
        BTreeMap::from([
            ("GET /vpn/servers/regions 200".to_owned(), 1),
            ("POST /vpn/instances 409".to_owned(), 1),
            ("GET /vpn/instances 200".to_owned(), 1),
        ])
    );
    assert_quiet_while_a_valid_instance_resyncs(&api, &simc, "taken-witness").await;
    let instances = sim.simulator().instances();
    assert_eq!(instances.len(), 2, "theirs and the witness: {instances:?}");
    assert!(
        instances
            .iter()
            .any(|i| i.id == theirs.id && i.name == "their hub"),
        "the other account's instance is left alone: {instances:?}"
    );
    operator.stop().await;
}

/// Waits until Ready is False with `reason`; returns its message.
async fn wait_not_ready(api: &Api<VpnInstance>, name: &str, reason: &str) -> String {
    let message = wait_instance_reason(api, name, reason).await;
    let obj = api.get(name).await.unwrap();
    let ready = condition(&obj.status.unwrap().conditions, "Ready").unwrap();
    assert_eq!(ready.0, "False", "{ready:?}");
    message
}

/// Brings a valid instance to Ready, then watches two of its resyncs (each lists the token's
/// instances once): the operator is demonstrably reconciling, and the failed resource must
/// cause no call meanwhile.
async fn assert_quiet_while_a_valid_instance_resyncs(
    api: &Api<VpnInstance>,
    simc: &SimClient,
    hostname: &str,
) {
    apply(api, &instance_manifest("witness", hostname, json!({}))).await;
    wait_instance(api, "witness", "the witness to be Ready", instance_ready).await;
    simc.reset_calls().await;
    eventually("two resyncs of the witness", TIMEOUT, || async {
        (simc.count("GET /vpn/instances").await >= 2).then_some(())
    })
    .await;
    let calls = simc.calls().await;
    assert_eq!(
        calls.keys().collect::<Vec<_>>(),
        vec!["GET /vpn/instances"],
        "only the witness's resync reads: {calls:?}"
    );
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl on PATH");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn kubectl_apply_rejects_invalid_manifests_and_immutable_changes_with_clear_messages() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-kubectl").await;
    let invalid = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/invalid-instance.yaml");
    let out = kubectl(&["apply", "-n", &ns, "-f", invalid], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for message in [
        "spec.name in body should be at least 3 chars long",
        "hostname must not be a reserved label",
        "every pushedRoutes entry must be a CIDR",
        "spec.publicDns in body should have at least 2 items",
    ] {
        assert!(stderr.contains(message), "missing {message:?} in:\n{stderr}");
    }

    let bad_peer = r#"{"apiVersion":"vpn.altostrat.io/v1alpha1","kind":"VpnPeer","metadata":{"name":"p"},
        "spec":{"instanceRef":{"name":"hub"},"type":"client","protocol":"openvpn"}}"#;
    let out = kubectl(&["apply", "-n", &ns, "-f", "-"], Some(bad_peer));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("client peers must use protocol wireguard")
            && stderr.contains("client peers require userId"),
        "{stderr}"
    );

    let valid = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/instance.yaml");
    assert!(kubectl(&["apply", "-n", &ns, "-f", valid], None).status.success());
    let out = kubectl(
        &[
            "patch",
            "-n",
            &ns,
            "vpninstance",
            "demo-hub",
            "--type=merge",
            "-p",
            r#"{"spec":{"region":"fra"}}"#,
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("region is immutable"));
}
