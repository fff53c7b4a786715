//! Assembles the running operator: configuration → clients → leader election → controllers,
//! with probes and metrics served alongside, and graceful shutdown on SIGTERM/SIGINT.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::Store;
use prometheus_client::registry::Registry;

use crate::altostrat::{
    ApiToken, Budget, BudgetConfig, HttpClient, HttpClientConfig, Resilient, RetryPolicy,
};
use crate::config::RunArgs;
use crate::controller::conditions::{self, ConditionedStatus, HasStatus};
use crate::controller::credentials::{CredentialsSettings, Observers, SharedCredentials};
use crate::controller::record::Records;
use crate::controller::{self, ControllerDeps, DefaultToken, Settings, WatchScope};
use crate::crd::{VpnInstance, VpnPeer};
use crate::leader::{ElectionTiming, Heartbeat, LeaderElector, LeaderGate};
use crate::metrics::{Metrics, ResourceCounts, ResourceLabels};
use crate::server::{self, Health};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The production Altostrat client stack.
type Api = Resilient<HttpClient>;
type Shutdown = Shared<BoxFuture<'static, ()>>;
/// The caches of every watch scope, for the Ready gauges.
type ScopeStores = Arc<std::sync::Mutex<Vec<(Store<VpnInstance>, Store<VpnPeer>)>>>;

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> Shutdown {
    async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested: finishing in-flight reconciles");
    }
    .boxed()
    .shared()
}

/// The default token: from the file (read again when it changes) or the flag.
fn default_token(args: &RunArgs) -> Result<DefaultToken, BoxError> {
    let token = if let Some(path) = &args.api_token_file {
        DefaultToken::file(path.clone())
            .map_err(|e| format!("reading the API token file {}: {e}", path.display()))?
    } else {
        args.api_token
            .as_deref()
            .map_or_else(DefaultToken::none, |t| DefaultToken::fixed(ApiToken::new(t)))
    };
    Ok(token
        .limited_to(args.default_token_namespaces.clone())
        .with_grace(args.default_token_grace))
}

/// Adds the objects of `store`, of `kind`, to `counts`, by namespace and Ready and Synced
/// status.
fn count_resources<K>(kind: &'static str, store: &Store<K>, counts: &mut ResourceCounts)
where
    K: kube::Resource<DynamicType = ()> + HasStatus + Clone + 'static,
{
    for obj in store.state() {
        let conditions = obj.status().map(|s| s.conditions()).unwrap_or_default();
        let status_of = |type_: &str| match conditions.iter().find(|c| c.type_ == type_) {
            Some(c) if c.status == "True" => "True",
            Some(c) if c.status == "False" => "False",
            _ => "Unknown",
        };
        let labels = ResourceLabels {
            kind,
            resource_namespace: obj.meta().namespace.clone().unwrap_or_default(),
            ready: status_of(conditions::READY),
            synced: status_of(conditions::SYNCED),
        };
        *counts.entry(labels).or_default() += 1;
    }
}

/// Waits for a controller's cache to be filled. `Store::wait_until_ready` wakes only the last
/// of several concurrent waiters (the controller's own applier is one), so it is polled with a
/// short timeout: once the controller has seen the cache ready, the next poll returns at once.
async fn wait_until_ready<K>(store: &Store<K>) -> bool
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    loop {
        if let Ok(result) =
            tokio::time::timeout(std::time::Duration::from_millis(200), store.wait_until_ready()).await
        {
            return result.is_ok();
        }
    }
}

/// How each token's request budget is spent, from the flags.
fn budget_config(args: &RunArgs) -> Result<BudgetConfig, BoxError> {
    if !(0.05..=1.0).contains(&args.api_observe_share) {
        return Err(format!(
            "--api-observe-share must be between 0.05 and 1, not {}",
            args.api_observe_share
        )
        .into());
    }
    Ok(BudgetConfig {
        rate_per_minute: args.api_rate_limit,
        burst: args.api_burst,
        observe_share: args.api_observe_share,
        ..BudgetConfig::default()
    })
}

