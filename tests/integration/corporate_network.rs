//! The Altostrat client behind corporate egress, over real loopback connections: the
//! simulator served over TLS with a CA of the test's own making (trusted only through
//! `ca_file`), and an HTTP CONNECT proxy of the test's own, picked up from `HTTPS_PROXY` and
//! bypassed for hosts in `NO_PROXY`.
//!
//! Proxy variables and the platform CA store (`SSL_CERT_FILE`) are process-global and read
//! when a client is built, so those calls run in a child process (this test binary, running
//! `call_from_env` only) with its own environment; the proxy counts the tunnels it opened.
#![cfg(feature = "simulator")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use altostrat_vpn_operator::altostrat::{
    ApiError, ApiToken, ClientBuildError, HttpClient, HttpClientConfig, VpnApi,
};
use altostrat_vpn_operator::simulator::{RunningSimulator, Simulator, SimulatorConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

fn token() -> ApiToken {
    ApiToken::new("sim-token")
}

fn openssl(args: &[&str], dir: &Path) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a server certificate it signed for 127.0.0.1 and localhost
/// (`server.pem`, `server.key`), in `dir`.
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-subj",
        "/CN=Corporate Test Root CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(&ca, dir);
    let mut server = vec!["req", "-x509", "-CA", "ca.pem", "-CAkey", "ca.key"];
    server.extend(ec);
    server.extend([
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.pem",
    ]);
    server.extend(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]);
    server.extend(["-addext", "basicConstraints=critical,CA:FALSE"]);
    server.extend(["-addext", "extendedKeyUsage=serverAuth"]);
    openssl(&server, dir);
}

/// The simulator behind a TLS-terminating front on 127.0.0.1 (rustls, the test's server
/// certificate). Returns the front's port.
async fn tls_front(sim: &RunningSimulator, dir: &Path) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = sim.base_url().trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                // A client refusing the certificate ends the handshake: nothing to serve.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut plain = TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

/// An HTTP CONNECT proxy on 127.0.0.1 that tunnels to whatever target it is asked for and
/// counts the tunnels.
async fn connect_proxy() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let counted = tunnels.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let mut words = head.split_whitespace();
                let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
                    let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await;
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (port, tunnels)
}

struct TlsSimulator {
    _sim: RunningSimulator,
    dir: tempfile::TempDir,
    port: u16,
}

impl TlsSimulator {
    async fn start() -> Self {
        let sim = Simulator::spawn(SimulatorConfig::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        make_pki(dir.path());
        let port = tls_front(&sim, dir.path()).await;
        Self { _sim: sim, dir, port }
    }

    fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

#[tokio::test]
async fn an_extra_ca_file_is_trusted_and_nothing_else_is() {
    let sim = TlsSimulator::start().await;

    let trusting = HttpClient::new(HttpClientConfig {
        base_url: sim.base_url(),
        ca_file: Some(sim.ca_file()),
        ..HttpClientConfig::default()
    })
    .unwrap();
    trusting
        .list_instances(&token())
        .await
        .expect("the simulator's certificate chains to the CA in ca_file");

    let default = HttpClient::new(HttpClientConfig {
        base_url: sim.base_url(),
        ..HttpClientConfig::default()
    })
    .unwrap();
    let err = default.list_instances(&token()).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Transport { .. }) && err.to_string().to_lowercase().contains("certificate"),
        "without the CA the certificate is refused: {err}"
    );
}

