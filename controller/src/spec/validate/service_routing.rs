//! The `service` fields Flagger's Istio and Gateway API routers write into the routes
//! (`match`, `rewrite`, `corsPolicy`, `delegation`, `mirror`) and `appProtocol`: refused where
//! the provider's object cannot carry them as Flagger writes them, and said to be unused where
//! the provider has nothing to carry them in.

use super::FieldError;
use crate::routes::gateway_api::{convert_service_match, dropped_conditions};
use crate::routes::{Provider, RouteError};
use crate::spec::CanaryService;

fn error(path: &str, message: String) -> FieldError {
    FieldError {
        path: path.into(),
        message,
    }
}

/// What `provider`'s objects cannot carry of these fields, as errors at them.
pub(super) fn unroutable_by(service: &CanaryService, provider: Provider) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match provider {
        Provider::Istio => {
            if service.delegation && !(service.hosts.is_empty() && service.gateways.is_empty()) {
                errors.push(error(
                    "spec.service.delegation",
                    "a delegate VirtualService has no hosts and no gateways (Istio's root \
                     VirtualService names them): remove spec.service.hosts and \
                     spec.service.gateways, as Flagger requires"
                        .into(),
                ));
            }
            if service
                .app_protocol
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case("tcp"))
            {
                errors.push(error(
                    "spec.service.appProtocol",
                    "`tcp`: Flagger routes such a Canary with a TCP route, and Fledge routes \
                     HTTP only; Fledge cannot take it over"
                        .into(),
                ));
            }
        }
        Provider::GatewayApi(_) => {
            for (i, m) in service.match_.iter().enumerate() {
                let path = format!("spec.service.match[{i}]");
                if let Err(e) = convert_service_match(m, &path) {
                    errors.push(match e {
                        RouteError::InvalidSpec { field, reason } => error(&field, reason),
                        other => error(&path, other.to_string()),
                    });
                }
            }
            for (i, m) in service.mirror.iter().enumerate() {
                if !m["backendRef"]["name"].is_string() {
                    errors.push(error(
                        &format!("spec.service.mirror[{i}].backendRef.name"),
                        "a mirror needs the name of the backend it copies requests to".into(),
                    ));
                }
            }
        }
        Provider::Smi(_) => {}
    }
    errors
}

/// What these fields set that `provider`'s objects do not carry, as warnings at the fields.
pub(super) fn unused_by(service: &CanaryService, provider: Provider) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut unused = |set: bool, path: &str, why: &str| {
        if set {
            out.push(error(path, format!("not used: {why}")));
        }
    };
    let smi = matches!(provider, Provider::Smi(_));
    let routes = "a TrafficSplit has no request routes";
    unused(
        smi && !service.match_.is_empty(),
        "spec.service.match",
        routes,
    );
    unused(
        smi && service.rewrite.is_some(),
        "spec.service.rewrite",
        routes,
    );
    unused(
        smi && service.cors_policy.is_some(),
        "spec.service.corsPolicy",
        routes,
    );
    unused(
        provider != Provider::Istio && service.delegation,
        "spec.service.delegation",
        "only an Istio VirtualService is delegated",
    );
    unused(
        !matches!(provider, Provider::GatewayApi(_)) && !service.mirror.is_empty(),
        "spec.service.mirror",
        "only an HTTPRoute (provider gatewayapi) carries these mirrors",
    );
    unused(
        provider == Provider::Istio && service.rewrite.as_ref().is_some_and(|r| r.type_.is_some()),
        "spec.service.rewrite.type",
        "an Istio rewrite has no type (a `uri` replaces the matched prefix)",
    );
    let allow_origins = service
        .cors_policy
        .as_ref()
        .is_some_and(|c| !c["allowOrigins"].is_null());
    unused(
        matches!(provider, Provider::GatewayApi(_)) && allow_origins,
        "spec.service.corsPolicy.allowOrigins",
        "an HTTPRoute's CORS filter takes plain origins only (`allowOrigin`), as in Flagger",
    );
    if matches!(provider, Provider::GatewayApi(_)) {
        for (i, m) in service.match_.iter().enumerate() {
            for key in dropped_conditions(m) {
                out.push(error(
                    &format!("spec.service.match[{i}].{key}"),
                    format!(
                        "not used: an HTTPRoute match has no `{key}`; the match is routed on \
                         its uri, method, headers and queryParams alone, as Flagger routes it"
                    ),
                ));
            }
        }
    }
    out
}
