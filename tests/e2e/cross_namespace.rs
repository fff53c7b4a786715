//! End to end: a hub shared across namespaces (`spec.allowedPeers`, `instanceRef.namespace`)
//! over real watches (namespace labels re-trigger peers), and seats capped per namespace by a
//! ResourceQuota that the API server enforces. The grant decision itself is tested in the fast
//! tier (`src/controller/peer/grant.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use altostrat_vpn_operator::controller::WatchScope;
use altostrat_vpn_operator::crd::{ProfileSecretSpec, VpnInstance, VpnPeer};
use altostrat_vpn_operator::simulator::RunningSimulator;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const ALICE: &str = "a1b2c3d4-e5f6-7890-1234-567890abcdef";
const BOB: &str = "b2c3d4e5-f6a7-8901-2345-67890abcdef1";
const CAROL: &str = "c3d4e5f6-a7b8-9012-3456-7890abcdef12";

/// What keeps the operator to one test's resources while others run in parallel.
struct Run {
    label: (String, String),
}

impl Run {
    fn new() -> Self {
        let run = uuid::Uuid::new_v4().simple().to_string();
        Self {
            label: ("e2e.vpn.altostrat.io/run".to_owned(), run),
        }
    }

    fn selector(&self) -> String {
        format!("{}={}", self.label.0, self.label.1)
    }

    fn labelled<K: kube::Resource>(&self, mut obj: K) -> K {
        obj.meta_mut().labels = Some(BTreeMap::from([self.label.clone()]));
        obj
    }
}

/// A peer of `namespace`'s hub `name`.
fn peer_of(name: &str, (namespace, hub): (&str, &str), user: &str) -> VpnPeer {
    let mut peer = client_peer_manifest(name, hub, user);
    peer.spec.instance_ref.namespace = Some(namespace.to_owned());
    peer
}

/// Sets (`Some`) or removes (`None`) the label `team` on a namespace.
async fn label_team(client: &Client, namespace: &str, team: Option<&str>) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    merge_patch(
        &namespaces,
        namespace,
        json!({"metadata": {"labels": {"team": team}}}),
    )
    .await;
}

/// A simulator, an operator of every namespace kept to this run's resources, and a Ready hub
/// `hub` in `network` granting the namespaces labelled `team=apps`.
struct Shared {
    run: Run,
    _sim: RunningSimulator,
    simc: SimClient,
    operator: Operator,
    hub_id: String,
}

/// The hub's hostname is `prefix` and a part of the run's id: records outlive a test's
/// namespaces, and a hostname held by an earlier run's hub would not be this one's.
async fn shared_hub(client: &Client, network: &str, prefix: &str) -> Shared {
    let run = Run::new();
    let hostname = format!("{prefix}-{}", &run.label.1[..8]);
    let sim = simulator(Duration::from_millis(300)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator_scoped(
        client,
        &simc.base_url,
        WatchScope::AllNamespaces,
        Some(run.selector()),
        OperatorOptions::default(),
    );
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), network);
    let grant = json!({"allowedPeers": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "apps"}}}}});
    apply(
        &instances,
        &run.labelled(instance_manifest("hub", &hostname, grant)),
    )
    .await;
    let hub = wait_instance(&instances, "hub", "hub Ready", instance_ready).await;
    Shared {
        run,
        _sim: sim,
        simc,
        operator,
        hub_id: hub.status.unwrap().instance_id.unwrap(),
    }
}

/// The calls that write to Altostrat, by route.
async fn writes(simc: &SimClient) -> BTreeMap<String, u64> {
    let mut calls = simc.calls().await;
    calls.retain(|call, _| !call.starts_with("GET "));
    calls
}

