//! `VpnInstance`: a managed VPN hub in one Altostrat region.

// Each `printcolumn(...)` repeats the same keys by design; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ApprovedPlan, CredentialsReference, DeletionPolicy, ManagementPolicy, PlannedCall, SecretReference,
};

/// Desired state of an Altostrat managed VPN instance (a cloud VPN hub).
///
/// `hostname` and `region` are fixed when the instance is created; every other field is
/// reconciled continuously, so out-of-band edits in the Altostrat portal are reverted (unless
/// `managementPolicy` is `ObserveOnly`, or the resource is paused).
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "vpn.altostrat.io",
    version = "v1alpha1",
    kind = "VpnInstance",
    plural = "vpninstances",
    shortname = "vpni",
    category = "altostrat",
    namespaced,
    status = "VpnInstanceStatus",
    doc = "A managed VPN hub in an Altostrat region.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = 1
    ),
    printcolumn(
        name = "Paused",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Paused\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Last Request",
        type_ = "string",
        json_path = ".status.lastHandledReconcileAt",
        priority = 1
    ),
    printcolumn(name = "Policy", type_ = "string", json_path = ".status.managementPolicy"),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "Hostname", type_ = "string", json_path = ".status.hostname"),
    printcolumn(
        name = "Instance ID",
        type_ = "string",
        json_path = ".status.instanceId",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!has(oldSelf.instanceId) || (has(self.instanceId) && self.instanceId == oldSelf.instanceId)").message("instanceId cannot be changed or removed once set"))]
#[x_kube(validation = Rule::new("!has(oldSelf.managementPolicy) || oldSelf.managementPolicy != 'ObserveOnly' || (has(self.managementPolicy) && self.managementPolicy == 'ObserveOnly') || has(self.instanceId)").message("leaving managementPolicy ObserveOnly adopts the observed hub: set spec.instanceId to its id (status.instanceId)"))]
#[serde(rename_all = "camelCase")]
pub struct VpnInstanceSpec {
    /// Display name of the instance in Altostrat (3 to 20 characters).
    #[schemars(length(min = 3, max = 20))]
    pub name: String,

    /// DNS label that becomes the instance's public name `<hostname>.vpn.altostr.at`.
    /// Lowercase letters, digits and inner hyphens, 3 to 20 characters, unique across
    /// Altostrat; the reserved labels www, api, vpn, mail, cdn and ns are refused.
    /// Immutable: a different hostname needs a new VpnInstance.
    #[schemars(
        length(min = 3, max = 20),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("hostname is immutable; create a new VpnInstance to change it"))]
    #[x_kube(validation = Rule::new("!(self in ['www', 'api', 'vpn', 'mail', 'cdn', 'ns'])").message("hostname must not be a reserved label (www, api, vpn, mail, cdn, ns)"))]
    pub hostname: String,

    /// Region code the hub runs in, a city key of `GET /vpn/servers/regions` such as `sjc`
    /// or `fra`. Immutable: moving regions needs a new VpnInstance.
    #[schemars(length(min = 2, max = 16), regex(pattern = r"^[a-z0-9-]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("region is immutable; create a new VpnInstance to change it"))]
    pub region: String,

    /// Routes pushed to connecting clients: IPv4 networks in CIDR notation such as
    /// `10.0.0.0/8`, with no host bits set (`10.0.0.1/8` is refused: write the network,
    /// `10.0.0.0/8`, or the host, `10.0.0.1/32`). IPv6 is refused: Altostrat documents IPv4
    /// only. The full list is sent on every update: routes removed here are removed in
    /// Altostrat.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(max = 43)), transform = super::cidr::ipv4_network_items)]
    pub pushed_routes: Vec<String>,

    /// Public DNS resolvers (2 to 4 IPv4 addresses) handed to clients. When omitted, the
    /// resolvers Altostrat holds are kept (see status.publicDns). An update must carry at
    /// least two, and Altostrat assigns one at creation: an update it needs for another field
    /// then adds 9.9.9.9, then 1.1.1.1, up to two (named in the Updated event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 4), inner(length(max = 15)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a) && ip(a).family() == 4)").message("every publicDns entry must be an IPv4 address"))]
    pub public_dns: Option<Vec<String>>,

    /// Domains resolved through the split-DNS resolvers (at most 8).
    #[serde(default)]
    #[schemars(length(max = 8), inner(length(min = 1, max = 253)))]
    pub domains: Vec<String>,

    /// Private resolvers (IPv4) used for `domains`.
    #[serde(default)]
    #[schemars(length(max = 8), inner(length(max = 15)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a) && ip(a).family() == 4)").message("every splitDns entry must be an IPv4 address"))]
    pub split_dns: Vec<String>,

    /// Custom records served by the instance's DNS proxy.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub dns_custom: Vec<DnsRecord>,

    /// What to do with the Altostrat instance when this resource is deleted: `Delete` it or
    /// `Orphan` it (leave it running). When unset: `Delete` for a hub this resource created,
    /// `Orphan` for one it adopted (`instanceId`), so that a copy of a manifest applied
    /// elsewhere never deletes a hub it did not make. The policy in force is shown in
    /// `status.deletionPolicy`. Only `Full` management deletes anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// How much the operator may do with the Altostrat instance. `Full` (default): create it,
    /// keep it as the spec says, delete it by `deletionPolicy`. `ObserveOnly`: find an existing
    /// hub by `instanceId`, else by `hostname`, and mirror it in status without ever writing to
    /// it; spec fields that are set (lists: non-empty) are compared and differences reported
    /// as `Synced=False` reason `Drifted`; deleting the resource leaves the hub running.
    /// Leaving `ObserveOnly` adopts the hub and needs `instanceId`. `Plan`: decide as `Full`
    /// would, but only list the calls in `status.plan` (method, path, each changed field's old
    /// and new value); switching to `Full` then makes exactly those calls. A `Plan` resource
    /// claims, creates and deletes nothing.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// Secret in this namespace whose `token` key holds the Altostrat API token to use for
    /// this instance and its peers; it must be labelled `vpn.altostrat.io/credentials: "true"`.
    /// Defaults to the operator's own token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,

    /// A cluster-scoped VpnCredentials to use for this instance and its peers, when
    /// `credentialsSecretRef` is not set. Its `allowedNamespaces` must select this namespace,
    /// or the instance fails with `CredentialsError` naming the missing grant. Without either,
    /// the VpnCredentials whose `defaultFor` selects this namespace is used, else the
    /// operator's own token (where `DEFAULT_TOKEN_NAMESPACES` allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<CredentialsReference>,

    /// Which namespaces may attach VpnPeers to this hub (a peer names it with
    /// `spec.instanceRef.namespace`), as Gateway API's `allowedRoutes.namespaces` does for
    /// routes. Unset: only peers of this namespace. Peers of this namespace are always allowed
    /// (whoever may write them may edit this field too). Revoking a grant stops new peers of
    /// the namespaces it no longer selects and marks their existing peers `NotPermitted`; their
    /// Altostrat peers are kept until their VpnPeers are deleted (see docs/sharing.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_peers: Option<AllowedPeers>,

    /// Adopt an existing Altostrat instance by its id (a UUID) instead of creating one (with
    /// `managementPolicy: ObserveOnly`: observe it). The hub's `hostname` must match, and no
    /// other resource may hold it. Cannot be changed or removed once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
    )]
    pub instance_id: Option<String>,
}

