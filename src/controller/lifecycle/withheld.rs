//! What a reconcile whose writes the gate withholds records, for either kind.

use super::super::conditions::{ConditionState, READY, STALLED, SYNCED};
use super::super::planned;
use super::super::policy::Gate;
use super::decide::{Kind, Remote};
use crate::crd::PlannedCall;

/// The plan and conditions of a reconcile whose next writes are withheld.
pub(crate) struct Withheld {
    /// The calls withheld, as far as they are shown: an object found shows them only while
    /// planning (a pause or an observer reports the drift alone).
    pub plan: Vec<PlannedCall>,
    pub conditions: Vec<ConditionState>,
}

/// With the object found: `ready` (the kind says whether it works) and `Synced` False naming
/// the drift not corrected. Without: both False naming what is withheld (a vanished object's
/// re-creation, or the first create), and `Stalled`: nothing serves, and only a person (who
/// resumes, or switches the policy to `Full`) can change that, so kstatus readers such as Flux
/// fail at once rather than wait for their timeout.
pub(crate) fn withheld<K: Kind>(
    remote: &Remote<K::Object>,
    calls: Vec<PlannedCall>,
    gate: Gate,
    ready: impl FnOnce(&K::Object) -> ConditionState,
) -> Withheld {
    if let Some(object) = remote.found() {
        let fields = planned::changed_fields(&calls).join(", ");
        let message = format!(
            "Altostrat differs from the spec in {fields}; not corrected while {}",
            gate.why()
        );
        let synced = ConditionState::new(SYNCED, false, gate.drift_reason(), message);
        return Withheld {
            plan: if gate.plans() { calls } else { Vec::new() },
            conditions: vec![ready(object), synced],
        };
    }
    let what = match remote {
        Remote::Gone(id) => format!("Altostrat {} {id} no longer exists; creating it again", K::NOUN),
        _ => format!("Creating the {}", K::NOUN),
    };
    let message = format!("{what} is withheld while {}", gate.why());
    Withheld {
        plan: calls,
        conditions: vec![
            ConditionState::new(READY, false, gate.reason(), message.clone()),
            ConditionState::new(SYNCED, false, gate.reason(), message.clone()),
            ConditionState::new(STALLED, true, gate.reason(), message),
        ],
    }
}
