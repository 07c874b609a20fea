//! `--vary`: alternatives of a scenario, one per value of a field of its Canary or of one of its
//! mesh manifests, and (for `sweep`) the cross product of several. Every alternative is a
//! [`Patch`], checked as the scenario's own Canary and manifests were.
//!
//! `PATH=V1,V2,...` edits the Canary's spec (`analysis.threshold`); `KIND/NAME:PATH=...` edits
//! the object of that kind and `metadata.name`, `PATH` from the document's top
//! (`DestinationRule/podinfo-primary:spec.trafficPolicy.outlierDetection.consecutive5xxErrors`,
//! `VirtualService/reviews:spec.http[1].route[0].weight`); `Canary/NAME:spec.…` is the Canary
//! again. The objects the controller writes (the route named after the Canary's service, under
//! Istio its DestinationRules) are refused: it replaces them, so no value would tell.

use serde_json::Value;

use super::manifests::ManifestSource;
use super::patch::{Edit, PatchError, Target, split};
use super::source::Source;
use super::{Context, Event, Patch, Scenario, Variant};
use crate::manifest::yaml::Outline;
use crate::manifest::{Manifest, Manifests};

/// The most alternatives one command's `--vary` flags may make: each runs over every seed.
const MAX_COMBINATIONS: usize = 100;

impl Scenario {
    /// An alternative per value of one `--vary` argument, named `PATH=V` (as written). Every
    /// error names the flag.
    pub(crate) fn vary(&self, arg: &str) -> Result<Vec<Variant>, PatchError> {
        self.vary_patches(arg, true)?
            .into_iter()
            .map(|(name, patch)| self.variant(&name, &patch))
            .collect()
    }

    /// The cross product of several `--vary` arguments: an alternative per combination of
    /// their values, named by its `PATH=V` joined with spaces, in the order given (the last
    /// argument's values vary fastest). With several arguments each combination is checked,
    /// not each value alone: two route weights varied together may add up to 0 only together.
    pub(crate) fn vary_product(&self, args: &[String]) -> Result<Vec<Variant>, PatchError> {
        let mut combinations = vec![(String::new(), Patch::default())];
        for arg in args {
            let values = self.vary_patches(arg, args.len() == 1)?;
            let count = combinations.len().saturating_mul(values.len());
            if count > MAX_COMBINATIONS {
                return Err(PatchError(format!(
                    "--vary {arg}: {count} combinations of the --vary values, more than the \
                     {MAX_COMBINATIONS} one command runs (each over every seed); vary fewer \
                     values at once"
                )));
            }
            combinations = combinations
                .iter()
                .flat_map(|(name, patch)| {
                    values.iter().map(move |(n, p)| {
                        let mut both = patch.clone();
                        both.edits.extend(p.edits.iter().cloned());
                        let name = if name.is_empty() {
                            n.clone()
                        } else {
                            format!("{name} {n}")
                        };
                        (name, both)
                    })
                })
                .collect();
        }
        if args.is_empty() {
            return Ok(Vec::new());
        }
        combinations
            .iter()
            .map(|(name, patch)| {
                self.variant(name, patch)
                    .map_err(|e| PatchError(format!("--vary: {name}: {e}")))
            })
            .collect()
    }

    /// The patches of one argument, with their names; each checked alone when `alone`.
    fn vary_patches(&self, arg: &str, alone: bool) -> Result<Vec<(String, Patch)>, PatchError> {
        let error = |why: String| PatchError(format!("--vary {arg}: {why}"));
        let Some((place, values)) = arg.split_once('=').filter(|(p, v)| {
            !p.is_empty() && !p.contains(char::is_whitespace) && !v.trim().is_empty()
        }) else {
            return Err(error(
                "give PATH=V1,V2,... with PATH below the Canary's spec, e.g. \
                 analysis.threshold=3,5,10, or KIND/NAME:PATH=V1,V2,... for a manifest, e.g. \
                 DestinationRule/NAME:spec.trafficPolicy.outlierDetection.consecutive5xxErrors=3,5,7"
                    .into(),
            ));
        };
        let (target, path) = self.target(place).map_err(|e| error(e.0))?;
        if target == Target::Canary && self.canary_resource.is_none() {
            return Err(error(
                "the scenario has no Canary: vary a manifest, as KIND/NAME:PATH=V1,V2,...".into(),
            ));
        }
        let mut out: Vec<(String, Patch)> = Vec::new();
        for raw in values.split(',').map(str::trim) {
            if raw.is_empty() {
                return Err(error("an empty value".into()));
            }
            let name = format!("{place}={raw}");
            if out.iter().any(|(n, _)| *n == name) {
                return Err(error(format!("`{raw}` is given twice")));
            }
            let value = serde_json::from_str(raw).unwrap_or(Value::String(raw.to_string()));
            let patch = Patch {
                edits: vec![Edit {
                    target: target.clone(),
                    path: split(path),
                    value: Some(value),
                }],
            };
            if target == Target::Canary && !self.has_field(&patch).map_err(|e| error(e.0))? {
                return Err(error(format!(
                    "`{path}` is not a field of the Canary's spec (camelCase keys below \
                     `spec`, e.g. analysis.stepWeight)"
                )));
            }
            if alone {
                self.variant(&name, &patch)
                    .map_err(|e| error(format!("{raw}: {e}")))?;
            }
            out.push((name, patch));
        }
        Ok(out)
    }

