//! kube-runtime controllers for `VpnInstance` and `VpnPeer`.
//!
//! Each reconcile is a thin driver: observe (Kubernetes + Altostrat) → plan ([`plan`], pure) →
//! act (one Altostrat call at a time) → status (server-side apply, only when it changed).

pub mod conditions;
mod instance;
mod peer;
pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::time::Instant;

use crate::altostrat::model::region_codes;
use crate::altostrat::{ApiError, ApiToken, VpnApi};
use crate::crd::{FINALIZER, SECRET_TOKEN_KEY, SecretReference, VpnInstance, VpnPeer};
use crate::metrics::Metrics;

/// When our copy of an object was stale, look again after the watch has caught up.
const STALE_RETRY: Duration = Duration::from_millis(500);

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "vpn-operator";

/// Why a reconcile failed. [`Error::category`] is the bounded label used in metrics and
/// events; [`error_policy`] decides the requeue from it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Api(e) => e.category(),
            Self::Kube(_) => "kubernetes",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Credentials(_) => "credentials",
            Self::Finalizer(_) => "finalizer",
        }
    }

    /// Errors only an edit of the resource (or of the world outside) can fix.
    pub fn needs_user_action(&self) -> bool {
        match self {
            Self::InvalidSpec(_) => true,
            Self::Api(e) => matches!(e, ApiError::Invalid { .. } | ApiError::Conflict { .. }),
            _ => false,
        }
    }

    /// Condition reason for this error.
    pub fn reason(&self) -> &'static str {
        if self.needs_user_action() {
            conditions::reason::INVALID_SPEC
        } else if matches!(
            self,
            Self::Credentials(_) | Self::Api(ApiError::Unauthorized { .. } | ApiError::Forbidden { .. })
        ) {
            conditions::reason::CREDENTIALS_ERROR
        } else {
            conditions::reason::API_ERROR
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Requeue decision after a failed reconcile (pure, unit-tested):
/// - invalid spec / conflict: wait for an edit of the object (with a slow safety resync,
///   since e.g. a taken hostname may be released),
/// - 429: exactly the server's `Retry-After`,
/// - anything else: exponential backoff per object, 1 s doubling up to 5 min.
pub fn requeue_after_error(error: &Error, consecutive_failures: u32, resync: Duration) -> Duration {
    if error.needs_user_action() {
        return resync.max(Duration::from_secs(60));
    }
    if let Error::Api(api) = error
        && let Some(retry_after) = api.retry_after()
    {
        return retry_after;
    }
    let exp = Duration::from_secs(1).saturating_mul(1 << consecutive_failures.min(10));
    exp.min(Duration::from_secs(300))
}

/// Operator-wide settings for the controllers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Periodic re-read of every object to correct out-of-band changes.
    pub resync_interval: Duration,
    pub instance_concurrency: u16,
    pub peer_concurrency: u16,
    pub label_selector: Option<String>,
    /// How long the region list is trusted before it is fetched again.
    pub region_cache_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(300),
            instance_concurrency: 8,
            peer_concurrency: 8,
            label_selector: None,
            region_cache_ttl: Duration::from_secs(600),
        }
    }
}

