//! The operator's commands, like `kubectl argo rollouts`: `status` shows where each rollout is
//! and why; `promote` and `abort` leave a command in the Canary's `fledge.dev/command`
//! annotation for the controller to carry out (and clear); `resume` clears `spec.suspend`.

use std::fmt::Write as _;

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::{COMMAND_ANNOTATION, Error, Result, flagger, status};
use crate::spec::Canary;

/// What an operator asks of a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Open the confirm gate the rollout waits at.
    Promote,
    /// Roll back now.
    Abort,
    /// Clear `spec.suspend`.
    Resume,
}

fn api(client: Client, namespace: Option<&str>) -> Api<Canary> {
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::default_namespaced(client),
    }
}

/// Flagger's Canaries, which the controller reconciles under `--flagger-canaries`.
fn flagger_api(client: Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = flagger::canary_resource();
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::default_namespaced_with(client, &resource),
    }
}

/// A Flagger Canary as the controller reads it (its state from the `fledge.dev/state`
/// annotation); one that does not read shows why in its last decision.
fn flagger_canary(object: &DynamicObject) -> Canary {
    flagger::to_canary(object).unwrap_or_else(|e| {
        let mut c = Canary::new(&object.name_any(), Default::default());
        c.metadata = object.metadata.clone();
        c.status = Some(crate::spec::CanaryStatus {
            message: Some(format!("cannot be read: {e}")),
            ..Default::default()
        });
        c
    })
}

/// Whether an error is the API's 404: no such object, or no such resource (Flagger's CRD not
/// installed).
fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// `status [NAME]`: one Canary in detail, or a table of all in the namespace (or every
/// namespace with `all_namespaces`); Flagger's Canaries too (`flagger.app` in the table's
/// API column), for the controller may reconcile them.
pub async fn status(
    client: Client,
    namespace: Option<&str>,
    name: Option<&str>,
    all_namespaces: bool,
) -> Result<String> {
    let read = |source| Error::Read {
        kind: "Canary",
        name: name.unwrap_or("*").to_string(),
        source,
    };
    if let Some(name) = name {
        let fledge = api(client.clone(), namespace);
        if let Some(canary) = fledge.get_opt(name).await.map_err(read)? {
            return Ok(describe(&canary));
        }
        match flagger_api(client, namespace).get_opt(name).await {
            Ok(Some(object)) => return Ok(describe(&flagger_canary(&object))),
            Ok(None) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(read(e)),
        }
        // Neither: the API's own answer for Fledge's Canary says so.
        return Err(read(fledge.get(name).await.err().unwrap_or_else(|| {
            kube::Error::Service("the Canary appeared and went while it was read".into())
        })));
    }
    let (fledge, flaggers) = if all_namespaces {
        let resource = flagger::canary_resource();
        (Api::all(client.clone()), Api::all_with(client, &resource))
    } else {
        (
            api(client.clone(), namespace),
            flagger_api(client, namespace),
        )
    };
    let mut canaries = fledge
        .list(&ListParams::default())
        .await
        .map_err(read)?
        .items;
    // Flagger's Canaries are an extra: a role that may read only Fledge's still gets its table.
    let note = match flaggers.list(&ListParams::default()).await {
        Ok(list) => {
            canaries.extend(list.items.iter().map(flagger_canary));
            String::new()
        }
        Err(e) if not_found(&e) => String::new(),
        Err(e) => format!("note: Flagger's Canaries (flagger.app) could not be read: {e}\n"),
    };
    Ok(table(&canaries) + &note)
}

/// A table of Canaries: namespace, name, phase, weight, failed checks, last decision.
pub fn table(canaries: &[Canary]) -> String {
    let mut out = String::from("NAMESPACE\tNAME\tAPI\tPHASE\tWEIGHT\tFAILED\tLAST DECISION\n");
    for c in canaries {
        let s = c.status.clone().unwrap_or_default();
        let message = s.message.unwrap_or_default();
        let first_line = message.lines().next().unwrap_or("");
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            c.namespace().unwrap_or_default(),
            c.name_any(),
            api_group(c),
            if s.phase.is_empty() { "-" } else { &s.phase },
            s.canary_weight,
            s.failed_checks,
            first_line
        );
    }
    out
}

