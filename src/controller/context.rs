//! What every reconcile of a watch scope shares: clients, credentials, caches and settings.

use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use std::sync::Arc;
use tokio::time::Instant;

use super::credentials::{SharedCredentials, Source, Wanted, read_secret, resolve};
use super::default_token::DefaultToken;
use super::error::{Error, FailureCounts, Result};
use super::observation::{Look, Observations};
use super::plan;
use super::record::Records;
use crate::altostrat::model::region_codes;
use crate::altostrat::{ApiToken, BudgetConfig, Urgency, VpnApi};
use crate::crd::{DeletionPolicy, SECRET_TOKEN_KEY, SecretReference, VpnInstance, VpnPeer};
use crate::metrics::Metrics;
use crate::server::InFlight;
use kube::Resource;

/// Operator-wide settings for the controllers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The shortest interval between two comparisons of an object with Altostrat; the budget
    /// may make it longer (see [`Context::drift_interval`]).
    pub resync_interval: Duration,
    /// The longest interval between two looks at a provisioning instance.
    pub provisioning_poll: Duration,
    /// How each token's request budget is spent (rate, observation share).
    pub budget: BudgetConfig,
    pub instance_concurrency: u16,
    pub peer_concurrency: u16,
    pub label_selector: Option<String>,
    /// The namespaces watched (`WATCH_NAMESPACES`); empty: all. A peer's hub must be in one.
    pub watch_namespaces: Vec<String>,
    /// How long the region list is trusted before it is fetched again.
    pub region_cache_ttl: Duration,
    /// The name of this operator installation in ownership records (`--installation`).
    pub installation: String,
    /// The deletion policy of a resource that leaves its own unset, uses no VpnCredentials
    /// that sets one, and created its object (`--default-deletion-policy`).
    pub default_deletion_policy: DeletionPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(300),
            provisioning_poll: Duration::from_secs(30),
            budget: BudgetConfig::default(),
            instance_concurrency: 8,
            peer_concurrency: 8,
            label_selector: None,
            watch_namespaces: Vec::new(),
            region_cache_ttl: Duration::from_secs(600),
            installation: "default".into(),
            default_deletion_policy: DeletionPolicy::Delete,
        }
    }
}

/// A converged object looks again after its drift interval, jittered down to 90 % of it, and
/// then wants a list younger than 90 % of it: so a list is reused by every object of its token
/// within one cycle, yet no object goes more than one interval without a fresh one.
pub const DRIFT_REUSE: f64 = 0.9;

/// The peer caches of every watch scope of the process.
pub type PeerScopes = Arc<std::sync::Mutex<Vec<Store<VpnPeer>>>>;

/// Region codes as last fetched, and when.
type RegionCache = Option<(Instant, Vec<String>)>;

/// Shared state of both controllers in one watch scope.
pub struct Context<A> {
    pub client: Client,
    pub api: Arc<A>,
    /// What Altostrat holds, observed by list and shared with every other scope.
    pub observations: Arc<Observations>,
    pub default_token: Arc<DefaultToken>,
    /// The VpnCredentials, their judge and users, shared by every scope.
    pub shared: Arc<SharedCredentials>,
    pub recorder: Recorder,
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// The reconciles running now, for `/healthz` to see a stuck one.
    pub running: Arc<InFlight>,
    pub settings: Settings,
    /// Instances as seen by the instance controller, for peers to find theirs without reads.
    pub instances: Store<VpnInstance>,
    /// Peers as seen by the peer controller, to know which Altostrat peers others record.
    pub peers: Store<VpnPeer>,
    /// The peer caches of every watch scope (this one's among them once it has started): a hub
    /// counts and waits for the peers of every namespace that name it.
    pub peer_scopes: PeerScopes,
    /// The ownership records: who holds which Altostrat object, read fresh by every reconcile.
    pub records: Records,
    pub(crate) failures: FailureCounts,
    regions: tokio::sync::Mutex<RegionCache>,
    /// When each object (by uid) last looked at Altostrat: its next poll needs a newer list.
    looks: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
}

