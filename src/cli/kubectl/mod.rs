//! The kubectl plugin: `kubectl altostrat …` (this binary on PATH under the name
//! `kubectl-altostrat`) or `vpn-operator kubectl …`. It reads and annotates resources with the
//! user's kubeconfig, as kubectl does; it never talks to Altostrat except through `import`.

mod view;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;

pub use view::{View, plan_text, status_tree};

use crate::cli::BoxError;
use crate::crd::{
    APPROVE_PLAN_ANNOTATION, PAUSED_ANNOTATION, RECONCILE_REQUEST_ANNOTATION, VpnInstance, VpnPeer,
};

/// The name kubectl finds the plugin by (`kubectl altostrat` runs `kubectl-altostrat`).
pub const PLUGIN_BINARY: &str = "kubectl-altostrat";

/// `kubectl altostrat`: see and steer Altostrat VPN hubs and peers.
#[derive(Debug, Parser)]
#[command(name = PLUGIN_BINARY, bin_name = "kubectl altostrat", version)]
pub struct Plugin {
    #[command(flatten)]
    pub args: PluginArgs,
}

#[derive(Debug, Args)]
pub struct PluginArgs {
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the resources (default: the context's namespace).
    #[arg(long, short = 'n', global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Each hub, its peers and their profile Secrets, with Ready/Synced, the reason, and what
    /// each waits for.
    Status {
        /// Only this VpnInstance (and its peers).
        hub: Option<String>,
    },
    /// The Altostrat calls a resource withholds (status.plan), with the fields they change.
    Plan { resource: Target },
    /// Compare a resource with Altostrat now (sets vpn.altostrat.io/reconcile-requested-at).
    Reconcile { resource: Target },
    /// Stop writing to Altostrat for a resource (sets vpn.altostrat.io/paused: "true").
    Pause { resource: Target },
    /// Remove the pause: the withheld calls are sent.
    Resume { resource: Target },
    /// Approve the plan a `managementPolicy: Plan` resource shows (sets
    /// vpn.altostrat.io/approve-plan to its status.planDigest).
    Approve {
        resource: Target,
        /// Approve only if the plan's digest is still this one (as `plan` printed it).
        #[arg(long)]
        digest: Option<String>,
    },
    /// Write a peer's client profile from its profile Secret to a file (mode 0600).
    Profile {
        /// The VpnPeer.
        peer: String,
        /// The file to write (default: the profile's key, such as wg0.conf).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Manifests that adopt hubs and peers Altostrat already holds (see `vpn-operator import`).
    Import(Box<crate::cli::import::ImportArgs>),
    /// Print a shell completion script for kubectl-altostrat.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// A resource named as kubectl names it: `vpninstance/NAME`, `vpnpeer/NAME` (or their short
/// names `vpni`, `vpnp`), or a bare NAME, looked up as either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: Option<Kind>,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Instance,
    Peer,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let Some((kind, name)) = text.split_once('/') else {
            return Ok(Target {
                kind: None,
                name: text.to_owned(),
            });
        };
        let kind = match kind.to_ascii_lowercase().as_str() {
            "vpninstance" | "vpninstances" | "vpni" | "instance" | "hub" => Kind::Instance,
            "vpnpeer" | "vpnpeers" | "vpnp" | "peer" => Kind::Peer,
            other => return Err(format!("{other:?} is neither vpninstance nor vpnpeer")),
        };
        Ok(Target {
            kind: Some(kind),
            name: name.to_owned(),
        })
    }
}

/// Whether this process was started under the plugin's name (argv[0] `kubectl-altostrat`).
pub fn invoked_as_plugin(argv0: &str) -> bool {
    Path::new(argv0)
        .file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|stem| stem == PLUGIN_BINARY)
}

/// Runs one plugin command.
pub async fn run(args: PluginArgs) -> Result<(), BoxError> {
    match &args.command {
        PluginCommand::Import(import) => return crate::cli::import::run(import).await,
        PluginCommand::Completion { shell } => {
            use std::io::Write;
            std::io::stdout().write_all(&completion(*shell))?;
            return Ok(());
        }
        _ => {}
    }
    let (client, namespace) = connect(&args).await?;
    let out = execute(&args.command, &client, &namespace).await?;
    print!("{out}");
    Ok(())
}

/// The completion script of `shell` for the command `kubectl-altostrat`.
pub fn completion(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = Plugin::command().bin_name(PLUGIN_BINARY);
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, PLUGIN_BINARY, &mut script);
    script
}

