//! Why a reconcile failed, and what that means for the status reason and the requeue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Resource;
use kube::runtime::controller::Action;

use super::conditions::reason;
use super::context::Context;
use crate::altostrat::{ApiError, Referent, VpnApi};

/// Why a reconcile failed. [`Error::category`] is the bounded label used in metrics;
/// [`requeue_after_error`] decides the requeue from the variant.
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

    pub fn category(&self) -> &'static str {
        match self {
            Self::Api(e) => e.category(),
            Self::Kube { .. } => "kubernetes",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Credentials(_) => "credentials",
            Self::NotOwned { .. } => "not_owned",
            Self::NotConverging { .. } => "not_converging",
            Self::DeleteRefused { .. } => "delete_refused",
            Self::Unsettled(_) => "unsettled",
        }
    }

    /// This replica's leader fence refused the request: not a failure of the resource.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Api(ApiError::Fenced { .. }))
    }

    /// Errors only an edit of the resource (or of the world outside) can fix.
    pub fn needs_user_action(&self) -> bool {
        match self {
            Self::InvalidSpec(_)
            | Self::NotOwned { .. }
            | Self::NotConverging { .. }
            | Self::DeleteRefused { .. } => true,
            Self::Api(e) => matches!(
                e,
                ApiError::Invalid { .. }
                    | ApiError::Conflict { .. }
                    | ApiError::QuotaExceeded { .. }
                    | ApiError::UnknownReferent { .. }
            ),
            _ => false,
        }
    }

    /// Whether only a person can make progress: the spec, the credentials or the ownership of
    /// the Altostrat object must change (kstatus `Stalled`).
    pub fn stalls(&self) -> bool {
        self.needs_user_action() || self.reason() == reason::CREDENTIALS_ERROR
    }

    /// Condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotOwned { reason, .. } => reason,
            Self::NotConverging { .. } => reason::NOT_CONVERGING,
            Self::DeleteRefused { .. } => reason::DELETE_REFUSED,
            Self::Api(ApiError::QuotaExceeded { .. }) => reason::QUOTA_EXCEEDED,
            Self::Api(ApiError::UnknownReferent {
                referent: Referent::User,
                ..
            }) => reason::USER_NOT_FOUND,
            Self::Api(ApiError::UnknownReferent {
                referent: Referent::Site,
                ..
            }) => reason::SITE_NOT_FOUND,
            Self::Api(ApiError::Throttled { .. } | ApiError::RateLimited { .. }) => reason::THROTTLED,
            _ if self.needs_user_action() => reason::INVALID_SPEC,
            Self::Credentials(_) | Self::Api(ApiError::Unauthorized { .. } | ApiError::Forbidden { .. }) => {
                reason::CREDENTIALS_ERROR
            }
            _ => reason::API_ERROR,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Requeue decision after a failed reconcile (pure, unit-tested):
/// - invalid spec / conflict / quota or seat limit: wait for an edit of the object (with a slow safety resync,
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

/// Consecutive failures per object, for the exponential backoff.
#[derive(Debug, Default)]
pub struct FailureCounts(Mutex<HashMap<String, u32>>);

impl FailureCounts {
    /// Counts one more failure of `key` and returns how many there have been in a row.
    pub fn failed(&self, key: String) -> u32 {
        let mut counts = self.0.lock().expect("failure map lock poisoned");
        let n = counts.entry(key).or_insert(0);
        *n += 1;
        *n
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

/// Shared error policy: counts consecutive failures per object and asks
/// [`requeue_after_error`] for the delay. The reconcile span already names the object.
pub fn error_policy<K: Resource<DynamicType = ()>, A: VpnApi>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context<A>>,
) -> Action {
    let failures = ctx.failures.failed(object_key(obj.as_ref()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::altostrat::Endpoint;

    const RESYNC: Duration = Duration::from_secs(300);

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
    fn quota_refusals_wait_slowly_with_their_own_reason() {
        let e = Error::Api(ApiError::QuotaExceeded {
            endpoint: Endpoint::CreatePeer,
            status: 402,
            message: "no seats left".into(),
        });
        assert_eq!(requeue_after_error(&e, 7, RESYNC), RESYNC);
        assert_eq!((e.reason(), e.category()), ("QuotaExceeded", "quota_exceeded"));
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
    fn a_request_held_back_by_the_budget_comes_back_when_its_slot_is_due() {
        let e = Error::Api(ApiError::Throttled {
            endpoint: Endpoint::CreatePeer,
            expected_wait: Duration::from_secs(42),
        });
        assert_eq!(requeue_after_error(&e, 9, RESYNC), Duration::from_secs(42));
        assert_eq!((e.reason(), e.category()), ("Throttled", "throttled"));
        assert!(!e.stalls(), "throttling resolves itself");
        assert!(e.to_string().contains("about 42s"), "{e}");
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

    #[test]
    fn failure_counts_grow_until_a_success() {
        let counts = FailureCounts::default();
        assert_eq!(counts.failed("a".into()), 1);
        assert_eq!(counts.failed("a".into()), 2);
        assert_eq!(counts.failed("b".into()), 1);
        counts.succeeded("a");
        assert_eq!(counts.failed("a".into()), 1);
    }

    #[test]
    fn kubernetes_errors_name_the_operation() {
        let source = kube::Error::Api(
            kube::core::Status::failure("boom", "InternalError")
                .with_code(500)
                .boxed(),
        );
        let e = Error::kube("status write of VpnPeer ns/p")(source);
        assert!(
            e.to_string()
                .starts_with("Kubernetes API: status write of VpnPeer ns/p: "),
            "{e}"
        );
        assert_eq!(e.category(), "kubernetes");
    }
}
