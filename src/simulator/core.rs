//! The simulator without HTTP: its state, its rules and the answers it gives, as plain Rust.
//!
//! Every `/vpn` operation is a method of [`Core`] that takes what a request carries (the bearer
//! token, path ids, the raw body) and returns a [`Reply`] or a [`Failure`]; the axum layer in
//! `handlers` only parses requests and renders these. Tests drive the same core directly: its
//! out-of-band operations (`instances::seed_instance`, [`Core::hold_provisioning`], ...) change
//! the state the way the Altostrat portal or the passing of time would, and every request that
//! reached an endpoint is counted in [`Calls`].

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::faults::{self, FaultConfig};
use super::state::{State, now_ms};
use super::validate::Invalid;
use super::{InstanceDelete, SimulatorConfig};
use crate::altostrat::model::{ErrorResponse, Instance};

/// An error answer: status, `ErrorResponse` (or Laravel validation) body and an optional
/// `Retry-After`.
#[derive(Clone, Debug)]
pub struct Failure {
    pub status: u16,
    pub body: ErrorResponse,
    /// Answer Laravel's validation body `{message, errors: {<body.code>: [message]}}` instead
    /// of `body` (a flag, so that `Failure` stays small).
    pub laravel: bool,
    /// Answer `{"message": ...}` only.
    pub message_only: bool,
    pub retry_after: Option<u64>,
}

impl Failure {
    /// Laravel's validation answer: `{"message": ..., "errors": {field: [message]}}`.
    pub fn laravel(status: u16, field: &str, message: &str) -> Self {
        let mut f = failure(status, "invalid_request_error", field, message);
        f.laravel = true;
        f
    }
}

pub fn failure(status: u16, error_type: &str, code: &str, message: impl Into<String>) -> Failure {
    Failure {
        status,
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

pub type Answer<T> = Result<T, Failure>;

pub fn not_found(what: &str, id: &str) -> Failure {
    failure(
        404,
        "invalid_request_error",
        "resource_missing",
        format!("No such {what}: '{id}'."),
    )
}

/// A successful answer, ready to be rendered by any transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Body,
    /// Extra headers, e.g. `Allow` on a 405.
    pub headers: Vec<(&'static str, &'static str)>,
}

/// What a [`Reply`] carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Empty,
    /// Serialized JSON (`application/json`), in the field order of the type it came from.
    Json(Vec<u8>),
    /// `text/plain; charset=utf-8`.
    Text(String),
}

impl Reply {
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        Self {
            status,
            body: Body::Json(serde_json::to_vec(value).expect("an answer serializes")),
            headers: vec![],
        }
    }

    pub fn ok(value: &impl Serialize) -> Self {
        Self::json(200, value)
    }

    pub fn empty(status: u16) -> Self {
        Self {
            status,
            body: Body::Empty,
            headers: vec![],
        }
    }

    /// The JSON body as a value (`Null` for any other body).
    pub fn value(&self) -> Value {
        match &self.body {
            Body::Json(bytes) => serde_json::from_slice(bytes).unwrap_or(Value::Null),
            Body::Empty | Body::Text(_) => Value::Null,
        }
    }
}

/// Per-endpoint call counts ("METHOD /route/template"), and by status code.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Calls {
    pub counts: std::collections::BTreeMap<String, u64>,
    pub by_status: std::collections::BTreeMap<String, u64>,
    pub total: u64,
    /// Every counted request's route, in the order they arrived (not part of the admin answer).
    #[serde(skip)]
    pub log: Vec<String>,
    /// Every counted request as "METHOD /path STATUS", ids included, in the order they
    /// arrived: whose object a call was about (not part of the admin answer).
    #[serde(skip)]
    pub paths: Vec<String>,
}

/// What to do with a request that reached a `/vpn` route, before it is processed.
#[derive(Clone, Debug)]
pub enum Admission {
    Proceed,
    /// Answer this failure without processing the request.
    Refuse(Failure),
    /// Process the request, then answer this failure instead of its answer.
    ProcessThenFail(Failure),
    /// Process the request, then give no answer at all: the connection is closed, as when
    /// the answer is lost to a timeout or a reset.
    ProcessThenLose,
}

/// Changes of behaviour a test switches on, beyond what the configuration says.
#[derive(Default)]
struct Controls {
    /// New instances stay unprovisioned until [`Core::provision_all`].
    provisioning_held: bool,
    /// Instance DELETEs start a teardown that lasts until [`Core::finish_teardowns`].
    teardowns_held: bool,
    /// Rewrites every instance an update writes, as a server that normalises values would.
    rewrite_updates: Option<fn(&mut Instance)>,
}

/// A teardown or provisioning that only an explicit step ends (a year).
const HELD: Duration = Duration::from_secs(365 * 24 * 3600);

