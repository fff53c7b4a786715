//! Change control under `managementPolicy: Plan`: the digest of a plan, and the approval that
//! lets exactly that plan be sent (the annotation `vpn.altostrat.io/approve-plan` names the
//! digest). Pure.
//!
//! An approval is taken when the plan the reconcile would now send has the approved digest;
//! from then on it is kept in `status.approvedPlan` with the calls not sent yet, and each call
//! sent must be the next of them (a create's update comes once the hub is provisioned). Once
//! the last is sent it is spent: it authorises nothing more, not even a correction back to the
//! state it made (a new change, or a repair of drift, is a new plan with its own digest).

use ring::digest::{SHA256, digest as sha256};
use serde_json::Value;

use super::conditions::{ConditionedStatus, HasStatus};
use super::plan;
use super::planned::INSTANCE_ID;
use super::policy::{Gate, annotation};
use crate::crd::{APPROVE_PLAN_ANNOTATION, ApprovedPlan, FieldChange, ManagementPolicy, PlannedCall};

/// Fields whose lists Altostrat treats as sets: their order changes no digest and no match.
const SET_FIELDS: &[&str] = &["pushedRoutes", "domains", "splitDns", "dnsCustom", "subnets"];

/// Hex digits of the digest shown (64 bits of SHA-256: short enough to type, and a person
/// compares it with a plan they read, not with an adversary's choice).
const DIGEST_HEX: usize = 16;

/// The digest of `calls` (`None` for no plan): the same calls always give the same digest,
/// whatever the order of a set-like list; any other difference in a method, a path, a field or
/// a value changes it.
pub fn digest(calls: &[PlannedCall]) -> Option<String> {
    if calls.is_empty() {
        return None;
    }
    let canonical: Vec<Value> = calls.iter().map(canonical_call).collect();
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    let hash = sha256(&SHA256, &bytes);
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Some(hex[..DIGEST_HEX].to_owned())
}

fn canonical_call(call: &PlannedCall) -> Value {
    let changes: Vec<Value> = call
        .changes
        .iter()
        .map(|c| {
            let value = |v: &Option<String>| v.as_deref().map(|v| canonical_value(&c.field, v));
            serde_json::json!([c.field, value(&c.old), value(&c.new)])
        })
        .collect();
    serde_json::json!([call.method, call.path, changes])
}

/// A rendered value, with a set-like list sorted (its items compared as rendered).
fn canonical_value(field: &str, rendered: &str) -> String {
    if !SET_FIELDS.contains(&field) {
        return rendered.to_owned();
    }
    match serde_json::from_str::<Vec<Value>>(rendered) {
        Ok(items) => {
            let mut items: Vec<String> = items.iter().map(Value::to_string).collect();
            items.sort();
            format!("[{}]", items.join(","))
        }
        Err(_) => rendered.to_owned(),
    }
}

/// Where a resource stands with its approval, as this reconcile reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Approval {
    /// Nothing approved (or writes are not gated by plans: `Full`, `ObserveOnly`, paused).
    #[default]
    None,
    /// The annotation names a digest not taken yet: the plan with that digest may be sent.
    Offered(String),
    /// Taken: the approved calls not sent yet.
    Taken {
        digest: String,
        remaining: Vec<PlannedCall>,
    },
    /// Every call of the approved plan was sent: nothing more is approved.
    Spent(String),
}

impl Approval {
    /// The approval of a resource under `gate`, from its annotation and the approval its status
    /// records.
    pub fn read(approved: Option<&str>, recorded: Option<&ApprovedPlan>, gate: Gate) -> Self {
        let Some(approved) = approved.map(str::trim).filter(|a| !a.is_empty()) else {
            return Self::None;
        };
        if gate.policy != ManagementPolicy::Plan || gate.paused {
            return Self::None;
        }
        match recorded.filter(|r| r.digest == approved) {
            Some(r) if r.spent_at.is_some() => Self::Spent(r.digest.clone()),
            Some(r) => Self::Taken {
                digest: r.digest.clone(),
                remaining: r.remaining.clone(),
            },
            None => Self::Offered(approved.to_owned()),
        }
    }

    /// The approval of `obj`.
    pub fn of<K: HasStatus>(obj: &K, gate: Gate) -> Self {
        let recorded = obj.status().and_then(|s| s.approved_plan());
        Self::read(annotation(obj, APPROVE_PLAN_ANNOTATION), recorded, gate)
    }

    /// Whether `calls`, the plan this reconcile would now carry out, are what was approved.
    pub fn permits(&self, calls: &[PlannedCall]) -> bool {
        match self {
            Self::Offered(approved) => digest(calls).as_deref() == Some(approved.as_str()),
            Self::Taken { remaining, .. } => same_plan(remaining, calls),
            Self::None | Self::Spent(_) => false,
        }
    }

