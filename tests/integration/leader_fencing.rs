//! Leader fencing of the production client stack: while the leader gate is closed (lease
//! lost or not confirmed in time) no Altostrat request leaves the process.
#![cfg(feature = "simulator")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use altostrat_vpn_operator::altostrat::model::InstanceCreate;
use altostrat_vpn_operator::altostrat::{
    ApiError, ApiToken, Budget, BudgetConfig, HttpClient, HttpClientConfig, Resilient, RetryPolicy, VpnApi,
};
use altostrat_vpn_operator::leader::LeaderGate;
use altostrat_vpn_operator::metrics::Metrics;
use altostrat_vpn_operator::simulator::{Simulator, SimulatorConfig};
use prometheus_client::registry::Registry;

fn create() -> InstanceCreate {
    InstanceCreate {
        name: "Fenced hub".into(),
        hostname: "fenced-hub".into(),
        region: "sjc".into(),
    }
}

#[tokio::test]
async fn a_fenced_request_never_reaches_the_server_and_is_not_retried() {
    let sim = Simulator::spawn(SimulatorConfig {
        provision_delay: Duration::ZERO,
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let http = HttpClient::new(HttpClientConfig {
        base_url: sim.base_url(),
        ..HttpClientConfig::default()
    })
    .unwrap();
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    let gate = LeaderGate::closed();
    let api = Resilient::new(
        http,
        Arc::new(Budget::new(BudgetConfig::unlimited())),
        RetryPolicy::default(),
        metrics,
    )
    .fenced_by(gate.clone());
    let token = ApiToken::new("sim-token");

    // Closed from the start (a standby, or a leader whose lease is not yet confirmed).
    let err = api.create_instance(&token, &create()).await.unwrap_err();
    assert!(matches!(&err, ApiError::Fenced { .. }), "{err}");
    let started = Instant::now();
    let err = api.list_instances(&token).await.unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "failed at once, no retries"
    );
    assert_eq!(sim.simulator().calls().total, 0, "nothing was sent");

    // Open while the lease is confirmed.
    gate.open_until(Instant::now() + Duration::from_secs(60));
    api.create_instance(&token, &create()).await.unwrap();
    assert_eq!(sim.simulator().calls().counts["POST /vpn/instances"], 1);

    // A deadline that passed without renewal fences again, as does losing the lease.
    gate.open_until(Instant::now());
    assert!(matches!(
        api.list_instances(&token).await,
        Err(ApiError::Fenced { .. })
    ));
    gate.open_until(Instant::now() + Duration::from_secs(60));
    gate.close();
    assert!(matches!(
        api.create_instance(&token, &create()).await,
        Err(ApiError::Fenced { .. })
    ));
    assert_eq!(
        sim.simulator().calls().total,
        1,
        "only the unfenced create was sent"
    );
}
