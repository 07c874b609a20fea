//! A version's `calls`: what each of its requests calls once the pod has done its own work,
//! step by step, a step being one call or `parallel` calls made together (see the mesh's
//! `Call`). A call names another service of the scenario; `probability` (default 1) is the
//! chance a request makes it; a failed call fails the caller's request unless `optional`;
//! `method` and `path` replace the caller's request's, whose headers the call carries.

use super::services::quoted;
use super::{Context, ScenarioError, ServiceModel, raw};
use crate::mesh::config::Call;

impl Context {
    /// The steps as written, checked for form (the services they name are checked once every
    /// service is known: [`Context::check_calls`]).
    pub(super) fn calls(
        &self,
        field: &str,
        steps: &[raw::CallStep],
    ) -> Result<Vec<Vec<Call>>, ScenarioError> {
        let mut out = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            let f = format!("{field}[{i}]");
            match (&step.service, &step.parallel) {
                (Some(service), None) => out.push(vec![self.call(
                    &f,
                    &raw::CallTo {
                        service: service.clone(),
                        method: step.method.clone(),
                        path: step.path.clone(),
                        probability: step.probability,
                        optional: step.optional,
                    },
                )?]),
                (None, Some(list)) => {
                    if step.probability.is_some()
                        || step.optional.is_some()
                        || step.method.is_some()
                        || step.path.is_some()
                    {
                        return Err(self.error(
                            &f,
                            "set `probability`, `optional`, `method` and `path` on each call of `parallel`",
                        ));
                    }
                    if list.is_empty() {
                        return Err(self.error(&format!("{f}.parallel"), "needs at least one call"));
                    }
                    let mut calls = Vec::with_capacity(list.len());
                    for (j, c) in list.iter().enumerate() {
                        calls.push(self.call(&format!("{f}.parallel[{j}]"), c)?);
                    }
                    out.push(calls);
                }
                (Some(_), Some(_)) => {
                    return Err(self.error(
                        &f,
                        "give either `service` (one call) or `parallel` (calls made together), not both",
                    ));
                }
                (None, None) => {
                    return Err(self.error(
                        &f,
                        "a step needs `service` (one call) or `parallel` (calls made together)",
                    ));
                }
            }
        }
        Ok(out)
    }

    fn call(&self, field: &str, c: &raw::CallTo) -> Result<Call, ScenarioError> {
        let service = &c.service;
        if service.is_empty() {
            return Err(self.error(&format!("{field}.service"), "must not be empty"));
        }
        let probability = match c.probability {
            Some(p) => self.probability(&format!("{field}.probability"), p)?,
            None => 1.0,
        };
        Ok(Call {
            service: service.to_string(),
            probability,
            optional: c.optional.unwrap_or(false),
            method: self.method(&format!("{field}.method"), c.method.as_deref())?,
            path: self.path(&format!("{field}.path"), c.path.as_deref())?,
        })
    }

    /// Every call names another service of the scenario. `field` gives a version's field.
    pub(super) fn check_calls(
        &self,
        services: &[ServiceModel],
        field: impl Fn(usize, &str) -> String,
    ) -> Result<(), ScenarioError> {
        let mut names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        names.extend(self.external_hosts.iter().map(String::as_str));
        for (si, s) in services.iter().enumerate() {
            for (name, v) in &s.versions {
                for (i, step) in v.behaviour.calls.iter().enumerate() {
                    for c in step {
                        let what = if c.service == s.name {
                            "is the version's own service: a service calling itself would never finish"
                        } else if !names.contains(&c.service.as_str()) {
                            "is not a service of the scenario"
                        } else {
                            continue;
                        };
                        return Err(self.error(
                            &format!("{}.calls[{i}]", field(si, name)),
                            format!(
                                "`{}` {what} (its services are {})",
                                c.service,
                                quoted(&names)
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
