//! Keeps a credentials Secret while resources that use it may still need it: the Secret gets
//! [`CREDENTIALS_FINALIZER`] when a resource first reads it, and loses it when the last
//! VpnInstance that names it has released its own finalizer. Deleting a namespace then deletes
//! every Altostrat object according to its policy before the Secret goes.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::context::Context;
use super::error::{Error, Result};
use crate::crd::{CREDENTIALS_FINALIZER, FINALIZER, VpnInstance};

impl<A> Context<A> {
    /// Adds the credentials finalizer to `secret` if it is missing (and the Secret is not
    /// being deleted). A concurrent change of the Secret is no error: the next reconcile that
    /// reads it tries again.
    pub(crate) async fn keep_secret(&self, secret: &Secret) -> Result<()> {
        let held = secret.finalizers().iter().any(|f| f == CREDENTIALS_FINALIZER);
        if held || secret.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let mut finalizers = secret.finalizers().to_vec();
        finalizers.push(CREDENTIALS_FINALIZER.to_owned());
        self.patch_secret_finalizers(secret, finalizers).await
    }

    /// Removes the credentials finalizer from the Secret `obj` names, unless another
    /// VpnInstance of its namespace that names it still holds the cleanup finalizer.
    pub(crate) async fn release_secret(&self, obj: &VpnInstance) -> Result<()> {
        let Some(secret_ref) = &obj.spec.credentials_secret_ref else {
            return Ok(());
        };
        let namespace = obj.namespace().unwrap_or_default();
        let still_needed = self.instances.state().into_iter().any(|other| {
            other.namespace().as_deref() == Some(namespace.as_str())
                && other.name_any() != obj.name_any()
                && other.spec.credentials_secret_ref.as_ref() == Some(secret_ref)
                && other.finalizers().iter().any(|f| f == FINALIZER)
        });
        if still_needed {
            return Ok(());
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let operation = format!("read of Secret {namespace}/{}", secret_ref.name);
        let Some(secret) = secrets
            .get_opt(&secret_ref.name)
            .await
            .map_err(Error::kube(operation))?
        else {
            return Ok(());
        };
        let finalizers: Vec<String> = secret
            .finalizers()
            .iter()
            .filter(|f| *f != CREDENTIALS_FINALIZER)
            .cloned()
            .collect();
        if finalizers.len() == secret.finalizers().len() {
            return Ok(());
        }
        self.patch_secret_finalizers(&secret, finalizers).await
    }

    async fn patch_secret_finalizers(&self, secret: &Secret, finalizers: Vec<String>) -> Result<()> {
        let namespace = secret.namespace().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let patch = serde_json::json!({
            "metadata": { "finalizers": finalizers, "resourceVersion": secret.resource_version() }
        });
        match secrets
            .patch(&secret.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
            Err(e) => Err(Error::kube(format!(
                "finalizer patch of Secret {namespace}/{}",
                secret.name_any()
            ))(e)),
        }
    }
}
