//! Routes: VirtualService `http` routes, SMI TrafficSplits, Gateway API HTTPRoutes and Flagger's
//! splits compiled into the rules a client proxy walks, as istiod compiles them into Envoy route
//! configuration: the first rule whose match blocks (ORed, each an AND of header conditions) fit the
//! request wins, then a weighted pick chooses the version (subset). Rules also carry the route's
//! timeout, retry policy, fault injection and mirror. A client caches its matching rule per header
//! profile until the service's routes change.

use super::config::DataPlane;
use super::request::Dest;
use super::retry::RetryPolicy;
use super::{ClientId, Mesh, MeshError, RuleId, ServiceId, VersionId};
use crate::engine::SimTime;
use crate::manifest::{
    FaultInjection, GatewayHttpRoute, HeaderMatch, Manifest, Manifests, TrafficSplit,
};
use crate::result::RuleView;
use std::collections::{BTreeMap, BTreeSet};

/// A TrafficSplit or HTTPRoute rule before compilation; the rest of the rule (retries, fault)
/// comes from the service's default route.
pub(super) struct WeightedRule {
    /// Alternative blocks of header conditions; none matches every request.
    pub(super) matches: Vec<Vec<HeaderMatch>>,
    /// (version, weight) pairs.
    pub(super) dests: Vec<(VersionId, u32)>,
    /// The route timeout, if the rule sets one.
    pub(super) timeout: Option<SimTime>,
    /// The per-try timeout, if the rule sets one.
    pub(super) per_try_timeout: Option<SimTime>,
    /// The version requests are copied to, and the percentage copied.
    pub(super) mirror: Option<(VersionId, f64)>,
}

/// What a route's subset names, once resolved.
pub(super) enum Subset {
    /// A DestinationRule defines it and its labels select this version's pods.
    Version(VersionId),
    /// A DestinationRule defines it and its labels select the pods of several versions (in
    /// the service's order): one Envoy cluster over all of them.
    Several(Vec<VersionId>),
    /// A DestinationRule defines it but its labels select no pod: an Envoy cluster without
    /// endpoints.
    NoEndpoints,
    /// No DestinationRule defines it: Envoy has no such cluster.
    Undefined,
}

/// A route destination that leads to no pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Void {
    /// A subset selecting no pod: 503 `UH` (no healthy upstream).
    NoEndpoints,
    /// A subset no DestinationRule defines: 503 `NC` (cluster not found).
    NoCluster,
}

/// Route settings that a split keeps when it replaces the weights.
#[derive(Clone, Debug)]
pub(super) struct RouteBase {
    pub(super) timeout: Option<SimTime>,
    pub(super) retry: RetryPolicy,
    pub(super) fault: Option<FaultInjection>,
}

#[derive(Clone, Debug)]
pub(super) struct RouteRule {
    pub(super) matches: Vec<Vec<HeaderMatch>>,
    /// (version, weight) pairs.
    pub(super) dests: Vec<(VersionId, u32)>,
    /// Weight of the service itself (a destination without a subset): its cluster spans every
    /// pod the Service selects.
    pub(super) whole: u32,
    /// Weights of subsets that lead to no pod (see [`Void`]).
    pub(super) void: Vec<(Void, u32)>,
    /// Weights of subsets over several versions, by their group of the service
    /// ([`Service::groups`](super::build::Service::groups)).
    pub(super) groups: Vec<(u32, u32)>,
    pub(super) total_weight: u32,
    /// Where requests are copied to (a version, or the service's whole cluster), and the
    /// percentage copied.
    pub(super) mirror: Option<(Dest, f64)>,
    pub(super) timeout: Option<SimTime>,
    pub(super) retry: RetryPolicy,
    pub(super) fault: Option<FaultInjection>,
    /// The route's name, as the access log shows it (Istio names a service's default route
    /// `default`).
    pub(super) name: Option<String>,
    /// The status the client's proxy answers itself (a direct response or a redirect).
    pub(super) answer: Option<u16>,
}

