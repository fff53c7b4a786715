//! Wire models of the Altostrat Managed VPN API (`api/openapi.yaml`).
//!
//! These mirror the JSON the service speaks (snake_case) and are deliberately separate from
//! the CRD types: the API and the Kubernetes schema evolve on their own schedules. Response
//! models default every field because the published schema marks none of them required.
//!
//! Decoding is tolerant, so that one unexpected value never fails a whole response: unknown
//! fields are ignored, `null` reads as the field's default, booleans may arrive as `0`/`1`,
//! unknown enum values are kept (`DnsRecordType::Other`) or read as `Unknown` (peer type and
//! protocol), and `status` items that are not strings are kept as their JSON text.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What every Altostrat object has: its id, and when Altostrat made it.
pub trait Identified {
    fn id(&self) -> &str;
    /// As Altostrat writes it (RFC 3339), if it says.
    fn created_at(&self) -> Option<&str>;
}

macro_rules! identified {
    ($object:ty) => {
        impl Identified for $object {
            fn id(&self) -> &str {
                &self.id
            }
            fn created_at(&self) -> Option<&str> {
                self.created_at.as_deref()
            }
        }
    };
}

identified!(Instance);
identified!(Peer);

/// `Instance`: a managed VPN hub.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Instance {
    #[serde(deserialize_with = "tolerant::string")]
    pub id: String,
    #[serde(deserialize_with = "tolerant::string")]
    pub name: String,
    #[serde(deserialize_with = "tolerant::string")]
    pub region: String,
    /// Fully qualified name (`<label>.vpn.altostr.at`); on create only the label is sent.
    #[serde(deserialize_with = "tolerant::string")]
    pub hostname: String,
    #[serde(deserialize_with = "tolerant::boolean")]
    pub configured: bool,
    #[serde(deserialize_with = "tolerant::boolean")]
    pub rsa_ready: bool,
    #[serde(deserialize_with = "tolerant::boolean")]
    pub diffie_hellman_ready: bool,
    #[serde(deserialize_with = "tolerant::boolean")]
    pub server_ready: bool,
    /// Pending configuration changes; empty means converged. Any item is accepted (the older
    /// docs say `any[]`); items that are not strings are kept as their JSON text.
    #[serde(deserialize_with = "tolerant::string_list")]
    pub status: Vec<String>,
    #[serde(deserialize_with = "tolerant::string_list")]
    pub pushed_routes: Vec<String>,
    #[serde(deserialize_with = "tolerant::string_list")]
    pub public_dns: Vec<String>,
    #[serde(deserialize_with = "tolerant::string_list")]
    pub split_dns: Vec<String>,
    #[serde(deserialize_with = "tolerant::string_list")]
    pub domains: Vec<String>,
    #[serde(deserialize_with = "tolerant::list")]
    pub dns_custom: Vec<DnsCustomRecord>,
    #[serde(deserialize_with = "tolerant::list")]
    pub firewall: Vec<FirewallRule>,
    #[serde(deserialize_with = "tolerant::opt_string")]
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
#[serde(default)]
pub struct DnsCustomRecord {
    #[serde(deserialize_with = "tolerant::string")]
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: DnsRecordType,
    #[serde(deserialize_with = "tolerant::string")]
    pub value: String,
}

/// Record types of `dns_custom`. The API documents `A` and `CNAME`; any other type Altostrat
/// reports (e.g. `AAAA`) is kept as it was received, so it shows as drift rather than failing
/// the decode of the whole instance. Matching is case-insensitive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "tolerant::Scalar", into = "String")]
pub enum DnsRecordType {
    #[default]
    A,
    Cname,
    /// A type the API does not document, as received.
    Other(String),
}

impl From<tolerant::Scalar> for DnsRecordType {
    fn from(value: tolerant::Scalar) -> Self {
        let value = value.0;
        match value.trim().to_ascii_uppercase().as_str() {
            "A" => Self::A,
            "CNAME" => Self::Cname,
            _ => Self::Other(value),
        }
    }
}

