//! The ConfigMaps and Secrets a pod template references, and their `-primary` copies as Flagger
//! names them: Flagger copies each tracked config `<name>` to `<name>-primary` and points the
//! primary's pod spec at the copy (volumes, projected volume sources, and `env` `valueFrom` and
//! `envFrom` of containers and init containers).
//!
//! Fledge does not make such copies yet; it reads them at take-over, so that a primary whose
//! references Flagger renamed runs the same pod template as the target.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::PodSpec;

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
