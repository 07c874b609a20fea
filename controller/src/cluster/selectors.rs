//! How the primary's pods are told apart from the target's, as Flagger tells them apart, so that
//! a primary made by either controller serves the other: the selectors of the primary and the
//! Services, and the selectors in the primary's pod spec that name the target.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::workloads::{WorkloadProblem, selector_labels};

/// The labels Flagger selects pods on, in its order of preference (the default of its
/// `-selector-labels`): the primary and the Services select on the first of them the target's
/// selector has.
pub const FLAGGER_SELECTOR_LABELS: &[&str] = &["app", "name", "app.kubernetes.io/name"];

/// What tells the primary's pods and the target's apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selectors {
    /// The primary's `spec.selector.matchLabels`, which the apex and `-primary` Services select.
    pub primary: BTreeMap<String, String>,
    /// What the `-canary` Service selects: the same keys, with the target's values.
    pub canary: BTreeMap<String, String>,
    /// Whether the primary selects on the label Flagger's default `-selector-labels` choose
    /// for the target (else Flagger ran with others, or a target selects on none of them).
    pub by_default_labels: bool,
}

/// The selectors of a rollout, as Flagger makes them, so that a primary made by either
/// controller serves the other: one label, the first of [`FLAGGER_SELECTOR_LABELS`] the
/// target's selector has, its value suffixed `-primary` for the primary (the target's other
/// selector labels are copied to the primary's pods unchanged). A target selecting on none of
/// them (which Flagger refuses) has every selector label suffixed. A primary that exists keeps
/// its selector as found (it is immutable): one made by an older Fledge (every label
/// suffixed), or by a Flagger run with other `-selector-labels`.
pub fn selectors(
    target: &Deployment,
    primary: Option<&Deployment>,
) -> Result<Selectors, WorkloadProblem> {
    let selector = selector_labels(target)?;
    let by_default = FLAGGER_SELECTOR_LABELS
        .iter()
        .find_map(|l| selector.get_key_value(*l))
        .map(|(k, v)| BTreeMap::from([(k.clone(), v.clone())]));
    let found = primary
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.selector.match_labels.as_ref())
        .filter(|m| !m.is_empty());
    if let Some(found) = found {
        // Only a selector over the target's own keys is read back to the target's values.
        let canary: Option<BTreeMap<String, String>> = found
            .keys()
            .map(|k| {
                selector
                    .get_key_value(k)
                    .map(|(k, v)| (k.clone(), v.clone()))
            })
            .collect();
        if let Some(canary) = canary {
            return Ok(Selectors {
                primary: found.clone(),
                by_default_labels: by_default.as_ref() == Some(&canary),
                canary,
            });
        }
    }
    let by_default_labels = by_default.is_some();
    let canary = by_default.unwrap_or(selector);
    let primary = canary
        .iter()
        .map(|(k, v)| (k.clone(), format!("{v}-primary")))
        .collect();
    Ok(Selectors {
        primary,
        canary,
        by_default_labels,
    })
}

/// The primary's pod spec: the target's, with the selectors by which its pods spread or keep
/// apart (`topologySpreadConstraints`, pod anti-affinity) pointed at the primary's pods, as
/// Flagger points them: a value equal to the target's name, under one of the selector label
/// keys `keys`, gets `-primary` (in a list of values, only the first such).
pub fn primary_pod_spec(target: &Deployment, keys: &[&str]) -> Option<PodSpec> {
    let mut spec = target.spec.as_ref()?.template.spec.clone()?;
    let name = target.metadata.name.clone().unwrap_or_default();
    replace_in_selectors(&mut spec, keys, &name, &format!("{name}-primary"));
    Some(spec)
}

/// [`primary_pod_spec`] undone on a primary's pod spec: the spreading and anti-affinity
/// selector values `<target>-primary` under `keys` read as the target's name again.
pub fn target_pod_spec(spec: &mut PodSpec, target: &str, keys: &[&str]) {
    replace_in_selectors(spec, keys, &format!("{target}-primary"), target);
}