impl Mesh {
    /// Installs `rules` as the routes of `s` (whatever set them: a VirtualService keeps
    /// itself afterwards, see [`Self::resolve_subsets_again`]).
    pub(super) fn install_rules(&mut self, s: ServiceId, rules: Vec<RouteRule>) {
        let mut ids = Vec::with_capacity(rules.len());
        for r in rules {
            ids.push(RuleId(self.rules.len() as u32));
            self.rules.push(r);
        }
        let svc = &mut self.services[s];
        svc.rules = ids;
        svc.virtual_service = None;
        svc.epoch = svc.epoch.wrapping_add(1);
        svc.explicit_route = true;
        self.routes_changed(s);
    }

    pub(super) fn reset_default_route(&mut self, s: ServiceId) {
        let svc = &self.services[s];
        let rule = RouteRule {
            matches: Vec::new(),
            total_weight: 100,
            dests: Vec::new(),
            whole: 100,
            void: Vec::new(),
            groups: Vec::new(),
            mirror: None,
            timeout: svc.base.timeout,
            retry: svc.base.retry.clone(),
            fault: svc.base.fault.clone(),
            name: Some("default".into()),
            answer: None,
        };
        self.install_rules(s, vec![rule]);
        // Without a route of its own, clients send to the cluster over every pod the Service
        // selects, as Istio does for a host no VirtualService names.
        self.services[s].explicit_route = false;
    }

    /// Every service back to the data plane's default routes: no rules of any object, the
    /// default retries, no timeout or fault; the routing objects in effect are applied after.
    pub(crate) fn reset_routes(&mut self) {
        for si in 0..self.services.len() {
            let s = ServiceId(si as u32);
            self.services[s].base = RouteBase {
                timeout: None,
                retry: self.default_retry(),
                fault: None,
            };
            self.reset_default_route(s);
            self.set_host_routed(s, BTreeSet::new());
        }
        self.reset_gateway_routes();
    }

    /// Applies parsed manifests: DestinationRules and PeerAuthentications set policies, then
    /// VirtualServices, TrafficSplits, HTTPRoutes and ServiceProfiles set routes. Returns
    /// warnings for what the mesh cannot use (hosts it does not simulate, unknown subsets).
    pub fn apply_manifests(&mut self, m: &Manifests) -> Result<Vec<String>, MeshError> {
        let mut warnings = Vec::new();
        for item in &m.items {
            match item {
                Manifest::DestinationRule(dr) => self.apply_destination_rule(dr, &mut warnings),
                Manifest::PeerAuthentication(pa) => self.apply_peer_authentication(pa),
                Manifest::AuthorizationPolicy(p) => self.apply_authorization_policy(p),
                Manifest::RequestAuthentication(r) => self.apply_request_authentication(r),
                Manifest::IstioGateway(g) => self.apply_istio_gateway(g),
                _ => {}
            }
        }
        for item in &m.items {
            match item {
                Manifest::VirtualService(vs) => self.apply_virtual_service(vs, &mut warnings)?,
                Manifest::TrafficSplit(ts) => self.apply_traffic_split(ts, &mut warnings),
                Manifest::GatewayHttpRoute(hr) => self.apply_gateway_http_route(hr, &mut warnings),
                Manifest::ServiceProfile(sp) => self.apply_service_profile(sp, &mut warnings),
                _ => {}
            }
        }
        Ok(warnings)
    }

    /// An SMI TrafficSplit: one rule, backends by Service name, weights as given.
    fn apply_traffic_split(&mut self, ts: &TrafficSplit, warnings: &mut Vec<String>) {
        let Some(s) = self.find_service(&ts.service, ts.namespace.as_deref()) else {
            warnings.push(format!(
                "TrafficSplit {}: service `{}` is not simulated",
                ts.name, ts.service
            ));
            return;
        };
        let mut dests = Vec::new();
        for (b, w) in &ts.backends {
            match self.resolve_backend(s, b) {
                Some(v) => dests.push((v, u32::try_from(*w).unwrap_or(u32::MAX))),
                None => warnings.push(format!(
                    "TrafficSplit {}: backend `{b}` matches no version",
                    ts.name
                )),
            }
        }
        let rule = WeightedRule {
            matches: Vec::new(),
            dests,
            timeout: None,
            per_try_timeout: None,
            mirror: None,
        };
        self.install_weighted(s, vec![rule]);
    }

