//! The request budget of each Altostrat API token, and the order in which it is spent.
//!
//! Altostrat documents 60 requests/minute per token and counts them over any 60 s window. One
//! [`Budget`] serves every reconcile of the process; each token has its own lane, so a token
//! that is throttled never delays the reconciles of another one.
//!
//! **The window.** A lane is a token bucket of `burst` requests refilled at `rate − burst` per
//! minute, so any 60 s carry at most `burst + (rate − burst) = rate` requests, burst included.
//! A lane starts *empty*: a new process (or a new leader) cannot know what the process before
//! it sent in the last minute, and Altostrat still counts those calls.
//!
//! **The order.** Writes (POST, PUT, DELETE) go first. Reads are observations: a `Poll` is one
//! that pending work waits for (provisioning, a lost create), a `Drift` one only re-checks
//! converged objects. Observations together use at most `observe_share` of the rate; while
//! writes are waiting, drift checks wait for them, and polls still get one slot every
//! `1 / (rate × poll_share)`, so provisioning is detected during a flood of creates.
//!
//! **Fair shares.** Within each urgency, the namespaces whose callers wait take turns, one
//! request each (round-robin), so a namespace with a thousand creates delays another one's
//! create by one slot per busy namespace, not by its whole backlog. A *quiet* namespace, one
//! with no write of its own waiting or refused, has its polls owed at the observation share
//! rather than the poll share: another namespace's writes do not hold back the peer list its
//! own creates need. Observations stay capped by `observe_share`. A fifth of the burst is a
//! *reserve* only writes of namespaces that wrote less than it in the last minute may use
//! (`Schedule::reserve_ready_at`); such a write goes before a busy namespace's that waits
//! for its slot, so a few creates go at once while another namespace's backlog queues, and
//! the reserve refills as busy namespaces never spend it. A caller's namespace is
//! the task-local [`Caller`] its reconcile runs in; an observation that serves every
//! namespace of the token (the instance list) is charged to none of them ([`Caller::SHARED`])
//! and takes its own turn.
//!
//! **Never hold a worker.** A caller waits in a lane at most `max_queue_wait`; a longer wait is
//! refused as [`Throttled`] with the expected wait, so the reconcile requeues itself (and shows
//! the wait in its status) instead of occupying a worker all reconciles share. Refused callers
//! are told successive waits, one slot apart, so they come back in a queue and not as a herd.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::ApiToken;

/// What a request is for, which decides its place in its token's lane (most urgent first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Urgency {
    /// POST, PUT, DELETE: what the user asked for.
    Write,
    /// An observation pending work waits for: provisioning, a lost create, a missing object.
    Poll,
    /// A periodic re-check of objects that are converged.
    Drift,
}

tokio::task_local! {
    static READ_URGENCY: Urgency;
    static CALLER: Caller;
}

/// Whose share of a token's lane a request is paid from: the namespace of the resource whose
/// reconcile makes it. Set around a reconcile with [`Caller::scope`]; a request made outside
/// any scope, and an observation shared by the token's resources in every namespace, belong to
/// [`Caller::SHARED`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Caller(Arc<str>);

impl Caller {
    /// Requests of no single namespace; shown as `resource_namespace=""` in metrics.
    pub const SHARED: &'static str = "";

    pub fn namespace(namespace: &str) -> Self {
        Self(Arc::from(namespace))
    }

    pub fn shared() -> Self {
        Self::namespace(Self::SHARED)
    }

    /// Runs `fut` with its requests paid from this caller's share.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CALLER.scope(self, fut).await
    }

    /// The caller of the current task: [`Caller::SHARED`] outside any scope.
    pub fn current() -> Caller {
        CALLER
            .try_with(Caller::clone)
            .unwrap_or_else(|_| Caller::shared())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Urgency {
    const ALL: [Urgency; 3] = [Urgency::Write, Urgency::Poll, Urgency::Drift];

    fn index(self) -> usize {
        self as usize
    }

    /// Runs `fut` with its reads (GETs) sent at this urgency. Writes are always `Write`.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        READ_URGENCY.scope(self, fut).await
    }

    /// The urgency of a read made in the current task: `Poll` unless a caller said otherwise.
    pub fn of_read() -> Urgency {
        READ_URGENCY.try_with(|u| *u).unwrap_or(Urgency::Poll)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Poll => "poll",
            Self::Drift => "drift",
        }
    }
}

