//! Pure planning: compares the desired spec with what Altostrat reports and decides what to
//! send. No IO here, so every decision is unit-tested.

use std::collections::BTreeSet;
use std::time::Duration;

use ipnet::IpNet;

use crate::altostrat::model::{
    DnsCustomRecord, DnsRecordType, Instance, InstanceCreate, InstanceUpdate, Peer, PeerCreate, PeerType,
    PeerUpdate, Protocol,
};
use crate::crd::{DnsRecordKind, PeerKind, PeerProtocol, VpnInstanceSpec, VpnPeerSpec};

/// Body of the POST that creates the instance.
pub fn instance_create(spec: &VpnInstanceSpec) -> InstanceCreate {
    InstanceCreate {
        name: spec.name.clone(),
        hostname: spec.hostname.clone(),
        region: spec.region.clone(),
    }
}

/// The fewest public resolvers Altostrat accepts in an update.
pub const MIN_PUBLIC_DNS: usize = 2;

/// Resolvers added, in this order, to an update that keeps Altostrat's public resolvers
/// (`spec.publicDns` unset) while Altostrat holds fewer than an update must carry: the
/// resolver of Altostrat's documented examples (Quad9), then Cloudflare's.
pub const FALLBACK_PUBLIC_DNS: [&str; 2] = ["9.9.9.9", "1.1.1.1"];

/// The full PUT body for the spec. Fields the spec leaves open (public DNS) keep the values
/// Altostrat reports, because the API requires them on every update.
/// The fields an instance update sets, as Altostrat holds them (order-insensitive lists
/// sorted): what an update war is told by.
pub fn instance_fields(i: &Instance) -> serde_json::Value {
    let sorted = |list: &[String]| {
        let mut list = list.to_vec();
        list.sort();
        list
    };
    serde_json::json!([
        i.name,
        sorted(&i.pushed_routes),
        i.public_dns,
        sorted(&i.domains),
        sorted(&i.split_dns),
        i.dns_custom
    ])
}

/// The fields a peer update sets, as Altostrat holds them.
pub fn peer_fields(p: &Peer) -> serde_json::Value {
    let mut subnets = p.subnets.clone();
    subnets.sort();
    serde_json::json!([subnets, p.route_all])
}

pub fn desired_update(spec: &VpnInstanceSpec, observed: &Instance) -> InstanceUpdate {
    InstanceUpdate {
        name: spec.name.clone(),
        pushed_routes: spec.pushed_routes.clone(),
        public_dns: spec
            .public_dns
            .clone()
            .unwrap_or_else(|| kept_public_dns(&observed.public_dns)),
        domains: spec.domains.clone(),
        split_dns: spec.split_dns.clone(),
        dns_custom: spec
            .dns_custom
            .iter()
            .map(|r| DnsCustomRecord {
                name: r.name.clone(),
                record_type: match r.kind {
                    DnsRecordKind::A => DnsRecordType::A,
                    DnsRecordKind::Cname => DnsRecordType::Cname,
                },
                value: r.value.clone(),
            })
            .collect(),
    }
}

/// Altostrat's public resolvers, padded with [`FALLBACK_PUBLIC_DNS`] (skipping any it holds)
/// up to the [`MIN_PUBLIC_DNS`] an update must carry. Every documented create answer holds one.
pub fn kept_public_dns(observed: &[String]) -> Vec<String> {
    let mut resolvers = observed.to_vec();
    for fallback in FALLBACK_PUBLIC_DNS {
        if resolvers.len() >= MIN_PUBLIC_DNS {
            break;
        }
        if !resolvers.iter().any(|r| r == fallback) {
            resolvers.push(fallback.to_owned());
        }
    }
    resolvers
}

/// The PUT to send, if Altostrat differs from the spec. Lists whose order carries no meaning
/// (routes, domains, split resolvers, records) compare as sets, and CIDRs compare by network,
/// so a server that reorders or normalises them does not cause an endless stream of updates.
/// Public resolvers are tried in order, so their order matters; left unset, they are not
/// compared (padding them alone is no reason to write).
pub fn instance_update(spec: &VpnInstanceSpec, observed: &Instance) -> Option<InstanceUpdate> {
    let desired = desired_update(spec, observed);
    differs(&desired, observed, spec.public_dns.is_some()).then_some(desired)
}

