//! A PromQL evaluator for the common forms of Flagger's metric templates, over the simulator's
//! labelled series, as a Prometheus scraping the simulated proxies would store them.
//!
//! Queries are parsed by `promql-parser` (a parser made for PromQL) and evaluated as Prometheus
//! 2.x evaluates an instant query at one time:
//! - selectors with label matchers (`=`, `!=`, `=~`, `!~`, anchored); an instant selector takes
//!   each series' last sample within the 5-minute lookback, a range selector `[d]` its samples in
//!   `[t - d, t]`;
//! - `rate`, `increase` (extrapolated to the range's ends as Prometheus does, counter resets
//!   handled), `irate`, `histogram_quantile`;
//! - `sum`, `avg`, `min`, `max`, `count` with `by (...)` or `without (...)`;
//! - `+ - * / % ^` between scalars and vectors, one-to-one vector matching (with `on`/`ignoring`),
//!   unary minus, parentheses and numbers.
//!
//! Anything else (offsets, `@`, subqueries, other functions, comparisons, set operators,
//! `group_left`) is an error that names the part, never a silent wrong number.

mod depth;
mod scraped;
mod templates;
#[cfg(test)]
mod tests;

pub use scraped::Scraped;
pub(crate) use templates::{check_metrics, find_template};
pub use templates::{reading, subject};

use std::collections::BTreeMap;

use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::{
    self, AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, MatrixSelector,
    VectorMatchCardinality, VectorSelector,
};

/// A series' labels, its metric name under `__name__`.
pub type Labels = BTreeMap<String, String>;
/// Milliseconds, as Prometheus stamps samples.
pub type Ms = u64;
/// A series: its labels and its samples, oldest first.
pub type Series = (Labels, Vec<(Ms, f64)>);

const NAME: &str = "__name__";
/// Prometheus' default lookback delta for instant selectors.
const LOOKBACK: Ms = 5 * 60 * 1000;

/// The result of a query.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    /// One value per series.
    Vector(Vec<(Labels, f64)>),
    /// The raw samples of each series (a range selector at the top of the query).
    Matrix(Vec<Series>),
}

/// Where the evaluator reads series from.
pub trait Storage {
    /// Every series whose labels (the name under `__name__`) pass `wanted`, with its samples in
    /// `[from, to]`, oldest first; a series without samples there may be left out.
    fn select(&self, wanted: &dyn Fn(&Labels) -> bool, from: Ms, to: Ms) -> Vec<Series>;
}

/// Why a query cannot be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PromqlError {
    #[error("not valid PromQL: {0}")]
    Parse(String),
    #[error("`{part}` is not supported by the simulator's PromQL ({why})")]
    Unsupported { part: String, why: String },
    #[error("`{part}`: {why}")]
    Invalid { part: String, why: String },
    #[error("the query nests deeper than {limit} levels, the most the simulator evaluates")]
    TooDeep { limit: usize },
}

fn unsupported(part: impl ToString, why: &str) -> PromqlError {
    PromqlError::Unsupported {
        part: part.to_string(),
        why: why.to_string(),
    }
}

fn invalid(part: impl ToString, why: impl ToString) -> PromqlError {
    PromqlError::Invalid {
        part: part.to_string(),
        why: why.to_string(),
    }
}

/// Evaluates `query` at `at` over `storage`.
pub fn evaluate(query: &str, storage: &dyn Storage, at: Ms) -> Result<Value, PromqlError> {
    let expr = parser::parse(query).map_err(PromqlError::Parse)?;
    if depth::too_deep(&expr) {
        depth::dismantle(expr);
        return Err(PromqlError::TooDeep {
            limit: depth::MAX_DEPTH,
        });
    }
    match &expr {
        // A range selector is a valid instant query: its raw samples.
        Expr::MatrixSelector(m) => matrix(m, storage, at).map(Value::Matrix),
        _ => Eval { storage, at }.eval(&expr),
    }
}

/// Whether the simulator can evaluate `query`: it parses and uses only supported forms.
pub(crate) fn check(query: &str) -> Result<(), PromqlError> {
    struct Empty;
    impl Storage for Empty {
        fn select(&self, _: &dyn Fn(&Labels) -> bool, _: Ms, _: Ms) -> Vec<Series> {
            Vec::new()
        }
    }
    // The evaluator visits every node whatever the data, so no data finds every unsupported part.
    evaluate(query, &Empty, LOOKBACK).map(|_| ())
}

