//! Command line and environment configuration, read once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::parse_duration;

/// Kubernetes operator for Altostrat Managed VPN instances and peers.
#[derive(Debug, Parser)]
#[command(name = "vpn-operator", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers against the cluster in KUBECONFIG or the in-cluster config.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD into directories.
    Crds(CrdsArgs),
    /// Serve a local, stateful Altostrat API simulator (for tests, demos and development).
    ///
    /// Every endpoint of the Managed VPN API is served under /vpn with state in memory, bearer
    /// tokens with scopes (vpn:view, vpn:create, vpn:update, vpn:delete) acting for accounts
    /// that cannot see each other's instances, the documented validation answered with
    /// ErrorResponse bodies naming the field, asynchronous provisioning and fault injection.
    ///
    /// Admin endpoints (no auth, never counted): GET /_admin/calls (per-endpoint call counts),
    /// POST /_admin/calls/reset, GET|PUT /_admin/faults, GET /_admin/state, POST /_admin/reset,
    /// POST /_admin/instances/{id}/drift and POST /_admin/peers/{id}/drift (out-of-band edits),
    /// POST /_admin/peers/{id}/connected.
    #[cfg(feature = "simulator")]
    Simulate(crate::simulator::SimulateArgs),
    /// Write manifests that adopt hubs and peers Altostrat already holds (read by list only):
    /// applying them writes nothing there. See docs/import.md.
    Import(crate::cli::import::ImportArgs),
    /// The kubectl plugin's commands (`kubectl altostrat …` when this binary is on PATH as
    /// `kubectl-altostrat`): status, plan, reconcile, pause, resume, approve, profile, import.
    Kubectl(crate::cli::kubectl::PluginArgs),
    /// Ask the running operator's health endpoint, as the kubelet's exec probe does: prints
    /// its answer (so a failing readiness probe shows the reason in the pod's events) and exits
    /// non-zero unless it answered 200.
    Probe(ProbeArgs),
    /// Print the Markdown table of `run`'s flags that docs/configuration.md holds, or rewrite
    /// the table in that page (for the documentation's maintainers).
    #[command(hide = true)]
    ConfigReference(ConfigReferenceArgs),
    /// Print the table of condition reasons that docs/status.md holds, or rewrite it there and
    /// the Argo CD health cases in hack/ (run from the repository root).
    #[command(hide = true)]
    ReasonReference(ReasonReferenceArgs),
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The endpoint to ask.
    #[arg(value_enum)]
    pub endpoint: ProbeEndpoint,
    /// The operator's `/metrics`, `/healthz` and `/readyz` address, as `run` has it (an
    /// unspecified address such as 0.0.0.0 is asked on the loopback).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeEndpoint {
    Readyz,
    Healthz,
}

impl ProbeEndpoint {
    pub fn path(self) -> &'static str {
        match self {
            Self::Readyz => "/readyz",
            Self::Healthz => "/healthz",
        }
    }
}

#[derive(Debug, Args)]
pub struct ReasonReferenceArgs {
    /// Rewrite docs/status.md's table and hack/argocd-health-cases.lua instead of printing.
    #[arg(long)]
    pub write: bool,
}

