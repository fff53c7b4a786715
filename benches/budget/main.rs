//! API-budget benchmark: the Altostrat simulator enforcing a per-token rate limit (a sliding
//! 60 s window) and a provisioning delay, time-scaled, with the operator binary as a separate
//! process given the same budget. See BENCHMARKS.md, "Budget arm".
//!
//! Run through `scripts/bench.sh --arm budget` (which starts the control plane):
//!   scripts/bench.sh --arm budget [--instances 500] [--peers 2000] [--scale 10]
//!       [--rate 60] [--burst N] [--provisioning 10m] [--resync 5m] [--poll 30s]
//!       [--status-clear 10s] [--operator-concurrency 8] [--limit-factor 3]
//!       [--steady-window 60s] [--drift 10] [--edits 10] [--phase-limit 5m]
//!       [--restart-window 75s]
//!       [--operator-env KEY=VALUE]... [--binary PATH] [--profile-secrets]
//!
//! Durations and rates are given unscaled (production values); the benchmark divides times
//! and multiplies rates by `--scale`. Reports Altostrat calls by endpoint against the
//! minimum, wall time against the floor, 429s, steady-state calls per minute against the
//! budget, the drift cycle, edit latency, the cost of a restart, and the operator's peak RSS
//! and CPU seconds, as a markdown table.

#[path = "../common/mod.rs"]
mod common;
mod fairness;
mod report;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use altostrat_vpn_operator::crd::{VpnInstance, VpnPeer};
use altostrat_vpn_operator::duration::parse_duration;
use altostrat_vpn_operator::simulator::{FaultConfig, RunningSimulator, Simulator, SimulatorConfig};
use common::{
    Operator, client_peer, create_namespace, creation_jobs, hub_instance, install_crds, percentile,
};
use futures::{StreamExt, stream};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use report::{Calls, Report, Row};
use serde_json::json;

struct Args {
    instances: usize,
    peers: usize,
    /// Time runs this many times faster than in production; rates are this many times higher.
    scale: f64,
    /// Requests per minute per token, unscaled (Altostrat documents 60).
    rate: u32,
    /// The operator's burst; default: its production default (10) times the scale.
    burst: Option<u32>,
    provisioning: Duration,
    resync: Duration,
    /// The provisioning poll interval the minimum is computed with, unscaled.
    poll: Duration,
    /// How long a pending change stays in an instance's status, unscaled.
    status_clear: Duration,
    operator_concurrency: u16,
    /// Concurrent creates of the benchmark's own kube client.
    concurrency: usize,
    /// Convergence gives up at this multiple of the ideal floor.
    limit_factor: f64,
    /// Scaled; default: two scaled resync periods, at least 60 s.
    steady_window: Option<Duration>,
    drift: usize,
    edits: usize,
    /// Scaled; how long the drift and edit phases may take each.
    phase_limit: Option<Duration>,
    /// Scaled; how long the calls after a restart are counted.
    restart_window: Option<Duration>,
    operator_env: Vec<(String, String)>,
    binary: String,
    /// Every peer asks for its profile in a Secret (`spec.profileSecret`).
    profile_secrets: bool,
    /// The fairness scenario instead of the fleet (see `fairness.rs`): `instances` hubs and
    /// `peers` peers per burst of namespace A.
    fairness: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        instances: 500,
        peers: 2000,
        scale: 10.0,
        rate: 60,
        burst: None,
        provisioning: Duration::from_secs(600),
        resync: Duration::from_secs(300),
        poll: Duration::from_secs(30),
        status_clear: Duration::from_secs(10),
        operator_concurrency: 8,
        concurrency: 32,
        limit_factor: 3.0,
        steady_window: None,
        drift: 10,
        edits: 10,
        phase_limit: None,
        restart_window: None,
        operator_env: Vec::new(),
        binary: std::env::var("VPN_OPERATOR_BIN").unwrap_or_else(|_| "target/release/vpn-operator".into()),
        profile_secrets: false,
        fairness: false,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        let mut duration = |what: &str| parse_duration(&value()).unwrap_or_else(|e| panic!("{what}: {e}"));
        match flag.as_str() {
            "--instances" => args.instances = value().parse().expect("--instances N"),
            "--peers" => args.peers = value().parse().expect("--peers M"),
            "--scale" => args.scale = value().parse().expect("--scale 10"),
            "--rate" => args.rate = value().parse().expect("--rate 60"),
            "--burst" => args.burst = Some(value().parse().expect("--burst N")),
            "--provisioning" => args.provisioning = duration("--provisioning 10m"),
            "--resync" => args.resync = duration("--resync 5m"),
            "--poll" => args.poll = duration("--poll 30s"),
            "--status-clear" => args.status_clear = duration("--status-clear 10s"),
            "--operator-concurrency" => {
                args.operator_concurrency = value().parse().expect("--operator-concurrency N")
            }
            "--concurrency" => args.concurrency = value().parse().expect("--concurrency N"),
            "--limit-factor" => args.limit_factor = value().parse().expect("--limit-factor 3"),
            "--steady-window" => args.steady_window = Some(duration("--steady-window 60s")),
            "--drift" => args.drift = value().parse().expect("--drift K"),
            "--edits" => args.edits = value().parse().expect("--edits K"),
            "--phase-limit" => args.phase_limit = Some(duration("--phase-limit 5m")),
            "--restart-window" => args.restart_window = Some(duration("--restart-window 75s")),
            "--operator-env" => {
                let pair = value();
                let (k, v) = pair.split_once('=').expect("--operator-env KEY=VALUE");
                args.operator_env.push((k.to_owned(), v.to_owned()));
            }
            "--binary" => args.binary = value(),
            "--profile-secrets" => args.profile_secrets = true,
            "--fairness" => args.fairness = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        args.instances > 0 && args.scale > 0.0,
        "--instances and --scale must be positive"
    );
    args
}

