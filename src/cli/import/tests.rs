//! The import against the simulator served in process (real HTTP, the operator's client
//! stack), and its budget over a paused clock.

use std::sync::Mutex;

use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::altostrat::model::{
    ClientConfiguration, Instance, InstanceCreate, InstanceUpdate, Peer, PeerCreate, PeerType, PeerUpdate,
    RegionResponse,
};
use crate::controller::plan;
use crate::simulator::{SeedInstance, Simulator, SimulatorConfig};

const TOKEN: &str = "sim-token";

fn import_args(url: &str, rate: u32) -> ImportArgs {
    ImportArgs {
        api_url: url.to_owned(),
        api_token: Some(TOKEN.into()),
        api_token_file: None,
        api_ca_file: None,
        api_rate_limit: rate,
        api_timeout: Duration::from_secs(10),
        hostname: vec![],
        region: vec![],
        target_namespace: "net".into(),
        deletion_policy: None,
        credentials_secret: None,
        credentials: None,
        output_dir: None,
    }
}

/// `hubs` hubs made out of band, each with a client and a site peer.
fn seed(sim: &Simulator, hubs: usize) {
    for n in 0..hubs {
        let hostname = format!("hub-{n:03}");
        let region = if n.is_multiple_of(2) { "sjc" } else { "fra" };
        let seed = SeedInstance {
            name: &hostname,
            hostname: &hostname,
            region,
            ..SeedInstance::default()
        };
        let id = sim.core().seed_instance(&seed).unwrap().id;
        let user = format!("a1b2c3d4-e5f6-4890-8234-{n:012}");
        let site = format!("c3d5e2a0-88c9-4f7f-9f7b-{n:012}");
        let created = "2026-01-01T00:00:00Z";
        let client = json!({"type": "client", "protocol": "wireguard", "user_id": user, "route_all": n.is_multiple_of(3)});
        let site =
            json!({"type": "site", "protocol": "openvpn", "site_id": site, "subnets": ["10.8.0.0/16"]});
        sim.core().seed_peer(&id, &client, created).unwrap();
        sim.core().seed_peer(&id, &site, created).unwrap();
    }
}

#[tokio::test]
async fn importing_500_hubs_makes_one_instance_list_and_one_peer_list_per_hub() {
    let sim = Simulator::spawn(SimulatorConfig::default()).await.unwrap();
    seed(sim.simulator(), 500);
    let args = import_args(&sim.base_url(), 6_000_000);
    let api = client(&args).unwrap();
    let hubs = read(&api, &token(&args).unwrap(), &Selection::default())
        .await
        .unwrap();
    let calls = sim.simulator().calls();
    assert_eq!(calls.total, 501, "{:?}", calls.counts);
    assert_eq!(calls.counts.get("GET /vpn/instances"), Some(&1));
    assert_eq!(
        calls.counts.get("GET /vpn/instances/{instanceId}/peers"),
        Some(&500),
        "{:?}",
        calls.counts
    );
    let rendered = manifests(&hubs, "net", &Adoption::default()).unwrap();
    assert_eq!(rendered.files.len(), 500);
    assert_eq!(rendered.findings, Vec::<String>::new());
    assert_eq!(rendered.joined().matches("\nkind: VpnPeer\n").count(), 1000);
    for hub in &hubs {
        let imported = instance_spec(&hub.instance, &Adoption::default()).spec;
        assert_eq!(plan::instance_update(&imported, &hub.instance), None);
    }
}

#[tokio::test]
async fn hubs_are_chosen_by_hostname_and_region_and_their_peers_only_are_listed() {
    let sim = Simulator::spawn(SimulatorConfig::default()).await.unwrap();
    seed(sim.simulator(), 6);
    let args = import_args(&sim.base_url(), 6_000_000);
    let api = client(&args).unwrap();
    let token = token(&args).unwrap();
    let chosen = |hostnames: &[&str], regions: &[&str]| Selection {
        hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
        regions: regions.iter().map(|r| r.to_string()).collect(),
    };
    let hostnames = |hubs: Vec<Hub>| -> Vec<String> {
        hubs.iter()
            .map(|h| h.instance.hostname_label().to_owned())
            .collect()
    };
    let fra = read(&api, &token, &chosen(&[], &["fra"])).await.unwrap();
    assert_eq!(hostnames(fra), ["hub-001", "hub-003", "hub-005"]);
    let named = read(
        &api,
        &token,
        &chosen(&["hub-002.vpn.altostr.at", "hub-003"], &["sjc"]),
    )
    .await
    .unwrap();
    assert_eq!(hostnames(named), ["hub-002"]);
    let calls = sim.simulator().calls();
    assert_eq!(
        calls.counts.get("GET /vpn/instances/{instanceId}/peers"),
        Some(&4)
    );
}

/// Counts the calls and when they were sent; answers `hubs` hubs with no peers.
struct Timed {
    hubs: usize,
    sent: Arc<Mutex<Vec<Instant>>>,
    /// The first peer list is answered 429 with this `Retry-After`.
    refuse_first: Option<Duration>,
}

