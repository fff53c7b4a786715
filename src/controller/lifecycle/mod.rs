//! The one lifecycle of both kinds: observe → [`decide`](decide::decide) → act, one step at a
//! time, until a step ends the round; and the deletion, decided by
//! [`decide_cleanup`](super::cleanup::decide_cleanup).
//!
//! A kind implements [`Managed`]: how its object is observed, identified, created, updated and
//! deleted in Altostrat, what it waits for (a peer for its instance), and its status fields. Claim,
//! search, adopt, forget, the policy gate, the ownership record, the finalizer and the cleanup
//! are written here once.

pub(crate) mod decide;
mod driver;
#[cfg(test)]
mod invariants;
mod record;
mod withheld;

pub(crate) use driver::{Handle, error_policy, reconcile};
pub(crate) use withheld::{Withheld, withheld};

use std::future::Future;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tokio::time::Instant;

use super::approval::Approval;
use super::cleanup::{CleanupObserved, CleanupStep, DeleteAnswer, decide_cleanup};
use super::conditions::{ConditionState, ConditionedStatus, HasStatus};
use super::context::Context;
use super::credentials::{Source, Wanted};
use super::error::{Error, Result};
use super::events::reason as event;
use super::finalizer::{FinalizerState, has_finalizer};
use super::observation::{Look, Repeat, defer_drift_check};
use super::ownership::{self, Claim, Ownership};
use super::policy::Gate;
use super::record::Holding;
use crate::altostrat::model::Identified;
use crate::altostrat::{ApiResult, ApiToken, Urgency, VpnApi};
use crate::crd::{DeletionPolicy, Holder, OwnershipRecordSpec, PlannedCall, RecordOrigin, RecordRole};
use decide::{Candidate, Kind, Observed, Remote, Step, decide};
use record::Recorded;

/// More steps than the longest path of one reconcile (finalizer, fetch, forget, search, claim,
/// create, update, record: 8): reaching it means the decisions loop, a bug.
const MAX_STEPS: usize = 10;

