//! In-process fakes for reconcile tests: a Kubernetes API that stores objects and honours
//! `resourceVersion` preconditions, and an Altostrat API with state, a call log and faults.
//! A reconcile runs against them unchanged, in milliseconds, without a control plane.

use std::collections::{BTreeMap, HashMap, HashSet};
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
use super::driver::{Reconciler, reconcile};
use super::error::Result;
use crate::altostrat::model::{
    ClientConfiguration, Country, Instance, InstanceCreate, InstanceUpdate, Peer, PeerCreate, PeerType,
    PeerUpdate, RegionResponse,
};
use crate::altostrat::{ApiError, ApiResult, ApiToken, Endpoint, VpnApi};
use crate::crd::{VpnInstance, VpnPeer};
use crate::metrics::Metrics;

pub const NS: &str = "team-a";
pub const TOKEN: &str = "operator-token";

// ---------------------------------------------------------------------------------------------
// Kubernetes

/// A request the fake Kubernetes API answered: method, path (without query), status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeCall {
    pub method: Method,
    pub path: String,
    pub status: u16,
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
        let state = self.0.lock().unwrap();
        state
            .objects
            .iter()
            .filter(|(path, _)| path.contains("/events/"))
            .map(|(_, e)| {
                let type_ = e["type"].as_str().unwrap_or_default().to_owned();
                (type_, e["reason"].as_str().unwrap_or_default().to_owned())
            })
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

#[derive(Default)]
struct AltostratState {
    instances: BTreeMap<String, Instance>,
    /// Peers by instance id.
    peers: BTreeMap<String, Vec<Peer>>,
    /// Hostnames taken by instances these credentials cannot see (another account).
    foreign_hostnames: HashSet<String>,
    calls: Vec<Endpoint>,
    /// Applied, but the answer is lost (a timeout): once per entry.
    lose_answer: HashSet<Endpoint>,
    /// Refused without being applied: once per entry.
    refuse: HashMap<Endpoint, ApiError>,
    unprovisioned: bool,
    /// Applied to every instance an update writes, as a server that rewrites values would.
    normalise: Option<fn(&mut Instance)>,
    /// A deleted instance stays until [`FakeAltostrat::finish_teardowns`], as an asynchronous
    /// teardown would keep it.
    slow_teardown: bool,
    next_id: u64,
    /// Share tokens past their lifetime: refused, and replaced when a read shows their peer.
    expired_tokens: HashSet<String>,
}

/// An in-process Altostrat API: instances and peers in memory, hostnames unique across
/// accounts, a log of every call and one-shot faults.
#[derive(Default)]
pub struct FakeAltostrat(Mutex<AltostratState>);

