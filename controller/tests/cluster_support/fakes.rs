//! The fake router and observer: routes, metric readings and hook answers kept in the fake
//! cluster's store and logged in its one call log.

use super::*;

/// Routes live in the fake cluster's route table; every call is logged as `ROUTER`.
pub struct FakeRouting(pub FakeCluster);

impl FakeRouting {
    /// Logs a routing write and counts it, failing it where the test crashes the controller.
    fn write(&self, call: &str) -> Result<std::sync::MutexGuard<'_, Store>, String> {
        self.0.log("ROUTER", call, Value::Null);
        let mut s = self.0.store.lock().unwrap();
        if s.crash_now() {
            return Err("crashed".into());
        }
        Ok(s)
    }
}

impl Routing for FakeRouting {
    fn reconcile<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<(), String>> {
        let name = canary.spec.target_ref.name.clone();
        async move {
            let mut s = self.write(&format!("reconcile {provider}"))?;
            s.routes.entry(name).or_insert(Routes::PRIMARY_ONLY);
            Ok(())
        }
        .boxed()
    }

    fn set_routes<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
        weights: Routes,
    ) -> BoxFuture<'a, Result<(), String>> {
        let name = canary.spec.target_ref.name.clone();
        async move {
            let mut s = self.write(&format!("set_routes {provider} {weights}"))?;
            match s.routes.get_mut(&name) {
                Some(w) => {
                    *w = weights;
                    Ok(())
                }
                None => Err(format!("no routing object for {name}")),
            }
        }
        .boxed()
    }

    fn get_routes<'a>(
        &'a self,
        _provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<Routes, String>> {
        let name = canary.spec.target_ref.name.clone();
        async move {
            let s = self.0.store.lock().unwrap();
            s.routes
                .get(&name)
                .copied()
                .ok_or_else(|| format!("no routing object for {name}"))
        }
        .boxed()
    }

    fn finalize<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<(), String>> {
        let name = canary.spec.target_ref.name.clone();
        async move {
            let mut s = self.write(&format!("finalize {provider}"))?;
            s.routes.insert(name, Routes::PRIMARY_ONLY);
            Ok(())
        }
        .boxed()
    }
}

/// Metric readings and hook answers set by the test; a metric not set reads 100 (a healthy
/// success rate), a hook not set passes. Hook calls are logged as `HOOK`.
pub struct FakeObserver(pub FakeCluster);

impl Observer for FakeObserver {
    fn read_metric<'a>(
        &'a self,
        _provider: Provider,
        _subject: &'a Subject,
        measurement: &'a Measurement,
        _access: Access<'a>,
    ) -> BoxFuture<'a, MetricReading> {
        async move {
            let s = self.0.store.lock().unwrap();
            s.metrics
                .get(&measurement.metric)
                .cloned()
                .unwrap_or(MetricReading::Value { value: 100.0 })
        }
        .boxed()
    }

    fn call_hook<'a>(
        &'a self,
        hook: &'a WebhookRef,
        call: &'a HookCall,
    ) -> BoxFuture<'a, HookOutcome> {
        async move {
            self.0.log(
                "HOOK",
                &format!("{} {} {}", call.gate, hook.name, call.phase),
                json!(call.event.as_ref().map(|e| &e.message)),
            );
            let s = self.0.store.lock().unwrap();
            s.hooks
                .get(&hook.name)
                .cloned()
                .unwrap_or(HookOutcome::Passed)
        }
        .boxed()
    }
}
