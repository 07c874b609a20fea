//! Flagger's query templates: the placeholders of a `MetricTemplate` (or a metric's inline
//! `query`) filled for one measurement. The cluster sends the result to Prometheus; the simulator
//! evaluates the very same text over its own series.

use std::collections::BTreeMap;

use super::{QuerySource, Range, Subject, Workload};
use crate::spec::{Duration, MetricTemplateSpec};

/// A problem with a query's placeholders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A template uses `{{ variables.NAME }}` and the Canary sets no such variable.
    #[error("the query uses variable `{name}`, which the metric's templateVariables do not set")]
    UnknownVariable { name: String },
    /// A template uses a placeholder Fledge does not know.
    #[error(
        "the query uses placeholder `{{{{ {name} }}}}`; known are name, namespace, target, service, ingress, route, interval and variables.NAME"
    )]
    UnknownPlaceholder { name: String },
    /// `{{` without a matching `}}`.
    #[error("the query opens a placeholder with `{{{{` at byte {at} and never closes it")]
    UnclosedPlaceholder { at: usize },
}

/// Fills Flagger's placeholders in `query`: `{{ name }}` (the Canary), `{{ namespace }}`,
/// `{{ target }}`, `{{ service }}`, `{{ ingress }}`, `{{ route }}`, `{{ interval }}` (the measured
/// range's length) and `{{ variables.NAME }}`. Spaces inside the braces are optional. As in Go's
/// templates, which Flagger renders with, `{{- ` drops the whitespace before the placeholder and
/// ` -}}` the whitespace after it (the space next to the dash is required). Flagger
/// sets `ingress` and `route` to the target's name unless the Canary has an `ingressRef` or
/// `routeRef`; Fledge's Canary has neither, so both are the target. Any other placeholder, or a variable the Canary does not set, is an error
/// that names it.
pub fn render_template(
    query: &str,
    subject: &Subject,
    interval: Duration,
    variables: &BTreeMap<String, String>,
) -> Result<String, RenderError> {
    render(query, subject, &interval.to_string(), variables)
}

/// [`render_template`] with `{{ interval }}` as given.
fn render(
    query: &str,
    subject: &Subject,
    interval: &str,
    variables: &BTreeMap<String, String>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(query.len() + 32);
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(RenderError::UnclosedPlaceholder {
                at: query.len() - rest.len() + start,
            });
        };
        let mut inner = &after[..end];
        if let Some(rest) = inner.strip_prefix('-')
            && rest.starts_with(GO_SPACE)
        {
            out.truncate(out.trim_end_matches(GO_SPACE).len());
            inner = rest;
        }
        let trim_after = match inner.strip_suffix('-') {
            Some(rest) if rest.ends_with(GO_SPACE) => {
                inner = rest;
                true
            }
            _ => false,
        };
        let name = inner.trim_matches(GO_SPACE);
        match name {
            "name" => out.push_str(&subject.name),
            "namespace" => out.push_str(&subject.namespace),
            "target" | "ingress" | "route" => out.push_str(&subject.target),
            "service" => out.push_str(&subject.service),
            "interval" => out.push_str(interval),
            _ => match name.strip_prefix("variables.").map(str::trim) {
                Some(var) => match variables.get(var) {
                    Some(value) => out.push_str(value),
                    None => {
                        return Err(RenderError::UnknownVariable {
                            name: var.to_string(),
                        });
                    }
                },
                None => {
                    return Err(RenderError::UnknownPlaceholder {
                        name: name.to_string(),
                    });
                }
            },
        }
        rest = &after[end + 2..];
        if trim_after {
            rest = rest.trim_start_matches(GO_SPACE);
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The whitespace Go's templates trim next to `{{-` and `-}}`.
const GO_SPACE: [char; 4] = [' ', '\t', '\r', '\n'];

/// Whether every placeholder of `query` can be filled with `variables`, checked before any
/// Canary is measured (the values do not matter, only the names).
pub fn check_placeholders(
    query: &str,
    variables: &BTreeMap<String, String>,
) -> Result<(), RenderError> {
    let anyone = Workload {
        deployment: String::new(),
        service: String::new(),
    };
    let subject = Subject {
        name: String::new(),
        namespace: String::new(),
        target: String::new(),
        service: String::new(),
        canary: anyone.clone(),
        primary: anyone,
    };
    render_template(query, &subject, Duration(0), variables).map(drop)
}

/// Why a measurement has no reading when the `MetricTemplate` it names does not exist.
pub fn template_not_found(namespace: &str, name: &str) -> String {
    format!("MetricTemplate {namespace}/{name} not found")
}

/// A user's query, ready to evaluate at the range's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedQuery {
    pub promql: String,
    /// The template's own Prometheus, when it names one.
    pub address: Option<String>,
    /// HTTP headers sent with the query (the template's `provider.headers`), one pair per
    /// value, checked to be valid HTTP.
    pub headers: Vec<(String, String)>,
}

/// The PromQL of a user's query for one measurement: the inline query, or the `template` the
/// source names (looked up by the shell: `None` when it does not exist), rendered for `subject`
/// over `range`. The error is the reason a person reads in the Canary's status.
///
/// `{{ interval }}` is the metric's `interval` as written (`90s` stays `90s`), as Flagger fills
/// it, and `1m` (Flagger's default) when the metric sets none; the range is that long whenever
/// the clock has run that long. A source without it (built by hand) gets the range's length.
pub fn resolve_query(
    source: &QuerySource,
    subject: &Subject,
    range: Range,
    template: Option<&MetricTemplateSpec>,
) -> Result<ResolvedQuery, String> {
    let interval = |written: &Option<String>| match written.as_deref() {
        Some(text) if !text.is_empty() => text.to_string(),
        _ => range.length().to_string(),
    };
    match source {
        QuerySource::Inline {
            query,
            variables,
            interval: written,
        } => render(query, subject, &interval(written), variables)
            .map(|promql| ResolvedQuery {
                promql,
                address: None,
                headers: Vec::new(),
            })
            .map_err(|e| e.to_string()),
        QuerySource::Template {
            namespace,
            name,
            variables,
            interval: written,
        } => {
            let Some(template) = template else {
                return Err(template_not_found(namespace, name));
            };
            if let Some(e) = crate::spec::metric_template(template).first() {
                return Err(format!("MetricTemplate {namespace}/{name}: {e}"));
            }
            let promql = render(&template.query, subject, &interval(written), variables)
                .map_err(|e| format!("MetricTemplate {namespace}/{name}: {e}"))?;
            let headers = http_headers(&template.provider.headers)
                .map_err(|e| format!("MetricTemplate {namespace}/{name}: {e}"))?;
            Ok(ResolvedQuery {
                promql,
                address: template.provider.address.clone().filter(|a| !a.is_empty()),
                headers,
            })
        }
    }
}

/// A template's `provider.headers` as pairs, each name an HTTP token and each value visible
/// text (RFC 9110), so that a request can always carry them; the error names the header.
fn http_headers(headers: &BTreeMap<String, Vec<String>>) -> Result<Vec<(String, String)>, String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let mut out = Vec::new();
    for (name, values) in headers {
        if name.is_empty() || !name.chars().all(token) {
            return Err(format!(
                "provider.headers: `{name}` is not an HTTP header name"
            ));
        }
        for value in values {
            if !value.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
                return Err(format!(
                    "provider.headers.{name}: `{}` is not an HTTP header value (visible ASCII only)",
                    value.escape_default()
                ));
            }
            out.push((name.clone(), value.clone()));
        }
    }
    Ok(out)
}
