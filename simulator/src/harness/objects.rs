//! The routing objects as a cluster's API server holds them, and which of them the mesh uses.
//!
//! Objects are keyed by kind, namespace and name, as the API server keys them: an apply of an
//! existing key replaces that object and keeps its place in creation order; an object of another
//! name is another object, even if it routes the same host. When two objects of a kind claim
//! one host, the older one routes it and the younger is ignored for that host, as Istio's
//! sidecars do with conflicting VirtualServices (istioctl reports it as IST0109). For
//! TrafficSplits and HTTPRoutes the simulator does the same; Gateway API implementations merge
//! the rules of several HTTPRoutes instead, which the simulator does not model, so it warns.

use std::collections::BTreeSet;

use crate::manifest::Manifest;

/// Who applied an object last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writer {
    Scenario,
    Controller,
}

#[derive(Clone)]
struct Stored {
    key: Key,
    manifest: Manifest,
    writer: Writer,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: &'static str,
    namespace: String,
    name: String,
}

/// The routing objects (VirtualService, TrafficSplit, HTTPRoute) in creation order.
#[derive(Clone)]
pub(crate) struct Store {
    /// The namespace of objects that name none.
    namespace: String,
    items: Vec<Stored>,
    /// Conflicts already reported: (older, younger, host).
    reported: BTreeSet<(Key, Key, String)>,
}

/// A routing object the mesh uses, with what it may route.
pub(crate) struct Effective {
    pub(crate) manifest: Manifest,
    pub(crate) writer: Writer,
}

impl Store {
    pub(crate) fn new(namespace: &str) -> Self {
        Store {
            namespace: namespace.to_string(),
            items: Vec::new(),
            reported: BTreeSet::new(),
        }
    }

    /// Whether the store keeps `m` (routing kinds, and ServiceProfiles, which set the routes'
    /// timeouts and retries); others go to the mesh directly.
    pub(crate) fn keeps(m: &Manifest) -> bool {
        matches!(
            m,
            Manifest::VirtualService(_)
                | Manifest::TrafficSplit(_)
                | Manifest::GatewayHttpRoute(_)
                | Manifest::ServiceProfile(_)
        )
    }

    /// The object stored under `m`'s key, if any, and who wrote it last.
    pub(crate) fn get(&self, m: &Manifest) -> Option<(&Manifest, Writer)> {
        let key = self.key(m)?;
        self.items
            .iter()
            .find(|s| s.key == key)
            .map(|s| (&s.manifest, s.writer))
    }

    /// Stores `m` under its key, replacing the object there in place.
    pub(crate) fn apply(&mut self, m: Manifest, writer: Writer) {
        let Some(key) = self.key(&m) else { return };
        match self.items.iter_mut().find(|s| s.key == key) {
            Some(s) => {
                s.manifest = m;
                s.writer = writer;
            }
            None => self.items.push(Stored {
                key,
                manifest: m,
                writer,
            }),
        }
    }

    /// The objects in creation order, each without the hosts an older object of its kind
    /// claims; a warning for each conflict not reported before.
    pub(crate) fn effective(&mut self) -> (Vec<Effective>, Vec<String>) {
        let mut claimed: Vec<(&'static str, String, usize)> = Vec::new();
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        for (i, s) in self.items.iter().enumerate() {
            let mut m = s.manifest.clone();
            let ns = s.key.namespace.clone();
            let kind = s.key.kind;
            // Keeps a host unless an older object of the kind claims it.
            let mut keep = |host: &str| {
                let fqdn = qualified(host, &ns);
                match claimed.iter().find(|(k, h, _)| *k == kind && *h == fqdn) {
                    Some(&(_, _, older)) => {
                        let conflict = (self.items[older].key.clone(), s.key.clone(), fqdn);
                        if self.reported.insert(conflict) {
                            warnings.push(conflict_warning(&self.items[older].key, &s.key, host));
                        }
                        false
                    }
                    None => {
                        claimed.push((kind, fqdn, i));
                        true
                    }
                }
            };
            let used = match &mut m {
                // One bound to gateways only claims no host for the mesh.
                Manifest::VirtualService(vs) if vs.binds_mesh() => {
                    vs.hosts.retain(|h| keep(h));
                    !vs.hosts.is_empty()
                }
                Manifest::TrafficSplit(ts) => keep(&ts.service),
                // Parents other than Services bind no mesh host; the mesh warns about them.
                Manifest::GatewayHttpRoute(hr) => {
                    hr.parents.retain(|p| {
                        let host = format!("{}.{}", p.name, p.namespace.as_deref().unwrap_or(&ns));
                        !p.is_service() || keep(&host)
                    });
                    !hr.parents.is_empty()
                }
                _ => true,
            };
            if used {
                out.push(Effective {
                    manifest: m,
                    writer: s.writer,
                });
            }
        }
        (out, warnings)
    }

    fn key(&self, m: &Manifest) -> Option<Key> {
        let (kind, namespace, name) = match m {
            Manifest::VirtualService(x) => ("VirtualService", &x.namespace, &x.name),
            Manifest::TrafficSplit(x) => ("TrafficSplit", &x.namespace, &x.name),
            Manifest::GatewayHttpRoute(x) => ("HTTPRoute", &x.namespace, &x.name),
            Manifest::ServiceProfile(x) => ("ServiceProfile", &x.namespace, &x.name),
            _ => return None,
        };
        Some(Key {
            kind,
            namespace: namespace.clone().unwrap_or_else(|| self.namespace.clone()),
            name: name.clone(),
        })
    }
}

fn conflict_warning(older: &Key, younger: &Key, host: &str) -> String {
    let kind = older.kind;
    let who = |k: &Key| format!("{}/{}", k.namespace, k.name);
    let rule = if kind == "VirtualService" {
        "Istio's sidecars use the older one and ignore the other for this host (istioctl analyze: IST0109)"
    } else {
        "the simulator uses the older one only"
    };
    format!(
        "{kind} {} and {kind} {} both route `{host}` for the mesh: {rule}, here {}",
        who(older),
        who(younger),
        who(older)
    )
}

/// A Service host as a fully qualified name, so that `podinfo` and
/// `podinfo.test.svc.cluster.local` are one host.
fn qualified(host: &str, namespace: &str) -> String {
    let parts = host.split('.').count();
    match parts {
        1 => format!("{host}.{namespace}.svc.cluster.local"),
        2 => format!("{host}.svc.cluster.local"),
        3 if host.ends_with(".svc") => format!("{host}.cluster.local"),
        _ => host.to_string(),
    }
}
