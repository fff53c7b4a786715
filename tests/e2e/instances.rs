//! Admission of VpnInstance and VpnPeer manifests: the CRDs' schema and CEL rules as
//! kube-apiserver applies them, with the messages `kubectl` shows.

use crate::support::*;

fn kubectl(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl on PATH");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn kubectl_apply_rejects_invalid_manifests_and_immutable_changes_with_clear_messages() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-kubectl").await;
    let invalid = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/invalid-instance.yaml");
    let out = kubectl(&["apply", "-n", &ns, "-f", invalid], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for message in [
        "spec.name in body should be at least 3 chars long",
        "hostname must not be a reserved label",
        "every pushedRoutes entry must be a CIDR",
        "spec.publicDns in body should have at least 2 items",
    ] {
        assert!(stderr.contains(message), "missing {message:?} in:\n{stderr}");
    }

    let bad_peer = r#"{"apiVersion":"vpn.altostrat.io/v1alpha1","kind":"VpnPeer","metadata":{"name":"p"},
        "spec":{"instanceRef":{"name":"hub"},"type":"client","protocol":"openvpn"}}"#;
    let out = kubectl(&["apply", "-n", &ns, "-f", "-"], Some(bad_peer));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("client peers must use protocol wireguard")
            && stderr.contains("client peers require userId"),
        "{stderr}"
    );

    let valid = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/instance.yaml");
    assert!(kubectl(&["apply", "-n", &ns, "-f", valid], None).status.success());
    let out = kubectl(
        &[
            "patch",
            "-n",
            &ns,
            "vpninstance",
            "demo-hub",
            "--type=merge",
            "-p",
            r#"{"spec":{"region":"fra"}}"#,
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("region is immutable"));
}
