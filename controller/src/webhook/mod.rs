//! Webhooks, as Flagger calls them: a JSON `POST` of the Canary's name, namespace, phase,
//! checksum, the hook type and the hook's metadata; any 2xx answer is a pass.
//!
//! # Retries
//! A hook is retried (up to its `retries`, with exponential backoff) only where a second call
//! cannot do harm:
//! - a connection that could not be opened is retried for every hook type: nothing was sent;
//! - a timeout or a 5xx/429 answer is retried only for the hooks that ask a question
//!   (`confirm-rollout`, `confirm-traffic-increase`, `confirm-promotion`, `rollback`). The
//!   others (`pre-rollout`, `rollout`, `post-rollout`, `event`) run tests, start load
//!   generators or send notifications; the first call may have done its work before failing,
//!   and `rollout` hooks run again at the next interval anyway.
//!
//! # Event hooks
//! As Flagger's: `metadata` carries the event's message (`eventMessage`), its type (`eventType`,
//! `Normal` or `Warning`) and when it was sent (`timestamp`, Unix milliseconds as a string),
//! over the hook's own metadata of those names; the body has no `type`.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde::Serialize;

use crate::http_errors::{error_chain, excerpt};
use crate::rollout::HookOutcome;
use crate::spec::{HookGate, WebhookRef};

const FIRST_BACKOFF: StdDuration = StdDuration::from_millis(200);
const MAX_BACKOFF: StdDuration = StdDuration::from_secs(2);

/// What a hook is told about the rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct Payload {
    pub name: String,
    pub namespace: String,
    /// The Canary's phase, as in its status (`Progressing`, ...).
    pub phase: String,
    /// The revision under rollout (a hash of the canary's pod template).
    pub checksum: String,
    /// Sent as `type`.
    pub gate: HookGate,
    /// Merged over the hook's own metadata from the spec.
    pub metadata: BTreeMap<String, String>,
    /// For event hooks: the event.
    pub event: Option<HookEvent>,
}

/// An Event an `event` hook is told of.
#[derive(Clone, Debug, PartialEq)]
pub struct HookEvent {
    pub message: String,
    /// A Warning Event (else Normal).
    pub warning: bool,
}

/// The JSON body, in Flagger's field names.
#[derive(Serialize)]
struct Body<'a> {
    name: &'a str,
    namespace: &'a str,
    phase: &'a str,
    checksum: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    type_: Option<&'static str>,
    metadata: BTreeMap<String, String>,
}

/// Calls webhooks over one shared HTTP client.
#[derive(Clone, Debug)]
pub struct Webhooks {
    http: reqwest::Client,
}

impl Default for Webhooks {
    fn default() -> Self {
        Self::new()
    }
}

impl Webhooks {
    pub fn new() -> Self {
        Webhooks {
            http: reqwest::Client::new(),
        }
    }

    /// Calls `hook` with `payload`: `Passed` on 2xx, otherwise `Failed` with the hook's name
    /// and why (status and body excerpt, timeout, connection refused).
    pub async fn call(&self, hook: &WebhookRef, payload: &Payload) -> HookOutcome {
        let body = body(hook, payload);
        let timeout = StdDuration::from_millis(hook.timeout.millis().max(1));
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0u32;
        loop {
            let failure = match self.attempt(hook, &body, timeout).await {
                Ok(()) => return HookOutcome::Passed,
                Err(f) => f,
            };
            if attempt >= hook.retries || !failure.retryable(hook.gate) {
                let tries = if attempt > 0 {
                    format!(" (after {} attempts)", attempt + 1)
                } else {
                    String::new()
                };
                return HookOutcome::Failed(format!(
                    "{} hook {} at {}: {}{tries}",
                    hook.gate,
                    hook.name,
                    hook.url,
                    failure.describe(hook.timeout)
                ));
            }
            tracing::debug!(hook = %hook.name, attempt, "webhook failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        hook: &WebhookRef,
        body: &Body<'_>,
        timeout: StdDuration,
    ) -> Result<(), Failure> {
        let response = self
            .http
            .post(&hook.url)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| Failure::from_reqwest(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(Failure::Status {
            code: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_string(),
            body: excerpt(&text),
        })
    }
}

fn body<'a>(hook: &WebhookRef, payload: &'a Payload) -> Body<'a> {
    let mut metadata = hook.metadata.clone();
    metadata.extend(payload.metadata.clone());
    if let Some(event) = &payload.event {
        let type_ = if event.warning { "Warning" } else { "Normal" };
        metadata.insert("eventMessage".into(), event.message.clone());
        metadata.insert("eventType".into(), type_.into());
        metadata.insert("timestamp".into(), unix_millis().to_string());
    }
    Body {
        name: &payload.name,
        namespace: &payload.namespace,
        phase: &payload.phase,
        checksum: &payload.checksum,
        // Flagger's event payload has no type; Fledge tells the other hooks theirs.
        type_: (payload.gate != HookGate::Event).then(|| payload.gate.as_str()),
        metadata,
    }
}

/// Now, as Flagger stamps an event when it sends it (a shell's wall clock, as the cluster's).
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Why one call failed.
#[derive(Debug)]
enum Failure {
    /// The connection could not be opened: nothing reached the hook.
    Connect(String),
    /// No answer in time.
    Timeout,
    /// An answer other than 2xx.
    Status {
        code: u16,
        reason: String,
        body: String,
    },
    /// Anything else on the way (a reset connection, a bad URL).
    Other(String),
}

impl Failure {
    fn from_reqwest(e: &reqwest::Error) -> Failure {
        if e.is_timeout() {
            Failure::Timeout
        } else if e.is_connect() {
            Failure::Connect(error_chain(e))
        } else {
            Failure::Other(error_chain(e))
        }
    }