    /// What `PATH` or `KIND/NAME:PATH` edits, and the path.
    fn target<'a>(&self, place: &'a str) -> Result<(Target, &'a str), PatchError> {
        let Some((object, path)) = place.split_once(':') else {
            return Ok((Target::Canary, place));
        };
        let Some((kind, name)) = object
            .split_once('/')
            .filter(|(k, n)| !k.is_empty() && !n.is_empty() && !path.is_empty())
        else {
            return Err(PatchError(format!(
                "`{object}` does not name an object: give KIND/NAME:PATH, e.g. \
                 DestinationRule/podinfo-primary:spec.trafficPolicy"
            )));
        };
        let canary = self
            .canary_resource
            .as_ref()
            .and_then(|c| c.metadata.name.as_deref())
            .unwrap_or("");
        if kind == "Canary" {
            if name != canary {
                return Err(PatchError(format!(
                    "the scenario's Canary is `{canary}`, not `{name}`"
                )));
            }
            let Some(below) = path.strip_prefix("spec.") else {
                return Err(PatchError(format!(
                    "a Canary's fields are below `spec.` (`spec.analysis.threshold`), not `{path}`"
                )));
            };
            return Ok((Target::Canary, below));
        }
        let objects: Vec<(&str, &str)> = self
            .manifests
            .items
            .iter()
            .map(Manifest::kind_name)
            .collect();
        if !objects.contains(&(kind, name)) {
            let known: Vec<String> = objects.iter().map(|(k, n)| format!("{k}/{n}")).collect();
            return Err(PatchError(format!(
                "the scenario's manifests hold no {kind} named `{name}`{}",
                if known.is_empty() {
                    " (it has none; a scenario's mesh objects are under `manifests` and \
                     `manifest_files`)"
                        .to_string()
                } else {
                    format!("; they hold {}", known.join(", "))
                }
            )));
        }
        if let Some(i) = self.timeline.iter().position(|e| {
            matches!(&e.event, Event::ApplyManifests(m)
                if m.items.iter().any(|m| m.kind_name() == (kind, name)))
        }) {
            return Err(PatchError(format!(
                "timeline[{i}] applies {kind} {name} again mid-run; --vary edits the manifests \
                 the run starts with, so the run would not keep the value"
            )));
        }
        if let Some((from, field)) = self.controller_writes(kind, name) {
            return Err(PatchError(format!(
                "the controller writes {kind} {name} from the Canary's {from} and replaces \
                 the scenario's, so every value would give the same run; vary \
                 Canary/{canary}:spec.{field} instead"
            )));
        }
        Ok((
            Target::Manifest {
                kind: kind.to_string(),
                name: name.to_string(),
            },
            path,
        ))
    }

    /// Which of the Canary's fields the controller writes the object from, when the object is
    /// one the controller writes for the scenario's provider (and so replaces once it
    /// initialises): the route named after the service, and under Istio its two
    /// DestinationRules.
    fn controller_writes(&self, kind: &str, name: &str) -> Option<(&'static str, &'static str)> {
        use fledge_controller::routes::Provider;
        let apex = self.service.as_str();
        // Without a Canary the controller writes nothing.
        let provider = self.spec.as_ref()?.provider.unwrap_or(Provider::Istio);
        let route = match provider {
            Provider::Istio => "VirtualService",
            Provider::Smi(_) => "TrafficSplit",
            Provider::GatewayApi(_) => "HTTPRoute",
        };
        if kind == route && name == apex {
            return Some((
                "`service` and `analysis` (its weights)",
                "service.timeout, …",
            ));
        }
        let subset = |suffix: &str| name.strip_suffix(suffix) == Some(apex);
        (provider == Provider::Istio
            && kind == "DestinationRule"
            && (subset("-primary") || subset("-canary")))
        .then_some(("`service.trafficPolicy`", "service.trafficPolicy.…"))
    }

    /// Whether every path the patch sets on the Canary is still there once the patched Canary
    /// is loaded and written back: a path the spec does not know is dropped by the loader.
    fn has_field(&self, patch: &Patch) -> Result<bool, PatchError> {
        use fledge_controller::spec::CanarySpec;
        let Some(canary) = &self.canary_resource else {
            return Ok(false);
        };
        let mut doc = serde_json::to_value(&canary.spec)
            .map_err(|e| PatchError(format!("the Canary cannot be patched: {e}")))?;
        for edit in patch.canary_edits() {
            edit.apply(&mut doc)?;
        }
        let Ok(loaded) = serde_json::from_value::<CanarySpec>(doc) else {
            // Not a field's name but its value is wrong: `variant` says what.
            return Ok(true);
        };
        let back = serde_json::to_value(loaded).unwrap_or(Value::Null);
        // An empty list or map is not written back (nor is the value null): nothing to see.
        let unseen = |v: &Value| {
            v.is_null()
                || v.as_array().is_some_and(Vec::is_empty)
                || v.as_object().is_some_and(serde_json::Map::is_empty)
        };
        Ok(patch
            .canary_edits()
            .all(|e| e.value.as_ref().is_none_or(unseen) || present(&back, &e.path)))
    }

    /// The scenario's manifests with the patch's manifest edits applied, read and checked as
    /// the loader read them; none when the patch edits no manifest. A path the mesh does not
    /// read (the reader would ignore it with a warning) is refused.
    pub(super) fn patched_manifests(&self, patch: &Patch) -> Result<Option<Manifests>, PatchError> {
        let edits: Vec<(&Edit, &str, &str)> = patch
            .edits
            .iter()
            .filter_map(|e| match &e.target {
                Target::Manifest { kind, name } => Some((e, kind.as_str(), name.as_str())),
                Target::Canary => None,
            })
            .collect();
        if edits.is_empty() {
            return Ok(None);
        }
        let mut cx = Context {
            outline: Outline::of(""),
            file: self.file.display().to_string(),
            dir: self.file.parent().map(std::path::Path::to_path_buf),
            service: self.service.clone(),
            others: self.other_services().to_vec(),
            external_hosts: self.external_hosts.clone(),
            namespace: self.namespace.clone(),
            data_plane: self.data_plane,
            proxy: self.proxy.clone(),
            // Only manifests are read here, no version's proxy.
            proxy_threads: false,
            proxy_written: None,
            warnings: Vec::new(),
        };
        let mut docs: Vec<Vec<Value>> = self
            .manifest_sources
            .iter()
            .map(documents)
            .collect::<Result<_, _>>()?;
        let mut touched = vec![false; docs.len()];
        let mut found = vec![false; edits.len()];
        for (i, (edit, kind, name)) in edits.iter().enumerate() {
            // The object in effect is the last document of its kind and name: applying a
            // later one replaces an earlier (`kubectl apply`), so only the last is edited.
            let last = docs
                .iter()
                .enumerate()
                .flat_map(|(s, d)| {
                    d.iter()
                        .enumerate()
                        .filter(|(_, doc)| is(doc, kind, name))
                        .map(move |(j, _)| (s, j))
                })
                .last();
            if let Some((s, j)) = last {
                edit.apply(&mut docs[s][j])?;
                found[i] = true;
                touched[s] = true;
            }
        }
        let mut all = Manifests::default();
        for (si, src) in self.manifest_sources.iter().enumerate() {
            let text = if touched[si] {
                let texts: Result<Vec<String>, _> =
                    docs[si].iter().map(serde_norway::to_string).collect();
                texts
                    .map_err(|e| PatchError(format!("{}: cannot be written back: {e}", src.field)))?
                    .join("---\n")
            } else {
                src.text.clone()
            };
            let read = Source::new(src.file.clone(), src.field.clone(), &text, src.first_line);
            // The edited text is not the one written: its errors' lines would mislead.
            all.extend(cx.manifest_text(&read).map_err(|e| PatchError(e.message))?);
        }
        if let Some(i) = found.iter().position(|f| !f) {
            let (_, kind, name) = edits[i];
            return Err(PatchError(format!(
                "no {kind} named `{name}` among the scenario's manifests"
            )));
        }
        if let Some(w) = all
            .warnings
            .iter()
            .find(|w| !self.manifests.warnings.contains(w))
        {
            return Err(PatchError(format!("{w}: the mesh does not read that path")));
        }
        Ok(Some(all))
    }
}

