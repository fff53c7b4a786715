//! A faithful, stateful stand-in for the Altostrat Managed VPN API, used by the tests, the demo
//! and the benchmark (`vpn-operator simulate`).
//!
//! The rules, state, validation, fidelity and faults live in [`Core`], plain Rust without HTTP;
//! the axum handlers only parse requests, ask the core and render its answers. The reconcile
//! tests serve the same router in process and set their scenes through the core.
//!
//! Choices where the Altostrat documentation is silent (documented in `simulate --help` too):
//! - PUT instance replaces `name`, `pushed_routes`, `public_dns` and the optional `domains`,
//!   `split_dns`, `dns_custom`; an omitted optional list is cleared. `hostname`, `region` and
//!   `firewall` in the body are ignored (they are not updatable).
//! - DELETE instance answers 204 and deletes its peers with it; the hostname becomes free (or
//!   see [`InstanceDelete`]: a 202 and a teardown, or a 405).
//! - A duplicate hostname answers 409 `hostname_taken` (or see [`Fidelity`]), also when another
//!   account holds it; an unknown region 422 `region_unknown`.
//! - Each token acts for an account and sees only that account's instances and their peers.
//! - `GET /vpn/site/{siteId}/subnets` answers the subnets available at the site, as the docs
//!   describe them, as `[{"subnet": "10.12.34.0/24", "name": "LAN"}]` (the real item schema is
//!   not published): two /24s derived from the site id unless set with
//!   `PUT /_admin/sites/{id}/subnets`; 404 once the site is deleted out of band. Sites are not
//!   scoped to accounts.
//! - A created instance has the single public resolver every documented create example shows
//!   (a PUT still needs 2 to 4), so a client that copies what it observed into a PUT is caught.
//! - Opt-in modes ([`Fidelity`]) answer the way the real service plausibly does where the
//!   docs are silent or where the project's defaults flatter the client: a taken hostname as a
//!   Laravel 422 (or a 400), lists in the `{data, has_more}` envelope, `{message}`-only error
//!   bodies, a peer seat limit answered 403, an asynchronous or refused instance DELETE,
//!   undocumented fields, statuses and peer kinds. Named sets of them are the [`PROFILES`]
//!   (`simulate --profile`, [`Fidelity::profile`]).
//! - Users and sites can be deleted out of band (`DELETE /_admin/users/{id}`,
//!   `/_admin/sites/{id}`): their peers vanish everywhere and their ids stop validating.
//! - Readiness flags flip in the order configured → rsa_ready → diffie_hellman_ready →
//!   server_ready, at quarters of `--provision-delay`.
//! - A client peer's `token` (site peers: `null`) is shaped like the documented example, a
//!   Laravel `Crypt::encrypt` payload, and lives `--share-token-ttl` (default 3600 s, shown as
//!   `token_ttl`). A read of the peer (GET, list, the create and update answers) that finds it
//!   expired shows a new one; with [`ShareTokens::EveryRead`] every read does. `GET
//!   /vpn/client` answers 401 (`token_expired`, or `invalid_token` for a token it never issued
//!   or whose peer is gone) in the ErrorResponse shape. `POST /_admin/peers/{id}/expire-token`
//!   expires a peer's tokens at once.
//! - `GET /vpn/client` serves a WireGuard profile (`text/plain`, or `{"format", "config"}` for
//!   `Accept: application/json`) built from the instance as it is at that moment and the peer's
//!   `route_all`: an edit of the hub's routes or resolvers shows in the next download.

mod client_config;
mod core;
mod encoding;
mod faults;
mod fidelity;
mod handlers;
mod instances;
mod listener;
mod peers;
mod render;
mod share;
mod state;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use clap::Args;

pub use client_config::private_key as peer_private_key;
pub use core::{Admission, Answer, Body, Calls, Core, Failure, Reply};
pub use faults::{FaultConfig, FaultRule};
pub use fidelity::{
    DEFAULT_TEARDOWN, DeleteMode, Fidelity, FidelityArgs, InstanceDelete, PROFILES, ShareTokens,
};
pub use instances::SeedInstance;
pub use state::{Owner, State};

use crate::altostrat::model::{Country, Instance, Peer, RegionResponse};

