//! The cleanup finalizer. It is patched with the observed `resourceVersion` as a precondition,
//! so a stale copy cannot clobber a concurrent edit.

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

/// What a metadata patch with a `resourceVersion` precondition came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Patched {
    /// Applied; the object's new `resourceVersion`.
    Current(Option<String>),
    /// Our version was not the latest (or the object is gone): the caller must not go on
    /// acting on it.
    Stale,
}

/// Adds the cleanup finalizer to `obj` at `version` if missing.
pub(crate) async fn add<K>(api: &Api<K>, obj: &K, version: Option<&str>) -> Result<Patched>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if has_finalizer(obj) {
        return Ok(Patched::Current(version.map(str::to_owned)));
    }
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": version }
    });
    merge_if_current(api, obj, &patch).await
}

/// Removes the cleanup finalizer once the Altostrat side is done. A stale copy is looked at
/// again shortly: finalizer changes alone do not trigger a reconcile.
pub(crate) async fn release<K>(api: &Api<K>, obj: &K, version: Option<&str>) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let finalizers: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if finalizers.len() == obj.finalizers().len() {
        return Ok(Action::await_change());
    }
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": version }
    });
    match merge_if_current(api, obj, &patch).await? {
        Patched::Current(_) => Ok(Action::await_change()),
        Patched::Stale => Ok(Action::requeue(STALE_RETRY)),
    }
}

/// Merge-patches `obj`'s metadata; `patch` carries `obj`'s `resourceVersion` as precondition.
async fn merge_if_current<K>(api: &Api<K>, obj: &K, patch: &serde_json::Value) -> Result<Patched>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api
        .patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(patched) => Ok(Patched::Current(patched.resource_version())),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Patched::Stale),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!("metadata patch conflicted with a newer version");
            Ok(Patched::Stale)
        }
        Err(e) => Err(Error::kube(format!(
            "metadata patch of {} {}",
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
    /// Added by this reconcile, on a copy that was current.
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