/// What a kind supplies to the one lifecycle, beyond its pure facts ([`Kind`]).
pub(crate) trait Managed:
    Kind
    + HasStatus
    + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// Controller label in metrics and logs.
    const CONTROLLER: &'static str;
    /// Whether an accepted DELETE removes the object at once (a peer's, as documented), so no
    /// teardown is watched.
    const DELETE_IS_FINAL: bool;

    fn spec(&self) -> &Self::Spec;
    fn deletion_policy(&self) -> Option<DeletionPolicy>;

    // --- the ownership record
    /// The name of the record that proves the object this resource's own.
    fn record_name(&self) -> String;
    /// The object's id in a record of this kind.
    fn record_id(record: &OwnershipRecordSpec) -> Option<&String>;
    /// The instance a record's object lives on (`""` for an instance itself); `None` when unknown.
    fn record_parent(record: &OwnershipRecordSpec) -> Option<&str>;
    /// Writes the object's identity (and id, once known) into the record.
    fn stamp(&self, record: &mut OwnershipRecordSpec, parent: &str, id: Option<String>);
    /// Who else holds object `id` besides the record this resource would take.
    fn holder_of<A: VpnApi>(
        ctx: &Context<A>,
        id: &str,
        me: &Holder,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    // --- what the object depends on
    /// What the resource names for its credentials (a peer: what its instance names), and the
    /// namespace they are judged in (a peer's: its instance's).
    fn credentials<A: VpnApi>(
        &self,
        ctx: &Context<A>,
    ) -> impl Future<Output = Result<(String, Wanted)>> + Send;
    /// The instance the object lives on (`""` for an instance itself), or why the resource waits for it.
    fn parent<A: VpnApi>(
        &self,
        ctx: &Context<A>,
    ) -> impl Future<Output = Result<std::result::Result<String, ConditionState>>> + Send;

    // --- Altostrat
    /// Checks what only Altostrat can tell before anything is claimed (an instance's region).
    fn validate<A: VpnApi>(_: &mut Conn<'_, Self, A>) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
    /// How fresh the observation of the object must be.
    fn look_for<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken, gate: Gate, now: &Time) -> Look;
    /// The object as the shared observation already holds it, when nothing more is to be
    /// learnt about it before its own write.
    fn settled<A: VpnApi>(_: &Conn<'_, Self, A>, _: &ApiToken, _: &str) -> Option<Self::Object> {
        None
    }
    fn fetch<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        id: &str,
        look: Look,
    ) -> impl Future<Output = Result<Option<Self::Object>>> + Send;
    /// Whether the object still exists, asked now (`just_asked`: right after a DELETE).
    fn fetch_now<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        id: &str,
        just_asked: bool,
    ) -> impl Future<Output = Result<Option<Self::Object>>> + Send;
    /// The objects a create of this resource could have made, from a list sent after `since`.
    fn search<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        since: Instant,
    ) -> impl Future<Output = Result<Vec<Candidate<Self::Object>>>> + Send;
    /// Sends the create: `Found` with what Altostrat made, or `Taken`.
    fn create<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
    ) -> impl Future<Output = Result<Remote<Self::Object>>> + Send;
    fn update<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        id: &str,
        body: &Self::Update,
    ) -> impl Future<Output = ApiResult<Self::Object>> + Send;
    fn delete<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        token: &ApiToken,
        id: &str,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    /// Keeps the shared observation in step with a write: the object as written, or (`None`)
    /// gone.
    fn wrote<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken, id: &str, object: Option<&Self::Object>);
    fn known_gone<A: VpnApi>(conn: &Conn<'_, Self, A>, token: &ApiToken, id: &str) -> bool;
    /// The fields an update sets, as the object holds them (to tell a repeat).
    fn fields(object: &Self::Object) -> serde_json::Value;
    /// Whether Altostrat is still applying an earlier update.
    fn busy(_: &Self::Object) -> bool {
        false
    }
    fn update_note(&self, fields: &[&str], body: &Self::Update) -> String;

    // --- status
    /// Writes what Altostrat holds the moment the id is known, before anything else can fail.
    fn record_found<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        handle: &mut Handle<Self>,
        object: &Self::Object,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Records a converged object and schedules the next look.
    fn record<A: VpnApi>(
        conn: &mut Conn<'_, Self, A>,
        handle: &mut Handle<Self>,
        object: &Self::Object,
    ) -> impl Future<Output = Result<Action>> + Send;
    /// Records a reconcile whose writes the gate withholds, and schedules the next look.
    fn withhold<A: VpnApi>(
        conn: &mut Conn<'_, Self, A>,
        handle: &mut Handle<Self>,
        remote: &Remote<Self::Object>,
        calls: Vec<PlannedCall>,
    ) -> impl Future<Output = Result<Action>> + Send;
    /// (`ObserveOnly`) Records that no object with the spec's identity is visible (only a
    /// unique kind is looked for without an id).
    fn missing<A: VpnApi>(
        conn: &mut Conn<'_, Self, A>,
        _: &mut Handle<Self>,
    ) -> impl Future<Output = Result<Action>> + Send {
        async { Ok(Action::requeue(conn.ctx.settings.resync_interval)) }
    }
    /// Records that the resource waits for its instance (a kind with no parent never does).
    fn wait<A: VpnApi>(
        _: &Conn<'_, Self, A>,
        _: &mut Handle<Self>,
        waiting: ConditionState,
    ) -> impl Future<Output = Result<Action>> + Send {
        async { Err(Error::InvalidSpec(waiting.message)) }
    }
    /// Forgets a vanished object's id in status.
    fn forget_status(&self, handle: &mut Handle<Self>, id: &str) -> impl Future<Output = Result<()>> + Send;

    // --- deletion; by default a kind has no dependents, no successors and no teardown to watch
    /// The names of the resources that still reference this one (an instance's peers).
    fn dependents<A: VpnApi>(&self, _: &Context<A>) -> Vec<String> {
        Vec::new()
    }
    /// Records that the deletion waits for the `dependents` named.
    fn wait_for_dependents(
        _: &mut Handle<Self>,
        _dependents: &[String],
    ) -> impl Future<Output = Result<Action>> + Send {
        async { Ok(Action::await_change()) }
    }
    /// Another live resource that adopts object `id` explicitly and takes it over.
    fn successor<A: VpnApi>(
        &self,
        _: &Context<A>,
        _: &str,
    ) -> impl Future<Output = Result<Option<Holder>>> + Send {
        async { Ok(None) }
    }
    /// Whether an earlier reconcile saw Altostrat accept the DELETE and the object stay.
    fn teardown_started(&self) -> bool {
        false
    }
    fn wait_for_teardown<A: VpnApi>(
        conn: &Conn<'_, Self, A>,
        _: &mut Handle<Self>,
        _: &str,
    ) -> impl Future<Output = Result<Action>> + Send {
        async { Ok(Action::requeue(conn.ctx.settings.provisioning_poll)) }
    }
    /// What is released with the resource once its finalizer is gone (an instance's Secret).
    fn released<A: VpnApi>(&self, _: &Context<A>) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}

