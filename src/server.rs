//! HTTP endpoints for Kubernetes and Prometheus: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

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
        .route("/healthz", get(|| async { "ok" }))
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

/// Ready once the caches are synced (a standby replica is ready too: it can take over at any
/// moment). The body says which role this replica has.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let h = &state.health;
    if h.shutting_down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned());
    }
    let leader = h.leader.load(Ordering::Relaxed);
    if leader && !h.caches_synced.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "caches not synced".to_owned());
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
