//! The lifecycle of both kinds as one pure decision: what is known → the next step.
//!
//! A kind supplies its facts through [`Kind`]; everything else (the order of the checks, the
//! ownership rule, claim, search, adopt, forget and the policy gate) is decided here once.

use std::fmt::Debug;
use std::time::Duration;

use super::super::approval::Approval;
use super::super::conditions::{ConditionState, reason};
use super::super::error::Error;
use super::super::finalizer::{FinalizerState, STALE_RETRY};
use super::super::ownership::{self, Claim, Ownership};
use super::super::policy::Gate;
use crate::altostrat::ApiError;
use crate::altostrat::model::Identified;
use crate::crd::{PlannedCall, RecordRole};

/// What a kind's decisions need to know of it, its spec and its Altostrat object (pure).
pub(crate) trait Kind {
    type Spec: Debug + Sync;
    /// The Altostrat object.
    type Object: Identified + Clone + Debug + Send + Sync + serde::Serialize;
    /// The body of a PUT.
    type Update: Debug + Send + Sync + serde::Serialize;

    /// The Altostrat object's name in messages (`instance`, `peer`).
    const NOUN: &'static str;
    /// The spec field adopting an existing object.
    const ID_FIELD: &'static str;
    /// Whether Altostrat keeps the object's identity unique (an instance's hostname): an object found
    /// with it blocks a create, and an observer can find it without an id.
    const UNIQUE: bool;
    /// What to do about an object found that is not provably this resource's own.
    const HINT: &'static str;

    fn spec_id(spec: &Self::Spec) -> Option<&str>;
    /// What the CRD's rules refuse in the spec, for a resource admitted before those rules (or
    /// by a cluster with older CRDs), worded as the API server words it.
    fn invalid(spec: &Self::Spec) -> Option<String>;
    /// The object the spec describes, in messages before its id is known.
    fn describe(spec: &Self::Spec) -> String;
    /// Why `object` is not what the spec describes, if it is not.
    fn unlike(spec: &Self::Spec, object: &Self::Object) -> Option<String>;
    /// The update that brings `object` to the spec (an observer's: only the drift it reports),
    /// with the names of the fields it changes; `None` when there is nothing to send yet.
    fn update(
        spec: &Self::Spec,
        object: &Self::Object,
        observes: bool,
    ) -> Option<(Self::Update, Vec<&'static str>)>;
    /// The calls a create would make, on the instance `parent` (a peer's).
    fn planned_create(spec: &Self::Spec, parent: &str) -> Vec<PlannedCall>;
    fn planned_update(
        parent: &str,
        id: &str,
        body: &Self::Update,
        current: Option<&Self::Object>,
    ) -> PlannedCall;
}

/// What is known of the Altostrat side at this point of a reconcile.
#[derive(Clone, Debug)]
pub(crate) enum Remote<O> {
    /// Not looked at yet.
    Unknown,
    /// The object as Altostrat last returned it (GET, list, POST or PUT).
    Found(O),
    /// The known id answered 404, or is no longer listed.
    Gone(String),
    /// The objects a create of this resource could have made, looked for because a claimed
    /// create may have been applied without its id being recorded (an observer of a unique
    /// kind finds its object this way: see [`Remote::searched`]).
    Searched(Vec<Candidate<O>>),
    /// Our create was refused as a conflict (an instance's hostname is taken); `visible` is the object
    /// holding it, if these credentials can see it.
    Taken { conflict: ApiError, visible: Option<O> },
}

impl<O> Remote<O> {
    /// A search's result: an observer of a unique kind has found the object it observes.
    pub fn searched<K: Kind<Object = O>>(mut candidates: Vec<Candidate<O>>, observes: bool) -> Self {
        if observes && K::UNIQUE && !candidates.is_empty() {
            return Self::Found(candidates.swap_remove(0).object);
        }
        Self::Searched(candidates)
    }

