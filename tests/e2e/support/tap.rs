//! A recording front of the Altostrat simulator: every request an operator sends is logged with
//! its arrival time (wall clock, comparable with a Lease's `renewTime` written on this host) and
//! its bearer token, then forwarded unchanged. Giving each operator process its own token (all
//! valid in the simulator, in one account) attributes every call to the process that sent it.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

/// One request as it arrived.
#[derive(Clone)]
pub struct Call {
    pub at: SystemTime,
    pub token: String,
    pub method: String,
    pub path: String,
    /// The simulator's answer; 0 while in flight, or when the caller went away first.
    pub status: u16,
}

impl Call {
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

/// Failure messages list calls as an access log would: who, what, the answer, and when.
impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = self.at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let (token, method, path, status) = (&self.token, &self.method, &self.path, self.status);
        write!(
            f,
            "{token} {method} {path} -> {status} at {:.3}",
            at.as_secs_f64()
        )
    }
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    calls: Mutex<Vec<Call>>,
}

pub struct AltostratTap {
    base_url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl AltostratTap {
    /// Serves on an ephemeral loopback port in front of `upstream` (the simulator's base URL).
    pub async fn start(upstream: &str) -> Self {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            calls: Mutex::default(),
        });
        let router = axum::Router::new().fallback(forward).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            base_url,
            shared,
            task,
        }
    }

    /// The URL to give an operator as its Altostrat API.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// The calls sent with `token`.
    pub fn calls_of(&self, token: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.token == token).collect()
    }

    /// The calls sent with `token` that arrived at or after `since`.
    pub fn calls_of_since(&self, token: &str, since: SystemTime) -> Vec<Call> {
        self.calls_of(token)
            .into_iter()
            .filter(|c| c.at >= since)
            .collect()
    }
}

impl Drop for AltostratTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bearer(request: &Request) -> String {
    request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned()
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let index = {
        let mut calls = shared.calls.lock().unwrap();
        calls.push(Call {
            at: SystemTime::now(),
            token: bearer(&request),
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            status: 0,
        });
        calls.len() - 1
    };
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let target = format!(
        "{}{}",
        shared.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut outbound = shared.http.request(parts.method, target).body(body);
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
            outbound = outbound.header(name, value);
        }
    }
    let Ok(answer) = outbound.send().await else {
        return Response::builder().status(502).body(Body::empty()).unwrap();
    };
    let status = answer.status();
    shared.calls.lock().unwrap()[index].status = status.as_u16();
    let mut response = Response::builder().status(status);
    for (name, value) in answer.headers() {
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response.body(Body::from(bytes)).unwrap()
}
