//! Delivering alerts off the reconcile path: a reconcile only queues them ([`Alerts::send`]
//! never waits); one task reads each alert's provider (and its Secret), posts the body, and
//! retries a failure a few times with a doubling backoff. A full queue drops the alert, and an
//! alert that still fails is dropped, each logged and counted in `fledge_alerts_total`
//! (`outcome` `dropped`, `failed`; `sent` for a delivery). An alert that cannot be sent because
//! of the user's own objects (a missing AlertProvider or Secret, an unknown type, an address
//! that is not a URL) is also a Warning Event on the Canary, for `kubectl describe` to show.
//! Every attempt has a timeout, so a receiver that never answers delays only the alerts queued
//! behind it.
//!
//! The same queue carries Flagger's `-event-webhook` ([`Alerts::event`]): every Event of a
//! Canary that has no `event` hook of its own is also posted there, with an `event` hook's
//! payload, as Flagger posts it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::Alert;
use super::payload::{Message, ProviderType, payload};
use crate::cluster::flagger;
use crate::cluster::telemetry::Metrics;
use crate::rollout::{Millis, RolloutState};
use crate::spec::{AlertProvider, AlertProviderSpec, AlertSeverity, Canary, CanaryAlert};

/// How alerts are queued and delivered.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Alerts waiting to be sent; more are dropped.
    pub capacity: usize,
    /// Attempts per delivery, the first included.
    pub attempts: u32,
    /// The wait before the second attempt, doubled before each further one.
    pub first_backoff: Duration,
    /// The longest an attempt may take (Flagger's notifiers wait 5 s).
    pub timeout: Duration,
    /// Where the alerts of a Canary that lists none go (Flagger's controller-wide
    /// `-slack-url`, `-msteams-url`); none: nowhere.
    pub global: Option<Destination>,
    /// Flagger's `-cluster-name`: a `Cluster` field first in every alert.
    pub cluster_name: Option<String>,
    /// Flagger's `-event-webhook`: where the Events of Canaries with no `event` hook go.
    pub event_webhook: Option<Destination>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            capacity: 256,
            attempts: 3,
            first_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            global: None,
            cluster_name: None,
            event_webhook: None,
        }
    }
}

/// The queue of alerts and the task that delivers them; the task ends when the last clone
/// of this handle is dropped.
#[derive(Clone)]
pub struct Alerts {
    tx: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    global: bool,
    cluster_name: Option<String>,
    event_webhook: bool,
}

#[derive(Debug)]
struct Job {
    /// The Canary, for Events.
    about: ObjectReference,
    flagger: bool,
    namespace: String,
    name: String,
    phase: String,
    checksum: String,
    timestamp: Millis,
    /// The Canary's alerts; none: the controller-wide destination.
    to: Vec<CanaryAlert>,
    /// An Event for the event webhook, not an alert.
    event: bool,
    alert: Alert,
}

/// Where one alert goes: read from its provider, or the controller-wide one.
#[derive(Clone, Debug)]
pub struct Destination {
    kind: ProviderType,
    url: String,
    token: Option<String>,
    proxy: Option<String>,
    channel: String,
    username: String,
}

impl Destination {
    /// `kind` at `address`, as a provider of that type with these fields would be read.
    pub fn new(
        kind: ProviderType,
        address: &str,
        token: Option<String>,
        proxy: Option<String>,
        channel: &str,
        username: &str,
    ) -> Self {
        Destination {
            kind,
            url: kind.url(address),
            token: token.filter(|t| !t.is_empty() && kind.takes_token()),
            proxy: proxy.filter(|p| !p.is_empty()),
            channel: channel.to_string(),
            username: username.to_string(),
        }
    }
}

impl Alerts {
    /// Starts the delivery task (on the current Tokio runtime) with the default settings.
    pub fn start(client: Client, metrics: Arc<Metrics>) -> Alerts {
        Alerts::with_settings(client, metrics, Settings::default())
    }

    pub fn with_settings(client: Client, metrics: Arc<Metrics>, settings: Settings) -> Alerts {
        let (tx, rx) = mpsc::channel(settings.capacity.max(1));
        let global = settings.global.is_some();
        let event_webhook = settings.event_webhook.is_some();
        let cluster_name = settings.cluster_name.clone().filter(|n| !n.is_empty());
        tokio::spawn(deliver_all(rx, client, metrics.clone(), settings));
        Alerts {
            tx,
            metrics,
            global,
            cluster_name,
            event_webhook,
        }
    }

