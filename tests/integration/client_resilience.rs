//! The production client stack (`Resilient<HttpClient>`) against the simulator: the shared
//! rate limiter holds a fleet of concurrent callers to the budget, 429s are coordinated through
//! it, idempotent calls are retried and POSTs are not.
#![cfg(feature = "simulator")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use altostrat_vpn_operator::altostrat::model::InstanceCreate;
use altostrat_vpn_operator::altostrat::{
    ApiError, ApiToken, Budget, BudgetConfig, HttpClient, HttpClientConfig, Resilient, RetryPolicy, VpnApi,
};
use altostrat_vpn_operator::metrics::{self, Metrics};
use altostrat_vpn_operator::simulator::{
    FaultConfig, FaultRule, RunningSimulator, Simulator, SimulatorConfig,
};
use prometheus_client::registry::Registry;

struct Stack {
    sim: RunningSimulator,
    api: Arc<Resilient<HttpClient>>,
    registry: Registry,
}

async fn stack(rate_per_minute: u32, burst: u32, faults: FaultConfig) -> Stack {
    let sim = Simulator::spawn(SimulatorConfig {
        provision_delay: Duration::ZERO,
        faults,
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let http = HttpClient::new(HttpClientConfig {
        base_url: sim.base_url(),
        ..HttpClientConfig::default()
    })
    .unwrap();
    let policy = RetryPolicy {
        base_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    let api = Arc::new(Resilient::new(
        http,
        Arc::new(Budget::new(BudgetConfig {
            rate_per_minute,
            burst,
            // These callers are plain reads: let them use the whole rate, as writes would.
            observe_share: 1.0,
            ..BudgetConfig::default()
        })),
        policy,
        metrics,
    ));
    Stack { sim, api, registry }
}

/// The value of an unlabelled metric.
fn metric(registry: &Registry, name: &str) -> f64 {
    let text = metrics::encode(registry).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

fn token() -> ApiToken {
    ApiToken::new("sim-token")
}

#[tokio::test]
async fn concurrent_callers_share_one_budget() {
    // 600/min with a burst of 5 sustains 595/min (one request per ~101 ms), and the budget
    // starts empty: 25 callers need >= 2.5 s.
    let s = stack(600, 5, FaultConfig::default()).await;
    let started = Instant::now();
    let calls = (0..25).map(|_| {
        let api = s.api.clone();
        tokio::spawn(async move { api.list_instances(&token()).await.map(|_| ()) })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2400),
        "budget exceeded: 25 calls in {elapsed:?}"
    );
    // The exact schedule is proven on a paused clock in budget/tests.rs. Over real HTTP on
    // a possibly loaded machine, three times the budget only leaves room for slow requests: a
    // limiter that made callers wait for each other's slots twice would already exceed it.
    assert!(
        elapsed < Duration::from_secs(6),
        "limiter far slower than the budget: {elapsed:?}"
    );
    assert_eq!(s.sim.simulator().calls().total, 25);
    let text = metrics::encode(&s.registry).unwrap();
    assert!(
        text.contains("vpn_operator_altostrat_rate_limit_waits_total 25"),
        "{text}"
    );
    // Every attempt's latency is observed per endpoint, without the limiter's waits: 25 fast
    // loopback calls, none of them near the seconds most of them queued.
    let count = r#"vpn_operator_altostrat_request_duration_seconds_count{endpoint="GET /vpn/instances"} 25"#;
    assert!(text.contains(count), "{text}");
    let sum: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"vpn_operator_altostrat_request_duration_seconds_sum{endpoint="GET /vpn/instances"} "#,
            )
        })
        .and_then(|v| v.parse().ok())
        .expect("a latency sum");
    assert!(
        sum < elapsed.as_secs_f64(),
        "latency excludes rate-limit waits: {sum} s"
    );
}

#[tokio::test]
async fn server_429_is_waited_out_for_every_caller_of_the_token() {
    let mut faults = FaultConfig::default();
    faults.rules.insert(
        "GET /vpn/servers/regions".into(),
        FaultRule {
            fail_next: 1,
            status: Some(429),
            retry_after_secs: Some(1),
            ..FaultRule::default()
        },
    );
    let s = stack(60_000, 100, faults).await;
    let started = Instant::now();
    s.api
        .list_regions(&token())
        .await
        .expect("retried after Retry-After");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured: {:?}",
        started.elapsed()
    );
    // Another caller of the same token right after is not slowed further: the limiter's waits
    // add up to the one Retry-After (at most 1 s), plus a slot of 1 ms and, at the start and
    // after the pause, the 20 slots (1 ms each) of the burst's reserve for quiet namespaces:
    // the reserve refills first, and these calls, made outside any namespace, never use it.
    // A loaded machine only shortens them, since callers then reach the limiter later.
    s.api.list_instances(&token()).await.unwrap();
    let waited = metric(
        &s.registry,
        "vpn_operator_altostrat_rate_limit_wait_seconds_total",
    );
    assert!(waited <= 1.06, "waited {waited} s in the limiter");
    let calls = s.sim.simulator().calls();
    assert_eq!(calls.by_status["GET /vpn/servers/regions 429"], 1);
    assert_eq!(calls.by_status["GET /vpn/servers/regions 200"], 1);
}

