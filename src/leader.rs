//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one replica reconciles,
//! and the [`LeaderGate`] that fences every Altostrat request with the lease.
//!
//! The rules are client-go's (`k8s.io/client-go/tools/leaderelection`):
//! - **Expiry is judged on the local monotonic clock**, from the moment this process last saw
//!   the lease record change (holder, `renewTime`, duration, transitions or `resourceVersion`),
//!   never by comparing the holder's `renewTime` with the local wall clock. A holder whose clock
//!   is minutes off therefore neither keeps a dead lease alive nor loses a live one.
//! - The holder tries to renew every `retry_period`; each Lease request is bounded by a
//!   timeout, and a holder that has not renewed within `renew_deadline` (shorter than the lease
//!   duration) stops being leader.
//! - Every write carries the observed `resourceVersion`, so two candidates cannot both win.
//! - On shutdown the holder releases the lease (empty holder, 1 s duration).
//!
//! **Fencing.** Each successful renewal moves the [`LeaderGate`]'s monotonic deadline to
//! *start of that renewal + renew deadline*. A standby can only take over once it has seen no
//! change for a whole lease duration, counted from a moment after that renewal was sent, so
//! the gate closes at least `lease_duration - renew_deadline` before any takeover. The
//! Altostrat client checks the gate right before sending each request, and its request timeout
//! is kept below that margin (see [`ElectionTiming::max_request_timeout`]), so a request
//! started while the gate is open has also ended before a standby may start writing.
//!
//! **Why our own implementation.** `kube-lease-manager` and kube-rs' runtime work were
//! considered, but their compatibility with kube 5 / k8s-openapi's `jiff` time types cannot be
//! verified offline, and none of them exposes the monotonic "valid until" deadline the fence
//! needs. The protocol is small; its decisions are pure functions ([`observe`],
//! [`may_acquire`], [`renewal_outcome`]) tested with explicit `Instant`s below.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// A monotonic "this replica may write until" deadline shared with the Altostrat client.
///
/// Without leader election the gate is always open. With it, the gate starts closed, opens
/// at each successful renewal until `renewal start + renew deadline`, and closes for good when
/// leadership is lost.
#[derive(Debug)]
pub struct LeaderGate {
    origin: Instant,
    /// Nanoseconds after `origin` until which requests may be sent; `u64::MAX`: always open;
    /// 0: closed.
    until: AtomicU64,
}

impl LeaderGate {
    /// A gate that never closes (no leader election).
    pub fn always_open() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            until: AtomicU64::new(u64::MAX),
        })
    }

    /// A closed gate, opened by [`LeaderGate::open_until`].
    pub fn closed() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            until: AtomicU64::new(0),
        })
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Requests may be sent until `deadline` (monotonic).
    pub fn open_until(&self, deadline: Instant) {
        self.until.store(self.nanos(deadline).max(1), Ordering::SeqCst);
    }

    /// No request may be sent any more.
    pub fn close(&self) {
        self.until.store(0, Ordering::SeqCst);
    }

    /// Whether a request may be sent at `now`.
    pub fn is_open_at(&self, now: Instant) -> bool {
        let until = self.until.load(Ordering::SeqCst);
        until == u64::MAX || (until != 0 && self.nanos(now) < until)
    }

    /// Whether a request may be sent now.
    pub fn is_open(&self) -> bool {
        self.is_open_at(Instant::now())
    }
}

/// Durations of the election (client-go's `LeaseDuration`, `RenewDeadline`, `RetryPeriod`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionTiming {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl ElectionTiming {
    /// client-go's proportions (15 s / 10 s / 2 s) for any lease duration, unless given.
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Option<Duration>,
        retry_period: Option<Duration>,
    ) -> Result<Self, String> {
        let timing = Self {
            lease_duration,
            renew_deadline: renew_deadline.unwrap_or(lease_duration * 2 / 3),
            retry_period: retry_period.unwrap_or(lease_duration * 2 / 15),
        };
        if timing.lease_duration < Duration::from_secs(1) {
            return Err("the leader lease duration must be at least 1s".into());
        }
        if timing.renew_deadline >= timing.lease_duration {
            return Err(format!(
                "the leader renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                timing.renew_deadline, timing.lease_duration
            ));
        }
        if timing.retry_period.is_zero() || timing.retry_period >= timing.renew_deadline {
            return Err(format!(
                "the leader retry period ({:?}) must be positive and shorter than the renew deadline ({:?})",
                timing.retry_period, timing.renew_deadline
            ));
        }
        Ok(timing)
    }

    /// The longest Altostrat request timeout that still ends every request before a standby
    /// may take over: four fifths of `lease_duration - renew_deadline` (a fifth is kept for
    /// scheduling delays between the gate check and the send).
    pub fn max_request_timeout(&self) -> Duration {
        (self.lease_duration - self.renew_deadline) * 4 / 5
    }
}

