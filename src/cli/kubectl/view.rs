//! Pure: what the plugin prints, from resources already read (`status` as a tree, `plan` as
//! calls with their changes).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use crate::controller::conditions::{PAUSED, PROFILE_READY, READY, STALLED, SYNCED};
use crate::crd::{ManagementPolicy, PAUSED_ANNOTATION, PlannedCall, VpnInstance, VpnPeer};

/// One resource of either kind, as the plugin shows it.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub kind: &'static str,
    pub name: String,
    pub policy: ManagementPolicy,
    pub altostrat_id: Option<String>,
    pub conditions: Vec<Condition>,
    pub plan: Vec<PlannedCall>,
    pub plan_digest: Option<String>,
    pub paused: bool,
}

impl From<&VpnInstance> for View {
    fn from(o: &VpnInstance) -> Self {
        let status = o.status.clone().unwrap_or_default();
        Self {
            kind: "VpnInstance",
            name: o.name_any(),
            policy: o.spec.management_policy,
            altostrat_id: status.instance_id,
            conditions: status.conditions,
            plan: status.plan,
            plan_digest: status.plan_digest,
            paused: is_paused(o),
        }
    }
}

impl From<&VpnPeer> for View {
    fn from(o: &VpnPeer) -> Self {
        let status = o.status.clone().unwrap_or_default();
        Self {
            kind: "VpnPeer",
            name: o.name_any(),
            policy: o.spec.management_policy,
            altostrat_id: status.peer_id,
            conditions: status.conditions,
            plan: status.plan,
            plan_digest: status.plan_digest,
            paused: is_paused(o),
        }
    }
}

fn is_paused(o: &impl ResourceExt) -> bool {
    o.annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v == "true")
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn status_of(conditions: &[Condition], type_: &str) -> String {
    let status = condition(conditions, type_).map_or("Unknown", |c| c.status.as_str());
    format!("{type_}={status}")
}

/// `Kind/name  Ready=… Synced=…  Reason  [Policy] [paused]`, then, unless Ready, what it
/// waits for (the Ready message), and a Stalled message.
fn resource_lines(view: &View) -> Vec<String> {
    let ready = condition(&view.conditions, READY);
    let mut head = format!(
        "{}/{}  {}  {}",
        view.kind,
        view.name,
        status_of(&view.conditions, READY),
        status_of(&view.conditions, SYNCED)
    );
    if let Some(reason) = ready.map(|c| c.reason.as_str()).filter(|r| !r.is_empty()) {
        let _ = write!(head, "  {reason}");
    }
    if view.policy != ManagementPolicy::Full {
        let _ = write!(head, "  [{:?}]", view.policy);
    }
    if view.paused || condition(&view.conditions, PAUSED).is_some_and(|c| c.status == "True") {
        head.push_str("  [paused]");
    }
    let mut lines = vec![head];
    let waiting = ready.filter(|c| c.status != "True" && !c.message.is_empty());
    if let Some(c) = waiting {
        lines.push(format!("waits for: {}", c.message));
    }
    let stalled = condition(&view.conditions, STALLED).filter(|c| c.status == "True");
    match stalled {
        Some(c) if waiting.is_some_and(|w| w.message == c.message) => lines.push("stalled: yes".into()),
        Some(c) => lines.push(format!("stalled: {}", c.message)),
        None => {}
    }
    if !view.plan.is_empty() {
        lines.push(format!(
            "plan: {} calls withheld (kubectl altostrat plan)",
            view.plan.len()
        ));
    }
    lines
}

/// The profile Secret of a peer that asks for one: its name, whether it exists, and the
/// peer's `ProfileReady`.
fn profile_lines(peer: &VpnPeer, secrets: &BTreeSet<String>) -> Vec<String> {
    let Some(wanted) = &peer.spec.profile_secret else {
        return vec![];
    };
    let conditions = peer
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let ready = condition(conditions, PROFILE_READY);
    let exists = if secrets.contains(&wanted.name) {
        "present"
    } else {
        "absent"
    };
    let mut head = format!(
        "Secret/{}  {}  {exists}",
        wanted.name,
        status_of(conditions, PROFILE_READY)
    );
    if let Some(reason) = ready.map(|c| c.reason.as_str()).filter(|r| !r.is_empty()) {
        let _ = write!(head, "  {reason}");
    }
    let mut lines = vec![head];
    if let Some(c) = ready.filter(|c| c.status != "True" && !c.message.is_empty()) {
        lines.push(format!("waits for: {}", c.message));
    }
    lines
}

/// Appends `lines` as one node of the tree: its first line after the branch, the others
/// under it.
fn node(out: &mut String, prefix: &str, last: bool, lines: &[String]) {
    let (branch, under) = if last {
        ("└── ", "    ")
    } else {
        ("├── ", "│   ")
    };
    for (i, line) in lines.iter().enumerate() {
        let lead = if i == 0 { branch } else { under };
        let _ = writeln!(out, "{prefix}{lead}{line}");
    }
}

