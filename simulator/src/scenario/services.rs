//! The services of a scenario, in one model however they are written: `service:` (one service
//! with a `primary` and a `canary`) is read as the one entry of `services:` whose versions are
//! those two. The rollout's service (the Canary's target) comes first; its versions are the
//! ones Flagger manages, `primary` and `canary`, the canary taking what it does not set from
//! the primary as it always has. Any other service lists its versions by name, each with its
//! pods, pod labels and behaviour.
//!
//! A version's pods carry its `labels` plus `app: <service>` and `version: <name>` unless set,
//! as Istio's samples label them; DestinationRule subsets select versions by those labels.

use super::{Context, ScenarioError, Version, names, raw};

/// A service and its versions, in the order written.
#[derive(Clone, Debug)]
pub(crate) struct ServiceModel {
    pub(crate) name: String,
    pub(crate) versions: Vec<(String, Version)>,
}

/// The services as written, before the rollout's service is known.
pub(super) enum Written<'r> {
    /// `service:`: the rollout's service.
    One(&'r raw::Service),
    /// `services:`.
    Many(&'r [raw::ServiceEntry]),
}

impl Context {
    /// Which form the scenario uses; exactly one must be given.
    pub(super) fn written<'r>(&self, raw: &'r raw::Scenario) -> Result<Written<'r>, ScenarioError> {
        match (&raw.service, &raw.services) {
            (Some(s), None) => Ok(Written::One(s)),
            (None, Some(list)) if !list.is_empty() => Ok(Written::Many(list)),
            (None, Some(_)) => Err(self.error("services", "needs at least one service")),
            (None, None) => Err(self.error(
                "(document)",
                "give the services: `service:` (one service with a primary and a canary) or `services:`",
            )),
            (Some(_), Some(_)) => Err(self.error(
                "services",
                "give either `service:` or `services:`, not both (`service:` is the short form of a one-entry `services:`)",
            )),
        }
    }

    /// The name the Canary's service must have: the one service of `service:`, else the
    /// Canary's target, which must be one of `services:`.
    pub(super) fn rollout_service(
        &self,
        written: &Written<'_>,
        target: &str,
    ) -> Result<String, ScenarioError> {
        match written {
            Written::One(s) => Ok(s.name.clone()),
            Written::Many(list) => {
                if list.iter().any(|s| s.name == target) {
                    Ok(target.to_string())
                } else {
                    let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
                    Err(self.error(
                        "canary.spec.targetRef.name",
                        format!(
                            "targets `{target}`, but the scenario's services are {}",
                            quoted(&names)
                        ),
                    ))
                }
            }
        }
    }

    /// The services in one model, the rollout's (`rollout`) first, the others as written.
    pub(super) fn services(
        &mut self,
        written: &Written<'_>,
        rollout: &str,
    ) -> Result<Vec<ServiceModel>, ScenarioError> {
        let list = match written {
            Written::One(s) => {
                if let Some(why) = names::dns1035_label(&s.name) {
                    return Err(self.error("service.name", why));
                }
                self.check_labels("service.primary", &s.primary)?;
                self.check_labels("service.canary", &s.canary)?;
                let (primary, canary) = self.flagger_versions(
                    "service.primary",
                    &s.primary,
                    "service.canary",
                    &s.canary,
                )?;
                let out = vec![ServiceModel {
                    name: s.name.clone(),
                    versions: vec![("primary".into(), primary), ("canary".into(), canary)],
                }];
                self.check_calls(&out, |_, version| format!("service.{version}"))?;
                return Ok(out);
            }
            Written::Many(list) => list,
        };
        let mut out: Vec<ServiceModel> = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let field = format!("services[{i}]");
            if s.name.is_empty() {
                return Err(self.error(&format!("{field}.name"), "must not be empty"));
            }
            if let Some(why) = names::dns1035_label(&s.name) {
                return Err(self.error(&format!("{field}.name"), why));
            }
            if list[..i].iter().any(|o| o.name == s.name) {
                return Err(self.error(
                    &format!("{field}.name"),
                    format!("service `{}` is named twice", s.name),
                ));
            }
            if s.versions.is_empty() {
                return Err(self.error(&format!("{field}.versions"), "needs at least one version"));
            }
            let vfield = |name: &str| format!("{field}.versions.{name}");
            let versions = if s.name == rollout {
                self.rollout_versions(&field, s)?
            } else {
                let mut versions = Vec::new();
                for (name, rv) in &s.versions {
                    if name.is_empty() {
                        return Err(
                            self.error(&format!("{field}.versions"), "a version needs a name")
                        );
                    }
                    if let Some(why) = names::version(name) {
                        return Err(self.error(&vfield(name), why));
                    }
                    versions.push((name.clone(), self.version(&vfield(name), rv, None, 0)?));
                }
                versions
            };
            for (name, rv) in &s.versions {
                self.check_labels(&vfield(name), rv)?;
            }
            let model = ServiceModel {
                name: s.name.clone(),
                versions,
            };
            if s.name == rollout {
                out.insert(0, model);
            } else {
                out.push(model);
            }
        }
        self.check_calls(&out, |si, version| {
            let i = list.iter().position(|e| e.name == out[si].name);
            format!("services[{}].versions.{version}", i.unwrap_or(si))
        })?;
        Ok(out)
    }

    /// The Canary's service under `services:`: Flagger manages its versions, so they are
    /// `primary` and, optionally, `canary`.
    fn rollout_versions(
        &mut self,
        field: &str,
        s: &raw::ServiceEntry,
    ) -> Result<Vec<(String, Version)>, ScenarioError> {
        if let Some((name, _)) = s
            .versions
            .iter()
            .find(|(n, _)| n != "primary" && n != "canary")
        {
            return Err(self.error(
                &format!("{field}.versions.{name}"),
                format!(
                    "`{}` is the Canary's service, whose versions Flagger manages: name them `primary` and `canary`, not `{name}`",
                    s.name
                ),
            ));
        }
        let get = |n: &str| s.versions.iter().find(|(v, _)| v == n).map(|(_, v)| v);
        let Some(primary) = get("primary") else {
            return Err(self.error(
                &format!("{field}.versions"),
                format!(
                    "`{}` is the Canary's service: it needs a `primary` version",
                    s.name
                ),
            ));
        };
        let default = raw::Version::default();
        let canary = get("canary").unwrap_or(&default);
        let (p, c) = self.flagger_versions(
            &format!("{field}.versions.primary"),
            primary,
            &format!("{field}.versions.canary"),
            canary,
        )?;
        Ok(vec![("primary".into(), p), ("canary".into(), c)])
    }

    /// The primary, and the canary taking what it does not set from the primary.
    fn flagger_versions(
        &mut self,
        pfield: &str,
        primary: &raw::Version,
        cfield: &str,
        canary: &raw::Version,
    ) -> Result<(Version, Version), ScenarioError> {
        let p = self.version(pfield, primary, None, 1)?;
        let c = self.version(cfield, canary, Some(&p), 1)?;
        Ok((p, c))
    }

    fn check_labels(&self, field: &str, v: &raw::Version) -> Result<(), ScenarioError> {
        for (k, val) in v.labels.iter().flatten() {
            if k.is_empty() {
                return Err(self.error(&format!("{field}.labels"), "a label needs a name"));
            }
            if val.is_empty() {
                return Err(self.error(&format!("{field}.labels.{k}"), "a label needs a value"));
            }
            if let Some(why) = names::label_key(k).or_else(|| names::label_value(val)) {
                return Err(self.error(&format!("{field}.labels.{k}"), why));
            }
        }
        Ok(())
    }
}

pub(super) fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
