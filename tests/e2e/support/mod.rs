//! Shared harness of the end-to-end suites: a real kube-apiserver (from `KUBECONFIG`, started
//! by `scripts/control-plane.sh`), the project's Altostrat simulator over real HTTP, and the
//! operator's controllers running in-process or as the real binary.

pub mod process;
pub mod proxy;
pub mod tap;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use altostrat_vpn_operator::altostrat::model::{Instance, ListResponse, Peer};
use altostrat_vpn_operator::altostrat::{
    ApiToken, Budget, BudgetConfig, HttpClient, HttpClientConfig, Resilient, RetryPolicy,
};
use altostrat_vpn_operator::controller::{self, DefaultToken, Settings, WatchScope};
use altostrat_vpn_operator::crd::{self, OwnershipRecord, VpnInstance, VpnPeer};
use altostrat_vpn_operator::metrics::Metrics;
use altostrat_vpn_operator::simulator::{RunningSimulator, Simulator, SimulatorConfig};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use kube::{Api, Client, Resource};
use reqwest::Method;
use serde_json::{Value, json};

pub const TOKEN: &str = "sim-token";
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A client for the control plane named by `KUBECONFIG`, with the CRDs installed.
pub async fn kube() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run the end-to-end suites through scripts/test.sh, which starts the local control plane"
    );
    let client = Client::try_default()
        .await
        .expect("connect to the control plane in KUBECONFIG");
    install_crds(&client).await;
    client
}

/// The second control plane `scripts/test.sh` starts for disaster-recovery tests (another
/// cluster sharing the simulator), with the CRDs installed; `None` against an existing cluster,
/// where there is no second one.
pub async fn second_kube() -> Option<Client> {
    let Some(path) = std::env::var_os("E2E_SECOND_KUBECONFIG") else {
        assert!(
            std::env::var_os("USE_EXISTING_CLUSTER").is_some(),
            "E2E_SECOND_KUBECONFIG is not set: run the end-to-end suites through scripts/test.sh, which starts a second control plane"
        );
        return None;
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("the second kubeconfig");
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("the second kubeconfig");
    let client = Client::try_from(config).expect("a client for the second control plane");
    install_crds(&client).await;
    Some(client)
}

/// Applies this version's CRDs and waits until they are established.
async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crd::all() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("e2e-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        eventually("CRD established", Duration::from_secs(30), || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let crd = crds.get(&name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }
}

/// The label on everything a test creates that outlives it (namespaces, cluster-scoped
/// objects), valued `E2E_RUN_ID` (or `local`): against an existing cluster, `scripts/test.sh`
/// deletes what carries its run's value.
pub const RUN_LABEL: &str = "vpn.altostrat.io/e2e-run";

pub fn run_labels() -> BTreeMap<String, String> {
    let run = std::env::var("E2E_RUN_ID").unwrap_or_else(|_| "local".into());
    BTreeMap::from([(RUN_LABEL.to_owned(), run)])
}

/// A fresh namespace per test keeps tests independent.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            labels: Some(run_labels()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    name
}

pub async fn simulator(provision_delay: Duration) -> RunningSimulator {
    let config = SimulatorConfig {
        provision_delay,
        status_clear_delay: Duration::from_millis(300),
        ..SimulatorConfig::default()
    };
    Simulator::spawn(config).await.expect("start the simulator")
}

/// A simulator that also accepts `tokens` (all scopes, in the account of [`TOKEN`]), so that
/// each operator process can send its own token and its calls can be told apart.
pub async fn simulator_with_tokens(provision_delay: Duration, tokens: &[&str]) -> RunningSimulator {
    use altostrat_vpn_operator::simulator::ApiToken as SimToken;
    let config = SimulatorConfig {
        provision_delay,
        status_clear_delay: Duration::from_millis(300),
        tokens: std::iter::once(TOKEN)
            .chain(tokens.iter().copied())
            .map(SimToken::all_scopes)
            .collect(),
        ..SimulatorConfig::default()
    };
    Simulator::spawn(config).await.expect("start the simulator")
}

/// The controllers of one namespace, running in this process until dropped or stopped.
pub struct Operator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    pub registry: Arc<prometheus_client::registry::Registry>,
}