    /// Queues `alerts` about `canary`, now in `state`, for its `analysis.alerts` (none: for the
    /// controller-wide destination, if any); never waits.
    pub fn send(&self, canary: &Canary, state: &RolloutState, now: Millis, alerts: Vec<Alert>) {
        let to = &canary.spec.analysis.alerts;
        if to.is_empty() && !self.global {
            return;
        }
        let phase = state.phase.to_string();
        let revision = state.revision.as_deref().unwrap_or_default();
        for mut alert in alerts {
            if let Some(cluster) = &self.cluster_name {
                alert.fields.insert(0, ("Cluster".into(), cluster.clone()));
            }
            self.queue(job(
                canary,
                (&phase, revision, now),
                to.clone(),
                false,
                alert,
            ));
        }
    }

    /// Queues an Event of `canary`, at `phase` and `revision`, for the event webhook, unless
    /// there is none or the Canary has `event` hooks of its own (which Flagger calls instead);
    /// never waits.
    pub fn event(
        &self,
        canary: &Canary,
        phase: &str,
        revision: &str,
        now: Millis,
        warning: bool,
        message: &str,
    ) {
        let hooks = &canary.spec.analysis.webhooks;
        let own_hooks = hooks.iter().any(|h| h.type_.as_deref() == Some("event"));
        if !self.event_webhook || own_hooks {
            return;
        }
        let alert = Alert {
            severity: if warning {
                AlertSeverity::Warn
            } else {
                AlertSeverity::Info
            },
            message: message.to_string(),
            fields: Vec::new(),
        };
        self.queue(job(canary, (phase, revision, now), Vec::new(), true, alert));
    }

    fn queue(&self, job: Job) {
        if let Err(e) = self.tx.try_send(job) {
            let job = match e {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                    job
                }
            };
            warn!(
                namespace = %job.namespace, canary = %job.name, alert = %job.alert.message,
                "alert dropped: the alert queue is full"
            );
            self.metrics.alert("dropped");
        }
    }
}

/// A job about `canary` at (its phase, its revision, now).
fn job(
    canary: &Canary,
    (phase, revision, now): (&str, &str, Millis),
    to: Vec<CanaryAlert>,
    event: bool,
    alert: Alert,
) -> Job {
    Job {
        about: flagger::object_ref(canary),
        flagger: flagger::is_flagger(canary),
        namespace: canary.namespace().unwrap_or_default(),
        name: canary.name_any(),
        phase: phase.to_string(),
        checksum: revision.to_string(),
        timestamp: now,
        to,
        event,
        alert,
    }
}

async fn deliver_all(
    mut rx: mpsc::Receiver<Job>,
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
) {
    let mut http = HttpClients::default();
    while let Some(job) = rx.recv().await {
        if job.event {
            if let Some(d) = &settings.event_webhook {
                let outcome = deliver(&mut http, d, &job, &settings).await;
                record(&metrics, &job, "event-webhook", outcome);
            }
            continue;
        }
        if job.to.is_empty()
            && let Some(d) = &settings.global
        {
            // Flagger's controller-wide notifier: every severity.
            let outcome = deliver(&mut http, d, &job, &settings).await;
            record(&metrics, &job, "controller-wide", outcome);
        }
        for to in &job.to {
            // Validation refused any other severity; an unreadable one sends everything.
            let least = AlertSeverity::of(to).unwrap_or(AlertSeverity::Info);
            if !least.admits(job.alert.severity) {
                continue;
            }
            let outcome = match destination(&client, &job, to).await {
                Ok(d) => deliver(&mut http, &d, &job, &settings).await,
                Err(why) => {
                    misconfigured(&client, &job, to, &why).await;
                    Err(why)
                }
            };
            record(&metrics, &job, &to.name, outcome);
        }
    }
}

/// Counts a delivery, and logs one that failed.
fn record(metrics: &Metrics, job: &Job, alert: &str, outcome: Result<(), String>) {
    match outcome {
        Ok(()) => metrics.alert("sent"),
        Err(why) => {
            warn!(
                namespace = %job.namespace, canary = %job.name, %alert, %why, "alert not sent"
            );
            metrics.alert("failed");
        }
    }
}

/// Says on the Canary that alert `to` cannot be sent, and `why`; a failure to say it is logged.
async fn misconfigured(client: &Client, job: &Job, to: &CanaryAlert, why: &str) {
    let event = Event {
        type_: EventType::Warning,
        reason: "AlertNotSent".into(),
        note: Some(
            crate::cluster::reconciler::note_of(&format!("alert `{}` not sent: {why}", to.name))
                .to_string(),
        ),
        action: "Alert".into(),
        secondary: None,
    };
    let recorder = Recorder::new(client.clone(), crate::cluster::reconciler::reporter());
    if let Err(e) = recorder.publish(&event, &job.about).await {
        warn!(namespace = %job.namespace, canary = %job.name, error = %e, "event not published");
    }
}

