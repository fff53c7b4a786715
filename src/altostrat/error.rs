//! Typed errors of the Altostrat API, classified by HTTP status.

use std::time::Duration;

use super::Endpoint;
use super::model::ErrorDetails;

/// A failed Altostrat API call.
///
/// Messages carry the API's own explanation (which names the offending field) but never the
/// request's credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 401: the token is missing, malformed or expired.
    #[error("{endpoint}: Altostrat rejected the API token (401): {message}")]
    Unauthorized { endpoint: Endpoint, message: String },
    /// 403: the token lacks the scope the endpoint needs.
    #[error("{endpoint}: the API token lacks permission (403): {message}")]
    Forbidden { endpoint: Endpoint, message: String },
    /// 404: the object does not exist (any more).
    #[error("{endpoint}: not found (404): {message}")]
    NotFound { endpoint: Endpoint, message: String },
    /// 409: conflicts with existing state, e.g. a hostname already taken. A create refused
    /// with 400 or 422 whose validation error says the hostname is taken is this class too
    /// (its `code` is then `hostname_taken` and the message names the status).
    #[error("{endpoint}: conflict ({code}): {message}")]
    Conflict {
        endpoint: Endpoint,
        code: String,
        message: String,
    },
    /// 400 or 422: the request was refused as invalid; retrying the same request cannot help.
    #[error("{endpoint}: invalid request ({status} {code}): {message}")]
    Invalid {
        endpoint: Endpoint,
        status: u16,
        code: String,
        message: String,
    },
    /// 400, 404 or 422 to a peer create or update, saying that the user or site it names does
    /// not exist (deleted in Altostrat, or never there): nothing but another `userId` /
    /// `siteId`, or the user or site being restored, lets the request succeed.
    #[error("{endpoint}: Altostrat does not know the {referent} ({status}): {message}")]
    UnknownReferent {
        endpoint: Endpoint,
        status: u16,
        referent: Referent,
        message: String,
    },
    /// 402, or 403 explaining a seat, quota, plan or billing limit: the account cannot have
    /// more of this until someone changes the subscription or frees a seat. Never retried.
    #[error("{endpoint}: Altostrat refused for a quota or subscription limit ({status}): {message}")]
    QuotaExceeded {
        endpoint: Endpoint,
        status: u16,
        message: String,
    },
    /// Any other 4xx, e.g. 405 (the method is not offered on this path) or 410: the same
    /// request will be refused again, so it is not retried.
    #[error("{endpoint}: Altostrat refused the request ({status}): {message}")]
    Refused {
        endpoint: Endpoint,
        status: u16,
        message: String,
    },
    /// 429: the token's request budget is spent.
    #[error("{endpoint}: rate limited by Altostrat (429){}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        endpoint: Endpoint,
        retry_after: Option<Duration>,
    },
    /// Not sent: the token's request budget is taken for longer than a reconcile may wait
    /// (see `Budget`); the request is due again after `expected_wait`.
    #[error("{endpoint}: not sent yet: the API budget of these credentials is in use; next slot in about {}s", expected_wait.as_secs().max(1))]
    Throttled {
        endpoint: Endpoint,
        expected_wait: Duration,
    },
    /// 5xx or any other unexpected status.
    #[error("{endpoint}: Altostrat server error ({status}): {message}")]
    Server {
        endpoint: Endpoint,
        status: u16,
        message: String,
    },
    /// The request never got an HTTP answer: connect failure, reset, timeout.
    #[error("{endpoint}: transport error: {message}")]
    Transport { endpoint: Endpoint, message: String },
    /// The answer could not be decoded as the documented schema.
    #[error("{endpoint}: unexpected response body: {message}")]
    Decode { endpoint: Endpoint, message: String },
    /// Not sent: this replica's leader lease is not confirmed (lost, or not renewed within the
    /// renew deadline), so another replica may be leading. Says nothing about Altostrat.
    #[error("{endpoint}: request not sent: this replica is not the confirmed leader (fenced)")]
    Fenced { endpoint: Endpoint },
}

