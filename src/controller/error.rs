//! Why a reconcile failed, and what each failure means: [`Error::outcome`] is the one table
//! the status, the requeue, the event, the metrics and the log read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::Resource;
use kube::runtime::events::EventType;
use tracing::Level;

use super::conditions::reason;
use crate::altostrat::{ApiError, Referent};

/// Why a reconcile failed. What each variant means for the status, the requeue, the event,
/// the metrics and the log is its [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An Altostrat call failed; the error names the endpoint.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A Kubernetes API call failed; `operation` says which one, on which object.
    #[error("Kubernetes API: {operation}: {source}")]
    Kube {
        operation: String,
        #[source]
        source: kube::Error,
    },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("credentials: {0}")]
    Credentials(String),
    /// The Altostrat object in question is not provably this resource's own: nothing is
    /// written to it or deleted. `reason` is the condition reason.
    #[error("{message}")]
    NotOwned { reason: &'static str, message: String },
    /// Sending the same update again would loop: Altostrat normalises the values (it holds
    /// what it answered the last update with), or someone else writes them back (they hold
    /// again what they held before it).
    #[error("{}", not_converging(fields, *reverted))]
    NotConverging { fields: String, reverted: bool },
    /// Altostrat refuses to delete an object this resource owns, and still holds it: the
    /// resource stays until the object is gone or its deletion policy is `Orphan`.
    #[error(
        "{what} was not deleted: {message}. This resource stays until the object is gone: delete it in \
         Altostrat, or set spec.deletionPolicy to Orphan to leave it there and release this resource"
    )]
    DeleteRefused { what: String, message: String },
    /// The decisions of one reconcile went round in circles: a bug, reported instead of looping.
    #[error("the {0} lifecycle did not settle within one reconcile")]
    Unsettled(&'static str),
}

impl Error {
    /// Wraps a Kubernetes error with the operation that failed, for `map_err`.
    pub fn kube(operation: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let operation = operation.into();
        move |source| Self::Kube { operation, source }
    }

    /// What this failure means; see [`Outcome`].
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Api(e) => api_outcome(e),
            Self::Kube { .. } => Outcome::transient(reason::API_ERROR, "kubernetes"),
            Self::InvalidSpec(_) => Outcome::needs_edit(reason::INVALID_SPEC, "invalid_spec"),
            Self::Credentials(_) => Outcome::credentials("credentials"),
            Self::NotOwned { reason, .. } => Outcome::needs_edit(reason, "not_owned"),
            Self::NotConverging { .. } => Outcome::needs_edit(reason::NOT_CONVERGING, "not_converging"),
            Self::DeleteRefused { .. } => Outcome::needs_edit(reason::DELETE_REFUSED, "delete_refused"),
            // A bug: a person has to look at it, though a later reconcile may well succeed.
            Self::Unsettled(_) => Outcome {
                log: Level::ERROR,
                ..Outcome::transient(reason::API_ERROR, "unsettled")
            },
        }
    }

    /// The bounded label of this failure in metrics and logs.
    pub fn category(&self) -> &'static str {
        self.outcome().category
    }

    /// The condition and event reason of this failure.
    pub fn reason(&self) -> &'static str {
        self.outcome().reason
    }

    /// Whether only a person can make progress (kstatus `Stalled`).
    pub fn stalls(&self) -> bool {
        self.outcome().stalled
    }

    /// Whether only an edit of the resource (or of the world outside) can fix it.
    pub fn needs_user_action(&self) -> bool {
        self.outcome().retry == Retry::WaitForChange
    }

    /// This replica's leader fence refused the request: not a failure of the resource.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Api(ApiError::Fenced { .. }))
    }
}

/// What a failed reconcile means, decided once per error by [`Error::outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The reason of the `Ready`, `Synced` and `Stalled` conditions and of the Warning event.
    pub reason: &'static str,
    /// The bounded label in `vpn_operator_reconcile_errors_total` and in the log.
    pub category: &'static str,
    /// Only a person can make progress: the spec, the credentials or the ownership of the
    /// Altostrat object must change (kstatus `Stalled` True).
    pub stalled: bool,
    pub retry: Retry,
    /// The event that tells of it, and with it the resource's status: a Warning for a failure,
    /// Normal for back-pressure (nothing is wrong, the resource just waits its turn), none for a
    /// request this replica's fence refused (the leader that took over owns the status, and
    /// nothing failed at Altostrat).
    pub event: Option<EventType>,
    /// The level of the `reconcile failed` log line: WARN and ERROR only for what a person
    /// should look at, never for back-pressure.
    pub log: Level,
}

