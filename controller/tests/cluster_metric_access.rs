//! Which Prometheus a Canary's metrics are read from, and how, as Flagger asks: the Canary's
//! own `metricsServer`, and authenticated Prometheus: a MetricTemplate's `provider.secretRef` names a
//! Secret in the template's namespace whose `token` (bearer) or `username` and `password`
//! (basic) go with every query; a missing Secret or key is a failed check that names it, never
//! a promotion. Prometheus here is a loopback server that answers only with the right header;
//! `insecureSkipVerify` is tried on a loopback TLS server with a self-signed certificate
//! (`fixtures/tls`, made with `openssl req -x509 ... -days 36500`, for 127.0.0.1).
#![cfg(feature = "cluster")]

mod cluster_support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use cluster_support::*;
use fledge_controller::analysis::MetricReading;
use fledge_controller::cluster::providers::LiveObserver;
use fledge_controller::metrics::Prometheus;
use fledge_controller::webhook::Webhooks;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

const TEMPLATE: &str = "/apis/fledge.dev/v1alpha1/namespaces/monitoring/metrictemplates/errors";
const SECRET: &str = "/api/v1/namespaces/monitoring/secrets/prom-auth";

/// A Prometheus that answers 0 to any query sent with `authorization` and 401 otherwise.
async fn prometheus_requiring(authorization: &'static str) -> String {
    loopback_prometheus(Some(authorization), "0").await
}

/// A Prometheus that answers `value` to any query (sent with `authorization`, if given; 401
/// otherwise).
async fn loopback_prometheus(authorization: Option<&'static str>, value: &'static str) -> String {
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::any(move |headers: HeaderMap| async move {
            let sent = headers.get("authorization").and_then(|v| v.to_str().ok());
            if authorization.is_some_and(|a| sent != Some(a)) {
                return (StatusCode::UNAUTHORIZED, "Unauthorized".to_string());
            }
            let body = json!({"status": "success", "data": {"resultType": "vector",
                "result": [{"metric": {}, "value": [1700000000, value]}]}});
            (StatusCode::OK, body.to_string())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// A Prometheus over TLS with a self-signed certificate, answering 0 to any query. HTTP/1.1
/// by hand: one request a connection.
async fn prometheus_over_tls() -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(include_bytes!("fixtures/tls/cert.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("fixtures/tls/key.pem")).unwrap();
    let crypto = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(crypto)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = json!({"status": "success", "data": {"resultType": "vector",
                    "result": [{"metric": {}, "value": [1700000000, "0"]}]}})
                .to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    address
}

/// A Canary at its 10% step whose one metric is the template `monitoring/errors`, whose
/// provider is `provider`, with the Secret `monitoring/prom-auth` holding `data`.
async fn at_ten_percent(provider: Value, data: Option<Value>) -> FakeCluster {
    let spec = json!({"analysis": {"metrics": [{"name": "errors",
        "templateRef": {"name": "errors", "namespace": "monitoring"},
        "thresholdRange": {"max": 1}}]}});
    let c = cluster_with(canary(spec), Some(deployment("podinfo:1")));
    c.put(
        TEMPLATE,
        json!({"apiVersion": "fledge.dev/v1alpha1", "kind": "MetricTemplate",
               "metadata": {"name": "errors", "namespace": "monitoring"},
               "spec": {"provider": provider, "query": "sum(errors)"}}),
    );
    if let Some(data) = data {
        c.put(
            SECRET,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "prom-auth", "namespace": "monitoring"},
                   "data": data}),
        );
    }
    c.set_metric("errors", MetricReading::Value { value: 0.0 });
    progressing_at(&c, 10).await;
    c
}

/// The controller's `--prometheus` in these tests: nothing listens there (the discard port).
const NO_PROMETHEUS: &str = "http://127.0.0.1:9";

/// One analysis at the 10% step with the live Prometheus client.
async fn analyse(c: &FakeCluster) {
    let prometheus = Prometheus::new(NO_PROMETHEUS, Duration::from_secs(2), 0).unwrap();
    let ctx = c.context_with(Arc::new(LiveObserver::new(prometheus, Webhooks::new())));
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&ctx).await.unwrap();
}