    /// A Gateway API HTTPRoute: one rule per route rule on each parent Service (the GAMMA
    /// mesh binding); a rule with an empty match matches every request.
    fn apply_gateway_http_route(&mut self, hr: &GatewayHttpRoute, warnings: &mut Vec<String>) {
        for parent in &hr.parents {
            let ns = parent.namespace.as_deref().or(hr.namespace.as_deref());
            if !parent.is_service() {
                warnings.push(format!(
                    "HTTPRoute {}: parent {} `{}` ({}) is not simulated: only a Service parent (group \"\") routes the mesh's clients",
                    hr.name,
                    parent.kind,
                    parent.name,
                    if parent.group.is_empty() { "core" } else { &parent.group }
                ));
                continue;
            }
            let Some(s) = self
                .find_service(&parent.name, ns)
                .filter(|&s| ns.is_none_or(|ns| self.services[s].namespace == ns))
            else {
                warnings.push(format!(
                    "HTTPRoute {}: parent Service `{}` is not a simulated service",
                    hr.name, parent.name
                ));
                continue;
            };
            let mut rules = Vec::new();
            let mut by_host = BTreeSet::new();
            for r in hr.rules.iter().filter(|r| !r.matches_none) {
                let mut dests = Vec::new();
                for (b, w) in &r.backends {
                    if let Some((ds, v)) = self.find_version_service(b, hr.namespace.as_deref())
                        && ds == s
                    {
                        by_host.insert(v);
                    }
                    match self.resolve_gateway_backend(s, b, hr.namespace.as_deref()) {
                        Some(v) => dests.push((v, *w)),
                        None => warnings.push(format!(
                            "HTTPRoute {}: backend `{b}` matches no version",
                            hr.name
                        )),
                    }
                }
                let matches = if r.matches.iter().any(Vec::is_empty) {
                    Vec::new()
                } else {
                    r.matches.clone()
                };
                let mirror = r.mirror.as_ref().and_then(|(b, pct)| {
                    let v = self.resolve_gateway_backend(s, b, hr.namespace.as_deref());
                    if v.is_none() {
                        warnings.push(format!(
                            "HTTPRoute {}: mirror backend `{b}` matches no version",
                            hr.name
                        ));
                    }
                    Some((v?, *pct))
                });
                rules.push(WeightedRule {
                    matches,
                    dests,
                    timeout: r.request_timeout,
                    per_try_timeout: r.backend_request_timeout,
                    mirror,
                });
            }
            self.install_weighted(s, rules);
            self.set_host_routed(s, by_host);
        }
    }

    pub(super) fn install_weighted(&mut self, s: ServiceId, rules: Vec<WeightedRule>) {
        let base = self.services[s].base.clone();
        let compiled = rules
            .into_iter()
            .map(|r| {
                let mut retry = base.retry.clone();
                if r.per_try_timeout.is_some() {
                    retry.per_try_timeout = r.per_try_timeout;
                }
                RouteRule {
                    matches: r.matches,
                    total_weight: weight_sum(&r.dests),
                    dests: r.dests,
                    whole: 0,
                    void: Vec::new(),
                    groups: Vec::new(),
                    mirror: r
                        .mirror
                        .filter(|(_, pct)| *pct > 0.0)
                        .map(|(v, pct)| (Dest::Version(v), pct)),
                    timeout: r.timeout.or(base.timeout),
                    retry,
                    fault: base.fault.clone(),
                    name: None,
                    answer: None,
                }
            })
            .collect();
        self.install_rules(s, compiled);
    }

