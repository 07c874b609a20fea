//! The Prometheus query API, through `prometheus-http-query`, with a timeout per request and
//! retries with exponential backoff for failures that may pass (unreachable, timed out, 5xx).
//!
//! The answer is parsed here rather than by the client library so that an answer of the wrong
//! type (a matrix, a string, several series where one value was expected) is reported as such.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Credentials;
use super::counters::{Series, counts_reading, histograms_reading};
use super::queries::{builtin_query, evaluation_time, side_queries};
use super::{Mesh, MetricsError, RANGE_VECTOR_FOR_A_SCALAR, scalar_reading};
use crate::analysis::MetricReading;
use crate::http_errors::{error_chain, excerpt};
use crate::observe::{Measure, Measurement, Range, ResolvedQuery, Side, Subject, resolve_query};
use crate::rollout::Millis;
use crate::spec::MetricTemplateSpec;

const FIRST_BACKOFF: StdDuration = StdDuration::from_millis(100);
const MAX_BACKOFF: StdDuration = StdDuration::from_secs(2);

/// A Prometheus server.
#[derive(Clone)]
pub struct Prometheus {
    client: prometheus_http_query::Client,
    http: reqwest::Client,
    /// For MetricTemplates with `insecureSkipVerify`: accepts any certificate.
    insecure: reqwest::Client,
    address: String,
    timeout: StdDuration,
    retries: u32,
}