impl From<DnsRecordType> for String {
    fn from(value: DnsRecordType) -> Self {
        match value {
            DnsRecordType::A => "A".into(),
            DnsRecordType::Cname => "CNAME".into(),
            DnsRecordType::Other(other) => other,
        }
    }
}

/// `FirewallRule`: read-only in the current API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FirewallRule {
    #[serde(deserialize_with = "tolerant::string")]
    pub name: String,
    #[serde(deserialize_with = "tolerant::string")]
    pub protocol: String,
    /// `string|null` in the docs; a number (e.g. `51820`) is kept as its text.
    #[serde(deserialize_with = "tolerant::opt_string")]
    pub port: Option<String>,
    #[serde(deserialize_with = "tolerant::string")]
    pub source: String,
    #[serde(deserialize_with = "tolerant::string")]
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

/// Peer kinds. A kind the API does not document reads as `Unknown` (never sent), so such a
/// peer matches no `VpnPeer` instead of failing the decode of a whole peer list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerType {
    #[default]
    Client,
    Site,
    #[serde(other)]
    Unknown,
}

impl PeerType {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerType::Client => "client",
            PeerType::Site => "site",
            PeerType::Unknown => "unknown",
        }
    }
}

/// Tunnel protocols. An undocumented protocol reads as `Unknown` (never sent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Wireguard,
    Openvpn,
    #[serde(other)]
    Unknown,
}

/// `Peer`: a client (user) or site (router) attached to an instance.
///
/// `Debug` is written by hand so that the share token never reaches a log line.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Peer {
    #[serde(deserialize_with = "tolerant::string")]
    pub id: String,
    /// `null` or a value that is not a string reads as `Unknown`, never as a documented type.
    #[serde(rename = "type", deserialize_with = "tolerant::peer_type")]
    pub peer_type: PeerType,
    #[serde(deserialize_with = "tolerant::opt_string")]
    pub user_id: Option<String>,
    #[serde(deserialize_with = "tolerant::opt_string")]
    pub site_id: Option<String>,
    #[serde(deserialize_with = "tolerant::string_list")]
    pub subnets: Vec<String>,
    #[serde(deserialize_with = "tolerant::boolean")]
    pub route_all: bool,
    #[serde(deserialize_with = "tolerant::or_default")]
    pub protocol: Protocol,
    #[serde(deserialize_with = "tolerant::boolean")]
    pub connected: bool,
    #[serde(deserialize_with = "tolerant::opt_string")]
    pub connected_from: Option<String>,
    /// Short-lived share token for the client configuration download. Secret: never logged.
    #[serde(deserialize_with = "tolerant::opt_string")]
    pub token: Option<String>,
    #[serde(deserialize_with = "tolerant::opt_int")]
    pub token_ttl: Option<i64>,
    #[serde(deserialize_with = "tolerant::opt_string")]
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
    #[serde(deserialize_with = "tolerant::string")]
    pub iso: String,
    #[serde(deserialize_with = "tolerant::string")]
    pub flag_svg: String,
    #[serde(deserialize_with = "tolerant::string")]
    pub flag: String,
    #[serde(deserialize_with = "tolerant::or_default")]
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

/// What an error answer said, whatever its shape: the documented `ErrorResponse`
/// (`{type, code, message, doc_url}`, also nested under `error`), Laravel's validation answer
/// (`{message, errors: {field: [messages]}}`), a bare `{message}` or `{error: "..."}`, or plain
/// text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorDetails {
    /// The machine-readable `code`, when the body has one.
    pub code: String,
    /// The human explanation, including the field errors; empty when the body said nothing.
    pub message: String,
    /// Validation errors by field (Laravel's `errors`), lower-cased field names.
    pub field_errors: BTreeMap<String, Vec<String>>,
}