    pub(super) fn apply_virtual_service(
        &mut self,
        vs: &crate::manifest::VirtualService,
        warnings: &mut Vec<String>,
    ) -> Result<(), MeshError> {
        // Bound to gateways: their proxies' routes (gateway.rs); to `mesh` too: the sidecars'.
        if !vs.gateways.is_empty() {
            self.apply_gateway_routes(vs, warnings);
        }
        if !vs.binds_mesh() {
            return Ok(());
        }
        let vs = &vs.at(|g| g == "mesh");
        for host in &vs.hosts {
            let Some(s) = self.find_service(host, vs.namespace.as_deref()) else {
                // A gateway's hosts are names from outside the cluster.
                if vs.gateways.is_empty() {
                    warnings.push(format!(
                        "VirtualService {}: host `{host}` is not simulated",
                        vs.name
                    ));
                }
                continue;
            };
            self.route_by_virtual_service(vs, s, warnings);
        }
        Ok(())
    }

    /// The sidecars' routes of service `s` from `vs`; kept so that a DestinationRule applied
    /// later resolves its subsets again (istiod rebuilds the routes on either change).
    fn route_by_virtual_service(
        &mut self,
        vs: &crate::manifest::VirtualService,
        s: ServiceId,
        warnings: &mut Vec<String>,
    ) {
        let (rules, by_host, base) = self.compile_http_routes(vs, s, warnings);
        if let Some(base) = base {
            self.services[s].base = base;
        }
        self.install_rules(s, rules);
        self.set_host_routed(s, by_host);
        self.services[s].virtual_service = Some(Box::new(vs.clone()));
    }

    /// After a DestinationRule of `s` changed: the routes of the VirtualService in effect
    /// resolved against its subsets now. A subset named before any DestinationRule defined
    /// it (503 `NC` until then) routes from now on.
    pub(super) fn resolve_subsets_again(&mut self, s: ServiceId, warnings: &mut Vec<String>) {
        if let Some(vs) = self.services[s].virtual_service.take() {
            self.route_by_virtual_service(&vs, s, warnings);
        }
    }