/// Shared state of both controllers in one watch scope.
pub struct Context<A> {
    pub client: Client,
    pub api: Arc<A>,
    pub default_token: Option<ApiToken>,
    pub recorder: Recorder,
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Instances as seen by the instance controller, for peers to find theirs without reads.
    pub instances: Store<VpnInstance>,
    regions: tokio::sync::Mutex<Option<(Instant, Vec<String>)>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl<A: VpnApi> Context<A> {
    /// Reads the token for a resource: its own Secret if it names one (always in the
    /// resource's namespace, so a resource can never borrow another namespace's credentials),
    /// otherwise the operator's token.
    pub async fn token(&self, namespace: &str, secret_ref: Option<&SecretReference>) -> Result<ApiToken> {
        let Some(secret_ref) = secret_ref else {
            return self.default_token.clone().ok_or_else(|| {
                Error::Credentials(
                    "no credentialsSecretRef set and the operator has no default API token".into(),
                )
            });
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = secrets
            .get_opt(&secret_ref.name)
            .await?
            .ok_or_else(|| Error::Credentials(format!("Secret {namespace}/{} not found", secret_ref.name)))?;
        let token = secret
            .data
            .as_ref()
            .and_then(|d| d.get(SECRET_TOKEN_KEY))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(SECRET_TOKEN_KEY))
                    .cloned()
            })
            .map(ApiToken::new)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::Credentials(format!(
                    "Secret {namespace}/{} has no non-empty key {SECRET_TOKEN_KEY:?}",
                    secret_ref.name
                ))
            })?;
        Ok(token)
    }

    /// Valid region codes, cached; a region missing from a stale cache triggers one refresh.
    pub async fn check_region(&self, token: &ApiToken, region: &str) -> Result<()> {
        let mut cache = self.regions.lock().await;
        let fresh = |c: &Option<(Instant, Vec<String>)>| {
            c.as_ref()
                .is_some_and(|(at, _)| at.elapsed() < self.settings.region_cache_ttl)
        };
        let known = |c: &Option<(Instant, Vec<String>)>| {
            c.as_ref()
                .is_some_and(|(_, codes)| codes.iter().any(|code| code == region))
        };
        if !(fresh(&cache) && known(&cache)) {
            let regions = self.api.list_regions(token).await?;
            *cache = Some((Instant::now(), region_codes(&regions)));
        }
        let codes = cache.as_ref().map(|(_, c)| c.as_slice()).unwrap_or_default();
        plan::validate_region(region, codes).map_err(Error::InvalidSpec)
    }

    /// Publishes an event; failures are logged, never fatal to the reconcile.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let reference = obj.object_ref(&());
        let result = match type_ {
            // Warnings can repeat while a problem lasts: the recorder folds repeats into one
            // event series. It remembers every event it sent for six minutes to do so, which
            // for one-off transitions (Created, Ready, ...) of a large fleet is tens of MiB for
            // nothing, so those are created directly.
            EventType::Warning => {
                let event = Event {
                    type_,
                    reason: reason.into(),
                    note: Some(note),
                    action: action.into(),
                    secondary: None,
                };
                self.recorder.publish(&event, &reference).await
            }
            EventType::Normal => self.create_event(reference, reason, action, note).await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "failed to publish event");
        }
    }

    async fn create_event(
        &self,
        reference: k8s_openapi::api::core::v1::ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        use k8s_openapi::api::events::v1::Event as K8sEvent;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        let now = k8s_openapi::jiff::Timestamp::now();
        let namespace = reference.namespace.clone().unwrap_or_else(|| "default".into());
        let event = K8sEvent {
            metadata: kube::api::ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    reference.name.as_deref().unwrap_or("vpn-operator"),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some("Normal".into()),
            reason: Some(reason.into()),
            action: Some(action.into()),
            note: Some(note),
            regarding: Some(reference),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        };
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        events
            .create(&kube::api::PostParams::default(), &event)
            .await
            .map(|_| ())
    }

    fn record_outcome(&self, key: String, failed: bool) -> u32 {
        let mut failures = self.failures.lock().expect("failure map lock poisoned");
        if failed {
            let n = failures.entry(key).or_insert(0);
            *n += 1;
            *n
        } else {
            failures.remove(&key);
            0
        }
    }
}

/// The one Normal event a reconcile publishes when it changed something: named after its first
/// (most significant) step, with every step in the note. A create that also applies the
/// initial configuration and finds the object ready is one event, not three — events are
/// API-server writes like any other, and a fleet may be created thousands at a time.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    first: Option<(&'static str, &'static str)>,
    steps: Vec<String>,
}

