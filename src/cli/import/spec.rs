//! Pure: the spec of a `VpnInstance` or `VpnPeer` that adopts an Altostrat object as it is.
//!
//! Each spec is built from what Altostrat holds, field by field, and then checked against the
//! operator's own diff (`controller::plan`): an imported resource is `Full` only if its first
//! reconcile would send nothing. What the CRDs cannot hold is returned as a loss, and such a
//! resource is imported `ObserveOnly`, so applying it writes nothing either.

use std::net::Ipv4Addr;

use crate::altostrat::model::{DnsRecordType, Instance, Peer, PeerType, Protocol};
use crate::controller::plan;
use crate::crd::{
    CredentialsReference, DeletionPolicy, DnsRecord, DnsRecordKind, InstanceReference, ManagementPolicy,
    PeerKind, PeerProtocol, SecretReference, VpnInstanceSpec, VpnPeerSpec, cidr,
};

/// What an imported resource refers to besides the Altostrat object.
#[derive(Clone, Debug, Default)]
pub struct Adoption {
    /// `deletionPolicy` to set; unset leaves the adopted-means-orphan default.
    pub deletion_policy: Option<DeletionPolicy>,
    /// `credentialsSecretRef` of the imported hubs.
    pub credentials_secret: Option<String>,
    /// `credentialsRef` (a VpnCredentials) of the imported hubs.
    pub credentials: Option<String>,
}

/// A spec, and what of the Altostrat object it cannot hold (empty: it holds all of it).
#[derive(Clone, Debug, PartialEq)]
pub struct Imported<S> {
    pub spec: S,
    pub losses: Vec<String>,
}

// The CRD's bounds (src/crd/instance.rs), checked here so that no manifest is refused at
// admission.
const NAME_LENGTH: std::ops::RangeInclusive<usize> = 3..=20;
const MAX_DOMAINS: usize = 8;
const MAX_SPLIT_DNS: usize = 8;
const MAX_RECORDS: usize = 64;
const MAX_NETWORKS: usize = 64;
const PUBLIC_DNS_COUNT: std::ops::RangeInclusive<usize> = 2..=4;

/// Why the hub cannot be imported at all: its hostname is no valid `spec.hostname`.
pub fn unimportable_hub(instance: &Instance) -> Option<String> {
    let label = instance.hostname_label();
    let valid = NAME_LENGTH.contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    (!valid).then(|| format!("hostname {:?} is not a valid spec.hostname", instance.hostname))
}

/// The spec of a `VpnInstance` adopting `instance` as it is.
pub fn instance_spec(instance: &Instance, adoption: &Adoption) -> Imported<VpnInstanceSpec> {
    let mut losses = Vec::new();
    let name = if NAME_LENGTH.contains(&instance.name.chars().count()) {
        instance.name.clone()
    } else {
        losses.push(format!("name {:?} is not 3 to 20 characters", instance.name));
        instance.name.chars().chain("---".chars()).take(20).collect()
    };
    let public_dns = (PUBLIC_DNS_COUNT.contains(&instance.public_dns.len())
        && instance.public_dns.iter().all(|a| is_ipv4(a)))
    .then(|| instance.public_dns.clone());
    let mut spec = VpnInstanceSpec {
        name,
        hostname: instance.hostname_label().to_owned(),
        region: instance.region.clone(),
        pushed_routes: networks("pushedRoutes", &instance.pushed_routes, &mut losses),
        public_dns,
        domains: bounded("domains", &instance.domains, MAX_DOMAINS, &mut losses),
        split_dns: addresses("splitDns", &instance.split_dns, &mut losses),
        dns_custom: records(instance, &mut losses),
        deletion_policy: adoption.deletion_policy,
        management_policy: ManagementPolicy::Full,
        allowed_peers: None,
        credentials_secret_ref: adoption
            .credentials_secret
            .clone()
            .map(|name| SecretReference { name }),
        credentials_ref: adoption
            .credentials
            .clone()
            .map(|name| CredentialsReference { name }),
        instance_id: Some(instance.id.clone()),
    };
    if let Some(update) = plan::instance_update(&spec, instance)
        && losses.is_empty()
    {
        let fields = plan::instance_changed_fields(&update, instance);
        losses.push(format!("the first update would change {}", fields.join(", ")));
    }
    if !losses.is_empty() {
        spec.management_policy = ManagementPolicy::ObserveOnly;
    }
    Imported { spec, losses }
}

