//! The ConfigMaps and Secrets a pod template references, and their `-primary` copies as Flagger
//! names them: Flagger copies each tracked config `<name>` to `<name>-primary` and points the
//! primary's pod spec at the copy (volumes, projected volume sources, and `env` `valueFrom` and
//! `envFrom` of containers and init containers).
//!
//! Fledge does the same, for its own Canaries and Flagger's: the configs' content is part of the
//! revision ([`revision`]), so a config-only change is a rollout, analysed on the target's pods
//! (which read the configs themselves) before promotion copies it for the primary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::warn;

use super::{Error, FIELD_MANAGER, Result, workloads};
use crate::spec::Canary;

/// The annotation by which a config is left out of tracking (a value starting with `disable`).
const TRACKING: &str = "flagger.app/config-tracking";
/// The Secret types that are tracked: an image pull Secret or a service account token belongs
/// to the service account, not to the app's configuration.
const TRACKED_SECRET_TYPES: &[&str] = &[
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
];
/// The primary's pod template annotation holding a checksum of its configs' content: a new
/// content restarts the primary's pods at promotion, as Flagger's new `flagger-id` does.
pub const CONFIGS_ANNOTATION: &str = "fledge.dev/configs";

/// The suffix of a config's copy for the primary.
const SUFFIX: &str = "-primary";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

/// A ConfigMap or Secret a pod spec references, by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
}

impl fmt::Display for ConfigRef {
    /// As Flagger keys `status.trackedConfigs`: `configmap/<name>`, `secret/<name>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ConfigKind::ConfigMap => "configmap",
            ConfigKind::Secret => "secret",
        };
        write!(f, "{kind}/{}", self.name)
    }
}

/// Calls `f` with every config reference of `spec` where Flagger looks for them: its kind, its
/// name (to read or rewrite) and whether it is `optional`.
fn visit(spec: &mut PodSpec, f: &mut impl FnMut(ConfigKind, &mut String, Option<bool>)) {
    use ConfigKind::{ConfigMap, Secret};
    for v in spec.volumes.iter_mut().flatten() {
        if let Some(c) = v.config_map.as_mut() {
            f(ConfigMap, &mut c.name, c.optional);
        }
        if let Some(s) = v.secret.as_mut()
            && let Some(name) = s.secret_name.as_mut()
        {
            f(Secret, name, s.optional);
        }
        for source in v
            .projected
            .iter_mut()
            .flat_map(|p| p.sources.iter_mut().flatten())
        {
            if let Some(c) = source.config_map.as_mut() {
                f(ConfigMap, &mut c.name, c.optional);
            }
            if let Some(s) = source.secret.as_mut() {
                f(Secret, &mut s.name, s.optional);
            }
        }
    }
    let init = spec.init_containers.iter_mut().flatten();
    for c in spec.containers.iter_mut().chain(init) {
        for from in c
            .env
            .iter_mut()
            .flatten()
            .filter_map(|e| e.value_from.as_mut())
        {
            if let Some(k) = from.config_map_key_ref.as_mut() {
                f(ConfigMap, &mut k.name, k.optional);
            } else if let Some(k) = from.secret_key_ref.as_mut() {
                f(Secret, &mut k.name, k.optional);
            }
        }
        for from in c.env_from.iter_mut().flatten() {
            if let Some(r) = from.config_map_ref.as_mut() {
                f(ConfigMap, &mut r.name, r.optional);
            } else if let Some(r) = from.secret_ref.as_mut() {
                f(Secret, &mut r.name, r.optional);
            }
        }
    }
}

/// The configs `spec` references, each with whether the pod needs it (not `optional`).
pub fn references(spec: &PodSpec) -> BTreeMap<ConfigRef, bool> {
    let mut out = BTreeMap::new();
    visit(&mut spec.clone(), &mut |kind, name, optional| {
        let reference = ConfigRef {
            kind,
            name: name.clone(),
        };
        out.insert(reference, optional != Some(true));
    });
    out
}

/// Points every reference of `spec` to a config of `renamed` at its `-primary` copy.
pub fn rename(spec: &mut PodSpec, renamed: &BTreeSet<ConfigRef>) {
    visit(spec, &mut |kind, name, _| {
        let reference = ConfigRef {
            kind,
            name: name.clone(),
        };
        if renamed.contains(&reference) {
            name.push_str(SUFFIX);
        }
    });
}

/// [`rename`] undone: every reference of `spec` to the `-primary` copy of a config of
/// `renamed` points at that config again.
pub fn unrename(spec: &mut PodSpec, renamed: &BTreeSet<ConfigRef>) {
    visit(spec, &mut |kind, name, _| {
        let Some(base) = name.strip_suffix(SUFFIX) else {
            return;
        };
        let reference = ConfigRef {
            kind,
            name: base.to_string(),
        };
        if renamed.contains(&reference) {
            *name = reference.name;
        }
    });
}