    /// The rules of `vs`'s http routes towards service `s`, the versions they name by their
    /// own host (`<service>-<version>`), and the route settings a split keeps (the last
    /// route's, when it matches every request).
    pub(super) fn compile_http_routes(
        &self,
        vs: &crate::manifest::VirtualService,
        s: ServiceId,
        warnings: &mut Vec<String>,
    ) -> (Vec<RouteRule>, BTreeSet<VersionId>, Option<RouteBase>) {
        let mut rules = Vec::new();
        let mut by_host = BTreeSet::new();
        let mut base = None;
        for (i, r) in vs.http.iter().enumerate() {
            if r.matches_none {
                continue;
            }
            let mut dests = Vec::new();
            let mut whole = 0u32;
            let mut void = Vec::new();
            let mut groups = Vec::new();
            let single = r.route.len() == 1;
            for d in &r.route {
                // istiod routes a lone destination as a plain cluster, whatever its weight.
                let w = if single { 100 } else { d.weight.unwrap_or(0) };
                if self.find_service(&d.host, vs.namespace.as_deref()) != Some(s) {
                    match self.find_version_service(&d.host, vs.namespace.as_deref()) {
                        // A version's own Service selects that version's pods.
                        Some((ds, v)) if ds == s => {
                            by_host.insert(v);
                            dests.push((v, w));
                        }
                        _ => warnings.push(format!("VirtualService {}: destination `{}` is another service; routing to it is not simulated", vs.name, d.host)),
                    }
                    continue;
                }
                match &d.subset {
                    Some(sub) => match self.resolve_subset(s, sub, None) {
                        Subset::Version(v) => dests.push((v, w)),
                        // Its DestinationRule made the group when it was applied.
                        Subset::Several(vs) => match self.group_of(s, &vs) {
                            Some(g) => groups.push((g, w)),
                            None => void.push((Void::NoEndpoints, w)),
                        },
                        // Its DestinationRule warned that it selects no pod.
                        Subset::NoEndpoints => void.push((Void::NoEndpoints, w)),
                        Subset::Undefined => {
                            void.push((Void::NoCluster, w));
                            warnings.push(format!(
                                "VirtualService {}: subset `{sub}` of `{}` is defined by no DestinationRule applied before it: Envoy has no cluster for it and answers its requests 503 `NC`",
                                vs.name, d.host
                            ));
                        }
                    },
                    // No subset: one Envoy cluster over every pod the Service selects.
                    None => whole = whole.saturating_add(w),
                }
            }
            let retry = match &r.retries {
                None => self.default_retry(),
                Some(rt) => {
                    if rt.backoff.is_some() && !self.istio_retry_backoff {
                        warnings.push(format!(
                            "VirtualService {}: retries.backoff is ignored: this Istio has no retry backoff (added in 1.26); retries wait Envoy's 25 ms base",
                            vs.name
                        ));
                    }
                    RetryPolicy::istio(rt, self.istio_retry_503, self.istio_retry_backoff)
                }
            };
            let ns = vs.namespace.as_deref();
            let mirror = match &r.mirror {
                Some(m) => match m
                    .subset
                    .as_deref()
                    .and_then(|sub| match self.resolve_subset(s, sub, None) {
                        Subset::Version(v) => Some(Dest::Version(v)),
                        Subset::Several(vs) => self.group_of(s, &vs).map(Dest::Group),
                        Subset::NoEndpoints | Subset::Undefined => None,
                    })
                    .or_else(|| {
                        self.find_version_service(&m.host, ns)
                            .filter(|(ms, _)| *ms == s)
                            .map(|(_, v)| Dest::Version(v))
                    })
                    .or_else(|| {
                        // The service's host without a subset: Istio mirrors to the
                        // cluster over the whole service (`outbound|port||host`).
                        (m.subset.is_none() && self.find_service(&m.host, ns) == Some(s))
                            .then_some(Dest::Service)
                    }) {
                    Some(d) => Some((d, r.mirror_percentage.unwrap_or(100.0).clamp(0.0, 100.0))),
                    None => {
                        warnings.push(format!(
                            "VirtualService {}: mirror `{}` is not a simulated subset",
                            vs.name, m.host
                        ));
                        None
                    }
                },
                None => None,
            };
            let rule = RouteRule {
                // An empty block matches every request, and so does the route.
                matches: if r.matches.iter().any(Vec::is_empty) {
                    Vec::new()
                } else {
                    r.matches.clone()
                },
                total_weight: weight_sum(&dests)
                    .saturating_add(whole)
                    .saturating_add(void.iter().map(|&(_, w)| w).sum())
                    .saturating_add(groups.iter().map(|&(_, w)| w).sum()),
                dests,
                whole,
                void,
                groups,
                mirror,
                timeout: r.timeout,
                retry: retry.clone(),
                fault: r.fault.clone(),
                name: r.name.clone(),
                answer: r.answer,
            };
            if i + 1 == vs.http.len() && rule.matches.is_empty() {
                base = Some(RouteBase {
                    timeout: r.timeout,
                    retry,
                    fault: r.fault.clone(),
                });
            }
            rules.push(rule);
        }
        (rules, by_host, base)
    }

    /// The rules clients of `service` walk, in order, as plain data.
    pub(crate) fn route_table(&self, service: ServiceId) -> Vec<RuleView> {
        let name = |v: VersionId| self.versions[v].name.clone();
        self.services[service]
            .rules
            .iter()
            .map(|&rid| {
                let r = &self.rules[rid];
                let mut weights: Vec<(String, u32)> =
                    r.dests.iter().map(|&(v, w)| (name(v), w)).collect();
                // A cluster over several versions, shown as its pods spread requests: by
                // ready pods.
                let mut spread = |versions: &[VersionId], weight: u32| {
                    let ready = |v: VersionId| {
                        self.versions[v]
                            .pods
                            .iter()
                            .filter(|&&p| !self.pods[p].removed)
                            .count() as u32
                    };
                    let total: u32 = versions.iter().map(|&v| ready(v)).sum();
                    for &v in versions {
                        let share =
                            u64::from(weight) * u64::from(ready(v)) / u64::from(total.max(1));
                        weights.push((name(v), share as u32));
                    }
                };
                let svc = &self.services[service];
                for &(g, w) in &r.groups {
                    spread(&svc.groups[g as usize], w);
                }
                if r.whole > 0 {
                    spread(&svc.selected, r.whole);
                }
                RuleView {
                    matched: !r.matches.is_empty(),
                    weights,
                    mirror: r
                        .mirror
                        .filter(|(_, pct)| *pct > 0.0)
                        .map(|(d, pct)| match d {
                            Dest::Version(v) => (name(v), pct),
                            Dest::Group(g) => {
                                let vs = &self.services[service].groups[g as usize];
                                let names: Vec<String> = vs.iter().map(|&v| name(v)).collect();
                                (names.join("+"), pct)
                            }
                            Dest::Service => (self.services[service].name.clone(), pct),
                            // A mirror is never resolved to a void subset.
                            Dest::Void(_) => ("-".into(), pct),
                        }),
                }
            })
            .collect()
    }