/// The simulator's state and rules; shared by every request.
pub struct Core {
    pub config: SimulatorConfig,
    state: Mutex<State>,
    faults: Mutex<FaultConfig>,
    windows: Mutex<faults::TokenWindows>,
    calls: Mutex<Calls>,
    controls: Mutex<Controls>,
}

impl Core {
    pub fn new(config: SimulatorConfig, state: State) -> Self {
        let faults = config.faults.clone();
        Self {
            config,
            state: Mutex::new(state),
            faults: Mutex::new(faults),
            windows: Mutex::default(),
            calls: Mutex::default(),
            controls: Mutex::default(),
        }
    }

    /// The state, with the instances whose asynchronous teardown has ended (and their peers)
    /// removed first: every reader sees them gone from the moment the teardown ends.
    pub fn state(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().expect("state lock");
        if state.sweep(now_ms()) {
            self.persist(&state);
        }
        state
    }

    pub fn persist(&self, state: &State) {
        if let Some(path) = &self.config.state_file
            && let Err(e) = state.save(path)
        {
            tracing::warn!(error = %e, path = %path.display(), "failed to save simulator state");
        }
    }

    /// Checks the bearer token and its scope; returns the account the token acts for.
    pub fn authorize(&self, presented: Option<&str>, scope: &str) -> Answer<&str> {
        let Some(presented) = presented else {
            return Err(failure(
                401,
                "authentication_error",
                "invalid_token",
                "A bearer token is required.",
            ));
        };
        let Some(token) = self.config.tokens.iter().find(|t| t.token == presented) else {
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

    /// Decides the fate of a request to `route` made with `token` before it is processed:
    /// the latency to add and whether a fault or the rate limit answers it instead.
    pub fn admit(&self, route: &str, token: &str) -> (Duration, Admission) {
        let (verdict, limit) = {
            let mut faults = self.faults.lock().expect("faults lock");
            (
                faults.decide(route, fastrand::f64()),
                faults.rate_limit_per_minute,
            )
        };
        let throttled = limit.and_then(|limit| {
            self.windows
                .lock()
                .expect("windows lock")
                .check(token, limit, now_ms())
        });
        let admission = match (throttled, verdict.failure) {
            (Some(retry_after), _) => {
                let mut f = failure(
                    429,
                    "rate_limit_error",
                    "rate_limited",
                    "Too many requests; retry later.",
                );
                f.retry_after = Some(retry_after);
                Admission::Refuse(f)
            }
            (None, None) => Admission::Proceed,
            (None, Some(injected)) if injected.lose_answer => Admission::ProcessThenLose,
            (None, Some(injected)) => {
                let f = injected_failure(route, &injected);
                match injected.after_processing {
                    true => Admission::ProcessThenFail(f),
                    false => Admission::Refuse(f),
                }
            }
        };
        (verdict.delay, admission)
    }

    /// Counts a request to `route` (at `path`) that was answered with `status`.
    pub fn record(&self, route: &str, path: &str, status: u16) {
        let mut calls = self.calls.lock().expect("calls lock");
        *calls.counts.entry(route.to_owned()).or_default() += 1;
        *calls.by_status.entry(format!("{route} {status}")).or_default() += 1;
        calls.total += 1;
        calls.log.push(route.to_owned());
        let method = route.split_once(' ').map_or("", |(method, _)| method);
        calls.paths.push(format!("{method} {path} {status}"));
    }

    pub fn calls(&self) -> Calls {
        self.calls.lock().expect("calls lock").clone()
    }

    pub fn reset_calls(&self) {
        *self.calls.lock().expect("calls lock") = Calls::default();
    }

    pub fn faults(&self) -> FaultConfig {
        self.faults.lock().expect("faults lock").clone()
    }

    pub fn set_faults(&self, faults: FaultConfig) {
        *self.faults.lock().expect("faults lock") = faults;
    }

    /// Changes the faults in place (e.g. adds one rule, keeping the others).
    pub fn edit_faults(&self, edit: impl FnOnce(&mut FaultConfig)) {
        edit(&mut self.faults.lock().expect("faults lock"));
    }

    /// New instances stay unprovisioned (all four readiness flags false) until
    /// [`Core::provision_all`].
    pub fn hold_provisioning(&self) {
        self.controls.lock().expect("controls lock").provisioning_held = true;
    }

    /// Every instance is provisioned now, and new ones take the configured delay again.
    pub fn provision_all(&self) {
        self.controls.lock().expect("controls lock").provisioning_held = false;
        let mut state = self.state();
        state
            .instances
            .values_mut()
            .for_each(|i| i.provision_delay_ms = 0);
        self.persist(&state);
    }

    /// The provisioning time of an instance created now.
    pub(super) fn provision_delay(&self) -> Duration {
        match self.controls.lock().expect("controls lock").provisioning_held {
            true => HELD,
            false => self.config.provision_delay,
        }
    }

    /// Every later instance DELETE is accepted (202) and leaves the instance `deleting` until
    /// [`Core::finish_teardowns`], whatever the fidelity says.
    pub fn hold_teardowns(&self) {
        self.controls.lock().expect("controls lock").teardowns_held = true;
    }

    /// Ends every teardown now: the instances being deleted are gone with their peers, and
    /// DELETE answers as the fidelity says again.
    pub fn finish_teardowns(&self) {
        self.controls.lock().expect("controls lock").teardowns_held = false;
        let now = now_ms();
        let mut state = self.state.lock().expect("state lock");
        for instance in state.instances.values_mut() {
            if let Some(end) = &mut instance.teardown_ends_ms {
                *end = now;
            }
        }
        state.sweep(now);
        self.persist(&state);
    }

    /// How an instance DELETE answers now.
    pub(super) fn instance_delete(&self) -> InstanceDelete {
        match self.controls.lock().expect("controls lock").teardowns_held {
            true => InstanceDelete::Asynchronous { teardown: HELD },
            false => self.config.fidelity.instance_delete,
        }
    }

    /// Every later instance update is rewritten by `rewrite` before it is stored and answered.
    pub fn rewrite_updates(&self, rewrite: fn(&mut Instance)) {
        self.controls.lock().expect("controls lock").rewrite_updates = Some(rewrite);
    }

    pub(super) fn update_rewrite(&self) -> Option<fn(&mut Instance)> {
        self.controls.lock().expect("controls lock").rewrite_updates
    }
}

fn injected_failure(route: &str, injected: &faults::Failure) -> Failure {
    let (error_type, code) = if injected.status == 429 {
        ("rate_limit_error", "rate_limited")
    } else {
        ("api_error", "injected_fault")
    };
    let message = injected
        .message
        .clone()
        .unwrap_or_else(|| format!("Injected fault on {route}."));
    let mut f = failure(injected.status, error_type, code, message);
    f.retry_after = injected.retry_after;
    f
}

pub fn parse_body(body: &[u8]) -> Answer<Value> {
    serde_json::from_slice(body).map_err(|e| {
        failure(
            400,
            "invalid_request_error",
            "invalid_json",
            format!("The request body is not valid JSON: {e}."),
        )
    })
}

pub fn valid_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_default()
        .to_string()
}

/// The [`Fidelity`](super::Fidelity) modes that change the shape of answers after they are
/// made, whatever made them (an endpoint, an injected fault, the rate limit): lists in the
/// `{data, has_more}` envelope, `{message}`-only error bodies.
impl Core {
    /// Whether any answer may be reshaped.
    pub fn reshapes_answers(&self) -> bool {
        let fidelity = &self.config.fidelity;
        fidelity.enveloped_lists || fidelity.message_only_errors
    }