impl<A: VpnApi> Context<A> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        api: Arc<A>,
        observations: Arc<Observations>,
        (default_token, shared): (Arc<DefaultToken>, Arc<SharedCredentials>),
        reporter: Reporter,
        (metrics, running): (Arc<Metrics>, Arc<InFlight>),
        settings: Settings,
        instances: Store<VpnInstance>,
        peers: Store<VpnPeer>,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            records: Records::new(client.clone(), settings.installation.clone()),
            client,
            api,
            observations,
            default_token,
            shared,
            reporter,
            metrics,
            running,
            settings,
            instances,
            peers,
            peer_scopes: PeerScopes::default(),
            failures: FailureCounts::default(),
            regions: tokio::sync::Mutex::new(None),
            looks: std::sync::Mutex::default(),
        }
    }

    /// Where the credentials of a resource in `namespace` that names `wanted` come from (see
    /// [`resolve`]); reads the namespace's labels only when a grant or a default is judged.
    pub async fn credentials_source(&self, namespace: &str, wanted: &Wanted) -> Result<Source> {
        let all = self.shared.all();
        let labels = if wanted.needs_labels(&all) {
            super::namespaces::labels(&self.client, namespace)
                .await?
                .unwrap_or_default()
        } else {
            Default::default()
        };
        resolve::resolve(wanted, namespace, &labels, &all).map_err(Error::Credentials)
    }

    /// The token of a resource in `namespace` whose credentials come from `source`.
    pub async fn token(&self, namespace: &str, source: &Source) -> Result<ApiToken> {
        match source {
            Source::OwnSecret(secret_ref) => self.own_secret_token(namespace, secret_ref).await,
            Source::Shared(name) => self.shared.token_of(&self.client, name).await,
            Source::Operator => self
                .default_token
                .for_namespace(namespace)
                .map_err(Error::Credentials),
        }
    }

    /// The deletion policy of a resource that leaves its own unset and created its object.
    pub fn created_default(&self, source: Option<&Source>) -> DeletionPolicy {
        resolve::created_default(source, &self.shared.all(), self.settings.default_deletion_policy)
    }

    /// Reads a resource's own Secret (always in the resource's namespace, so a resource can
    /// never borrow another namespace's Secret; it is kept while in use, see `secret_guard`).
    async fn own_secret_token(&self, namespace: &str, secret_ref: &SecretReference) -> Result<ApiToken> {
        let named = (secret_ref.name.as_str(), SECRET_TOKEN_KEY);
        let (secret, token) = read_secret(&self.client, namespace, named, None).await?;
        self.keep_secret(&secret).await?;
        Ok(token)
    }

    /// Valid region codes, cached; a region missing from a stale cache triggers one refresh.
    pub async fn check_region(&self, token: &ApiToken, region: &str) -> Result<()> {
        let mut cache = self.regions.lock().await;
        let fresh = cache
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < self.settings.region_cache_ttl);
        let known = cache
            .as_ref()
            .is_some_and(|(_, codes)| codes.iter().any(|code| code == region));
        if !(fresh && known) {
            let regions = self.api.list_regions(token).await?;
            *cache = Some((Instant::now(), region_codes(&regions)));
        }
        let codes = cache.as_ref().map(|(_, c)| c.as_slice()).unwrap_or_default();
        plan::validate_region(region, codes).map_err(Error::InvalidSpec)
    }
}

impl<A> Context<A> {
    /// Every peer the watch scopes of this process see (this scope's alone before they are
    /// shared).
    pub(crate) fn all_peers(&self) -> Vec<Arc<VpnPeer>> {
        let scopes = self.peer_scopes.lock().expect("peer scopes lock");
        match scopes.is_empty() {
            true => self.peers.state(),
            false => scopes.iter().flat_map(|store| store.state()).collect(),
        }
    }

    /// A poll of `obj`: a list no older than `interval` and sent after the object's previous
    /// look, so that each poll sees something it has not seen (shared with every object of
    /// the token polling at the same time).
    pub(crate) fn poll_look<K: Resource>(&self, obj: &K, interval: Duration) -> Look {
        let now = Instant::now();
        let oldest = now.checked_sub(interval).unwrap_or(now);
        let uid = obj.meta().uid.clone().unwrap_or_default();
        let last = self.looks.lock().expect("looks lock").get(&uid).copied();
        Look {
            fresh_since: last.map_or(oldest, |last| last.max(oldest)),
            urgency: Urgency::Poll,
        }
    }

    /// Remembers that `obj` has looked at Altostrat now.
    pub(crate) fn looked<K: Resource>(&self, obj: &K) {
        let mut looks = self.looks.lock().expect("looks lock");
        if looks.len() > 500_000 {
            looks.clear();
        }
        looks.insert(obj.meta().uid.clone().unwrap_or_default(), Instant::now());
    }

    /// How long a converged object of `token` goes between two comparisons with Altostrat:
    /// the resync interval, or longer when observing all of the token's objects that often
    /// (one instance list, one peer list per instance) would take more than the observation
    /// share of its budget.
    pub fn drift_interval(&self, token: &ApiToken) -> Duration {
        let budget = &self.settings.budget;
        let rate = token.rate_per_minute().unwrap_or(budget.rate_per_minute);
        let lists = self.observations.lists_per_cycle(token) as f64;
        // A list is refreshed once it is DRIFT_REUSE of the interval old: pay for that.
        let needed = Duration::from_secs_f64(60.0 * lists / budget.observe_rate(rate) / DRIFT_REUSE);
        let interval = needed.max(self.settings.resync_interval);
        let longest = self.observations.note_drift_cycle(token, interval);
        self.metrics.record_drift_cycle(longest);
        interval
    }
}