/// Drift as an observer sees it: the update that would make Altostrat match the fields the
/// spec sets, if it does not. A list left empty and an unset `publicDns` are not compared: an
/// observed hub is described, not prescribed, so a spec names only what it cares about.
pub fn observed_instance_drift(spec: &VpnInstanceSpec, observed: &Instance) -> Option<InstanceUpdate> {
    let mut desired = desired_update(spec, observed);
    let held = |wanted: &mut Vec<String>, held: &[String]| {
        if wanted.is_empty() {
            *wanted = held.to_vec();
        }
    };
    held(&mut desired.pushed_routes, &observed.pushed_routes);
    held(&mut desired.domains, &observed.domains);
    held(&mut desired.split_dns, &observed.split_dns);
    if spec.dns_custom.is_empty() {
        desired.dns_custom = observed.dns_custom.clone();
    }
    if spec.public_dns.is_none() {
        desired.public_dns = observed.public_dns.clone();
    }
    differs(&desired, observed, true).then_some(desired)
}

/// Whether sending `desired` would change what Altostrat holds (public resolvers only if
/// `with_public_dns`).
fn differs(desired: &InstanceUpdate, observed: &Instance, with_public_dns: bool) -> bool {
    let same = desired.name == observed.name
        && cidr_set(&desired.pushed_routes) == cidr_set(&observed.pushed_routes)
        && (!with_public_dns || desired.public_dns == observed.public_dns)
        && lower_set(&desired.domains) == lower_set(&observed.domains)
        && lower_set(&desired.split_dns) == lower_set(&observed.split_dns)
        && record_set(&desired.dns_custom) == record_set(&observed.dns_custom);
    !same
}

/// Human summary of what an update changes, for events (field names only, never values that
/// could be sensitive).
pub fn instance_changed_fields(update: &InstanceUpdate, observed: &Instance) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if update.name != observed.name {
        fields.push("name");
    }
    if cidr_set(&update.pushed_routes) != cidr_set(&observed.pushed_routes) {
        fields.push("pushedRoutes");
    }
    if update.public_dns != observed.public_dns {
        fields.push("publicDns");
    }
    if lower_set(&update.domains) != lower_set(&observed.domains) {
        fields.push("domains");
    }
    if lower_set(&update.split_dns) != lower_set(&observed.split_dns) {
        fields.push("splitDns");
    }
    if record_set(&update.dns_custom) != record_set(&observed.dns_custom) {
        fields.push("dnsCustom");
    }
    fields
}

fn cidr_set(items: &[String]) -> BTreeSet<String> {
    items
        .iter()
        .map(|s| {
            s.trim()
                .parse::<IpNet>()
                .map(|n| n.trunc().to_string())
                .unwrap_or_else(|_| s.trim().to_owned())
        })
        .collect()
}

fn lower_set(items: &[String]) -> BTreeSet<String> {
    items
        .iter()
        .map(|s| s.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect()
}

fn record_set(records: &[DnsCustomRecord]) -> BTreeSet<(String, bool, String)> {
    records
        .iter()
        .map(|r| {
            (
                r.name.trim().trim_end_matches('.').to_ascii_lowercase(),
                r.record_type == DnsRecordType::A,
                r.value.trim().trim_end_matches('.').to_ascii_lowercase(),
            )
        })
        .collect()
}

/// An existing instance that must be ours: the hostname label is unique across Altostrat, so
/// an instance with our label is the one a previous attempt created before its id could be
/// recorded (or the one the user points us at).
pub fn find_instance_by_hostname<'a>(instances: &'a [Instance], hostname: &str) -> Option<&'a Instance> {
    instances
        .iter()
        .find(|i| i.hostname_label().eq_ignore_ascii_case(hostname))
}

/// Checks the region against the codes Altostrat offers; the error lists the valid ones.
pub fn validate_region(region: &str, codes: &[String]) -> Result<(), String> {
    if codes.is_empty() || codes.iter().any(|c| c == region) {
        return Ok(());
    }
    Err(format!(
        "region {region:?} is not offered by Altostrat; valid regions: {}",
        codes.join(", ")
    ))
}

/// How soon to look again at an instance that is not converged yet. Provisioning takes minutes
/// in production, so polling slows down as the instance ages (bounded between 1 s and 30 s).
pub fn provisioning_poll_interval(age: Duration, longest: Duration) -> Duration {
    (age / 4).clamp(Duration::from_secs(1), longest.max(Duration::from_secs(1)))
}

