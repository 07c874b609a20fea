//! Reading Canary and MetricTemplate manifests from YAML, under either API group.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_norway::Value;

use super::{
    Canary, CanarySpec, FLAGGER_GROUP, FieldError, GROUP, MetricTemplate, ValidationErrors,
    metric_template, validate, warnings,
};

/// The Fledge and Flagger resources found in a (multi-document) YAML text.
#[derive(Debug, Default)]
pub struct LoadedManifests {
    pub canaries: Vec<Canary>,
    pub metric_templates: Vec<MetricTemplate>,
    /// Documents of other kinds, skipped: `(document number, apiVersion, kind)`; documents
    /// count from 1 here and in every message, as in the simulator's manifest errors.
    pub skipped: Vec<(usize, String, String)>,
    /// Fields Fledge does not know, ignored: `document N (Kind name): path`.
    pub ignored: Vec<String>,
    /// Settings of a Canary that validate but are changed or unused, as Flagger does:
    /// `document N (Canary name): path: what happens instead`.
    pub warnings: Vec<String>,
    /// Fledge's own fields written in a `flagger.app/v1beta1` Canary: `(document number,
    /// field)`, the field's message saying what a cluster does with it.
    pub fledge_only: Vec<(usize, FieldError)>,
}

/// Why a Fledge-only field does not belong in a Flagger Canary: a cluster applies that Canary
/// under Flagger's CRD, and the rollout rehearsed from the file would run on neither controller.
const FLEDGE_ONLY: &str = "a Fledge-only field in a flagger.app/v1beta1 Canary: Flagger's CRD \
    has no such field and prunes it on apply (Flagger, and Fledge's --flagger-canaries, never \
    see it), so a cluster would not run the rollout rehearsed here; use apiVersion \
    fledge.dev/v1alpha1";

/// The fields of `spec` that Fledge has and Flagger's Canary CRD does not: the statistical
/// judge's settings.
fn fledge_only(spec: &CanarySpec) -> Vec<FieldError> {
    let a = &spec.analysis;
    let mut paths: Vec<String> = [
        ("judge", a.judge.is_some()),
        ("statistical", a.statistical.is_some()),
        ("minStepDuration", a.min_step_duration.is_some()),
    ]
    .into_iter()
    .filter(|(_, written)| *written)
    .map(|(field, _)| format!("spec.analysis.{field}"))
    .collect();
    for (i, m) in a.metrics.iter().enumerate() {
        for (field, written) in [
            ("margin", m.margin.is_some()),
            ("quantile", m.quantile.is_some()),
        ] {
            if written {
                paths.push(format!("spec.analysis.metrics[{i}].{field}"));
            }
        }
    }
    paths
        .into_iter()
        .map(|path| FieldError {
            path,
            message: FLEDGE_ONLY.into(),
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("document {document}: not valid YAML: {message}")]
    Yaml {
        document: usize,
        /// The 1-based line of the text, when the parser knows it.
        line: Option<usize>,
        message: String,
    },
    #[error("document {document} ({kind} {name}): {path}: {message}")]
    Field {
        document: usize,
        kind: String,
        name: String,
        path: String,
        message: String,
    },
    /// Required fields are missing: each is listed with every other problem found.
    #[error("document {document} ({kind} {name}) does not validate:\n  {}", list(.errors))]
    Invalid {
        document: usize,
        kind: String,
        name: String,
        errors: ValidationErrors,
    },
    #[error(
        "document {document}: {kind} has apiVersion `{api_version}`; expected {GROUP}/v1alpha1 or {FLAGGER_GROUP}/v1beta1"
    )]
    ApiVersion {
        document: usize,
        kind: String,
        api_version: String,
    },
}