/// The spec of a `VpnPeer` adopting `peer` on the hub `instance_name`, or why the CRD cannot
/// hold the peer at all.
pub fn peer_spec(
    peer: &Peer,
    instance_name: &str,
    adoption: &Adoption,
) -> Result<Imported<VpnPeerSpec>, String> {
    let (kind, protocol) = kind_and_protocol(peer)?;
    let mut losses = Vec::new();
    let (user_id, site_id, route_all, subnets) = match kind {
        PeerKind::Client => (
            Some(owner_id("userId", &peer.user_id)?),
            None,
            Some(peer.route_all),
            None,
        ),
        PeerKind::Site => {
            let subnets = networks("subnets", &peer.subnets, &mut losses);
            if subnets.is_empty() {
                return Err("a site peer without subnets (VpnPeer sites need one)".into());
            }
            (
                None,
                Some(owner_id("siteId", &peer.site_id)?),
                None,
                Some(subnets),
            )
        }
    };
    let mut spec = VpnPeerSpec {
        instance_ref: InstanceReference {
            name: instance_name.to_owned(),
            namespace: None,
        },
        kind,
        protocol,
        user_id,
        route_all,
        site_id,
        subnets,
        deletion_policy: adoption.deletion_policy,
        management_policy: ManagementPolicy::Full,
        profile_secret: None,
        peer_id: Some(peer.id.clone()),
    };
    if plan::peer_update(&spec, peer).is_some() && losses.is_empty() {
        losses.push("the first update would change it".into());
    }
    if !losses.is_empty() {
        spec.management_policy = ManagementPolicy::ObserveOnly;
    }
    Ok(Imported { spec, losses })
}

/// The peer's type and protocol, if a `VpnPeer` can hold them.
fn kind_and_protocol(peer: &Peer) -> Result<(PeerKind, PeerProtocol), String> {
    let kind = match peer.peer_type {
        PeerType::Client => PeerKind::Client,
        PeerType::Site => PeerKind::Site,
        PeerType::Unknown => return Err("its type is neither client nor site".into()),
    };
    let protocol = match peer.protocol {
        Protocol::Wireguard => PeerProtocol::Wireguard,
        Protocol::Openvpn if kind == PeerKind::Client => {
            return Err("a client peer on openvpn (VpnPeer clients use wireguard)".into());
        }
        Protocol::Openvpn => PeerProtocol::Openvpn,
        Protocol::Unknown => return Err("its protocol is neither wireguard nor openvpn".into()),
    };
    Ok((kind, protocol))
}

fn owner_id(field: &str, id: &Option<String>) -> Result<String, String> {
    match id {
        Some(id) if is_uuid(id) => Ok(id.clone()),
        Some(id) => Err(format!("its {field} {id:?} is not a UUID")),
        None => Err(format!("it has no {field}")),
    }
}

fn is_uuid(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok_and(|_| id.len() == 36)
}

fn is_ipv4(address: &str) -> bool {
    address.parse::<Ipv4Addr>().is_ok()
}

/// The entries the CRD accepts as networks (IPv4, no host bits), at most 64.
fn networks(field: &str, held: &[String], losses: &mut Vec<String>) -> Vec<String> {
    let mut kept = Vec::new();
    for entry in held {
        match cidr::problem(entry) {
            Some(why) => losses.push(format!("{field}: {why}")),
            None => kept.push(entry.clone()),
        }
    }
    bounded(field, &kept, MAX_NETWORKS, losses)
}