/// Whether a document is the object of that kind and name.
fn is(doc: &Value, kind: &str, name: &str) -> bool {
    doc["kind"] == kind && doc["metadata"]["name"] == name
}

/// The documents of a manifest text, as JSON values (an empty document as null).
fn documents(src: &ManifestSource) -> Result<Vec<Value>, PatchError> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(&src.text)
        .map(|de| {
            Value::deserialize(de)
                .map_err(|e| PatchError(format!("{}: cannot be edited: {e}", src.field)))
        })
        .collect()
}

/// Whether a value is at `path` (`*`: in some element of a list; `[N]`: in element N).
fn present(doc: &Value, path: &[String]) -> bool {
    let Some((key, rest)) = path.split_first() else {
        return !doc.is_null();
    };
    let element = key
        .strip_prefix('[')
        .and_then(|k| k.strip_suffix(']'))
        .and_then(|k| k.parse::<usize>().ok());
    match doc {
        Value::Array(items) if key == "*" => items.iter().any(|i| present(i, rest)),
        Value::Array(items) => element
            .and_then(|i| items.get(i))
            .is_some_and(|v| present(v, rest)),
        Value::Object(map) => map.get(key).is_some_and(|v| present(v, rest)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::patch::{shown, split};

    #[test]
    fn a_path_splits_its_list_indices_and_shows_them_as_written() {
        let path = split("spec.http[0].route[1].weight");
        assert_eq!(path, ["spec", "http", "[0]", "route", "[1]", "weight"]);
        assert_eq!(shown(&path), "spec.http[0].route[1].weight");
    }
}
