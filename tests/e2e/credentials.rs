//! Shared credentials (`VpnCredentials`) against a real API server and the simulator: a grant
//! to one namespace and not another, a namespace default, the token's health through a
//! revocation and its fix, kstatus's reading of it, and the default deletion policy.
//!
//! The simulator has no endpoint that revokes a token it accepted: a revocation is the
//! Secret's token replaced by one it never issued, which Altostrat answers the same way (401).

use std::time::Duration;

use altostrat_vpn_operator::controller::WatchScope;
use altostrat_vpn_operator::controller::credentials::CredentialsSettings;
use altostrat_vpn_operator::crd::{DeletionPolicy, VpnCredentials, VpnInstance};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::support::{
    OperatorOptions, SimClient, TIMEOUT, apply, condition, eventually, instance_manifest, instance_ready,
    kube, merge_patch, namespace, simulator_with_tokens, start_operator_scoped, wait_gone, wait_instance,
};

const SHARED: &str = "shared-e2e-token";
const RUN: &str = "vpn.altostrat.io/e2e-credentials";

/// The labels of the test's namespaces and resources, unique to this run.
struct Run {
    id: String,
}

impl Run {
    fn label(&self, what: &str) -> Value {
        json!({ format!("{RUN}-{what}"): self.id })
    }
}

async fn label_namespace(client: &Client, name: &str, labels: Value) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    merge_patch(&namespaces, name, json!({"metadata": {"labels": labels}})).await;
}

async fn token_secret(client: &Client, namespace: &str, token: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "altostrat", "labels": {"vpn.altostrat.io/credentials": "true"}},
        "stringData": {"token": token},
    }))
    .unwrap();
    apply(&secrets, &secret).await;
}

fn hub(run: &Run, name: &str, hostname: &str, extra: Value) -> VpnInstance {
    let mut hub = instance_manifest(name, hostname, extra);
    hub.metadata.labels = Some([(format!("{RUN}-resource"), run.id.clone())].into());
    hub
}

/// The `Ready` condition of a VpnCredentials once `pred` holds for it.
async fn wait_credentials(
    api: &Api<VpnCredentials>,
    name: &str,
    what: &str,
    pred: impl Fn(&(String, String, String)) -> bool,
) -> VpnCredentials {
    eventually(what, TIMEOUT, || async {
        let obj = api.get_opt(name).await.ok().flatten()?;
        let status = obj.status.as_ref()?;
        let current = status.observed_generation == obj.metadata.generation;
        let ready = condition(&status.conditions, "Ready")?;
        (current && pred(&ready)).then_some(obj)
    })
    .await
}

/// What kstatus makes of `obj`; `None` when the tool is not built (skipped with a note).
fn kstatus(obj: &VpnCredentials) -> Option<String> {
    let tool = crate::kstatus::kstatus_check()?;
    let dump = tempfile::NamedTempFile::new().unwrap();
    let mut value = serde_json::to_value(obj).unwrap();
    value["apiVersion"] = json!("vpn.altostrat.io/v1alpha1");
    value["kind"] = json!("VpnCredentials");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [value]});
    std::fs::write(dump.path(), serde_json::to_vec(&list).unwrap()).unwrap();
    let out = std::process::Command::new(tool)
        .args(["-o", "json"])
        .arg(dump.path())
        .output()
        .expect("run kstatus-check");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verdicts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    Some(verdicts[0]["status"].as_str().unwrap().to_owned())
}