fn message(c: &FakeCluster) -> String {
    c.get(CANARY).unwrap()["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_template_secrets_token_is_sent_as_a_bearer_token() {
    let address = prometheus_requiring("Bearer s3cret").await;
    // base64("s3cret")
    let c = at_ten_percent(
        json!({"type": "prometheus", "address": address, "secretRef": {"name": "prom-auth"}}),
        Some(json!({"token": "czNjcmV0"})),
    )
    .await;
    analyse(&c).await;
    assert_eq!(c.routes().unwrap().canary, 20, "{}", message(&c));
    assert_eq!(c.get(CANARY).unwrap()["status"]["failedChecks"], 0);
}

#[tokio::test]
async fn a_template_secrets_username_and_password_are_sent_as_basic_authentication() {
    // base64("admin:pw")
    let address = prometheus_requiring("Basic YWRtaW46cHc=").await;
    let c = at_ten_percent(
        json!({"type": "prometheus", "address": address, "secretRef": {"name": "prom-auth"}}),
        // base64("admin"), base64("pw")
        Some(json!({"username": "YWRtaW4=", "password": "cHc="})),
    )
    .await;
    analyse(&c).await;
    assert_eq!(c.routes().unwrap().canary, 20, "{}", message(&c));
}

#[tokio::test]
async fn a_missing_secret_or_key_is_a_failed_check_naming_them_not_a_promotion() {
    for (data, expected) in [
        (None, "Secret monitoring/prom-auth not found"),
        (
            Some(json!({"username": "YWRtaW4="})),
            "Secret monitoring/prom-auth has no key `password`",
        ),
    ] {
        let address = prometheus_requiring("Basic YWRtaW46cHc=").await;
        let c = at_ten_percent(
            json!({"type": "prometheus", "address": address, "secretRef": {"name": "prom-auth"}}),
            data,
        )
        .await;
        analyse(&c).await;
        let message = message(&c);
        assert!(message.contains(expected), "{message}");
        assert!(events(&c)[0].starts_with("EVENT Warning Halted"));
        assert_eq!(c.get(CANARY).unwrap()["status"]["failedChecks"], 1);
        assert_eq!(c.routes().unwrap().canary, 10);
    }
}

#[tokio::test]
async fn insecure_skip_verify_accepts_a_self_signed_certificate_that_is_refused_without_it() {
    for skip in [true, false] {
        let address = prometheus_over_tls().await;
        let c = at_ten_percent(
            json!({"type": "prometheus", "address": address, "insecureSkipVerify": skip}),
            None,
        )
        .await;
        analyse(&c).await;
        let message = message(&c);
        if skip {
            assert_eq!(c.routes().unwrap().canary, 20, "{message}");
        } else {
            assert_eq!(c.routes().unwrap().canary, 10);
            assert!(
                message.contains("Prometheus unreachable") && message.contains("certificate"),
                "{message}"
            );
        }
    }
}

#[tokio::test]
async fn a_canarys_metrics_server_is_asked_instead_of_the_controllers_prometheus() {
    let own = loopback_prometheus(None, "100").await;
    for server in [Some(own), None] {
        let mut spec = json!({});
        if let Some(server) = &server {
            spec["metricsServer"] = json!(server);
        }
        let c = cluster_with(canary(spec), Some(deployment("podinfo:1")));
        progressing_at(&c, 10).await;
        analyse(&c).await;
        let message = message(&c);
        if server.is_some() {
            assert_eq!(c.routes().unwrap().canary, 20, "{message}");
        } else {
            // The built-in success rate went to the controller's Prometheus.
            assert!(message.contains(NO_PROMETHEUS), "{message}");
            assert_eq!(c.routes().unwrap().canary, 10);
        }
    }
}
