//! The fairness scenario (`--fairness`): two namespaces on one token. Namespace B applies a few
//! client peers alone, then namespace A applies a burst of peers alone, then A applies the same
//! burst again while B applies its few peers once more. See BENCHMARKS.md, "Fair share".

use std::time::{Duration, Instant};

use altostrat_vpn_operator::crd::{VpnInstance, VpnPeer};
use futures::{StreamExt, stream};
use kube::api::PostParams;
use kube::{Api, Client};

use super::common::{
    Operator, ReadyTimes, client_peer, create_namespace, hub_instance, percentile, record_ready_times,
};
use super::report::{Calls, Report, Row};
use super::{Args, Run, Scaled, secs};

/// B's peers, and how long after A's burst starts they are applied (scaled).
pub const B_PEERS: usize = 10;
const B_DELAY: Duration = Duration::from_secs(10);

/// One namespace of the scenario.
pub struct Tenant {
    instances: Api<VpnInstance>,
    peers: Api<VpnPeer>,
    /// Object names and hostnames are unique across tenants and runs.
    prefix: String,
    /// Keeps the tenants' user ids apart.
    index: usize,
}

impl Tenant {
    pub async fn create(client: &Client, ns: &str, prefix: String, index: usize) -> Self {
        create_namespace(client, ns).await;
        Self {
            instances: Api::namespaced(client.clone(), ns),
            peers: Api::namespaced(client.clone(), ns),
            prefix,
            index,
        }
    }

    fn hub(&self, i: usize) -> String {
        format!("{}-hub-{i}", self.prefix)
    }

    /// Creates `hubs` hubs and waits until they are Ready (provisioned).
    async fn provision(&self, hubs: std::ops::Range<usize>, limit: Duration) -> bool {
        let names: Vec<String> = hubs.clone().map(|i| format!("i/{}", self.hub(i))).collect();
        let (watch, ready) = self.watch(names.len()).await;
        stream::iter(hubs)
            .for_each_concurrent(16, |i| async move {
                let host = format!("{}-{i}", self.prefix);
                let hub = hub_instance(self.hub(i), i, host);
                self.instances.create(&PostParams::default(), &hub).await.unwrap();
            })
            .await;
        let done = tokio::time::timeout(limit, watch).await.is_ok();
        done && names
            .iter()
            .all(|n| ready.try_lock().is_ok_and(|r| r.contains_key(n)))
    }

