//! A loopback TCP proxy that can cut a process off from kube-apiserver without killing it.
//!
//! The proxy forwards bytes unchanged (TLS and client certificates pass through), so a
//! kubeconfig whose `server` names the proxy reaches the real API server. [`TcpProxy::cut`]
//! black-holes it like a silently dropped route: open connections stay open but nothing more is
//! forwarded either way, and new connections are accepted and then ignored. Nothing is closed,
//! so the client sees requests hang, never a reset. [`TcpProxy::heal`] closes the black-holed
//! connections (their streams lost data) and forwards new ones again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    BlackHole,
}

pub struct TcpProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    forwarded: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        assert!(upstream.ip().is_loopback(), "the proxy forwards to loopback only");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Forward);
        let forwarded = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(listener, upstream, mode.clone(), forwarded.clone()));
        Self {
            addr,
            mode,
            forwarded,
            task,
        }
    }

    /// Black-holes every connection, open or new, until [`TcpProxy::heal`].
    pub fn cut(&self) {
        self.mode.send_replace(Mode::BlackHole);
    }

    /// Drops the black-holed connections and forwards new ones again.
    pub fn heal(&self) {
        self.mode.send_replace(Mode::Forward);
    }

    /// Bytes forwarded so far, both directions.
    pub fn forwarded_bytes(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }

    /// A copy of the kubeconfig in `KUBECONFIG` whose server is this proxy, written into `dir`.
    pub fn kubeconfig(&self, dir: &Path, name: &str) -> PathBuf {
        let original = std::env::var("KUBECONFIG").expect("KUBECONFIG is set");
        let text = std::fs::read_to_string(&original).unwrap();
        let server = kubeconfig_server(&text);
        let rewritten = text.replace(
            &format!("server: {server}"),
            &format!("server: https://{}", self.addr),
        );
        assert_ne!(rewritten, text, "the kubeconfig names its server");
        let path = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, rewritten).unwrap();
        path
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Every connection task ends when the mode channel closes.
    }
}

/// The `server:` URL of the (single-cluster) kubeconfig text.
fn kubeconfig_server(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .map(|s| s.trim().to_owned())
        .expect("a server line in the kubeconfig")
}

/// The API server's address, from the kubeconfig in `KUBECONFIG` (a loopback IP and port).
pub fn apiserver_addr() -> SocketAddr {
    let path = std::env::var("KUBECONFIG").expect("KUBECONFIG is set");
    let server = kubeconfig_server(&std::fs::read_to_string(path).unwrap());
    let host_port = server.trim_start_matches("https://").trim_end_matches('/');
    host_port
        .parse()
        .unwrap_or_else(|e| panic!("the API server {server} is not an IP:port ({e})"))
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    forwarded: Arc<AtomicU64>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let mode = mode.subscribe();
        let forwarded = forwarded.clone();
        tokio::spawn(async move {
            let cut = *mode.borrow() == Mode::BlackHole;
            if cut {
                hold_until_healed(mode, client, None).await;
                return;
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            pipe(client, server, mode, forwarded).await;
        });
    }
}

/// Keeps the sockets open without reading or writing until the proxy heals, then drops them.
async fn hold_until_healed(mut mode: watch::Receiver<Mode>, client: TcpStream, server: Option<TcpStream>) {
    let healed = mode.wait_for(|m| *m == Mode::Forward).await.is_ok();
    let _ = healed;
    drop((client, server));
}

/// Forwards both ways until either side closes, or the proxy is cut.
async fn pipe(
    client: TcpStream,
    server: TcpStream,
    mut mode: watch::Receiver<Mode>,
    forwarded: Arc<AtomicU64>,
) {
    let (mut client, mut server) = (client, server);
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    loop {
        let step = tokio::select! {
            changed = async { mode.wait_for(|m| *m == Mode::BlackHole).await.is_ok() } => {
                if !changed {
                    return;
                }
                break;
            }
            n = cr.read(&mut up) => copy(n, &up, &mut sw).await,
            n = sr.read(&mut down) => copy(n, &down, &mut cw).await,
        };
        match step {
            Some(n) => {
                forwarded.fetch_add(n as u64, Ordering::SeqCst);
            }
            None => return,
        }
    }
    hold_until_healed(mode, client, Some(server)).await;
}

/// Writes what was read; `None` when either side is closed or failed.
async fn copy(
    read: std::io::Result<usize>,
    buf: &[u8],
    to: &mut (impl AsyncWriteExt + Unpin + Send),
) -> Option<usize> {
    match read {
        Ok(0) | Err(_) => None,
        Ok(n) => to.write_all(&buf[..n]).await.ok().map(|()| n),
    }
}
