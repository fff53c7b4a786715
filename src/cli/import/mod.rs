//! `vpn-operator import` (and `kubectl altostrat import`): manifests that adopt the hubs and
//! peers an Altostrat account already has, so that applying them writes nothing there.
//!
//! Altostrat is read by list only (one instance list, one peer list per chosen hub), through
//! the operator's own client stack: the per-token budget, retries and `Retry-After` apply.
//! The specs come from `spec.rs` (checked against the operator's own diff), the files from
//! `render.rs` (pure and deterministic).

mod render;
mod spec;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::{StreamExt, TryStreamExt};

pub use render::{Hub, ManifestFile, Manifests, dns_label, manifests, unique_names};
pub use spec::{Adoption, Imported, instance_spec, peer_spec};

use crate::altostrat::{
    ApiResult, ApiToken, Budget, BudgetConfig, HttpClient, HttpClientConfig, Resilient, RetryPolicy, VpnApi,
};
use crate::cli::BoxError;
use crate::crd::DeletionPolicy;
use crate::duration::parse_duration;

#[derive(Clone, Debug, Args)]
pub struct ImportArgs {
    /// Base URL of the Altostrat API (without the /vpn prefix).
    #[arg(
        long,
        env = "ALTOSTRAT_API_URL",
        default_value = "https://v1.api.altostrat.io"
    )]
    pub api_url: String,

    /// Altostrat API token. Prefer --api-token-file: a value on the command line is seen by
    /// other users of the machine.
    #[arg(
        long,
        env = "ALTOSTRAT_API_TOKEN",
        hide_env_values = true,
        conflicts_with = "api_token_file"
    )]
    pub api_token: Option<String>,

    /// File holding the Altostrat API token.
    #[arg(long, env = "ALTOSTRAT_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,

    /// PEM file with extra CA certificates to trust for the Altostrat API.
    #[arg(long, env = "ALTOSTRAT_API_CA_FILE")]
    pub api_ca_file: Option<PathBuf>,

    /// Requests per minute this import may send with the token. Altostrat allows 60 per token
    /// in all: give the import what an operator using the same token leaves over.
    #[arg(long, env = "ALTOSTRAT_API_RATE_LIMIT", default_value_t = 60)]
    pub api_rate_limit: u32,

    /// Timeout of one Altostrat request.
    #[arg(long, env = "ALTOSTRAT_API_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub api_timeout: Duration,

    /// Import only the hubs with these hostnames (the DNS label or the full name), comma
    /// separated. With --region too, a hub must match both.
    #[arg(long, value_delimiter = ',', value_name = "HOSTNAME")]
    pub hostname: Vec<String>,

    /// Import only the hubs in these regions (codes such as `fra`), comma separated.
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub region: Vec<String>,

    /// Namespace of the resources written.
    #[arg(
        long = "target-namespace",
        default_value = "default",
        value_name = "NAMESPACE"
    )]
    pub target_namespace: String,

    /// `deletionPolicy` of the resources written. Unset: adopted objects are orphaned when
    /// their resource is deleted (the ownership rule's default).
    #[arg(long, value_parser = parse_deletion_policy, value_name = "Delete|Orphan")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// `credentialsSecretRef` of the hubs written: the Secret (in the target namespace) that
    /// holds the token the operator should use for them. Unset: the operator's default token.
    #[arg(long, value_name = "SECRET", conflicts_with = "credentials")]
    pub credentials_secret: Option<String>,

    /// `credentialsRef` of the hubs written: the cluster-scoped VpnCredentials the operator
    /// should use for them (it must grant the target namespace).
    #[arg(long, value_name = "VPNCREDENTIALS")]
    pub credentials: Option<String>,

    /// Write one file per hub (`<hub>.yaml`, the hub and its peers) into this directory
    /// instead of one multi-document stream to stdout.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

fn parse_deletion_policy(value: &str) -> Result<DeletionPolicy, String> {
    match value {
        "Delete" => Ok(DeletionPolicy::Delete),
        "Orphan" => Ok(DeletionPolicy::Orphan),
        other => Err(format!("{other:?} is neither Delete nor Orphan")),
    }
}

/// Which hubs to import.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub hostnames: Vec<String>,
    pub regions: Vec<String>,
}

