//! GitOps with the real Flux controllers: source-controller and kustomize-controller (built by
//! `scripts/control-plane.sh build`) and a Git server run as host processes against the control
//! plane, and the layout users copy (deploy/gitops/flux) is pushed to that Git server. The
//! operator is the real binary, also a host process, against the simulator.
//!
//! What the engine does that nothing else here checks: it applies the CRDs, the operator and the
//! resources in `dependsOn` order, health-checks the resources with kstatus, re-applies them with
//! server-side apply next to the operator's own writes, fails at once on a stalled resource, and
//! prunes what leaves Git (but never the CRDs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use altostrat_vpn_operator::crd::{VpnInstance, VpnPeer};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::support::process::OperatorProcess;
use crate::support::*;

/// Every wait on Flux: its intervals here are 5-10 s, and a reconcile is also requested.
const FLUX_TIMEOUT: Duration = Duration::from_secs(90);
const UPDATE: &str = "PUT /vpn/instances/{instanceId}";
const SITE: &str = "c3d5e2a0-88c9-4f7f-9f7b-6a1e2b4c5d6e";

/// Where `scripts/control-plane.sh build` put the Flux binaries and CRDs, or `None` (the test
/// is skipped) when they are not built. `FLUX_BIN_DIR`, set by scripts/test.sh, must exist.
fn flux_bin_dir() -> Option<PathBuf> {
    let complete = |d: &Path| {
        [
            "source-controller",
            "kustomize-controller",
            "gittestserver",
            "crds",
        ]
        .iter()
        .all(|f| d.join(f).exists())
    };
    if let Some(dir) = std::env::var_os("FLUX_BIN_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            complete(&dir),
            "FLUX_BIN_DIR={} lacks the Flux binaries: run scripts/control-plane.sh build",
            dir.display()
        );
        return Some(dir);
    }
    let out = Command::new("scripts/control-plane.sh")
        .arg("flux-bin-dir")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && complete(&dir) {
        return Some(dir);
    }
    eprintln!(
        "SKIPPED: the Flux controllers are not built; run scripts/control-plane.sh build (needs Go) or set FLUX_BIN_DIR"
    );
    None
}

/// A host process, killed when dropped; its log is printed when the test fails.
struct HostProcess {
    child: Child,
    log: PathBuf,
}

impl HostProcess {
    fn start(program: &Path, args: &[String], log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Self { child, log }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!("--- last lines of {}:", self.log.display());
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The Git server and Flux's two controllers, watching every namespace of the control plane.
struct Flux {
    _processes: Vec<HostProcess>,
    git_url: String,
}

async fn start_flux(bin: &Path, work: &Path) -> Flux {
    let addr_file = work.join("git.addr");
    let arg = |s: &str| s.to_owned();
    let git = HostProcess::start(
        &bin.join("gittestserver"),
        &[arg("-root"), work.join("git").display().to_string()]
            .into_iter()
            .chain([arg("-addr-file"), addr_file.display().to_string()])
            .collect::<Vec<_>>(),
        work.join("gittestserver.log"),
    );
    let storage = work.join("artifacts");
    std::fs::create_dir_all(&storage).unwrap();
    let storage_addr = format!("127.0.0.1:{}", free_port());
    let source = HostProcess::start(
        &bin.join("source-controller"),
        &[
            format!("--storage-path={}", storage.display()),
            format!("--storage-addr={storage_addr}"),
            format!("--storage-adv-addr={storage_addr}"),
            arg("--metrics-addr=127.0.0.1:0"),
            format!("--health-addr=127.0.0.1:{}", free_port()),
            arg("--watch-all-namespaces=true"),
        ],
        work.join("source-controller.log"),
    );
    let kustomize = HostProcess::start(
        &bin.join("kustomize-controller"),
        &[
            arg("--metrics-addr=127.0.0.1:0"),
            format!("--health-addr=127.0.0.1:{}", free_port()),
            arg("--watch-all-namespaces=true"),
        ],
        work.join("kustomize-controller.log"),
    );
    let git_url = eventually("the Git server's address", TIMEOUT, || async {
        let text = std::fs::read_to_string(&addr_file).ok()?;
        Some(text.trim().to_owned()).filter(|t| !t.is_empty())
    })
    .await;
    Flux {
        _processes: vec![git, source, kustomize],
        git_url,
    }
}

/// Runs a command that must succeed; its stdout.
fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The YAML documents of a file as JSON objects, parsed offline by kubectl (any kind).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let path = path.display().to_string();
    let out = run(
        "kubectl",
        &[
            "annotate",
            "--local",
            "-f",
            &path,
            "no-such-annotation-",
            "-o",
            "json",
        ],
        Path::new("."),
    );
    serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect()
}

fn layout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/gitops/flux")
}