/// The run's settings in scaled (wall-clock) terms.
struct Scaled {
    rate_per_min: u32,
    burst: u32,
    provisioning: Duration,
    resync: Duration,
    poll: Duration,
    status_clear: Duration,
}

impl Scaled {
    fn of(args: &Args) -> Self {
        let time = |d: Duration| d.div_f64(args.scale);
        Self {
            rate_per_min: (f64::from(args.rate) * args.scale).round() as u32,
            burst: args.burst.unwrap_or((10.0 * args.scale).round() as u32),
            provisioning: time(args.provisioning),
            resync: time(args.resync),
            poll: time(args.poll),
            status_clear: time(args.status_clear),
        }
    }

    fn per_second(&self) -> f64 {
        f64::from(self.rate_per_min) / 60.0
    }

    /// Writes that must follow the last instance's provisioning: its PUT, and its peers' POSTs
    /// (the operator creates a peer once its instance is Ready).
    fn writes_after_last(args: &Args) -> f64 {
        let per_peer = if args.profile_secrets { 2.0 } else { 1.0 };
        1.0 + args.peers.div_ceil(args.instances) as f64 * per_peer
    }

    /// The floor if the last instance POST came as early as the full rate allows: the basis of
    /// the convergence time limit.
    fn ideal_floor(&self, args: &Args) -> Duration {
        let last_post = args.instances as f64 / self.per_second();
        self.floor(args, Duration::from_secs_f64(last_post))
    }

    /// The later of all writes at the full rate, and the last instance POST + provisioning +
    /// the writes that must follow it at the full rate.
    fn floor(&self, args: &Args, last_instance_post: Duration) -> Duration {
        let writes = minimum_writes(args) as f64 / self.per_second();
        let after = last_instance_post.as_secs_f64()
            + self.provisioning.as_secs_f64()
            + Self::writes_after_last(args) / self.per_second();
        Duration::from_secs_f64(writes.max(after))
    }

    /// Instance lists needed to see every instance provisioned, polling at `poll`.
    fn minimum_lists(&self) -> u64 {
        (self.provisioning.as_secs_f64() / self.poll.as_secs_f64().max(1e-3)).ceil() as u64
    }
}

/// POST per instance and per peer, and the one PUT per instance that pushedRoutes and
/// publicDns need (a create cannot carry them; Altostrat takes them once provisioned); with
/// --profile-secrets also one profile download per peer.
fn minimum_writes(args: &Args) -> u64 {
    // With --profile-secrets, each peer's profile download is paid at the writes' priority.
    let downloads = if args.profile_secrets { args.peers } else { 0 };
    (2 * args.instances + args.peers + downloads) as u64
}