/// The command's effect, and what it prints.
pub async fn execute(command: &PluginCommand, client: &Client, namespace: &str) -> Result<String, BoxError> {
    match command {
        PluginCommand::Status { hub } => status(client, namespace, hub.as_deref()).await,
        PluginCommand::Plan { resource } => Ok(plan_text(&fetch(client, namespace, resource).await?)),
        PluginCommand::Reconcile { resource } => {
            let at = k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second)?;
            annotate(
                client,
                namespace,
                resource,
                RECONCILE_REQUEST_ANNOTATION,
                Some(&at.to_string()),
            )
            .await
        }
        PluginCommand::Pause { resource } => {
            annotate(client, namespace, resource, PAUSED_ANNOTATION, Some("true")).await
        }
        PluginCommand::Resume { resource } => {
            annotate(client, namespace, resource, PAUSED_ANNOTATION, None).await
        }
        PluginCommand::Approve { resource, digest } => {
            approve(client, namespace, resource, digest.as_deref()).await
        }
        PluginCommand::Profile { peer, output } => profile(client, namespace, peer, output.as_deref()).await,
        PluginCommand::Import(_) | PluginCommand::Completion { .. } => Ok(String::new()),
    }
}

/// A client for the kubeconfig and context asked for, and the namespace to work in.
async fn connect(args: &PluginArgs) -> Result<(Client, String), BoxError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &options).await?,
        None => Config::from_kubeconfig(&options).await?,
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

async fn status(client: &Client, namespace: &str, hub: Option<&str>) -> Result<String, BoxError> {
    let mut instances = Api::<VpnInstance>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let mut peers = Api::<VpnPeer>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    if let Some(hub) = hub {
        instances.retain(|i| i.name_any() == hub);
        peers.retain(|p| view::hub_of(p) == (namespace.to_owned(), hub.to_owned()));
    }
    instances.sort_by_key(|i| i.name_any());
    peers.sort_by_key(|p| p.name_any());
    let secrets = present_secrets(client, namespace, &peers).await?;
    Ok(status_tree(&instances, &peers, &secrets))
}

/// The profile Secrets the peers ask for that exist (read by metadata only: no profile is
/// fetched to print a status).
async fn present_secrets(
    client: &Client,
    namespace: &str,
    peers: &[VpnPeer],
) -> Result<BTreeSet<String>, BoxError> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let mut present = BTreeSet::new();
    for name in peers
        .iter()
        .filter_map(|p| p.spec.profile_secret.as_ref().map(|s| &s.name))
    {
        if api.get_metadata_opt(name).await?.is_some() {
            present.insert(name.clone());
        }
    }
    Ok(present)
}

/// The resource `target` names, as a [`View`].
async fn fetch(client: &Client, namespace: &str, target: &Target) -> Result<View, BoxError> {
    Ok(match resolve(client, namespace, target).await? {
        Kind::Instance => View::from(&instances(client, namespace).get(&target.name).await?),
        Kind::Peer => View::from(&peers(client, namespace).get(&target.name).await?),
    })
}

fn instances(client: &Client, namespace: &str) -> Api<VpnInstance> {
    Api::namespaced(client.clone(), namespace)
}

fn peers(client: &Client, namespace: &str) -> Api<VpnPeer> {
    Api::namespaced(client.clone(), namespace)
}

/// The kind of `target`: as written, or the one kind that has a resource of that name.
async fn resolve(client: &Client, namespace: &str, target: &Target) -> Result<Kind, BoxError> {
    if let Some(kind) = target.kind {
        return Ok(kind);
    }
    let name = &target.name;
    let hub = instances(client, namespace)
        .get_metadata_opt(name)
        .await?
        .is_some();
    let peer = peers(client, namespace).get_metadata_opt(name).await?.is_some();
    match (hub, peer) {
        (true, false) => Ok(Kind::Instance),
        (false, true) => Ok(Kind::Peer),
        (true, true) => Err(format!(
            "both a VpnInstance and a VpnPeer are named {name}: write vpni/{name} or vpnp/{name}"
        )
        .into()),
        (false, false) => Err(format!("no VpnInstance or VpnPeer {name} in namespace {namespace}").into()),
    }
}

/// Sets (or, with `None`, removes) one annotation of the resource, by a merge patch.
async fn annotate(
    client: &Client,
    namespace: &str,
    target: &Target,
    key: &str,
    value: Option<&str>,
) -> Result<String, BoxError> {
    let patch = Patch::Merge(json!({"metadata": {"annotations": {key: value}}}));
    let params = PatchParams::default();
    let kind = resolve(client, namespace, target).await?;
    let shown = match kind {
        Kind::Instance => {
            instances(client, namespace)
                .patch(&target.name, &params, &patch)
                .await?;
            "vpninstance"
        }
        Kind::Peer => {
            peers(client, namespace)
                .patch(&target.name, &params, &patch)
                .await?;
            "vpnpeer"
        }
    };
    let what = value.map_or_else(|| format!("{key} removed"), |v| format!("{key}={v}"));
    Ok(format!("{shown}/{} annotated: {what}\n", target.name))
}