/// When a failed reconcile runs again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Exactly this long: a 429's `Retry-After`, or when the budget expects the next slot.
    After(Duration),
    /// Exponential backoff per object: 1 s doubling up to 5 min.
    Backoff,
    /// Only an edit of the resource (or a change in Altostrat) helps: the object's own watch
    /// brings the edit, and a slow safety resync catches a change outside (a taken hostname
    /// may be released).
    WaitForChange,
}

impl Retry {
    /// The requeue delay after `consecutive_failures` earlier failures in a row.
    pub fn delay(self, consecutive_failures: u32, resync: Duration) -> Duration {
        match self {
            Self::After(wait) => wait,
            Self::WaitForChange => resync.max(Duration::from_secs(60)),
            Self::Backoff => {
                let exp = Duration::from_secs(1).saturating_mul(1 << consecutive_failures.min(10));
                exp.min(Duration::from_secs(300))
            }
        }
    }
}

impl Outcome {
    /// A failure the next attempts may get past without anyone's help.
    fn transient(reason: &'static str, category: &'static str) -> Self {
        Self {
            reason,
            category,
            stalled: false,
            retry: Retry::Backoff,
            event: Some(EventType::Warning),
            log: Level::WARN,
        }
    }

    /// A refusal only an edit of the resource (or a change in Altostrat) can lift.
    fn needs_edit(reason: &'static str, category: &'static str) -> Self {
        Self {
            stalled: true,
            retry: Retry::WaitForChange,
            ..Self::transient(reason, category)
        }
    }

    /// The credentials must change; a Secret's edit does not trigger the resource, so it is
    /// looked for again with backoff.
    fn credentials(category: &'static str) -> Self {
        Self {
            stalled: true,
            ..Self::transient(reason::CREDENTIALS_ERROR, category)
        }
    }

    /// Back-pressure: the request waits for the API budget or for Altostrat's rate limit.
    fn held_back(category: &'static str, retry: Retry) -> Self {
        Self {
            retry,
            event: Some(EventType::Normal),
            log: Level::INFO,
            ..Self::transient(reason::THROTTLED, category)
        }
    }
}