/// The namespaces whose VpnPeers may attach to a hub.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AllowedPeers {
    /// Which namespaces, besides the hub's own, may attach peers. Unset: the hub's own only.
    #[serde(default)]
    pub namespaces: PeerNamespaces,
}

/// Namespaces granted to attach peers, as in Gateway API's `allowedRoutes.namespaces`.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.from == 'Selector' ? has(self.selector) : !has(self.selector)").message("allowedPeers.namespaces.selector is required with from: Selector and refused otherwise"))]
pub struct PeerNamespaces {
    /// `Same` (default): only the hub's own namespace. `Selector`: also the namespaces whose
    /// labels `selector` matches. `All`: every namespace.
    #[serde(default)]
    pub from: FromNamespaces,
    /// With `from: Selector`: a label selector on Namespaces (`matchLabels`,
    /// `matchExpressions`). Namespace labels are set by cluster administrators, so a team
    /// cannot grant itself a hub; an empty selector selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

// Which namespaces a grant covers. (A `//` comment: a type doc would replace the field's own
// description in `kubectl explain`.)
#[derive(JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromNamespaces {
    #[default]
    Same,
    Selector,
    All,
}

/// How many of a hub's peers one namespace holds.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePeers {
    /// The namespace.
    pub namespace: String,
    /// VpnPeers of that namespace attached to the hub (Altostrat holds their peer on it).
    pub peers: u32,
}

