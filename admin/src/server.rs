//! The admin HTTP server: `/live`, `/ready` and `/metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The admin port of every mc component.
pub const ADMIN_PORT: u16 = 4191;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A readiness flag the component flips once it can serve (and back if it
/// no longer can). Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Starts not ready.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Sets the flag.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Reads the flag.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the admin server reports from.
#[derive(Debug, Clone)]
pub struct AdminState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

impl AdminState {
    /// Serves `registry` (complete: register everything first) and
    /// `readiness`.
    pub fn new(registry: Registry, readiness: Readiness) -> AdminState {
        AdminState {
            registry: Arc::new(registry),
            readiness,
        }
    }

    /// The readiness flag served on `/ready`.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match request.uri().path() {
            "/live" => text(StatusCode::OK, "live\n"),
            "/ready" if self.readiness.is_ready() => text(StatusCode::OK, "ready\n"),
            "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/metrics" => self.metrics(),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let mut body = String::with_capacity(16 * 1024);
        match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
            Ok(()) => {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
                response
            }
            Err(error) => {
                tracing::error!(%error, "encoding metrics failed");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encoding metrics failed\n",
                )
            }
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Binds `addr` and serves the admin endpoints until the task is dropped.
pub async fn serve(addr: SocketAddr, state: AdminState) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding admin server to {addr}"))?;
    serve_on(listener, state).await
}

/// Serves the admin endpoints on an already bound listener until the task
/// is dropped. Returns only if accepting fails.
pub async fn serve_on(listener: TcpListener, state: AdminState) -> Result<()> {
    let local = listener.local_addr().context("admin listener address")?;
    tracing::info!(addr = %local, "admin server listening");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) if is_transient(&error) => {
                tracing::warn!(%error, "admin accept failed, continuing");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            Err(error) => return Err(error).context("accepting admin connections"),
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = state.respond(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await
            {
                tracing::debug!(%peer, %error, "admin connection ended with an error");
            }
        });
    }
}

/// Accept errors that concern one connection or a passing resource
/// shortage, not the listener.
fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || matches!(error.raw_os_error(), Some(23 | 24)) // ENFILE, EMFILE
}
