//! In-process stand-ins for reconcile tests: a Kubernetes API that stores objects and honours
//! `resourceVersion` preconditions, and the Altostrat simulator served on loopback, which the
//! operator's real HTTP client talks to. A reconcile runs against them unchanged, in
//! milliseconds, without a control plane.
#![cfg(feature = "simulator")]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::context::{Context, Settings};
use super::error::Result;
use super::lifecycle::{Managed, reconcile};
use crate::altostrat::model::{
    ClientConfiguration, Instance, InstanceCreate, InstanceUpdate, Peer, PeerCreate, PeerType, PeerUpdate,
    RegionResponse,
};
use crate::altostrat::{ApiError, ApiResult, ApiToken, Endpoint, HttpClient, HttpClientConfig, VpnApi};
use crate::crd::{VpnInstance, VpnPeer};
use crate::metrics::Metrics;

mod every_profile;
use crate::simulator::{Core, Fidelity, SeedInstance, Simulator, SimulatorConfig};

pub const NS: &str = "team-a";
pub const TOKEN: &str = "operator-token";
/// The token of the credentials Secrets tests create; same account as [`TOKEN`].
pub const CREDENTIALS_TOKEN: &str = "team-token";

// ---------------------------------------------------------------------------------------------
// Kubernetes

/// A request the fake Kubernetes API answered: method, path (without query), status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeCall {
    pub method: Method,
    pub path: String,
    pub status: u16,
}

/// An event as the API server stored it: what a user reads in `kubectl describe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotedEvent {
    pub type_: String,
    pub reason: String,
    pub note: String,
}

#[derive(Default)]
struct KubeState {
    /// Objects by path (`/apis/.../namespaces/ns/vpnpeers/name`).
    objects: BTreeMap<String, Value>,
    calls: Vec<KubeCall>,
    next_version: u64,
}

/// A Kubernetes API that keeps objects in memory. It serves what a reconcile calls: GET of one
/// object, LIST of a collection, merge PATCH and PUT (with `metadata.resourceVersion` as a
/// precondition), server-side apply of `/status`, POST (409 for an existing object other than
/// an event) and DELETE.
#[derive(Clone, Default)]
pub struct FakeKube(Arc<Mutex<KubeState>>);

