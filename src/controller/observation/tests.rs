#![cfg(feature = "simulator")]

use super::*;
use crate::altostrat::Endpoint;
use crate::altostrat::model::{PeerCreate, PeerType, Protocol};
use crate::controller::testing::{SimulatedAltostrat, TOKEN};

const CREATED: &str = "2026-01-01T00:00:00Z";

fn token() -> ApiToken {
    ApiToken::new(TOKEN)
}

fn long_ago() -> Look {
    Look::within(Duration::from_secs(3600), Urgency::Drift)
}

#[tokio::test]
async fn concurrent_askers_of_one_list_share_one_call() {
    let sim = SimulatedAltostrat::documented();
    let api = sim.api();
    let ids: Vec<String> = (0..3)
        .map(|i| sim.add_instance(&format!("hub-{i}"), CREATED).id)
        .collect();
    let observations = Observations::default();
    let token = token();
    let asks = ids
        .iter()
        .map(|id| observations.instance(api, &token, id, Look::fresh(Urgency::Poll)));
    let found = futures::future::join_all(asks).await;
    assert!(found.iter().all(|f| matches!(f, Ok(Some(_)))));
    assert_eq!(sim.calls(), vec![Endpoint::ListInstances]);
}

#[tokio::test]
async fn a_fresh_enough_view_answers_without_a_call() {
    let sim = SimulatedAltostrat::documented();
    let api = sim.api();
    let id = sim.add_instance("hub", CREATED).id;
    let observations = Observations::default();
    observations
        .instance(api, &token(), &id, long_ago())
        .await
        .unwrap();
    sim.clear_calls();
    let again = observations
        .instance(api, &token(), &id, long_ago())
        .await
        .unwrap();
    assert_eq!(again.map(|i| i.id), Some(id.clone()));
    assert!(sim.calls().is_empty(), "{:?}", sim.calls());
    observations
        .instance(api, &token(), &id, Look::fresh(Urgency::Poll))
        .await
        .unwrap();
    assert_eq!(
        sim.calls(),
        vec![Endpoint::ListInstances],
        "a newer list was asked for"
    );
}

#[tokio::test]
async fn an_object_missing_from_the_list_is_confirmed_with_a_get_before_it_counts_as_gone() {
    let sim = SimulatedAltostrat::documented();
    let api = sim.api();
    let observations = Observations::default();
    let gone = observations
        .instance(api, &token(), "i-404", Look::fresh(Urgency::Poll))
        .await
        .unwrap();
    assert!(gone.is_none());
    assert_eq!(sim.calls(), vec![Endpoint::ListInstances, Endpoint::GetInstance]);
    sim.clear_calls();
    let still = observations
        .instance(api, &token(), "i-404", long_ago())
        .await
        .unwrap();
    assert!(still.is_none());
    assert!(sim.calls().is_empty(), "a confirmed absence is remembered");
}

#[tokio::test]
async fn a_refresh_announces_objects_changed_or_gone_but_not_the_first_sighting() {
    let sim = SimulatedAltostrat::documented();
    let api = sim.api();
    let kept = sim.add_instance("kept", CREATED).id;
    let edited = sim.add_instance("edited", CREATED).id;
    let removed = sim.add_instance("removed", CREATED).id;
    let observations = Observations::default();
    let mut changes = observations.subscribe();
    let fresh = || Look::fresh(Urgency::Drift);
    observations.instances(api, &token(), fresh()).await.unwrap();
    assert!(changes.try_recv().is_err(), "nothing changed yet");
    sim.edit_instance(&edited, |i| i.name = "Edited out of band".into());
    sim.remove_instance(&removed);
    observations.instances(api, &token(), fresh()).await.unwrap();
    let mut announced = vec![changes.try_recv().unwrap(), changes.try_recv().unwrap()];
    announced.sort_by_key(|c| format!("{c:?}"));
    let mut expected = vec![Changed::Instance(edited), Changed::Instance(removed)];
    expected.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(announced, expected);
    assert!(changes.try_recv().is_err(), "{kept} did not change");
}

