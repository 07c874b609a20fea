//! Alerts on a rollout's decisions: a Canary's `analysis.alerts` and the `AlertProvider` they
//! name (Flagger's fields; Fledge adds the provider type `webhook`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::CrossNamespaceReference;

/// One alert of `analysis.alerts`: which provider is told, and from which severity on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAlert {
    pub name: String,
    /// `info` (every alert, the default), `warn` (warnings and errors) or `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// An `AlertProvider` in the Canary's namespace unless `namespace` is given (a Flagger
    /// Canary's names one of Flagger's).
    pub provider_ref: CrossNamespaceReference,
}

/// Where alerts go (Flagger's `AlertProvider`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "fledge.dev",
    version = "v1alpha1",
    kind = "AlertProvider",
    namespaced,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AlertProviderSpec {
    /// `slack`, `msteams`, `gchat`, `discord`, `rocket`, or `webhook` (Fledge only: a JSON `POST`
    /// shaped as an `event` hook's).
    #[serde(rename = "type")]
    pub type_: String,
    /// Slack, Discord and Rocket.Chat: the channel (default `general`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Slack, Discord and Rocket.Chat: the bot's name (default `flagger`, as Flagger's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The webhook URL; a `secretRef` is read in its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// An HTTP(S) proxy the alerts go through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// A Secret in the provider's namespace: its key `address` is the URL, and `token`, when
    /// present, is sent as a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretName>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretName {
    pub name: String,
}