/// A reconcile bound to its resource, its context, its instance and its token (read on first use:
/// a reconcile that needs no Altostrat call reads no Secret).
pub(crate) struct Conn<'a, K, A> {
    pub obj: &'a K,
    pub ctx: &'a Context<A>,
    /// The instance the object lives on (`""` for an instance itself).
    pub parent: String,
    /// The namespace the credentials are judged in, and where they come from, once resolved.
    source: Option<(String, Source)>,
    token: Option<ApiToken>,
}

impl<'a, K: Managed, A: VpnApi> Conn<'a, K, A> {
    fn new(obj: &'a K, ctx: &'a Context<A>, parent: String) -> Self {
        Self {
            obj,
            ctx,
            parent,
            source: None,
            token: None,
        }
    }

    /// Where the token comes from, resolved on first use (and the resource noted as a user
    /// of the VpnCredentials it resolved to).
    pub async fn source(&mut self) -> Result<Source> {
        Ok(self.resolved().await?.1)
    }

    /// The namespace the credentials are judged in, and where they come from.
    async fn resolved(&mut self) -> Result<(String, Source)> {
        if let Some(resolved) = &self.source {
            return Ok(resolved.clone());
        }
        let uid = self.obj.meta().uid.clone().unwrap_or_default();
        let (namespace, wanted) = self.obj.credentials(self.ctx).await?;
        let source = self.ctx.credentials_source(&namespace, &wanted).await;
        self.ctx.shared.note_user(&uid, source.as_ref().ok());
        let resolved = (namespace, source?);
        self.source = Some(resolved.clone());
        Ok(resolved)
    }

    pub async fn token(&mut self) -> Result<ApiToken> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let (namespace, source) = self.resolved().await?;
        let token = self.ctx.token(&namespace, &source).await?;
        self.token = Some(token.clone());
        Ok(token)
    }

    /// The deletion policy in force: the spec's, else by the record's origin, with the
    /// default for a created object from the credentials (a resource whose credentials cannot
    /// be resolved gets the operator's default: it cannot delete anything then anyway).
    pub async fn deletion_policy(&mut self, holding: &Holding) -> DeletionPolicy {
        let spec = self.obj.deletion_policy();
        let created = holding.mine().map(|r| r.origin) == Some(RecordOrigin::Created);
        if spec.is_some() || !created {
            return holding.deletion_policy(spec, self.ctx.settings.default_deletion_policy);
        }
        let source = self.source().await.ok();
        holding.deletion_policy(spec, self.ctx.created_default(source.as_ref()))
    }
}

