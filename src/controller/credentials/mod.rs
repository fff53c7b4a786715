//! Shared credentials (`VpnCredentials`): which one a resource uses ([`resolve`]), its token
//! read from the operator's namespace, and the small controller that reports its health.

pub mod judge;
pub mod resolve;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use super::error::{Error, Result};
use crate::altostrat::{ApiToken, VpnApi};
use crate::crd::{CREDENTIALS_LABEL, SECRET_RATE_KEY, VpnCredentials, VpnCredentialsSpec};
pub use judge::{Judge, Observers};
pub use resolve::{Source, Wanted};

/// How the shared credentials are judged.
#[derive(Clone, Debug)]
pub struct CredentialsSettings {
    /// The operator's own namespace, where the Secrets of VpnCredentials live.
    pub namespace: String,
    /// How long a token Altostrat once accepted may be refused before `Ready=False` (the
    /// operator token's rotation grace).
    pub grace: Duration,
    /// With no answer in this long, a check call judges the token.
    pub check_interval: Duration,
    /// The operator's `--api-rate-limit`, for tokens that set no rate of their own.
    pub default_rate: u32,
}

impl Default for CredentialsSettings {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            grace: super::default_token::DEFAULT_GRACE,
            check_interval: Duration::from_secs(60),
            default_rate: crate::altostrat::BudgetConfig::default().rate_per_minute,
        }
    }
}

/// Every VpnCredentials as last seen, their judge and who uses them; shared by every scope.
pub struct SharedCredentials {
    pub settings: CredentialsSettings,
    store: Store<VpnCredentials>,
    writer: Mutex<Option<Writer<VpnCredentials>>>,
    pub judge: Arc<Judge>,
    /// Which VpnCredentials each resource (by uid) resolved to at its last reconcile.
    users: Mutex<HashMap<String, String>>,
}

impl SharedCredentials {
    pub fn new(settings: CredentialsSettings) -> Self {
        let (store, writer) = reflector::store();
        Self {
            settings,
            store,
            writer: Mutex::new(Some(writer)),
            judge: Arc::default(),
            users: Mutex::default(),
        }
    }

    /// Waits until the controller has listed every VpnCredentials once (or has stopped).
    pub async fn listed(&self) {
        if self.store.wait_until_ready().await.is_err() {
            tracing::debug!("the VpnCredentials controller stopped before its first list");
        }
    }

    /// Every VpnCredentials in the cache (empty until the controller runs).
    pub fn all(&self) -> Vec<VpnCredentials> {
        self.store.state().iter().map(|c| (**c).clone()).collect()
    }

    /// Notes which credentials the resource `uid` uses now (`None`: no VpnCredentials).
    pub fn note_user(&self, uid: &str, source: Option<&Source>) {
        let mut users = self.users.lock().expect("users lock");
        match source {
            Some(Source::Shared(name)) => users.insert(uid.to_owned(), name.clone()),
            _ => users.remove(uid),
        };
    }

    /// How many resources used `name` at their last reconcile.
    fn users_of(&self, name: &str) -> u32 {
        let users = self.users.lock().expect("users lock");
        users.values().filter(|n| *n == name).count() as u32
    }

    /// The token of `credentials`, read from its Secret in the operator's namespace now (so a
    /// rotated Secret is used without a restart); `Err` says what is wrong, never the token.
    pub async fn token(&self, client: &Client, credentials: &VpnCredentialsSpec) -> Result<ApiToken> {
        let secret_ref = &credentials.secret_ref;
        let (_, token) = read_secret(
            client,
            &self.settings.namespace,
            (&secret_ref.name, &secret_ref.key),
            credentials.requests_per_minute,
        )
        .await?;
        Ok(token)
    }

    /// The token of the VpnCredentials `name`, for a resource that resolved to it.
    pub async fn token_of(&self, client: &Client, name: &str) -> Result<ApiToken> {
        let credentials = self
            .store
            .state()
            .into_iter()
            .find(|c| c.name_any() == name)
            .ok_or_else(|| Error::Credentials(format!("VpnCredentials {name} not found")))?;
        self.token(client, &credentials.spec).await.map_err(|e| match e {
            Error::Credentials(why) => Error::Credentials(format!("VpnCredentials {name}: {why}")),
            other => other,
        })
    }
}

impl Default for SharedCredentials {
    fn default() -> Self {
        Self::new(CredentialsSettings::default())
    }
}

impl std::fmt::Debug for SharedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCredentials")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What the credentials controller works with.
struct Ctx<A> {
    client: Client,
    api: Arc<A>,
    shared: Arc<SharedCredentials>,
}

/// Runs the VpnCredentials controller until `shutdown`: once per process, whatever the watch
/// scopes (the kind is cluster-scoped). It fills the cache resources resolve against.
pub async fn run<A: VpnApi>(
    client: Client,
    api: Arc<A>,
    shared: Arc<SharedCredentials>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let Some(writer) = shared.writer.lock().expect("writer lock").take() else {
        return;
    };
    let all: Api<VpnCredentials> = Api::all(client.clone());
    let events = watcher(all, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let store = shared.store.clone();
    let ctx = Arc::new(Ctx { client, api, shared });
    Controller::for_stream(events, store)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| std::future::ready(()))
        .await;
}

