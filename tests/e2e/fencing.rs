//! End to end: leader election that cannot split-brain, with the real operator binary.
//!
//! Each operator process sends its own Altostrat token through a recording front of the
//! simulator ([`crate::support::tap`]), so every Altostrat call is attributed to the process that sent
//! it, with its arrival time on the wall clock the Lease's `renewTime` is written with. A leader
//! is cut off from kube-apiserver by a TCP proxy of the test's own ([`crate::support::proxy`]).

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::support::process::*;
use crate::support::proxy::{TcpProxy, apiserver_addr};
use crate::support::tap::{AltostratTap, Call};
use crate::support::*;
use altostrat_vpn_operator::crd::{VpnInstance, VpnPeer};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;

const ALPHA: &str = "alpha-token";
const BETA: &str = "beta-token";

/// Election timings of the cut-off, clock-skew and frozen-leader tests.
const LEASE: Duration = Duration::from_secs(4);
const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);

/// The tail of the error of a request refused by the fence (logged as a failed reconcile).
const REFUSED: &str = "request not sent";

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

/// A tight request budget that observation may use whole, and a 1 s resync over several hubs,
/// keep a list request waiting in the process's budget lane at all times (30/min is one
/// request per ~2 s, within the 5 s a request may wait before it is requeued instead): without
/// the fence it would be sent after the lease was lost.
const BUSY: [(&str, &str); 4] = [
    ("RESYNC_INTERVAL", "1s"),
    ("ALTOSTRAT_API_RATE_LIMIT", "30"),
    ("ALTOSTRAT_API_BURST", "1"),
    ("ALTOSTRAT_API_OBSERVE_SHARE", "1"),
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

/// Applies two more hubs and waits until alpha has claimed both: their POSTs are then waiting
/// in alpha's budget lane (one request per ~2 s), where the fence finds them after the cut.
async fn queue_two_creates(api: &Api<VpnInstance>, prefix: &str) {
    for i in 4..6 {
        let manifest = instance_manifest(&format!("hub-{i}"), &format!("{prefix}-{i}"), json!({}));
        apply(api, &manifest).await;
    }
    let client = api.clone().into_client();
    eventually("alpha claims both new hubs", TIMEOUT, || async {
        for i in 4..6 {
            create_claimed(&client, &format!("{prefix}-{i}"))
                .await
                .then_some(())?;
        }
        Some(())
    })
    .await;
}

/// Waits until a former leader exits, as it must once it has lost its lease, with an error
/// status; returns its log.
async fn exits_with_an_error(process: &mut OperatorProcess, timeout: Duration) -> String {
    let exit = process.wait_exit(timeout).await;
    let log = process.log();
    let exit = exit.unwrap_or_else(|| panic!("the former leader did not exit; log:\n{log}"));
    assert!(!exit.success(), "lost leadership is an error exit: {exit:?}");
    log
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
    create_hubs(&instances, "cutoff", 4).await;
    let since = SystemTime::now();
    eventually("alpha keeps calling Altostrat", TIMEOUT, || async {
        (tap.calls_of_since(ALPHA, since).len() >= 3).then_some(())
    })
    .await;
    assert!(tap.calls_of(BETA).is_empty(), "the standby called Altostrat");

    assert!(
        proxy.forwarded_bytes() > 0,
        "alpha reaches kube-apiserver through the proxy"
    );
    queue_two_creates(&instances, "cutoff").await;
    let cut_at = SystemTime::now();
    proxy.cut();
    let (renewed, takeover) = watch_takeover(&leases, "alpha", "beta", TIMEOUT).await;
    let log = exits_with_an_error(&mut alpha, RENEW + Duration::from_secs(15)).await;
    let refused_after_loss = log.matches(REFUSED).count();
    let exited_after = diff(SystemTime::now(), cut_at);

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
    // Requests were still waiting in alpha's budget lane when it stopped leading, yet none
    // arrived: the fence refused them (without it they would have been sent).
    assert!(
        refused_after_loss > 0,
        "nothing was left for the fence to refuse; log:\n{log}"
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
        "cut-off leader: {after_cut} calls after the cut, {refused_after_loss} refused by the fence after the loss; last call {:.3}s before the fence, {:.3}s before beta's takeover; takeover {takeover_after:.3}s after the last renewal ({:.3}s after the cut); alpha exited {exited_after:.1}s after the cut",
        diff(fence, last),
        diff(takeover, last),
        diff(takeover, cut_at),
    );

    new_leader_carries_on(&instances, &simc, 6).await;
}

/// The new leader applies an edit of `hub-0` and brings every hub (`hub-0` … `hub-{hubs-1}`)
/// to Ready; then Altostrat holds exactly `hubs` hubs, no duplicate.
async fn new_leader_carries_on(instances: &Api<VpnInstance>, simc: &SimClient, hubs: usize) {
    merge_patch(instances, "hub-0", json!({"spec": {"name": "renamed hub"}})).await;
    let hub = wait_instance(instances, "hub-0", "Ready under the new leader", instance_ready).await;
    let id = hub.status.unwrap().instance_id.unwrap();
    assert_eq!(simc.instance(&id).await.unwrap().name, "renamed hub");
    for i in 1..hubs {
        let name = format!("hub-{i}");
        wait_instance(instances, &name, "Ready under the new leader", instance_ready).await;
    }
    assert_eq!(simc.instances().await.len(), hubs, "no duplicate hub");
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
    let (_, role) = eventually("beta up", TIMEOUT, || async {
        standby
            .get("/readyz")
            .await
            .filter(|(_, body)| body.starts_with("ready: "))
    })
    .await;
    assert_eq!(role, "ready: standby", "beta took the live lease at start");
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

/// Failover timings: a short lease, so that ten failovers take about a minute.
const FAILOVER_TIMINGS: (&str, &str, &str) = ("3s", "2s", "500ms");
const FAILOVER_RENEW: Duration = Duration::from_secs(2);

/// One replica slot: its own token and its own proxy to kube-apiserver, and the operator
/// process currently running in it (a new identity at each restart).
struct Lane {
    name: &'static str,
    token: &'static str,
    proxy: TcpProxy,
    kubeconfig: std::path::PathBuf,
    process: Option<OperatorProcess>,
    incarnation: u32,
}

impl Lane {
    async fn new(name: &'static str, token: &'static str, logs: &Path) -> Self {
        let proxy = TcpProxy::start(apiserver_addr()).await;
        let kubeconfig = proxy.kubeconfig(logs, name);
        Self {
            name,
            token,
            proxy,
            kubeconfig,
            process: None,
            incarnation: 0,
        }
    }

    fn identity(&self) -> String {
        format!("{}-{}", self.name, self.incarnation)
    }

    fn start(&mut self, altostrat: &str, ns: &str, logs: &Path) {
        self.incarnation += 1;
        let extra = [("RESYNC_INTERVAL", "2s")];
        let env = operator_env(ns, FAILOVER_TIMINGS, self.token, Some(&self.kubeconfig), &extra);
        let identity = self.identity();
        self.process = Some(OperatorProcess::start(
            altostrat,
            ns,
            &env_refs(&env),
            logs,
            &identity,
        ));
    }

    fn process(&self) -> &OperatorProcess {
        self.process.as_ref().expect("a running process")
    }
}

/// What [`workload`] did.
#[derive(Debug, Default)]
struct Work {
    hubs: u32,
    users: u32,
    edits: u32,
}

/// A user at work until `stop`, one change every 250 ms: a new hub every 6 s (up to six), a
/// new client peer every 3 s (up to twelve), and in between edits of the hubs (name, routes)
/// and of the peers (routeAll).
async fn workload(client: kube::Client, ns: String, stop: tokio::sync::watch::Receiver<bool>) -> Work {
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client, &ns);
    let mut work = Work::default();
    for step in 0_u32.. {
        if *stop.borrow() {
            break;
        }
        let (hub, user) = (step / 2 % work.hubs.max(1), step / 2 % work.users.max(1));
        if step % 24 == 0 && work.hubs < 6 {
            let name = format!("hub-{}", work.hubs);
            let hostname = format!("failover-{}", work.hubs);
            apply(&instances, &instance_manifest(&name, &hostname, json!({}))).await;
            work.hubs += 1;
        } else if step % 12 == 6 && work.users < 12 {
            let user_id = format!("a1b2c3d4-e5f6-7890-1234-{:012x}", work.users);
            let on = format!("hub-{}", work.users % work.hubs);
            let peer = client_peer_manifest(&format!("user-{}", work.users), &on, &user_id);
            apply(&peers, &peer).await;
            work.users += 1;
        } else if step % 2 == 0 {
            let spec = json!({"name": format!("h{hub} v{step}"), "pushedRoutes": [format!("10.{}.0.0/16", step % 250)]});
            merge_patch(&instances, &format!("hub-{hub}"), json!({"spec": spec})).await;
            work.edits += 1;
        } else if work.users > 0 {
            let spec = json!({"routeAll": step % 4 == 1});
            merge_patch(&peers, &format!("user-{user}"), json!({"spec": spec})).await;
            work.edits += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    work
}

/// The resources not (yet) Ready for their current generation, with their Ready condition.
async fn not_converged(client: &kube::Client, ns: &str, work: &Work) -> Vec<String> {
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), ns);
    let (Ok(hubs), Ok(users)) = (
        instances.list(&Default::default()).await,
        peers.list(&Default::default()).await,
    ) else {
        return vec!["listing failed".into()];
    };
    let mut pending = Vec::new();
    if (hubs.items.len(), users.items.len()) != (work.hubs as usize, work.users as usize) {
        pending.push(format!(
            "{} hubs and {} peers listed",
            hubs.items.len(),
            users.items.len()
        ));
    }
    let ready = |c: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| condition(c, "Ready");
    for h in hubs.items.iter().filter(|h| !instance_ready(h)) {
        let status = h
            .status
            .as_ref()
            .map(|s| (s.observed_generation, ready(&s.conditions)));
        pending.push(format!(
            "{:?} gen {:?}: {status:?}",
            h.metadata.name, h.metadata.generation
        ));
    }
    for p in users.items.iter().filter(|p| !peer_ready(p)) {
        let status = p
            .status
            .as_ref()
            .map(|s| (s.observed_generation, ready(&s.conditions)));
        pending.push(format!(
            "{:?} gen {:?}: {status:?}",
            p.metadata.name, p.metadata.generation
        ));
    }
    pending
}

/// Copies the operator logs into `$E2E_FAILURE_LOGS`, if set, before a failure removes them.
fn keep_logs(logs: &Path) {
    let Ok(dir) = std::env::var("E2E_FAILURE_LOGS") else {
        return;
    };
    for entry in std::fs::read_dir(logs).unwrap().flatten() {
        let _ = std::fs::copy(entry.path(), Path::new(&dir).join(entry.file_name()));
    }
}

/// Waits until every resource the workload made is Ready for its last edit.
async fn wait_converged(client: &kube::Client, ns: &str, work: &Work, logs: &Path) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let pending = not_converged(client, ns, work).await;
        if pending.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            keep_logs(logs);
            panic!("not converged within {TIMEOUT:?}: {pending:#?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Altostrat holds exactly one object per resource, carrying its last spec.
async fn assert_altostrat_matches(client: &kube::Client, ns: &str, simc: &SimClient) {
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), ns);
    let hubs = instances.list(&Default::default()).await.unwrap().items;
    let users = peers.list(&Default::default()).await.unwrap().items;
    let remote = simc.instances().await;
    let hub_ids: std::collections::BTreeSet<String> = hubs
        .iter()
        .map(|h| h.status.as_ref().unwrap().instance_id.clone().unwrap())
        .collect();
    let remote_ids: std::collections::BTreeSet<String> = remote.iter().map(|i| i.id.clone()).collect();
    assert_eq!(hub_ids.len(), hubs.len(), "two VpnInstances share a hub");
    assert_eq!(
        remote_ids, hub_ids,
        "Altostrat holds exactly the VpnInstances' hubs: {remote:#?}"
    );
    for hub in &hubs {
        let id = hub.status.as_ref().unwrap().instance_id.as_deref().unwrap();
        let r = remote.iter().find(|r| r.id == id).unwrap();
        assert_eq!(
            (&r.name, &r.pushed_routes),
            (&hub.spec.name, &hub.spec.pushed_routes),
            "lost edit of {id}"
        );
    }
    let mut remote_peers = Vec::new();
    for hub in &remote {
        remote_peers.extend(simc.peers(&hub.id).await);
    }
    let peer_ids: std::collections::BTreeSet<String> = users
        .iter()
        .map(|p| p.status.as_ref().unwrap().peer_id.clone().unwrap())
        .collect();
    let remote_peer_ids: std::collections::BTreeSet<String> =
        remote_peers.iter().map(|p| p.id.clone()).collect();
    assert_eq!(peer_ids.len(), users.len(), "two VpnPeers share a peer");
    assert_eq!(
        remote_peer_ids, peer_ids,
        "Altostrat holds exactly the VpnPeers' peers: {remote_peers:#?}"
    );
    for user in &users {
        let id = user.status.as_ref().unwrap().peer_id.as_deref().unwrap();
        let r = remote_peers.iter().find(|r| r.id == id).unwrap();
        assert_eq!(
            r.route_all,
            user.spec.route_all.unwrap_or(false),
            "lost routeAll edit of {id}"
        );
    }
}