#[tokio::test]
async fn peers_of_a_deleted_instance_are_gone_without_a_get_each() {
    let sim = SimulatedAltostrat::documented();
    let api = sim.api();
    let observations = Observations::default();
    let peers = observations
        .peers(api, &token(), "i-404", Look::fresh(Urgency::Poll))
        .await
        .unwrap();
    assert!(peers.is_none());
    let peer = observations
        .peer(api, &token(), "i-404", "p-1", long_ago())
        .await
        .unwrap();
    assert!(peer.is_none());
    assert_eq!(sim.calls(), vec![Endpoint::ListPeers]);
}

#[tokio::test]
async fn one_peer_list_serves_every_peer_of_an_instance() {
    let sim = SimulatedAltostrat::documented();
    let api = sim.api();
    let instance = sim.add_instance("hub", CREATED).id;
    let body = |user: &str| PeerCreate {
        peer_type: PeerType::Client,
        protocol: Protocol::Wireguard,
        site_id: None,
        user_id: Some(user.into()),
        subnets: None,
        route_all: Some(false),
    };
    let users = [
        "a1b2c3d4-e5f6-7890-1234-567890abcde1",
        "a1b2c3d4-e5f6-7890-1234-567890abcde2",
        "a1b2c3d4-e5f6-7890-1234-567890abcde3",
    ];
    let peers: Vec<String> = users
        .iter()
        .map(|u| sim.add_peer(&instance, &body(u), CREATED).id)
        .collect();
    let observations = Observations::default();
    for id in &peers {
        let found = observations
            .peer(api, &token(), &instance, id, long_ago())
            .await
            .unwrap();
        assert!(found.is_some());
    }
    assert_eq!(sim.calls(), vec![Endpoint::ListPeers]);
    assert_eq!(observations.lists_per_cycle(&token()), 2);
}

#[test]
fn a_list_sent_before_a_write_was_answered_does_not_bring_back_the_old_value() {
    let start = Instant::now();
    let mut view = View::<Instance>::new(start);
    let old = Instance {
        id: "i-1".into(),
        name: "Old".into(),
        ..Instance::default()
    };
    let new = Instance {
        name: "New".into(),
        ..old.clone()
    };
    view.merge(start, Some(vec![old.clone()]));
    // The PUT's answer arrives at +2 s; a list sent at +1 s still shows the old name.
    view.note("i-1", Some(new.clone()), start + Duration::from_secs(2));
    let changed = view.merge(start + Duration::from_secs(1), Some(vec![old.clone()]));
    assert!(changed.is_empty());
    assert_eq!(view.items["i-1"].value.as_ref().map(|i| &i.name), Some(&new.name));
    // A create answered at +2 s is not dropped by that list either, nor a delete undone.
    view.note(
        "i-2",
        Some(Instance {
            id: "i-2".into(),
            ..Instance::default()
        }),
        start + Duration::from_secs(2),
    );
    view.merge(start + Duration::from_secs(1), Some(vec![old]));
    assert!(view.items.contains_key("i-2"));
}

#[tokio::test]
async fn the_askers_of_a_list_the_budget_held_back_share_its_one_slot() {
    let sim = SimulatedAltostrat::documented();
    let api = sim.api();
    let id = sim.add_instance("hub", CREATED).id;
    let observations = Observations::default();
    let slot = slot(&observations.instances, &token());
    let held = slot
        .refresh(&Look::fresh(Urgency::Drift), || async {
            Err::<Vec<Instance>, _>(ApiError::Throttled {
                endpoint: Endpoint::ListInstances,
                expected_wait: Duration::from_secs(30),
            })
        })
        .await
        .unwrap_err();
    assert_eq!(held.retry_after().map(|d| d.as_secs()), Some(30));
    let again = observations
        .instance(api, &token(), &id, Look::fresh(Urgency::Drift))
        .await
        .unwrap_err();
    assert!(again.retry_after().unwrap() <= Duration::from_secs(30));
    assert!(
        sim.calls().is_empty(),
        "told the same slot, not sent to the budget again"
    );
    let urgent = observations
        .instance(api, &token(), &id, Look::fresh(Urgency::Poll))
        .await
        .unwrap();
    assert!(
        urgent.is_some(),
        "a more urgent asker is not held back by a drift check"
    );
}