    /// The object the reconcile has seen, if any.
    pub fn found(&self) -> Option<&O> {
        match self {
            Self::Found(object) => Some(object),
            _ => None,
        }
    }
}

/// An object a search found, and the other resource whose record holds it, if any.
#[derive(Clone, Debug)]
pub(crate) struct Candidate<O> {
    pub object: O,
    pub recorded_by: Option<String>,
}

/// Everything the decision looks at.
#[derive(Clone, Debug)]
pub(crate) struct Observed<'a, K: Kind> {
    pub spec: &'a K::Spec,
    /// What this reconcile may write to Altostrat.
    pub gate: Gate,
    /// The instance a peer's object lives on (empty for an instance), or why the resource waits for it.
    pub parent: Result<String, ConditionState>,
    pub finalizer: FinalizerState,
    /// The create claim of the resource's record.
    pub claim: Claim,
    /// The id the record holds for this resource to manage.
    pub recorded_id: Option<String>,
    /// The id the record holds for this resource to observe: never its own.
    pub observed_id: Option<String>,
    /// Who else holds the object (another resource, or another installation's).
    pub held_elsewhere: Option<String>,
    /// Whether this resource holds a record at all.
    pub holds_record: bool,
    /// The id in status: what the status says, which proves nothing.
    pub status_id: Option<String>,
    pub remote: Remote<K::Object>,
    /// A PUT was sent in this reconcile already: its answer is final for this round.
    pub updated: bool,
    /// (`Plan`) The plan approved, if any: a step that carries it out is taken, not withheld.
    pub approval: Approval,
}

/// The next step of a converging reconcile.
#[derive(Debug)]
pub(crate) enum Step<K: Kind> {
    /// The instance a peer needs is missing or not usable yet; the instance watch re-triggers it.
    Wait(ConditionState),
    /// Our copy was stale: look again shortly.
    Requeue(Duration),
    /// Add the finalizer before anything exists in Altostrat that would need cleaning up.
    AddFinalizer,
    Fetch(String),
    /// The recorded object vanished: say so and forget its id before creating again, so that a
    /// lost answer to the new create is looked for, not repeated.
    Forget(String),
    /// Look for what a claimed create may have made (or, observing, for the object to observe).
    Search,
    /// Record a create claim (with the finalizer) right before the create.
    Claim,
    Create,
    /// Our own lost create, proven by the claim: record it.
    Adopt(K::Object),
    /// The object found is the one to manage (or observe): take or change the record before
    /// any write to it.
    Own {
        id: String,
        role: RecordRole,
    },
    /// Altostrat differs from the spec: send the update.
    Update {
        id: String,
        body: K::Update,
        fields: Vec<&'static str>,
    },
    /// Converged as far as this round goes: record what Altostrat holds.
    Record(K::Object),
    /// (`ObserveOnly`) No object with the spec's identity is visible: record that.
    Missing,
    /// The next step would write to Altostrat and the gate withholds it: record these calls
    /// (what the step would have sent) and what Altostrat holds.
    Withhold(Vec<PlannedCall>),
    /// Our create was refused: nothing of ours stems from the claim; withdraw it, then give up.
    WithdrawClaim(Error),
    GiveUp(Error),
}

/// The one place where the lifecycle is decided: the next step, through the gate.
pub(crate) fn decide<K: Kind>(o: &Observed<K>) -> Step<K> {
    through_gate(lifecycle(o), o)
}

/// The gate: while writes to Altostrat are withheld, a step that would write becomes the calls
/// it would have made, unless they are the plan approved. Forgetting a vanished id only
/// prepares the create that follows it, so it is withheld with the create. Nothing is planned
/// before a peer's instance is known.
fn through_gate<K: Kind>(step: Step<K>, o: &Observed<K>) -> Step<K> {
    match withheld_calls(&step, o) {
        Some(calls) if !o.approval.permits(&calls) => Step::Withhold(calls),
        _ => step,
    }
}

/// The calls of the plan `step` would carry out while the gate is closed (a create's: the POST
/// and the update that follows it), if it writes to Altostrat.
pub(crate) fn withheld_calls<K: Kind>(step: &Step<K>, o: &Observed<K>) -> Option<Vec<PlannedCall>> {
    let (false, Ok(parent)) = (o.gate.open(), &o.parent) else {
        return None;
    };
    match step {
        Step::Claim | Step::Create | Step::Forget(_) => Some(K::planned_create(o.spec, parent)),
        Step::Update { id, body, .. } => Some(vec![K::planned_update(parent, id, body, o.remote.found())]),
        _ => None,
    }
}

