//! The live simulator's HTTP API (`fledge-sim serve`), as the standalone controller uses it in
//! place of the Kubernetes API: the workloads, scaling the target, promoting the primary, and
//! the routing objects the router writes.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::http_errors::{error_chain, excerpt};
use crate::rollout::Readiness;

/// How long one call to the mesh may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A call to the mesh API that failed: which call, and why.
#[derive(Debug, thiserror::Error)]
#[error("{call} on {base}: {reason}")]
pub struct MeshError {
    /// `METHOD /path`.
    pub call: String,
    pub base: String,
    pub reason: String,
}

/// The workloads as the simulator reports them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Workloads {
    /// The target's revision (its pod template's).
    pub revision: String,
    pub canary: Replicas,
    pub primary: Replicas,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct Replicas {
    pub ready: u32,
    pub desired: u32,
}

impl From<Replicas> for Readiness {
    fn from(r: Replicas) -> Self {
        Readiness {
            ready: r.ready,
            desired: r.desired,
        }
    }
}

/// A client of one live simulator.
#[derive(Clone, Debug)]
pub struct MeshApi {
    base: String,
    http: reqwest::Client,
}

impl MeshApi {
    /// A client for the simulator at `base` (`http://127.0.0.1:9464`).
    pub fn new(base: &str) -> Result<Self, MeshError> {
        let base = base.trim_end_matches('/').to_string();
        let fail = |reason: String| MeshError {
            call: "connecting".into(),
            base: base.clone(),
            reason,
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(fail("expected an http:// or https:// URL".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(MeshApi { base, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /workloads`.
    pub async fn workloads(&self) -> Result<Workloads, MeshError> {
        self.call(reqwest::Method::GET, "/workloads", None).await
    }

    /// `PUT /workloads/canary/scale`: the target to `replicas` pods.
    pub async fn scale_canary(&self, replicas: u32) -> Result<Workloads, MeshError> {
        let body = serde_json::json!({ "replicas": replicas }).to_string();
        self.call(reqwest::Method::PUT, "/workloads/canary/scale", Some(body))
            .await
    }

    /// `POST /workloads/primary/promote`: the target's template to the primary.
    pub async fn promote_primary(&self) -> Result<Workloads, MeshError> {
        self.call(reqwest::Method::POST, "/workloads/primary/promote", None)
            .await
    }

    /// `PUT /objects`: the router's objects, as JSON documents; returns the mesh's warnings.
    pub async fn put_objects(&self, objects: &[Value]) -> Result<Vec<String>, MeshError> {
        let docs: Vec<String> = objects.iter().map(Value::to_string).collect();
        #[derive(Deserialize)]
        struct Applied {
            #[serde(default)]
            warnings: Vec<String>,
        }
        let applied: Applied = self
            .call(reqwest::Method::PUT, "/objects", Some(docs.join("\n---\n")))
            .await?;
        Ok(applied.warnings)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T, MeshError> {
        let fail = |reason: String| MeshError {
            call: format!("{method} {path}"),
            base: self.base.clone(),
            reason,
        };
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(|e| fail(error_chain(&e)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| fail(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(fail(format!("answered {status}: {}", excerpt(&text))));
        }
        serde_json::from_str(&text).map_err(|e| {
            fail(format!(
                "the answer is not what the live simulator sends ({e}): {}",
                excerpt(&text)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::{get, post, put};

    /// A fake simulator answering every call with `status` and `body`.
    async fn fake(status: StatusCode, body: &'static str) -> MeshApi {
        let answer = move || async move { (status, body) };
        let app = Router::new()
            .route("/workloads", get(answer))
            .route("/workloads/canary/scale", put(answer))
            .route("/workloads/primary/promote", post(answer))
            .route("/objects", put(answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        MeshApi::new(&format!("http://{address}")).unwrap()
    }

    const WORKLOADS: &str = r#"{"revision":"rev-2","canary":{"ready":1,"desired":2},
        "primary":{"ready":4,"desired":4},"canary_weight":0}"#;

    #[tokio::test]
    async fn the_workloads_are_read_as_the_simulator_reports_them() {
        let mesh = fake(StatusCode::OK, WORKLOADS).await;
        let w = mesh.workloads().await.unwrap();
        assert_eq!(w.revision, "rev-2");
        assert_eq!(
            Readiness::from(w.canary),
            Readiness {
                ready: 1,
                desired: 2
            }
        );
        assert_eq!(w.primary.desired, 4);
    }

    #[tokio::test]
    async fn a_refused_call_is_an_error_naming_the_call_and_the_answer() {
        let mesh = fake(
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"error": "no canary"}"#,
        )
        .await;
        let e = mesh.scale_canary(2).await.unwrap_err().to_string();
        assert!(
            e.starts_with("PUT /workloads/canary/scale on http://127.0.0.1:"),
            "{e}"
        );
        assert!(e.contains("422") && e.contains("no canary"), "{e}");
        let e = mesh.promote_primary().await.unwrap_err().to_string();
        assert!(e.starts_with("POST /workloads/primary/promote"), "{e}");
    }

    #[tokio::test]
    async fn an_answer_that_is_not_the_simulators_is_an_error_naming_the_call() {
        let mesh = fake(StatusCode::OK, "<html>a proxy's page</html>").await;
        let e = mesh.workloads().await.unwrap_err().to_string();
        assert!(e.starts_with("GET /workloads on "), "{e}");
        assert!(
            e.contains("not what the live simulator sends") && e.contains("proxy's page"),
            "{e}"
        );
        let e = mesh.put_objects(&[]).await.unwrap_err().to_string();
        assert!(e.starts_with("PUT /objects on "), "{e}");
    }

    #[tokio::test]
    async fn a_mesh_that_does_not_answer_is_an_error_naming_the_call() {
        // A port just freed: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mesh = MeshApi::new(&format!("http://127.0.0.1:{port}/")).unwrap();
        let e = mesh.workloads().await.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("GET /workloads on http://127.0.0.1:{port}: ")),
            "{e}"
        );
    }

    #[test]
    fn a_mesh_address_without_a_scheme_is_refused() {
        let e = MeshApi::new("127.0.0.1:9464").unwrap_err().to_string();
        assert!(e.contains("expected an http:// or https:// URL"), "{e}");
    }
}
