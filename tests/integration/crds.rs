//! The committed CRD manifests must be exactly what the Rust types generate: the plain CRDs in
//! `crds/`, and the Helm chart's templates of them in
//! `deploy/helm/altostrat-vpn-operator/templates/crds/` (the same YAML, guarded by
//! `crds.install` and kept by `helm uninstall`). Regenerate both with
//! `cargo run -- crds --output-dir crds --helm-chart deploy/helm/altostrat-vpn-operator`.

use std::path::Path;

use altostrat_vpn_operator::{crd, crd_chart};

const CHART: &str = "deploy/helm/altostrat-vpn-operator";
const REGENERATE: &str =
    "cargo run -- crds --output-dir crds --helm-chart deploy/helm/altostrat-vpn-operator";

fn assert_matches_committed(dir: &str, rendered: &[(String, String)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut expected_files: Vec<String> = rendered.iter().map(|(name, _)| name.clone()).collect();
    for (name, text) in rendered {
        let path = root.join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}); regenerate with `{REGENERATE}`",
                path.display()
            )
        });
        assert!(
            committed == *text,
            "{} differs from the Rust types; regenerate with `{REGENERATE}`",
            path.display()
        );
    }
    let mut committed_files: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    committed_files.sort();
    expected_files.sort();
    assert_eq!(
        committed_files, expected_files,
        "stale CRD files in {dir}; remove them and regenerate with `{REGENERATE}`"
    );
}

#[test]
fn committed_crds_match_the_rust_types() {
    assert_matches_committed("crds", &crd::render_all().expect("CRDs render"));
}

#[test]
fn helm_chart_crd_templates_match_the_rust_types() {
    let templates = crd_chart::render_all().expect("chart CRD templates render");
    assert_matches_committed(&format!("{CHART}/{}", crd_chart::TEMPLATES_DIR), &templates);
}

#[test]
fn the_chart_has_no_crds_folder() {
    // Helm would install it once and never upgrade it, next to the templates.
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join(CHART).join("crds");
    assert!(
        !folder.exists(),
        "{} exists: the chart's CRDs are templates ({}/)",
        folder.display(),
        crd_chart::TEMPLATES_DIR
    );
}

#[test]
fn crds_carry_the_documented_names_and_validation() {
    let crds = crd::all();
    let names: Vec<_> = crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "ownershiprecords.vpn.altostrat.io",
            "vpninstances.vpn.altostrat.io",
            "vpnpeers.vpn.altostrat.io",
            "vpncredentials.vpn.altostrat.io"
        ]
    );
    // Shared credentials are cluster-scoped and granted by namespace label.
    assert_eq!(crds[3].spec.scope, "Cluster");
    // Ownership records are cluster-scoped (no tenant's namespace role reaches them), written
    // by the operator alone, and not in the `altostrat` category a tenant lists.
    let records = &crds[0].spec;
    assert_eq!(records.scope, "Cluster");
    assert_eq!(records.names.categories, None);
    for c in &crds[1..3] {
        assert_eq!(c.spec.scope, "Namespaced");
        assert_eq!(
            c.spec.names.categories.as_deref(),
            Some(&["altostrat".to_owned()][..])
        );
        let version = &c.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "status subresource"
        );
    }
    let yaml = crd::render(&crds[1]).unwrap();
    for rule in [
        "self == oldSelf",
        "isCIDR(self)",
        "cidr(self).masked()",
        "ip(a).family() == 4",
    ] {
        assert!(yaml.contains(rule), "instance CRD lacks rule {rule}");
    }
}

#[test]
fn every_network_list_carries_the_one_cidr_rule_on_its_items() {
    let crds = crd::all();
    let lists = [(&crds[1], "pushedRoutes"), (&crds[2], "subnets")];
    let rules_of =
        |c: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
         field: &str| {
            let schema = serde_json::to_value(&c.spec.versions[0].schema).unwrap();
            schema["openAPIV3Schema"]["properties"]["spec"]["properties"][field]["items"]["x-kubernetes-validations"]
            .clone()
        };
    let first = rules_of(lists[0].0, lists[0].1);
    assert!(first.to_string().contains("cidr(self).masked()"), "{first}");
    for (c, field) in lists {
        assert_eq!(
            rules_of(c, field),
            first,
            "{field} has other rules than pushedRoutes"
        );
    }
}
