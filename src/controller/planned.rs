//! The Altostrat calls a withheld step would have made, as `status.plan` shows them: method,
//! path, and each field the call sets with the value Altostrat holds and the one sent. Pure.
//! Only request bodies are rendered, and none carries a secret (a peer's share token is
//! Altostrat's answer, never part of a request).

use serde::Serialize;
use serde_json::Value;

use super::plan;
use crate::altostrat::model::{Instance, InstanceUpdate, Peer, PeerUpdate};
use crate::crd::{FieldChange, PlannedCall, VpnInstanceSpec, VpnPeerSpec};

/// Placeholder for the id of an instance a planned create makes.
pub const INSTANCE_ID: &str = "{instanceId}";

/// Creating the instance: the POST, then the update that applies the rest of the spec once the
/// hub is provisioned (a create carries only name, hostname and region), if the spec sets more.
pub fn create_instance_calls(spec: &VpnInstanceSpec) -> Vec<PlannedCall> {
    let create = call(
        "POST",
        "/vpn/instances".into(),
        &plan::instance_create(spec),
        None,
        |_| true,
    );
    let fresh = Instance {
        name: spec.name.clone(),
        ..Instance::default()
    };
    let Some(update) = plan::instance_update(spec, &fresh) else {
        return vec![create];
    };
    // Altostrat assigns the public resolvers; an unset publicDns keeps them, so it is no change.
    let changed = plan::instance_changed_fields(&update, &fresh);
    let configures =
        |field: &str| changed.contains(&field) && (field != "publicDns" || spec.public_dns.is_some());
    let mut configure = call("PUT", instance_path(INSTANCE_ID), &update, None, configures);
    if spec.public_dns.is_none() {
        // Altostrat assigns the public resolvers: the update keeps them (padded to the two it
        // must carry), so their value is a placeholder like the id.
        let at = configure
            .changes
            .partition_point(|c| c.field.as_str() < "publicDns");
        configure.changes.insert(at, assigned_public_dns());
    }
    vec![create, configure]
}

/// The public resolvers of a created hub, as a create's update shows them: what Altostrat
/// assigns, kept.
pub fn assigned_public_dns() -> FieldChange {
    FieldChange {
        field: "publicDns".into(),
        old: None,
        new: None,
    }
}

/// Updating instance `id`, which Altostrat holds as `current` (when known).
pub fn update_instance_call(id: &str, body: &InstanceUpdate, current: Option<&Instance>) -> PlannedCall {
    let Some(current) = current else {
        return call("PUT", instance_path(id), body, None, |_| true);
    };
    let held = InstanceUpdate {
        name: current.name.clone(),
        pushed_routes: current.pushed_routes.clone(),
        public_dns: current.public_dns.clone(),
        domains: current.domains.clone(),
        split_dns: current.split_dns.clone(),
        dns_custom: current.dns_custom.clone(),
    };
    let changed = plan::instance_changed_fields(body, current);
    call("PUT", instance_path(id), body, Some(&held), |f| {
        changed.contains(&f)
    })
}

/// Creating the peer on instance `instance_id`.
pub fn create_peer_call(instance_id: &str, spec: &VpnPeerSpec) -> PlannedCall {
    let path = format!("{}/peers", instance_path(instance_id));
    call("POST", path, &plan::peer_create(spec), None, |_| true)
}

/// Updating peer `id` of instance `instance_id`, which Altostrat holds as `current`.
pub fn update_peer_call(
    instance_id: &str,
    id: &str,
    body: &PeerUpdate,
    current: Option<&Peer>,
) -> PlannedCall {
    let path = format!("{}/peers/{id}", instance_path(instance_id));
    let held = current.map(|p| PeerUpdate {
        subnets: Some(p.subnets.clone()),
        route_all: Some(p.route_all),
    });
    call("PUT", path, body, held.as_ref(), |_| true)
}

/// The names of the fields `calls` change, for condition messages.
pub fn changed_fields(calls: &[PlannedCall]) -> Vec<&str> {
    let mut fields: Vec<&str> = calls
        .iter()
        .flat_map(|c| c.changes.iter().map(|f| f.field.as_str()))
        .collect();
    fields.dedup();
    fields
}

fn instance_path(id: &str) -> String {
    format!("/vpn/instances/{id}")
}

/// A call sending `body`; the fields `include` admits (by spec name) are listed, each with its
/// value in `held` as the old one.
fn call<B: Serialize>(
    method: &str,
    path: String,
    body: &B,
    held: Option<&B>,
    include: impl Fn(&str) -> bool,
) -> PlannedCall {
    let sent = serde_json::to_value(body).unwrap_or_default();
    let held = held.map(|h| serde_json::to_value(h).unwrap_or_default());
    let changes = sent
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| (spec_name(key), key, value))
        .filter(|(field, _, _)| include(field))
        .map(|(field, key, value)| FieldChange {
            field,
            old: held.as_ref().and_then(|h| h.get(key)).map(render),
            new: Some(render(value)),
        })
        .collect();
    PlannedCall {
        method: method.to_owned(),
        path,
        changes,
    }
}

