//! The health and metrics listener (`--metrics-addr`, ingress-nginx's
//! port 10254): `/healthz` (the process serves), `/readyz` (the first
//! configuration is applied and the proxy listens: until then a new pod
//! gets no traffic) and `/metrics` (Prometheus text).

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpListener, sync::watch};
use tracing::debug;

use crate::metrics::Metrics;

/// Whether the daemon is ready for traffic.
#[derive(Debug, Default)]
pub struct Readiness {
    configured: AtomicBool,
    listening: AtomicBool,
    /// The XDP program is still loading (the proxy serves meanwhile).
    edge_loading: AtomicBool,
}

impl Readiness {
    /// Not ready.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The first configuration is applied (for the API server: after the
    /// first full list of every kind).
    pub fn set_configured(&self) {
        self.configured.store(true, Ordering::Release);
    }

    /// The proxy's listeners are bound.
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    /// Whether the XDP program is still loading.
    pub fn set_edge_loading(&self, loading: bool) {
        self.edge_loading.store(loading, Ordering::Release);
    }

    /// Ready: configured, listening, and the XDP program (if any) attached.
    pub fn is_ready(&self) -> bool {
        self.configured.load(Ordering::Acquire)
            && self.listening.load(Ordering::Acquire)
            && !self.edge_loading.load(Ordering::Acquire)
    }

    /// Why not ready, for the probe's body.
    fn explain(&self) -> &'static str {
        match (
            self.configured.load(Ordering::Acquire),
            self.listening.load(Ordering::Acquire),
            self.edge_loading.load(Ordering::Acquire),
        ) {
            (true, true, false) => "ready\n",
            (false, _, _) => "not ready: waiting for the first configuration\n",
            (true, false, _) => "not ready: the proxy is not listening yet\n",
            (true, true, true) => "not ready: the XDP program is loading\n",
        }
    }
}

/// Serves the probes and metrics on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!(%error, "metrics accept failed");
                    continue;
                }
            },
            () = crate::shutdown::stopped(&mut shutdown) => return,
        };
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = answer(&request, &metrics, &readiness);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = connection {
                debug!(%peer, %error, "metrics connection ended with an error");
            }
        });
    }
}

fn answer(
    request: &Request<Incoming>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let status = if readiness.is_ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, readiness.explain().into())
        }
        "/metrics" => {
            let mut response = text(StatusCode::OK, metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /healthz, /readyz, /metrics\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_configured_and_listening() {
        let readiness = Readiness::new();
        assert!(!readiness.is_ready());
        readiness.set_listening();
        assert!(!readiness.is_ready());
        assert!(readiness.explain().contains("first configuration"));
        readiness.set_configured();
        assert!(readiness.is_ready());
    }

    #[test]
    fn not_ready_while_the_xdp_program_loads() {
        let readiness = Readiness::new();
        readiness.set_edge_loading(true);
        readiness.set_configured();
        readiness.set_listening();
        assert!(!readiness.is_ready());
        assert!(readiness.explain().contains("XDP program is loading"));
        readiness.set_edge_loading(false);
        assert!(readiness.is_ready());
    }
}