impl Timed {
    fn sent(&self) {
        self.sent.lock().unwrap().push(Instant::now());
    }
}

impl VpnApi for Timed {
    async fn list_regions(&self, _: &ApiToken) -> ApiResult<RegionResponse> {
        unreachable!("an import does not list regions")
    }
    async fn list_instances(&self, _: &ApiToken) -> ApiResult<Vec<Instance>> {
        self.sent();
        Ok((0..self.hubs)
            .map(|n| Instance {
                id: format!("{n}"),
                ..Instance::default()
            })
            .collect())
    }
    async fn get_instance(&self, _: &ApiToken, _: &str) -> ApiResult<Instance> {
        unreachable!("lists only")
    }
    async fn create_instance(&self, _: &ApiToken, _: &InstanceCreate) -> ApiResult<Instance> {
        unreachable!("no writes")
    }
    async fn update_instance(&self, _: &ApiToken, _: &str, _: &InstanceUpdate) -> ApiResult<Instance> {
        unreachable!("no writes")
    }
    async fn delete_instance(&self, _: &ApiToken, _: &str) -> ApiResult<()> {
        unreachable!("no writes")
    }
    async fn list_peers(&self, _: &ApiToken, _: &str, _: Option<PeerType>) -> ApiResult<Vec<Peer>> {
        self.sent();
        let first = self.sent.lock().unwrap().len() == 2;
        match self.refuse_first.filter(|_| first) {
            Some(retry_after) => Err(crate::altostrat::ApiError::RateLimited {
                endpoint: crate::altostrat::Endpoint::ListPeers,
                retry_after: Some(retry_after),
            }),
            None => Ok(vec![]),
        }
    }
    async fn get_peer(&self, _: &ApiToken, _: &str, _: &str) -> ApiResult<Peer> {
        unreachable!("lists only")
    }
    async fn create_peer(&self, _: &ApiToken, _: &str, _: &PeerCreate) -> ApiResult<Peer> {
        unreachable!("no writes")
    }
    async fn update_peer(&self, _: &ApiToken, _: &str, _: &str, _: &PeerUpdate) -> ApiResult<Peer> {
        unreachable!("no writes")
    }
    async fn delete_peer(&self, _: &ApiToken, _: &str, _: &str) -> ApiResult<()> {
        unreachable!("no writes")
    }
    async fn client_configuration(&self, _: &ApiToken, _: &ApiToken) -> ApiResult<ClientConfiguration> {
        unreachable!("no profiles")
    }
}

#[tokio::test(start_paused = true)]
async fn an_import_of_500_hubs_never_sends_more_than_the_rate_in_any_minute() {
    let sent = Arc::new(Mutex::default());
    let fake = Timed {
        hubs: 500,
        sent: sent.clone(),
        refuse_first: None,
    };
    let budget = Budget::new(BudgetConfig {
        rate_per_minute: 60,
        observe_share: 1.0,
        poll_share: 1.0,
        max_queue_wait: Duration::from_secs(24 * 3600),
        ..BudgetConfig::default()
    });
    let metrics = Arc::new(crate::metrics::Metrics::register(&mut Default::default()));
    let api = Resilient::new(fake, Arc::new(budget), RetryPolicy::default(), metrics);
    let started = Instant::now();
    let hubs = read(&api, &ApiToken::new(TOKEN), &Selection::default())
        .await
        .unwrap();
    assert_eq!(hubs.len(), 500);
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 501);
    let window = Duration::from_secs(60);
    for (i, at) in sent.iter().enumerate() {
        let in_window = sent[i..]
            .iter()
            .take_while(|later| **later - *at < window)
            .count();
        assert!(in_window <= 60, "{in_window} calls within a minute from call {i}");
    }
    let took = started.elapsed();
    // 5 at once, then the other 496 at 55 a minute: about 9 minutes.
    assert!(
        took >= Duration::from_secs(530) && took <= Duration::from_secs(560),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_is_waited_out_rather_than_failing_the_import() {
    let sent = Arc::new(Mutex::default());
    let fake = Timed {
        hubs: 3,
        sent: sent.clone(),
        refuse_first: Some(Duration::from_secs(90)),
    };
    let budget = Budget::new(BudgetConfig {
        observe_share: 1.0,
        poll_share: 1.0,
        max_queue_wait: Duration::from_secs(24 * 3600),
        ..BudgetConfig::default()
    });
    let metrics = Arc::new(crate::metrics::Metrics::register(&mut Default::default()));
    let api = Resilient::new(fake, Arc::new(budget), RETRIES, metrics);
    let started = Instant::now();
    let hubs = read(&api, &ApiToken::new(TOKEN), &Selection::default())
        .await
        .unwrap();
    assert_eq!(hubs.len(), 3);
    assert_eq!(
        sent.lock().unwrap().len(),
        5,
        "one list, one refused, three peer lists"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );
}
