//! End to end: leader election that cannot split-brain, with the real operator binary.
//!
//! Each operator process sends its own Altostrat token through a recording front of the
//! simulator ([`support::tap`]), so every Altostrat call is attributed to the process that sent
//! it, with its arrival time on the wall clock the Lease's `renewTime` is written with. A leader
//! is cut off from kube-apiserver by a TCP proxy of the test's own ([`support::proxy`]).
//! Run through `scripts/test.sh` (it starts the control plane and sets KUBECONFIG).
#![cfg(feature = "simulator")]

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use altostrat_vpn_operator::crd::VpnInstance;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;
use support::process::*;
use support::proxy::{TcpProxy, apiserver_addr};
use support::tap::{AltostratTap, Call};
use support::*;

const ALPHA: &str = "alpha-token";
const BETA: &str = "beta-token";

/// Election timings of the cut-off, clock-skew and frozen-leader tests.
const LEASE: Duration = Duration::from_secs(4);
const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);

/// Between the gate check and the request's arrival at the tap: scheduling on a loaded host.
const SEND_SLACK: Duration = Duration::from_millis(250);

/// The environment of an operator process: leader election with the given timings, its own
/// Altostrat token, a kubeconfig (the proxy's) if given, and `extra` settings.
fn operator_env(
    ns: &str,
    timings: (&str, &str, &str),
    token: &str,
    kubeconfig: Option<&Path>,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = election_env(ns, timings.0, timings.1, timings.2);
    env.push(("ALTOSTRAT_API_TOKEN".into(), token.into()));
    if let Some(path) = kubeconfig {
        env.push(("KUBECONFIG".into(), path.display().to_string()));
    }
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

const TIMINGS: (&str, &str, &str) = ("4s", "2s", "500ms");

/// A tight request budget and a 1 s resync over several hubs keep reconciles queued in the
/// process's rate limiter at all times: without the fence they would be sent after the lease
/// was lost.
const BUSY: [(&str, &str); 3] = [
    ("RESYNC_INTERVAL", "1s"),
    ("ALTOSTRAT_API_RATE_LIMIT", "120"),
    ("ALTOSTRAT_API_BURST", "1"),
];

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// `a - b` in seconds, negative when `a` is earlier.
fn diff(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Watches the Lease until `to` holds it. Returns the last `renewTime` written while `from` held
/// it, and `to`'s `acquireTime`.
async fn watch_takeover(
    leases: &Api<Lease>,
    from: &str,
    to: &str,
    timeout: Duration,
) -> (SystemTime, SystemTime) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_renewal = None;
    loop {
        if let Some(view) = lease(leases).await {
            match view.holder.as_deref() {
                Some(h) if h == from => last_renewal = view.renewed,
                Some(h) if h == to => {
                    let last = last_renewal.expect("the lease was seen held by the old leader");
                    return (last, view.acquired.expect("acquireTime"));
                }
                _ => {}
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{to} did not take the lease over from {from} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn last_call(calls: &[Call]) -> SystemTime {
    calls.iter().map(|c| c.at).max().expect("at least one call")
}

async fn create_hubs(api: &Api<VpnInstance>, prefix: &str, n: usize) {
    for i in 0..n {
        let manifest = instance_manifest(&format!("hub-{i}"), &format!("{prefix}-{i}"), json!({}));
        apply(api, &manifest).await;
    }
    for i in 0..n {
        wait_instance(api, &format!("hub-{i}"), "Ready", instance_ready).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_leader_cut_off_from_the_api_server_stops_calling_altostrat_before_a_takeover() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-cutoff").await;
    let sim = simulator_with_tokens(Duration::from_millis(300), &[ALPHA, BETA]).await;
    let tap = AltostratTap::start(&sim.base_url()).await;
    let simc = SimClient::new(&sim);
    let logs = tempfile::tempdir().unwrap();
    let proxy = TcpProxy::start(apiserver_addr()).await;
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);

    let kubeconfig = proxy.kubeconfig(logs.path(), "alpha");
    let env = operator_env(&ns, TIMINGS, ALPHA, Some(&kubeconfig), &BUSY);
    let mut alpha = OperatorProcess::start(tap.base_url(), &ns, &env_refs(&env), logs.path(), "alpha");
    alpha.wait_ready("ready: leader").await;
    let env = operator_env(&ns, TIMINGS, BETA, None, &BUSY);
    let beta = OperatorProcess::start(tap.base_url(), &ns, &env_refs(&env), logs.path(), "beta");
    beta.wait_ready("ready: standby").await;
    create_hubs(&instances, "cutoff", 3).await;
    let since = SystemTime::now();
    eventually("alpha keeps calling Altostrat", TIMEOUT, || async {
        (tap.calls_of_since(ALPHA, since).len() >= 3).then_some(())
    })
    .await;
    assert!(tap.calls_of(BETA).is_empty(), "the standby called Altostrat");

    let cut_at = SystemTime::now();
    proxy.cut();
    let (renewed, takeover) = watch_takeover(&leases, "alpha", "beta", TIMEOUT).await;
    let exit = alpha.wait_exit(RENEW + Duration::from_secs(15)).await;
    let log = alpha.log();
    let exited_after = diff(SystemTime::now(), cut_at);
    let exit = exit.unwrap_or_else(|| panic!("the cut-off leader did not exit; log:\n{log}"));
    assert!(!exit.success(), "lost leadership is an error exit: {exit:?}");

    // The fence: nothing after the last successful renewal + the renew deadline (the gate
    // is opened from the renewal's start, which precedes the renewTime it writes).
    let calls = tap.calls_of(ALPHA);
    let last = last_call(&calls);
    let after_cut = calls.iter().filter(|c| c.at >= cut_at).count();
    let fence = renewed + RENEW;
    assert!(
        last <= fence + SEND_SLACK,
        "alpha called Altostrat {:.3}s after its renew deadline; log:\n{log}",
        diff(last, fence)
    );
    assert!(last < takeover, "alpha called Altostrat after beta took over");
    assert!(
        log.contains("fenced"),
        "no request of alpha's was refused by the fence, so the test proved nothing; log:\n{log}"
    );
    // The takeover: after a whole lease duration without change, within one more retry
    // period for beta to see the last renewal and one for its next attempt.
    let takeover_after = diff(takeover, renewed);
    assert!(
        takeover_after >= secs(LEASE),
        "beta took over a live lease: {takeover_after:.3}s"
    );
    assert!(
        takeover_after <= secs(LEASE + RETRY * 2) + 0.5,
        "beta took over {takeover_after:.3}s after alpha's last renewal"
    );
    eprintln!(
        "cut-off leader: {after_cut} calls after the cut; last call {:.3}s before the fence, {:.3}s before beta's takeover; takeover {takeover_after:.3}s after the last renewal ({:.3}s after the cut); alpha exited {exited_after:.1}s after the cut",
        diff(fence, last),
        diff(takeover, last),
        diff(takeover, cut_at),
    );

    // beta carries on without duplicating anything.
    merge_patch(&instances, "hub-0", json!({"spec": {"name": "renamed hub"}})).await;
    let hub = wait_instance(&instances, "hub-0", "Ready under beta", instance_ready).await;
    let id = hub.status.unwrap().instance_id.unwrap();
    assert_eq!(simc.instance(&id).await.unwrap().name, "renamed hub");
    assert_eq!(simc.instances().await.len(), 3, "no duplicate hub");
}

/// Writes the Lease as a fake holder `ghost` whose clock is `skew` off (creating it if
/// needed), then renews it `renewals` times, once a second; returns the Lease as last written.
async fn ghost_renews(leases: Api<Lease>, skew: SignedDuration, renewals: u32) -> Lease {
    let now = || MicroTime(Timestamp::now() + skew);
    let mut lease = match leases.get_opt(LEASE_NAME).await.unwrap() {
        Some(lease) => lease,
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some("ghost".into()),
                    lease_duration_seconds: Some(4),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            leases.create(&PostParams::default(), &lease).await.unwrap()
        }
    };
    for _ in 0..renewals {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let spec = lease.spec.as_mut().unwrap();
        assert_eq!(
            spec.holder_identity.as_deref(),
            Some("ghost"),
            "the standby took a live lease"
        );
        spec.renew_time = Some(now());
        // Carries the resourceVersion last read: a write by the standby in between is a 409.
        lease = leases
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
            .unwrap_or_else(|e| panic!("the ghost's renewal failed (the lease was taken?): {e}"));
    }
    lease
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_holder_clock_minutes_off_neither_keeps_a_dead_lease_nor_loses_a_live_one() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-skew").await;
    let sim = simulator_with_tokens(Duration::from_millis(300), &[BETA]).await;
    let tap = AltostratTap::start(&sim.base_url()).await;
    let logs = tempfile::tempdir().unwrap();
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let minutes = SignedDuration::from_mins(10);

    // A live holder whose clock is 10 minutes behind: every renewTime it writes is long past
    // by the standby's clock, yet it renews every second, for over three lease durations.
    ghost_renews(leases.clone(), -minutes, 0).await;
    let live = tokio::spawn(ghost_renews(leases.clone(), -minutes, 14));
    let env = operator_env(&ns, TIMINGS, BETA, None, &[]);
    let standby = OperatorProcess::start(tap.base_url(), &ns, &env_refs(&env), logs.path(), "beta");
    standby.wait_ready("ready: standby").await;
    apply(&instances, &instance_manifest("hub", "skew-hub", json!({}))).await;
    live.await.expect("the live lease was never taken");
    assert_eq!(lease_holder(&leases).await.as_deref(), Some("ghost"));
    standby.wait_ready("ready: standby").await;
    assert!(tap.calls().is_empty(), "a standby called Altostrat");

    // The holder dies after a last renewal whose renewTime is 10 minutes ahead.
    ghost_renews(leases.clone(), minutes, 1).await;
    let died = SystemTime::now();
    let view = wait_holder(&leases, "beta", LEASE + RETRY * 2 + Duration::from_secs(5)).await;
    let after = diff(view.acquired.unwrap(), died);
    assert!(
        after >= secs(LEASE) - 0.2,
        "taken over {after:.3}s after the last renewal"
    );
    assert!(
        after <= secs(LEASE + RETRY * 2) + 0.5,
        "taken over {after:.3}s after the last renewal"
    );
    wait_instance(&instances, "hub", "Ready once beta leads", instance_ready).await;
    eprintln!("dead lease with a renewTime 10 min ahead taken over {after:.3}s after its last change");
}
