//! The model's section of a scenario: the service's versions (pods, workers, latency
//! distribution, error rate) and the workload certificates.

use super::{Context, ScenarioError, raw};
use crate::engine::SimTime;
use crate::mesh::Propagation;
use crate::mesh::config::{Behaviour, CertConfig, ProxyCost};
use crate::mesh::dist::ServiceTime;

#[derive(Clone, Debug)]
pub struct Version {
    pub pods: u32,
    /// Pod labels as written (the mesh adds `app` and `version` when absent).
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    pub(crate) behaviour: Behaviour,
    /// Whether the pods have a sidecar.
    pub(crate) sidecar: bool,
    /// The pods' service account (`default` when absent; a canary inherits the primary's).
    pub(crate) service_account: Option<String>,
    /// Whether its sidecar's `concurrency` was written (here, the primary's or the top
    /// level's): a CPU limit then leaves the threads alone.
    pub(crate) proxy_threads: bool,
}

impl Context {
    /// ` (line N)` where `field` is written in the scenario file, if found.
    pub(super) fn line_note(&self, field: &str) -> String {
        self.outline
            .line(0, field)
            .map_or(String::new(), |l| format!(" (line {l})"))
    }

    /// A `service_account` as written at `{field}.service_account`: a Kubernetes object name
    /// (DNS-1123 subdomain).
    pub(super) fn service_account(&self, field: &str, sa: &str) -> Result<String, ScenarioError> {
        let ok = !sa.is_empty()
            && sa.len() <= 253
            && sa
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && sa.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && sa.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(self.error(
                &format!("{field}.service_account"),
                format!("`{sa}` is not a Kubernetes name: lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit"),
            ));
        }
        Ok(sa.to_string())
    }

    pub(super) fn certificates(
        &self,
        raw: Option<&raw::Certificates>,
    ) -> Result<CertConfig, ScenarioError> {
        let mut c = CertConfig::default();
        let Some(raw) = raw else { return Ok(c) };
        if let Some(ttl) = &raw.ttl {
            c.ttl = self.duration("certificates.ttl", ttl)?;
            if c.ttl < crate::engine::SECONDS {
                return Err(self.error("certificates.ttl", "must be at least 1s"));
            }
        }
        if let Some(r) = raw.grace_ratio {
            if !(r > 0.0 && r < 1.0) {
                return Err(self.error(
                    "certificates.grace_ratio",
                    format!("must be between 0 and 1 (exclusive), got {r}"),
                ));
            }
            c.grace_ratio = r;
        }
        Ok(c)
    }

    /// The `control_plane` section: how route changes reach the proxies.
    pub(super) fn propagation(
        &self,
        raw: Option<&raw::ControlPlane>,
        duration: SimTime,
    ) -> Result<Propagation, ScenarioError> {
        let mut p = Propagation::default();
        let Some(raw) = raw else { return Ok(p) };
        if let Some(d) = &raw.push_delay {
            p.push_delay = Some(self.latency("control_plane.push_delay", d)?);
        }
        for (i, o) in raw.outages.iter().enumerate() {
            let field = format!("control_plane.outages[{i}]");
            let at = self.duration(&format!("{field}.at"), &o.at)?;
            let lasting = self.duration(&format!("{field}.for"), &o.lasting)?;
            if lasting == 0 {
                return Err(self.error(&format!("{field}.for"), "must be longer than 0s"));
            }
            if at >= duration {
                return Err(self.error(&format!("{field}.at"), "must be before the end of the run"));
            }
            p.outages.push((at, at.saturating_add(lasting)));
        }
        Ok(p)
    }

    /// Whether Istio's default retry policy retries 503: up to 1.23 always; 1.24 to 1.26 unless
    /// EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY (default true) says so; the flag is gone from 1.27
    /// (istio/istio release note 50506 and commit "remove 1.23 compatibility profile").
    pub(super) fn istio_retry_503(
        &mut self,
        raw: Option<&raw::IstioSettings>,
    ) -> Result<bool, ScenarioError> {
        let Some(raw) = raw else { return Ok(false) };
        if self.data_plane != crate::mesh::config::DataPlane::Istio {
            self.warnings.push(
                "istio: the scenario's mesh is not Istio, so these settings are unused".into(),
            );
        }
        let minor = match &raw.version {
            None => None,
            Some(v) => Some(parse_istio_minor(v).ok_or_else(|| {
                self.error(
                    "istio.version",
                    format!("`{v}` is not an Istio version: expected `1.MINOR`, e.g. `1.23`"),
                )
            })?),
        };
        let flag = raw.exclude_unsafe_503_from_default_retry;
        Ok(match (minor, flag) {
            (Some(m), _) if m <= 23 => {
                if flag.is_some() {
                    self.warnings.push(format!(
                        "istio.exclude_unsafe_503_from_default_retry: Istio 1.{m} has no such flag and always retries 503 by default"
                    ));
                }
                true
            }
            (Some(m), Some(false)) if m >= 27 => {
                self.warnings.push(format!(
                    "istio.exclude_unsafe_503_from_default_retry: Istio 1.{m} removed the flag; its default retry policy never retries 503"
                ));
                false
            }
            (_, Some(exclude)) => !exclude,
            (_, None) => false,
        })
    }

    pub(super) fn version(
        &mut self,
        field: &str,
        raw: &raw::Version,
        base: Option<&Version>,
        min_pods: u32,
    ) -> Result<Version, ScenarioError> {
        let mut v = base.cloned().unwrap_or(Version {
            pods: 2,
            labels: Default::default(),
            behaviour: Behaviour {
                proxy: self.proxy.clone(),
                ..Behaviour::default()
            },
            sidecar: true,
            service_account: None,
            proxy_threads: self.proxy_threads,
        });
        if let Some(p) = &raw.proxy {
            let field = format!("{field}.proxy");
            if p.cpu_per_handshake.is_some() {
                return Err(self.error(
                    &format!("{field}.cpu_per_handshake"),
                    "is mesh-wide: set it under the scenario's top-level `proxy`",
                ));
            }
            let base = v.behaviour.proxy.take().unwrap_or_default();
            v.behaviour.proxy = Some(self.proxy_cost(&field, p, base, v.proxy_threads)?);
            v.proxy_threads |= p.concurrency.is_some();
        }
        // Labels name a version's own pods: the canary does not take the primary's.
        v.labels = raw.labels.clone().unwrap_or_default();
        if let Some(sidecar) = raw.sidecar {
            v.sidecar = sidecar;
        }
        if raw.proxy.is_some() {
            let field = format!("{field}.proxy");
            if !v.sidecar {
                let line = self.line_note(&field);
                self.warnings.push(format!(
                    "{field}{line}: the version has no sidecar (`sidecar: false`), so its proxy cost is unused"
                ));
            }
            self.proxy_written.get_or_insert(field);
        }
        if let Some(sa) = &raw.service_account {
            v.service_account = Some(self.service_account(field, sa)?);
        }
        if let Some(pods) = raw.pods {
            if !(min_pods..=1000).contains(&pods) {
                return Err(self.error(
                    &format!("{field}.pods"),
                    format!("must be between {min_pods} and 1000, got {pods}"),
                ));
            }
            v.pods = pods;
        }
        if let Some(workers) = raw.workers {
            if !(1..=100_000).contains(&workers) {
                return Err(self.error(
                    &format!("{field}.workers"),
                    format!("must be between 1 and 100000, got {workers}"),
                ));
            }
            v.behaviour.workers = workers;
        }
        if let Some(rate) = raw.error_rate {
            v.behaviour.error_rate = self.probability(&format!("{field}.error_rate"), rate)?;
        }
        if let Some(code) = raw.error_code {
            if !(500..=599).contains(&code) {
                return Err(self.error(
                    &format!("{field}.error_code"),
                    format!("must be a 5xx status, got {code}"),
                ));
            }
            v.behaviour.error_code = code;
        }
        if let Some(latency) = &raw.latency {
            v.behaviour.service_time = self.latency(&format!("{field}.latency"), latency)?;
        }
        if let Some(steps) = &raw.calls {
            v.behaviour.calls = self.calls(&format!("{field}.calls"), steps)?;
        }
        Ok(v)
    }

    /// The scenario's `proxy`: what every sidecar costs unless its version says otherwise,
    /// and a TLS handshake's CPU (mesh-wide, as the network's).
    pub(super) fn mesh_proxy(
        &self,
        raw: Option<&raw::Proxy>,
    ) -> Result<(Option<ProxyCost>, Option<SimTime>), ScenarioError> {
        let Some(raw) = raw else {
            return Ok((None, None));
        };
        let handshake = raw
            .cpu_per_handshake
            .as_deref()
            .map(|t| self.duration("proxy.cpu_per_handshake", t))
            .transpose()?;
        let cost = self.proxy_cost("proxy", raw, ProxyCost::default(), false)?;
        Ok((Some(cost), handshake))
    }

    /// A sidecar's cost: `base` with what `raw` sets. A CPU limit sets the worker threads to
    /// its cores rounded up unless a `concurrency` was written here or (`threads_set`) for
    /// `base`, as pilot-agent does only when the ProxyConfig has no concurrency.
    fn proxy_cost(
        &self,
        field: &str,
        raw: &raw::Proxy,
        base: ProxyCost,
        threads_set: bool,
    ) -> Result<ProxyCost, ScenarioError> {
        let mut p = base;
        if let Some(l) = &raw.latency {
            p.latency = self.latency(&format!("{field}.latency"), l)?;
        }
        if let Some(t) = &raw.cpu_per_request {
            p.cpu_per_request = self.duration(&format!("{field}.cpu_per_request"), t)?;
        }
        if let Some(text) = &raw.cpu_limit {
            let millis = crate::manifest::parse_quantity_milli(text)
                .filter(|m| (1..=1_024_000).contains(m))
                .map(|m| m as u32)
                .ok_or_else(|| {
                    self.error(
                        &format!("{field}.cpu_limit"),
                        format!("`{text}` is not a CPU limit: write millicores (`500m`) or cores (`0.5`, `2`), above 0 and at most 1024 cores"),
                    )
                })?;
            p.cpu_limit_millis = Some(millis);
            if !threads_set {
                p.concurrency = millis.div_ceil(1000);
            }
        }
        if let Some(c) = raw.concurrency {
            if !(1..=1024).contains(&c) {
                return Err(self.error(
                    &format!("{field}.concurrency"),
                    format!("must be between 1 and 1024 worker threads, got {c}"),
                ));
            }
            p.concurrency = c;
        }
        Ok(p)
    }

    pub(super) fn probability(&self, field: &str, p: f64) -> Result<f64, ScenarioError> {
        if (0.0..=1.0).contains(&p) {
            Ok(p)
        } else {
            Err(self.error(
                field,
                format!("must be a probability between 0 and 1, got {p}"),
            ))
        }
    }

    pub(super) fn latency(
        &self,
        field: &str,
        l: &raw::Latency,
    ) -> Result<ServiceTime, ScenarioError> {
        let d = |name: &str, t: &Option<String>| -> Result<Option<SimTime>, ScenarioError> {
            t.as_deref()
                .map(|t| self.duration(&format!("{field}.{name}"), t))
                .transpose()
        };
        let forms = [
            l.mean.is_some(),
            l.constant.is_some(),
            l.p50.is_some() || l.p99.is_some(),
            l.mixture.is_some(),
        ];
        if forms.iter().filter(|f| **f).count() != 1 {
            return Err(self.error(field, "give exactly one of `mean` (exponential), `constant`, `p50` with `p99` (log-normal) or `mixture`"));
        }
        if let Some(mean) = d("mean", &l.mean)? {
            return Ok(ServiceTime::Exponential { mean });
        }
        if let Some(c) = d("constant", &l.constant)? {
            return Ok(ServiceTime::Constant(c));
        }
        if let Some(parts) = &l.mixture {
            if parts.is_empty() {
                return Err(self.error(&format!("{field}.mixture"), "needs at least one component"));
            }
            let mut out = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                let path = format!("{field}.mixture[{i}]");
                if !(p.weight.is_finite() && p.weight > 0.0) {
                    return Err(self.error(
                        &format!("{path}.weight"),
                        format!("must be positive, got {}", p.weight),
                    ));
                }
                out.push((p.weight, self.latency(&path, &p.latency)?));
            }
            return Ok(ServiceTime::Mixture(out));
        }
        match (d("p50", &l.p50)?, d("p99", &l.p99)?) {
            (Some(p50), Some(p99)) if p99 >= p50 => Ok(ServiceTime::LogNormal { p50, p99 }),
            (Some(_), Some(_)) => Err(self.error(&format!("{field}.p99"), "must be at least p50")),
            _ => Err(self.error(field, "a log-normal latency needs both `p50` and `p99`")),
        }
    }
}

/// The minor number of an Istio version `1.MINOR` or `1.MINOR.PATCH`.
pub(super) fn parse_istio_minor(v: &str) -> Option<u32> {
    let mut parts = v.trim().trim_start_matches('v').split('.');
    if parts.next()? != "1" {
        return None;
    }
    let minor = parts.next()?.parse().ok()?;
    match (parts.next(), parts.next()) {
        (None, _) => Some(minor),
        (Some(p), None) if p.parse::<u32>().is_ok() => Some(minor),
        _ => None,
    }
}
