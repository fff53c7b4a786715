//! Profile delivery: reconciles of `VpnPeer` with `spec.profileSecret` against the in-process
//! Kubernetes fake and the Altostrat simulator, and the pure decisions.
#![cfg(feature = "simulator")]

use std::collections::BTreeMap;

use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use serde_json::json;

use super::decide::{self, Refresh, SecretSeen};
use crate::altostrat::Endpoint;
use crate::altostrat::model::{ClientConfiguration, Protocol};
use crate::controller::testing::{Harness, NS, condition, instance, peer};
use crate::crd::{VpnInstance, VpnPeer};

const SECRET: &str = "alice-vpn";

/// A Ready hub routing 10.0.0.0/8, and a client peer asking for its profile in [`SECRET`].
async fn delivered() -> (Harness, VpnInstance, VpnPeer) {
    let h = Harness::new();
    let hub = h.apply(instance("hub", json!({})));
    h.reconcile(&hub).await.unwrap();
    let id = h.stored(&hub).unwrap().status.unwrap().instance_id.unwrap();
    h.altostrat
        .edit_instance(&id, |i| i.pushed_routes = vec!["10.0.0.0/8".into()]);
    h.observations_expire();
    let obj = h.apply(peer("alice", "hub", json!({"profileSecret": {"name": SECRET}})));
    h.reconcile(&obj).await.unwrap();
    (h, hub, obj)
}

fn profile_ready(h: &Harness, obj: &VpnPeer) -> Option<(String, String)> {
    condition(&h.stored(obj)?.status?.conditions, "ProfileReady")
}

fn secret(h: &Harness) -> Option<Secret> {
    h.kube.get(&named_secret(SECRET))
}

fn named_secret(name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    }
}

fn text(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().expect("data");
    String::from_utf8(data[key].0.clone()).unwrap()
}

fn kube_writes(h: &Harness) -> Vec<(Method, String)> {
    h.kube
        .calls()
        .into_iter()
        .filter(|c| c.method != Method::GET && !c.path.contains("/events"))
        .map(|c| (c.method, c.path))
        .collect()
}

#[tokio::test]
async fn a_client_peer_gets_its_profile_in_a_secret_it_owns() {
    let (h, _, obj) = delivered().await;
    let secret = secret(&h).expect("the Secret is written");
    let profile = text(&secret, "wg0.conf");
    let peer_id = h.stored(&obj).unwrap().status.unwrap().peer_id.unwrap();
    let key = crate::simulator::peer_private_key(&peer_id);
    assert!(profile.contains(&format!("PrivateKey = {key}")), "{profile}");
    assert_eq!(text(&secret, "endpoint"), "hub.vpn.altostr.at:51820");
    assert_eq!(text(&secret, "routes"), "10.0.0.0/8");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    let stored = h.stored(&obj).unwrap();
    assert_eq!((owner.kind.as_str(), owner.controller), ("VpnPeer", Some(true)));
    assert_eq!(Some(&owner.uid), stored.metadata.uid.as_ref());
    let labels = secret.metadata.labels.as_ref().unwrap();
    assert_eq!(labels.get(decide::PEER_UID_LABEL), stored.metadata.uid.as_ref());
    let status = stored
        .status
        .unwrap()
        .profile_secret
        .expect("status names the Secret");
    assert_eq!(status.name, SECRET);
    assert_eq!(
        status.profile_hash,
        decide::profile_hash(secret.data.as_ref().unwrap())
    );
    assert_eq!(profile_ready(&h, &obj), Some(("True".into(), "Delivered".into())));
    assert_eq!(h.altostrat.count(Endpoint::GetClientConfiguration), 1);
}

#[tokio::test]
async fn a_converged_resync_writes_nothing_and_fetches_nothing() {
    let (h, _, obj) = delivered().await;
    h.altostrat.clear_calls();
    h.kube.clear_calls();
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.calls(), vec![]);
    assert_eq!(kube_writes(&h), vec![]);
}