/// The hub a peer names, as (namespace, name): its own namespace unless `instanceRef` names
/// another.
pub fn hub_of(peer: &VpnPeer) -> (String, String) {
    (peer.instance_namespace(), peer.spec.instance_ref.name.clone())
}

fn key(instance: &VpnInstance) -> (String, String) {
    (instance.namespace().unwrap_or_default(), instance.name_any())
}

/// The tree `kubectl altostrat status` prints: each hub, its peers, each peer's profile
/// Secret; peers whose hub is not in the list come last, under their `instanceRef` (a hub
/// not found, or one of another namespace).
pub fn status_tree(instances: &[VpnInstance], peers: &[VpnPeer], secrets: &BTreeSet<String>) -> String {
    let mut out = String::new();
    let hubs: BTreeSet<(String, String)> = instances.iter().map(key).collect();
    for instance in instances {
        let lines = resource_lines(&View::from(instance));
        let _ = writeln!(out, "{}", lines[0]);
        for line in &lines[1..] {
            let _ = writeln!(out, "    {line}");
        }
        let own: Vec<&VpnPeer> = peers.iter().filter(|p| hub_of(p) == key(instance)).collect();
        peer_nodes(&mut out, &own, secrets);
    }
    let elsewhere: BTreeSet<((String, String), String)> = peers
        .iter()
        .filter(|p| !hubs.contains(&hub_of(p)))
        .map(|p| (hub_of(p), p.namespace().unwrap_or_default()))
        .collect();
    for ((hub_namespace, hub), peer_namespace) in elsewhere {
        let _ = if hub_namespace == peer_namespace {
            writeln!(out, "VpnInstance/{hub}  (not found)")
        } else {
            writeln!(out, "VpnInstance/{hub}  (in namespace {hub_namespace})")
        };
        let own: Vec<&VpnPeer> = peers
            .iter()
            .filter(|p| hub_of(p) == (hub_namespace.clone(), hub.clone()))
            .filter(|p| p.namespace().unwrap_or_default() == peer_namespace)
            .collect();
        peer_nodes(&mut out, &own, secrets);
    }
    if out.is_empty() {
        out.push_str("no VpnInstance or VpnPeer found\n");
    }
    out
}

fn peer_nodes(out: &mut String, peers: &[&VpnPeer], secrets: &BTreeSet<String>) {
    for (i, peer) in peers.iter().enumerate() {
        let last = i + 1 == peers.len();
        node(out, "", last, &resource_lines(&View::from(*peer)));
        let profile = profile_lines(peer, secrets);
        if !profile.is_empty() {
            node(out, if last { "    " } else { "│   " }, true, &profile);
        }
    }
}

