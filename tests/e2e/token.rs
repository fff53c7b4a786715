//! The default token as the running binary judges it: `/readyz` (no kubelet runs here, so the
//! probe is requested directly), the ERROR log line and the metric, with a 2 s grace.

use std::time::Duration;

use serde_json::json;

use crate::support::process::OperatorProcess;
use crate::support::{SimClient, TIMEOUT, TOKEN, eventually, kube, namespace, simulator};

const GRACE: (&str, &str) = ("DEFAULT_TOKEN_GRACE", "2s");
const WRONG: &str = "not-a-token-altostrat-issued";
const REGIONS: &str = "GET /vpn/servers/regions";
const REFUSED: &str = "refused the operator's default token (401 Unauthorized)";

async fn readyz(operator: &OperatorProcess) -> Option<(u16, String)> {
    operator.get("/readyz").await
}

/// How long the body says the token has been refused past the grace, e.g. `for 5s,` or
/// `for 1m02s,` (`None` before the grace ends).
fn refused_for_secs(body: &str) -> Option<u64> {
    let rest = body.split_once(&format!("{REFUSED} for "))?.1;
    let span = rest.split_once(',')?.0;
    let (minutes, seconds) = span.split_once('m').unwrap_or(("0", span));
    let seconds = seconds.trim_end_matches('s');
    let seconds = if seconds.is_empty() { "0" } else { seconds };
    Some(minutes.parse::<u64>().ok()? * 60 + seconds.parse::<u64>().ok()?)
}

