//! Retries, rate limiting and `Retry-After` around any [`VpnApi`], so reconcilers never
//! handle them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::model::{
    ClientConfiguration, Instance, InstanceCreate, InstanceUpdate, Peer, PeerCreate, PeerType, PeerUpdate,
    RegionResponse,
};
use super::{ApiError, ApiResult, ApiToken, Budget, Caller, Endpoint, Urgency, VpnApi};

/// Told what [`Resilient`] does, e.g. to export metrics. Implementations must be cheap: they
/// run inline on every request.
pub trait RequestObserver: Send + Sync + std::fmt::Debug + 'static {
    /// One attempt finished with the HTTP status the server answered (`None`: no answer),
    /// `elapsed` after it was sent (rate-limiter waits and retry delays excluded).
    fn request_finished(&self, endpoint: Endpoint, status: Option<u16>, elapsed: Duration);
    /// A failed attempt is about to be repeated.
    fn retrying(&self, endpoint: Endpoint);
    /// The client-side budget let an attempt of `caller` go after `waited` (zero: at once).
    fn rate_limit_waited(&self, caller: &Caller, waited: Duration);
    /// The budget refused an attempt of `urgency`: its wait would have been too long.
    fn throttled(&self, urgency: Urgency);
}

/// What one answer says of the token the request was sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenAnswer {
    /// A success: Altostrat took the token.
    Accepted,
    /// 401, or a 403 that is not a quota refusal: Altostrat refused the token.
    Refused { status: u16 },
}

impl TokenAnswer {
    /// What `result` of a call to `endpoint` says of its token; `None` when it says nothing
    /// (no answer, a 5xx, a 429, any other refusal, or a call the budget or the fence held).
    pub fn of<T>(endpoint: Endpoint, result: &ApiResult<T>) -> Option<Self> {
        // Sent with a client peer's share token, not the one it is paid from.
        if endpoint == Endpoint::GetClientConfiguration {
            return None;
        }
        match result {
            Ok(_) | Err(ApiError::Decode { .. }) => Some(Self::Accepted),
            Err(ApiError::Unauthorized { .. }) => Some(Self::Refused { status: 401 }),
            Err(ApiError::Forbidden { .. }) => Some(Self::Refused { status: 403 }),
            Err(_) => None,
        }
    }
}

/// Told what each answer says of the token it was sent with (see [`TokenAnswer`]), so that the
/// calls made anyway tell whether Altostrat accepts a token. Runs inline: it must be cheap.
pub trait TokenObserver: Send + Sync + std::fmt::Debug + 'static {
    fn token_answered(&self, token: &ApiToken, answer: TokenAnswer);
}

/// When and how long to wait before repeating a failed request.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Total attempts per call, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A 429 asking to wait longer than this is returned to the caller (whose requeue honours
    /// it) instead of holding a reconcile worker.
    pub max_inline_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_inline_retry_after: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Pure decision: `None` = give up and return `err`; `Some(d)` = sleep `d` (on top of any
    /// rate-limiter wait) and try again. `jitter` is a sample in `[0, 1)`.
    pub fn retry_delay(
        &self,
        endpoint: Endpoint,
        err: &ApiError,
        attempt: u32,
        jitter: f64,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        match err {
            // The request was refused before processing, so even a POST is safe to repeat.
            ApiError::RateLimited { retry_after, .. } => {
                let wait = retry_after.unwrap_or(Duration::from_secs(1));
                // The budget enforces the wait for every caller of the token.
                (wait <= self.max_inline_retry_after).then_some(Duration::ZERO)
            }
            ApiError::Server { .. } | ApiError::Transport { .. } if endpoint.is_idempotent() => {
                let exp = self.base_delay.saturating_mul(1 << (attempt - 1).min(16));
                let capped = exp.min(self.max_delay);
                // "Equal jitter": half fixed, half random, so retries of many callers spread out.
                Some(capped / 2 + capped.mul_f64(jitter.clamp(0.0, 1.0) / 2.0))
            }
            _ => None,
        }
    }
}