impl FakeKube {
    pub fn client(&self) -> Client {
        let state = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(state.answer(request).await) }
        });
        Client::new(service, NS)
    }

    /// Stores `obj` (a new resourceVersion is assigned) and returns it as stored.
    pub fn put<K: Resource<DynamicType = ()> + serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        obj: &K,
    ) -> K {
        let mut value = serde_json::to_value(obj).unwrap();
        value["apiVersion"] = json!(K::api_version(&()));
        value["kind"] = json!(K::kind(&()));
        let path = object_path::<K>(obj.meta().namespace.as_deref().unwrap_or(NS), &obj.name_any());
        let mut state = self.0.lock().unwrap();
        state.store(path.clone(), value);
        serde_json::from_value(state.objects[&path].clone()).unwrap()
    }

    /// Creates or relabels the Namespace `name` (cluster-scoped: grants select namespaces by
    /// their labels).
    pub fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let value =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}});
        self.0
            .lock()
            .unwrap()
            .store(format!("/api/v1/namespaces/{name}"), value);
    }

    /// The stored version of `obj`, as the watch would deliver it next.
    pub fn get<K: Resource<DynamicType = ()> + serde::de::DeserializeOwned>(&self, obj: &K) -> Option<K> {
        let path = object_path::<K>(obj.meta().namespace.as_deref().unwrap_or(NS), &obj.name_any());
        let state = self.0.lock().unwrap();
        state
            .objects
            .get(&path)
            .map(|v| serde_json::from_value(v.clone()).unwrap())
    }

    pub fn calls(&self) -> Vec<KubeCall> {
        self.0.lock().unwrap().calls.clone()
    }

    /// Events created, as `(type, reason)`.
    pub fn events(&self) -> Vec<(String, String)> {
        self.noted_events()
            .into_iter()
            .map(|e| (e.type_, e.reason))
            .collect()
    }

    /// Events created, with the note each carries, ordered by name: an event is named after its
    /// object and the time it was made, so one object's events come in the order they were made.
    pub fn noted_events(&self) -> Vec<NotedEvent> {
        let state = self.0.lock().unwrap();
        let text = |e: &Value, field: &str| e[field].as_str().unwrap_or_default().to_owned();
        state
            .objects
            .iter()
            .filter(|(path, _)| path.contains("/events/"))
            .map(|(_, e)| NotedEvent {
                type_: text(e, "type"),
                reason: text(e, "reason"),
                note: text(e, "note"),
            })
            .collect()
    }

    /// The notes of the events of `reason`.
    pub fn notes(&self, reason: &str) -> Vec<String> {
        self.noted_events()
            .into_iter()
            .filter(|e| e.reason == reason)
            .map(|e| e.note)
            .collect()
    }

    pub fn clear_calls(&self) {
        self.0.lock().unwrap().calls.clear();
    }

    /// The ownership records stored.
    pub fn records(&self) -> Vec<crate::crd::OwnershipRecord> {
        let state = self.0.lock().unwrap();
        state
            .objects
            .iter()
            .filter(|(path, _)| path.contains("/ownershiprecords/"))
            .map(|(_, v)| serde_json::from_value(v.clone()).unwrap())
            .collect()
    }

    /// Removes `obj`, as the API server does once its finalizers are gone.
    pub fn remove<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        let path = object_path::<K>(obj.meta().namespace.as_deref().unwrap_or(NS), &obj.name_any());
        self.0.lock().unwrap().objects.remove(&path);
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let is_apply = request
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"application/apply-patch"));
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut state = self.0.lock().unwrap();
        let (status, answer) = state.handle(&method, &path, body, is_apply);
        state.calls.push(KubeCall {
            method,
            path,
            status: status.as_u16(),
        });
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap()
    }
}

impl KubeState {
    fn store(&mut self, path: String, mut value: Value) {
        self.next_version += 1;
        value["metadata"]["resourceVersion"] = json!(self.next_version.to_string());
        if value["metadata"]["uid"].is_null() {
            value["metadata"]["uid"] = json!(format!("uid-{}", self.next_version));
        }
        self.objects.insert(path, value);
    }

    fn handle(&mut self, method: &Method, path: &str, body: Value, is_apply: bool) -> (StatusCode, Value) {
        let (object, subresource) = match path.strip_suffix("/status") {
            Some(object) => (object, true),
            None => (path, false),
        };
        match *method {
            Method::GET if self.objects.contains_key(object) => {
                (StatusCode::OK, self.objects[object].clone())
            }
            Method::GET if path.ends_with('s') => (StatusCode::OK, self.list(path)),
            Method::POST => {
                let name = body["metadata"]["name"].as_str().unwrap_or("unnamed").to_owned();
                let path = format!("{path}/{name}");
                if self.objects.contains_key(&path) && !path.contains("/events/") {
                    return (StatusCode::CONFLICT, status_body(409, "AlreadyExists"));
                }
                self.store(path.clone(), body);
                (StatusCode::CREATED, self.objects[&path].clone())
            }
            Method::PATCH if self.objects.contains_key(object) => {
                self.patch(object, subresource && is_apply, body)
            }
            Method::PUT if self.objects.contains_key(object) => {
                let current = &self.objects[object]["metadata"]["resourceVersion"];
                if body["metadata"]["resourceVersion"] != *current {
                    return (StatusCode::CONFLICT, status_body(409, "Conflict"));
                }
                self.store(object.to_owned(), body);
                (StatusCode::OK, self.objects[object].clone())
            }
            Method::DELETE if self.objects.contains_key(object) => {
                let removed = self.objects.remove(object).unwrap_or_default();
                (StatusCode::OK, removed)
            }
            _ => (StatusCode::NOT_FOUND, status_body(404, "NotFound")),
        }
    }

