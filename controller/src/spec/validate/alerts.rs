//! `analysis.alerts`: each names a provider and a severity Flagger knows.

use std::fmt;

use super::Problems;
use crate::spec::CanaryAlert;

/// How serious an alert is, and (on an alert of the spec) the least serious one it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertSeverity {
    Info,
    Warn,
    Error,
}

impl AlertSeverity {
    /// An alert's `severity` as written (absent means `info`, as in Flagger).
    pub fn of(alert: &CanaryAlert) -> Result<AlertSeverity, String> {
        match alert.severity.as_deref().unwrap_or("") {
            "" | "info" => Ok(AlertSeverity::Info),
            "warn" => Ok(AlertSeverity::Warn),
            "error" => Ok(AlertSeverity::Error),
            other => Err(format!("must be info, warn or error, got `{other}`")),
        }
    }

    /// Whether an alert of this (the spec's) severity is sent one of severity `sent`: `info`
    /// takes everything, `warn` warnings and errors, `error` errors only, as Flagger filters.
    pub fn admits(self, sent: AlertSeverity) -> bool {
        sent >= self
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Info => "info",
            AlertSeverity::Warn => "warn",
            AlertSeverity::Error => "error",
        }
    }
}

impl fmt::Display for AlertSeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(super) fn alerts(p: &mut Problems, alerts: &[CanaryAlert]) {
    for (i, alert) in alerts.iter().enumerate() {
        let at = format!("spec.analysis.alerts[{i}]");
        if let Err(e) = AlertSeverity::of(alert) {
            p.add(format!("{at}.severity"), e);
        }
        if alert.provider_ref.name.trim().is_empty() {
            p.add(
                format!("{at}.providerRef.name"),
                "must name an AlertProvider",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_severity_filter_admits_what_flaggers_admits() {
        use AlertSeverity::*;
        assert!(Info.admits(Info) && Info.admits(Warn) && Info.admits(Error));
        assert!(!Warn.admits(Info) && Warn.admits(Warn) && Warn.admits(Error));
        assert!(!Error.admits(Info) && !Error.admits(Warn) && Error.admits(Error));
    }
}