    /// The digest approved but not matching the plan, if the approval is not spent: the plan
    /// changed since it was approved.
    pub fn changed(&self) -> Option<&str> {
        match self {
            Self::Offered(digest) | Self::Taken { digest, .. } => Some(digest),
            Self::None | Self::Spent(_) => None,
        }
    }

    /// Records that the first call of `calls` (a plan this approval permits) was sent, at
    /// `now`: the rest remains approved, and the approval is spent once nothing remains. Returns
    /// what status records.
    pub fn sent(&mut self, calls: &[PlannedCall], now: &str) -> Option<ApprovedPlan> {
        let (digest, remaining) = match std::mem::take(self) {
            Self::Offered(digest) => (digest, calls.get(1..).unwrap_or_default().to_vec()),
            Self::Taken { digest, remaining } => (digest, remaining.get(1..).unwrap_or_default().to_vec()),
            other => {
                *self = other;
                return None;
            }
        };
        let spent = remaining.is_empty();
        *self = match spent {
            true => Self::Spent(digest.clone()),
            false => Self::Taken {
                digest: digest.clone(),
                remaining: remaining.clone(),
            },
        };
        Some(ApprovedPlan {
            digest,
            remaining,
            spent_at: spent.then(|| now.to_owned()),
        })
    }
}

/// Whether the plan `now` is the approved `approved`: the same calls in the same order, where
/// only what the approved plan left open may differ: the id of the instance a create makes
/// (the placeholder in its path) and the value Altostrat held before, where the plan could not
/// know it (absent).
fn same_plan(approved: &[PlannedCall], now: &[PlannedCall]) -> bool {
    approved.len() == now.len() && approved.iter().zip(now).all(|(a, n)| same_call(a, n))
}

fn same_call(approved: &PlannedCall, now: &PlannedCall) -> bool {
    let approved_field = |field: &str| approved.changes.iter().find(|a| a.field == field);
    approved.method == now.method
        && same_path(&approved.path, &now.path)
        && now
            .changes
            .iter()
            .all(|n| approved_field(&n.field).is_some_and(|a| same_change(a, n)))
        && approved
            .changes
            .iter()
            .all(|a| a.new.is_none() || now.changes.iter().any(|n| n.field == a.field))
}

fn same_path(approved: &str, now: &str) -> bool {
    let (a, n): (Vec<&str>, Vec<&str>) = (approved.split('/').collect(), now.split('/').collect());
    a.len() == n.len() && a.iter().zip(&n).all(|(a, n)| a == n || *a == INSTANCE_ID)
}

/// Whether `now` sends what `approved` does. A value the plan leaves to Altostrat (no new value:
/// a created hub's public resolvers) may only be kept as Altostrat assigned it, padded to the
/// two an update must carry.
fn same_change(approved: &FieldChange, now: &FieldChange) -> bool {
    let value = |v: &Option<String>| v.as_deref().map(|v| canonical_value(&approved.field, v));
    let sent = match &approved.new {
        Some(_) => value(&approved.new) == value(&now.new),
        None => approved.field == "publicDns" && now.new == kept(now.old.as_deref()),
    };
    sent && (approved.old.is_none() || value(&approved.old) == value(&now.old))
}

