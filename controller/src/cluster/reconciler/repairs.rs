//! Repairs: every tick, what a rollout relies on is put back as it should be (the primary, the
//! Services, the routes), and never towards more risk: nothing is repaired while the rollout is
//! suspended, the canary never gets more traffic than it has, and a Service the user owned
//! before the Canary keeps its owner and is given back as it was when the Canary goes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::events::EventType;
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use super::super::{Result, workloads};
use super::problems::Problem;
use super::tick::Tick;
use crate::rollout::{Phase, RolloutState};
use crate::router::Routes;
use crate::routes::service_names;
use crate::spec::{Canary, RolloutSpec};

/// Annotation on a user's apex Service: its selector and ports before the Canary took it over,
/// given back when the Canary goes (the key routing objects use too).
pub(crate) use crate::router::ORIGINAL_SPEC;

impl Tick<'_> {
    /// The Services the Canary wants: the apex, `-primary` and `-canary`, in that order.
    /// `primary` is the primary as it is, whose selector they select.
    pub(super) fn desired_services(
        &self,
        target: &Deployment,
        primary: Option<&Deployment>,
    ) -> Vec<Service> {
        // The selector was checked before anything is written.
        let Ok(selectors) = workloads::selectors(target, primary) else {
            return Vec::new();
        };
        let discovered = workloads::discovered_ports(self.canary, target);
        workloads::services(self.canary, &selectors, &discovered)
    }

    /// The pod template last given to the primary, as recorded in the status.
    pub(super) fn primary_template(&self) -> Option<&PodTemplateSpec> {
        self.canary.status.as_ref()?.primary_template.as_ref()
    }

    /// The primary's size to record: as it is now, else as last recorded.
    pub(super) fn primary_replicas(&self, primary: Option<&Deployment>) -> Option<i32> {
        primary
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.replicas)
            .or_else(|| self.canary.status.as_ref()?.primary_replicas)
    }

    /// The primary, recreated if it was deleted, at the size it last had: while onboarding from
    /// the target; after that from the pod template last promoted, or from the target when it still is the promoted
    /// revision (a status written before that template was recorded). Never from a revision
    /// under analysis: without the template, the rollout holds ([`Problem::PrimaryLost`]).
    /// Returns it and, when it had to be recreated after initialisation, what was done.
    pub(super) async fn keep_primary(
        &self,
        state: &RolloutState,
        target: &Deployment,
        primary: Option<Deployment>,
    ) -> Result<std::result::Result<(Option<Deployment>, Option<String>), Problem>> {
        if primary.is_some() {
            return Ok(Ok((primary, None)));
        }
        let name = workloads::primary_name(&self.canary.spec.target_ref.name);
        let revision = self.target_revision(target).await?;
        let promoted = state.promoted_revision.as_deref().unwrap_or("none");
        let onboarding = state.phase == Phase::Initializing;
        // The template recorded for the primary, onboarding's included (a kept primary's, or
        // the target's before it changed): never the target's unanalysed revision.
        let (source, from) = match self.primary_template() {
            Some(template) => {
                let mut source = target.clone();
                source.spec.get_or_insert_default().template = template.clone();
                let which = if onboarding {
                    "pod template recorded at onboarding"
                } else {
                    "last promoted pod template"
                };
                let from = format!("the {which} (revision {})", workloads::revision(&source));
                (source, from)
            }
            None if onboarding || revision == promoted => {
                let from = format!(
                    "{} (the promoted revision {revision})",
                    self.canary.spec.target_ref.name
                );
                (target.clone(), from)
            }
            _ => {
                return Ok(Err(Problem::PrimaryLost {
                    primary: name,
                    target: self.canary.spec.target_ref.name.clone(),
                    promoted: promoted.to_string(),
                }));
            }
        };
        // The size it last had: it serves all traffic. Before it was ever seen (or in a
        // status written before that was recorded), the canary's size, as the target's.
        let replicas = match self.primary_replicas(None) {
            Some(replicas) => replicas,
            None => self.canary_replicas(Some(target)).await?,
        };
        // The copies of its configs are those of the last promotion: they are not rewritten, and
        // the checksum on its template is of what it reads, theirs, so that promoting a config
        // changed since changes the checksum and restarts its pods.
        let pod_spec = source.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let tracked = self.configs.tracked(pod_spec).await?;
        let tracked = self.configs.as_copied(tracked).await?;
        let built =
            workloads::primary_deployment(self.canary, &source, None, Some(replicas), &tracked);
        let Ok(dep) = built else {
            return Ok(Ok((None, None)));
        };
        self.workloads.apply_deployment(&dep).await?;
        if onboarding {
            return Ok(Ok((Some(dep), None)));
        }
        let message = format!("Deployment {name} was deleted; recreated from {from}");
        Ok(Ok((Some(dep), Some(message))))
    }

    /// The Services, recreated if deleted and with their selector and ports put back if edited;
    /// the apex only with `apex` (once the primary is ready: until then it keeps selecting the
    /// original pods). Returns what was put back.
    pub(super) async fn keep_services(
        &self,
        target: &Deployment,
        primary: Option<&Deployment>,
        apex: bool,
    ) -> Result<Vec<String>> {
        let mut put_back = Vec::new();
        for (i, desired) in self
            .desired_services(target, primary)
            .into_iter()
            .enumerate()
        {
            if i > 0 || apex {
                put_back.extend(self.keep_service(&desired, i == 0).await?);
            }
        }
        Ok(put_back)
    }

    /// Onboarding, once the primary is ready: the apex Service selects it (created, or taken
    /// over from the user) and the routing objects exist, all traffic on the primary.
    pub(super) async fn route_to_primary(
        &self,
        target: &Deployment,
        primary: Option<&Deployment>,
    ) -> Result<()> {
        if let Some(apex) = self.desired_services(target, primary).first() {
            // Its first creation or take-over: nothing to report.
            self.keep_service(apex, true).await?;
        }
        self.reconcile_routing().await
    }

    /// Creates or updates the routing objects (picking up edits of the Canary's service and
    /// match rules), keeping their weights.
    pub(super) async fn reconcile_routing(&self) -> Result<()> {
        self.ctx
            .routing
            .reconcile(self.provider()?, self.canary)
            .await
            .map_err(|m| self.route_error(m))
    }

    /// One Service as `desired`, writing only a difference. A user's apex Service gets no owner
    /// reference; its selector and ports are recorded in [`ORIGINAL_SPEC`] when first taken
    /// over. Returns what was put back.
    async fn keep_service(&self, desired: &Service, is_apex: bool) -> Result<Option<String>> {
        let name = desired.metadata.name.clone().unwrap_or_default();
        let Some(current) = self.workloads.service(&name).await? else {
            self.workloads.apply_service(desired).await?;
            return Ok(Some(format!("Service {name} was deleted; recreated")));
        };
        // `clusterIP` is immutable once set: `headless` takes effect when a Service is created
        // (as with Flagger), and an apply never asks to change it.
        let mut desired = desired.clone();
        if let Some(spec) = desired.spec.as_mut()
            && spec.cluster_ip.is_some()
            && spec.cluster_ip != current.spec.as_ref().and_then(|s| s.cluster_ip.clone())
        {
            spec.cluster_ip = None;
        }
        let desired = &desired;
        let fields = drift(&current, desired);
        if is_apex && !controlled_by(&current, self.canary) {
            let recorded = annotation(&current, ORIGINAL_SPEC);
            if recorded.is_some() && fields.is_empty() {
                return Ok(None);
            }
            let taken = recorded.is_some();
            let original = recorded.unwrap_or_else(|| original_spec(&current));
            self.workloads
                .apply_service(&taken_over(desired, original))
                .await?;
            return Ok(taken.then(|| format!("Service {name}: {}", fields.join("; "))));
        }
        if fields.is_empty() {
            return Ok(None);
        }
        self.workloads.apply_service(desired).await?;
        Ok(Some(format!("Service {name}: {}", fields.join("; "))))
    }

    /// The Canary goes: a user's apex Service gets its own selector and ports back; with
    /// `revert`, the apex Fledge created is left to the user, selecting the target's pods.
    pub(super) async fn give_back_apex(
        &self,
        revert: bool,
        target: Option<&Deployment>,
    ) -> Result<()> {
        let name = service_names(self.canary).apex;
        let Some(current) = self.workloads.service(&name).await? else {
            return Ok(());
        };
        let mut body = json!({});
        let restored = match annotation(&current, ORIGINAL_SPEC) {
            Some(original) => match serde_json::from_str::<Value>(&original) {
                Ok(original) => Some(original),
                Err(e) => {
                    warn!(service = %name, %e, "{ORIGINAL_SPEC} is not JSON; selector left as is");
                    None
                }
            },
            None if controlled_by(&current, self.canary) && revert => {
                body["metadata"]["ownerReferences"] = Value::Null;
                let selector = target.and_then(|t| workloads::selector_labels(t).ok());
                Some(json!({ "selector": selector }))
            }
            None => return Ok(()),
        };
        if let Some(original) = restored {
            // A merge patch merges maps: keys that are not in the original are removed.
            let mut selector = Map::new();
            for key in selector_of(&current).into_keys() {
                selector.insert(key, Value::Null);
            }
            if let Some(Value::Object(o)) = original.get("selector") {
                selector.extend(o.clone());
            }
            body["spec"]["selector"] = Value::Object(selector);
            if let Some(ports) = original.get("ports").filter(|p| p.is_array()) {
                body["spec"]["ports"] = ports.clone();
            }
        }
        body["metadata"]["annotations"] = json!({ ORIGINAL_SPEC: null });
        self.workloads.merge_service(&name, &body).await
    }

    /// Puts routes edited by hand (or left by an interrupted reconcile) back, never towards more
    /// risk: the canary gets at most what it has now and what the state records (an interrupted
    /// rollback leaves the routes on the primary and the state still on the canary). Nothing is
    /// repaired while the rollout is suspended.
    pub(super) async fn restore_drifted_routes(
        &self,
        state: &RolloutState,
        spec: &RolloutSpec,
    ) -> Result<()> {
        if spec.suspend || matches!(state.phase, Phase::Terminating | Phase::Terminated) {
            return Ok(());
        }
        let recorded = Routes {
            primary: state.primary_weight(),
            canary: state.canary_weight,
            mirror: state.mirror,
            matched: state.matched,
        };
        let found = self
            .ctx
            .routing
            .get_routes(self.provider()?, self.canary)
            .await;
        let (found, want) = match found {
            Ok(found) if found == recorded => return Ok(()),
            Ok(found) if no_riskier(found, recorded) == found => {
                info!(%found, %recorded, "routes give the canary less than recorded; left as found");
                return Ok(());
            }
            Ok(found) => (found.to_string(), no_riskier(found, recorded)),
            Err(e) => (format!("unreadable ({e})"), recorded),
        };
        let message = format!(
            "routes of {} differ from the recorded state (found {found}: edited by hand, or left \
             by an interrupted reconcile); restored to {want}",
            service_names(self.canary).apex
        );
        self.publish(EventType::Warning, "RoutesRestored", &message)
            .await;
        self.set_routes(want).await
    }
}