/// The calls `view` withholds, each with its changed fields, and how to approve them.
pub fn plan_text(view: &View) -> String {
    let mut out = format!("{}/{} (managementPolicy {:?})", view.kind, view.name, view.policy);
    if view.plan.is_empty() {
        out.push_str(": no calls withheld\n");
        return out;
    }
    let digest = view.plan_digest.as_deref().unwrap_or("none");
    let _ = writeln!(out, ": {} calls withheld, plan digest {digest}", view.plan.len());
    for call in &view.plan {
        let _ = writeln!(out, "  {} {}", call.method, call.path);
        for change in &call.changes {
            let old = change.old.as_deref().unwrap_or("(none)");
            let new = change.new.as_deref().unwrap_or("(assigned by Altostrat)");
            let _ = writeln!(out, "      {}: {old} -> {new}", change.field);
        }
    }
    if view.policy == ManagementPolicy::Plan {
        let _ = writeln!(
            out,
            "approve with: kubectl altostrat approve {}/{} --digest {digest}",
            view.kind.to_ascii_lowercase(),
            view.name
        );
    } else if view.paused {
        let _ = writeln!(
            out,
            "sent when resumed: kubectl altostrat resume {}/{}",
            view.kind.to_ascii_lowercase(),
            view.name
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        FieldChange, InstanceReference, PeerKind, PeerProtocol, ProfileSecretSpec, VpnInstanceSpec,
        VpnPeerSpec,
    };

    fn ready(status: &str, reason: &str, message: &str) -> Condition {
        cond(READY, status, reason, message)
    }

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }
    }

    fn hub(name: &str, conditions: Vec<Condition>) -> VpnInstance {
        let mut hub = VpnInstance::new(
            name,
            VpnInstanceSpec {
                name: "Hub".into(),
                hostname: name.into(),
                region: "sjc".into(),
                pushed_routes: vec![],
                public_dns: None,
                domains: vec![],
                split_dns: vec![],
                dns_custom: vec![],
                deletion_policy: None,
                management_policy: ManagementPolicy::Full,
                credentials_secret_ref: None,
                credentials_ref: None,
                allowed_peers: None,
                instance_id: None,
            },
        );
        hub.status = Some(crate::crd::VpnInstanceStatus {
            conditions,
            ..Default::default()
        });
        hub
    }

    fn peer(name: &str, hub: &str, profile: Option<&str>, conditions: Vec<Condition>) -> VpnPeer {
        let mut peer = VpnPeer::new(
            name,
            VpnPeerSpec {
                instance_ref: InstanceReference {
                    name: hub.into(),
                    namespace: None,
                },
                kind: PeerKind::Client,
                protocol: PeerProtocol::Wireguard,
                user_id: Some("a1b2c3d4-e5f6-7890-1234-567890abcdef".into()),
                route_all: None,
                site_id: None,
                subnets: None,
                deletion_policy: None,
                management_policy: ManagementPolicy::Full,
                profile_secret: profile.map(|name| ProfileSecretSpec { name: name.into() }),
                peer_id: None,
            },
        );
        peer.status = Some(crate::crd::VpnPeerStatus {
            conditions,
            ..Default::default()
        });
        peer
    }

    #[test]
    fn the_tree_shows_each_hub_its_peers_their_secrets_and_what_they_wait_for() {
        let hubs = [hub(
            "corp",
            vec![
                ready("True", "Available", ""),
                cond(SYNCED, "True", "ReconcileSuccess", ""),
            ],
        )];
        let peers = [
            peer(
                "alice",
                "corp",
                Some("alice-vpn"),
                vec![
                    ready("True", "Available", ""),
                    cond(PROFILE_READY, "True", "ProfileDelivered", ""),
                ],
            ),
            peer(
                "bob",
                "corp",
                None,
                vec![ready(
                    "False",
                    "WaitingForInstance",
                    "instance corp is provisioning",
                )],
            ),
            peer("carol", "gone", None, vec![]),
        ];
        let secrets = BTreeSet::from(["alice-vpn".to_owned()]);
        let tree = status_tree(&hubs, &peers, &secrets);
        assert_eq!(
            tree,
            "VpnInstance/corp  Ready=True  Synced=True  Available\n\
             ├── VpnPeer/alice  Ready=True  Synced=Unknown  Available\n\
             │   └── Secret/alice-vpn  ProfileReady=True  present  ProfileDelivered\n\
             └── VpnPeer/bob  Ready=False  Synced=Unknown  WaitingForInstance\n\
             \x20   waits for: instance corp is provisioning\n\
             VpnInstance/gone  (not found)\n\
             └── VpnPeer/carol  Ready=Unknown  Synced=Unknown\n"
        );
        assert_eq!(
            status_tree(&[], &[], &secrets),
            "no VpnInstance or VpnPeer found\n"
        );
    }

    #[test]
    fn a_peer_of_another_namespaces_hub_is_not_shown_under_a_local_hub_of_that_name() {
        let hubs = [hub("corp", vec![ready("True", "Available", "")])];
        let mut dave = peer("dave", "corp", None, vec![ready("True", "Available", "")]);
        dave.spec.instance_ref.namespace = Some("network".into());
        let tree = status_tree(&hubs, &[dave], &BTreeSet::new());
        assert_eq!(
            tree,
            "VpnInstance/corp  Ready=True  Synced=Unknown  Available\n\
             VpnInstance/corp  (in namespace network)\n\
             └── VpnPeer/dave  Ready=True  Synced=Unknown  Available\n"
        );
    }

    #[test]
    fn a_plan_lists_its_calls_changes_and_how_to_approve_them() {
        let view = View {
            kind: "VpnInstance",
            name: "corp".into(),
            policy: ManagementPolicy::Plan,
            plan: vec![PlannedCall {
                method: "PUT".into(),
                path: "/vpn/instances/1".into(),
                changes: vec![FieldChange {
                    field: "name".into(),
                    old: Some("\"Old\"".into()),
                    new: Some("\"New\"".into()),
                }],
            }],
            plan_digest: Some("0123456789abcdef".into()),
            ..View::default()
        };
        assert_eq!(
            plan_text(&view),
            "VpnInstance/corp (managementPolicy Plan): 1 calls withheld, plan digest 0123456789abcdef\n  \
             PUT /vpn/instances/1\n      name: \"Old\" -> \"New\"\n\
             approve with: kubectl altostrat approve vpninstance/corp --digest 0123456789abcdef\n"
        );
        let none = View { plan: vec![], ..view };
        assert_eq!(
            plan_text(&none),
            "VpnInstance/corp (managementPolicy Plan): no calls withheld\n"
        );
    }
}
