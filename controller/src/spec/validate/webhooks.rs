//! Webhooks: Flagger's hook types (gates before, during and after a rollout, rollback polls and
//! event notifications), each with its URL, timeout, retries and metadata.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Problems;
use crate::spec::{CanaryWebhook, Duration};

const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// A webhook and when it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRef {
    pub name: String,
    pub gate: HookGate,
    pub url: String,
    pub timeout: Duration,
    pub retries: u32,
    pub metadata: BTreeMap<String, String>,
    pub mute_alert: bool,
}

/// Flagger's webhook types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookGate {
    /// Before traffic shifting starts; a failure is a failed check.
    PreRollout,
    /// Every analysis tick, like a metric; a failure is a failed check.
    Rollout,
    /// Gates the start of a rollout; the canary waits until it answers success.
    ConfirmRollout,
    /// Gates each weight increase.
    ConfirmTrafficIncrease,
    /// Gates promotion.
    ConfirmPromotion,
    /// After promotion or rollback; its result does not change the outcome.
    PostRollout,
    /// Polled during analysis; success rolls the canary back.
    Rollback,
    /// Notified of every event.
    Event,
}

impl HookGate {
    pub const ALL: [HookGate; 8] = [
        HookGate::PreRollout,
        HookGate::Rollout,
        HookGate::ConfirmRollout,
        HookGate::ConfirmTrafficIncrease,
        HookGate::ConfirmPromotion,
        HookGate::PostRollout,
        HookGate::Rollback,
        HookGate::Event,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookGate::PreRollout => "pre-rollout",
            HookGate::Rollout => "rollout",
            HookGate::ConfirmRollout => "confirm-rollout",
            HookGate::ConfirmTrafficIncrease => "confirm-traffic-increase",
            HookGate::ConfirmPromotion => "confirm-promotion",
            HookGate::PostRollout => "post-rollout",
            HookGate::Rollback => "rollback",
            HookGate::Event => "event",
        }
    }

    fn parse(s: &str) -> Option<HookGate> {
        HookGate::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

impl fmt::Display for HookGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(super) fn webhooks(p: &mut Problems, hooks: &[CanaryWebhook]) -> Vec<WebhookRef> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        let path = format!("spec.analysis.webhooks[{i}]");
        let before = p.0.len();
        if h.name.trim().is_empty() {
            p.add(format!("{path}.name"), "must not be empty");
        } else if !seen.insert(h.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!("`{}` is listed twice", h.name),
            );
        }
        let type_ = h.type_.as_deref().unwrap_or("rollout");
        let gate = HookGate::parse(type_);
        if gate.is_none() {
            let known: Vec<_> = HookGate::ALL.iter().map(|g| g.as_str()).collect();
            p.add(
                format!("{path}.type"),
                format!(
                    "unknown webhook type `{type_}`; expected one of {}",
                    known.join(", ")
                ),
            );
        }
        if !(h.url.starts_with("http://") || h.url.starts_with("https://")) || h.url.len() < 10 {
            p.add(
                format!("{path}.url"),
                format!("must be an http:// or https:// URL, got `{}`", h.url),
            );
        }
        let timeout = p.duration(
            &format!("{path}.timeout"),
            h.timeout.as_deref(),
            DEFAULT_WEBHOOK_TIMEOUT,
        );
        if timeout == Duration::ZERO {
            p.add(format!("{path}.timeout"), "must be longer than 0s");
        }
        let retries = match h.retries {
            None => 0,
            Some(r) if (0..=10).contains(&r) => r as u32,
            Some(r) => {
                p.add(
                    format!("{path}.retries"),
                    format!("must be between 0 and 10, got {r}"),
                );
                0
            }
        };
        if p.0.len() == before
            && let Some(gate) = gate
        {
            out.push(WebhookRef {
                name: h.name.clone(),
                gate,
                url: h.url.clone(),
                timeout,
                retries,
                metadata: h.metadata.clone(),
                mute_alert: h.mute_alert.unwrap_or(false),
            });
        }
    }
    out
}