impl ErrorDetails {
    /// Parses an error body; never fails (an unreadable body gives empty details).
    pub fn parse(body: &str) -> Self {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
            let text = body.trim();
            // Plain text is shown (bounded); an HTML error page says nothing useful.
            let message = if text.starts_with('<') {
                String::new()
            } else {
                text.chars().take(300).collect()
            };
            return Self {
                message,
                ..Self::default()
            };
        };
        let Some(object) = value.as_object() else {
            return Self {
                message: tolerant::text(value).chars().take(300).collect(),
                ..Self::default()
            };
        };
        // `{error: {code, message}}` (the Stripe-style nesting) or `{error: "text"}`.
        let (object, nested_text) = match object.get("error") {
            Some(serde_json::Value::Object(inner)) => (inner, None),
            Some(serde_json::Value::String(text)) => (object, Some(text.clone())),
            _ => (object, None),
        };
        let field = |name: &str| object.get(name).cloned().map(tolerant::text).unwrap_or_default();
        let mut field_errors = BTreeMap::new();
        if let Some(serde_json::Value::Object(errors)) = object.get("errors") {
            for (name, messages) in errors {
                let messages = match messages.clone() {
                    serde_json::Value::Array(items) => items.into_iter().map(tolerant::text).collect(),
                    other => vec![tolerant::text(other)],
                };
                field_errors.insert(name.to_ascii_lowercase(), messages);
            }
        }
        let mut message = field("message");
        if message.is_empty() {
            message = nested_text.unwrap_or_default();
        }
        let listed: Vec<String> = field_errors
            .iter()
            .map(|(name, messages)| format!("{name}: {}", messages.join(" ")))
            .collect();
        if !listed.is_empty() {
            let listed = listed.join("; ");
            message = if message.is_empty() {
                listed
            } else {
                format!("{message} ({listed})")
            };
        }
        Self {
            code: field("code"),
            message,
            field_errors,
        }
    }
}

/// A list answer: the documented bare array, or the `{data: [...], has_more}` envelope other
/// Altostrat lists use.
#[derive(Clone, Debug, PartialEq)]
pub struct ListResponse<T> {
    pub items: Vec<T>,
    /// The envelope said more items follow (the VPN API documents no way to fetch them).
    pub has_more: bool,
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for ListResponse<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(deserializer)?;
        let (items, has_more) = match value {
            serde_json::Value::Array(items) => (items, false),
            serde_json::Value::Object(mut object) => match object.remove("data") {
                Some(serde_json::Value::Array(items)) => {
                    let has_more = object.remove("has_more").is_some_and(|v| tolerant::truthy(&v));
                    (items, has_more)
                }
                _ => {
                    return Err(D::Error::custom(
                        "expected a list or an object with a `data` list",
                    ));
                }
            },
            _ => {
                return Err(D::Error::custom(
                    "expected a list or an object with a `data` list",
                ));
            }
        };
        let items = items
            .into_iter()
            .map(|item| T::deserialize(item).map_err(D::Error::custom))
            .collect::<Result<_, _>>()?;
        Ok(Self { items, has_more })
    }
}