/// How one measurement is asked, besides its plan: the Canary's own Prometheus and the
/// MetricTemplate it names, with that template's credentials.
#[derive(Clone, Copy, Debug, Default)]
pub struct Access<'a> {
    /// The Canary's `metricsServer` (Flagger's per-Canary `-metrics-server`): the Prometheus of
    /// its built-in metrics, inline queries and templates without an address.
    pub server: Option<&'a str>,
    /// The `MetricTemplate` a template query names, as the shell found it (`None` when it does
    /// not exist).
    pub template: Option<&'a MetricTemplateSpec>,
    /// The data of the Secret the template's `provider.secretRef` names, or why it could not
    /// be read (a message naming the Secret).
    pub credentials: Option<&'a Result<Credentials, String>>,
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
        let insecure = reqwest::Client::builder()
            .timeout(timeout)
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| invalid(error_chain(&e)))?;
        let client = prometheus_http_query::Client::from(http.clone(), address)
            .map_err(|e| invalid(error_chain(&e)))?;
        Ok(Prometheus {
            client,
            http,
            insecure,
            address: address.to_string(),
            timeout,
            retries,
        })
    }

    /// Executes one measurement of an observation plan. Never fails: problems become `NoData`
    /// or `Error` with a reason. `template` is the `MetricTemplate` a template query names, as
    /// the shell found it (`None` when it does not exist).
    pub async fn read(
        &self,
        mesh: Mesh,
        subject: &Subject,
        measurement: &Measurement,
        template: Option<&MetricTemplateSpec>,
    ) -> MetricReading {
        let access = Access {
            template,
            ..Access::default()
        };
        self.read_with(mesh, subject, measurement, access).await
    }

    /// [`Prometheus::read`] with the Canary's own Prometheus and the template's credentials.
    pub async fn read_with(
        &self,
        mesh: Mesh,
        subject: &Subject,
        measurement: &Measurement,
        access: Access<'_>,
    ) -> MetricReading {
        let range = measurement.range;
        let server = match access.server.filter(|a| !a.is_empty()) {
            None => Server {
                client: self.client.clone(),
                address: &self.address,
            },
            Some(address) => match self.server(address, false) {
                Ok(server) => server,
                Err(e) => {
                    return MetricReading::Error {
                        reason: format!("spec.metricsServer {e}"),
                    };
                }
            },
        };
        match &measurement.measure {
            Measure::Counts => self.counts(&server, mesh, subject, range).await,
            Measure::Histograms => self.histograms(&server, mesh, subject, range).await,
            measure @ (Measure::SuccessRate | Measure::Latency) => {
                match builtin_query(mesh, measure, subject, range) {
                    Some(query) => self.scalar(&server, &query, &[], range).await,
                    None => MetricReading::Error {
                        reason: format!("no built-in query for {}", measurement.metric),
                    },
                }
            }
            Measure::Query(source) => {
                match resolve_query(source, subject, range, access.template) {
                    Err(reason) => MetricReading::Error { reason },
                    Ok(q) => match self.template_server(server, &q, access) {
                        Ok((server, headers)) => {
                            self.scalar(&server, &q.promql, &headers, range).await
                        }
                        Err(reason) => MetricReading::Error {
                            reason: format!("{}: {reason}", measurement.metric),
                        },
                    },
                }
            }
        }
    }

    /// A client of the Prometheus at `address`, verifying its certificate unless `insecure`;
    /// the error says why the address cannot be used.
    fn server<'a>(&self, address: &'a str, insecure: bool) -> Result<Server<'a>, String> {
        let http = if insecure { &self.insecure } else { &self.http };
        prometheus_http_query::Client::from(http.clone(), address)
            .map(|client| Server { client, address })
            .map_err(|e| format!("`{address}` cannot be used: {}", error_chain(&e)))
    }

    /// Where a user's query is sent, and its headers: a template may name its own Prometheus,
    /// skip TLS verification and authenticate, as in Flagger.
    fn template_server<'a>(
        &self,
        server: Server<'a>,
        q: &'a ResolvedQuery,
        access: Access<'a>,
    ) -> Result<(Server<'a>, Vec<(String, String)>), String> {
        let Some(provider) = access.template.map(|t| &t.provider) else {
            return Ok((server, q.headers.clone()));
        };
        let mut headers = q.headers.clone();
        if let Some(r) = &provider.secret_ref {
            let credentials = match access.credentials {
                Some(Ok(c)) => c.authorization()?,
                Some(Err(why)) => return Err(why.clone()),
                None => {
                    return Err(format!(
                        "provider.secretRef: Secret `{}` was not read (no cluster to read it from)",
                        r.name
                    ));
                }
            };
            headers.push(("Authorization".into(), credentials));
        }
        let address = q.address.as_deref().unwrap_or(server.address);
        if address == server.address && !provider.insecure_skip_verify {
            return Ok((server, headers));
        }
        let server = self.server(address, provider.insecure_skip_verify)?;
        Ok((server, headers))
    }

    async fn scalar(
        &self,
        server: &Server<'_>,
        query: &str,
        headers: &[(String, String)],
        range: Range,
    ) -> MetricReading {
        let data = match self.query(&server.client, query, headers, range.to).await {
            Ok(data) => data,
            Err(f) => {
                return MetricReading::Error {
                    reason: f.reason(server.address, self.timeout, query),
                };
            }
        };
        match data {
            Data::Scalar(v) => scalar_reading(&[v]),
            Data::Vector(series) => {
                scalar_reading(&series.iter().map(|(_, v)| *v).collect::<Vec<_>>())
            }
            Data::Matrix(_) => MetricReading::Error {
                reason: RANGE_VECTOR_FOR_A_SCALAR.into(),
            },
        }
    }

    /// Whether the server answers a query at all (`vector(1)` at `at`), once, without retries:
    /// a start-up check that tells a wrong address from a failing analysis.
    pub async fn answers(&self, at: Millis) -> Result<(), String> {
        self.query_once(&self.client, "vector(1)", &[], at)
            .await
            .map(|_| ())
            .map_err(|f| f.reason(&self.address, self.timeout, "vector(1)"))
    }

    /// The raw counter samples of one query (see [`side_queries`]).
    async fn matrix(
        &self,
        server: &Server<'_>,
        query: &str,
        range: Range,
    ) -> Result<Vec<Series>, MetricReading> {
        let data = self
            .query(&server.client, query, &[], range.to)
            .await
            .map_err(|f| MetricReading::Error {
                reason: f.reason(server.address, self.timeout, query),
            })?;
        match data {
            Data::Matrix(series) => Ok(series),
            // What Prometheus returns for a range selector whose series have no samples.
            Data::Vector(v) if v.is_empty() => Ok(Vec::new()),
            _ => Err(MetricReading::Error {
                reason: format!(
                    "wrong result type: expected the raw samples of a range selector (a matrix) for {query}"
                ),
            }),
        }
    }

    /// Requests and 5xx failures of canary and primary since the range began, for the
    /// sequential error-rate test.
    async fn counts(
        &self,
        server: &Server<'_>,
        mesh: Mesh,
        subject: &Subject,
        range: Range,
    ) -> MetricReading {
        let c = side_queries(mesh, subject, Side::Canary, range);
        let p = side_queries(mesh, subject, Side::Primary, range);
        let (cr, cf, pr, pf) = futures::join!(
            self.matrix(server, &c.requests, range),
            self.matrix(server, &c.failures, range),
            self.matrix(server, &p.requests, range),
            self.matrix(server, &p.failures, range),
        );
        counts_reading([cr, cf, pr, pf], range)
    }

    /// Latency histograms of canary and primary since the range began, for the Mann-Whitney
    /// test.
    async fn histograms(
        &self,
        server: &Server<'_>,
        mesh: Mesh,
        subject: &Subject,
        range: Range,
    ) -> MetricReading {
        let c = side_queries(mesh, subject, Side::Canary, range);
        let p = side_queries(mesh, subject, Side::Primary, range);
        let (cd, pd) = futures::join!(
            self.matrix(server, &c.histogram, range),
            self.matrix(server, &p.histogram, range),
        );
        histograms_reading(cd, pd, range)
    }

    /// One query, retried with backoff while the failure may pass.
    async fn query(
        &self,
        client: &prometheus_http_query::Client,
        query: &str,
        headers: &[(String, String)],
        at: Millis,
    ) -> Result<Data, Failure> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            match self.query_once(client, query, headers, at).await {
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
        headers: &[(String, String)],
        at: Millis,
    ) -> Result<Data, Failure> {
        let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let mut request = client
            .query(query)
            .query("time", evaluation_time(at))
            .timeout(timeout_ms);
        // A MetricTemplate's `provider.headers`, checked to be valid HTTP when it was resolved.
        for (name, value) in headers {
            let parsed = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            );
            let (Ok(name), Ok(value)) = parsed else {
                return Err(Failure::BadAnswer(format!(
                    "header `{name}` cannot be sent"
                )));
            };
            request = request.header(name, value);
        }
        let response = request.get_raw().await.map_err(|e| match e {
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
                    "answered something that is not a query result ({e}): {}",
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

/// One Prometheus server and its address, for messages.
struct Server<'a> {
    client: prometheus_http_query::Client,
    address: &'a str,
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
    /// The raw samples of a range selector.
    Matrix(Vec<Series>),
}

fn parse_data(data: Value) -> Result<Data, String> {
    let kind = data["resultType"].as_str().unwrap_or("none").to_string();
    let list = |what: &str| {
        data["result"]
            .as_array()
            .ok_or_else(|| format!("wrong result type: a {what} without a result list"))
    };
    match kind.as_str() {
        "vector" => list("vector")?
            .iter()
            .map(|s| Ok((labels(&s["metric"]), sample(&s["value"])?.1)))
            .collect::<Result<Vec<_>, String>>()
            .map(Data::Vector),
        "matrix" => list("matrix")?
            .iter()
            .map(|s| {
                let values = s["values"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                Ok(Series {
                    labels: labels(&s["metric"]),
                    samples: values.iter().map(sample).collect::<Result<_, String>>()?,
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Data::Matrix),
        "scalar" => sample(&data["result"]).map(|(_, v)| Data::Scalar(v)),
        other => Err(format!(
            "wrong result type: `{other}`, expected a vector or a scalar"
        )),
    }
}

fn labels(metric: &Value) -> BTreeMap<String, String> {
    metric
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `[timestamp, "value"]`: Unix seconds, and the value as Prometheus prints floats (`NaN`,
/// `+Inf` included). The time comes back in milliseconds.
fn sample(value: &Value) -> Result<(Millis, f64), String> {
    let number = value[1].as_str().and_then(|s| s.parse::<f64>().ok());
    let time = value[0]
        .as_f64()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .map(|t| (t * 1000.0).round() as Millis);
    match (time, number) {
        (Some(t), Some(v)) => Ok((t, v)),
        _ => Err(format!(
            "wrong result type: sample {value} is not a time and a numeric value"
        )),
    }
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
            Failure::BadAnswer(why) => format!("Prometheus at {address}: {why}"),
        }
    }
}

fn transport_failure(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::TimedOut
    } else {
        // reqwest's own line quotes the whole URL, the encoded query with it (~1 KB): the
        // address is said already, so only the causes are.
        let detail = std::error::Error::source(e).map_or_else(|| e.to_string(), error_chain);
        Failure::Unreachable(detail)
    }
}