/// Replaces the value `from` by `to` under the keys `keys` in the spreading and anti-affinity
/// selectors of `spec` (in a list of values, only the first such).
fn replace_in_selectors(spec: &mut PodSpec, keys: &[&str], from: &str, to: &str) {
    let rewrite = |selector: Option<&mut LabelSelector>| {
        let Some(selector) = selector else { return };
        for e in selector.match_expressions.iter_mut().flatten() {
            if keys.contains(&e.key.as_str())
                && let Some(v) = e.values.iter_mut().flatten().find(|v| *v == from)
            {
                to.clone_into(v);
            }
        }
        for (k, v) in selector.match_labels.iter_mut().flatten() {
            if keys.contains(&k.as_str()) && v == from {
                to.clone_into(v);
            }
        }
    };
    for c in spec.topology_spread_constraints.iter_mut().flatten() {
        rewrite(c.label_selector.as_mut());
    }
    if let Some(anti) = spec
        .affinity
        .as_mut()
        .and_then(|a| a.pod_anti_affinity.as_mut())
    {
        for t in anti
            .preferred_during_scheduling_ignored_during_execution
            .iter_mut()
            .flatten()
        {
            rewrite(t.pod_affinity_term.label_selector.as_mut());
        }
        for t in anti
            .required_during_scheduling_ignored_during_execution
            .iter_mut()
            .flatten()
        {
            rewrite(t.label_selector.as_mut());
        }
    }
}

/// The keys whose values [`primary_pod_spec`] rewrites, as Flagger chooses them (all of its
/// `-selector-labels`): with its default labels, those and the primary's own selector keys;
/// with others (a primary selecting on a key the defaults would not have chosen), only the
/// primary's own keys, the one Flagger setting Fledge can read back.
pub fn rewritten_keys(selectors: &Selectors) -> Vec<&str> {
    let mut keys: Vec<&str> = selectors.primary.keys().map(String::as_str).collect();
    if selectors.by_default_labels {
        keys.extend(FLAGGER_SELECTOR_LABELS);
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Affinity, TopologySpreadConstraint};

    #[test]
    fn the_primarys_pods_spread_and_keep_apart_from_each_other_not_from_the_canarys() {
        let mut t: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo"},
            "spec": {"selector": {"matchLabels": {"app": "podinfo"}},
                     "template": {"spec": {"containers": [{"name": "app"}]}}}}))
        .unwrap();
        let spread: TopologySpreadConstraint = serde_json::from_value(serde_json::json!({
                "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": "podinfo", "team": "podinfo"}}}))
        .unwrap();
        let affinity: Affinity = serde_json::from_value(serde_json::json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "host",
                    "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In",
                        "values": ["other", "podinfo", "podinfo"]}]}}],
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                    "podAffinityTerm": {"topologyKey": "host",
                        "labelSelector": {"matchLabels": {"name": "podinfo"}}}}]}}))
        .unwrap();
        let pod = t.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
        pod.topology_spread_constraints = Some(vec![spread]);
        pod.affinity = Some(affinity);
        let selectors = selectors(&t, None).unwrap();
        let keys = rewritten_keys(&selectors);
        let got = serde_json::to_value(primary_pod_spec(&t, &keys).unwrap()).unwrap();
        assert_eq!(
            got["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"],
            serde_json::json!({"app": "podinfo-primary", "team": "podinfo"})
        );
        let anti = &got["affinity"]["podAntiAffinity"];
        assert_eq!(
            anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]["matchExpressions"]
                [0]["values"],
            serde_json::json!(["other", "podinfo-primary", "podinfo"])
        );
        assert_eq!(
            anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["labelSelector"]
                ["matchLabels"]["name"],
            "podinfo-primary"
        );
    }

    fn selecting(labels: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo"},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"spec": {"containers": [{"name": "app"}]}}}}))
        .unwrap()
    }

    #[test]
    fn only_the_primarys_own_key_is_rewritten_when_flagger_ran_with_other_selector_labels() {
        let t = selecting(serde_json::json!({"app": "podinfo", "component": "podinfo"}));
        let keys = |primary| {
            let s = selectors(&t, primary).unwrap();
            let mut k: Vec<String> = rewritten_keys(&s).into_iter().map(String::from).collect();
            k.sort();
            k.dedup();
            k
        };
        // Flagger's defaults (or no primary yet): the defaults, `app` among them.
        assert_eq!(keys(None), ["app", "app.kubernetes.io/name", "name"]);
        let by_app = selecting(serde_json::json!({"app": "podinfo-primary"}));
        assert_eq!(
            keys(Some(&by_app)),
            ["app", "app.kubernetes.io/name", "name"]
        );
        // Flagger run with `-selector-labels=component`: it rewrote only `component` values.
        let by_component = selecting(serde_json::json!({"component": "podinfo-primary"}));
        assert_eq!(keys(Some(&by_component)), ["component"]);
    }
}