/// The resolvers an update keeps of those Altostrat holds (`held`, rendered).
fn kept(held: Option<&str>) -> Option<String> {
    let held: Vec<String> = serde_json::from_str(held.unwrap_or("[]")).ok()?;
    serde_json::to_string(&plan::kept_public_dns(&held)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(field: &str, old: Option<&str>, new: &str) -> FieldChange {
        FieldChange {
            field: field.into(),
            old: old.map(str::to_owned),
            new: Some(new.into()),
        }
    }

    fn put(path: &str, changes: Vec<FieldChange>) -> PlannedCall {
        PlannedCall {
            method: "PUT".into(),
            path: path.into(),
            changes,
        }
    }

    fn edit(routes: &str) -> Vec<PlannedCall> {
        vec![put(
            "/vpn/instances/i-1",
            vec![change("pushedRoutes", Some(r#"["10.0.0.0/8"]"#), routes)],
        )]
    }

    fn create() -> Vec<PlannedCall> {
        let post = PlannedCall {
            method: "POST".into(),
            path: "/vpn/instances".into(),
            changes: vec![change("hostname", None, "hub-one"), change("name", None, "Hub")],
        };
        let configure = put(
            "/vpn/instances/{instanceId}",
            vec![change("pushedRoutes", None, r#"["10.0.0.0/8"]"#)],
        );
        vec![post, configure]
    }

    fn planning() -> Gate {
        Gate {
            policy: ManagementPolicy::Plan,
            paused: false,
        }
    }

    #[test]
    fn a_digest_is_stable_under_reordering_of_sets_and_changed_by_any_value() {
        let plan = edit(r#"["172.16.0.0/12","192.168.0.0/16"]"#);
        let reordered = edit(r#"["192.168.0.0/16","172.16.0.0/12"]"#);
        assert_eq!(digest(&plan), digest(&reordered));
        assert_eq!(digest(&plan).unwrap().len(), DIGEST_HEX);
        assert_ne!(digest(&plan), digest(&edit(r#"["192.168.0.0/16"]"#)));
        let mut other_old = plan.clone();
        other_old[0].changes[0].old = Some(r#"["10.0.0.0/16"]"#.into());
        assert_ne!(digest(&plan), digest(&other_old), "the old value counts");
        let mut other_path = plan.clone();
        other_path[0].path = "/vpn/instances/i-2".into();
        assert_ne!(digest(&plan), digest(&other_path));
        assert_eq!(digest(&[]), None);
        let order_matters = |dns: &str| vec![put("/vpn/instances/i-1", vec![change("publicDns", None, dns)])];
        assert_ne!(
            digest(&order_matters(r#"["1.1.1.1","8.8.8.8"]"#)),
            digest(&order_matters(r#"["8.8.8.8","1.1.1.1"]"#)),
            "resolvers are tried in order: not a set"
        );
    }

    #[test]
    fn a_taken_approval_honours_only_its_placeholders() {
        let mut approval = Approval::Offered(digest(&create()).unwrap());
        assert!(approval.permits(&create()));
        let recorded = approval.sent(&create(), "2026-12-06T11:00:00Z").unwrap();
        assert_eq!(recorded.remaining, create()[1..].to_vec());
        assert_eq!(recorded.spent_at, None);
        let provisioned = |routes: &str| {
            vec![put(
                "/vpn/instances/i-9",
                vec![change("pushedRoutes", Some("[]"), routes)],
            )]
        };
        assert!(
            approval.permits(&provisioned(r#"["10.0.0.0/8"]"#)),
            "the new id and the value provisioning holds are placeholders"
        );
        assert!(!approval.permits(&provisioned(r#"["10.0.0.0/16"]"#)));
        let spent = approval.sent(&provisioned(r#"["10.0.0.0/8"]"#), "2026-12-06T11:01:00Z");
        assert_eq!(spent.unwrap().spent_at.as_deref(), Some("2026-12-06T11:01:00Z"));
        assert_eq!(approval, Approval::Spent(digest(&create()).unwrap()));
        assert!(!approval.permits(&provisioned(r#"["10.0.0.0/8"]"#)));
    }

    #[test]
    fn the_resolvers_altostrat_assigns_may_only_be_kept() {
        let approved = vec![put(
            "/vpn/instances/{instanceId}",
            vec![crate::controller::planned::assigned_public_dns()],
        )];
        let approval = Approval::Taken {
            digest: digest(&approved).unwrap(),
            remaining: approved,
        };
        let sent = |new: &str| {
            vec![put(
                "/vpn/instances/i-9",
                vec![change("publicDns", Some(r#"["9.9.9.9"]"#), new)],
            )]
        };
        assert!(approval.permits(&sent(r#"["9.9.9.9","1.1.1.1"]"#)), "padded");
        assert!(!approval.permits(&sent(r#"["8.8.8.8","1.1.1.1"]"#)), "replaced");
        assert!(
            approval.permits(&[put("/vpn/instances/i-9", vec![])]),
            "kept as is"
        );
    }

    #[test]
    fn an_approval_is_read_only_under_plan_and_never_twice() {
        let plan = edit(r#"["192.168.0.0/16"]"#);
        let approved = digest(&plan).unwrap();
        let offered = Approval::read(Some(&approved), None, planning());
        assert!(offered.permits(&plan));
        assert!(!offered.permits(&edit(r#"["172.16.0.0/12"]"#)), "another plan");
        assert_eq!(offered.changed(), Some(approved.as_str()));
        let paused = Gate {
            paused: true,
            ..planning()
        };
        assert_eq!(Approval::read(Some(&approved), None, paused), Approval::None);
        let full = Gate::default();
        assert_eq!(Approval::read(Some(&approved), None, full), Approval::None);
        let spent = ApprovedPlan {
            digest: approved.clone(),
            remaining: vec![],
            spent_at: Some("2026-12-06T11:00:00Z".into()),
        };
        let again = Approval::read(Some(&approved), Some(&spent), planning());
        assert!(!again.permits(&plan), "a spent approval authorises nothing");
        assert_eq!(again.changed(), None);
        assert_eq!(Approval::read(Some(" "), None, planning()), Approval::None);
    }
}
