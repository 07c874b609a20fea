//! The evaluator's storage over the simulated telemetry: the labelled view's series, sampled at
//! the scrapes, as a Prometheus scraping the proxies would store them.

use super::{Labels, Ms, NAME, Series, Storage};
use crate::telemetry::{LabelledSeries, Naming, Telemetry};

/// The scraped series of a run so far.
pub struct Scraped<'a> {
    telemetry: &'a Telemetry,
    naming: Naming,
    series: Vec<(Labels, LabelledSeries)>,
}

impl<'a> Scraped<'a> {
    /// The series as `naming`'s proxies name them.
    pub fn new(telemetry: &'a Telemetry, naming: Naming) -> Self {
        let series = telemetry
            .labelled_series(naming)
            .into_iter()
            .map(|s| {
                let mut labels: Labels = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                labels.insert(NAME.to_string(), s.name.to_string());
                (labels, s)
            })
            .collect();
        Scraped {
            telemetry,
            naming,
            series,
        }
    }

    /// Whose names the series carry.
    pub(crate) fn naming(&self) -> Naming {
        self.naming
    }
}

impl Storage for Scraped<'_> {
    fn select(&self, wanted: &dyn Fn(&Labels) -> bool, from: Ms, to: Ms) -> Vec<Series> {
        self.series
            .iter()
            .filter(|(labels, _)| wanted(labels))
            .map(|(labels, s)| (labels.clone(), self.telemetry.scraped(s, from, to)))
            .filter(|(_, samples)| !samples.is_empty())
            .collect()
    }
}
