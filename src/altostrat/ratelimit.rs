//! Client-side request budget shared by every reconcile: a GCRA limiter per API token.
//!
//! Altostrat documents 60 requests/minute per token. Each token gets its own schedule; all
//! callers using a token draw from it, so a fleet of objects can never exceed the budget, and
//! a 429 pushes the schedule back for everyone using that token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::ApiToken;

/// Generic cell rate algorithm: `rate_per_minute` sustained, bursts of up to `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time of the next request, per token.
    schedules: Mutex<HashMap<ApiToken, Instant>>,
}

impl RateLimiter {
    pub fn new(rate_per_minute: u32, burst: u32) -> Self {
        let rate = rate_per_minute.max(1);
        let interval = Duration::from_secs(60) / rate;
        Self {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            schedules: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves the next slot for `token` and returns how long the caller must wait for it.
    pub fn reserve(&self, token: &ApiToken, now: Instant) -> Duration {
        let mut schedules = self.schedules.lock().expect("rate limiter lock poisoned");
        let tat = schedules.get(token).copied().unwrap_or(now).max(now);
        let allowed_at = tat.checked_sub(self.tolerance).unwrap_or(now);
        let wait = allowed_at.saturating_duration_since(now);
        schedules.insert(token.clone(), tat + self.interval);
        // Bound memory: forget tokens whose schedule is in the past (they start fresh anyway).
        if schedules.len() > 1024 {
            schedules.retain(|_, t| *t > now);
        }
        wait
    }

    /// Waits for the next slot; returns the time spent waiting.
    pub async fn acquire(&self, token: &ApiToken) -> Duration {
        let wait = self.reserve(token, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// The server answered 429: nobody using `token` may send before `retry_after` elapses.
    pub fn back_off(&self, token: &ApiToken, retry_after: Duration, now: Instant) {
        let mut schedules = self.schedules.lock().expect("rate limiter lock poisoned");
        let resume = now + retry_after + self.tolerance;
        let entry = schedules.entry(token.clone()).or_insert(resume);
        if *entry < resume {
            *entry = resume;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_free_then_requests_are_spaced_by_the_interval() {
        let limiter = RateLimiter::new(60, 3);
        let token = ApiToken::new("t");
        let now = Instant::now();
        let waits: Vec<_> = (0..5).map(|_| limiter.reserve(&token, now)).collect();
        assert_eq!(waits[..3], [Duration::ZERO; 3]);
        assert_eq!(waits[3], Duration::from_secs(1));
        assert_eq!(waits[4], Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_finish_exactly_on_the_budget() {
        // 600/min = one request per 100 ms after a burst of 5: the 25th caller goes at 2.0 s.
        let limiter = std::sync::Arc::new(RateLimiter::new(600, 5));
        let started = Instant::now();
        let callers = (0..25).map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire(&ApiToken::new("t")).await })
        });
        let waits: Vec<Duration> = futures::future::join_all(callers)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(waits.iter().filter(|w| w.is_zero()).count(), 5, "the burst");
        assert_eq!(waits.iter().max(), Some(&Duration::from_secs(2)));
    }

    #[test]
    fn sustained_rate_never_exceeds_budget_over_a_minute() {
        let limiter = RateLimiter::new(60, 10);
        let token = ApiToken::new("t");
        let start = Instant::now();
        // 200 callers arrive at once: the last one may only go after (200 - 10) seconds.
        let last = (0..200).map(|_| limiter.reserve(&token, start)).max().unwrap();
        assert_eq!(last, Duration::from_secs(190));
    }

    #[test]
    fn tokens_have_separate_budgets() {
        let limiter = RateLimiter::new(60, 1);
        let now = Instant::now();
        assert_eq!(limiter.reserve(&ApiToken::new("a"), now), Duration::ZERO);
        assert_eq!(limiter.reserve(&ApiToken::new("b"), now), Duration::ZERO);
        assert_eq!(limiter.reserve(&ApiToken::new("a"), now), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_pushes_back_every_caller_of_the_token() {
        let limiter = RateLimiter::new(600, 5);
        let token = ApiToken::new("t");
        let now = Instant::now();
        limiter.back_off(&token, Duration::from_secs(7), now);
        assert_eq!(limiter.reserve(&token, now), Duration::from_secs(7));
        assert!(limiter.reserve(&token, now) > Duration::from_secs(7));
    }
}