/// How each token's budget is spent.
#[derive(Clone, Debug)]
pub struct BudgetConfig {
    /// Requests per minute of a token that does not name its own rate (Altostrat: 60).
    pub rate_per_minute: u32,
    /// Requests that may go back to back; part of the rate, not on top of it.
    pub burst: u32,
    /// The most of the rate observations (polls and drift checks together) may use.
    pub observe_share: f64,
    /// The share polls keep while writes are waiting.
    pub poll_share: f64,
    /// The longest a caller waits in a lane before it is refused as [`Throttled`].
    pub max_queue_wait: Duration,
    /// The longest `Retry-After` honoured; longer asks are cut to this.
    pub max_retry_after: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            rate_per_minute: 60,
            burst: 5,
            observe_share: 0.25,
            poll_share: 0.05,
            max_queue_wait: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(600),
        }
    }
}

impl BudgetConfig {
    /// A budget nobody notices: for tests and tools that do not exercise the rate limit.
    pub fn unlimited() -> Self {
        Self {
            rate_per_minute: 6_000_000,
            burst: 1_000,
            observe_share: 1.0,
            poll_share: 1.0,
            ..Self::default()
        }
    }

    /// Requests per minute observations may use with a token of `rate` per minute.
    pub fn observe_rate(&self, rate: u32) -> f64 {
        f64::from(rate.max(2)) * self.observe_share.clamp(0.01, 1.0)
    }
}

/// The request was not sent: the token's budget is taken for longer than a caller may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    /// When a slot is expected to be free, from now.
    pub expected_wait: Duration,
}

/// The pacing of one token (pure: every method takes `now`).
#[derive(Debug)]
pub(crate) struct Schedule {
    rate: u32,
    /// Between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of `tat` a request may go: the burst.
    tolerance: Duration,
    /// The part of `tolerance` kept for quiet namespaces' writes: [`Schedule::reserve_writes`]
    /// intervals.
    reserve: Duration,
    reserve_writes: u32,
    /// Theoretical arrival time of the next request (GCRA).
    tat: Instant,
    observe_interval: Duration,
    observe_tat: Instant,
    poll_guarantee: Duration,
    last_observation: Instant,
}

impl Schedule {
    /// A schedule with an empty bucket: the first request goes one interval from `now`.
    pub fn new(config: &BudgetConfig, rate: u32, now: Instant) -> Self {
        let rate = rate.max(2);
        let burst = config.burst.clamp(1, rate / 2);
        let interval = Duration::from_secs(60) / (rate - burst);
        let tolerance = interval * (burst - 1);
        let reserve_writes = Self::reserve_of(burst);
        let per_minute =
            |share: f64| Duration::from_secs(60).div_f64(f64::from(rate) * share.clamp(0.01, 1.0));
        Self {
            rate,
            interval,
            tolerance,
            reserve: interval * reserve_writes,
            reserve_writes,
            tat: now + tolerance + interval,
            observe_interval: per_minute(config.observe_share),
            observe_tat: now,
            poll_guarantee: per_minute(config.poll_share),
            last_observation: now,
        }
    }

    /// How many of a burst's requests are kept for quiet namespaces: a fifth, so a busy lane
    /// keeps most of its burst, and at least one when there is a burst at all, so a quiet
    /// namespace's first write never waits for a turn.
    fn reserve_of(burst: u32) -> u32 {
        if burst < 2 { 0 } else { (burst / 5).max(1) }
    }

    /// The writes per minute a namespace may send from the reserve.
    pub fn reserve_writes(&self) -> u32 {
        self.reserve_writes
    }

    /// The earliest a request of `urgency` may go without touching the reserve.
    pub fn ready_at(&self, urgency: Urgency, now: Instant) -> Instant {
        let total = self
            .tat
            .checked_sub(self.tolerance - self.reserve)
            .unwrap_or(now)
            .max(now);
        match urgency {
            Urgency::Write => total,
            Urgency::Poll | Urgency::Drift => total.max(self.observe_tat),
        }
    }

    /// The earliest a write may go with the whole burst, reserve included, when `queued`
    /// writes go before it the same way.
    pub fn reserve_ready_at(&self, queued: u32, now: Instant) -> Instant {
        (self.tat + self.interval * queued)
            .checked_sub(self.tolerance)
            .unwrap_or(now)
            .max(now)
    }

