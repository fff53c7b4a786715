//! Pure: the manifests of the hubs read, one file per hub, byte for byte the same for the same
//! Altostrat objects (sorted, no timestamps, names derived from hostnames and peer owners).

use std::collections::BTreeSet;

use kube::api::ObjectMeta;

use super::spec::{self, Adoption, Imported};
use crate::altostrat::model::{Instance, Peer, PeerType};
use crate::crd::{VpnInstance, VpnPeer};

/// A hub as read from Altostrat, with its peers.
#[derive(Clone, Debug, Default)]
pub struct Hub {
    pub instance: Instance,
    pub peers: Vec<Peer>,
}

/// One hub's manifests: `file` (`<hub>.yaml`) holds a `VpnInstance` and its `VpnPeer`s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    pub file: String,
    pub yaml: String,
}

/// Everything an import writes: the files, and what the CRDs cannot hold (also written into
/// the files as comments), one line each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifests {
    pub files: Vec<ManifestFile>,
    pub findings: Vec<String>,
}

impl Manifests {
    /// Every file as one multi-document stream.
    pub fn joined(&self) -> String {
        self.files.iter().map(|f| f.yaml.as_str()).collect()
    }
}

/// The manifests of `hubs` for `namespace`.
pub fn manifests(
    hubs: &[Hub],
    namespace: &str,
    adoption: &Adoption,
) -> Result<Manifests, serde_saphyr::SerializeError> {
    let mut hubs: Vec<&Hub> = hubs.iter().collect();
    hubs.sort_by(|a, b| {
        (a.instance.hostname_label(), &a.instance.id).cmp(&(b.instance.hostname_label(), &b.instance.id))
    });
    let mut out = Manifests::default();
    let mut importable = Vec::new();
    for hub in hubs {
        match spec::unimportable_hub(&hub.instance) {
            Some(why) => out
                .findings
                .push(format!("hub {}: not imported: {why}", hub.instance.id)),
            None => importable.push(hub),
        }
    }
    let names = unique_names(importable.iter().map(|h| dns_label(h.instance.hostname_label())));
    for (hub, name) in importable.into_iter().zip(names) {
        let yaml = hub_file(hub, &name, namespace, adoption, &mut out.findings)?;
        out.files.push(ManifestFile {
            file: format!("{name}.yaml"),
            yaml,
        });
    }
    Ok(out)
}

/// The file of one hub: its `VpnInstance`, then its peers in a stable order.
fn hub_file(
    hub: &Hub,
    name: &str,
    namespace: &str,
    adoption: &Adoption,
    findings: &mut Vec<String>,
) -> Result<String, serde_saphyr::SerializeError> {
    let subject = format!("VpnInstance {name} (hub {})", hub.instance.id);
    let Imported { spec, losses } = spec::instance_spec(&hub.instance, adoption);
    let mut instance = VpnInstance::new(name, spec);
    instance.metadata = metadata(name, namespace);
    let mut yaml = document(&subject, &losses, &instance, findings)?;
    let mut peers: Vec<&Peer> = hub.peers.iter().collect();
    peers.sort_by(|a, b| peer_order(a).cmp(&peer_order(b)));
    let mut imported = Vec::new();
    for peer in peers {
        match spec::peer_spec(peer, name, adoption) {
            Ok(spec) => imported.push((peer, spec)),
            Err(why) => {
                let line = format!("{subject}: peer {} not imported: {why}", peer.id);
                yaml.push_str(&format!("# {line}\n"));
                findings.push(line);
            }
        }
    }
    let names = unique_names(imported.iter().map(|(peer, _)| peer_name(name, peer)));
    for ((peer, Imported { spec, losses }), peer_name) in imported.into_iter().zip(names) {
        let mut resource = VpnPeer::new(&peer_name, spec);
        resource.metadata = metadata(&peer_name, namespace);
        let subject = format!("VpnPeer {peer_name} (peer {})", peer.id);
        yaml.push_str(&document(&subject, &losses, &resource, findings)?);
    }
    Ok(yaml)
}

fn metadata(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..ObjectMeta::default()
    }
}

/// One YAML document, preceded by a comment line for each loss (also added to `findings`).
fn document<T: serde::Serialize>(
    subject: &str,
    losses: &[String],
    object: &T,
    findings: &mut Vec<String>,
) -> Result<String, serde_saphyr::SerializeError> {
    let mut text = String::from("---\n");
    for loss in losses {
        let line = format!("{subject}: {loss}");
        text.push_str(&format!("# {line}\n"));
        findings.push(line);
    }
    if !losses.is_empty() {
        let line = format!("{subject}: imported ObserveOnly (it writes nothing)");
        text.push_str(&format!("# {line}\n"));
        findings.push(line);
    }
    text.push_str(&serde_saphyr::to_string(object)?);
    Ok(text)
}

/// Peers sorted by what names them (type, then user or site), then by id.
fn peer_order(peer: &Peer) -> (u8, String, &str) {
    let kind = match peer.peer_type {
        PeerType::Client => 0,
        PeerType::Site => 1,
        PeerType::Unknown => 2,
    };
    let owner = peer.user_id.as_ref().or(peer.site_id.as_ref());
    (
        kind,
        owner.cloned().unwrap_or_default().to_ascii_lowercase(),
        &peer.id,
    )
}

/// `<hub>-<type>-<first 8 characters of the user or site id>`: stable, and readable enough to
/// tell a hub's peers apart.
fn peer_name(hub: &str, peer: &Peer) -> String {
    let owner = peer.user_id.as_ref().or(peer.site_id.as_ref());
    let owner: String = owner.map(|o| o.chars().take(8).collect()).unwrap_or_default();
    dns_label(&format!("{hub}-{}-{owner}", peer.peer_type.as_str()))
}