#[derive(Debug, Args)]
pub struct ConfigReferenceArgs {
    /// Replace the generated table between the page's markers instead of printing it.
    #[arg(long, value_name = "PAGE")]
    pub write: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write `<plural>.<group>.yaml` files into these directories instead of printing them.
    #[arg(long = "output-dir", value_name = "DIR")]
    pub output_dirs: Vec<PathBuf>,
    /// Write them also as templates of the Helm chart in DIR (into DIR/templates/crds/): the
    /// same YAML, guarded by the value `crds.install` and annotated
    /// `helm.sh/resource-policy: keep`, so that `helm upgrade` upgrades them and
    /// `helm uninstall` keeps them.
    #[arg(long = "helm-chart", value_name = "DIR")]
    pub helm_charts: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Base URL of the Altostrat API (without the /vpn prefix).
    #[arg(
        long,
        env = "ALTOSTRAT_API_URL",
        default_value = "https://v1.api.altostrat.io"
    )]
    pub api_url: String,

    /// Default Altostrat API token, for resources that name no credentialsSecretRef. Prefer
    /// --api-token-file with a mounted Secret: this value is fixed until a restart.
    #[arg(
        long,
        env = "ALTOSTRAT_API_TOKEN",
        hide_env_values = true,
        conflicts_with = "api_token_file"
    )]
    pub api_token: Option<String>,

    /// File holding the default Altostrat API token (e.g. a mounted Secret key). It is read
    /// again whenever it changes, so a rotated Secret is used without a restart.
    #[arg(long, env = "ALTOSTRAT_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,

    /// How long the Altostrat API may refuse the default token (401 or 403) before the
    /// operator reports it: /readyz then answers 503 with the reason (so `kubectl rollout
    /// status` and `helm install --wait` fail and the pod's readiness message says why), one
    /// ERROR is logged and the metric vpn_operator_default_token_rejected is 1. It covers a
    /// rotation: Altostrat drops the old key at once, and the kubelet writes the updated Secret
    /// into the pod a minute or more later. A token that Altostrat has not accepted once since
    /// it was loaded fails readiness from its first refusal (only the ERROR and the metric wait
    /// for the grace), so a wrong token never passes an install. Outages (5xx, timeouts, 429)
    /// never fail readiness, nor does a missing default token; /healthz never fails for it.
    #[arg(long, env = "DEFAULT_TOKEN_GRACE", default_value = "3m", value_parser = parse_duration)]
    pub default_token_grace: Duration,

    /// Namespaces whose resources may use the default token, comma separated. Empty: all.
    /// Resources elsewhere must name their own credentials (credentialsSecretRef).
    #[arg(long, env = "DEFAULT_TOKEN_NAMESPACES", value_delimiter = ',', num_args = 0..)]
    pub default_token_namespaces: Vec<String>,

    /// Namespaces to watch, comma separated. Empty: all namespaces.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',', num_args = 0..)]
    pub watch_namespaces: Vec<String>,

    /// Only reconcile resources matching this label selector (e.g. `team=net`).
    #[arg(long, env = "LABEL_SELECTOR")]
    pub label_selector: Option<String>,

    /// The shortest interval between two comparisons of a resource with Altostrat (drift is
    /// corrected); with many objects per token the API budget makes it longer.
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// VpnInstances reconciled in parallel.
    #[arg(long, env = "INSTANCE_CONCURRENCY", default_value_t = 8)]
    pub instance_concurrency: u16,

    /// VpnPeers reconciled in parallel.
    #[arg(long, env = "PEER_CONCURRENCY", default_value_t = 8)]
    pub peer_concurrency: u16,

    /// Altostrat API budget per token, in requests per minute (Altostrat documents 60). A
    /// credentials Secret's `requestsPerMinute` key overrides it for its token.
    #[arg(long, env = "ALTOSTRAT_API_RATE_LIMIT", default_value_t = 60)]
    pub api_rate_limit: u32,

    /// Requests a token may send back to back before the rate limit spaces them out. Part of
    /// the rate, not on top of it: no 60 s ever carry more than --api-rate-limit requests.
    #[arg(long, env = "ALTOSTRAT_API_BURST", default_value_t = 5)]
    pub api_burst: u32,

    /// The most of each token's rate spent observing (lists and GETs; writes go first). The
    /// drift cycle, how long until every object has been compared with Altostrat, follows
    /// from it: (1 + instances) lists / (rate × share), and at least --resync-interval.
    #[arg(long, env = "ALTOSTRAT_API_OBSERVE_SHARE", default_value_t = 0.25)]
    pub api_observe_share: f64,

    /// The longest interval between two looks at a provisioning instance (one instance list
    /// per token covers every provisioning instance of it).
    #[arg(long, env = "PROVISIONING_POLL_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub provisioning_poll_interval: Duration,

    /// Timeout of one Altostrat request. With leader election every request must end before a
    /// standby may take over, so it is clamped to four fifths of the lease duration minus the
    /// renew deadline (4s with the default timings), with a warning at start-up.
    #[arg(long, env = "ALTOSTRAT_API_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub api_timeout: Duration,

    /// PEM file with extra CA certificates to trust for the Altostrat API (e.g. a corporate
    /// TLS-inspecting proxy's CA), on top of the bundled roots and the platform's CA store.
    #[arg(long, env = "ALTOSTRAT_API_CA_FILE")]
    pub api_ca_file: Option<PathBuf>,

    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Log line format; the level is set with RUST_LOG (e.g. `debug`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Only one replica reconciles at a time, chosen through a coordination.k8s.io Lease.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader Lease (defaults to POD_NAMESPACE, then `default`).
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "LEADER_ELECTION_LEASE_NAME",
        default_value = "altostrat-vpn-operator"
    )]
    pub leader_election_lease_name: String,

    /// How long a leader's lease stays valid without renewal; a standby takes over after it.
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// How long the leader keeps trying to renew before it stops leading; must be shorter than
    /// the lease duration (default: two thirds of it, 10s for 15s).
    #[arg(long, env = "LEADER_ELECTION_RENEW_DEADLINE", value_parser = parse_duration)]
    pub leader_election_renew_deadline: Option<Duration>,

    /// How often the leader renews and a standby tries to take over; must be shorter than the
    /// renew deadline (default: two fifteenths of the lease duration, 2s for 15s).
    #[arg(long, env = "LEADER_ELECTION_RETRY_PERIOD", value_parser = parse_duration)]
    pub leader_election_retry_period: Option<Duration>,

    /// The name of this installation in the ownership records it writes (default: the leader
    /// Lease's namespace and name). Two installations in one cluster must differ: each leaves
    /// the other's records alone.
    #[arg(long, env = "INSTALLATION")]
    pub installation: Option<String>,

    /// Identity of this replica in the leader Lease and in events (the pod name, from the
    /// downward API; default: a random name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Namespace of this replica (from the downward API): the leader Lease's namespace unless
    /// --leader-election-namespace is set.
    #[arg(long, env = "POD_NAMESPACE", hide = true)]
    pub pod_namespace: Option<String>,

    /// What happens to the Altostrat object of a resource that leaves `deletionPolicy` unset
    /// and created its object, when its VpnCredentials set no `deletionPolicy`: `Delete` or
    /// `Orphan`. Adopted objects are orphaned by default whatever this says.
    #[arg(long, env = "DEFAULT_DELETION_POLICY", default_value = "Delete", value_parser = parse_deletion_policy)]
    pub default_deletion_policy: crate::crd::DeletionPolicy,

    /// How long a VpnCredentials' token may go without an answer before a check call
    /// (`GET /vpn/servers/regions`) judges it; its status is recomputed this often too.
    #[arg(long, env = "CREDENTIALS_CHECK_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub credentials_check_interval: Duration,
}

fn parse_deletion_policy(value: &str) -> Result<crate::crd::DeletionPolicy, String> {
    match value {
        "Delete" => Ok(crate::crd::DeletionPolicy::Delete),
        "Orphan" => Ok(crate::crd::DeletionPolicy::Orphan),
        other => Err(format!("{other:?} is not a deletion policy: Delete or Orphan")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_run_defaults_are_production_ready() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["vpn-operator", "run", "--watch-namespaces", "a,b"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(args.api_url, "https://v1.api.altostrat.io");
        assert_eq!(args.watch_namespaces, vec!["a", "b"]);
        assert_eq!(args.api_rate_limit, 60);
        assert_eq!(args.resync_interval, Duration::from_secs(300));
        assert!(!args.leader_election);
        assert_eq!(args.default_deletion_policy, crate::crd::DeletionPolicy::Delete);
        assert_eq!(
            args.default_token_grace,
            crate::controller::default_token::DEFAULT_GRACE
        );
    }
}