/// A converging reconcile: the next step, acted on, until one ends the round.
async fn converge<K: Managed, A: VpnApi>(
    obj: &K,
    ctx: &Context<A>,
    handle: &mut Handle<K>,
) -> Result<Action> {
    let parent = obj.parent(ctx).await?;
    let mut conn = Conn::new(obj, ctx, parent.clone().unwrap_or_default());
    let mut own = Recorded::look(obj, ctx).await?;
    let policy = conn.deletion_policy(own.holding()).await;
    handle.status.set_deletion_policy(policy);
    let mut observed = first_look(obj, parent, own.holding());
    observed.held_elsewhere = own.held_elsewhere(obj, ctx).await?;
    let started = Instant::now();
    for _ in 0..MAX_STEPS {
        let step = decide(&observed);
        tracing::debug!(?step, "next step");
        let mut round = Round {
            conn: &mut conn,
            handle,
            own: &mut own,
            observed: &mut observed,
            started,
        };
        if let Some(action) = round.act(step).await? {
            return Ok(action);
        }
    }
    Err(Error::Unsettled(K::CONTROLLER))
}

/// What a reconcile knows before it looks at Altostrat.
fn first_look<'a, K: Managed>(
    obj: &'a K,
    parent: std::result::Result<String, ConditionState>,
    holding: &Holding,
) -> Observed<'a, K> {
    let mut observed = Observed {
        spec: obj.spec(),
        gate: Gate::of(obj),
        parent,
        finalizer: FinalizerState::of(obj),
        claim: Claim::None,
        recorded_id: None,
        observed_id: None,
        held_elsewhere: None,
        holds_record: false,
        status_id: obj.status().and_then(|s| s.recorded_id()).map(str::to_owned),
        remote: Remote::Unknown,
        updated: false,
        approval: Approval::of(obj, Gate::of(obj)),
    };
    refresh(&mut observed, holding);
    observed
}

/// What the record says, as the decision reads it: the object it holds counts only on the instance
/// the resource uses now (a peer recorded on an earlier incarnation of its instance went away with
/// it). A claim this reconcile made stays fresh.
fn refresh<K: Managed>(observed: &mut Observed<K>, holding: &Holding) {
    let parent = observed.parent.as_deref().unwrap_or_default();
    let id_as = |role| {
        holding
            .mine_as(role)
            .filter(|r| K::record_parent(r) == Some(parent))
            .and_then(|r| K::record_id(r).cloned())
    };
    observed.recorded_id = id_as(RecordRole::Manage);
    observed.observed_id = id_as(RecordRole::Observe);
    observed.holds_record = holding.mine().is_some();
    if let Some(other) = holding.other() {
        observed.held_elsewhere = Some(other.to_owned());
    }
    observed.claim = holding.refreshed_claim(observed.claim, K::record_id);
}

/// One step of a converging reconcile and everything it may change.
struct Round<'r, 'a, K: Managed, A> {
    conn: &'r mut Conn<'a, K, A>,
    handle: &'r mut Handle<K>,
    own: &'r mut Recorded,
    observed: &'r mut Observed<'a, K>,
    started: Instant,
}

impl<K: Managed, A: VpnApi> Round<'_, '_, K, A> {
    /// Acts on `step`; `Some` ends the round with that action.
    async fn act(&mut self, step: Step<K>) -> Result<Option<Action>> {
        let ctx = self.conn.ctx;
        // Taken through a closed gate: the approved plan this step carries out.
        let approved = decide::withheld_calls(&step, self.observed);
        match step {
            Step::Wait(waiting) => return K::wait(self.conn, self.handle, waiting).await.map(Some),
            Step::Requeue(after) => return Ok(Some(Action::requeue(after))),
            Step::AddFinalizer => self.observed.finalizer = self.add_finalizer().await?,
            Step::Claim => self.claim().await?,
            Step::Own { id, role } => {
                let obj = self.conn.obj;
                let parent = self.conn.parent.clone();
                self.observed.held_elsewhere = self.own.own(obj, ctx, (&parent, &id), role).await?;
                let policy = self.conn.deletion_policy(self.own.holding()).await;
                self.handle.status.set_deletion_policy(policy);
                self.refresh();
            }
            Step::Fetch(id) => return self.fetch(id).await,
            Step::Forget(id) => self.forget(&id).await?,
            Step::Search => {
                let token = self.conn.token().await?;
                let found = K::search(self.conn, &token, self.started).await?;
                self.observed.remote = Remote::searched::<K>(found, self.observed.gate.observes());
            }
            Step::Create => self.create(approved).await?,
            Step::Adopt(found) => self.adopt(found).await?,
            Step::Update { id, body, fields } => self.update(id, body, fields, approved).await?,
            Step::Record(object) => return K::record(self.conn, self.handle, &object).await.map(Some),
            Step::Missing => return K::missing(self.conn, self.handle).await.map(Some),
            Step::Withhold(calls) => {
                let changed = self.observed.approval.changed().map(str::to_owned);
                self.handle.status.set_plan_changed(changed);
                let remote = self.observed.remote.clone();
                return K::withhold(self.conn, self.handle, &remote, calls)
                    .await
                    .map(Some);
            }
            Step::WithdrawClaim(error) => {
                self.own.withdraw_claim::<K>(ctx).await?;
                return Err(error);
            }
            Step::GiveUp(error) => return Err(error),
        }
        Ok(None)
    }