fn lifecycle<K: Kind>(o: &Observed<K>) -> Step<K> {
    // First: only an edit can fix it, and nothing (a wait, a plan, a create) is to be built on it.
    if let Some(why) = K::invalid(o.spec) {
        return Step::GiveUp(Error::InvalidSpec(why));
    }
    if let Err(waiting) = &o.parent {
        return Step::Wait(waiting.clone());
    }
    if o.finalizer == FinalizerState::Stale {
        return Step::Requeue(STALE_RETRY);
    }
    if let Some(refusal) = refuse(o) {
        return Step::GiveUp(refusal);
    }
    if o.gate.observes() {
        return observe(o);
    }
    match &o.remote {
        Remote::Unknown => match o.recorded_id.as_deref().or(K::spec_id(o.spec)) {
            Some(_) if o.finalizer == FinalizerState::Missing => Step::AddFinalizer,
            Some(id) => Step::Fetch(id.to_owned()),
            None => claim_then_create(o),
        },
        Remote::Gone(id) if K::spec_id(o.spec).is_some() => Step::GiveUp(missing_adoption::<K>(id)),
        Remote::Gone(id) => Step::Forget(id.clone()),
        Remote::Searched(candidates) => adopt_or_create(o, candidates),
        Remote::Taken { conflict, visible } => Step::WithdrawClaim(taken(o, conflict, visible.as_ref())),
        Remote::Found(object) => compare(o, object),
    }
}

/// A spec the resource may not act on at all: an id in spec naming another object than the one
/// it manages, an object someone else holds, an id in status that no record backs, or (to
/// manage) an object it only observed.
fn refuse<K: Kind>(o: &Observed<K>) -> Option<Error> {
    let wanted = K::spec_id(o.spec);
    if let (Some(wanted), Some(recorded)) = (wanted, o.recorded_id.as_deref())
        && wanted != recorded
    {
        return Some(Error::InvalidSpec(format!(
            "{} {wanted} differs from the {} {recorded} this resource manages; a resource manages one \
             {}: adopt {wanted} with a new resource",
            K::ID_FIELD,
            K::NOUN,
            K::NOUN
        )));
    }
    if let Some(other) = &o.held_elsewhere {
        let message = format!(
            "{} is held by {other}; nothing is written to it or deleted on behalf of this resource",
            K::describe(o.spec)
        );
        return Some(not_owned(reason::NOT_OWNED, message));
    }
    if o.gate.observes() || wanted.is_some() {
        return None;
    }
    if let Some(id) = &o.status_id
        && !o.holds_record
    {
        let message = format!(
            "status.{}Id {id} is not backed by an ownership record of this resource (restored or copied \
             without it?), so the {} is not provably its own; to manage it, set {} to {id} (adopting it \
             explicitly: deleting this resource then orphans it unless deletionPolicy is Delete)",
            K::NOUN,
            K::NOUN,
            K::ID_FIELD
        );
        return Some(not_owned(reason::NOT_OWNED, message));
    }
    let (Some(seen), None) = (&o.observed_id, &o.recorded_id) else {
        return None;
    };
    let message = format!(
        "Altostrat {} {seen} was only observed (managementPolicy ObserveOnly), never created or adopted \
         by this resource; to manage it, set {} to {seen}",
        K::NOUN,
        K::ID_FIELD
    );
    Some(not_owned(reason::NOT_OWNED, message))
}

/// `ObserveOnly`: find the object by id (or, for a unique kind, by its identity) and report how
/// it differs from the spec; the gate withholds the update that difference amounts to. Nothing
/// is ever created.
fn observe<K: Kind>(o: &Observed<K>) -> Step<K> {
    let spec_id = K::spec_id(o.spec);
    if !K::UNIQUE && spec_id.is_none() {
        return Step::GiveUp(Error::InvalidSpec(format!(
            "managementPolicy ObserveOnly needs {}: a {} is found only by its id",
            K::ID_FIELD,
            K::NOUN
        )));
    }
    let target = spec_id.or(o.recorded_id.as_deref()).or(o.observed_id.as_deref());
    match &o.remote {
        Remote::Unknown if o.finalizer == FinalizerState::Missing => Step::AddFinalizer,
        Remote::Unknown => target.map_or(Step::Search, |id| Step::Fetch(id.to_owned())),
        Remote::Gone(id) if spec_id.is_some() => Step::GiveUp(missing_adoption::<K>(id)),
        // The object observed so far is gone: whatever holds its identity now is the one to observe.
        Remote::Gone(_) | Remote::Taken { .. } => Step::Search,
        Remote::Searched(_) => Step::Missing,
        Remote::Found(object) => compare(o, object),
    }
}

fn missing_adoption<K: Kind>(id: &str) -> Error {
    Error::InvalidSpec(format!("{} {id} does not exist in Altostrat", K::ID_FIELD))
}

