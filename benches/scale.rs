//! Scale benchmark: N VpnInstances and M VpnPeers created at once against the local control
//! plane and the simulator (zero added latency), with the operator binary as a separate
//! process so its memory and CPU can be measured.
//!
//! Run through `scripts/bench.sh` (which starts the control plane):
//!   scripts/bench.sh [--instances 500] [--peers 2000] [--resync 30s] [--breakdown]
//!                    [--raw-status operator|minimal] [--profile-dir DIR]
//!
//! Reports: time to Ready (p50/p99 per object, total), Altostrat calls per object by endpoint,
//! kube-apiserver writes per object (events included), operator peak RSS and CPU seconds,
//! control-plane CPU, writes during a full resync window (must be zero), and the raw
//! apiserver limit measured in the same run (a minimal client creating the same objects and
//! writing the status the operator wrote for each, timed through the same Ready watch), as a
//! ratio. `--breakdown` adds the control plane's CPU cost per kind of request; `--profile-dir`
//! saves a kube-apiserver CPU profile of each arm.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use altostrat_vpn_operator::crd::{VpnInstance, VpnPeer};
use altostrat_vpn_operator::simulator::{Simulator, SimulatorConfig};
use common::{
    Operator, client_peer, create_namespace, creation_jobs, hub_instance, install_crds, percentile,
    process_usage, start_ready_watch,
};
use futures::{StreamExt, stream};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

