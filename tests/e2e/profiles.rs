//! End to end: a client peer's VPN profile delivered into a Secret (`spec.profileSecret`),
//! with the real operator binary (its logs are read), a real kube-apiserver and
//! kube-controller-manager (garbage collection), and the simulator over HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::process::OperatorProcess;
use crate::support::*;
use altostrat_vpn_operator::crd::{VpnInstance, VpnPeer};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const USER: &str = "a1b2c3d4-e5f6-7890-1234-567890abcdef";
const OTHER_USER: &str = "b2c3d4e5-f6a7-8901-2345-67890abcdef1";

fn with_profile(mut peer: VpnPeer, secret: &str) -> VpnPeer {
    peer.spec.profile_secret = Some(altostrat_vpn_operator::crd::ProfileSecretSpec { name: secret.into() });
    peer
}

fn text(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().expect("the Secret has data");
    String::from_utf8(data.get(key).unwrap_or_else(|| panic!("key {key}")).0.clone()).unwrap()
}

/// The value of `key = value` in a WireGuard profile.
fn wireguard(profile: &str, key: &str) -> String {
    profile
        .lines()
        .find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == key))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| panic!("{key} in {profile}"))
}

/// The Secret once `accept` holds for it.
async fn wait_secret(
    secrets: &Api<Secret>,
    name: &str,
    what: &str,
    accept: impl Fn(&Secret) -> bool,
) -> Secret {
    eventually(what, TIMEOUT, || async {
        secrets.get_opt(name).await.unwrap().filter(|s| accept(s))
    })
    .await
}

async fn share_token(simc: &SimClient, instance_id: &str, peer_id: &str) -> String {
    let peers = simc.peers(instance_id).await;
    let peer = peers
        .into_iter()
        .find(|p| p.id == peer_id)
        .expect("the peer exists");
    peer.token.expect("a client peer has a share token")
}

fn profile_reason(peer: &VpnPeer) -> Option<String> {
    let status = peer.status.as_ref()?;
    condition(&status.conditions, "ProfileReady").map(|c| format!("{}/{}", c.0, c.1))
}