impl Activity {
    /// Notes a step: `reason` and `action` as in the event, `step` a lower-case clause.
    pub(crate) fn record(&mut self, reason: &'static str, action: &'static str, step: impl Into<String>) {
        self.first.get_or_insert((reason, action));
        self.steps.push(step.into());
    }

    /// `(reason, action, note)` of the event to publish, if anything happened.
    pub(crate) fn event(&self) -> Option<(&'static str, &'static str, String)> {
        let (reason, action) = self.first?;
        let note = self.steps.join("; ");
        let mut chars = note.chars();
        let note = chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect())
            .unwrap_or_default();
        Some((reason, action, note))
    }
}

fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// Shared error policy: counts consecutive failures per object and asks
/// [`requeue_after_error`] for the delay.
pub fn error_policy<K: Resource<DynamicType = ()>, A: VpnApi>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context<A>>,
) -> Action {
    let failures = ctx.record_outcome(object_key(obj.as_ref()), true);
    let delay = requeue_after_error(error, failures.saturating_sub(1), ctx.settings.resync_interval);
    tracing::warn!(
        kind = %K::kind(&()),
        name = %obj.meta().name.as_deref().unwrap_or(""),
        namespace = %obj.meta().namespace.as_deref().unwrap_or(""),
        category = error.category(),
        error = %error,
        requeue_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Drops what the operator never reads from cached objects.
fn slim<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(annotations) = obj.meta_mut().annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Changes that need a reconcile: the spec (generation) and deletion. Status and finalizer
/// updates — including the operator's own — do not: a reconcile goes on with the object its
/// own writes returned, polling and resyncs are scheduled explicitly, and so an own write never
/// causes another round of API calls on a cache that has not caught up with it.
fn needs_reconcile<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = obj.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (meta.generation, meta.deletion_timestamp.is_some()).hash(&mut hasher);
    Some(hasher.finish())
}

/// Where the controllers look for resources.
#[derive(Clone, Debug)]
pub enum WatchScope {
    AllNamespaces,
    Namespace(String),
}

/// What every controller scope shares.
pub struct Shared<A> {
    pub client: Client,
    pub api: Arc<A>,
    pub default_token: Option<ApiToken>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub reporter: Reporter,
}

/// Runs both controllers for one scope until `shutdown` resolves. In-flight reconciles are
/// allowed to finish (graceful shutdown). `on_started` receives the caches once they exist.
pub async fn run<A: VpnApi>(
    shared: Shared<A>,
    scope: WatchScope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
    on_started: impl FnOnce(Store<VpnInstance>, Store<VpnPeer>) + Send,
) {
    let Shared {
        client,
        api,
        default_token,
        metrics,
        settings,
        reporter,
    } = shared;
    let (instances, peers): (Api<VpnInstance>, Api<VpnPeer>) = match &scope {
        WatchScope::AllNamespaces => (Api::all(client.clone()), Api::all(client.clone())),
        WatchScope::Namespace(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
    };
    let mut watch_config = watcher::Config::default().any_semantic();
    if let Some(selector) = &settings.label_selector {
        watch_config = watch_config.labels(selector);
    }

    // Each controller is fed by its own reflector so that the cached copies can be slimmed
    // (managedFields and kubectl's last-applied annotation are never read but dominate the
    // memory of large fleets) and so that only changes that need a reconcile trigger one.
    // Peers are re-triggered by every change of an instance (it may have become usable, or
    // gone): the instance watch is tapped for that instead of being opened a second time. The
    // channel is unbounded so that a busy peer queue never stalls the instance controller; it
    // holds one reference per instance event at most.
    let (instance_changed, instance_changes) = futures::channel::mpsc::unbounded::<ObjectRef<VpnInstance>>();
    let (instance_store, instance_writer) = reflector::store();
    let instance_events = watcher(instances, watch_config.clone())
        .default_backoff()
        .modify(slim)
        .reflect(instance_writer)
        .inspect_ok(move |event| match event {
            watcher::Event::Apply(instance)
            | watcher::Event::InitApply(instance)
            | watcher::Event::Delete(instance) => {
                let _ = instance_changed.unbounded_send(ObjectRef::from_obj(instance));
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        })
        .applied_objects()
        .predicate_filter(needs_reconcile, PredicateConfig::default());
    let (peer_store, peer_writer) = reflector::store();
    let peer_events = watcher(peers, watch_config)
        .default_backoff()
        .modify(slim)
        .reflect(peer_writer)
        .applied_objects()
        .predicate_filter(needs_reconcile, PredicateConfig::default());
    let peers_by_instance = peer_store.clone();
    let peer_triggers = instance_changes.flat_map(move |instance: ObjectRef<VpnInstance>| {
        let dependents: Vec<ObjectRef<VpnPeer>> = peers_by_instance
            .state()
            .into_iter()
            .filter(|p| p.namespace() == instance.namespace && p.spec.instance_ref.name == instance.name)
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect();
        futures::stream::iter(dependents)
    });
    let instance_controller = Controller::for_stream(instance_events, instance_store.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.instance_concurrency))
        .graceful_shutdown_on(shutdown.clone());
    let peer_controller = Controller::for_stream(peer_events, peer_store.clone())
        .reconcile_on(peer_triggers)
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.peer_concurrency))
        .graceful_shutdown_on(shutdown);

    let ctx = Arc::new(Context {
        client: client.clone(),
        api,
        default_token,
        recorder: Recorder::new(client, reporter.clone()),
        reporter,
        metrics,
        settings,
        instances: instance_store.clone(),
        regions: tokio::sync::Mutex::new(None),
        failures: Mutex::new(HashMap::new()),
    });

    on_started(instance_store, peer_store);

    let instance_loop = instance_controller
        .run(reconcile::<VpnInstance, A>, error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()));
    let peer_loop = peer_controller
        .run(reconcile::<VpnPeer, A>, error_policy, ctx)
        .for_each(|_| std::future::ready(()));
    futures::join!(instance_loop, peer_loop);
}

fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds the cleanup finalizer if missing. The patch carries the observed `resourceVersion`:
/// it cannot clobber a concurrent edit, and for peers the added finalizer doubles as the
/// claim that a create is about to be sent (see `peer::create_or_adopt`), which only a
/// current copy may make. Returns false when the copy was stale or the object is gone: the
/// caller must not go on acting on it.
async fn ensure_finalizer<K>(api: &Api<K>, obj: &K) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if has_finalizer(obj) {
        return Ok(true);
    }
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    patch_finalizers(api, obj, finalizers).await
}

/// Removes the cleanup finalizer once the Altostrat side is done. A stale copy is looked at
/// again shortly: finalizer changes alone do not trigger a reconcile.
async fn release<K>(api: &Api<K>, obj: &K) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let finalizers: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if finalizers.len() == obj.finalizers().len() || patch_finalizers(api, obj, finalizers).await? {
        Ok(Action::await_change())
    } else {
        Ok(Action::requeue(STALE_RETRY))
    }
}

/// Replaces the finalizer list if `obj` is still the latest version; false when it is not (a
/// trigger raced the cache) or the object is gone.
async fn patch_finalizers<K>(api: &Api<K>, obj: &K, finalizers: Vec<String>) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": obj.resource_version() }
    });
    match api
        .patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!(name = %obj.name_any(), "finalizer patch conflicted with a newer version");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `.status` by server-side apply under [`FIELD_MANAGER`]. A resource deleted meanwhile
