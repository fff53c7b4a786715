//! The reconcile driver: a span, timing, the deletion/convergence split, the one Normal event,
//! failure recording, and the error policy.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tokio::time::Instant;
use tracing::Instrument;

use super::super::conditions;
use super::super::context::Context;
use super::super::error::{Error, Result, object_key};
use super::super::events::Activity;
use super::super::finalizer::{self, FinalizerState, Patched};
use super::super::status::StatusWriter;
use super::{Managed, cleanup, converge};
use crate::altostrat::{Caller, VpnApi};

/// Everything a reconcile writes to its own object: status, finalizer, and the steps that
/// make up its one Normal event.
pub(crate) struct Handle<K: Managed> {
    pub api: Api<K>,
    pub status: StatusWriter<K>,
    pub activity: Activity,
}

impl<K: Managed> Handle<K> {
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
pub(crate) async fn reconcile<K: Managed, A: VpnApi>(obj: Arc<K>, ctx: Arc<Context<A>>) -> Result<Action> {
    let namespace = obj.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", kind = K::CONTROLLER, %namespace, name = %obj.name_any());
    let _in_flight = ctx
        .metrics
        .reconcile_started(K::CONTROLLER, (&namespace, &obj.name_any()));
    let _running = ctx.running.start();
    let started = Instant::now();
    // Its Altostrat calls are paid from its namespace's share of the token's lane.
    let caller = Caller::namespace(&namespace);
    let result = caller
        .scope(run_once(obj.as_ref(), &ctx, namespace))
        .instrument(span)
        .await;
    ctx.metrics.record_reconcile(
        K::CONTROLLER,
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    match &result {
        Ok(action) if *action != Action::await_change() => {
            ctx.metrics.record_requeue(K::CONTROLLER, "next_look")
        }
        Ok(_) => {}
        // The error policy requeues every failure.
        Err(error) => ctx.metrics.record_requeue(K::CONTROLLER, error.category()),
    }
    if result.is_ok() {
        ctx.failures.succeeded(&object_key(obj.as_ref()));
    }
    result
}

async fn run_once<K: Managed, A: VpnApi>(obj: &K, ctx: &Context<A>, namespace: String) -> Result<Action> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut handle = Handle::new(obj, api, conditions::now());
    let result = if obj.meta().deletion_timestamp.is_some() {
        cleanup(obj, ctx, &mut handle).await
    } else {
        converge(obj, ctx, &mut handle).await
    };
    if let Some(age) = handle.status.first_ready() {
        ctx.metrics.record_first_ready(&K::kind(&()), age);
    }
    if let Some((reason, action, note)) = handle.activity.event() {
        ctx.publish(obj, EventType::Normal, (reason, action), note).await;
    }
    if let Some((reason, action, note)) = handle.activity.warning() {
        ctx.publish(obj, EventType::Warning, (reason, action), note).await;
    }
    if let Err(error) = &result
        && let Some(kind) = error.outcome().event
        && handle.status.record_failure(error).await
    {
        ctx.publish(obj, kind, (error.reason(), "Reconcile"), error.to_string())
            .await;
    }
    result
}

/// The error policy of both controllers: counts the object's consecutive failures, requeues it
/// as the error's [`Outcome`](super::super::error::Outcome) says, and logs the failure at the
/// outcome's level when it begins (or changes), at DEBUG while it repeats.
pub fn error_policy<K: Resource<DynamicType = ()>, A: VpnApi>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context<A>>,
) -> Action {
    let outcome = error.outcome();
    let streak = ctx.failures.failed(object_key(obj.as_ref()), outcome.category);
    let delay = outcome
        .retry
        .delay(streak.count.saturating_sub(1), ctx.settings.resync_interval);
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
    // The status and the event already say it; a retry that fails alike adds nothing a person
    // must read.
    let level = match streak.repeated {
        true => outcome.log.max(tracing::Level::DEBUG),
        false => outcome.log,
    };
    match level {
        tracing::Level::ERROR => failed!(tracing::Level::ERROR),
        tracing::Level::WARN => failed!(tracing::Level::WARN),
        tracing::Level::INFO => failed!(tracing::Level::INFO),
        tracing::Level::DEBUG => failed!(tracing::Level::DEBUG),
        _ => failed!(tracing::Level::TRACE),
    }
    Action::requeue(delay)
}
