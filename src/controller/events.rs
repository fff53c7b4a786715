//! Kubernetes events: one Normal event per reconcile that changed something, Warnings for
//! failures and surprises.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};

use super::context::Context;

/// Event reasons, as `(reason, action)` pairs where the action is fixed.
pub mod reason {
    pub const CREATED: (&str, &str) = ("Created", "Create");
    pub const ADOPTED: (&str, &str) = ("Adopted", "Create");
    pub const RECREATING: (&str, &str) = ("Recreating", "Create");
    pub const UPDATED: (&str, &str) = ("Updated", "Update");
    pub const READY: (&str, &str) = ("Ready", "Reconcile");
    pub const DELETED: (&str, &str) = ("Deleted", "Delete");
    pub const ORPHANED: (&str, &str) = ("Orphaned", "Delete");
    pub const LEFT_ALONE: (&str, &str) = ("NotOwned", "Delete");
    pub const LEFT_SCOPE: (&str, &str) = ("LeftScope", "Reconcile");
    pub const PROFILE_WRITTEN: (&str, &str) = ("ProfileWritten", "Deliver");
    pub const PROFILE_REMOVED: (&str, &str) = ("ProfileRemoved", "Deliver");
    /// Warnings on the transition into a wait only a change elsewhere ends.
    pub const INSTANCE_NOT_FOUND: (&str, &str) = ("InstanceNotFound", "Reconcile");
    pub const NOT_PERMITTED: (&str, &str) = ("NotPermitted", "Reconcile");
    pub const DELETION_BLOCKED: (&str, &str) = ("DeletionBlocked", "Delete");
}

/// The one Normal event a reconcile publishes when it changed something: named after its first
/// (most significant) step, with every step in the note. A create that also applies the
/// initial configuration and finds the object ready is one event, not three — events are
/// API-server writes like any other, and a fleet may be created thousands at a time.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    first: Option<(&'static str, &'static str)>,
    steps: Vec<String>,
    /// A Warning to publish as well: a wait the resource just entered that a person may have to
    /// end (published once, on the transition, not on every look).
    warning: Option<(&'static str, &'static str, String)>,
}

impl Activity {
    /// Notes a step: `(reason, action)` as in the event, `step` a lower-case clause.
    pub(crate) fn record(&mut self, (reason, action): (&'static str, &'static str), step: impl Into<String>) {
        self.first.get_or_insert((reason, action));
        self.steps.push(step.into());
    }

    /// Notes a Warning to publish with this reconcile's events.
    pub(crate) fn warn(&mut self, (reason, action): (&'static str, &'static str), note: impl Into<String>) {
        self.warning = Some((reason, action, note.into()));
    }

    /// `(reason, action, note)` of the Warning to publish, if any.
    pub(crate) fn warning(&self) -> Option<(&'static str, &'static str, String)> {
        self.warning.clone()
    }

    /// `(reason, action, note)` of the event to publish, if anything happened.
    pub(crate) fn event(&self) -> Option<(&'static str, &'static str, String)> {
        let (reason, action) = self.first?;
        let note = self.steps.join("; ");
        let mut chars = note.chars();
        let note = chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect())
            .unwrap_or_default();
        Some((reason, action, note))
    }
}

impl<A> Context<A> {
    /// Publishes an event; failures are logged, never fatal to the reconcile.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        (reason, action): (&str, &str),
        note: String,
    ) {
        let reference = obj.object_ref(&());
        match type_ {
            // Warnings can repeat while a problem lasts: the recorder folds repeats into one
            // event series. It remembers every event it sent for six minutes to do so, which
            // for one-off transitions (Created, Ready, ...) of a large fleet is tens of MiB for
            // nothing, so those are created directly.
            EventType::Warning => self.warn(reference, (reason, action), note).await,
            EventType::Normal => {
                if let Err(e) = self.create_event(reference, reason, action, note).await {
                    tracing::warn!(error = %e, "failed to publish event");
                }
            }
        }
    }

    /// Publishes a Warning about the object `reference` names; failures are logged.
    pub async fn warn(&self, reference: ObjectReference, (reason, action): (&str, &str), note: String) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "failed to publish event");
        }
    }

    async fn create_event(
        &self,
        reference: ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let namespace = reference.namespace.clone().unwrap_or_else(|| "default".into());
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    reference.name.as_deref().unwrap_or("vpn-operator"),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some("Normal".into()),
            reason: Some(reason.into()),
            action: Some(action.into()),
            note: Some(note),
            regarding: Some(reference),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        };
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        events.create(&PostParams::default(), &event).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_reconcile_named_after_its_first_step() {
        assert_eq!(Activity::default().event(), None);
        let mut activity = Activity::default();
        activity.record(reason::CREATED, "created Altostrat instance i-1 in region sjc");
        activity.record(reason::UPDATED, "applied changes to routes");
        activity.record(reason::READY, "instance h is provisioned and in sync");
        assert_eq!(
            activity.event(),
            Some((
                "Created",
                "Create",
                "Created Altostrat instance i-1 in region sjc; applied changes to routes; \
                 instance h is provisioned and in sync"
                    .to_owned()
            ))
        );
        let mut update_only = Activity::default();
        update_only.record(reason::UPDATED, "applied changes to routeAll");
        assert_eq!(
            update_only.event(),
            Some(("Updated", "Update", "Applied changes to routeAll".to_owned()))
        );
    }
}