fn annotation(svc: &Service, key: &str) -> Option<String> {
    svc.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Whether `canary` is the controller of `svc` (it created it).
fn controlled_by(svc: &Service, canary: &Canary) -> bool {
    let uid = canary.metadata.uid.as_deref();
    svc.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

fn selector_of(svc: &Service) -> BTreeMap<String, String> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default()
}

/// The ports as they route: defaults filled in, what the API server assigns left out.
fn ports_of(svc: &Service) -> Vec<ServicePort> {
    let mut ports: Vec<ServicePort> = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| ServicePort {
            app_protocol: p.app_protocol.clone(),
            name: p.name.clone(),
            port: p.port,
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            target_port: Some(p.target_port.clone().unwrap_or(IntOrString::Int(p.port))),
            ..ServicePort::default()
        })
        .collect();
    ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
    ports
}

fn port_key(p: &ServicePort) -> (i32, Option<&str>) {
    (p.port, p.protocol.as_deref())
}

fn show_selector(selector: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(","))
}

fn show_ports(ports: &[ServicePort]) -> String {
    let shown: Vec<String> = ports
        .iter()
        .map(|p| {
            let target = match &p.target_port {
                Some(IntOrString::Int(t)) => t.to_string(),
                Some(IntOrString::String(t)) => t.clone(),
                None => p.port.to_string(),
            };
            format!("{} {}->{target}", p.name.as_deref().unwrap_or(""), p.port)
        })
        .collect();
    format!("[{}]", shown.join(", "))
}

