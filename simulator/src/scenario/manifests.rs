//! The scenario's mesh manifests: embedded (`manifests`, a timeline's `apply_manifests`) or in
//! files (`manifest_files`), parsed and checked, with errors at their own document's lines.

use std::path::PathBuf;

use super::source::{Source, read_bounded};
use super::{Context, ScenarioError, raw};
use crate::manifest::{self, Manifest, ManifestError, Manifests};
use crate::mesh::config::DataPlane;

/// A text of the scenario's manifests as written (embedded, or a file), and where.
#[derive(Clone, Debug)]
pub(crate) struct ManifestSource {
    pub(super) file: String,
    pub(super) field: String,
    pub(super) text: String,
    pub(super) first_line: usize,
}

impl ManifestSource {
    fn of(src: &Source<'_>) -> Self {
        ManifestSource {
            file: src.file.clone(),
            field: src.field.clone(),
            text: src.text.to_string(),
            first_line: src.first_line,
        }
    }
}

impl Context {
    pub(super) fn relative(&self, file: &str) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.join(file),
            None => PathBuf::from(file),
        }
    }

    /// A file named by the scenario, relative to it, read within the size bound.
    pub(super) fn read_relative(&self, field: &str, file: &str) -> Result<String, ScenarioError> {
        let path = self.relative(file);
        read_bounded(&path).map_err(|e| self.error(field, format!("{}: {e}", path.display())))
    }

    /// The scenario's manifests, and their texts (which `--vary` edits).
    pub(super) fn manifests(
        &mut self,
        raw: &raw::Scenario,
    ) -> Result<(Manifests, Vec<ManifestSource>), ScenarioError> {
        let mut all = Manifests::default();
        let mut sources = Vec::new();
        if let Some(text) = &raw.manifests {
            let src = self.embedded("manifests", text);
            all.extend(self.manifest_text(&src)?);
            sources.push(ManifestSource::of(&src));
        }
        for (i, file) in raw.manifest_files.iter().enumerate() {
            let field = format!("manifest_files[{i}]");
            let text = self.read_relative(&field, file)?;
            let path = self.relative(file).display().to_string();
            let src = Source::new(path, field, &text, 1);
            all.extend(self.manifest_text(&src)?);
            sources.push(ManifestSource::of(&src));
        }
        Ok((all, sources))
    }

    /// Manifests written inside the scenario under `field` (a YAML string, usually `|`).
    pub(super) fn embedded<'t>(&self, field: &str, text: &'t str) -> Source<'t> {
        // A block scalar's content starts on the line after its key.
        let first_line = self.outline.line(0, field).map_or(1, |l| l + 1);
        Source::new(self.file.clone(), field.to_string(), text, first_line)
    }

    /// Parses and checks one manifest text; errors point into it.
    pub(super) fn manifest_text(&mut self, src: &Source<'_>) -> Result<Manifests, ScenarioError> {
        let m = manifest::parse(src.text).map_err(|e| {
            let line = match &e {
                ManifestError::Yaml { doc, line, .. } => line.or(src.outline.line(*doc, "")),
                ManifestError::WrongType { doc, field, .. }
                | ManifestError::Missing { doc, field, .. } => src.outline.line(*doc, field),
            };
            src.error(line, e.to_string())
        })?;
        self.check_routes(src, &m)?;
        self.warn_about_other_meshes(src, &m);
        Ok(m)
    }

    /// A manifest the scenario's data plane would not read on a cluster: the simulator applies
    /// it all the same, so the rehearsal would differ from the real thing.
    fn warn_about_other_meshes(&mut self, src: &Source<'_>, m: &Manifests) {
        use DataPlane::{Istio, Linkerd};
        for item in &m.items {
            let (owner, whose) = match item {
                Manifest::VirtualService(_)
                | Manifest::DestinationRule(_)
                | Manifest::PeerAuthentication(_)
                | Manifest::IstioGateway(_)
                | Manifest::ServiceEntry(_)
                | Manifest::AuthorizationPolicy(_)
                | Manifest::RequestAuthentication(_) => (Istio, "Istio's"),
                Manifest::ServiceProfile(_) => (Linkerd, "Linkerd's"),
                Manifest::TrafficSplit(_) => (Linkerd, "SMI's, which Linkerd implements"),
                // Both meshes implement the Gateway API.
                Manifest::GatewayHttpRoute(_) => continue,
            };
            let (kind, name) = item.kind_name();
            if owner != self.data_plane {
                let mesh = match self.data_plane {
                    Istio => "Istio",
                    Linkerd => "Linkerd",
                };
                let line = src
                    .line_at(src.outline.document(kind, Some(name)), "kind", kind)
                    .map_or(String::new(), |l| {
                        format!(" (line {})", src.first_line + l - 1)
                    });
                self.warnings.push(format!(
                    "{}{line}: {kind} {name} is {whose}; {mesh} does not read it on a cluster, but the simulator applies it",
                    src.field
                ));
            }
        }
    }

    /// Routes must lead to the simulated service (or the primary and canary Services Flagger
    /// generates for it), and weighted Istio routes must not add up to 0, as Istio's validation
    /// demands. Anything else is most likely a typo that would silently route nowhere.
    fn check_routes(&self, src: &Source<'_>, m: &Manifests) -> Result<(), ScenarioError> {
        let known = |host: &str| self.is_service(host);
        let unknown = |kind: &str, name: &str, what: &str, path: &str, host: &str| {
            let doc = src.outline.document(kind, Some(name));
            src.error(
                src.line_at(doc, path, host),
                format!(
                    "{kind} {name}: unknown service `{host}` in {what}; the scenario simulates {rollout}{others}",
                    rollout = if self.service.is_empty() {
                        String::new()
                    } else {
                        format!("`{svc}` (and `{svc}-primary`, `{svc}-canary`), ", svc = self.service)
                    },
                    others = super::services::quoted(
                        &self.others.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
                    )
                ),
            )
        };
        for item in &m.items {
            match item {
                Manifest::VirtualService(vs) => {
                    for (i, r) in vs.http.iter().enumerate() {
                        for (j, d) in r.route.iter().enumerate() {
                            if !known(&d.host) {
                                let path = format!("spec.http[{i}].route[{j}].destination.host");
                                let what = format!("http[{i}]");
                                return Err(unknown(
                                    "VirtualService",
                                    &vs.name,
                                    &what,
                                    &path,
                                    &d.host,
                                ));
                            }
                        }
                        if let Some(d) = r.mirror.iter().find(|d| !known(&d.host)) {
                            let path = format!("spec.http[{i}].mirror.host");
                            let what = format!("http[{i}].mirror");
                            return Err(unknown("VirtualService", &vs.name, &what, &path, &d.host));
                        }
                        if r.route.len() > 1 {
                            let total: u64 = r
                                .route
                                .iter()
                                .map(|d| u64::from(d.weight.unwrap_or(0)))
                                .sum();
                            // Istio refuses only a total of 0; Envoy splits by each weight's
                            // share of the total, whatever it adds up to.
                            if total == 0 {
                                let doc = src.outline.document("VirtualService", Some(&vs.name));
                                let path = format!("spec.http[{i}].route[0].weight");
                                return Err(src.error(
                                    src.line_at(doc, &path, "weight:"),
                                    format!(
                                        "VirtualService {}: http[{i}] route weights add up to 0: give some destination a weight (Istio refuses a total of 0)",
                                        vs.name
                                    ),
                                ));
                            }
                        }
                    }
                }
                Manifest::TrafficSplit(ts) => {
                    if !known(&ts.service) {
                        let (what, path) = ("spec.service", "spec.service");
                        return Err(unknown("TrafficSplit", &ts.name, what, path, &ts.service));
                    }
                    for (k, (b, _)) in ts.backends.iter().enumerate() {
                        if !known(b) {
                            let path = format!("spec.backends[{k}].service");
                            return Err(unknown(
                                "TrafficSplit",
                                &ts.name,
                                "spec.backends",
                                &path,
                                b,
                            ));
                        }
                    }
                    if ts.backends.iter().all(|(_, w)| *w == 0) {
                        let doc = src.outline.document("TrafficSplit", Some(&ts.name));
                        return Err(src.error(
                            src.line_at(doc, "spec.backends", "backends:"),
                            format!(
                                "TrafficSplit {}: no backend has a weight above zero",
                                ts.name
                            ),
                        ));
                    }
                }
                Manifest::GatewayHttpRoute(hr) => {
                    for (i, r) in hr.rules.iter().enumerate() {
                        for (b, _) in &r.backends {
                            if !known(b) {
                                let what = format!("rules[{i}].backendRefs");
                                let path = format!("spec.rules[{i}].backendRefs");
                                return Err(unknown("HTTPRoute", &hr.name, &what, &path, b));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The scenario's service other than the rollout's that `host` names, short or qualified
    /// with the namespace.
    fn other_service(&self, host: &str) -> Option<&super::ServiceModel> {
        let ns = &self.namespace;
        self.others.iter().find(|s| {
            let name = &s.name;
            host == name
                || host == format!("{name}.{ns}")
                || host == format!("{name}.{ns}.svc")
                || host == format!("{name}.{ns}.svc.cluster.local")
        })
    }

    /// Whether `host` names the simulated service or one of its generated Services, short or
    /// qualified with the namespace.
    pub(super) fn is_service(&self, host: &str) -> bool {
        let ns = &self.namespace;
        self.other_service(host).is_some()
            || !self.service.is_empty()
                && ["", "-primary", "-canary"].iter().any(|suffix| {
                    let name = format!("{}{suffix}", self.service);
                    host == name
                        || host == format!("{name}.{ns}")
                        || host == format!("{name}.{ns}.svc")
                        || host == format!("{name}.{ns}.svc.cluster.local")
                })
    }
}