/// The parts of a Lease whose change proves the holder alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub holder: String,
    pub lease_duration_seconds: Option<i32>,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub transitions: Option<i32>,
    pub resource_version: Option<String>,
}

impl Record {
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds,
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions,
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// A record and the local monotonic time at which it was first seen in this form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub record: Record,
    pub observed_at: Instant,
}

/// Pure: the observation after reading `record` at `now`. The time moves only when the
/// record changed; an unchanged record keeps the time it was first seen.
pub fn observe(previous: Option<&Observation>, record: Record, now: Instant) -> Observation {
    match previous {
        Some(prev) if prev.record == record => prev.clone(),
        _ => Observation {
            record,
            observed_at: now,
        },
    }
}

/// Pure: whether `identity` may write itself into the lease at `now` (monotonic). The holder's
/// `renewTime` is never compared with the local clock: a lease expires when this process has
/// seen no change of it for its whole duration.
pub fn may_acquire(observation: &Observation, identity: &str, now: Instant) -> bool {
    let record = &observation.record;
    if record.holder.is_empty() || record.holder == identity {
        return true;
    }
    let secs = u64::try_from(record.lease_duration_seconds.unwrap_or(15).max(1)).unwrap_or(15);
    now >= observation.observed_at + Duration::from_secs(secs)
}

/// What the renew loop does after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum RenewalOutcome {
    /// Renewed: the gate stays open until the given deadline.
    Renewed { gate_until: Instant },
    /// Not renewed, but the renew deadline has not passed: try again after the retry period.
    Retry,
    /// Leadership is lost (taken over, or not renewed within the renew deadline).
    Lost,
}

/// Pure: the renew loop's decision. `attempt_started` is when the renewal's GET was sent;
/// `last_renewal` when the last successful renewal started.
pub fn renewal_outcome(
    attempt: Option<&Attempt>,
    attempt_started: Instant,
    last_renewal: Instant,
    now: Instant,
    renew_deadline: Duration,
) -> RenewalOutcome {
    match attempt {
        Some(Attempt::Held) => RenewalOutcome::Renewed {
            gate_until: attempt_started + renew_deadline,
        },
        Some(Attempt::HeldByOther(_)) => RenewalOutcome::Lost,
        None if now >= last_renewal + renew_deadline => RenewalOutcome::Lost,
        None => RenewalOutcome::Retry,
    }
}

/// The lease loop's progress on the monotonic clock: the loop beats after every round; it is
/// stuck (and `/healthz` fails) when it has not beaten within `bound`.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds after `origin` of the last beat.
    last: AtomicU64,
    bound: Duration,
}

impl Heartbeat {
    /// A heartbeat that counts as beaten now.
    pub fn new(bound: Duration) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            last: AtomicU64::new(0),
            bound,
        })
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    pub fn beat(&self) {
        self.last.store(self.millis(Instant::now()), Ordering::Relaxed);
    }

    /// How long ago the last beat was, at `now`, if longer than the bound.
    pub fn stuck_at(&self, now: Instant) -> Option<Duration> {
        let since = Duration::from_millis(self.millis(now).saturating_sub(self.last.load(Ordering::Relaxed)));
        (since > self.bound).then_some(since)
    }
}

/// Outcome of one attempt to take or keep the lease.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Held,
    HeldByOther(String),
}

