//! Reading Canary and MetricTemplate manifests from YAML, under either API group.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{Canary, FLAGGER_GROUP, GROUP, MetricTemplate};

/// The Fledge and Flagger resources found in a (multi-document) YAML text.
#[derive(Debug, Default)]
pub struct LoadedManifests {
    pub canaries: Vec<Canary>,
    pub metric_templates: Vec<MetricTemplate>,
    /// Documents of other kinds, skipped: `(document index, apiVersion, kind)`.
    pub skipped: Vec<(usize, String, String)>,
    /// Fields Fledge does not know, ignored: `document N (Kind name): path`.
    pub ignored: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("document {document}: not valid YAML: {message}")]
    Yaml { document: usize, message: String },
    #[error("document {document} ({kind} {name}): {path}: {message}")]
    Field {
        document: usize,
        kind: String,
        name: String,
        path: String,
        message: String,
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
        let value = serde_norway::Value::deserialize(doc).map_err(|e| LoadError::Yaml {
            document,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let field = |v: &serde_norway::Value, key: &str| {
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
        if kind == "Canary" {
            out.canaries
                .push(parse(value, document, &kind, &name, ignored)?);
        } else {
            out.metric_templates
                .push(parse(value, document, &kind, &name, ignored)?);
        }
    }
    Ok(out)
}

/// Deserialises one resource, naming the field path of any type error and listing the fields
/// it ignores, and moves it into Fledge's API group.
fn parse<T: DeserializeOwned + kube::Resource<DynamicType = ()>>(
    mut value: serde_norway::Value,
    document: usize,
    kind: &str,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<T, LoadError> {
    if let Some(map) = value.as_mapping_mut() {
        map.insert("apiVersion".into(), T::api_version(&()).into_owned().into());
    }
    let name = if name.is_empty() { "(unnamed)" } else { name };
    let parsed: T =
        serde_path_to_error::deserialize(value.clone()).map_err(|e| LoadError::Field {
            document,
            kind: kind.to_string(),
            name: name.to_string(),
            path: e.path().to_string(),
            message: e.into_inner().to_string(),
        })?;
    // A second, typed pass only to learn which fields serde skipped (it cannot fail now).
    let _: Result<T, _> = serde_ignored::deserialize(value, |path| {
        let path = path.to_string();
        // kube's generated types read the type fields apart.
        if path != "apiVersion" && path != "kind" {
            ignored.push(format!("document {document} ({kind} {name}): {path}"));
        }
    });
    Ok(parsed)
}
