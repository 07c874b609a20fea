//! `fledge-sim plan CANARY.yaml`: what a rollout would do, step by step.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use fledge_controller::analysis::Histogram;
use fledge_controller::analysis::statistical::{DEFAULT_ERROR_MARGIN_PP, DEFAULT_LATENCY_INCREASE};
use fledge_controller::rollout::{
    Forecast, ForecastEnd, Millis, RolloutPlan, forecast, log_normal_latency, plan, rate_text,
};
use fledge_controller::spec::{
    Canary, Duration, Judge, LoadError, Margin, MetricCheck, MetricKind, RolloutSpec, Strategy,
    load_manifests, validate,
};

use super::EXIT_BAD_INPUT;
use crate::manifest::yaml::Outline;

/// The rates a forecast is given for: from one request in about 17 minutes to far beyond any
/// one service's traffic (outside them the figures print as noise: hundreds of digits).
const RPS_RANGE: std::ops::RangeInclusive<f64> = 0.001..=10_000_000.0;

/// The longest a rollout at low traffic should have to wait for the statistical judge (issue
/// 19's bound): a plan whose judge needs a longer progress deadline says so plainly, with the
/// rate from which it would not.
const PRACTICAL_DEADLINE: Millis = 30 * 60_000;

pub(super) fn run(
    file: &Path,
    rps: Option<f64>,
    error_rate: f64,
    latency: Option<&str>,
) -> ExitCode {
    if let Some(r) = rps
        && !RPS_RANGE.contains(&r)
    {
        sayln!(
            "error: --rps: expected requests per second from {} to {}, got {r}",
            RPS_RANGE.start(),
            RPS_RANGE.end()
        );
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    if !(0.0..100.0).contains(&error_rate) {
        sayln!("error: --error-rate: expected a percentage in [0, 100), got {error_rate}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let latency = match latency.map(parse_latency) {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(why)) => {
            sayln!("error: --latency: {why}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let text = match crate::scenario::read_bounded(file) {
        Ok(t) => t,
        Err(e) => {
            sayln!("error: {}: {e}", file.display());
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if let Err(deep) = crate::manifest::yaml::check_depth(&text) {
        sayln!("error: {}:{}: {deep}", file.display(), deep.line);
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let outline = Outline::of(&text);
    // `FILE:LINE` of a field of a document (0-based), as `run` and `validate` name places.
    let at = |doc: usize, field: &str| {
        let line = outline.line(doc, field).unwrap_or(1);
        format!("{}:{line}", file.display())
    };
    let loaded = match load_manifests(&text) {
        Ok(l) => l,
        Err(LoadError::Invalid {
            document,
            kind,
            name,
            errors,
        }) => {
            let doc = document.saturating_sub(1);
            sayln!(
                "error: {}: document {document} ({kind} {name}) does not validate:",
                at(doc, "")
            );
            for e in &errors.0 {
                sayln!("  {}: {e}", at(doc, &e.path));
            }
            return ExitCode::from(EXIT_BAD_INPUT);
        }
        Err(e) => {
            let (doc, field, line) = crate::scenario::load_error_place(&e);
            let place = match line {
                Some(line) => format!("{}:{line}", file.display()),
                None => at(doc, field),
            };
            sayln!("error: {place}: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    for field in &loaded.ignored {
        sayln!(
            "warning: {}: {field}: not a field Fledge knows; ignored",
            file.display()
        );
    }
    for w in &loaded.warnings {
        sayln!("warning: {}: {w}", file.display());
    }
    for (document, e) in &loaded.fledge_only {
        sayln!(
            "warning: {}: {}: {}",
            at(document - 1, &e.path),
            e.path,
            e.message
        );
    }
    if loaded.canaries.is_empty() {
        sayln!(
            "error: {}: no Canary document (apiVersion fledge.dev/v1alpha1 or flagger.app/v1beta1)",
            file.display()
        );
        sayln!(
            "  hint: plan takes a Canary file; a scenario holds its Canary under `canary:` or \
             names it in `canary_file:`; `fledge-sim validate` checks a whole scenario"
        );
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let mut failed = false;
    for canary in &loaded.canaries {
        let name = canary_name(canary);
        match validate(&canary.spec) {
            Ok(spec) => {
                super::run::emit(&render(&name, &spec, &plan(&spec)));
                if let Some(rps) = rps {
                    let load = (rps, error_rate, latency.as_ref());
                    super::run::emit(&forecast_text(file, &name, &spec, load));
                }
            }
            Err(errors) => {
                failed = true;
                let doc = outline
                    .document("Canary", canary.metadata.name.as_deref())
                    .unwrap_or(0);
                sayln!("error: {}: Canary {name} is not valid:", at(doc, ""));
                for e in &errors.0 {
                    sayln!("  {}: {e}", at(doc, &e.path));
                }
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_BAD_INPUT)
    } else {
        ExitCode::SUCCESS
    }
}

/// `--latency P50,P99` in milliseconds: the log-normal shape the forecast runs on.
fn parse_latency(text: &str) -> Result<Histogram, String> {
    let parsed: Option<Vec<f64>> = text.split(',').map(|p| p.trim().parse().ok()).collect();
    match parsed.as_deref() {
        Some(&[p50, p99]) => log_normal_latency(p50, p99).ok_or_else(|| {
            format!("expected 0 < P50 <= P99, finite milliseconds, got {p50} and {p99}")
        }),
        _ => Err(format!(
            "expected P50,P99 in milliseconds (e.g. 20,80), got `{text}`"
        )),
    }
}

fn canary_name(c: &Canary) -> String {
    let name = c.metadata.name.as_deref().unwrap_or("(unnamed)");
    match &c.metadata.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// The plan as text: the settings that shape it, then one line per decision.
pub(super) fn render(name: &str, spec: &RolloutSpec, plan: &RolloutPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Canary {name}: target {}", spec.target);
    let _ = writeln!(out, "  strategy   {}", strategy(spec));
    let _ = writeln!(
        out,
        "  analysis   every {}; rollback after {} failed check{}; progress deadline {}",
        spec.interval,
        spec.threshold,
        if spec.threshold == 1 { "" } else { "s" },
        spec.progress_deadline
    );
    let judge = match spec.judge {
        Judge::Threshold => "threshold (each metric against its range)".to_string(),
        Judge::Statistical {
            alpha,
            min_requests,
        } => format!(
            "statistical (canary against primary, alpha {alpha}, at least {min_requests} requests)"
        ),
    };
    let _ = writeln!(out, "  judge      {judge}");
    for (i, m) in spec.metrics.iter().enumerate() {
        let label = if i == 0 { "metrics" } else { "" };
        let _ = writeln!(out, "  {label:<10} {}", metric(m, &spec.judge));
    }
    for (i, h) in spec.webhooks.iter().enumerate() {
        let label = if i == 0 { "webhooks" } else { "" };
        let _ = writeln!(
            out,
            "  {label:<10} {} {} -> {} (timeout {})",
            h.gate, h.name, h.url, h.timeout
        );
    }
    let rows: Vec<[String; 5]> = plan
        .steps
        .iter()
        .map(|step| {
            let mut routing = format!("{}%", step.canary_weight);
            if let Some(m) = step.mirror {
                routing = format!("{routing}+m{m}");
            }
            if step.matched {
                routing = "match".to_string();
            }
            let mut checked: Vec<String> = Vec::new();
            if step.analysed {
                let n = spec.metrics.len();
                checked.push(format!("{n} metric{}", if n == 1 { "" } else { "s" }));
            }
            if !step.hooks.is_empty() {
                checked.push(format!("hooks: {}", step.hooks.join(", ")));
            }
            let checked = if checked.is_empty() {
                "-".to_string()
            } else {
                checked.join("; ")
            };
            [
                Duration(step.at).to_string(),
                step.phase.to_string(),
                routing,
                checked,
                step.message.clone(),
            ]
        })
        .collect();
    let width = rows.iter().map(|r| r[3].len()).max().unwrap_or(0).max(7);
    let _ = writeln!(
        out,
        "\n  {:>8}  {:<16} {:>6}  {:<width$}  decision",
        "at", "phase", "canary", "checked"
    );
    for [at, phase, routing, checked, message] in rows {
        let _ = writeln!(
            out,
            "  {at:>8}  {phase:<16} {routing:>6}  {checked:<width$}  {message}"
        );
    }
    let _ = writeln!(
        out,
        "\n  shortest time to promotion: {} ({} analyses)\n",
        Duration(plan.shortest_promotion),
        plan.analyses
    );
    out
}

fn strategy(spec: &RolloutSpec) -> String {
    let promotion = match spec.step_weight_promotion {
        Some(step) => format!("promotion moves {step}% back to primary per interval"),
        None => "promotion moves all traffic back at once".to_string(),
    };
    match &spec.strategy {
        Strategy::Canary { steps, mirror } => {
            let ladder: Vec<String> = steps.iter().map(|w| format!("{w}%")).collect();
            let mirror = mirror
                .map(|m| format!("mirror {m}% first, then "))
                .unwrap_or_default();
            format!(
                "canary: {mirror}weights {}; {promotion}",
                ladder.join(" -> ")
            )
        }
        Strategy::BlueGreen { iterations, mirror } => {
            let mirror = mirror
                .map(|m| format!(", {m}% mirrored for the first half"))
                .unwrap_or_default();
            format!(
                "blue/green: {iterations} iterations{mirror}, then all traffic to the canary; {promotion}"
            )
        }
        Strategy::AbTesting {
            iterations,
            matches,
        } => format!(
            "A/B testing: {} match rule{} to the canary for {iterations} iterations; {promotion}",
            matches.len(),
            if matches.len() == 1 { "" } else { "s" }
        ),
    }
}

/// The latency quantile a `request-duration` metric gates (as the timeline names its value).
fn gated_quantile(m: &MetricCheck, judge: &Judge) -> String {
    let q = crate::report::latency_quantile(m, judge);
    if q == 0.5 {
        "the median".to_string()
    } else {
        crate::report::quantile_name(q)
    }
}

fn metric(m: &MetricCheck, judge: &Judge) -> String {
    let (unit, what) = match &m.kind {
        MetricKind::RequestSuccessRate => ("%", "built-in".to_string()),
        MetricKind::RequestDuration => (
            "ms",
            format!("built-in, gates {}", gated_quantile(m, judge)),
        ),
        MetricKind::Query { .. } => ("", "inline query".to_string()),
        MetricKind::Template {
            name, namespace, ..
        } => (
            "",
            format!(
                "template {}{name}",
                namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default()
            ),
        ),
    };
    let bounds = match (m.min, m.max) {
        (Some(lo), Some(hi)) => format!("in [{lo}{unit}, {hi}{unit}]"),
        (Some(lo), None) => format!(">= {lo}{unit}"),
        (None, Some(hi)) => format!("<= {hi}{unit}"),
        (None, None) => "compared with primary".to_string(),
    };
    format!("{} {bounds} over {} ({what})", m.name, m.window)
}

/// Why the statistical judge's pace at `rps` is not the traffic's, when it is not: it compares
/// no metric (only `request-success-rate` and `request-duration` are compared with primary; a
/// query's or template's value is checked against its range), so each step lasts `interval`;
/// or it compares only latency and no latency shape was given to forecast it from.
fn not_paced_by_traffic(
    spec: &RolloutSpec,
    rps: f64,
    latency: Option<&Histogram>,
) -> Option<String> {
    let Judge::Statistical { .. } = spec.judge else {
        return None;
    };
    let rate = rate_text(rps);
    let compared: Vec<&str> = (spec.metrics.iter())
        .filter(|m| m.kind.is_builtin())
        .map(|m| m.name.as_str())
        .collect();
    if !compared.is_empty() {
        let latency_only = (spec.metrics.iter())
            .filter(|m| m.kind.is_builtin())
            .all(|m| m.kind == MetricKind::RequestDuration);
        return (latency_only && latency.is_none()).then(|| {
            format!(
                "at {rate} requests/s: the statistical judge compares only latency here ({}), whose evidence depends on the latency's shape: give --latency P50,P99 for a forecast",
                compared.join(", ")
            )
        });
    }
    let checked: Vec<&str> = spec.metrics.iter().map(|m| m.name.as_str()).collect();
    let gate = if checked.is_empty() {
        "no metric is checked".to_string()
    } else {
        format!(
            "{} {} checked against {} range once per interval, a failed check counting towards the rollback after {}",
            checked.join(", "),
            if checked.len() == 1 { "is" } else { "are" },
            if checked.len() == 1 { "its" } else { "their" },
            spec.threshold
        )
    };
    Some(format!(
        "at {rate} requests/s: the statistical judge compares no metric with primary here (it compares request-success-rate and request-duration; {gate}), so the traffic does not set the pace: each step lasts the interval ({}), and the plan above is its pace",
        spec.interval
    ))
}

/// The rollout at `rps`: each step's canary traffic, the requests the judge needs in it and how
/// long it lasts, the expected time to promotion, and a warning when the judge is not expected
/// to decide within the progress deadline (the rollout is then judged by thresholds).
fn forecast_text(
    file: &Path,
    name: &str,
    spec: &RolloutSpec,
    (rps, error_rate, latency): (f64, f64, Option<&Histogram>),
) -> String {
    let mut out = String::new();
    if let Some(line) = not_paced_by_traffic(spec, rps, latency) {
        let _ = writeln!(out, "  {line}\n");
        return out;
    }
    let Some(f) = forecast(spec, rps, error_rate / 100.0, latency) else {
        let _ = writeln!(
            out,
            "  at {} requests/s: the threshold judge checks each metric once per interval, \
             whatever the traffic; the plan above is its pace\n",
            rate_text(rps)
        );
        return out;
    };
    let margins: Vec<String> = spec
        .metrics
        .iter()
        .filter(|m| m.kind.is_builtin())
        .map(|m| {
            let margin = match (m.margin, &m.kind) {
                (Some(Margin::Absolute(v)), _) => format!("+{v} pp"),
                (Some(Margin::Relative(v)), _) => format!("+{}%", v * 100.0),
                (None, MetricKind::RequestSuccessRate) => {
                    format!("the default +{DEFAULT_ERROR_MARGIN_PP} pp")
                }
                (None, _) => format!("the default +{}%", DEFAULT_LATENCY_INCREASE * 100.0),
            };
            match m.kind {
                MetricKind::RequestDuration => {
                    format!("{} {margin} at {}", m.name, gated_quantile(m, &spec.judge))
                }
                _ => format!("{} {margin}", m.name),
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "  forecast at {} requests/s, canary and primary both failing {error_rate}% of requests \
         (margins: {}):",
        rate_text(rps),
        if margins.is_empty() {
            "none".to_string()
        } else {
            margins.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "  {:>8}  {:>6}  {:>10}  {:>15}  {:>8}",
        "from", "canary", "canary rps", "canary requests", "lasts"
    );
    for s in &f.steps {
        let weight = match s.mirror {
            Some(m) => format!("m{m}%"),
            None => format!("{}%", s.canary_weight),
        };
        let lasts = if s.ended {
            Duration(s.duration).to_string()
        } else {
            format!("> {}", Duration(s.duration))
        };
        let _ = writeln!(
            out,
            "  {:>8}  {weight:>6}  {:>10}  {:>15.0}  {lasts:>8}",
            Duration(s.started).to_string(),
            rate_text(s.canary_rps),
            s.canary_requests,
        );
    }
    // What the thresholds that judge instead make of this traffic: a success rate outside its
    // range fails each interval's check, and `threshold` of them roll the rollout back.
    let outside: Vec<String> = (spec.metrics.iter())
        .filter(|m| m.kind == MetricKind::RequestSuccessRate)
        .filter(|m| {
            let success = 100.0 - error_rate;
            m.min.is_some_and(|lo| success < lo) || m.max.is_some_and(|hi| success > hi)
        })
        .map(|m| m.name.clone())
        .collect();
    let suffices = if outside.is_empty() {
        format!(
            "and the progress deadline of {} suffices",
            spec.progress_deadline
        )
    } else {
        format!(
            "but a success rate of {}% is outside the threshold range of {}, whose checks are then expected to fail and roll back even a canary no worse than primary after {} of them",
            rate_text(100.0 - error_rate),
            outside.join(", "),
            spec.threshold
        )
    };
    let end = match f.end {
        ForecastEnd::Promoted { after } => format!("expected promotion after {}", Duration(after)),
        ForecastEnd::Deadline { after } => format!(
            "the judge would still hold a step at the progress deadline ({}) after {}, so the rollout is judged from its first look by the metrics' thresholds over each interval's traffic, a step per interval as Flagger judges, {suffices}{}",
            spec.progress_deadline,
            Duration(after),
            f.unbounded
                .map(|u| format!(
                    "; the judge would decide after {} with a longer one",
                    Duration(u)
                ))
                .unwrap_or_default()
        ),
        ForecastEnd::Undecided => format!(
            "the judge is not expected to decide within a day, so the rollout is judged from its first look by the metrics' thresholds over each interval's traffic, a step per interval as Flagger judges, {suffices}"
        ),
    };
    // The table's canary requests are the judge's evidence only where its steps ended.
    let above = if f.unbounded.is_some() {
        " (canary requests above)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "\n  {end}; with the judge, a step below the top weight ends once it has its own minRequests and nothing leans worse, the top step once the rollout's canary requests show the canary no worse{above}, at a look"
    );
    if !f.not_forecast.is_empty() {
        let _ = writeln!(
            out,
            "  latency not forecast ({}): its comparison may hold steps longer; give --latency P50,P99",
            f.not_forecast.join(", ")
        );
    }
    if let Some(line) = beyond_practical(spec, &f, error_rate / 100.0, latency) {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out);
    if let Some(w) = f.warning(spec) {
        let _ = writeln!(out, "warning: {}: Canary {name}: {w}", file.display());
    }
    out
}

/// When the judge needs a progress deadline beyond [`PRACTICAL_DEADLINE`] at the forecast's
/// rate: what it needs, the evidence that takes, and the rate from which it decides in time.
fn beyond_practical(
    spec: &RolloutSpec,
    f: &Forecast,
    error_rate: f64,
    latency: Option<&Histogram>,
) -> Option<String> {
    if f.judge_decides() && spec.progress_deadline.millis() <= PRACTICAL_DEADLINE {
        return None;
    }
    let within = |d: Option<Millis>| d.is_some_and(|d| d <= PRACTICAL_DEADLINE);
    if within(f.deadline_needed) {
        return None;
    }
    let Judge::Statistical { alpha, .. } = spec.judge else {
        return None;
    };
    let practical = Duration(PRACTICAL_DEADLINE);
    let needs = match f.deadline_needed {
        Some(d) => format!(
            "a progress deadline of {}s ({}) for its evidence",
            d / 1000,
            Duration(d)
        ),
        None => "more than a day for its evidence".to_string(),
    };
    let evidence = evidence(spec, f, error_rate, latency);
    let decides = |rps: f64| {
        forecast(spec, rps, error_rate, latency).is_some_and(|f| within(f.deadline_needed))
    };
    let from = match lowest_rate(f.rps, decides) {
        Some(r) => format!(
            "from about {r} requests/s a progress deadline of {practical} or less lets it decide"
        ),
        None => format!(
            "no rate up to {} requests/s lets it decide within a progress deadline of {practical}",
            RPS_RANGE.end()
        ),
    };
    Some(format!(
        "the statistical judge cannot decide within a progress deadline of {practical} at {} requests/s: it needs {needs} at alpha {alpha} and the margins above ({evidence}); {from}; below that, the metrics' thresholds judge as said above",
        rate_text(f.rps)
    ))
}

/// The canary requests the judge's evidence takes: the forecast's own when the judge decides
/// in it; else those of a forecast at a higher rate where it does (the requests hardly depend
/// on the rate, only the time they take), beside what `f`'s day serves.
fn evidence(
    spec: &RolloutSpec,
    f: &Forecast,
    error_rate: f64,
    latency: Option<&Histogram>,
) -> String {
    let taken = |f: &Forecast| {
        let canary: f64 = f.steps.iter().map(|s| s.canary_requests).sum();
        let top = f.steps.last().map_or(0.0, |s| s.canary_requests);
        format!("{canary:.0} canary requests, {top:.0} of them at the top weight")
    };
    if f.unbounded.is_some() {
        return taken(f);
    }
    let served: f64 = f.steps.iter().map(|s| s.canary_requests).sum();
    let day = format!(
        "a day at {} requests/s serves {served:.0} canary requests",
        rate_text(f.rps)
    );
    let mut rps = f.rps;
    while rps <= *RPS_RANGE.end() {
        rps *= 2.0;
        if let Some(decided) =
            forecast(spec, rps, error_rate, latency).filter(|d| d.unbounded.is_some())
        {
            return format!(
                "about {}, as forecast at {} requests/s, where it decides within a day; {day}",
                taken(&decided),
                rate_text(rps)
            );
        }
    }
    format!(
        "{day}, and at no rate up to {} requests/s does it decide within a day",
        RPS_RANGE.end()
    )
}

/// The lowest rate above `rps` from which `decides` holds up to half as much again, checked
/// every 3% (two significant figures, rounded up), found by doubling then halving on a log
/// scale; `None` past the rates a forecast takes. The check above it is needed: the deadline a
/// forecast recommends comes from random runs, so it does not fall steadily as the rate rises,
/// and "from about X" must hold above X too.
fn lowest_rate(rps: f64, decides: impl Fn(f64) -> bool) -> Option<String> {
    let mut from = rps;
    // Each round starts above a rate that failed, at least 3% higher: a few rounds suffice.
    for _ in 0..20 {
        let mut hi = from * 2.0;
        while !decides(hi) {
            hi *= 2.0;
            if hi > *RPS_RANGE.end() {
                return None;
            }
        }
        let mut lo = (hi / 2.0).max(from);
        for _ in 0..6 {
            let mid = (lo * hi).sqrt();
            if decides(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let scale = 10f64.powi(hi.log10().floor() as i32 - 1);
        let rounded = (hi / scale).ceil() * scale;
        match (0..=14)
            .map(|k| rounded * 1.03f64.powi(k))
            .find(|r| !decides(*r))
        {
            None => return Some(format!("{}", (rounded * 1e6).round() / 1e6)),
            Some(failed) => from = failed.max(from * 1.03),
        }
    }
    None
}