/// Spreads periodic resyncs of many objects over ±10 % of the interval (`sample` in [0, 1)).
pub fn jittered(interval: Duration, sample: f64) -> Duration {
    interval.mul_f64(0.9 + 0.2 * sample.clamp(0.0, 1.0))
}

pub fn peer_type(kind: PeerKind) -> PeerType {
    match kind {
        PeerKind::Client => PeerType::Client,
        PeerKind::Site => PeerType::Site,
    }
}

fn protocol(p: PeerProtocol) -> Protocol {
    match p {
        PeerProtocol::Wireguard => Protocol::Wireguard,
        PeerProtocol::Openvpn => Protocol::Openvpn,
    }
}

/// Body of the POST that creates the peer: only the fields that apply to its type.
pub fn peer_create(spec: &VpnPeerSpec) -> PeerCreate {
    match spec.kind {
        PeerKind::Client => PeerCreate {
            peer_type: PeerType::Client,
            protocol: protocol(spec.protocol),
            user_id: spec.user_id.clone(),
            route_all: Some(spec.route_all.unwrap_or(false)),
            site_id: None,
            subnets: None,
        },
        PeerKind::Site => PeerCreate {
            peer_type: PeerType::Site,
            protocol: protocol(spec.protocol),
            site_id: spec.site_id.clone(),
            subnets: Some(spec.subnets.clone().unwrap_or_default()),
            user_id: None,
            route_all: None,
        },
    }
}

/// The PUT to send, if the peer's mutable fields differ from the spec.
pub fn peer_update(spec: &VpnPeerSpec, observed: &Peer) -> Option<PeerUpdate> {
    match spec.kind {
        PeerKind::Client => {
            let route_all = spec.route_all.unwrap_or(false);
            (route_all != observed.route_all).then_some(PeerUpdate {
                route_all: Some(route_all),
                subnets: None,
            })
        }
        PeerKind::Site => {
            let subnets = spec.subnets.clone().unwrap_or_default();
            (cidr_set(&subnets) != cidr_set(&observed.subnets)).then_some(PeerUpdate {
                subnets: Some(subnets),
                route_all: None,
            })
        }
    }
}

/// Drift of a peer as an observer sees it: the update that would make Altostrat match the
/// fields the spec sets (`routeAll` when set, `subnets`), if it does not.
pub fn observed_peer_drift(spec: &VpnPeerSpec, observed: &Peer) -> Option<PeerUpdate> {
    match spec.kind {
        PeerKind::Client => spec
            .route_all
            .is_some()
            .then(|| peer_update(spec, observed))
            .flatten(),
        PeerKind::Site => peer_update(spec, observed),
    }
}