    /// Spends one request of `urgency` at `now`.
    pub fn spend(&mut self, urgency: Urgency, now: Instant) {
        self.tat = self.tat.max(now) + self.interval;
        if urgency != Urgency::Write {
            self.observe_tat = self.observe_tat.max(now) + self.observe_interval;
            self.last_observation = now;
        }
    }

    /// Spends one poll of a quiet namespace at `now`: it counts against the observation
    /// share but does not reset the poll share, which busy namespaces keep for themselves.
    pub fn spend_quiet_poll(&mut self, now: Instant) {
        let last_observation = self.last_observation;
        self.spend(Urgency::Poll, now);
        self.last_observation = last_observation;
    }

    /// When a waiting poll of a busy namespace goes before waiting writes: the poll share.
    pub fn poll_owed_at(&self) -> Instant {
        self.last_observation + self.poll_guarantee
    }

    /// Between two polls of busy namespaces while writes are queued.
    pub fn poll_guarantee(&self) -> Duration {
        self.poll_guarantee
    }

    /// When a waiting poll of a quiet namespace goes before waiting writes: as soon as the
    /// observation share allows.
    pub fn quiet_poll_owed_at(&self) -> Instant {
        self.observe_tat
    }

    /// Altostrat asked to wait `pause`: nothing goes before it ends, and then not as a burst.
    pub fn pause(&mut self, pause: Duration, now: Instant) {
        let resume = now + pause;
        self.tat = self.tat.max(resume + self.tolerance);
        self.observe_tat = self.observe_tat.max(resume);
    }

    /// The pace of requests of `urgency` once the lane is busy.
    pub fn spacing(&self, urgency: Urgency) -> Duration {
        match urgency {
            Urgency::Write => self.interval,
            Urgency::Poll | Urgency::Drift => self.interval.max(self.observe_interval),
        }
    }

    /// The token's rate was changed (its Secret was edited): the new pace applies from the
    /// requests already spent.
    fn set_rate(&mut self, config: &BudgetConfig, rate: u32, now: Instant) {
        if self.rate == rate.max(2) {
            return;
        }
        let mut next = Schedule::new(config, rate, now);
        next.tat = self.tat;
        next.observe_tat = self.observe_tat;
        next.last_observation = self.last_observation;
        *self = next;
    }

    /// Whether the lane has been idle long enough that forgetting it loses nothing.
    fn is_idle(&self, now: Instant) -> bool {
        self.tat + Duration::from_secs(60) < now
    }
}

/// A caller waiting in a lane: its ticket and its own wake-up.
type Waiter = (u64, Arc<Notify>);

/// The callers of one urgency, taking turns by namespace (pure: no clock, no locks).
#[derive(Debug, Default)]
pub(crate) struct Turns {
    /// The namespaces with callers waiting, in the order of their next turn, each with its
    /// callers in arrival order.
    rotation: VecDeque<(Caller, VecDeque<Waiter>)>,
}

impl Turns {
    pub fn push(&mut self, caller: &Caller, waiter: Waiter) {
        match self.rotation.iter_mut().find(|(c, _)| c == caller) {
            Some((_, queue)) => queue.push_back(waiter),
            None => self
                .rotation
                .push_back((caller.clone(), VecDeque::from([waiter]))),
        }
    }

    /// The ticket whose turn it is.
    pub fn head(&self) -> Option<u64> {
        self.heads().next().map(|(_, t)| t)
    }

    /// Each namespace's first ticket, in the order of their turns.
    pub fn heads(&self) -> impl Iterator<Item = (&Caller, u64)> {
        self.rotation
            .iter()
            .filter_map(|(c, q)| q.front().map(|(t, _)| (c, *t)))
    }

    pub fn contains(&self, caller: &Caller) -> bool {
        self.rotation.iter().any(|(c, _)| c == caller)
    }

    pub fn len(&self) -> usize {
        self.rotation.iter().map(|(_, q)| q.len()).sum()
    }

    /// How many of `caller`'s callers wait.
    pub fn len_of(&self, caller: &Caller) -> usize {
        self.rotation
            .iter()
            .find(|(c, _)| c == caller)
            .map_or(0, |(_, q)| q.len())
    }

