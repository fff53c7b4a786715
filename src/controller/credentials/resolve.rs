//! Which credentials a resource uses: a pure decision over what it names, its namespace's
//! labels and the VpnCredentials that exist.
//!
//! The order: the resource's own labelled Secret (`credentialsSecretRef`), then the
//! VpnCredentials it names (`credentialsRef`) if its namespace may use it, then the one whose
//! `defaultFor` selects its namespace, then the operator's own token. Nothing is guessed: two
//! defaults for one namespace, or a named grant that does not select the namespace, is an
//! error that names what is missing.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::controller::namespaces::selects;
use crate::crd::{DeletionPolicy, SecretReference, VpnCredentials};

/// What a resource names for its credentials (a peer: what its instance names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub secret: Option<SecretReference>,
    pub named: Option<String>,
}

/// Where a resource's token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Its own Secret, in its namespace.
    OwnSecret(SecretReference),
    /// A VpnCredentials, by name.
    Shared(String),
    /// The operator's token (which may itself be limited to some namespaces).
    Operator,
}

impl Wanted {
    /// Whether resolving needs the namespace's labels: only when no own Secret settles it and
    /// a grant or a default has to be judged.
    pub fn needs_labels(&self, all: &[VpnCredentials]) -> bool {
        self.secret.is_none() && (self.named.is_some() || all.iter().any(|c| c.spec.default_for.is_some()))
    }
}

/// The source of the credentials of a resource in `namespace` (with `labels`) that names
/// `wanted`, among `all`; `Err` says why none may be used.
pub fn resolve(
    wanted: &Wanted,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    all: &[VpnCredentials],
) -> Result<Source, String> {
    if let Some(secret) = &wanted.secret {
        return Ok(Source::OwnSecret(secret.clone()));
    }
    if let Some(name) = &wanted.named {
        let credentials = all
            .iter()
            .find(|c| c.name_any() == *name)
            .ok_or_else(|| format!("VpnCredentials {name} not found"))?;
        allows(credentials, namespace, labels)?;
        return Ok(Source::Shared(name.clone()));
    }
    let mut defaults: Vec<String> = all
        .iter()
        .filter(|c| is_default_for(c, labels) && allows(c, namespace, labels).is_ok())
        .map(|c| c.name_any())
        .collect();
    defaults.sort();
    match defaults.as_slice() {
        [] => Ok(Source::Operator),
        [one] => Ok(Source::Shared(one.clone())),
        [first, second, ..] => Err(format!(
            "VpnCredentials {first} and {second} are both the default for namespace {namespace}: \
             narrow one's defaultFor, or name one in credentialsRef"
        )),
    }
}

/// `Ok` if `credentials` allow `namespace`, else the missing grant.
pub fn allows(
    credentials: &VpnCredentials,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), String> {
    let name = credentials.name_any();
    let Some(selector) = &credentials.spec.allowed_namespaces else {
        return Err(format!(
            "VpnCredentials {name} does not allow namespace {namespace}: it has no allowedNamespaces"
        ));
    };
    match selects(selector, labels) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "VpnCredentials {name} does not allow namespace {namespace}: its allowedNamespaces does not select it"
        )),
        Err(invalid) => Err(format!(
            "VpnCredentials {name} does not allow namespace {namespace}: allowedNamespaces is an {invalid}"
        )),
    }
}

/// Whether the `defaultFor` of `credentials` selects a namespace with `labels`; an invalid
/// selector selects nothing.
pub fn is_default_for(credentials: &VpnCredentials, labels: &BTreeMap<String, String>) -> bool {
    selected(credentials.spec.default_for.as_ref(), labels)
}

fn selected(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    selector.is_some_and(|s| selects(s, labels).unwrap_or(false))
}