/// Lenient field decoders: a surprising value is read as the nearest sensible one instead of
/// failing the whole response.
pub(crate) mod tolerant {
    use serde::de::{DeserializeOwned, Error};
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// Any JSON value as text: a string as is, `null` as empty, anything else as its JSON.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct Scalar(pub String);

    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            Value::deserialize(deserializer).map(|v| Scalar(text(v)))
        }
    }

    pub fn text(value: Value) -> String {
        match value {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    pub fn truthy(value: &Value) -> bool {
        match value {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
            Value::String(s) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
            _ => false,
        }
    }

    pub fn string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        Value::deserialize(deserializer).map(text)
    }

    pub fn opt_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::Null => None,
            other => Some(text(other)),
        })
    }

    /// `true`/`false`, `0`/`1`, `"true"`/`"1"`; `null` is false.
    pub fn boolean<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
        Value::deserialize(deserializer).map(|v| truthy(&v))
    }

    pub fn opt_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
    }

    /// A peer type; anything undocumented, `null` included, is `Unknown` (so it matches no
    /// `VpnPeer`).
    pub fn peer_type<'de, D: Deserializer<'de>>(deserializer: D) -> Result<super::PeerType, D::Error> {
        Ok(super::PeerType::deserialize(Value::deserialize(deserializer)?)
            .unwrap_or(super::PeerType::Unknown))
    }

    /// The value if it decodes as `T`, else `T::default()`.
    pub fn or_default<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        Ok(T::deserialize(Value::deserialize(deserializer)?).unwrap_or_default())
    }

    /// A list of strings: `null` is empty, a lone string is a list of one, items that are not
    /// strings are kept as their JSON text. Any other shape is an error.
    pub fn string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Null => Ok(Vec::new()),
            Value::String(s) => Ok(vec![s]),
            Value::Array(items) => Ok(items.into_iter().map(text).collect()),
            other => Err(D::Error::custom(format!(
                "expected a list of strings, got {other}"
            ))),
        }
    }

    /// A list of `T`: `null` is empty.
    pub fn list<'de, D: Deserializer<'de>, T: DeserializeOwned>(deserializer: D) -> Result<Vec<T>, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .into_iter()
                .map(|item| T::deserialize(item).map_err(D::Error::custom))
                .collect(),
            other => Err(D::Error::custom(format!("expected a list, got {other}"))),
        }
    }
}

/// Body of `GET /vpn/client`: JSON or plain text depending on the response content type.
/// It holds the peer's private key: `Debug` shows only its form and size.
#[derive(Clone, PartialEq)]
pub enum ClientConfiguration {
    Json(serde_json::Value),
    Text(String),
}