/// Flux's CRDs, as the versions built ship them.
fn install_flux_crds(bin: &Path) {
    let crds = bin.join("crds").display().to_string();
    let here = Path::new(".");
    run(
        "kubectl",
        &["apply", "--server-side", "--force-conflicts", "-f", &crds],
        here,
    );
    run(
        "kubectl",
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            &crds,
        ],
        here,
    );
}

/// A Git working tree pushed to one repository of the Git server.
struct Repo {
    dir: PathBuf,
    url: String,
}

impl Repo {
    fn new(work: &Path, git_url: &str, name: &str) -> Self {
        let dir = work.join("trees").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        run("git", &["init", "-q", "-b", "main"], &dir);
        Self {
            dir,
            url: format!("{git_url}/{name}.git"),
        }
    }

    /// Commits the whole tree and pushes it to `main`; the commit's id.
    fn push(&self, message: &str) -> String {
        let git = |args: &[&str]| run("git", args, &self.dir);
        git(&["add", "-A"]);
        git(&[
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@example.invalid",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            message,
        ]);
        git(&["push", "-q", &self.url, "HEAD:main"]);
        git(&["rev-parse", "HEAD"]).trim().to_owned()
    }
}

/// This checkout's CRDs and kustomize tree, as the operator's repository would hold them.
fn push_operator_repo(work: &Path, git_url: &str) {
    let repo = Repo::new(work, git_url, "altostrat-vpn-operator");
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::create_dir_all(repo.dir.join("deploy")).unwrap();
    run("cp", &["-r", &format!("{root}/crds"), "."], &repo.dir);
    run(
        "cp",
        &["-r", &format!("{root}/deploy/kustomize"), "deploy/"],
        &repo.dir,
    );
    repo.push("the operator's CRDs and kustomize tree");
}

fn api_resource(kind: &str) -> ApiResource {
    let group = match kind {
        "GitRepository" => "source.toolkit.fluxcd.io",
        _ => "kustomize.toolkit.fluxcd.io",
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind))
}

fn flux_api(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &api_resource(kind))
}

/// The layout's Flux objects as this test applies them: in the test's namespace, from the Git
/// server, with short intervals, and the `flux-system` GitRepository `flux bootstrap` would
/// have made for the user's own repository.
fn test_flux_objects(ns: &str, git_url: &str) -> Vec<Value> {
    let dir = layout().join("clusters/my-cluster");
    let mut objects = yaml_docs(&dir.join("altostrat-vpn-operator.yaml"));
    objects.extend(yaml_docs(&dir.join("vpn-resources.yaml")));
    objects.push(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "flux-system"},
        "spec": {"interval": "5s", "url": format!("{git_url}/config.git"), "ref": {"branch": "main"}},
    }));
    for obj in &mut objects {
        obj["metadata"]["namespace"] = json!(ns);
        let kind = obj["kind"].as_str().unwrap().to_owned();
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let spec = &mut obj["spec"];
        if kind == "GitRepository" {
            spec["interval"] = json!("5s");
            if name == "altostrat-vpn-operator" {
                spec["url"] = json!(format!("{git_url}/altostrat-vpn-operator.git"));
                spec["ref"] = json!({"branch": "main"});
            }
            continue;
        }
        spec["interval"] = json!("10s");
        spec["retryInterval"] = json!("5s");
        if name == "altostrat-vpn-operator" {
            // The operator runs here as a host process, not as the Deployment this Kustomization
            // applies (no Pod ever runs on this control plane): waiting on it would never end.
            spec["wait"] = json!(false);
        }
    }
    objects
}

async fn apply_flux_objects(client: &Client, objects: &[Value]) {
    for obj in objects {
        let ns = obj["metadata"]["namespace"].as_str().unwrap();
        let api = flux_api(client, ns, obj["kind"].as_str().unwrap());
        let name = obj["metadata"]["name"].as_str().unwrap();
        api.patch(name, &PatchParams::apply("e2e-tests").force(), &Patch::Apply(obj))
            .await
            .unwrap();
    }
}

