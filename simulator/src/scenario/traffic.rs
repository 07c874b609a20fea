//! The traffic section: clients with their rate, arrival process, rate shape over time, header
//! mix and sidecar, and load testers that call the canary's own Service.

use super::{Context, ScenarioError, raw};
use crate::engine::SimTime;
use crate::mesh::config::ArrivalShape;

#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
    pub rate: f64,
    pub(crate) arrivals: ArrivalShape,
    pub shape: RateShape,
    pub(crate) headers: Vec<(f64, Vec<(String, String)>)>,
    pub(crate) sidecar: bool,
    /// A load tester: sends straight to the canary's Service (`<service>-canary`), and only
    /// while a rollout progresses, as Flagger's load tester does from a rollout webhook.
    pub(crate) load_tester: bool,
    /// The service the client calls.
    pub(crate) service: String,
    /// The Istio Gateway its requests enter through: the client is that gateway's proxy
    /// (checked in ingress.rs).
    pub(crate) gateway: Option<String>,
    /// Its service account, when written.
    pub(crate) service_account: Option<String>,
}

/// How a client's rate changes over time.
#[derive(Clone, Debug, PartialEq)]
pub enum RateShape {
    Constant,
    /// Linear from the base rate to `to` over `over`, starting at `from`.
    Ramp {
        from: SimTime,
        to: f64,
        over: SimTime,
    },
    /// `rate * (1 + amplitude * sin(2π t / period))`.
    Diurnal {
        amplitude: f64,
        period: SimTime,
    },
    /// `factor` times the rate for `length` every `every`.
    Bursts {
        every: SimTime,
        length: SimTime,
        factor: f64,
    },
}

/// The error of a rate out of its bounds; a huge one in scientific form (`1e300`), not in 300
/// digits.
pub(super) fn rate_out_of_range(rate: f64) -> String {
    let got = if rate.abs() >= 1e7 {
        format!("{rate:e}")
    } else {
        rate.to_string()
    };
    format!("must be between 0 and 1000000 requests per second, got {got}")
}