    /// Whether a JSON answer with `status` to a request (a GET or not) is reshaped.
    pub fn reshapes(&self, is_get: bool, status: u16) -> bool {
        let fidelity = &self.config.fidelity;
        let success = (200..300).contains(&status);
        (fidelity.enveloped_lists && is_get && success)
            || (fidelity.message_only_errors && (400..600).contains(&status))
    }

    /// The reshaped JSON body of an answer with `status`; `None` to leave it as it is (not a
    /// list, not an ErrorResponse).
    pub fn reshape(&self, status: u16, body: &[u8]) -> Option<String> {
        let success = (200..300).contains(&status);
        let reshaped = match serde_json::from_slice::<Value>(body).ok()? {
            Value::Array(items) if success => serde_json::json!({"data": items, "has_more": false}),
            Value::Object(mut object) if !success && object.contains_key("type") => {
                serde_json::json!({"message": object.remove("message").unwrap_or(Value::Null)})
            }
            _ => return None,
        };
        Some(reshaped.to_string())
    }
}

impl Core {
    /// Forgets every instance, peer and out-of-band deletion.
    pub fn reset_state(&self) {
        let mut state = self.state();
        *state = State::default();
        self.persist(&state);
    }

    /// A user or site deleted out of band: its peers vanish on every instance of every
    /// account, and its id stops validating.
    pub fn delete_owner(&self, owner: super::state::Owner, id: &str) {
        let mut state = self.state();
        state.delete_owner(owner, id, self.config.status_clear_delay, now_ms());
        self.persist(&state);
    }

