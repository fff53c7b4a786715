//! Pieces both benchmark arms use (`benches/scale.rs`, the API-server arm, and
//! `benches/budget.rs`, the Altostrat API-budget arm): the objects they create, the Ready
//! watch that times them, the operator process and its resource usage.

// Each arm uses a subset of these.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use altostrat_vpn_operator::crd::{self, VpnInstance, VpnPeer};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Peak RSS (VmHWM) in KiB and CPU seconds (utime + stime) of a process.
pub fn process_usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After the ")" the fields start at index 0 = state; utime = 11, stime = 12.
    (hwm, (ticks(11) + ticks(12)) / 100.0)
}

pub fn is_ready(conditions: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>) -> bool {
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Applies the project's CRDs to the cluster and gives the API server a moment to serve them.
pub async fn install_crds(client: &Client) {
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    for crd in crd::all() {
        crds.patch(
            crd.metadata.name.as_deref().unwrap(),
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

pub async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
}

/// The `i`-th VpnInstance of a benchmark arm; `hostname` must be unique across arms.
pub fn hub_instance(name: String, i: usize, hostname: String) -> VpnInstance {
    serde_json::from_value(json!({
        "apiVersion": "vpn.altostrat.io/v1alpha1", "kind": "VpnInstance",
        "metadata": {"name": name},
        "spec": {"name": format!("hub {i}"), "hostname": hostname, "region": "sjc",
                 "pushedRoutes": ["10.0.0.0/8"], "publicDns": ["1.1.1.1", "8.8.8.8"]}
    }))
    .unwrap()
}

/// The `i`-th client VpnPeer of a benchmark arm.
pub fn client_peer(name: String, instance: &str, i: usize) -> VpnPeer {
    serde_json::from_value(json!({
        "apiVersion": "vpn.altostrat.io/v1alpha1", "kind": "VpnPeer",
        "metadata": {"name": name},
        "spec": {"instanceRef": {"name": instance}, "type": "client", "protocol": "wireguard", "userId": uuid_for(i)}
    }))
    .unwrap()
}

pub fn uuid_for(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// What an arm creates, in order: all instances, then all peers (`(is_instance, index)`).
pub fn creation_jobs(instances: usize, peers: usize) -> Vec<(bool, usize)> {
    (0..instances)
        .map(|i| (true, i))
        .chain((0..peers).map(|p| (false, p)))
        .collect()
}

/// When each object (`i/NAME`, `p/NAME`) was first seen Ready.
pub type ReadyTimes = Arc<Mutex<HashMap<String, Instant>>>;

/// Records when each object is first seen Ready through a watch, until `total` are. Both arms
/// of the scale benchmark (operator and raw client) are timed through this same observer, so
/// its load on the API server is in both.
pub async fn record_ready_times(
    instances: Api<VpnInstance>,
    peers: Api<VpnPeer>,
    total: usize,
    ready_at: ReadyTimes,
) {
    let i = watcher(instances, watcher::Config::default())
        .applied_objects()
        .map_ok(|o: VpnInstance| {
            (
                format!("i/{}", o.name_any()),
                is_ready(o.status.as_ref().map(|s| &s.conditions)),
            )
        });
    let p = watcher(peers, watcher::Config::default())
        .applied_objects()
        .map_ok(|o: VpnPeer| {
            (
                format!("p/{}", o.name_any()),
                is_ready(o.status.as_ref().map(|s| &s.conditions)),
            )
        });
    let mut merged = stream::select(i.boxed(), p.boxed());
    while let Some(item) = merged.next().await {
        if let Ok((key, true)) = item {
            let mut r = ready_at.lock().await;
            r.entry(key).or_insert_with(Instant::now);
            if r.len() >= total {
                return;
            }
        }
    }
}

/// Starts the Ready watch of one arm and gives it a second to list, so that the clock starts
/// with the observer already running.
pub async fn start_ready_watch(
    instances: &Api<VpnInstance>,
    peers: &Api<VpnPeer>,
    total: usize,
) -> (tokio::task::JoinHandle<()>, ReadyTimes) {
    let ready_at = ReadyTimes::default();
    let watch = tokio::spawn(record_ready_times(
        instances.clone(),
        peers.clone(),
        total,
        ready_at.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    (watch, ready_at)
}

/// The operator binary running as a separate process against the simulator at `api_url`,
/// watching one namespace.
pub struct Operator {
    pub child: Child,
    pub pid: u32,
    pub metrics_port: u16,
}

impl Operator {
    /// Starts the operator with `env` on top of the settings every arm shares, and waits until
    /// it answers `/readyz`. Later entries of `env` override earlier ones.
    pub async fn start(
        binary: &str,
        api_url: &str,
        namespace: &str,
        env: &[(String, String)],
        log: &Path,
    ) -> Self {
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(binary);
        command
            .arg("run")
            .env("ALTOSTRAT_API_URL", api_url)
            .env("ALTOSTRAT_API_TOKEN", "sim-token")
            .env("WATCH_NAMESPACES", namespace)
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "warn")
            // As in the container image (Dockerfile, Helm chart, kustomize base).
            .env(
                "MALLOC_ARENA_MAX",
                std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "2".into()),
            );
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start the operator binary (build it with cargo build --release)");
        let operator = Self {
            pid: child.id(),
            child,
            metrics_port,
        };
        operator.wait_ready().await;
        operator
    }

    async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Peak RSS in KiB and CPU seconds so far.
    pub fn usage(&self) -> (u64, f64) {
        process_usage(self.pid)
    }

    /// SIGTERM, then waits for the process to exit (SIGKILL after 20 s).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