    fn refresh(&mut self) {
        refresh(self.observed, self.own.holding());
    }

    /// Records that the first call of `approved`, the plan approved, was sent: every status this
    /// reconcile writes from now on says so.
    fn spend(&mut self, approved: Option<Vec<PlannedCall>>) {
        let Some(calls) = approved else {
            return;
        };
        let now = self.handle.status.now().0.to_string();
        if let Some(recorded) = self.observed.approval.sent(&calls, &now) {
            self.handle.status.set_approved(recorded);
        }
    }

    /// See [`Handle::add_finalizer`]: a finalizer restored on a resource that holds its object
    /// counts as held.
    async fn add_finalizer(&mut self) -> Result<FinalizerState> {
        Ok(match self.handle.add_finalizer(self.conn.obj).await? {
            FinalizerState::Added => FinalizerState::Held,
            other => other,
        })
    }

    /// Claims a create: the finalizer first (a record must never outlive its resource's
    /// cleanup), then the record with a fresh claim. A spec that cannot be created claims
    /// nothing.
    async fn claim(&mut self) -> Result<()> {
        K::validate(self.conn).await?;
        self.observed.finalizer = self.handle.add_finalizer(self.conn.obj).await?;
        if self.observed.finalizer == FinalizerState::Stale {
            return Ok(());
        }
        // Now, at the second precision of the record (rounded down, so an object created right
        // after it never looks older).
        let at = self.handle.status.now().0;
        let (obj, ctx) = (self.conn.obj, self.conn.ctx);
        self.own.claim(obj, ctx, &self.conn.parent, at).await?;
        self.refresh();
        if self.own.holding().mine().is_some() {
            self.observed.claim = Claim::Fresh(at);
        }
        Ok(())
    }

    /// The object `id` as the shared observation holds it, or as a look within the budget
    /// finds it (a fresh one under an approval); a drift check the budget holds back ends the
    /// round, deferred.
    async fn fetch(&mut self, id: String) -> Result<Option<Action>> {
        let token = self.conn.token().await?;
        // An approval is compared with Altostrat as it is now, never with an earlier look: a
        // change made there since would otherwise be overwritten by the approved call.
        let approving = self.observed.approval.changed().is_some();
        if !approving && let Some(settled) = K::settled(self.conn, &token, &id) {
            self.observed.remote = Remote::Found(settled);
            return Ok(None);
        }
        let look = match approving {
            true => Look::fresh(Urgency::Poll),
            false => K::look_for(self.conn, &token, self.observed.gate, self.handle.status.now()),
        };
        match K::fetch(self.conn, &token, &id, look).await {
            Ok(Some(object)) => self.observed.remote = Remote::Found(object),
            Ok(None) => self.observed.remote = Remote::Gone(id),
            Err(deferred) => return defer_drift_check(deferred, look).map(Some),
        }
        Ok(None)
    }

    /// Forgets a recorded object that vanished, in the record (with its claim, so the create
    /// that follows is claimed afresh) and then in status.
    async fn forget(&mut self, id: &str) -> Result<()> {
        let (obj, ctx) = (self.conn.obj, self.conn.ctx);
        let note = format!("Altostrat {} {id} no longer exists; creating it again", K::NOUN);
        ctx.publish(obj, EventType::Warning, event::RECREATING, note)
            .await;
        self.own.record_id(obj, ctx, &self.conn.parent, None).await?;
        obj.forget_status(self.handle, id).await?;
        self.refresh();
        self.observed.status_id = None;
        self.observed.remote = Remote::Unknown;
        Ok(())
    }