/// Claims before every create: a claim an earlier reconcile made may have had its create
/// applied, so it is searched for first.
fn claim_then_create<K: Kind>(o: &Observed<K>) -> Step<K> {
    match o.claim {
        Claim::None => Step::Claim,
        Claim::Held(_) if matches!(o.remote, Remote::Unknown | Remote::Gone(_)) => Step::Search,
        Claim::Held(_) => Step::Claim,
        Claim::Fresh(_) => Step::Create,
    }
}

/// Adopts the candidate that is provably our own lost create. Of a unique kind, any other
/// candidate holds the identity and stops the create. Otherwise objects made by others do not
/// stop it (Altostrat has no unique key for peers), but one that may be our own and cannot be
/// proven so does: creating would risk a duplicate.
fn adopt_or_create<K: Kind>(o: &Observed<K>, candidates: &[Candidate<K::Object>]) -> Step<K> {
    let verdicts = judge_all::<K>(o.claim.at(), candidates);
    if let Some((object, _)) = verdicts.iter().find(|(_, v)| *v == Ownership::Ours) {
        return Step::Adopt((*object).clone());
    }
    let blocking = verdicts
        .iter()
        .find(|(_, v)| K::UNIQUE || *v == Ownership::Unprovable);
    if let Some((object, verdict)) = blocking {
        let what = format!("Altostrat {} {}", K::NOUN, object.id());
        let why = match verdict {
            Ownership::NotOurs if K::UNIQUE => reason::HOSTNAME_TAKEN,
            _ => reason::NOT_OWNED,
        };
        return Step::GiveUp(not_owned(why, ownership::explain(verdict, &what, K::HINT)));
    }
    claim_then_create(o)
}

/// Each candidate with the ownership rule's verdict on it, for a resource claimed at `claim`.
pub(crate) fn judge_all<K: Kind>(
    claim: Option<k8s_openapi::jiff::Timestamp>,
    candidates: &[Candidate<K::Object>],
) -> Vec<(&K::Object, Ownership)> {
    candidates
        .iter()
        .map(|c| {
            let verdict = ownership::judge(claim, c.object.created_at(), c.recorded_by.clone());
            (&c.object, verdict)
        })
        .collect()
}

fn taken<K: Kind>(o: &Observed<K>, conflict: &ApiError, visible: Option<&K::Object>) -> Error {
    let holder = match visible {
        Some(object) => format!("Altostrat {} {}", K::NOUN, object.id()),
        None => format!("a {} these credentials cannot see", K::NOUN),
    };
    let message = format!(
        "{} is taken by {holder} ({conflict}); if that {} is this resource's (a restore, a second \
         cluster), {}",
        K::describe(o.spec),
        K::NOUN,
        K::HINT
    );
    not_owned(reason::HOSTNAME_TAKEN, message)
}

fn not_owned(reason: &'static str, message: String) -> Error {
    Error::NotOwned { reason, message }
}

/// The object found, against the spec: one that is not what the spec describes is refused, the
/// record must hold it before anything is written (or observed), a difference is one update,
/// else it is recorded.
fn compare<K: Kind>(o: &Observed<K>, object: &K::Object) -> Step<K> {
    if let Some(why) = K::unlike(o.spec, object) {
        return Step::GiveUp(Error::InvalidSpec(why));
    }
    let update = K::update(o.spec, object, o.gate.observes()).filter(|_| !o.updated);
    let held = (o.recorded_id.as_deref(), o.observed_id.as_deref());
    let gate = writing_gate(o, object, update.as_ref().map(|(body, _)| body));
    if let Some(role) = ownership::record_needed(gate, held, object.id()) {
        let id = object.id().to_owned();
        return Step::Own { id, role };
    }
    match update {
        Some((body, fields)) => Step::Update {
            id: object.id().to_owned(),
            body,
            fields,
        },
        None => Step::Record(object.clone()),
    }
}

/// The gate an update of `object` goes through: open when the plan approved is that update, so
/// that the record must hold the object before it is written, as under `Full`.
fn writing_gate<K: Kind>(o: &Observed<K>, object: &K::Object, body: Option<&K::Update>) -> Gate {
    let (Some(body), Ok(parent), Some(_)) = (body, &o.parent, o.approval.changed()) else {
        return o.gate;
    };
    let calls = [K::planned_update(parent, object.id(), body, Some(object))];
    match o.approval.permits(&calls) {
        true => Gate {
            policy: crate::crd::ManagementPolicy::Full,
            paused: false,
        },
        false => o.gate,
    }
}