/// A custom DNS record served by the instance.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.type != 'A' || (isIP(self.value) && ip(self.value).family() == 4)").message("an A record's value must be an IPv4 address"))]
pub struct DnsRecord {
    /// Record name, e.g. `fileserver.internal.corp`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub kind: DnsRecordKind,
    /// Record value: an IPv4 address for `A`, a host name for `CNAME`.
    #[schemars(length(min = 1, max = 253))]
    pub value: String,
}

/// DNS record types Altostrat serves.
#[derive(JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DnsRecordKind {
    A,
    #[serde(rename = "CNAME")]
    Cname,
}

/// Observed state of the instance, as last read from Altostrat.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpnInstanceStatus {
    /// Altostrat id of the instance; recorded as soon as it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The managementPolicy this status was written under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_policy: Option<ManagementPolicy>,
    /// The deletionPolicy in force: `spec.deletionPolicy` if set; else `Orphan` for a hub this
    /// resource adopted, and for one it created the default of its VpnCredentials, else the
    /// operator's `--default-deletion-policy` (`Delete` unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Fully qualified public name of the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Initial server setup finished.
    #[serde(default)]
    pub configured: bool,
    /// RSA certificates generated.
    #[serde(default)]
    pub rsa_ready: bool,
    /// Diffie-Hellman parameters generated.
    #[serde(default)]
    pub diffie_hellman_ready: bool,
    /// The server is up and accepting peers.
    #[serde(default)]
    pub server_ready: bool,
    /// Configuration changes Altostrat is still applying (empty when converged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_changes: Vec<String>,
    /// Public DNS resolvers Altostrat holds for the hub.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_dns: Vec<String>,
    /// Firewall rules on the instance (read-only; managed by Altostrat).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firewall: Vec<FirewallRuleStatus>,
    /// When Altostrat created the instance (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// How many VpnPeers of each namespace are attached to the hub, counted when the hub is
    /// reconciled (counts only: the peers' names belong to their namespaces).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attached_peers: Vec<NamespacePeers>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The value of the annotation `vpn.altostrat.io/reconcile-requested-at` that the operator
    /// handled last: the resource was compared with Altostrat after it was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// The Altostrat calls the operator would make next and withholds: under `managementPolicy:
    /// Plan`, what switching to `Full` sends; while the resource is paused, what removing the
    /// pause annotation sends. Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlannedCall>,
    /// A digest of `plan`: the value of the annotation `vpn.altostrat.io/approve-plan` that
    /// approves it (under `managementPolicy: Plan`). The same calls always give the same digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_digest: Option<String>,
    /// The plan approved last, its calls not sent yet, and when it was spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_plan: Option<ApprovedPlan>,
    /// `Ready` (the hub is provisioned and matches the spec), `Synced` (the last attempt to
    /// apply the spec succeeded, or why nothing was applied) and, while the resource is
    /// paused, `Paused`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A firewall rule as reported by Altostrat.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRuleStatus {
    /// Rule name.
    pub name: String,
    /// tcp, udp, icmp, gre, esp or ah.
    pub protocol: String,
    /// Port or port range, if the protocol has ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Source CIDR.
    pub source: String,
    /// Destination CIDR.
    pub destination: String,
}