impl FakeAltostrat {
    pub fn calls(&self) -> Vec<Endpoint> {
        self.0.lock().unwrap().calls.clone()
    }

    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.calls().iter().filter(|e| **e == endpoint).count()
    }

    pub fn clear_calls(&self) {
        self.0.lock().unwrap().calls.clear();
    }

    pub fn instances(&self) -> Vec<Instance> {
        self.0.lock().unwrap().instances.values().cloned().collect()
    }

    pub fn peers(&self, instance_id: &str) -> Vec<Peer> {
        self.0
            .lock()
            .unwrap()
            .peers
            .get(instance_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Every share token issued so far expires now.
    pub fn expire_share_tokens(&self) {
        let mut state = self.0.lock().unwrap();
        let tokens: Vec<String> = state
            .peers
            .values()
            .flatten()
            .filter_map(|p| p.token.clone())
            .collect();
        state.expired_tokens.extend(tokens);
    }

    /// New instances stay unprovisioned until [`FakeAltostrat::provision_all`].
    pub fn hold_provisioning(&self) {
        self.0.lock().unwrap().unprovisioned = true;
    }

    /// Every later update is rewritten by `normalise` before it is stored and answered.
    pub fn normalise_updates(&self, normalise: fn(&mut Instance)) {
        self.0.lock().unwrap().normalise = Some(normalise);
    }

    /// Every later instance DELETE is accepted and leaves the instance in place until
    /// [`FakeAltostrat::finish_teardowns`].
    pub fn tear_down_slowly(&self) {
        self.0.lock().unwrap().slow_teardown = true;
    }

    /// Ends every teardown: the instances whose DELETE was accepted are gone.
    pub fn finish_teardowns(&self) {
        let mut state = self.0.lock().unwrap();
        state.slow_teardown = false;
        let deleting: Vec<String> = state
            .instances
            .iter()
            .filter(|(_, i)| i.status.iter().any(|s| s == "deleting"))
            .map(|(id, _)| id.clone())
            .collect();
        for id in deleting {
            state.instances.remove(&id);
            state.peers.remove(&id);
        }
    }

    pub fn provision_all(&self) {
        let mut state = self.0.lock().unwrap();
        state.unprovisioned = false;
        state.instances.values_mut().for_each(provision);
    }

    pub fn lose_answer(&self, endpoint: Endpoint) {
        self.0.lock().unwrap().lose_answer.insert(endpoint);
    }

    pub fn refuse(&self, endpoint: Endpoint, error: ApiError) {
        self.0.lock().unwrap().refuse.insert(endpoint, error);
    }

    pub fn take_hostname_elsewhere(&self, hostname: &str) {
        self.0
            .lock()
            .unwrap()
            .foreign_hostnames
            .insert(hostname.to_owned());
    }

    /// Changes an instance out of band.
    pub fn edit_instance(&self, id: &str, edit: impl FnOnce(&mut Instance)) {
        edit(
            self.0
                .lock()
                .unwrap()
                .instances
                .get_mut(id)
                .expect("instance exists"),
        );
    }

    pub fn remove_instance(&self, id: &str) {
        let mut state = self.0.lock().unwrap();
        state.instances.remove(id);
        state.peers.remove(id);
    }

    pub fn remove_peer(&self, instance_id: &str, peer_id: &str) {
        let mut state = self.0.lock().unwrap();
        state
            .peers
            .entry(instance_id.into())
            .or_default()
            .retain(|p| p.id != peer_id);
    }

    /// Puts a peer in place as if created by someone else at `created_at`.
    pub fn add_peer(&self, instance_id: &str, body: &PeerCreate, created_at: &str) -> Peer {
        let mut state = self.0.lock().unwrap();
        let mut peer = state.new_peer(body);
        peer.created_at = Some(created_at.into());
        state
            .peers
            .entry(instance_id.into())
            .or_default()
            .push(peer.clone());
        peer
    }

    /// Puts a provisioned instance in place as if created by someone else at `created_at`
    /// with these credentials (visible to them).
    pub fn add_instance(&self, hostname: &str, created_at: &str) -> Instance {
        let mut state = self.0.lock().unwrap();
        let id = state.next_id("i");
        let mut instance = Instance {
            id: id.clone(),
            name: "Made elsewhere".into(),
            region: "sjc".into(),
            hostname: format!("{hostname}.vpn.altostr.at"),
            public_dns: vec!["1.1.1.1".into(), "9.9.9.9".into()],
            created_at: Some(created_at.into()),
            ..Instance::default()
        };
        provision(&mut instance);
        state.instances.insert(id, instance.clone());
        instance
    }

    /// Logs the call and returns the fault to answer with, if any: `Err` refuses before
    /// applying; `Ok(true)` applies and then loses the answer.
    fn begin(&self, endpoint: Endpoint) -> ApiResult<bool> {
        let mut state = self.0.lock().unwrap();
        state.calls.push(endpoint);
        if let Some(error) = state.refuse.remove(&endpoint) {
            return Err(error);
        }
        Ok(state.lose_answer.remove(&endpoint))
    }
}

/// Altostrat's clock, at its second precision.
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap()
        .to_string()
}

fn provision(instance: &mut Instance) {
    instance.configured = true;
    instance.rsa_ready = true;
    instance.diffie_hellman_ready = true;
    instance.server_ready = true;
}

fn lost(endpoint: Endpoint) -> ApiError {
    ApiError::Transport {
        endpoint,
        message: "timed out waiting for the answer".into(),
    }
}

fn not_found(endpoint: Endpoint) -> ApiError {
    ApiError::NotFound {
        endpoint,
        message: "not found".into(),
    }
}

/// Applies `result` unless the answer is to be lost.
fn answer<T>(endpoint: Endpoint, lose: bool, result: ApiResult<T>) -> ApiResult<T> {
    match result {
        Ok(_) if lose => Err(lost(endpoint)),
        other => other,
    }
}