/// The user's repository: the layout's vpn/ with hostnames of this run, in the test namespace
/// (made by the harness, so the layout's Namespace object is left out).
struct Config {
    repo: Repo,
    ns: String,
    suffix: String,
}

impl Config {
    fn layout_hub(&self, name: &str, hostname: &str, extra: Value) -> (String, Value) {
        let mut hub = yaml_docs(&layout().join("vpn/hub.yaml")).remove(0);
        hub["metadata"]["name"] = json!(name);
        hub["spec"]["hostname"] = json!(format!("{hostname}-{}", self.suffix));
        for (k, v) in extra.as_object().unwrap() {
            hub["spec"][k] = v.clone();
        }
        (format!("{name}.yaml"), hub)
    }

    fn layout_peer(&self) -> (String, Value) {
        let peer = yaml_docs(&layout().join("vpn/branch-office.yaml")).remove(0);
        ("branch-office.yaml".to_owned(), peer)
    }

    /// Replaces vpn/ with `files` and pushes; the commit's id.
    fn push(&self, files: &[(String, Value)], message: &str) -> String {
        let vpn = self.repo.dir.join("vpn");
        let _ = std::fs::remove_dir_all(&vpn);
        std::fs::create_dir_all(&vpn).unwrap();
        let mut kustomization = yaml_docs(&layout().join("vpn/kustomization.yaml")).remove(0);
        kustomization["namespace"] = json!(self.ns);
        kustomization["resources"] = json!(files.iter().map(|f| &f.0).collect::<Vec<_>>());
        let write = |name: &str, v: &Value| {
            std::fs::write(vpn.join(name), serde_json::to_string_pretty(v).unwrap()).unwrap()
        };
        write("kustomization.yaml", &kustomization);
        files.iter().for_each(|(name, v)| write(name, v));
        self.repo.push(message)
    }
}

/// `type`'s condition of a Flux object: (status, reason, message).
fn flux_condition(obj: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    let conditions = obj.data["status"]["conditions"].as_array()?;
    let c = conditions.iter().find(|c| c["type"] == type_)?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Some((s("status"), s("reason"), s("message")))
}

/// Whether the Kustomization is Ready for its current spec with `commit` applied.
fn applied_and_ready(obj: &DynamicObject, commit: &str) -> bool {
    let current = obj.data["status"]["observedGeneration"].as_i64() == obj.metadata.generation;
    let revision = obj.data["status"]["lastAppliedRevision"]
        .as_str()
        .unwrap_or_default();
    current && revision.ends_with(commit) && flux_condition(obj, "Ready").is_some_and(|c| c.0 == "True")
}