/// The Altostrat client of the whole process: one HTTP client and one budget shared by every
/// scope, so the per-token budget holds across them. Its answers judge the default token.
fn build_api(
    args: &RunArgs,
    (metrics, default_token, shared): (&Arc<Metrics>, &Arc<DefaultToken>, &Arc<SharedCredentials>),
    request_timeout: std::time::Duration,
    gate: Arc<LeaderGate>,
    budget: Arc<Budget>,
) -> Result<Arc<Api>, BoxError> {
    let http = HttpClient::new(HttpClientConfig {
        base_url: args.api_url.clone(),
        request_timeout,
        ca_file: args.api_ca_file.clone(),
        ..HttpClientConfig::default()
    })?;
    Ok(Arc::new(
        Resilient::new(http, budget, RetryPolicy::default(), metrics.clone())
            .fenced_by(gate)
            .reporting_tokens_to(Arc::new(Observers(vec![
                default_token.clone(),
                shared.judge.clone(),
            ]))),
    ))
}

/// The election's timing (`None` without leader election) and the Altostrat request timeout:
/// with leader election it must end every request before a standby may take over, so it is
/// clamped to [`ElectionTiming::max_request_timeout`].
fn timing_and_request_timeout(
    args: &RunArgs,
) -> Result<(Option<ElectionTiming>, std::time::Duration), BoxError> {
    if !args.leader_election {
        return Ok((None, args.api_timeout));
    }
    let timing = ElectionTiming::new(
        args.leader_election_lease_duration,
        args.leader_election_renew_deadline,
        args.leader_election_retry_period,
    )?;
    let max = timing.max_request_timeout();
    if max < std::time::Duration::from_millis(500) {
        return Err(format!(
            "leader election: lease duration {:?} minus renew deadline {:?} leaves no time for an Altostrat request; lengthen the lease duration or shorten the renew deadline",
            timing.lease_duration, timing.renew_deadline
        )
        .into());
    }
    if args.api_timeout > max {
        tracing::warn!(
            configured = ?args.api_timeout,
            effective = ?max,
            "ALTOSTRAT_API_TIMEOUT clamped: with leader election a request must end before a standby may take over (4/5 of lease duration minus renew deadline)"
        );
        return Ok((Some(timing), max));
    }
    Ok((Some(timing), args.api_timeout))
}

/// Recomputes the resource gauges from every scope's caches, and drops queue triggers whose
/// object went away; called on each scrape.
fn ready_gauges(stores: ScopeStores, metrics: Arc<Metrics>) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || {
        let mut counts = ResourceCounts::new();
        for (instances, peers) in stores.lock().expect("store list lock").iter() {
            count_resources("VpnInstance", instances, &mut counts);
            count_resources("VpnPeer", peers, &mut counts);
        }
        metrics.set_resources(&counts);
        metrics.drop_abandoned_triggers();
    })
}

fn watch_scopes(args: &RunArgs) -> Vec<WatchScope> {
    let named: Vec<WatchScope> = args
        .watch_namespaces
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .map(|n| WatchScope::Namespace(n.to_owned()))
        .collect();
    if named.is_empty() {
        vec![WatchScope::AllNamespaces]
    } else {
        named
    }
}

/// The operator's own token, which resources without `credentialsSecretRef` use.
fn operator_token(args: &RunArgs) -> Result<Arc<DefaultToken>, BoxError> {
    let token = Arc::new(default_token(args)?);
    if !token.is_configured() {
        tracing::warn!(
            "no default API token configured: only resources with credentialsSecretRef can be reconciled"
        );
    }
    Ok(token)
}

/// Before the controllers start: the one-time migration to ownership records, with the lease
/// renewed meanwhile (it may take a while on a large cluster); then the sweep of records whose
/// holder is gone, running until aborted. `None` when the process is asked to stop first.
async fn records_ready(
    args: &RunArgs,
    client: &kube::Client,
    scopes: &[WatchScope],
    (lost_leadership, shutdown): (&mut BoxFuture<'static, ()>, &Shutdown),
) -> Result<Option<tokio::task::JoinHandle<()>>, BoxError> {
    let records = Records::new(client.clone(), installation(args));
    tokio::select! {
        _ = migrate(client, scopes, &records, args.label_selector.as_deref()) => {},
        _ = shutdown.clone() => return Ok(None),
        _ = lost_leadership => return Err("leader lease lost before the controllers started".into()),
    }
    Ok(Some(tokio::spawn(controller::upkeep::sweep(
        client.clone(),
        records,
    ))))
}

/// The one-time migration of ids in status to ownership records (see `upkeep::migrate`), tried
/// until it succeeds: the controllers do not start before it, or the resources it is for would
/// find no record and be refused.
async fn migrate(client: &kube::Client, scopes: &[WatchScope], records: &Records, selector: Option<&str>) {
    let mut wait = std::time::Duration::from_secs(1);
    while let Err(error) = controller::upkeep::migrate(client, scopes, records, selector).await {
        tracing::error!(%error, retry_in = ?wait, "ownership records not migrated from status yet; the controllers wait for it");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(60));
    }
}

