//! One-request-per-call HTTP implementation of [`VpnApi`] over reqwest.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::classify_details;
use super::model::{
    ClientConfiguration, ErrorDetails, Instance, InstanceCreate, InstanceUpdate, ListResponse, Peer,
    PeerCreate, PeerType, PeerUpdate, RegionResponse,
};
use super::{ApiError, ApiResult, ApiToken, Endpoint, VpnApi, parse_retry_after};

/// Connection settings of [`HttpClient`].
#[derive(Clone, Debug)]
pub struct HttpClientConfig {
    /// Base URL without the `/vpn` prefix, e.g. `https://v1.api.altostrat.io`.
    pub base_url: String,
    /// Upper bound for one request, connect to last byte.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// A PEM file with one or more CA certificates trusted in addition to the bundled Mozilla
    /// roots and the platform's CA store (e.g. a TLS-inspecting proxy's CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        Self {
            base_url: "https://v1.api.altostrat.io".into(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            ca_file: None,
        }
    }
}

/// Why an [`HttpClient`] could not be built: a start-up error, shown as is.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("cannot read the CA bundle {path}: {source}")]
    CaFileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA bundle {path} is not valid: {message}")]
    CaFileInvalid { path: PathBuf, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Reads a PEM bundle and checks every certificate in it, so a bad file fails at start-up
/// with its name rather than on the first request.
pub fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientBuildError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let invalid = |message: String| ClientBuildError::CaFileInvalid {
        path: path.to_owned(),
        message,
    };
    let pem = std::fs::read(path).map_err(|source| ClientBuildError::CaFileUnreadable {
        path: path.to_owned(),
        source,
    })?;
    let mut store = rustls::RootCertStore::empty();
    let mut certificates = Vec::new();
    for (n, der) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let der = der.map_err(|e| invalid(format!("PEM block {}: {e}", n + 1)))?;
        store
            .add(der.clone())
            .map_err(|e| invalid(format!("certificate {}: {e}", n + 1)))?;
        certificates.push(
            reqwest::Certificate::from_der(&der)
                .map_err(|e| invalid(format!("certificate {}: {e}", n + 1)))?,
        );
    }
    if certificates.is_empty() {
        return Err(invalid(
            "no PEM certificate in it (expected one or more -----BEGIN CERTIFICATE----- blocks)".into(),
        ));
    }
    Ok(certificates)
}

/// Plain HTTP client: performs exactly one request per call and maps the answer to
/// [`ApiError`]. TLS certificates are always verified, against the bundled Mozilla roots, the
/// platform's CA store (which honours `SSL_CERT_FILE` / `SSL_CERT_DIR`) and
/// [`HttpClientConfig::ca_file`]. `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`
/// (and their lower-case forms) are read when the client is built: never call `.no_proxy()`.
#[derive(Clone, Debug)]
pub struct HttpClient {
    http: reqwest::Client,
    base_url: String,
}