    fn retryable(&self, gate: HookGate) -> bool {
        let asks_a_question = matches!(
            gate,
            HookGate::ConfirmRollout
                | HookGate::ConfirmTrafficIncrease
                | HookGate::ConfirmPromotion
                | HookGate::Rollback
        );
        match self {
            Failure::Connect(_) => true,
            Failure::Timeout => asks_a_question,
            Failure::Status { code, .. } => asks_a_question && (*code >= 500 || *code == 429),
            Failure::Other(_) => false,
        }
    }

    fn describe(&self, timeout: crate::spec::Duration) -> String {
        match self {
            Failure::Connect(detail) => format!("cannot connect: {detail}"),
            Failure::Timeout => format!("timed out after {timeout}"),
            Failure::Status { code, reason, body } if body.is_empty() => {
                format!("answered HTTP {code} {reason}")
            }
            Failure::Status { code, reason, body } => {
                format!("answered HTTP {code} {reason}: {body}")
            }
            Failure::Other(detail) => detail.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Duration;

    fn hook(gate: HookGate) -> WebhookRef {
        WebhookRef {
            name: "load-test".into(),
            gate,
            url: "http://127.0.0.1:1/".into(),
            timeout: Duration::from_secs(1),
            retries: 0,
            metadata: BTreeMap::from([("cmd".to_string(), "hey -z 1m".to_string())]),
            mute_alert: false,
        }
    }

    #[test]
    fn an_event_hooks_body_is_flaggers_with_the_events_message_type_and_time_in_metadata() {
        let payload = Payload {
            name: "podinfo".into(),
            namespace: "test".into(),
            phase: "Progressing".into(),
            checksum: "abc123".into(),
            gate: HookGate::Event,
            metadata: BTreeMap::new(),
            event: Some(HookEvent {
                message: "Advance podinfo.test canary weight 10".into(),
                warning: true,
            }),
        };
        let mut hook = hook(HookGate::Event);
        hook.metadata.insert("eventType".into(), "mine".into());
        let mut json = serde_json::to_value(body(&hook, &payload)).unwrap_or_default();
        let stamp = json["metadata"]["timestamp"].take();
        let at: u128 = stamp.as_str().unwrap_or("").parse().unwrap_or(0);
        assert!(at > 1_700_000_000_000, "Unix milliseconds: {stamp}");
        assert_eq!(
            json,
            serde_json::json!({
                "name": "podinfo",
                "namespace": "test",
                "phase": "Progressing",
                "checksum": "abc123",
                "metadata": {
                    "cmd": "hey -z 1m",
                    "eventMessage": "Advance podinfo.test canary weight 10",
                    "eventType": "Warning",
                    "timestamp": null,
                },
            })
        );
    }

    #[test]
    fn only_questions_are_retried_after_a_timeout_or_a_server_error() {
        let server_error = Failure::Status {
            code: 503,
            reason: String::new(),
            body: String::new(),
        };
        for gate in HookGate::ALL {
            let question = matches!(
                gate,
                HookGate::ConfirmRollout
                    | HookGate::ConfirmTrafficIncrease
                    | HookGate::ConfirmPromotion
                    | HookGate::Rollback
            );
            assert_eq!(Failure::Timeout.retryable(gate), question, "{gate}");
            assert_eq!(server_error.retryable(gate), question, "{gate}");
            assert!(Failure::Connect(String::new()).retryable(gate), "{gate}");
        }
    }

    #[test]
    fn a_client_error_is_never_retried() {
        let not_found = Failure::Status {
            code: 404,
            reason: String::new(),
            body: String::new(),
        };
        assert!(!not_found.retryable(HookGate::ConfirmPromotion));
    }
}
