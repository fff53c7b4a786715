//! Refuses to run against CRDs older than the operator's own schema.
//!
//! An API server prunes, without an error, every field its CRD does not declare: against a
//! stale CRD a new spec field (say a management policy) would vanish on the way in, and the
//! operator would act as if it had never been set. So at start-up every property path of the
//! schema generated from the Rust types must exist in the installed CRD; fields the installed
//! CRD has beyond those (a newer CRD) are fine.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::{Api, Client};

/// How to bring the CRDs up to date, named in every refusal.
const UPGRADE_HINT: &str = "upgrade the CRDs to this operator's version, then restart it: \
    `helm upgrade <release> <chart>` (the chart upgrades them unless crds.install=false), or \
    `kubectl apply --server-side -k crds/` (`-k deploy/kustomize/crds` for kustomize and GitOps)";

/// The property paths a schema declares (`spec.name`, `spec.dnsRecords[].type`; `[]` stands
/// for the items of an array, `*` for the values of a map), and the paths below which it keeps
/// unknown fields (`x-kubernetes-preserve-unknown-fields`; `""` is the root).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SchemaPaths {
    pub fields: BTreeSet<String>,
    pub open: BTreeSet<String>,
}

impl SchemaPaths {
    pub fn of(schema: &JSONSchemaProps) -> Self {
        let mut paths = Self::default();
        paths.collect(schema, "");
        paths
    }

    fn collect(&mut self, schema: &JSONSchemaProps, at: &str) {
        if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
            self.open.insert(at.to_owned());
        }
        for (name, child) in schema.properties.iter().flatten() {
            let path = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            self.fields.insert(path.clone());
            self.collect(child, &path);
        }
        match &schema.items {
            Some(JSONSchemaPropsOrArray::Schema(items)) => self.collect(items, &format!("{at}[]")),
            Some(JSONSchemaPropsOrArray::Schemas(all)) => {
                all.iter().for_each(|s| self.collect(s, &format!("{at}[]")))
            }
            None => {}
        }
        if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
            self.collect(values, &format!("{at}.*"));
        }
    }

    /// Whether a field at `path` survives this schema: declared, or below a node that keeps
    /// unknown fields.
    fn keeps(&self, path: &str) -> bool {
        self.fields.contains(path) || self.open.iter().any(|open| is_below(path, open))
    }
}

/// `path` lies below `parent` (`spec.a.b` and `spec.a[].b` lie below `spec.a`; everything
/// lies below the root, `""`).
fn is_below(path: &str, parent: &str) -> bool {
    parent.is_empty()
        || path
            .strip_prefix(parent)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// The fields of `wanted` that `installed` would drop, each named once at its highest level
/// (a missing `spec.a` hides its own `spec.a.b`).
pub fn missing_fields(wanted: &SchemaPaths, installed: &SchemaPaths) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    for path in &wanted.fields {
        if !installed.keeps(path) && !missing.iter().any(|m| is_below(path, m)) {
            missing.push(path.clone());
        }
    }
    missing
}

/// What is wrong with one installed version of a CRD.
#[derive(Debug, PartialEq, Eq)]
pub struct StaleVersion {
    pub crd: String,
    pub version: String,
    /// Empty when the version itself is not served.
    pub missing: Vec<String>,
}

impl fmt::Display for StaleVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.missing.is_empty() {
            write!(f, "{} does not serve version {}", self.crd, self.version)
        } else {
            let fields = self.missing.join(", ");
            write!(f, "{} {} lacks {fields}", self.crd, self.version)
        }
    }
}

fn schema_of(crd: &CustomResourceDefinition, version: &str) -> Option<SchemaPaths> {
    let v = crd.spec.versions.iter().find(|v| v.name == version && v.served)?;
    let schema = v.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
    // A served version without a schema keeps every field.
    Some(schema.map_or_else(
        || SchemaPaths {
            open: BTreeSet::from([String::new()]),
            ..SchemaPaths::default()
        },
        SchemaPaths::of,
    ))
}

/// Every version of `wanted` that `installed` does not serve, or serves with fewer fields.
pub fn stale_versions(
    wanted: &CustomResourceDefinition,
    installed: &CustomResourceDefinition,
) -> Vec<StaleVersion> {
    let crd = wanted.metadata.name.clone().unwrap_or_default();
    let mut stale = Vec::new();
    for version in &wanted.spec.versions {
        let Some(want) = schema_of(wanted, &version.name) else {
            continue;
        };
        let (missing, served) = match schema_of(installed, &version.name) {
            Some(have) => (missing_fields(&want, &have), true),
            None => (Vec::new(), false),
        };
        if !served || !missing.is_empty() {
            let version = version.name.clone();
            stale.push(StaleVersion {
                crd: crd.clone(),
                version,
                missing,
            });
        }
    }
    stale
}

/// Why the operator refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum CrdCheckError {
    #[error(
        "the installed CRDs are older than this operator, and the API server would silently drop \
         the fields they lack: {}; {UPGRADE_HINT}",
        list(.0)
    )]
    Stale(Vec<StaleVersion>),
    #[error("CRD {} not installed; {UPGRADE_HINT}", .0.join(", "))]
    NotInstalled(Vec<String>),
    #[error(
        "cannot read CustomResourceDefinition {0}, which the operator checks at start-up: grant \
         get on apiextensions.k8s.io customresourcedefinitions named {0} (the chart's and the \
         kustomize base's ClusterRole do)"
    )]
    Forbidden(String),
    #[error("reading CustomResourceDefinition {name}: {source}")]
    Read { name: String, source: kube::Error },
}

