//! The Krew manifest the release workflow renders (scripts/krew-manifest.sh from
//! deploy/krew/altostrat.yaml) is valid YAML of a Krew `Plugin`, with every platform's archive
//! and its SHA-256, and the script refuses to render one with an archive missing.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const PLATFORMS: [&str; 4] = ["linux_amd64", "linux_arm64", "darwin_amd64", "darwin_arm64"];

fn render(dist: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/krew-manifest.sh");
    Command::new("bash")
        .arg(script)
        .args(["1.2.3", "example/altostrat-vpn-operator"])
        .arg(dist)
        .output()
        .expect("bash runs the script")
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_krew_manifest_names_every_platforms_archive_with_its_sha256() {
    let dist = tempfile::tempdir().unwrap();
    for platform in PLATFORMS {
        let archive = dist
            .path()
            .join(format!("kubectl-altostrat_1.2.3_{platform}.tar.gz"));
        std::fs::write(archive, format!("archive of {platform}")).unwrap();
    }
    let output = render(dist.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest: Value = serde_saphyr::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap();
    assert_eq!(
        manifest["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(manifest["metadata"]["name"], "altostrat");
    assert_eq!(manifest["spec"]["version"], "v1.2.3");
    let platforms = manifest["spec"]["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), PLATFORMS.len());
    for (entry, platform) in platforms.iter().zip(PLATFORMS) {
        let (os, arch) = platform.split_once('_').unwrap();
        assert_eq!(entry["selector"]["matchLabels"]["os"], os);
        assert_eq!(entry["selector"]["matchLabels"]["arch"], arch);
        assert_eq!(entry["bin"], "kubectl-altostrat");
        let uri = entry["uri"].as_str().unwrap();
        assert_eq!(
            uri,
            format!(
                "https://github.com/example/altostrat-vpn-operator/releases/download/v1.2.3/kubectl-altostrat_1.2.3_{platform}.tar.gz"
            )
        );
        assert_eq!(
            entry["sha256"],
            sha256_hex(format!("archive of {platform}").as_bytes())
        );
    }
}

#[test]
fn no_manifest_is_rendered_with_an_archive_missing() {
    let dist = tempfile::tempdir().unwrap();
    let archive = dist.path().join("kubectl-altostrat_1.2.3_linux_amd64.tar.gz");
    std::fs::write(archive, "only one").unwrap();
    let output = render(dist.path());
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing"));
}
