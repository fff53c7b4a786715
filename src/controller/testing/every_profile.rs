//! The core lifecycle under every simulator fidelity profile: what the operator must do
//! whichever way Altostrat shapes its answers (a taken hostname as 409, 422 or 400, enveloped
//! lists, message-only errors, an asynchronous or refused instance DELETE, undocumented
//! values, a seat limit, a share token per read).

use serde_json::json;

use super::{Harness, condition, instance, peer};
use crate::altostrat::Endpoint;
use crate::crd::{DeletionPolicy, VpnInstance, VpnPeer};
use crate::simulator::{Fidelity, InstanceDelete, PROFILES};

fn ready(h: &Harness, hub: &VpnInstance) -> Option<(String, String)> {
    condition(&h.stored(hub)?.status?.conditions, "Ready")
}

fn peer_ready(h: &Harness, peer: &VpnPeer) -> Option<(String, String)> {
    condition(&h.stored(peer)?.status?.conditions, "Ready")
}

fn is_ready(condition: Option<(String, String)>) -> bool {
    condition.is_some_and(|(status, _)| status == "True")
}

/// The peers the account made (not the service's own, e.g. the gateway of `unknown-values`).
fn user_peers(h: &Harness, instance_id: &str) -> usize {
    h.altostrat
        .peers(instance_id)
        .iter()
        .filter(|p| p.user_id.is_some() || p.site_id.is_some())
        .count()
}

/// Create instance → provisioned → Ready; create peer → Ready; spec edit → one update;
/// delete peer, delete instance → gone (or, where DELETE is refused, held until orphaned).
async fn lifecycle(name: &str) {
    let h = Harness::with_profile(name);
    h.altostrat.hold_provisioning();
    let hub = h.apply(instance("hub-one", json!({})));
    h.reconcile(&hub).await.expect(name);
    assert_eq!(
        ready(&h, &hub),
        Some(("False".into(), "Provisioning".into())),
        "{name}"
    );
    h.altostrat.provision_all();
    h.reconcile(&hub).await.expect(name);
    assert!(is_ready(ready(&h, &hub)), "{name}: {:?}", ready(&h, &hub));
    let hub_id = h.altostrat.instances()[0].id.clone();

    let alice = h.apply(peer("alice", "hub-one", json!({})));
    h.reconcile(&alice).await.expect(name);
    assert!(
        is_ready(peer_ready(&h, &alice)),
        "{name}: {:?}",
        peer_ready(&h, &alice)
    );
    assert_eq!(user_peers(&h, &hub_id), 1, "{name}");

    let edited = h.edit(&hub, |o| o.spec.pushed_routes = vec!["10.0.0.0/8".into()]);
    h.altostrat.clear_calls();
    h.reconcile(&edited).await.expect(name);
    assert_eq!(h.altostrat.count(Endpoint::UpdateInstance), 1, "{name}");
    assert_eq!(
        h.altostrat.instances()[0].pushed_routes,
        vec!["10.0.0.0/8"],
        "{name}"
    );
    assert!(is_ready(ready(&h, &hub)), "{name}: {:?}", ready(&h, &hub));

    delete_peer(&h, &alice, name).await;
    assert_eq!(user_peers(&h, &hub_id), 0, "{name}");
    delete_instance(&h, &hub, name).await;
}

async fn delete_peer(h: &Harness, alice: &VpnPeer, name: &str) {
    h.delete(alice);
    h.reconcile(alice).await.expect(name);
    assert!(!h.holds_finalizer(alice), "{name}");
    h.remove(alice);
}

async fn delete_instance(h: &Harness, hub: &VpnInstance, name: &str) {
    h.delete(hub);
    let fidelity = Fidelity::profile(name).expect(name);
    match fidelity.instance_delete {
        InstanceDelete::Immediate => {
            h.reconcile(hub).await.expect(name);
        }
        InstanceDelete::Asynchronous { .. } => {
            h.reconcile(hub).await.expect(name);
            assert_eq!(
                ready(h, hub),
                Some(("False".into(), "TearingDown".into())),
                "{name}"
            );
            assert!(h.holds_finalizer(hub), "{name}: released while tearing down");
            h.altostrat.finish_teardowns();
            h.reconcile(hub).await.expect(name);
        }
        InstanceDelete::NotAllowed => {
            let refused = h.reconcile(hub).await.expect_err(name);
            assert_eq!(refused.reason(), "DeleteRefused", "{name}");
            assert!(h.holds_finalizer(hub), "{name}");
            assert_eq!(h.altostrat.instances().len(), 1, "{name}");
            let orphaned = h.edit(hub, |o| o.spec.deletion_policy = Some(DeletionPolicy::Orphan));
            h.reconcile(&orphaned).await.expect(name);
            assert!(!h.holds_finalizer(hub), "{name}: released once orphaned");
            return;
        }
    }
    assert!(!h.holds_finalizer(hub), "{name}");
    assert!(h.altostrat.instances().is_empty(), "{name}");
}

/// A create whose answer is lost is found by the next list and adopted, not posted again.
async fn lost_create_is_adopted(name: &str) {
    let h = Harness::with_profile(name);
    let hub = h.apply(instance("hub-one", json!({})));
    h.altostrat.lose_answer(Endpoint::CreateInstance);
    let lost = h.reconcile(&hub).await.expect_err(name);
    assert_eq!(lost.category(), "transport", "{name}: {lost}");
    h.altostrat.clear_calls();
    h.reconcile(&hub).await.expect(name);
    assert_eq!(h.altostrat.calls(), vec![Endpoint::ListInstances], "{name}");
    let instances = h.altostrat.instances();
    assert_eq!(instances.len(), 1, "{name}: never two hubs");
    let status = h.stored(&hub).and_then(|h| h.status).expect(name);
    assert_eq!(status.instance_id, Some(instances[0].id.clone()), "{name}");
}

/// A hostname another account holds is reported for a person to resolve, whatever status and
/// body the refusal comes with.
async fn taken_hostname_needs_a_person(name: &str) {
    let h = Harness::with_profile(name);
    h.altostrat.take_hostname_elsewhere("hub-one");
    let hub = h.apply(instance("hub-one", json!({})));
    let error = h.reconcile(&hub).await.expect_err(name);
    assert!(error.needs_user_action(), "{name}: {error}");
    assert_eq!(
        ready(&h, &hub),
        Some(("False".into(), "HostnameTaken".into())),
        "{name}"
    );
    assert!(h.altostrat.instances().is_empty(), "{name}");
}

#[tokio::test]
async fn the_lifecycle_holds_under_every_profile() {
    for (name, _) in PROFILES {
        lifecycle(name).await;
    }
}

#[tokio::test]
async fn a_lost_create_answer_is_adopted_under_every_profile() {
    for (name, _) in PROFILES {
        lost_create_is_adopted(name).await;
    }
}

#[tokio::test]
async fn a_taken_hostname_needs_a_person_under_every_profile() {
    for (name, _) in PROFILES {
        taken_hostname_needs_a_person(name).await;
    }
}
