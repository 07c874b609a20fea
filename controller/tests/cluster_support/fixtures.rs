//! The tests' Canary and target, and the steps most tests begin with.

use super::*;

/// The Canary of the tests: podinfo on Istio, 10% steps to 30%, one success-rate check, two
/// failed checks roll back.
pub fn canary(extra_spec: Value) -> Value {
    let mut c = json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS, "uid": "c-uid-1",
                     "finalizers": ["fledge.dev/finalizer"]},
        "spec": {
            "provider": "istio",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {
                "interval": "1m", "threshold": 2, "maxWeight": 30, "stepWeight": 10,
                "metrics": [{"name": "request-success-rate",
                             "thresholdRange": {"min": 99}, "interval": "1m"}]
            }
        }
    });
    merge(&mut c["spec"], &extra_spec);
    c
}

/// The target Deployment, running `image`.
pub fn deployment(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "podinfo", "namespace": NS, "labels": {"app": "podinfo"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {"labels": {"app": "podinfo"}},
                "spec": {"containers": [{"name": "podinfo", "image": image}]}
            }
        }
    })
}

pub const DS_TARGET: &str = "/apis/apps/v1/namespaces/test/daemonsets/podinfo";
pub const DS_PRIMARY: &str = "/apis/apps/v1/namespaces/test/daemonsets/podinfo-primary";

/// The target DaemonSet, running `image` on the nodes with SSDs.
pub fn daemon_set(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "podinfo", "namespace": NS, "labels": {"app": "podinfo"}},
        "spec": {
            "selector": {"matchLabels": {"app": "podinfo"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "podinfo"}},
                "spec": {"containers": [{"name": "podinfo", "image": image}],
                         "nodeSelector": {"disk": "ssd"}}
            }
        }
    })
}

/// A cluster with the Canary (finalizer already added) and its target.
pub fn cluster_with(canary: Value, target: Option<Value>) -> FakeCluster {
    let c = FakeCluster::new();
    c.put(CANARY, canary);
    if let Some(t) = target {
        c.put(TARGET, t);
    }
    c.settle();
    c
}

/// Changes the target's image (a new revision), as `kubectl set image` would.
pub fn set_image(c: &FakeCluster, image: &str) {
    let mut t = c.get(TARGET).unwrap();
    t["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
    let g = t["metadata"]["generation"].as_i64().unwrap_or(1);
    t["metadata"]["generation"] = json!(g + 1);
    c.put(TARGET, t);
}

/// Reconciles with fresh contexts, settling workloads and moving the clock an interval each
/// time, until the phase is `phase` (or `limit` reconciles have run).
pub async fn run_until(c: &FakeCluster, phase: &str, limit: usize) -> usize {
    for i in 0..limit {
        let ctx = c.context();
        c.reconcile(&ctx).await.expect("reconcile");
        c.settle();
        if c.phase() == phase {
            // Onboarding scales the target down on the tick after the one that routed traffic
            // to the primary: `Initialized` means both done.
            if phase == "Initialized" && c.get(TARGET).unwrap()["spec"]["replicas"] != 0 {
                c.advance_clock(Duration::from_secs(60));
                c.reconcile(&c.context()).await.expect("reconcile");
                c.settle();
            }
            return i + 1;
        }
        c.advance_clock(Duration::from_secs(60));
    }
    panic!(
        "phase {phase} not reached in {limit} reconciles; at {}",
        c.phase()
    );
}

/// The Services of the test Canary.
pub const SERVICES: &str = "/api/v1/namespaces/test/services";

/// The Warning and Normal Events written since the last `clear_calls`, as summaries.
pub fn events(c: &FakeCluster) -> Vec<String> {
    c.writes()
        .into_iter()
        .filter(|w| w.starts_with("EVENT"))
        .collect()
}

/// Initialises the Canary, deploys `podinfo:2` and reconciles (an interval apart) until the
/// canary gets `weight` percent; the call log is cleared and the clock stands at the step.
pub async fn progressing_at(c: &FakeCluster, weight: u8) {
    run_until(c, "Initialized", 5).await;
    set_image(c, "podinfo:2");
    for _ in 0..10 {
        c.advance_clock(Duration::from_secs(60));
        c.reconcile(&c.context()).await.expect("reconcile");
        c.settle();
        if c.phase() == "Progressing" && c.routes().is_some_and(|r| r.canary == weight) {
            c.clear_calls();
            return;
        }
    }
    panic!("no {weight}% step; at {}", c.phase());
}
