//! Alternatives of one scenario. A [`Patch`] is a list of edits of the scenario's Canary spec
//! or of its mesh manifests, applied to their JSON form and validated as the scenario's own
//! were; `variants:`, `fledge-sim compare`'s policies and `--vary` (`vary.rs`) are all patches,
//! and every alternative runs through the same harness and seed runner.

use fledge_controller::spec::{CanarySpec, RolloutSpec, validate, warnings};
use serde_json::Value;

use super::{Expectations, Scenario, Variant};

/// One edit: the value at `path` (for the Canary, keys below its `spec`, in its camelCase
/// field names; for a manifest, keys from the document's top, `spec.…`; `*` stands for every
/// element of a list, `[N]` for its element N) is set, or removed when `value` is `None`.
/// Setting creates the mappings on the way.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Edit {
    pub(crate) target: Target,
    pub(crate) path: Vec<String>,
    pub(crate) value: Option<Value>,
}

/// What an edit changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Target {
    /// The scenario's Canary.
    #[default]
    Canary,
    /// The scenario's manifest of this kind and `metadata.name`.
    Manifest { kind: String, name: String },
}

/// Edits of the scenario's Canary spec, applied in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Patch {
    pub(crate) edits: Vec<Edit>,
}

/// A patch that does not apply, or whose result does not validate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PatchError(pub(crate) String);

impl Patch {
    /// Sets the value at `path` (dot-separated, e.g. `analysis.statistical.alpha`).
    pub(crate) fn set(mut self, path: &str, value: impl Into<Value>) -> Patch {
        self.edits.push(Edit {
            target: Target::Canary,
            path: split(path),
            value: Some(value.into()),
        });
        self
    }

    pub(crate) fn remove(mut self, path: &str) -> Patch {
        self.edits.push(Edit {
            target: Target::Canary,
            path: split(path),
            value: None,
        });
        self
    }

    /// Replaces the Canary's judge. Under `threshold`, what only the statistical judge reads
    /// (the `statistical` block, metrics' `margin`) is dropped: it would not validate there,
    /// and a Canary written for the statistical judge is then still usable.
    pub(crate) fn judge(self, judge: &str) -> Patch {
        let patch = self.set("analysis.judge", judge);
        if judge == "threshold" {
            patch
                .remove("analysis.statistical")
                .remove("analysis.metrics.*.margin")
        } else {
            patch
        }
    }

    /// A policy: another Canary's analysis (and its progress deadline, when it sets one)
    /// replaces the scenario's, whole. What the rollout targets stays the scenario's, and so
    /// does its strategy when the policy has none of its own (no `iterations`, no `match`): an
    /// A/B or blue/green scenario keeps its `iterations`, `match` and mirroring, and the
    /// policy's weights are dropped; its interval, threshold, judge and metrics apply.
    pub(crate) fn policy(policy: &CanarySpec, scenario: &CanarySpec) -> Result<Patch, PatchError> {
        let mut patch = Patch::default().set("analysis", json(&policy.analysis)?);
        if let Some(s) = policy.progress_deadline_seconds {
            patch = patch.set("progressDeadlineSeconds", s);
        }
        let (own, theirs) = (&scenario.analysis, &policy.analysis);
        if theirs.iterations.is_none()
            && theirs.match_.is_empty()
            && let Some(iterations) = own.iterations
        {
            patch = patch
                .remove("analysis.stepWeight")
                .remove("analysis.stepWeights")
                .remove("analysis.stepWeightPromotion")
                .remove("analysis.maxWeight")
                .set("analysis.iterations", iterations)
                .set("analysis.match", json(&own.match_)?)
                .set("analysis.mirror", own.mirror);
            if let Some(w) = own.mirror_weight {
                patch = patch.set("analysis.mirrorWeight", w);
            }
            if let Some(a) = &own.session_affinity {
                patch = patch.set("analysis.sessionAffinity", json(a)?);
            }
        }
        Ok(patch)
    }