    /// How many go before a new caller of `caller`: its own namespace's waiting callers, and
    /// of every other namespace as many as take a turn before its own comes.
    pub fn ahead_of_new(&self, caller: &Caller) -> usize {
        self.ahead_of_new_among(caller, |_| true)
    }

    /// [`Turns::ahead_of_new`], counting only the other namespaces that `competes` says go
    /// before it.
    pub fn ahead_of_new_among(&self, caller: &Caller, competes: impl Fn(&Caller) -> bool) -> usize {
        let own = self
            .rotation
            .iter()
            .find(|(c, _)| c == caller)
            .map_or(0, |(_, q)| q.len());
        let others: usize = self
            .rotation
            .iter()
            .filter(|(c, _)| c != caller && competes(c))
            .map(|(_, q)| q.len().min(own + 1))
            .sum();
        own + others
    }

    /// `ticket`, the first of its namespace, was served: its namespace's next caller waits for
    /// the others' turns.
    pub fn served(&mut self, ticket: u64) {
        let Some(at) = self
            .rotation
            .iter()
            .position(|(_, q)| q.front().is_some_and(|(t, _)| *t == ticket))
        else {
            return;
        };
        if let Some((caller, mut queue)) = self.rotation.remove(at) {
            queue.pop_front();
            if !queue.is_empty() {
                self.rotation.push_back((caller, queue));
            }
        }
    }

    /// A caller left its place (refused, cancelled); a namespace with nobody left leaves
    /// the rotation.
    pub fn remove(&mut self, ticket: u64) {
        for (_, queue) in &mut self.rotation {
            queue.retain(|(t, _)| *t != ticket);
        }
        self.rotation.retain(|(_, q)| !q.is_empty());
    }

    fn wake_of(&self, ticket: u64) -> Option<&Arc<Notify>> {
        self.rotation
            .iter()
            .flat_map(|(_, q)| q.iter())
            .find(|(t, _)| *t == ticket)
            .map(|(_, wake)| wake)
    }
}

/// One token's schedule and the callers waiting for it.
#[derive(Debug)]
struct LaneState {
    schedule: Schedule,
    /// Per urgency, the callers taking turns by namespace.
    waiting: [Turns; 3],
    next_ticket: u64,
    /// Per urgency: until when refused callers of any namespace have been told to stay away.
    refused_until: [Instant; 3],
    /// Per urgency and namespace: until when its refused callers have been told to stay away.
    refused_by_caller: [HashMap<Caller, Instant>; 3],
    /// Per namespace, its last writes (at most the reserve's worth) within the last minute:
    /// who may still write from the reserve.
    recent_writes: HashMap<Caller, VecDeque<Instant>>,
}

/// How long a namespace's writes count against its use of the reserve.
const RESERVE_WINDOW: Duration = Duration::from_secs(60);

impl LaneState {
    /// Who goes next, and when.
    ///
    /// Writes are pending while one waits here or a refused one has been told to come back:
    /// until then drift checks wait, and polls go before them only when owed: a quiet
    /// namespace's at the observation share, any other's at the poll share.
    fn next(&self, now: Instant) -> Option<(Urgency, u64, Instant)> {
        let polls = &self.waiting[Urgency::Poll.index()];
        if let Some((_, ticket)) = polls
            .heads()
            .find(|(caller, _)| now >= self.poll_owed_at(caller, now))
        {
            return Some((Urgency::Poll, ticket, self.schedule.ready_at(Urgency::Poll, now)));
        }
        // The first in turn of the namespaces whose write may go soonest: a quiet one's write
        // goes from the reserve before a busy one's that waits for its slot.
        if let Some((at, ticket)) = self.waiting[Urgency::Write.index()]
            .heads()
            .map(|(caller, ticket)| (self.earliest(Urgency::Write, caller, now), ticket))
            .min_by_key(|(at, _)| *at)
        {
            return Some((Urgency::Write, ticket, at));
        }
        // The first in turn of those that may go soonest.
        if let Some((at, ticket)) = polls
            .heads()
            .map(|(caller, ticket)| (self.earliest(Urgency::Poll, caller, now), ticket))
            .min_by_key(|(at, _)| *at)
        {
            return Some((Urgency::Poll, ticket, at));
        }
        let ticket = self.waiting[Urgency::Drift.index()].head()?;
        let at = self.earliest(Urgency::Drift, &Caller::shared(), now);
        Some((Urgency::Drift, ticket, at))
    }

