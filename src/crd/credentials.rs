//! `VpnCredentials`: an Altostrat API token defined once by the platform team and granted to
//! chosen namespaces, with its health in status.

// Each `printcolumn(...)` repeats the same keys by design; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DeletionPolicy;

/// Shared Altostrat credentials: a token Secret in the operator's namespace, the namespaces
/// allowed to use it and those it is the default for.
///
/// A VpnInstance uses it by naming it in `spec.credentialsRef`, or without naming anything
/// when `defaultFor` selects its namespace. Its peers use their instance's credentials.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "vpn.altostrat.io",
    version = "v1alpha1",
    kind = "VpnCredentials",
    plural = "vpncredentials",
    shortname = "vpncred",
    category = "altostrat",
    status = "VpnCredentialsStatus",
    doc = "Shared Altostrat credentials granted to namespaces by label selector.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Users", type_ = "integer", json_path = ".status.users"),
    printcolumn(name = "Rate", type_ = "integer", json_path = ".status.requestsPerMinute"),
    printcolumn(
        name = "Calls/min",
        type_ = "integer",
        json_path = ".status.callsLastMinute",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct VpnCredentialsSpec {
    /// The Secret holding the token, in the operator's own namespace (tenants cannot read
    /// it). Like a resource's own credentials Secret, it must carry the label
    /// `vpn.altostrat.io/credentials: "true"`. A changed Secret is read again without a
    /// restart.
    pub secret_ref: CredentialsSecretReference,

    /// The namespaces whose resources may use these credentials, by their labels. When
    /// omitted no namespace may: a grant is always explicit. `{}` selects every namespace.
    /// Only cluster administrators label namespaces, so a tenant cannot grant itself access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<LabelSelector>,

    /// The namespaces for which these are the credentials of a VpnInstance that names none
    /// (no `credentialsSecretRef`, no `credentialsRef`). Only namespaces `allowedNamespaces`
    /// also selects are defaulted; the others are named in the `Ready` condition's message.
    /// A namespace selected by two defaults gets neither: its instances fail with
    /// `CredentialsError` naming both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_for: Option<LabelSelector>,

    /// Requests per minute the operator may spend with this token (when it is shared with
    /// other tools); otherwise the Secret's `requestsPerMinute` key, else the operator's
    /// `--api-rate-limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2))]
    pub requests_per_minute: Option<u32>,

    /// What happens to the Altostrat object of a resource using these credentials that
    /// leaves its own `deletionPolicy` unset and created its object: `Delete` or `Orphan`.
    /// When omitted the operator's `--default-deletion-policy` applies. Adopted objects stay
    /// orphaned unless the resource itself says `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// A key of a Secret in the operator's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CredentialsSecretReference {
    /// Name of the Secret, in the operator's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the token.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_token_key() -> String {
    super::SECRET_TOKEN_KEY.to_owned()
}

/// The health and use of the credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpnCredentialsStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The requests per minute the operator spends with the token at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// How many VpnInstances and VpnPeers used these credentials at their last reconcile.
    #[serde(default)]
    pub users: u32,
    /// Altostrat calls answered with the token in the last minute, as of the last status
    /// write (the status is written again when it changes by more than a few calls; see
    /// the metrics for exact figures).
    #[serde(default)]
    pub calls_last_minute: u32,
    /// The last error reading the Secret or using the token (never the token itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// `Ready`: Altostrat accepts the token (judged from the answers to the calls made with
    /// it, and a check call when none were made). `Stalled`: the credentials cannot work
    /// until someone changes the Secret or the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