    /// Sends the create, right after the claim (which validated the spec: a create only ever
    /// follows this reconcile's own claim), and records the id at once.
    async fn create(&mut self, approved: Option<Vec<PlannedCall>>) -> Result<()> {
        let token = self.conn.token().await?;
        let remote = K::create(self.conn, &token).await?;
        if let Remote::Found(created) = &remote {
            self.spend(approved);
            let id = created.id();
            K::wrote(self.conn, &token, id, Some(created));
            let note = format!("created Altostrat {} {id}", K::NOUN);
            self.handle.activity.record(event::CREATED, note);
            let (obj, ctx) = (self.conn.obj, self.conn.ctx);
            self.own.record_id(obj, ctx, &self.conn.parent, Some(id)).await?;
            K::record_found(self.conn, self.handle, created).await?;
        }
        self.observed.remote = remote;
        self.refresh();
        Ok(())
    }

    /// Records our own lost create: in the record, then in status.
    async fn adopt(&mut self, found: K::Object) -> Result<()> {
        let (obj, ctx) = (self.conn.obj, self.conn.ctx);
        let id = found.id();
        self.own.record_id(obj, ctx, &self.conn.parent, Some(id)).await?;
        self.refresh();
        let note = format!(
            "adopted Altostrat {} {id}, created by this resource's claimed create",
            K::NOUN
        );
        self.handle.activity.record(event::ADOPTED, note);
        K::record_found(self.conn, self.handle, &found).await?;
        self.observed.remote = Remote::Found(found);
        Ok(())
    }