async fn wait_profile(peers: &Api<VpnPeer>, name: &str, expected: &str) -> VpnPeer {
    wait_peer(peers, name, &format!("ProfileReady {expected}"), |p| {
        profile_reason(p).as_deref() == Some(expected)
    })
    .await
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_client_profile_is_delivered_kept_current_and_collected() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-profile").await;
    let sim = simulator(Duration::from_secs(1)).await;
    let simc = SimClient::new(&sim);
    let logs = tempfile::tempdir().unwrap();
    let env = [("RESYNC_INTERVAL", "2s"), ("PROVISIONING_POLL_INTERVAL", "1s")];
    let operator = OperatorProcess::start(&simc.base_url, &ns, &env, logs.path(), "profiles");
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);

    // A Secret the operator did not write, under the name a second peer asks for.
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("taken".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "password".into(),
            ByteString(b"not yours".to_vec()),
        )])),
        ..Secret::default()
    };
    let foreign = secrets.create(&PostParams::default(), &foreign).await.unwrap();

    apply(
        &instances,
        &instance_manifest("hub", "profile-hub", json!({"pushedRoutes": ["10.10.0.0/16"]})),
    )
    .await;
    apply(
        &peers,
        &with_profile(client_peer_manifest("alice", "hub", USER), "alice-vpn"),
    )
    .await;
    apply(
        &peers,
        &with_profile(client_peer_manifest("bob", "hub", OTHER_USER), "taken"),
    )
    .await;

    // Delivered: the profile's fields are the simulator's instance and peer.
    let alice = wait_profile(&peers, "alice", "True/Delivered").await;
    let secret = secrets.get("alice-vpn").await.unwrap();
    let profile = text(&secret, "wg0.conf");
    let instance_id = instances
        .get("hub")
        .await
        .unwrap()
        .status
        .unwrap()
        .instance_id
        .unwrap();
    let hub = simc.instance(&instance_id).await.unwrap();
    assert_eq!(wireguard(&profile, "Endpoint"), format!("{}:51820", hub.hostname));
    assert_eq!(wireguard(&profile, "AllowedIPs"), "10.10.0.0/16");
    assert_eq!(text(&secret, "endpoint"), format!("{}:51820", hub.hostname));
    assert_eq!(text(&secret, "routes"), "10.10.0.0/16");
    let private_key = wireguard(&profile, "PrivateKey");
    assert_eq!(private_key.len(), 44, "{profile}");
    let owner = &secret.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("VpnPeer", alice.uid().unwrap().as_str())
    );
    let status = alice.status.clone().unwrap().profile_secret.unwrap();
    assert_eq!(status.name, "alice-vpn");

    // The colliding Secret is reported and left as it was.
    wait_profile(&peers, "bob", "False/SecretConflict").await;
    let untouched = secrets.get("taken").await.unwrap();
    assert_eq!(untouched.resource_version(), foreign.resource_version());

    // A route edit on the instance reaches AllowedIPs.
    let routes = json!({"spec": {"pushedRoutes": ["10.10.0.0/16", "172.16.0.0/12"]}});
    merge_patch(&instances, "hub", routes).await;
    let refreshed = wait_secret(&secrets, "alice-vpn", "AllowedIPs updated", |s| {
        wireguard(&text(s, "wg0.conf"), "AllowedIPs") == "10.10.0.0/16, 172.16.0.0/12"
    })
    .await;
    assert_eq!(text(&refreshed, "routes"), "10.10.0.0/16,172.16.0.0/12");
    let hash = |p: &VpnPeer| p.status.clone().unwrap().profile_secret.unwrap().profile_hash;
    let alice = wait_peer(&peers, "alice", "a new profile hash", |p| {
        hash(p) != status.profile_hash
    })
    .await;

    // Deleted out of band, with the share token expired meanwhile: back, with a fresh token.
    // Whether the operator meets the expired token (a 401, then a GET of the peer) or a list
    // shows it the new one first depends on timing; either way one profile is fetched, and
    // with a token other than the expired one.
    let peer_id = alice.status.clone().unwrap().peer_id.unwrap();
    let expired = share_token(&simc, &instance_id, &peer_id).await;
    simc.expire_share_token(&peer_id).await;
    simc.reset_calls().await;
    secrets
        .delete("alice-vpn", &DeleteParams::default())
        .await
        .unwrap();
    wait_secret(&secrets, "alice-vpn", "the Secret written again", |_| true).await;
    let calls = simc.calls_by_status().await;
    assert_eq!(calls.get("GET /vpn/client 200"), Some(&1), "{calls:?}");
    assert!(
        calls.get("GET /vpn/client 401").is_none_or(|n| *n <= 1),
        "{calls:?}"
    );
    assert_ne!(share_token(&simc, &instance_id, &peer_id).await, expired);

    // Nothing of the private key in the operator's logs (debug level), events or status.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    assert!(notes.iter().any(|n| n.contains("alice-vpn")), "{notes:?}");
    let status = serde_json::to_string(&peers.get("alice").await.unwrap().status).unwrap();
    for (place, text) in [
        ("log", operator.log()),
        ("events", notes.join("\n")),
        ("status", status),
    ] {
        assert!(!text.contains(&private_key), "the private key is in the {place}");
    }

    // Deleting the peer removes its Secret (garbage collection), never the foreign one.
    peers.delete("alice", &DeleteParams::default()).await.unwrap();
    eventually("the Secret collected", TIMEOUT, || async {
        secrets
            .get_opt("alice-vpn")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    peers.delete("bob", &DeleteParams::default()).await.unwrap();
    wait_gone(&peers, "bob").await;
    assert_eq!(
        secrets.get("taken").await.unwrap().resource_version(),
        foreign.resource_version()
    );
}