    /// A namespace with no write of its own waiting or told to come back. Its polls are not
    /// held back by another namespace's writes; the shared caller, which polls for every
    /// namespace, never is quiet.
    fn is_quiet(&self, caller: &Caller, now: Instant) -> bool {
        let write = Urgency::Write.index();
        caller.as_str() != Caller::SHARED
            && !self.waiting[write].contains(caller)
            && self.refused_by_caller[write]
                .get(caller)
                .is_none_or(|until| *until <= now)
    }

    /// When a poll of `caller` goes before pending writes.
    fn poll_owed_at(&self, caller: &Caller, now: Instant) -> Instant {
        if self.is_quiet(caller, now) {
            self.schedule.quiet_poll_owed_at()
        } else {
            self.schedule.poll_owed_at()
        }
    }

    /// Whether a write of `caller`, with `queued` of its own going before it, may use the
    /// reserve: one of a namespace that sent fewer than the reserve's writes in the last
    /// minute. The shared caller, which writes for every namespace, never may.
    fn may_use_reserve(&self, caller: &Caller, queued: usize, now: Instant) -> bool {
        let recent = self.recent_writes.get(caller).map_or(0, |writes| {
            writes.iter().filter(|t| **t + RESERVE_WINDOW > now).count()
        });
        caller.as_str() != Caller::SHARED
            && recent + queued < usize::try_from(self.schedule.reserve_writes()).unwrap_or(0)
    }

    /// Notes a write of `caller`, forgetting namespaces that have not written for a minute.
    fn record_write(&mut self, caller: &Caller, now: Instant) {
        let kept = usize::try_from(self.schedule.reserve_writes()).unwrap_or(0);
        if caller.as_str() == Caller::SHARED || kept == 0 {
            return;
        }
        self.recent_writes
            .retain(|c, writes| c == caller || writes.back().is_some_and(|t| *t + RESERVE_WINDOW > now));
        let writes = self.recent_writes.entry(caller.clone()).or_default();
        writes.push_back(now);
        while writes.len() > kept {
            writes.pop_front();
        }
    }

    /// The earliest a request of `urgency` from `caller`, first of its namespace, may go:
    /// in turn, or from the reserve.
    fn earliest(&self, urgency: Urgency, caller: &Caller, now: Instant) -> Instant {
        let in_turn = self.earliest_in_turn(urgency, caller, now);
        match urgency {
            Urgency::Write if self.may_use_reserve(caller, 0, now) => {
                self.schedule.reserve_ready_at(0, now).min(in_turn)
            }
            _ => in_turn,
        }
    }

    /// The earliest a request of `urgency` from `caller` may go without the reserve, pending
    /// writes considered.
    ///
    /// Queued writes hold a poll back until it is owed or they are sent; refused writes, until
    /// they come back or it is owed.
    fn earliest_in_turn(&self, urgency: Urgency, caller: &Caller, now: Instant) -> Instant {
        let writes_queued = self.waiting[Urgency::Write.index()].head().is_some();
        let writes_pending_until = self.refused_until[Urgency::Write.index()].max(now);
        let poll_owed_at = || self.poll_owed_at(caller, now).max(now);
        let after_writes = match urgency {
            Urgency::Write => now,
            Urgency::Poll if writes_queued => poll_owed_at().min(self.writes_drained_at(now)),
            Urgency::Poll => writes_pending_until.min(poll_owed_at()),
            Urgency::Drift => writes_pending_until,
        };
        self.schedule.ready_at(urgency, now).max(after_writes)
    }

    /// When the writes queued now are expected to have gone: a poll of a busy namespace
    /// waits for them or for its poll share, whichever comes first.
    fn writes_drained_at(&self, now: Instant) -> Instant {
        let queued = u32::try_from(self.waiting[Urgency::Write.index()].len()).unwrap_or(u32::MAX);
        self.schedule.ready_at(Urgency::Write, now) + self.schedule.spacing(Urgency::Write) * queued
    }