/// Scopes an API token can carry.
pub const ALL_SCOPES: [&str; 4] = ["vpn:view", "vpn:create", "vpn:update", "vpn:delete"];

/// The account of tokens that name none: all of them see each other's instances.
pub const DEFAULT_ACCOUNT: &str = "default";

/// A token the simulator accepts, with its scopes and the account it acts for. A token sees
/// only the instances of its account (and their peers); hostnames are unique across accounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    pub token: String,
    pub scopes: Vec<String>,
    pub account: String,
}

impl ApiToken {
    pub fn all_scopes(token: &str) -> Self {
        Self {
            token: token.to_owned(),
            scopes: ALL_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            account: DEFAULT_ACCOUNT.to_owned(),
        }
    }

    /// The same token, acting for `account`.
    pub fn in_account(self, account: &str) -> Self {
        Self {
            account: account.to_owned(),
            ..self
        }
    }

    /// `TOKEN[=SCOPES][@ACCOUNT]`: all scopes unless `=scope,scope` is given, the default
    /// account unless `@account` is given.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (spec, account) = match spec.rsplit_once('@') {
            Some((_, "")) => return Err(format!("token {spec:?}: empty account after '@'")),
            Some((spec, account)) => (spec, account),
            None => (spec, DEFAULT_ACCOUNT),
        };
        let Some((token, scopes)) = spec.split_once('=') else {
            return Ok(Self::all_scopes(spec).in_account(account));
        };
        let scopes: Vec<String> = scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = scopes.iter().find(|s| !ALL_SCOPES.contains(&s.as_str())) {
            return Err(format!("unknown scope {bad:?}; known: {}", ALL_SCOPES.join(", ")));
        }
        Ok(Self {
            token: token.to_owned(),
            scopes,
            account: account.to_owned(),
        })
    }
}

#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// Time from create until all four readiness flags are true.
    pub provision_delay: Duration,
    /// Time a pending status entry (e.g. `peer-created`) stays in `status`.
    pub status_clear_delay: Duration,
    /// Life of a client peer's share token (`token_ttl`, in whole seconds on the wire).
    pub share_token_ttl: Duration,
    pub tokens: Vec<ApiToken>,
    pub regions: RegionResponse,
    pub state_file: Option<PathBuf>,
    pub faults: FaultConfig,
    pub fidelity: Fidelity,
}

/// The share token life of every documented peer example (`token_ttl: 3600`).
pub const DEFAULT_SHARE_TOKEN_TTL: Duration = Duration::from_secs(3600);

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            provision_delay: Duration::from_secs(3),
            status_clear_delay: Duration::from_secs(1),
            share_token_ttl: DEFAULT_SHARE_TOKEN_TTL,
            tokens: vec![ApiToken::all_scopes("sim-token")],
            regions: default_regions(),
            state_file: None,
            faults: FaultConfig::default(),
            fidelity: Fidelity::default(),
        }
    }
}

/// The region tree of [`default_regions`]: continent, country, ISO code, flag, and its cities
/// as (region code, label).
type RegionRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const DEFAULT_REGIONS: &[RegionRow] = &[
    (
        "North America",
        "United States",
        "US",
        "🇺🇸",
        &[
            ("sjc", "Silicon Valley"),
            ("lax", "Los Angeles"),
            ("nyc", "New York"),
            ("dfw", "Dallas"),
        ],
    ),
    ("North America", "Canada", "CA", "🇨🇦", &[("yyz", "Toronto")]),
    ("Europe", "Germany", "DE", "🇩🇪", &[("fra", "Frankfurt")]),
    ("Europe", "United Kingdom", "GB", "🇬🇧", &[("lon", "London")]),
    ("Europe", "Netherlands", "NL", "🇳🇱", &[("ams", "Amsterdam")]),
    ("Asia", "Singapore", "SG", "🇸🇬", &[("sin", "Singapore")]),
    ("Asia", "Japan", "JP", "🇯🇵", &[("nrt", "Tokyo")]),
    ("Oceania", "Australia", "AU", "🇦🇺", &[("syd", "Sydney")]),
    ("Africa", "South Africa", "ZA", "🇿🇦", &[("jnb", "Johannesburg")]),
];

