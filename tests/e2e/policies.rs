//! What kube-apiserver refuses about `managementPolicy` (the CRDs' CEL rules). What the
//! operator does under each policy, the pause annotation and reconcile requests is tested in
//! the fast tier (`src/controller/{instance,peer}/tests.rs`).

use altostrat_vpn_operator::crd::{ManagementPolicy, VpnInstance, VpnPeer};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::support::*;

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn leaving_observe_only_and_observing_a_peer_need_the_id_at_admission() {
    let client = kube().await;
    let ns = namespace(&client, "e2e-policy-admission").await;
    let instances: Api<VpnInstance> = Api::namespaced(client.clone(), &ns);
    let peers: Api<VpnPeer> = Api::namespaced(client.clone(), &ns);

    let observer = json!({"managementPolicy": "ObserveOnly"});
    apply(&instances, &instance_manifest("hub", "observed-hub", observer)).await;
    // Leaving ObserveOnly adopts the observed hub: refused without spec.instanceId.
    let takeover = json!({"spec": {"managementPolicy": "Full"}});
    let refused = instances
        .patch("hub", &PatchParams::default(), &Patch::Merge(&takeover))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("set spec.instanceId"), "{refused}");

    // A peer is found by its id only: observing one needs spec.peerId.
    let mut no_id = client_peer_manifest("bob", "hub", "a1b2c3d4-e5f6-7890-1234-567890abcdef");
    no_id.spec.management_policy = ManagementPolicy::ObserveOnly;
    let refused = peers
        .patch("bob", &PatchParams::apply("e2e-tests"), &Patch::Apply(&no_id))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("needs spec.peerId"), "{refused}");
}
