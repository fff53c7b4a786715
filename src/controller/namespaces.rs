//! Namespace labels, for the grants that select namespaces by label (credentials a namespace
//! may use, hubs a namespace may attach peers to).
//!
//! A grant is proof of permission, so it is judged on the Namespace as the API server holds it
//! now (a GET), never on a cache that a watch scope may see only part of. Only cluster
//! administrators label namespaces, so a tenant cannot grant itself anything.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use kube::{Api, Client};

use super::error::{Error, Result};

/// The labels of namespace `name` as the API server holds them now; `None` if it does not
/// exist.
pub async fn labels(client: &Client, name: &str) -> Result<Option<BTreeMap<String, String>>> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = namespaces
        .get_metadata_opt(name)
        .await
        .map_err(Error::kube(format!("read of Namespace {name}")))?;
    Ok(namespace.map(|ns| ns.metadata.labels.unwrap_or_default()))
}

/// Whether `selector` selects a namespace with `labels`. An empty selector selects every
/// namespace, as in Kubernetes; `Err` names what is wrong with an invalid selector (an
/// unknown operator, or `In` without values), which selects nothing.
pub fn selects(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> std::result::Result<bool, String> {
    let selector =
        Selector::try_from(selector.clone()).map_err(|e| format!("invalid label selector: {}", e.0))?;
    Ok(selector.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_selector_selects_by_labels_and_expressions() {
        let team_apps = LabelSelector {
            match_labels: Some(labels(&[("team", "apps")])),
            ..Default::default()
        };
        assert_eq!(
            selects(&team_apps, &labels(&[("team", "apps"), ("x", "y")])),
            Ok(true)
        );
        assert_eq!(selects(&team_apps, &labels(&[("team", "data")])), Ok(false));
        assert_eq!(selects(&team_apps, &labels(&[])), Ok(false));

        let not_prod = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "NotIn".into(),
                values: Some(vec!["prod".into()]),
            }]),
            ..Default::default()
        };
        assert_eq!(selects(&not_prod, &labels(&[("env", "dev")])), Ok(true));
        assert_eq!(selects(&not_prod, &labels(&[("env", "prod")])), Ok(false));
    }

    #[test]
    fn an_empty_selector_selects_every_namespace_and_an_invalid_one_is_named() {
        assert_eq!(selects(&LabelSelector::default(), &labels(&[])), Ok(true));
        let invalid = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(selects(&invalid, &labels(&[])).unwrap_err().contains("operator"));
    }
}