    /// Sends the update, unless it would repeat one Altostrat is still applying (nothing to do
    /// this round) or one whose values it normalises or reverts (`NotConverging`). An object
    /// gone since it was observed answers 404: it is `Gone` now.
    async fn update(
        &mut self,
        id: String,
        body: K::Update,
        fields: Vec<&'static str>,
        approved: Option<Vec<PlannedCall>>,
    ) -> Result<()> {
        let ctx = self.conn.ctx;
        let current = self.observed.remote.found();
        let before = current.map(K::fields);
        if let Some(current) = current
            && let Some(repeat) = ctx.observations.would_repeat(&id, &body, &before)
        {
            if repeat == Repeat::Normalised && K::busy(current) {
                // The answer to the last update is still being applied: final for this round.
                self.observed.updated = true;
                return Ok(());
            }
            let reverted = repeat == Repeat::Reverted;
            let fields = fields.join(", ");
            return Err(Error::NotConverging { fields, reverted });
        }
        let token = self.conn.token().await?;
        let updated = match <K as Managed>::update(self.conn, &token, &id, &body).await {
            Ok(updated) => updated,
            Err(e) if e.is_not_found() => {
                K::wrote(self.conn, &token, &id, None);
                self.observed.remote = Remote::Gone(id);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.spend(approved);
        K::wrote(self.conn, &token, &id, Some(&updated));
        ctx.observations
            .updated(&id, &body, &before, &K::fields(&updated));
        let note = self.conn.obj.update_note(&fields, &body);
        self.handle.activity.record(event::UPDATED, note);
        self.observed.remote = Remote::Found(updated);
        self.observed.updated = true;
        Ok(())
    }
}

/// Deletion: honours `deletionPolicy`, waits for dependents, hands the object over or deletes
/// only what is provably this resource's own, and treats "already gone" as done.
async fn cleanup<K: Managed, A: VpnApi>(obj: &K, ctx: &Context<A>, handle: &mut Handle<K>) -> Result<Action> {
    let own = Recorded::look(obj, ctx).await?;
    let managed = own.holding().mine_as(RecordRole::Manage);
    let parent = managed.and_then(K::record_parent).unwrap_or_default().to_owned();
    let mut conn = Conn::new(obj, ctx, parent);
    let policy = conn.deletion_policy(own.holding()).await;
    let mut deletion = Deletion {
        observed: cleanup_look(obj, &own, policy),
        conn,
        own: Some(own),
        successor: None,
        dependents: Vec::new(),
        started: Instant::now(),
    };
    for _ in 0..MAX_STEPS {
        let step = decide_cleanup(&deletion.observed);
        tracing::debug!(?step, "next cleanup step");
        if let Some(action) = deletion.act(step, handle).await? {
            return Ok(action);
        }
    }
    Err(Error::Unsettled(K::CONTROLLER))
}

/// What a deletion knows before it looks at Altostrat (the object's id and instance as the record
/// holds them: status proves nothing).
fn cleanup_look<K: Managed>(obj: &K, own: &Recorded, policy: DeletionPolicy) -> CleanupObserved {
    let managed = own.holding().mine_as(RecordRole::Manage);
    CleanupObserved {
        has_finalizer: has_finalizer(obj),
        management: obj.management_policy(),
        policy,
        may_exist: managed.and_then(K::record_parent).is_some(),
        dependents: None,
        handed_over_to: None,
        known_id: managed.and_then(K::record_id).cloned(),
        search: None,
        alike: None,
        teardown_started: obj.teardown_started(),
        delete_answer: None,
        still_exists: None,
    }
}

/// A deletion in progress.
struct Deletion<'a, K: Managed, A> {
    observed: CleanupObserved,
    conn: Conn<'a, K, A>,
    /// The record, until it is freed or handed over.
    own: Option<Recorded>,
    successor: Option<Holder>,
    /// The names of the resources that still reference this one, once counted.
    dependents: Vec<String>,
    started: Instant,
}

impl<K: Managed, A: VpnApi> Deletion<'_, K, A> {
    async fn act(&mut self, step: CleanupStep, handle: &mut Handle<K>) -> Result<Option<Action>> {
        let (obj, ctx) = (self.conn.obj, self.conn.ctx);
        match step {
            CleanupStep::Nothing => return Ok(Some(Action::await_change())),
            CleanupStep::Orphan | CleanupStep::Unmanaged(_) | CleanupStep::HandOver { .. } => {
                handle.activity.record(event::ORPHANED, left_in_place::<K>(&step));
                return self.release(handle).await.map(Some);
            }
            CleanupStep::CountDependents => {
                self.dependents = obj.dependents(ctx);
                self.observed.dependents = Some(self.dependents.len());
            }
            CleanupStep::WaitForDependents(_) => {
                return K::wait_for_dependents(handle, &self.dependents).await.map(Some);
            }
            CleanupStep::FindSuccessor(id) => {
                self.successor = obj.successor(ctx, &id).await?;
                let to = self.successor.as_ref().map(super::record::holder_name);
                self.observed.handed_over_to = Some(to);
            }
            CleanupStep::Search => self.search().await?,
            CleanupStep::LeaveAlone { id, verdict } => {
                let what = format!("Altostrat {} {id}", K::NOUN);
                let why = ownership::explain(&verdict, &what, "nothing to delete");
                let note = format!("{why}; not deleted");
                ctx.publish(obj, EventType::Warning, event::LEFT_ALONE, note)
                    .await;
                return self.release(handle).await.map(Some);
            }
            CleanupStep::Inspect(id) => self.inspect(&id).await?,
            CleanupStep::Delete(id) => self.delete(&id, handle).await?,
            CleanupStep::Confirm(id) => self.confirm(&id, handle).await?,
            CleanupStep::WaitForTeardown(id) => {
                return K::wait_for_teardown(&self.conn, handle, &id).await.map(Some);
            }
            CleanupStep::Refused { id, message } => {
                let what = format!("Altostrat {} {id}", K::NOUN);
                return Err(Error::DeleteRefused { what, message });
            }
            CleanupStep::Release => return self.release(handle).await.map(Some),
        }
        Ok(None)
    }

