//! End to end: faults, crashes, leader election, credentials and secrecy, with the real
//! operator binary where a process boundary matters.

use std::time::Duration;

use crate::support::process::*;
use crate::support::*;
use altostrat_vpn_operator::crd::VpnInstance;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn server_errors_and_rate_limits_delay_but_never_lose_updates() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-faults").await;
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

    apply(&api, &instance_manifest("hub", "faulty-hub", json!({}))).await;
    let id = wait_instance(&api, "hub", "Ready", instance_ready)
        .await
        .status
        .unwrap()
        .instance_id
        .unwrap();

    // Every endpoint now fails for a while: 500s on updates, 429s on reads.
    simc.set_faults(json!({
        "rules": {
            "PUT /vpn/instances/{instanceId}": {"fail_next": 6, "status": 500},
            "GET /vpn/instances": {"fail_next": 3, "status": 429, "retry_after_secs": 1}
        }
    }))
    .await;
    simc.reset_calls().await;
    merge_patch(
        &api,
        "hub",
        json!({"spec": {"name": "renamed hub", "publicDns": ["9.9.9.9", "1.0.0.1", "8.8.4.4"]}}),
    )
    .await;
    let converged = wait_instance(&api, "hub", "Ready after faults", instance_ready).await;
    let remote = simc.instance(&id).await.unwrap();
    assert_eq!(remote.name, "renamed hub");
    assert_eq!(remote.public_dns, vec!["9.9.9.9", "1.0.0.1", "8.8.4.4"]);
    let calls = simc.calls().await;
    assert!(
        calls["PUT /vpn/instances/{instanceId}"] >= 7,
        "the failed PUTs were retried: {calls:?}"
    );
    assert_eq!(simc.count("POST /vpn/instances").await, 0);
    assert_eq!(
        condition(&converged.status.unwrap().conditions, "Synced")
            .unwrap()
            .0,
        "True"
    );

    let text = altostrat_vpn_operator::metrics::encode(&operator.registry).unwrap();
    assert!(
        text.contains("vpn_operator_altostrat_retries_total"),
        "retries are counted"
    );
    assert!(text.contains(r#"status_class="5xx""#));
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn operator_killed_mid_provisioning_resumes_without_duplicates() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-crash").await;
    let sim = simulator(Duration::from_secs(6)).await;
    let simc = SimClient::new(&sim);
    let logs = tempfile::tempdir().unwrap();
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);

    let mut first = OperatorProcess::start(&simc.base_url, &ns, &[], logs.path(), "first");
    apply(&api, &instance_manifest("hub", "crash-hub", json!({}))).await;
    let id = wait_instance(&api, "hub", "id recorded", |o| {
        o.status.as_ref().is_some_and(|s| s.instance_id.is_some())
    })
    .await
    .status
    .unwrap()
    .instance_id
    .unwrap();
    first.kill(); // SIGKILL: no graceful anything
    let provisioning = api.get("hub").await.unwrap();
    assert!(!instance_ready(&provisioning), "killed while still provisioning");

    let _second = OperatorProcess::start(&simc.base_url, &ns, &[], logs.path(), "second");
    let ready = wait_instance(&api, "hub", "Ready after restart", instance_ready).await;
    assert_eq!(ready.status.unwrap().instance_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        simc.instances().await.len(),
        1,
        "exactly one instance in Altostrat"
    );
    assert_eq!(simc.count("POST /vpn/instances").await, 1);
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn token_never_appears_in_logs_status_or_events_and_secret_credentials_work() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-secret").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let logs = tempfile::tempdir().unwrap();
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);

    // A resource naming a Secret that does not exist reports it; once the Secret appears
    // (holding the same valid token) the instance converges.
    let mut op = OperatorProcess::start(&simc.base_url, &ns, &[], logs.path(), "secret");
    apply(
        &api,
        &instance_manifest(
            "hub",
            "secret-hub",
            json!({"credentialsSecretRef": {"name": "altostrat-creds"}}),
        ),
    )
    .await;
    let blocked = wait_instance_reason(&api, "hub", "CredentialsError").await;
    assert!(blocked.contains("altostrat-creds"), "{blocked}");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "altostrat-creds", "labels": {"vpn.altostrat.io/credentials": "true"}},
        "stringData": {"token": TOKEN}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let ready = wait_instance(&api, "hub", "Ready with Secret credentials", instance_ready).await;

    // A bad token is reported as a credentials problem, naming no secret value.
    apply(
        &api,
        &instance_manifest(
            "bad",
            "badtoken-hub",
            json!({"credentialsSecretRef": {"name": "wrong-creds"}}),
        ),
    )
    .await;
    let wrong: Secret = serde_json::from_value(json!({
        "metadata": {"name": "wrong-creds", "labels": {"vpn.altostrat.io/credentials": "true"}},
        "stringData": {"token": "totally-wrong-token-value"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &wrong).await.unwrap();
    wait_instance(&api, "bad", "401 reported", |o| {
        o.status
            .as_ref()
            .and_then(|s| condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.2.contains("401"))
    })
    .await;

    let (code, body) = eventually("operator ready", TIMEOUT, || async {
        op.get("/readyz").await.filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!((code, body.as_str()), (200, "ready"));
    let (status, metrics) = op.get("/metrics").await.expect("metrics served");
    assert_eq!(status, 200);
    for name in [
        "vpn_operator_reconciles_total",
        "vpn_operator_altostrat_requests_total",
        "vpn_operator_requeues_total",
        "vpn_operator_reconcile_queue_wait_seconds_count",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(metrics.contains(name), "{name} exported");
    }
    // The Ready hub, by namespace and both conditions; and its way there, from creation.
    let ready_row =
        format!(r#"vpn_operator_resources{{kind="VpnInstance",resource_namespace="{ns}",ready="True","#);
    assert!(metrics.contains(&ready_row), "{ready_row} in {metrics}");
    assert!(
        metrics.contains(r#"vpn_operator_time_to_ready_seconds_count{kind="VpnInstance"} "#),
        "time to Ready observed: {metrics}"
    );
    let exit = op.terminate();
    assert!(
        exit.success(),
        "graceful shutdown on SIGTERM exits 0, got {exit:?}"
    );

    let log = std::fs::read_to_string(&op.log_path).unwrap();
    assert!(
        log.contains("debug") || log.contains("DEBUG"),
        "debug logging was on"
    );
    for secret in [TOKEN, "totally-wrong-token-value"] {
        assert!(!log.contains(secret), "token leaked into logs");
        let status = serde_json::to_string(&api.list(&Default::default()).await.unwrap()).unwrap();
        assert!(!status.contains(secret), "token leaked into resources");
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
        let events = serde_json::to_string(&events.list(&Default::default()).await.unwrap()).unwrap();
        assert!(!events.contains(secret), "token leaked into events");
    }
    assert!(ready.status.unwrap().instance_id.is_some());
    drop(simc);
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn standby_replica_takes_over_when_the_leader_dies() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-leader").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let logs = tempfile::tempdir().unwrap();
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let election = [
        ("LEADER_ELECTION", "true"),
        ("LEADER_ELECTION_NAMESPACE", ns.as_str()),
        ("LEADER_ELECTION_LEASE_DURATION", "4s"),
    ];

    let mut alpha = OperatorProcess::start(&simc.base_url, &ns, &election, logs.path(), "alpha");
    let holder = |leases: Api<Lease>| async move {
        leases
            .get_opt("altostrat-vpn-operator")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    };
    eventually("alpha leads", TIMEOUT, || async {
        (holder(leases.clone()).await.as_deref() == Some("alpha")).then_some(())
    })
    .await;
    let (code, body) = eventually("alpha ready as leader", TIMEOUT, || async {
        alpha.get("/readyz").await.filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!((code, body.as_str()), (200, "ready: leader"));
    let mut beta = OperatorProcess::start(&simc.base_url, &ns, &election, logs.path(), "beta");
    let (code, body) = eventually("beta ready as standby", TIMEOUT, || async {
        beta.get("/readyz").await
    })
    .await;
    assert_eq!((code, body.as_str()), (200, "ready: standby"));

    apply(&api, &instance_manifest("one", "leader-one", json!({}))).await;
    wait_instance(&api, "one", "Ready under alpha", instance_ready).await;
    assert_eq!(holder(leases.clone()).await.as_deref(), Some("alpha"));

    alpha.kill();
    let started = tokio::time::Instant::now();
    eventually("beta takes over", TIMEOUT, || async {
        (holder(leases.clone()).await.as_deref() == Some("beta")).then_some(())
    })
    .await;
    let takeover = started.elapsed();
    assert!(takeover < Duration::from_secs(12), "takeover took {takeover:?}");
    apply(&api, &instance_manifest("two", "leader-two", json!({}))).await;
    wait_instance(&api, "two", "Ready under beta", instance_ready).await;
    assert_eq!(simc.instances().await.len(), 2);
    eprintln!("leader takeover after {takeover:?}");

    // Graceful shutdown releases the lease, so a successor need not wait for it to expire.
    let exit = beta.terminate();
    assert!(exit.success(), "SIGTERM exits cleanly: {exit:?}");
    assert_eq!(holder(leases.clone()).await, None, "lease released on shutdown");
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn deleting_a_namespace_deletes_its_hubs_by_policy_before_their_credentials_go() {
    // The namespace controller deletes the Secret and the resources at once: the Secret stays
    // (credentials finalizer) until the resources using it have cleaned up.
    let client = kube().await;
    let ns = namespace(&client, "e2e-nsdel").await;
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<altostrat_vpn_operator::crd::VpnPeer> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "team-creds", "labels": {"vpn.altostrat.io/credentials": "true"}},
        "stringData": {"token": TOKEN}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let creds = json!({"credentialsSecretRef": {"name": "team-creds"}});
    apply(
        &instances,
        &instance_manifest("doomed", "nsdel-doomed", creds.clone()),
    )
    .await;
    let mut kept = creds;
    kept["deletionPolicy"] = json!("Orphan");
    apply(&instances, &instance_manifest("kept", "nsdel-kept", kept)).await;
    apply(
        &peers,
        &client_peer_manifest("alice", "doomed", "a1b2c3d4-e5f6-7890-1234-567890abcdef"),
    )
    .await;
    let doomed = wait_instance(&instances, "doomed", "Ready", instance_ready).await;
    let kept = wait_instance(&instances, "kept", "Ready", instance_ready).await;
    wait_peer(&peers, "alice", "Ready", peer_ready).await;
    eventually("the Secret is kept while in use", TIMEOUT, || async {
        let s = secrets.get("team-creds").await.ok()?;
        s.metadata
            .finalizers?
            .contains(&"vpn.altostrat.io/credentials-in-use".to_owned())
            .then_some(())
    })
    .await;

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces.delete(&ns, &Default::default()).await.unwrap();
    eventually("the namespace is gone", Duration::from_secs(180), || async {
        namespaces.get_opt(&ns).await.ok()?.is_none().then_some(())
    })
    .await;

    let remote: Vec<String> = simc.instances().await.into_iter().map(|i| i.id).collect();
    let id = |o: &VpnInstance| o.status.as_ref().and_then(|s| s.instance_id.clone()).unwrap();
    assert_eq!(
        remote,
        vec![id(&kept)],
        "Delete policy: gone; Orphan policy: kept"
    );
    assert!(!remote.contains(&id(&doomed)));
    assert_eq!(
        simc.count("DELETE /vpn/instances/{instanceId}/peers/{peerId}")
            .await,
        1
    );
    assert_eq!(simc.count("DELETE /vpn/instances/{instanceId}").await, 1);
    operator.stop().await;
}

/// One tenant whose token Altostrat throttles never delays the resources of another token: each
/// token has its own lane in the budget, and no reconcile holds a worker while its token waits.
#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_throttled_token_never_delays_the_resources_of_another() {
    use altostrat_vpn_operator::simulator::{ApiToken, Simulator, SimulatorConfig};
    let client = kube().await;
    let ns = namespace(&client, "e2e-tenants").await;
    let sim = Simulator::spawn(SimulatorConfig {
        provision_delay: Duration::from_millis(300),
        status_clear_delay: Duration::from_millis(300),
        tokens: vec![
            ApiToken::all_scopes(TOKEN),
            ApiToken::all_scopes("tenant-b-token"),
        ],
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let simc = SimClient::new(&sim);
    // Altostrat allows 6 requests a minute per token: tenant A's ten hubs need far more, and
    // the operator's own budget is left wide open so that Altostrat's 429s do the throttling.
    simc.set_faults(json!({"rate_limit_per_minute": 6})).await;
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let api: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    for i in 0..10 {
        let manifest = instance_manifest(&format!("a-{i}"), &format!("tenant-a-{i}"), json!({}));
        apply(&api, &manifest).await;
    }
    eventually("tenant A throttled by Altostrat", TIMEOUT, || async {
        let throttled = simc.calls_by_status().await.keys().any(|k| k.ends_with(" 429"));
        throttled.then_some(())
    })
    .await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "tenant-b", "labels": {"vpn.altostrat.io/credentials": "true"}},
        "stringData": {"token": "tenant-b-token"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let started = std::time::Instant::now();
    let b = instance_manifest(
        "b",
        "tenant-b",
        json!({"credentialsSecretRef": {"name": "tenant-b"}}),
    );
    apply(&api, &b).await;
    wait_instance(&api, "b", "tenant B Ready", instance_ready).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "tenant B waited {took:?} behind tenant A's throttled token"
    );
    let a_ready = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|i| i.metadata.name.as_deref().unwrap_or("").starts_with("a-"))
        .filter(|i| instance_ready(i))
        .count();
    assert!(
        a_ready < 10,
        "tenant A is still throttled meanwhile ({a_ready}/10 Ready)"
    );
    operator.stop().await;
}