/// Parses every document of `text`; Canaries and MetricTemplates of either group become Fledge's
/// types, other kinds are listed in `skipped`.
pub fn load_manifests(text: &str) -> Result<LoadedManifests, LoadError> {
    let mut out = LoadedManifests::default();
    for (index, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let document = index + 1;
        let value = Value::deserialize(doc).map_err(|e| LoadError::Yaml {
            document,
            line: e.location().map(|l| l.line()),
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let field = |v: &Value, key: &str| {
            v.get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let api_version = field(&value, "apiVersion");
        let kind = field(&value, "kind");
        if !matches!(kind.as_str(), "Canary" | "MetricTemplate") {
            out.skipped.push((document, api_version, kind));
            continue;
        }
        let group = api_version.split('/').next().unwrap_or_default();
        if group != GROUP && group != FLAGGER_GROUP {
            out.skipped.push((document, api_version, kind));
            continue;
        }
        if api_version != format!("{GROUP}/v1alpha1")
            && api_version != format!("{FLAGGER_GROUP}/v1beta1")
        {
            return Err(LoadError::ApiVersion {
                document,
                kind,
                api_version,
            });
        }
        let name = value
            .get("metadata")
            .map(|m| field(m, "name"))
            .unwrap_or_default();
        let ignored = &mut out.ignored;
        let invalid = |errors: Vec<FieldError>| LoadError::Invalid {
            document,
            kind: kind.clone(),
            name: display_name(&name).to_string(),
            errors: ValidationErrors(errors),
        };
        if kind == "Canary" {
            let (canary, missing) = parse::<Canary>(value, document, &kind, &name, ignored)?;
            match validate(&canary.spec) {
                _ if missing.is_empty() => {}
                Ok(_) => return Err(invalid(missing)),
                // The placeholders standing in for missing fields explain nothing more.
                Err(errors) => {
                    let mut all = missing.clone();
                    all.extend(errors.0.into_iter().filter(|e| {
                        !missing.iter().any(|m| {
                            e.path == m.path || e.path.starts_with(&format!("{}.", m.path))
                        })
                    }));
                    return Err(invalid(all));
                }
            }
            out.warnings.extend(
                warnings(&canary.spec)
                    .into_iter()
                    .map(|w| format!("document {document} (Canary {}): {w}", display_name(&name))),
            );
            if group == FLAGGER_GROUP {
                out.fledge_only
                    .extend(fledge_only(&canary.spec).into_iter().map(|e| (document, e)));
            }
            out.canaries.push(canary);
        } else {
            let (template, missing): (MetricTemplate, _) =
                parse(value, document, &kind, &name, ignored)?;
            if !missing.is_empty() {
                return Err(invalid(missing));
            }
            let unsupported = metric_template(&template.spec);
            if !unsupported.is_empty() {
                return Err(invalid(unsupported));
            }
            out.metric_templates.push(template);
        }
    }
    Ok(out)
}

fn display_name(name: &str) -> &str {
    if name.is_empty() { "(unnamed)" } else { name }
}

fn list(errors: &ValidationErrors) -> String {
    let all: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    all.join("\n  ")
}

/// Deserialises one resource, naming the field path of any type error and listing the fields
/// it ignores, and moves it into Fledge's API group. A missing required field does not stop the
/// reading: a placeholder stands in for it so that every other problem is found too, and the
/// missing fields are returned beside the resource.
fn parse<T: DeserializeOwned + kube::Resource<DynamicType = ()>>(
    mut value: Value,
    document: usize,
    kind: &str,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<(T, Vec<FieldError>), LoadError> {
    if let Some(map) = value.as_mapping_mut() {
        map.insert("apiVersion".into(), T::api_version(&()).into_owned().into());
    }
    let mut missing: Vec<FieldError> = Vec::new();
    // The placeholder being tried, and which: one of the wrong type gives way to the next.
    let mut filling: Option<(String, usize)> = None;
    let mut attempts = 0;
    let parsed: T = loop {
        attempts += 1;
        let e = match serde_path_to_error::deserialize(value.clone()) {
            Ok(parsed) => break parsed,
            Err(e) => e,
        };
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let next = match (missing_field(&message), &filling) {
            (Some(field), _) => Some((join(&path, field), 0)),
            (None, Some((at, which))) if *at == path && which + 1 < PLACEHOLDERS => {
                Some((path.clone(), which + 1))
            }
            _ => None,
        };
        if let Some((at, which)) = next
            && attempts < MAX_ATTEMPTS
            && fill(&mut value, &at, which)
        {
            // A field inside a placeholder is missing because its parent is.
            let inside = missing
                .iter()
                .any(|m| at == m.path || at.starts_with(&format!("{}.", m.path)));
            if !inside {
                missing.push(FieldError {
                    path: at.clone(),
                    message: "missing required field".into(),
                });
            }
            filling = Some((at, which));
            continue;
        }
        if missing.is_empty() {
            return Err(LoadError::Field {
                document,
                kind: kind.to_string(),
                name: display_name(name).to_string(),
                path,
                message,
            });
        }
        missing.push(FieldError { path, message });
        return Err(LoadError::Invalid {
            document,
            kind: kind.to_string(),
            name: display_name(name).to_string(),
            errors: ValidationErrors(missing),
        });
    };
    // A second, typed pass only to learn which fields serde skipped (it cannot fail now).
    let name = display_name(name);
    let _: Result<T, _> = serde_ignored::deserialize(value, |path| {
        let path = path.to_string();
        // kube's generated types read the type fields apart.
        if path != "apiVersion" && path != "kind" {
            ignored.push(format!("document {document} ({kind} {name}): {path}"));
        }
    });
    Ok((parsed, missing))
}

/// Enough for every required field of a Canary, four placeholders each; bounds the work a
/// hostile document can cause.
const MAX_ATTEMPTS: usize = 128;
const PLACEHOLDERS: usize = 4;

/// The field named by serde's "missing field `x`".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// `a.b` + `c`; serde_path_to_error writes the root as `.`.
fn join(path: &str, field: &str) -> String {
    if path.is_empty() || path == "." {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Puts placeholder number `which` at `path` (`a.b[2].c`); false when the path cannot be walked.
fn fill(value: &mut Value, path: &str, which: usize) -> bool {
    let placeholder = match which {
        0 => Value::String(String::new()),
        1 => Value::Number(0.into()),
        2 => Value::Mapping(Default::default()),
        _ => Value::Sequence(Vec::new()),
    };
    let mut node = value;
    let mut keys = path.split('.').peekable();
    while let Some(part) = keys.next() {
        let (key, indices) = part.split_once('[').map_or((part, ""), |(k, i)| (k, i));
        // `service:` written with no children is null, which serde reads as an empty mapping.
        if node.is_null() {
            *node = Value::Mapping(Default::default());
        }
        let Some(map) = node.as_mapping_mut() else {
            return false;
        };
        if keys.peek().is_none() && indices.is_empty() {
            map.insert(key.into(), placeholder);
            return true;
        }
        let Some(next) = map.get_mut(key) else {
            return false;
        };
        node = next;
        for i in indices.split('[').filter(|i| !i.is_empty()) {
            let Some(i) = i.trim_end_matches(']').parse::<usize>().ok() else {
                return false;
            };
            let Some(item) = node.as_sequence_mut().and_then(|s| s.get_mut(i)) else {
                return false;
            };
            node = item;
        }
    }
    false
}
