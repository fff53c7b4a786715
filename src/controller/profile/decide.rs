//! What the profile delivery of a peer does next, from what it observed (pure).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;

use crate::altostrat::model::{ClientConfiguration, Instance, Peer, PeerType, Protocol};

/// Annotation on a profile Secret: the digest of the profile's inputs (see [`inputs_digest`])
/// it was fetched for.
pub const INPUTS_ANNOTATION: &str = "vpn.altostrat.io/profile-inputs";
/// Annotation on a profile Secret: the digest of its data as written (see [`profile_hash`]),
/// so an edit of the data out of band is noticed.
pub const HASH_ANNOTATION: &str = "vpn.altostrat.io/profile-hash";
/// Label on a profile Secret: the uid of the VpnPeer it belongs to (an admission policy may
/// let the operator write only Secrets carrying it).
pub const PEER_UID_LABEL: &str = "vpn.altostrat.io/peer-uid";

/// Why a peer has no profile to deliver, if it has none.
pub(crate) fn unavailable(peer: &Peer) -> Option<String> {
    match peer.peer_type {
        PeerType::Client => None,
        PeerType::Site => Some("Altostrat issues downloadable profiles (share tokens) to client peers only; a site connects through its SDX gateway".into()),
        PeerType::Unknown => Some("Altostrat reports a peer type the operator does not know; it issues profiles to client peers".into()),
    }
}

/// Everything Altostrat plausibly builds a client profile from: the peer and the hub's
/// endpoint, routes and DNS. The share token is not an input (it may change on every read).
#[derive(Serialize)]
struct ProfileInputs<'a> {
    peer: &'a str,
    protocol: &'a Protocol,
    route_all: bool,
    subnets: &'a [String],
    hostname: &'a str,
    pushed_routes: &'a [String],
    public_dns: &'a [String],
    split_dns: &'a [String],
    domains: &'a [String],
    dns_custom: &'a [crate::altostrat::model::DnsCustomRecord],
}

/// The digest of the profile's inputs, or why they are not settled: an instance still
/// applying changes may serve a profile older than what it shows, and a profile fetched then
/// would be recorded as current.
pub(crate) fn inputs_digest(peer: &Peer, instance: &Instance) -> Result<String, String> {
    if !instance.is_provisioned() {
        return Err(format!("instance {} is still being provisioned", instance.id));
    }
    if !instance.status.is_empty() {
        let pending = instance.status.join(", ");
        return Err(format!(
            "instance {} is still applying changes ({pending})",
            instance.id
        ));
    }
    let inputs = ProfileInputs {
        peer: &peer.id,
        protocol: &peer.protocol,
        route_all: peer.route_all,
        subnets: &peer.subnets,
        hostname: &instance.hostname,
        pushed_routes: &instance.pushed_routes,
        public_dns: &instance.public_dns,
        split_dns: &instance.split_dns,
        domains: &instance.domains,
        dns_custom: &instance.dns_custom,
    };
    Ok(sha256_prefix(&serde_json::to_vec(&inputs).unwrap_or_default()))
}

/// The Secret found under the wanted name, as far as the delivery cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SecretSeen {
    Missing,
    /// Someone else's (no controller reference to this peer): never touched.
    Foreign,
    /// This peer's, fetched for `inputs`, holding data that hashes to `data_hash` and written
    /// with `written_hash`.
    Ours {
        inputs: Option<String>,
        written_hash: Option<String>,
        data_hash: String,
    },
}

impl SecretSeen {
    pub(crate) fn is_ours(&self) -> bool {
        matches!(self, Self::Ours { .. })
    }
}

/// Judges a Secret: it is this peer's only if its controller reference names the peer's uid
/// (a label or a name can be copied; a reference to this peer's uid is not made by accident)
/// and it still carries the peer-uid label (without it, an admission policy may refuse the
/// operator's writes: better a clear conflict than a write refused at every look).
pub(crate) fn judge(secret: Option<&Secret>, peer_uid: &str) -> SecretSeen {
    let Some(secret) = secret else {
        return SecretSeen::Missing;
    };
    let meta = &secret.metadata;
    let owned = meta
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == peer_uid && r.kind == "VpnPeer");
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(PEER_UID_LABEL))
        .is_some_and(|uid| uid == peer_uid);
    if !(owned && labelled) {
        return SecretSeen::Foreign;
    }
    let annotation = |key: &str| {
        secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key).cloned())
    };
    SecretSeen::Ours {
        inputs: annotation(INPUTS_ANNOTATION),
        written_hash: annotation(HASH_ANNOTATION),
        data_hash: profile_hash(secret.data.as_ref().unwrap_or(&BTreeMap::new())),
    }
}