/// The production decorator: budget → call → classify → maybe retry.
#[derive(Debug)]
pub struct Resilient<A> {
    inner: A,
    budget: Arc<Budget>,
    policy: RetryPolicy,
    observer: Arc<dyn RequestObserver>,
    /// Leader fencing: no request is sent while the gate is closed.
    gate: Arc<crate::leader::LeaderGate>,
    tokens: Option<Arc<dyn TokenObserver>>,
}

impl<A: VpnApi> Resilient<A> {
    pub fn new(
        inner: A,
        budget: Arc<Budget>,
        policy: RetryPolicy,
        observer: Arc<dyn RequestObserver>,
    ) -> Self {
        Self {
            inner,
            budget,
            policy,
            observer,
            gate: crate::leader::LeaderGate::always_open(),
            tokens: None,
        }
    }

    /// Tells `tokens` what every answer says of the token it was sent with.
    pub fn reporting_tokens_to(mut self, tokens: Arc<dyn TokenObserver>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Sends requests only while `gate` is open (leader election); a fenced request fails at
    /// once, unsent and not retried.
    pub fn fenced_by(mut self, gate: Arc<crate::leader::LeaderGate>) -> Self {
        self.gate = gate;
        self
    }

    async fn call<T, F, Fut>(&self, endpoint: Endpoint, token: &ApiToken, mut op: F) -> ApiResult<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = ApiResult<T>> + Send,
        T: Send,
    {
        let urgency = urgency_of(endpoint);
        let mut attempt = 1;
        loop {
            self.wait_for_budget(endpoint, token, urgency).await?;
            // Checked after the budget's wait, right before sending.
            if !self.gate.is_open() {
                return Err(ApiError::Fenced { endpoint });
            }
            let sent = Instant::now();
            let result = op().await;
            self.observer
                .request_finished(endpoint, answered_status(&result), sent.elapsed());
            if let Some(tokens) = &self.tokens
                && let Some(answer) = TokenAnswer::of(endpoint, &result)
            {
                tokens.token_answered(token, answer);
            }
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if let ApiError::RateLimited { retry_after, .. } = &err {
                // Everyone using the token waits, not only this caller.
                self.budget
                    .back_off(token, retry_after.unwrap_or(Duration::from_secs(1)));
            }
            let Some(delay) = self.policy.retry_delay(endpoint, &err, attempt, fastrand::f64()) else {
                return Err(err);
            };
            tracing::debug!(%endpoint, attempt, ?delay, error = %err, "retrying Altostrat request");
            self.observer.retrying(endpoint);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            attempt += 1;
        }
    }

    async fn wait_for_budget(&self, endpoint: Endpoint, token: &ApiToken, urgency: Urgency) -> ApiResult<()> {
        let caller = Caller::current();
        match self.budget.acquire(token, urgency, &caller).await {
            Ok(waited) => {
                self.observer.rate_limit_waited(&caller, waited);
                Ok(())
            }
            Err(throttled) => {
                self.observer.throttled(urgency);
                Err(ApiError::Throttled {
                    endpoint,
                    expected_wait: throttled.expected_wait,
                })
            }
        }
    }
}

/// Writes are always `Write`, and so is a profile download: it is not observation but what a
/// user asked to be delivered, made once per change (never recurring), so it is not squeezed
/// into the observation share. A read is as urgent as its caller said (see [`Urgency::scope`]).
fn urgency_of(endpoint: Endpoint) -> Urgency {
    match endpoint {
        Endpoint::CreateInstance
        | Endpoint::UpdateInstance
        | Endpoint::DeleteInstance
        | Endpoint::CreatePeer
        | Endpoint::UpdatePeer
        | Endpoint::DeletePeer
        | Endpoint::GetClientConfiguration => Urgency::Write,
        _ => Urgency::of_read(),
    }
}

/// The status the server answered with, as far as the class goes: a body that could not be
/// decoded still came with a success status.
fn answered_status<T>(result: &ApiResult<T>) -> Option<u16> {
    match result {
        Ok(_) | Err(ApiError::Decode { .. }) => Some(200),
        Err(e) => e.status(),
    }
}

impl<A: VpnApi> VpnApi for Resilient<A> {
    async fn list_regions(&self, token: &ApiToken) -> ApiResult<RegionResponse> {
        self.call(Endpoint::ListRegions, token, || self.inner.list_regions(token))
            .await
    }

