//! The Canary's own API, whichever group it was read from: Fledge's `fledge.dev` Canaries
//! (typed, the status whole in `status`) or Flagger's `flagger.app` ones (dynamic, the status
//! split between Flagger's fields in `status` and Fledge's in an annotation; see
//! [`super::flagger`]).

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Map, Value, json};

use super::flagger::{self, Record, STATE_ANNOTATION};
use super::status::merge_patch;
use super::workloads::{self, TargetKind, Workloads};
use super::{Error, Result};
use crate::spec::{Canary, CanaryStatus};

/// The API of one namespace's Canaries of one group.
pub(crate) enum CanaryApi {
    Fledge(Api<Canary>),
    Flagger(Api<DynamicObject>),
}

fn read(name: &str) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_string();
    move |source| Error::Read {
        kind: "Canary",
        name,
        source,
    }
}

fn write(kind: &'static str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_string();
    move |source| Error::Write { kind, name, source }
}

fn to_json(s: &CanaryStatus) -> Result<Value> {
    serde_json::to_value(s).map_err(|source| Error::Serialize {
        what: "Canary status",
        source,
    })
}

impl CanaryApi {
    /// The API `canary` was read from.
    pub(crate) fn of(client: Client, namespace: &str, canary: &Canary) -> Self {
        if flagger::is_flagger(canary) {
            let resource = flagger::canary_resource();
            CanaryApi::Flagger(Api::namespaced_with(client, namespace, &resource))
        } else {
            CanaryApi::Fledge(Api::namespaced(client, namespace))
        }
    }

    /// The Canary as it is now.
    pub(crate) async fn get(&self, name: &str) -> Result<Canary> {
        match self {
            CanaryApi::Fledge(api) => api.get(name).await.map_err(read(name)),
            CanaryApi::Flagger(api) => {
                let object = api.get(name).await.map_err(read(name))?;
                flagger::to_canary(&object).map_err(|e| Error::Unreadable {
                    name: name.to_string(),
                    message: e.to_string(),
                })
            }
        }
    }

    /// A JSON merge patch of the Canary itself (metadata the controller keeps there).
    pub(crate) async fn merge(&self, name: &str, body: &Value) -> Result<()> {
        let params = PatchParams::default();
        let patch = Patch::Merge(body);
        match self {
            CanaryApi::Fledge(api) => api.patch(name, &params, &patch).await.map(drop),
            CanaryApi::Flagger(api) => api.patch(name, &params, &patch).await.map(drop),
        }
        .map_err(write("Canary", name))
    }

    /// Writes `new` over the status `canary` holds, as one merge patch guarded by the Canary's
    /// `resourceVersion` (a racing write gets a 409). On a Flagger Canary, Fledge's part goes
    /// into [`STATE_ANNOTATION`] first, then Flagger's fields into `status`; each only when
    /// it changed.
    pub(crate) async fn write_status(&self, canary: &Canary, new: &CanaryStatus) -> Result<()> {
        let name = canary.metadata.name.clone().ok_or(Error::Unnamed("name"))?;
        let old = match &canary.status {
            Some(s) => to_json(s)?,
            None => Value::Object(Map::new()),
        };
        let new = to_json(new)?;
        let version = canary.metadata.resource_version.clone();
        match self {
            CanaryApi::Fledge(api) => {
                let body = json!({
                    "metadata": { "resourceVersion": version },
                    "status": merge_patch(&old, &new),
                });
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                    .map_err(write("Canary status", &name))?;
            }
            CanaryApi::Flagger(api) => {
                let (old_flagger, old_own) = flagger::split(&old);
                let (new_flagger, new_own) = flagger::split(&new);
                let mut version = version;
                if new_own != old_own {
                    // Fledge's part comes only from a current record: when there is one, what
                    // of Flagger's it was made against still holds.
                    let current = flagger::recorded(canary).filter(|_| !old_own.is_empty());
                    let record = match current {
                        Some(r) => Record {
                            status: new_own,
                            ..r
                        },
                        None => Record {
                            status: new_own,
                            ..self.flaggers_marks(canary).await?
                        },
                    };
                    let text =
                        serde_json::to_string(&record).map_err(|source| Error::Serialize {
                            what: "Fledge's record",
                            source,
                        })?;
                    let body = json!({"metadata": {
                        "resourceVersion": version,
                        "annotations": { STATE_ANNOTATION: text },
                    }});
                    let written = api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                        .await
                        .map_err(write("Canary annotation", &name))?;
                    version = written.metadata.resource_version;
                }
                if new_flagger != old_flagger {
                    let body = json!({
                        "metadata": { "resourceVersion": version },
                        "status": merge_patch(&Value::Object(old_flagger), &Value::Object(new_flagger)),
                    });
                    // Under Fledge's name: who last set the phase tells Fledge's rollouts
                    // from Flagger's ([`flagger::phase_set_by_fledge`]).
                    let params = PatchParams {
                        field_manager: Some(super::FIELD_MANAGER.into()),
                        ..PatchParams::default()
                    };
                    api.patch_status(&name, &params, &Patch::Merge(&body))
                        .await
                        .map_err(write("Canary status", &name))?;
                }
            }
        }
        Ok(())
    }

    /// Whether `fresh` is `old` with only the first of this write's two parts written (Fledge's
    /// record on a Flagger Canary; its status write then conflicted): nobody else wrote.
    pub(crate) fn part_written(
        &self,
        old: &Canary,
        fresh: &Canary,
        new: &CanaryStatus,
    ) -> Result<bool> {
        if let CanaryApi::Fledge(_) = self {
            return Ok(false);
        }
        let json = |s: Option<&CanaryStatus>| match s {
            Some(s) => to_json(s),
            None => Ok(Value::Object(Map::new())),
        };
        let (old_flagger, _) = flagger::split(&json(old.status.as_ref())?);
        let (fresh_flagger, fresh_own) = flagger::split(&json(fresh.status.as_ref())?);
        let (_, new_own) = flagger::split(&to_json(new)?);
        Ok(fresh_flagger == old_flagger && fresh_own == new_own)
    }

    /// A record with no status, of what Flagger last wrote that tells whether it ran since:
    /// its `status.lastAppliedSpec` and the primary's `flagger-id`, as stored now (Fledge writes
    /// neither).
    async fn flaggers_marks(&self, canary: &Canary) -> Result<Record> {
        let CanaryApi::Flagger(api) = self else {
            return Ok(Record::default());
        };
        let name = canary.metadata.name.clone().ok_or(Error::Unnamed("name"))?;
        let object = api.get(&name).await.map_err(read(&name))?;
        let primary = workloads::primary_name(&canary.spec.target_ref.name);
        let namespace = canary.metadata.namespace.clone().unwrap_or_default();
        let kind = TargetKind::of(&canary.spec.target_ref.kind).unwrap_or_default();
        let found = Workloads::new(api.clone().into_client(), &namespace, kind)
            .deployment(&primary)
            .await?;
        Ok(Record {
            flagger_last_applied_spec: flagger::flagger_last_applied_spec(&object),
            primary_flagger_id: found.as_ref().and_then(flagger::primary_flagger_id),
            status: Map::new(),
        })
    }
}