struct Eval<'a> {
    storage: &'a dyn Storage,
    at: Ms,
}

impl Eval<'_> {
    fn eval(&self, expr: &Expr) -> Result<Value, PromqlError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => match self.eval(&u.expr)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(v) => Ok(Value::Vector(
                    v.into_iter().map(|(l, x)| (without_name(l), -x)).collect(),
                )),
                Value::Matrix(_) => Err(invalid(expr, "a range vector cannot be negated")),
            },
            Expr::VectorSelector(vs) => self.instant(vs).map(Value::Vector),
            Expr::MatrixSelector(m) => Err(invalid(
                m,
                "a range vector where an instant vector is needed; apply e.g. rate()",
            )),
            Expr::Call(call) => self.call(call),
            Expr::Aggregate(agg) => self.aggregate(agg),
            Expr::Binary(bin) => self.binary(bin),
            Expr::StringLiteral(s) => Err(unsupported(expr, &format!("string {:?}", s.val))),
            Expr::Subquery(_) => Err(unsupported(expr, "subqueries")),
            Expr::Extension(_) => Err(unsupported(expr, "extensions")),
        }
    }

    fn instant(&self, vs: &VectorSelector) -> Result<Vec<(Labels, f64)>, PromqlError> {
        let series = select(vs, self.storage, self.at.saturating_sub(LOOKBACK), self.at)?;
        Ok(series
            .into_iter()
            .filter_map(|(labels, samples)| samples.last().map(|(_, v)| (labels, *v)))
            .collect())
    }

    fn vector(&self, expr: &Expr) -> Result<Vec<(Labels, f64)>, PromqlError> {
        match self.eval(expr)? {
            Value::Vector(v) => Ok(v),
            _ => Err(invalid(expr, "expected an instant vector")),
        }
    }

    fn call(&self, call: &Call) -> Result<Value, PromqlError> {
        let name = call.func.name;
        let args = &call.args.args;
        match (name, args.as_slice()) {
            ("rate" | "increase" | "irate", [arg]) => {
                let m = match arg.as_ref() {
                    Expr::MatrixSelector(m) => m,
                    Expr::Subquery(_) => return Err(unsupported(arg, "subqueries")),
                    _ => return Err(invalid(call, "expects a range selector such as x[1m]")),
                };
                let range = millis(m.range);
                let samples = matrix(m, self.storage, self.at)?;
                let end = self.at;
                // Signed: a range reaching back before t = 0 keeps its true start, as in
                // Prometheus, so that extrapolation and the division see the whole range.
                let start = signed(end) - signed(range);
                Ok(Value::Vector(
                    samples
                        .into_iter()
                        .filter_map(|(labels, s)| {
                            let v = match name {
                                "irate" => instant_rate(&s)?,
                                _ => extrapolated(&s, start, end, name == "rate")?,
                            };
                            Some((without_name(labels), v))
                        })
                        .collect(),
                ))
            }
            ("histogram_quantile", [q, buckets]) => {
                let q = match self.eval(q)? {
                    Value::Scalar(q) => q,
                    _ => return Err(invalid(call, "the quantile must be a number")),
                };
                Ok(Value::Vector(histogram_quantile(q, self.vector(buckets)?)))
            }
            _ => Err(unsupported(
                call,
                &format!(
                    "function `{name}`; supported are rate, irate, increase and histogram_quantile"
                ),
            )),
        }
    }

    fn aggregate(&self, agg: &AggregateExpr) -> Result<Value, PromqlError> {
        let op = agg.op.to_string();
        if agg.param.is_some() || !matches!(op.as_str(), "sum" | "avg" | "min" | "max" | "count") {
            return Err(unsupported(
                agg,
                &format!("aggregation `{op}`; supported are sum, avg, min, max and count"),
            ));
        }
        let input = self.vector(&agg.expr)?;
        let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
        for (labels, v) in input {
            let key: Labels = match &agg.modifier {
                Some(LabelModifier::Include(by)) => labels
                    .into_iter()
                    .filter(|(k, _)| by.labels.contains(k))
                    .collect(),
                Some(LabelModifier::Exclude(without)) => without_name(labels)
                    .into_iter()
                    .filter(|(k, _)| !without.labels.contains(k))
                    .collect(),
                None => Labels::new(),
            };
            groups.entry(key).or_default().push(v);
        }
        Ok(Value::Vector(
            groups
                .into_iter()
                .map(|(labels, values)| {
                    let n = values.len() as f64;
                    let v = match op.as_str() {
                        "sum" => values.iter().sum(),
                        "avg" => values.iter().sum::<f64>() / n,
                        "min" => values.iter().copied().fold(f64::INFINITY, f64::min),
                        "max" => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        _ => n,
                    };
                    (labels, v)
                })
                .collect(),
        ))
    }

    fn binary(&self, bin: &BinaryExpr) -> Result<Value, PromqlError> {
        let op = bin.op.to_string();
        if !matches!(op.as_str(), "+" | "-" | "*" | "/" | "%" | "^") {
            return Err(unsupported(
                bin,
                &format!("operator `{op}`; supported are + - * / % ^"),
            ));
        }
        let lhs = self.eval(&bin.lhs)?;
        let rhs = self.eval(&bin.rhs)?;
        let apply = |a: f64, b: f64| match op.as_str() {
            "+" => a + b,
            "-" => a - b,
            "*" => a * b,
            "/" => a / b,
            "%" => a % b,
            _ => a.powf(b),
        };
        let modifier = bin.modifier.as_ref();
        if modifier.is_some_and(|m| m.return_bool) {
            return Err(unsupported(bin, "the `bool` modifier"));
        }
        match (lhs, rhs) {
            (Value::Scalar(a), Value::Scalar(b)) => Ok(Value::Scalar(apply(a, b))),
            (Value::Vector(v), Value::Scalar(b)) => Ok(Value::Vector(
                v.into_iter()
                    .map(|(l, a)| (without_name(l), apply(a, b)))
                    .collect(),
            )),
            (Value::Scalar(a), Value::Vector(v)) => Ok(Value::Vector(
                v.into_iter()
                    .map(|(l, b)| (without_name(l), apply(a, b)))
                    .collect(),
            )),
            (Value::Vector(left), Value::Vector(right)) => {
                if let Some(m) = modifier
                    && m.card != VectorMatchCardinality::OneToOne
                {
                    return Err(unsupported(bin, "group_left and group_right"));
                }
                let matching = modifier.and_then(|m| m.matching.as_ref());
                let key = |labels: &Labels| -> Labels {
                    match matching {
                        Some(LabelModifier::Include(on)) => labels
                            .iter()
                            .filter(|(k, _)| on.labels.contains(k))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                        Some(LabelModifier::Exclude(ignoring)) => without_name(labels.clone())
                            .into_iter()
                            .filter(|(k, _)| !ignoring.labels.contains(k))
                            .collect(),
                        None => without_name(labels.clone()),
                    }
                };
                let mut by_key: BTreeMap<Labels, f64> = BTreeMap::new();
                for (labels, v) in &right {
                    if by_key.insert(key(labels), *v).is_some() {
                        return Err(invalid(
                            bin,
                            "several series on the right match the same labels (many-to-many matching)",
                        ));
                    }
                }
                let mut seen = std::collections::BTreeSet::new();
                let mut out = Vec::new();
                for (labels, a) in left {
                    let k = key(&labels);
                    let Some(b) = by_key.get(&k) else { continue };
                    if !seen.insert(k.clone()) {
                        return Err(invalid(
                            bin,
                            "several series on the left match the same labels (many-to-many matching)",
                        ));
                    }
                    let labels = match matching {
                        Some(LabelModifier::Include(_)) => k,
                        _ => key(&labels),
                    };
                    out.push((labels, apply(a, *b)));
                }
                Ok(Value::Vector(out))
            }
            _ => Err(invalid(bin, "a range vector cannot be an operand")),
        }
    }
}

