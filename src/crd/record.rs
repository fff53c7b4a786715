//! `OwnershipRecord`: which resource holds an Altostrat object, written only by the operator.

// Each `printcolumn(...)` repeats the same keys by design; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The operator's record that one resource holds one Altostrat object.
///
/// Records are cluster-scoped and written only by the operator: tenants, who can write their
/// VpnInstances and VpnPeers (spec, metadata and status alike), cannot forge one, and every
/// watch scope (all namespaces, `WATCH_NAMESPACES`, `LABEL_SELECTOR`) and every installation in
/// the cluster reads the same records. The name makes two holders impossible: a hub's record is
/// named after its hostname, which Altostrat keeps unique, so the API server refuses a second
/// one; a peer's record is named after its resource's uid, and a peer id is held by the oldest
/// record that names it.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "vpn.altostrat.io",
    version = "v1alpha1",
    kind = "OwnershipRecord",
    plural = "ownershiprecords",
    shortname = "vpnown",
    doc = "The operator's record of which resource holds an Altostrat object (written by the operator only).",
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.holder.kind"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".spec.holder.namespace"),
    printcolumn(name = "Holder", type_ = "string", json_path = ".spec.holder.name"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Instance ID", type_ = "string", json_path = ".spec.instanceId"),
    printcolumn(name = "Peer ID", type_ = "string", json_path = ".spec.peerId", priority = 1),
    printcolumn(
        name = "Installation",
        type_ = "string",
        json_path = ".spec.installation",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct OwnershipRecordSpec {
    /// The resource that holds the object.
    pub holder: Holder,
    /// `Manage`: the holder writes to the object and may delete it. `Observe`: the holder only
    /// looks at it; nobody else may observe or adopt it meanwhile.
    pub role: RecordRole,
    /// How the holder came to hold the object: `Created` (its own create, including a lost
    /// create proven by this record) or `Adopted` (named explicitly by `spec.instanceId` or
    /// `spec.peerId`, or observed). An adopted object is orphaned on deletion unless the
    /// holder sets `deletionPolicy: Delete` itself.
    pub origin: RecordOrigin,
    /// The operator installation that wrote the record (`--installation`); another
    /// installation never takes, moves or frees it.
    pub installation: String,
    /// When the holder took the object it holds now (RFC 3339, the operator's clock): of two
    /// records naming one peer, the older holds it.
    pub taken_at: String,
    /// When the holder last claimed a create (RFC 3339, the operator's clock): an object found
    /// later without a recorded id is the holder's own lost create only if Altostrat created
    /// it at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<String>,
    /// The hub's hostname label (a hub's record is named after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The Altostrat instance: the hub itself, or the hub a peer is on. Set once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The Altostrat peer (peer records only). Set once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
}

/// The resource a record names as the holder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Holder {
    /// `VpnInstance` or `VpnPeer`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The holder's uid: a resource re-created under the same name is another holder.
    pub uid: String,
}

/// What the holder may do with the object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RecordRole {
    /// Write to it, and delete it by the holder's `deletionPolicy`.
    #[default]
    Manage,
    /// Only look at it.
    Observe,
}

/// How the holder came to hold the object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RecordOrigin {
    /// The holder created it.
    #[default]
    Created,
    /// The holder adopted or observed an object that existed before it.
    Adopted,
}
