//! Contract tests: the project's Altostrat client against the simulator over real HTTP, for
//! every endpoint, plus the simulator behaviours the operator's error paths rely on.
#![cfg(feature = "simulator")]

use std::time::Duration;

use altostrat_vpn_operator::altostrat::model::{
    ClientConfiguration, DnsCustomRecord, DnsRecordType, Instance, InstanceCreate, InstanceUpdate,
    PeerCreate, PeerType, PeerUpdate, Protocol, region_codes,
};
use altostrat_vpn_operator::altostrat::{ApiError, ApiToken, HttpClient, HttpClientConfig, VpnApi};
use altostrat_vpn_operator::simulator::{
    self, FaultConfig, FaultRule, Fidelity, InstanceDelete, RunningSimulator, Simulator, SimulatorConfig,
};

const USER: &str = "a1b2c3d4-e5f6-7890-1234-567890abcdef";
const SITE: &str = "c3d5e2a0-88c9-4f7f-9f7b-6a1e2b4c5d6e";

async fn start(config: SimulatorConfig) -> (RunningSimulator, HttpClient, ApiToken) {
    let sim = Simulator::spawn(config).await.unwrap();
    let client = HttpClient::new(HttpClientConfig {
        base_url: sim.base_url(),
        ..HttpClientConfig::default()
    })
    .unwrap();
    (sim, client, ApiToken::new("sim-token"))
}

fn fast() -> SimulatorConfig {
    SimulatorConfig {
        provision_delay: Duration::ZERO,
        status_clear_delay: Duration::from_millis(200),
        ..SimulatorConfig::default()
    }
}

/// Polls `probe` every 20 ms until it yields a value; panics with `what` after 10 s.
async fn poll<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn create(hostname: &str) -> InstanceCreate {
    InstanceCreate {
        name: "Test hub".into(),
        hostname: hostname.into(),
        region: "sjc".into(),
    }
}

fn wireguard_client() -> PeerCreate {
    PeerCreate {
        peer_type: PeerType::Client,
        protocol: Protocol::Wireguard,
        user_id: Some(USER.into()),
        route_all: Some(false),
        site_id: None,
        subnets: None,
    }
}

fn site() -> PeerCreate {
    PeerCreate {
        peer_type: PeerType::Site,
        protocol: Protocol::Openvpn,
        site_id: Some(SITE.into()),
        subnets: Some(vec!["192.168.10.0/24".into()]),
        user_id: None,
        route_all: None,
    }
}

fn update() -> InstanceUpdate {
    InstanceUpdate {
        name: "Renamed hub".into(),
        pushed_routes: vec!["10.0.0.0/8".into()],
        public_dns: vec!["1.1.1.1".into(), "8.8.8.8".into()],
        domains: vec!["corp.internal".into()],
        split_dns: vec!["10.0.0.53".into()],
        dns_custom: vec![DnsCustomRecord {
            name: "fs.corp.internal".into(),
            record_type: DnsRecordType::A,
            value: "10.0.0.10".into(),
        }],
    }
}