pub struct OperatorOptions {
    pub resync_interval: Duration,
    pub rate_limit_per_minute: u32,
    pub token: Option<&'static str>,
    /// The installation named in the ownership records it writes.
    pub installation: &'static str,
    /// Runs the VpnCredentials controller with these settings (it is cluster-scoped: only the
    /// tests of shared credentials run it, with names of their own).
    pub credentials: Option<controller::credentials::CredentialsSettings>,
    pub default_deletion_policy: altostrat_vpn_operator::crd::DeletionPolicy,
}

impl Default for OperatorOptions {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(300),
            rate_limit_per_minute: 60_000,
            token: Some(TOKEN),
            installation: "e2e/altostrat-vpn-operator",
            credentials: None,
            default_deletion_policy: Default::default(),
        }
    }
}

pub fn start_operator(
    client: &Client,
    base_url: &str,
    namespace: &str,
    options: OperatorOptions,
) -> Operator {
    start_operator_scoped(
        client,
        base_url,
        WatchScope::Namespace(namespace.to_owned()),
        None,
        options,
    )
}

/// The controllers of any scope: with [`WatchScope::AllNamespaces`], pass a `label_selector`
/// that only this test's resources carry, so that tests running in parallel are not disturbed.
pub fn start_operator_scoped(
    client: &Client,
    base_url: &str,
    scope: WatchScope,
    label_selector: Option<String>,
    options: OperatorOptions,
) -> Operator {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let http = HttpClient::new(HttpClientConfig {
        base_url: base_url.to_owned(),
        ..HttpClientConfig::default()
    })
    .unwrap();
    let budget_config = BudgetConfig {
        rate_per_minute: options.rate_limit_per_minute,
        burst: 50,
        ..BudgetConfig::default()
    };
    let budget = Arc::new(Budget::new(budget_config.clone()));
    let policy = RetryPolicy {
        base_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let default_token = Arc::new(
        options
            .token
            .map_or_else(DefaultToken::none, |t| DefaultToken::fixed(ApiToken::new(t))),
    );
    let credentials = Arc::new(controller::credentials::SharedCredentials::new(
        options.credentials.clone().unwrap_or_default(),
    ));
    let observers =
        controller::credentials::Observers(vec![default_token.clone(), credentials.judge.clone()]);
    let api = Arc::new(
        Resilient::new(http, budget, policy, metrics.clone()).reporting_tokens_to(Arc::new(observers)),
    );
    let shared = controller::ControllerDeps {
        client: client.clone(),
        api: api.clone(),
        observations: Arc::default(),
        default_token,
        shared: credentials.clone(),
        metrics: metrics.clone(),
        running: Arc::default(),
        settings: Settings {
            resync_interval: options.resync_interval,
            provisioning_poll: Duration::from_secs(1),
            budget: budget_config,
            label_selector,
            installation: options.installation.to_owned(),
            default_deletion_policy: options.default_deletion_policy,
            ..Settings::default()
        },
        reporter: Reporter {
            controller: "vpn-operator".into(),
            instance: Some("e2e".into()),
        },
        scopes: Default::default(),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = futures::FutureExt::shared(Box::pin(async move {
        let _ = stop_rx.await;
    })
        as std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>);
    let judging = options
        .credentials
        .is_some()
        .then(|| controller::credentials::run(client.clone(), api, credentials, shutdown.clone()));
    let controllers = controller::run(shared, scope, shutdown, |_, _| {});
    let handle = tokio::spawn(async move {
        futures::join!(controllers, async move {
            if let Some(judging) = judging {
                judging.await;
            }
        });
    });
    Operator {
        stop: Some(stop_tx),
        handle: Some(handle),
        registry: Arc::new(registry),
    }
}

impl Operator {
    /// Graceful stop: no new reconciles, in-flight ones finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("operator stops in time")
                .unwrap();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// Polls `probe` until it yields a value, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

pub async fn wait_instance(
    api: &Api<VpnInstance>,
    name: &str,
    what: &str,
    pred: impl Fn(&VpnInstance) -> bool,
) -> VpnInstance {
    eventually(what, TIMEOUT, || async {
        api.get_opt(name).await.ok().flatten().filter(|o| pred(o))
    })
    .await
}

pub async fn wait_peer(
    api: &Api<VpnPeer>,
    name: &str,
    what: &str,
    pred: impl Fn(&VpnPeer) -> bool,
) -> VpnPeer {
    eventually(what, TIMEOUT, || async {
        api.get_opt(name).await.ok().flatten().filter(|o| pred(o))
    })
    .await
}

pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(&format!("{name} to be deleted"), TIMEOUT, || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await
}

pub fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<(String, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub fn instance_ready(o: &VpnInstance) -> bool {
    let Some(s) = o.status.as_ref() else { return false };
    s.observed_generation == o.metadata.generation
        && condition(&s.conditions, "Ready").is_some_and(|(status, _, _)| status == "True")
}

pub fn peer_ready(o: &VpnPeer) -> bool {
    let Some(s) = o.status.as_ref() else { return false };
    s.observed_generation == o.metadata.generation
        && condition(&s.conditions, "Ready").is_some_and(|(status, _, _)| status == "True")
}

/// The ownership record `name` (`instance.<hostname>`, `peer.<uid>`), if any.
pub async fn ownership_record(client: &Client, name: &str) -> Option<OwnershipRecord> {
    let records: Api<OwnershipRecord> = Api::all(client.clone());
    records.get_opt(name).await.unwrap()
}

/// Whether the hub with this hostname has a create claimed: its record holds a claim and no id
/// yet (the record is written right before the POST goes to the rate limiter).
pub async fn create_claimed(client: &Client, hostname: &str) -> bool {
    ownership_record(client, &format!("instance.{hostname}"))
        .await
        .is_some_and(|r| r.spec.claimed_at.is_some() && r.spec.instance_id.is_none())
}

pub fn instance_manifest(name: &str, hostname: &str, extra: Value) -> VpnInstance {
    let mut spec = json!({
        "name": format!("{name} hub"),
        "hostname": hostname,
        "region": "sjc",
        "pushedRoutes": ["10.10.0.0/16"],
        "publicDns": ["1.1.1.1", "8.8.8.8"],
    });
    merge(&mut spec, extra);
    serde_json::from_value(json!({
        "apiVersion": "vpn.altostrat.io/v1alpha1",
        "kind": "VpnInstance",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

pub fn client_peer_manifest(name: &str, instance: &str, user_id: &str) -> VpnPeer {
    serde_json::from_value(json!({
        "apiVersion": "vpn.altostrat.io/v1alpha1",
        "kind": "VpnPeer",
        "metadata": {"name": name},
        "spec": {"instanceRef": {"name": instance}, "type": "client", "protocol": "wireguard", "userId": user_id},
    }))
    .unwrap()
}

pub fn site_peer_manifest(name: &str, instance: &str, site_id: &str, subnets: &[&str]) -> VpnPeer {
    serde_json::from_value(json!({
        "apiVersion": "vpn.altostrat.io/v1alpha1",
        "kind": "VpnPeer",
        "metadata": {"name": name},
        "spec": {"instanceRef": {"name": instance}, "type": "site", "protocol": "openvpn", "siteId": site_id, "subnets": subnets},
    }))
    .unwrap()
}

fn merge(base: &mut Value, extra: Value) {
    if let (Value::Object(base), Value::Object(extra)) = (base, extra) {
        for (k, v) in extra {
            base.insert(k, v);
        }
    }
}

pub async fn apply<K>(api: &Api<K>, obj: &K)
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap();
    api.patch(
        &name,
        &PatchParams::apply("e2e-tests").force(),
        &Patch::Apply(obj),
    )
    .await
    .unwrap();
}

pub async fn merge_patch<K>(api: &Api<K>, name: &str, patch: Value)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The simulator as an external observer sees it, over HTTP.
pub struct SimClient {
    pub base_url: String,
    http: reqwest::Client,
}

impl SimClient {
    pub fn new(sim: &RunningSimulator) -> Self {
        Self {
            base_url: sim.base_url().to_string(),
            http: reqwest::Client::new(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base_url))
    }

    /// A request to the public API, with the test token.
    fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path).bearer_auth(TOKEN)
    }

    /// Sends a request that must succeed.
    async fn succeed(request: reqwest::RequestBuilder) -> reqwest::Response {
        request.send().await.unwrap().error_for_status().unwrap()
    }

    /// Every instance, whichever list shape the simulator's profile answers with.
    pub async fn instances(&self) -> Vec<Instance> {
        let list: ListResponse<Instance> = Self::succeed(self.api(Method::GET, "/vpn/instances"))
            .await
            .json()
            .await
            .unwrap();
        list.items
    }

    pub async fn instance(&self, id: &str) -> Option<Instance> {
        let r = self
            .api(Method::GET, &format!("/vpn/instances/{id}"))
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            return None;
        }
        Some(r.error_for_status().unwrap().json().await.unwrap())
    }

    pub async fn create_instance(&self, name: &str, hostname: &str) -> Instance {
        let body = json!({"name": name, "hostname": hostname, "region": "sjc"});
        Self::succeed(self.api(Method::POST, "/vpn/instances").json(&body))
            .await
            .json()
            .await
            .unwrap()
    }

    pub async fn peers(&self, instance_id: &str) -> Vec<Peer> {
        let path = format!("/vpn/instances/{instance_id}/peers");
        let list: ListResponse<Peer> = Self::succeed(self.api(Method::GET, &path))
            .await
            .json()
            .await
            .unwrap();
        list.items
    }

    /// Deletes a user in Altostrat, which removes their peers and refuses new ones.
    pub async fn delete_user(&self, user_id: &str) {
        Self::succeed(self.request(Method::DELETE, &format!("/_admin/users/{user_id}"))).await;
    }

    /// Deletes a site in Altostrat, which removes its peers and refuses new ones.
    pub async fn delete_site(&self, site_id: &str) {
        Self::succeed(self.request(Method::DELETE, &format!("/_admin/sites/{site_id}"))).await;
    }

    /// Expires the peer's share token now, as its `token_ttl` passing would.
    pub async fn expire_share_token(&self, peer_id: &str) {
        let path = format!("/_admin/peers/{peer_id}/expire-token");
        Self::succeed(self.request(Method::POST, &path)).await;
    }

    /// Calls per "METHOD /route/template" since the last reset.
    pub async fn calls(&self) -> BTreeMap<String, u64> {
        self.call_counts("counts").await
    }

    /// Calls per "METHOD /route/template STATUS" since the last reset.
    pub async fn calls_by_status(&self) -> BTreeMap<String, u64> {
        self.call_counts("by_status").await
    }

    async fn call_counts(&self, key: &str) -> BTreeMap<String, u64> {
        let body: Value = self
            .request(Method::GET, "/_admin/calls")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        serde_json::from_value(body[key].clone()).unwrap_or_default()
    }

    pub async fn count(&self, key: &str) -> u64 {
        self.calls().await.get(key).copied().unwrap_or(0)
    }

    pub async fn reset_calls(&self) {
        Self::succeed(self.request(Method::POST, "/_admin/calls/reset")).await;
    }

    pub async fn set_faults(&self, faults: Value) {
        Self::succeed(self.request(Method::PUT, "/_admin/faults").json(&faults)).await;
    }
}

/// Waits until the instance's Ready condition has `reason`; returns the Ready message.
pub async fn wait_instance_reason(api: &Api<VpnInstance>, name: &str, reason: &str) -> String {
    let obj = wait_instance(api, name, reason, |o| {
        o.status
            .as_ref()
            .and_then(|s| condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.1 == reason)
    })
    .await;
    condition(&obj.status.unwrap().conditions, "Ready").unwrap().2
}

/// Waits until the peer's Ready condition has `reason`; returns the Ready message.
pub async fn wait_peer_reason(api: &Api<VpnPeer>, name: &str, reason: &str) -> String {
    let obj = wait_peer(api, name, reason, |p| {
        p.status
            .as_ref()
            .and_then(|s| condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.1 == reason)
    })
    .await;
    condition(&obj.status.unwrap().conditions, "Ready").unwrap().2
}

/// The notes of the Warning events of `reason` in `namespace`, each once per event object and
/// once more per repeat the recorder folded into it.
pub async fn warnings(client: &Client, namespace: &str, reason: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    let listed = events.list(&Default::default()).await.expect("list events");
    listed
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
        .flat_map(|e| {
            let times = e.series.as_ref().map_or(1, |s| s.count.max(1)) as usize;
            std::iter::repeat_n(e.note.unwrap_or_default(), times)
        })
        .collect()
}