impl AltostratState {
    fn next_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    fn new_peer(&mut self, body: &PeerCreate) -> Peer {
        let id = self.next_id("p");
        let token = (body.peer_type == PeerType::Client).then(|| format!("share-{id}-{}", self.next_id));
        Peer {
            token,
            id,
            peer_type: body.peer_type,
            user_id: body.user_id.clone(),
            site_id: body.site_id.clone(),
            subnets: body.subnets.clone().unwrap_or_default(),
            route_all: body.route_all.unwrap_or_default(),
            protocol: body.protocol,
            created_at: Some(now()),
            ..Peer::default()
        }
    }

    /// Issues a new share token to every peer of `instance_id` whose token expired.
    fn reissue_tokens(&mut self, instance_id: &str) {
        let expired = std::mem::take(&mut self.expired_tokens);
        let mut serial = self.next_id;
        for peer in self.peers.get_mut(instance_id).into_iter().flatten() {
            if peer.token.as_ref().is_some_and(|t| expired.contains(t)) {
                serial += 1;
                peer.token = Some(format!("share-{}-{serial}", peer.id));
            }
        }
        self.next_id = serial;
        self.expired_tokens = expired;
    }

    /// The WireGuard profile of the peer holding `share`, as Altostrat would build it now.
    fn profile(&self, share: &str) -> Option<String> {
        let (instance_id, peer) = self.peers.iter().find_map(|(instance_id, peers)| {
            let peer = peers.iter().find(|p| p.token.as_deref() == Some(share))?;
            Some((instance_id, peer))
        })?;
        let instance = self.instances.get(instance_id)?;
        let allowed = match peer.route_all {
            true => "0.0.0.0/0".to_owned(),
            false => instance.pushed_routes.join(", "),
        };
        Some(format!(
            "[Interface]\nPrivateKey = PRIVATE-KEY-OF-{}\nAddress = 10.8.0.2/32\n\n[Peer]\nEndpoint = {}:51820\nAllowedIPs = {allowed}\n",
            peer.id, instance.hostname
        ))
    }

    fn create_instance(&mut self, body: &InstanceCreate) -> ApiResult<Instance> {
        let taken = self.foreign_hostnames.contains(&body.hostname)
            || self
                .instances
                .values()
                .any(|i| i.hostname_label() == body.hostname);
        if taken {
            return Err(ApiError::Conflict {
                endpoint: Endpoint::CreateInstance,
                code: "hostname_taken".into(),
                message: format!("The hostname {} is already taken.", body.hostname),
            });
        }
        let mut instance = Instance {
            id: self.next_id("i"),
            name: body.name.clone(),
            region: body.region.clone(),
            hostname: format!("{}.vpn.altostr.at", body.hostname),
            public_dns: vec!["1.1.1.1".into(), "8.8.8.8".into()],
            created_at: Some(now()),
            ..Instance::default()
        };
        if !self.unprovisioned {
            provision(&mut instance);
        }
        self.instances.insert(instance.id.clone(), instance.clone());
        Ok(instance)
    }
}

impl VpnApi for FakeAltostrat {
    async fn list_regions(&self, _: &ApiToken) -> ApiResult<RegionResponse> {
        self.begin(Endpoint::ListRegions)?;
        let country = Country {
            iso: "US".into(),
            cities: [("sjc".to_owned(), "Silicon Valley".to_owned())].into(),
            ..Country::default()
        };
        Ok([(
            "North America".to_owned(),
            [("United States".to_owned(), country)].into(),
        )]
        .into())
    }

    async fn list_instances(&self, _: &ApiToken) -> ApiResult<Vec<Instance>> {
        self.begin(Endpoint::ListInstances)?;
        Ok(self.instances())
    }

    async fn get_instance(&self, _: &ApiToken, id: &str) -> ApiResult<Instance> {
        self.begin(Endpoint::GetInstance)?;
        let state = self.0.lock().unwrap();
        state
            .instances
            .get(id)
            .cloned()
            .ok_or(not_found(Endpoint::GetInstance))
    }

    async fn create_instance(&self, _: &ApiToken, body: &InstanceCreate) -> ApiResult<Instance> {
        let lose = self.begin(Endpoint::CreateInstance)?;
        let result = self.0.lock().unwrap().create_instance(body);
        answer(Endpoint::CreateInstance, lose, result)
    }