/// The namespace of the leader Lease.
fn lease_namespace(args: &RunArgs) -> String {
    args.leader_election_namespace
        .clone()
        .or_else(|| args.pod_namespace.clone())
        .unwrap_or_else(|| "default".into())
}

/// The name of this installation in ownership records: `--installation`, else the leader
/// Lease's `namespace/name`, which two installations in one cluster cannot share.
fn installation(args: &RunArgs) -> String {
    args.installation
        .clone()
        .unwrap_or_else(|| format!("{}/{}", lease_namespace(args), args.leader_election_lease_name))
}

fn elector(
    args: &RunArgs,
    client: &kube::Client,
    identity: &str,
    timing: Option<ElectionTiming>,
    gate: &Arc<LeaderGate>,
) -> Option<LeaderElector> {
    timing.map(|timing| {
        let namespace = lease_namespace(args);
        LeaderElector::new(
            client.clone(),
            &namespace,
            &args.leader_election_lease_name,
            identity,
            timing,
            gate.clone(),
        )
    })
}

/// Waits for the lease. Returns the future that resolves when leadership is lost (never,
/// without leader election), or `None` when shutdown came first.
async fn lead(elector: Option<&LeaderElector>, shutdown: Shutdown) -> Option<BoxFuture<'static, ()>> {
    let Some(elector) = elector else {
        return Some(futures::future::pending().boxed());
    };
    tracing::info!(identity = elector.identity(), "waiting for the leader lease");
    let acquired = tokio::select! {
        at = elector.acquire() => at,
        _ = shutdown => return None,
    };
    tracing::info!(identity = elector.identity(), "acquired the leader lease");
    let renewer = elector.clone();
    Some(async move { renewer.keep_renewing(acquired).await }.boxed())
}

/// Runs the controllers of every scope until `stop`; readiness turns true once every scope's
/// caches are filled.
async fn run_scopes(
    deps: ControllerDeps<Api>,
    scopes: Vec<WatchScope>,
    stop: Shutdown,
    stores: ScopeStores,
    health: Arc<Health>,
) {
    let scope_count = scopes.len();
    let synced = Arc::new(AtomicUsize::new(0));
    futures::future::join_all(scopes.into_iter().map(|scope| {
        tracing::info!(?scope, "starting controllers");
        let (stores, health, synced) = (stores.clone(), health.clone(), synced.clone());
        controller::run(deps.clone(), scope, stop.clone(), move |instances, peers| {
            stores
                .lock()
                .expect("store list lock")
                .push((instances.clone(), peers.clone()));
            tokio::spawn(async move {
                if wait_until_ready(&instances).await
                    && wait_until_ready(&peers).await
                    && synced.fetch_add(1, Ordering::SeqCst) + 1 == scope_count
                {
                    health.caches_synced.store(true, Ordering::Relaxed);
                    tracing::info!("caches synced");
                }
            });
        })
    }))
    .await;
}

/// The controllers of every scope, and the one VpnCredentials controller of the process, until
/// `stop` (which also ends them when leadership is lost).
async fn run_controllers(
    deps: ControllerDeps<Api>,
    scopes: Vec<WatchScope>,
    stop: Shutdown,
    stores: ScopeStores,
    health: Arc<Health>,
) {
    let (client, api, shared) = (deps.client.clone(), deps.api.clone(), deps.shared.clone());
    let credentials = controller::credentials::run(client, api, shared.clone(), stop.clone());
    // Resolving against a VpnCredentials cache not yet filled would miss a namespace's
    // default and fall back to the operator's token, or to its deletion default: so the
    // scopes start once the VpnCredentials are listed.
    let scopes = async move {
        shared.listed().await;
        run_scopes(deps, scopes, stop, stores, health).await;
    };
    futures::join!(scopes, credentials);
}