/// is not an error.
async fn apply_status<K, S>(api: &Api<K>, obj: &K, status: &S) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch_status(&obj.name_any(), &params, &Patch::Apply(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The status types of both kinds, as far as failure reporting needs them.
pub(crate) trait ConditionedStatus: Clone + Default + PartialEq + serde::Serialize {
    fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition];
    fn set_conditions(&mut self, conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>);
    fn set_observed_generation(&mut self, generation: Option<i64>);
}

macro_rules! conditioned_status {
    ($($status:ty),*) => {$(
        impl ConditionedStatus for $status {
            fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
                &self.conditions
            }
            fn set_conditions(&mut self, conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>) {
                self.conditions = conditions;
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
        }
    )*};
}
conditioned_status!(crate::crd::VpnInstanceStatus, crate::crd::VpnPeerStatus);

/// Records a failed attempt in the conditions, writing (and emitting a Warning event) only
/// when this changes the status, so a repeating error is not a write loop.
///
/// `Synced` turns False for the current generation. When `Ready` was True and the failure is
/// transient, `Ready` is left untouched — the hub or peer still works — and
/// `observedGeneration` does not advance, so kstatus/Flux keep waiting for the new spec instead
/// of reporting it applied. Otherwise (not ready yet, or an error only the user can fix)
/// `Ready` turns False with the error's reason for the current generation.
async fn report_failure<K, S, A>(obj: &K, current: Option<&S>, ctx: &Context<A>, api: &Api<K>, error: &Error)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: ConditionedStatus,
    A: VpnApi,
{
    let mut status = current.cloned().unwrap_or_default();
    let message = error.to_string();
    let generation = obj.meta().generation;
    let kept_ready = status
        .conditions()
        .iter()
        .find(|c| c.type_ == conditions::READY && c.status == "True")
        .filter(|_| !error.needs_user_action())
        .cloned();
    let synced = conditions::ConditionState::new(conditions::SYNCED, false, error.reason(), message.clone());
    let merged = match kept_ready {
        Some(ready) => {
            let mut merged =
                conditions::merge(status.conditions(), &[synced], generation, &conditions::now());
            merged.insert(0, ready);
            merged
        }
        None => {
            let ready =
                conditions::ConditionState::new(conditions::READY, false, error.reason(), message.clone());
            status.set_observed_generation(generation);
            conditions::merge(
                status.conditions(),
                &[ready, synced],
                generation,
                &conditions::now(),
            )
        }
    };
    status.set_conditions(merged);
    if current != Some(&status) {
        if let Err(e) = apply_status(api, obj, &status).await {
            tracing::warn!(error = %e, "failed to record failure in status");
        }
        ctx.publish(obj, EventType::Warning, error.reason(), "Reconcile", message)
            .await;
    }
}

/// The half of a reconcile that differs between the kinds; [`reconcile`] is the shared driver.
pub(crate) trait Reconciled:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    type Status: ConditionedStatus + Send + Sync;
    /// Controller label in metrics and logs.
    const CONTROLLER: &'static str;

    fn status(&self) -> Option<&Self::Status>;

    /// Adds the finalizer, creates or adopts, updates and observes the Altostrat object, then
    /// records it. `current` follows the stored status as `converge` writes it.
    /// What it did goes into `activity`, published as one event whether or not a later step
    /// failed.
    fn converge<A: VpnApi>(
        &self,
        ctx: &Context<A>,
        api: &Api<Self>,
        current: &mut Option<Self::Status>,
        activity: &mut Activity,
    ) -> impl std::future::Future<Output = Result<Action>> + Send;

    /// Deletion: honours `deletionPolicy`, then releases the finalizer.
    fn cleanup<A: VpnApi>(
        &self,
        ctx: &Context<A>,
        api: &Api<Self>,
    ) -> impl std::future::Future<Output = Result<Action>> + Send;
}

