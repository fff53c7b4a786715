//! Custom resource definitions: the Rust types are the single source of truth for the CRD
//! schemas committed under `crds/` (see [`render_all`]).
//!
//! Field doc comments become the OpenAPI descriptions shown by `kubectl explain`.

pub mod cidr;
mod credentials;
mod instance;
mod peer;
mod record;

pub use credentials::{CredentialsSecretReference, VpnCredentials, VpnCredentialsSpec, VpnCredentialsStatus};
pub use instance::{
    AllowedPeers, DnsRecord, DnsRecordKind, FirewallRuleStatus, FromNamespaces, NamespacePeers,
    PeerNamespaces, VpnInstance, VpnInstanceSpec, VpnInstanceStatus,
};
pub use peer::{
    InstanceReference, PeerKind, PeerProtocol, ProfileSecretSpec, ProfileSecretStatus, VpnPeer, VpnPeerSpec,
    VpnPeerStatus,
};
pub use record::{Holder, OwnershipRecord, OwnershipRecordSpec, RecordOrigin, RecordRole};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every kind this operator serves.
pub const GROUP: &str = "vpn.altostrat.io";
/// Finalizer that keeps a resource until its Altostrat object is deleted (or orphaned).
pub const FINALIZER: &str = "vpn.altostrat.io/cleanup";
/// Label of an ownership record: the installation that wrote it (see `--installation`).
pub const INSTALLATION_LABEL: &str = "vpn.altostrat.io/installation";
/// Label of a peer's ownership record: the Altostrat peer id, once known.
pub const PEER_ID_LABEL: &str = "vpn.altostrat.io/peer-id";

/// Set to `"true"` to pause a resource: the operator keeps observing Altostrat and reports
/// drift, but writes nothing there until the annotation is removed. Deleting a paused resource
/// still follows its `deletionPolicy`.
pub const PAUSED_ANNOTATION: &str = "vpn.altostrat.io/paused";

/// Set to a new value (such as the current time, as `flux reconcile` does) to have a resource
/// compared with Altostrat right away instead of at its next drift check; the value handled
/// last is echoed in `status.lastHandledReconcileAt`.
pub const RECONCILE_REQUEST_ANNOTATION: &str = "vpn.altostrat.io/reconcile-requested-at";

/// Set to the `status.planDigest` of a resource under `managementPolicy: Plan` to approve that
/// plan: the operator then sends exactly its calls, or nothing (see docs/policies.md).
pub const APPROVE_PLAN_ANNOTATION: &str = "vpn.altostrat.io/approve-plan";

/// Finalizer the operator puts on a credentials Secret while a resource that uses it may still
/// need it to delete its Altostrat objects: deleting a namespace deletes the Secret and the
/// resources at once, and the resources' cleanup must still be able to read the token.
pub const CREDENTIALS_FINALIZER: &str = "vpn.altostrat.io/credentials-in-use";

/// The label a Secret must carry, with the value `"true"`, to be used as Altostrat
/// credentials: naming a Secret in `credentialsSecretRef` is not enough, so no resource can
/// make the operator use a Secret that was not meant for it.
pub const CREDENTIALS_LABEL: &str = "vpn.altostrat.io/credentials";

// What happens to the Altostrat object when the Kubernetes resource is deleted. (A `//` comment:
// a type doc would replace the fields' own descriptions in `kubectl explain`.)
#[derive(PartialOrd, Ord, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the object in Altostrat, then release the resource.
    #[default]
    Delete,
    /// Leave the object running in Altostrat and only release the resource.
    Orphan,
}

/// An Altostrat call the operator would make next, and has withheld (see `status.plan`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlannedCall {
    /// HTTP method: `POST` (create) or `PUT` (update).
    pub method: String,
    /// Request path. The id of an instance a planned create makes is not known yet: it is the
    /// placeholder `{instanceId}`.
    pub path: String,
    /// The fields the call sets, with the value Altostrat holds now and the one sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
}

/// A plan approved with `vpn.altostrat.io/approve-plan`, as far as it has been executed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovedPlan {
    /// The digest approved (the `status.planDigest` it was approved as).
    pub digest: String,
    /// The approved calls not sent yet: the next one sent must be the first of them (a
    /// create's update waits for provisioning).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remaining: Vec<PlannedCall>,
    /// When its last call was sent (RFC 3339): the approval is spent and authorises nothing
    /// more; a new change needs a new approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_at: Option<String>,
}

/// One field a planned call sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldChange {
    /// The field, spelled as in the spec (`pushedRoutes`, `routeAll`, ...).
    pub field: String,
    /// The value Altostrat holds now (lists as JSON); absent when Altostrat holds none yet,
    /// such as on a create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// The value the call sends (lists as JSON); absent when Altostrat assigns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

// How much the operator may do with the Altostrat object of a resource. (A `//` comment: a type
// doc would replace the fields' own descriptions in `kubectl explain`.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ManagementPolicy {
    /// Create, update and delete the object to match the spec.
    #[default]
    Full,
    /// Only find and mirror an existing object: never write to it, never delete it.
    ObserveOnly,
    /// Compute the writes `Full` would make next and show them in `status.plan`, without
    /// making them.
    Plan,
}

/// Reference to a Secret in the same namespace as the referring resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretReference {
    /// Name of the Secret. The API token is read from its `token` key; the Secret must carry
    /// the label `vpn.altostrat.io/credentials: "true"`. An optional `requestsPerMinute` key
    /// sets how many requests per minute the operator may spend with this token (when the
    /// token is shared with other tools); otherwise the operator's default applies.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Reference to a cluster-scoped VpnCredentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CredentialsReference {
    /// Name of the VpnCredentials.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Key inside a credentials Secret that holds the Altostrat API token.
pub const SECRET_TOKEN_KEY: &str = "token";
/// Optional key of a credentials Secret: the requests per minute this operator may spend with
/// the token, when it is shared with other tools (default: the operator's --api-rate-limit).
pub const SECRET_RATE_KEY: &str = "requestsPerMinute";

/// Every CRD the operator serves, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        OwnershipRecord::crd(),
        VpnInstance::crd(),
        VpnPeer::crd(),
        VpnCredentials::crd(),
    ]
}

/// The committed file name of a CRD: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default())
}

/// Renders a CRD as YAML exactly as committed under `crds/`.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    let yaml = serde_saphyr::to_string(crd)?;
    Ok(format!(
        "# Generated by `vpn-operator crds`; do not edit by hand.\n{yaml}"
    ))
}

/// `(file name, YAML)` for every CRD.
pub fn render_all() -> Result<Vec<(String, String)>, serde_saphyr::SerializeError> {
    all()
        .iter()
        .map(|crd| Ok((file_name(crd), render(crd)?)))
        .collect()
}