impl HttpClient {
    pub fn new(config: HttpClientConfig) -> Result<Self, ClientBuildError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("altostrat-vpn-operator/", env!("CARGO_PKG_VERSION")))
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(path) = &config.ca_file {
            for certificate in load_ca_bundle(path)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build()?;
        Ok(Self {
            http,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// `GET /vpn/site/{siteId}/subnets`. Not part of [`VpnApi`]: no controller needs it, the
    /// simulator's contract tests do.
    pub async fn list_site_subnets(
        &self,
        token: &ApiToken,
        site_id: &str,
    ) -> ApiResult<Vec<serde_json::Value>> {
        let path = format!("/vpn/site/{}/subnets", seg(Endpoint::ListSiteSubnets, site_id)?);
        self.list(Endpoint::ListSiteSubnets, &path, token).await
    }

    /// Downloads a client configuration with a peer's share token (not an operator token), as
    /// JSON or as whatever the server prefers; [`VpnApi::client_configuration`] asks for text.
    pub async fn client_configuration(
        &self,
        share_token: &ApiToken,
        as_json: bool,
    ) -> ApiResult<ClientConfiguration> {
        let endpoint = Endpoint::GetClientConfiguration;
        let accept = if as_json {
            "application/json"
        } else {
            "text/plain, application/json"
        };
        let response = self
            .send(endpoint, Method::GET, "/vpn/client", share_token, None, accept)
            .await?;
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        let text = response.text().await.map_err(|e| transport_error(endpoint, &e))?;
        if is_json {
            serde_json::from_str(&text)
                .map(ClientConfiguration::Json)
                .map_err(|e| ApiError::Decode {
                    endpoint,
                    message: e.to_string(),
                })
        } else {
            Ok(ClientConfiguration::Text(text))
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn send(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        token: &ApiToken,
        body: Option<&dyn erased::Body>,
        accept: &str,
    ) -> ApiResult<reqwest::Response> {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(token.expose())
            .header(header::ACCEPT, accept);
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_json().map_err(|e| ApiError::Decode {
                    endpoint,
                    message: e.to_string(),
                })?);
        }
        let response = request.send().await.map_err(|e| transport_error(endpoint, &e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(error_from_response(endpoint, response).await)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        token: &ApiToken,
        body: Option<&dyn erased::Body>,
    ) -> ApiResult<T> {
        let response = self
            .send(endpoint, method, path, token, body, "application/json")
            .await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(endpoint, &e))?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            endpoint,
            message: e.to_string(),
        })
    }

    /// A list, bare or in the `{data, has_more}` envelope. A list that says more items follow
    /// is refused: the API documents no way to fetch them, and adoption and cleanup must not
    /// decide on part of a list.
    async fn list<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        path: &str,
        token: &ApiToken,
    ) -> ApiResult<Vec<T>> {
        let list: ListResponse<T> = self.json(endpoint, Method::GET, path, token, None).await?;
        if list.has_more {
            return Err(ApiError::Decode {
                endpoint,
                message: format!(
                    "the list is paginated (has_more: true after {} items) and the API documents no way to \
                     fetch the rest; refusing to act on part of it",
                    list.items.len()
                ),
            });
        }
        Ok(list.items)
    }

    async fn no_content(&self, endpoint: Endpoint, path: &str, token: &ApiToken) -> ApiResult<()> {
        self.send(endpoint, Method::DELETE, path, token, None, "application/json")
            .await?;
        Ok(())
    }
}

/// Object-safe JSON body so `send` is not generic over every request type.
mod erased {
    pub trait Body: Send + Sync {
        fn to_json(&self) -> serde_json::Result<Vec<u8>>;
    }
    impl<T: serde::Serialize + Send + Sync> Body for T {
        fn to_json(&self) -> serde_json::Result<Vec<u8>> {
            serde_json::to_vec(self)
        }
    }
}

fn body<T: Serialize + Send + Sync>(value: &T) -> Option<&dyn erased::Body> {
    Some(value)
}

fn transport_error(endpoint: Endpoint, error: &reqwest::Error) -> ApiError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The causes say what actually went wrong (refused, reset, certificate not trusted, ...).
    // They carry addresses and ids, never the request's headers.
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.dedup();
    let detail = if causes.is_empty() {
        String::new()
    } else {
        format!(": {}", causes.join(": "))
    };
    ApiError::Transport {
        endpoint,
        message: format!("{kind}{detail}"),
    }
}

async fn error_from_response(endpoint: Endpoint, response: reqwest::Response) -> ApiError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let text = response.text().await.unwrap_or_default();
    classify_details(endpoint, status.as_u16(), ErrorDetails::parse(&text), retry_after)
}

/// An id as one path segment, whatever its source (spec, status, an answer): ids are UUIDs,
/// and anything that is not a plain segment (empty, `.`, `..`, or with any character but
/// letters, digits, `-`, `_` and `.`) is refused before a request is made. Percent-encoding
/// would not do: URL parsers resolve `%2E%2E` as `..`.
fn seg(endpoint: Endpoint, id: &str) -> ApiResult<&str> {
    let plain = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain && !id.is_empty() && id.len() <= 128 && !id.trim_matches('.').is_empty() {
        return Ok(id);
    }
    Err(ApiError::Invalid {
        endpoint,
        status: 0,
        code: "invalid_id".into(),
        message: format!(
            "{id:?} is not an Altostrat id (a plain path segment such as a UUID); no request was sent"
        ),
    })
}

impl VpnApi for HttpClient {
    async fn list_regions(&self, token: &ApiToken) -> ApiResult<RegionResponse> {
        self.json(
            Endpoint::ListRegions,
            Method::GET,
            "/vpn/servers/regions",
            token,
            None,
        )
        .await
    }

    async fn list_instances(&self, token: &ApiToken) -> ApiResult<Vec<Instance>> {
        self.list(Endpoint::ListInstances, "/vpn/instances", token).await
    }