#[tokio::test]
async fn reads_are_retried_but_a_failed_create_is_not() {
    let mut faults = FaultConfig::default();
    faults.rules.insert(
        "GET /vpn/instances".into(),
        FaultRule {
            fail_next: 2,
            status: Some(503),
            ..FaultRule::default()
        },
    );
    faults.rules.insert(
        "POST /vpn/instances".into(),
        FaultRule {
            fail_next: 1,
            status: Some(500),
            ..FaultRule::default()
        },
    );
    let s = stack(60_000, 100, faults).await;

    s.api
        .list_instances(&token())
        .await
        .expect("two 503s then success");
    let create = InstanceCreate {
        name: "Retry hub".into(),
        hostname: "retry-hub".into(),
        region: "sjc".into(),
    };
    let err = s.api.create_instance(&token(), &create).await.unwrap_err();
    assert!(matches!(err, ApiError::Server { status: 500, .. }), "{err}");
    let calls = s.sim.simulator().calls();
    assert_eq!(calls.counts["GET /vpn/instances"], 3);
    assert_eq!(
        calls.counts["POST /vpn/instances"], 1,
        "a POST that may have been applied is never repeated"
    );
    let text = metrics::encode(&s.registry).unwrap();
    assert!(
        text.contains(r#"vpn_operator_altostrat_retries_total{endpoint="GET /vpn/instances"} 2"#),
        "{text}"
    );
}

/// A 405 on the undocumented DELETE of an instance, and a 402 or 403 quota refusal, are asked
/// once: the same request would be refused again.
#[tokio::test]
async fn refused_deletes_and_quota_refusals_are_not_retried() {
    let mut faults = FaultConfig::default();
    for (route, status) in [
        ("DELETE /vpn/instances/{instanceId}", 405),
        ("GET /vpn/instances/{instanceId}", 402),
    ] {
        faults.rules.insert(
            route.into(),
            FaultRule {
                fail_next: 5,
                status: Some(status),
                ..FaultRule::default()
            },
        );
    }
    let s = stack(60_000, 100, faults).await;
    let create = InstanceCreate {
        name: "Refused hub".into(),
        hostname: "refused-hub".into(),
        region: "sjc".into(),
    };
    let hub = s.api.create_instance(&token(), &create).await.unwrap();
    let err = s.api.delete_instance(&token(), &hub.id).await.unwrap_err();
    assert!(matches!(err, ApiError::Refused { status: 405, .. }), "{err:?}");
    assert!(!err.is_transient());
    let err = s.api.get_instance(&token(), &hub.id).await.unwrap_err();
    assert!(
        matches!(err, ApiError::QuotaExceeded { status: 402, .. }),
        "{err:?}"
    );
    assert_eq!(err.category(), "quota_exceeded");
    let calls = s.sim.simulator().calls();
    assert_eq!(calls.counts["DELETE /vpn/instances/{instanceId}"], 1);
    assert_eq!(calls.counts["GET /vpn/instances/{instanceId}"], 1);
}

#[tokio::test]
async fn unreachable_api_is_a_transient_transport_error() {
    let http = HttpClient::new(HttpClientConfig {
        base_url: "http://127.0.0.1:9".into(),
        connect_timeout: Duration::from_millis(200),
        ..HttpClientConfig::default()
    })
    .unwrap();
    let err = http.list_instances(&token()).await.unwrap_err();
    assert!(matches!(err, ApiError::Transport { .. }), "{err}");
    assert!(err.is_transient());
    assert!(
        !format!("{err} {err:?}").contains("sim-token"),
        "errors never carry the token"
    );
}

#[tokio::test]
async fn tls_certificates_are_verified() {
    // A real TLS server (openssl s_server) with a self-signed certificate: the client must
    // refuse it rather than send the token to an unverified peer.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl on PATH");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let http = HttpClient::new(HttpClientConfig {
        base_url: format!("https://127.0.0.1:{port}"),
        ..HttpClientConfig::default()
    })
    .unwrap();
    let err = http.list_instances(&token()).await.unwrap_err();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        matches!(err, ApiError::Transport { .. }) && err.to_string().to_lowercase().contains("certificate"),
        "an unverifiable certificate is refused: {err}"
    );
}