/// Approves the plan the resource shows now, after checking that its digest is the one of its
/// calls (and the one the user saw, with `--digest`).
async fn approve(
    client: &Client,
    namespace: &str,
    target: &Target,
    seen: Option<&str>,
) -> Result<String, BoxError> {
    let view = fetch(client, namespace, target).await?;
    let Some(digest) = view.plan_digest.clone().filter(|_| !view.plan.is_empty()) else {
        return Err(format!("{}/{} shows no plan to approve", view.kind, view.name).into());
    };
    if crate::controller::approval::digest(&view.plan).as_deref() != Some(digest.as_str()) {
        return Err(
            "status.planDigest is not the digest of status.plan: the plan is being rewritten; try again"
                .into(),
        );
    }
    if let Some(seen) = seen.filter(|seen| *seen != digest) {
        return Err(format!("the plan changed: its digest is {digest}, not {seen}; look at it again").into());
    }
    let target = Target {
        kind: Some(if view.kind == "VpnInstance" {
            Kind::Instance
        } else {
            Kind::Peer
        }),
        name: view.name.clone(),
    };
    let done = annotate(client, namespace, &target, APPROVE_PLAN_ANNOTATION, Some(&digest)).await?;
    Ok(format!("{}{done}", plan_text(&view)))
}

/// The keys a profile Secret holds the profile under (see `controller::profile`).
const PROFILE_KEYS: [&str; 2] = ["wg0.conf", "client.ovpn"];

/// Writes the peer's profile to `output` (default: the key's name), readable by its owner only.
async fn profile(
    client: &Client,
    namespace: &str,
    peer: &str,
    output: Option<&Path>,
) -> Result<String, BoxError> {
    let resource = peers(client, namespace).get(peer).await?;
    let Some(wanted) = resource.spec.profile_secret else {
        return Err(format!("vpnpeer/{peer} asks for no profile Secret (spec.profileSecret)").into());
    };
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(&wanted.name)
        .await?
        .ok_or_else(|| {
            format!(
                "secret/{} is not there yet: see kubectl altostrat status",
                wanted.name
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let (key, bytes) = PROFILE_KEYS
        .iter()
        .find_map(|key| data.get(*key).map(|v| (*key, v.0.clone())))
        .ok_or_else(|| format!("secret/{} holds no profile", wanted.name))?;
    let path = output.map_or_else(|| PathBuf::from(key), Path::to_path_buf);
    write_private(&path, &bytes)?;
    Ok(format!(
        "{} written from secret/{} (mode 0600)\n",
        path.display(),
        wanted.name
    ))
}

/// Writes `bytes` to `path` with mode 0600, also when the file existed with another mode.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)
    }
    #[cfg(not(unix))]
    options.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_named_as_kubectl_names_them() {
        let t: Target = "vpni/corp".parse().unwrap();
        assert_eq!(
            t,
            Target {
                kind: Some(Kind::Instance),
                name: "corp".into()
            }
        );
        let t: Target = "vpnpeer/alice".parse().unwrap();
        assert_eq!(t.kind, Some(Kind::Peer));
        let t: Target = "alice".parse().unwrap();
        assert_eq!(t.kind, None);
        assert!("pod/x".parse::<Target>().is_err());
    }

    #[test]
    fn the_binary_is_the_plugin_under_its_plugin_name() {
        assert!(invoked_as_plugin("/usr/local/bin/kubectl-altostrat"));
        assert!(invoked_as_plugin("kubectl-altostrat.exe"));
        assert!(!invoked_as_plugin("/usr/bin/vpn-operator"));
        Plugin::command().debug_assert();
        let bash = String::from_utf8(completion(clap_complete::Shell::Bash)).unwrap();
        assert!(bash.contains("-o default kubectl-altostrat"), "{bash}");
        let parsed = Plugin::try_parse_from([
            "kubectl-altostrat",
            "-n",
            "net",
            "approve",
            "vpni/corp",
            "--digest",
            "ab",
        ])
        .unwrap();
        assert_eq!(parsed.args.namespace.as_deref(), Some("net"));
    }

    #[test]
    fn a_profile_is_written_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.conf");
        std::fs::write(&path, "old").unwrap();
        write_private(&path, b"[Interface]").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"[Interface]");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
