//! The body each alert provider expects, with the fields Flagger's notifiers send: Slack's
//! attachment (Discord's Slack-compatible endpoint and Rocket.Chat take the same), a Teams
//! MessageCard, a Google Chat card, and Fledge's `webhook`, shaped as an `event` hook's payload so that one receiver
//! can take both.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value, json};

use super::Alert;
use crate::spec::AlertSeverity;

/// The kinds of `AlertProvider` Fledge sends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderType {
    Slack,
    Discord,
    Rocket,
    MsTeams,
    /// Google Chat's incoming webhook: a card.
    GChat,
    Webhook,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "type `{0}` is not supported: Fledge sends to slack, msteams, gchat, discord, rocket and \
     webhook"
)]
pub struct UnknownProviderType(pub String);

impl FromStr for ProviderType {
    type Err = UnknownProviderType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "slack" => Ok(ProviderType::Slack),
            "discord" => Ok(ProviderType::Discord),
            "rocket" => Ok(ProviderType::Rocket),
            "msteams" => Ok(ProviderType::MsTeams),
            "gchat" => Ok(ProviderType::GChat),
            "webhook" => Ok(ProviderType::Webhook),
            other => Err(UnknownProviderType(other.to_string())),
        }
    }
}

impl fmt::Display for ProviderType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderType::Slack => "slack",
            ProviderType::Discord => "discord",
            ProviderType::Rocket => "rocket",
            ProviderType::MsTeams => "msteams",
            ProviderType::GChat => "gchat",
            ProviderType::Webhook => "webhook",
        })
    }
}

impl ProviderType {
    /// Where the body is posted: Discord takes Slack's body at the hook's `/slack` path, joined
    /// to the path as Flagger does (a query such as `?thread_id=` stays after it).
    pub fn url(self, address: &str) -> String {
        if self != ProviderType::Discord {
            return address.to_string();
        }
        // The path ends at the query or the fragment.
        let end = address.find(['?', '#']).unwrap_or(address.len());
        let (path, rest) = address.split_at(end);
        if path.ends_with("/slack") {
            address.to_string()
        } else {
            format!("{}/slack{rest}", path.trim_end_matches('/'))
        }
    }

    /// Whether the Secret's `token` goes along: Flagger gives it to Slack only (a bot token in
    /// a shared Secret must not reach a Teams or Discord URL); Fledge's own `webhook` takes it too.
    #[cfg(feature = "cluster")]
    pub(crate) fn takes_token(self) -> bool {
        matches!(self, ProviderType::Slack | ProviderType::Webhook)
    }
}

/// What an alert is about, beside the alert itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Message<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    /// The Canary's phase after the decision (`webhook` only).
    pub phase: &'a str,
    /// The revision under rollout (`webhook` only, as an `event` hook's `checksum`).
    pub checksum: &'a str,
    /// Unix milliseconds (`webhook` only, as an `event` hook's `timestamp`).
    pub timestamp: u64,
    pub channel: &'a str,
    pub username: &'a str,
}

/// Slack's named colours; Rocket.Chat gets Flagger's hex ones.
fn colour(kind: ProviderType, error: bool) -> &'static str {
    match (kind, error) {
        (ProviderType::Rocket, true) => "#FF0000",
        (ProviderType::Rocket, false) => "#0076D7",
        (_, true) => "danger",
        (_, false) => "good",
    }
}

/// The JSON body `kind` expects for `alert`.
pub fn payload(kind: ProviderType, alert: &Alert, m: &Message<'_>) -> Value {
    let workload = format!("{}.{}", m.name, m.namespace);
    let error = alert.severity == AlertSeverity::Error;
    match kind {
        ProviderType::Slack | ProviderType::Discord | ProviderType::Rocket => {
            let fields: Vec<Value> = alert
                .fields
                .iter()
                .map(|(title, value)| json!({"title": title, "value": value, "short": false}))
                .collect();
            json!({
                "channel": m.channel,
                "username": m.username,
                "icon_url": "",
                "icon_emoji": ":rocket:",
                "attachments": [{
                    "color": colour(kind, error),
                    "author_name": workload,
                    "text": alert.message,
                    "mrkdwn_in": ["text"],
                    "fields": fields,
                }],
            })
        }
        ProviderType::MsTeams => {
            let facts: Vec<Value> = alert
                .fields
                .iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect();
            json!({
                "@type": "MessageCard",
                "@context": "http://schema.org/extensions",
                "themeColor": if error { "FF0000" } else { "0076D7" },
                "summary": workload,
                "sections": [{
                    "activityTitle": alert.message,
                    "activitySubtitle": workload,
                    "facts": facts,
                }],
            })
        }
        ProviderType::GChat => {
            // A card: the workload as its subtitle, a section for the message and one a field.
            let text = |value: &str| format!("<font color=#848484><strong>{value}</strong></font>");
            let mut sections =
                vec![json!({"widgets": [{"textParagraph": {"text": text(&alert.message)}}]})];
            sections.extend(alert.fields.iter().map(|(name, value)| {
                json!({"widgets": [{"textParagraph": {"text": format!("{name}<br>{}", text(value))}}]})
            }));
            json!({
                "cards": [{
                    "header": {"title": "Fledge", "subtitle": workload},
                    "sections": sections,
                }],
            })
        }
        ProviderType::Webhook => {
            let mut metadata = Map::new();
            for (name, value) in &alert.fields {
                metadata.insert(name.clone(), Value::String(value.clone()));
            }
            let event_type = if alert.severity == AlertSeverity::Info {
                "Normal"
            } else {
                "Warning"
            };
            metadata.insert("eventMessage".into(), json!(alert.message));
            metadata.insert("eventType".into(), json!(event_type));
            metadata.insert("timestamp".into(), json!(m.timestamp.to_string()));
            metadata.insert("severity".into(), json!(alert.severity.as_str()));
            json!({
                "name": m.name,
                "namespace": m.namespace,
                "phase": m.phase,
                "checksum": m.checksum,
                "metadata": metadata,
            })
        }
    }
}
