//! HTTP handlers of the simulator: the `/vpn` API and the `/_admin` introspection endpoints.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::client_config;
use super::faults::FaultConfig;
use super::render;
use super::share::{self, Refusal};
use super::state::{Owner, StoredInstance, StoredPeer, now_ms};
use super::validate::{self, Invalid};
use super::{Inner, InstanceDelete};
use crate::altostrat::model::{
    DnsCustomRecord, DnsRecordType, ErrorResponse, FirewallRule, Instance, Peer, PeerType, Protocol,
    region_codes,
};

type Shared = Arc<Inner>;

/// An error answer: status, `ErrorResponse` (or Laravel validation) body and an optional
/// `Retry-After`.
pub struct Failure {
    status: StatusCode,
    body: ErrorResponse,
    /// Answer Laravel's validation body `{message, errors: {<body.code>: [message]}}` instead
    /// of `body` (a flag, so that `Failure` stays small).
    laravel: bool,
    /// Answer `{"message": ...}` only.
    message_only: bool,
    retry_after: Option<u64>,
}

impl Failure {
    /// Laravel's validation answer: `{"message": ..., "errors": {field: [message]}}`.
    fn laravel(status: u16, field: &str, message: &str) -> Self {
        let mut f = failure(status, "invalid_request_error", field, message);
        f.laravel = true;
        f
    }
}

fn failure(status: u16, error_type: &str, code: &str, message: impl Into<String>) -> Failure {
    Failure {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body: ErrorResponse {
            error_type: error_type.into(),
            code: code.into(),
            message: message.into(),
            doc_url: format!("https://docs.altostrat.io/errors/{code}"),
        },
        laravel: false,
        message_only: false,
        retry_after: None,
    }
}

impl From<Invalid> for Failure {
    fn from(e: Invalid) -> Self {
        failure(e.status, "invalid_request_error", e.code, e.message)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = if self.laravel {
            let body = json!({"message": self.body.message, "errors": {self.body.code: [self.body.message]}});
            (self.status, Json(body)).into_response()
        } else if self.message_only {
            (self.status, Json(json!({"message": self.body.message}))).into_response()
        } else {
            (self.status, Json(self.body)).into_response()
        };
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

type Answer<T> = Result<T, Failure>;

fn not_found(what: &str, id: &str) -> Failure {
    failure(
        404,
        "invalid_request_error",
        "resource_missing",
        format!("No such {what}: '{id}'."),
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Checks the bearer token and its scope; returns the account the token acts for.
fn authorize<'a>(inner: &'a Inner, headers: &HeaderMap, scope: &str) -> Answer<&'a str> {
    let Some(presented) = bearer(headers) else {
        return Err(failure(
            401,
            "authentication_error",
            "invalid_token",
            "A bearer token is required.",
        ));
    };
    let Some(token) = inner.config.tokens.iter().find(|t| t.token == presented) else {
        return Err(failure(
            401,
            "authentication_error",
            "invalid_token",
            "The bearer token is not valid.",
        ));
    };
    if !token.scopes.iter().any(|s| s == scope) {
        return Err(failure(
            403,
            "permission_error",
            "insufficient_scope",
            format!("This request requires the '{scope}' scope."),
        ));
    }
    Ok(&token.account)
}

fn parse_body(body: &Bytes) -> Answer<Value> {
    serde_json::from_slice(body).map_err(|e| {
        failure(
            400,
            "invalid_request_error",
            "invalid_json",
            format!("The request body is not valid JSON: {e}."),
        )
    })
}

fn valid_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_default()
        .to_string()
}

pub fn router(inner: Shared) -> Router {
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
        .route_layer(middleware::from_fn_with_state(inner.clone(), count_and_inject))
        .route_layer(middleware::from_fn_with_state(inner.clone(), reshape));
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
    api.merge(admin).with_state(inner)
}

/// Applies the [`Fidelity`](super::Fidelity) modes that change the shape of answers: lists in
/// the `{data, has_more}` envelope, `{message}`-only error bodies. It wraps the fault layer,
/// so injected faults and 429s are reshaped too.
async fn reshape(State(inner): State<Shared>, request: Request, next: Next) -> Response {
    let fidelity = &inner.config.fidelity;
    if !fidelity.enveloped_lists && !fidelity.message_only_errors {
        return next.run(request).await;
    }
    let is_get = request.method() == axum::http::Method::GET;
    let response = next.run(request).await;
    let status = response.status();
    let wants = (fidelity.enveloped_lists && is_get && status.is_success())
        || (fidelity.message_only_errors && (status.is_client_error() || status.is_server_error()));
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !wants || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let reshaped = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Array(items)) if status.is_success() => json!({"data": items, "has_more": false}),
        Ok(Value::Object(mut object)) if !status.is_success() && object.contains_key("type") => {
            json!({"message": object.remove("message").unwrap_or(Value::Null)})
        }
        _ => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(reshaped.to_string()))
}

