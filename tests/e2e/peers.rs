//! The trigger between the kinds over real watches: a peer waiting for its VpnInstance is
//! re-run by the instance watch when the instance becomes usable, not at its next resync (five
//! minutes away here). What a peer decides while it waits is tested in the fast tier.

use std::time::Duration;

use crate::support::*;
use altostrat_vpn_operator::crd::{VpnInstance, VpnPeer};
use kube::Api;
use serde_json::json;

const USER: &str = "a1b2c3d4-e5f6-7890-1234-567890abcdef";
const SITE: &str = "c3d5e2a0-88c9-4f7f-9f7b-6a1e2b4c5d6e";

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn peer_waits_for_its_instance_then_becomes_ready() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-peer").await;
    let sim = simulator(Duration::from_secs(2)).await;
    let simc = SimClient::new(&sim);
    let operator = start_operator(&client, &simc.base_url, &ns, OperatorOptions::default());
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);

    // The peer comes first: it must wait, visibly, without calling Altostrat.
    apply(&peers, &client_peer_manifest("alice", "hub", USER)).await;
    wait_peer_reason(&peers, "alice", "InstanceNotFound").await;
    assert_eq!(simc.count("POST /vpn/instances/{instanceId}/peers").await, 0);
    let alice = peers.get("alice").await.unwrap();
    let synced = condition(&alice.status.unwrap().conditions, "Synced").unwrap();
    assert_eq!(
        (synced.0.as_str(), synced.1.as_str()),
        ("False", "InstanceNotFound")
    );
    assert_eq!(
        warnings(&client, &ns, "InstanceNotFound").await,
        vec![r#"VpnInstance "hub" does not exist in this namespace"#.to_owned()]
    );

    // A new hub says what it has not sent yet, until provisioning lets it.
    let routes = json!({"pushedRoutes": ["10.20.0.0/16"]});
    apply(&instances, &instance_manifest("hub", "peer-hub", routes)).await;
    let pending = wait_instance(&instances, "hub", "Synced False Provisioning", |o| {
        let conditions = o
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        condition(conditions, "Synced").is_some_and(|c| c.0 == "False" && c.1 == "Provisioning")
    })
    .await;
    let synced = condition(&pending.status.unwrap().conditions, "Synced").unwrap();
    assert!(synced.2.contains("pushedRoutes"), "{}", synced.2);
    wait_peer_reason(&peers, "alice", "WaitingForInstance").await;
    apply(
        &peers,
        &site_peer_manifest("branch", "hub", SITE, &["192.168.50.0/24"]),
    )
    .await;

    // Re-triggered by the instance becoming ready (the resync interval is 5 minutes here).
    let alice = wait_peer(&peers, "alice", "client peer Ready", peer_ready).await;
    let branch = wait_peer(&peers, "branch", "site peer Ready", peer_ready).await;
    let instance_id = instances
        .get("hub")
        .await
        .unwrap()
        .status
        .unwrap()
        .instance_id
        .unwrap();
    let remote = simc.peers(&instance_id).await;
    assert_eq!(remote.len(), 2);
    let alice_id = alice.status.unwrap().peer_id.unwrap();
    let remote_alice = remote
        .iter()
        .find(|p| p.id == alice_id)
        .expect("client peer exists in Altostrat");
    assert_eq!(remote_alice.user_id.as_deref(), Some(USER));
    assert!(!remote_alice.route_all);
    assert_eq!(
        branch.status.unwrap().instance_id.as_deref(),
        Some(instance_id.as_str())
    );

    // Mutable fields are updated in place.
    simc.reset_calls().await;
    merge_patch(&peers, "alice", json!({"spec": {"routeAll": true}})).await;
    merge_patch(
        &peers,
        "branch",
        json!({"spec": {"subnets": ["192.168.50.0/24", "192.168.51.0/24"]}}),
    )
    .await;
    wait_peer(&peers, "alice", "Ready after edit", peer_ready).await;
    wait_peer(&peers, "branch", "Ready after edit", peer_ready).await;
    eventually("peer updates applied", TIMEOUT, || async {
        let remote = simc.peers(&instance_id).await;
        let alice = remote.iter().find(|p| p.id == alice_id)?;
        let branch = remote.iter().find(|p| p.id != alice_id)?;
        (alice.route_all && branch.subnets.len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        simc.count("PUT /vpn/instances/{instanceId}/peers/{peerId}").await,
        2
    );
    assert_eq!(simc.count("POST /vpn/instances/{instanceId}/peers").await, 0);

    // The hub's deletion waits for its peers, and names them.
    let hub = wait_instance(&instances, "hub", "hub Ready and Synced", |o| {
        let conditions = o
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        instance_ready(o) && condition(conditions, "Synced").is_some_and(|c| c.0 == "True")
    })
    .await;
    let hub_id = hub.status.unwrap().instance_id.unwrap();
    let remote = simc.instance(&hub_id).await.expect("the hub exists in Altostrat");
    assert_eq!(
        remote.pushed_routes,
        vec!["10.20.0.0/16".to_owned()],
        "sent once provisioned"
    );
    instances.delete("hub", &Default::default()).await.unwrap();
    let blocked = wait_instance_reason(&instances, "hub", "Deleting").await;
    let named = "Waiting for the VpnPeers that reference this instance to be deleted: alice, branch";
    assert_eq!(blocked, named);
    assert_eq!(
        warnings(&client, &ns, "DeletionBlocked").await,
        vec![named.to_owned()]
    );
    peers.delete("alice", &Default::default()).await.unwrap();
    peers.delete("branch", &Default::default()).await.unwrap();
    wait_gone(&instances, "hub").await;
    assert_eq!(
        warnings(&client, &ns, "DeletionBlocked").await.len(),
        1,
        "one Warning when the wait began, none on later looks"
    );
    operator.stop().await;
}
