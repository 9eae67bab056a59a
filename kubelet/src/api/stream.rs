//! `pods/exec`, `pods/attach` and `pods/portforward`, the kubelet's way: the agent asks the
//! CRI for a streaming URL (Exec, Attach, PortForward) and proxies the client's upgraded
//! connection to it, as the kubelet does since it stopped redirecting clients. Whatever
//! the client asked for (SPDY/3.1, or WebSocket with the v4/v5 channel protocols) is
//! passed through with its headers; the CRI's streaming server speaks the protocol, and the
//! agent never parses a frame. So `kubectl exec`, `attach` and `port-forward` work with
//! every CRI endpoint whose streaming server the agent can reach (rrun-cri's, containerd's).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use cri_proto::api;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::{bad_request, not_found, status_error};
use crate::cri::req;
use crate::state::Shared;

/// Headers of the upgrade that the streaming server needs; nothing else crosses (the
/// client's bearer token is for the agent, not for the runtime).
const PASSED: &[&str] = &[
    "connection",
    "upgrade",
    "x-stream-protocol-version",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "origin",
];

fn unavailable(message: String) -> Response {
    status_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
        None,
    )
}

fn flag(q: &[(String, String)], key: &str) -> bool {
    super::query_bool(q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()))
}

fn all<'a>(q: &'a [(String, String)], key: &'a str) -> impl Iterator<Item = &'a str> {
    q.iter()
        .filter(move |(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Serves `sub` (`exec`, `attach`, `portforward`) of pod `ns/name`; `q` is the query,
/// repeated keys kept (`command`, `ports`).
pub async fn serve(
    shared: &Shared,
    sub: &str,
    ns: &str,
    name: &str,
    q: Vec<(String, String)>,
    mut http_req: Request,
) -> Response {
    let pod = shared.lock().pods.get(&format!("{ns}/{name}")).cloned();
    let Some(pod) = pod else {
        return not_found("pods", name);
    };
    let running = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Running");
    if !running {
        return bad_request(format!(
            "unable to upgrade connection: pod {name} is not running"
        ));
    }
    let Some(mut client) = shared.cri.get().await else {
        return unavailable("the container runtime is unreachable".into());
    };
    let url = if sub == "portforward" {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let sandboxes = client
            .runtime
            .list_pod_sandbox(req(api::ListPodSandboxRequest {
                filter: Some(api::PodSandboxFilter {
                    state: Some(api::PodSandboxStateValue {
                        state: api::PodSandboxState::SandboxReady as i32,
                    }),
                    label_selector: [(crate::spec::POD_UID.to_string(), uid)].into(),
                    ..Default::default()
                }),
            }))
            .await;
        let Some(sb) = sandboxes
            .ok()
            .and_then(|r| r.into_inner().items.into_iter().next())
        else {
            return bad_request(format!(
                "unable to upgrade connection: pod {name} has no running sandbox"
            ));
        };
        let mut ports = Vec::new();
        for p in all(&q, "ports") {
            match p.parse::<i32>() {
                Ok(n) if (1..=65535).contains(&n) => ports.push(n),
                _ => return bad_request(format!("invalid port {p:?}")),
            }
        }
        client
            .runtime
            .port_forward(req(api::PortForwardRequest {
                pod_sandbox_id: sb.id,
                port: ports,
            }))
            .await
            .map(|r| r.into_inner().url)
    } else {
        let spec = pod.spec.clone().unwrap_or_default();
        let default = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
            .cloned()
            .or_else(|| spec.containers.first().map(|c| c.name.clone()));
        let container = q
            .iter()
            .find(|(k, _)| k == "container")
            .map(|(_, v)| v.clone())
            .or(default)
            .unwrap_or_default();
        let id = pod
            .status
            .as_ref()
            .and_then(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
                    .find(|c| c.name == container)
            })
            .and_then(|c| {
                let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
                running.then(|| c.container_id.clone()).flatten()
            })
            .and_then(|id| id.split_once("://").map(|(_, id)| id.to_string()));
        let Some(id) = id else {
            return bad_request(format!(
                "unable to upgrade connection: container not found (\"{container}\")"
            ));
        };
        let (stdin, stdout, stderr, tty) = (
            flag(&q, "stdin"),
            flag(&q, "stdout"),
            flag(&q, "stderr"),
            flag(&q, "tty"),
        );
        if sub == "exec" {
            let cmd: Vec<String> = all(&q, "command").map(str::to_string).collect();
            if cmd.is_empty() {
                return bad_request("you must specify at least 1 command".into());
            }
            client
                .runtime
                .exec(req(api::ExecRequest {
                    container_id: id,
                    cmd,
                    tty,
                    stdin,
                    stdout,
                    stderr: stderr && !tty,
                }))
                .await
                .map(|r| r.into_inner().url)
        } else {
            client
                .runtime
                .attach(req(api::AttachRequest {
                    container_id: id,
                    stdin,
                    tty,
                    stdout,
                    stderr: stderr && !tty,
                }))
                .await
                .map(|r| r.into_inner().url)
        }
    };
    let url = match url {
        Ok(u) => u,
        Err(e) => return bad_request(format!("unable to upgrade connection: {}", e.message())),
    };
    let client_upgrade = hyper::upgrade::on(&mut http_req);
    let (method, headers) = (http_req.method().clone(), http_req.headers().clone());
    drop(http_req);
    match proxy(&url, method, &headers).await {
        Ok((resp, upstream)) => {
            if let Some(upstream) = upstream {
                tokio::spawn(async move {
                    let (Ok(a), Ok(b)) = (client_upgrade.await, upstream.await) else {
                        return;
                    };
                    let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                });
            }
            resp
        }
        Err(e) => unavailable(format!(
            "unable to upgrade connection: the streaming server at {url}: {e}"
        )),
    }
}

type Upgrade = hyper::upgrade::OnUpgrade;

/// Sends the client's upgrade request to the streaming server's `url`; the answer for the
/// client, and the server's side of the upgraded connection when it switched protocols.
async fn proxy(
    url: &str,
    method: axum::http::Method,
    headers: &axum::http::HeaderMap,
) -> Result<(Response, Option<Upgrade>), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// streaming URLs are supported".into());
    }
    let host = uri.host().ok_or("no host in the URL")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut up = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, format!("{host}:{port}"));
    for (k, v) in headers {
        if PASSED.contains(&k.as_str()) {
            up = up.header(k, v);
        }
    }
    let up = up
        .body(http_body_util::Empty::<axum::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let mut resp = sender.send_request(up).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut out = Response::builder().status(status);
    for (k, v) in resp.headers() {
        let keep = status == StatusCode::SWITCHING_PROTOCOLS
            || k == header::CONTENT_TYPE
            || k == HeaderName::from_static("x-stream-protocol-version");
        if keep {
            out = out.header(k, v);
        }
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let upgrade = hyper::upgrade::on(&mut resp);
        let r = out.body(Body::empty()).map_err(|e| e.to_string())?;
        return Ok((r, Some(upgrade)));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let r = out
        .body(Body::from(body))
        .map_err(|e| e.to_string())?
        .into_response();
    Ok((r, None))
}

/// `a=b&a=c` with repeats kept (`command`, `ports`), percent-decoded.
pub fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    query.map(super::front::url_pairs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_and_flags() {
        let q = pairs(Some(
            "command=sh&command=-c&command=echo%20hi&tty=true&stdin=1&stdout=0",
        ));
        assert_eq!(
            all(&q, "command").collect::<Vec<_>>(),
            ["sh", "-c", "echo hi"]
        );
        assert!(flag(&q, "tty") && flag(&q, "stdin") && !flag(&q, "stdout"));
    }
}
