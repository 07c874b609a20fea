//! The Prometheus query API, through `prometheus-http-query`, with a timeout per request and
//! retries with exponential backoff for failures that may pass (unreachable, timed out, 5xx).
//!
//! The answer is parsed here rather than by the client library so that an answer of the wrong
//! type (a matrix, a string, several series where one value was expected) is reported as such.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde::Deserialize;
use serde_json::Value;

use super::queries::{Side, builtin_query, render_template, side_queries};
use super::{MetricsError, QueryContext};
use crate::analysis::{Counts, Histogram, MetricReading};
use crate::http_errors::{error_chain, excerpt};
use crate::spec::{Duration, MetricCheck, MetricKind, MetricTemplateSpec};

const FIRST_BACKOFF: StdDuration = StdDuration::from_millis(100);
const MAX_BACKOFF: StdDuration = StdDuration::from_secs(2);

/// A Prometheus server.
#[derive(Clone)]
pub struct Prometheus {
    client: prometheus_http_query::Client,
    http: reqwest::Client,
    address: String,
    timeout: StdDuration,
    retries: u32,
}

impl Prometheus {
    /// A client for the server at `address` (e.g. `http://prometheus.istio-system:9090`);
    /// each request may take `timeout`, and a failure that may pass is retried `retries` times.
    pub fn new(address: &str, timeout: StdDuration, retries: u32) -> Result<Self, MetricsError> {
        let invalid = |reason: String| MetricsError::InvalidAddress {
            address: address.to_string(),
            reason,
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| invalid(error_chain(&e)))?;
        let client = prometheus_http_query::Client::from(http.clone(), address)
            .map_err(|e| invalid(error_chain(&e)))?;
        Ok(Prometheus {
            client,
            http,
            address: address.to_string(),
            timeout,
            retries,
        })
    }

    /// Reads one metric for one tick. Never fails: problems become `NoData` or `Error` with
    /// a reason.
    pub async fn read(
        &self,
        ctx: &QueryContext,
        check: &MetricCheck,
        template: Option<&MetricTemplateSpec>,
    ) -> MetricReading {
        match &check.kind {
            kind @ (MetricKind::RequestSuccessRate | MetricKind::RequestDuration) => {
                if ctx.statistical {
                    return match kind {
                        MetricKind::RequestSuccessRate => self.counts(ctx, check.window).await,
                        _ => self.histograms(ctx, check.window).await,
                    };
                }
                match builtin_query(ctx.mesh, kind, &ctx.namespace, &ctx.target, check.window) {
                    Some(query) => self.scalar(&self.client, &self.address, &query).await,
                    None => MetricReading::Error {
                        reason: format!("no built-in query for {}", check.name),
                    },
                }
            }
            MetricKind::Query { query } => {
                match render_template(query, ctx, check.window, &BTreeMap::new()) {
                    Ok(query) => self.scalar(&self.client, &self.address, &query).await,
                    Err(e) => MetricReading::Error {
                        reason: e.to_string(),
                    },
                }
            }
            MetricKind::Template {
                name,
                namespace,
                variables,
            } => {
                let ns = namespace.as_deref().unwrap_or(&ctx.namespace);
                let Some(template) = template else {
                    return MetricReading::Error {
                        reason: format!("MetricTemplate {ns}/{name} was not found"),
                    };
                };
                self.template(ctx, check.window, name, template, variables)
                    .await
            }
        }
    }

    async fn template(
        &self,
        ctx: &QueryContext,
        window: Duration,
        name: &str,
        template: &MetricTemplateSpec,
        variables: &BTreeMap<String, String>,
    ) -> MetricReading {
        let provider = template.provider.type_.as_str();
        if !(provider.is_empty() || provider == "prometheus") {
            return MetricReading::Error {
                reason: format!(
                    "MetricTemplate {name} uses provider `{provider}`; only prometheus is supported"
                ),
            };
        }
        let query = match render_template(&template.query, ctx, window, variables) {
            Ok(q) => q,
            Err(e) => {
                return MetricReading::Error {
                    reason: format!("MetricTemplate {name}: {e}"),
                };
            }
        };
        // A template may name its own Prometheus, as in Flagger.
        match template.provider.address.as_deref() {
            Some(address) if !address.is_empty() && address != self.address => {
                match prometheus_http_query::Client::from(self.http.clone(), address) {
                    Ok(client) => self.scalar(&client, address, &query).await,
                    Err(e) => MetricReading::Error {
                        reason: format!(
                            "MetricTemplate {name}: address `{address}` cannot be used: {}",
                            error_chain(&e)
                        ),
                    },
                }
            }
            _ => self.scalar(&self.client, &self.address, &query).await,
        }
    }

    async fn scalar(
        &self,
        client: &prometheus_http_query::Client,
        address: &str,
        query: &str,
    ) -> MetricReading {
        let data = match self.query(client, query).await {
            Ok(data) => data,
            Err(f) => {
                return MetricReading::Error {
                    reason: f.reason(address, self.timeout, query),
                };
            }
        };
        match single_value(data) {
            Err(reason) => MetricReading::Error { reason },
            Ok(None) => MetricReading::NoData {
                reason: "no values found: the query returned no series".into(),
            },
            Ok(Some(v)) if v.is_nan() => MetricReading::NoData {
                reason: "the query returned NaN (a division by zero: no requests in the window)"
                    .into(),
            },
            Ok(Some(value)) => MetricReading::Value { value },
        }
    }

