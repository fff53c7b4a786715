//! The cleanup finalizer. It is patched with the observed `resourceVersion` as a precondition,
//! so a stale copy can neither clobber a concurrent edit nor make a claim (see
//! `peer::decide`) that a newer version may already have made.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::error::{Error, Result};
use crate::crd::FINALIZER;

/// When our copy of an object was stale, look again after the watch has caught up.
pub(crate) const STALE_RETRY: Duration = Duration::from_millis(500);

pub(crate) fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds the cleanup finalizer if missing. Returns false when the copy was stale or the object
/// is gone: the caller must not go on acting on it.
pub(crate) async fn add<K>(api: &Api<K>, obj: &K) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if has_finalizer(obj) {
        return Ok(true);
    }
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    patch(api, obj, finalizers).await
}

/// Removes the cleanup finalizer once the Altostrat side is done. A stale copy is looked at
/// again shortly: finalizer changes alone do not trigger a reconcile.
pub(crate) async fn release<K>(api: &Api<K>, obj: &K) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let finalizers: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if finalizers.len() == obj.finalizers().len() || patch(api, obj, finalizers).await? {
        Ok(Action::await_change())
    } else {
        Ok(Action::requeue(STALE_RETRY))
    }
}

/// Replaces the finalizer list if `obj` is still the latest version; false when it is not (a
/// trigger raced the cache) or the object is gone.
async fn patch<K>(api: &Api<K>, obj: &K, finalizers: Vec<String>) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": obj.resource_version() }
    });
    match api
        .patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!("finalizer patch conflicted with a newer version");
            Ok(false)
        }
        Err(e) => Err(Error::kube(format!(
            "finalizer patch of {} {}",
            K::kind(&()),
            obj.name_any()
        ))(e)),
    }
}

/// The finalizer as far as a converging reconcile knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FinalizerState {
    /// Held since before this reconcile.
    Held,
    /// Added by this reconcile, on a copy that was current: for peers, a create claim.
    Added,
    Missing,
    /// Adding it failed because our copy was stale: wait for the watch to catch up.
    Stale,
}

impl FinalizerState {
    pub fn of<K: Resource>(obj: &K) -> Self {
        if has_finalizer(obj) {
            Self::Held
        } else {
            Self::Missing
        }
    }
}
