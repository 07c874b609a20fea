//! `/metrics`: the labelled view of the request telemetry in the Prometheus text exposition
//! format, named as the scenario's data plane names it. No timestamps: the scraper stamps each
//! sample with its own clock, which is the wall clock the live mesh follows.

use std::fmt::Write as _;

use crate::telemetry::{Naming, Telemetry};

/// The exposition of every series created so far.
pub(crate) fn render(telemetry: &Telemetry, naming: Naming) -> String {
    let mut out = String::new();
    let mut family = "";
    for series in telemetry.labelled_series(naming) {
        if series.family.0 != family {
            family = series.family.0;
            let _ = writeln!(out, "# TYPE {family} {}", series.family.1);
        }
        let labels: Vec<String> = series
            .labels
            .iter()
            .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
            .collect();
        let _ = writeln!(
            out,
            "{}{{{}}} {}",
            series.name,
            labels.join(","),
            telemetry.live_value(&series)
        );
    }
    out
}

/// A label value as the text format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_the_text_format_requires() {
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }
}