async fn reconcile<A: VpnApi>(obj: Arc<VpnCredentials>, ctx: Arc<Ctx<A>>) -> Result<Action> {
    let name = obj.name_any();
    let shared = &ctx.shared;
    let token = shared.token(&ctx.client, &obj.spec).await;
    let judgement = match &token {
        Ok(token) => {
            shared.judge.track(&name, token);
            check_if_unanswered(&ctx, &name, token).await;
            shared.judge.judgement(
                &name,
                tokio::time::Instant::now().into_std(),
                shared.settings.grace,
            )
        }
        Err(_) => {
            shared.judge.forget(&name);
            None
        }
    };
    let observed = status::Observed {
        rate: token
            .as_ref()
            .map(|t| t.rate_per_minute().unwrap_or(shared.settings.default_rate))
            .map_err(|e| e.to_string()),
        judgement,
        users: shared.users_of(&name),
    };
    status::write(&ctx.client, &obj, &observed, shared.settings.grace).await?;
    Ok(Action::requeue(shared.settings.check_interval))
}

/// A check call (`GET /vpn/servers/regions`, paid from the token's budget) when no answer
/// has judged the token within the check interval; its answer reaches the judge through the
/// client.
async fn check_if_unanswered<A: VpnApi>(ctx: &Ctx<A>, name: &str, token: &ApiToken) {
    let settings = &ctx.shared.settings;
    let now = tokio::time::Instant::now().into_std();
    let last = ctx
        .shared
        .judge
        .judgement(name, now, settings.grace)
        .and_then(|j| j.last_answer);
    if last.is_some_and(|at| now.saturating_duration_since(at) < settings.check_interval) {
        return;
    }
    if let Err(error) = ctx.api.list_regions(token).await {
        tracing::debug!(credentials = name, %error, "check call of shared credentials failed");
    }
}

fn error_policy<A>(obj: Arc<VpnCredentials>, error: &Error, _: Arc<Ctx<A>>) -> Action {
    tracing::debug!(credentials = %obj.name_any(), %error, "VpnCredentials reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The credentials Secret `name` read now: present, labelled as credentials, with a non-empty
/// token under `key`; the token paced at `rate` if given, else at the Secret's own
/// `requestsPerMinute` if it has one. `Err` says what is wrong, never the token.
pub(crate) async fn read_secret(
    client: &Client,
    namespace: &str,
    (name, key): (&str, &str),
    rate: Option<u32>,
) -> Result<(Secret, ApiToken)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("read of Secret {namespace}/{name}")))?
        .ok_or_else(|| Error::Credentials(format!("Secret {namespace}/{name} not found")))?;
    if !marked_as_credentials(&secret) {
        return Err(Error::Credentials(format!(
            "Secret {namespace}/{name} is not marked as Altostrat credentials: add the label {CREDENTIALS_LABEL}=true"
        )));
    }
    let token = token_in(&secret, key).ok_or_else(|| {
        Error::Credentials(format!("Secret {namespace}/{name} has no non-empty key {key:?}"))
    })?;
    let rate = match (rate, rate_in(&secret)) {
        (Some(rate), _) | (None, Ok(Some(rate))) => Some(rate),
        (None, Ok(None)) => None,
        (None, Err(value)) => {
            return Err(Error::Credentials(format!(
                "Secret {namespace}/{name} has {SECRET_RATE_KEY}: {value:?}, not a number of requests per minute from 2 up"
            )));
        }
    };
    let token = match rate {
        Some(rate) => token.with_rate_per_minute(rate),
        None => token,
    };
    Ok((secret, token))
}

/// The non-empty value of `key` in a credentials Secret, as a token.
pub(crate) fn token_in(secret: &Secret, key: &str) -> Option<ApiToken> {
    secret_value(secret, key)
        .map(ApiToken::new)
        .filter(|t| !t.is_empty())
}

/// Whether the Secret opted in to being used as credentials.
pub(crate) fn marked_as_credentials(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(CREDENTIALS_LABEL))
        .is_some_and(|value| value == "true")
}

/// The value of `key` in a Secret, from `data` or `stringData`.
pub(crate) fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    let from_string_data = || secret.string_data.as_ref().and_then(|d| d.get(key)).cloned();
    from_data.or_else(from_string_data)
}

/// The optional rate of a credentials Secret; `Err` with the value when it is not a number
/// from 2 up.
pub(crate) fn rate_in(secret: &Secret) -> std::result::Result<Option<u32>, String> {
    let Some(value) = secret_value(secret, SECRET_RATE_KEY) else {
        return Ok(None);
    };
    match value.trim().parse::<u32>() {
        Ok(rate) if rate >= 2 => Ok(Some(rate)),
        _ => Err(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SECRET_TOKEN_KEY;

    fn secret(data: serde_json::Value) -> Secret {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "creds"}, "stringData": data}))
            .unwrap()
    }

    #[test]
    fn a_credentials_secret_gives_its_token_and_optionally_its_own_rate() {
        let plain = secret(serde_json::json!({"token": " t-1 "}));
        assert_eq!(
            token_in(&plain, SECRET_TOKEN_KEY).map(|t| t.expose().to_owned()),
            Some("t-1".into())
        );
        assert_eq!(rate_in(&plain), Ok(None));
        let shared = secret(serde_json::json!({"token": "t-1", "requestsPerMinute": "20"}));
        assert_eq!(rate_in(&shared), Ok(Some(20)));
        let invalid = secret(serde_json::json!({"token": "t-1", "requestsPerMinute": "fast"}));
        assert_eq!(rate_in(&invalid), Err("fast".into()));
        assert_eq!(
            token_in(&secret(serde_json::json!({"token": "  "})), SECRET_TOKEN_KEY),
            None
        );
    }
}