/// The deletion policy of a resource that leaves its own unset and created its object: its
/// VpnCredentials' if they set one, else the operator's default.
pub fn created_default(
    source: Option<&Source>,
    all: &[VpnCredentials],
    operator_default: DeletionPolicy,
) -> DeletionPolicy {
    let Some(Source::Shared(name)) = source else {
        return operator_default;
    };
    all.iter()
        .find(|c| c.name_any() == *name)
        .and_then(|c| c.spec.deletion_policy)
        .unwrap_or(operator_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(name: &str, allowed: Option<&str>, default_for: Option<&str>) -> VpnCredentials {
        let selector = |team: &str| serde_json::json!({"matchLabels": {"team": team}});
        let mut spec = serde_json::json!({"secretRef": {"name": "token"}});
        if let Some(team) = allowed {
            spec["allowedNamespaces"] = if team == "*" {
                serde_json::json!({})
            } else {
                selector(team)
            };
        }
        if let Some(team) = default_for {
            spec["defaultFor"] = selector(team);
        }
        VpnCredentials::new(name, serde_json::from_value(spec).unwrap())
    }

    fn team(name: &str) -> BTreeMap<String, String> {
        [("team".to_owned(), name.to_owned())].into()
    }

    fn named(name: &str) -> Wanted {
        Wanted {
            secret: None,
            named: Some(name.into()),
        }
    }

    #[test]
    fn the_resources_own_secret_comes_first() {
        let own = SecretReference { name: "mine".into() };
        let wanted = Wanted {
            secret: Some(own.clone()),
            named: Some("shared".into()),
        };
        let all = [credentials("shared", Some("a"), Some("a"))];
        assert!(!wanted.needs_labels(&all));
        assert_eq!(
            resolve(&wanted, "ns", &team("b"), &all),
            Ok(Source::OwnSecret(own))
        );
    }

    #[test]
    fn named_credentials_are_used_only_where_granted_and_the_error_names_the_grant() {
        let all = [
            credentials("shared", Some("a"), None),
            credentials("ungranted", None, None),
            credentials("everyone", Some("*"), None),
        ];
        assert_eq!(
            resolve(&named("shared"), "team-a", &team("a"), &all),
            Ok(Source::Shared("shared".into()))
        );
        assert_eq!(
            resolve(&named("shared"), "team-b", &team("b"), &all),
            Err("VpnCredentials shared does not allow namespace team-b: its allowedNamespaces does not select it".into())
        );
        let none = resolve(&named("ungranted"), "team-a", &team("a"), &all).unwrap_err();
        assert!(none.contains("has no allowedNamespaces"), "{none}");
        assert_eq!(
            resolve(&named("everyone"), "x", &BTreeMap::new(), &all),
            Ok(Source::Shared("everyone".into()))
        );
        assert_eq!(
            resolve(&named("missing"), "x", &team("a"), &all),
            Err("VpnCredentials missing not found".into())
        );
    }

    #[test]
    fn a_namespace_default_applies_only_where_also_allowed_and_two_are_refused_by_name() {
        let one = [
            credentials("platform", Some("*"), Some("a")),
            credentials("narrow", Some("c"), Some("b")),
        ];
        let unnamed = Wanted::default();
        assert!(unnamed.needs_labels(&one));
        assert_eq!(
            resolve(&unnamed, "team-a", &team("a"), &one),
            Ok(Source::Shared("platform".into()))
        );
        assert_eq!(
            resolve(&unnamed, "team-b", &team("b"), &one),
            Ok(Source::Operator),
            "a default that is not allowed is no default"
        );
        let two = [
            credentials("zeta", Some("*"), Some("a")),
            credentials("alpha", Some("a"), Some("a")),
        ];
        let refused = resolve(&unnamed, "team-a", &team("a"), &two).unwrap_err();
        assert!(
            refused.contains("VpnCredentials alpha and zeta are both the default for namespace team-a"),
            "{refused}"
        );
        assert!(!unnamed.needs_labels(&[credentials("x", Some("*"), None)]));
        assert_eq!(resolve(&unnamed, "team-a", &team("a"), &[]), Ok(Source::Operator));
    }

    #[test]
    fn the_created_default_is_the_credentials_then_the_operators() {
        let mut orphaning = credentials("careful", Some("*"), None);
        orphaning.spec.deletion_policy = Some(DeletionPolicy::Orphan);
        let all = [orphaning, credentials("plain", Some("*"), None)];
        let shared = |name: &str| Source::Shared(name.into());
        use DeletionPolicy::{Delete, Orphan};
        assert_eq!(created_default(Some(&shared("careful")), &all, Delete), Orphan);
        assert_eq!(created_default(Some(&shared("plain")), &all, Delete), Delete);
        assert_eq!(created_default(Some(&shared("plain")), &all, Orphan), Orphan);
        assert_eq!(created_default(Some(&Source::Operator), &all, Orphan), Orphan);
        assert_eq!(created_default(None, &all, Delete), Delete);
    }
}