    async fn get_instance(&self, token: &ApiToken, id: &str) -> ApiResult<Instance> {
        let path = format!("/vpn/instances/{}", seg(Endpoint::GetInstance, id)?);
        self.json(Endpoint::GetInstance, Method::GET, &path, token, None)
            .await
    }

    async fn create_instance(&self, token: &ApiToken, create: &InstanceCreate) -> ApiResult<Instance> {
        self.json(
            Endpoint::CreateInstance,
            Method::POST,
            "/vpn/instances",
            token,
            body(create),
        )
        .await
    }

    async fn update_instance(
        &self,
        token: &ApiToken,
        id: &str,
        update: &InstanceUpdate,
    ) -> ApiResult<Instance> {
        let path = format!("/vpn/instances/{}", seg(Endpoint::UpdateInstance, id)?);
        self.json(Endpoint::UpdateInstance, Method::PUT, &path, token, body(update))
            .await
    }

    async fn delete_instance(&self, token: &ApiToken, id: &str) -> ApiResult<()> {
        self.no_content(
            Endpoint::DeleteInstance,
            &format!("/vpn/instances/{}", seg(Endpoint::DeleteInstance, id)?),
            token,
        )
        .await
    }

    async fn list_peers(
        &self,
        token: &ApiToken,
        instance_id: &str,
        kind: Option<PeerType>,
    ) -> ApiResult<Vec<Peer>> {
        let mut path = format!("/vpn/instances/{}/peers", seg(Endpoint::ListPeers, instance_id)?);
        if let Some(kind) = kind {
            path.push_str("?type=");
            path.push_str(kind.as_str());
        }
        self.list(Endpoint::ListPeers, &path, token).await
    }

    async fn get_peer(&self, token: &ApiToken, instance_id: &str, peer_id: &str) -> ApiResult<Peer> {
        let path = format!(
            "/vpn/instances/{}/peers/{}",
            seg(Endpoint::GetPeer, instance_id)?,
            seg(Endpoint::GetPeer, peer_id)?
        );
        self.json(Endpoint::GetPeer, Method::GET, &path, token, None)
            .await
    }

    async fn create_peer(&self, token: &ApiToken, instance_id: &str, create: &PeerCreate) -> ApiResult<Peer> {
        let path = format!("/vpn/instances/{}/peers", seg(Endpoint::CreatePeer, instance_id)?);
        self.json(Endpoint::CreatePeer, Method::POST, &path, token, body(create))
            .await
    }

    async fn update_peer(
        &self,
        token: &ApiToken,
        instance_id: &str,
        peer_id: &str,
        update: &PeerUpdate,
    ) -> ApiResult<Peer> {
        let path = format!(
            "/vpn/instances/{}/peers/{}",
            seg(Endpoint::UpdatePeer, instance_id)?,
            seg(Endpoint::UpdatePeer, peer_id)?
        );
        self.json(Endpoint::UpdatePeer, Method::PUT, &path, token, body(update))
            .await
    }

    async fn delete_peer(&self, token: &ApiToken, instance_id: &str, peer_id: &str) -> ApiResult<()> {
        let path = format!(
            "/vpn/instances/{}/peers/{}",
            seg(Endpoint::DeletePeer, instance_id)?,
            seg(Endpoint::DeletePeer, peer_id)?
        );
        self.no_content(Endpoint::DeletePeer, &path, token).await
    }
    /// Asks for a text profile first: the form a client installs as it is.
    async fn client_configuration(&self, _: &ApiToken, share: &ApiToken) -> ApiResult<ClientConfiguration> {
        HttpClient::client_configuration(self, share, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_that_is_not_a_plain_path_segment_is_refused_before_any_request() {
        let endpoint = Endpoint::GetInstance;
        for id in ["a1b2c3d4-e5f6-7890-1234-567890abcdef", "i-1", "v1.2_x"] {
            assert_eq!(seg(endpoint, id).ok(), Some(id), "{id}");
        }
        for id in [
            "", ".", "..", "...", "../x", "a/b", "%2E%2E", "a?b", "a#b", "a b", "ü",
        ] {
            let refused = seg(endpoint, id).unwrap_err();
            assert!(
                matches!(refused, ApiError::Invalid { status: 0, .. }),
                "{id}: {refused}"
            );
            assert!(refused.to_string().contains("no request was sent"), "{refused}");
        }
        assert!(seg(endpoint, &"a".repeat(129)).is_err());
    }
}