#[tokio::test]
async fn an_expired_share_token_alone_fetches_nothing() {
    let (h, _, obj) = delivered().await;
    h.altostrat.expire_share_tokens();
    h.observations_expire();
    h.altostrat.clear_calls();
    h.reconcile(&obj).await.unwrap();
    assert_eq!(h.altostrat.count(Endpoint::GetClientConfiguration), 0);
    assert_eq!(profile_ready(&h, &obj), Some(("True".into(), "Delivered".into())));
}

#[tokio::test]
async fn a_route_edit_on_the_instance_refreshes_the_profile() {
    let (h, hub, obj) = delivered().await;
    let before = secret(&h).unwrap();
    let id = h.stored(&hub).unwrap().status.unwrap().instance_id.unwrap();
    h.altostrat.edit_instance(&id, |i| {
        i.pushed_routes = vec!["10.0.0.0/8".into(), "172.16.0.0/12".into()]
    });
    h.observations_expire();
    h.reconcile(&obj).await.unwrap();
    let after = secret(&h).unwrap();
    assert_eq!(text(&after, "routes"), "10.0.0.0/8,172.16.0.0/12");
    assert!(text(&after, "wg0.conf").contains("AllowedIPs = 10.0.0.0/8, 172.16.0.0/12"));
    let hash = h
        .stored(&obj)
        .unwrap()
        .status
        .unwrap()
        .profile_secret
        .unwrap()
        .profile_hash;
    assert_ne!(
        Some(hash),
        before
            .metadata
            .annotations
            .unwrap()
            .get(decide::HASH_ANNOTATION)
            .cloned()
    );
}

#[tokio::test]
async fn a_deleted_secret_comes_back_with_a_fresh_share_token() {
    let (h, _, obj) = delivered().await;
    h.kube.remove(&named_secret(SECRET));
    h.altostrat.expire_share_tokens();
    h.altostrat.clear_calls();
    h.reconcile(&obj).await.unwrap();
    assert!(secret(&h).is_some(), "the Secret is written again");
    assert_eq!(
        h.altostrat.calls(),
        vec![
            Endpoint::GetClientConfiguration,
            Endpoint::GetPeer,
            Endpoint::GetClientConfiguration
        ],
        "the expired token is refused once, and a GET of the peer shows a fresh one"
    );
    assert_eq!(profile_ready(&h, &obj), Some(("True".into(), "Delivered".into())));
}

#[tokio::test]
async fn data_edited_out_of_band_is_restored() {
    let (h, _, obj) = delivered().await;
    let mut edited = secret(&h).unwrap();
    edited
        .data
        .as_mut()
        .unwrap()
        .insert("wg0.conf".into(), ByteString(b"edited".to_vec()));
    h.kube.put(&edited);
    h.reconcile(&obj).await.unwrap();
    assert!(text(&secret(&h).unwrap(), "wg0.conf").contains("[Interface]"));
}