    /// The scenario's Canary spec with the patch applied, validated. `base` is the scenario's
    /// own validated spec: what the loader resolved there (the data plane's provider) carries
    /// over.
    pub(crate) fn apply(
        &self,
        canary: &CanarySpec,
        base: &RolloutSpec,
    ) -> Result<RolloutSpec, PatchError> {
        let patched = self.patched(canary)?;
        let mut spec = validate(&patched).map_err(|errors| {
            let all: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            PatchError(format!(
                "the patched Canary does not validate:\n  {}",
                all.join("\n  ")
            ))
        })?;
        if spec.provider.is_none() {
            spec.provider = base.provider;
        }
        Ok(spec)
    }

    /// What the patched Canary sets that validates but does not do what it seems to (a
    /// threshold below 1 read as 1...), as the loader warns about a scenario's own Canary.
    pub(crate) fn warnings(&self, canary: &CanarySpec) -> Vec<String> {
        let patched = self.patched(canary);
        patched.map_or_else(
            |_| Vec::new(),
            |c| warnings(&c).iter().map(ToString::to_string).collect(),
        )
    }

    /// The edits of the Canary, in order.
    pub(super) fn canary_edits(&self) -> impl Iterator<Item = &Edit> {
        self.edits.iter().filter(|e| e.target == Target::Canary)
    }

    fn patched(&self, canary: &CanarySpec) -> Result<CanarySpec, PatchError> {
        let mut doc = serde_json::to_value(canary)
            .map_err(|e| PatchError(format!("the Canary cannot be patched: {e}")))?;
        for edit in self.canary_edits() {
            edit.apply(&mut doc)?;
        }
        serde_json::from_value(doc)
            .map_err(|e| PatchError(format!("the patched Canary does not load: {e}")))
    }
}

impl Edit {
    pub(super) fn apply(&self, doc: &mut Value) -> Result<(), PatchError> {
        edit_at(doc, &self.path, self.value.as_ref())
            .map_err(|why| PatchError(format!("{}: {why}", shown(&self.path))))
    }
}

impl Scenario {
    /// An alternative of the scenario: its Canary and manifests patched, held to the
    /// scenario's `expect`.
    pub(crate) fn variant(&self, name: &str, patch: &Patch) -> Result<Variant, PatchError> {
        let manifests = self.patched_manifests(patch)?;
        let expect = self.own_expectations();
        let (Some(canary), Some(spec)) = (&self.canary_resource, &self.spec) else {
            if patch.canary_edits().next().is_some() {
                return Err(PatchError(
                    "the scenario has no Canary to patch: only its manifests can vary".into(),
                ));
            }
            return Ok(Variant {
                name: name.to_string(),
                spec: None,
                expect,
                warnings: Vec::new(),
                manifests,
            });
        };
        let spec = patch.apply(&canary.spec, spec)?;
        let subject = crate::promql::subject(canary, &self.namespace);
        crate::promql::check_metrics(&spec, &subject, &self.metric_templates)
            .map_err(|p| PatchError(format!("analysis.metrics[{}]: {}", p.index, p.message)))?;
        Ok(Variant {
            name: name.to_string(),
            spec: Some(spec),
            expect,
            warnings: patch.warnings(&canary.spec),
            manifests,
        })
    }

