//! Reading and writing the workloads of a namespace, a DaemonSet target in the shape of a
//! Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use super::TargetKind;
use crate::cluster::daemonsets;
use crate::cluster::{Error, FIELD_MANAGER, Result};

/// Reads and writes the workloads of one namespace; the target and its primary are of `kind`.
pub struct Workloads {
    kind: TargetKind,
    deployments: Api<Deployment>,
    daemon_sets: Api<DaemonSet>,
    pods: Api<Pod>,
    replica_sets: Api<ReplicaSet>,
    services: Api<Service>,
    hpas: Api<HorizontalPodAutoscaler>,
}

fn read(kind: &'static str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_string();
    move |source| Error::Read { kind, name, source }
}

fn write(kind: &'static str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_string();
    move |source| Error::Write { kind, name, source }
}

impl Workloads {
    pub fn new(client: Client, namespace: &str, kind: TargetKind) -> Self {
        Workloads {
            kind,
            deployments: Api::namespaced(client.clone(), namespace),
            daemon_sets: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client.clone(), namespace),
            replica_sets: Api::namespaced(client.clone(), namespace),
            services: Api::namespaced(client.clone(), namespace),
            hpas: Api::namespaced(client, namespace),
        }
    }

    /// The kind of the target and its primary.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// The workload (a DaemonSet in the shape of a Deployment), or `None` when it does not
    /// exist.
    pub async fn deployment(&self, name: &str) -> Result<Option<Deployment>> {
        match self.kind {
            TargetKind::Deployment => self
                .deployments
                .get_opt(name)
                .await
                .map_err(read("Deployment", name)),
            TargetKind::DaemonSet => Ok(self
                .daemon_sets
                .get_opt(name)
                .await
                .map_err(read("DaemonSet", name))?
                .map(daemonsets::as_deployment)),
        }
    }

    /// The pods a Deployment's selector labels select.
    pub async fn pods(&self, selector: &BTreeMap<String, String>) -> Result<Vec<Pod>> {
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let params = ListParams::default().labels(&labels.join(","));
        let list = self
            .pods
            .list(&params)
            .await
            .map_err(read("Pod", &labels.join(",")))?;
        Ok(list.items)
    }

    /// The ReplicaSets a Deployment's selector labels select (its own among them). A DaemonSet
    /// has none (its revisions are ControllerRevisions, not read yet): its pods are not judged
    /// one by one, and a canary that never becomes ready fails at its progress deadline.
    pub async fn replica_sets(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<ReplicaSet>> {
        if self.kind == TargetKind::DaemonSet {
            return Ok(Vec::new());
        }
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let params = ListParams::default().labels(&labels.join(","));
        let list = self
            .replica_sets
            .list(&params)
            .await
            .map_err(read("ReplicaSet", &labels.join(",")))?;
        Ok(list.items)
    }

    /// A Service, or `None` when it does not exist.
    pub async fn service(&self, name: &str) -> Result<Option<Service>> {
        self.services
            .get_opt(name)
            .await
            .map_err(read("Service", name))
    }

    /// A JSON merge patch of a Service: for fields other managers own as well (a user's
    /// Service), where an apply would leave their values in place.
    pub async fn merge_service(&self, name: &str, body: &serde_json::Value) -> Result<()> {
        self.services
            .patch(name, &PatchParams::default(), &Patch::Merge(body))
            .await
            .map_err(write("Service", name))?;
        Ok(())
    }

    pub async fn hpa(&self, name: &str) -> Result<Option<HorizontalPodAutoscaler>> {
        self.hpas
            .get_opt(name)
            .await
            .map_err(read("HorizontalPodAutoscaler", name))
    }

    /// Applies a workload built in the shape of a Deployment, as the target's kind.
    pub async fn apply_deployment(&self, dep: &Deployment) -> Result<()> {
        let name = dep.metadata.name.clone().unwrap_or_default();
        if self.kind == TargetKind::DaemonSet {
            let ds = daemonsets::from_deployment(dep);
            self.daemon_sets
                .patch(&name, &apply(), &Patch::Apply(&ds))
                .await
                .map_err(write("DaemonSet", &name))?;
            return Ok(());
        }
        self.deployments
            .patch(&name, &apply(), &Patch::Apply(dep))
            .await
            .map_err(write("Deployment", &name))?;
        Ok(())
    }

    pub async fn apply_service(&self, svc: &Service) -> Result<()> {
        let name = svc.metadata.name.clone().unwrap_or_default();
        self.services
            .patch(&name, &apply(), &Patch::Apply(svc))
            .await
            .map_err(write("Service", &name))?;
        Ok(())
    }

    pub async fn apply_hpa(&self, hpa: &HorizontalPodAutoscaler) -> Result<()> {
        let name = hpa.metadata.name.clone().unwrap_or_default();
        self.hpas
            .patch(&name, &apply(), &Patch::Apply(hpa))
            .await
            .map_err(write("HorizontalPodAutoscaler", &name))?;
        Ok(())
    }

    /// A JSON merge patch of a workload (the user keeps ownership of the rest).
    pub async fn merge_deployment(&self, name: &str, body: &serde_json::Value) -> Result<()> {
        let params = PatchParams::default();
        let kind = self.kind.name();
        let patched = match self.kind {
            TargetKind::Deployment => self
                .deployments
                .patch(name, &params, &Patch::Merge(body))
                .await
                .map(drop),
            TargetKind::DaemonSet => self
                .daemon_sets
                .patch(name, &params, &Patch::Merge(body))
                .await
                .map(drop),
        };
        patched.map_err(write(kind, name))
    }

    /// Sets a Deployment's replicas; a DaemonSet has none, and is scaled to zero (any other
    /// count: back) by Flagger's node selector ([`daemonsets::scale_patch`]).
    pub async fn scale(&self, name: &str, replicas: i32) -> Result<()> {
        let patch = match self.kind {
            TargetKind::Deployment => serde_json::json!({ "spec": { "replicas": replicas } }),
            TargetKind::DaemonSet => daemonsets::scale_patch(replicas > 0),
        };
        self.merge_deployment(name, &patch).await
    }

    /// Deletes a workload; one already gone is fine.
    pub async fn delete_deployment(&self, name: &str) -> Result<()> {
        let params = DeleteParams::default();
        let deleted = match self.kind {
            TargetKind::Deployment => self.deployments.delete(name, &params).await.map(drop),
            TargetKind::DaemonSet => self.daemon_sets.delete(name, &params).await.map(drop),
        };
        match deleted {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(Error::Write {
                kind: self.kind.name(),
                name: name.into(),
                source,
            }),
        }
    }

    /// Deletes an HPA; one already gone is fine.
    pub async fn delete_hpa(&self, name: &str) -> Result<()> {
        match self.hpas.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(Error::Write {
                kind: "HorizontalPodAutoscaler",
                name: name.into(),
                source,
            }),
        }
    }
}

fn apply() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}