/// One Canary in detail: phase, weights, the last decision and why, each metric's last result.
pub fn describe(canary: &Canary) -> String {
    let s = canary.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Canary {}/{} ({})",
        canary.namespace().unwrap_or_default(),
        canary.name_any(),
        api_group(canary)
    );
    let phase = if s.phase.is_empty() { "-" } else { &s.phase };
    let _ = writeln!(out, "  Phase:          {phase}");
    let _ = writeln!(
        out,
        "  Weight:         canary {}%, primary {}%",
        s.canary_weight,
        100 - s.canary_weight
    );
    let _ = writeln!(out, "  Failed checks:  {}", s.failed_checks);
    if s.iterations > 0 {
        let _ = writeln!(out, "  Iterations:     {}", s.iterations);
    }
    if let Some(t) = &s.last_transition_time {
        let _ = writeln!(out, "  Since:          {t}");
    }
    if let Some(m) = &s.message {
        let _ = writeln!(out, "  Last decision:  {m}");
    }
    if canary.spec.suspend {
        let _ = writeln!(
            out,
            "  Suspended:      yes (fledge-controller resume to continue)"
        );
    }
    if let Some(c) = canary.annotations().get(COMMAND_ANNOTATION) {
        let _ = writeln!(out, "  Pending command: {c}");
    }
    if let Ok(Some(state)) = status::recorded_state(Some(&s))
        && !state.analysis.is_empty()
    {
        let _ = writeln!(out, "  Last analysis:");
        for r in &state.analysis {
            let _ = writeln!(out, "    {}: {} ({})", r.name, r.verdict, r.reason);
        }
    }
    out
}

/// The API group a Canary was read from: Fledge's, or Flagger's.
fn api_group(canary: &Canary) -> &'static str {
    if flagger::is_flagger(canary) {
        flagger::GROUP
    } else {
        crate::spec::GROUP
    }
}

/// Sends `request` to the Canary `name` (Fledge's, else Flagger's of that name); returns what
/// was done, for the operator.
pub async fn send(
    client: Client,
    namespace: Option<&str>,
    name: &str,
    request: Request,
) -> Result<String> {
    let patch = match request {
        Request::Promote => {
            serde_json::json!({"metadata": {"annotations": {COMMAND_ANNOTATION: "promote"}}})
        }
        Request::Abort => {
            serde_json::json!({"metadata": {"annotations": {COMMAND_ANNOTATION: "abort"}}})
        }
        Request::Resume => serde_json::json!({"spec": {"suspend": false}}),
    };
    let write = |source| Error::Write {
        kind: "Canary",
        name: name.to_string(),
        source,
    };
    let params = PatchParams::default();
    let canary = match api(client.clone(), namespace)
        .patch(name, &params, &Patch::Merge(&patch))
        .await
    {
        Ok(canary) => canary,
        Err(e) if not_found(&e) => {
            let patched = flagger_api(client, namespace)
                .patch(name, &params, &Patch::Merge(&patch))
                .await;
            match patched {
                Ok(object) => flagger_canary(&object),
                // Neither exists: the error about Fledge's Canary, the one tried first.
                Err(f) if not_found(&f) => return Err(write(e)),
                Err(f) => return Err(write(f)),
            }
        }
        Err(e) => return Err(write(e)),
    };
    let phase = canary
        .status
        .map(|s| s.phase)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "-".into());
    let what = match request {
        Request::Promote => "promotion requested",
        Request::Abort => "rollback requested",
        Request::Resume => "resumed",
    };
    Ok(format!(
        "{}/{}: {what} (phase {phase})",
        canary.metadata.namespace.unwrap_or_default(),
        name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{CanarySpec, CanaryStatus};

    fn canary(phase: &str, weight: i64, message: &str) -> Canary {
        let mut c = Canary::new("podinfo", CanarySpec::default());
        c.metadata.namespace = Some("test".into());
        c.status = Some(CanaryStatus {
            phase: phase.into(),
            canary_weight: weight,
            message: Some(message.into()),
            ..CanaryStatus::default()
        });
        c
    }

    #[test]
    fn the_table_shows_phase_weight_and_the_first_line_of_the_last_decision() {
        let t = table(&[canary(
            "Progressing",
            20,
            "Advance podinfo canary weight 20%\nmore",
        )]);
        assert_eq!(
            t.lines().nth(1),
            Some(
                "test\tpodinfo\tfledge.dev\tProgressing\t20\t0\tAdvance podinfo canary weight 20%"
            )
        );
    }

    #[test]
    fn a_canary_never_reconciled_shows_a_dash_for_its_phase() {
        let mut c = canary("", 0, "");
        c.status = None;
        assert!(describe(&c).contains("Phase:          -"));
    }
}
