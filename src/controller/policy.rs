//! How much the operator may do for one resource, and when it looks. The management policies
//! `ObserveOnly` and `Plan`, and the pause annotation, withhold every write to Altostrat; a
//! reconcile request makes the next reconcile look anew. The decisions run unchanged under a
//! withholding gate: each kind's gate (`withhold` in `instance::decide` and `peer::decide`)
//! turns a step that would write into the calls it would have made, so a paused, observing or
//! planning reconcile shares every path with a managing one except the send, and the executor
//! never sees a write step it must not take.

use kube::Resource;

use super::conditions::{ConditionState, ConditionedStatus, HasStatus, PAUSED, reason};
use crate::crd::{ManagementPolicy, PAUSED_ANNOTATION, RECONCILE_REQUEST_ANNOTATION};

/// What one reconcile may write to Altostrat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Gate {
    pub policy: ManagementPolicy,
    /// The pause annotation is set.
    pub paused: bool,
}

impl Gate {
    pub fn of<K: HasStatus>(obj: &K) -> Self {
        Self {
            policy: obj.management_policy(),
            paused: is_paused(obj),
        }
    }

    /// Whether writes to Altostrat may be sent.
    pub fn open(&self) -> bool {
        self.policy == ManagementPolicy::Full && !self.paused
    }

    /// Whether the resource only observes its object.
    pub fn observes(&self) -> bool {
        self.policy == ManagementPolicy::ObserveOnly
    }

    /// Whether withheld calls are shown as a plan: they are what switching to `Full` or
    /// resuming sends, except under `ObserveOnly`, where nothing is ever sent (and adopting
    /// replaces the whole configuration, so a plan made from the observed fields would mislead).
    pub fn plans(&self) -> bool {
        !self.observes()
    }

    /// The condition reason of an object whose create is withheld (an observer never plans
    /// one).
    pub fn reason(&self) -> &'static str {
        match self.policy {
            ManagementPolicy::Plan => reason::PLANNED,
            _ => reason::RECONCILE_PAUSED,
        }
    }

    /// The `Synced` reason of an object whose correction is withheld.
    pub fn drift_reason(&self) -> &'static str {
        match self.policy {
            ManagementPolicy::Plan => reason::PLANNED,
            _ => reason::DRIFTED,
        }
    }

    /// Why writes are withheld, as the end of a sentence.
    pub fn why(&self) -> &'static str {
        match self.policy {
            ManagementPolicy::ObserveOnly => "managementPolicy is ObserveOnly",
            ManagementPolicy::Plan => {
                "managementPolicy is Plan (the calls are in status.plan; approving status.planDigest sends them)"
            }
            ManagementPolicy::Full => "the resource is paused (vpn.altostrat.io/paused)",
        }
    }
}

/// The id a status recorded while the resource only observed its object.
pub(crate) fn observed_id<S: ConditionedStatus>(status: Option<&S>) -> Option<&str> {
    status
        .filter(|s| s.management_policy() == Some(ManagementPolicy::ObserveOnly))
        .and_then(|s| s.recorded_id())
}

/// Whether `obj` carries the pause annotation with the value `"true"`.
pub(crate) fn is_paused<K: Resource>(obj: &K) -> bool {
    annotation(obj, PAUSED_ANNOTATION).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The `Paused` condition of a paused resource.
pub(crate) fn paused_condition() -> ConditionState {
    ConditionState::new(
        PAUSED,
        true,
        reason::RECONCILE_PAUSED,
        "vpn.altostrat.io/paused is \"true\": nothing is written to Altostrat until it is removed; \
         drift is still observed and shown in Synced",
    )
}

/// The value of the reconcile request annotation, when it asks for more than the status has
/// acknowledged: this reconcile looks at Altostrat anew (through the budget like any look)
/// and acknowledges it in `status.lastHandledReconcileAt`.
pub(crate) fn reconcile_request<K: HasStatus>(obj: &K) -> Option<String> {
    let requested = annotation(obj, RECONCILE_REQUEST_ANNOTATION)?;
    let handled = obj.status().and_then(|s| s.last_handled_reconcile_at());
    (handled != Some(requested)).then(|| requested.to_owned())
}

pub(crate) fn annotation<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta().annotations.as_ref()?.get(key).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::VpnPeer;

    fn annotated(value: Option<&str>) -> VpnPeer {
        let spec = serde_json::from_value(serde_json::json!({
            "instanceRef": {"name": "hub"}, "type": "client", "protocol": "wireguard",
            "userId": "a1b2c3d4-e5f6-7890-1234-567890abcdef"
        }))
        .unwrap();
        let mut peer = VpnPeer::new("alice", spec);
        if let Some(value) = value {
            peer.metadata.annotations = Some([(PAUSED_ANNOTATION.to_owned(), value.to_owned())].into());
        }
        peer
    }

    #[test]
    fn a_reconcile_request_is_pending_until_its_value_is_acknowledged() {
        let mut peer = annotated(None);
        assert_eq!(reconcile_request(&peer), None);
        let at = "2026-11-27T10:00:00Z";
        peer.metadata.annotations = Some([(RECONCILE_REQUEST_ANNOTATION.to_owned(), at.to_owned())].into());
        assert_eq!(reconcile_request(&peer).as_deref(), Some(at));
        peer.status = Some(crate::crd::VpnPeerStatus {
            last_handled_reconcile_at: Some(at.into()),
            ..Default::default()
        });
        assert_eq!(reconcile_request(&peer), None, "handled");
    }

    #[test]
    fn only_the_value_true_pauses() {
        assert!(Gate::of(&annotated(Some("true"))).paused);
        assert!(!Gate::of(&annotated(Some("true"))).open());
        assert!(Gate::of(&annotated(Some(" True "))).paused);
        for value in [None, Some("false"), Some(""), Some("yes")] {
            assert!(Gate::of(&annotated(value)).open(), "{value:?}");
        }
    }
}