/// Reads the provider `to` names (Flagger's own for Flagger's Canaries), and its Secret.
async fn destination(client: &Client, job: &Job, to: &CanaryAlert) -> Result<Destination, String> {
    let namespace = to
        .provider_ref
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&job.namespace);
    let name = &to.provider_ref.name;
    let resource = if job.flagger {
        ApiResource {
            group: flagger::GROUP.into(),
            version: flagger::VERSION.into(),
            api_version: flagger::API_VERSION.into(),
            kind: "AlertProvider".into(),
            plural: "alertproviders".into(),
        }
    } else {
        ApiResource::erase::<AlertProvider>(&())
    };
    let what = format!("{} {namespace}/{name}", resource.api_version);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let object = api
        .get(name)
        .await
        .map_err(|e| format!("AlertProvider {what}: {e}"))?;
    let spec: AlertProviderSpec = object
        .data
        .get("spec")
        .cloned()
        .ok_or_else(|| "no spec".to_string())
        .and_then(|s| serde_json::from_value(s).map_err(|e| e.to_string()))
        .map_err(|e| format!("AlertProvider {what}: {e}"))?;
    let kind: ProviderType = spec
        .type_
        .parse()
        .map_err(|e| format!("AlertProvider {what}: {e}"))?;
    let (mut url, mut token) = (spec.address.clone().unwrap_or_default(), None);
    if let Some(secret) = &spec.secret_ref {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let read = secrets
            .get(&secret.name)
            .await
            .map_err(|e| format!("AlertProvider {what}: Secret {}: {e}", secret.name))?;
        let key = |k: &str| {
            read.data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
        };
        url = key("address").ok_or_else(|| {
            format!(
                "AlertProvider {what}: Secret {} has no key `address`",
                secret.name
            )
        })?;
        token = key("token").filter(|t| !t.is_empty() && kind.takes_token());
    }
    if url.is_empty() {
        return Err(format!(
            "AlertProvider {what}: no address (spec.address or a secretRef's `address`)"
        ));
    }
    // A typo is not worth three attempts as if the network had failed.
    if !matches!(reqwest::Url::parse(&url), Ok(u) if matches!(u.scheme(), "http" | "https")) {
        return Err(format!(
            "AlertProvider {what}: address `{url}` is not an http(s) URL"
        ));
    }
    let channel = spec.channel.filter(|c| !c.is_empty());
    let username = spec.username.filter(|u| !u.is_empty());
    Ok(Destination::new(
        kind,
        &url,
        token,
        spec.proxy,
        channel.as_deref().unwrap_or("general"),
        username.as_deref().unwrap_or("flagger"),
    ))
}

/// One HTTP client per proxy.
#[derive(Default)]
struct HttpClients(BTreeMap<Option<String>, reqwest::Client>);

impl HttpClients {
    fn get(&mut self, proxy: Option<&str>) -> Result<reqwest::Client, String> {
        let key = proxy.map(String::from);
        if let Some(c) = self.0.get(&key) {
            return Ok(c.clone());
        }
        let mut builder = reqwest::Client::builder();
        if let Some(p) = proxy {
            let proxy = reqwest::Proxy::all(p).map_err(|e| format!("proxy {p}: {e}"))?;
            builder = builder.proxy(proxy);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        self.0.insert(key, client.clone());
        Ok(client)
    }
}

async fn deliver(
    http: &mut HttpClients,
    d: &Destination,
    job: &Job,
    settings: &Settings,
) -> Result<(), String> {
    let client = http.get(d.proxy.as_deref())?;
    let message = Message {
        name: &job.name,
        namespace: &job.namespace,
        phase: &job.phase,
        checksum: &job.checksum,
        timestamp: job.timestamp,
        channel: &d.channel,
        username: &d.username,
    };
    let mut body = payload(d.kind, &job.alert, &message);
    if job.event {
        // Flagger's event payload: an `event` hook's, with no severity.
        if let Some(metadata) = body["metadata"].as_object_mut() {
            metadata.remove("severity");
        }
    }
    let mut backoff = settings.first_backoff;
    let mut attempt = 1;
    loop {
        let mut request = client.post(&d.url).timeout(settings.timeout).json(&body);
        if let Some(token) = &d.token {
            request = request.bearer_auth(token);
        }
        let (why, retryable) = match request.send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                let code = r.status();
                // A client error other than throttling will not change on a retry.
                let retryable = code.is_server_error() || code.as_u16() == 429;
                (format!("{} answered HTTP {code}", d.kind), retryable)
            }
            Err(e) if e.is_timeout() => (
                format!("{} did not answer within {:?}", d.kind, settings.timeout),
                true,
            ),
            Err(e) => (
                format!("{}: {}", d.kind, crate::http_errors::error_chain(&e)),
                true,
            ),
        };
        if !retryable || attempt >= settings.attempts {
            return Err(format!(
                "{why} (attempt {attempt} of {})",
                settings.attempts
            ));
        }
        debug!(%why, attempt, "alert failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2);
        attempt += 1;
    }
}