impl Context {
    pub(super) fn client(
        &self,
        field: &str,
        c: &raw::Traffic,
        services: &[super::ServiceModel],
    ) -> Result<Client, ScenarioError> {
        if !(c.rate.is_finite() && c.rate >= 0.0 && c.rate <= 1_000_000.0) {
            return Err(self.error(&format!("{field}.rate"), rate_out_of_range(c.rate)));
        }
        let arrivals = match c.arrivals.as_deref().unwrap_or("poisson") {
            "poisson" => ArrivalShape::Poisson,
            "constant" => ArrivalShape::Constant,
            other => {
                return Err(self.error(
                    &format!("{field}.arrivals"),
                    format!("must be `poisson` or `constant`, got `{other}`"),
                ));
            }
        };
        let shapes = [c.ramp.is_some(), c.diurnal.is_some(), c.bursts.is_some()];
        if shapes.iter().filter(|s| **s).count() > 1 {
            return Err(self.error(field, "give at most one of `ramp`, `diurnal`, `bursts`"));
        }
        let rate_ok = |r: f64| r.is_finite() && (0.0..=1_000_000.0).contains(&r);
        if let Some(r) = &c.ramp
            && !rate_ok(r.to)
        {
            return Err(self.error(&format!("{field}.ramp.to"), rate_out_of_range(r.to)));
        }
        if let Some(b) = &c.bursts
            && !(b.factor.is_finite() && b.factor >= 0.0 && rate_ok(c.rate * b.factor))
        {
            return Err(self.error(
                &format!("{field}.bursts.factor"),
                format!(
                    "must be a non-negative factor that keeps the rate within 1000000 requests per second, got {}",
                    b.factor
                ),
            ));
        }
        let shape = if let Some(r) = &c.ramp {
            RateShape::Ramp {
                from: r
                    .from
                    .as_deref()
                    .map(|t| self.duration(&format!("{field}.ramp.from"), t))
                    .transpose()?
                    .unwrap_or(0),
                to: r.to,
                over: self.duration(&format!("{field}.ramp.over"), &r.over)?,
            }
        } else if let Some(d) = &c.diurnal {
            if !(0.0..=1.0).contains(&d.amplitude) {
                return Err(self.error(
                    &format!("{field}.diurnal.amplitude"),
                    "must be between 0 and 1",
                ));
            }
            RateShape::Diurnal {
                amplitude: d.amplitude,
                period: self
                    .duration(&format!("{field}.diurnal.period"), &d.period)?
                    .max(1),
            }
        } else if let Some(b) = &c.bursts {
            let every = self.duration(&format!("{field}.bursts.every"), &b.every)?;
            let length = self.duration(&format!("{field}.bursts.length"), &b.length)?;
            if every == 0 || length >= every {
                return Err(self.error(
                    &format!("{field}.bursts"),
                    "`length` must be shorter than `every`",
                ));
            }
            RateShape::Bursts {
                every,
                length,
                factor: b.factor,
            }
        } else {
            RateShape::Constant
        };
        let mut headers = Vec::new();
        let method = self.method(&format!("{field}.method"), c.method.as_deref())?;
        let path = self.path(&format!("{field}.path"), c.path.as_deref())?;
        for (i, h) in c.headers.iter().enumerate() {
            let hfield = format!("{field}.headers[{i}]");
            if !(h.weight.is_finite() && h.weight >= 0.0) {
                return Err(self.error(&format!("{hfield}.weight"), "must not be negative"));
            }
            let mut set: Vec<(String, String)> = Vec::with_capacity(h.set.len() + 2);
            for (k, v) in &h.set {
                if k.starts_with(':') {
                    return Err(self.error(
                        &format!("{hfield}.set.{k}"),
                        "give the method and the path as `method` and `path`, not as pseudo-headers",
                    ));
                }
                set.push((k.to_ascii_lowercase(), v.clone()));
            }
            let m = self.method(&format!("{hfield}.method"), h.method.as_deref())?;
            let p = self.path(&format!("{hfield}.path"), h.path.as_deref())?;
            set.extend(pseudo(m.or(method.clone()), p.or(path.clone())));
            headers.push((h.weight, set));
        }
        if headers.is_empty() && (method.is_some() || path.is_some()) {
            headers.push((1.0, pseudo(method, path)));
        }
        let load_tester = match c.target.as_deref().unwrap_or("service") {
            "service" => false,
            "canary" => true,
            other => {
                return Err(self.error(
                    &format!("{field}.target"),
                    format!("must be `service` or `canary`, got `{other}`"),
                ));
            }
        };
        if load_tester && shape != RateShape::Constant {
            return Err(self.error(
                &format!("{field}.target"),
                "a load tester (`target: canary`) sends at a constant rate: drop `ramp`, `diurnal` or `bursts`",
            ));
        }
        let service = match &c.service {
            // Without a Canary no service is the rollout's: which one the client calls would
            // be a guess.
            None if self.service.is_empty() => {
                return Err(self.error(
                    &format!("{field}.service"),
                    "name the service the client calls: a scenario without a Canary has no rollout's service to default to",
                ));
            }
            None => services[0].name.clone(),
            Some(name) if services.iter().any(|s| &s.name == name) => name.clone(),
            Some(name) => {
                let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                return Err(self.error(
                    &format!("{field}.service"),
                    format!(
                        "unknown service `{name}`: the scenario's services are {}",
                        super::services::quoted(&names)
                    ),
                ));
            }
        };
        if load_tester && service != services[0].name {
            return Err(self.error(
                &format!("{field}.service"),
                "a load tester (`target: canary`) calls the canary of the Canary's service: leave `service` out",
            ));
        }
        Ok(Client {
            name: c.client.clone(),
            service,
            namespace: c.namespace.clone(),
            rate: c.rate,
            arrivals,
            shape,
            headers,
            sidecar: c.sidecar.unwrap_or(true),
            load_tester,
            gateway: c.gateway.clone(),
            service_account: c
                .service_account
                .as_deref()
                .map(|sa| self.service_account(field, sa))
                .transpose()?,
        })
    }
}

/// The pseudo-headers Envoy matches a route's method and path on, for those set.
fn pseudo(method: Option<String>, path: Option<String>) -> Vec<(String, String)> {
    [(":method", method), (":path", path)]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .collect()
}

impl Context {
    /// A request method: an HTTP token such as `GET` or `POST`.
    pub(super) fn method(
        &self,
        field: &str,
        m: Option<&str>,
    ) -> Result<Option<String>, ScenarioError> {
        let Some(m) = m else { return Ok(None) };
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(self.error(
                field,
                format!("`{m}` is not a method: expected e.g. `GET` or `POST`"),
            ));
        }
        Ok(Some(m.to_string()))
    }

    /// A request path: it starts with `/`.
    pub(super) fn path(
        &self,
        field: &str,
        p: Option<&str>,
    ) -> Result<Option<String>, ScenarioError> {
        let Some(p) = p else { return Ok(None) };
        if !p.starts_with('/') || p.chars().any(char::is_whitespace) {
            return Err(self.error(
                field,
                format!("`{p}` is not a path: expected one starting with `/`, without spaces"),
            ));
        }
        Ok(Some(p.to_string()))
    }
}