fn operator_env(args: &Args, scaled: &Scaled) -> Vec<(String, String)> {
    let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
    let mut env: Vec<(String, String)> = [
        ("ALTOSTRAT_API_RATE_LIMIT", scaled.rate_per_min.to_string()),
        ("ALTOSTRAT_API_BURST", scaled.burst.to_string()),
        ("RESYNC_INTERVAL", ms(scaled.resync)),
        ("INSTANCE_CONCURRENCY", args.operator_concurrency.to_string()),
        ("PEER_CONCURRENCY", args.operator_concurrency.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(args.operator_env.iter().cloned());
    env
}

async fn start_simulator(scaled: &Scaled) -> RunningSimulator {
    Simulator::spawn(SimulatorConfig {
        provision_delay: scaled.provisioning,
        status_clear_delay: scaled.status_clear,
        faults: FaultConfig {
            rate_limit_per_minute: Some(scaled.rate_per_min),
            ..FaultConfig::default()
        },
        ..SimulatorConfig::default()
    })
    .await
    .unwrap()
}

/// Polls `done` every 50 ms until it holds or `limit` passes; the time it took, if it held.
async fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The kube side of a run: the namespace's two APIs and the names' unique suffix.
struct Fleet {
    instances: Api<VpnInstance>,
    peers: Api<VpnPeer>,
    suffix: String,
}

impl Fleet {
    fn hostname(&self, i: usize) -> String {
        format!("b{i}-{}", self.suffix)
    }

    /// Creates every instance, then every peer (M/N peers per instance), `concurrency` at once.
    async fn create_all(&self, args: &Args) {
        let per_instance = args.peers.div_ceil(args.instances);
        stream::iter(creation_jobs(args.instances, args.peers))
            .for_each_concurrent(args.concurrency, |(is_instance, i)| async move {
                let pp = PostParams::default();
                if is_instance {
                    let obj = hub_instance(format!("hub-{i}"), i, self.hostname(i));
                    self.instances.create(&pp, &obj).await.unwrap();
                } else {
                    let mut obj = client_peer(format!("peer-{i}"), &format!("hub-{}", i / per_instance), i);
                    if args.profile_secrets {
                        let name = format!("peer-{i}-vpn");
                        obj.spec.profile_secret =
                            Some(altostrat_vpn_operator::crd::ProfileSecretSpec { name });
                    }
                    self.peers.create(&pp, &obj).await.unwrap();
                }
            })
            .await;
    }
}

/// Convergence: what the fleet cost and how long it took, or how far it got.
struct Convergence {
    /// `None`: not all Ready within the limit.
    all_ready: Option<Duration>,
    limit: Duration,
    ready: (usize, usize),
    posted: (usize, usize),
    last_instance_post: Option<Duration>,
    calls: Calls,
    rss_kib: u64,
    cpu: f64,
}

async fn converge(
    args: &Args,
    scaled: &Scaled,
    fleet: &Fleet,
    sim: &Simulator,
    operator: &Operator,
) -> Convergence {
    let total = args.instances + args.peers;
    let (watch, ready_at) = common::start_ready_watch(&fleet.instances, &fleet.peers, total).await;
    let limit = scaled.ideal_floor(args).mul_f64(args.limit_factor);
    let (start, start_unix) = (Instant::now(), unix_ms(SystemTime::now()));
    fleet.create_all(args).await;
    let all_ready = tokio::time::timeout(limit.saturating_sub(start.elapsed()), watch)
        .await
        .is_ok()
        .then(|| start.elapsed());
    let ready = ready_at.lock().await;
    let count = |prefix: &str| ready.keys().filter(|k| k.starts_with(prefix)).count();
    let created = sim.instance_created_ms();
    let (rss_kib, cpu) = operator.usage();
    Convergence {
        all_ready,
        limit,
        ready: (count("i/"), count("p/")),
        posted: (created.len(), sim.peers().len()),
        last_instance_post: created
            .iter()
            .max()
            .map(|ms| Duration::from_millis(ms.saturating_sub(start_unix))),
        calls: Calls::of(&sim.calls()),
        rss_kib,
        cpu,
    }
}

/// Profiles fetched so far (`GET /vpn/client` answered 2xx).
fn client_profiles(sim: &Simulator) -> u64 {
    sim.calls()
        .by_status
        .get("GET /vpn/client 200")
        .copied()
        .unwrap_or(0)
}

/// How long until `count` profiles have been fetched in all (`None`: not within `limit`), and
/// how many were.
async fn profiles_fetched(sim: &Simulator, count: u64, limit: Duration) -> (Option<Duration>, u64) {
    let took = poll_until(limit, || client_profiles(sim) >= count).await;
    (took, client_profiles(sim))
}

fn report_profiles(report: &mut Report, what: &str, expected: usize, (took, total): (Option<Duration>, u64)) {
    let value = match took {
        Some(t) => format!(
            "{} (GET /vpn/client 2xx so far: {total}; {expected} expected in this phase)",
            secs(t)
        ),
        None => format!("not all within the limit (GET /vpn/client 2xx so far: {total})"),
    };
    report.row(Row::new(what, value));
}

/// Altostrat calls per minute over `window` once converged.
async fn steady_state(sim: &Simulator, window: Duration) -> Calls {
    let before = Calls::of(&sim.calls());
    tokio::time::sleep(window).await;
    Calls::of(&sim.calls()).since(&before)
}

/// Out-of-band changes and how the operator answered them.
struct Drift {
    /// Until every drifted object was put back; `None`: not within the limit.
    took: Option<Duration>,
    /// Instances and peers drifted.
    drifted: (usize, usize),
    /// Instances and peers put back (at the end).
    corrected: (usize, usize),
}

/// Drifts `k` instances (pushed routes) and `k` peers (route_all) through the simulator's
/// admin endpoints; the time until the operator has put every one back, and how many it has.
async fn drift_cycle(sim: &RunningSimulator, k: usize, limit: Duration) -> Drift {
    let instances: Vec<String> = sim
        .simulator()
        .instances()
        .iter()
        .take(k)
        .map(|i| i.id.clone())
        .collect();
    let peers: Vec<String> = sim
        .simulator()
        .peers()
        .iter()
        .take(k)
        .map(|p| p.id.clone())
        .collect();
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let changes = instances
        .iter()
        .map(|id| (format!("instances/{id}"), json!({"pushed_routes": ["0.0.0.0/0"]})))
        .chain(
            peers
                .iter()
                .map(|id| (format!("peers/{id}"), json!({"route_all": true}))),
        );
    for (object, change) in changes {
        http.post(format!("{base}/_admin/{object}/drift"))
            .json(&change)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
    let corrected = || {
        let i = sim
            .simulator()
            .instances()
            .iter()
            .filter(|i| instances.contains(&i.id) && i.pushed_routes == ["10.0.0.0/8"])
            .count();
        let p = sim
            .simulator()
            .peers()
            .iter()
            .filter(|p| peers.contains(&p.id) && !p.route_all)
            .count();
        (i, p)
    };
    let drifted = (instances.len(), peers.len());
    let took = poll_until(limit, || corrected() == drifted).await;
    Drift {
        took,
        drifted,
        corrected: corrected(),
    }
}

/// Edits the pushed routes of the last `k` instances at once through kube; each edit's time
/// until the simulator holds it (`None`: not within `limit`).
async fn edit_latency(fleet: &Fleet, sim: &Simulator, args: &Args, limit: Duration) -> Vec<Option<Duration>> {
    let picked: Vec<usize> = (args.instances.saturating_sub(args.edits)..args.instances).collect();
    let route = |i: usize| format!("172.{}.{}.0/24", 16 + i / 256 % 16, i % 256);
    let mut sent = Vec::new();
    for &i in &picked {
        let patch = json!({"spec": {"pushedRoutes": ["10.0.0.0/8", route(i)]}});
        fleet
            .instances
            .patch(
                &format!("hub-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
        sent.push((i, Instant::now()));
    }
    let mut landed: Vec<Option<Duration>> = vec![None; picked.len()];
    poll_until(limit, || {
        let now = sim.instances();
        for (slot, (i, at)) in landed.iter_mut().zip(&sent) {
            let host = format!("{}.vpn.altostr.at", fleet.hostname(*i));
            if slot.is_none()
                && now
                    .iter()
                    .any(|x| x.hostname == host && x.pushed_routes.contains(&route(*i)))
            {
                *slot = Some(at.elapsed());
            }
        }
        landed.iter().all(Option::is_some)
    })
    .await;
    landed
}

/// Stops the operator, starts it again and counts its Altostrat calls over `window` from the
/// new process's start; returns them with the new process.
async fn restart_cost(
    operator: Operator,
    start: impl std::future::Future<Output = Operator>,
    sim: &Simulator,
    window: Duration,
) -> (Calls, Operator) {
    operator.stop();
    let before = Calls::of(&sim.calls());
    let started = Instant::now();
    let operator = start.await;
    tokio::time::sleep(window.saturating_sub(started.elapsed())).await;
    (Calls::of(&sim.calls()).since(&before), operator)
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let scaled = Scaled::of(&args);
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG must point at the local control plane (scripts/bench.sh)");
    install_crds(&client).await;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let ns = format!("budget-{suffix}");
    create_namespace(&client, &ns).await;
    let sim = start_simulator(&scaled).await;
    let run = Run {
        env: operator_env(&args, &scaled),
        log_prefix: std::env::temp_dir().join(format!("bench-budget-operator-{suffix}")),
        fleet: Fleet {
            instances: Api::namespaced(client.clone(), &ns),
            peers: Api::namespaced(client.clone(), &ns),
            suffix,
        },
        ns,
        args,
        scaled,
        sim,
    };
    let run_start = Instant::now();
    if run.args.fairness {
        return fairness_main(run, &client, run_start).await;
    }
    let operator = run.start_operator(1).await;
    let convergence = converge(&run.args, &run.scaled, &run.fleet, run.sim.simulator(), &operator).await;
    let mut report = Report::new(&args_summary(&run.args, &run.scaled));
    report_convergence(&mut report, &run.args, &run.scaled, &convergence);
    if convergence.all_ready.is_some() {
        run.after_convergence(operator, &mut report).await.stop();
    } else {
        operator.stop();
    }
    report.row(Row::new("benchmark run time (wall)", secs(run_start.elapsed())));
    report.print(&convergence.calls, (run.args.instances, run.args.peers));
}

/// The fairness scenario: namespaces A and B on the operator's one token.
async fn fairness_main(mut run: Run, client: &Client, run_start: Instant) {
    let suffix = run.fleet.suffix.clone();
    let a = fairness::Tenant::create(client, &format!("fair-a-{suffix}"), format!("a{suffix}"), 1).await;
    let b = fairness::Tenant::create(client, &format!("fair-b-{suffix}"), format!("b{suffix}"), 2).await;
    run.ns = format!("fair-a-{suffix},fair-b-{suffix}");
    let operator = run.start_operator(1).await;
    let mut report = Report::new(&format!(
        "fairness: namespace B {} peers alone, then A {} peers on {} hubs alone, then both; {}",
        fairness::B_PEERS,
        run.args.peers,
        run.args.instances,
        args_summary(&run.args, &run.scaled)
    ));
    fairness::run(&run, &operator, &a, &b, &mut report).await;
    let (rss_kib, cpu) = operator.usage();
    report.row(Row::new(
        "operator peak RSS / CPU",
        format!("{:.1} MiB / {:.1} s", rss_kib as f64 / 1024.0, cpu),
    ));
    operator.stop();
    report.row(Row::new("benchmark run time (wall)", secs(run_start.elapsed())));
    report.print(
        &Calls::of(&run.sim.simulator().calls()),
        (run.args.instances, run.args.peers),
    );
}

/// One run: its settings, the simulator and the kube side.
struct Run {
    args: Args,
    scaled: Scaled,
    sim: RunningSimulator,
    fleet: Fleet,
    ns: String,
    env: Vec<(String, String)>,
    log_prefix: std::path::PathBuf,
}

impl Run {
    async fn start_operator(&self, n: u32) -> Operator {
        let log = self.log_prefix.with_extension(format!("{n}.log"));
        Operator::start(&self.args.binary, &self.sim.base_url(), &self.ns, &self.env, &log).await
    }

    /// The phases that need a converged fleet: steady state, drift, edits, restart. Returns the
    /// operator process running at the end.
    async fn after_convergence(&self, operator: Operator, report: &mut Report) -> Operator {
        let (args, scaled, sim) = (&self.args, &self.scaled, self.sim.simulator());
        let phase_limit = args
            .phase_limit
            .unwrap_or(scaled.resync.mul_f64(4.0).max(Duration::from_secs(120)));
        let window = args
            .steady_window
            .unwrap_or(scaled.resync.mul_f64(2.0).max(Duration::from_secs(60)));
        if args.profile_secrets {
            let delivered = profiles_fetched(sim, args.peers as u64, phase_limit).await;
            report_profiles(
                report,
                "profiles delivered after all Ready",
                args.peers,
                delivered,
            );
        }
        let steady = steady_state(sim, window).await;
        let steady_per_min = steady.accepted() as f64 * 60.0 / window.as_secs_f64();
        report_steady(report, scaled, &steady, window);
        let drift = drift_cycle(&self.sim, args.drift, phase_limit).await;
        report_drift(report, args, &drift, phase_limit);
        let fetched_before = client_profiles(sim);
        let edits = edit_latency(&self.fleet, sim, args, phase_limit).await;
        report_edits(report, args, &edits, phase_limit);
        if args.profile_secrets {
            let expected = (args.edits * args.peers.div_ceil(args.instances)).min(args.peers);
            let refreshed = profiles_fetched(sim, fetched_before + expected as u64, phase_limit).await;
            report_profiles(report, "profiles refreshed after the edits", expected, refreshed);
        }
        // Long enough for one list per instance and one more at the full rate, and at least a
        // resync period.
        let restart_window = args.restart_window.unwrap_or(
            Duration::from_secs_f64(1.5 * (1 + args.instances) as f64 / scaled.per_second())
                .max(scaled.resync),
        );
        let (rss_kib, cpu) = operator.usage();
        report.row(Row::new(
            "operator peak RSS / CPU until the restart",
            format!("{:.1} MiB / {:.1} s", rss_kib as f64 / 1024.0, cpu),
        ));
        let (calls, operator) = restart_cost(operator, self.start_operator(2), sim, restart_window).await;
        report_restart(report, self, &calls, restart_window, steady_per_min);
        operator
    }
}

fn args_summary(args: &Args, scaled: &Scaled) -> String {
    let extra: Vec<String> = args
        .operator_env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{} VpnInstances + {} VpnPeers, time scaled {}x: {}/min per token (operator burst {}), \
         provisioning {}, resync {}, poll interval for the minimum {}; operator concurrency {}; \
         extra operator env: {}",
        args.instances,
        args.peers,
        args.scale,
        scaled.rate_per_min,
        scaled.burst,
        secs(scaled.provisioning),
        secs(scaled.resync),
        secs(scaled.poll),
        args.operator_concurrency,
        if extra.is_empty() {
            "none".to_owned()
        } else {
            extra.join(" ")
        },
    )
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn report_convergence(report: &mut Report, args: &Args, scaled: &Scaled, c: &Convergence) {
    let minimum = minimum_writes(args) + scaled.minimum_lists();
    report.row(Row::new(
        "minimum calls (writes + instance lists + adoption lists)",
        format!(
            "{} + {} + 0 = {minimum}",
            minimum_writes(args),
            scaled.minimum_lists()
        ),
    ));
    let accepted = c.calls.accepted();
    report.row(Row::new(
        "Altostrat calls to converge (accepted) / minimum",
        format!(
            "{accepted} / {minimum} = {:.2}x",
            accepted as f64 / minimum as f64
        ),
    ));
    report.row(Row::new("429s received", c.calls.throttled().to_string()));
    report.row(Row::new("other errors received", c.calls.errors().to_string()));
    let writes = c.calls.writes();
    report.row(Row::new(
        "writes done / minimum writes; GETs' share of the calls",
        format!(
            "{writes} / {}; {:.0} %",
            minimum_writes(args),
            100.0 * (accepted - writes) as f64 / accepted.max(1) as f64
        ),
    ));
    let floor = c.last_instance_post.map(|last| scaled.floor(args, last));
    match (c.all_ready, floor) {
        (Some(t), Some(floor)) => report.row(Row::new(
            "all Ready after / floor",
            format!("{} / {} = {:.2}x", secs(t), secs(floor), t.as_secs_f64() / floor.as_secs_f64()),
        )),
        _ => report.row(Row::new(
            "all Ready after",
            format!(
                "**did not converge** within {} ({}x the ideal floor {}): Ready {} / {} instances, {} / {} peers; \
                 POSTed {} / {} instances, {} / {} peers",
                secs(c.limit),
                args.limit_factor,
                secs(scaled.ideal_floor(args)),
                c.ready.0,
                args.instances,
                c.ready.1,
                args.peers,
                c.posted.0,
                args.instances,
                c.posted.1,
                args.peers
            ),
        )),
    }
    if let Some(last) = c.last_instance_post {
        let label = if c.posted.0 < args.instances {
            "last instance POST so far at"
        } else {
            "last instance POST at"
        };
        report.row(Row::new(label, secs(last)));
    }
    report.row(Row::new(
        "operator peak RSS / CPU during convergence",
        format!("{:.1} MiB / {:.1} s", c.rss_kib as f64 / 1024.0, c.cpu),
    ));
}

fn report_steady(report: &mut Report, scaled: &Scaled, calls: &Calls, window: Duration) {
    let per_min = calls.accepted() as f64 * 60.0 / window.as_secs_f64();
    report.row(Row::new(
        format!("steady state ({}): calls/min / budget", secs(window)),
        format!(
            "{per_min:.0} / {} = {:.0} % ({} 429s; {})",
            scaled.rate_per_min,
            100.0 * per_min / f64::from(scaled.rate_per_min),
            calls.throttled(),
            calls.summary()
        ),
    ));
}

fn report_drift(report: &mut Report, args: &Args, drift: &Drift, limit: Duration) {
    let ((di, dp), (ci, cp)) = (drift.drifted, drift.corrected);
    let value = match drift.took {
        Some(t) => format!(
            "{} scaled = {:.1} min unscaled",
            secs(t),
            t.as_secs_f64() * args.scale / 60.0
        ),
        None => format!(
            "not all corrected within {}: {ci} / {di} instances, {cp} / {dp} peers",
            secs(limit)
        ),
    };
    report.row(Row::new(
        format!("drift cycle ({di} instances + {dp} peers drifted)"),
        value,
    ));
}

fn report_edits(report: &mut Report, args: &Args, edits: &[Option<Duration>], limit: Duration) {
    let mut landed: Vec<Duration> = edits.iter().flatten().copied().collect();
    landed.sort();
    let missing = edits.len() - landed.len();
    let value = format!(
        "{} / {} ({:.1} s / {:.1} s unscaled){}",
        secs(percentile(&landed, 0.5)),
        secs(percentile(&landed, 0.99)),
        percentile(&landed, 0.5).as_secs_f64() * args.scale,
        percentile(&landed, 0.99).as_secs_f64() * args.scale,
        if missing > 0 {
            format!("; {missing} not applied within {}", secs(limit))
        } else {
            String::new()
        }
    );
    report.row(Row::new(
        format!("edit latency p50 / p99 ({} edits at once)", edits.len()),
        value,
    ));
}

fn report_restart(report: &mut Report, run: &Run, calls: &Calls, window: Duration, steady_per_min: f64) {
    let minutes = window.as_secs_f64() / 60.0;
    let cap = f64::from(run.scaled.rate_per_min) * minutes + f64::from(run.scaled.burst);
    report.row(Row::new(
        format!("restart: calls in the first {} after the restart", secs(window)),
        format!(
            "{} (goal <= 1 + instances = {}; the steady rate would make {:.0}, the budget allows {:.0}; {})",
            calls.accepted(),
            1 + run.args.instances,
            steady_per_min * minutes,
            cap,
            calls.summary()
        ),
    ));
}