struct Args {
    instances: usize,
    peers: usize,
    resync: Duration,
    concurrency: usize,
    operator_concurrency: u16,
    binary: String,
    /// Also measure the control plane's CPU cost of each kind of request on its own.
    breakdown: bool,
    /// What the raw client writes as status: the operator's status of the same object
    /// (default), or a one-condition status (`--raw-status minimal`, the round 1-2 definition).
    raw_status_minimal: bool,
    /// Where to write kube-apiserver CPU profiles of both arms (`go tool pprof`), if anywhere.
    profile_dir: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        instances: 500,
        peers: 2000,
        resync: Duration::from_secs(30),
        concurrency: 32,
        operator_concurrency: 32,
        binary: std::env::var("VPN_OPERATOR_BIN").unwrap_or_else(|_| "target/release/vpn-operator".into()),
        breakdown: false,
        raw_status_minimal: false,
        profile_dir: None,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        match flag.as_str() {
            "--instances" => args.instances = value().parse().expect("--instances N"),
            "--peers" => args.peers = value().parse().expect("--peers M"),
            "--resync" => {
                args.resync =
                    altostrat_vpn_operator::duration::parse_duration(&value()).expect("--resync 30s")
            }
            "--concurrency" => args.concurrency = value().parse().expect("--concurrency N"),
            "--operator-concurrency" => {
                args.operator_concurrency = value().parse().expect("--operator-concurrency N")
            }
            "--binary" => args.binary = value(),
            "--breakdown" => args.breakdown = true,
            "--raw-status" => match value().as_str() {
                "operator" => args.raw_status_minimal = false,
                "minimal" => args.raw_status_minimal = true,
                other => panic!("--raw-status operator|minimal, not {other:?}"),
            },
            "--profile-dir" => args.profile_dir = Some(value()),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// CPU seconds used so far by the control plane (kube-apiserver + etcd), whose pids
/// `scripts/bench.sh` passes in `CONTROL_PLANE_PIDS`; 0 when unknown.
fn control_plane_cpu() -> f64 {
    std::env::var("CONTROL_PLANE_PIDS")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .map(|pid| process_usage(pid).1)
        .sum()
}

/// Write requests the apiserver has served for our resources, by resource, from its metrics.
async fn apiserver_writes(client: &Client) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if !line.starts_with("apiserver_request_total{") {
            continue;
        }
        // The operator's events are API-server writes like its status updates.
        let is_ours = line.contains(r#"group="vpn.altostrat.io""#) || line.contains(r#"resource="events""#);
        let write = ["\"PATCH\"", "\"PUT\"", "\"POST\"", "\"DELETE\"", "\"APPLY\""]
            .iter()
            .any(|v| line.contains(v));
        if !(is_ours && write) {
            continue;
        }
        let resource = line
            .split("resource=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("?");
        let sub = line
            .split("subresource=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("");
        let mut key = if sub.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}/{sub}")
        };
        // Refused writes (409: a stale copy, 404: already gone) are listed apart.
        if let Some(code) = line
            .split("code=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .filter(|c| !c.starts_with('2'))
        {
            key = format!("{key} ({code})");
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(key).or_default() += value;
    }
    out
}

fn diff(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Starts a CPU profile of kube-apiserver over the next `seconds`, written to `dir/name.pprof`
/// (through kubectl, which the control plane's kubeconfig already serves).
fn start_apiserver_profile(dir: Option<&str>, name: &str, seconds: u32) -> Option<Child> {
    let dir = dir?;
    std::fs::create_dir_all(dir).unwrap();
    let out = std::fs::File::create(format!("{dir}/{name}.pprof")).unwrap();
    let child = Command::new("kubectl")
        .args(["get", "--raw", &format!("/debug/pprof/profile?seconds={seconds}")])
        .stdout(out)
        .spawn()
        .expect("kubectl on PATH for --profile-dir");
    Some(child)
}

/// The `.status` of every object of `api`, by name, as server-side apply bodies.
async fn statuses<K>(api: &Api<K>) -> HashMap<String, serde_json::Value>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let list = api.list(&Default::default()).await.unwrap();
    list.items
        .into_iter()
        .map(|obj| {
            let value = serde_json::to_value(&obj).unwrap();
            let body =
                json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": value["status"]});
            (obj.name_any(), body)
        })
        .collect()
}

/// Control-plane CPU per request, by kind of request, each kind alone on `n` fresh VpnPeers
/// with the benchmark's concurrency: what each write of the operator's per-object sequence
/// costs the API server, and what one more watcher adds to a write.
async fn request_cost_breakdown(client: &Client, n: usize, concurrency: usize, suffix: &str) {
    use k8s_openapi::api::events::v1::Event;
    let ns = format!("bench-cost-{suffix}");
    create_namespace(client, &ns).await;
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let status = |i: usize, connected: bool| {
        json!({"apiVersion": "vpn.altostrat.io/v1alpha1", "kind": "VpnPeer", "status": {
            "peerId": format!("peer-{i:08}"), "instanceId": "inst-00000001", "connected": connected,
            "observedGeneration": 1,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Available", "observedGeneration": 1,
                 "message": "Peer exists and matches the spec", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Synced", "status": "True", "reason": "ReconcileSuccess", "observedGeneration": 1,
                 "message": "Spec applied to Altostrat", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    };
    async fn measure<F, Fut>(what: &str, n: usize, concurrency: usize, job: F)
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let before = control_plane_cpu();
        let start = Instant::now();
        stream::iter(0..n).for_each_concurrent(concurrency, job).await;
        let cpu = control_plane_cpu() - before;
        println!(
            "| {what} | {:.2} ms | {:.0}/s |",
            cpu * 1000.0 / n as f64,
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
    println!("\n## Control-plane CPU per request ({n} requests of each kind)\n");
    println!("| request | kube-apiserver + etcd CPU per request | throughput |\n|---|---|---|");
    measure("create VpnPeer (POST)", n, concurrency, |i| {
        let peers = peers.clone();
        async move {
            let obj = client_peer(format!("cost-{i}"), "hub", i);
            peers.create(&PostParams::default(), &obj).await.unwrap();
        }
    })
    .await;
    measure(
        "add finalizer (merge patch, resourceVersion precondition)",
        n,
        concurrency,
        |i| {
            let peers = peers.clone();
            async move {
                let name = format!("cost-{i}");
                let current = peers.get(&name).await.unwrap();
                let patch = json!({"metadata": {"finalizers": ["vpn.altostrat.io/cleanup"],
                "resourceVersion": current.resource_version()}});
                peers
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
            }
        },
    )
    .await;
    measure(
        "GET VpnPeer (paid by the finalizer row above)",
        n,
        concurrency,
        |i| {
            let peers = peers.clone();
            async move {
                peers.get(&format!("cost-{i}")).await.unwrap();
            }
        },
    )
    .await;
    let ssa = PatchParams::apply("bench-cost").force();
    // Every object's status written once, `connected` making the second round a real change.
    let status_writes = |connected: bool| {
        let (peers, ssa) = (peers.clone(), ssa.clone());
        move |i: usize| {
            let (peers, ssa, body) = (peers.clone(), ssa.clone(), status(i, connected));
            async move {
                peers
                    .patch_status(&format!("cost-{i}"), &ssa, &Patch::Apply(&body))
                    .await
                    .unwrap();
            }
        }
    };
    measure(
        "status, server-side apply (operator's shape)",
        n,
        concurrency,
        status_writes(false),
    )
    .await;
    measure("Normal event (events.k8s.io/v1 POST)", n, concurrency, |i| {
        let events = events.clone();
        async move {
            let event: Event = serde_json::from_value(json!({
                "metadata": {"name": format!("cost-{i}.event")},
                "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Normal", "reason": "Created",
                "action": "Create", "note": format!("Created Altostrat peer peer-{i:08}"),
                "reportingController": "vpn.altostrat.io/operator", "reportingInstance": "bench",
                "regarding": {"apiVersion": "vpn.altostrat.io/v1alpha1", "kind": "VpnPeer",
                              "namespace": "x", "name": format!("cost-{i}")}
            }))
            .unwrap();
            events.create(&PostParams::default(), &event).await.unwrap();
        }
    })
    .await;
    // The same status change again, now with two watchers of the namespace.
    let watchers: Vec<_> = (0..2)
        .map(|_| {
            let peers = peers.clone();
            tokio::spawn(async move {
                watcher(peers, watcher::Config::default())
                    .applied_objects()
                    .for_each(|_| std::future::ready(()))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    measure(
        "status, server-side apply, with 2 watchers",
        n,
        concurrency,
        status_writes(true),
    )
    .await;
    for w in watchers {
        w.abort();
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG must point at the local control plane (scripts/bench.sh)");
    install_crds(&client).await;

    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let ns = format!("bench-{suffix}");
    create_namespace(&client, &ns).await;

    let sim = Simulator::spawn(SimulatorConfig {
        provision_delay: Duration::ZERO,
        status_clear_delay: Duration::ZERO,
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let base = sim.base_url().to_string();

    let log = std::env::temp_dir().join(format!("bench-operator-{suffix}.log"));
    let env: Vec<(String, String)> = [
        ("ALTOSTRAT_API_RATE_LIMIT", "10000000".to_owned()),
        ("ALTOSTRAT_API_BURST", "1000".to_owned()),
        ("RESYNC_INTERVAL", format!("{}s", args.resync.as_secs())),
        ("INSTANCE_CONCURRENCY", args.operator_concurrency.to_string()),
        ("PEER_CONCURRENCY", args.operator_concurrency.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // Ready before the clock starts.
    let operator = Operator::start(&args.binary, &base, &ns, &env, &log).await;
    let pid = operator.pid;
    let (_, cpu_idle) = process_usage(pid);
    let control_plane_idle = control_plane_cpu();

    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);
    let created_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = args.instances + args.peers;
    let (watch_ready, ready_at) = start_ready_watch(&instances, &peers, total).await;

    let writes_before = apiserver_writes(&client).await;
    // The first 15 s: creates, finalizers, status writes and events all under way.
    let operator_profile = start_apiserver_profile(args.profile_dir.as_deref(), "operator-arm", 15);
    let start = Instant::now();
    let per_instance = args.peers.div_ceil(args.instances.max(1));
    stream::iter(creation_jobs(args.instances, args.peers))
        .for_each_concurrent(args.concurrency, |(is_instance, i)| {
            let (instances, peers, created_at) = (instances.clone(), peers.clone(), created_at.clone());
            async move {
                let pp = PostParams::default();
                if is_instance {
                    let obj = hub_instance(format!("hub-{i}"), i, format!("b{i}-{suffix}"));
                    created_at
                        .lock()
                        .await
                        .insert(format!("i/hub-{i}"), Instant::now());
                    instances.create(&pp, &obj).await.unwrap();
                } else {
                    let obj = client_peer(format!("peer-{i}"), &format!("hub-{}", i / per_instance), i);
                    created_at
                        .lock()
                        .await
                        .insert(format!("p/peer-{i}"), Instant::now());
                    peers.create(&pp, &obj).await.unwrap();
                }
            }
        })
        .await;
    let created = start.elapsed();
    let timeout = Duration::from_secs(1800);
    if tokio::time::timeout(timeout, watch_ready).await.is_err() {
        let n = ready_at.lock().await.len();
        operator.stop();
        panic!("only {n}/{total} Ready after {timeout:?}");
    }
    let converged = start.elapsed();
    let (rss_kib, cpu_total) = process_usage(pid);
    let control_plane_converge = control_plane_cpu() - control_plane_idle;
    let writes_converge = diff(&apiserver_writes(&client).await, &writes_before);
    let calls = sim.simulator().calls().counts;
    // The raw client writes the status the operator wrote, object for object.
    let operator_status: HashMap<String, serde_json::Value> = statuses(&instances)
        .await
        .into_iter()
        .map(|(name, body)| (format!("i/{name}"), body))
        .chain(
            statuses(&peers)
                .await
                .into_iter()
                .map(|(name, body)| (format!("p/{name}"), body)),
        )
        .collect();

    let (created_at, ready_at) = (created_at.lock().await.clone(), ready_at.lock().await.clone());
    let mut lat_i: Vec<Duration> = Vec::new();
    let mut lat_p: Vec<Duration> = Vec::new();
    for (k, ready) in &ready_at {
        let d = ready.saturating_duration_since(created_at[k]);
        if k.starts_with("i/") {
            lat_i.push(d)
        } else {
            lat_p.push(d)
        }
    }
    lat_i.sort();
    lat_p.sort();

    // Steady state: a full resync window (plus jitter margin) must write nothing.
    let sim_before = sim.simulator().calls().counts;
    let kube_before = apiserver_writes(&client).await;
    tokio::time::sleep(args.resync.mul_f64(1.3)).await;
    let sim_after = sim.simulator().calls().counts;
    let kube_steady = diff(&apiserver_writes(&client).await, &kube_before);
    let sim_steady: BTreeMap<String, u64> = sim_after
        .iter()
        .map(|(k, v)| (k.clone(), v - sim_before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    let steady_writes: u64 = sim_steady
        .iter()
        .filter(|(k, _)| !k.starts_with("GET"))
        .map(|(_, v)| v)
        .sum();
    let steady_kube: f64 = kube_steady.values().fold(0.0, |a, b| a + b);
    let (rss_after_resync, cpu_after) = process_usage(pid);

    operator.stop();

    // The apiserver's own limit: create the same number of instances and write their status
    // (as the operator must) with a minimal client, as fast as possible.
    let raw_ns = format!("bench-raw-{suffix}");
    create_namespace(&client, &raw_ns).await;
    let raw: Api<VpnInstance> = Api::namespaced(client.clone(), &raw_ns);
    let raw_peers: Api<VpnPeer> = Api::namespaced(client.clone(), &raw_ns);
    let (raw_watch, _) = start_ready_watch(&raw, &raw_peers, total).await;
    // kube-apiserver serves one CPU profile at a time; the operator arm's has usually ended
    // during the resync window.
    if let Some(mut profile) = operator_profile {
        profile.wait().unwrap();
    }
    let raw_profile = start_apiserver_profile(args.profile_dir.as_deref(), "raw-arm", 6);
    let raw_start = Instant::now();
    let control_plane_raw_start = control_plane_cpu();
    stream::iter(creation_jobs(args.instances, args.peers))
        .for_each_concurrent(args.concurrency, |(is_instance, i)| {
            let (raw, raw_peers) = (raw.clone(), raw_peers.clone());
            let status = if args.raw_status_minimal {
                let kind = if is_instance { "VpnInstance" } else { "VpnPeer" };
                json!({"apiVersion": "vpn.altostrat.io/v1alpha1", "kind": kind, "status": {"conditions": [
                    {"type": "Ready", "status": "True", "reason": "Available", "message": "",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
            } else if is_instance {
                operator_status[&format!("i/hub-{i}")].clone()
            } else {
                operator_status[&format!("p/peer-{i}")].clone()
            };
            async move {
                let ssa = PatchParams::apply("bench-raw").force();
                if is_instance {
                    let name = format!("raw-{i}");
                    raw.create(
                        &PostParams::default(),
                        &hub_instance(name.clone(), i, format!("r{i}-{suffix}")),
                    )
                    .await
                    .unwrap();
                    raw.patch_status(&name, &ssa, &Patch::Apply(&status))
                        .await
                        .unwrap();
                } else {
                    let name = format!("raw-peer-{i}");
                    let obj = client_peer(name.clone(), &format!("raw-{}", i / per_instance), i);
                    raw_peers.create(&PostParams::default(), &obj).await.unwrap();
                    raw_peers
                        .patch_status(&name, &ssa, &Patch::Apply(&status))
                        .await
                        .unwrap();
                }
            }
        })
        .await;
    let raw_written = raw_start.elapsed();
    if tokio::time::timeout(timeout, raw_watch).await.is_err() {
        panic!("raw objects not all seen Ready after {timeout:?}");
    }
    let raw_elapsed = raw_start.elapsed();
    let control_plane_raw = control_plane_cpu() - control_plane_raw_start;
    if let Some(mut profile) = raw_profile {
        profile.wait().unwrap();
    }

    let in_altostrat = (sim.simulator().instances().len(), sim.simulator().peers().len());
    let n = args.instances as f64;
    let m = args.peers as f64;
    let per = |key: &str, count: f64| calls.get(key).copied().unwrap_or(0) as f64 / count.max(1.0);
    println!(
        "# Scale benchmark: {} VpnInstances, {} VpnPeers\n",
        args.instances, args.peers
    );
    println!("| measure | value |\n|---|---|");
    println!(
        "| objects created (client side) in | {:.1} s |",
        created.as_secs_f64()
    );
    println!("| all Ready after | {:.1} s |", converged.as_secs_f64());
    println!(
        "| objects in Altostrat (duplicates would show here) | {} instances, {} peers |",
        in_altostrat.0, in_altostrat.1
    );
    println!(
        "| instance time to Ready p50 / p99 | {:.2} s / {:.2} s |",
        percentile(&lat_i, 0.5).as_secs_f64(),
        percentile(&lat_i, 0.99).as_secs_f64()
    );
    println!(
        "| peer time to Ready p50 / p99 | {:.2} s / {:.2} s |",
        percentile(&lat_p, 0.5).as_secs_f64(),
        percentile(&lat_p, 0.99).as_secs_f64()
    );
    println!(
        "| raw client: create + {} status for the same objects written in | {:.1} s |",
        if args.raw_status_minimal {
            "one-condition"
        } else {
            "the operator's"
        },
        raw_written.as_secs_f64()
    );
    println!(
        "| raw client: all seen Ready (same watch as above) after | {:.1} s |",
        raw_elapsed.as_secs_f64()
    );
    println!(
        "| ratio operator / raw limit | {:.2} |",
        converged.as_secs_f64() / raw_elapsed.as_secs_f64().max(0.001)
    );
    println!(
        "| kube-apiserver + etcd CPU: operator run / raw client | {:.1} s / {:.1} s ({:.2}) |",
        control_plane_converge,
        control_plane_raw,
        control_plane_converge / control_plane_raw.max(0.01)
    );
    println!(
        "| POST /vpn/instances per instance (min 1) | {:.3} |",
        per("POST /vpn/instances", n)
    );
    println!(
        "| POST peers per peer (min 1) | {:.3} |",
        per("POST /vpn/instances/{instanceId}/peers", m)
    );
    println!(
        "| PUT /vpn/instances per instance | {:.3} |",
        per("PUT /vpn/instances/{instanceId}", n)
    );
    println!(
        "| GET instance per instance (readiness polls) | {:.3} |",
        per("GET /vpn/instances/{instanceId}", n)
    );
    println!(
        "| GET /vpn/instances (adoption lists) per instance | {:.3} |",
        per("GET /vpn/instances", n)
    );
    println!(
        "| GET peers list per peer | {:.3} |",
        per("GET /vpn/instances/{instanceId}/peers", m)
    );
    println!(
        "| GET peer per peer | {:.3} |",
        per("GET /vpn/instances/{instanceId}/peers/{peerId}", m)
    );
    let writes_total: f64 = writes_converge
        .iter()
        .filter(|(k, _)| !k.contains(" ("))
        .map(|(_, v)| v)
        .sum();
    println!(
        "| kube-apiserver writes per object, creates and events included (raw client: 2) | {:.2} |",
        writes_total / (n + m).max(1.0)
    );
    println!("| operator peak RSS | {:.1} MiB |", rss_kib as f64 / 1024.0);
    println!(
        "| operator CPU during convergence | {:.1} s |",
        cpu_total - cpu_idle
    );
    println!(
        "| steady state ({:.0} s window): Altostrat writes | {steady_writes} |",
        args.resync.mul_f64(1.3).as_secs_f64()
    );
    println!("| steady state: kube-apiserver writes | {steady_kube} |");
    println!(
        "| operator CPU during the resync window | {:.1} s |",
        cpu_after - cpu_total
    );
    println!(
        "| peak RSS after resync | {:.1} MiB |",
        rss_after_resync as f64 / 1024.0
    );
    println!("\nAltostrat calls during convergence: {calls:?}");
    println!(
        "kube-apiserver writes during convergence (per object): {:?}",
        writes_converge
            .iter()
            .map(|(k, v)| (
                k.clone(),
                format!(
                    "{:.2}",
                    v / match k.split('/').next() {
                        Some("vpninstances") => n,
                        Some("vpnpeers") => m,
                        _ => n + m,
                    }
                )
            ))
            .collect::<BTreeMap<_, _>>()
    );
    println!("Altostrat calls during the steady window: {sim_steady:?}");
    println!("kube-apiserver writes during the steady window: {kube_steady:?}");
    if args.breakdown {
        request_cost_breakdown(&client, total, args.concurrency, suffix).await;
    }
}
