//! The HTTP layer of the simulator: the `/vpn` API and the `/_admin` introspection endpoints
//! as axum routes. Each handler takes what the request carries, asks the [`Core`] and renders
//! its [`Reply`] or [`Failure`]; the rules live in the core.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::core::{Admission, Answer, Body, Core, Failure, Reply};
use super::faults::FaultConfig;
use super::listener::Connection;
use super::share;
use super::state::{Owner, StoredPeer, now_ms};
use super::validate;
use crate::altostrat::model::{Instance, Peer};

type Shared = Arc<Core>;

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = status_code(self.status);
        let mut response = if self.laravel {
            let body = json!({"message": self.body.message, "errors": {self.body.code: [self.body.message]}});
            (status, Json(body)).into_response()
        } else if self.message_only {
            (status, Json(json!({"message": self.body.message}))).into_response()
        } else {
            (status, Json(self.body)).into_response()
        };
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = status_code(self.status);
        let mut response = match self.body {
            Body::Empty => status.into_response(),
            Body::Json(bytes) => (
                status,
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                bytes,
            )
                .into_response(),
            Body::Text(text) => (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                text,
            )
                .into_response(),
        };
        for (name, value) in self.headers {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        response
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub fn router(core: Shared) -> Router {
    let api = Router::new()
        .route("/vpn/instances", get(list_instances).post(create_instance))
        .route(
            "/vpn/instances/{instanceId}",
            get(get_instance).put(update_instance).delete(delete_instance),
        )
        .route(
            "/vpn/instances/{instanceId}/peers",
            get(list_peers).post(create_peer),
        )
        .route(
            "/vpn/instances/{instanceId}/peers/{peerId}",
            get(get_peer).put(update_peer).delete(delete_peer),
        )
        .route("/vpn/site/{siteId}/subnets", get(site_subnets))
        .route("/vpn/servers/regions", get(regions))
        .route("/vpn/client", get(client_configuration))
        .route_layer(middleware::from_fn_with_state(core.clone(), count_and_inject))
        .route_layer(middleware::from_fn_with_state(core.clone(), reshape));
    let admin = Router::new()
        .route("/_admin/calls", get(admin_calls))
        .route("/_admin/calls/reset", post(admin_reset_calls))
        .route("/_admin/faults", get(admin_get_faults).put(admin_put_faults))
        .route("/_admin/state", get(admin_state))
        .route("/_admin/reset", post(admin_reset))
        .route("/_admin/instances/{id}/drift", post(admin_drift))
        .route("/_admin/peers/{id}/connected", post(admin_connected))
        .route("/_admin/peers/{id}/drift", post(admin_peer_drift))
        .route("/_admin/peers/{id}/expire-token", post(admin_expire_token))
        .route("/_admin/users/{id}", delete(admin_delete_user))
        .route("/_admin/sites/{id}", delete(admin_delete_site))
        .route("/_admin/sites/{id}/subnets", put(admin_put_site_subnets));
    api.merge(admin).with_state(core)
}

/// Applies the [`Fidelity`](super::Fidelity) modes that change the shape of answers: lists in
/// the `{data, has_more}` envelope, `{message}`-only error bodies. It wraps the fault layer,
/// so injected faults and 429s are reshaped too.
async fn reshape(State(core): State<Shared>, request: Request, next: Next) -> Response {
    if !core.reshapes_answers() {
        return next.run(request).await;
    }
    let is_get = request.method() == axum::http::Method::GET;
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !is_json || !core.reshapes(is_get, status) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Some(reshaped) = core.reshape(status, &bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(reshaped))
}

/// Counts every request that reached a `/vpn` route and applies the faults the core decides
/// on. A lost answer closes the connection the request came on (when it was accepted by the
/// simulator's own listener; otherwise the client gets a 500 like `apply_then_fail`).
async fn count_and_inject(
    State(core): State<Shared>,
    matched: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let route = format!("{} {}", request.method(), matched.as_str());
    let path = request.uri().path().to_owned();
    let connection = request.extensions().get::<ConnectInfo<Connection>>().cloned();
    let token = bearer(request.headers()).unwrap_or("").to_owned();
    let (delay, admission) = core.admit(&route, &token);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = match admission {
        Admission::Proceed => next.run(request).await,
        Admission::Refuse(failure) => failure.into_response(),
        Admission::ProcessThenFail(failure) => {
            let _ = next.run(request).await;
            failure.into_response()
        }
        Admission::ProcessThenLose => {
            let answered = next.run(request).await;
            match connection {
                Some(ConnectInfo(connection)) => {
                    connection.severed.store(true, Ordering::SeqCst);
                    answered
                }
                None => super::core::failure(500, "api_error", "injected_fault", "The answer was lost.")
                    .into_response(),
            }
        }
    };
    tracing::debug!(%route, status = response.status().as_u16(), "simulated request");
    core.record(&route, &path, response.status().as_u16());
    response
}

fn answer(result: Answer<Reply>) -> Response {
    match result {
        Ok(reply) => reply.into_response(),
        Err(failure) => failure.into_response(),
    }
}

async fn list_instances(State(core): State<Shared>, headers: HeaderMap) -> Response {
    answer(core.list_instances(bearer(&headers)))
}

async fn create_instance(State(core): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(core.create_instance(bearer(&headers), &body))
}

async fn get_instance(State(core): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(core.get_instance(bearer(&headers), &id))
}

async fn update_instance(
    State(core): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    answer(core.update_instance(bearer(&headers), &id, &body))
}

async fn delete_instance(State(core): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(core.delete_instance(bearer(&headers), &id))
}

async fn list_peers(
    State(core): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    answer(core.list_peers(bearer(&headers), &id, query.as_deref()))
}

async fn create_peer(
    State(core): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    answer(core.create_peer(bearer(&headers), &id, &body))
}

async fn get_peer(
    State(core): State<Shared>,
    headers: HeaderMap,
    Path((id, peer_id)): Path<(String, String)>,
) -> Response {
    answer(core.get_peer(bearer(&headers), &id, &peer_id))
}

async fn update_peer(
    State(core): State<Shared>,
    headers: HeaderMap,
    Path((id, peer_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    answer(core.update_peer(bearer(&headers), &id, &peer_id, &body))
}

async fn delete_peer(
    State(core): State<Shared>,
    headers: HeaderMap,
    Path((id, peer_id)): Path<(String, String)>,
) -> Response {
    answer(core.delete_peer(bearer(&headers), &id, &peer_id))
}

async fn site_subnets(
    State(core): State<Shared>,
    headers: HeaderMap,
    Path(site_id): Path<String>,
) -> Response {
    answer(core.site_subnets(bearer(&headers), &site_id))
}

async fn regions(State(core): State<Shared>, headers: HeaderMap) -> Response {
    answer(core.regions(bearer(&headers)))
}

async fn client_configuration(State(core): State<Shared>, headers: HeaderMap) -> Response {
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.starts_with("application/json"));
    answer(core.client_configuration(bearer(&headers), wants_json))
}

async fn admin_calls(State(core): State<Shared>) -> Json<super::Calls> {
    Json(core.calls())
}

async fn admin_reset_calls(State(core): State<Shared>) -> StatusCode {
    core.reset_calls();
    StatusCode::NO_CONTENT
}

async fn admin_get_faults(State(core): State<Shared>) -> Json<FaultConfig> {
    Json(core.faults())
}

async fn admin_put_faults(State(core): State<Shared>, Json(faults): Json<FaultConfig>) -> StatusCode {
    core.set_faults(faults);
    StatusCode::NO_CONTENT
}

async fn admin_state(State(core): State<Shared>) -> Json<Value> {
    let now = now_ms();
    let state = core.state();
    let instances: Vec<Instance> = state.instances_in_order().iter().map(|i| i.view(now)).collect();
    let mut peers: Vec<&StoredPeer> = state.peers.values().collect();
    peers.sort_by_key(|p| p.seq);
    let peers: Vec<Value> = peers
        .iter()
        .map(|p| json!({"instance_id": p.instance_id, "peer": p.peer}))
        .collect();
    Json(json!({"instances": instances, "peers": peers}))
}

async fn admin_reset(State(core): State<Shared>) -> StatusCode {
    core.reset_state();
    StatusCode::NO_CONTENT
}

/// Out-of-band change of an instance, as if someone edited it in the Altostrat portal.
async fn admin_drift(
    State(core): State<Shared>,
    Path(id): Path<String>,
    Json(change): Json<Value>,
) -> Answer<Json<Instance>> {
    let strings = |key: &str| {
        change
            .get(key)
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
    };
    let edited = core.edit_instance(&id, |i| {
        if let Some(name) = change.get("name").and_then(Value::as_str) {
            i.name = name.to_owned();
        }
        if let Some(v) = strings("pushed_routes") {
            i.pushed_routes = v;
        }
        if let Some(v) = strings("public_dns") {
            i.public_dns = v;
        }
        if let Some(v) = strings("domains") {
            i.domains = v;
        }
        if let Some(v) = strings("split_dns") {
            i.split_dns = v;
        }
        if let Some(v) = change
            .get("dns_custom")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
        {
            i.dns_custom = v;
        }
    })?;
    Ok(Json(edited))
}

async fn admin_connected(
    State(core): State<Shared>,
    Path(id): Path<String>,
    Json(change): Json<Value>,
) -> Answer<Json<Peer>> {
    core.with_peer(&id, |stored| {
        let peer = &mut stored.peer;
        peer.connected = change.get("connected").and_then(Value::as_bool).unwrap_or(false);
        peer.connected_from = change
            .get("connected_from")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .filter(|_| peer.connected);
        Json(peer.clone())
    })
}

/// Out-of-band change of a peer (`route_all`, `subnets`), as if someone edited it in the
/// Altostrat portal.
async fn admin_peer_drift(
    State(core): State<Shared>,
    Path(id): Path<String>,
    Json(change): Json<Value>,
) -> Answer<Json<Peer>> {
    core.with_peer(&id, |stored| {
        let peer = &mut stored.peer;
        if let Some(route_all) = change.get("route_all").and_then(Value::as_bool) {
            peer.route_all = route_all;
        }
        if let Some(subnets) = change
            .get("subnets")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
        {
            peer.subnets = subnets;
        }
        Json(peer.clone())
    })
}

/// Every share token peer `id` has been shown expires now, as if its `token_ttl` had passed:
/// `GET /vpn/client` refuses them and the next read of the peer shows a new one.
async fn admin_expire_token(State(core): State<Shared>, Path(id): Path<String>) -> Answer<StatusCode> {
    core.with_peer(&id, share::expire)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user deleted out of band, as in the Altostrat portal: the service removes the user's VPN
/// peers on every instance, and the id no longer validates.
async fn admin_delete_user(State(core): State<Shared>, Path(id): Path<String>) -> StatusCode {
    core.delete_owner(Owner::User, &id);
    StatusCode::NO_CONTENT
}

/// A site deleted out of band; see [`admin_delete_user`].
async fn admin_delete_site(State(core): State<Shared>, Path(id): Path<String>) -> StatusCode {
    core.delete_owner(Owner::Site, &id);
    StatusCode::NO_CONTENT
}

/// Sets the subnets available at a site (a JSON array of CIDR blocks), as if its router's
/// networks changed. 404 for a site deleted out of band.
async fn admin_put_site_subnets(
    State(core): State<Shared>,
    Path(id): Path<String>,
    Json(subnets): Json<Vec<String>>,
) -> Answer<StatusCode> {
    validate::cidrs("subnets", &subnets)?;
    core.set_site_subnets(&id, subnets)?;
    Ok(StatusCode::NO_CONTENT)
}
