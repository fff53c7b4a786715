//! End to end: `vpn-operator import` adopts what a portal made (the real binary, the simulator
//! over HTTP, a real kube-apiserver), and every command of the kubectl plugin (the binary under
//! the name `kubectl-altostrat`) against the control plane.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use altostrat_vpn_operator::crd::{
    APPROVE_PLAN_ANNOTATION, PAUSED_ANNOTATION, ProfileSecretSpec, RECONCILE_REQUEST_ANNOTATION, VpnInstance,
    VpnPeer,
};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

const HUBS: usize = 50;
const PEERS_PER_HUB: usize = 10;

/// Makes hubs and peers as the Altostrat portal would: through the API, with a token.
struct Portal {
    base_url: String,
    http: reqwest::Client,
}

impl Portal {
    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base_url);
        let answer = self
            .http
            .post(url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        answer.error_for_status().unwrap().json().await.unwrap()
    }

    /// A hub with its peers: half clients (one in three full-tunnel), half sites.
    async fn hub(&self, n: usize) {
        let hub = json!({"name": format!("Branch {n:02}"), "hostname": format!("branch-{n:02}"), "region": if n.is_multiple_of(2) { "sjc" } else { "fra" }});
        let id = self.post("/vpn/instances", hub).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for p in 0..PEERS_PER_HUB {
            let owner = format!("{:08x}-0000-4000-8000-{n:06}{p:06}", 0xa1b2c3d4u32 + p as u32);
            let peer = if p.is_multiple_of(2) {
                json!({"type": "client", "protocol": "wireguard", "user_id": owner, "route_all": p.is_multiple_of(3)})
            } else {
                json!({"type": "site", "protocol": "openvpn", "site_id": owner, "subnets": [format!("10.{n}.{p}.0/24")]})
            };
            self.post(&format!("/vpn/instances/{id}/peers"), peer).await;
        }
    }
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_vpn-operator")
}

/// Runs `command` off the test's runtime, which serves the simulator meanwhile.
async fn output(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// Runs `vpn-operator import` against the simulator; returns its stdout (stderr must not
/// hold the token).
async fn import(base_url: &str, namespace: &str) -> String {
    let mut command = Command::new(binary());
    command
        .args(["import", "--api-url", base_url, "--api-rate-limit", "100000"])
        .args(["--target-namespace", namespace])
        .env("ALTOSTRAT_API_TOKEN", TOKEN);
    let output = output(command).await;
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// Server-side applies every document of `manifests`; returns how many of each kind.
async fn apply_all(client: &Client, namespace: &str, manifests: &str) -> (usize, usize) {
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), namespace);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), namespace);
    let (mut hubs, mut members) = (0, 0);
    for document in manifests.split("---\n").filter(|d| d.contains("kind:")) {
        let value: Value = serde_saphyr::from_str(document).unwrap();
        match value["kind"].as_str() {
            Some("VpnInstance") => {
                apply(&instances, &serde_json::from_value(value).unwrap()).await;
                hubs += 1;
            }
            Some("VpnPeer") => {
                apply(&peers, &serde_json::from_value(value).unwrap()).await;
                members += 1;
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }
    (hubs, members)
}

/// The write calls the simulator has counted since its last reset.
async fn writes(simc: &SimClient) -> Vec<(String, u64)> {
    let writes = ["POST ", "PUT ", "DELETE "];
    let calls = simc.calls().await;
    calls
        .into_iter()
        .filter(|(k, _)| writes.iter().any(|w| k.starts_with(w)))
        .collect()
}

async fn all_ready(client: &Client, namespace: &str) -> Option<()> {
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), namespace);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), namespace);
    let hubs = instances.list(&ListParams::default()).await.ok()?.items;
    let members = peers.list(&ListParams::default()).await.ok()?.items;
    let ready = hubs.iter().all(instance_ready) && members.iter().all(peer_ready);
    (ready && hubs.len() == HUBS && members.len() == HUBS * PEERS_PER_HUB).then_some(())
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn imported_hubs_and_peers_become_ready_without_a_write_and_are_orphaned_on_deletion() {
    let started = Instant::now();
    let client = kube().await;
    let ns = namespace(&client, "e2e-import").await;
    let sim = simulator(Duration::from_millis(200)).await;
    let simc = SimClient::new(&sim);
    let portal = Portal {
        base_url: simc.base_url.clone(),
        http: reqwest::Client::new(),
    };
    for n in 0..HUBS {
        portal.hub(n).await;
    }
    simc.reset_calls().await;
    let first = import(&simc.base_url, &ns).await;
    let calls = simc.calls().await;
    assert_eq!(
        calls.values().sum::<u64>(),
        1 + HUBS as u64,
        "lists only: {calls:?}"
    );
    let second = import(&simc.base_url, &ns).await;
    assert_eq!(first, second, "a second import is byte-identical");

    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    assert_eq!(
        apply_all(&client, &ns, &first).await,
        (HUBS, HUBS * PEERS_PER_HUB)
    );
    eventually("every imported resource Ready", Duration::from_secs(240), || {
        all_ready(&client, &ns)
    })
    .await;
    assert_eq!(
        writes(&simc).await,
        vec![],
        "adopting what the manifests describe writes nothing"
    );

    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);
    let dp = DeleteParams::default();
    peers
        .delete_collection(&dp, &ListParams::default())
        .await
        .unwrap();
    instances
        .delete_collection(&dp, &ListParams::default())
        .await
        .unwrap();
    eventually(
        "the imported resources gone",
        Duration::from_secs(120),
        || async {
            let left = instances.list(&ListParams::default()).await.ok()?.items.len()
                + peers.list(&ListParams::default()).await.ok()?.items.len();
            (left == 0).then_some(())
        },
    )
    .await;
    assert_eq!(writes(&simc).await, vec![], "Orphan: Altostrat is left untouched");
    assert_eq!(simc.instances().await.len(), HUBS);
    assert_eq!(sim.simulator().peers().len(), HUBS * PEERS_PER_HUB);
    operator.stop().await;
    eprintln!("import e2e took {:?}", started.elapsed());
}

