//! The scenario's Canary: a mapping under `canary`, a string holding one, or a `canary_file`;
//! loaded as the controller loads it, with errors at the line of the Canary's own field.

use std::path::PathBuf;

use fledge_controller::routes::{Provider, Routes, SmiVersion};
use fledge_controller::spec::{
    Canary, MetricTemplate, RolloutSpec, Strategy, load_manifests, unroutable_by, validate,
};

use super::source::load_error_place;
use super::{Context, ScenarioError, raw};
use crate::manifest::ManifestError;
use crate::manifest::yaml::{Outline, check_depth};
use crate::mesh::config::DataPlane;

/// Where the Canary's text was written.
enum Place {
    /// A mapping under `canary`: its fields are the scenario's own, under `canary.`.
    Mapping,
    /// A string under `canary` whose first line is this line of the scenario.
    Embedded(usize),
    File(PathBuf),
}

impl Context {
    /// The Canary, its validated spec and the MetricTemplates given beside it; ignored fields
    /// and questionable settings become warnings.
    pub(super) fn canary(
        &mut self,
        raw: &raw::Scenario,
    ) -> Result<(Canary, RolloutSpec, Vec<MetricTemplate>), ScenarioError> {
        let (text, place) = match (&raw.canary, &raw.canary_file) {
            (Some(serde_norway::Value::String(s)), None) => {
                let first = self.outline.line(0, "canary").map_or(1, |l| l + 1);
                (s.clone(), Place::Embedded(first))
            }
            (Some(other), None) => (
                serde_norway::to_string(other).map_err(|e| self.error("canary", e.to_string()))?,
                Place::Mapping,
            ),
            (None, Some(file)) => (
                self.read_relative("canary_file", file)?,
                Place::File(self.relative(file)),
            ),
            _ => {
                return Err(self.error(
                    "canary",
                    "give the Canary manifest in `canary` or its path in `canary_file`",
                ));
            }
        };
        let outline = Outline::of(&text);
        let canary_doc = outline.document("Canary", None).unwrap_or(0);
        // An error at a field of the Canary's document (`spec.analysis...`, or "" for the
        // whole), or at a line of its text.
        let error = |doc: usize, field: &str, line: Option<usize>, message: String| {
            let line = line.or_else(|| outline.line(doc, field));
            match &place {
                Place::Mapping if field.is_empty() => self.error("canary", message),
                Place::Mapping => self.error(&format!("canary.{field}"), message),
                Place::Embedded(first) => ScenarioError {
                    file: self.file.clone(),
                    line: Some(first + line.unwrap_or(1) - 1),
                    field: if field.is_empty() {
                        "canary".into()
                    } else {
                        format!("canary.{field}")
                    },
                    message,
                },
                Place::File(path) => ScenarioError {
                    file: path.display().to_string(),
                    line: line.or(Some(1)),
                    field: if field.is_empty() {
                        "(document)".into()
                    } else {
                        field.to_string()
                    },
                    message,
                },
            }
        };
        // A mapping is part of the scenario, whose depth was checked with it.
        if !matches!(place, Place::Mapping)
            && let Err(deep) = check_depth(&text)
        {
            return Err(error(0, "", Some(deep.line), deep.to_string()));
        }
        let loaded = load_manifests(&text).map_err(|e| {
            let (doc, field, line) = load_error_place(&e);
            error(doc, field, line, e.to_string())
        })?;
        let [canary] = <[Canary; 1]>::try_from(loaded.canaries).map_err(|v| {
            error(
                0,
                "",
                None,
                format!("must hold exactly one Canary, found {}", v.len()),
            )
        })?;
        let mut spec = validate(&canary.spec).map_err(|errors| {
            let path = errors.0.first().map_or(String::new(), |e| e.path.clone());
            let all: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            error(
                canary_doc,
                &path,
                None,
                format!("the Canary does not validate:\n  {}", all.join("\n  ")),
            )
        })?;
        // The data plane's provider when the Canary names none, as the controller's default.
        let explicit = spec.provider.is_some();
        let provider = *spec.provider.get_or_insert(match self.data_plane {
            DataPlane::Istio => Provider::Istio,
            DataPlane::Linkerd => Provider::Smi(SmiVersion::V1Alpha2),
        });
        if let Some(e) = unroutable_by(&canary.spec, &spec, provider).first() {
            return Err(error(
                canary_doc,
                &e.path,
                None,
                format!("the Canary does not validate:\n  {e}"),
            ));
        }
        if provider == Provider::Istio
            && let Some((field, message)) = refused_by_istio(&canary)
        {
            return Err(error(canary_doc, &field, None, message));
        }
        // An explicit provider gets this warning from the controller's own checks.
        let unused_policy = provider != Provider::Istio
            && !explicit
            && canary.spec.service.traffic_policy.is_some();
        if let Strategy::AbTesting { matches, .. } = &spec.strategy {
            for (i, m) in matches.iter().enumerate() {
                let keys = m.as_object().into_iter().flat_map(|o| o.keys());
                if let Some(key) = keys
                    .into_iter()
                    .find(|k| !["headers", "name"].contains(&k.as_str()))
                {
                    return Err(error(
                        canary_doc,
                        &format!("spec.analysis.match[{i}].{key}"),
                        None,
                        format!(
                            "the simulator's requests carry headers only (no path, method or query), so a match on `{key}` cannot be rehearsed"
                        ),
                    ));
                }
            }
        }
        // Custom metrics run as on a cluster: their templates must be here and evaluable.
        let subject = crate::promql::subject(&canary, &self.namespace);
        crate::promql::check_metrics(&spec, &subject, &loaded.metric_templates).map_err(|p| {
            let field = format!("spec.analysis.metrics[{}]", p.index);
            error(canary_doc, &field, None, p.message)
        })?;
        // Fledge's own fields in a Flagger Canary, each at its line.
        let fledge_only: Vec<String> = loaded
            .fledge_only
            .iter()
            .map(|(document, e)| {
                let at = error(document - 1, &e.path, None, String::new());
                let line = at.line.map_or(String::new(), |l| format!(" (line {l})"));
                if at.file == self.file {
                    format!("{}{line}: {}", at.field, e.message)
                } else {
                    format!("{}{line}: {}: {}", at.file, at.field, e.message)
                }
            })
            .collect();
        self.warnings.extend(fledge_only);
        self.warnings.extend(
            loaded
                .ignored
                .iter()
                .map(|f| format!("canary: {f}: not a field Fledge knows; ignored")),
        );
        self.warnings
            .extend(loaded.warnings.iter().map(|w| format!("canary: {w}")));
        if unused_policy {
            self.warnings.push(format!(
                "canary: spec.service.trafficPolicy: not used: provider {provider} writes no DestinationRule"
            ));
        }
        if let Some(ns) = &canary.metadata.namespace
            && *ns != self.namespace
        {
            self.warnings.push(format!(
                "canary: metadata.namespace is `{ns}`, the scenario's namespace is `{}`: the simulator runs the Canary in `{}`, a cluster would look for its target in `{ns}`",
                self.namespace, self.namespace
            ));
        }
        Ok((canary, spec, loaded.metric_templates))
    }
}

