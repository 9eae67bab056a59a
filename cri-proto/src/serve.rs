//! Serving both CRI services on a unix socket, the way every client finds them.
//!
//! What this adds to a plain tonic server, and why:
//! - any `:authority` is accepted ([`crate::authority`]): kubelets send the socket's path;
//! - `runtime.v1alpha2` beside `runtime.v1`: kubelets 1.20 to 1.25 ask for v1alpha2 first
//!   (or only), as containerd 1.6 and 1.7 serve both. The two APIs have the same messages
//!   with the same field numbers (v1 only adds fields and calls), so a v1alpha2 call is the
//!   v1 call under another path: the path is rewritten and the handler is told, through
//!   [`ApiVersion`] in the request's extensions, which version it answers;
//! - a panic in one handler answers that call with INTERNAL and is logged, and the server
//!   goes on serving (the release profile unwinds for this);
//! - a call that runs past the caller's `grpc-timeout` answers DEADLINE_EXCEEDED, as gRPC
//!   servers do (tonic's own enforcement answers CANCELLED and cannot be changed, so the
//!   header reaches tonic renamed, see [`crate::authority`]); the handler's future is
//!   dropped then, and [`Deadline`] in its request tells it when that will be.

use std::any::Any;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;

use crate::api::image_service_server::{ImageService, ImageServiceServer};
use crate::api::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use crate::{bind_unix, Error, MAX_MESSAGE_SIZE};

/// The CRI API version a call was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V1alpha2,
}

impl ApiVersion {
    /// The version `req` was made in (v1 unless the server marked it otherwise).
    pub fn of<T>(req: &tonic::Request<T>) -> Self {
        req.extensions()
            .get::<ApiVersion>()
            .copied()
            .unwrap_or(ApiVersion::V1)
    }

    /// `VersionResponse.runtime_api_version` for this version.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "v1",
            ApiVersion::V1alpha2 => "v1alpha2",
        }
    }
}

/// The name `grpc-timeout` has when it reaches the server's layers (see the module doc).
pub(crate) const DEADLINE_HEADER: &str = "rrun-grpc-timeout";

/// When the caller's deadline passes, in a request's extensions when it set one. Past it
/// the call is answered DEADLINE_EXCEEDED and its handler's future dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    pub fn of<T>(req: &tonic::Request<T>) -> Option<Self> {
        req.extensions().get::<Deadline>().copied()
    }
}

const V1ALPHA2_PREFIX: &str = "/runtime.v1alpha2.";
const V1_PREFIX: &str = "/runtime.v1.";

/// Serves `runtime` and `image` on the unix socket at `path` until `shutdown` completes;
/// the socket file is removed afterwards.
pub async fn serve<R, I>(
    path: &Path,
    runtime: R,
    image: I,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    R: RuntimeService,
    I: ImageService,
{
    let incoming = bind_unix(path)?.map(|conn| conn.map(crate::authority::AnyAuthority::new));
    let result = tonic::transport::Server::builder()
        .layer(DeadlineLayer)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_answer,
        ))
        .layer(tower::util::MapRequestLayer::new(route_v1alpha2))
        .add_service(
            RuntimeServiceServer::new(runtime)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            ImageServiceServer::new(image)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|source| Error::Serve {
            path: path.to_path_buf(),
            source,
        });
    let _ = std::fs::remove_file(path);
    result
}

/// `/runtime.v1alpha2.S/M` → `/runtime.v1.S/M`, marked [`ApiVersion::V1alpha2`].
fn route_v1alpha2<B>(mut req: http::Request<B>) -> http::Request<B> {
    let Some(rest) = req.uri().path().strip_prefix(V1ALPHA2_PREFIX) else {
        return req;
    };
    let path = format!("{V1_PREFIX}{rest}");
    let mut parts = req.uri().clone().into_parts();
    match http::uri::PathAndQuery::try_from(path) {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(_) => return req,
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
        req.extensions_mut().insert(ApiVersion::V1alpha2);
    }
    req
}

/// The answer to a call whose handler panicked: a trailers-only gRPC response with
/// INTERNAL, as grpc-go's server gives for a recovered panic.
fn panic_answer(err: Box<dyn Any + Send + 'static>) -> http::Response<String> {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = %what, "a CRI handler panicked; the call answers INTERNAL");
    trailers_only(
        tonic::Code::Internal,
        &format!("internal error: the server's handler panicked: {what}"),
    )
}

/// A gRPC answer with no message: the status in the headers.
fn trailers_only<B: Default>(code: tonic::Code, message: &str) -> http::Response<B> {
    let mut resp = http::Response::new(B::default());
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", http::HeaderValue::from(code as i32));
    if let Ok(v) = http::HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", v);
    }
    resp
}

/// `grpc-timeout`'s value: at most 8 digits and a unit (gRPC over HTTP/2).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Enforces the caller's deadline (the renamed `grpc-timeout`).
#[derive(Clone, Copy)]
struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService { inner }
    }
}

#[derive(Clone)]
struct DeadlineService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for DeadlineService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let timeout = req
            .headers_mut()
            .remove(DEADLINE_HEADER)
            .and_then(|v| v.to_str().ok().and_then(parse_grpc_timeout));
        let Some(timeout) = timeout else {
            return Box::pin(self.inner.call(req));
        };
        let path = req.uri().path().to_string();
        req.extensions_mut()
            .insert(Deadline(Instant::now() + timeout));
        let call = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(answer) => answer,
                Err(_) => {
                    tracing::info!(call = %path, ?timeout, "the caller's deadline passed; answered DEADLINE_EXCEEDED");
                    Ok(trailers_only(
                        tonic::Code::DeadlineExceeded,
                        &format!(
                            "{path} did not finish within the caller's deadline ({timeout:?})"
                        ),
                    ))
                }
            }
        })
    }
}

/// gRPC's percent-encoding of `grpc-message` (printable ASCII but `%` as is).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1alpha2_paths_are_routed_to_v1_and_marked() {
        let req = http::Request::builder()
            .uri("http://localhost/runtime.v1alpha2.RuntimeService/Version")
            .body(())
            .expect("request");
        let req = route_v1alpha2(req);
        assert_eq!(req.uri().path(), "/runtime.v1.RuntimeService/Version");
        assert_eq!(
            req.extensions().get::<ApiVersion>(),
            Some(&ApiVersion::V1alpha2)
        );

        let req = http::Request::builder()
            .uri("/runtime.v1.ImageService/ListImages")
            .body(())
            .expect("request");
        let req = route_v1alpha2(req);
        assert_eq!(req.uri().path(), "/runtime.v1.ImageService/ListImages");
        assert_eq!(req.extensions().get::<ApiVersion>(), None);
    }

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "100", "123456789m", "-1S", "+1S", "1x", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn panic_answer_is_grpc_internal() {
        let resp = panic_answer(Box::new("boom 100%\nnext".to_string()));
        assert_eq!(resp.status(), http::StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "13");
        let msg = resp.headers()["grpc-message"].to_str().expect("ascii");
        assert!(msg.ends_with("boom 100%25%0Anext"), "{msg}");
    }
}