/// Counts every request that reached a `/vpn` route and applies the configured faults.
async fn count_and_inject(
    State(inner): State<Shared>,
    matched: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let route = format!("{} {}", request.method(), matched.as_str());
    let (verdict, limit) = {
        let mut faults = inner.faults.lock().expect("faults lock");
        (
            faults.decide(&route, fastrand::f64()),
            faults.rate_limit_per_minute,
        )
    };
    if !verdict.delay.is_zero() {
        tokio::time::sleep(verdict.delay).await;
    }
    let throttled = limit.and_then(|limit| {
        let token = bearer(request.headers()).unwrap_or("").to_owned();
        inner
            .windows
            .lock()
            .expect("windows lock")
            .check(&token, limit, now_ms())
    });
    let response = if let Some(retry_after) = throttled {
        let mut f = failure(
            429,
            "rate_limit_error",
            "rate_limited",
            "Too many requests; retry later.",
        );
        f.retry_after = Some(retry_after);
        f.into_response()
    } else if let Some(injected) = verdict.failure {
        if injected.after_processing {
            let _ = next.run(request).await;
        }
        let (error_type, code) = if injected.status == 429 {
            ("rate_limit_error", "rate_limited")
        } else {
            ("api_error", "injected_fault")
        };
        let mut f = failure(
            injected.status,
            error_type,
            code,
            format!("Injected fault on {route}."),
        );
        f.retry_after = injected.retry_after;
        f.into_response()
    } else {
        next.run(request).await
    };
    tracing::debug!(%route, status = response.status().as_u16(), "simulated request");
    let mut calls = inner.calls.lock().expect("calls lock");
    *calls.counts.entry(route.clone()).or_default() += 1;
    *calls
        .by_status
        .entry(format!("{route} {}", response.status().as_u16()))
        .or_default() += 1;
    calls.total += 1;
    response
}

async fn list_instances(State(inner): State<Shared>, headers: HeaderMap) -> Answer<Json<Vec<Value>>> {
    let account = authorize(&inner, &headers, "vpn:view")?;
    let now = now_ms();
    let state = inner.state();
    Ok(Json(
        state
            .instances_in_order()
            .iter()
            .filter(|i| i.account == account)
            .map(|i| render::instance(&inner.config.fidelity, i, now))
            .collect(),
    ))
}