    fn list(&self, collection: &str) -> Value {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(path, _)| path.rsplit_once('/').is_some_and(|(dir, _)| dir == collection))
            .map(|(_, v)| v.clone())
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
    }

    /// A server-side apply of `/status` replaces the status (the operator owns all of it);
    /// any other patch is a merge patch, with a `resourceVersion` precondition if it names one.
    fn patch(&mut self, path: &str, status_apply: bool, body: Value) -> (StatusCode, Value) {
        let mut current = self.objects[path].clone();
        if status_apply {
            current["status"] = body["status"].clone();
        } else {
            let expected = &body["metadata"]["resourceVersion"];
            if !expected.is_null() && *expected != current["metadata"]["resourceVersion"] {
                return (StatusCode::CONFLICT, status_body(409, "Conflict"));
            }
            merge_patch(&mut current, &body);
        }
        self.store(path.to_owned(), current);
        (StatusCode::OK, self.objects[path].clone())
    }
}

/// A JSON merge patch (RFC 7386), as the API server applies one.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("an object");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn status_body(code: u16, reason: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": reason, "reason": reason, "code": code})
}

fn object_path<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> String {
    let plural = K::plural(&());
    match K::group(&()).as_ref() {
        "" => format!("/api/{}/namespaces/{namespace}/{plural}/{name}", K::version(&())),
        group => format!(
            "/apis/{group}/{}/namespaces/{namespace}/{plural}/{name}",
            K::version(&())
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Altostrat

/// Every endpoint, to read the simulator's call log back as [`Endpoint`]s.
const ENDPOINTS: [Endpoint; 13] = [
    Endpoint::ListInstances,
    Endpoint::CreateInstance,
    Endpoint::GetInstance,
    Endpoint::UpdateInstance,
    Endpoint::DeleteInstance,
    Endpoint::ListPeers,
    Endpoint::CreatePeer,
    Endpoint::GetPeer,
    Endpoint::UpdatePeer,
    Endpoint::DeletePeer,
    Endpoint::ListSiteSubnets,
    Endpoint::ListRegions,
    Endpoint::GetClientConfiguration,
];

/// The account of every token the operator is given in these tests.
const ACCOUNT: &str = crate::simulator::DEFAULT_ACCOUNT;

/// The operator's own HTTP client, plus the refusals the operator's stack makes before a
/// request is sent (the leader fence, the API budget): those never reach Altostrat, so they
/// are injected here rather than in the simulator.
pub struct TestClient {
    http: HttpClient,
    held: Mutex<HashMap<Endpoint, ApiError>>,
}

impl TestClient {
    /// The refusal of the next call to `endpoint`, if one is held.
    fn take_held(&self, endpoint: Endpoint) -> ApiResult<()> {
        match self.held.lock().unwrap().remove(&endpoint) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl VpnApi for TestClient {
    async fn list_regions(&self, token: &ApiToken) -> ApiResult<RegionResponse> {
        self.take_held(Endpoint::ListRegions)?;
        self.http.list_regions(token).await
    }

    async fn list_instances(&self, token: &ApiToken) -> ApiResult<Vec<Instance>> {
        self.take_held(Endpoint::ListInstances)?;
        self.http.list_instances(token).await
    }

    async fn get_instance(&self, token: &ApiToken, id: &str) -> ApiResult<Instance> {
        self.take_held(Endpoint::GetInstance)?;
        self.http.get_instance(token, id).await
    }

    async fn create_instance(&self, token: &ApiToken, body: &InstanceCreate) -> ApiResult<Instance> {
        self.take_held(Endpoint::CreateInstance)?;
        self.http.create_instance(token, body).await
    }

    async fn update_instance(
        &self,
        token: &ApiToken,
        id: &str,
        body: &InstanceUpdate,
    ) -> ApiResult<Instance> {
        self.take_held(Endpoint::UpdateInstance)?;
        self.http.update_instance(token, id, body).await
    }

    async fn delete_instance(&self, token: &ApiToken, id: &str) -> ApiResult<()> {
        self.take_held(Endpoint::DeleteInstance)?;
        self.http.delete_instance(token, id).await
    }

    async fn list_peers(
        &self,
        token: &ApiToken,
        instance_id: &str,
        kind: Option<PeerType>,
    ) -> ApiResult<Vec<Peer>> {
        self.take_held(Endpoint::ListPeers)?;
        self.http.list_peers(token, instance_id, kind).await
    }

    async fn get_peer(&self, token: &ApiToken, instance_id: &str, peer_id: &str) -> ApiResult<Peer> {
        self.take_held(Endpoint::GetPeer)?;
        self.http.get_peer(token, instance_id, peer_id).await
    }

    async fn create_peer(&self, token: &ApiToken, instance_id: &str, body: &PeerCreate) -> ApiResult<Peer> {
        self.take_held(Endpoint::CreatePeer)?;
        self.http.create_peer(token, instance_id, body).await
    }

    async fn update_peer(
        &self,
        token: &ApiToken,
        instance_id: &str,
        peer_id: &str,
        body: &PeerUpdate,
    ) -> ApiResult<Peer> {
        self.take_held(Endpoint::UpdatePeer)?;
        self.http.update_peer(token, instance_id, peer_id, body).await
    }

    async fn delete_peer(&self, token: &ApiToken, instance_id: &str, peer_id: &str) -> ApiResult<()> {
        self.take_held(Endpoint::DeletePeer)?;
        self.http.delete_peer(token, instance_id, peer_id).await
    }

    async fn client_configuration(
        &self,
        token: &ApiToken,
        share: &ApiToken,
    ) -> ApiResult<ClientConfiguration> {
        self.take_held(Endpoint::GetClientConfiguration)?;
        VpnApi::client_configuration(&self.http, token, share).await
    }
}

/// The Altostrat simulator served on loopback inside the test process, with the operations
/// tests use to set the scene: out-of-band changes, held provisioning and teardowns, faults,
/// and the log of every request that reached it.
pub struct SimulatedAltostrat {
    simulator: Simulator,
    client: Arc<TestClient>,
}

impl SimulatedAltostrat {
    /// Serves a simulator answering as `fidelity` on an ephemeral loopback port, from a task
    /// of the current runtime. Instances are provisioned at once and pending status entries
    /// clear at once, unless a test holds them.
    fn start(fidelity: Fidelity) -> Self {
        let config = SimulatorConfig {
            provision_delay: std::time::Duration::ZERO,
            status_clear_delay: std::time::Duration::ZERO,
            tokens: [TOKEN, CREDENTIALS_TOKEN]
                .map(crate::simulator::ApiToken::all_scopes)
                .into(),
            fidelity,
            ..SimulatorConfig::default()
        };
        let simulator = Simulator::new(config).expect("no state file to read");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let base_url = format!("http://{}", listener.local_addr().expect("a bound address"));
        let listener = tokio::net::TcpListener::from_std(listener).expect("inside a tokio runtime");
        tokio::spawn(simulator.clone().serve(listener, std::future::pending()));
        let http = HttpClient::new(HttpClientConfig {
            base_url,
            ..HttpClientConfig::default()
        })
        .expect("an HTTP client");
        Self {
            simulator,
            client: Arc::new(TestClient {
                http,
                held: Mutex::default(),
            }),
        }
    }

    /// A simulator answering as documented.
    pub fn documented() -> Self {
        Self::start(Fidelity::default())
    }

    /// The operator's client of this simulator.
    pub fn api(&self) -> &TestClient {
        &self.client
    }

    fn core(&self) -> &Core {
        self.simulator.core()
    }

    /// Every request that reached the simulator since the last [`Self::clear_calls`], in order.
    pub fn calls(&self) -> Vec<Endpoint> {
        let log = self.core().calls().log;
        log.iter()
            .map(|route| {
                *ENDPOINTS
                    .iter()
                    .find(|e| e.as_str() == route)
                    .expect("a known route")
            })
            .collect()
    }

    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.calls().iter().filter(|e| **e == endpoint).count()
    }

    pub fn clear_calls(&self) {
        self.core().reset_calls();
    }

    /// The instances the operator's token sees, as the API shows them now.
    pub fn instances(&self) -> Vec<Instance> {
        self.core().instances_of(ACCOUNT)
    }

    pub fn peers(&self, instance_id: &str) -> Vec<Peer> {
        self.core().peers_of(instance_id)
    }

    /// Every share token shown so far expires now.
    pub fn expire_share_tokens(&self) {
        self.core().expire_share_tokens();
    }

    /// New instances stay unprovisioned until [`Self::provision_all`].
    pub fn hold_provisioning(&self) {
        self.core().hold_provisioning();
    }

    pub fn provision_all(&self) {
        self.core().provision_all();
    }

    /// Every later update is rewritten by `normalise` before it is stored and answered.
    pub fn normalise_updates(&self, normalise: fn(&mut Instance)) {
        self.core().rewrite_updates(normalise);
    }

    /// Every later instance DELETE is accepted (202) and leaves the instance `deleting` until
    /// [`Self::finish_teardowns`].
    pub fn tear_down_slowly(&self) {
        self.core().hold_teardowns();
    }

    /// Ends every teardown: the instances whose DELETE was accepted are gone.
    pub fn finish_teardowns(&self) {
        self.core().finish_teardowns();
    }

    /// The next request to `endpoint` is applied, and its answer lost: the connection closes.
    pub fn lose_answer(&self, endpoint: Endpoint) {
        self.core().edit_faults(|faults| {
            let rule = faults.rules.entry(endpoint.as_str().to_owned()).or_default();
            rule.fail_next += 1;
            rule.lose_answer = true;
        });
    }

    /// The next call to `endpoint` fails with `error` without being applied: Altostrat answers
    /// it with the status the HTTP client reads as `error`, or, for a refusal the operator's
    /// own stack makes (fenced, throttled), no request is sent at all.
    pub fn refuse(&self, endpoint: Endpoint, error: ApiError) {
        let (status, message, retry_after) = match &error {
            ApiError::Fenced { .. } | ApiError::Throttled { .. } => {
                self.client.held.lock().unwrap().insert(endpoint, error);
                return;
            }
            ApiError::Server { status, message, .. }
            | ApiError::Refused { status, message, .. }
            | ApiError::QuotaExceeded { status, message, .. }
            | ApiError::Invalid { status, message, .. } => (*status, message.clone(), None),
            ApiError::NotFound { message, .. } => (404, message.clone(), None),
            ApiError::Unauthorized { message, .. } => (401, message.clone(), None),
            ApiError::Forbidden { message, .. } => (403, message.clone(), None),
            ApiError::Conflict { message, .. } => (409, message.clone(), None),
            ApiError::RateLimited { retry_after, .. } => {
                (429, String::new(), retry_after.map(|d| d.as_secs()))
            }
            other => panic!("{other} is not an answer Altostrat gives"),
        };
        self.core().edit_faults(|faults| {
            let rule = faults.rules.entry(endpoint.as_str().to_owned()).or_default();
            rule.fail_next += 1;
            rule.status = Some(status);
            rule.message = Some(message).filter(|m| !m.is_empty());
            rule.retry_after_secs = retry_after;
        });
    }

    /// An instance of another account holds `hostname`: the operator cannot see it.
    pub fn take_hostname_elsewhere(&self, hostname: &str) {
        let seed = SeedInstance {
            account: "elsewhere",
            hostname,
            ..SeedInstance::default()
        };
        self.core().seed_instance(&seed).expect("a free hostname");
    }

    /// Changes an instance out of band.
    pub fn edit_instance(&self, id: &str, edit: impl FnOnce(&mut Instance)) {
        self.core().edit_instance(id, edit).expect("instance exists");
    }

    pub fn remove_instance(&self, id: &str) {
        self.core().remove_instance(id);
    }

    pub fn remove_peer(&self, _instance_id: &str, peer_id: &str) {
        self.core().remove_peer(peer_id);
    }

    /// Puts a peer in place as if created by someone else at `created_at`.
    pub fn add_peer(&self, instance_id: &str, body: &PeerCreate, created_at: &str) -> Peer {
        let body = serde_json::to_value(body).unwrap();
        self.core()
            .seed_peer(instance_id, &body, created_at)
            .expect("a valid peer on an existing instance")
    }

    /// Puts a provisioned instance in place as if created by someone else at `created_at`
    /// with these credentials (visible to them), who also set two public resolvers (so that
    /// a PUT may keep them as they are).
    pub fn add_instance(&self, hostname: &str, created_at: &str) -> Instance {
        let seed = SeedInstance {
            hostname,
            created_at,
            ..SeedInstance::default()
        };
        let id = self.core().seed_instance(&seed).expect("a free hostname").id;
        let resolvers = |i: &mut Instance| i.public_dns = vec!["1.1.1.1".into(), "9.9.9.9".into()];
        self.core().edit_instance(&id, resolvers).expect("just seeded")
    }

    /// The user `user_id` is deleted in Altostrat: its peers vanish and new ones for it are
    /// refused.
    pub fn delete_user(&self, user_id: &str) {
        self.core().delete_owner(crate::simulator::Owner::User, user_id);
    }
}

// ---------------------------------------------------------------------------------------------
// A reconcile harness

/// The fake Kubernetes API, the simulated Altostrat, a context over them (with the operator's
/// real HTTP client) and the instance cache peers read.
pub struct Harness {
    pub kube: FakeKube,
    pub altostrat: SimulatedAltostrat,
    pub ctx: Arc<Context<TestClient>>,
    instances: Mutex<Writer<VpnInstance>>,
    peers: Mutex<Writer<VpnPeer>>,
}

impl Harness {
    /// A harness whose Altostrat answers as documented. Call from inside a tokio runtime.
    pub fn new() -> Self {
        Self::with_fidelity(Fidelity::default())
    }

    /// A harness whose Altostrat answers as the simulator profile `name` says.
    pub fn with_profile(name: &str) -> Self {
        Self::with_fidelity(Fidelity::profile(name).expect("a known profile"))
    }

    pub fn with_fidelity(fidelity: Fidelity) -> Self {
        let kube = FakeKube::default();
        let altostrat = SimulatedAltostrat::start(fidelity);
        let (store, writer) = reflector::store();
        let (peer_store, peer_writer) = reflector::store();
        let mut registry = prometheus_client::registry::Registry::default();
        let reporter = Reporter {
            controller: "vpn-operator".into(),
            instance: Some("test".into()),
        };
        let ctx = Context::new(
            kube.client(),
            altostrat.client.clone(),
            Arc::default(),
            (
                Arc::new(super::default_token::DefaultToken::fixed(ApiToken::new(TOKEN))),
                Arc::default(),
            ),
            reporter,
            (Arc::new(Metrics::register(&mut registry)), Arc::default()),
            Settings::default(),
            store,
            peer_store,
        );
        Self {
            kube,
            altostrat,
            ctx: Arc::new(ctx),
            instances: Mutex::new(writer),
            peers: Mutex::new(peer_writer),
        }
    }

    /// Forgets what the reconciles observed of Altostrat, as if every object's drift interval
    /// had passed.
    pub fn observations_expire(&self) {
        self.ctx.observations.forget_all();
    }

    /// Creates `obj` in the fake Kubernetes API, as `kubectl apply` would.
    pub fn apply<K: Managed + serde::Serialize>(&self, mut obj: K) -> K {
        obj.meta_mut().namespace.get_or_insert_with(|| NS.into());
        obj.meta_mut().generation.get_or_insert(1);
        let stored = self.kube.put(&obj);
        self.sync_cache(&stored);
        stored
    }

    /// Edits the stored `obj` as an apply of a changed spec would: `edit` changes it, and the
    /// API server's generation goes up by one.
    pub fn edit<K: Managed + serde::Serialize>(&self, obj: &K, edit: impl FnOnce(&mut K)) -> K {
        let mut current = self.stored(obj).expect("object exists");
        edit(&mut current);
        let generation = current.meta().generation.unwrap_or(1) + 1;
        current.meta_mut().generation = Some(generation);
        self.apply(current)
    }

    /// Sets an annotation of the stored `obj` (`None` removes it), as `kubectl annotate`
    /// would: the generation stays.
    pub fn annotate<K: Managed + serde::Serialize>(&self, obj: &K, key: &str, value: Option<&str>) -> K {
        let mut current = self.stored(obj).expect("object exists");
        let annotations = current
            .meta_mut()
            .annotations
            .get_or_insert_with(Default::default);
        match value {
            Some(value) => annotations.insert(key.to_owned(), value.to_owned()),
            None => annotations.remove(key),
        };
        self.apply(current)
    }

    /// Runs one reconcile of the stored version of `obj` (what the watch would deliver), and
    /// refreshes the instance cache with the result.
    pub async fn reconcile<K: Managed + serde::Serialize>(&self, obj: &K) -> Result<Action> {
        let current = self.kube.get(obj).expect("object exists");
        let result = reconcile(Arc::new(current), self.ctx.clone()).await;
        if let Some(after) = self.kube.get(obj) {
            self.sync_cache(&after);
        }
        result
    }

    /// The Altostrat calls one successful reconcile of `obj` makes.
    pub async fn reconcile_calls<K: Managed + serde::Serialize>(&self, obj: &K) -> Vec<Endpoint> {
        self.altostrat.clear_calls();
        self.reconcile(obj).await.expect("reconcile succeeds");
        self.altostrat.calls()
    }

    /// Marks the stored `obj` as deleted (its finalizers keep it), as `kubectl delete` would.
    pub fn delete<K: Managed + serde::Serialize>(&self, obj: &K) {
        let mut current = self.kube.get(obj).expect("object exists");
        current.meta_mut().deletion_timestamp = Some(super::conditions::now());
        let stored = self.kube.put(&current);
        self.sync_cache(&stored);
    }

    /// Removes `obj` from the API and the caches, as the API server does once its finalizers
    /// are gone.
    pub fn remove<K: Managed + serde::Serialize>(&self, obj: &K) {
        self.kube.remove(obj);
        let value = serde_json::to_value(obj).unwrap();
        if K::kind(&()) == "VpnInstance" {
            let event = watcher::Event::Delete(serde_json::from_value(value).unwrap());
            self.instances.lock().unwrap().apply_watcher_event(&event);
        } else {
            let event = watcher::Event::Delete(serde_json::from_value(value).unwrap());
            self.peers.lock().unwrap().apply_watcher_event(&event);
        }
    }

    /// Whether the stored `obj` holds the operator's finalizer.
    pub fn holds_finalizer<K: Managed>(&self, obj: &K) -> bool {
        self.stored(obj)
            .is_some_and(|o| o.finalizers().iter().any(|f| f == crate::crd::FINALIZER))
    }

    /// The stored version of `obj`; `None` once deleted.
    pub fn stored<K: Managed>(&self, obj: &K) -> Option<K> {
        self.kube.get(obj)
    }

    fn sync_cache<K: Resource<DynamicType = ()> + serde::Serialize>(&self, obj: &K) {
        let value = serde_json::to_value(obj).unwrap();
        if K::kind(&()) == "VpnInstance" {
            let event = watcher::Event::Apply(serde_json::from_value(value).unwrap());
            self.instances.lock().unwrap().apply_watcher_event(&event);
        } else {
            let event = watcher::Event::Apply(serde_json::from_value(value).unwrap());
            self.peers.lock().unwrap().apply_watcher_event(&event);
        }
    }
}

/// The condition of `type_` as `(status, reason)`.
pub fn condition(conditions: &[Condition], type_: &str) -> Option<(String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// The message of the condition of `type_`.
pub fn condition_message(conditions: &[Condition], type_: &str) -> Option<String> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
}

pub fn instance(name: &str, spec: Value) -> VpnInstance {
    let mut base = json!({"name": "Hub", "hostname": name, "region": "sjc"});
    merge(&mut base, spec);
    VpnInstance::new(name, serde_json::from_value(base).unwrap())
}

pub fn peer(name: &str, instance: &str, spec: Value) -> VpnPeer {
    let mut base = json!({
        "instanceRef": {"name": instance}, "type": "client", "protocol": "wireguard",
        "userId": "a1b2c3d4-e5f6-7890-1234-567890abcdef"
    });
    merge(&mut base, spec);
    VpnPeer::new(name, serde_json::from_value(base).unwrap())
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}