/// What Istio would refuse of the objects provider istio writes from the Canary (its
/// DestinationRules and VirtualService, built by the controller's own router), read with the
/// simulator's own manifest readers: the Canary's field the value came from, and why. Without
/// this, a value copied verbatim (`service.trafficPolicy`, `retries`, `timeout`) would fail
/// only when the router applies it, as a routing failure and a rollback.
fn refused_by_istio(canary: &Canary) -> Option<(String, String)> {
    // A split the router cannot write was refused by validation already.
    let objects = Provider::Istio
        .objects(canary, &Routes::PRIMARY_ONLY)
        .ok()?;
    let mut text = String::new();
    for object in &objects {
        text.push_str("---\n");
        text.push_str(&serde_norway::to_string(object).ok()?);
    }
    let (kind, name, field, what) = match crate::manifest::parse(&text).err()? {
        ManifestError::WrongType {
            kind,
            name,
            field,
            expected,
            ..
        } => (kind, name, field, format!("expected {expected}")),
        ManifestError::Missing {
            kind, name, field, ..
        } => (kind, name, field, "missing".to_string()),
        e @ ManifestError::Yaml { .. } => return Some((String::new(), e.to_string())),
    };
    // `spec.trafficPolicy...` of a DestinationRule, `spec.http[i]....` of the VirtualService.
    let from = if let Some(rest) = field.strip_prefix("spec.trafficPolicy") {
        format!("spec.service.trafficPolicy{rest}")
    } else if let Some((_, rest)) = field
        .strip_prefix("spec.http[")
        .and_then(|f| f.split_once("]."))
    {
        format!("spec.service.{rest}")
    } else {
        "spec.service".to_string()
    };
    Some((
        from,
        format!(
            "{what}: provider istio copies it into the {kind} `{name}` as `{field}`, which Istio refuses"
        ),
    ))
}
