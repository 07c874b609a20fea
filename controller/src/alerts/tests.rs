use super::*;
use crate::spec::{CanarySpec, validate};

fn canary(analysis: &str) -> Canary {
    let text = format!(
        "targetRef: {{kind: Deployment, name: podinfo}}\nservice: {{port: 9898}}\n\
         analysis: {{stepWeight: 10, maxWeight: 50, threshold: 5, {analysis}}}\n"
    );
    let spec: CanarySpec = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let mut c = Canary::new("podinfo", spec);
    c.metadata.namespace = Some("test".into());
    c
}

fn state(phase: Phase, revision: &str, message: &str) -> RolloutState {
    RolloutState {
        phase,
        revision: Some(revision.into()),
        message: message.into(),
        ..RolloutState::default()
    }
}

fn alerts(
    c: &Canary,
    before: &RolloutState,
    after: &RolloutState,
    obs: &Observation,
) -> Vec<Alert> {
    let spec = validate(&c.spec).unwrap_or_else(|e| panic!("{e}"));
    decided(c, &spec, before, after, obs)
}

fn severities(alerts: &[Alert]) -> Vec<(AlertSeverity, &str)> {
    alerts
        .iter()
        .map(|a| (a.severity, a.message.as_str()))
        .collect()
}

#[test]
fn initialisation_and_a_new_revision_alert_info_with_the_canarys_settings() {
    let c = canary("");
    let obs = Observation::default();
    let init = alerts(
        &c,
        &state(Phase::Initializing, "a", ""),
        &state(Phase::Initialized, "a", ""),
        &obs,
    );
    assert_eq!(
        severities(&init),
        [(
            AlertSeverity::Info,
            "New Deployment detected, initialization completed."
        )]
    );
    let fields: Vec<(&str, &str)> = init[0]
        .fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("Target", "Deployment/podinfo.test"),
            ("Failed checks threshold", "5"),
            ("Progress deadline", "600s"),
            ("Traffic routing", "Weight step: 10 max: 50"),
        ]
    );
    let started = alerts(
        &c,
        &state(Phase::Succeeded, "a", ""),
        &state(Phase::Progressing, "b", ""),
        &obs,
    );
    assert_eq!(
        severities(&started),
        [(
            AlertSeverity::Info,
            "New revision detected, progressing canary analysis."
        )]
    );
    assert_eq!(started[0].fields.len(), 4);
}

#[test]
fn a_step_and_a_failed_check_below_the_threshold_alert_nothing() {
    let c = canary("");
    let mut before = state(Phase::Progressing, "b", "");
    before.canary_weight = 10;
    let mut after = state(Phase::Progressing, "b", "Halt podinfo advancement: ...");
    after.canary_weight = 20;
    after.failed_checks = 1;
    assert_eq!(alerts(&c, &before, &after, &Observation::default()), []);
}

#[test]
fn a_promotion_alerts_info_and_a_rollback_error_or_warn_when_asked_for() {
    let c = canary("");
    let obs = Observation::default();
    let done = alerts(
        &c,
        &state(Phase::Finalising, "b", ""),
        &state(Phase::Succeeded, "b", ""),
        &obs,
    );
    assert_eq!(
        severities(&done),
        [(
            AlertSeverity::Info,
            "Canary analysis completed successfully, promotion finished."
        )]
    );
    let failed = state(
        Phase::Failed,
        "b",
        "Rolling back podinfo: failed checks threshold reached",
    );
    let rolled = alerts(&c, &state(Phase::Progressing, "b", ""), &failed, &obs);
    assert_eq!(
        severities(&rolled),
        [(
            AlertSeverity::Error,
            "Rolling back podinfo: failed checks threshold reached"
        )]
    );
    let aborted = Observation {
        command: Some(Command::Abort),
        ..Observation::default()
    };
    let asked = alerts(&c, &state(Phase::Progressing, "b", ""), &failed, &aborted);
    assert_eq!(asked[0].severity, AlertSeverity::Warn);
    // Failed stays Failed on the next ticks: one alert per rollback.
    assert_eq!(alerts(&c, &failed, &failed, &obs), []);
}