/// The peers on the instance that a previous attempt may have created before its id could be
/// recorded: same type and same user (client) or site (site). Whether one of them is this
/// resource's own is for [`crate::controller::ownership`] to judge.
pub fn matching_peers<'a>(peers: &'a [Peer], spec: &VpnPeerSpec) -> Vec<&'a Peer> {
    let eq = |a: &Option<String>, b: &Option<String>| match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    };
    peers
        .iter()
        .filter(|p| {
            p.peer_type == peer_type(spec.kind)
                && match spec.kind {
                    PeerKind::Client => eq(&p.user_id, &spec.user_id),
                    PeerKind::Site => eq(&p.site_id, &spec.site_id),
                }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DeletionPolicy, DnsRecord, InstanceReference};

    fn spec() -> VpnInstanceSpec {
        VpnInstanceSpec {
            name: "Demo hub".into(),
            hostname: "demo-hub".into(),
            region: "sjc".into(),
            pushed_routes: vec!["10.0.0.0/8".into(), "192.168.0.0/16".into()],
            public_dns: Some(vec!["1.1.1.1".into(), "8.8.8.8".into()]),
            domains: vec!["corp.internal".into()],
            split_dns: vec!["10.0.0.53".into()],
            dns_custom: vec![DnsRecord {
                name: "fs.corp.internal".into(),
                kind: DnsRecordKind::A,
                value: "10.0.0.10".into(),
            }],
            deletion_policy: Some(DeletionPolicy::Delete),
            credentials_secret_ref: None,
            credentials_ref: None,
            instance_id: None,
            management_policy: Default::default(),
            allowed_peers: None,
        }
    }

    fn observed_matching(spec: &VpnInstanceSpec) -> Instance {
        let update = desired_update(spec, &Instance::default());
        Instance {
            id: "id-1".into(),
            name: update.name,
            hostname: "demo-hub.vpn.altostr.at".into(),
            pushed_routes: update.pushed_routes,
            public_dns: update.public_dns,
            domains: update.domains,
            split_dns: update.split_dns,
            dns_custom: update.dns_custom,
            ..Instance::default()
        }
    }

    #[test]
    fn converged_instance_needs_no_update() {
        let spec = spec();
        assert_eq!(instance_update(&spec, &observed_matching(&spec)), None);
    }

    #[test]
    fn reordered_or_normalised_lists_are_not_a_change() {
        let spec = spec();
        let mut observed = observed_matching(&spec);
        observed.pushed_routes = vec!["192.168.0.0/16".into(), "10.1.2.3/8".into()];
        observed.domains = vec!["CORP.internal.".into()];
        assert_eq!(instance_update(&spec, &observed), None);
    }

    #[test]
    fn public_dns_order_is_significant() {
        let spec = spec();
        let mut observed = observed_matching(&spec);
        observed.public_dns.reverse();
        let update = instance_update(&spec, &observed).expect("order change must be applied");
        assert_eq!(update.public_dns, vec!["1.1.1.1", "8.8.8.8"]);
        assert_eq!(instance_changed_fields(&update, &observed), vec!["publicDns"]);
    }

    #[test]
    fn drift_produces_a_full_replace_body() {
        let spec = spec();
        let mut observed = observed_matching(&spec);
        observed.name = "renamed in portal".into();
        observed.dns_custom.clear();
        let update = instance_update(&spec, &observed).unwrap();
        assert_eq!(update.name, "Demo hub");
        assert_eq!(update.pushed_routes.len(), 2, "unchanged fields are still sent");
        assert_eq!(update.dns_custom.len(), 1);
        assert_eq!(
            instance_changed_fields(&update, &observed),
            vec!["name", "dnsCustom"]
        );
    }

    #[test]
    fn unset_public_dns_keeps_the_assigned_resolvers() {
        let mut spec = spec();
        spec.public_dns = None;
        let mut observed = observed_matching(&spec);
        observed.public_dns = vec!["9.9.9.9".into(), "149.112.112.112".into()];
        assert_eq!(instance_update(&spec, &observed), None);
    }

    #[test]
    fn unset_public_dns_is_padded_to_two_resolvers_only_when_an_update_is_sent_anyway() {
        let mut spec = spec();
        spec.public_dns = None;
        let mut observed = observed_matching(&spec);
        observed.public_dns = vec!["8.8.8.8".into()];
        assert_eq!(
            instance_update(&spec, &observed),
            None,
            "a single resolver alone is no reason to write"
        );
        spec.name = "Renamed hub".into();
        let update = instance_update(&spec, &observed).unwrap();
        assert_eq!(update.public_dns, vec!["8.8.8.8", "9.9.9.9"]);
        assert_eq!(
            instance_changed_fields(&update, &observed),
            vec!["name", "publicDns"]
        );
        assert_eq!(kept_public_dns(&["9.9.9.9".into()]), vec!["9.9.9.9", "1.1.1.1"]);
        assert_eq!(kept_public_dns(&[]), vec!["9.9.9.9", "1.1.1.1"]);
    }

    #[test]
    fn an_observer_compares_only_what_the_spec_sets() {
        let mut described = spec();
        described.public_dns = None;
        described.domains.clear();
        described.split_dns.clear();
        described.dns_custom.clear();
        let mut observed = observed_matching(&spec());
        observed.public_dns = vec!["9.9.9.9".into()];
        assert_eq!(observed_instance_drift(&described, &observed), None);
        assert!(
            instance_update(&described, &observed).is_some(),
            "full management would clear what the spec leaves empty"
        );
        observed.pushed_routes = vec!["0.0.0.0/0".into()];
        let drift = observed_instance_drift(&described, &observed).unwrap();
        assert_eq!(instance_changed_fields(&drift, &observed), vec!["pushedRoutes"]);

        let mut client = peer_spec(PeerKind::Client);
        let held = Peer {
            route_all: true,
            ..Peer::default()
        };
        assert_eq!(observed_peer_drift(&client, &held), None, "routeAll unset");
        client.route_all = Some(false);
        assert!(observed_peer_drift(&client, &held).is_some());
    }

    #[test]
    fn adoption_matches_the_hostname_label_of_the_fqdn() {
        let instances = vec![
            Instance {
                id: "a".into(),
                hostname: "other.vpn.altostr.at".into(),
                ..Instance::default()
            },
            Instance {
                id: "b".into(),
                hostname: "demo-hub.vpn.altostr.at".into(),
                ..Instance::default()
            },
        ];
        assert_eq!(
            find_instance_by_hostname(&instances, "demo-hub").map(|i| i.id.as_str()),
            Some("b")
        );
        assert!(find_instance_by_hostname(&instances, "demo").is_none());
    }

    #[test]
    fn unknown_region_lists_valid_ones() {
        let codes = vec!["fra".to_owned(), "sjc".to_owned()];
        assert!(validate_region("sjc", &codes).is_ok());
        let err = validate_region("xyz", &codes).unwrap_err();
        assert!(err.contains("\"xyz\"") && err.contains("fra, sjc"), "{err}");
    }

    #[test]
    fn polling_slows_down_with_age_within_bounds() {
        let longest = Duration::from_secs(30);
        assert_eq!(
            provisioning_poll_interval(Duration::ZERO, longest),
            Duration::from_secs(1)
        );
        assert_eq!(
            provisioning_poll_interval(Duration::from_secs(20), longest),
            Duration::from_secs(5)
        );
        assert_eq!(
            provisioning_poll_interval(Duration::from_secs(3600), longest),
            longest
        );
        let base = Duration::from_secs(100);
        assert_eq!(jittered(base, 0.0), Duration::from_secs(90));
        assert!(jittered(base, 0.999) < Duration::from_secs(110));
    }

    fn peer_spec(kind: PeerKind) -> VpnPeerSpec {
        VpnPeerSpec {
            instance_ref: InstanceReference {
                name: "hub".into(),
                namespace: None,
            },
            kind,
            protocol: PeerProtocol::Wireguard,
            user_id: (kind == PeerKind::Client).then(|| "a1b2c3d4-e5f6-7890-1234-567890abcdef".into()),
            route_all: None,
            site_id: (kind == PeerKind::Site).then(|| "c3d5e2a0-88c9-4f7f-9f7b-6a1e2b4c5d6e".into()),
            subnets: (kind == PeerKind::Site).then(|| vec!["192.168.100.0/24".into()]),
            deletion_policy: Some(DeletionPolicy::Delete),
            management_policy: Default::default(),
            profile_secret: None,
            peer_id: None,
        }
    }

    #[test]
    fn peer_bodies_only_carry_fields_of_their_type() {
        let client = peer_create(&peer_spec(PeerKind::Client));
        assert_eq!(client.route_all, Some(false));
        assert!(client.site_id.is_none() && client.subnets.is_none());
        let site = peer_create(&peer_spec(PeerKind::Site));
        assert_eq!(
            site.subnets.as_deref(),
            Some(&["192.168.100.0/24".to_owned()][..])
        );
        assert!(site.user_id.is_none() && site.route_all.is_none());
    }

    #[test]
    fn peer_updates_only_when_the_mutable_field_differs() {
        let mut spec = peer_spec(PeerKind::Client);
        let observed = Peer {
            route_all: false,
            ..Peer::default()
        };
        assert_eq!(peer_update(&spec, &observed), None);
        spec.route_all = Some(true);
        assert_eq!(
            peer_update(&spec, &observed),
            Some(PeerUpdate {
                route_all: Some(true),
                subnets: None
            })
        );

        let site = peer_spec(PeerKind::Site);
        let observed = Peer {
            subnets: vec!["192.168.100.7/24".into()],
            ..Peer::default()
        };
        assert_eq!(peer_update(&site, &observed), None, "same network");
        let observed = Peer {
            subnets: vec![],
            ..Peer::default()
        };
        assert!(peer_update(&site, &observed).unwrap().subnets.is_some());
    }

    #[test]
    fn peer_adoption_requires_same_type_and_owner() {
        let spec = peer_spec(PeerKind::Client);
        let peers = vec![
            Peer {
                id: "site".into(),
                peer_type: PeerType::Site,
                user_id: spec.user_id.clone(),
                ..Peer::default()
            },
            Peer {
                id: "other".into(),
                peer_type: PeerType::Client,
                user_id: Some("x".into()),
                ..Peer::default()
            },
            Peer {
                id: "mine".into(),
                peer_type: PeerType::Client,
                user_id: spec.user_id.clone(),
                ..Peer::default()
            },
        ];
        let ids: Vec<&str> = matching_peers(&peers, &spec)
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(ids, vec!["mine"]);
        assert!(matching_peers(&peers[..2], &spec).is_empty());
    }
}
