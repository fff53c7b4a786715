//! Wire models of the Altostrat Managed VPN API (`api/openapi.yaml`).
//!
//! These mirror the JSON the service speaks (snake_case) and are deliberately separate from
//! the CRD types: the API and the Kubernetes schema evolve on their own schedules. Response
//! models default every field because the published schema marks none of them required.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `Instance`: a managed VPN hub.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub region: String,
    /// Fully qualified name (`<label>.vpn.altostr.at`); on create only the label is sent.
    pub hostname: String,
    pub configured: bool,
    pub rsa_ready: bool,
    pub diffie_hellman_ready: bool,
    pub server_ready: bool,
    /// Pending configuration changes; empty means converged.
    pub status: Vec<String>,
    pub pushed_routes: Vec<String>,
    pub public_dns: Vec<String>,
    pub split_dns: Vec<String>,
    pub domains: Vec<String>,
    pub dns_custom: Vec<DnsCustomRecord>,
    pub firewall: Vec<FirewallRule>,
    pub created_at: Option<String>,
}

impl Instance {
    /// The DNS label the instance was created with: the FQDN's first label.
    pub fn hostname_label(&self) -> &str {
        self.hostname.split('.').next().unwrap_or_default()
    }

    /// All four readiness flags set.
    pub fn is_provisioned(&self) -> bool {
        self.configured && self.rsa_ready && self.diffie_hellman_ready && self.server_ready
    }
}

/// `DnsCustomRecord`: a record served by the instance's DNS proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsCustomRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: DnsRecordType,
    pub value: String,
}

/// Record types the API accepts in `dns_custom`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DnsRecordType {
    #[default]
    A,
    #[serde(rename = "CNAME")]
    Cname,
}

/// `FirewallRule`: read-only in the current API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FirewallRule {
    pub name: String,
    pub protocol: String,
    pub port: Option<String>,
    pub source: String,
    pub destination: String,
}

/// Body of `POST /vpn/instances`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCreate {
    pub name: String,
    /// A single DNS label, not an FQDN.
    pub hostname: String,
    pub region: String,
}

/// Body of `PUT /vpn/instances/{id}`. The API treats it as a replace, so the operator always
/// sends every field (see `api/NOTES.md`, "Update is full-replace").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceUpdate {
    pub name: String,
    pub pushed_routes: Vec<String>,
    pub public_dns: Vec<String>,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub split_dns: Vec<String>,
    #[serde(default)]
    pub dns_custom: Vec<DnsCustomRecord>,
}

/// Peer kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerType {
    #[default]
    Client,
    Site,
}

impl PeerType {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerType::Client => "client",
            PeerType::Site => "site",
        }
    }
}

/// Tunnel protocols.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Wireguard,
    Openvpn,
}

/// `Peer`: a client (user) or site (router) attached to an instance.
///
/// `Debug` is written by hand so that the share token never reaches a log line.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Peer {
    pub id: String,
    #[serde(rename = "type")]
    pub peer_type: PeerType,
    pub user_id: Option<String>,
    pub site_id: Option<String>,
    pub subnets: Vec<String>,
    pub route_all: bool,
    pub protocol: Protocol,
    pub connected: bool,
    pub connected_from: Option<String>,
    /// Short-lived share token for the client configuration download. Secret: never logged.
    pub token: Option<String>,
    pub token_ttl: Option<i64>,
    pub created_at: Option<String>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("peer_type", &self.peer_type)
            .field("user_id", &self.user_id)
            .field("site_id", &self.site_id)
            .field("subnets", &self.subnets)
            .field("route_all", &self.route_all)
            .field("protocol", &self.protocol)
            .field("connected", &self.connected)
            .field("connected_from", &self.connected_from)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_ttl", &self.token_ttl)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Body of `POST /vpn/instances/{id}/peers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCreate {
    #[serde(rename = "type")]
    pub peer_type: PeerType,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_all: Option<bool>,
}

/// Body of `PUT /vpn/instances/{id}/peers/{peerId}`: patch-like, no field required.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_all: Option<bool>,
}

/// `RegionResponse`: continent -> country -> entry with `cities` (region code -> label).
pub type RegionResponse = BTreeMap<String, BTreeMap<String, Country>>;

/// One country of the region tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Country {
    pub iso: String,
    pub flag_svg: String,
    pub flag: String,
    pub cities: BTreeMap<String, String>,
}

/// Flattens the region tree into the set of valid region codes.
pub fn region_codes(regions: &RegionResponse) -> Vec<String> {
    let mut codes: Vec<String> = regions
        .values()
        .flat_map(|countries| countries.values())
        .flat_map(|country| country.cities.keys().cloned())
        .collect();
    codes.sort();
    codes.dedup();
    codes
}

/// `ErrorResponse`: the API's error body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorResponse {
    #[serde(rename = "type")]
    pub error_type: String,
    pub code: String,
    pub message: String,
    pub doc_url: String,
}

/// Body of `GET /vpn/client`: JSON or plain text depending on the response content type.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientConfiguration {
    Json(serde_json::Value),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_decodes_documented_example_and_tolerates_missing_fields() {
        let json = r#"{"id":"d290f1ee-6c54-4b01-90e6-d701748f0851","name":"Primary",
            "hostname":"my-vpn-gateway.vpn.altostr.at","configured":true,"rsa_ready":true,
            "diffie_hellman_ready":true,"server_ready":true,"status":["peer-created"],
            "dns_custom":[{"name":"fs.corp","type":"CNAME","value":"x.corp"}],
            "firewall":[{"name":"Allow ICMP","protocol":"icmp","port":null,"source":"0.0.0.0/0","destination":"0.0.0.0/0"}]}"#;
        let instance: Instance = serde_json::from_str(json).unwrap();
        assert_eq!(instance.hostname_label(), "my-vpn-gateway");
        assert!(instance.is_provisioned());
        assert_eq!(instance.dns_custom[0].record_type, DnsRecordType::Cname);
        assert!(instance.public_dns.is_empty());
    }

    #[test]
    fn peer_create_omits_fields_of_the_other_peer_type() {
        let body = PeerCreate {
            peer_type: PeerType::Client,
            protocol: Protocol::Wireguard,
            site_id: None,
            user_id: Some("u".into()),
            subnets: None,
            route_all: Some(true),
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"client","protocol":"wireguard","user_id":"u","route_all":true})
        );
    }

    #[test]
    fn region_codes_flatten_and_sort_the_tree() {
        let json = r#"{"North America":{"United States":{"iso":"US","cities":{"sjc":"Silicon Valley","lax":"Los Angeles"}}},
                       "Europe":{"Germany":{"iso":"DE","cities":{"fra":"Frankfurt"}}}}"#;
        let regions: RegionResponse = serde_json::from_str(json).unwrap();
        assert_eq!(region_codes(&regions), vec!["fra", "lax", "sjc"]);
    }
}