/// How a leader is made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// Black-holed by its proxy to kube-apiserver: it still reaches Altostrat.
    CutOff,
    /// SIGKILL, as after a node or container crash.
    Killed,
    /// SIGSTOP until the standby has taken over, then SIGCONT: it resumes with its work
    /// half done and both APIs reachable.
    Frozen,
}

impl Failure {
    fn of_round(round: u32) -> Self {
        [Self::CutOff, Self::Frozen, Self::Killed][round as usize % 3]
    }
}

/// One forced failover: the leader fails, the standby takes over, and the old leader sends
/// nothing to Altostrat from then on (a frozen one is resumed and given time to try). It is
/// then killed and restarted as the new standby. Returns (failure to takeover, the old
/// leader's last call to takeover).
async fn fail_over(
    lanes: &mut [Lane; 2],
    leader: usize,
    failure: Failure,
    (leases, tap, ns, logs): (&Api<Lease>, &AltostratTap, &str, &Path),
) -> (Duration, f64) {
    let (old, new) = (lanes[leader].identity(), lanes[1 - leader].identity());
    let started = std::time::Instant::now();
    let mut process = lanes[leader].process.take().unwrap();
    match failure {
        Failure::CutOff => lanes[leader].proxy.cut(),
        Failure::Killed => process.kill(),
        Failure::Frozen => process.signal("STOP"),
    }
    let (renewed, acquired) = watch_takeover(leases, &old, &new, TIMEOUT).await;
    let took = started.elapsed();
    if failure == Failure::Frozen {
        process.signal("CONT");
        // It sees its lease lost and exits; until then it may try whatever it had queued.
        process.wait_exit(Duration::from_secs(15)).await;
    }
    process.kill();
    let token = lanes[leader].token;
    let late = tap.calls_of_since(token, acquired);
    let log = process.log();
    assert!(
        late.is_empty(),
        "{failure:?} {old} called Altostrat after {new} took over: {late:?}\n{log}"
    );
    let last = last_call(&tap.calls_of(token));
    if failure != Failure::Killed {
        let fence = renewed + FAILOVER_RENEW;
        assert!(
            last <= fence + SEND_SLACK,
            "{failure:?} {old} called Altostrat {:.3}s after its renew deadline",
            diff(last, fence)
        );
    }
    lanes[leader].proxy.heal();
    lanes[leader].start(tap.base_url(), ns, logs);
    lanes[leader].process().wait_ready("ready: standby").await;
    (took, diff(acquired, last))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn ten_forced_failovers_while_resources_change_leave_no_duplicate_and_no_lost_edit() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-failover").await;
    let sim = simulator_with_tokens(Duration::from_millis(300), &[ALPHA, BETA]).await;
    let tap = AltostratTap::start(&sim.base_url()).await;
    let simc = SimClient::new(&sim);
    let logs = tempfile::tempdir().unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let mut lanes = [
        Lane::new("a", ALPHA, logs.path()).await,
        Lane::new("b", BETA, logs.path()).await,
    ];
    lanes[0].start(tap.base_url(), &ns, logs.path());
    lanes[0].process().wait_ready("ready: leader").await;
    lanes[1].start(tap.base_url(), &ns, logs.path());
    lanes[1].process().wait_ready("ready: standby").await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let user = tokio::spawn(workload(client.clone(), ns.clone(), stopped));
    let started = std::time::Instant::now();
    let (mut takeovers, mut margins) = (Vec::new(), Vec::new());
    let mut leader = 0;
    for round in 1..=10 {
        // Every leader works before it is cut off: at least one Altostrat call of its own.
        let since = SystemTime::now();
        let token = lanes[leader].token;
        eventually("the leader calls Altostrat", TIMEOUT, || async {
            (!tap.calls_of_since(token, since).is_empty()).then_some(())
        })
        .await;
        let (took, margin) = fail_over(
            &mut lanes,
            leader,
            Failure::of_round(round),
            (&leases, &tap, &ns, logs.path()),
        )
        .await;
        takeovers.push(took.as_secs_f64());
        margins.push(margin);
        leader = 1 - leader;
    }
    let chaos = started.elapsed();
    stop.send_replace(true);
    let work = user.await.unwrap();

    wait_converged(&client, &ns, &work, logs.path()).await;
    assert_altostrat_matches(&client, &ns, &simc).await;
    let max = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    eprintln!(
        "10 failovers in {:.1}s while {} hubs and {} peers were created and {} edits made: takeover {:.2}..{:.2}s after the failure; the old leader's last call {:.2}..{:.2}s before the takeover",
        chaos.as_secs_f64(),
        work.hubs,
        work.users,
        work.edits,
        min(&takeovers),
        max(&takeovers),
        min(&margins),
        max(&margins),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_frozen_leader_sends_nothing_to_altostrat_after_it_resumes() {
    // alpha leads with a budget of one request per ~4.3 s and is given two hubs at once; it is
    // frozen with SIGSTOP once it has claimed both (after its region lookup), between
    // requests, with at least one POST waiting in its rate limiter. beta takes over and creates both hubs. On SIGCONT the
    // queued request finds alpha's renew deadline long passed: the fence refuses it, nothing
    // reaches Altostrat, and alpha exits.
    let client = kube().await;
    let ns = namespace(&client, "e2e-frozen").await;
    let sim = simulator_with_tokens(Duration::from_millis(300), &[ALPHA, BETA]).await;
    let tap = AltostratTap::start(&sim.base_url()).await;
    let simc = SimClient::new(&sim);
    let logs = tempfile::tempdir().unwrap();
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    // One request per ~4.3 s: a POST waits in the lane (a request waits at most 5 s there).
    let slow = [("ALTOSTRAT_API_RATE_LIMIT", "15"), ("ALTOSTRAT_API_BURST", "1")];
    let env = operator_env(&ns, TIMINGS, ALPHA, None, &slow);
    let mut alpha = OperatorProcess::start(tap.base_url(), &ns, &env_refs(&env), logs.path(), "alpha");
    alpha.wait_ready("ready: leader").await;
    let env = operator_env(&ns, TIMINGS, BETA, None, &[("RESYNC_INTERVAL", "1s")]);
    let beta = OperatorProcess::start(tap.base_url(), &ns, &env_refs(&env), logs.path(), "beta");
    beta.wait_ready("ready: standby").await;
    for i in 0..2 {
        let manifest = instance_manifest(&format!("hub-{i}"), &format!("frozen-{i}"), json!({}));
        apply(&instances, &manifest).await;
    }
    // A hub's create claim is written right before its POST goes to the rate limiter.
    eventually("alpha claims both hubs", TIMEOUT, || async {
        for i in 0..2 {
            create_claimed(&client, &format!("frozen-{i}"))
                .await
                .then_some(())?;
        }
        Some(())
    })
    .await;
    alpha.signal("STOP");
    let posts = tap.calls_of(ALPHA).iter().filter(|c| c.is_write()).count();
    assert!(
        posts < 2,
        "both POSTs were sent before the freeze: nothing left queued"
    );
    let frozen_log = alpha.log().len();
    wait_holder(&leases, "beta", TIMEOUT).await;
    for i in 0..2 {
        wait_instance(
            &instances,
            &format!("hub-{i}"),
            "Ready under beta",
            instance_ready,
        )
        .await;
    }

    let resumed = SystemTime::now();
    alpha.signal("CONT");
    let log = exits_with_an_error(&mut alpha, Duration::from_secs(20)).await;
    let late = tap.calls_of_since(ALPHA, resumed);
    assert!(
        late.is_empty(),
        "alpha called Altostrat after it resumed: {late:?}\n{log}"
    );
    assert!(
        log[frozen_log..].contains(REFUSED),
        "no request of alpha's was refused after it resumed, so the test proved nothing; log:\n{log}"
    );
    assert_eq!(lease_holder(&leases).await.as_deref(), Some("beta"));
    new_leader_carries_on(&instances, &simc, 2).await;
    let fenced = log[frozen_log..].matches(REFUSED).count();
    eprintln!("frozen leader: {fenced} log lines of fenced requests after SIGCONT, none sent");
}
