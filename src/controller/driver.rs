//! The reconcile driver shared by both kinds: a span, timing, the deletion/convergence split,
//! the one Normal event, and failure recording.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tokio::time::Instant;
use tracing::Instrument;

use super::conditions;
use super::conditions::HasStatus;
use super::context::Context;
use super::error::{Error, Result, object_key};
use super::events::Activity;
use super::finalizer::{self, FinalizerState, Patched};
use super::status::StatusWriter;
use crate::altostrat::VpnApi;

/// The half of a reconcile that differs between the kinds; [`reconcile`] is the shared driver.
pub(crate) trait Reconciler:
    HasStatus
    + Resource<Scope = NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// Controller label in metrics and logs.
    const CONTROLLER: &'static str;

    /// Observes the resource and Altostrat, decides, and acts until the Altostrat object
    /// matches the spec or has to be waited for; records what it saw through `handle`.
    fn converge<A: VpnApi>(
        &self,
        ctx: &Context<A>,
        handle: &mut Handle<Self>,
    ) -> impl Future<Output = Result<Action>> + Send;

    /// Deletion: honours `deletionPolicy`, then releases the finalizer.
    fn cleanup<A: VpnApi>(
        &self,
        ctx: &Context<A>,
        handle: &mut Handle<Self>,
    ) -> impl Future<Output = Result<Action>> + Send;
}

/// Everything a reconcile writes to its own object: status, finalizer, and the steps that
/// make up its one Normal event.
pub(crate) struct Handle<K: Reconciler> {
    pub api: Api<K>,
    pub status: StatusWriter<K>,
    pub activity: Activity,
}

impl<K: Reconciler> Handle<K> {
    pub fn new(obj: &K, api: Api<K>, now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Self {
        Self {
            status: StatusWriter::new(api.clone(), obj, now),
            api,
            activity: Activity::default(),
        }
    }

    /// See [`finalizer::add`]: `Added`, or `Stale` when our copy was not current.
    pub async fn add_finalizer(&mut self, obj: &K) -> Result<FinalizerState> {
        let patched = finalizer::add(&self.api, obj, self.status.version()).await?;
        Ok(self.note(patched))
    }

    /// See [`finalizer::release`].
    pub async fn release(&self, obj: &K) -> Result<Action> {
        finalizer::release(&self.api, obj, self.status.version()).await
    }

    fn note(&mut self, patched: Patched) -> FinalizerState {
        match patched {
            Patched::Current(version) => {
                self.status.set_version(version);
                FinalizerState::Added
            }
            Patched::Stale => FinalizerState::Stale,
        }
    }
}

/// One reconcile of either kind: deletion goes to `cleanup`, anything else to `converge`; a
/// failure of either is recorded in the status (so a deletion that cannot proceed, say for
/// want of credentials, says why), and what changed is published as one event.
pub(crate) async fn reconcile<K: Reconciler, A: VpnApi>(obj: Arc<K>, ctx: Arc<Context<A>>) -> Result<Action> {
    let namespace = obj.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", kind = K::CONTROLLER, %namespace, name = %obj.name_any());
    let _in_flight = ctx.metrics.reconcile_started(K::CONTROLLER);
    let _running = ctx.running.start();
    let started = Instant::now();
    let result = run_once(obj.as_ref(), &ctx, namespace).instrument(span).await;
    ctx.metrics.record_reconcile(
        K::CONTROLLER,
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok() {
        ctx.failures.succeeded(&object_key(obj.as_ref()));
    }
    result
}

async fn run_once<K: Reconciler, A: VpnApi>(obj: &K, ctx: &Context<A>, namespace: String) -> Result<Action> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut handle = Handle::new(obj, api, conditions::now());
    let result = if obj.meta().deletion_timestamp.is_some() {
        obj.cleanup(ctx, &mut handle).await
    } else {
        obj.converge(ctx, &mut handle).await
    };
    if let Some((reason, action, note)) = handle.activity.event() {
        ctx.publish(obj, EventType::Normal, (reason, action), note).await;
    }
    // A fenced request was refused because this replica may no longer lead: the leader that
    // took over owns the status now, and nothing failed at Altostrat.
    if let Err(error) = &result
        && !error.is_fenced()
        && handle.status.record_failure(error).await
    {
        ctx.publish(
            obj,
            EventType::Warning,
            (error.reason(), "Reconcile"),
            error.to_string(),
        )
        .await;
    }
    result
}

/// The error policy of both controllers: counts the object's consecutive failures, requeues it
/// as the error's [`Outcome`](super::error::Outcome) says, and logs the failure at the
/// outcome's level.
pub fn error_policy<K: Resource<DynamicType = ()>, A: VpnApi>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context<A>>,
) -> Action {
    let failures = ctx.failures.failed(object_key(obj.as_ref()));
    let outcome = error.outcome();
    let delay = outcome
        .retry
        .delay(failures.saturating_sub(1), ctx.settings.resync_interval);
    let (kind, meta) = (K::kind(&()), obj.meta());
    let name = meta.name.as_deref().unwrap_or("");
    let namespace = meta.namespace.as_deref().unwrap_or("");
    // A callsite's level is static, hence one per level.
    macro_rules! failed {
        ($level:expr) => {
            tracing::event!($level, %kind, %name, %namespace, category = outcome.category,
                error = %error, requeue_in = ?delay, "reconcile failed")
        };
    }
    match outcome.log {
        tracing::Level::ERROR => failed!(tracing::Level::ERROR),
        tracing::Level::WARN => failed!(tracing::Level::WARN),
        tracing::Level::INFO => failed!(tracing::Level::INFO),
        tracing::Level::DEBUG => failed!(tracing::Level::DEBUG),
        _ => failed!(tracing::Level::TRACE),
    }
    Action::requeue(delay)
}