#[test]
fn a_confirm_gate_that_starts_holding_warns_once_unless_its_hook_mutes_alerts() {
    let hook = |mute: bool| {
        format!(
            "webhooks: [{{name: gate, type: confirm-promotion, url: 'http://gate/', muteAlert: {mute}}}]"
        )
    };
    let before = state(Phase::Progressing, "b", "");
    let held = state(
        Phase::WaitingPromotion,
        "b",
        "Analysis of podinfo passed; waiting for approval: confirm-promotion hook gate said no: 403",
    );
    let obs = Observation {
        hooks: [("gate".to_string(), HookOutcome::Failed("403".into()))].into(),
        ..Observation::default()
    };
    let loud = canary(&hook(false));
    assert_eq!(
        severities(&alerts(&loud, &before, &held, &obs)),
        [(
            AlertSeverity::Warn,
            "Canary promotion is waiting for approval."
        )]
    );
    assert_eq!(alerts(&loud, &held, &held, &obs), []);
    assert_eq!(alerts(&canary(&hook(true)), &before, &held, &obs), []);
}

#[test]
fn slack_teams_and_webhook_bodies_carry_flaggers_fields() {
    let alert = Alert {
        severity: AlertSeverity::Error,
        message: "Rolling back podinfo".into(),
        fields: vec![("Target".into(), "Deployment/podinfo.test".into())],
    };
    let m = Message {
        name: "podinfo",
        namespace: "test",
        phase: "Failed",
        checksum: "abc",
        timestamp: 1_700_000_000_000,
        channel: "general",
        username: "flagger",
    };
    assert_eq!(
        payload(ProviderType::Slack, &alert, &m),
        serde_json::json!({
            "channel": "general", "username": "flagger", "icon_url": "", "icon_emoji": ":rocket:",
            "attachments": [{
                "color": "danger", "author_name": "podinfo.test", "text": "Rolling back podinfo",
                "mrkdwn_in": ["text"],
                "fields": [{"title": "Target", "value": "Deployment/podinfo.test", "short": false}],
            }],
        })
    );
    assert_eq!(
        payload(ProviderType::MsTeams, &alert, &m),
        serde_json::json!({
            "@type": "MessageCard", "@context": "http://schema.org/extensions",
            "themeColor": "FF0000", "summary": "podinfo.test",
            "sections": [{
                "activityTitle": "Rolling back podinfo", "activitySubtitle": "podinfo.test",
                "facts": [{"name": "Target", "value": "Deployment/podinfo.test"}],
            }],
        })
    );
    let grey = |v: &str| format!("<font color=#848484><strong>{v}</strong></font>");
    assert_eq!(
        payload(ProviderType::GChat, &alert, &m),
        serde_json::json!({"cards": [{
            "header": {"title": "Fledge", "subtitle": "podinfo.test"},
            "sections": [
                {"widgets": [{"textParagraph": {"text": grey("Rolling back podinfo")}}]},
                {"widgets": [{"textParagraph": {
                    "text": format!("Target<br>{}", grey("Deployment/podinfo.test"))}}]},
            ],
        }]})
    );
    assert_eq!("gchat".parse(), Ok(ProviderType::GChat));
    assert_eq!(
        payload(ProviderType::Webhook, &alert, &m),
        serde_json::json!({
            "name": "podinfo", "namespace": "test", "phase": "Failed", "checksum": "abc",
            "metadata": {
                "Target": "Deployment/podinfo.test", "eventMessage": "Rolling back podinfo",
                "eventType": "Warning", "timestamp": "1700000000000", "severity": "error",
            },
        })
    );
}

#[test]
fn discord_is_sent_slacks_body_at_the_hooks_slack_path() {
    assert_eq!(
        ProviderType::Discord.url("https://discord.com/api/webhooks/1/x"),
        "https://discord.com/api/webhooks/1/x/slack"
    );
    assert_eq!(
        ProviderType::Discord.url("https://discord.com/api/webhooks/1/x/slack"),
        "https://discord.com/api/webhooks/1/x/slack"
    );
    assert_eq!(
        ProviderType::Slack.url("https://hooks/x"),
        "https://hooks/x"
    );
}

