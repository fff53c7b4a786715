//! The real operator binary as a child process, and the Lease it elects its leader with.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use super::TOKEN;

pub const LEASE_NAME: &str = "altostrat-vpn-operator";

const BIN: &str = env!("CARGO_BIN_EXE_vpn-operator");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct OperatorProcess {
    child: Child,
    pub metrics_port: u16,
    pub log_path: std::path::PathBuf,
}

impl OperatorProcess {
    pub fn start(
        sim_url: &str,
        namespace: &str,
        extra_env: &[(&str, &str)],
        log_dir: &std::path::Path,
        name: &str,
    ) -> Self {
        let metrics_port = free_port();
        let log_path = log_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .env("ALTOSTRAT_API_URL", sim_url)
            .env("ALTOSTRAT_API_TOKEN", TOKEN)
            .env("WATCH_NAMESPACES", namespace)
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("ALTOSTRAT_API_RATE_LIMIT", "6000")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "debug,hyper=info,h2=info,rustls=info,tower=info")
            .env("POD_NAME", name)
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in extra_env {
            // The two token settings exclude each other: a token file replaces the test token.
            if *k == "ALTOSTRAT_API_TOKEN_FILE" {
                cmd.env_remove("ALTOSTRAT_API_TOKEN");
            }
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().expect("start the operator binary"),
            metrics_port,
            log_path,
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("operator did not stop within 20s of SIGTERM");
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the operator process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::get(format!("http://127.0.0.1:{}{path}", self.metrics_port))
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl OperatorProcess {
    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (without blocking the runtime) until the process exits; `None` after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200 with `body`.
    pub async fn wait_ready(&self, body: &str) {
        super::eventually(&format!("{} on /readyz", body), super::TIMEOUT, || async {
            self.get("/readyz")
                .await
                .filter(|(code, text)| *code == 200 && text == body)
                .map(|_| ())
        })
        .await;
    }
}

/// Environment turning leader election on with the given timings, the Lease in `namespace`.
pub fn election_env(
    namespace: &str,
    lease: &str,
    renew_deadline: &str,
    retry_period: &str,
) -> Vec<(String, String)> {
    [
        ("LEADER_ELECTION", "true"),
        ("LEADER_ELECTION_NAMESPACE", namespace),
        ("LEADER_ELECTION_LEASE_DURATION", lease),
        ("LEADER_ELECTION_RENEW_DEADLINE", renew_deadline),
        ("LEADER_ELECTION_RETRY_PERIOD", retry_period),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Borrowed pairs for [`OperatorProcess::start`].
pub fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The leader Lease's holder, renew and acquire times (wall clock), if it exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub renewed: Option<SystemTime>,
    pub acquired: Option<SystemTime>,
}

pub async fn lease(leases: &Api<Lease>) -> Option<LeaseView> {
    let spec = leases.get_opt(LEASE_NAME).await.ok().flatten()?.spec?;
    Some(LeaseView {
        holder: spec.holder_identity,
        renewed: spec.renew_time.map(|t| SystemTime::from(t.0)),
        acquired: spec.acquire_time.map(|t| SystemTime::from(t.0)),
    })
}

pub async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    lease(leases).await?.holder
}

/// Waits until `identity` holds the lease; returns the Lease as then seen.
pub async fn wait_holder(leases: &Api<Lease>, identity: &str, timeout: Duration) -> LeaseView {
    super::eventually(&format!("{identity} holds the lease"), timeout, || async {
        lease(leases)
            .await
            .filter(|l| l.holder.as_deref() == Some(identity))
    })
    .await
}
