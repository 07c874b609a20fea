//! A version's `calls`: what each of its requests calls once the pod has done its own work,
//! step by step, a step being one call or `parallel` calls made together (see the mesh's
//! `Call`). A call names another service of the scenario; `probability` (default 1) is the
//! chance a request makes it; a failed call fails the caller's request unless `optional`;
//! `method` and `path` replace the caller's request's, whose headers the call carries;
//! `timeout` is the calling application's own (it gives up on the call, whatever the route says).

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
                        timeout: step.timeout.clone(),
                    },
                )?]),
                (None, Some(list)) => {
                    if step.probability.is_some()
                        || step.optional.is_some()
                        || step.method.is_some()
                        || step.path.is_some()
                        || step.timeout.is_some()
                    {
                        return Err(self.error(
                            &f,
                            "set `probability`, `optional`, `method`, `path` and `timeout` on each call of `parallel`",
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
        let timeout = match &c.timeout {
            Some(t) => {
                let tf = format!("{field}.timeout");
                match self.duration(&tf, t)? {
                    0 => return Err(self.error(&tf, "must be more than 0 (leave it out for none)")),
                    t => Some(t),
                }
            }
            None => None,
        };
        Ok(Call {
            service: service.to_string(),
            probability,
            optional: c.optional.unwrap_or(false),
            method: self.method(&format!("{field}.method"), c.method.as_deref())?,
            path: self.path(&format!("{field}.path"), c.path.as_deref())?,
            timeout,
        })
    }

    /// Every call names another service of the scenario, and no calls loop between services
    /// (a request would wait on itself). `field` gives a version's field.
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
        // Who calls whom, in the order written: (callee, caller's version, step).
        let edges: Vec<Vec<(usize, &str, usize)>> = services
            .iter()
            .map(|s| {
                let mut out = Vec::new();
                for (version, v) in &s.versions {
                    for (i, step) in v.behaviour.calls.iter().enumerate() {
                        for c in step {
                            // External hosts call no one: only the services can loop.
                            if let Some(to) = services.iter().position(|t| t.name == c.service) {
                                out.push((to, version.as_str(), i));
                            }
                        }
                    }
                }
                out
            })
            .collect();
        if let Some((caller, version, i, cycle)) = closing_call(&edges) {
            let cycle: Vec<&str> = cycle.iter().map(|&s| names[s]).collect();
            return Err(self.error(
                &format!("{}.calls[{i}]", field(caller, version)),
                format!(
                    "calling `{}` closes a loop of calls ({}): a request would wait on itself and never finish",
                    cycle[0],
                    cycle.join(" -> ")
                ),
            ));
        }
        Ok(())
    }
}

/// The first call found (depth first, in the order written) that closes a loop: its caller,
/// version and step, and the loop's services from the callee round to it again.
fn closing_call<'a>(
    edges: &[Vec<(usize, &'a str, usize)>],
) -> Option<(usize, &'a str, usize, Vec<usize>)> {
    type Found<'a> = Option<(usize, &'a str, usize, Vec<usize>)>;
    // state: 0 not visited, 1 on the current path, 2 done.
    fn visit<'a>(
        s: usize,
        edges: &[Vec<(usize, &'a str, usize)>],
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Found<'a> {
        state[s] = 1;
        path.push(s);
        for &(to, version, step) in &edges[s] {
            if state[to] == 1 {
                let start = path.iter().position(|&p| p == to).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(to);
                return Some((s, version, step, cycle));
            }
            if state[to] == 0
                && let Some(found) = visit(to, edges, state, path)
            {
                return Some(found);
            }
        }
        path.pop();
        state[s] = 2;
        None
    }
    let mut state = vec![0u8; edges.len()];
    (0..edges.len()).find_map(|s| {
        if state[s] != 0 {
            return None;
        }
        visit(s, edges, &mut state, &mut Vec::new())
    })
}