const USER: &str = "a1b2c3d4-e5f6-7890-1234-567890abcdef";
const OTHER_USER: &str = "b2c3d4e5-f6a7-8901-2345-67890abcdef1";

/// The binary under the plugin's name, as kubectl runs it.
struct Plugin {
    path: PathBuf,
    namespace: String,
    _dir: tempfile::TempDir,
}

impl Plugin {
    fn new(namespace: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubectl-altostrat");
        std::os::unix::fs::symlink(binary(), &path).unwrap();
        Self {
            path,
            namespace: namespace.to_owned(),
            _dir: dir,
        }
    }

    /// Runs `kubectl altostrat ARGS -n NAMESPACE`; its stdout, or a panic with its stderr.
    async fn run(&self, args: &[&str]) -> String {
        let mut command = Command::new(&self.path);
        command.args(args).args(["-n", &self.namespace]);
        let output = output(command).await;
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(output.status.success(), "kubectl altostrat {args:?}: {stderr}");
        String::from_utf8(output.stdout).unwrap()
    }
}

fn annotation(o: &impl ResourceExt, key: &str) -> Option<String> {
    o.annotations().get(key).cloned()
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn every_plugin_command_works_against_the_control_plane() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-plugin").await;
    let sim = simulator(Duration::from_millis(200)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);
    let hostname = format!("corp-{}", &ns[ns.len() - 8..]);
    apply(&instances, &instance_manifest("corp", &hostname, json!({}))).await;
    let mut alice = client_peer_manifest("alice", "corp", USER);
    alice.spec.profile_secret = Some(ProfileSecretSpec {
        name: "alice-vpn".into(),
    });
    apply(&peers, &alice).await;
    let mut bob = client_peer_manifest("bob", "corp", OTHER_USER);
    bob.spec.management_policy = altostrat_vpn_operator::crd::ManagementPolicy::Plan;
    apply(&peers, &bob).await;
    wait_instance(&instances, "corp", "corp Ready", instance_ready).await;
    wait_peer(&peers, "alice", "alice's profile delivered", |p| {
        p.status
            .as_ref()
            .and_then(|s| condition(&s.conditions, "ProfileReady"))
            .is_some_and(|c| c.0 == "True")
    })
    .await;
    wait_peer(&peers, "bob", "bob Planned", |p| {
        p.status
            .as_ref()
            .and_then(|s| condition(&s.conditions, "Synced"))
            .is_some_and(|c| c.1 == "Planned")
    })
    .await;
    let plugin = Plugin::new(&ns);

    let status = plugin.run(&["status"]).await;
    eprintln!("$ kubectl altostrat status\n{status}");
    assert!(
        status.starts_with("VpnInstance/corp  Ready=True  Synced=True"),
        "{status}"
    );
    assert!(
        status.contains("Secret/alice-vpn  ProfileReady=True  present"),
        "{status}"
    );
    assert!(status.contains("VpnPeer/bob  Ready=False"), "{status}");

    let context = kube::config::Kubeconfig::read().unwrap().current_context.unwrap();
    let one_hub = plugin.run(&["status", "corp", "--context", &context]).await;
    assert!(one_hub.starts_with("VpnInstance/corp  Ready=True"), "{one_hub}");
    let plan = plugin.run(&["plan", "bob"]).await;
    eprintln!("$ kubectl altostrat plan bob\n{plan}");
    assert!(plan.contains("POST /vpn/instances/"), "{plan}");
    let digest = plan.split("--digest ").nth(1).unwrap().trim().to_owned();
    plugin.run(&["approve", "vpnpeer/bob", "--digest", &digest]).await;
    wait_peer(&peers, "bob", "bob created by the approved plan", |p| {
        p.status.as_ref().and_then(|s| s.peer_id.as_ref()).is_some()
    })
    .await;

    plugin.run(&["pause", "corp"]).await;
    assert_eq!(
        annotation(&instances.get("corp").await.unwrap(), PAUSED_ANNOTATION).as_deref(),
        Some("true")
    );
    plugin.run(&["resume", "vpni/corp"]).await;
    assert_eq!(
        annotation(&instances.get("corp").await.unwrap(), PAUSED_ANNOTATION),
        None
    );
    plugin.run(&["reconcile", "corp"]).await;
    let asked = annotation(
        &instances.get("corp").await.unwrap(),
        RECONCILE_REQUEST_ANNOTATION,
    )
    .unwrap();
    wait_instance(&instances, "corp", "the reconcile request handled", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some(asked.as_str())
    })
    .await;
    assert_eq!(
        annotation(&peers.get("bob").await.unwrap(), APPROVE_PLAN_ANNOTATION),
        Some(digest)
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alice.conf");
    plugin
        .run(&["profile", "alice", "-o", file.to_str().unwrap()])
        .await;
    assert_private_profile(&file);

    let imported = plugin
        .run(&[
            "import",
            "--api-url",
            &simc.base_url,
            "--api-token",
            TOKEN,
            "--target-namespace",
            "elsewhere",
        ])
        .await;
    assert!(
        imported.contains(&format!("  name: {hostname}\n  namespace: elsewhere")),
        "{imported}"
    );
    assert!(
        plugin
            .run(&["completion", "zsh"])
            .await
            .contains("kubectl-altostrat")
    );
    operator.stop().await;
}

fn assert_private_profile(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains("[Interface]"), "{text}");
    assert_eq!(
        std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