fn controller_deps(
    args: &RunArgs,
    client: kube::Client,
    api: Arc<Api>,
    (default_token, shared): (Arc<DefaultToken>, Arc<SharedCredentials>),
    (metrics, health): (Arc<Metrics>, &Health),
    (identity, budget): (String, BudgetConfig),
) -> ControllerDeps<Api> {
    ControllerDeps {
        client,
        api,
        observations: Arc::default(),
        default_token,
        shared,
        metrics,
        running: health.reconciles.clone(),
        settings: Settings {
            resync_interval: args.resync_interval,
            provisioning_poll: args.provisioning_poll_interval,
            budget,
            instance_concurrency: args.instance_concurrency,
            peer_concurrency: args.peer_concurrency,
            label_selector: args.label_selector.clone(),
            watch_namespaces: watch_scopes(args)
                .into_iter()
                .filter_map(|scope| match scope {
                    WatchScope::Namespace(ns) => Some(ns),
                    WatchScope::AllNamespaces => None,
                })
                .collect(),
            installation: installation(args),
            default_deletion_policy: args.default_deletion_policy,
            ..Settings::default()
        },
        reporter: Reporter {
            controller: "vpn-operator".into(),
            instance: Some(identity),
        },
        scopes: Default::default(),
    }
}

/// `shutdown`, or an earlier stop through the returned sender.
fn stoppable(shutdown: Shutdown) -> (tokio::sync::oneshot::Sender<()>, Shutdown) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        tokio::select! {
            _ = shutdown => {},
            _ = stop_rx => {},
        }
    }
    .boxed()
    .shared();
    (stop_tx, stop)
}

/// How long the controllers may take to stop after leadership was lost (their Altostrat
/// requests are fenced already; only Kubernetes status writes may still be finishing).
const LOST_LEADERSHIP_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Each lease round trip is bounded by the renew deadline and followed by a beat, so a loop
/// that has not beaten for twice the lease duration is stuck (`/healthz` says so).
fn with_heartbeat(elector: LeaderElector, health: &Health) -> LeaderElector {
    let beat = Heartbeat::new(elector.timing().lease_duration * 2);
    let _ = health.lease_loop.set(beat.clone());
    elector.with_heartbeat(beat)
}

/// The gate is already closed: no Altostrat request is sent from here on, so in-flight
/// reconciles fail fast instead of writing. Stops advertising leadership and gives the
/// controllers a bounded time to stop, before the process exits for a fresh start.
async fn stop_after_lost_leadership(
    controllers: impl std::future::Future<Output = ()>,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    health: &Health,
    metrics: &Metrics,
) {
    health.leader.store(false, Ordering::Relaxed);
    health.shutting_down.store(true, Ordering::Relaxed);
    metrics.leader.set(0);
    tracing::error!("leadership lost: Altostrat requests fenced, stopping controllers");
    let _ = stop_tx.send(());
    if tokio::time::timeout(LOST_LEADERSHIP_DRAIN, controllers)
        .await
        .is_err()
    {
        tracing::error!("controllers did not stop in time after leadership was lost: exiting");
    }
}

/// Fencing: with leader election, Altostrat requests are sent only while the lease is
/// confirmed (closed until it is acquired, closed for good when it is lost).
fn gate_for(timing: Option<&ElectionTiming>) -> Arc<LeaderGate> {
    if timing.is_some() {
        LeaderGate::closed()
    } else {
        LeaderGate::always_open()
    }
}

/// What the process is made of before it may lead: metrics, probes, and the fenced, budgeted
/// Altostrat client.
struct Parts {
    registry: Registry,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    timing: Option<ElectionTiming>,
    gate: Arc<LeaderGate>,
    budget: Arc<Budget>,
    budget_settings: BudgetConfig,
    api: Arc<Api>,
    shared: Arc<SharedCredentials>,
}

fn parts(args: &RunArgs, default_token: &Arc<DefaultToken>) -> Result<Parts, BoxError> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let health = Arc::new(Health::default());
    let _ = health.default_token.set(default_token.clone());
    health
        .leader_election
        .store(args.leader_election, Ordering::Relaxed);
    let (timing, request_timeout) = timing_and_request_timeout(args)?;
    let gate = gate_for(timing.as_ref());
    let budget_settings = budget_config(args)?;
    let budget = Arc::new(Budget::new(budget_settings.clone()));
    let shared = Arc::new(SharedCredentials::new(CredentialsSettings {
        namespace: args.pod_namespace.clone().unwrap_or_else(|| "default".into()),
        grace: args.default_token_grace,
        check_interval: args.credentials_check_interval,
        default_rate: args.api_rate_limit,
    }));
    let api = build_api(
        args,
        (&metrics, default_token, &shared),
        request_timeout,
        gate.clone(),
        budget.clone(),
    )?;
    Ok(Parts {
        registry,
        metrics,
        health,
        timing,
        gate,
        budget,
        budget_settings,
        api,
        shared,
    })
}

