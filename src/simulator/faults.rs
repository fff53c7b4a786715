//! Fault injection: added latency, random or deterministic failures and 429s with
//! `Retry-After`, globally or per endpoint ("METHOD /route/template", or "*").

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Faults applied to every `/vpn` request, plus per-endpoint rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Probability (0..1) that any request fails with a 500.
    pub error_rate: f64,
    /// Latency added to every request.
    pub latency_ms: u64,
    /// Requests allowed per token in any 60 seconds; beyond it the answer is 429 with
    /// Retry-After.
    pub rate_limit_per_minute: Option<u32>,
    /// Rules keyed by "METHOD /route/template" (e.g. "PUT /vpn/instances/{instanceId}") or "*".
    pub rules: BTreeMap<String, FaultRule>,
}

/// Faults of one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultRule {
    /// The next N requests fail deterministically (counts down).
    pub fail_next: u32,
    /// Probability (0..1) that a request fails.
    pub error_rate: f64,
    /// Status of injected failures (default 500; 429 adds Retry-After).
    pub status: Option<u16>,
    /// Retry-After seconds sent with injected 429s (default 1).
    pub retry_after_secs: Option<u64>,
    /// Latency added to this endpoint.
    pub latency_ms: u64,
    /// Process the request, then answer with the failure anyway: the change is applied but
    /// the client never learns it (a lost response, as after a timeout).
    pub apply_then_fail: bool,
    /// Process the request, then close the connection without any answer: the client sees
    /// the transport fail, as when a timeout or a reset loses the answer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lose_answer: bool,
    /// Message of the injected failure's body (default "Injected fault on <route>.").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the middleware must do with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub delay: Duration,
    pub failure: Option<Failure>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub retry_after: Option<u64>,
    /// The request is processed before the failure is returned.
    pub after_processing: bool,
    /// The request is processed and no answer is given at all.
    pub lose_answer: bool,
    pub message: Option<String>,
}

impl FaultConfig {
    /// Decides the fate of a request (mutates `fail_next` counters). `sample` is in [0, 1).
    pub fn decide(&mut self, route: &str, sample: f64) -> Verdict {
        let mut delay = Duration::from_millis(self.latency_ms);
        let mut failure = (sample < self.error_rate).then_some(Failure {
            status: 500,
            retry_after: None,
            after_processing: false,
            lose_answer: false,
            message: None,
        });
        for key in [route, "*"] {
            let Some(rule) = self.rules.get_mut(key) else {
                continue;
            };
            delay += Duration::from_millis(rule.latency_ms);
            if failure.is_some() {
                continue;
            }
            let status = rule.status.unwrap_or(500);
            let fail = if rule.fail_next > 0 {
                rule.fail_next -= 1;
                true
            } else {
                sample < rule.error_rate
            };
            if fail {
                let retry_after = (status == 429).then(|| rule.retry_after_secs.unwrap_or(1));
                failure = Some(Failure {
                    status,
                    retry_after,
                    after_processing: rule.apply_then_fail || rule.lose_answer,
                    lose_answer: rule.lose_answer,
                    message: rule.message.clone(),
                });
            }
        }
        Verdict { delay, failure }
    }

    /// Parses a `--fault` flag: `METHOD /route/template:key=value,key=value` with keys
    /// `error_rate`, `fail_next`, `status`, `retry_after_secs`, `latency_ms`, `apply_then_fail`,
    /// `lose_answer`.
    pub fn parse_rule(spec: &str) -> Result<(String, FaultRule), String> {
        let (route, settings) = match spec.rfind(':') {
            Some(i) if spec[i + 1..].contains('=') => (&spec[..i], &spec[i + 1..]),
            _ => return Err(format!("fault {spec:?}: expected 'METHOD /path:key=value,...'")),
        };
        let mut rule = FaultRule::default();
        for pair in settings.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("fault setting {pair:?}: expected key=value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("fault setting {k}={v}: {e}");
            match k.trim() {
                "error_rate" => rule.error_rate = v.parse().map_err(|e| bad(&e))?,
                "fail_next" => rule.fail_next = v.parse().map_err(|e| bad(&e))?,
                "status" => rule.status = Some(v.parse().map_err(|e| bad(&e))?),
                "retry_after_secs" => rule.retry_after_secs = Some(v.parse().map_err(|e| bad(&e))?),
                "latency_ms" => rule.latency_ms = v.parse().map_err(|e| bad(&e))?,
                "apply_then_fail" => rule.apply_then_fail = v.parse().map_err(|e| bad(&e))?,
                "lose_answer" => rule.lose_answer = v.parse().map_err(|e| bad(&e))?,
                other => return Err(format!("unknown fault setting {other:?}")),
            }
        }
        Ok((route.trim().to_owned(), rule))
    }
}