    /// Requests and 5xx failures of canary and primary, for the sequential error-rate test.
    async fn counts(&self, ctx: &QueryContext, window: Duration) -> MetricReading {
        let c = side_queries(ctx.mesh, &ctx.namespace, &ctx.target, Side::Canary, window);
        let p = side_queries(ctx.mesh, &ctx.namespace, &ctx.target, Side::Primary, window);
        let (cr, cf, pr, pf) = futures::join!(
            self.query(&self.client, &c.requests),
            self.query(&self.client, &c.failures),
            self.query(&self.client, &p.requests),
            self.query(&self.client, &p.failures),
        );
        let side = |side: Side, requests, failures, q: &super::SideQueries| {
            self.side_counts(side, requests, failures, q)
        };
        let canary = match side(Side::Canary, cr, cf, &c) {
            Ok(counts) => counts,
            Err(reading) => return reading,
        };
        let primary = match side(Side::Primary, pr, pf, &p) {
            Ok(counts) => counts,
            Err(reading) => return reading,
        };
        MetricReading::Counts { canary, primary }
    }

    fn side_counts(
        &self,
        side: Side,
        requests: Result<Data, Failure>,
        failures: Result<Data, Failure>,
        queries: &super::SideQueries,
    ) -> Result<Counts, MetricReading> {
        let value =
            |result: Result<Data, Failure>, query: &str| -> Result<Option<f64>, MetricReading> {
                let data = result.map_err(|f| MetricReading::Error {
                    reason: f.reason(&self.address, self.timeout, query),
                })?;
                single_value(data).map_err(|reason| MetricReading::Error { reason })
            };
        let requests = match value(requests, &queries.requests)? {
            Some(r) if !r.is_nan() => r,
            Some(_) => {
                return Err(MetricReading::NoData {
                    reason: format!("the {} request count is NaN", side.as_str()),
                });
            }
            None => {
                return Err(MetricReading::NoData {
                    reason: format!(
                        "no values found for the {}: it served no requests in the window",
                        side.as_str()
                    ),
                });
            }
        };
        // No failure series means no request failed.
        let failures = value(failures, &queries.failures)?
            .filter(|f| !f.is_nan())
            .unwrap_or(0.0);
        Ok(Counts { requests, failures })
    }

    /// Latency histograms of canary and primary, for the Mann-Whitney test.
    async fn histograms(&self, ctx: &QueryContext, window: Duration) -> MetricReading {
        let c = side_queries(ctx.mesh, &ctx.namespace, &ctx.target, Side::Canary, window);
        let p = side_queries(ctx.mesh, &ctx.namespace, &ctx.target, Side::Primary, window);
        let (cd, pd) = futures::join!(
            self.query(&self.client, &c.histogram),
            self.query(&self.client, &p.histogram),
        );
        let mut sides = Vec::with_capacity(2);
        for (side, result, query) in [
            (Side::Canary, cd, &c.histogram),
            (Side::Primary, pd, &p.histogram),
        ] {
            let data = match result {
                Ok(data) => data,
                Err(f) => {
                    return MetricReading::Error {
                        reason: f.reason(&self.address, self.timeout, query),
                    };
                }
            };
            match histogram(side, data) {
                Ok(h) => sides.push(h),
                Err(reading) => return reading,
            }
        }
        let primary = sides.pop().unwrap_or_default();
        let canary = sides.pop().unwrap_or_default();
        MetricReading::Histograms { canary, primary }
    }