#[tokio::test]
async fn a_foreign_secret_of_that_name_is_left_untouched() {
    let h = Harness::new();
    let hub = h.apply(instance("hub", json!({})));
    h.reconcile(&hub).await.unwrap();
    let mut foreign = named_secret(SECRET);
    foreign.data = Some(BTreeMap::from([(
        "password".into(),
        ByteString(b"hunter2".to_vec()),
    )]));
    let foreign = h.kube.put(&foreign);
    let obj = h.apply(peer("alice", "hub", json!({"profileSecret": {"name": SECRET}})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(secret(&h), Some(foreign.clone()), "not a byte changed");
    assert_eq!(
        profile_ready(&h, &obj),
        Some(("False".into(), "SecretConflict".into()))
    );
    assert_eq!(h.altostrat.count(Endpoint::GetClientConfiguration), 0);
    assert!(h.stored(&obj).unwrap().status.unwrap().profile_secret.is_none());
    let warnings = h.kube.events();
    assert!(
        warnings.iter().any(|(_, reason)| reason == "SecretConflict"),
        "{warnings:?}"
    );

    let stalled = condition(&h.stored(&obj).unwrap().status.unwrap().conditions, "Stalled");
    assert_eq!(
        stalled,
        Some(("True".into(), "SecretConflict".into())),
        "a person must act"
    );

    h.kube.clear_calls();
    h.reconcile(&obj).await.unwrap();
    assert_eq!(kube_writes(&h), vec![], "no status write nor a second warning");

    h.kube.remove(&foreign);
    h.reconcile(&obj).await.unwrap();
    let conditions = h.stored(&obj).unwrap().status.unwrap().conditions;
    assert_eq!(condition(&conditions, "ProfileReady").unwrap().0, "True");
    assert_eq!(
        condition(&conditions, "Stalled"),
        None,
        "the stall ends with its cause"
    );
}

#[tokio::test]
async fn a_site_peer_has_no_profile_to_deliver() {
    let h = Harness::new();
    let hub = h.apply(instance("hub", json!({})));
    h.reconcile(&hub).await.unwrap();
    let spec = json!({"type": "site", "userId": null, "siteId": "c3d5e2a0-88c9-4f7f-9f7b-6a1e2b4c5d6e",
        "subnets": ["192.168.10.0/24"], "profileSecret": {"name": SECRET}});
    let obj = h.apply(peer("office", "hub", spec));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        profile_ready(&h, &obj),
        Some(("False".into(), "ProfileNotAvailable".into()))
    );
    assert_eq!(secret(&h), None);
    assert_eq!(h.altostrat.count(Endpoint::GetClientConfiguration), 0);
}

#[tokio::test]
async fn removing_the_field_deletes_the_secret_and_the_condition() {
    let (h, _, obj) = delivered().await;
    let obj = h.edit(&obj, |p| p.spec.profile_secret = None);
    h.reconcile(&obj).await.unwrap();
    assert_eq!(secret(&h), None);
    let status = h.stored(&obj).unwrap().status.unwrap();
    assert!(status.profile_secret.is_none());
    assert_eq!(profile_ready(&h, &obj), None);
}

#[tokio::test]
async fn a_peer_recreated_in_altostrat_gets_the_new_peers_profile() {
    let (h, hub, obj) = delivered().await;
    let id = h.stored(&hub).unwrap().status.unwrap().instance_id.unwrap();
    let old_peer = h.stored(&obj).unwrap().status.unwrap().peer_id.unwrap();
    h.altostrat.remove_peer(&id, &old_peer);
    h.observations_expire();
    h.reconcile(&obj).await.unwrap();
    let new_peer = h.stored(&obj).unwrap().status.unwrap().peer_id.unwrap();
    assert_ne!(new_peer, old_peer);
    let profile = text(&secret(&h).unwrap(), "wg0.conf");
    assert!(
        profile.contains(&crate::simulator::peer_private_key(&new_peer)),
        "{profile}"
    );
    assert_eq!(profile_ready(&h, &obj), Some(("True".into(), "Delivered".into())));
}

#[tokio::test]
async fn a_peer_lost_in_altostrat_no_longer_claims_a_current_profile() {
    let (h, hub, obj) = delivered().await;
    let id = h.stored(&hub).unwrap().status.unwrap().instance_id.unwrap();
    let old_peer = h.stored(&obj).unwrap().status.unwrap().peer_id.unwrap();
    h.altostrat.remove_peer(&id, &old_peer);
    h.altostrat.refuse(
        Endpoint::CreatePeer,
        crate::altostrat::ApiError::QuotaExceeded {
            endpoint: Endpoint::CreatePeer,
            status: 402,
            message: "No seats left.".into(),
        },
    );
    h.observations_expire();
    assert!(h.reconcile(&obj).await.is_err());
    assert_eq!(
        profile_ready(&h, &obj),
        Some(("False".into(), "ProfilePending".into()))
    );
}

#[tokio::test]
async fn a_download_the_budget_holds_back_waits_without_failing_the_peer() {
    let (h, _, obj) = delivered().await;
    h.kube.remove(&named_secret(SECRET));
    let held = crate::altostrat::ApiError::Throttled {
        endpoint: Endpoint::GetClientConfiguration,
        expected_wait: std::time::Duration::from_secs(12),
    };
    h.altostrat.refuse(Endpoint::GetClientConfiguration, held);
    let action = h.reconcile(&obj).await.expect("no error: the peer is in sync");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(12))
    );
    assert_eq!(
        profile_ready(&h, &obj),
        Some(("False".into(), "ProfilePending".into()))
    );
    let synced = condition(&h.stored(&obj).unwrap().status.unwrap().conditions, "Synced");
    assert_eq!(synced.map(|c| c.0), Some("True".into()));
    h.reconcile(&obj).await.unwrap();
    assert!(secret(&h).is_some());
    assert_eq!(profile_ready(&h, &obj), Some(("True".into(), "Delivered".into())));
}