async fn create_instance(
    State(inner): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer<(StatusCode, Json<Value>)> {
    let account = authorize(&inner, &headers, "vpn:create")?;
    let body = parse_body(&body)?;
    let body = validate::object(&body)?;
    let name = validate::required_str(body, "name")?;
    validate::name(name)?;
    let hostname = validate::required_str(body, "hostname")?;
    validate::hostname(hostname)?;
    let region = validate::required_str(body, "region")?;
    let codes = region_codes(&inner.config.regions);
    if !codes.iter().any(|c| c == region) {
        return Err(failure(
            422,
            "invalid_request_error",
            "region_unknown",
            format!("The 'region' parameter must be one of: {}.", codes.join(", ")),
        ));
    }
    let mut state = inner.state();
    // Unique across accounts (it becomes a public DNS name): the holder may be an instance
    // this token cannot see.
    if state.hostname_taken(hostname) {
        return Err(hostname_taken(&inner, hostname));
    }
    let now = now_ms();
    let seq = state.next_seq();
    let stored = StoredInstance {
        instance: new_instance(name, hostname, region, inner.config.fidelity.single_public_dns),
        account: account.to_owned(),
        provision_started_ms: now,
        provision_delay_ms: inner.config.provision_delay.as_millis() as u64,
        pending: vec![],
        seq,
        teardown_ends_ms: None,
    };
    let view = render::instance(&inner.config.fidelity, &stored, now);
    let id = stored.instance.id.clone();
    if inner.config.fidelity.unknown_values {
        let seq = state.next_seq();
        let foreign = render::foreign_peer(&id, seq, now_rfc3339());
        state.peers.insert(foreign.peer.id.clone(), foreign);
    }
    state.instances.insert(id, stored);
    inner.persist(&state);
    Ok((StatusCode::CREATED, Json(view)))
}

fn hostname_taken(inner: &Inner, hostname: &str) -> Failure {
    match inner.config.fidelity.hostname_taken_status {
        // Laravel's answer to a failed `unique` rule.
        status @ (400 | 422) => Failure::laravel(status, "hostname", "The hostname has already been taken."),
        _ => failure(
            409,
            "invalid_request_error",
            "hostname_taken",
            format!("The 'hostname' parameter '{hostname}' is already in use."),
        ),
    }
}

/// A freshly created instance with Altostrat's defaults: public resolvers and a firewall that
/// lets ICMP and WireGuard in.
fn new_instance(name: &str, hostname: &str, region: &str, single_public_dns: bool) -> Instance {
    let allow = |name: &str, protocol: &str, port: Option<&str>| FirewallRule {
        name: name.into(),
        protocol: protocol.into(),
        port: port.map(Into::into),
        source: "0.0.0.0/0".into(),
        destination: "0.0.0.0/0".into(),
    };
    Instance {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        region: region.to_owned(),
        hostname: format!("{hostname}.vpn.altostr.at"),
        public_dns: if single_public_dns {
            vec!["9.9.9.9".into()]
        } else {
            vec!["9.9.9.9".into(), "149.112.112.112".into()]
        },
        firewall: vec![
            allow("Allow ICMP", "icmp", None),
            allow("Allow WireGuard", "udp", Some("51820")),
        ],
        created_at: Some(now_rfc3339()),
        ..Instance::default()
    }
}

/// 404 unless the account has the instance, 409 while it is being torn down (a change to it or
/// a new peer on it would be lost). Checked before the body so that an unknown or departing
/// instance is reported as such rather than as a validation error.
fn require_instance(inner: &Inner, account: &str, id: &str) -> Answer<()> {
    let state = inner.state();
    match state.instance_of(account, id) {
        None => Err(not_found("instance", id)),
        Some(instance) if instance.is_deleting() => Err(failure(
            409,
            "invalid_request_error",
            "instance_deleting",
            "The instance is being deleted.",
        )),
        Some(_) => Ok(()),
    }
}

/// Runs `f` on instance `id` of `account` (`None`: any account, for the admin endpoints) and
/// persists the change.
fn with_instance<T>(
    inner: &Inner,
    account: Option<&str>,
    id: &str,
    f: impl FnOnce(&mut StoredInstance) -> T,
) -> Answer<T> {
    let mut state = inner.state();
    let instance = match account {
        Some(account) => state.instance_of_mut(account, id),
        None => state.instances.get_mut(id),
    };
    let Some(instance) = instance.filter(|_| valid_id(id)) else {
        return Err(not_found("instance", id));
    };
    let result = f(instance);
    inner.persist(&state);
    Ok(result)
}

async fn get_instance(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<Json<Value>> {
    let account = authorize(&inner, &headers, "vpn:view")?;
    let state = inner.state();
    state
        .instance_of(account, &id)
        .map(|i| Json(render::instance(&inner.config.fidelity, i, now_ms())))
        .ok_or_else(|| not_found("instance", &id))
}

fn dns_records(body: &serde_json::Map<String, Value>) -> Answer<Vec<DnsCustomRecord>> {
    let Some(value) = body.get("dns_custom").filter(|v| !v.is_null()) else {
        return Ok(vec![]);
    };
    let Some(items) = value.as_array() else {
        return Err(validate::invalid("dns_custom", "must be an array of records").into());
    };
    items
        .iter()
        .map(|item| {
            let record: DnsCustomRecord = serde_json::from_value(item.clone()).map_err(|_| {
                validate::invalid(
                    "dns_custom",
                    "must contain records with name, type (A or CNAME) and value",
                )
            })?;
            if record.name.is_empty() || record.value.is_empty() {
                return Err(
                    validate::invalid("dns_custom", "records need a non-empty name and value").into(),
                );
            }
            // The client reads undocumented types leniently; the service accepts only these.
            if let DnsRecordType::Other(kind) = &record.record_type {
                return Err(validate::invalid(
                    "dns_custom",
                    format_args!("record type {kind:?} is not A or CNAME"),
                )
                .into());
            }
            if record.record_type == DnsRecordType::A && record.value.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(validate::invalid(
                    "dns_custom",
                    format_args!("A record value {:?} must be an IPv4 address", record.value),
                )
                .into());
            }
            Ok(record)
        })
        .collect()
}

async fn update_instance(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<Json<Value>> {
    let account = authorize(&inner, &headers, "vpn:update")?;
    require_instance(&inner, account, &id)?;
    let body = parse_body(&body)?;
    let body = validate::object(&body)?;
    let name = validate::required_str(body, "name")?;
    validate::name(name)?;
    let pushed_routes = validate::string_list(body, "pushed_routes", true)?.unwrap_or_default();
    validate::cidrs("pushed_routes", &pushed_routes)?;
    let public_dns = validate::string_list(body, "public_dns", true)?.unwrap_or_default();
    validate::public_dns(&public_dns)?;
    let domains = validate::string_list(body, "domains", false)?.unwrap_or_default();
    validate::domains(&domains)?;
    let split_dns = validate::string_list(body, "split_dns", false)?.unwrap_or_default();
    validate::ipv4s("split_dns", &split_dns)?;
    let dns_custom = dns_records(body)?;
    let clear = inner.config.status_clear_delay;
    let fidelity = &inner.config.fidelity;
    with_instance(&inner, Some(account), &id, |stored| {
        let now = now_ms();
        let i = &mut stored.instance;
        let changed = i.name != name
            || i.pushed_routes != pushed_routes
            || i.public_dns != public_dns
            || i.domains != domains
            || i.split_dns != split_dns
            || i.dns_custom != dns_custom;
        i.name = name.to_owned();
        i.pushed_routes = pushed_routes;
        i.public_dns = public_dns;
        i.domains = domains;
        i.split_dns = split_dns;
        i.dns_custom = dns_custom;
        if changed {
            stored.add_pending("config-updated", clear, now);
            if fidelity.unknown_values {
                stored.add_pending("firewall-syncing", clear, now);
            }
        }
        Json(render::instance(fidelity, stored, now))
    })
}

async fn delete_instance(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<Response> {
    let mode = inner.config.fidelity.instance_delete;
    if mode == InstanceDelete::NotAllowed {
        // Laravel matches the route before any middleware runs, so no token is even checked.
        return Ok(delete_not_allowed(&id));
    }
    let account = authorize(&inner, &headers, "vpn:delete")?;
    let mut state = inner.state();
    let Some(instance) = state.instance_of_mut(account, &id) else {
        return Err(not_found("instance", &id));
    };
    let status = match mode {
        InstanceDelete::Asynchronous { teardown } => {
            instance.start_teardown(teardown, now_ms());
            StatusCode::ACCEPTED
        }
        InstanceDelete::Immediate | InstanceDelete::NotAllowed => {
            state.remove_instance(&id);
            StatusCode::NO_CONTENT
        }
    };
    inner.persist(&state);
    Ok(status.into_response())
}

/// Laravel's answer to a method the route does not offer (`MethodNotAllowedHttpException`).
fn delete_not_allowed(id: &str) -> Response {
    let message = format!(
        "The DELETE method is not supported for route vpn/instances/{id}. Supported methods: GET, HEAD, PUT."
    );
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, HEAD, PUT")],
        Json(json!({"message": message})),
    )
        .into_response()
}

fn peer_type(value: &str, field: &str) -> Answer<PeerType> {
    match value {
        "client" => Ok(PeerType::Client),
        "site" => Ok(PeerType::Site),
        _ => Err(validate::invalid(field, "must be one of: client, site").into()),
    }
}

/// The `type` filter, parsed by hand so that every malformed query gets an ErrorResponse.
fn type_filter(query: Option<&str>) -> Answer<Option<PeerType>> {
    let values: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(k, _)| *k == "type")
        .map(|(_, v)| v)
        .collect();
    match values.as_slice() {
        [] => Ok(None),
        [one] => peer_type(one, "type").map(Some),
        _ => Err(validate::invalid("type", "must be given at most once").into()),
    }
}

async fn list_peers(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer<Json<Vec<Value>>> {
    let account = authorize(&inner, &headers, "vpn:view")?;
    let kind = type_filter(query.as_deref())?;
    let mut state = inner.state();
    if state.instance_of(account, &id).is_none() {
        return Err(not_found("instance", &id));
    }
    let (policy, now) = (share_policy(&inner), now_ms());
    let mut changed = false;
    let views = state
        .peers_of_mut(&id)
        .into_iter()
        .filter(|p| kind.is_none_or(|k| p.peer.peer_type == k))
        .map(|p| {
            changed |= share::on_read(p, policy, now);
            render::peer(&inner.config.fidelity, p)
        })
        .collect();
    if changed {
        inner.persist(&state);
    }
    Ok(Json(views))
}

/// How this simulator issues share tokens.
fn share_policy(inner: &Inner) -> share::Policy {
    share::Policy {
        ttl: inner.config.share_token_ttl,
        mode: inner.config.fidelity.share_tokens,
    }
}

async fn create_peer(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<(StatusCode, Json<Value>)> {
    let account = authorize(&inner, &headers, "vpn:create")?;
    require_instance(&inner, account, &id)?;
    let body = parse_body(&body)?;
    let peer = new_peer(validate::object(&body)?)?;
    let mut state = inner.state();
    check_owner_exists(&inner, &state, &peer)?;
    check_peer_seats(&inner, &state, account)?;
    let seq = state.next_seq();
    let clear = inner.config.status_clear_delay;
    if let Some(instance) = state.instances.get_mut(&id) {
        instance.add_pending("peer-created", clear, now_ms());
    }
    let mut stored = StoredPeer {
        instance_id: id,
        peer,
        seq,
        foreign: false,
        token_generation: 0,
    };
    share::on_read(&mut stored, share_policy(&inner), now_ms());
    let view = render::peer(&inner.config.fidelity, &stored);
    state.peers.insert(stored.peer.id.clone(), stored);
    inner.persist(&state);
    Ok((StatusCode::CREATED, Json(view)))
}

/// The peer a create body describes, validated as the docs require.
fn new_peer(body: &serde_json::Map<String, Value>) -> Answer<Peer> {
    let kind = peer_type(validate::required_str(body, "type")?, "type")?;
    let protocol = match validate::required_str(body, "protocol")? {
        "wireguard" => Protocol::Wireguard,
        "openvpn" => Protocol::Openvpn,
        _ => return Err(validate::invalid("protocol", "must be one of: wireguard, openvpn").into()),
    };
    let mut peer = Peer {
        id: uuid::Uuid::new_v4().to_string(),
        peer_type: kind,
        protocol,
        created_at: Some(now_rfc3339()),
        ..Peer::default()
    };
    match kind {
        PeerType::Client => client_fields(body, &mut peer)?,
        PeerType::Site => site_fields(body, &mut peer)?,
        // `peer_type` never yields it.
        PeerType::Unknown => return Err(validate::invalid("type", "must be one of: client, site").into()),
    }
    Ok(peer)
}

fn client_fields(body: &serde_json::Map<String, Value>, peer: &mut Peer) -> Answer<()> {
    if peer.protocol != Protocol::Wireguard {
        return Err(validate::invalid("protocol", "must be wireguard for client peers").into());
    }
    let user_id = validate::optional_str(body, "user_id")?.ok_or_else(|| validate::missing("user_id"))?;
    validate::uuid("user_id", user_id)?;
    peer.user_id = Some(user_id.to_owned());
    peer.route_all =
        validate::optional_bool(body, "route_all")?.ok_or_else(|| validate::missing("route_all"))?;
    Ok(())
}

fn site_fields(body: &serde_json::Map<String, Value>, peer: &mut Peer) -> Answer<()> {
    let site_id = validate::optional_str(body, "site_id")?.ok_or_else(|| validate::missing("site_id"))?;
    validate::uuid("site_id", site_id)?;
    let subnets = validate::string_list(body, "subnets", true)?.unwrap_or_default();
    validate::cidrs("subnets", &subnets)?;
    peer.site_id = Some(site_id.to_owned());
    peer.subnets = subnets;
    Ok(())
}

/// A peer for a user or site deleted out of band is refused as the service's `exists`
/// validation rule refuses it: Laravel's 422 body with `{message}`-only errors, else a 422
/// ErrorResponse like the simulator's other validation errors.
fn check_owner_exists(inner: &Inner, state: &super::State, peer: &Peer) -> Answer<()> {
    let Some((owner, id)) = Owner::of(peer) else {
        return Ok(());
    };
    if !state.is_deleted(owner, id) {
        return Ok(());
    }
    let what = owner.noun();
    if inner.config.fidelity.message_only_errors {
        let message = format!("The selected {what} id is invalid.");
        return Err(Failure::laravel(422, owner.field(), &message));
    }
    Err(failure(
        422,
        "invalid_request_error",
        &format!("{what}_not_found"),
        format!("No such {what}: {id}"),
    ))
}

/// With `--peer-seats`, refuses a peer beyond the account's seats as the service's billing check
/// does: `abort(403, message)`, a bare `{message}` body.
fn check_peer_seats(inner: &Inner, state: &super::State, account: &str) -> Result<(), Failure> {
    let Some(seats) = inner.config.fidelity.peer_seats else {
        return Ok(());
    };
    let used = state
        .peers
        .values()
        // A peer of an undocumented kind is the service's own, not a seat the account bought.
        .filter(|p| !p.foreign)
        .filter(|p| {
            state
                .instances
                .get(&p.instance_id)
                .is_some_and(|i| i.account == account)
        })
        .count();
    if used < seats as usize {
        return Ok(());
    }
    let message =
        format!("You have reached the limit of {seats} Managed VPN peer seats for your subscription.");
    let mut f = failure(403, "invalid_request_error", "", message);
    f.message_only = true;
    Err(f)
}

fn find_peer<'a>(
    state: &'a mut super::State,
    account: &str,
    instance_id: &str,
    peer_id: &str,
) -> Answer<&'a mut StoredPeer> {
    if state.instance_of(account, instance_id).is_none() {
        return Err(not_found("instance", instance_id));
    }
    state
        .peers
        .get_mut(peer_id)
        .filter(|p| p.instance_id == instance_id)
        .ok_or_else(|| not_found("peer", peer_id))
}

async fn get_peer(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path((id, peer_id)): Path<(String, String)>,
) -> Answer<Json<Value>> {
    let account = authorize(&inner, &headers, "vpn:view")?;
    let mut state = inner.state();
    let stored = find_peer(&mut state, account, &id, &peer_id)?;
    let changed = share::on_read(stored, share_policy(&inner), now_ms());
    let view = render::peer(&inner.config.fidelity, stored);
    if changed {
        inner.persist(&state);
    }
    Ok(Json(view))
}

async fn update_peer(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path((id, peer_id)): Path<(String, String)>,
    body: Bytes,
) -> Answer<Json<Value>> {
    let account = authorize(&inner, &headers, "vpn:update")?;
    let mut state = inner.state();
    let kind = find_peer(&mut state, account, &id, &peer_id)?.peer.peer_type;
    let body = parse_body(&body)?;
    let body = validate::object(&body)?;
    let subnets = validate::string_list(body, "subnets", false)?;
    let route_all = validate::optional_bool(body, "route_all")?;
    match kind {
        PeerType::Client if subnets.is_some() => {
            return Err(validate::invalid("subnets", "applies to site peers only").into());
        }
        PeerType::Site if route_all.is_some() => {
            return Err(validate::invalid("route_all", "applies to client peers only").into());
        }
        _ => {}
    }
    if let Some(subnets) = &subnets {
        validate::cidrs("subnets", subnets)?;
    }
    let stored = find_peer(&mut state, account, &id, &peer_id)?;
    if let Some(subnets) = subnets {
        stored.peer.subnets = subnets;
    }
    if let Some(route_all) = route_all {
        stored.peer.route_all = route_all;
    }
    share::on_read(stored, share_policy(&inner), now_ms());
    let view = render::peer(&inner.config.fidelity, stored);
    inner.persist(&state);
    Ok(Json(view))
}

async fn delete_peer(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path((id, peer_id)): Path<(String, String)>,
) -> Answer<StatusCode> {
    let account = authorize(&inner, &headers, "vpn:delete")?;
    let mut state = inner.state();
    find_peer(&mut state, account, &id, &peer_id)?;
    state.peers.remove(&peer_id);
    let clear = inner.config.status_clear_delay;
    if let Some(instance) = state.instances.get_mut(&id) {
        instance.add_pending("peer-deleted", clear, now_ms());
    }
    inner.persist(&state);
    Ok(StatusCode::NO_CONTENT)
}

/// The subnets available at a site, for configuring site peers (not built from existing peers).
/// The item shape `{subnet, name}` is the project's choice: the real one is not published.
async fn site_subnets(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path(site_id): Path<String>,
) -> Answer<Json<Vec<Value>>> {
    authorize(&inner, &headers, "vpn:view")?;
    let subnets = valid_id(&site_id)
        .then(|| inner.state().site_subnets(&site_id))
        .flatten()
        .ok_or_else(|| not_found("site", &site_id))?;
    Ok(Json(
        subnets
            .iter()
            .enumerate()
            .map(|(i, subnet)| json!({"subnet": subnet, "name": subnet_name(i)}))
            .collect(),
    ))
}

/// "LAN", "LAN 2", "LAN 3", ...: a site's networks named as a router's interface lists do.
fn subnet_name(index: usize) -> String {
    match index {
        0 => "LAN".to_owned(),
        i => format!("LAN {}", i + 1),
    }
}

async fn regions(
    State(inner): State<Shared>,
    headers: HeaderMap,
) -> Answer<Json<crate::altostrat::model::RegionResponse>> {
    authorize(&inner, &headers, "vpn:view")?;
    Ok(Json(inner.config.regions.clone()))
}

/// `GET /vpn/client`: the caller presents a client peer's share token. A token that opens
/// nothing is refused as a bearer-auth endpoint refuses it, 401; 404 is kept for a live token
/// whose instance is gone.
async fn client_configuration(State(inner): State<Shared>, headers: HeaderMap) -> Answer<Response> {
    let Some(presented) = bearer(&headers) else {
        return Err(failure(
            401,
            "authentication_error",
            "invalid_token",
            "A share token is required.",
        ));
    };
    let state = inner.state();
    let stored = share::holder(&state, presented, now_ms()).map_err(share_refused)?;
    let Some(instance) = state.instances.get(&stored.instance_id).map(|i| i.view(now_ms())) else {
        return Err(not_found("instance", &stored.instance_id));
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.starts_with("application/json"));
    Ok(client_config::answer(&stored.peer, &instance, wants_json))
}

fn share_refused(refusal: Refusal) -> Failure {
    match refusal {
        Refusal::Invalid => failure(
            401,
            "authentication_error",
            "invalid_token",
            "The share token is not valid.",
        ),
        Refusal::Expired => failure(
            401,
            "authentication_error",
            "token_expired",
            "The share token has expired.",
        ),
    }
}

async fn admin_calls(State(inner): State<Shared>) -> Json<super::Calls> {
    Json(inner.calls.lock().expect("calls lock").clone())
}

async fn admin_reset_calls(State(inner): State<Shared>) -> StatusCode {
    *inner.calls.lock().expect("calls lock") = super::Calls::default();
    StatusCode::NO_CONTENT
}

async fn admin_get_faults(State(inner): State<Shared>) -> Json<FaultConfig> {
    Json(inner.faults.lock().expect("faults lock").clone())
}

async fn admin_put_faults(State(inner): State<Shared>, Json(faults): Json<FaultConfig>) -> StatusCode {
    *inner.faults.lock().expect("faults lock") = faults;
    StatusCode::NO_CONTENT
}

async fn admin_state(State(inner): State<Shared>) -> Json<Value> {
    let now = now_ms();
    let state = inner.state();
    let instances: Vec<Instance> = state.instances_in_order().iter().map(|i| i.view(now)).collect();
    let mut peers: Vec<&StoredPeer> = state.peers.values().collect();
    peers.sort_by_key(|p| p.seq);
    let peers: Vec<Value> = peers
        .iter()
        .map(|p| json!({"instance_id": p.instance_id, "peer": p.peer}))
        .collect();
    Json(json!({"instances": instances, "peers": peers}))
}

async fn admin_reset(State(inner): State<Shared>) -> StatusCode {
    let mut state = inner.state();
    *state = super::State::default();
    inner.persist(&state);
    StatusCode::NO_CONTENT
}

/// Out-of-band change of an instance, as if someone edited it in the Altostrat portal.
async fn admin_drift(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Json(change): Json<Value>,
) -> Answer<Json<Instance>> {
    let strings = |key: &str| {
        change
            .get(key)
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
    };
    with_instance(&inner, None, &id, |stored| {
        let i = &mut stored.instance;
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
        Json(stored.view(now_ms()))
    })
}

/// Runs `f` on peer `id` of any account (for the admin endpoints) and persists the change.
fn with_peer<T>(inner: &Inner, id: &str, f: impl FnOnce(&mut Peer) -> T) -> Answer<T> {
    let mut state = inner.state();
    let Some(stored) = state.peers.get_mut(id) else {
        return Err(not_found("peer", id));
    };
    let result = f(&mut stored.peer);
    inner.persist(&state);
    Ok(result)
}

async fn admin_connected(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Json(change): Json<Value>,
) -> Answer<Json<Peer>> {
    with_peer(&inner, &id, |peer| {
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
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Json(change): Json<Value>,
) -> Answer<Json<Peer>> {
    with_peer(&inner, &id, |peer| {
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
async fn admin_expire_token(State(inner): State<Shared>, Path(id): Path<String>) -> Answer<StatusCode> {
    let mut state = inner.state();
    let Some(stored) = state.peers.get_mut(&id) else {
        return Err(not_found("peer", &id));
    };
    share::expire(stored);
    inner.persist(&state);
    Ok(StatusCode::NO_CONTENT)
}

/// A user deleted out of band, as in the Altostrat portal: the service removes the user's VPN
/// peers on every instance, and the id no longer validates.
async fn admin_delete_user(State(inner): State<Shared>, Path(id): Path<String>) -> StatusCode {
    delete_owner(&inner, Owner::User, &id)
}

/// A site deleted out of band; see [`admin_delete_user`].
async fn admin_delete_site(State(inner): State<Shared>, Path(id): Path<String>) -> StatusCode {
    delete_owner(&inner, Owner::Site, &id)
}

fn delete_owner(inner: &Inner, owner: Owner, id: &str) -> StatusCode {
    let mut state = inner.state();
    state.delete_owner(owner, id, inner.config.status_clear_delay, now_ms());
    inner.persist(&state);
    StatusCode::NO_CONTENT
}

/// Sets the subnets available at a site (a JSON array of CIDR blocks), as if its router's
/// networks changed. 404 for a site deleted out of band.
async fn admin_put_site_subnets(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Json(subnets): Json<Vec<String>>,
) -> Answer<StatusCode> {
    validate::cidrs("subnets", &subnets)?;
    let mut state = inner.state();
    if !valid_id(&id) || state.site_subnets(&id).is_none() {
        return Err(not_found("site", &id));
    }
    state.site_subnets.insert(id.to_ascii_lowercase(), subnets);
    inner.persist(&state);
    Ok(StatusCode::NO_CONTENT)
}