    /// One query, retried with backoff while the failure may pass.
    async fn query(
        &self,
        client: &prometheus_http_query::Client,
        query: &str,
    ) -> Result<Data, Failure> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            match self.query_once(client, query).await {
                Err(f) if f.retryable() && attempt < self.retries => {
                    tracing::debug!(attempt, error = ?f, "Prometheus query failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn query_once(
        &self,
        client: &prometheus_http_query::Client,
        query: &str,
    ) -> Result<Data, Failure> {
        let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let response = client
            .query(query)
            .timeout(timeout_ms)
            .get_raw()
            .await
            .map_err(|e| match e {
                prometheus_http_query::Error::Client(c) => match c.inner() {
                    Some(r) => transport_failure(r),
                    None => Failure::Unreachable(c.to_string()),
                },
                other => Failure::Unreachable(error_chain(&other)),
            })?;
        let status = response.status();
        let body = response.text().await.map_err(|e| transport_failure(&e))?;
        let answer: Answer = match serde_json::from_str(&body) {
            Ok(answer) => answer,
            Err(_) if !status.is_success() => {
                return Err(Failure::Http {
                    status: status.as_u16(),
                    body: excerpt(&body),
                });
            }
            Err(e) => {
                return Err(Failure::BadAnswer(format!(
                    "Prometheus answered something that is not a query result ({e}): {}",
                    excerpt(&body)
                )));
            }
        };
        if answer.status != "success" {
            return Err(Failure::Rejected {
                error_type: answer.error_type.unwrap_or_default(),
                message: answer.error.unwrap_or_default(),
            });
        }
        parse_data(answer.data.unwrap_or(Value::Null)).map_err(Failure::BadAnswer)
    }
}

/// The API's envelope: `{"status": "success"|"error", "data": .., "errorType": .., "error": ..}`.
#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// An instant query's result.
#[derive(Debug)]
enum Data {
    Vector(Vec<(BTreeMap<String, String>, f64)>),
    Scalar(f64),
}

fn parse_data(data: Value) -> Result<Data, String> {
    let kind = data["resultType"].as_str().unwrap_or("none").to_string();
    match kind.as_str() {
        "vector" => {
            let series = data["result"]
                .as_array()
                .ok_or("wrong result type: a vector without a result list")?;
            series
                .iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v.as_str().unwrap_or_default().to_string())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Ok((labels, sample(&s["value"])?))
                })
                .collect::<Result<Vec<_>, String>>()
                .map(Data::Vector)
        }
        "scalar" => sample(&data["result"]).map(Data::Scalar),
        other => Err(format!(
            "wrong result type: `{other}`, expected a vector or a scalar"
        )),
    }
}

/// `[timestamp, "value"]`, the value as Prometheus prints floats (`NaN`, `+Inf` included).
fn sample(value: &Value) -> Result<f64, String> {
    value[1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| format!("wrong result type: sample {value} has no numeric value"))
}

/// The one value of a result: `None` for no series, an error for several.
fn single_value(data: Data) -> Result<Option<f64>, String> {
    match data {
        Data::Scalar(v) => Ok(Some(v)),
        Data::Vector(series) => match series.as_slice() {
            [] => Ok(None),
            [(_, v)] => Ok(Some(*v)),
            more => Err(format!(
                "wrong result type: {} series where one value was expected; aggregate the query, e.g. with sum()",
                more.len()
            )),
        },
    }
}

fn histogram(side: Side, data: Data) -> Result<Histogram, MetricReading> {
    let wrong = |what: String| MetricReading::Error {
        reason: format!(
            "wrong result type for the {} histogram: {what}",
            side.as_str()
        ),
    };
    let Data::Vector(series) = data else {
        return Err(wrong("a scalar, expected one series per bucket".into()));
    };
    if series.is_empty() {
        return Err(MetricReading::NoData {
            reason: format!(
                "no values found for the {} latency histogram: it served no requests in the window",
                side.as_str()
            ),
        });
    }
    let mut buckets = Vec::with_capacity(series.len());
    for (labels, count) in series {
        let le = labels
            .get("le")
            .ok_or_else(|| wrong("a series without an `le` label".into()))?;
        let bound = le
            .parse::<f64>()
            .ok()
            .filter(|b| !b.is_nan())
            .ok_or_else(|| wrong(format!("bucket bound `{le}` is not a number")))?;
        if count.is_nan() {
            return Err(MetricReading::NoData {
                reason: format!("the {} histogram has NaN counts", side.as_str()),
            });
        }
        buckets.push((bound, count));
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|(b, _)| *b != f64::INFINITY) {
        return Err(wrong("no `+Inf` bucket".into()));
    }
    let (bounds, cumulative) = buckets.into_iter().unzip();
    Ok(Histogram { bounds, cumulative })
}

/// Why a query got no usable answer.
#[derive(Debug)]
enum Failure {
    /// No connection (refused, DNS, TLS).
    Unreachable(String),
    /// No answer within the timeout.
    TimedOut,
    /// An HTTP error without the API's JSON (a proxy in the way, a crash).
    Http { status: u16, body: String },
    /// The API answered `status: error` (bad query, timeout inside Prometheus).
    Rejected { error_type: String, message: String },
    /// An answer that is not what an instant query returns.
    BadAnswer(String),
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Unreachable(_) | Failure::TimedOut => true,
            Failure::Http { status, .. } => *status >= 500 || *status == 429,
            Failure::Rejected { error_type, .. } => {
                matches!(error_type.as_str(), "timeout" | "unavailable" | "internal")
            }
            Failure::BadAnswer(_) => false,
        }
    }

    fn reason(&self, address: &str, timeout: StdDuration, query: &str) -> String {
        match self {
            Failure::Unreachable(detail) => {
                format!("Prometheus unreachable at {address}: {detail}")
            }
            Failure::TimedOut => format!(
                "Prometheus at {address} timed out: no answer within {} ms",
                timeout.as_millis()
            ),
            Failure::Http { status, body } => {
                format!("Prometheus at {address} answered HTTP {status}: {body}")
            }
            Failure::Rejected {
                error_type,
                message,
            } => format!("Prometheus rejected the query ({error_type}: {message}): {query}"),
            Failure::BadAnswer(why) => why.clone(),
        }
    }
}

fn transport_failure(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::TimedOut
    } else {
        Failure::Unreachable(error_chain(e))
    }
}