#[tokio::test]
#[ignore]
async fn shared_credentials_are_granted_defaulted_judged_and_set_the_deletion_default() {
    let client = kube().await;
    let sim = simulator_with_tokens(Duration::from_millis(300), &[SHARED]).await;
    let simc = SimClient::new(&sim);
    let run = Run {
        id: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
    };
    let ops = namespace(&client, "e2e-cred-ops").await;
    let (granted, refused, defaulted) = (
        namespace(&client, "e2e-cred-a").await,
        namespace(&client, "e2e-cred-b").await,
        namespace(&client, "e2e-cred-c").await,
    );
    label_namespace(&client, &granted, run.label("grant")).await;
    let mut both = run.label("grant");
    both[format!("{RUN}-default")] = json!(run.id);
    label_namespace(&client, &defaulted, both).await;
    token_secret(&client, &ops, SHARED).await;

    let name = format!("shared-{}", run.id);
    let all: Api<VpnCredentials> = Api::all(client.clone());
    let credentials: VpnCredentials = serde_json::from_value(json!({
        "apiVersion": "vpn.altostrat.io/v1alpha1", "kind": "VpnCredentials",
        "metadata": {"name": name},
        "spec": {
            "secretRef": {"name": "altostrat"},
            "allowedNamespaces": {"matchLabels": run.label("grant")},
            "defaultFor": {"matchLabels": {format!("{RUN}-default"): run.id}},
        },
    }))
    .unwrap();
    all.create(&PostParams::default(), &credentials).await.unwrap();

    let operator = start_operator_scoped(
        &client,
        &simc.base_url,
        WatchScope::AllNamespaces,
        Some(format!("{RUN}-resource={}", run.id)),
        OperatorOptions {
            // No operator token: a hub that works got its token from the VpnCredentials.
            token: None,
            credentials: Some(CredentialsSettings {
                namespace: ops.clone(),
                grace: Duration::from_secs(1),
                check_interval: Duration::from_secs(2),
                default_rate: 60_000,
            }),
            default_deletion_policy: DeletionPolicy::Orphan,
            ..OperatorOptions::default()
        },
    );

    // Granted to A, not to B.
    let named = json!({"credentialsRef": {"name": name}});
    let hubs_a: Api<VpnInstance> = Api::namespaced(client.clone(), &granted);
    apply(
        &hubs_a,
        &hub(&run, "hub", &format!("a-{}", run.id), named.clone()),
    )
    .await;
    let hubs_b: Api<VpnInstance> = Api::namespaced(client.clone(), &refused);
    apply(&hubs_b, &hub(&run, "hub", &format!("b-{}", run.id), named)).await;
    wait_instance(&hubs_a, "hub", "the granted hub Ready", instance_ready).await;
    let missing_grant = format!(
        "VpnCredentials {name} does not allow namespace {refused}: its allowedNamespaces does not select it"
    );
    wait_instance(&hubs_b, "hub", "the refused hub naming the grant", |o| {
        let ready = o.status.as_ref().and_then(|s| condition(&s.conditions, "Ready"));
        ready.is_some_and(|(status, reason, message)| {
            status == "False" && reason == "CredentialsError" && message.contains(&missing_grant)
        })
    })
    .await;

    // The namespace default, with the operator's default deletion policy Orphan.
    let hubs_c: Api<VpnInstance> = Api::namespaced(client.clone(), &defaulted);
    let host_c = format!("c-{}", run.id);
    apply(&hubs_c, &hub(&run, "hub", &host_c, json!({}))).await;
    let ready_c = wait_instance(&hubs_c, "hub", "the defaulted hub Ready", instance_ready).await;
    let status_c = ready_c.status.unwrap();
    assert_eq!(status_c.deletion_policy, Some(DeletionPolicy::Orphan));
    let id_c = status_c.instance_id.unwrap();

    let healthy = wait_credentials(&all, &name, "the credentials Ready", |(s, r, _)| {
        s == "True" && r == "TokenAccepted"
    })
    .await;
    let status = healthy.status.clone().unwrap();
    assert_eq!(status.users, 2, "the hubs in A and C: {status:?}");
    assert_eq!(status.requests_per_minute, Some(60_000));
    if let Some(verdict) = kstatus(&healthy) {
        assert_eq!(
            verdict,
            crate::kstatus::docs_table()["TokenAccepted"],
            "kstatus of TokenAccepted"
        );
    }

    // Revoked: Ready=False within one check past the grace; back once the Secret is fixed.
    token_secret(&client, &ops, "revoked-e2e-token").await;
    let rejected = wait_credentials(&all, &name, "the revoked token rejected", |(s, r, _)| {
        s == "False" && r == "TokenRejected"
    })
    .await;
    let status = rejected.status.clone().unwrap();
    assert!(
        status.last_error.as_deref().unwrap_or_default().contains("401"),
        "{status:?}"
    );
    assert!(
        !serde_json::to_string(&status)
            .unwrap()
            .contains("revoked-e2e-token")
    );
    if let Some(verdict) = kstatus(&rejected) {
        assert_eq!(
            verdict,
            crate::kstatus::docs_table()["TokenRejected"],
            "kstatus of TokenRejected"
        );
    }
    token_secret(&client, &ops, SHARED).await;
    wait_credentials(&all, &name, "the fixed token accepted", |(s, _, _)| s == "True").await;

    // The created hub that left deletionPolicy unset is orphaned by the operator's default.
    hubs_c.delete("hub", &DeleteParams::default()).await.unwrap();
    wait_gone(&hubs_c, "hub").await;
    assert!(
        simc.instance(&id_c).await.is_some(),
        "the orphaned hub still runs"
    );

    for hubs in [&hubs_a, &hubs_b] {
        let _ = hubs.delete("hub", &DeleteParams::default()).await;
        wait_gone(hubs, "hub").await;
    }
    operator.stop().await;
    all.delete(&name, &DeleteParams::default()).await.unwrap();
}