impl std::fmt::Debug for ClientConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Json(value) => write!(f, "Json(<{} bytes redacted>)", value.to_string().len()),
            Self::Text(text) => write!(f, "Text(<{} bytes redacted>)", text.len()),
        }
    }
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
    fn unknown_values_and_nulls_do_not_fail_an_instance() {
        let json = r#"{"id":"i-1","name":null,"hostname":"hub.vpn.altostr.at","configured":1,
            "rsa_ready":"true","diffie_hellman_ready":true,"server_ready":0,
            "status":["config-updated",{"step":"teardown"},7],"public_dns":null,
            "pushed_routes":"10.0.0.0/8","dns_custom":[{"name":"v6.corp","type":"AAAA","value":"::1"},
            {"name":"a.corp","type":"a","value":"10.0.0.1"}],
            "firewall":[{"name":"wg","protocol":"udp","port":51820,"source":"0.0.0.0/0","destination":null}],
            "created_at":null,"region_label":"Frankfurt","billing":{"plan":"pro"}}"#;
        let instance: Instance = serde_json::from_str(json).unwrap();
        assert!(instance.configured && instance.rsa_ready && !instance.server_ready);
        assert_eq!(
            instance.status,
            vec!["config-updated", r#"{"step":"teardown"}"#, "7"]
        );
        assert!(instance.public_dns.is_empty());
        assert_eq!(instance.pushed_routes, vec!["10.0.0.0/8"]);
        assert_eq!(
            instance.dns_custom[0].record_type,
            DnsRecordType::Other("AAAA".into())
        );
        assert_eq!(instance.dns_custom[1].record_type, DnsRecordType::A);
        assert_eq!(instance.firewall[0].port.as_deref(), Some("51820"));
        // An unknown record type is sent back as it was received.
        let back = serde_json::to_value(&instance.dns_custom[0]).unwrap();
        assert_eq!(back["type"], "AAAA");
        assert_eq!(serde_json::to_value(DnsRecordType::Cname).unwrap(), "CNAME");
    }

    #[test]
    fn unknown_peer_types_and_protocols_do_not_fail_a_peer_list() {
        let json = r#"[{"id":"p-1","type":"client","protocol":"wireguard","user_id":"u","route_all":1},
            {"id":"p-2","type":"gateway","protocol":"ipsec","site_id":null,"token_ttl":"3600"},
            {"id":"p-3","type":null,"protocol":7,"connected":"1"}]"#;
        let peers: ListResponse<Peer> = serde_json::from_str(json).unwrap();
        let peers = peers.items;
        assert_eq!(
            (peers[0].peer_type, peers[0].protocol),
            (PeerType::Client, Protocol::Wireguard)
        );
        assert!(peers[0].route_all);
        assert_eq!(
            (peers[1].peer_type, peers[1].protocol),
            (PeerType::Unknown, Protocol::Unknown)
        );
        assert_eq!(peers[1].token_ttl, Some(3600));
        assert_eq!(
            (peers[2].peer_type, peers[2].protocol),
            (PeerType::Unknown, Protocol::Wireguard)
        );
        assert!(peers[2].connected);
    }

    #[test]
    fn lists_are_accepted_bare_or_in_the_data_envelope() {
        let bare: ListResponse<Instance> = serde_json::from_str(r#"[{"id":"a"}]"#).unwrap();
        assert_eq!((bare.items.len(), bare.has_more), (1, false));
        let wrapped: ListResponse<Instance> =
            serde_json::from_str(r#"{"object":"list","data":[{"id":"a"},{"id":"b"}],"has_more":false}"#)
                .unwrap();
        assert_eq!((wrapped.items[1].id.as_str(), wrapped.has_more), ("b", false));
        let more: ListResponse<Instance> = serde_json::from_str(r#"{"data":[],"has_more":true}"#).unwrap();
        assert!(more.has_more);
        assert!(serde_json::from_str::<ListResponse<Instance>>(r#"{"items":[]}"#).is_err());
    }

    #[test]
    fn every_error_body_shape_gives_a_message() {
        let documented = ErrorDetails::parse(
            r#"{"type":"invalid_request_error","code":"parameter_missing","message":"The 'name' parameter is required.","doc_url":"https://docs.altostrat.io/errors/parameter_missing"}"#,
        );
        assert_eq!(documented.code, "parameter_missing");
        assert_eq!(documented.message, "The 'name' parameter is required.");
        let laravel = ErrorDetails::parse(
            r#"{"message":"The hostname has already been taken. (and 1 more error)","errors":{"hostname":["The hostname has already been taken."],"name":["The name field must not be greater than 20 characters."]}}"#,
        );
        assert_eq!(
            laravel.field_errors["hostname"],
            vec!["The hostname has already been taken."]
        );
        assert_eq!(
            laravel.message,
            "The hostname has already been taken. (and 1 more error) (hostname: The hostname has already been taken.; name: The name field must not be greater than 20 characters.)"
        );
        let bare = ErrorDetails::parse(r#"{"message":"Unauthorized or invalid token provided."}"#);
        assert_eq!(
            (bare.code.as_str(), bare.message.as_str()),
            ("", "Unauthorized or invalid token provided.")
        );
        let nested = ErrorDetails::parse(r#"{"error":{"code":"hostname_taken","message":"taken"}}"#);
        assert_eq!(
            (nested.code.as_str(), nested.message.as_str()),
            ("hostname_taken", "taken")
        );
        assert_eq!(
            ErrorDetails::parse(r#"{"error":"Seat limit reached"}"#).message,
            "Seat limit reached"
        );
        assert_eq!(
            ErrorDetails::parse("Method Not Allowed").message,
            "Method Not Allowed"
        );
        assert_eq!(ErrorDetails::parse("<html><body>502</body></html>").message, "");
        assert_eq!(ErrorDetails::parse("").message, "");
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
