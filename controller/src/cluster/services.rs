//! The Services of a rollout, as Flagger makes them: `<svc>` (the apex, to the primary),
//! `<svc>-primary` and `<svc>-canary`, built by pure functions from the Canary and the
//! [`Selectors`] that tell the primary's pods from the target's, and written by
//! [`super::workloads::Workloads`].

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as K8sIntOrString;

use super::selectors::Selectors;
use crate::routes::service_names;
use crate::spec::{Canary, IntOrString, ObjectMetadata};

/// Containers that are a mesh's proxy, not the app: their ports are never discovered.
const SIDECARS: &[&str] = &["istio-proxy", "envoy"];

/// `service.portDiscovery`, as Flagger does it: every port of the target's containers (proxies
/// left out) except the Service's own, named by its name or `tcp-<container>-<index>`.
pub fn discovered_ports(canary: &Canary, target: &Deployment) -> BTreeMap<String, i32> {
    let svc = &canary.spec.service;
    if !svc.port_discovery {
        return BTreeMap::new();
    }
    let containers = target
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    let mut ports = BTreeMap::new();
    for c in containers
        .iter()
        .filter(|c| !SIDECARS.contains(&c.name.as_str()))
    {
        for (i, p) in c.ports.iter().flatten().enumerate() {
            let own = match &svc.target_port {
                None => p.container_port == svc.port,
                Some(IntOrString::Int(t)) => p.container_port == *t,
                Some(IntOrString::String(t)) => p.name.as_deref() == Some(t.as_str()),
            };
            if !own {
                let name = p
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("tcp-{}-{i}", c.name));
                ports.insert(name, p.container_port);
            }
        }
    }
    ports
}

/// The Services `<svc>` (apex, to the primary), `<svc>-primary` and `<svc>-canary`, with the
/// Canary's port first and then the `discovered` ones.
pub fn services(
    canary: &Canary,
    selectors: &Selectors,
    discovered: &BTreeMap<String, i32>,
) -> Vec<Service> {
    let svc = &canary.spec.service;
    let name = service_names(canary).apex;
    let primary = &selectors.primary;
    let port = ServicePort {
        app_protocol: svc.app_protocol.clone().filter(|p| !p.is_empty()),
        name: Some(svc.port_name.clone().unwrap_or_else(|| "http".into())),
        port: svc.port,
        protocol: Some("TCP".into()),
        target_port: Some(match &svc.target_port {
            Some(IntOrString::Int(p)) => K8sIntOrString::Int(*p),
            Some(IntOrString::String(s)) => K8sIntOrString::String(s.clone()),
            None => K8sIntOrString::Int(svc.port),
        }),
        ..ServicePort::default()
    };
    let ports: Vec<ServicePort> = std::iter::once(port)
        .chain(discovered.iter().map(|(name, p)| ServicePort {
            name: Some(name.clone()),
            port: *p,
            protocol: Some("TCP".into()),
            target_port: Some(K8sIntOrString::Int(*p)),
            ..ServicePort::default()
        }))
        .collect();
    let build =
        |name: String, selector: &BTreeMap<String, String>, meta: Option<&ObjectMetadata>| {
            let mut meta = meta.cloned().unwrap_or_default();
            // Flagger labels each Service with its selector label set to the Service's own
            // name (users select them by it: ServiceMonitors, `kubectl get svc -l`). Flagger
            // selects on one label; a selector of several (a target Flagger would refuse)
            // gets none.
            if let [key] = selector.keys().collect::<Vec<_>>()[..] {
                meta.labels.insert(key.clone(), name.clone());
            }
            // Keys left to others are not applied, so never set, changed or claimed.
            if let Some(unmanaged) = &svc.unmanaged_metadata {
                meta.labels.retain(|k, _| !unmanaged.labels.contains(k));
                meta.annotations
                    .retain(|k, _| !unmanaged.annotations.contains(k));
            }
            Service {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: canary.metadata.namespace.clone(),
                    labels: (!meta.labels.is_empty()).then_some(meta.labels),
                    annotations: (!meta.annotations.is_empty()).then_some(meta.annotations),
                    owner_references: Some(
                        super::flagger::owner_reference(canary)
                            .into_iter()
                            .collect(),
                    ),
                    ..ObjectMeta::default()
                },
                spec: Some(ServiceSpec {
                    type_: Some("ClusterIP".into()),
                    cluster_ip: svc.headless.then(|| "None".into()),
                    traffic_distribution: svc.traffic_distribution.clone(),
                    selector: Some(selector.clone()),
                    ports: Some(ports.clone()),
                    ..ServiceSpec::default()
                }),
                status: None,
            }
        };
    vec![
        build(name.clone(), primary, svc.apex.as_ref()),
        build(format!("{name}-primary"), primary, svc.primary.as_ref()),
        build(
            format!("{name}-canary"),
            &selectors.canary,
            svc.canary.as_ref(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::selectors::selectors;

    fn target(image: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"selector": {"matchLabels": {"app": "podinfo"}},
                     "template": {"metadata": {"labels": {"app": "podinfo"}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}
        }))
        .unwrap()
    }

    fn canary() -> Canary {
        let mut c: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "fledge.dev/v1alpha1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "uid-1"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": "podinfo"},
                     "service": {"port": 80}}
        }))
        .unwrap();
        c.metadata.uid = Some("uid-1".into());
        c
    }

    #[test]
    fn the_apex_and_primary_services_select_the_primary_and_the_canary_service_the_target() {
        let selectors = selectors(&target("podinfo:1"), None).unwrap();
        let mut c = canary();
        c.spec.service.port = 9898;
        let svcs = services(&c, &selectors, &BTreeMap::new());
        let names: Vec<_> = svcs
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["podinfo", "podinfo-primary", "podinfo-canary"]);
        let sel = |i: usize| svcs[i].spec.as_ref().unwrap().selector.clone().unwrap();
        assert_eq!(sel(0)["app"], "podinfo-primary");
        assert_eq!(sel(1)["app"], "podinfo-primary");
        assert_eq!(sel(2)["app"], "podinfo");
        let port = &svcs[0].spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(port.target_port, Some(K8sIntOrString::Int(9898)));
    }
}