#[tokio::test]
async fn a_paused_peer_leaves_its_secret_as_it_is() {
    let (h, _, obj) = delivered().await;
    let obj = h.annotate(&obj, crate::crd::PAUSED_ANNOTATION, Some("true"));
    h.kube.remove(&named_secret(SECRET));
    h.altostrat.clear_calls();
    h.reconcile(&obj).await.unwrap();
    assert_eq!(secret(&h), None);
    assert_eq!(h.altostrat.count(Endpoint::GetClientConfiguration), 0);
    let status = h.stored(&obj).unwrap().status.unwrap();
    assert_eq!(
        status.profile_secret.map(|s| s.name),
        Some(SECRET.to_owned()),
        "still named"
    );
}

#[tokio::test]
async fn a_withheld_update_still_names_the_secret() {
    let (h, _, obj) = delivered().await;
    let obj = h.annotate(&obj, crate::crd::PAUSED_ANNOTATION, Some("true"));
    let obj = h.edit(&obj, |p| p.spec.route_all = Some(true));
    h.reconcile(&obj).await.unwrap();
    let status = h.stored(&obj).unwrap().status.unwrap();
    assert!(!status.plan.is_empty(), "the update is withheld");
    assert_eq!(status.profile_secret.map(|s| s.name), Some(SECRET.to_owned()));
    assert!(secret(&h).is_some());
}

#[tokio::test]
async fn the_private_key_is_in_the_secret_only() {
    let (h, _, obj) = delivered().await;
    let status = serde_json::to_string(&h.stored(&obj).unwrap().status).unwrap();
    let events = format!("{:?}", h.kube.noted_events());
    for place in [status, events] {
        assert!(!place.contains("PRIVATE-KEY"), "{place}");
    }
}

#[tokio::test]
async fn a_peer_not_created_yet_says_its_profile_is_pending() {
    let h = Harness::new();
    let obj = h.apply(peer("alice", "hub", json!({"profileSecret": {"name": SECRET}})));
    h.reconcile(&obj).await.unwrap();
    assert_eq!(
        profile_ready(&h, &obj),
        Some(("False".into(), "ProfilePending".into()))
    );
}

// ---------------------------------------------------------------------------------------------
// Pure decisions

const WIREGUARD: &str = "[Interface]\nPrivateKey = k\nAddress = 10.8.0.2/32\n\n[Peer]\nPublicKey = p\nEndpoint = hub.vpn.altostr.at:51820\nAllowedIPs = 10.0.0.0/8, 192.168.0.0/16\n";