/// Request times per token over the last minute (a sliding window, so any 60 seconds hold at
/// most `limit` accepted requests, wherever they fall on the clock).
#[derive(Debug, Default)]
pub struct TokenWindows {
    accepted_ms: HashMap<String, VecDeque<u64>>,
}

impl TokenWindows {
    const WINDOW_MS: u64 = 60_000;

    /// Counts a request at `now_ms`; returns `Some(retry_after_secs)` when over `limit`.
    pub fn check(&mut self, token: &str, limit: u32, now_ms: u64) -> Option<u64> {
        let accepted = self.accepted_ms.entry(token.to_owned()).or_default();
        while accepted
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= Self::WINDOW_MS)
        {
            accepted.pop_front();
        }
        if accepted.len() >= limit as usize {
            // Until the oldest accepted request leaves the window, rounded up to whole seconds.
            let oldest = accepted.front().copied().unwrap_or(now_ms);
            let wait_ms = (oldest + Self::WINDOW_MS).saturating_sub(now_ms);
            return Some(wait_ms.div_ceil(1000).max(1));
        }
        accepted.push_back(now_ms);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_is_deterministic_and_counts_down() {
        let mut faults = FaultConfig::default();
        let (route, rule) =
            FaultConfig::parse_rule("PUT /vpn/instances/{instanceId}:fail_next=2,status=503").unwrap();
        faults.rules.insert(route.clone(), rule);
        let failures: Vec<_> = (0..3)
            .map(|_| faults.decide(&route, 0.99).failure.map(|f| f.status))
            .collect();
        assert_eq!(failures, vec![Some(503), Some(503), None]);
        assert_eq!(
            faults.decide("GET /vpn/instances", 0.0).failure,
            None,
            "other routes unaffected"
        );
    }

    #[test]
    fn injected_429s_carry_retry_after_and_latency_adds_up() {
        let mut faults = FaultConfig {
            latency_ms: 10,
            ..FaultConfig::default()
        };
        faults.rules.insert(
            "*".into(),
            FaultRule {
                error_rate: 1.0,
                status: Some(429),
                retry_after_secs: Some(3),
                latency_ms: 5,
                ..FaultRule::default()
            },
        );
        let verdict = faults.decide("GET /vpn/servers/regions", 0.5);
        assert_eq!(verdict.delay, Duration::from_millis(15));
        assert_eq!(
            verdict.failure,
            Some(Failure {
                status: 429,
                retry_after: Some(3),
                after_processing: false,
                lose_answer: false,
                message: None,
            })
        );
    }

    #[test]
    fn token_windows_limit_each_token_over_any_sixty_seconds() {
        let mut w = TokenWindows::default();
        // Straddling a minute of the clock (119.9 s, 120.1 s) does not reset the budget.
        assert_eq!(w.check("a", 2, 119_900), None);
        assert_eq!(w.check("a", 2, 120_100), None);
        assert_eq!(w.check("a", 2, 135_000), Some(45), "until 179.9 s, rounded up");
        assert_eq!(w.check("b", 2, 135_000), None, "separate budget per token");
        assert_eq!(w.check("a", 2, 179_899), Some(1));
        assert_eq!(
            w.check("a", 2, 179_900),
            None,
            "the oldest request left the window"
        );
        assert_eq!(w.check("a", 2, 180_100), None, "refused requests do not count");
    }

    #[test]
    fn malformed_fault_specs_are_rejected() {
        assert!(FaultConfig::parse_rule("GET /vpn/instances").is_err());
        assert!(FaultConfig::parse_rule("GET /vpn/instances:speed=3").is_err());
    }
}