    async fn list_instances(&self, token: &ApiToken) -> ApiResult<Vec<Instance>> {
        self.call(Endpoint::ListInstances, token, || {
            self.inner.list_instances(token)
        })
        .await
    }

    async fn get_instance(&self, token: &ApiToken, id: &str) -> ApiResult<Instance> {
        self.call(Endpoint::GetInstance, token, || {
            self.inner.get_instance(token, id)
        })
        .await
    }

    async fn create_instance(&self, token: &ApiToken, body: &InstanceCreate) -> ApiResult<Instance> {
        self.call(Endpoint::CreateInstance, token, || {
            self.inner.create_instance(token, body)
        })
        .await
    }

    async fn update_instance(
        &self,
        token: &ApiToken,
        id: &str,
        body: &InstanceUpdate,
    ) -> ApiResult<Instance> {
        self.call(Endpoint::UpdateInstance, token, || {
            self.inner.update_instance(token, id, body)
        })
        .await
    }

    async fn delete_instance(&self, token: &ApiToken, id: &str) -> ApiResult<()> {
        self.call(Endpoint::DeleteInstance, token, || {
            self.inner.delete_instance(token, id)
        })
        .await
    }

    async fn list_peers(
        &self,
        token: &ApiToken,
        instance_id: &str,
        kind: Option<PeerType>,
    ) -> ApiResult<Vec<Peer>> {
        self.call(Endpoint::ListPeers, token, || {
            self.inner.list_peers(token, instance_id, kind)
        })
        .await
    }

    async fn get_peer(&self, token: &ApiToken, instance_id: &str, peer_id: &str) -> ApiResult<Peer> {
        self.call(Endpoint::GetPeer, token, || {
            self.inner.get_peer(token, instance_id, peer_id)
        })
        .await
    }

    async fn create_peer(&self, token: &ApiToken, instance_id: &str, body: &PeerCreate) -> ApiResult<Peer> {
        self.call(Endpoint::CreatePeer, token, || {
            self.inner.create_peer(token, instance_id, body)
        })
        .await
    }

    async fn update_peer(
        &self,
        token: &ApiToken,
        instance_id: &str,
        peer_id: &str,
        body: &PeerUpdate,
    ) -> ApiResult<Peer> {
        self.call(Endpoint::UpdatePeer, token, || {
            self.inner.update_peer(token, instance_id, peer_id, body)
        })
        .await
    }