    async fn watch(&self, total: usize) -> (tokio::task::JoinHandle<()>, ReadyTimes) {
        let ready = ReadyTimes::default();
        let watch = tokio::spawn(record_ready_times(
            self.instances.clone(),
            self.peers.clone(),
            total,
            ready.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        (watch, ready)
    }

    /// Applies `count` client peers named `{prefix}-{batch}-N`, spread over the hubs `hubs`,
    /// `concurrency` at once; each peer's time from the start of the batch to Ready (`None`:
    /// not within `limit`).
    async fn apply_peers(
        &self,
        batch: &str,
        count: usize,
        hubs: std::ops::Range<usize>,
        limit: Duration,
    ) -> Vec<Option<Duration>> {
        let ready = ReadyTimes::default();
        // The watch also sees the Ready objects applied before: count them in.
        let existing = self.peers.list(&Default::default()).await.unwrap().items.len()
            + self
                .instances
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .len();
        let watch = tokio::spawn(record_ready_times(
            self.instances.clone(),
            self.peers.clone(),
            existing + count,
            ready.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        let names: Vec<String> = (0..count)
            .map(|i| format!("{}-{batch}-{i}", self.prefix))
            .collect();
        let hub_count = hubs.len();
        stream::iter(names.iter().enumerate())
            .for_each_concurrent(32, |(i, name)| {
                let hub = self.hub(hubs.start + i % hub_count);
                let user = self.user_index(batch, i);
                async move {
                    let peer = client_peer(name.clone(), &hub, user);
                    self.peers.create(&PostParams::default(), &peer).await.unwrap();
                }
            })
            .await;
        let _ = tokio::time::timeout(limit.saturating_sub(started.elapsed()), watch).await;
        let ready = ready.lock().await;
        names
            .iter()
            .map(|n| {
                ready
                    .get(&format!("p/{n}"))
                    .map(|at| at.saturating_duration_since(started))
            })
            .collect()
    }

    /// The Altostrat ids of the hubs `hubs`, from their status.
    async fn hub_ids(&self, hubs: std::ops::Range<usize>) -> Vec<String> {
        let names: Vec<String> = hubs.map(|i| self.hub(i)).collect();
        let instances = self.instances.list(&Default::default()).await.unwrap();
        instances
            .items
            .into_iter()
            .filter(|hub| hub.metadata.name.as_ref().is_some_and(|n| names.contains(n)))
            .filter_map(|hub| hub.status.and_then(|s| s.instance_id))
            .collect()
    }

    /// A user id unique across tenants and batches.
    fn user_index(&self, batch: &str, i: usize) -> usize {
        let batch = batch.bytes().map(usize::from).sum::<usize>() % 97;
        (self.index * 100 + batch) * 100_000 + i
    }
}

/// The outcome of one burst of A (alone or with B).
struct Burst {
    /// Until every one of A's peers was Ready, from the start of the burst.
    all_ready: Option<Duration>,
    ready: usize,
    calls: Calls,
    /// Accepted calls about the burst's own hubs (their peer lists and peers): A's calls for
    /// this burst, whatever else the phase re-checks.
    hub_calls: u64,
}

/// Runs the scenario and reports it.
pub async fn run(run: &Run, operator: &Operator, a: &Tenant, b: &Tenant, report: &mut Report) {
    let (args, scaled, sim) = (&run.args, &run.scaled, run.sim.simulator());
    let hubs = args.instances;
    let setup_limit = scaled.provisioning * 3 + Duration::from_secs(60);
    let setup = tokio::join!(
        a.provision(0..2 * hubs, setup_limit),
        b.provision(0..1, setup_limit)
    );
    if !(setup.0 && setup.1) {
        report.row(Row::new(
            "setup",
            "hubs not all Ready within the limit".to_owned(),
        ));
        return;
    }
    let limit = burst_limit(args, scaled);
    let before = Calls::of(&sim.calls());
    let alone = b.apply_peers("alone", B_PEERS, 0..1, limit).await;
    let b_calls = Calls::of(&sim.calls()).since(&before);
    report_b(report, "B's peers alone", &alone, &b_calls);
    dump_metrics(run, operator, "b-alone").await;

    let a_alone = burst(run, a, "solo", 0..hubs, limit).await;
    report_a(report, "A's burst alone", args, scaled, &a_alone);
    dump_metrics(run, operator, "a-alone").await;

    let before = Calls::of(&sim.calls());
    let a_task = burst(run, a, "shared", hubs..2 * hubs, limit);
    let b_task = async {
        tokio::time::sleep(B_DELAY).await;
        b.apply_peers("with-a", B_PEERS, 0..1, limit).await
    };
    let (a_with, with_a) = tokio::join!(a_task, b_task);
    report_b(report, "B's peers while A's burst runs", &with_a, &b_calls);
    report_a(report, "A's burst with B", args, scaled, &a_with);
    let phase = Calls::of(&sim.calls()).since(&before);
    report.row(Row::new("calls in the shared phase", phase.summary()));
    dump_metrics(run, operator, "shared").await;
}

async fn burst(run: &Run, a: &Tenant, batch: &str, hubs: std::ops::Range<usize>, limit: Duration) -> Burst {
    let sim = run.sim.simulator();
    let ids = a.hub_ids(hubs.clone()).await;
    let start = sim.calls();
    let times = a.apply_peers(batch, run.args.peers, hubs, limit).await;
    let end = sim.calls();
    let calls = Calls::of(&end).since(&Calls::of(&start));
    let ready = times.iter().flatten().count();
    Burst {
        all_ready: (ready == times.len()).then(|| times.iter().flatten().max().copied().unwrap_or_default()),
        ready,
        calls,
        hub_calls: calls_about(&end.paths[start.paths.len()..], &ids),
    }
}

/// How many of `paths` ("METHOD /path STATUS") were accepted calls about one of the hubs `ids`.
fn calls_about(paths: &[String], ids: &[String]) -> u64 {
    let about = |path: &str| {
        ids.iter().any(|id| {
            let hub = format!("/vpn/instances/{id}");
            path.contains(&format!("{hub} ")) || path.contains(&format!("{hub}/"))
        })
    };
    paths
        .iter()
        .filter(|call| !call.ends_with(" 429") && about(call))
        .count() as u64
}

/// A burst may take `--limit-factor` times its write floor, and at least a minute.
fn burst_limit(args: &Args, scaled: &Scaled) -> Duration {
    write_floor(args.peers as u64, scaled)
        .mul_f64(args.limit_factor)
        .max(Duration::from_secs(60))
}

/// `writes` at the full rate.
fn write_floor(writes: u64, scaled: &Scaled) -> Duration {
    Duration::from_secs_f64(writes as f64 / scaled.per_second())
}

fn report_b(report: &mut Report, what: &str, times: &[Option<Duration>], alone_calls: &Calls) {
    let mut ready: Vec<Duration> = times.iter().flatten().copied().collect();
    ready.sort();
    let missing = times.len() - ready.len();
    report.row(Row::new(
        format!("{what}: time to Ready p50 / p95 / max (scaled)"),
        format!(
            "{} / {} / {}{} (B alone made {} calls)",
            secs(percentile(&ready, 0.5)),
            secs(percentile(&ready, 0.95)),
            secs(ready.last().copied().unwrap_or_default()),
            if missing > 0 {
                format!("; {missing} not Ready within the limit")
            } else {
                String::new()
            },
            alone_calls.accepted()
        ),
    ));
}

fn report_a(report: &mut Report, what: &str, args: &Args, scaled: &Scaled, burst: &Burst) {
    // Only the burst's own hubs: B's calls, the shared instance lists and the re-checks of
    // an earlier burst's hubs are not A's calls for this burst.
    let a_calls = burst.hub_calls;
    let floor = write_floor(args.peers as u64, scaled);
    let all_ready = match burst.all_ready {
        Some(t) => format!(
            "all Ready after {} / write floor {} = {:.2}x",
            secs(t),
            secs(floor),
            t.as_secs_f64() / floor.as_secs_f64()
        ),
        None => format!("{} / {} Ready within the limit", burst.ready, args.peers),
    };
    report.row(Row::new(
        what,
        format!(
            "{all_ready}; A's calls {a_calls} (calls / rate = {}); 429s {}; {}",
            secs(write_floor(a_calls, scaled)),
            burst.calls.throttled(),
            burst.calls.summary()
        ),
    ));
}

/// Saves the operator's metrics after a phase next to its log, for the per-namespace figures.
async fn dump_metrics(run: &Run, operator: &Operator, phase: &str) {
    let url = format!("http://127.0.0.1:{}/metrics", operator.metrics_port);
    let Ok(body) = reqwest::get(&url).await.and_then(|r| r.error_for_status()) else {
        return;
    };
    let path = run.log_prefix.with_extension(format!("{phase}.metrics"));
    let _ = std::fs::write(path, body.text().await.unwrap_or_default());
}
