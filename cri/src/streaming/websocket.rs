//! The Kubernetes channel protocols over WebSocket.
//!
//! Every binary message is one byte of channel number and then the data. Exec and attach
//! (remotecommand) use channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; `v5`
//! adds a message `[255, channel]` by which the client closes its side of a channel.
//! Port forwarding uses channels `2i` (data) and `2i + 1` (error) for the i-th port, each
//! opened by the server with the port in two little-endian bytes. The sessions see none
//! of this: they get a [`Link`] of numbered frames.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role};
use tokio_tungstenite::WebSocketStream;

use super::http_server::{text, Reply};
use super::remotecommand::{Target, Version};
use super::{Backend, Request};

/// The numbered frames of one session, whatever carries them.
pub struct Link {
    /// From the client: (channel, data). Ends when the client has gone.
    pub incoming: mpsc::Receiver<(u8, Vec<u8>)>,
    /// To the client. The session ends by dropping every sender.
    pub outgoing: mpsc::Sender<(u8, Vec<u8>)>,
}

/// The channel by which a `v5` client closes one of its channels.
pub const CLOSE_CHANNEL: u8 = 255;

/// Subprotocols of exec and attach, best first.
const REMOTECOMMAND: &[(&str, Version)] = &[
    ("v5.channel.k8s.io", Version::V5),
    ("v4.channel.k8s.io", Version::V4),
    ("v3.channel.k8s.io", Version::V3),
    ("v2.channel.k8s.io", Version::V2),
    ("channel.k8s.io", Version::V1),
];

/// Subprotocols of port forwarding (the kubelet's: the binary v4 and the plain one).
const PORTFORWARD: &[&str] = &["v4.channel.k8s.io", "channel.k8s.io"];

/// The close frame that ends a session: status 1000, as the kubelet's streaming server
/// sends it. kubectl's v5 client takes a close without a status (1005) for a broken
/// stream and fails the command even after it has read the exit status.
fn normal_close() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }
}

/// How long the server waits for the client's answer to its close message.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub fn is_upgrade(req: &hyper::Request<Incoming>) -> bool {
    req.headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The protocols the client offers, in its order.
fn offered(req: &hyper::Request<Incoming>) -> Vec<String> {
    req.headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Answers the handshake and runs the session on the upgraded connection.
pub fn upgrade(
    mut req: hyper::Request<Incoming>,
    request: Request,
    backend: Arc<dyn Backend>,
) -> Reply {
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "the WebSocket handshake has no Sec-WebSocket-Key",
        );
    };
    let offered = offered(&req);
    let supported: Vec<&str> = match request {
        Request::PortForward(_) => PORTFORWARD.to_vec(),
        _ => REMOTECOMMAND.iter().map(|(p, _)| *p).collect(),
    };
    // A client offering nothing gets the plain channel protocol, as from the kubelet.
    let chosen = if offered.is_empty() {
        None
    } else {
        match offered.iter().find(|p| supported.contains(&p.as_str())) {
            Some(p) => Some(p.clone()),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                    "none of the WebSocket subprotocols {offered:?} is supported (supported: {})",
                    supported.join(", ")
                ),
                )
            }
        }
    };
    let session = match request {
        Request::PortForward(pf) => {
            let ports = match super::portforward::ports_of(req.uri().query(), &pf.port) {
                Ok(p) => p,
                Err(e) => return text(StatusCode::BAD_REQUEST, e),
            };
            Session::PortForward(pf.pod_sandbox_id, ports)
        }
        other => {
            let version = chosen
                .as_deref()
                .and_then(|c| REMOTECOMMAND.iter().find(|(p, _)| *p == c))
                .map_or(Version::V1, |(_, v)| *v);
            let target = match super::remotecommand::target_of(other, &*backend) {
                Ok(t) => t,
                Err(e) => return text(StatusCode::CONFLICT, e),
            };
            Session::RemoteCommand(target, version)
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("streaming: the upgrade failed: {e}");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, out_rx) = mpsc::channel(16);
        let link = Link {
            incoming: in_rx,
            outgoing: out_tx,
        };
        let run = async move {
            match session {
                Session::RemoteCommand(target, version) => {
                    super::remotecommand::run(target, version, link, backend).await
                }
                Session::PortForward(pod, ports) => {
                    super::portforward::run(&pod, &ports, link, backend).await
                }
            }
        };
        tokio::join!(run, pump(ws, in_tx, out_rx));
    });
    let mut r = text(StatusCode::SWITCHING_PROTOCOLS, "");
    *r.body_mut() = Default::default();
    let h = r.headers_mut();
    h.remove(hyper::header::CONTENT_TYPE);
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = chosen.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert("sec-websocket-protocol", p);
    }
    r
}

enum Session {
    RemoteCommand(Target, Version),
    PortForward(String, Vec<u16>),
}

/// Moves frames between the socket and the session until both are done: the session's
/// frames go out as they come, and once it drops its senders the socket is closed.
async fn pump<S>(
    mut ws: WebSocketStream<S>,
    in_tx: mpsc::Sender<(u8, Vec<u8>)>,
    mut out_rx: mpsc::Receiver<(u8, Vec<u8>)>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut in_tx = Some(in_tx);
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some((ch, data)) => {
                    let mut msg = Vec::with_capacity(1 + data.len());
                    msg.push(ch);
                    msg.extend_from_slice(&data);
                    if ws.send(Message::binary(msg)).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    if let (Some(tx), Some((&ch, rest))) = (&in_tx, data.split_first()) {
                        // A session that no longer reads has ended: the rest is dropped.
                        if tx.send((ch, rest.to_vec())).await.is_err() {
                            in_tx = None;
                        }
                    }
                }
                Some(Ok(_)) => {}
                // The client has gone (or closed): the session learns it from its link.
                Some(Err(_)) | None => {
                    drop(in_tx.take());
                    // Still send what the session has left, unless the socket is dead.
                    while let Some((ch, data)) = out_rx.recv().await {
                        let mut msg = vec![ch];
                        msg.extend_from_slice(&data);
                        if ws.send(Message::binary(msg)).await.is_err() {
                            return;
                        }
                    }
                    let _ = ws.close(Some(normal_close())).await;
                    return;
                }
            },
        }
    }
    drop(in_tx);
    let _ = ws.close(Some(normal_close())).await;
    // The client's answer to the close, then the end of the stream.
    let _ = tokio::time::timeout(CLOSE_WAIT, async { while ws.next().await.is_some() {} }).await;
}
