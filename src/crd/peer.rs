//! `VpnPeer`: a user (client) or an SDX site connected to a `VpnInstance`.

// Each `printcolumn(...)` repeats the same keys by design; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ApprovedPlan, DeletionPolicy, ManagementPolicy, PlannedCall};

/// Desired state of a peer of an Altostrat VPN instance.
///
/// `type`, `protocol`, `userId`, `siteId` and `instanceRef` are fixed at creation (Altostrat
/// cannot change them in place); `routeAll` (clients) and `subnets` (sites) are reconciled
/// (unless `managementPolicy` is `ObserveOnly`, or the resource is paused).
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "vpn.altostrat.io",
    version = "v1alpha1",
    kind = "VpnPeer",
    plural = "vpnpeers",
    shortname = "vpnp",
    category = "altostrat",
    namespaced,
    status = "VpnPeerStatus",
    doc = "A client or site peer of an Altostrat VPN instance.",
    printcolumn(name = "Instance", type_ = "string", json_path = ".spec.instanceRef.name"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Policy", type_ = "string", json_path = ".status.managementPolicy"),
    printcolumn(name = "Connected", type_ = "boolean", json_path = ".status.connected"),
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
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.type != 'client' || self.protocol == 'wireguard'").message("client peers must use protocol wireguard"))]
#[x_kube(validation = Rule::new("self.type != 'client' || has(self.userId)").message("client peers require userId"))]
#[x_kube(validation = Rule::new("self.type != 'client' || (!has(self.siteId) && !has(self.subnets))").message("siteId and subnets apply to site peers only"))]
#[x_kube(validation = Rule::new("self.type != 'site' || (has(self.siteId) && has(self.subnets) && size(self.subnets) > 0)").message("site peers require siteId and at least one subnet"))]
#[x_kube(validation = Rule::new("self.type != 'site' || (!has(self.userId) && !has(self.routeAll))").message("userId and routeAll apply to client peers only"))]
#[x_kube(validation = Rule::new("self.type == oldSelf.type && self.protocol == oldSelf.protocol").message("type and protocol are immutable; create a new VpnPeer to change them"))]
#[x_kube(validation = Rule::new("has(self.userId) == has(oldSelf.userId) && (!has(self.userId) || self.userId == oldSelf.userId)").message("userId is immutable; create a new VpnPeer to change it"))]
#[x_kube(validation = Rule::new("has(self.siteId) == has(oldSelf.siteId) && (!has(self.siteId) || self.siteId == oldSelf.siteId)").message("siteId is immutable; create a new VpnPeer to change it"))]
#[x_kube(validation = Rule::new("!has(oldSelf.peerId) || (has(self.peerId) && self.peerId == oldSelf.peerId)").message("peerId cannot be changed or removed once set"))]
#[x_kube(validation = Rule::new("!has(self.managementPolicy) || self.managementPolicy != 'ObserveOnly' || has(self.peerId)").message("managementPolicy ObserveOnly needs spec.peerId: a peer is found only by its id"))]
#[serde(rename_all = "camelCase")]
pub struct VpnPeerSpec {
    /// The VpnInstance the peer connects to: in this namespace, or in `namespace` if that hub
    /// grants this namespace (its `spec.allowedPeers`). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("instanceRef is immutable; create a new VpnPeer to move it"))]
    pub instance_ref: InstanceReference,

    /// `client`: one user with remote access; `site`: an SDX-managed site (site-to-site).
    #[serde(rename = "type")]
    pub kind: PeerKind,

    /// Tunnel protocol. Client peers must use `wireguard`.
    pub protocol: PeerProtocol,

    /// Altostrat user id (UUID) of a client peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub user_id: Option<String>,

    /// Client peers only: send all traffic through the VPN (full tunnel) instead of only the
    /// instance's pushed routes. Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_all: Option<bool>,

    /// Altostrat site id (UUID) of a site peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub site_id: Option<String>,

    /// Site peers only: subnets the site advertises to the VPN, IPv4 networks in CIDR
    /// notation such as `192.168.10.0/24`, with no host bits set (`192.168.10.1/24` is
    /// refused). IPv6 is refused: Altostrat documents IPv4 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 43)), transform = super::cidr::ipv4_network_items)]
    pub subnets: Option<Vec<String>>,

    /// What to do with the Altostrat peer when this resource is deleted: `Delete` it or
    /// `Orphan` it (leave it in place). When unset: `Delete` for a peer this resource created,
    /// `Orphan` for one it adopted (`peerId`). The policy in force is shown in
    /// `status.deletionPolicy`. Only `Full` management deletes anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// How much the operator may do with the Altostrat peer. `Full` (default): create it, keep
    /// it as the spec says, delete it by `deletionPolicy`. `ObserveOnly`: find the peer
    /// `peerId` names (required) and mirror it in status without ever writing to it; spec
    /// fields that are set are compared and differences reported as `Synced=False` reason
    /// `Drifted`; deleting the resource leaves the peer in place. A peer may be `Full` on an
    /// instance that is `ObserveOnly`. `Plan`: decide as `Full` would, but only list the calls
    /// in `status.plan`; switching to `Full` then makes exactly those calls. A `Plan` resource
    /// creates and deletes nothing.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// Adopt an existing Altostrat peer by its id (a UUID) instead of creating one. It must be
    /// of this peer's type and user or site, and no other resource may hold it; once adopted
    /// it is managed like a peer this resource created, and orphaned on deletion unless
    /// `deletionPolicy: Delete` is set. Cannot be changed or removed once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
    )]
    pub peer_id: Option<String>,

    /// Deliver the peer's VPN client profile into a Secret of this namespace (opt-in). The
    /// Secret holds the profile (`wg0.conf`, or `client.ovpn` for OpenVPN) with the hub's
    /// `endpoint` and the `routes` it sends through the tunnel as separate keys; it belongs to
    /// this VpnPeer and is garbage-collected with it. It contains the peer's private key:
    /// whoever may read Secrets in this namespace may connect as this peer. Altostrat issues
    /// profiles to client peers; any other peer reports `ProfileReady=False`
    /// `ProfileNotAvailable`. A Secret of that name the operator did not create is never
    /// touched (`ProfileReady=False` `SecretConflict`). Removing the field, or renaming the
    /// Secret, deletes the Secret the operator wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_secret: Option<ProfileSecretSpec>,
}