    /// How many go before a new caller of `urgency` from `caller` once it may go, and how far
    /// apart. An owed poll goes before queued writes, so a poll waits only for the polls
    /// whose turns come first: a quiet namespace's for other quiet namespaces' polls, one
    /// observation apart; a busy namespace's, while writes are queued, one poll share apart.
    /// Writes and drift checks wait for the more urgent ones and their own urgency's turns.
    fn queue_ahead(&self, urgency: Urgency, caller: &Caller, now: Instant) -> (usize, Duration) {
        let turns = &self.waiting[urgency.index()];
        let spacing = self.schedule.spacing(urgency);
        let writes_queued = self.waiting[Urgency::Write.index()].head().is_some();
        match urgency {
            Urgency::Poll if self.is_quiet(caller, now) => (
                turns.ahead_of_new_among(caller, |other| self.is_quiet(other, now)),
                spacing,
            ),
            Urgency::Poll if writes_queued => {
                let owed_first = self.schedule.poll_owed_at() <= self.writes_drained_at(now);
                let apart = if owed_first {
                    spacing.max(self.schedule.poll_guarantee())
                } else {
                    spacing
                };
                (turns.ahead_of_new(caller), apart)
            }
            _ => {
                let more_urgent: usize = Urgency::ALL[..urgency.index()]
                    .iter()
                    .map(|u| self.waiting[u.index()].len())
                    .sum();
                (more_urgent + turns.ahead_of_new(caller), spacing)
            }
        }
    }

    /// How long a new caller of `urgency` from `caller` would wait: its turn, or, for a write
    /// that may use the reserve, the reserve's slot after its own namespace's queued writes,
    /// whichever comes first.
    fn estimate(&self, urgency: Urgency, caller: &Caller, now: Instant) -> Duration {
        let (ahead, spacing) = self.queue_ahead(urgency, caller, now);
        let start = self.earliest_in_turn(urgency, caller, now) - now;
        let in_turn = start + spacing * u32::try_from(ahead).unwrap_or(u32::MAX);
        let own = self.waiting[urgency.index()].len_of(caller);
        if urgency == Urgency::Write && self.may_use_reserve(caller, own, now) {
            let queued = u32::try_from(own).unwrap_or(u32::MAX);
            in_turn.min(self.schedule.reserve_ready_at(queued, now) - now)
        } else {
            in_turn
        }
    }

    /// Refuses a caller: it is told to come back one of its namespace's turns after the last
    /// refused one of the same namespace, so a namespace's refusals do not push back another's.
    fn refuse(&mut self, urgency: Urgency, caller: &Caller, now: Instant) -> Throttled {
        let estimate = now + self.estimate(urgency, caller, now);
        let refused = &mut self.refused_by_caller[urgency.index()];
        refused.retain(|c, until| *until > now || c == caller);
        refused.entry(caller.clone()).or_insert(now);
        // Every namespace with refused callers takes its turn between two of this one's.
        let turn = self.schedule.spacing(urgency) * u32::try_from(refused.len()).unwrap_or(u32::MAX);
        let slot = refused.get_mut(caller).expect("inserted above");
        *slot = (*slot).max(estimate) + turn;
        let all = &mut self.refused_until[urgency.index()];
        *all = (*all).max(*slot);
        Throttled {
            expected_wait: *slot - now,
        }
    }

    fn remove(&mut self, urgency: Urgency, ticket: u64) {
        self.waiting[urgency.index()].remove(ticket);
    }

    /// Tells whoever goes next to look (a stored permit: a wake-up is never lost).
    fn wake_next(&self, now: Instant) {
        if let Some((urgency, ticket, _)) = self.next(now)
            && let Some(wake) = self.waiting[urgency.index()].wake_of(ticket)
        {
            wake.notify_one();
        }
    }
}

#[derive(Debug)]
struct Lane {
    state: Mutex<LaneState>,
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.state.lock().expect("budget lane lock poisoned")
    }
}

/// Every token's lane.
#[derive(Debug)]
pub struct Budget {
    config: BudgetConfig,
    lanes: Mutex<HashMap<ApiToken, Arc<Lane>>>,
}

enum Turn {
    Granted,
    At(Instant),
    NotMine,
}

impl Budget {
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            lanes: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// The rate of `token`: its own, or the default.
    pub fn rate_of(&self, token: &ApiToken) -> u32 {
        token.rate_per_minute().unwrap_or(self.config.rate_per_minute)
    }

    /// Forgets every lane, so each starts empty again: called when this process becomes the
    /// leader, since the previous leader's calls still count at Altostrat.
    pub fn start_empty(&self) {
        self.lanes.lock().expect("budget lock poisoned").clear();
    }