/// A wire field (`pushed_routes`) as the spec spells it (`pushedRoutes`).
fn spec_name(wire: &str) -> String {
    let mut name = String::with_capacity(wire.len());
    let mut upper = false;
    for c in wire.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                name.extend(c.to_uppercase());
                upper = false;
            }
            c => name.push(c),
        }
    }
    name
}

/// A value as `kubectl` shows it best: strings bare, anything else as JSON.
fn render(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance_spec(extra: Value) -> VpnInstanceSpec {
        let mut base = serde_json::json!({"name": "Hub", "hostname": "hub-one", "region": "sjc"});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        serde_json::from_value(base).unwrap()
    }

    fn change(field: &str, old: Option<&str>, new: &str) -> FieldChange {
        FieldChange {
            field: field.into(),
            old: old.map(str::to_owned),
            new: Some(new.into()),
        }
    }

    #[test]
    fn a_create_is_the_post_then_the_update_that_configures_the_rest_of_the_spec() {
        let bare = create_instance_calls(&instance_spec(serde_json::json!({})));
        assert_eq!(bare.len(), 1, "nothing to configure: {bare:?}");
        assert_eq!(
            (bare[0].method.as_str(), bare[0].path.as_str()),
            ("POST", "/vpn/instances")
        );
        assert_eq!(
            bare[0].changes,
            vec![
                change("hostname", None, "hub-one"),
                change("name", None, "Hub"),
                change("region", None, "sjc")
            ]
        );
        let configured = create_instance_calls(&instance_spec(serde_json::json!({
            "pushedRoutes": ["10.0.0.0/8"], "publicDns": ["1.1.1.1", "8.8.8.8"]
        })));
        assert_eq!(configured[1].method, "PUT");
        assert_eq!(configured[1].path, "/vpn/instances/{instanceId}");
        assert_eq!(
            configured[1].changes,
            vec![
                change("publicDns", None, r#"["1.1.1.1","8.8.8.8"]"#),
                change("pushedRoutes", None, r#"["10.0.0.0/8"]"#)
            ]
        );
        let assigned = create_instance_calls(&instance_spec(serde_json::json!({
            "pushedRoutes": ["10.0.0.0/8"]
        })));
        assert_eq!(
            assigned[1].changes,
            vec![
                assigned_public_dns(),
                change("pushedRoutes", None, r#"["10.0.0.0/8"]"#)
            ],
            "the resolvers Altostrat assigns are a placeholder"
        );
    }

    #[test]
    fn an_update_lists_only_the_changed_fields_with_old_and_new_values() {
        let spec = instance_spec(serde_json::json!({"pushedRoutes": ["10.0.0.0/8"]}));
        let current = Instance {
            id: "i-1".into(),
            name: "Hub".into(),
            pushed_routes: vec!["192.168.0.0/16".into()],
            public_dns: vec!["1.1.1.1".into(), "9.9.9.9".into()],
            ..Instance::default()
        };
        let body = plan::instance_update(&spec, &current).unwrap();
        let call = update_instance_call("i-1", &body, Some(&current));
        assert_eq!(
            (call.method.as_str(), call.path.as_str()),
            ("PUT", "/vpn/instances/i-1")
        );
        assert_eq!(
            call.changes,
            vec![change(
                "pushedRoutes",
                Some(r#"["192.168.0.0/16"]"#),
                r#"["10.0.0.0/8"]"#
            )]
        );
    }

    #[test]
    fn peer_calls_name_their_instance_and_never_carry_a_token() {
        let spec: VpnPeerSpec = serde_json::from_value(serde_json::json!({
            "instanceRef": {"name": "hub"}, "type": "client", "protocol": "wireguard",
            "userId": "a1b2c3d4-e5f6-7890-1234-567890abcdef", "routeAll": true
        }))
        .unwrap();
        let create = create_peer_call("i-1", &spec);
        assert_eq!(create.path, "/vpn/instances/i-1/peers");
        let fields: Vec<&str> = create.changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["protocol", "routeAll", "type", "userId"]);
        let current = Peer {
            id: "p-1".into(),
            token: Some("share-secret".into()),
            ..Peer::default()
        };
        let body = plan::peer_update(&spec, &current).unwrap();
        let update = update_peer_call("i-1", "p-1", &body, Some(&current));
        assert_eq!(update.path, "/vpn/instances/i-1/peers/p-1");
        assert_eq!(update.changes, vec![change("routeAll", Some("false"), "true")]);
        let shown = serde_json::to_string(&[create, update]).unwrap();
        assert!(!shown.contains("share-secret"), "{shown}");
    }
}