/// What to do with the Secret of a peer whose profile inputs are `inputs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// It holds the profile of these inputs, unchanged since written: nothing to do.
    Current { profile_hash: String },
    /// Someone else's Secret holds the name.
    Conflict,
    /// Fetch the profile and write it; `why` is said in the event.
    Fetch { why: &'static str },
}

pub(crate) fn refresh(seen: &SecretSeen, inputs: &str) -> Refresh {
    match seen {
        SecretSeen::Foreign => Refresh::Conflict,
        SecretSeen::Missing => Refresh::Fetch {
            why: "the Secret was missing",
        },
        SecretSeen::Ours {
            inputs: written_for,
            written_hash,
            data_hash,
        } => {
            if written_hash.as_deref() != Some(data_hash) {
                Refresh::Fetch {
                    why: "the Secret's data was changed",
                }
            } else if written_for.as_deref() != Some(inputs) {
                Refresh::Fetch {
                    why: "the profile's inputs changed",
                }
            } else {
                Refresh::Current {
                    profile_hash: data_hash.clone(),
                }
            }
        }
    }
}

/// The data of a profile Secret: the profile under its conventional key, and the hub's
/// `endpoint` and the `routes` it sends through the tunnel when the profile names them.
pub(crate) fn contents(
    protocol: Protocol,
    configuration: &ClientConfiguration,
) -> Result<BTreeMap<String, ByteString>, String> {
    let text = profile_text(configuration)?;
    let (key, endpoint, routes) = match protocol {
        Protocol::Wireguard | Protocol::Unknown if text.contains("[Interface]") => (
            "wg0.conf",
            wireguard_value(&text, "Endpoint"),
            wireguard_routes(&text),
        ),
        Protocol::Openvpn if text.lines().any(|l| l.trim_start().starts_with("remote ")) => {
            ("client.ovpn", openvpn_endpoint(&text), openvpn_routes(&text))
        }
        _ => {
            return Err(format!(
                "Altostrat answered a profile that is not a {protocol:?} configuration"
            ));
        }
    };
    let mut data = BTreeMap::from([(key.to_owned(), ByteString(text.into_bytes()))]);
    data.extend(endpoint.map(|e| ("endpoint".to_owned(), ByteString(e.into_bytes()))));
    data.extend(routes.map(|r| ("routes".to_owned(), ByteString(r.into_bytes()))));
    Ok(data)
}

/// The profile in a configuration: plain text, or a JSON object carrying it as a string. The
/// JSON shape is undocumented: the usual names are accepted, anything else is refused rather
/// than guessed at.
fn profile_text(configuration: &ClientConfiguration) -> Result<String, String> {
    match configuration {
        ClientConfiguration::Text(text) if !text.trim().is_empty() => Ok(text.clone()),
        ClientConfiguration::Text(_) => Err("Altostrat answered an empty profile".into()),
        ClientConfiguration::Json(json) => ["config", "configuration", "profile", "conf"]
            .iter()
            .find_map(|key| json.get(key).and_then(|v| v.as_str()))
            .filter(|text| !text.trim().is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                "Altostrat answered the profile as JSON without a config, configuration or profile text field"
                    .into()
            }),
    }
}

/// The value of the first `key = value` line of a WireGuard configuration.
fn wireguard_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().to_owned())
    })
}

fn wireguard_routes(text: &str) -> Option<String> {
    let allowed = wireguard_value(text, "AllowedIPs")?;
    let routes: Vec<&str> = allowed
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    (!routes.is_empty()).then(|| routes.join(","))
}

fn openvpn_endpoint(text: &str) -> Option<String> {
    let remote = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("remote "))?;
    let mut words = remote.split_whitespace();
    let host = words.next()?;
    Some(match words.next() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// `route NETWORK NETMASK` lines as CIDRs; `redirect-gateway` sends everything.
fn openvpn_routes(text: &str) -> Option<String> {
    if text
        .lines()
        .any(|l| l.trim_start().starts_with("redirect-gateway"))
    {
        return Some("0.0.0.0/0".into());
    }
    let routes: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("route "))
        .filter_map(|r| {
            let mut words = r.split_whitespace();
            let network: std::net::Ipv4Addr = words.next()?.parse().ok()?;
            let mask: std::net::Ipv4Addr = words.next().unwrap_or("255.255.255.255").parse().ok()?;
            Some(format!("{network}/{}", u32::from(mask).count_ones()))
        })
        .collect();
    (!routes.is_empty()).then(|| routes.join(","))
}

/// SHA-256 of the data (keys and values, in key order), first 16 hex digits.
pub(crate) fn profile_hash(data: &BTreeMap<String, ByteString>) -> String {
    let mut bytes = Vec::new();
    for (key, value) in data {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&value.0);
        bytes.push(0);
    }
    sha256_prefix(&bytes)
}

fn sha256_prefix(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}