fn stalled(peer: &VpnPeer) -> Option<(String, String, String)> {
    condition(&peer.status.as_ref()?.conditions, "Stalled")
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_hub_serves_the_namespaces_it_grants_and_waits_for_their_peers() {
    let client = kube().await;
    let network = namespace(&client, "e2e-xns-network").await;
    let apps = namespace(&client, "e2e-xns-apps").await;
    let data = namespace(&client, "e2e-xns-data").await;
    label_team(&client, &apps, Some("apps")).await;
    let Shared {
        run,
        simc,
        operator,
        hub_id,
        _sim: _serving,
    } = shared_hub(&client, &network, "xns").await;
    let (apps_peers, data_peers, network_peers): (Api<VpnPeer>, Api<VpnPeer>, Api<VpnPeer>) = (
        Api::namespaced(client.clone(), &apps),
        Api::namespaced(client.clone(), &data),
        Api::namespaced(client.clone(), &network),
    );

    // A peer of a granted namespace: Ready on the hub, its profile in its own namespace.
    let mut alice = peer_of("alice", (&network, "hub"), ALICE);
    alice.spec.profile_secret = Some(ProfileSecretSpec {
        name: "alice-vpn".into(),
    });
    apply(&apps_peers, &run.labelled(alice)).await;
    let alice = wait_peer(&apps_peers, "alice", "alice Ready", peer_ready).await;
    let alice_status = alice.status.clone().unwrap();
    assert_eq!(alice_status.instance_id.as_deref(), Some(hub_id.as_str()));
    let alice_id = alice_status.peer_id.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &apps);
    eventually("alice's profile Secret in apps", TIMEOUT, || async {
        secrets.get_opt("alice-vpn").await.unwrap()
    })
    .await;
    let hub_secrets: Api<Secret> = Api::namespaced(client.clone(), &network);
    assert!(hub_secrets.get_opt("alice-vpn").await.unwrap().is_none());
    apply(
        &network_peers,
        &run.labelled(client_peer_manifest("carol", "hub", CAROL)),
    )
    .await;
    wait_peer(&network_peers, "carol", "carol Ready", peer_ready).await;

    // A peer of a namespace the hub does not grant: refused, and Altostrat hears nothing of it.
    simc.reset_calls().await;
    apply(&data_peers, &run.labelled(peer_of("bob", (&network, "hub"), BOB))).await;
    let refused = wait_peer_reason(&data_peers, "bob", "NotPermitted").await;
    assert!(
        refused.contains(&format!("VpnInstance {network}/hub")),
        "{refused}"
    );
    assert!(
        refused.contains(&format!("does not grant namespace {data}")),
        "{refused}"
    );
    assert!(refused.contains("team=apps"), "{refused}");
    let bob = data_peers.get("bob").await.unwrap();
    assert_eq!(stalled(&bob).map(|s| s.0), Some("True".into()));
    assert_eq!(warnings(&client, &data, "NotPermitted").await, vec![refused]);
    assert_eq!(writes(&simc).await, BTreeMap::new(), "nothing written for bob");
    assert!(bob.finalizers().is_empty(), "nothing of bob's to clean up");

    // The hub counts the peers of each namespace, not their names.
    merge_patch(
        &Api::<VpnInstance>::namespaced(client.clone(), &network),
        "hub",
        json!({"metadata": {"annotations": {"vpn.altostrat.io/reconcile-requested-at": "count"}}}),
    )
    .await;
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &network);
    let counted = wait_instance(&instances, "hub", "peers counted", |h| {
        h.status.as_ref().is_some_and(|s| s.attached_peers.len() == 2)
    })
    .await;
    let counts: Vec<(String, u32)> = counted
        .status
        .unwrap()
        .attached_peers
        .into_iter()
        .map(|c| (c.namespace, c.peers))
        .collect();
    let mut expected = vec![(apps.clone(), 1), (network.clone(), 1)];
    expected.sort();
    assert_eq!(counts, expected);

    // The grant revoked: alice is refused, her Altostrat peer kept and not written.
    simc.reset_calls().await;
    label_team(&client, &apps, None).await;
    let revoked = wait_peer_reason(&apps_peers, "alice", "NotPermitted").await;
    assert!(
        revoked.contains(&format!("does not grant namespace {apps}")),
        "{revoked}"
    );
    assert!(simc.peers(&hub_id).await.iter().any(|p| p.id == alice_id), "kept");
    assert_eq!(
        writes(&simc).await,
        BTreeMap::new(),
        "nothing written on revocation"
    );

    // The hub's deletion waits for the peers of every namespace, naming only its own.
    instances.delete("hub", &DeleteParams::default()).await.unwrap();
    let waiting = wait_instance_reason(&instances, "hub", "Deleting").await;
    assert!(waiting.contains("carol"), "{waiting}");
    assert!(waiting.contains(&format!("1 in namespace {apps}")), "{waiting}");
    assert!(waiting.contains(&format!("1 in namespace {data}")), "{waiting}");
    assert!(
        !waiting.contains("alice") && !waiting.contains("bob"),
        "{waiting}"
    );
    assert!(
        simc.instance(&hub_id).await.is_some(),
        "the hub stays while peers remain"
    );

    // Each peer's deletion deletes only its own Altostrat peer; bob never had one.
    for (api, name) in [
        (&apps_peers, "alice"),
        (&data_peers, "bob"),
        (&network_peers, "carol"),
    ] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
        wait_gone(api, name).await;
    }
    wait_gone(&instances, "hub").await;
    let calls = writes(&simc).await;
    assert_eq!(
        calls.get("DELETE /vpn/instances/{instanceId}/peers/{peerId}"),
        Some(&2),
        "alice's and carol's: {calls:?}"
    );
    assert_eq!(
        calls.get("DELETE /vpn/instances/{instanceId}"),
        Some(&1),
        "{calls:?}"
    );
    assert!(!calls.keys().any(|c| c.starts_with("POST")), "{calls:?}");
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_grant_reaches_no_hub_it_does_not_name() {
    let client = kube().await;
    let network = namespace(&client, "e2e-xns-net").await;
    let data = namespace(&client, "e2e-xns-other").await;
    let rogue = namespace(&client, "e2e-xns-rogue").await;
    let apps = namespace(&client, "e2e-xns-granted").await;
    label_team(&client, &data, Some("data")).await;
    label_team(&client, &apps, Some("apps")).await;
    let Shared {
        run,
        simc,
        operator,
        hub_id,
        _sim: _serving,
    } = shared_hub(&client, &network, "xns-own").await;
    simc.reset_calls().await;

    // A namespace labelled for another team names the hub: refused.
    let data_peers: Api<VpnPeer> = Api::namespaced(client.clone(), &data);
    apply(
        &data_peers,
        &run.labelled(peer_of("dave", (&network, "hub"), BOB)),
    )
    .await;
    wait_peer_reason(&data_peers, "dave", "NotPermitted").await;

    // A VpnInstance that grants everyone and claims the hub's id in its status (a tenant may
    // write status) holds no record of the hub: a granted peer naming it attaches to nothing.
    let impostors: Api<VpnInstance> = Api::namespaced(client.clone(), &rogue);
    let everyone = json!({"allowedPeers": {"namespaces": {"from": "All"}}});
    let impostor = impostors
        .create(
            &PostParams::default(),
            &instance_manifest("fake", "xns-fake-hub", everyone),
        )
        .await
        .unwrap();
    let claimed = json!({"status": {"instanceId": hub_id, "serverReady": true}});
    impostors
        .patch_status(
            &impostor.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&claimed),
        )
        .await
        .unwrap();
    let apps_peers: Api<VpnPeer> = Api::namespaced(client.clone(), &apps);
    apply(
        &apps_peers,
        &run.labelled(peer_of("erin", (&rogue, "fake"), ALICE)),
    )
    .await;
    let refused = wait_peer_reason(&apps_peers, "erin", "WaitingForInstance").await;
    assert!(
        refused.contains("does not hold the ownership record"),
        "{refused}"
    );

    assert_eq!(writes(&simc).await, BTreeMap::new(), "nothing written for either");
    assert!(simc.peers(&hub_id).await.is_empty());
    operator.stop().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_resource_quota_caps_the_peers_of_a_namespace() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-xns-quota").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "vpn-seats"},
        "spec": {"hard": {"count/vpnpeers.vpn.altostrat.io": "2"}},
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // The quota controller computes its usage; until then the API server refuses every create.
    // On CRDs installed moments before, it first discovers them (every 30 s).
    eventually("the quota's usage computed", 3 * TIMEOUT, || async {
        let quota = quotas.get("vpn-seats").await.unwrap();
        quota.status.and_then(|s| s.used).filter(|u| !u.is_empty())
    })
    .await;

    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);
    for (name, user) in [("alice", ALICE), ("bob", BOB)] {
        peers
            .create(&PostParams::default(), &client_peer_manifest(name, "hub", user))
            .await
            .unwrap();
    }
    let third = peers
        .create(
            &PostParams::default(),
            &client_peer_manifest("carol", "hub", CAROL),
        )
        .await
        .expect_err("the third peer exceeds the quota");
    let kube::Error::Api(status) = third else {
        panic!("{third:?}")
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status.message.contains("exceeded quota: vpn-seats")
            && status.message.contains("count/vpnpeers.vpn.altostrat.io=1")
            && status
                .message
                .contains("limited: count/vpnpeers.vpn.altostrat.io=2"),
        "{}",
        status.message
    );
    println!("refusal: {}", status.message);
}