#[tokio::test]
async fn every_instance_endpoint_round_trips_through_the_client() {
    let (_sim, api, token) = start(fast()).await;
    let codes = region_codes(&api.list_regions(&token).await.unwrap());
    assert!(codes.contains(&"sjc".to_owned()) && codes.contains(&"lax".to_owned()));

    let created = api
        .create_instance(&token, &create("contract-hub"))
        .await
        .unwrap();
    assert_eq!(created.hostname, "contract-hub.vpn.altostr.at");
    assert_eq!(
        created.public_dns,
        vec!["9.9.9.9"],
        "the single resolver of every documented create example"
    );
    assert!(created.is_provisioned(), "zero provision delay");
    assert_eq!(api.list_instances(&token).await.unwrap().len(), 1);

    let updating = std::time::Instant::now();
    let updated = api.update_instance(&token, &created.id, &update()).await.unwrap();
    assert_eq!(updated.name, "Renamed hub");
    assert_eq!(updated.dns_custom[0].value, "10.0.0.10");
    assert_eq!(
        updated.status,
        vec!["config-updated"],
        "a change is pending for a while"
    );
    let fetched = poll("the pending change to clear", || async {
        let i = api.get_instance(&token, &created.id).await.unwrap();
        i.status.is_empty().then_some(i)
    })
    .await;
    assert!(
        updating.elapsed() >= Duration::from_millis(200),
        "cleared no earlier than the clear delay"
    );
    assert_eq!(fetched.split_dns, vec!["10.0.0.53"]);

    // Same body again: nothing changes, nothing becomes pending.
    assert!(
        api.update_instance(&token, &created.id, &update())
            .await
            .unwrap()
            .status
            .is_empty()
    );

    api.delete_instance(&token, &created.id).await.unwrap();
    let gone = api.get_instance(&token, &created.id).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    assert!(
        api.delete_instance(&token, &created.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    // The hostname is free again.
    api.create_instance(&token, &create("contract-hub"))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_peer_endpoint_round_trips_and_client_configuration_downloads() {
    let (_sim, api, token) = start(fast()).await;
    let hub = api.create_instance(&token, &create("peer-hub")).await.unwrap();
    api.update_instance(&token, &hub.id, &update()).await.unwrap();

    let client = wireguard_client();
    let site = site();
    let alice = api.create_peer(&token, &hub.id, &client).await.unwrap();
    let branch = api.create_peer(&token, &hub.id, &site).await.unwrap();
    assert!(
        alice.token.is_some() && branch.token.is_none(),
        "share tokens only for clients"
    );
    assert_eq!(alice.token_ttl, Some(3600));
    assert!(
        format!("{alice:?}").contains("<redacted>"),
        "Debug never prints the share token"
    );
    assert_eq!(
        api.get_instance(&token, &hub.id).await.unwrap().status,
        vec!["config-updated", "peer-created"]
    );

    assert_eq!(api.list_peers(&token, &hub.id, None).await.unwrap().len(), 2);
    let sites = api
        .list_peers(&token, &hub.id, Some(PeerType::Site))
        .await
        .unwrap();
    assert_eq!(
        sites.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec![branch.id.as_str()]
    );
    assert_eq!(
        api.get_peer(&token, &hub.id, &alice.id)
            .await
            .unwrap()
            .user_id
            .as_deref(),
        Some(USER)
    );

    let alice = api
        .update_peer(
            &token,
            &hub.id,
            &alice.id,
            &PeerUpdate {
                route_all: Some(true),
                subnets: None,
            },
        )
        .await
        .unwrap();
    assert!(alice.route_all);
    let wrong = api
        .update_peer(
            &token,
            &hub.id,
            &alice.id,
            &PeerUpdate {
                subnets: Some(vec![]),
                route_all: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&wrong, ApiError::Invalid { message, .. } if message.contains("'subnets'")),
        "{wrong}"
    );
    let branch = api
        .update_peer(
            &token,
            &hub.id,
            &branch.id,
            &PeerUpdate {
                subnets: Some(vec!["192.168.10.0/24".into(), "192.168.11.0/24".into()]),
                route_all: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(branch.subnets.len(), 2);

    // What the site offers, not what its peers route.
    let offered = api.list_site_subnets(&token, SITE).await.unwrap();
    assert_eq!(offered[0]["subnet"], "10.195.212.0/24", "{offered:?}");

    let share = ApiToken::new(alice.token.clone().unwrap());
    let ClientConfiguration::Text(text) = api.client_configuration(&share, false).await.unwrap() else {
        panic!("expected text")
    };
    assert!(
        text.contains("[Interface]") && text.contains("Endpoint = peer-hub.vpn.altostr.at:51820"),
        "{text}"
    );
    assert!(
        text.contains("AllowedIPs = 0.0.0.0/0"),
        "route_all gives a full tunnel"
    );
    let ClientConfiguration::Json(json) = api.client_configuration(&share, true).await.unwrap() else {
        panic!("expected json")
    };
    assert_eq!(json["format"], "wireguard");
    let unknown = api
        .client_configuration(&ApiToken::new("shr_unknown"), false)
        .await
        .unwrap_err();
    assert!(matches!(unknown, ApiError::Unauthorized { .. }), "{unknown}");

    api.delete_peer(&token, &hub.id, &alice.id).await.unwrap();
    assert!(
        api.get_peer(&token, &hub.id, &alice.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Deleting the instance removes its remaining peers, not the site's subnets.
    api.delete_instance(&token, &hub.id).await.unwrap();
    assert!(peers_gone(&api, &token, &hub.id).await);
    assert_eq!(api.list_site_subnets(&token, SITE).await.unwrap(), offered);
}

async fn peers_gone(api: &HttpClient, token: &ApiToken, instance_id: &str) -> bool {
    api.list_peers(token, instance_id, None)
        .await
        .is_err_and(|e| e.is_not_found())
}

/// The value of `key = value` in a downloaded profile.
fn profile_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .map(str::to_owned)
}

async fn download(api: &HttpClient, share: &str) -> String {
    let share = ApiToken::new(share);
    match api.client_configuration(&share, false).await.unwrap() {
        ClientConfiguration::Text(text) => text,
        other => panic!("expected a text profile, got {other:?}"),
    }
}

#[tokio::test]
async fn a_downloaded_profile_follows_the_hub_and_the_peer_as_they_are_now() {
    let (_sim, api, token) = start(fast()).await;
    let hub = api.create_instance(&token, &create("profile-hub")).await.unwrap();
    api.update_instance(&token, &hub.id, &update()).await.unwrap();
    let alice = api
        .create_peer(&token, &hub.id, &wireguard_client())
        .await
        .unwrap();
    let share = alice.token.clone().unwrap();
    let text = download(&api, &share).await;
    let field = |key| profile_value(&text, key);
    assert_eq!(
        field("Endpoint").as_deref(),
        Some("profile-hub.vpn.altostr.at:51820")
    );
    assert_eq!(field("AllowedIPs").as_deref(), Some("10.0.0.0/8"), "{text}");
    assert_eq!(field("DNS").as_deref(), Some("1.1.1.1, 8.8.8.8, corp.internal"));
    assert_eq!(field("PrivateKey").map(|k| k.len()), Some(44), "{text}");
    assert!(field("Address").is_some_and(|a| a.starts_with("10.8.") && a.ends_with("/32")));
    assert_eq!(field("PersistentKeepalive").as_deref(), Some("25"));

    let routes = InstanceUpdate {
        pushed_routes: vec!["10.10.0.0/16".into(), "10.20.0.0/16".into()],
        ..update()
    };
    api.update_instance(&token, &hub.id, &routes).await.unwrap();
    let edited = download(&api, &share).await;
    assert_eq!(
        profile_value(&edited, "AllowedIPs").as_deref(),
        Some("10.10.0.0/16, 10.20.0.0/16"),
        "the route edit shows in the next download"
    );
    assert_eq!(
        profile_value(&edited, "PrivateKey"),
        field("PrivateKey"),
        "same peer, same key"
    );
    let full = PeerUpdate {
        route_all: Some(true),
        subnets: None,
    };
    api.update_peer(&token, &hub.id, &alice.id, &full).await.unwrap();
    let full = download(&api, &share).await;
    assert_eq!(
        profile_value(&full, "AllowedIPs").as_deref(),
        Some("0.0.0.0/0, ::/0")
    );

    let ClientConfiguration::Json(json) = api
        .client_configuration(&ApiToken::new(share), true)
        .await
        .unwrap()
    else {
        panic!("expected json")
    };
    assert_eq!(
        (json["format"].as_str(), json["config"].as_str()),
        (Some("wireguard"), Some(full.as_str()))
    );
}

/// `GET /vpn/client` with `share` over raw HTTP: status and JSON body (`Null` for text).
async fn raw_download(sim: &RunningSimulator, share: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!("{}/vpn/client", sim.base_url()))
        .bearer_auth(share)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn expire_token(sim: &RunningSimulator, peer_id: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/_admin/peers/{peer_id}/expire-token", sim.base_url()))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn refusal(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "authentication_error",
        "code": code,
        "message": message,
        "doc_url": format!("https://docs.altostrat.io/errors/{code}"),
    })
}

#[tokio::test]
async fn an_expired_share_token_is_refused_and_the_next_read_shows_a_new_one() {
    let (sim, api, token) = start(fast()).await;
    let hub = api.create_instance(&token, &create("share-hub")).await.unwrap();
    let alice = api
        .create_peer(&token, &hub.id, &wireguard_client())
        .await
        .unwrap();
    let branch = api.create_peer(&token, &hub.id, &site()).await.unwrap();
    let first = alice.token.clone().unwrap();
    assert!(
        first.starts_with("eyJpdiI6"),
        "shaped like the documented example: {first}"
    );
    assert_eq!(raw_download(&sim, &first).await.0, 200);
    let again = api.get_peer(&token, &hub.id, &alice.id).await.unwrap();
    assert_eq!(
        again.token.as_deref(),
        Some(first.as_str()),
        "a live token is shown again"
    );

    assert_eq!(expire_token(&sim, &alice.id).await, 204);
    assert_eq!(
        expire_token(&sim, "0b5c7a4e-0000-4000-8000-000000000000").await,
        404
    );
    let expired = refusal("token_expired", "The share token has expired.");
    assert_eq!(raw_download(&sim, &first).await, (401, expired.clone()));
    let err = api
        .client_configuration(&ApiToken::new(first.clone()), false)
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Unauthorized { .. }), "{err}");

    let renewed = api.get_peer(&token, &hub.id, &alice.id).await.unwrap();
    let second = renewed.token.clone().unwrap();
    assert_ne!(second, first, "the read found the token expired");
    assert!(download(&api, &second).await.contains("[Interface]"));
    let listed = api.list_peers(&token, &hub.id, None).await.unwrap();
    let tokens: Vec<_> = listed.iter().map(|p| p.token.as_deref()).collect();
    assert_eq!(tokens, vec![Some(second.as_str()), None], "site peers carry none");
    assert_eq!(
        raw_download(&sim, &first).await,
        (401, expired),
        "the old one stays refused"
    );
    let unknown = refusal("invalid_token", "The share token is not valid.");
    assert_eq!(raw_download(&sim, "shr_unknown").await, (401, unknown.clone()));

    api.delete_peer(&token, &hub.id, &alice.id).await.unwrap();
    assert_eq!(
        raw_download(&sim, &second).await,
        (401, unknown),
        "its peer is gone"
    );
    assert_eq!(
        expire_token(&sim, &branch.id).await,
        204,
        "a site peer has nothing to expire"
    );
}

#[tokio::test]
async fn a_share_token_expires_by_itself_after_its_ttl() {
    let config = SimulatorConfig {
        share_token_ttl: Duration::from_secs(1),
        ..fast()
    };
    let (sim, api, token) = start(config).await;
    let hub = api.create_instance(&token, &create("ttl-hub")).await.unwrap();
    let alice = api
        .create_peer(&token, &hub.id, &wireguard_client())
        .await
        .unwrap();
    assert_eq!(alice.token_ttl, Some(1), "the configured life, in seconds");
    let first = alice.token.unwrap();
    let status = poll("the token to expire", || async {
        let (status, body) = raw_download(&sim, &first).await;
        (status != 200).then_some((status, body))
    })
    .await;
    assert_eq!(
        status,
        (401, refusal("token_expired", "The share token has expired."))
    );
    // A fresh token lives a second too; on a slow machine a read may have to be repeated.
    poll("a new token that downloads", || async {
        let peer = api.get_peer(&token, &hub.id, &alice.id).await.unwrap();
        let share = peer.token.filter(|t| *t != first)?;
        (raw_download(&sim, &share).await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn with_a_token_per_read_every_answer_shows_a_new_token_and_the_old_ones_keep_working() {
    let (sim, api, token) = start(with_fidelity(Fidelity::profile("token-per-read").unwrap())).await;
    let hub = api
        .create_instance(&token, &create("per-read-hub"))
        .await
        .unwrap();
    let alice = api
        .create_peer(&token, &hub.id, &wireguard_client())
        .await
        .unwrap();
    let read = api.get_peer(&token, &hub.id, &alice.id).await.unwrap();
    let listed = api.list_peers(&token, &hub.id, None).await.unwrap();
    let keep = PeerUpdate {
        route_all: Some(false),
        subnets: None,
    };
    let updated = api.update_peer(&token, &hub.id, &alice.id, &keep).await.unwrap();
    let tokens: Vec<String> = [alice, read, listed[0].clone(), updated]
        .into_iter()
        .map(|p| p.token.unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<_> = tokens.iter().collect();
    assert_eq!(distinct.len(), 4, "one token per answer: {tokens:?}");
    for share in &tokens {
        assert_eq!(
            raw_download(&sim, share).await.0,
            200,
            "an older token still works"
        );
    }
    assert_eq!(expire_token(&sim, &listed[0].id).await, 204);
    for share in &tokens {
        assert_eq!(
            raw_download(&sim, share).await.0,
            401,
            "the admin API expires them all"
        );
    }
    let renewed = api.get_peer(&token, &hub.id, &listed[0].id).await.unwrap();
    assert_eq!(raw_download(&sim, &renewed.token.unwrap()).await.0, 200);
}

#[tokio::test]
async fn share_token_refusals_take_the_configured_error_shape() {
    let (sim, _api, _token) = start(with_fidelity(Fidelity::profile("laravel").unwrap())).await;
    assert_eq!(
        raw_download(&sim, "shr_unknown").await,
        (
            401,
            serde_json::json!({"message": "The share token is not valid."})
        )
    );
}

#[tokio::test]
async fn authentication_and_scopes_are_enforced() {
    let config = SimulatorConfig {
        tokens: vec![
            simulator::ApiToken::all_scopes("sim-token"),
            simulator::ApiToken::parse("viewer=vpn:view").unwrap(),
        ],
        ..fast()
    };
    let (_sim, api, _) = start(config).await;
    let err = api.list_instances(&ApiToken::new("nope")).await.unwrap_err();
    assert!(matches!(err, ApiError::Unauthorized { .. }), "{err}");
    assert!(
        api.list_instances(&ApiToken::new("viewer"))
            .await
            .unwrap()
            .is_empty()
    );
    let err = api
        .create_instance(&ApiToken::new("viewer"), &create("scoped-hub"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::Forbidden { message, .. } if message.contains("vpn:create")),
        "{err}"
    );
    assert!(!err.to_string().contains("viewer"), "errors never echo the token");
}

#[tokio::test]
async fn accounts_see_only_their_own_instances_but_hostnames_are_global() {
    let acme =
        simulator::ApiToken::parse("acme-token=vpn:view,vpn:create,vpn:update,vpn:delete@acme").unwrap();
    assert_eq!((acme.account.as_str(), acme.scopes.len()), ("acme", 4));
    assert!(simulator::ApiToken::parse("acme-token@").is_err());
    let config = SimulatorConfig {
        tokens: vec![
            simulator::ApiToken::all_scopes("sim-token"),
            simulator::ApiToken::parse("teammate").unwrap(),
            acme,
        ],
        ..fast()
    };
    let (sim, api, token) = start(config).await;
    let (teammate, other) = (ApiToken::new("teammate"), ApiToken::new("acme-token"));
    let theirs = api.create_instance(&other, &create("acme-hub")).await.unwrap();
    let their_peer = api.create_peer(&other, &theirs.id, &site()).await.unwrap();
    let ours = api.create_instance(&teammate, &create("our-hub")).await.unwrap();

    let ids = |list: Vec<Instance>| list.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(
        ids(api.list_instances(&token).await.unwrap()),
        vec![ours.id.clone()],
        "tokens without an account share the default one"
    );
    assert_eq!(
        ids(api.list_instances(&other).await.unwrap()),
        vec![theirs.id.clone()]
    );

    // Another account's instance and its peers do not exist for this token.
    let (id, peer_id) = (theirs.id.as_str(), their_peer.id.as_str());
    let peer_update = PeerUpdate {
        subnets: Some(vec![]),
        route_all: None,
    };
    let refused = [
        api.get_instance(&token, id).await.map(drop),
        api.update_instance(&token, id, &update()).await.map(drop),
        api.list_peers(&token, id, None).await.map(drop),
        api.create_peer(&token, id, &wireguard_client()).await.map(drop),
        api.get_peer(&token, id, peer_id).await.map(drop),
        api.update_peer(&token, id, peer_id, &peer_update).await.map(drop),
        api.delete_peer(&token, id, peer_id).await.map(drop),
        api.delete_instance(&token, id).await.map(drop),
    ];
    for (i, answer) in refused.into_iter().enumerate() {
        let err = answer.expect_err("another account's instance is invisible");
        assert!(err.is_not_found(), "call {i}: {err}");
    }

    // Its hostname is taken all the same, with the answer a same-account duplicate gets.
    let conflict = api
        .create_instance(&token, &create("acme-hub"))
        .await
        .unwrap_err();
    assert!(
        matches!(&conflict, ApiError::Conflict { code, message, .. }
            if code == "hostname_taken" && message.contains("'acme-hub' is already in use")),
        "{conflict}"
    );

    // The refused calls changed nothing.
    let kept = api.get_instance(&other, id).await.unwrap();
    assert_eq!(kept.name, "Test hub", "{kept:?}");
    let peer = api.get_peer(&other, id, peer_id).await.unwrap();
    assert_eq!(peer.subnets, vec!["192.168.10.0/24"]);
    assert_eq!(sim.simulator().instances().len(), 2);
    assert_eq!(sim.simulator().peers().len(), 1);
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let (_sim, api, token) = start(fast()).await;
    let cases: Vec<(InstanceCreate, u16, &str)> = vec![
        (
            InstanceCreate {
                name: "ab".into(),
                ..create("valid-hub")
            },
            400,
            "'name'",
        ),
        (create("www"), 400, "reserved"),
        (create("Bad_Host"), 400, "'hostname'"),
        (
            InstanceCreate {
                region: "atlantis".into(),
                ..create("valid-hub")
            },
            422,
            "sjc",
        ),
    ];
    for (body, status, needle) in cases {
        match api.create_instance(&token, &body).await.unwrap_err() {
            ApiError::Invalid {
                status: s, message, ..
            } => {
                assert_eq!(s, status, "{message}");
                assert!(message.contains(needle), "{message} lacks {needle}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    api.create_instance(&token, &create("taken-hub")).await.unwrap();
    let conflict = api
        .create_instance(&token, &create("taken-hub"))
        .await
        .unwrap_err();
    assert!(
        matches!(&conflict, ApiError::Conflict { code, .. } if code == "hostname_taken"),
        "{conflict}"
    );

    let hub = api.list_instances(&token).await.unwrap().remove(0);
    let bad_updates: Vec<(InstanceUpdate, &str)> = vec![
        (
            InstanceUpdate {
                public_dns: vec!["1.1.1.1".into()],
                ..update()
            },
            "'public_dns' parameter must contain 2 to 4",
        ),
        (
            InstanceUpdate {
                pushed_routes: vec!["10.0.0.0/33".into()],
                ..update()
            },
            "'pushed_routes'",
        ),
        (
            InstanceUpdate {
                split_dns: vec!["dns.corp".into()],
                ..update()
            },
            "'split_dns'",
        ),
        (
            InstanceUpdate {
                domains: (0..9).map(|i| format!("d{i}.corp")).collect(),
                ..update()
            },
            "'domains'",
        ),
        (
            InstanceUpdate {
                dns_custom: vec![DnsCustomRecord {
                    name: "x".into(),
                    record_type: DnsRecordType::A,
                    value: "host".into(),
                }],
                ..update()
            },
            "'dns_custom'",
        ),
    ];
    for (body, needle) in bad_updates {
        let err = api.update_instance(&token, &hub.id, &body).await.unwrap_err();
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    }
    let openvpn_client = PeerCreate {
        protocol: Protocol::Openvpn,
        ..wireguard_client()
    };
    let err = api
        .create_peer(&token, &hub.id, &openvpn_client)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wireguard"), "{err}");
    let no_user = PeerCreate {
        user_id: None,
        protocol: Protocol::Wireguard,
        ..openvpn_client
    };
    let err = api.create_peer(&token, &hub.id, &no_user).await.unwrap_err();
    assert!(
        matches!(&err, ApiError::Invalid { code, message, .. } if code == "parameter_missing" && message.contains("'user_id'")),
        "{err}"
    );
    assert!(
        api.get_instance(&token, "not-a-uuid")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn provisioning_flips_the_readiness_flags_in_order() {
    // Quarters of 500 ms against polls every 20 ms: a poll would have to take longer than a
    // quarter to miss a state, far beyond a loopback GET even on a loaded machine.
    let delay = Duration::from_secs(2);
    let (_sim, api, token) = start(SimulatorConfig {
        provision_delay: delay,
        ..fast()
    })
    .await;
    let before_create = std::time::Instant::now();
    let created = api.create_instance(&token, &create("slow-hub")).await.unwrap();
    let after_create = std::time::Instant::now();
    assert!(
        !created.configured && !created.server_ready,
        "a new instance starts not ready"
    );
    // Quarters of the delay reached `elapsed` after the create (flags turn on one per quarter).
    let quarters = |elapsed: Duration| (elapsed.as_millis() * 4 / delay.as_millis()).min(4);
    let mut seen = Vec::new();
    loop {
        let asked = std::time::Instant::now();
        let i = api.get_instance(&token, &created.id).await.unwrap();
        let answered = std::time::Instant::now();
        let flags = (i.configured, i.rsa_ready, i.diffie_hellman_ready, i.server_ready);
        // The server read its clock between `asked` and `answered` (2 ms for its ms rounding).
        let on = [flags.0, flags.1, flags.2, flags.3]
            .iter()
            .filter(|f| **f)
            .count() as u128;
        let earliest = quarters((asked - after_create).saturating_sub(Duration::from_millis(2)));
        let latest = quarters(answered - before_create + Duration::from_millis(2));
        assert!(
            (earliest..=latest).contains(&on),
            "{flags:?} {:?} after the create",
            asked - after_create
        );
        if seen.last() != Some(&flags) {
            seen.push(flags);
        }
        if i.server_ready {
            break;
        }
        assert!(before_create.elapsed() < delay * 5, "never ready: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Flags only ever turn on, in the documented order.
    for pair in seen.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(a.0 <= b.0 && a.1 <= b.1 && a.2 <= b.2 && a.3 <= b.3, "{seen:?}");
    }
    assert!(
        seen.iter().all(|f| f.0 >= f.1 && f.1 >= f.2 && f.2 >= f.3),
        "order configured→rsa→dh→server: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&(true, true, true, true)));
    assert!(seen.len() >= 3, "intermediate states observed: {seen:?}");
}

#[tokio::test]
async fn faults_are_injected_per_endpoint_and_counted() {
    let (sim, api, token) = start(fast()).await;
    let mut faults = FaultConfig::default();
    faults.rules.insert(
        "GET /vpn/instances".into(),
        FaultRule {
            fail_next: 2,
            status: Some(503),
            ..FaultRule::default()
        },
    );
    faults.rules.insert(
        "GET /vpn/servers/regions".into(),
        FaultRule {
            fail_next: 1,
            status: Some(429),
            retry_after_secs: Some(7),
            ..FaultRule::default()
        },
    );
    faults.rules.insert(
        "POST /vpn/instances".into(),
        FaultRule {
            latency_ms: 150,
            ..FaultRule::default()
        },
    );
    sim.simulator().set_faults(faults);

    for _ in 0..2 {
        assert!(matches!(
            api.list_instances(&token).await.unwrap_err(),
            ApiError::Server { status: 503, .. }
        ));
    }
    assert!(api.list_instances(&token).await.is_ok(), "fail_next is exhausted");
    let limited = api.list_regions(&token).await.unwrap_err();
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
    let started = std::time::Instant::now();
    api.create_instance(&token, &create("latent-hub")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));

    let calls = sim.simulator().calls();
    assert_eq!(calls.counts["GET /vpn/instances"], 3);
    assert_eq!(calls.by_status["GET /vpn/instances 503"], 2);
    assert_eq!(calls.counts["GET /vpn/servers/regions"], 1);

    // The admin API sees and resets the same counters, and is not counted itself.
    let http = reqwest::Client::new();
    let body: serde_json::Value = http
        .get(format!("{}/_admin/calls", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["counts"]["POST /vpn/instances"], 1);
    assert_eq!(body["total"], 5);
    http.post(format!("{}/_admin/calls/reset", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(sim.simulator().calls().total, 0);
}

#[tokio::test]
async fn per_token_rate_limit_answers_429_with_retry_after() {
    let config = SimulatorConfig {
        faults: FaultConfig {
            rate_limit_per_minute: Some(3),
            ..FaultConfig::default()
        },
        ..fast()
    };
    let (_sim, api, token) = start(config).await;
    for _ in 0..3 {
        api.list_instances(&token).await.unwrap();
    }
    // The window slides, so this holds wherever the four calls fall on the clock.
    let limited = api
        .list_instances(&token)
        .await
        .expect_err("the fourth request in a minute is refused");
    assert!(
        matches!(limited, ApiError::RateLimited { retry_after: Some(d), .. }
            if d >= Duration::from_secs(1) && d <= Duration::from_secs(60)),
        "{limited}"
    );
    assert!(
        api.list_instances(&ApiToken::new("other"))
            .await
            .unwrap_err()
            .to_string()
            .contains("401"),
        "a token's budget is its own: another token is not throttled"
    );
}

#[tokio::test]
async fn drift_and_connection_changes_via_admin_and_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("sim.json");
    let config = || SimulatorConfig {
        state_file: Some(state_file.clone()),
        ..fast()
    };
    let (sim, api, token) = start(config()).await;
    let hub = api.create_instance(&token, &create("durable-hub")).await.unwrap();
    let client = wireguard_client();
    let alice = api.create_peer(&token, &hub.id, &client).await.unwrap();

    let http = reqwest::Client::new();
    http.post(format!("{}/_admin/instances/{}/drift", sim.base_url(), hub.id))
        .json(&serde_json::json!({"name": "portal edit", "pushed_routes": ["0.0.0.0/0"]}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    http.post(format!("{}/_admin/peers/{}/connected", sim.base_url(), alice.id))
        .json(&serde_json::json!({"connected": true, "connected_from": "203.0.113.7"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let drifted = api.get_instance(&token, &hub.id).await.unwrap();
    assert_eq!(
        (drifted.name.as_str(), drifted.pushed_routes.clone()),
        ("portal edit", vec!["0.0.0.0/0".to_owned()])
    );
    assert_eq!(
        sim.simulator()
            .calls()
            .counts
            .get("PUT /vpn/instances/{instanceId}"),
        None,
        "admin changes are not API calls"
    );
    sim.shutdown().await;

    let (_sim, api, token) = start(config()).await;
    let restored = api.get_instance(&token, &hub.id).await.unwrap();
    assert_eq!(restored.name, "portal edit");
    let peer = api.get_peer(&token, &hub.id, &alice.id).await.unwrap();
    assert!(peer.connected);
    assert_eq!(peer.connected_from.as_deref(), Some("203.0.113.7"));
    assert_eq!(peer.token, alice.token, "a live share token survives a restart");
    assert!(download(&api, &peer.token.unwrap()).await.contains("[Peer]"));
}

#[tokio::test]
async fn peer_drift_via_admin_changes_route_all_and_subnets_without_counting_a_call() {
    let (sim, api, token) = start(fast()).await;
    let hub = api
        .create_instance(&token, &create("peer-drift-hub"))
        .await
        .unwrap();
    let alice = api
        .create_peer(&token, &hub.id, &wireguard_client())
        .await
        .unwrap();
    let office = api.create_peer(&token, &hub.id, &site()).await.unwrap();
    let http = reqwest::Client::new();
    let drift = |id: String, change: serde_json::Value| {
        let request = http
            .post(format!("{}/_admin/peers/{id}/drift", sim.base_url()))
            .json(&change);
        async move { request.send().await.unwrap() }
    };
    drift(alice.id.clone(), serde_json::json!({"route_all": true}))
        .await
        .error_for_status()
        .unwrap();
    drift(office.id.clone(), serde_json::json!({"subnets": ["10.9.0.0/16"]}))
        .await
        .error_for_status()
        .unwrap();
    assert!(api.get_peer(&token, &hub.id, &alice.id).await.unwrap().route_all);
    assert_eq!(
        api.get_peer(&token, &hub.id, &office.id).await.unwrap().subnets,
        vec!["10.9.0.0/16".to_owned()]
    );
    assert_eq!(
        drift("no-such-peer".into(), serde_json::json!({"route_all": true}))
            .await
            .status()
            .as_u16(),
        404
    );
    let calls = sim.simulator().calls().counts;
    assert!(
        calls.keys().all(|k| !k.starts_with("PUT")),
        "admin changes are not API calls: {calls:?}"
    );
}

#[test]
fn simulate_help_explains_every_knob() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vpn-operator"))
        .args(["simulate", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for knob in [
        "--listen",
        "--provision-delay",
        "--status-clear-delay",
        "--token",
        "--state-file",
        "--error-rate",
        "--latency",
        "--rate-limit",
        "--fault",
        "--hostname-taken-status",
        "--single-public-dns",
        "--enveloped-lists",
        "--message-only-errors",
        "--peer-seats",
        "--instance-delete",
        "--teardown-delay",
        "--unknown-values",
        "--share-token-ttl",
        "--share-tokens",
        "/_admin/calls",
        "/_admin/users/{id}",
        "/_admin/sites/{id}",
        "/_admin/sites/{id}/subnets",
        "/_admin/peers/{id}/expire-token",
        "--profile",
    ] {
        assert!(help.contains(knob), "simulate --help lacks {knob}:\n{help}");
    }
    for (name, description) in simulator::PROFILES {
        let line = format!("{name}: {description}");
        assert!(help.contains(&line), "simulate --help lacks {line}:\n{help}");
    }
}

fn with_fidelity(fidelity: Fidelity) -> SimulatorConfig {
    SimulatorConfig { fidelity, ..fast() }
}

#[tokio::test]
async fn a_taken_hostname_is_a_conflict_whether_answered_409_422_or_400() {
    for status in [409, 422, 400] {
        let (_sim, api, token) = start(with_fidelity(Fidelity {
            hostname_taken_status: status,
            ..Fidelity::default()
        }))
        .await;
        api.create_instance(&token, &create("taken-hub")).await.unwrap();
        let err = api
            .create_instance(&token, &create("taken-hub"))
            .await
            .unwrap_err();
        match &err {
            ApiError::Conflict { code, message, .. } => {
                assert_eq!(code, "hostname_taken", "{status}: {err}");
                assert!(!message.is_empty(), "{status}: {err}");
            }
            other => panic!("{status}: expected a conflict, got {other:?}"),
        }
        // Other validation errors in the same mode stay Invalid.
        let mut bad = create("other-hub");
        bad.region = "atlantis".into();
        let err = api.create_instance(&token, &bad).await.unwrap_err();
        assert_eq!(err.category(), "invalid", "{status}: {err}");
    }
}

/// Altostrat documents IPv4 networks only: the simulator refuses an IPv6 route or one with host
/// bits set (which the CRDs refuse at admission, so the operator never sends either), naming
/// the field and the entry, as the invalid request it would be.
#[tokio::test]
async fn an_ipv6_route_or_host_bits_are_refused_naming_the_field_and_the_entry() {
    let (_sim, api, token) = start(fast()).await;
    let hub = api.create_instance(&token, &create("v4-only")).await.unwrap();
    for route in ["fd00::/64", "10.0.0.1/8"] {
        let routes = InstanceUpdate {
            pushed_routes: vec!["10.0.0.0/8".into(), route.into()],
            public_dns: vec!["9.9.9.9".into(), "1.1.1.1".into()],
            ..update()
        };
        let err = api.update_instance(&token, &hub.id, &routes).await.unwrap_err();
        assert!(
            matches!(&err, ApiError::Invalid { message, .. }
                if message.contains("'pushed_routes'") && message.contains(&format!("{route:?}"))),
            "{err:?}"
        );
    }
}

/// Every documented create example shows one public resolver (the simulator's default), while
/// the PUT requires 2 to 4: a PUT that copies the observed resolvers is refused as invalid.
#[tokio::test]
async fn a_single_public_resolver_cannot_be_copied_into_an_update() {
    assert!(Fidelity::default().single_public_dns, "the documented default");
    let (_sim, api, token) = start(fast()).await;
    let created = api.create_instance(&token, &create("one-dns")).await.unwrap();
    assert_eq!(created.public_dns, vec!["9.9.9.9"]);
    let copied = InstanceUpdate {
        public_dns: created.public_dns.clone(),
        ..update()
    };
    let err = api
        .update_instance(&token, &created.id, &copied)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::Invalid { message, .. } if message.contains("public_dns")),
        "{err:?}"
    );
    // Two resolvers go through.
    let padded = InstanceUpdate {
        public_dns: vec!["9.9.9.9".into(), "1.1.1.1".into()],
        ..update()
    };
    let updated = api.update_instance(&token, &created.id, &padded).await.unwrap();
    assert_eq!(updated.public_dns.len(), 2);

    // Turned off, a create gets two resolvers, which a copied PUT passes.
    let (_sim, api, token) = start(with_fidelity(Fidelity {
        single_public_dns: false,
        ..Fidelity::default()
    }))
    .await;
    let created = api.create_instance(&token, &create("two-dns")).await.unwrap();
    assert_eq!(created.public_dns, vec!["9.9.9.9", "149.112.112.112"]);
    let copied = InstanceUpdate {
        public_dns: created.public_dns.clone(),
        ..update()
    };
    api.update_instance(&token, &created.id, &copied).await.unwrap();
}

#[tokio::test]
async fn enveloped_lists_are_read_like_bare_ones() {
    let (sim, api, token) = start(with_fidelity(Fidelity {
        enveloped_lists: true,
        ..Fidelity::default()
    }))
    .await;
    let hub = api.create_instance(&token, &create("wrapped")).await.unwrap();
    api.create_peer(&token, &hub.id, &site()).await.unwrap();
    api.create_peer(&token, &hub.id, &wireguard_client())
        .await
        .unwrap();
    let raw: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/vpn/instances", sim.base_url()))
        .bearer_auth("sim-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["has_more"], false, "{raw}");
    assert_eq!(raw["data"][0]["id"], hub.id.as_str(), "{raw}");
    let instances = api.list_instances(&token).await.unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(api.list_peers(&token, &hub.id, None).await.unwrap().len(), 2);
    let sites = api
        .list_peers(&token, &hub.id, Some(PeerType::Site))
        .await
        .unwrap();
    assert_eq!(sites.len(), 1);
    assert!(api.list_site_subnets(&token, SITE).await.is_ok());
    // Single objects are not wrapped.
    assert_eq!(api.get_instance(&token, &hub.id).await.unwrap().id, hub.id);
}

#[tokio::test]
async fn message_only_error_bodies_still_classify_and_explain() {
    let (sim, api, token) = start(with_fidelity(Fidelity {
        message_only_errors: true,
        ..Fidelity::default()
    }))
    .await;
    let missing = "0b5c7a4e-0000-4000-8000-000000000000";
    let raw: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/vpn/instances/{missing}", sim.base_url()))
        .bearer_auth("sim-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw.as_object().map(|o| o.len()), Some(1), "{raw}");
    let err = api.get_instance(&token, missing).await.unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("No such instance"),
        "{err}"
    );
    let err = api.list_instances(&ApiToken::new("wrong")).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Unauthorized { .. }) && err.to_string().contains("not valid"),
        "{err}"
    );
    api.create_instance(&token, &create("msg-only")).await.unwrap();
    let err = api
        .create_instance(&token, &create("msg-only"))
        .await
        .unwrap_err();
    assert_eq!(err.category(), "conflict", "{err}");
    let mut bad = create("other");
    bad.region = "atlantis".into();
    let err = api.create_instance(&token, &bad).await.unwrap_err();
    assert!(
        matches!(&err, ApiError::Invalid { message, .. } if message.contains("region")),
        "{err}"
    );
}

#[tokio::test]
async fn a_seat_limit_is_a_quota_refusal_not_a_credentials_error() {
    let (_sim, api, token) = start(with_fidelity(Fidelity {
        peer_seats: Some(1),
        ..Fidelity::default()
    }))
    .await;
    let hub = api.create_instance(&token, &create("seats")).await.unwrap();
    api.create_peer(&token, &hub.id, &site()).await.unwrap();
    let err = api
        .create_peer(&token, &hub.id, &wireguard_client())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::QuotaExceeded { status: 403, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("peer seats"), "{err}");
    assert!(!err.is_transient());
}

/// A raw `DELETE /vpn/instances/{id}` with the default token, to see status, headers and body.
async fn raw_delete(sim: &RunningSimulator, id: &str) -> reqwest::Response {
    reqwest::Client::new()
        .delete(format!("{}/vpn/instances/{id}", sim.base_url()))
        .bearer_auth("sim-token")
        .send()
        .await
        .unwrap()
}

fn deleting(instance: &Instance) -> bool {
    instance.status.iter().any(|s| s == "deleting")
}

#[tokio::test]
async fn an_asynchronous_delete_keeps_the_instance_until_its_teardown_ends() {
    let teardown = Duration::from_millis(1200);
    let (sim, api, token) = start(with_fidelity(Fidelity {
        instance_delete: InstanceDelete::Asynchronous { teardown },
        ..Fidelity::default()
    }))
    .await;
    let hub = api.create_instance(&token, &create("async-hub")).await.unwrap();
    api.create_peer(&token, &hub.id, &site()).await.unwrap();

    let asked = std::time::Instant::now();
    let first = raw_delete(&sim, &hub.id).await;
    assert_eq!(first.status().as_u16(), 202);
    assert!(first.bytes().await.unwrap().is_empty(), "202 with an empty body");

    // Still there, marked, with its peers and its hostname.
    assert!(deleting(&api.get_instance(&token, &hub.id).await.unwrap()));
    assert!(deleting(&api.list_instances(&token).await.unwrap()[0]));
    assert_eq!(api.list_peers(&token, &hub.id, None).await.unwrap().len(), 1);
    let taken = api
        .create_instance(&token, &create("async-hub"))
        .await
        .unwrap_err();
    assert!(
        matches!(&taken, ApiError::Conflict { code, .. } if code == "hostname_taken"),
        "{taken}"
    );
    // Changes to it are refused while it goes.
    let refused = [
        api.update_instance(&token, &hub.id, &update()).await.map(drop),
        api.create_peer(&token, &hub.id, &wireguard_client())
            .await
            .map(drop),
    ];
    for answer in refused {
        let err = answer.unwrap_err();
        assert!(
            matches!(&err, ApiError::Conflict { code, message, .. }
                if code == "instance_deleting" && message == "The instance is being deleted."),
            "{err}"
        );
    }

    // A repeated DELETE half-way through answers 202 again and does not restart the clock.
    poll("half the teardown to pass", || async {
        let i = api.get_instance(&token, &hub.id).await.unwrap();
        (deleting(&i) && asked.elapsed() >= teardown / 2).then_some(())
    })
    .await;
    let again = std::time::Instant::now();
    api.delete_instance(&token, &hub.id).await.unwrap();
    let gone = poll("the teardown to end", || async {
        let answer = api.get_instance(&token, &hub.id).await;
        answer
            .err()
            .filter(ApiError::is_not_found)
            .map(|_| std::time::Instant::now())
    })
    .await;
    assert!(
        gone + Duration::from_millis(2) >= asked + teardown,
        "gone too early"
    );
    assert!(
        gone < again + teardown,
        "the second DELETE restarted the teardown"
    );

    // Gone with its peers; the hostname is free again.
    assert!(sim.simulator().peers().is_empty());
    assert_eq!(raw_delete(&sim, &hub.id).await.status().as_u16(), 404);
    api.create_instance(&token, &create("async-hub")).await.unwrap();
}

#[tokio::test]
async fn an_instance_being_deleted_refuses_changes_in_the_configured_error_shape() {
    let (sim, api, token) = start(with_fidelity(Fidelity {
        instance_delete: InstanceDelete::Asynchronous {
            teardown: Duration::from_secs(60),
        },
        message_only_errors: true,
        ..Fidelity::default()
    }))
    .await;
    let hub = api.create_instance(&token, &create("going-hub")).await.unwrap();
    api.delete_instance(&token, &hub.id).await.unwrap();
    let refused = reqwest::Client::new()
        .post(format!("{}/vpn/instances/{}/peers", sim.base_url(), hub.id))
        .bearer_auth("sim-token")
        .json(&wireguard_client())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 409);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"message": "The instance is being deleted."})
    );
}

#[tokio::test]
async fn a_delete_the_route_does_not_offer_answers_405_and_deletes_nothing() {
    let (sim, api, token) = start(with_fidelity(Fidelity {
        instance_delete: InstanceDelete::NotAllowed,
        ..Fidelity::default()
    }))
    .await;
    let hub = api.create_instance(&token, &create("kept-hub")).await.unwrap();
    api.create_peer(&token, &hub.id, &site()).await.unwrap();

    let refused = raw_delete(&sim, &hub.id).await;
    assert_eq!(refused.status().as_u16(), 405);
    assert_eq!(refused.headers()["allow"], "GET, HEAD, PUT");
    let body: serde_json::Value = refused.json().await.unwrap();
    let message = format!(
        "The DELETE method is not supported for route vpn/instances/{}. Supported methods: GET, HEAD, PUT.",
        hub.id
    );
    assert_eq!(body, serde_json::json!({ "message": message }));
    let err = api.delete_instance(&token, &hub.id).await.unwrap_err();
    assert!(
        !err.is_not_found(),
        "a refusal never reads as already gone: {err}"
    );

    let kept = api.get_instance(&token, &hub.id).await.unwrap();
    assert!(!deleting(&kept), "{kept:?}");
    assert_eq!(api.list_peers(&token, &hub.id, None).await.unwrap().len(), 1);
    assert!(
        api.create_instance(&token, &create("kept-hub")).await.is_err(),
        "the hostname is still taken"
    );
}

/// A raw `POST /vpn/instances/{id}/peers`: status and JSON body.
async fn raw_create_peer(
    sim: &RunningSimulator,
    token: &str,
    instance_id: &str,
    peer: &PeerCreate,
) -> (u16, serde_json::Value) {
    let answer = reqwest::Client::new()
        .post(format!("{}/vpn/instances/{instance_id}/peers", sim.base_url()))
        .bearer_auth(token)
        .json(peer)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

/// `DELETE /_admin/{kind}/{id}`: a user or site deleted out of band, as in the Altostrat portal.
async fn delete_out_of_band(sim: &RunningSimulator, kind: &str, id: &str) {
    let answer = reqwest::Client::new()
        .delete(format!("{}/_admin/{kind}/{id}", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 204, "DELETE /_admin/{kind}/{id}");
}

#[tokio::test]
async fn users_and_sites_deleted_out_of_band_take_their_peers_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let config = || SimulatorConfig {
        tokens: vec![
            simulator::ApiToken::all_scopes("sim-token"),
            simulator::ApiToken::all_scopes("acme-token").in_account("acme"),
        ],
        state_file: Some(dir.path().join("sim.json")),
        ..fast()
    };
    let (sim, api, token) = start(config()).await;
    let acme = ApiToken::new("acme-token");
    let ours = api.create_instance(&token, &create("our-hub")).await.unwrap();
    let theirs = api.create_instance(&acme, &create("their-hub")).await.unwrap();
    let bob = PeerCreate {
        user_id: Some("0b0b0b0b-e5f6-7890-1234-567890abcdef".into()),
        ..wireguard_client()
    };
    for (t, hub) in [(&token, &ours), (&acme, &theirs)] {
        api.create_peer(t, &hub.id, &wireguard_client()).await.unwrap();
        api.create_peer(t, &hub.id, &site()).await.unwrap();
    }
    let kept = api.create_peer(&token, &ours.id, &bob).await.unwrap();
    let status_of = |t: &ApiToken, id: &str| {
        let (api, t, id) = (api.clone(), t.clone(), id.to_owned());
        async move { api.get_instance(&t, &id).await.unwrap().status }
    };
    poll("the pending peer changes to clear", || async {
        (status_of(&token, &ours.id).await.is_empty() && status_of(&acme, &theirs.id).await.is_empty())
            .then_some(())
    })
    .await;

    delete_out_of_band(&sim, "users", &USER.to_uppercase()).await;
    for (t, hub) in [(&token, &ours), (&acme, &theirs)] {
        let peers = api.list_peers(t, &hub.id, None).await.unwrap();
        assert!(
            peers.iter().all(|p| p.user_id.as_deref() != Some(USER)),
            "{peers:?}"
        );
        assert_eq!(status_of(t, &hub.id).await, vec!["peer-deleted"]);
    }
    assert_eq!(
        api.list_peers(&token, &ours.id, None).await.unwrap().len(),
        2,
        "bob and the site stay"
    );
    let (status, body) = raw_create_peer(&sim, "sim-token", &ours.id, &wireguard_client()).await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        serde_json::json!({
            "type": "invalid_request_error",
            "code": "user_not_found",
            "message": format!("No such user: {USER}"),
            "doc_url": "https://docs.altostrat.io/errors/user_not_found",
        })
    );

    delete_out_of_band(&sim, "sites", SITE).await;
    let left: Vec<_> = sim.simulator().peers().into_iter().map(|p| p.id).collect();
    assert_eq!(left, vec![kept.id.clone()], "only bob's peer is left");
    let (status, body) = raw_create_peer(&sim, "acme-token", &theirs.id, &site()).await;
    assert_eq!(
        (status, &body["code"]),
        (422, &serde_json::json!("site_not_found"))
    );
    assert_eq!(body["message"], format!("No such site: {SITE}"));
    // An id never seen is simply recorded.
    let never = "7e57ab1e-0000-4000-8000-000000000000";
    delete_out_of_band(&sim, "users", never).await;

    // The deleted ids survive a restart.
    sim.shutdown().await;
    let (_sim, api, token) = start(config()).await;
    let ghost = PeerCreate {
        user_id: Some(never.into()),
        ..wireguard_client()
    };
    for peer in [wireguard_client(), ghost, site()] {
        let err = api.create_peer(&token, &ours.id, &peer).await.unwrap_err();
        assert_eq!(err.status(), Some(422), "{err:?}");
    }
    api.create_peer(&token, &ours.id, &bob).await.unwrap();
}

#[tokio::test]
async fn laravel_refuses_a_peer_for_a_deleted_user_or_site_with_its_validation_body() {
    let (sim, api, token) = start(with_fidelity(Fidelity {
        message_only_errors: true,
        ..Fidelity::default()
    }))
    .await;
    let hub = api.create_instance(&token, &create("laravel-hub")).await.unwrap();
    delete_out_of_band(&sim, "users", USER).await;
    delete_out_of_band(&sim, "sites", SITE).await;
    for (peer, field, what) in [
        (wireguard_client(), "user_id", "user"),
        (site(), "site_id", "site"),
    ] {
        let (status, body) = raw_create_peer(&sim, "sim-token", &hub.id, &peer).await;
        assert_eq!(status, 422);
        let message = format!("The selected {what} id is invalid.");
        assert_eq!(
            body,
            serde_json::json!({"message": message, "errors": {field: [message]}})
        );
        let err = api.create_peer(&token, &hub.id, &peer).await.unwrap_err();
        assert_eq!(err.status(), Some(422), "{err:?}");
        assert!(err.to_string().contains(&message), "{err}");
    }
}

/// A raw authenticated GET of `path`, as JSON.
async fn raw_get(sim: &RunningSimulator, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth("sim-token")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn unknown_values_reach_the_client_as_undocumented_fields_statuses_and_peers() {
    let (sim, api, token) = start(with_fidelity(Fidelity {
        unknown_values: true,
        peer_seats: Some(1),
        ..Fidelity::default()
    }))
    .await;
    let hub = api.create_instance(&token, &create("odd-hub")).await.unwrap();
    let instance_path = format!("/vpn/instances/{}", hub.id);
    let extra = |object: &serde_json::Value| {
        object["labels"] == serde_json::json!({})
            && object["billing"] == serde_json::json!({"plan": "pro", "seats": 5})
    };
    assert!(extra(&raw_get(&sim, &instance_path).await));
    assert!(extra(&raw_get(&sim, "/vpn/instances").await[0]));

    // The gateway peer every instance gets: in the list and by id, of an undocumented kind.
    let peers = raw_get(&sim, &format!("{instance_path}/peers")).await;
    let gateway = &peers[0];
    assert_eq!(peers.as_array().map(Vec::len), Some(1), "{peers}");
    for (field, value) in [
        ("type", serde_json::json!("gateway")),
        ("protocol", serde_json::json!("ipsec")),
        ("user_id", serde_json::Value::Null),
        ("site_id", serde_json::Value::Null),
        ("subnets", serde_json::json!([])),
    ] {
        assert_eq!(gateway[field], value, "{field}: {gateway}");
    }
    assert!(extra(gateway));
    let gateway_id = gateway["id"].as_str().unwrap();
    let by_id = raw_get(&sim, &format!("{instance_path}/peers/{gateway_id}")).await;
    assert_eq!(
        (&by_id["type"], extra(&by_id)),
        (&serde_json::json!("gateway"), true)
    );
    let read = api.get_peer(&token, &hub.id, gateway_id).await.unwrap();
    assert_eq!(
        (read.peer_type, read.protocol),
        (PeerType::Unknown, Protocol::Unknown)
    );
    let sites = api
        .list_peers(&token, &hub.id, Some(PeerType::Site))
        .await
        .unwrap();
    assert!(sites.is_empty(), "a gateway is not a site: {sites:?}");

    // It takes no seat: the single seat is still free.
    let office = api.create_peer(&token, &hub.id, &site()).await.unwrap();
    assert!(extra(
        &raw_get(&sim, &format!("{instance_path}/peers/{}", office.id)).await
    ));
    assert_eq!(api.list_peers(&token, &hub.id, None).await.unwrap().len(), 2);

    // An update leaves an undocumented pending entry next to the documented one; both clear.
    let updated = api.update_instance(&token, &hub.id, &update()).await.unwrap();
    for entry in ["config-updated", "firewall-syncing"] {
        assert!(updated.status.iter().any(|s| s == entry), "{:?}", updated.status);
    }
    poll("the pending entries to clear", || async {
        let i = api.get_instance(&token, &hub.id).await.unwrap();
        i.status.is_empty().then_some(())
    })
    .await;
}

/// `PUT /_admin/sites/{id}/subnets`.
async fn put_site_subnets(sim: &RunningSimulator, id: &str, subnets: &[&str]) -> u16 {
    reqwest::Client::new()
        .put(format!("{}/_admin/sites/{id}/subnets", sim.base_url()))
        .json(&subnets)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_site_offers_its_own_subnets_without_any_peer() {
    let dir = tempfile::tempdir().unwrap();
    let config = || SimulatorConfig {
        state_file: Some(dir.path().join("sim.json")),
        ..fast()
    };
    let (sim, api, token) = start(config()).await;
    let subnets = |site: &'static str| {
        let (api, token) = (api.clone(), token.clone());
        async move { api.list_site_subnets(&token, site).await }
    };
    // Never configured: two /24s derived from the id, the same on every simulator.
    let offered = subnets(SITE).await.unwrap();
    assert_eq!(
        serde_json::Value::Array(offered.clone()),
        serde_json::json!([
            {"subnet": "10.195.212.0/24", "name": "LAN"},
            {"subnet": "10.195.213.0/24", "name": "LAN 2"},
        ])
    );
    let other = subnets("0a0b0c0d-88c9-4f7f-9f7b-6a1e2b4c5d6e").await.unwrap();
    assert_eq!(other[0]["subnet"], "10.10.10.0/24");
    assert!(sim.simulator().peers().is_empty(), "no peer was needed");

    assert_eq!(
        put_site_subnets(&sim, SITE, &["192.168.10.0/24", "172.16.0.0/16"]).await,
        204
    );
    let set = subnets(SITE).await.unwrap();
    assert_eq!(
        serde_json::Value::Array(set),
        serde_json::json!([
            {"subnet": "192.168.10.0/24", "name": "LAN"},
            {"subnet": "172.16.0.0/16", "name": "LAN 2"},
        ])
    );
    assert_eq!(put_site_subnets(&sim, SITE, &["192.168.10.0/33"]).await, 400);
    assert_eq!(put_site_subnets(&sim, "not-a-site", &[]).await, 404);
    assert!(subnets("not-a-site").await.unwrap_err().is_not_found());

    // A site peer does not change what the site offers.
    let hub = api.create_instance(&token, &create("subnet-hub")).await.unwrap();
    api.create_peer(&token, &hub.id, &site()).await.unwrap();
    assert_eq!(subnets(SITE).await.unwrap()[1]["subnet"], "172.16.0.0/16");

    // The registry survives a restart; a deleted site is gone.
    sim.shutdown().await;
    let (sim, api, token) = start(config()).await;
    let kept = api.list_site_subnets(&token, SITE).await.unwrap();
    assert_eq!(kept[0]["subnet"], "192.168.10.0/24");
    delete_out_of_band(&sim, "sites", SITE).await;
    let gone = api.list_site_subnets(&token, SITE).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    assert_eq!(put_site_subnets(&sim, SITE, &["10.0.0.0/24"]).await, 404);
}

/// What a simulator answers to the calls each profile is about, seen over raw HTTP.
#[derive(Debug, PartialEq)]
struct Observed {
    resolvers_on_create: usize,
    taken_hostname: u16,
    enveloped_list: bool,
    error_body_keys: Vec<String>,
    undocumented_fields: bool,
    third_peer: u16,
    delete_instance: u16,
    new_token_per_read: bool,
}

async fn observe(sim: &RunningSimulator, api: &HttpClient, token: &ApiToken) -> Observed {
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", sim.base_url());
    let hub = api.create_instance(token, &create("probe-hub")).await.unwrap();
    let taken = http
        .post(url("/vpn/instances"))
        .bearer_auth("sim-token")
        .json(&create("probe-hub"));
    let taken = taken.send().await.unwrap().status().as_u16();
    let list = raw_get(sim, "/vpn/instances").await;
    let first = list.get("data").unwrap_or(&list)[0].clone();
    let missing = http.get(url("/vpn/instances/0b5c7a4e-0000-4000-8000-000000000000"));
    let error: serde_json::Value = missing
        .bearer_auth("sim-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_token_per_read = new_token_per_read(api, token, &hub.id).await;
    let mut third_peer = 0;
    for _ in 0..3 {
        let peer = http
            .post(url(&format!("/vpn/instances/{}/peers", hub.id)))
            .bearer_auth("sim-token");
        third_peer = peer.json(&site()).send().await.unwrap().status().as_u16();
    }
    Observed {
        resolvers_on_create: hub.public_dns.len(),
        taken_hostname: taken,
        enveloped_list: list.get("has_more").is_some(),
        error_body_keys: error.as_object().unwrap().keys().cloned().collect(),
        undocumented_fields: first.get("labels").is_some() && first.get("billing").is_some(),
        third_peer,
        delete_instance: raw_delete(sim, &hub.id).await.status().as_u16(),
        new_token_per_read,
    }
}

/// Whether two reads of a client peer show different share tokens (the peer is deleted again,
/// so that it takes no seat).
async fn new_token_per_read(api: &HttpClient, token: &ApiToken, hub_id: &str) -> bool {
    let alice = api.create_peer(token, hub_id, &wireguard_client()).await.unwrap();
    let read = api.get_peer(token, hub_id, &alice.id).await.unwrap();
    api.delete_peer(token, hub_id, &alice.id).await.unwrap();
    read.token.unwrap() != alice.token.unwrap()
}

#[tokio::test]
async fn every_profile_answers_as_its_description_says() {
    let documented = || Observed {
        resolvers_on_create: 1,
        taken_hostname: 409,
        enveloped_list: false,
        error_body_keys: ["code", "doc_url", "message", "type"].map(String::from).to_vec(),
        undocumented_fields: false,
        third_peer: 201,
        delete_instance: 204,
        new_token_per_read: false,
    };
    for (name, _) in simulator::PROFILES {
        let expected = match *name {
            "documented" => documented(),
            "laravel" => Observed {
                taken_hostname: 422,
                error_body_keys: vec!["message".into()],
                ..documented()
            },
            "taken-400" => Observed {
                taken_hostname: 400,
                ..documented()
            },
            "async-delete" => Observed {
                delete_instance: 202,
                ..documented()
            },
            "no-delete" => Observed {
                delete_instance: 405,
                ..documented()
            },
            "enveloped" => Observed {
                enveloped_list: true,
                ..documented()
            },
            "unknown-values" => Observed {
                undocumented_fields: true,
                ..documented()
            },
            "seat-quota" => Observed {
                third_peer: 403,
                ..documented()
            },
            "token-per-read" => Observed {
                new_token_per_read: true,
                ..documented()
            },
            other => panic!("profile {other} has no expectation here"),
        };
        let (sim, api, token) = start(with_fidelity(Fidelity::profile(name).unwrap())).await;
        assert_eq!(observe(&sim, &api, &token).await, expected, "profile {name}");
    }
    assert!(Fidelity::profile("bogus").unwrap_err().contains("seat-quota"));
}

#[tokio::test]
async fn command_line_flags_win_over_the_profiles_around_them() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: simulator::SimulateArgs,
    }
    let args = [
        "simulate",
        "--provision-delay=0s",
        "--hostname-taken-status=409",
        "--profile=laravel",
        "--profile=enveloped",
        "--profile=seat-quota",
        "--peer-seats=3",
    ];
    let cli = <Cli as clap::Parser>::try_parse_from(args).unwrap();
    let (sim, api, token) = start(cli.args.into_config().unwrap()).await;
    let seen = observe(&sim, &api, &token).await;
    assert_eq!(
        seen,
        Observed {
            resolvers_on_create: 1,
            taken_hostname: 409,
            enveloped_list: true,
            error_body_keys: vec!["message".into()],
            undocumented_fields: false,
            third_peer: 201,
            delete_instance: 204,
            new_token_per_read: false,
        }
    );
}

#[test]
fn the_share_token_ttl_flag_takes_seconds_or_a_duration() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: simulator::SimulateArgs,
    }
    let ttl = |args: &[&str]| {
        let cli = <Cli as clap::Parser>::try_parse_from(args).unwrap();
        cli.args.into_config().unwrap().share_token_ttl
    };
    assert_eq!(ttl(&["simulate"]), Duration::from_secs(3600));
    assert_eq!(
        ttl(&["simulate", "--share-token-ttl", "90"]),
        Duration::from_secs(90)
    );
    assert_eq!(
        ttl(&["simulate", "--share-token-ttl=10m"]),
        Duration::from_secs(600)
    );
}