/// What of `current` differs from `desired`, by field, with the values found and put back.
fn drift(current: &Service, desired: &Service) -> Vec<String> {
    let mut fields = Vec::new();
    let (found, want) = (selector_of(current), selector_of(desired));
    if found != want {
        fields.push(format!(
            "spec.selector was {}, put back to {}",
            show_selector(&found),
            show_selector(&want)
        ));
    }
    // `spec.ports` is a list-map keyed by port and protocol: an apply keeps the entries other
    // managers own, so only the entries Fledge applies are compared.
    let want = ports_of(desired);
    let found: Vec<ServicePort> = ports_of(current)
        .into_iter()
        .filter(|p| want.iter().any(|w| port_key(w) == port_key(p)))
        .collect();
    if found != want {
        fields.push(format!(
            "spec.ports was {}, put back to {}",
            show_ports(&found),
            show_ports(&want)
        ));
    }
    fields
}

/// The selector and ports of a user's Service before it is taken over, as recorded.
fn original_spec(svc: &Service) -> String {
    let spec = svc.spec.clone().unwrap_or_default();
    json!({ "selector": spec.selector, "ports": spec.ports }).to_string()
}

/// The apply of a user's apex Service: only what routes (selector and ports) and the record of
/// the original; no owner reference, labels or type of ours.
fn taken_over(desired: &Service, original: String) -> Service {
    let spec = desired.spec.clone().unwrap_or_default();
    Service {
        metadata: ObjectMeta {
            name: desired.metadata.name.clone(),
            namespace: desired.metadata.namespace.clone(),
            annotations: Some(BTreeMap::from([(ORIGINAL_SPEC.to_string(), original)])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: spec.selector,
            ports: spec.ports,
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The split that sends the canary no more than either `a` or `b` does: the smaller weight,
/// the smaller mirror (none unless both mirror), A/B matches only if both route them.
fn no_riskier(a: Routes, b: Routes) -> Routes {
    let canary = a.canary.min(b.canary);
    Routes {
        primary: 100 - canary,
        canary,
        mirror: a.mirror.zip(b.mirror).map(|(x, y)| x.min(y)),
        matched: a.matched && b.matched,
    }
}