/// The log lines at `level` whose message names the default token.
fn token_log_lines(operator: &OperatorProcess, level: &str) -> Vec<String> {
    operator
        .log()
        .lines()
        .filter(|line| line.contains(&format!(r#""level":"{level}""#)) && line.contains("default API token"))
        .map(str::to_owned)
        .collect()
}

/// Runs `vpn-operator probe ENDPOINT` as the kubelet runs the chart's exec probe: whether it
/// passed, and what it printed.
fn probe(operator: &OperatorProcess, endpoint: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpn-operator"))
        .args(["probe", endpoint])
        .env("METRICS_ADDR", format!("127.0.0.1:{}", operator.metrics_port))
        .output()
        .expect("run vpn-operator probe");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn metric(operator: &OperatorProcess) -> Option<String> {
    let (_, text) = operator.get("/metrics").await?;
    text.lines()
        .find(|l| l.starts_with("vpn_operator_default_token_rejected "))
        .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
}

/// Waits until `/readyz` says the token has been refused past the grace for at least
/// `at_least` seconds; returns the body.
async fn wait_rejected_for(operator: &OperatorProcess, at_least: u64) -> String {
    eventually("/readyz 503: token refused past the grace", TIMEOUT, || async {
        readyz(operator)
            .await
            .filter(|(code, body)| *code == 503 && refused_for_secs(body).is_some_and(|s| s >= at_least))
            .map(|(_, body)| body)
    })
    .await
}

/// `/readyz` answers 200 on every request for `span` (the grace and more).
async fn stays_ready(operator: &OperatorProcess, span: Duration) {
    let until = tokio::time::Instant::now() + span;
    while tokio::time::Instant::now() < until {
        let answer = readyz(operator).await;
        assert_eq!(answer.as_ref().map(|(code, _)| *code), Some(200), "{answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the simulator has answered a check call with `status`.
async fn wait_check_answered(simc: &SimClient, status: u16) {
    let key = format!("{REGIONS} {status}");
    eventually(&key, TIMEOUT, || async {
        (simc.calls_by_status().await.get(&key).copied().unwrap_or(0) > 0).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_refused_default_token_fails_readiness_after_the_grace_with_one_error_and_never_liveness() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-token").await;
    let sim = simulator(Duration::ZERO).await;
    let simc = SimClient::new(&sim);
    let logs = tempfile::tempdir().unwrap();
    let env = [("ALTOSTRAT_API_TOKEN", WRONG), GRACE];
    let operator = OperatorProcess::start(&simc.base_url, &ns, &env, logs.path(), "refused");

    let body = wait_rejected_for(&operator, 0).await;
    assert!(
        body.starts_with("not ready: the Altostrat API has")
            && body.contains("longer than the 2s grace")
            && body.contains("ALTOSTRAT_API_TOKEN"),
        "{body}"
    );
    assert!(!body.contains(WRONG), "the token itself is never shown: {body}");
    // Several judgements later, still one ERROR line: on the transition, not per look or call.
    wait_rejected_for(&operator, 5).await;
    let errors = token_log_lines(&operator, "ERROR");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains(REFUSED) && !errors[0].contains(WRONG),
        "{}",
        errors[0]
    );
    assert_eq!(metric(&operator).await.as_deref(), Some("1"));
    assert_eq!(operator.get("/healthz").await.map(|(code, _)| code), Some(200));
    // The chart's exec readiness probe: what it prints is what the pod's events show.
    let (ok, printed) = probe(&operator, "readyz");
    assert!(
        !ok && printed.contains(REFUSED) && !printed.contains(WRONG),
        "{printed}"
    );
    assert!(probe(&operator, "healthz").0, "liveness holds");
    assert_eq!(
        simc.calls_by_status().await.get(&format!("{REGIONS} 401")),
        Some(&1),
        "one check call: nothing else was made with the token"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn an_accepted_default_token_keeps_readiness() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-token").await;
    let sim = simulator(Duration::ZERO).await;
    let simc = SimClient::new(&sim);
    let logs = tempfile::tempdir().unwrap();
    let operator = OperatorProcess::start(&simc.base_url, &ns, &[GRACE], logs.path(), "accepted");

    operator.wait_ready("ready").await;
    assert_eq!(probe(&operator, "readyz"), (true, "ready\n".to_owned()));
    wait_check_answered(&simc, 200).await;
    stays_ready(&operator, Duration::from_secs(4)).await;
    assert_eq!(metric(&operator).await.as_deref(), Some("0"));
    assert_eq!(token_log_lines(&operator, "ERROR"), Vec::<String>::new());
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn an_altostrat_outage_never_fails_readiness_even_with_a_wrong_token() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-token").await;
    let sim = simulator(Duration::ZERO).await;
    let simc = SimClient::new(&sim);
    // Every call answered 500 before the token is even looked at.
    simc.set_faults(json!({"error_rate": 1.0})).await;
    let logs = tempfile::tempdir().unwrap();
    let env = [("ALTOSTRAT_API_TOKEN", WRONG), GRACE];
    let operator = OperatorProcess::start(&simc.base_url, &ns, &env, logs.path(), "outage");

    operator.wait_ready("ready").await;
    wait_check_answered(&simc, 500).await;
    stays_ready(&operator, Duration::from_secs(4)).await;
    assert_eq!(metric(&operator).await.as_deref(), Some("0"));
    assert_eq!(token_log_lines(&operator, "ERROR"), Vec::<String>::new());
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_rotated_token_file_turns_readiness_back_without_a_restart() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-token").await;
    let sim = simulator(Duration::ZERO).await;
    let simc = SimClient::new(&sim);
    let logs = tempfile::tempdir().unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    let token_file = secret_dir.path().join("token");
    std::fs::write(&token_file, WRONG).unwrap();
    let file = token_file.to_str().unwrap();
    let env = [("ALTOSTRAT_API_TOKEN_FILE", file), GRACE];
    let operator = OperatorProcess::start(&simc.base_url, &ns, &env, logs.path(), "rotated");

    let body = wait_rejected_for(&operator, 0).await;
    assert!(body.contains(file) && body.contains("no restart"), "{body}");
    eventually("the ERROR line", TIMEOUT, || async {
        (token_log_lines(&operator, "ERROR").len() == 1).then_some(())
    })
    .await;

    // As the kubelet updates a mounted Secret: a new file swapped in.
    let next = secret_dir.path().join("token.next");
    std::fs::write(&next, TOKEN).unwrap();
    std::fs::rename(&next, &token_file).unwrap();
    operator.wait_ready("ready").await;
    eventually("one INFO line: accepted again", TIMEOUT, || async {
        (token_log_lines(&operator, "INFO").len() == 1).then_some(())
    })
    .await;
    eventually("the metric back to 0", TIMEOUT, || async {
        (metric(&operator).await.as_deref() == Some("0")).then_some(())
    })
    .await;
    assert_eq!(token_log_lines(&operator, "ERROR").len(), 1);
}