    /// Sets the subnets available at a site; 404 for a site deleted out of band.
    pub fn set_site_subnets(&self, id: &str, subnets: Vec<String>) -> Answer<()> {
        let mut state = self.state();
        if !valid_id(id) || state.site_subnets(id).is_none() {
            return Err(not_found("site", id));
        }
        state.site_subnets.insert(id.to_ascii_lowercase(), subnets);
        self.persist(&state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::{ApiToken, DEFAULT_ACCOUNT, FaultRule, Fidelity};

    const TOKEN: Option<&str> = Some("t");

    fn core(fidelity: Fidelity) -> Core {
        let config = SimulatorConfig {
            provision_delay: Duration::ZERO,
            status_clear_delay: Duration::ZERO,
            tokens: vec![ApiToken::all_scopes("t")],
            fidelity,
            ..SimulatorConfig::default()
        };
        Core::new(config, State::default())
    }

    fn create(core: &Core, hostname: &str) -> Value {
        let body = serde_json::json!({"name": "Hub", "hostname": hostname, "region": "sjc"});
        let reply = core.create_instance(TOKEN, body.to_string().as_bytes()).unwrap();
        assert_eq!(reply.status, 201);
        reply.value()
    }

    #[test]
    fn a_held_instance_is_provisioned_only_when_released() {
        let core = core(Fidelity::default());
        core.hold_provisioning();
        assert_eq!(create(&core, "hub-one")["server_ready"], false);
        assert!(!core.instances_of(DEFAULT_ACCOUNT)[0].configured);
        core.provision_all();
        assert!(core.instances_of(DEFAULT_ACCOUNT)[0].server_ready);
        assert_eq!(create(&core, "hub-two")["server_ready"], true, "released");
    }

    #[test]
    fn a_held_teardown_ends_only_when_finished() {
        let core = core(Fidelity::default());
        let id = create(&core, "hub-one")["id"].as_str().unwrap().to_owned();
        core.hold_teardowns();
        assert_eq!(core.delete_instance(TOKEN, &id).unwrap().status, 202);
        assert_eq!(core.instances_of(DEFAULT_ACCOUNT)[0].status, vec!["deleting"]);
        let refused = core.update_instance(TOKEN, &id, b"{}").unwrap_err();
        assert_eq!(refused.status, 409, "{refused:?}");
        core.finish_teardowns();
        assert!(core.instances_of(DEFAULT_ACCOUNT).is_empty());
        let id = create(&core, "hub-one")["id"].as_str().unwrap().to_owned();
        assert_eq!(
            core.delete_instance(TOKEN, &id).unwrap().status,
            204,
            "as documented again"
        );
    }

    #[test]
    fn a_lost_answer_is_decided_once_and_processed_first() {
        let core = core(Fidelity::default());
        let route = "POST /vpn/instances";
        core.edit_faults(|f| {
            let lost = FaultRule {
                fail_next: 1,
                lose_answer: true,
                ..FaultRule::default()
            };
            f.rules.insert(route.into(), lost);
        });
        assert!(matches!(core.admit(route, "t").1, Admission::ProcessThenLose));
        assert!(matches!(core.admit(route, "t").1, Admission::Proceed));
        core.record(route, "/vpn/instances", 201);
        core.record("GET /vpn/instances", "/vpn/instances", 200);
        assert_eq!(core.calls().log, vec![route, "GET /vpn/instances"]);
    }

    #[test]
    fn an_update_rewrite_is_stored_and_answered() {
        let core = core(Fidelity::default());
        let id = create(&core, "hub-one")["id"].as_str().unwrap().to_owned();
        core.rewrite_updates(|i| i.public_dns.sort());
        let body =
            serde_json::json!({"name": "Hub", "pushed_routes": [], "public_dns": ["9.9.9.9", "1.1.1.1"]});
        let answer = core
            .update_instance(TOKEN, &id, body.to_string().as_bytes())
            .unwrap();
        assert_eq!(
            answer.value()["public_dns"],
            serde_json::json!(["1.1.1.1", "9.9.9.9"])
        );
        assert_eq!(
            core.instances_of(DEFAULT_ACCOUNT)[0].public_dns,
            ["1.1.1.1", "9.9.9.9"]
        );
    }

    #[test]
    fn lists_and_errors_are_reshaped_as_the_fidelity_says() {
        let enveloped = core(Fidelity::profile("enveloped").unwrap());
        assert!(enveloped.reshapes(true, 200) && !enveloped.reshapes(false, 200));
        assert!(!enveloped.reshapes(true, 404));
        assert_eq!(
            enveloped.reshape(200, b"[1]").as_deref(),
            Some(r#"{"data":[1],"has_more":false}"#)
        );
        let laravel = core(Fidelity::profile("laravel").unwrap());
        assert!(laravel.reshapes(false, 409) && !laravel.reshapes(true, 200));
        let error = br#"{"type":"invalid_request_error","code":"c","message":"m","doc_url":"u"}"#;
        assert_eq!(laravel.reshape(409, error).as_deref(), Some(r#"{"message":"m"}"#));
        assert_eq!(laravel.reshape(422, br#"{"message":"m","errors":{}}"#), None);
        assert!(!core(Fidelity::default()).reshapes_answers());
    }
}