fn keys(data: &BTreeMap<String, ByteString>) -> Vec<(&str, String)> {
    data.iter()
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

#[test]
fn a_wireguard_profile_gives_its_endpoint_and_routes() {
    let data = decide::contents(Protocol::Wireguard, &ClientConfiguration::Text(WIREGUARD.into())).unwrap();
    assert_eq!(
        keys(&data),
        vec![
            ("endpoint", "hub.vpn.altostr.at:51820".into()),
            ("routes", "10.0.0.0/8,192.168.0.0/16".into()),
            ("wg0.conf", WIREGUARD.into()),
        ]
    );
}

#[test]
fn a_json_answer_is_read_by_its_usual_field_names_only() {
    let json = ClientConfiguration::Json(json!({"format": "wireguard", "config": WIREGUARD}));
    let data = decide::contents(Protocol::Wireguard, &json).unwrap();
    assert!(data.contains_key("wg0.conf"));
    let unknown = ClientConfiguration::Json(json!({"qr": "...", "download_url": "https://x"}));
    assert!(decide::contents(Protocol::Wireguard, &unknown).is_err());
    let not_wireguard = ClientConfiguration::Text("<html>login</html>".into());
    assert!(decide::contents(Protocol::Wireguard, &not_wireguard).is_err());
}

#[test]
fn an_openvpn_profile_gives_its_remote_and_routes() {
    let profile = "client\ndev tun\nremote hub.vpn.altostr.at 1194\nroute 10.0.0.0 255.0.0.0\n";
    let data = decide::contents(Protocol::Openvpn, &ClientConfiguration::Text(profile.into())).unwrap();
    assert_eq!(
        keys(&data),
        vec![
            ("client.ovpn", profile.into()),
            ("endpoint", "hub.vpn.altostr.at:1194".into()),
            ("routes", "10.0.0.0/8".into()),
        ]
    );
}

#[test]
fn the_secret_is_refreshed_only_when_missing_edited_or_outdated() {
    let ours = |inputs: &str, written: &str, data: &str| SecretSeen::Ours {
        inputs: Some(inputs.into()),
        written_hash: Some(written.into()),
        data_hash: data.into(),
    };
    let current = Refresh::Current {
        profile_hash: "h".into(),
    };
    assert_eq!(decide::refresh(&ours("in", "h", "h"), "in"), current);
    assert!(matches!(
        decide::refresh(&ours("old", "h", "h"), "in"),
        Refresh::Fetch { .. }
    ));
    assert!(matches!(
        decide::refresh(&ours("in", "h", "x"), "in"),
        Refresh::Fetch { .. }
    ));
    assert!(matches!(
        decide::refresh(&SecretSeen::Missing, "in"),
        Refresh::Fetch { .. }
    ));
    assert_eq!(decide::refresh(&SecretSeen::Foreign, "in"), Refresh::Conflict);
}

#[test]
fn only_a_controller_reference_to_this_peer_makes_a_secret_ours() {
    let mut secret = named_secret(SECRET);
    let labelled = [(decide::PEER_UID_LABEL.to_owned(), "uid-1".to_owned())];
    secret.metadata.labels = Some(labelled.into());
    assert_eq!(
        decide::judge(Some(&secret), "uid-1"),
        SecretSeen::Foreign,
        "a label can be copied"
    );
    secret.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "vpn.altostrat.io/v1alpha1".into(),
            kind: "VpnPeer".into(),
            name: "alice".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    ]);
    assert!(decide::judge(Some(&secret), "uid-1").is_ours());
    assert_eq!(decide::judge(Some(&secret), "uid-2"), SecretSeen::Foreign);
    secret.metadata.labels = None;
    assert_eq!(
        decide::judge(Some(&secret), "uid-1"),
        SecretSeen::Foreign,
        "without its label, the admission policy would refuse every write"
    );
    assert_eq!(decide::judge(None, "uid-1"), SecretSeen::Missing);
}

#[test]
fn inputs_wait_for_an_instance_still_applying_changes_and_ignore_the_share_token() {
    let mut instance = crate::altostrat::model::Instance {
        id: "i-1".into(),
        hostname: "hub.vpn.altostr.at".into(),
        configured: true,
        rsa_ready: true,
        diffie_hellman_ready: true,
        server_ready: true,
        ..Default::default()
    };
    let mut peer = crate::altostrat::model::Peer {
        id: "p-1".into(),
        token: Some("one".into()),
        ..Default::default()
    };
    let settled = decide::inputs_digest(&peer, &instance).unwrap();
    peer.token = Some("two".into());
    assert_eq!(decide::inputs_digest(&peer, &instance), Ok(settled.clone()));
    instance.pushed_routes = vec!["10.0.0.0/8".into()];
    assert_ne!(decide::inputs_digest(&peer, &instance), Ok(settled));
    instance.status = vec!["config-updated".into()];
    assert!(decide::inputs_digest(&peer, &instance).is_err());
}