    /// The expectations of the scenario's `expect`, which an alternative is held to; with
    /// `variants` (each its own judge and `expect`) none applies to the Canary as written.
    fn own_expectations(&self) -> Expectations {
        match self.variants.as_slice() {
            [own] if own.name.is_empty() => own.expect.clone(),
            _ => Expectations::default(),
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<Value, PatchError> {
    serde_json::to_value(value).map_err(|e| PatchError(format!("the policy's analysis: {e}")))
}

/// `a.b[0].c` as `a`, `b`, `[0]`, `c`.
pub(super) fn split(path: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() || rest.is_empty() {
            keys.push(key.to_string());
        }
        while let Some(end) = rest.find(']').filter(|_| rest.starts_with('[')) {
            keys.push(rest[..=end].to_string());
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            // Not an index: a key with a bracket in it, which no field has; the edit says so.
            keys.push(rest.to_string());
        }
    }
    keys
}

/// A path as written: keys joined by dots, indices right after their list.
pub(super) fn shown(path: &[String]) -> String {
    let mut out = String::new();
    for key in path {
        if !out.is_empty() && !key.starts_with('[') {
            out.push('.');
        }
        out.push_str(key);
    }
    out
}

/// The element number of a `[N]` key.
fn index(key: &str) -> Option<Result<usize, String>> {
    let inner = key.strip_prefix('[')?.strip_suffix(']')?;
    Some(
        inner
            .parse()
            .map_err(|_| format!("`{key}` is not a list index such as [0]")),
    )
}

fn edit_at(doc: &mut Value, path: &[String], value: Option<&Value>) -> Result<(), String> {
    let Some((key, rest)) = path.split_first() else {
        return match value {
            Some(v) => {
                *doc = v.clone();
                Ok(())
            }
            None => Err("the whole Canary cannot be removed".into()),
        };
    };
    if key == "*" {
        return match doc {
            Value::Array(items) => items
                .iter_mut()
                .try_for_each(|item| edit_at(item, rest, value)),
            Value::Null => Ok(()),
            _ => Err("`*` stands for the elements of a list, and this is not one".into()),
        };
    }
    if let Some(i) = index(key) {
        let i = i?;
        let Value::Array(items) = doc else {
            return Err(format!("`{key}` indexes a value that is not a list"));
        };
        let len = items.len();
        return match (items.get_mut(i), rest.is_empty(), value) {
            (Some(_), true, None) => {
                items.remove(i);
                Ok(())
            }
            (Some(item), _, _) => edit_at(item, rest, value),
            (None, _, None) => Ok(()),
            (None, _, Some(_)) => Err(format!(
                "`{key}` is past the end of a list of {len} element{}",
                if len == 1 { "" } else { "s" }
            )),
        };
    }
    if doc.is_null() && value.is_some() {
        *doc = Value::Object(Default::default());
    }
    let Value::Object(map) = doc else {
        return Err(format!("`{key}` is below a value that is not a mapping"));
    };
    match (rest.is_empty(), value) {
        (true, None) => {
            map.remove(key);
            Ok(())
        }
        (true, Some(v)) => {
            map.insert(key.clone(), v.clone());
            Ok(())
        }
        (false, None) => match map.get_mut(key) {
            Some(inner) => edit_at(inner, rest, value),
            None => Ok(()),
        },
        (false, Some(_)) => edit_at(map.entry(key.clone()).or_insert(Value::Null), rest, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edited(mut doc: Value, patch: &Patch) -> Result<Value, String> {
        for e in &patch.edits {
            edit_at(&mut doc, &e.path, e.value.as_ref())?;
        }
        Ok(doc)
    }

    #[test]
    fn set_creates_the_mappings_on_its_way_and_remove_of_a_missing_key_is_nothing() {
        let doc = json!({"analysis": {"interval": "1m"}});
        let patch = Patch::default()
            .set("analysis.statistical.alpha", 0.01)
            .remove("analysis.nothing.here");
        assert_eq!(
            edited(doc, &patch).unwrap(),
            json!({"analysis": {"interval": "1m", "statistical": {"alpha": 0.01}}})
        );
    }

    #[test]
    fn a_threshold_judge_drops_the_statistical_settings_of_every_metric() {
        let doc = json!({"analysis": {"judge": "statistical", "statistical": {"alpha": 0.01},
            "metrics": [{"name": "a", "margin": 1}, {"name": "b"}]}});
        assert_eq!(
            edited(doc, &Patch::default().judge("threshold")).unwrap(),
            json!({"analysis": {"judge": "threshold", "metrics": [{"name": "a"}, {"name": "b"}]}})
        );
    }

    #[test]
    fn an_index_edits_that_element_of_a_list_and_one_past_its_end_is_refused() {
        let doc = json!({"http": [{"route": [{"weight": 90}, {"weight": 10}]}]});
        let patch = Patch::default().set("http[0].route[1].weight", 20);
        assert_eq!(
            edited(doc.clone(), &patch).unwrap(),
            json!({"http": [{"route": [{"weight": 90}, {"weight": 20}]}]})
        );
        let err = edited(doc, &Patch::default().set("http[1].route", 1)).unwrap_err();
        assert!(
            err.contains("`[1]` is past the end of a list of 1 element"),
            "{err}"
        );
    }

    #[test]
    fn an_edit_below_a_scalar_is_refused_with_the_key() {
        let doc = json!({"analysis": {"interval": "1m"}});
        let err = edited(doc, &Patch::default().set("analysis.interval.x", 1)).unwrap_err();
        assert!(err.contains("`x`"), "{err}");
    }
}
