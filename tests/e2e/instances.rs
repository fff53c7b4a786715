//! Admission of VpnInstance and VpnPeer manifests: the CRDs' schema and CEL rules as
//! kube-apiserver applies them, with the messages `kubectl` shows.

use altostrat_vpn_operator::crd::{VpnInstance, VpnPeer, cidr};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

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
        r#"spec.pushedRoutes[0]: Invalid value: "10.0.0.1/8": "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?"#,
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

/// The one CIDR rule of `pushedRoutes` and `subnets`, as the API server applies it: host bits
/// and IPv6 are refused, each entry named by its index in the words the operator uses for a
/// resource admitted before the rule ([`cidr::problem`]); good networks pass.
#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn admission_refuses_host_bits_and_ipv6_naming_each_entry_as_the_operator_does() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-cidr").await;
    let hub = r#"{"apiVersion":"vpn.altostrat.io/v1alpha1","kind":"VpnInstance","metadata":{"name":"hub"},
        "spec":{"name":"Hub","hostname":"cidr-hub","region":"sjc","pushedRoutes":["172.16.0.0/12","10.0.0.1/8"]}}"#;
    let out = kubectl(&["apply", "-n", &ns, "-f", "-"], Some(hub));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    let seen = r#"spec.pushedRoutes[1]: Invalid value: "10.0.0.1/8": "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?"#;
    assert!(stderr.contains(seen), "{stderr}");

    // Every kind of refusal, and entries where a lenient parser would differ from the API server's.
    let entries = [
        "10.0.0.0/8",
        "10.0.0.1/8",
        "fd00::/64",
        "10.0.0.0/33",
        "010.0.0.0/8",
        "10.0.0.0/08",
        "::ffff:10.0.0.0/104",
        "10.0.0.1",
        "192.168.10.7/24",
        "0.0.0.0/0",
        "10.1.2.3/32",
    ];
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let manifest = instance_manifest("hub", "cidr-hub", json!({"pushedRoutes": entries}));
    let refusal = instances
        .create(&dry_run, &manifest)
        .await
        .unwrap_err()
        .to_string();
    for (index, entry) in entries.iter().enumerate() {
        let path = format!("spec.pushedRoutes[{index}]: ");
        match cidr::problem(entry) {
            Some(why) => assert!(
                refusal.contains(&format!("{path}Invalid value: {entry:?}: {why}")),
                "{entry}: {refusal}"
            ),
            None => assert!(!refusal.contains(&path), "{entry} refused: {refusal}"),
        }
    }

    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);
    let site = "b1b2c3d4-e5f6-7890-1234-567890abcdef";
    let ipv6 = site_peer_manifest("branch", "hub", site, &["192.168.10.0/24", "2001:db8::/32"]);
    let refusal = peers.create(&dry_run, &ipv6).await.unwrap_err().to_string();
    let why = "is an IPv6 network; Altostrat documents IPv4 networks only, so IPv6 entries are refused";
    assert!(
        refusal.contains(&format!(
            r#"spec.subnets[1]: Invalid value: "2001:db8::/32": "2001:db8::/32" {why}"#
        )),
        "{refusal}"
    );

    // Good networks are admitted.
    let good = instance_manifest(
        "hub",
        "cidr-hub",
        json!({"pushedRoutes": ["10.0.0.0/8", "192.168.0.0/16"]}),
    );
    instances.create(&PostParams::default(), &good).await.unwrap();
    let good = site_peer_manifest("branch", "hub", site, &["192.168.10.0/24", "10.1.2.3/32"]);
    peers.create(&PostParams::default(), &good).await.unwrap();
}
