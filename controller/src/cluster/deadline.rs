//! A deadline on every API call but watches. kube's client sets no read timeout (a watch is a
//! request that stays open for minutes), so a call the API server never answers would hold its
//! reconcile, and with it the Canary, forever while the Lease keeps being renewed. A call past
//! its deadline fails like any other failed read or write: the reconcile ends with an error
//! naming the call, is logged and counted, and is retried with the backoff.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use tower::BoxError;

/// How long one API call may take, its answer's body included. The API server ends a request
/// that is not a watch after its own `--request-timeout` (a minute by default); a call that
/// has had no answer for half that is held by a connection that is gone, not by a busy
/// server, and every call the controller makes is retried from scratch.
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A call the API server did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("no answer to {method} {path} within {}s", after.as_secs_f64())]
pub struct CallTimedOut {
    pub method: String,
    pub path: String,
    pub after: Duration,
}

/// `client` with every request but a watch bounded by `after`; watches keep their own
/// behaviour (kube-runtime's watcher restarts them).
pub fn bounded(client: kube::Client, after: Duration) -> kube::Client {
    let namespace = client.default_namespace().to_string();
    let service = tower::service_fn(move |request: Request<Body>| {
        let client = client.clone();
        async move {
            if is_watch(&request) {
                return client.send(request).await.map_err(BoxError::from);
            }
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            // The body is read here, under the deadline: a server can stall after the headers.
            let call = async {
                let (parts, body) = client.send(request).await?.into_parts();
                let bytes = body.collect_bytes().await?;
                Ok::<_, kube::Error>(Response::from_parts(parts, Body::from(bytes)))
            };
            match tokio::time::timeout(after, call).await {
                Ok(answer) => answer.map_err(BoxError::from),
                Err(_) => Err(Box::new(CallTimedOut {
                    method,
                    path,
                    after,
                }) as BoxError),
            }
        }
    });
    kube::Client::new(service, namespace)
}

fn is_watch<B>(request: &Request<B>) -> bool {
    request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_watches_are_left_unbounded() {
        let request = |uri: &str| Request::get(uri).body(()).unwrap();
        assert!(is_watch(&request(
            "/api/v1/namespaces/test/pods?watch=true&resourceVersion=1"
        )));
        assert!(is_watch(&request("/api/v1/pods?labelSelector=a&watch=1")));
        assert!(!is_watch(&request(
            "/api/v1/namespaces/test/pods?limit=500"
        )));
        assert!(!is_watch(&request(
            "/api/v1/namespaces/test/pods?labelSelector=watch%3Dtrue"
        )));
    }
}