/// Asks source-controller to fetch now instead of at its next interval (`flux reconcile source
/// git` does the same); kustomize-controller follows a new artifact on its own.
async fn fetch_now(client: &Client, ns: &str, name: &str) {
    let api = flux_api(client, ns, "GitRepository");
    let now = format!("{:?}", std::time::SystemTime::now());
    let patch = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn wait_kustomization(client: &Client, ns: &str, name: &str, commit: &str) -> DynamicObject {
    let api = flux_api(client, ns, "Kustomization");
    let what = format!("Kustomization {name} Ready with {commit} applied");
    eventually(&what, FLUX_TIMEOUT, || async {
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .filter(|k| applied_and_ready(k, commit))
    })
    .await
}

/// Everything the scenario shares.
struct Scene {
    client: Client,
    git_url: String,
    ns: String,
    sim: SimClient,
    config: Config,
    instances: Api<VpnInstance>,
    peers: Api<VpnPeer>,
}

impl Scene {
    async fn commit(&self, files: &[(String, Value)], message: &str) -> String {
        let commit = self.config.push(files, message);
        fetch_now(&self.client, &self.ns, "flux-system").await;
        commit
    }

    fn kustomizations(&self) -> Api<DynamicObject> {
        flux_api(&self.client, &self.ns, "Kustomization")
    }
}

#[tokio::test]
#[ignore = "needs the local control plane and the Flux binaries: run scripts/test.sh"]
async fn flux_deploys_the_gitops_layout_and_follows_the_operators_conditions() {
    if std::env::var_os("USE_EXISTING_CLUSTER").is_some() {
        eprintln!(
            "SKIPPED: the Flux test installs Flux's CRDs and the operator's base; local control plane only"
        );
        return;
    }
    let Some(bin) = flux_bin_dir() else { return };
    let started = Instant::now();
    let client = kube().await;
    install_flux_crds(&bin);
    let ns = namespace(&client, "flux").await;
    // Hubs stay Provisioning for a while: the window in which Flux must not call them ready.
    let simulator = simulator(Duration::from_secs(8)).await;
    let work = tempfile::tempdir().unwrap();
    let _operator = OperatorProcess::start(&simulator.base_url(), &ns, &[], work.path(), "operator");
    let flux = start_flux(&bin, work.path()).await;
    push_operator_repo(work.path(), &flux.git_url);
    let suffix = ns.trim_start_matches("flux-").to_owned();
    let config = Config {
        repo: Repo::new(work.path(), &flux.git_url, "config"),
        ns: ns.clone(),
        suffix,
    };
    let scene = Scene {
        git_url: flux.git_url.clone(),
        sim: SimClient::new(&simulator),
        instances: Api::namespaced(client.clone(), &ns),
        peers: Api::namespaced(client.clone(), &ns),
        client,
        ns,
        config,
    };
    let crds_before = crd_uids(&scene.client).await;
    let files = ready_only_when_the_resources_are(&scene).await;
    let files = routes_reach_altostrat_and_the_operators_writes_stay(&scene, files).await;
    a_stalled_resource_fails_the_kustomization_at_once(&scene, &files).await;
    removed_hubs_follow_their_deletion_policy(&scene, files).await;
    pruning_never_deletes_the_crds(&scene, &crds_before).await;
    eprintln!("flux e2e scenario took {:?}", started.elapsed());
}

/// (a) The layout's three Kustomizations in order; `vpn-resources` is Ready only once every
/// hub and peer is, and is seen not Ready while a hub provisions.
async fn ready_only_when_the_resources_are(scene: &Scene) -> Vec<(String, Value)> {
    let files = vec![
        scene.config.layout_hub("office-hub", "office", json!({})),
        scene
            .config
            .layout_hub("orphan-hub", "orphan", json!({"deletionPolicy": "Orphan"})),
        scene.config.layout_peer(),
    ];
    // Pushed before Flux is told of the repository: its first fetch finds the commit.
    let commit = scene.config.push(&files, "hubs and a peer");
    apply_flux_objects(&scene.client, &test_flux_objects(&scene.ns, &scene.git_url)).await;
    let kustomizations = scene.kustomizations();
    let saw_waiting = std::sync::atomic::AtomicBool::new(false);
    eventually("vpn-resources Ready", Duration::from_secs(120), || async {
        // The Kustomization is read first: hubs and peers never go back from Ready here, so
        // any not Ready after a Ready Kustomization was not Ready when Flux called it so.
        let k = kustomizations.get_opt("vpn-resources").await.ok().flatten()?;
        let hubs = scene.instances.list(&Default::default()).await.ok()?.items;
        let peers = scene.peers.list(&Default::default()).await.ok()?.items;
        let all_ready = hubs.len() == 2
            && peers.len() == 1
            && hubs.iter().all(instance_ready)
            && peers.iter().all(peer_ready);
        if applied_and_ready(&k, &commit) {
            assert!(
                all_ready,
                "vpn-resources is Ready while a hub or peer is not: {hubs:?} {peers:?}"
            );
            return Some(());
        }
        if !hubs.is_empty() && !all_ready {
            saw_waiting.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        None
    })
    .await;
    assert!(
        saw_waiting.into_inner(),
        "vpn-resources was never seen waiting on a provisioning hub"
    );
    // Both stay Ready, though each turns Unknown while it reconciles again (every 10 s here).
    for name in ["altostrat-vpn-operator-crds", "altostrat-vpn-operator"] {
        eventually(&format!("{name} Ready"), FLUX_TIMEOUT, || async {
            let k = kustomizations.get(name).await.ok()?;
            flux_condition(&k, "Ready").filter(|c| c.0 == "True").map(|_| ())
        })
        .await;
    }
    files
}

/// The operator's own writes on a hub: finalizers, its labels and annotations, and status.
fn operator_writes(hub: &VpnInstance) -> (Vec<String>, BTreeMap<String, String>, Value) {
    let m = &hub.metadata;
    let ours = m
        .labels
        .iter()
        .chain(m.annotations.iter())
        .flatten()
        .filter(|(k, _)| k.starts_with("vpn.altostrat.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut status = serde_json::to_value(&hub.status).unwrap();
    // Timestamps move on every poll; what must survive is the state.
    for c in status["conditions"].as_array_mut().into_iter().flatten() {
        c.as_object_mut().unwrap().remove("lastTransitionTime");
    }
    let conditions = status["conditions"].clone();
    let id = status["instanceId"].clone();
    (
        m.finalizers.clone().unwrap_or_default(),
        ours,
        json!({"instanceId": id, "conditions": conditions}),
    )
}

/// (b) A commit that changes `pushedRoutes` reaches Altostrat with one PUT, and Flux's next
/// apply leaves the operator's finalizers, labels, annotations and status as they were.
async fn routes_reach_altostrat_and_the_operators_writes_stay(
    scene: &Scene,
    mut files: Vec<(String, Value)>,
) -> Vec<(String, Value)> {
    scene.sim.reset_calls().await;
    let routes = json!(["10.20.0.0/16", "10.30.0.0/16"]);
    files[0].1["spec"]["pushedRoutes"] = routes.clone();
    let commit = scene.commit(&files, "push 10.30.0.0/16 too").await;
    wait_kustomization(&scene.client, &scene.ns, "vpn-resources", &commit).await;
    let hub = wait_instance(
        &scene.instances,
        "office-hub",
        "office-hub Ready with the new routes",
        |h| instance_ready(h) && json!(h.spec.pushed_routes) == routes,
    )
    .await;
    let id = hub.status.as_ref().unwrap().instance_id.clone().unwrap();
    let remote = scene.sim.instance(&id).await.unwrap();
    assert_eq!(json!(remote.pushed_routes), routes, "Altostrat's routes");
    assert_eq!(
        scene.sim.count(UPDATE).await,
        1,
        "one PUT: {:?}",
        scene.sim.calls().await
    );
    let before = operator_writes(&hub);
    // The ownership claim lives in a cluster-scoped OwnershipRecord, which Flux never applies;
    // on the hub the operator writes its finalizer, any vpn.altostrat.io/ metadata, and status.
    assert!(!before.0.is_empty(), "the operator's writes: {before:?}");
    // Flux's next apply of the same revision (`flux reconcile kustomization` requests it).
    let now = format!("{:?}", std::time::SystemTime::now());
    let patch = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}});
    let kustomizations = scene.kustomizations();
    kustomizations
        .patch("vpn-resources", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(
        "vpn-resources to handle the reconcile request",
        FLUX_TIMEOUT,
        || async {
            let k = kustomizations.get("vpn-resources").await.ok()?;
            (k.data["status"]["lastHandledReconcileAt"] == json!(now) && applied_and_ready(&k, &commit))
                .then_some(())
        },
    )
    .await;
    let after = operator_writes(&scene.instances.get("office-hub").await.unwrap());
    assert_eq!(before, after, "Flux's apply changed the operator's writes");
    assert_eq!(scene.sim.count(UPDATE).await, 1, "no PUT after Flux's re-apply");
    files
}

/// (c) A hub in a region Altostrat does not have: the operator sets Stalled=True, kstatus says
/// Failed, and the Kustomization fails with the operator's message long before its timeout.
/// Removing it from Git again brings the Kustomization back to Ready.
async fn a_stalled_resource_fails_the_kustomization_at_once(scene: &Scene, files: &[(String, Value)]) {
    let mut with_typo = files.to_vec();
    with_typo.push(
        scene
            .config
            .layout_hub("typo-hub", "typo", json!({"region": "mars"})),
    );
    let pushed = Instant::now();
    scene
        .commit(&with_typo, "a hub in a region that does not exist")
        .await;
    let stalled = wait_instance(&scene.instances, "typo-hub", "typo-hub Stalled", |h| {
        h.status
            .as_ref()
            .and_then(|s| condition(&s.conditions, "Stalled"))
            .is_some_and(|c| c.0 == "True")
    })
    .await;
    let operator_message = condition(&stalled.status.unwrap().conditions, "Stalled")
        .unwrap()
        .2;
    let kustomizations = scene.kustomizations();
    let message = eventually("vpn-resources to fail on typo-hub", FLUX_TIMEOUT, || async {
        let k = kustomizations.get("vpn-resources").await.ok()?;
        let (status, _, message) = flux_condition(&k, "Ready")?;
        (status == "False" && message.contains("typo-hub")).then_some(message)
    })
    .await;
    let took = pushed.elapsed();
    eprintln!("vpn-resources failed {took:?} after the push: {message}");
    // Flux names the failed resource; the operator's words are on the resource itself (the
    // health-check expressions give kstatus a status, not a message).
    assert!(
        message.contains("status: 'Failed'") && took < Duration::from_secs(60),
        "vpn-resources did not fail early on typo-hub ({operator_message}): {message}"
    );
    let commit = scene.commit(files, "the region typo removed").await;
    wait_kustomization(&scene.client, &scene.ns, "vpn-resources", &commit).await;
    wait_gone(&scene.instances, "typo-hub").await;
}

/// (d) Hubs removed from Git: the `Delete` one goes from Altostrat, the `Orphan` one stays.
async fn removed_hubs_follow_their_deletion_policy(scene: &Scene, files: Vec<(String, Value)>) {
    let id_of = |name: &'static str| async move {
        let hub = scene.instances.get(name).await.unwrap();
        hub.status.unwrap().instance_id.unwrap()
    };
    let (deleted, orphaned) = (id_of("office-hub").await, id_of("orphan-hub").await);
    let commit = scene.commit(&[], "no hubs or peers").await;
    drop(files);
    wait_kustomization(&scene.client, &scene.ns, "vpn-resources", &commit).await;
    for name in ["office-hub", "orphan-hub"] {
        wait_gone(&scene.instances, name).await;
    }
    wait_gone(&scene.peers, "branch-office").await;
    assert!(
        scene.sim.instance(&deleted).await.is_none(),
        "the Delete hub is still in Altostrat"
    );
    assert!(
        scene.sim.instance(&orphaned).await.is_some(),
        "the Orphan hub was deleted in Altostrat"
    );
    let site_peers = scene.sim.peers(&orphaned).await;
    assert!(
        site_peers.iter().all(|p| p.site_id.as_deref() != Some(SITE)),
        "{site_peers:?}"
    );
}

async fn crd_uids(client: &Client) -> BTreeMap<String, String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut uids = BTreeMap::new();
    for crd in altostrat_vpn_operator::crd::all() {
        let name = crd.metadata.name.unwrap();
        let uid = crds.get(&name).await.unwrap().metadata.uid.unwrap();
        uids.insert(name, uid);
    }
    uids
}