/// What a peer names in Altostrat besides its instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Referent {
    User,
    Site,
}

impl Referent {
    /// The request field that names it.
    pub fn field(self) -> &'static str {
        match self {
            Self::User => "user_id",
            Self::Site => "site_id",
        }
    }
}

impl std::fmt::Display for Referent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::Site => "site",
        })
    }
}

impl ApiError {
    /// A bounded, stable label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Invalid { .. } => "invalid",
            Self::UnknownReferent { .. } => "unknown_referent",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::Refused { .. } => "refused",
            Self::RateLimited { .. } => "rate_limited",
            Self::Throttled { .. } => "throttled",
            Self::Server { .. } => "server",
            Self::Transport { .. } => "transport",
            Self::Decode { .. } => "decode",
            Self::Fenced { .. } => "fenced",
        }
    }

    /// Whether the same request may succeed later without any change on our side.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Throttled { .. } | Self::Server { .. } | Self::Transport { .. }
        )
    }

    /// For a 429, how long the server asked us to wait; for a request the budget held back,
    /// when its slot is expected.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            Self::Throttled { expected_wait, .. } => Some(*expected_wait),
            _ => None,
        }
    }

    /// The HTTP status of the failed answer; `None` when no answer arrived, or when the answer
    /// was a success whose body could not be decoded.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::NotFound { .. } => Some(404),
            Self::Conflict { .. } => Some(409),
            Self::Invalid { status, .. }
            | Self::UnknownReferent { status, .. }
            | Self::Server { status, .. }
            | Self::QuotaExceeded { status, .. }
            | Self::Refused { status, .. } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            Self::Decode { .. } | Self::Transport { .. } | Self::Fenced { .. } | Self::Throttled { .. } => {
                None
            }
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Altostrat answered, and will answer the same request the same way until something
    /// changes on its side or in the request (not a credentials, budget or server problem).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Forbidden { .. }
                | Self::Conflict { .. }
                | Self::Invalid { .. }
                | Self::UnknownReferent { .. }
                | Self::QuotaExceeded { .. }
                | Self::Refused { .. }
        )
    }
}

/// Maps an HTTP error status, its code and message to a typed error (no field errors known).
pub fn classify(
    endpoint: Endpoint,
    status: u16,
    code: String,
    message: String,
    retry_after: Option<Duration>,
) -> ApiError {
    let details = ErrorDetails {
        code,
        message,
        ..ErrorDetails::default()
    };
    classify_details(endpoint, status, details, retry_after)
}

/// Maps an HTTP error status and the parsed error body (any shape, see [`ErrorDetails`]) to a
/// typed error. An empty message is replaced by the status's reason phrase.
pub fn classify_details(
    endpoint: Endpoint,
    status: u16,
    details: ErrorDetails,
    retry_after: Option<Duration>,
) -> ApiError {
    let ErrorDetails {
        code,
        mut message,
        field_errors,
    } = details;
    if message.is_empty() {
        message = reason_phrase(status).to_owned();
    }
    if let Some(referent) = unknown_referent(endpoint, status, &code, &message, &field_errors) {
        return ApiError::UnknownReferent {
            endpoint,
            status,
            referent,
            message,
        };
    }
    // A create refused as invalid because its hostname is in use is a conflict, like a 409.
    let hostname_taken = matches!(status, 400 | 422)
        && endpoint == Endpoint::CreateInstance
        && is_hostname_taken(&code, &message, &field_errors);
    if hostname_taken {
        return ApiError::Conflict {
            endpoint,
            code: "hostname_taken".into(),
            message: format!("{message} [HTTP {status}, read as the hostname being taken]"),
        };
    }
    by_status(endpoint, status, code, message, retry_after)
}

