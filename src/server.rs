//! HTTP endpoints for Kubernetes and Prometheus: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::leader::Heartbeat;

/// Health as seen by the probes.
#[derive(Debug, Default)]
pub struct Health {
    /// Caches of both kinds have completed their first list.
    pub caches_synced: AtomicBool,
    /// This replica holds the leader lease (always true without leader election).
    pub leader: AtomicBool,
    /// Leader election is enabled (a standby is ready but idle).
    pub leader_election: AtomicBool,
    /// Shutdown has begun: stop receiving traffic.
    pub shutting_down: AtomicBool,
    /// Progress of the lease loop (only with leader election): `/healthz` fails when it has
    /// not beaten within its bound.
    pub lease_loop: std::sync::OnceLock<Arc<Heartbeat>>,
    /// Reconciles in flight: `/healthz` fails when one has run far longer than any can.
    pub reconciles: Arc<InFlight>,
    /// The operator's default token (`controller::DefaultToken`): `/readyz` fails while
    /// Altostrat refuses it; `/healthz` never does, as a restart cannot fix it.
    pub default_token: std::sync::OnceLock<Arc<dyn ReadinessCheck>>,
}

/// Something that can hold readiness back, saying why.
pub trait ReadinessCheck: Send + Sync + std::fmt::Debug + 'static {
    /// Why the operator is not ready at `now`, if it is not.
    fn not_ready_reason(&self, now: Instant) -> Option<String>;
}

/// The start times of the reconciles running now. No reconcile waits for the API budget (it
/// requeues instead) and every request has a timeout, so one that has run for `bound` is stuck
/// (a deadlock, a hung connection): a restart is the cure. Waiting in back-off is not running.
#[derive(Debug)]
pub struct InFlight {
    started: std::sync::Mutex<std::collections::HashMap<u64, Instant>>,
    next: AtomicU64,
    bound: Duration,
}

impl Default for InFlight {
    fn default() -> Self {
        Self::with_bound(Duration::from_secs(15 * 60))
    }
}

impl InFlight {
    pub fn with_bound(bound: Duration) -> Self {
        Self {
            started: std::sync::Mutex::default(),
            next: AtomicU64::new(0),
            bound,
        }
    }

    /// Counts a reconcile as running until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> Running {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.started
            .lock()
            .expect("in-flight lock")
            .insert(id, Instant::now());
        Running {
            in_flight: self.clone(),
            id,
        }
    }

    /// How long the oldest reconcile has run, at `now`, if longer than the bound.
    pub fn stuck_at(&self, now: Instant) -> Option<Duration> {
        let started = self.started.lock().expect("in-flight lock");
        let oldest = started.values().min()?;
        let running = now.saturating_duration_since(*oldest);
        (running > self.bound).then_some(running)
    }
}

/// One running reconcile (see [`InFlight::start`]).
#[derive(Debug)]
#[must_use = "the reconcile counts as running only while the guard lives"]
pub struct Running {
    in_flight: Arc<InFlight>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut started) = self.in_flight.started.lock() {
            started.remove(&self.id);
        }
    }
}

type Refresh = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    health: Arc<Health>,
    refresh: Refresh,
}

pub fn router(registry: Arc<Registry>, health: Arc<Health>, refresh: Refresh) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            registry,
            health,
            refresh,
        })
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (state.refresh)();
    match crate::metrics::encode(&state.registry) {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Live unless a loop that must make progress is stuck. Altostrat back-off does not count:
/// the lease loop never waits for Altostrat.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(lease) = state.health.lease_loop.get()
        && let Some(since) = lease.stuck_at(Instant::now())
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("lease loop stuck: no progress for {}s", since.as_secs()),
        );
    }
    if let Some(running) = state.health.reconciles.stuck_at(Instant::now()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("a reconcile is stuck: running for {}s", running.as_secs()),
        );
    }
    (StatusCode::OK, "ok".to_owned())
}

/// Ready once the caches are synced (a standby replica is ready too: it can take over at any
/// moment), unless Altostrat refuses the default token. The body says which role this replica
/// has, or why it is not ready (the kubelet puts it in the pod's readiness probe message).
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let h = &state.health;
    if h.shutting_down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned());
    }
    let leader = h.leader.load(Ordering::Relaxed);
    if leader && !h.caches_synced.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "caches not synced".to_owned());
    }
    if let Some(reason) = h
        .default_token
        .get()
        .and_then(|token| token.not_ready_reason(Instant::now()))
    {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}"));
    }
    let role = match (h.leader_election.load(Ordering::Relaxed), leader) {
        (false, _) => "ready",
        (true, true) => "ready: leader",
        (true, false) => "ready: standby",
    };
    (StatusCode::OK, role.to_owned())
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics and health probes");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn healthz_fails_when_the_lease_loop_is_stuck() {
        use tower::ServiceExt;
        let health = Arc::new(Health::default());
        let app = || router(Arc::new(Registry::default()), health.clone(), Arc::new(|| {}));
        let get = |app: Router| async move {
            let req = axum::http::Request::get("/healthz")
                .body(axum::body::Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        };
        assert_eq!(get(app()).await, StatusCode::OK, "no lease loop: live");
        let beat = Heartbeat::new(Duration::ZERO);
        health.lease_loop.set(beat.clone()).unwrap();
        // With a zero bound the loop is stuck once the clock has moved past its last beat.
        while beat.stuck_at(Instant::now()).is_none() {
            tokio::task::yield_now().await;
        }
        assert_eq!(get(app()).await, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_refused_default_token_fails_readiness_with_the_reason_but_never_liveness() {
        use crate::altostrat::{ApiToken, TokenAnswer, TokenObserver};
        use tower::ServiceExt;
        let health = Arc::new(Health::default());
        health.leader.store(true, Ordering::Relaxed);
        health.caches_synced.store(true, Ordering::Relaxed);
        let token = Arc::new(crate::controller::DefaultToken::fixed(ApiToken::new("wrong")));
        health.default_token.set(token.clone()).unwrap();
        let get = |path: &'static str| {
            let app = router(Arc::new(Registry::default()), health.clone(), Arc::new(|| {}));
            async move {
                let req = axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap();
                let res = app.oneshot(req).await.unwrap();
                let status = res.status();
                let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        assert_eq!(
            get("/readyz").await,
            (StatusCode::OK, "ready".to_owned()),
            "not judged yet"
        );
        token.token_answered(&ApiToken::new("wrong"), TokenAnswer::Refused { status: 401 });
        let (status, body) = get("/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.starts_with(
                "not ready: the Altostrat API refused the operator's default token (401 Unauthorized)"
            ),
            "{body}"
        );
        assert_eq!(
            get("/healthz").await.0,
            StatusCode::OK,
            "a restart does not fix a token"
        );
        token.token_answered(&ApiToken::new("wrong"), TokenAnswer::Accepted);
        assert_eq!(get("/readyz").await.0, StatusCode::OK);
    }

    #[test]
    fn a_reconcile_running_past_the_bound_is_stuck_and_a_finished_one_is_forgotten() {
        let in_flight = Arc::new(InFlight::with_bound(Duration::from_secs(60)));
        let now = Instant::now();
        assert_eq!(in_flight.stuck_at(now), None, "nothing running");
        let running = in_flight.start();
        assert_eq!(in_flight.stuck_at(now + Duration::from_secs(59)), None);
        let stuck = in_flight.stuck_at(now + Duration::from_secs(61)).unwrap();
        assert!(stuck > Duration::from_secs(60));
        drop(running);
        assert_eq!(in_flight.stuck_at(now + Duration::from_secs(3600)), None);
    }
}
