//! The Altostrat Managed VPN API boundary.
//!
//! Controllers only see the narrow [`VpnApi`] trait. The production stack is
//! [`Resilient`]`<`[`HttpClient`]`>`: the HTTP client performs exactly one request per call and
//! classifies the answer; the wrapper owns rate limiting, retries and `Retry-After`.
//!
//! | file | what is there |
//! |---|---|
//! | `model.rs` | the wire types (what Altostrat sends and takes), tolerant of its quirks |
//! | `http.rs` | one request per call: URL, token, TLS, timeouts; the answer handed to `error.rs` |
//! | `error.rs` | every answer classified once into an [`ApiError`] (a taken hostname is a `Conflict` whether it comes as 409, 422 or 400; unknown user or site, quota, 429 with its `Retry-After`) |
//! | `budget.rs` | the per-token budget every call is paid from, polls before drift checks |
//! | `resilient.rs` | retries with backoff, a short 429 waited out in place, a long one returned to the reconcile |
//!
//! A 429, end to end: `error.rs` reads it as `RateLimited` with its `Retry-After`; `resilient.rs`
//! backs the token's budget off and waits a short one out, or returns it; the reconcile fails
//! with it, and the controllers' outcome table (`controller/error.rs`, `Error::outcome`) requeues
//! the resource after exactly that long, marks it `Throttled` (a Normal event, an INFO log).

mod budget;
mod error;
mod http;
pub mod model;
mod resilient;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

pub use budget::{Budget, BudgetConfig, Caller, Throttled, Urgency};
pub use error::{ApiError, Referent, classify, parse_retry_after};
pub use http::{ClientBuildError, HttpClient, HttpClientConfig, load_ca_bundle};
pub use resilient::{RequestObserver, Resilient, RetryPolicy, TokenAnswer, TokenObserver};

use model::{
    ClientConfiguration, Instance, InstanceCreate, InstanceUpdate, Peer, PeerCreate, PeerType, PeerUpdate,
    RegionResponse,
};

pub type ApiResult<T> = Result<T, ApiError>;

/// An Altostrat API token. It lives in memory only; `Debug` and `Display` never reveal it.
/// Two tokens are the same when their secrets are: the rate is a setting that travels along.
#[derive(Clone)]
pub struct ApiToken {
    secret: Arc<str>,
    /// Requests per minute this operator may spend with the token, if not the default (a
    /// token shared with other tools gets a smaller share).
    rate_per_minute: Option<u32>,
}

impl ApiToken {
    pub fn new(token: impl AsRef<str>) -> Self {
        Self {
            secret: Arc::from(token.as_ref().trim()),
            rate_per_minute: None,
        }
    }

    pub fn with_rate_per_minute(mut self, rate: u32) -> Self {
        self.rate_per_minute = Some(rate);
        self
    }

    pub fn rate_per_minute(&self) -> Option<u32> {
        self.rate_per_minute
    }

    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    pub fn is_empty(&self) -> bool {
        self.secret.is_empty()
    }
}

impl PartialEq for ApiToken {
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret
    }
}

impl Eq for ApiToken {}

impl std::hash::Hash for ApiToken {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.secret.hash(state);
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// Every operation of the API. The `Display` form ("METHOD /path/template") is the bounded
/// label used in metrics and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    ListInstances,
    CreateInstance,
    GetInstance,
    UpdateInstance,
    DeleteInstance,
    ListPeers,
    CreatePeer,
    GetPeer,
    UpdatePeer,
    DeletePeer,
    ListSiteSubnets,
    ListRegions,
    GetClientConfiguration,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ListInstances => "GET /vpn/instances",
            Self::CreateInstance => "POST /vpn/instances",
            Self::GetInstance => "GET /vpn/instances/{instanceId}",
            Self::UpdateInstance => "PUT /vpn/instances/{instanceId}",
            Self::DeleteInstance => "DELETE /vpn/instances/{instanceId}",
            Self::ListPeers => "GET /vpn/instances/{instanceId}/peers",
            Self::CreatePeer => "POST /vpn/instances/{instanceId}/peers",
            Self::GetPeer => "GET /vpn/instances/{instanceId}/peers/{peerId}",
            Self::UpdatePeer => "PUT /vpn/instances/{instanceId}/peers/{peerId}",
            Self::DeletePeer => "DELETE /vpn/instances/{instanceId}/peers/{peerId}",
            Self::ListSiteSubnets => "GET /vpn/site/{siteId}/subnets",
            Self::ListRegions => "GET /vpn/servers/regions",
            Self::GetClientConfiguration => "GET /vpn/client",
        }
    }

    /// Whether repeating the request cannot create a second object. POSTs are not: a
    /// request that timed out may have been applied, so they are never retried blindly.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Self::CreateInstance | Self::CreatePeer)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operations the controllers need from Altostrat. Each call carries the token to use,
/// because resources may bring their own credentials.
pub trait VpnApi: Send + Sync + 'static {
    fn list_regions(&self, token: &ApiToken) -> impl Future<Output = ApiResult<RegionResponse>> + Send;
    fn list_instances(&self, token: &ApiToken) -> impl Future<Output = ApiResult<Vec<Instance>>> + Send;
    fn get_instance(&self, token: &ApiToken, id: &str) -> impl Future<Output = ApiResult<Instance>> + Send;
    fn create_instance(
        &self,
        token: &ApiToken,
        body: &InstanceCreate,
    ) -> impl Future<Output = ApiResult<Instance>> + Send;
    fn update_instance(
        &self,
        token: &ApiToken,
        id: &str,
        body: &InstanceUpdate,
    ) -> impl Future<Output = ApiResult<Instance>> + Send;
    fn delete_instance(&self, token: &ApiToken, id: &str) -> impl Future<Output = ApiResult<()>> + Send;
    fn list_peers(
        &self,
        token: &ApiToken,
        instance_id: &str,
        kind: Option<PeerType>,
    ) -> impl Future<Output = ApiResult<Vec<Peer>>> + Send;
    fn get_peer(
        &self,
        token: &ApiToken,
        instance_id: &str,
        peer_id: &str,
    ) -> impl Future<Output = ApiResult<Peer>> + Send;
    fn create_peer(
        &self,
        token: &ApiToken,
        instance_id: &str,
        body: &PeerCreate,
    ) -> impl Future<Output = ApiResult<Peer>> + Send;
    fn update_peer(
        &self,
        token: &ApiToken,
        instance_id: &str,
        peer_id: &str,
        body: &PeerUpdate,
    ) -> impl Future<Output = ApiResult<Peer>> + Send;
    fn delete_peer(
        &self,
        token: &ApiToken,
        instance_id: &str,
        peer_id: &str,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    /// A client peer's configuration, fetched with its share token `share` (`GET /vpn/client`,
    /// which sends no operator token). The call is paid from `token`'s budget all the same:
    /// Altostrat may well count it against the account.
    fn client_configuration(
        &self,
        token: &ApiToken,
        share: &ApiToken,
    ) -> impl Future<Output = ApiResult<ClientConfiguration>> + Send;
}
