//! The committed CRD manifests must be exactly what the Rust types generate, in `crds/` and in
//! the Helm chart. Regenerate with `cargo run -- crds --output-dir crds --output-dir
//! deploy/helm/altostrat-vpn-operator/crds`.

use std::path::Path;

use altostrat_vpn_operator::crd;

fn assert_matches_committed(dir: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let rendered = crd::render_all().expect("CRDs render");
    let mut expected_files: Vec<String> = rendered.iter().map(|(name, _)| name.clone()).collect();
    for (name, yaml) in &rendered {
        let path = root.join(name);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); regenerate the CRDs", path.display()));
        assert!(
            committed == *yaml,
            "{} differs from the Rust types; regenerate with `cargo run -- crds --output-dir crds \
             --output-dir deploy/helm/altostrat-vpn-operator/crds`",
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
    assert_eq!(committed_files, expected_files, "stale CRD files in {dir}");
}

#[test]
fn committed_crds_match_the_rust_types() {
    assert_matches_committed("crds");
}

#[test]
fn helm_chart_crds_match_the_rust_types() {
    assert_matches_committed("deploy/helm/altostrat-vpn-operator/crds");
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
        ["vpninstances.vpn.altostrat.io", "vpnpeers.vpn.altostrat.io"]
    );
    for c in &crds {
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
    let yaml = crd::render(&crds[0]).unwrap();
    for rule in ["self == oldSelf", "isCIDR(r)", "ip(a).family() == 4"] {
        assert!(yaml.contains(rule), "instance CRD lacks rule {rule}");
    }
}