fn api_outcome(error: &ApiError) -> Outcome {
    let category = error.category();
    match error {
        ApiError::Unauthorized { .. } | ApiError::Forbidden { .. } => Outcome::credentials(category),
        ApiError::Conflict { .. } | ApiError::Invalid { .. } => {
            Outcome::needs_edit(reason::INVALID_SPEC, category)
        }
        ApiError::UnknownReferent {
            referent: Referent::User,
            ..
        } => Outcome::needs_edit(reason::USER_NOT_FOUND, category),
        ApiError::UnknownReferent {
            referent: Referent::Site,
            ..
        } => Outcome::needs_edit(reason::SITE_NOT_FOUND, category),
        ApiError::QuotaExceeded { .. } => Outcome::needs_edit(reason::QUOTA_EXCEEDED, category),
        ApiError::RateLimited { retry_after, .. } => {
            Outcome::held_back(category, retry_after.map_or(Retry::Backoff, Retry::After))
        }
        ApiError::Throttled { expected_wait, .. } => {
            Outcome::held_back(category, Retry::After(*expected_wait))
        }
        ApiError::Fenced { .. } => Outcome {
            event: None,
            log: Level::INFO,
            ..Outcome::transient(reason::API_ERROR, category)
        },
        ApiError::NotFound { .. }
        | ApiError::Refused { .. }
        | ApiError::Server { .. }
        | ApiError::Transport { .. }
        | ApiError::Decode { .. } => Outcome::transient(reason::API_ERROR, category),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The requeue after `error` when the object failed `consecutive_failures` times before.
pub fn requeue_after_error(error: &Error, consecutive_failures: u32, resync: Duration) -> Duration {
    error.outcome().retry.delay(consecutive_failures, resync)
}

/// Consecutive failures per object, for the exponential backoff, with the category of the
/// last one, so that a failure is logged as it begins rather than at every retry.
#[derive(Debug, Default)]
pub struct FailureCounts(Mutex<HashMap<String, (u32, &'static str)>>);

/// One more failure of an object, as [`FailureCounts::failed`] counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Streak {
    /// Failures in a row, this one included.
    pub count: u32,
    /// The previous failure in a row had the same category: nothing new to tell.
    pub repeated: bool,
}

impl FailureCounts {
    /// Counts one more failure of `key` in `category`.
    pub fn failed(&self, key: String, category: &'static str) -> Streak {
        let mut counts = self.0.lock().expect("failure map lock poisoned");
        let (count, last) = counts.entry(key).or_insert((0, category));
        let repeated = *count > 0 && *last == category;
        *count += 1;
        *last = category;
        Streak {
            count: *count,
            repeated,
        }
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.0.lock().expect("failure map lock poisoned").remove(key);
    }
}

fn not_converging(fields: &str, reverted: bool) -> String {
    if reverted {
        format!(
            "{fields} went back to the values they held before this resource's last update (A to B to A): \
             someone else writes them, such as a second cluster managing the same hub or peer; not sent \
             again until the spec or Altostrat changes: make sure one resource manages it"
        )
    } else {
        format!(
            "Altostrat stores {fields} differently from the spec after applying it (it normalises the value); \
             not sent again until the spec or Altostrat changes: write the spec the way Altostrat stores it"
        )
    }
}

/// `Kind/namespace/name`: the key of an object in [`FailureCounts`].
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::altostrat::{Endpoint, classify};

    const RESYNC: Duration = Duration::from_secs(300);

    fn answered(endpoint: Endpoint, status: u16, message: &str, retry_after: Option<u64>) -> Error {
        let retry_after = retry_after.map(Duration::from_secs);
        classify(endpoint, status, String::new(), message.into(), retry_after).into()
    }

    fn unsent(error: ApiError) -> Error {
        Error::Api(error)
    }

    fn kube_error() -> Error {
        let status = kube::core::Status::failure("boom", "InternalError").with_code(500);
        Error::kube("status write of VpnPeer ns/p")(kube::Error::Api(status.boxed()))
    }

    /// Every variant, and every class of Altostrat answer, with what it means.
    /// A failure and its outcome: reason, category, stalled, retry, event, log.
    type Row = (
        Error,
        &'static str,
        &'static str,
        bool,
        Retry,
        Option<EventType>,
        Level,
    );

    #[test]
    fn each_failure_has_one_outcome() {
        use Retry::{After, Backoff, WaitForChange};
        let (get, create_peer) = (Endpoint::GetInstance, Endpoint::CreatePeer);
        let secs = Duration::from_secs;
        let (info, warn, error) = (Level::INFO, Level::WARN, Level::ERROR);
        let (normal, warning) = (Some(EventType::Normal), Some(EventType::Warning));
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            // error                                          reason            category           stalled retry         event    log
            (answered(get, 429, "", Some(17)),                "Throttled",      "rate_limited",     false, After(secs(17)), normal,  info),
            (answered(get, 429, "", None),                    "Throttled",      "rate_limited",     false, Backoff,       normal,  info),
            (unsent(ApiError::Throttled { endpoint: get, expected_wait: secs(42) }),
                                                              "Throttled",      "throttled",        false, After(secs(42)), normal,  info),
            (answered(get, 500, "down", None),                "ApiError",       "server",           false, Backoff,       warning,  warn),
            (answered(get, 503, "", None),                    "ApiError",       "server",           false, Backoff,       warning,  warn),
            (answered(get, 408, "", None),                    "ApiError",       "server",           false, Backoff,       warning,  warn),
            (unsent(ApiError::Transport { endpoint: get, message: "timed out".into() }),
                                                              "ApiError",       "transport",        false, Backoff,       warning,  warn),
            (unsent(ApiError::Decode { endpoint: get, message: "m".into() }),
                                                              "ApiError",       "decode",           false, Backoff,       warning,  warn),
            (answered(get, 401, "", None),                    "CredentialsError", "unauthorized",   true,  Backoff,       warning,  warn),
            (answered(get, 403, "scope", None),               "CredentialsError", "forbidden",      true,  Backoff,       warning,  warn),
            (answered(get, 409, "", None),                    "InvalidSpec",    "conflict",         true,  WaitForChange, warning,  warn),
            (answered(get, 404, "", None),                    "ApiError",       "not_found",        false, Backoff,       warning,  warn),
            (answered(get, 422, "", None),                    "InvalidSpec",    "invalid",          true,  WaitForChange, warning,  warn),
            (answered(create_peer, 422, "No such user", None),"UserNotFound",   "unknown_referent", true,  WaitForChange, warning,  warn),
            (answered(create_peer, 404, "Site not found", None),"SiteNotFound", "unknown_referent", true,  WaitForChange, warning,  warn),
            (answered(create_peer, 402, "", None),            "QuotaExceeded",  "quota_exceeded",   true,  WaitForChange, warning,  warn),
            (answered(get, 405, "", None),                    "ApiError",       "refused",          false, Backoff,       warning,  warn),
            (unsent(ApiError::Fenced { endpoint: get }),      "ApiError",       "fenced",           false, Backoff,       None, info),
            (kube_error(),                                    "ApiError",       "kubernetes",       false, Backoff,       warning,  warn),
            (Error::InvalidSpec("bad".into()),                "InvalidSpec",    "invalid_spec",     true,  WaitForChange, warning,  warn),
            (Error::Credentials("x".into()),                  "CredentialsError", "credentials",    true,  Backoff,       warning,  warn),
            (Error::NotOwned { reason: reason::HOSTNAME_TAKEN, message: "m".into() },
                                                              "HostnameTaken",  "not_owned",        true,  WaitForChange, warning,  warn),
            (Error::NotConverging { fields: "f".into(), reverted: false },
                                                              "NotConverging",  "not_converging",   true,  WaitForChange, warning,  warn),
            (Error::DeleteRefused { what: "w".into(), message: "m".into() },
                                                              "DeleteRefused",  "delete_refused",   true,  WaitForChange, warning,  warn),
            (Error::Unsettled("peer"),                        "ApiError",       "unsettled",        false, Backoff,       warning,  error),
        ];
        for (error, reason, category, stalled, retry, event, log) in table {
            let expected = Outcome {
                reason,
                category,
                stalled,
                retry,
                event,
                log,
            };
            assert_eq!(error.outcome(), expected, "{error:?}");
        }
    }

    #[test]
    fn each_retry_has_its_delay() {
        let backoff: Vec<_> = [0, 1, 2, 3, 20]
            .iter()
            .map(|n| Retry::Backoff.delay(*n, RESYNC).as_secs())
            .collect();
        assert_eq!(backoff, vec![1, 2, 4, 8, 300], "1 s doubling up to five minutes");
        let after = Retry::After(Duration::from_secs(17));
        assert_eq!(
            after.delay(9, RESYNC),
            Duration::from_secs(17),
            "exactly, whatever failed before"
        );
        assert_eq!(Retry::WaitForChange.delay(7, RESYNC), RESYNC);
        assert_eq!(
            Retry::WaitForChange.delay(0, Duration::from_secs(5)),
            Duration::from_secs(60),
            "never a hot loop"
        );
    }

    #[test]
    fn a_request_held_back_by_the_budget_says_when_its_slot_is_due() {
        let e = unsent(ApiError::Throttled {
            endpoint: Endpoint::CreatePeer,
            expected_wait: Duration::from_secs(42),
        });
        assert!(e.to_string().contains("about 42s"), "{e}");
    }

    #[test]
    fn failure_counts_grow_until_a_success_and_a_repeat_is_only_a_like_failure() {
        let counts = FailureCounts::default();
        let streak = |count, repeated| Streak { count, repeated };
        assert_eq!(counts.failed("a".into(), "server"), streak(1, false));
        assert_eq!(counts.failed("a".into(), "server"), streak(2, true));
        assert_eq!(
            counts.failed("a".into(), "transport"),
            streak(3, false),
            "a new failure"
        );
        assert_eq!(counts.failed("b".into(), "transport"), streak(1, false));
        counts.succeeded("a");
        assert_eq!(counts.failed("a".into(), "transport"), streak(1, false));
    }

    #[test]
    fn kubernetes_errors_name_the_operation() {
        let e = kube_error();
        assert!(
            e.to_string()
                .starts_with("Kubernetes API: status write of VpnPeer ns/p: "),
            "{e}"
        );
    }
}