#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: ElectionTiming,
    gate: Arc<LeaderGate>,
    observed: Arc<std::sync::Mutex<Option<Observation>>>,
    heartbeat: Option<Arc<Heartbeat>>,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: ElectionTiming,
        gate: Arc<LeaderGate>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            gate,
            observed: Arc::default(),
            heartbeat: None,
        }
    }

    /// Beats `heartbeat` after every attempt, so liveness sees a stuck lease loop.
    pub fn with_heartbeat(mut self, heartbeat: Arc<Heartbeat>) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timing(&self) -> ElectionTiming {
        self.timing
    }

    fn beat(&self) {
        if let Some(h) = &self.heartbeat {
            h.beat();
        }
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.timing.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn remember(&self, lease: &Lease, now: Instant) -> Observation {
        let mut observed = self.observed.lock().expect("lease observation lock");
        let next = observe(observed.as_ref(), Record::of(lease), now);
        *observed = Some(next.clone());
        next
    }

    /// One acquire-or-renew round trip, bounded by `timeout` as a whole. A conflict (someone
    /// else wrote first) is an error: the caller retries and sees the new record.
    pub async fn try_acquire_or_renew(&self, timeout: Duration) -> Result<Attempt, String> {
        match tokio::time::timeout(timeout, self.round_trip()).await {
            Ok(result) => result,
            Err(_) => Err(format!("lease request timed out after {timeout:?}")),
        }
    }

    async fn round_trip(&self) -> Result<Attempt, String> {
        let lease = self.api.get_opt(&self.name).await.map_err(|e| e.to_string())?;
        let Some(mut lease) = lease else {
            let now = Timestamp::now();
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.seconds()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            let created = self
                .api
                .create(&PostParams::default(), &lease)
                .await
                .map_err(|e| e.to_string())?;
            self.remember(&created, Instant::now());
            return Ok(Attempt::Held);
        };
        let observation = self.remember(&lease, Instant::now());
        if !may_acquire(&observation, &self.identity, Instant::now()) {
            return Ok(Attempt::HeldByOther(observation.record.holder));
        }
        let spec = lease.spec.clone().unwrap_or_default();
        let taking_over = spec.holder_identity.as_deref() != Some(self.identity.as_str());
        let now = Timestamp::now();
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.seconds()),
            acquire_time: if taking_over {
                Some(MicroTime(now))
            } else {
                spec.acquire_time.clone()
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(taking_over)),
            ..spec
        });
        // `replace` sends the observed resourceVersion: a concurrent writer makes this a 409.
        let written = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| e.to_string())?;
        self.remember(&written, Instant::now());
        Ok(Attempt::Held)
    }

    /// Blocks until this replica holds the lease; opens the gate and returns when the winning
    /// attempt started (the base of the renew deadline).
    pub async fn acquire(&self) -> Instant {
        loop {
            let started = Instant::now();
            match self.try_acquire_or_renew(self.timing.renew_deadline).await {
                Ok(Attempt::Held) => {
                    self.gate.open_until(started + self.timing.renew_deadline);
                    self.beat();
                    return started;
                }
                Ok(Attempt::HeldByOther(holder)) => {
                    tracing::debug!(%holder, "leader lease held by another replica")
                }
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            self.beat();
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews every retry period until the lease is taken over or was not renewed within the
    /// renew deadline; then closes the gate and returns (the caller must stop reconciling).
    pub async fn keep_renewing(&self, mut last_renewal: Instant) {
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            let started = Instant::now();
            let remaining = (last_renewal + self.timing.renew_deadline).saturating_duration_since(started);
            let attempt = if remaining.is_zero() {
                Err("renew deadline passed".to_owned())
            } else {
                self.try_acquire_or_renew(remaining).await
            };
            if let Err(e) = &attempt {
                tracing::warn!(error = %e, "failed to renew leader lease");
            }
            match renewal_outcome(
                attempt.as_ref().ok(),
                started,
                last_renewal,
                Instant::now(),
                self.timing.renew_deadline,
            ) {
                RenewalOutcome::Renewed { gate_until } => {
                    self.gate.open_until(gate_until);
                    last_renewal = started;
                }
                RenewalOutcome::Retry => {}
                RenewalOutcome::Lost => {
                    self.gate.close();
                    match attempt {
                        Ok(Attempt::HeldByOther(holder)) => {
                            tracing::error!(%holder, "leader lease was taken over")
                        }
                        _ => tracing::error!(
                            renew_deadline = ?self.timing.renew_deadline,
                            "leader lease not renewed within the renew deadline"
                        ),
                    }
                    return;
                }
            }
            self.beat();
        }
    }

    /// Closes the gate and gives the lease up so a standby can take over without waiting for
    /// expiry. Bounded by the renew deadline.
    pub async fn release(&self) {
        self.gate.close();
        let release = async {
            let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
                return;
            };
            let Some(spec) = lease.spec.as_mut() else { return };
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return;
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            if let Err(e) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
                tracing::warn!(error = %e, "failed to release leader lease");
            } else {
                tracing::info!("released leader lease");
            }
        };
        if tokio::time::timeout(self.timing.renew_deadline, release)
            .await
            .is_err()
        {
            tracing::warn!("releasing the leader lease timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_stuck_only_past_its_bound() {
        let beat = Heartbeat::new(Duration::from_secs(30));
        let now = Instant::now();
        assert_eq!(beat.stuck_at(now), None);
        assert_eq!(beat.stuck_at(now + Duration::from_secs(29)), None);
        assert!(beat.stuck_at(now + Duration::from_secs(31)).is_some());
        beat.beat();
        assert_eq!(beat.stuck_at(Instant::now() + Duration::from_secs(29)), None);
    }

    const LEASE: Duration = Duration::from_secs(15);

    fn record(holder: &str, renewed: Timestamp, rv: &str) -> Record {
        Record {
            holder: holder.into(),
            lease_duration_seconds: Some(15),
            acquire_time: None,
            renew_time: Some(renewed),
            transitions: Some(0),
            resource_version: Some(rv.into()),
        }
    }

    fn wall(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn an_unchanged_record_keeps_the_time_it_was_first_seen() {
        let t0 = Instant::now();
        let first = observe(None, record("a", wall(1_000), "1"), t0);
        let same = observe(Some(&first), record("a", wall(1_000), "1"), t0 + LEASE);
        assert_eq!(same.observed_at, t0);
        let renewed = observe(Some(&same), record("a", wall(1_002), "2"), t0 + LEASE);
        assert_eq!(renewed.observed_at, t0 + LEASE);
        let only_rv = observe(Some(&renewed), record("a", wall(1_002), "3"), t0 + LEASE * 2);
        assert_eq!(
            only_rv.observed_at,
            t0 + LEASE * 2,
            "a new resourceVersion is a change"
        );
    }

    #[test]
    fn a_live_lease_of_another_holder_cannot_be_taken_and_own_or_released_leases_can() {
        let t0 = Instant::now();
        let seen = observe(None, record("a", wall(1_000), "1"), t0);
        assert!(!may_acquire(&seen, "b", t0 + LEASE - Duration::from_millis(1)));
        assert!(may_acquire(&seen, "b", t0 + LEASE));
        assert!(may_acquire(&seen, "a", t0), "own lease is renewable");
        let released = observe(None, record("", wall(1_000), "2"), t0);
        assert!(may_acquire(&released, "b", t0));
    }

    /// Renew times minutes in the future or the past (a holder with a skewed clock): only the
    /// changes this process observes count.
    #[test]
    fn a_skewed_holder_clock_neither_keeps_a_dead_lease_nor_loses_a_live_one() {
        for skew in [-600_i64, 600] {
            let t0 = Instant::now();
            // Dead holder: its last renewTime is minutes off, and the record never changes.
            let mut seen = observe(None, record("a", wall(1_000 + skew), "7"), t0);
            for step in 1..=15 {
                let now = t0 + Duration::from_secs(step);
                seen = observe(Some(&seen), record("a", wall(1_000 + skew), "7"), now);
                assert_eq!(
                    may_acquire(&seen, "b", now),
                    step >= 15,
                    "skew {skew}s, {step}s without change"
                );
            }
            // Live holder: renews every 2 s with the same skewed clock; never stealable.
            let mut seen = observe(None, record("a", wall(1_000 + skew), "1"), t0);
            for step in 1..=60_u64 {
                let now = t0 + Duration::from_secs(step);
                let renewed = i64::try_from(step / 2).unwrap();
                let rv = format!("{}", step / 2 + 1);
                seen = observe(Some(&seen), record("a", wall(1_000 + skew + renewed), &rv), now);
                assert!(!may_acquire(&seen, "b", now), "skew {skew}s, at {step}s");
            }
        }
    }

    #[test]
    fn a_leader_that_cannot_renew_within_the_renew_deadline_stops_leading() {
        let deadline = Duration::from_secs(10);
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(4);
        assert_eq!(
            renewal_outcome(
                Some(&Attempt::Held),
                later,
                t0,
                later + Duration::from_secs(1),
                deadline
            ),
            RenewalOutcome::Renewed {
                gate_until: later + deadline
            },
            "the gate runs from when the renewal was sent, not when it was answered"
        );
        assert_eq!(
            renewal_outcome(None, later, t0, t0 + Duration::from_secs(9), deadline),
            RenewalOutcome::Retry
        );
        assert_eq!(
            renewal_outcome(None, later, t0, t0 + deadline, deadline),
            RenewalOutcome::Lost
        );
        assert_eq!(
            renewal_outcome(
                Some(&Attempt::HeldByOther("b".into())),
                later,
                t0,
                later,
                deadline
            ),
            RenewalOutcome::Lost
        );
    }

    #[test]
    fn the_gate_is_open_only_until_its_deadline_and_closes_for_good() {
        let open = LeaderGate::always_open();
        assert!(open.is_open_at(Instant::now() + Duration::from_secs(86_400)));
        let gate = LeaderGate::closed();
        let now = Instant::now();
        assert!(!gate.is_open_at(now));
        gate.open_until(now + Duration::from_secs(10));
        assert!(gate.is_open_at(now + Duration::from_secs(9)));
        assert!(!gate.is_open_at(now + Duration::from_secs(10)));
        gate.close();
        assert!(!gate.is_open_at(now));
    }

    #[test]
    fn timing_follows_client_go_and_bounds_the_request_timeout() {
        let t = ElectionTiming::new(Duration::from_secs(15), None, None).unwrap();
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        assert_eq!(t.max_request_timeout(), Duration::from_secs(4));
        assert!(t.max_request_timeout() < t.lease_duration - t.renew_deadline);
        assert!(ElectionTiming::new(Duration::from_secs(15), Some(Duration::from_secs(15)), None).is_err());
        assert!(
            ElectionTiming::new(
                Duration::from_secs(15),
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(10))
            )
            .is_err()
        );
    }
}