/// A realistic region tree: continent → country → cities (region codes).
pub fn default_regions() -> RegionResponse {
    let mut regions = RegionResponse::new();
    for (continent, name, iso, flag, cities) in DEFAULT_REGIONS {
        let country = Country {
            iso: (*iso).into(),
            flag_svg: format!("https://flagcdn.com/{}.svg", iso.to_lowercase()),
            flag: (*flag).into(),
            cities: cities
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        regions
            .entry((*continent).to_owned())
            .or_default()
            .insert((*name).to_owned(), country);
    }
    regions
}

/// The simulator; cheap to clone (shared state).
#[derive(Clone)]
pub struct Simulator {
    core: Arc<Core>,
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> std::io::Result<Self> {
        let state = match &config.state_file {
            Some(path) => State::load(path)?,
            None => State::default(),
        };
        Ok(Self {
            core: Arc::new(Core::new(config, state)),
        })
    }

    /// The simulator's rules and state, to drive without HTTP.
    pub fn core(&self) -> &Core {
        &self.core
    }

    pub fn router(&self) -> Router {
        handlers::router(self.core.clone())
    }

    /// Serves on `listener` until `shutdown` resolves. Each connection can be severed by the
    /// `lose_answer` fault.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let service = self
            .router()
            .into_make_service_with_connect_info::<listener::Connection>();
        axum::serve(listener::SeverableListener(listener), service)
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Starts a simulator on an ephemeral loopback port, for tests and embedding.
    pub async fn spawn(config: SimulatorConfig) -> std::io::Result<RunningSimulator> {
        let simulator = Self::new(config)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(simulator.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Ok(RunningSimulator {
            simulator,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn calls(&self) -> Calls {
        self.core.calls()
    }

    pub fn reset_calls(&self) {
        self.core.reset_calls();
    }

    pub fn set_faults(&self, faults: FaultConfig) {
        self.core.set_faults(faults);
    }

    /// Every instance as the API would return it now.
    pub fn instances(&self) -> Vec<Instance> {
        let now = state::now_ms();
        self.core
            .state()
            .instances_in_order()
            .iter()
            .map(|i| i.view(now))
            .collect()
    }

    /// When each instance was created (milliseconds since the Unix epoch), in creation order.
    pub fn instance_created_ms(&self) -> Vec<u64> {
        let state = self.core.state();
        state
            .instances_in_order()
            .iter()
            .map(|i| i.provision_started_ms)
            .collect()
    }

    pub fn peers(&self) -> Vec<Peer> {
        let state = self.core.state();
        let mut peers: Vec<_> = state.peers.values().collect();
        peers.sort_by_key(|p| p.seq);
        peers.iter().map(|p| p.peer.clone()).collect()
    }
}

/// A simulator serving on loopback; stops when dropped.
pub struct RunningSimulator {
    simulator: Simulator,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningSimulator {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn simulator(&self) -> &Simulator {
        &self.simulator
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Flags of `vpn-operator simulate` (its help text lives on the subcommand).
#[derive(Debug, Args)]
#[command(after_long_help = ADMIN_HELP)]
pub struct SimulateArgs {
    /// Address to listen on. Use a loopback address.
    #[arg(long, env = "ALTOSTRAT_SIM_LISTEN", default_value = "127.0.0.1:18080")]
    pub listen: SocketAddr,

    /// Time from create until an instance is ready; its four readiness flags flip at quarters
    /// of it (configured, rsa_ready, diffie_hellman_ready, server_ready). `0s`: ready at once.
    #[arg(long, default_value = "3s", value_parser = crate::duration::parse_duration)]
    pub provision_delay: Duration,

    /// How long a pending change (`config-updated`, `peer-created`, `peer-deleted`) stays in an
    /// instance's `status` array.
    #[arg(long, default_value = "1s", value_parser = crate::duration::parse_duration)]
    pub status_clear_delay: Duration,

    /// Life of a client peer's share token, shown as `token_ttl` (whole seconds). GET
    /// /vpn/client refuses an older token with 401 `token_expired`; the next read of the peer
    /// shows a new one (every read does with `--share-tokens every-read`). Seconds, or a
    /// duration such as `10m`.
    #[arg(long, value_name = "SECONDS", default_value = "3600", value_parser = crate::duration::parse_duration)]
    pub share_token_ttl: Duration,

    /// Accepted bearer token, repeatable: `TOKEN` (all scopes) or `TOKEN=vpn:view,vpn:create`,
    /// optionally followed by `@ACCOUNT` (e.g. `other-token@acme`). A token sees only the
    /// instances created by tokens of its account, and their peers; another account's instance
    /// answers 404. Tokens without an account share the account `default`. Hostnames are
    /// unique across accounts: a hostname taken in another account is refused like any taken
    /// hostname (409 unless `--hostname-taken-status` says otherwise).
    /// Default: `sim-token` with all scopes, in the account `default`.
    #[arg(long = "token", value_name = "TOKEN[=SCOPES][@ACCOUNT]", value_parser = ApiToken::parse)]
    pub tokens: Vec<ApiToken>,

    /// Persist state to this JSON file after every change and load it at start.
    #[arg(long)]
    pub state_file: Option<PathBuf>,

    /// Probability (0..1) that any /vpn request fails with a 500.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,

    /// Latency added to every /vpn request.
    #[arg(long, default_value = "0s", value_parser = crate::duration::parse_duration)]
    pub latency: Duration,

    /// Requests allowed per token in any 60 seconds (a sliding window); beyond it, 429 with
    /// Retry-After.
    #[arg(long)]
    pub rate_limit: Option<u32>,

    /// Per-endpoint fault, repeatable: `METHOD /route/template:key=value,...` with keys
    /// error_rate, fail_next, status, retry_after_secs, latency_ms, apply_then_fail (the request
    /// is processed but the client gets the failure: a lost response), lose_answer (the request
    /// is processed and the connection closed without an answer). Example:
    /// `--fault 'PUT /vpn/instances/{instanceId}:fail_next=3,status=503'`. Route `*` matches all.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,

    /// How closely to answer like the real service (profiles and their flags). Boxed: the
    /// subcommand enum stays small.
    #[command(flatten)]
    pub fidelity: Box<FidelityArgs>,
}

/// The admin endpoints beyond those the subcommand's description lists.
const ADMIN_HELP: &str = "Out-of-band deletions (admin, no auth): DELETE /_admin/users/{id} and \
DELETE /_admin/sites/{id} remove every peer of that user or site on every instance of every \
account (each such instance shows `peer-deleted`) and remember the id: a new peer for it is \
refused with 422 (`user_not_found` / `site_not_found`, or Laravel's `The selected user id is \
invalid.` with --message-only-errors). Answers 204, also for an id never seen.

Site subnets (admin, no auth): PUT /_admin/sites/{id}/subnets with a JSON array of CIDR blocks \
sets what GET /vpn/site/{siteId}/subnets answers (`[{\"subnet\", \"name\"}]`); a site never \
set offers two /24s in 10.0.0.0/8 derived from its id; a deleted site answers 404.

Share tokens (admin, no auth): POST /_admin/peers/{id}/expire-token expires every share token \
the peer has been shown, as if its token_ttl had passed: GET /vpn/client answers them 401 \
`token_expired`, and the next read of the peer shows a new token. Answers 204, or 404 for an \
unknown peer.";

impl SimulateArgs {
    pub fn into_config(self) -> Result<SimulatorConfig, String> {
        let mut faults = FaultConfig {
            error_rate: self.error_rate,
            latency_ms: self.latency.as_millis() as u64,
            rate_limit_per_minute: self.rate_limit,
            ..FaultConfig::default()
        };
        for spec in &self.faults {
            let (route, rule) = FaultConfig::parse_rule(spec)?;
            faults.rules.insert(route, rule);
        }
        Ok(SimulatorConfig {
            provision_delay: self.provision_delay,
            status_clear_delay: self.status_clear_delay,
            share_token_ttl: self.share_token_ttl,
            tokens: if self.tokens.is_empty() {
                vec![ApiToken::all_scopes("sim-token")]
            } else {
                self.tokens
            },
            state_file: self.state_file,
            faults,
            fidelity: self.fidelity.resolve()?,
            ..SimulatorConfig::default()
        })
    }
}

/// Runs the simulator until SIGINT/SIGTERM.
pub async fn run(args: SimulateArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listen = args.listen;
    let config = args.into_config()?;
    let simulator = Simulator::new(config)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "Altostrat simulator listening");
    simulator
        .serve(listener, async {
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