/// The class of an error status whose body names no more specific refusal.
fn by_status(
    endpoint: Endpoint,
    status: u16,
    code: String,
    message: String,
    retry_after: Option<Duration>,
) -> ApiError {
    match status {
        401 => ApiError::Unauthorized { endpoint, message },
        403 if is_quota_refusal(&code, &message) => ApiError::QuotaExceeded {
            endpoint,
            status,
            message,
        },
        403 => ApiError::Forbidden { endpoint, message },
        402 => ApiError::QuotaExceeded {
            endpoint,
            status,
            message,
        },
        404 => ApiError::NotFound { endpoint, message },
        409 => ApiError::Conflict {
            endpoint,
            code,
            message,
        },
        400 | 422 => ApiError::Invalid {
            endpoint,
            status,
            code,
            message,
        },
        429 => ApiError::RateLimited {
            endpoint,
            retry_after,
        },
        // Timeouts and "too early" are worth repeating; every other 4xx is not.
        408 | 425 => ApiError::Server {
            endpoint,
            status,
            message,
        },
        400..=499 => ApiError::Refused {
            endpoint,
            status,
            message,
        },
        _ => ApiError::Server {
            endpoint,
            status,
            message,
        },
    }
}

fn reason_phrase(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("unexpected status")
}

/// Words of the validation messages that say a value is already in use (Laravel's `unique`
/// rule says "has already been taken").
fn says_taken(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "taken",
        "already",
        "in use",
        "exists",
        "unique",
        "duplicate",
        "not available",
        "unavailable",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// A create refused because the hostname is taken: the code says so, or the validation error
/// on the `hostname` field does, or (with no field errors) the message names the hostname and
/// says it is taken.
fn is_hostname_taken(
    code: &str,
    message: &str,
    field_errors: &std::collections::BTreeMap<String, Vec<String>>,
) -> bool {
    let code = code.to_ascii_lowercase();
    if code == "hostname_taken" || (code.contains("hostname") && says_taken(&code)) {
        return true;
    }
    if let Some(messages) = field_errors.get("hostname") {
        return messages.iter().any(|m| says_taken(m));
    }
    field_errors.is_empty() && message.to_ascii_lowercase().contains("hostname") && says_taken(message)
}

/// A peer write refused because its user or site does not exist: a code naming it
/// (`user_not_found`), a validation error on `user_id` / `site_id` (Laravel's `exists` rule says
/// "The selected user id is invalid."), or a bare message such as "No such user" or "User not
/// found". A 404 that names neither is about the instance or the peer.
fn unknown_referent(
    endpoint: Endpoint,
    status: u16,
    code: &str,
    message: &str,
    field_errors: &std::collections::BTreeMap<String, Vec<String>>,
) -> Option<Referent> {
    if !matches!(endpoint, Endpoint::CreatePeer | Endpoint::UpdatePeer) || !matches!(status, 400 | 404 | 422)
    {
        return None;
    }
    [Referent::User, Referent::Site].into_iter().find(|&referent| {
        let noun = referent.to_string();
        let code = code.to_ascii_lowercase();
        if code.contains(&noun) && says_missing(&code) {
            return true;
        }
        if let Some(messages) = field_errors.get(referent.field()) {
            return messages.iter().any(|m| says_missing(m));
        }
        field_errors.is_empty() && message.to_ascii_lowercase().contains(&noun) && says_missing(message)
    })
}

/// Words of the messages that say a referenced object does not exist.
fn says_missing(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "not_found",
        "not found",
        "no such",
        "does not exist",
        "doesn't exist",
        "unknown",
        "invalid",
        "missing",
        "deleted",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// A 403 that is about seats, quotas or the subscription rather than the token's scopes.
fn is_quota_refusal(code: &str, message: &str) -> bool {
    let text = format!("{code} {message}").to_ascii_lowercase();
    [
        "quota",
        "seat",
        "limit",
        "subscription",
        "billing",
        "licen",
        "upgrade",
        "payment",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// The longest `Retry-After` taken from an answer: a gateway asking for more (quota windows
/// can be days) is re-asked after an hour rather than trusted, and no arithmetic overflows.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses `Retry-After` given in seconds (the HTTP-date form is treated as absent), at most
/// an hour.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs = value.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_request_is_its_own_class_and_blames_no_one_at_altostrat() {
        let e = ApiError::Fenced {
            endpoint: Endpoint::CreateInstance,
        };
        assert_eq!(
            (e.category(), e.status(), e.is_transient()),
            ("fenced", None, false)
        );
        let text = e.to_string();
        assert!(
            text.contains("request not sent") && text.contains("fenced"),
            "{text}"
        );
        assert!(!text.contains("Altostrat"), "{text}");
    }

    #[test]
    fn statuses_map_to_categories_and_transience() {
        let e = Endpoint::GetInstance;
        let cases = [
            (400, "invalid", false),
            (401, "unauthorized", false),
            (403, "forbidden", false),
            (404, "not_found", false),
            (409, "conflict", false),
            (402, "quota_exceeded", false),
            (405, "refused", false),
            (410, "refused", false),
            (408, "server", true),
            (422, "invalid", false),
            (429, "rate_limited", true),
            (500, "server", true),
            (503, "server", true),
        ];
        for (status, category, transient) in cases {
            let err = classify(e, status, "c".into(), "m".into(), None);
            assert_eq!(err.category(), category, "status {status}");
            assert_eq!(err.is_transient(), transient, "status {status}");
        }
    }

    #[test]
    fn retry_after_is_kept_for_429_only() {
        let d = parse_retry_after(" 7 ");
        assert_eq!(d, Some(Duration::from_secs(7)));
        let err = classify(Endpoint::ListInstances, 429, String::new(), String::new(), d);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert!(err.to_string().contains("retry after 7s"));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    fn from_body(endpoint: Endpoint, status: u16, body: &str) -> ApiError {
        classify_details(endpoint, status, ErrorDetails::parse(body), None)
    }

    #[test]
    fn a_taken_hostname_is_a_conflict_whatever_4xx_carries_it() {
        let laravel = r#"{"message":"The hostname has already been taken.","errors":{"hostname":["The hostname has already been taken."]}}"#;
        let documented = r#"{"type":"invalid_request_error","code":"hostname_taken","message":"The 'hostname' parameter 'hub' is already in use.","doc_url":"https://docs.altostrat.io/errors/hostname_taken"}"#;
        let message_only = r#"{"message":"The hostname 'hub' is already in use."}"#;
        for (status, body) in [
            (422, laravel),
            (400, laravel),
            (422, documented),
            (400, message_only),
            (409, documented),
        ] {
            let err = from_body(Endpoint::CreateInstance, status, body);
            assert!(
                matches!(err, ApiError::Conflict { ref code, .. } if code == "hostname_taken"),
                "{status} {body}: {err:?}"
            );
            assert_eq!(err.category(), "conflict");
            assert!(!err.is_transient());
        }
        let taken = from_body(Endpoint::CreateInstance, 422, laravel);
        assert!(taken.to_string().contains("HTTP 422"), "{taken}");
    }

    #[test]
    fn other_validation_errors_stay_invalid() {
        let format = r#"{"message":"The hostname field format is invalid.","errors":{"hostname":["The hostname field format is invalid."]}}"#;
        let region = r#"{"message":"The selected region is invalid.","errors":{"region":["The selected region is invalid."],"name":["The name has already been taken."]}}"#;
        for body in [format, region] {
            let err = from_body(Endpoint::CreateInstance, 422, body);
            assert!(
                matches!(err, ApiError::Invalid { status: 422, .. }),
                "{body}: {err:?}"
            );
        }
        // Only a create can be refused for a taken hostname.
        let laravel = r#"{"message":"x","errors":{"hostname":["The hostname has already been taken."]}}"#;
        assert_eq!(
            from_body(Endpoint::UpdateInstance, 422, laravel).category(),
            "invalid"
        );
    }

    #[test]
    fn seat_and_quota_refusals_are_their_own_class() {
        let cases = [
            (
                402,
                r#"{"message":"Payment required: your subscription has no Managed VPN seats left."}"#,
            ),
            (402, ""),
            (
                403,
                r#"{"message":"You have reached the peer seat limit for your subscription."}"#,
            ),
            (
                403,
                r#"{"type":"invalid_request_error","code":"quota_exceeded","message":"Instance quota exceeded.","doc_url":""}"#,
            ),
        ];
        for (status, body) in cases {
            let err = from_body(Endpoint::CreatePeer, status, body);
            assert!(
                matches!(err, ApiError::QuotaExceeded { .. }),
                "{status} {body}: {err:?}"
            );
            assert_eq!(err.category(), "quota_exceeded");
            assert_eq!(err.status(), Some(status));
            assert!(!err.is_transient());
        }
        let scope = from_body(
            Endpoint::GetInstance,
            403,
            r#"{"type":"invalid_request_error","code":"insufficient_scope","message":"This request requires the 'vpn:view' scope.","doc_url":""}"#,
        );
        assert_eq!(scope.category(), "forbidden");
        assert_eq!(from_body(Endpoint::GetInstance, 403, "").category(), "forbidden");
    }

    #[test]
    fn a_peer_naming_a_user_or_site_altostrat_does_not_know_is_its_own_class() {
        let cases = [
            (
                422,
                r#"{"message":"The selected user id is invalid.","errors":{"user_id":["The selected user id is invalid."]}}"#,
                Referent::User,
            ),
            (
                422,
                r#"{"type":"invalid_request_error","code":"site_not_found","message":"No such site: 3f1c","doc_url":""}"#,
                Referent::Site,
            ),
            (404, r#"{"message":"User not found."}"#, Referent::User),
            (400, r#"{"message":"The site does not exist."}"#, Referent::Site),
        ];
        for (status, body, referent) in cases {
            let err = from_body(Endpoint::CreatePeer, status, body);
            assert!(
                matches!(err, ApiError::UnknownReferent { referent: r, .. } if r == referent),
                "{status} {body}: {err:?}"
            );
            assert!(err.is_refusal() && !err.is_transient());
        }
        let format = r#"{"message":"x","errors":{"user_id":["The user id field must be a valid UUID."]}}"#;
        assert_eq!(from_body(Endpoint::CreatePeer, 422, format).category(), "invalid");
        let instance = r#"{"message":"No such instance: i-1"}"#;
        assert_eq!(
            from_body(Endpoint::CreatePeer, 404, instance).category(),
            "not_found"
        );
        let not_a_peer_write = r#"{"message":"User not found."}"#;
        assert_eq!(
            from_body(Endpoint::GetInstance, 404, not_a_peer_write).category(),
            "not_found"
        );
    }

    #[test]
    fn a_delete_that_is_not_offered_is_refused_not_retried() {
        for body in [
            r#"{"message":"The DELETE method is not supported for route vpn/instances/x. Supported methods: GET, HEAD, PUT."}"#,
            "",
        ] {
            let err = from_body(Endpoint::DeleteInstance, 405, body);
            assert!(matches!(err, ApiError::Refused { status: 405, .. }), "{err:?}");
            assert!(!err.is_transient());
            assert_eq!(err.status(), Some(405));
        }
        assert!(
            from_body(Endpoint::DeleteInstance, 405, "")
                .to_string()
                .contains("Method Not Allowed")
        );
    }

    #[test]
    fn messages_fall_back_to_the_reason_phrase() {
        let err = from_body(
            Endpoint::GetInstance,
            401,
            r#"{"message":"Unauthorized or invalid token provided."}"#,
        );
        assert!(
            err.to_string()
                .ends_with("Unauthorized or invalid token provided."),
            "{err}"
        );
        let err = from_body(Endpoint::GetInstance, 503, "<html>down</html>");
        assert!(err.to_string().ends_with("Service Unavailable"), "{err}");
    }
}