impl Selection {
    fn admits(&self, instance: &crate::altostrat::model::Instance) -> bool {
        let hostname = |h: &String| {
            h.eq_ignore_ascii_case(instance.hostname_label()) || h.eq_ignore_ascii_case(&instance.hostname)
        };
        (self.hostnames.is_empty() || self.hostnames.iter().any(hostname))
            && (self.regions.is_empty() || self.regions.iter().any(|r| r == &instance.region))
    }
}

/// Peer lists asked for at once; the budget spaces them out all the same.
const PEER_LISTS_IN_FLIGHT: usize = 4;

/// The chosen hubs and their peers, by list only: one instance list, then one peer list per
/// hub, in the hubs' order.
pub async fn read<A: VpnApi>(api: &A, token: &ApiToken, selection: &Selection) -> ApiResult<Vec<Hub>> {
    let instances = api.list_instances(token).await?;
    futures::stream::iter(instances.into_iter().filter(|i| selection.admits(i)))
        .map(|instance| async move {
            let peers = api.list_peers(token, &instance.id, None).await?;
            Ok(Hub { instance, peers })
        })
        .buffered(PEER_LISTS_IN_FLIGHT)
        .try_collect()
        .await
}

/// An import holds no worker others wait for: it waits out any `Retry-After` in place (the
/// budget caps it at ten minutes) instead of failing the whole import.
pub const RETRIES: RetryPolicy = RetryPolicy {
    max_attempts: 6,
    base_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(5),
    max_inline_retry_after: Duration::from_secs(600),
};

/// The import's client: the operator's stack, with a budget of `--api-rate-limit` that waits
/// for its turn rather than refusing (nothing else shares this process's lane).
pub fn client(args: &ImportArgs) -> Result<Resilient<HttpClient>, BoxError> {
    let http = HttpClient::new(HttpClientConfig {
        base_url: args.api_url.clone(),
        request_timeout: args.api_timeout,
        ca_file: args.api_ca_file.clone(),
        ..HttpClientConfig::default()
    })?;
    let budget = Budget::new(BudgetConfig {
        rate_per_minute: args.api_rate_limit.max(1),
        observe_share: 1.0,
        poll_share: 1.0,
        max_queue_wait: Duration::from_secs(24 * 3600),
        ..BudgetConfig::default()
    });
    let metrics = Arc::new(crate::metrics::Metrics::register(&mut Default::default()));
    Ok(Resilient::new(http, Arc::new(budget), RETRIES, metrics))
}

/// The token, as the operator reads it: the file's content trimmed, or the flag or variable.
/// It is never printed.
pub fn token(args: &ImportArgs) -> Result<ApiToken, BoxError> {
    let token = match (&args.api_token_file, &args.api_token) {
        (Some(path), _) => ApiToken::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("reading the API token file {}: {e}", path.display()))?,
        ),
        (None, Some(token)) => ApiToken::new(token),
        (None, None) => ApiToken::new(""),
    };
    if token.is_empty() {
        return Err("no Altostrat API token: set --api-token-file or ALTOSTRAT_API_TOKEN".into());
    }
    Ok(token)
}

/// Reads the chosen hubs and writes their manifests; what the CRDs cannot hold goes to stderr.
pub async fn run(args: &ImportArgs) -> Result<(), BoxError> {
    let token = token(args)?;
    let api = client(args)?;
    let selection = Selection {
        hostnames: args.hostname.clone(),
        regions: args.region.clone(),
    };
    let hubs = read(&api, &token, &selection).await?;
    let adoption = Adoption {
        deletion_policy: args.deletion_policy,
        credentials_secret: args.credentials_secret.clone(),
        credentials: args.credentials.clone(),
    };
    let manifests = manifests(&hubs, &args.target_namespace, &adoption)?;
    write(&manifests, args.output_dir.as_deref())?;
    for finding in &manifests.findings {
        eprintln!("import: {finding}");
    }
    eprintln!(
        "import: {} hubs, {} resources written",
        manifests.files.len(),
        manifests.joined().matches("\nkind: ").count()
    );
    Ok(())
}

fn write(manifests: &Manifests, dir: Option<&std::path::Path>) -> Result<(), BoxError> {
    let Some(dir) = dir else {
        use std::io::Write;
        std::io::stdout().write_all(manifests.joined().as_bytes())?;
        return Ok(());
    };
    std::fs::create_dir_all(dir)?;
    for file in &manifests.files {
        std::fs::write(dir.join(&file.file), &file.yaml)?;
    }
    Ok(())
}

#[cfg(all(test, feature = "simulator"))]
mod tests;