/// (d) Deleting the operator's Kustomization prunes the operator but not the CRDs; nor does
/// deleting the CRDs' own Kustomization after someone turned its pruning on: they carry
/// `kustomize.toolkit.fluxcd.io/prune: disabled`.
async fn pruning_never_deletes_the_crds(scene: &Scene, before: &BTreeMap<String, String>) {
    let kustomizations = scene.kustomizations();
    let delete = |name: &'static str| {
        let api = kustomizations.clone();
        async move {
            api.delete(name, &DeleteParams::default()).await.unwrap();
            wait_gone_for(&api, name, FLUX_TIMEOUT).await;
        }
    };
    delete("vpn-resources").await;
    delete("altostrat-vpn-operator").await;
    let deployments: Api<Deployment> = Api::namespaced(scene.client.clone(), "altostrat-system");
    assert!(
        deployments
            .get_opt("altostrat-vpn-operator")
            .await
            .unwrap()
            .is_none(),
        "not pruned"
    );
    assert_eq!(
        &crd_uids(&scene.client).await,
        before,
        "the operator's prune deleted a CRD"
    );
    let patch = json!({"spec": {"prune": true}});
    let k = kustomizations
        .patch(
            "altostrat-vpn-operator-crds",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    eventually("the CRDs' Kustomization to prune", FLUX_TIMEOUT, || async {
        let now = kustomizations.get("altostrat-vpn-operator-crds").await.ok()?;
        let seen = now.data["status"]["observedGeneration"].as_i64() == k.metadata.generation;
        (seen && flux_condition(&now, "Ready").is_some_and(|c| c.0 == "True")).then_some(())
    })
    .await;
    delete("altostrat-vpn-operator-crds").await;
    assert_eq!(
        &crd_uids(&scene.client).await,
        before,
        "a pruning CRD Kustomization deleted a CRD"
    );
    // The operator's namespace goes with its Kustomization; gone before the deployment checks.
    let namespaces: Api<Namespace> = Api::all(scene.client.clone());
    wait_gone_for(&namespaces, "altostrat-system", FLUX_TIMEOUT).await;
}

async fn wait_gone_for<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(&format!("{name} to be deleted"), timeout, || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await
}
