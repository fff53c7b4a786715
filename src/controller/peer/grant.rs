//! Whether a hub admits a peer of another namespace: its `spec.allowedPeers` grant, judged on
//! the hub and the peer's Namespace as the API server holds them now.
//!
//! A grant only opens the way to a hub: the peer still attaches only to an instance resource
//! that holds the hub's ownership record (`status::attached`), and owns only its own peer.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use super::super::conditions::{ConditionState, READY, reason};
use super::super::namespaces;
use crate::crd::{FromNamespaces, PeerNamespaces, VpnInstance};

/// Whether `hub` admits peers of namespace `peer_namespace`, whose labels are `labels`
/// (`None`: not read, or the namespace is gone). `Err` says which grant is missing.
pub(crate) fn permits(
    hub: &VpnInstance,
    peer_namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<(), String> {
    let hub_namespace = hub.namespace().unwrap_or_default();
    if hub_namespace == peer_namespace {
        return Ok(());
    }
    let granted = granted(hub);
    let named = format!("VpnInstance {hub_namespace}/{}", hub.name_any());
    match (granted.from, &granted.selector) {
        (FromNamespaces::All, _) => Ok(()),
        (FromNamespaces::Same, _) => Err(format!(
            "{named} admits peers of its own namespace only (spec.allowedPeers.namespaces.from: Same); \
             its owners may grant namespace {peer_namespace} with from: Selector or All"
        )),
        (FromNamespaces::Selector, None) => Err(format!(
            "{named} has allowedPeers from: Selector without a selector: it grants no other namespace"
        )),
        (FromNamespaces::Selector, Some(selector)) => selected(selector, labels)
            .map_err(|why| format!("{named} does not grant namespace {peer_namespace}: {why}")),
    }
}

/// The namespaces a hub grants besides its own (`Same` when it says nothing).
fn granted(hub: &VpnInstance) -> PeerNamespaces {
    hub.spec
        .allowed_peers
        .as_ref()
        .map(|a| a.namespaces.clone())
        .unwrap_or_default()
}

/// Whether `selector` selects a namespace with `labels`; `Err` says why not.
fn selected(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> Result<(), String> {
    let shown = describe(selector);
    let Some(labels) = labels else {
        return Err("the namespace could not be found".into());
    };
    match namespaces::selects(selector, labels) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "its namespace selector ({shown}) does not match this namespace's labels; a cluster administrator may label the namespace"
        )),
        Err(invalid) => Err(format!("its namespace selector has an {invalid}")),
    }
}

/// A selector as `kubectl get -l` would take it.
fn describe(selector: &LabelSelector) -> String {
    match kube::core::Selector::try_from(selector.clone()) {
        Ok(s) if s.selects_all() => "everything".into(),
        Ok(s) => s.to_string(),
        Err(_) => "invalid".into(),
    }
}

/// Whether a hub needs the peer's Namespace labels to judge the grant (only `from: Selector`
/// for a peer of another namespace): no read is made otherwise.
pub(crate) fn needs_labels(hub: &VpnInstance, peer_namespace: &str) -> bool {
    hub.namespace().as_deref() != Some(peer_namespace) && granted(hub).from == FromNamespaces::Selector
}

/// The condition of a peer its hub does not admit: only a person can change that (label the
/// namespace, or widen the hub's grant), so nothing is retried until one of them changes.
pub(crate) fn not_permitted(why: String) -> ConditionState {
    ConditionState::new(READY, false, reason::NOT_PERMITTED, why)
}

/// The condition of a peer whose hub is in a namespace the operator does not watch: no
/// reconcile of that hub runs here, so none of its peers can be served.
pub(crate) fn not_watched(hub_namespace: &str, name: &str, watched: &[String]) -> ConditionState {
    not_permitted(format!(
        "VpnInstance {hub_namespace}/{name} is in a namespace this operator does not watch \
         (WATCH_NAMESPACES: {}): name a hub of a watched namespace, or add {hub_namespace} to them",
        watched.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AllowedPeers;

    fn hub(grant: Option<PeerNamespaces>) -> VpnInstance {
        let spec = serde_json::from_value(serde_json::json!({
            "name": "Hub", "hostname": "hub", "region": "sjc"
        }))
        .unwrap();
        let mut hub = VpnInstance::new("hub", spec);
        hub.metadata.namespace = Some("network".into());
        hub.spec.allowed_peers = grant.map(|namespaces| AllowedPeers { namespaces });
        hub
    }

    fn team(value: &str) -> BTreeMap<String, String> {
        [("team".to_owned(), value.to_owned())].into()
    }

    fn selector(value: &str) -> PeerNamespaces {
        PeerNamespaces {
            from: FromNamespaces::Selector,
            selector: Some(LabelSelector {
                match_labels: Some(team(value)),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_hubs_own_namespace_is_always_admitted() {
        assert_eq!(permits(&hub(None), "network", None), Ok(()));
        assert_eq!(permits(&hub(Some(selector("apps"))), "network", None), Ok(()));
    }

    #[test]
    fn without_a_grant_another_namespace_is_not_admitted_and_told_why() {
        let refused = permits(&hub(None), "apps", Some(&team("apps"))).unwrap_err();
        assert!(refused.contains("VpnInstance network/hub"), "{refused}");
        assert!(refused.contains("from: Same"), "{refused}");
        assert!(
            !needs_labels(&hub(None), "apps"),
            "no namespace read for a hub that grants none"
        );
    }

    #[test]
    fn a_selector_admits_exactly_the_namespaces_it_matches() {
        let granting = hub(Some(selector("apps")));
        assert!(needs_labels(&granting, "apps"));
        assert_eq!(permits(&granting, "apps", Some(&team("apps"))), Ok(()));
        let refused = permits(&granting, "data", Some(&team("data"))).unwrap_err();
        assert!(refused.contains("does not grant namespace data"), "{refused}");
        assert!(refused.contains("team=apps"), "names the selector: {refused}");
        assert!(
            permits(&granting, "apps", None).is_err(),
            "labels unknown: no grant"
        );
        assert!(permits(&granting, "bare", Some(&BTreeMap::new())).is_err());
    }

    #[test]
    fn all_admits_every_namespace_and_a_selector_without_one_admits_none() {
        let all = PeerNamespaces {
            from: FromNamespaces::All,
            selector: None,
        };
        assert_eq!(permits(&hub(Some(all)), "anything", None), Ok(()));
        let empty = PeerNamespaces {
            from: FromNamespaces::Selector,
            selector: None,
        };
        assert!(permits(&hub(Some(empty)), "apps", Some(&team("apps"))).is_err());
    }
}