/// One reconcile of either kind: deletion goes to `cleanup`; otherwise `converge` runs (it
/// adds the finalizer before anything that would need cleaning up) and a failure is recorded
/// in the status.
async fn reconcile<K: Reconciled, A: VpnApi>(obj: Arc<K>, ctx: Arc<Context<A>>) -> Result<Action> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    instrumented(K::CONTROLLER, obj.as_ref(), &ctx, async {
        if obj.meta().deletion_timestamp.is_some() {
            return obj.cleanup(&ctx, &api).await;
        }
        // The status as stored, kept up to date by `converge` as it writes, so that a failure
        // is recorded on top of what was already written (an id, a creation mark) rather than
        // on the copy this reconcile started from.
        let mut current = obj.status().cloned();
        let mut activity = Activity::default();
        let result = obj.converge(&ctx, &api, &mut current, &mut activity).await;
        if let Some((reason, action, note)) = activity.event() {
            ctx.publish(obj.as_ref(), EventType::Normal, reason, action, note)
                .await;
        }
        match result {
            Ok(action) => Ok(action),
            Err(error) => {
                report_failure(obj.as_ref(), current.as_ref(), &ctx, &api, &error).await;
                Err(error)
            }
        }
    })
    .await
}

/// Wraps a reconcile body with timing, metrics and failure bookkeeping.
async fn instrumented<K, A, F>(controller: &'static str, obj: &K, ctx: &Context<A>, body: F) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    A: VpnApi,
    F: std::future::Future<Output = Result<Action>>,
{
    let started = Instant::now();
    let result = body.await;
    ctx.metrics.record_reconcile(
        controller,
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok() {
        ctx.record_outcome(object_key(obj), false);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::altostrat::Endpoint;

    const RESYNC: Duration = Duration::from_secs(300);

    #[test]
    fn one_event_per_reconcile_named_after_its_first_step() {
        assert_eq!(Activity::default().event(), None);
        let mut activity = Activity::default();
        activity.record(
            "Created",
            "Create",
            "created Altostrat instance i-1 in region sjc",
        );
        activity.record("Updated", "Update", "applied changes to routes");
        activity.record("Ready", "Reconcile", "instance h is provisioned and in sync");
        assert_eq!(
            activity.event(),
            Some((
                "Created",
                "Create",
                "Created Altostrat instance i-1 in region sjc; applied changes to routes; \
                 instance h is provisioned and in sync"
                    .to_owned()
            ))
        );
        let mut update_only = Activity::default();
        update_only.record("Updated", "Update", "applied changes to routeAll");
        assert_eq!(
            update_only.event(),
            Some(("Updated", "Update", "Applied changes to routeAll".to_owned()))
        );
    }

    #[test]
    fn invalid_specs_wait_for_an_edit_not_a_hot_loop() {
        let e = Error::InvalidSpec("bad".into());
        assert_eq!(requeue_after_error(&e, 0, RESYNC), RESYNC);
        let conflict = Error::Api(ApiError::Conflict {
            endpoint: Endpoint::CreateInstance,
            code: "hostname_taken".into(),
            message: "m".into(),
        });
        assert_eq!(requeue_after_error(&conflict, 5, RESYNC), RESYNC);
        assert_eq!(conflict.reason(), "InvalidSpec");
    }

    #[test]
    fn rate_limits_wait_exactly_for_retry_after() {
        let e = Error::Api(ApiError::RateLimited {
            endpoint: Endpoint::GetInstance,
            retry_after: Some(Duration::from_secs(17)),
        });
        assert_eq!(requeue_after_error(&e, 3, RESYNC), Duration::from_secs(17));
        assert_eq!(e.category(), "rate_limited");
    }

    #[test]
    fn transient_errors_back_off_exponentially_up_to_five_minutes() {
        let e = Error::Api(ApiError::Server {
            endpoint: Endpoint::GetInstance,
            status: 500,
            message: "m".into(),
        });
        let delays: Vec<_> = [0, 1, 2, 3, 20]
            .iter()
            .map(|n| requeue_after_error(&e, *n, RESYNC).as_secs())
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 300]);
        assert_eq!(e.reason(), "ApiError");
        assert_eq!(Error::Credentials("x".into()).reason(), "CredentialsError");
    }
}