/// Runs the controllers until shutdown, or until leadership is lost (and then stops them).
/// Returns whether leadership was lost.
async fn until_stopped_or_lost(
    controllers: impl std::future::Future<Output = ()>,
    lost_leadership: BoxFuture<'static, ()>,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    (health, metrics): (&Health, &Metrics),
) -> bool {
    tokio::pin!(controllers);
    tokio::select! {
        _ = &mut controllers => false,
        _ = lost_leadership => {
            stop_after_lost_leadership(controllers, stop_tx, health, metrics).await;
            true
        }
    }
}

/// This replica's name in the lease and in events: the pod's, or a random one.
fn identity(args: &RunArgs) -> String {
    args.pod_name
        .clone()
        .unwrap_or_else(|| format!("vpn-operator-{}", uuid::Uuid::new_v4()))
}

/// Stops leading: no more sweeps, the probes say the replica is going, and the lease is
/// released for a standby unless it was lost already.
async fn stop_leading(
    sweeper: tokio::task::JoinHandle<()>,
    elector: Option<&LeaderElector>,
    lost: bool,
    (health, metrics): (&Health, &Metrics),
) {
    sweeper.abort();
    health.shutting_down.store(true, Ordering::Relaxed);
    if let Some(elector) = elector
        && !lost
    {
        elector.release().await;
    }
    metrics.leader.set(0);
}

pub async fn run(args: RunArgs) -> Result<(), BoxError> {
    let default_token = operator_token(&args)?;
    let client = kube::Client::try_default().await?;
    // Before anything else: against stale CRDs the API server would drop the fields they lack.
    crate::crd_check::ensure_current(&client).await?;

    let parts = parts(&args, &default_token)?;
    let (metrics, health) = (parts.metrics, parts.health);
    let stores: ScopeStores = Arc::default();
    let shutdown = shutdown_signal();
    let app = server::router(
        Arc::new(parts.registry),
        health.clone(),
        ready_gauges(stores.clone(), metrics.clone()),
    );
    let server = tokio::spawn(server::serve(args.metrics_addr, app, shutdown.clone()));

    let identity = identity(&args);
    let elector =
        elector(&args, &client, &identity, parts.timing, &parts.gate).map(|e| with_heartbeat(e, &health));
    // Leadership lost ends the process (as client-go does): a fresh start rejoins as standby.
    let Some(mut lost_leadership) = lead(elector.as_ref(), shutdown.clone()).await else {
        let _ = server.await;
        return Ok(());
    };
    health.leader.store(true, Ordering::Relaxed);
    metrics.leader.set(1);
    // The previous leader's calls of the last minute still count at Altostrat.
    parts.budget.start_empty();
    // Only the leader calls Altostrat: a standby's token is judged once it leads.
    let judge = tokio::spawn(controller::default_token::keep_judging(
        default_token.clone(),
        parts.api.clone(),
        metrics.clone(),
        controller::default_token::CHECK_DELAY,
    ));

    let scopes = watch_scopes(&args);
    let Some(sweeper) = records_ready(&args, &client, &scopes, (&mut lost_leadership, &shutdown)).await?
    else {
        let _ = server.await;
        return Ok(());
    };
    let observed = (metrics.clone(), &*health);
    let named = (identity, parts.budget_settings);
    let tokens = (default_token, parts.shared);
    let deps = controller_deps(&args, client, parts.api, tokens, observed, named);
    let (stop_tx, stop) = stoppable(shutdown);
    let controllers = run_controllers(deps, scopes, stop, stores, health.clone());
    let lost = until_stopped_or_lost(controllers, lost_leadership, stop_tx, (&health, &metrics)).await;
    judge.abort();
    stop_leading(sweeper, elector.as_ref(), lost, (&health, &metrics)).await;
    if lost {
        return Err("leader lease lost".into());
    }
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}
