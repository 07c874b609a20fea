//! The finalizer, only where cleanup needs it: a Canary gets it just before the first write its
//! deletion would have to undo (a Canary with a broken spec or a missing target never does, so
//! it can be deleted with no controller running), and loses it once the cleanup is done.

use kube::ResourceExt;

use super::super::{Error, FINALIZER, Result};
use super::tick::Tick;
use crate::spec::Canary;

impl Tick<'_> {
    pub(super) fn held(&self) -> bool {
        self.canary.finalizers().iter().any(|f| f == FINALIZER)
    }

    pub(super) async fn hold(&self) -> Result<()> {
        let mut finalizers = self.canary.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        self.set_finalizers(self.canary, finalizers).await
    }

    /// Removes the finalizer from the Canary as it is now (the cleanup has written its status).
    pub(super) async fn release(&self) -> Result<()> {
        let fresh = self
            .api
            .get(&self.name)
            .await
            .map_err(|source| Error::Read {
                kind: "Canary",
                name: self.name.clone(),
                source,
            })?;
        let finalizers: Vec<String> = fresh
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        self.set_finalizers(&fresh, finalizers).await
    }

    /// The list is written whole with the Canary's `resourceVersion`: a write racing another
    /// one fails with a conflict (and is retried) rather than drop someone else's finalizer.
    async fn set_finalizers(&self, canary: &Canary, finalizers: Vec<String>) -> Result<()> {
        let body = serde_json::json!({
            "metadata": {
                "finalizers": finalizers,
                "resourceVersion": canary.metadata.resource_version,
            }
        });
        self.merge_into_canary(&body).await
    }
}
