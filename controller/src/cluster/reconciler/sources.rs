//! Metric sources Fledge cannot query, refused before anything is touched: when a Flagger
//! Canary is about to be taken over, or any Canary onboarded (no state recorded yet). A
//! MetricTemplate changed later reads as an error at the next analysis, a failed check.

use kube::runtime::controller::Action as Requeue;

use super::super::{Error, Result, flagger};
use super::problems::Problem;
use super::tick::Tick;
use crate::spec::metric_template;

impl Tick<'_> {
    /// `Some` (the Canary reported `Stalled`, nothing else written) when a MetricTemplate that
    /// the Canary's metrics name is one Fledge cannot query.
    pub(super) async fn refuse_unsupported_sources(&self) -> Result<Option<Requeue>> {
        if self
            .canary
            .status
            .as_ref()
            .and_then(|s| s.state.as_ref())
            .is_some()
        {
            return Ok(None);
        }
        let mut refused = Vec::new();
        for (i, m) in self.canary.spec.analysis.metrics.iter().enumerate() {
            let Some(r) = &m.template_ref else { continue };
            let namespace = r.namespace.as_deref().unwrap_or(&self.namespace);
            let client = self.ctx.client.clone();
            let found = flagger::metric_template(client, self.canary, namespace, &r.name)
                .await
                .map_err(|source| Error::Read {
                    kind: "MetricTemplate",
                    name: format!("{namespace}/{}", r.name),
                    source,
                })?;
            // A missing template is reported where it is read, as for any Canary.
            let Some(template) = found else { continue };
            for e in metric_template(&template) {
                refused.push(format!(
                    "spec.analysis.metrics[{i}].templateRef: MetricTemplate {namespace}/{}: {e}",
                    r.name
                ));
            }
        }
        if refused.is_empty() {
            return Ok(None);
        }
        let problem = Problem::UnsupportedMetricSource(refused);
        self.report(problem).await.map(Some)
    }
}