    async fn update_instance(&self, _: &ApiToken, id: &str, body: &InstanceUpdate) -> ApiResult<Instance> {
        let lose = self.begin(Endpoint::UpdateInstance)?;
        let mut state = self.0.lock().unwrap();
        let normalise = state.normalise;
        let result = state
            .instances
            .get_mut(id)
            .map(|i| {
                i.name = body.name.clone();
                i.pushed_routes = body.pushed_routes.clone();
                i.public_dns = body.public_dns.clone();
                i.domains = body.domains.clone();
                i.split_dns = body.split_dns.clone();
                i.dns_custom = body.dns_custom.clone();
                if let Some(normalise) = normalise {
                    normalise(i);
                }
                i.clone()
            })
            .ok_or(not_found(Endpoint::UpdateInstance));
        answer(Endpoint::UpdateInstance, lose, result)
    }

    async fn delete_instance(&self, _: &ApiToken, id: &str) -> ApiResult<()> {
        let lose = self.begin(Endpoint::DeleteInstance)?;
        let mut state = self.0.lock().unwrap();
        if state.slow_teardown
            && let Some(instance) = state.instances.get_mut(id)
        {
            instance.status = vec!["deleting".into()];
            return answer(Endpoint::DeleteInstance, lose, Ok(()));
        }
        let result = state
            .instances
            .remove(id)
            .map(drop)
            .ok_or(not_found(Endpoint::DeleteInstance));
        state.peers.remove(id);
        answer(Endpoint::DeleteInstance, lose, result)
    }

    async fn list_peers(
        &self,
        _: &ApiToken,
        instance_id: &str,
        kind: Option<PeerType>,
    ) -> ApiResult<Vec<Peer>> {
        self.begin(Endpoint::ListPeers)?;
        let mut state = self.0.lock().unwrap();
        if !state.instances.contains_key(instance_id) {
            return Err(not_found(Endpoint::ListPeers));
        }
        state.reissue_tokens(instance_id);
        let peers = state.peers.get(instance_id).cloned().unwrap_or_default();
        Ok(peers
            .into_iter()
            .filter(|p| kind.is_none_or(|k| p.peer_type == k))
            .collect())
    }

    async fn get_peer(&self, _: &ApiToken, instance_id: &str, peer_id: &str) -> ApiResult<Peer> {
        self.begin(Endpoint::GetPeer)?;
        let mut state = self.0.lock().unwrap();
        state.reissue_tokens(instance_id);
        let peers = state.peers.get(instance_id);
        let found = peers.and_then(|ps| ps.iter().find(|p| p.id == peer_id));
        found.cloned().ok_or(not_found(Endpoint::GetPeer))
    }

    async fn create_peer(&self, _: &ApiToken, instance_id: &str, body: &PeerCreate) -> ApiResult<Peer> {
        let lose = self.begin(Endpoint::CreatePeer)?;
        let mut state = self.0.lock().unwrap();
        if !state.instances.contains_key(instance_id) {
            return Err(not_found(Endpoint::CreatePeer));
        }
        let peer = state.new_peer(body);
        state
            .peers
            .entry(instance_id.into())
            .or_default()
            .push(peer.clone());
        answer(Endpoint::CreatePeer, lose, Ok(peer))
    }

    async fn update_peer(
        &self,
        _: &ApiToken,
        instance_id: &str,
        peer_id: &str,
        body: &PeerUpdate,
    ) -> ApiResult<Peer> {
        let lose = self.begin(Endpoint::UpdatePeer)?;
        let mut state = self.0.lock().unwrap();
        let peer = state
            .peers
            .get_mut(instance_id)
            .and_then(|ps| ps.iter_mut().find(|p| p.id == peer_id));
        let result = peer
            .map(|p| {
                if let Some(subnets) = &body.subnets {
                    p.subnets = subnets.clone();
                }
                if let Some(route_all) = body.route_all {
                    p.route_all = route_all;
                }
                p.clone()
            })
            .ok_or(not_found(Endpoint::UpdatePeer));
        answer(Endpoint::UpdatePeer, lose, result)
    }