/// Where to deliver a peer's client profile.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileSecretSpec {
    /// Name of the Secret (in the peer's namespace) the operator creates and keeps current.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"))]
    pub name: String,
}

/// Reference to a VpnInstance.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReference {
    /// Name of the VpnInstance.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the VpnInstance. Unset: the peer's own namespace. Another namespace's hub
    /// must grant this one in its `spec.allowedPeers`, or the peer is `Ready=False`
    /// `NotPermitted` and nothing is sent to Altostrat. The peer's profile Secret stays in the
    /// peer's namespace; the hub's credentials are used for its Altostrat peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: Option<String>,
}

/// Kind of peer.
#[derive(JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    Client,
    Site,
}

/// Tunnel protocol of a peer.
#[derive(JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerProtocol {
    Wireguard,
    Openvpn,
}

/// Observed state of the peer, as last read from Altostrat.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpnPeerStatus {
    /// Altostrat id of the peer; recorded as soon as it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// The managementPolicy this status was written under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_policy: Option<ManagementPolicy>,
    /// The deletionPolicy in force: `spec.deletionPolicy` if set, else `Delete` for a peer this
    /// resource created and `Orphan` for one it adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Altostrat id of the instance the peer was created on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Whether the peer is connected right now (as of the last observation).
    #[serde(default)]
    pub connected: bool,
    /// Public IP the peer is connected from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_from: Option<String>,
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
    /// The Secret holding the peer's client profile (see `spec.profileSecret`), once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_secret: Option<ProfileSecretStatus>,
    /// `Ready` (the peer exists and matches the spec), `Synced` (the last attempt to apply
    /// the spec succeeded, or why nothing was applied), `ProfileReady` (with
    /// `spec.profileSecret`: the Secret holds the current profile, or why not) and, while the
    /// resource is paused, `Paused`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The Secret the operator wrote a peer's client profile into.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSecretStatus {
    /// Name of the Secret, in the peer's namespace.
    pub name: String,
    /// SHA-256 (first 16 hex digits) of the profile the Secret holds: it changes exactly when
    /// the profile does, so a Deployment can roll on it (e.g. as a pod template annotation).
    pub profile_hash: String,
}

impl VpnPeer {
    /// The namespace of the VpnInstance the peer names: `spec.instanceRef.namespace`, else the
    /// peer's own.
    pub fn instance_namespace(&self) -> String {
        self.spec
            .instance_ref
            .namespace
            .clone()
            .unwrap_or_else(|| kube::ResourceExt::namespace(self).unwrap_or_default())
    }
}
