//! Typed errors of the Altostrat API, classified by HTTP status.

use std::time::Duration;

use super::Endpoint;

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
    /// 409: conflicts with existing state, e.g. a hostname already taken.
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
    /// 429: the token's request budget is spent.
    #[error("{endpoint}: rate limited by Altostrat (429){}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        endpoint: Endpoint,
        retry_after: Option<Duration>,
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
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server",
            Self::Transport { .. } => "transport",
            Self::Decode { .. } => "decode",
        }
    }

    /// Whether the same request may succeed later without any change on our side.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Server { .. } | Self::Transport { .. }
        )
    }

    /// For a 429, how long the server asked us to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
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
            Self::Invalid { status, .. } | Self::Server { status, .. } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            Self::Decode { .. } | Self::Transport { .. } => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// Maps an HTTP error status and the API's `ErrorResponse` message to a typed error.
pub fn classify(
    endpoint: Endpoint,
    status: u16,
    code: String,
    message: String,
    retry_after: Option<Duration>,
) -> ApiError {
    match status {
        401 => ApiError::Unauthorized { endpoint, message },
        403 => ApiError::Forbidden { endpoint, message },
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
        _ => ApiError::Server {
            endpoint,
            status,
            message,
        },
    }
}

/// Parses `Retry-After` given in seconds (the HTTP-date form is treated as absent).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_categories_and_transience() {
        let e = Endpoint::GetInstance;
        let cases = [
            (400, "invalid", false),
            (401, "unauthorized", false),
            (403, "forbidden", false),
            (404, "not_found", false),
            (409, "conflict", false),
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
}