/// `text` as a DNS-1123 label: lowercase letters, digits and inner hyphens, at most 63
/// characters (anything else becomes a hyphen; an empty result becomes `imported`).
pub fn dns_label(text: &str) -> String {
    let mapped: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut label = String::new();
    for c in mapped.chars() {
        if !(c == '-' && (label.is_empty() || label.ends_with('-'))) {
            label.push(c);
        }
    }
    label.truncate(MAX_LABEL - SUFFIX_ROOM);
    let label = label.trim_end_matches('-');
    if label.is_empty() {
        "imported".into()
    } else {
        label.to_owned()
    }
}

const MAX_LABEL: usize = 63;
/// Room kept for a `-<n>` suffix that tells colliding names apart.
const SUFFIX_ROOM: usize = 4;

/// The names in order, each taken once: the second of a name becomes `<name>-2`, the third
/// `<name>-3`, skipping any suffixed name already taken.
pub fn unique_names(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let names: Vec<String> = names.into_iter().collect();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let wanted: BTreeSet<&String> = names.iter().collect();
    names
        .iter()
        .map(|name| {
            let mut candidate = name.clone();
            let mut n = 1;
            while taken.contains(&candidate) || (n > 1 && wanted.contains(&candidate)) {
                n += 1;
                candidate = format!("{name}-{n}");
            }
            taken.insert(candidate.clone());
            candidate
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, hostname: &str) -> Instance {
        Instance {
            id: id.into(),
            name: format!("Hub {hostname}"),
            region: "sjc".into(),
            hostname: format!("{hostname}.vpn.altostr.at"),
            public_dns: vec!["9.9.9.9".into(), "1.1.1.1".into()],
            ..Instance::default()
        }
    }

    fn peer(id: &str, kind: PeerType, owner: &str) -> Peer {
        Peer {
            id: id.into(),
            peer_type: kind,
            user_id: (kind != PeerType::Site).then(|| owner.into()),
            site_id: (kind == PeerType::Site).then(|| owner.into()),
            subnets: if kind == PeerType::Site {
                vec!["10.9.0.0/16".into()]
            } else {
                vec![]
            },
            ..Peer::default()
        }
    }

    const USER: &str = "a1b2c3d4-e5f6-7890-1234-567890abcdef";
    const SITE: &str = "c3d5e2a0-88c9-4f7f-9f7b-6a1e2b4c5d6e";

    fn hubs() -> Vec<Hub> {
        vec![
            Hub {
                instance: instance("00000000-0000-4000-8000-000000000002", "zeta"),
                peers: vec![
                    peer("00000000-0000-4000-8000-0000000000b2", PeerType::Site, SITE),
                    peer("00000000-0000-4000-8000-0000000000b1", PeerType::Client, USER),
                    peer("00000000-0000-4000-8000-0000000000b3", PeerType::Client, USER),
                    peer("00000000-0000-4000-8000-0000000000b4", PeerType::Unknown, USER),
                ],
            },
            Hub {
                instance: instance("00000000-0000-4000-8000-000000000001", "alpha"),
                peers: vec![],
            },
        ]
    }

    #[test]
    fn manifests_are_sorted_named_and_the_same_whatever_the_order_read() {
        let adoption = Adoption::default();
        let first = manifests(&hubs(), "net", &adoption).unwrap();
        let mut reversed = hubs();
        reversed.reverse();
        reversed[0].peers.reverse();
        assert_eq!(manifests(&reversed, "net", &adoption).unwrap(), first);
        let files: Vec<&str> = first.files.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(files, ["alpha.yaml", "zeta.yaml"]);
        let zeta = &first.files[1].yaml;
        let names: Vec<&str> = zeta.lines().filter_map(|l| l.strip_prefix("  name: ")).collect();
        assert_eq!(
            names,
            [
                "zeta",
                "Hub zeta",
                "zeta-client-a1b2c3d4",
                "zeta-client-a1b2c3d4-2",
                "zeta-site-c3d5e2a0"
            ],
            "{zeta}"
        );
        assert_eq!(first.findings.len(), 1, "{:?}", first.findings);
        assert!(first.findings[0].contains("0000000000b4 not imported"));
        assert!(zeta.contains("# VpnInstance zeta (hub 00000000-0000-4000-8000-000000000002): peer"));
    }

    #[test]
    fn every_document_parses_back_to_the_resource_it_was_made_from() {
        let rendered = manifests(&hubs(), "net", &Adoption::default()).unwrap().joined();
        let documents: Vec<&str> = rendered.split("---\n").filter(|d| !d.trim().is_empty()).collect();
        assert_eq!(documents.len(), 5);
        let hub: VpnInstance = serde_saphyr::from_str(documents[0]).unwrap();
        assert_eq!(hub.metadata.namespace.as_deref(), Some("net"));
        assert_eq!(
            hub.spec.instance_id.as_deref(),
            Some("00000000-0000-4000-8000-000000000001")
        );
        assert!(hub.status.is_none());
        let peer: VpnPeer = serde_saphyr::from_str(documents[2]).unwrap();
        assert_eq!(peer.spec.instance_ref.name, "zeta");
        assert!(!rendered.contains("status"), "{rendered}");
    }

    #[test]
    fn names_are_dns_labels_and_collisions_get_a_suffix() {
        assert_eq!(dns_label("Corp_Hub--1."), "corp-hub-1");
        assert_eq!(dns_label("---"), "imported");
        assert!(dns_label(&"x".repeat(100)).len() <= MAX_LABEL - SUFFIX_ROOM);
        let names = unique_names(["a", "a", "a-2", "b", "a"].map(String::from));
        assert_eq!(names, ["a", "a-3", "a-2", "b", "a-4"]);
    }
}