fn addresses(field: &str, held: &[String], losses: &mut Vec<String>) -> Vec<String> {
    let mut kept = Vec::new();
    for entry in held {
        if is_ipv4(entry) {
            kept.push(entry.clone());
        } else {
            losses.push(format!("{field}: {entry:?} is not an IPv4 address"));
        }
    }
    bounded(field, &kept, MAX_SPLIT_DNS, losses)
}

fn bounded(field: &str, held: &[String], max: usize, losses: &mut Vec<String>) -> Vec<String> {
    if held.len() > max {
        losses.push(format!("{field}: {} entries, the CRD holds {max}", held.len()));
    }
    held.iter().take(max).cloned().collect()
}

fn records(instance: &Instance, losses: &mut Vec<String>) -> Vec<DnsRecord> {
    let mut kept = Vec::new();
    for record in &instance.dns_custom {
        let kind = match &record.record_type {
            DnsRecordType::A if is_ipv4(&record.value) => DnsRecordKind::A,
            DnsRecordType::Cname => DnsRecordKind::Cname,
            DnsRecordType::A => {
                losses.push(format!(
                    "dnsCustom: A record {:?} has a value that is not an IPv4 address",
                    record.name
                ));
                continue;
            }
            DnsRecordType::Other(other) => {
                losses.push(format!(
                    "dnsCustom: {other} record {:?} (the CRD holds A and CNAME)",
                    record.name
                ));
                continue;
            }
        };
        kept.push(DnsRecord {
            name: record.name.clone(),
            kind,
            value: record.value.clone(),
        });
    }
    if kept.len() > MAX_RECORDS {
        losses.push(format!(
            "dnsCustom: {} records, the CRD holds {MAX_RECORDS}",
            kept.len()
        ));
        kept.truncate(MAX_RECORDS);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::altostrat::model::DnsCustomRecord;

    fn hub() -> Instance {
        Instance {
            id: "6f1c2a9e-1d2b-4c3d-8e4f-5a6b7c8d9e0f".into(),
            name: "Corp hub".into(),
            region: "fra".into(),
            hostname: "corp-hub.vpn.altostr.at".into(),
            pushed_routes: vec!["10.0.0.0/8".into(), "192.168.0.0/16".into()],
            public_dns: vec!["9.9.9.9".into(), "1.1.1.1".into()],
            domains: vec!["corp.internal".into()],
            split_dns: vec!["10.0.0.53".into()],
            dns_custom: vec![DnsCustomRecord {
                name: "fs.corp.internal".into(),
                record_type: DnsRecordType::Cname,
                value: "files.corp.internal".into(),
            }],
            ..Instance::default()
        }
    }

    fn client() -> Peer {
        Peer {
            id: "0b5a3c1d-2e4f-4a6b-8c9d-0e1f2a3b4c5d".into(),
            peer_type: PeerType::Client,
            user_id: Some("a1b2c3d4-e5f6-7890-1234-567890abcdef".into()),
            route_all: true,
            ..Peer::default()
        }
    }

    fn site() -> Peer {
        Peer {
            id: "1c6b4d2e-3f50-4b7c-9d0e-1f2a3b4c5d6e".into(),
            peer_type: PeerType::Site,
            protocol: Protocol::Openvpn,
            site_id: Some("c3d5e2a0-88c9-4f7f-9f7b-6a1e2b4c5d6e".into()),
            subnets: vec!["192.168.100.0/24".into()],
            ..Peer::default()
        }
    }

    #[test]
    fn an_imported_hub_plans_nothing_against_the_hub_it_was_read_from() {
        let held = hub();
        let imported = instance_spec(&held, &Adoption::default());
        assert_eq!(imported.losses, Vec::<String>::new());
        assert_eq!(imported.spec.management_policy, ManagementPolicy::Full);
        assert_eq!(imported.spec.instance_id.as_deref(), Some(held.id.as_str()));
        assert_eq!(imported.spec.hostname, "corp-hub");
        assert_eq!(plan::instance_update(&imported.spec, &held), None);
        assert_eq!(imported.spec.deletion_policy, None, "adopted: Orphan by default");
    }

    #[test]
    fn imported_peers_plan_nothing_against_the_peers_they_were_read_from() {
        for held in [client(), site()] {
            let imported = peer_spec(&held, "corp-hub", &Adoption::default()).unwrap();
            assert_eq!(imported.losses, Vec::<String>::new());
            assert_eq!(imported.spec.management_policy, ManagementPolicy::Full);
            assert_eq!(imported.spec.peer_id.as_deref(), Some(held.id.as_str()));
            assert_eq!(plan::peer_update(&imported.spec, &held), None);
        }
    }

    #[test]
    fn a_single_or_a_fifth_resolver_is_left_to_altostrat() {
        let mut held = hub();
        held.public_dns = vec!["9.9.9.9".into()];
        let imported = instance_spec(&held, &Adoption::default());
        assert_eq!((imported.spec.public_dns, imported.losses.len()), (None, 0));
        assert_eq!(
            plan::instance_update(&instance_spec(&held, &Adoption::default()).spec, &held),
            None
        );
    }

    #[test]
    fn what_the_crd_cannot_hold_is_reported_and_imported_observe_only() {
        let mut held = hub();
        held.pushed_routes.push("10.1.2.3/8".into());
        held.dns_custom.push(DnsCustomRecord {
            name: "v6.corp.internal".into(),
            record_type: DnsRecordType::Other("AAAA".into()),
            value: "fd00::1".into(),
        });
        let imported = instance_spec(&held, &Adoption::default());
        assert_eq!(imported.spec.management_policy, ManagementPolicy::ObserveOnly);
        assert_eq!(imported.losses.len(), 2, "{:?}", imported.losses);
        assert!(imported.losses[0].contains("host bits"), "{:?}", imported.losses);
        assert!(imported.losses[1].contains("AAAA"), "{:?}", imported.losses);
        assert_eq!(imported.spec.pushed_routes, hub().pushed_routes);
    }

    #[test]
    fn peers_the_crd_cannot_hold_are_refused_with_the_reason() {
        let mut unknown = client();
        unknown.peer_type = PeerType::Unknown;
        let mut openvpn_client = client();
        openvpn_client.protocol = Protocol::Openvpn;
        let mut bare_site = site();
        bare_site.subnets.clear();
        let mut no_user = client();
        no_user.user_id = None;
        for (peer, why) in [
            (unknown, "neither client nor site"),
            (openvpn_client, "openvpn"),
            (bare_site, "without subnets"),
            (no_user, "no userId"),
        ] {
            let err = peer_spec(&peer, "hub", &Adoption::default()).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn the_adoption_flags_reach_the_spec() {
        let adoption = Adoption {
            deletion_policy: Some(DeletionPolicy::Delete),
            credentials_secret: Some("altostrat".into()),
            credentials: Some("shared".into()),
        };
        let hub = instance_spec(&hub(), &adoption).spec;
        assert_eq!(hub.deletion_policy, Some(DeletionPolicy::Delete));
        assert_eq!(hub.credentials_secret_ref.unwrap().name, "altostrat");
        assert_eq!(hub.credentials_ref.unwrap().name, "shared");
        let peer = peer_spec(&client(), "hub", &adoption).unwrap().spec;
        assert_eq!(peer.deletion_policy, Some(DeletionPolicy::Delete));
        let mut odd = Instance {
            hostname: "Bad_Label.vpn.altostr.at".into(),
            ..Instance::default()
        };
        assert!(unimportable_hub(&odd).is_some());
        odd.hostname = "fine.vpn.altostr.at".into();
        assert!(unimportable_hub(&odd).is_none());
    }
}
