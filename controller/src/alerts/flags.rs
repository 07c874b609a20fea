//! The controller-wide alert flags, taken as Flagger's `cmd/flagger` takes them: the alerts of
//! a Canary that lists no `analysis.alerts` go to Microsoft Teams when `--msteams-url` (or
//! `MSTEAMS_URL`) is given, else to Slack; with `--event-webhook` every Event of a Canary that
//! has no `event` hook is also posted there. Each address may come from a flag or from its
//! environment variable (`SLACK_URL`, `SLACK_TOKEN`, `SLACK_PROXY_URL`, `MSTEAMS_URL`,
//! `MSTEAMS_PROXY_URL`, `EVENT_WEBHOOK_URL`), and, as in Flagger, the variable wins when set and
//! not empty (a Secret given as the environment overrides the flags). Addresses are checked at
//! start-up: an alert address that is not an http(s) URL is a configuration error, named by the
//! flag or variable it came from, never repeating the address (a webhook URL is a secret).

use super::{Destination, ProviderType, Settings};

/// The flags, flattened into the `run` command's.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AlertFlags {
    /// Flagger's -slack-url: the Slack incoming webhook that the alerts of Canaries listing no
    /// analysis.alerts go to, at every severity. SLACK_URL, when set, wins (as in Flagger).
    #[arg(long)]
    pub slack_url: Option<String>,
    /// Flagger's -slack-token: sent with them as a bearer token. SLACK_TOKEN wins.
    #[arg(long)]
    pub slack_token: Option<String>,
    /// Flagger's -slack-proxy-url. SLACK_PROXY_URL wins.
    #[arg(long)]
    pub slack_proxy_url: Option<String>,
    /// Flagger's -slack-user.
    #[arg(long, env = "FLEDGE_SLACK_USER", default_value = "flagger")]
    pub slack_user: String,
    /// Flagger's -slack-channel (none: the webhook's own).
    #[arg(long, env = "FLEDGE_SLACK_CHANNEL", default_value = "")]
    pub slack_channel: String,
    /// Flagger's -msteams-url: those alerts go to this Microsoft Teams webhook instead.
    /// MSTEAMS_URL wins.
    #[arg(long)]
    pub msteams_url: Option<String>,
    /// Flagger's -msteams-proxy-url. MSTEAMS_PROXY_URL wins.
    #[arg(long)]
    pub msteams_proxy_url: Option<String>,
    /// Flagger's -cluster-name: a Cluster field first in every alert.
    #[arg(long, env = "FLEDGE_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Flagger's -event-webhook: every Event of a Canary that has no event hook is also posted
    /// here, with an event hook's payload. EVENT_WEBHOOK_URL wins.
    #[arg(long)]
    pub event_webhook: Option<String>,
}