fn millis(d: std::time::Duration) -> Ms {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn signed(ms: Ms) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn without_name(mut labels: Labels) -> Labels {
    labels.remove(NAME);
    labels
}

/// The series a selector names, with their samples in `[from, to]`.
fn select(
    vs: &VectorSelector,
    storage: &dyn Storage,
    from: Ms,
    to: Ms,
) -> Result<Vec<Series>, PromqlError> {
    if vs.offset.is_some() {
        return Err(unsupported(vs, "the `offset` modifier"));
    }
    if vs.at.is_some() {
        return Err(unsupported(vs, "the `@` modifier"));
    }
    let matchers: &Matchers = &vs.matchers;
    if !matchers.or_matchers.is_empty() {
        return Err(unsupported(vs, "`or` between label matchers"));
    }
    let name = vs.name.clone();
    let wanted = move |labels: &Labels| {
        let value = |k: &str| labels.get(k).map_or("", String::as_str);
        name.as_deref().is_none_or(|n| value(NAME) == n)
            && matchers.matchers.iter().all(|m| match &m.op {
                MatchOp::Equal | MatchOp::NotEqual | MatchOp::Re(_) | MatchOp::NotRe(_) => {
                    m.is_match(value(&m.name))
                }
            })
    };
    Ok(storage.select(&wanted, from, to))
}

/// The raw samples of a range selector evaluated at `at`.
fn matrix(m: &MatrixSelector, storage: &dyn Storage, at: Ms) -> Result<Vec<Series>, PromqlError> {
    let from = at.saturating_sub(millis(m.range));
    Ok(select(&m.vs, storage, from, at)?
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .collect())
}

/// Prometheus 2.x `increase` (or `rate`) of a counter's samples in `[start, end]`: the growth
/// between the first and last sample (resets counted as restarts from zero), extrapolated
/// towards the range's ends by at most half a sample interval where the series goes on, and not
/// below zero. `None` with fewer than two samples.
fn extrapolated(samples: &[(Ms, f64)], start: i64, end: Ms, per_second: bool) -> Option<f64> {
    let (&(t0, first), &(t1, last)) = (samples.first()?, samples.last()?);
    if t1 <= t0 {
        return None;
    }
    let mut result = last - first;
    for pair in samples.windows(2) {
        if pair[1].1 < pair[0].1 {
            result += pair[0].1;
        }
    }
    let secs = |ms: Ms| ms as f64 / 1000.0;
    let mut to_start = (signed(t0) - start) as f64 / 1000.0;
    let to_end = secs(end.saturating_sub(t1));
    let sampled = secs(t1 - t0);
    let average = sampled / (samples.len() - 1) as f64;
    if result > 0.0 && first >= 0.0 {
        // A counter does not go below zero: extrapolate at most to where it would be zero.
        to_start = to_start.min(sampled * (first / result));
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    let mut value = result * (interval / sampled);
    if per_second {
        value /= (signed(end) - start) as f64 / 1000.0;
    }
    Some(value)
}

/// Prometheus `irate`: the per-second growth between the last two samples.
fn instant_rate(samples: &[(Ms, f64)]) -> Option<f64> {
    let [.., (t0, a), (t1, b)] = samples else {
        return None;
    };
    let growth = if b < a { *b } else { b - a };
    (t1 > t0).then(|| growth / ((t1 - t0) as f64 / 1000.0))
}

/// Prometheus `histogram_quantile` over classic buckets: one result per label set without `le`.
fn histogram_quantile(q: f64, series: Vec<(Labels, f64)>) -> Vec<(Labels, f64)> {
    let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for (mut labels, count) in without_names(series) {
        let Some(bound) = labels.remove("le").and_then(|le| le.parse::<f64>().ok()) else {
            continue;
        };
        groups.entry(labels).or_default().push((bound, count));
    }
    groups
        .into_iter()
        .map(|(labels, buckets)| (labels, bucket_quantile(q, buckets)))
        .collect()
}

fn without_names(series: Vec<(Labels, f64)>) -> impl Iterator<Item = (Labels, f64)> {
    series.into_iter().map(|(l, v)| (without_name(l), v))
}

fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Equal bounds from different series add up; counts may not decrease with the bound.
    buckets.dedup_by(|b, a| {
        let same = a.0 == b.0;
        if same {
            a.1 += b.1;
        }
        same
    });
    for i in 1..buckets.len() {
        buckets[i].1 = buckets[i].1.max(buckets[i - 1].1);
    }
    let n = buckets.len();
    let observations = buckets[n - 1].1;
    if n < 2 || observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets.partition_point(|(_, c)| *c < rank);
    if b == n - 1 {
        return buckets[n - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}