    fn lane(&self, token: &ApiToken, now: Instant) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().expect("budget lock poisoned");
        if lanes.len() > 256 {
            lanes.retain(|_, lane| Arc::strong_count(lane) > 1 || !lane.lock().schedule.is_idle(now));
        }
        let rate = self.rate_of(token);
        let lane = lanes.entry(token.clone()).or_insert_with(|| {
            Arc::new(Lane {
                state: Mutex::new(LaneState {
                    schedule: Schedule::new(&self.config, rate, now),
                    waiting: Default::default(),
                    next_ticket: 0,
                    refused_until: [now; 3],
                    refused_by_caller: Default::default(),
                    recent_writes: HashMap::new(),
                }),
            })
        });
        lane.lock().schedule.set_rate(&self.config, rate, now);
        lane.clone()
    }

    /// Waits for a slot of `urgency` on `token`'s lane, in `caller`'s turn; returns the time
    /// waited, or [`Throttled`] (nothing spent) when the wait would be longer than
    /// `max_queue_wait`.
    pub async fn acquire(
        &self,
        token: &ApiToken,
        urgency: Urgency,
        caller: &Caller,
    ) -> Result<Duration, Throttled> {
        let started = Instant::now();
        let lane = self.lane(token, started);
        let wake = Arc::new(Notify::new());
        let ticket = {
            let mut state = lane.lock();
            if state.estimate(urgency, caller, started) > self.config.max_queue_wait {
                return Err(state.refuse(urgency, caller, started));
            }
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting[urgency.index()].push(caller, (ticket, wake.clone()));
            ticket
        };
        let mut queued = Queued {
            lane: &lane,
            urgency,
            caller,
            ticket,
            done: false,
        };
        let deadline = started + self.config.max_queue_wait;
        loop {
            let now = Instant::now();
            let until = match queued.turn(now) {
                Turn::Granted => return Ok(now - started),
                Turn::At(at) if at <= deadline => at,
                Turn::At(_) | Turn::NotMine if now >= deadline => return Err(queued.give_up(now)),
                Turn::At(_) | Turn::NotMine => deadline,
            };
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = wake.notified() => {}
            }
        }
    }

    /// Altostrat answered 429: nobody using `token` sends before `retry_after` (capped) ends.
    /// Returns the pause applied.
    pub fn back_off(&self, token: &ApiToken, retry_after: Duration) -> Duration {
        let pause = retry_after.min(self.config.max_retry_after);
        let now = Instant::now();
        let lane = self.lane(token, now);
        let mut state = lane.lock();
        state.schedule.pause(pause, now);
        state.wake_next(now);
        pause
    }
}

/// A caller's place in a lane; leaving it (refused, cancelled) makes room for the others.
struct Queued<'a> {
    lane: &'a Lane,
    urgency: Urgency,
    caller: &'a Caller,
    ticket: u64,
    done: bool,
}

impl Queued<'_> {
    fn turn(&mut self, now: Instant) -> Turn {
        let mut state = self.lane.lock();
        match state.next(now) {
            Some((urgency, ticket, at)) if ticket == self.ticket && at <= now => {
                if urgency == Urgency::Poll && state.is_quiet(self.caller, now) {
                    state.schedule.spend_quiet_poll(now);
                } else {
                    state.schedule.spend(urgency, now);
                }
                if urgency == Urgency::Write {
                    state.record_write(self.caller, now);
                }
                state.waiting[urgency.index()].served(ticket);
                self.done = true;
                state.wake_next(now);
                Turn::Granted
            }
            Some((_, ticket, at)) if ticket == self.ticket => Turn::At(at),
            Some((_, _, at)) if at <= now => {
                // The turn moved to another caller (a poll became owed): wake it.
                state.wake_next(now);
                Turn::NotMine
            }
            _ => Turn::NotMine,
        }
    }

    fn give_up(&mut self, now: Instant) -> Throttled {
        let mut state = self.lane.lock();
        state.remove(self.urgency, self.ticket);
        self.done = true;
        let refused = state.refuse(self.urgency, self.caller, now);
        state.wake_next(now);
        refused
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.lane.lock();
            state.remove(self.urgency, self.ticket);
            state.wake_next(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;