/// The configs of `target` whose `-primary` copy `primary` references instead: those Flagger
/// copied when it last promoted.
pub fn renamed_by_flagger(target: &PodSpec, primary: &PodSpec) -> BTreeSet<ConfigRef> {
    let copies = references(primary);
    references(target)
        .into_keys()
        .filter(|r| {
            copies.contains_key(&ConfigRef {
                kind: r.kind,
                name: format!("{}{SUFFIX}", r.name),
            })
        })
        .collect()
}

/// A tracked config as read.
#[derive(Clone, Debug, PartialEq)]
pub enum Config {
    Map(ConfigMap),
    Secret(Secret),
}

/// The configs a pod spec references that are tracked, as read now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tracked(pub BTreeMap<ConfigRef, Config>);

impl Tracked {
    pub fn refs(&self) -> BTreeSet<ConfigRef> {
        self.0.keys().cloned().collect()
    }

    /// What of each config the pods read: a ConfigMap's `data` and `binaryData`, a Secret's
    /// `type` and `data`, keyed as Flagger keys `trackedConfigs`.
    pub fn content(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (r, config) in &self.0 {
            let content = match config {
                Config::Map(m) => json!({"data": m.data, "binaryData": m.binary_data}),
                Config::Secret(s) => json!({"type": s.type_, "data": s.data}),
            };
            out.insert(r.to_string(), content);
        }
        Value::Object(out)
    }

    /// A checksum of [`Tracked::content`]; `None` when nothing is tracked.
    pub fn checksum(&self) -> Option<String> {
        let bytes = serde_json::to_vec(&self.content()).unwrap_or_default();
        (!self.0.is_empty()).then(|| format!("{:016x}", workloads::fnv1a(&bytes)))
    }
}

/// Whether a config is tracked, as Flagger decides: not annotated `flagger.app/config-tracking:
/// disabled`, and for a Secret, of a type the app reads (`secret_type`, `None` for a ConfigMap).
fn is_tracked(meta: &ObjectMeta, secret_type: Option<&str>) -> bool {
    let disabled = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRACKING))
        .is_some_and(|v| v.starts_with("disable"));
    // The API server defaults an empty type to Opaque.
    let type_ok = secret_type.is_none_or(|t| t.is_empty() || TRACKED_SECRET_TYPES.contains(&t));
    !disabled && type_ok
}

/// The revision of the target: its pod template's and, when it references tracked configs,
/// their content too, so that a change to a config alone is a new revision. Without tracked
/// configs, the revision of the template alone (as recorded before configs were tracked).
pub fn revision(target: &Deployment, tracked: &Tracked) -> String {
    let Some(sum) = tracked.checksum() else {
        return workloads::revision(target);
    };
    format!("{}-{sum}", workloads::revision(target))
}

/// The reference to a config's `-primary` copy.
fn copy_of(r: &ConfigRef) -> ConfigRef {
    ConfigRef {
        kind: r.kind,
        name: format!("{}{SUFFIX}", r.name),
    }
}

/// The copy of a tracked config for the primary: `<name>-primary`, its content, owned by the
/// Canary.
pub fn copy(canary: &Canary, config: &Config) -> Config {
    let meta = |m: &ObjectMeta| ObjectMeta {
        name: Some(format!("{}{SUFFIX}", m.name.clone().unwrap_or_default())),
        namespace: canary.metadata.namespace.clone(),
        owner_references: Some(
            super::flagger::owner_reference(canary)
                .into_iter()
                .collect(),
        ),
        ..ObjectMeta::default()
    };
    match config {
        Config::Map(m) => Config::Map(ConfigMap {
            metadata: meta(&m.metadata),
            data: m.data.clone(),
            binary_data: m.binary_data.clone(),
            immutable: None,
        }),
        Config::Secret(s) => Config::Secret(Secret {
            metadata: meta(&s.metadata),
            data: s.data.clone(),
            type_: s.type_.clone(),
            immutable: None,
            string_data: None,
        }),
    }
}

/// Reads and writes the configs of one namespace.
pub struct Configs {
    maps: Api<ConfigMap>,
    secrets: Api<Secret>,
}

impl Configs {
    pub fn new(client: Client, namespace: &str) -> Self {
        Configs {
            maps: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
        }
    }