    pub(super) fn find_service(&self, host: &str, namespace: Option<&str>) -> Option<ServiceId> {
        self.services
            .iter()
            .position(|s| {
                host_matches(host, &s.name, namespace.unwrap_or(&s.namespace))
                    || host_matches(host, &s.name, &s.namespace)
            })
            .map(|i| ServiceId(i as u32))
    }

    /// What subset `subset` of service `s` is, as Envoy builds clusters: a DestinationRule's
    /// subset selects pods by its labels only (`labels`, or those of the DestinationRule
    /// applied for `s` that names it); a name no DestinationRule defines has no cluster.
    pub(super) fn resolve_subset(
        &self,
        s: ServiceId,
        subset: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Subset {
        let svc = &self.services[s];
        let defined = labels.or_else(|| {
            self.subset_labels
                .iter()
                .find(|(sv, n, _)| *sv == s && n == subset)
                .map(|(_, _, l)| l)
        });
        let Some(sel) = defined else {
            return Subset::Undefined;
        };
        let selected: Vec<VersionId> = svc
            .versions
            .iter()
            .copied()
            .filter(|&v| !sel.is_empty() && labels_match(sel, &self.versions[v].labels))
            .collect();
        match selected[..] {
            [] => Subset::NoEndpoints,
            [v] => Subset::Version(v),
            _ => Subset::Several(selected),
        }
    }

    /// The group of service `s` over versions `vs`, if a DestinationRule made one.
    pub(super) fn group_of(&self, s: ServiceId, vs: &[VersionId]) -> Option<u32> {
        self.services[s]
            .groups
            .iter()
            .position(|g| g == vs)
            .map(|g| g as u32)
    }

    pub(super) fn resolve_backend(&self, s: ServiceId, backend: &str) -> Option<VersionId> {
        let svc = &self.services[s];
        svc.versions.iter().copied().find(|&v| {
            let d = &self.telemetry.dests()[v.0 as usize];
            d.workload == backend
                || format!("{}-{}", svc.name, self.versions[v].name) == backend
                || self.versions[v].name == backend
        })
    }

    /// A Gateway API backend host (`name` in the route's namespace, or `name.namespace`): a
    /// version's own Service, or a name `resolve_backend` knows, in the service's namespace.
    fn resolve_gateway_backend(
        &self,
        s: ServiceId,
        host: &str,
        route_ns: Option<&str>,
    ) -> Option<VersionId> {
        let (name, ns) = match host.split_once('.') {
            Some((name, ns)) => (name, Some(ns)),
            None => (host, route_ns),
        };
        if ns.is_some_and(|ns| ns != self.services[s].namespace) {
            return None;
        }
        self.resolve_backend(s, name)
    }

    /// The route of a version's own Service, which no VirtualService names: all to that
    /// version, with the data plane's default retries.
    pub(super) fn direct_rule(&mut self, v: VersionId) -> RuleId {
        let id = RuleId(self.rules.len() as u32);
        self.rules.push(RouteRule {
            matches: Vec::new(),
            dests: vec![(v, 100)],
            whole: 0,
            void: Vec::new(),
            groups: Vec::new(),
            total_weight: 100,
            mirror: None,
            timeout: None,
            retry: self.default_retry(),
            fault: None,
            name: Some("default".into()),
            answer: None,
        });
        id
    }

    /// The "route" of a client without a sidecar: kube-proxy forwards each connection to a
    /// ready pod of the Service, with no timeout, retry, fault or mirror (those are Envoy's).
    pub(super) fn kube_proxy_rule(&mut self) -> RuleId {
        let id = RuleId(self.rules.len() as u32);
        self.rules.push(RouteRule {
            matches: Vec::new(),
            dests: Vec::new(),
            whole: 0,
            void: Vec::new(),
            groups: Vec::new(),
            total_weight: 0,
            mirror: None,
            timeout: None,
            retry: RetryPolicy::none(),
            fault: None,
            name: None,
            answer: None,
        });
        id
    }

    fn default_retry(&self) -> RetryPolicy {
        match self.data_plane {
            DataPlane::Istio => RetryPolicy::istio_default(self.istio_retry_503),
            DataPlane::Linkerd => RetryPolicy::none(),
        }
    }

    /// The service and version a host names when it is a version's own Service
    /// (`<service>-<version>`, e.g. the controller's `podinfo-primary` and `podinfo-canary`).
    pub(super) fn find_version_service(
        &self,
        host: &str,
        namespace: Option<&str>,
    ) -> Option<(ServiceId, VersionId)> {
        self.services.iter().enumerate().find_map(|(si, s)| {
            let v = s.versions.iter().copied().find(|&v| {
                let name = format!("{}-{}", s.name, self.versions[v].name);
                host_matches(host, &name, namespace.unwrap_or(&s.namespace))
                    || host_matches(host, &name, &s.namespace)
            })?;
            Some((ServiceId(si as u32), v))
        })
    }

    pub(super) fn refresh_route_cache(&mut self, c: ClientId) {
        // The routes the client's own proxy has applied (propagation.rs).
        let epoch = self.route_epoch(c);
        let cl = &self.clients[c];
        let mut cache = Vec::with_capacity(cl.profiles.len());
        if let Some((_, rule)) = cl.direct {
            let cl = &mut self.clients[c];
            cl.cache = vec![rule; cl.profiles.len()];
            cl.cache_epoch = Some(epoch);
            return;
        }
        // A gateway's proxy walks the routes bound to its gateway (gateway.rs), a sidecar
        // those of its service; each as its proxy has applied them.
        let rules = self.client_rules(c);
        for (_, headers) in &cl.profiles {
            let hit = rules.iter().copied().find(|&rid| {
                let r = &self.rules[rid];
                r.matches.is_empty()
                    || r.matches.iter().any(|block| {
                        block.iter().all(|m| {
                            headers
                                .iter()
                                .any(|(k, v)| *k == m.name && m.matcher.matches(match_value(k, v)))
                        })
                    })
            });
            cache.push(hit);
        }
        let cl = &mut self.clients[c];
        cl.cache = cache;
        cl.cache_epoch = Some(epoch);
    }
}

/// The value a header condition compares: Envoy's path and regex route matches see `:path`
/// without its query string and fragment (the access log keeps the full path).
fn match_value<'a>(name: &str, value: &'a str) -> &'a str {
    match name {
        ":path" => path_only(value),
        _ => value,
    }
}

/// A `:path` without its query string and fragment, as Envoy's path matchers see it (routes and
/// the RBAC filter's `url_path` alike).
pub(super) fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

pub(super) fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub(super) fn host_matches(host: &str, name: &str, namespace: &str) -> bool {
    host == name
        || host == format!("{name}.{namespace}")
        || host == format!("{name}.{namespace}.svc")
        || host == format!("{name}.{namespace}.svc.cluster.local")
}

/// Sum of route weights; saturates so absurd user weights cannot overflow.
pub(super) fn weight_sum(dests: &[(VersionId, u32)]) -> u32 {
    dests.iter().fold(0u32, |a, d| a.saturating_add(d.1))
}