/// A flag's value that cannot be used, named by where it came from.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("{from}: not a URL ({reason})")]
    NotAUrl { from: &'static str, reason: String },
    #[error("{from}: scheme {scheme}, expected http or https")]
    Scheme { from: &'static str, scheme: String },
}

/// A value and where it came from: the flag or the environment variable.
struct Given {
    from: &'static str,
    value: String,
}

impl AlertFlags {
    /// The alert sender's settings, with `env` reading the environment (a parameter, so that
    /// tests need not change the process's).
    pub fn settings(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, FlagError> {
        let pick = |var: &'static str, flag: &'static str, value: &Option<String>| {
            let set = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
            match (set(env(var)), set(value.clone())) {
                (Some(value), _) => Some(Given { from: var, value }),
                (None, Some(value)) => Some(Given { from: flag, value }),
                (None, None) => None,
            }
        };
        let teams = pick("MSTEAMS_URL", "--msteams-url", &self.msteams_url);
        let global = match teams {
            Some(url) => Some((
                ProviderType::MsTeams,
                url,
                None,
                pick(
                    "MSTEAMS_PROXY_URL",
                    "--msteams-proxy-url",
                    &self.msteams_proxy_url,
                ),
            )),
            None => pick("SLACK_URL", "--slack-url", &self.slack_url).map(|url| {
                (
                    ProviderType::Slack,
                    url,
                    pick("SLACK_TOKEN", "--slack-token", &self.slack_token),
                    pick(
                        "SLACK_PROXY_URL",
                        "--slack-proxy-url",
                        &self.slack_proxy_url,
                    ),
                )
            }),
        };
        let global = match global {
            None => None,
            Some((kind, address, token, proxy)) => {
                check(&address)?;
                if let Some(proxy) = &proxy {
                    check(proxy)?;
                }
                Some(Destination::new(
                    kind,
                    &address.value,
                    token.map(|t| t.value),
                    proxy.map(|p| p.value),
                    &self.slack_channel,
                    &self.slack_user,
                ))
            }
        };
        let event_webhook = match pick("EVENT_WEBHOOK_URL", "--event-webhook", &self.event_webhook)
        {
            None => None,
            Some(url) => {
                check(&url)?;
                let d = Destination::new(ProviderType::Webhook, &url.value, None, None, "", "");
                Some(d)
            }
        };
        Ok(Settings {
            global,
            cluster_name: self.cluster_name(),
            event_webhook,
            ..Settings::default()
        })
    }

    fn cluster_name(&self) -> Option<String> {
        self.cluster_name.clone().filter(|n| !n.trim().is_empty())
    }
}

/// That `given` is an http(s) URL (the sender's client knows no other proxy either); the error
/// never repeats the value.
fn check(given: &Given) -> Result<(), FlagError> {
    let url = reqwest::Url::parse(given.value.trim()).map_err(|e| FlagError::NotAUrl {
        from: given.from,
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FlagError::Scheme {
            from: given.from,
            scheme: url.scheme().to_string(),
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(FlagError::NotAUrl {
            from: given.from,
            reason: "no host".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::BTreeMap;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        alerts: AlertFlags,
    }

    fn settings(flags: &[&str], env: &[(&str, &str)]) -> Result<Settings, FlagError> {
        let cli = Cli::try_parse_from(std::iter::once("test").chain(flags.iter().copied()))
            .expect("flags parse");
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cli.alerts.settings(&|k| env.get(k).cloned())
    }

    fn kind(s: &Settings) -> String {
        format!("{:?}", s.global)
    }

    #[test]
    fn alerts_go_to_teams_when_its_url_is_given_else_to_slack() {
        let none = settings(&[], &[]).unwrap();
        assert!(none.global.is_none() && none.cluster_name.is_none());
        let slack = settings(
            &[
                "--slack-url",
                "https://hooks.example/s",
                "--cluster-name",
                "eu",
            ],
            &[],
        )
        .unwrap();
        assert!(kind(&slack).contains("kind: Slack"), "{}", kind(&slack));
        assert_eq!(slack.cluster_name.as_deref(), Some("eu"));
        let both = ["--slack-url", "https://hooks.example/s"];
        let teams = settings(&both, &[("MSTEAMS_URL", "https://teams.example/t")]).unwrap();
        assert!(kind(&teams).contains("kind: MsTeams"), "{}", kind(&teams));
    }

    #[test]
    fn an_environment_variable_set_and_not_empty_wins_over_its_flag_as_in_flagger() {
        let flag = ["--slack-url", "https://flag.example/s"];
        let from_env = settings(&flag, &[("SLACK_URL", "https://env.example/s")]).unwrap();
        assert!(
            kind(&from_env).contains("env.example"),
            "{}",
            kind(&from_env)
        );
        let empty = settings(&flag, &[("SLACK_URL", "")]).unwrap();
        assert!(kind(&empty).contains("flag.example"), "{}", kind(&empty));
        let only_env = settings(&[], &[("SLACK_URL", "https://env.example/s")]).unwrap();
        assert!(only_env.global.is_some());
    }

    #[test]
    fn the_event_webhook_comes_from_its_flag_or_its_variable_and_must_be_an_http_url() {
        let none = settings(&[], &[]).unwrap();
        assert!(none.event_webhook.is_none());
        let flag = settings(&["--event-webhook", "http://events.example/e"], &[]).unwrap();
        assert!(format!("{:?}", flag.event_webhook).contains("kind: Webhook"));
        assert!(
            flag.global.is_none(),
            "an event webhook is no alert destination"
        );
        let env = [("EVENT_WEBHOOK_URL", "https://env.example/e")];
        let both = settings(&["--event-webhook", "http://events.example/e"], &env).unwrap();
        assert!(format!("{:?}", both.event_webhook).contains("env.example"));
        let e = settings(&[], &[("EVENT_WEBHOOK_URL", "events.example")]).unwrap_err();
        assert!(
            e.to_string().starts_with("EVENT_WEBHOOK_URL: not a URL"),
            "{e}"
        );
    }

    #[test]
    fn an_address_that_is_not_an_http_url_is_refused_naming_its_source_not_its_value() {
        let refused = |flags: &[&str], env: &[(&str, &str)]| {
            settings(flags, env).expect_err("refused").to_string()
        };
        let e = refused(&["--slack-url", "hooks/s3cret"], &[]);
        assert!(e.starts_with("--slack-url: not a URL"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let e = refused(&[], &[("MSTEAMS_URL", "ftp://teams.example/s3cret")]);
        assert_eq!(e, "MSTEAMS_URL: scheme ftp, expected http or https");
        let e = refused(
            &[
                "--slack-url",
                "https://hooks.example/s",
                "--slack-proxy-url",
                "file:///proxy",
            ],
            &[],
        );
        assert!(e.starts_with("--slack-proxy-url: scheme file,"), "{e}");
        let ok = settings(
            &[
                "--slack-url",
                "https://hooks.example/s",
                "--slack-proxy-url",
                "http://proxy:3128",
            ],
            &[],
        );
        assert!(ok.is_ok(), "{ok:?}");
    }
}