    /// Looks for an unrecorded create (the finalizer is held, so one was claimed and may have
    /// been applied): our own lost create if there is one, else the first one found, to be
    /// left alone with the reason.
    async fn search(&mut self) -> Result<()> {
        let token = self.conn.token().await?;
        let found = K::search(&self.conn, &token, self.started).await?;
        let claim = self
            .own
            .as_ref()
            .and_then(|own| own.holding().claim(K::record_id));
        let verdicts = decide::judge_all::<K>(claim, &found);
        let ours = verdicts.iter().position(|(_, v)| *v == Ownership::Ours);
        let pick = verdicts.into_iter().nth(ours.unwrap_or(0));
        self.observed.search = Some(pick.map(|(object, verdict)| (object.id().to_owned(), verdict)));
        Ok(())
    }

    /// Looks at the recorded object before deleting it (within the resync interval): gone
    /// already, or whether it is what the resource describes, as one this resource created or
    /// adopted always is.
    async fn inspect(&mut self, id: &str) -> Result<()> {
        let token = self.conn.token().await?;
        let look = Look::within(self.conn.ctx.settings.resync_interval, Urgency::Poll);
        match K::fetch(&self.conn, &token, id, look).await? {
            Some(found) => self.observed.alike = Some(K::unlike(self.conn.obj.spec(), &found).is_none()),
            None => self.observed.still_exists = Some(false),
        }
        Ok(())
    }

    /// Asks Altostrat to delete the object, unless it already said it is gone (a cleanup
    /// running on a copy older than its first cleanup's release).
    async fn delete(&mut self, id: &str, handle: &mut Handle<K>) -> Result<()> {
        let token = self.conn.token().await?;
        if K::known_gone(&self.conn, &token, id) {
            self.observed.still_exists = Some(false);
            return Ok(());
        }
        let answer = DeleteAnswer::read(K::delete(&self.conn, &token, id).await)?;
        if K::DELETE_IS_FINAL && answer == DeleteAnswer::Accepted {
            self.gone(&token, id, handle);
        }
        self.observed.delete_answer = Some(answer);
        Ok(())
    }

    /// Whether the object is still there; the deletion is recorded once it is gone.
    async fn confirm(&mut self, id: &str, handle: &mut Handle<K>) -> Result<()> {
        let token = self.conn.token().await?;
        let just_asked = self.observed.delete_answer.is_some();
        let found = K::fetch_now(&self.conn, &token, id, just_asked).await?;
        if found.is_none() {
            self.gone(&token, id, handle);
        }
        self.observed.still_exists = Some(found.is_some());
        Ok(())
    }

    fn gone(&mut self, token: &ApiToken, id: &str, handle: &mut Handle<K>) {
        K::wrote(&self.conn, token, id, None);
        let note = format!("deleted Altostrat {} {id}", K::NOUN);
        handle.activity.record(event::DELETED, note);
        self.observed.still_exists = Some(false);
    }

    /// Frees the record (or hands it to the resource that takes the object over), then
    /// releases the resource, then what it no longer needs: in this order, so a reconcile that
    /// has to come back (stale copy) can still read its token.
    async fn release(&mut self, handle: &mut Handle<K>) -> Result<Action> {
        let (obj, ctx) = (self.conn.obj, self.conn.ctx);
        if let Some(mut own) = self.own.take() {
            own.release(ctx, self.successor.take()).await?;
        }
        let action = handle.release(obj).await?;
        if action == Action::await_change() {
            let uid = obj.meta().uid.clone().unwrap_or_default();
            ctx.shared.note_user(&uid, None);
            obj.released(ctx).await?;
        }
        Ok(action)
    }
}

/// The note of a deletion that leaves the object in place.
fn left_in_place<K: Kind>(step: &CleanupStep) -> String {
    match step {
        CleanupStep::Unmanaged(policy) => {
            format!(
                "the Altostrat {} is left in place: managementPolicy is {policy:?}",
                K::NOUN
            )
        }
        CleanupStep::HandOver { id, to } => {
            format!("Altostrat {} {id} is managed by {to} now; left in place", K::NOUN)
        }
        _ => format!(
            "the Altostrat {} is left in place: deletionPolicy is Orphan",
            K::NOUN
        ),
    }
}
