//! The HTTP/1.1 side of the streaming server: one connection per session, the token in
//! the path, refusals as plain-text HTTP errors, then the upgrade.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::{Backend, RefusedError, StreamServer, HANDSHAKE_TIMEOUT};

pub type Reply = Response<Full<Bytes>>;

/// Accepts connections until the runtime ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<StreamServer>,
    backend: Arc<dyn Backend>,
) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // EMFILE and friends: the next accept may work once a session has ended.
                tracing::warn!("streaming server: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let server = server.clone();
        let backend = backend.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let reply = handle(req, &server, &backend);
                async move { Ok::<_, Infallible>(reply) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("streaming connection: {e}");
            }
        });
    }
}

/// A plain-text answer.
pub fn text(status: StatusCode, msg: impl Into<String>) -> Reply {
    let mut body = msg.into();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn handle(
    req: hyper::Request<Incoming>,
    server: &StreamServer,
    backend: &Arc<dyn Backend>,
) -> Reply {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "{path}: not a streaming endpoint (/exec/, /attach/ or /portforward/ and a token)"
            ),
        );
    }
    let request = match server.tokens.take(token) {
        Some(r) if r.kind() == kind => r,
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown or expired {kind} token {token:?}: a streaming URL works once, within {} s",
                    super::TOKEN_TTL.as_secs()
                ),
            )
        }
    };
    if let Err(e) = backend.check(&request) {
        let status = match e {
            RefusedError::NotFound(_) => StatusCode::NOT_FOUND,
            RefusedError::Conflict(_) => StatusCode::CONFLICT,
            RefusedError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        return text(status, e.to_string());
    }
    if super::websocket::is_upgrade(&req) {
        return super::websocket::upgrade(req, request, backend.clone());
    }
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return super::spdy_session::upgrade(req, request, backend.clone());
    }
    text(
        StatusCode::BAD_REQUEST,
        format!(
            "{kind}: the request must upgrade the connection (Upgrade: websocket, or SPDY/3.1)"
        ),
    )
}