#[test]
fn a_bad_ca_file_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let build = |path: PathBuf| {
        HttpClient::new(HttpClientConfig {
            ca_file: Some(path),
            ..HttpClientConfig::default()
        })
        .map(|_| ())
    };

    let missing = dir.path().join("missing.pem");
    let err = build(missing.clone()).unwrap_err();
    assert!(
        matches!(err, ClientBuildError::CaFileUnreadable { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "names the file: {err}"
    );

    // A key, but no certificate.
    let err = build(dir.path().join("ca.key")).unwrap_err();
    assert!(
        matches!(err, ClientBuildError::CaFileInvalid { .. })
            && err.to_string().contains("no PEM certificate"),
        "{err}"
    );

    // A certificate block that is not a certificate.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = build(garbage.clone()).unwrap_err();
    assert!(
        matches!(err, ClientBuildError::CaFileInvalid { .. })
            && err.to_string().contains(&garbage.display().to_string()),
        "{err}"
    );

    // Several certificates in one bundle.
    let bundle = dir.path().join("bundle.pem");
    let mut both = std::fs::read(dir.path().join("ca.pem")).unwrap();
    both.extend(std::fs::read(dir.path().join("server.pem")).unwrap());
    std::fs::write(&bundle, both).unwrap();
    assert_eq!(
        altostrat_vpn_operator::altostrat::load_ca_bundle(&bundle)
            .unwrap()
            .len(),
        2
    );
    build(bundle).unwrap();
}

const CHILD_URL: &str = "CORPNET_TEST_BASE_URL";
const CHILD_CA: &str = "CORPNET_TEST_CA_FILE";
/// The test binary's name for [`call_from_env`], as `--exact` matches it.
const CHILD_TEST: &str = "corporate_network::call_from_env";

/// Runs `call_from_env` in a child process with exactly these proxy variables (and
/// `extra`), with the test CA in `ca_file` or not.
fn call_in_child(sim: &TlsSimulator, with_ca_file: bool, proxy_env: &[(&str, String)]) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
        .env(CHILD_URL, sim.base_url());
    if with_ca_file {
        child.env(CHILD_CA, sim.ca_file());
    }
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        child.env_remove(var);
    }
    child.envs(proxy_env.iter().map(|(k, v)| (k, v)));
    let out = child.output().unwrap();
    assert!(
        out.status.success(),
        "child call with {proxy_env:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A filter matching no test also exits successfully: make sure the call was made.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 passed"),
        "the child ran {CHILD_TEST}:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_is_used_and_no_proxy_bypasses_it() {
    let sim = TlsSimulator::start().await;
    let (proxy_port, tunnels) = connect_proxy().await;
    let proxy = format!("http://127.0.0.1:{proxy_port}");

    let sim_ref = &sim;
    let through = proxy.clone();
    tokio::task::block_in_place(|| call_in_child(sim_ref, true, &[("HTTPS_PROXY", through)]));
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        1,
        "the call went through HTTPS_PROXY"
    );

    let bypass = [
        ("HTTPS_PROXY", proxy.clone()),
        ("NO_PROXY", "example.com,127.0.0.1".into()),
    ];
    tokio::task::block_in_place(|| call_in_child(sim_ref, true, &bypass));
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        1,
        "NO_PROXY hosts are reached directly"
    );

    // The lower-case forms, as curl and most tools read them.
    tokio::task::block_in_place(|| call_in_child(sim_ref, true, &[("https_proxy", proxy)]));
    assert_eq!(tunnels.load(Ordering::SeqCst), 2, "https_proxy is honoured too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_ca_store_is_trusted() {
    // rustls-native-certs reads the platform store, which SSL_CERT_FILE replaces: a CA
    // installed there is trusted without `ca_file`.
    let sim = TlsSimulator::start().await;
    let store = [("SSL_CERT_FILE", sim.ca_file().display().to_string())];
    tokio::task::block_in_place(|| call_in_child(&sim, false, &store));

    // An empty platform store is not an error: the bundled roots and `ca_file` still count.
    let empty = sim.dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let store = [("SSL_CERT_FILE", empty.display().to_string())];
    tokio::task::block_in_place(|| call_in_child(&sim, true, &store));
}

/// The child half of the tests above: one call with the process's own environment (proxy
/// variables, SSL_CERT_FILE). Does nothing when run on its own.
#[tokio::test]
#[ignore = "run by the proxy and CA store tests in a child process"]
async fn call_from_env() {
    let Ok(base_url) = std::env::var(CHILD_URL) else {
        return;
    };
    let client = HttpClient::new(HttpClientConfig {
        base_url,
        ca_file: std::env::var_os(CHILD_CA).map(PathBuf::from),
        request_timeout: Duration::from_secs(10),
        ..HttpClientConfig::default()
    })
    .unwrap();
    client.list_instances(&token()).await.unwrap();
}
