//! End to end: the start-up check that refuses CRDs older than the operator's schema, against a
//! real kube-apiserver.
//!
//! The suites share one API server, so the real CRDs are never made stale here: the check runs
//! against copies under an API group of the test's own (one lacking a field, one with a field
//! more), and the operator binary is refused by RBAC, not by a broken CRD.

use std::collections::BTreeMap;

use crate::support::process::OperatorProcess;
use crate::support::*;
use altostrat_vpn_operator::crd::{self, VpnInstance, VpnPeer};
use altostrat_vpn_operator::crd_check::{CrdCheckError, check_installed};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;

/// `crd` under API group `group` (so its name is its own), labelled for clean-up.
fn renamed(mut crd: CustomResourceDefinition, group: &str) -> CustomResourceDefinition {
    crd.metadata.name = Some(format!("{}.{group}", crd.spec.names.plural));
    crd.metadata.labels = Some(run_labels());
    crd.spec.group = group.to_owned();
    crd
}

/// The properties of `spec` in the CRD's only version.
fn spec_properties(crd: &mut CustomResourceDefinition) -> &mut BTreeMap<String, JSONSchemaProps> {
    let version = &mut crd.spec.versions[0];
    let root = version
        .schema
        .as_mut()
        .unwrap()
        .open_api_v3_schema
        .as_mut()
        .unwrap();
    let spec = root.properties.as_mut().unwrap().get_mut("spec").unwrap();
    spec.properties.as_mut().unwrap()
}

fn without(mut crd: CustomResourceDefinition, field: &str) -> CustomResourceDefinition {
    assert!(
        spec_properties(&mut crd).remove(field).is_some(),
        "spec.{field} exists"
    );
    crd
}

async fn install(client: &Client, crd: &CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), crd).await.unwrap();
    let name = crd.metadata.name.clone().unwrap();
    eventually(&format!("CRD {name} established"), TIMEOUT, || async {
        let status = crds.get(&name).await.ok()?.status?;
        let established = status
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
}

async fn remove<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.delete(name, &DeleteParams::default()).await.unwrap();
    wait_gone(api, name).await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn the_crds_of_this_version_pass_the_check() {
    let client = kube().await;
    check_installed(&client, &crd::all())
        .await
        .expect("the CRDs just installed from the Rust types are current");
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_stale_crd_is_refused_naming_its_missing_field_and_a_newer_one_is_accepted() {
    let client = kube().await;
    let group = format!(
        "crdcheck-{}.altostrat.io",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let operator_schema = renamed(VpnInstance::crd(), &group);
    let name = operator_schema.metadata.name.clone().unwrap();
    // Installed: an older CRD in one field (no spec.publicDns), a newer one in another.
    let mut installed = without(operator_schema.clone(), "publicDns");
    let future: JSONSchemaProps = serde_json::from_value(json!({"type": "string"})).unwrap();
    spec_properties(&mut installed).insert("futureField".into(), future);
    install(&client, &installed).await;

    let refused = check_installed(&client, std::slice::from_ref(&operator_schema)).await;
    let Err(CrdCheckError::Stale(stale)) = &refused else {
        panic!("a CRD lacking spec.publicDns must be refused as stale: {refused:?}");
    };
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert_eq!(stale[0].missing, ["spec.publicDns"]);
    let message = refused.unwrap_err().to_string();
    for part in [
        &format!("{name} v1alpha1 lacks spec.publicDns"),
        "helm upgrade",
        "kubectl apply --server-side -k crds/",
    ] {
        assert!(message.contains(part), "{part:?} not in: {message}");
    }
    assert!(!message.contains("futureField"), "{message}");

    // An operator whose schema lacks publicDns finds the installed CRD newer: accepted.
    let older_operator = without(operator_schema, "publicDns");
    check_installed(&client, &[older_operator])
        .await
        .expect("extra fields in the installed CRD are fine");

    let absent = renamed(VpnPeer::crd(), &group);
    let missing = check_installed(&client, std::slice::from_ref(&absent)).await;
    assert!(
        matches!(&missing, Err(CrdCheckError::NotInstalled(names)) if names == &[absent.metadata.name.clone().unwrap()]),
        "{missing:?}"
    );
    remove(&Api::<CustomResourceDefinition>::all(client.clone()), &name).await;
}

/// The chart's and the kustomize base's cluster-wide rules: `get` on the operator's CRDs, by
/// name, and the ownership records (read by the upgrade migration at start-up).
fn crd_reader(name: &str) -> ClusterRole {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": run_labels()},
        "rules": [{
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": [
                "ownershiprecords.vpn.altostrat.io",
                "vpninstances.vpn.altostrat.io",
                "vpnpeers.vpn.altostrat.io",
                "vpncredentials.vpn.altostrat.io"
            ],
            "verbs": ["get"],
        }, {
            "apiGroups": ["vpn.altostrat.io"],
            "resources": ["ownershiprecords"],
            "verbs": ["get", "list", "create", "update", "delete"],
        }],
    }))
    .unwrap()
}

fn binding(name: &str, namespace: &str, service_account: &str) -> ClusterRoleBinding {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": run_labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }))
    .unwrap()
}

/// Whether `user` may get the VpnInstance CRD, as the API server's authorizer answers now.
async fn may_read_the_crd(client: &Client, user: &str) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            resource_attributes: Some(ResourceAttributes {
                group: Some("apiextensions.k8s.io".into()),
                resource: Some("customresourcedefinitions".into()),
                verb: Some("get".into()),
                name: Some("vpninstances.vpn.altostrat.io".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = reviews.create(&PostParams::default(), &review).await.unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn the_operator_exits_when_it_may_not_read_the_crds_and_starts_with_the_charts_rule() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-crdrbac").await;
    let sim = simulator(std::time::Duration::from_secs(1)).await;
    let logs = tempfile::tempdir().unwrap();
    // The binary acts as a ServiceAccount (kube-rs's impersonation override), with no rights yet.
    let user = format!("system:serviceaccount:{ns}:operator");
    let env = [("KUBE_RS_DEBUG_IMPERSONATE_USER", user.as_str())];
    let url = sim.base_url().to_string();

    let mut refused = OperatorProcess::start(&url, &ns, &env, logs.path(), "refused");
    let status = refused.wait_exit(TIMEOUT).await.expect("the operator exits");
    let log = refused.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("cannot read CustomResourceDefinition ownershiprecords.vpn.altostrat.io")
            && log.contains("grant get on apiextensions.k8s.io customresourcedefinitions"),
        "{log}"
    );

    let name = format!("e2e-crd-reader-{ns}");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    roles
        .create(&PostParams::default(), &crd_reader(&name))
        .await
        .unwrap();
    bindings
        .create(&PostParams::default(), &binding(&name, &ns, "operator"))
        .await
        .unwrap();
    eventually("the binding is authorized", TIMEOUT, || async {
        may_read_the_crd(&client, &user).await.then_some(())
    })
    .await;
    let mut started = OperatorProcess::start(&url, &ns, &env, logs.path(), "started");
    eventually("the CRD check passes", TIMEOUT, || async {
        started
            .log()
            .contains("the installed CRDs declare every field")
            .then_some(())
    })
    .await;
    assert!(started.is_running(), "{}", started.log());
    started.kill();
    remove(&bindings, &name).await;
    remove(&roles, &name).await;
}