    async fn read(&self, r: &ConfigRef) -> Result<Option<Config>> {
        let read = |kind: &'static str| {
            let name = r.name.clone();
            move |source| Error::Read { kind, name, source }
        };
        Ok(match r.kind {
            ConfigKind::ConfigMap => self
                .maps
                .get_opt(&r.name)
                .await
                .map_err(read("ConfigMap"))?
                .map(Config::Map),
            ConfigKind::Secret => self
                .secrets
                .get_opt(&r.name)
                .await
                .map_err(read("Secret"))?
                .map(Config::Secret),
        })
    }

    /// The tracked configs `spec` references, as they are now. One that does not exist is left
    /// out (the pods that need it do not start, which the rollout sees).
    pub async fn tracked(&self, spec: Option<&PodSpec>) -> Result<Tracked> {
        let mut out = BTreeMap::new();
        for (r, needed) in spec.map(references).unwrap_or_default() {
            let Some(config) = self.read(&r).await? else {
                if needed {
                    warn!(config = %r, "referenced by the pod template but not found");
                }
                continue;
            };
            let tracked = match &config {
                Config::Map(m) => is_tracked(&m.metadata, None),
                Config::Secret(s) => {
                    is_tracked(&s.metadata, Some(s.type_.as_deref().unwrap_or_default()))
                }
            };
            if tracked {
                out.insert(r, config);
            }
        }
        Ok(Tracked(out))
    }

    /// `tracked` with each config's content replaced by its `-primary` copy's, where there is
    /// one: what a primary reading the copies reads. A config changed since the last promotion
    /// differs from its copy until the next one.
    pub async fn as_copied(&self, tracked: Tracked) -> Result<Tracked> {
        let mut out = BTreeMap::new();
        for (r, config) in tracked.0 {
            let copied = self.read(&copy_of(&r)).await?;
            out.insert(r, copied.unwrap_or(config));
        }
        Ok(Tracked(out))
    }

    /// Whether the `-primary` copy of every tracked config exists with the same content.
    pub async fn copies_current(&self, tracked: &Tracked) -> Result<bool> {
        for (r, config) in &tracked.0 {
            let found = self.read(&copy_of(r)).await?;
            let same = match (config, &found) {
                (Config::Map(a), Some(Config::Map(b))) => {
                    (&a.data, &a.binary_data) == (&b.data, &b.binary_data)
                }
                (Config::Secret(a), Some(Config::Secret(b))) => {
                    (&a.type_, &a.data) == (&b.type_, &b.data)
                }
                _ => false,
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes the `-primary` copy of every tracked config (server-side apply).
    pub async fn write_copies(&self, canary: &Canary, tracked: &Tracked) -> Result<()> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for config in tracked.0.values() {
            match copy(canary, config) {
                Config::Map(m) => {
                    let name = m.metadata.name.clone().unwrap_or_default();
                    self.maps
                        .patch(&name, &params, &Patch::Apply(&m))
                        .await
                        .map_err(|source| Error::Write {
                            kind: "ConfigMap",
                            name: name.clone(),
                            source,
                        })?;
                }
                Config::Secret(s) => {
                    let name = s.metadata.name.clone().unwrap_or_default();
                    self.secrets
                        .patch(&name, &params, &Patch::Apply(&s))
                        .await
                        .map_err(|source| Error::Write {
                            kind: "Secret",
                            name: name.clone(),
                            source,
                        })?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A pod spec referencing configs by the names `config`, `secret`, `tls` and `env`.
    fn spec(suffix: &str) -> PodSpec {
        let [config, secret, tls, env] =
            ["app-config", "app-secret", "tls", "env"].map(|n| format!("{n}{suffix}"));
        serde_json::from_value(json!({
            "volumes": [
                {"name": "a", "configMap": {"name": config}},
                {"name": "b", "secret": {"secretName": secret, "optional": true}},
                {"name": "c", "projected": {"sources": [
                    {"configMap": {"name": config}}, {"secret": {"name": tls}}]}}],
            "initContainers": [{"name": "init",
                "envFrom": [{"secretRef": {"name": secret}}]}],
            "containers": [{"name": "app",
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": env, "key": "x"}}},
                        {"name": "Y", "valueFrom": {"secretKeyRef": {"name": secret, "key": "y"}}}],
                "envFrom": [{"configMapRef": {"name": config, "optional": true}}]}]
        }))
        .unwrap()
    }

    fn reference(kind: ConfigKind, name: &str) -> ConfigRef {
        ConfigRef {
            kind,
            name: name.into(),
        }
    }

    #[test]
    fn every_place_flagger_tracks_a_config_is_found_and_renamed() {
        use ConfigKind::{ConfigMap, Secret};
        let found = references(&spec(""));
        let names: Vec<String> = found.keys().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "configmap/app-config",
                "configmap/env",
                "secret/app-secret",
                "secret/tls"
            ]
        );
        // Needed unless `optional`, as the last reference to it says (as Flagger reads it).
        assert!(found[&reference(Secret, "tls")]);
        assert!(!found[&reference(ConfigMap, "app-config")]);
        let mut renamed = spec("");
        let all: BTreeSet<ConfigRef> = found.into_keys().collect();
        rename(&mut renamed, &all);
        assert_eq!(renamed, spec("-primary"));
        unrename(&mut renamed, &all);
        assert_eq!(renamed, spec(""));
    }

    #[test]
    fn only_configs_whose_copy_the_primary_references_count_as_renamed() {
        let target = spec("");
        let mut primary = target.clone();
        rename(
            &mut primary,
            &BTreeSet::from([reference(ConfigKind::ConfigMap, "app-config")]),
        );
        assert_eq!(
            renamed_by_flagger(&target, &primary),
            BTreeSet::from([reference(ConfigKind::ConfigMap, "app-config")])
        );
        assert!(renamed_by_flagger(&target, &target).is_empty());
    }
}