// Review r14c, finding 4: Flagger (scheduler.go, checkCanaryStatus) runs the confirm-rollout
// gate before it alerts "New revision detected, progressing canary analysis.": a held rollout
// alerts only the wait, and the analysis' start is alerted once the gate opens. The ticks below
// are the core's (rollout/tick.rs): the new revision enters `Waiting`, the gate is asked at the
// next tick, and the rollout progresses once it says yes.
#[test]
fn a_new_revision_held_by_confirm_rollout_alerts_the_wait_then_progressing_once_approved() {
    let c = canary("webhooks: [{name: gate, type: confirm-rollout, url: 'http://gate/'}]");
    let progressing = (
        AlertSeverity::Info,
        "New revision detected, progressing canary analysis.",
    );
    let idle = state(Phase::Succeeded, "a", "");
    let waiting = state(
        Phase::Waiting,
        "b",
        "waiting for approval: confirm-rollout hooks of podinfo",
    );
    let first = alerts(&c, &idle, &waiting, &Observation::default());
    assert!(
        !severities(&first).contains(&progressing),
        "the analysis is not progressing yet: {first:?}"
    );
    let said_no = Observation {
        hooks: [("gate".to_string(), HookOutcome::Failed("403".into()))].into(),
        ..Observation::default()
    };
    let held = state(
        Phase::Waiting,
        "b",
        "waiting for approval: confirm-rollout hook gate said no: 403",
    );
    assert_eq!(
        severities(&alerts(&c, &waiting, &held, &said_no)),
        [(AlertSeverity::Warn, "Canary is waiting for approval.")]
    );
    let said_yes = Observation {
        hooks: [("gate".to_string(), HookOutcome::Passed)].into(),
        ..Observation::default()
    };
    let going = state(Phase::Progressing, "b", "");
    assert_eq!(
        severities(&alerts(&c, &held, &going, &said_yes)),
        [progressing]
    );
}

// Review r14c, finding 4: Flagger restarts an analysis whose target changed with an Event
// ("New revision detected! Restarting analysis") and no alert.
#[test]
fn a_revision_changed_mid_analysis_restarts_it_without_an_alert_as_flaggers() {
    let c = canary("");
    let obs = Observation::default();
    let before = state(Phase::Progressing, "b", "");
    let after = state(Phase::Progressing, "c", "");
    assert_eq!(severities(&alerts(&c, &before, &after, &obs)), []);
}

// Review r14c, finding 6: Flagger's rocket.go colours Rocket.Chat's attachment `#0076D7`, or
// `#FF0000` for an error (not Slack's `good`/`danger`).
#[test]
fn rocket_chat_gets_flaggers_colours() {
    let m = Message {
        name: "podinfo",
        namespace: "test",
        phase: "Failed",
        checksum: "abc",
        timestamp: 1_700_000_000_000,
        channel: "general",
        username: "flagger",
    };
    let alert = |severity| Alert {
        severity,
        message: "m".into(),
        fields: Vec::new(),
    };
    let colour =
        |s| payload(ProviderType::Rocket, &alert(s), &m)["attachments"][0]["color"].clone();
    assert_eq!(colour(AlertSeverity::Error), "#FF0000");
    assert_eq!(colour(AlertSeverity::Info), "#0076D7");
}

// Review r14c, finding 6: Flagger's discord.go joins `slack` to the URL's path
// (`path.Join(webhook.Path, "slack")`), so a query (Discord's `thread_id`, `wait`) stays a query.
#[test]
fn a_discord_address_with_a_query_gets_slack_on_its_path_not_after_the_query() {
    assert_eq!(
        ProviderType::Discord.url("https://discord.com/api/webhooks/1/x?thread_id=9"),
        "https://discord.com/api/webhooks/1/x/slack?thread_id=9"
    );
}