fn list(stale: &[StaleVersion]) -> String {
    stale
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Compares each of `wanted` with the CRD of the same name installed in the cluster.
pub async fn check_installed(
    client: &Client,
    wanted: &[CustomResourceDefinition],
) -> Result<(), CrdCheckError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let (mut stale, mut absent) = (Vec::new(), Vec::new());
    for crd in wanted {
        let name = crd.metadata.name.clone().unwrap_or_default();
        match api.get_opt(&name).await {
            Ok(Some(installed)) => stale.extend(stale_versions(crd, &installed)),
            Ok(None) => absent.push(name),
            Err(kube::Error::Api(status)) if status.is_forbidden() => {
                return Err(CrdCheckError::Forbidden(name));
            }
            Err(source) => return Err(CrdCheckError::Read { name, source }),
        }
    }
    if !absent.is_empty() {
        return Err(CrdCheckError::NotInstalled(absent));
    }
    if !stale.is_empty() {
        return Err(CrdCheckError::Stale(stale));
    }
    Ok(())
}

/// The start-up check of the operator's own CRDs.
pub async fn ensure_current(client: &Client) -> Result<(), CrdCheckError> {
    check_installed(client, &crate::crd::all()).await?;
    tracing::info!("the installed CRDs declare every field of this operator's schema");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{VpnInstance, VpnPeer};
    use kube::CustomResourceExt;
    use serde_json::json;

    fn schema(value: serde_json::Value) -> JSONSchemaProps {
        serde_json::from_value(value).unwrap()
    }

    /// The instance CRD with one property of `spec` removed, as a stale CRD would lack it.
    fn without_spec_field(field: &str) -> CustomResourceDefinition {
        let mut crd = VpnInstance::crd();
        let root = crd.spec.versions[0].schema.as_mut().unwrap();
        let spec = root
            .open_api_v3_schema
            .as_mut()
            .unwrap()
            .properties
            .as_mut()
            .unwrap();
        let spec = spec.get_mut("spec").unwrap().properties.as_mut().unwrap();
        assert!(spec.remove(field).is_some(), "the schema has spec.{field}");
        crd
    }

    #[test]
    fn paths_name_nested_properties_array_items_and_map_values() {
        let paths = SchemaPaths::of(&schema(json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": {
                    "records": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}}}},
                    "labels": {"type": "object", "additionalProperties": {"type": "object",
                        "properties": {"v": {"type": "string"}}}},
                    "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}
        })));
        let fields: Vec<&str> = paths.fields.iter().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "spec",
                "spec.labels",
                "spec.labels.*.v",
                "spec.raw",
                "spec.records",
                "spec.records[].name"
            ]
        );
        assert_eq!(paths.open, BTreeSet::from(["spec.raw".to_owned()]));
    }

    #[test]
    fn a_missing_field_is_named_once_at_its_highest_level() {
        let wanted = SchemaPaths::of(&schema(json!({"properties": {"spec": {"properties": {
            "policy": {"properties": {"mode": {"type": "string"}}},
            "name": {"type": "string"}}}}})));
        let installed = SchemaPaths::of(&schema(json!({"properties": {"spec": {"properties": {
            "name": {"type": "string"}}}}})));
        assert_eq!(missing_fields(&wanted, &installed), ["spec.policy"]);
    }

    #[test]
    fn fields_below_a_node_that_keeps_unknown_fields_are_not_missing() {
        let wanted = SchemaPaths::of(&schema(json!({"properties": {"spec": {"properties": {
            "extra": {"properties": {"a": {"type": "string"}}}}}}})));
        let installed = SchemaPaths::of(&schema(json!({"properties": {"spec": {
            "type": "object", "x-kubernetes-preserve-unknown-fields": true}}})));
        assert!(missing_fields(&wanted, &installed).is_empty());
        // `spec.extraneous` is not below `spec.extra`.
        assert!(!is_below("spec.extraneous", "spec.extra"));
        assert!(is_below("spec.extra[].a", "spec.extra"));
    }

    #[test]
    fn the_operators_own_crds_are_current_against_themselves() {
        for crd in crate::crd::all() {
            assert_eq!(stale_versions(&crd, &crd), []);
        }
    }

    #[test]
    fn a_stale_crd_missing_a_spec_field_is_refused_naming_the_field() {
        let stale = stale_versions(&VpnInstance::crd(), &without_spec_field("publicDns"));
        assert_eq!(
            stale,
            [StaleVersion {
                crd: "vpninstances.vpn.altostrat.io".into(),
                version: "v1alpha1".into(),
                missing: vec!["spec.publicDns".into()],
            }]
        );
        let message = CrdCheckError::Stale(stale).to_string();
        for part in [
            "vpninstances.vpn.altostrat.io v1alpha1 lacks spec.publicDns",
            "helm upgrade",
            "kubectl apply --server-side -k crds/",
        ] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }
    }

    #[test]
    fn a_newer_crd_with_more_fields_is_accepted() {
        let older_operator = without_spec_field("publicDns");
        assert_eq!(stale_versions(&older_operator, &VpnInstance::crd()), []);
    }

    #[test]
    fn a_version_the_installed_crd_does_not_serve_is_refused() {
        let mut installed = VpnPeer::crd();
        installed.spec.versions[0].served = false;
        let stale = stale_versions(&VpnPeer::crd(), &installed);
        assert_eq!(stale.len(), 1);
        assert_eq!(
            stale[0].to_string(),
            "vpnpeers.vpn.altostrat.io does not serve version v1alpha1"
        );
    }
}