    async fn delete_peer(&self, _: &ApiToken, instance_id: &str, peer_id: &str) -> ApiResult<()> {
        let lose = self.begin(Endpoint::DeletePeer)?;
        let mut state = self.0.lock().unwrap();
        let peers = state.peers.entry(instance_id.into()).or_default();
        let before = peers.len();
        peers.retain(|p| p.id != peer_id);
        let result = if peers.len() < before {
            Ok(())
        } else {
            Err(not_found(Endpoint::DeletePeer))
        };
        answer(Endpoint::DeletePeer, lose, result)
    }
    async fn client_configuration(&self, _: &ApiToken, share: &ApiToken) -> ApiResult<ClientConfiguration> {
        self.begin(Endpoint::GetClientConfiguration)?;
        let state = self.0.lock().unwrap();
        let refused = || ApiError::Unauthorized {
            endpoint: Endpoint::GetClientConfiguration,
            message: "The share token is invalid or expired.".into(),
        };
        if state.expired_tokens.contains(share.expose()) {
            return Err(refused());
        }
        let profile = state.profile(share.expose()).ok_or_else(refused)?;
        Ok(ClientConfiguration::Text(profile))
    }
}

// ---------------------------------------------------------------------------------------------
// A reconcile harness

/// Both fakes, a context over them and the instance cache peers read.
pub struct Harness {
    pub kube: FakeKube,
    pub altostrat: Arc<FakeAltostrat>,
    pub ctx: Arc<Context<FakeAltostrat>>,
    instances: Mutex<Writer<VpnInstance>>,
    peers: Mutex<Writer<VpnPeer>>,
}

impl Harness {
    pub fn new() -> Self {
        let kube = FakeKube::default();
        let altostrat = Arc::new(FakeAltostrat::default());
        let (store, writer) = reflector::store();
        let (peer_store, peer_writer) = reflector::store();
        let mut registry = prometheus_client::registry::Registry::default();
        let reporter = Reporter {
            controller: "vpn-operator".into(),
            instance: Some("test".into()),
        };
        let ctx = Context::new(
            kube.client(),
            altostrat.clone(),
            Arc::default(),
            Arc::new(super::default_token::DefaultToken::fixed(ApiToken::new(TOKEN))),
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
    pub fn apply<K: Reconciler + serde::Serialize>(&self, mut obj: K) -> K {
        obj.meta_mut().namespace.get_or_insert_with(|| NS.into());
        obj.meta_mut().generation.get_or_insert(1);
        let stored = self.kube.put(&obj);
        self.sync_cache(&stored);
        stored
    }

    /// Edits the stored `obj` as an apply of a changed spec would: `edit` changes it, and the
    /// API server's generation goes up by one.
    pub fn edit<K: Reconciler + serde::Serialize>(&self, obj: &K, edit: impl FnOnce(&mut K)) -> K {
        let mut current = self.stored(obj).expect("object exists");
        edit(&mut current);
        let generation = current.meta().generation.unwrap_or(1) + 1;
        current.meta_mut().generation = Some(generation);
        self.apply(current)
    }

    /// Sets an annotation of the stored `obj` (`None` removes it), as `kubectl annotate`
    /// would: the generation stays.
    pub fn annotate<K: Reconciler + serde::Serialize>(&self, obj: &K, key: &str, value: Option<&str>) -> K {
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
    pub async fn reconcile<K: Reconciler + serde::Serialize>(&self, obj: &K) -> Result<Action> {
        let current = self.kube.get(obj).expect("object exists");
        let result = reconcile(Arc::new(current), self.ctx.clone()).await;
        if let Some(after) = self.kube.get(obj) {
            self.sync_cache(&after);
        }
        result
    }

    /// Marks the stored `obj` as deleted (its finalizers keep it), as `kubectl delete` would.
    pub fn delete<K: Reconciler + serde::Serialize>(&self, obj: &K) {
        let mut current = self.kube.get(obj).expect("object exists");
        current.meta_mut().deletion_timestamp = Some(super::conditions::now());
        let stored = self.kube.put(&current);
        self.sync_cache(&stored);
    }

    /// Removes `obj` from the API and the caches, as the API server does once its finalizers
    /// are gone.
    pub fn remove<K: Reconciler + serde::Serialize>(&self, obj: &K) {
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
    pub fn holds_finalizer<K: Reconciler>(&self, obj: &K) -> bool {
        self.stored(obj)
            .is_some_and(|o| o.finalizers().iter().any(|f| f == crate::crd::FINALIZER))
    }

    /// The stored version of `obj`; `None` once deleted.
    pub fn stored<K: Reconciler>(&self, obj: &K) -> Option<K> {
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