    async fn delete_peer(&self, token: &ApiToken, instance_id: &str, peer_id: &str) -> ApiResult<()> {
        self.call(Endpoint::DeletePeer, token, || {
            self.inner.delete_peer(token, instance_id, peer_id)
        })
        .await
    }
    async fn client_configuration(
        &self,
        token: &ApiToken,
        share: &ApiToken,
    ) -> ApiResult<ClientConfiguration> {
        self.call(Endpoint::GetClientConfiguration, token, || {
            self.inner.client_configuration(token, share)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(endpoint: Endpoint) -> ApiError {
        ApiError::Server {
            endpoint,
            status: 503,
            message: "x".into(),
        }
    }

    #[test]
    fn idempotent_calls_back_off_exponentially_with_bounded_jitter() {
        let policy = RetryPolicy::default();
        let e = Endpoint::UpdateInstance;
        let d1 = policy.retry_delay(e, &server_error(e), 1, 0.0).unwrap();
        let d2 = policy.retry_delay(e, &server_error(e), 2, 0.999).unwrap();
        assert_eq!(d1, Duration::from_millis(100));
        assert!(d2 > Duration::from_millis(390) && d2 < Duration::from_millis(400));
        assert_eq!(
            policy.retry_delay(e, &server_error(e), 4, 0.5),
            None,
            "attempts are bounded"
        );
    }

    #[test]
    fn posts_are_never_retried_after_a_possibly_applied_failure() {
        let policy = RetryPolicy::default();
        let e = Endpoint::CreateInstance;
        assert_eq!(policy.retry_delay(e, &server_error(e), 1, 0.5), None);
        let transport = ApiError::Transport {
            endpoint: e,
            message: "timed out".into(),
        };
        assert_eq!(policy.retry_delay(e, &transport, 1, 0.5), None);
    }

    #[test]
    fn rate_limited_requests_retry_through_the_limiter_unless_the_wait_is_long() {
        let policy = RetryPolicy::default();
        let e = Endpoint::CreateInstance;
        let short = ApiError::RateLimited {
            endpoint: e,
            retry_after: Some(Duration::from_secs(2)),
        };
        let long = ApiError::RateLimited {
            endpoint: e,
            retry_after: Some(Duration::from_secs(60)),
        };
        assert_eq!(policy.retry_delay(e, &short, 1, 0.5), Some(Duration::ZERO));
        assert_eq!(policy.retry_delay(e, &long, 1, 0.5), None);
    }

    #[test]
    fn client_errors_are_not_retried() {
        let policy = RetryPolicy::default();
        let e = Endpoint::GetInstance;
        let invalid = ApiError::Invalid {
            endpoint: e,
            status: 400,
            code: "c".into(),
            message: "m".into(),
        };
        assert_eq!(policy.retry_delay(e, &invalid, 1, 0.5), None);
        let missing = ApiError::NotFound {
            endpoint: e,
            message: "m".into(),
        };
        assert_eq!(policy.retry_delay(e, &missing, 1, 0.5), None);
    }
}

#[cfg(test)]
mod token_answer_tests {
    use super::*;

    #[test]
    fn only_successes_and_token_refusals_judge_a_token() {
        let e = Endpoint::ListRegions;
        let answer = |result: ApiResult<()>| TokenAnswer::of(e, &result);
        assert_eq!(answer(Ok(())), Some(TokenAnswer::Accepted));
        let unauthorized = ApiError::Unauthorized {
            endpoint: e,
            message: "m".into(),
        };
        assert_eq!(
            answer(Err(unauthorized.clone())),
            Some(TokenAnswer::Refused { status: 401 })
        );
        let forbidden = ApiError::Forbidden {
            endpoint: e,
            message: "m".into(),
        };
        assert_eq!(answer(Err(forbidden)), Some(TokenAnswer::Refused { status: 403 }));
        let says_nothing = [
            ApiError::Server {
                endpoint: e,
                status: 503,
                message: "m".into(),
            },
            ApiError::Transport {
                endpoint: e,
                message: "timed out".into(),
            },
            ApiError::RateLimited {
                endpoint: e,
                retry_after: None,
            },
            ApiError::Throttled {
                endpoint: e,
                expected_wait: Duration::from_secs(1),
            },
            ApiError::Fenced { endpoint: e },
            ApiError::QuotaExceeded {
                endpoint: e,
                status: 403,
                message: "seats".into(),
            },
        ];
        for err in says_nothing {
            assert_eq!(answer(Err(err.clone())), None, "{err:?}");
        }
        // A profile download is sent with the peer's share token, not the operator's.
        let refused_share: ApiResult<()> = Err(unauthorized);
        assert_eq!(
            TokenAnswer::of(Endpoint::GetClientConfiguration, &refused_share),
            None
        );
    }
}
