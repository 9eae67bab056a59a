//! Sessions over SPDY/3.1, the streams of the kubelet 1.20 era and of older kubectl.
//!
//! The client opens one SPDY stream per channel, named by its `streamType` header.
//! Remotecommand (`X-Stream-Protocol-Version: v4.channel.k8s.io` down to
//! `channel.k8s.io`): `error`, and `stdin`, `stdout`, `stderr`, `resize` as the request
//! asked; once all have come, the session runs over the same [`Link`] as a WebSocket one
//! (the client's end of its stdin stream closes the process's stdin; the resize stream
//! carries a sequence of JSON objects). Port forwarding (`portforward.k8s.io`): a pair
//! of streams per connection, `error` and `data`, with the same `port` and `requestID`
//! headers; each pair gets its own connection to the port in the pod, for as long as the
//! client keeps the SPDY connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::remotecommand::{Target, Version, ERROR, RESIZE, STDERR, STDIN, STDOUT};
use super::spdy::{self, Frame, HeaderCodec};
use hyper::header::HeaderValue;
use hyper::StatusCode;

use super::http_server::{text, Reply};
use super::websocket::{Link, CLOSE_CHANNEL};
use super::{Backend, Request};

/// Subprotocols of exec and attach over SPDY, best first.
pub const REMOTECOMMAND: &[(&str, Version)] = &[
    ("v4.channel.k8s.io", Version::V4),
    ("v3.channel.k8s.io", Version::V3),
    ("v2.channel.k8s.io", Version::V2),
    ("channel.k8s.io", Version::V1),
];

pub const PORTFORWARD: &str = "portforward.k8s.io";

/// How long the client has to open the streams of a session (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Data frames are sent in pieces of at most this much.
const CHUNK: usize = 32 * 1024;

/// RST_STREAM's REFUSED_STREAM status.
const REFUSED_STREAM: u32 = 3;

pub enum Session {
    RemoteCommand {
        target: Target,
        version: Version,
        /// The stream types the client must open.
        expected: Vec<u8>,
    },
    PortForward {
        pod: String,
    },
}

/// The channels a remotecommand client opens for these options.
pub fn expected_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool, v: Version) -> Vec<u8> {
    let mut e = vec![ERROR];
    for (on, ch) in [
        (stdin, STDIN),
        (stdout, STDOUT),
        (stderr && !tty, STDERR),
        (tty && v >= Version::V3, RESIZE),
    ] {
        if on {
            e.push(ch);
        }
    }
    e
}

fn channel_of(stream_type: &str) -> Option<u8> {
    Some(match stream_type {
        "stdin" => STDIN,
        "stdout" => STDOUT,
        "stderr" => STDERR,
        "error" => ERROR,
        "resize" => RESIZE,
        _ => return None,
    })
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Answers the upgrade to SPDY/3.1 and runs the session on the upgraded connection.
pub fn upgrade(
    mut req: hyper::Request<hyper::body::Incoming>,
    request: Request,
    backend: Arc<dyn Backend>,
) -> Reply {
    let offered: Vec<String> = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let supported: Vec<&str> = match request {
        Request::PortForward(_) => vec![PORTFORWARD],
        _ => REMOTECOMMAND.iter().map(|(p, _)| *p).collect(),
    };
    // No protocol asked: the oldest one, as the kubelet does.
    let chosen = match offered.iter().find(|p| supported.contains(&p.as_str())) {
        Some(p) => Some(p.clone()),
        None if offered.is_empty() => None,
        None => {
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"
                ),
            )
        }
    };
    let session = match request {
        Request::PortForward(pf) => Session::PortForward {
            pod: pf.pod_sandbox_id,
        },
        other => {
            let version = chosen
                .as_deref()
                .and_then(|c| REMOTECOMMAND.iter().find(|(p, _)| *p == c))
                .map_or(Version::V1, |(_, v)| *v);
            let (stdin, stdout, stderr, tty) = match &other {
                Request::Exec(e) => (e.stdin, e.stdout, e.stderr, e.tty),
                Request::Attach(a) => (a.stdin, a.stdout, a.stderr, a.tty),
                Request::PortForward(_) => (false, false, false, false),
            };
            let target = match super::remotecommand::target_of(other, &*backend) {
                Ok(t) => t,
                Err(e) => return text(StatusCode::CONFLICT, e),
            };
            Session::RemoteCommand {
                target,
                version,
                expected: expected_streams(stdin, stdout, stderr, tty, version),
            }
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(u) => run(hyper_util::rt::TokioIo::new(u), session, backend).await,
            Err(e) => tracing::debug!("streaming: the upgrade failed: {e}"),
        }
    });
    let mut r = text(StatusCode::SWITCHING_PROTOCOLS, "");
    *r.body_mut() = Default::default();
    let h = r.headers_mut();
    h.remove(hyper::header::CONTENT_TYPE);
    h.insert(hyper::header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Some(p) = chosen.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert("x-stream-protocol-version", p);
    }
    r
}

/// Runs one SPDY connection until the session is over or the client has gone.
pub async fn run<S>(io: S, session: Session, backend: Arc<dyn Backend>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let (frames, frames_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(write_frames(wr, frames_rx));
    let (done_tx, mut done) = mpsc::channel::<()>(1);
    let mut conn = Conn {
        codec: HeaderCodec::new(),
        frames,
        backend,
        state: match session {
            Session::RemoteCommand {
                target,
                version,
                expected,
            } => State::RemoteCommand(RemoteCommand::new(target, version, expected)),
            Session::PortForward { pod } => State::PortForward(PortForward {
                pod,
                pairs: HashMap::new(),
                to_conn: HashMap::new(),
                conns: tokio::task::JoinSet::new(),
            }),
        },
        done: Some(done_tx),
    };
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    let mut buf = Vec::with_capacity(64 * 1024);
    'conn: loop {
        let waiting = matches!(&conn.state, State::RemoteCommand(rc) if rc.session.is_some());
        tokio::select! {
            n = rd.read_buf(&mut buf) => {
                match n {
                    Ok(0) | Err(_) => break 'conn,
                    Ok(_) => {}
                }
                loop {
                    match spdy::parse(&buf) {
                        Ok(Some((frame, used))) => {
                            buf.drain(..used);
                            if !conn.handle(frame).await {
                                break 'conn;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!("streaming: bad SPDY frame: {e}");
                            break 'conn;
                        }
                    }
                }
            }
            _ = done.recv() => break 'conn,
            () = tokio::time::sleep_until(deadline), if waiting => {
                tracing::debug!("streaming: the client did not open its SPDY streams in time");
                break 'conn;
            }
        }
    }
    // The client's side has ended (or the session has): the session learns it, sends what
    // it has left, and the connection closes after it.
    conn.finish().await;
    drop(conn);
    let _ = writer.await;
}

async fn write_frames<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(f) = rx.recv().await {
        if wr.write_all(&f).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

struct Conn {
    codec: HeaderCodec,
    frames: mpsc::Sender<Vec<u8>>,
    backend: Arc<dyn Backend>,
    state: State,
    /// Given to the session: dropped when it is over.
    done: Option<mpsc::Sender<()>>,
}

enum State {
    RemoteCommand(RemoteCommand),
    PortForward(PortForward),
}

struct RemoteCommand {
    /// Waiting for its streams; taken when it starts.
    session: Option<(Target, Version)>,
    expected: Vec<u8>,
    /// Stream id → channel, and the server's output channels → stream id.
    streams: HashMap<u32, u8>,
    outputs: HashMap<u8, u32>,
    incoming: Option<mpsc::Sender<(u8, Vec<u8>)>>,
    incoming_rx: Option<mpsc::Receiver<(u8, Vec<u8>)>>,
    resize: Vec<u8>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RemoteCommand {
    fn new(target: Target, version: Version, expected: Vec<u8>) -> Self {
        let (tx, rx) = mpsc::channel(64);
        RemoteCommand {
            session: Some((target, version)),
            expected,
            streams: HashMap::new(),
            outputs: HashMap::new(),
            incoming: Some(tx),
            incoming_rx: Some(rx),
            resize: Vec::new(),
            task: None,
        }
    }
}

struct PortForward {
    pod: String,
    /// requestID → (port, data stream, error stream) while the pair is incomplete.
    pairs: HashMap<String, (u16, Option<u32>, Option<u32>)>,
    /// Data stream → the client's data for its connection.
    to_conn: HashMap<u32, mpsc::Sender<Vec<u8>>>,
    conns: tokio::task::JoinSet<()>,
}

impl Conn {
    async fn send(&self, frame: Vec<u8>) {
        let _ = self.frames.send(frame).await;
    }

    /// Handles one frame; false when the connection is to end.
    async fn handle(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::SynStream { stream, block, .. } => {
                let headers = match self.codec.decode(&block) {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::debug!("streaming: SPDY headers: {e}");
                        return false;
                    }
                };
                self.open_stream(stream, &headers).await;
            }
            Frame::SynReply { block, .. } | Frame::Headers { block, .. } => {
                // Decoded only to keep the zlib stream in step.
                if self.codec.decode(&block).is_err() {
                    return false;
                }
            }
            Frame::Data { stream, fin, data } => self.data(stream, fin, data).await,
            Frame::RstStream { stream, .. } => self.data(stream, true, Vec::new()).await,
            Frame::Ping(id) => self.send(spdy::ping(id)).await,
            Frame::GoAway { .. } => return false,
            Frame::Ignored(_) => {}
        }
        true
    }

    async fn open_stream(&mut self, stream: u32, headers: &[(String, String)]) {
        let stream_type = header(headers, "streamtype").unwrap_or("");
        let accepted = match &mut self.state {
            State::RemoteCommand(rc) => match channel_of(stream_type) {
                Some(ch) if rc.session.is_some() && !rc.outputs.contains_key(&ch) => {
                    rc.streams.insert(stream, ch);
                    if matches!(ch, STDOUT | STDERR | ERROR) {
                        rc.outputs.insert(ch, stream);
                    }
                    true
                }
                _ => false,
            },
            State::PortForward(pf) => {
                let port = header(headers, "port").and_then(|p| p.parse::<u16>().ok());
                // Clients without requestID open error, then data, stream by stream.
                let request = header(headers, "requestid").map_or_else(
                    || match stream_type {
                        "data" => stream.saturating_sub(2).to_string(),
                        _ => stream.to_string(),
                    },
                    str::to_string,
                );
                match (stream_type, port) {
                    ("data" | "error", Some(port)) if port > 0 => {
                        let pair = pf
                            .pairs
                            .entry(request.clone())
                            .or_insert((port, None, None));
                        if stream_type == "data" {
                            pair.1 = Some(stream);
                        } else {
                            pair.2 = Some(stream);
                        }
                        true
                    }
                    _ => false,
                }
            }
        };
        if !accepted {
            self.send(spdy::rst_stream(stream, REFUSED_STREAM)).await;
            return;
        }
        let block = self.codec.encode(&[]);
        self.send(spdy::syn_reply(stream, false, &block)).await;
        let start = match &mut self.state {
            State::RemoteCommand(rc) => rc
                .expected
                .iter()
                .all(|ch| rc.streams.values().any(|c| c == ch)),
            State::PortForward(pf) => {
                let complete: Vec<String> = pf
                    .pairs
                    .iter()
                    .filter(|(_, (_, d, e))| d.is_some() && e.is_some())
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in complete {
                    if let Some((port, Some(data), Some(error))) = pf.pairs.remove(&k) {
                        let (tx, rx) = mpsc::channel(16);
                        pf.to_conn.insert(data, tx);
                        let netns = self.backend.network_namespace(&pf.pod);
                        let frames = self.frames.clone();
                        let pod = pf.pod.clone();
                        pf.conns.spawn(async move {
                            forward_pair(netns, &pod, port, (data, error), rx, frames).await
                        });
                    }
                }
                false
            }
        };
        if start {
            self.start_remote_command();
        }
    }

    fn start_remote_command(&mut self) {
        let State::RemoteCommand(rc) = &mut self.state else {
            return;
        };
        let (Some((target, version)), Some(incoming)) = (rc.session.take(), rc.incoming_rx.take())
        else {
            return;
        };
        let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
        let link = Link {
            incoming,
            outgoing: out_tx,
        };
        let backend = self.backend.clone();
        let outputs = rc.outputs.clone();
        let frames = self.frames.clone();
        let done = self.done.take();
        rc.task = Some(tokio::spawn(async move {
            let session = super::remotecommand::run(target, version, link, backend);
            let relay = async {
                while let Some((ch, data)) = out_rx.recv().await {
                    if let Some(&id) = outputs.get(&ch) {
                        for chunk in data.chunks(CHUNK) {
                            let _ = frames.send(spdy::data(id, false, chunk)).await;
                        }
                    }
                }
                // The session is over: each output stream ends.
                for &id in outputs.values() {
                    let _ = frames.send(spdy::data(id, true, &[])).await;
                }
            };
            tokio::join!(session, relay);
            drop(done);
        }));
    }

    async fn data(&mut self, stream: u32, fin: bool, data: Vec<u8>) {
        match &mut self.state {
            State::RemoteCommand(rc) => {
                let (Some(&ch), Some(tx)) = (rc.streams.get(&stream), rc.incoming.as_ref()) else {
                    return;
                };
                match ch {
                    STDIN => {
                        if !data.is_empty() {
                            let _ = tx.send((STDIN, data)).await;
                        }
                        if fin {
                            let _ = tx.send((CLOSE_CHANNEL, vec![STDIN])).await;
                        }
                    }
                    RESIZE => {
                        rc.resize.extend_from_slice(&data);
                        for obj in split_json_objects(&mut rc.resize) {
                            let _ = tx.send((RESIZE, obj)).await;
                        }
                    }
                    _ => {}
                }
            }
            State::PortForward(pf) => {
                if let Some(tx) = pf.to_conn.get(&stream) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        pf.to_conn.remove(&stream);
                    }
                }
                if fin {
                    // The client's side of the connection ends: its write side is shut.
                    pf.to_conn.remove(&stream);
                }
            }
        }
    }

    /// The client has gone or the session is over: the session ends, what it has left to
    /// say goes out, and every port-forward connection closes.
    async fn finish(&mut self) {
        match &mut self.state {
            State::RemoteCommand(rc) => {
                rc.incoming = None;
                if let Some(t) = rc.task.take() {
                    let _ = t.await;
                }
            }
            State::PortForward(pf) => {
                pf.to_conn.clear();
                pf.conns.abort_all();
                while pf.conns.join_next().await.is_some() {}
            }
        }
    }
}

/// Complete top-level JSON objects at the front of `buf` (removed from it).
fn split_json_objects(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut in_string, mut escaped) = (0usize, None, false, false);
    let mut consumed = 0;
    for (i, &b) in buf.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => {
                if depth == 0 {
                    start = Some(i);
                }
                depth += 1;
            }
            b'}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    if let Some(s) = start.take() {
                        out.push(buf[s..=i].to_vec());
                    }
                    consumed = i + 1;
                }
            }
            _ if depth == 0 => consumed = i + 1,
            _ => {}
        }
    }
    buf.drain(..consumed);
    out
}

/// One port-forward pair: a connection to `port` in the pod, its bytes on the data
/// stream, a failure as text on the error stream; both streams end with it.
async fn forward_pair(
    netns: Result<Option<std::path::PathBuf>, String>,
    pod: &str,
    port: u16,
    (data, error): (u32, u32),
    mut from_client: mpsc::Receiver<Vec<u8>>,
    frames: mpsc::Sender<Vec<u8>>,
) {
    let stream: Result<TcpStream, String> = match netns {
        Ok(ns) => super::portforward::connect(ns, port)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match stream {
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {pod}: {e}");
            let _ = frames.send(spdy::data(error, false, msg.as_bytes())).await;
        }
        Ok(s) => {
            let (mut r, mut w) = s.into_split();
            let upstream = async {
                while let Some(d) = from_client.recv().await {
                    if w.write_all(&d).await.is_err() {
                        break;
                    }
                }
                let _ = w.shutdown().await;
            };
            let downstream = async {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if frames
                                .send(spdy::data(data, false, &buf[..n]))
                                .await
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                }
            };
            // The connection is done when the pod's side has said all it will.
            tokio::select! {
                () = downstream => {}
                () = async { upstream.await; std::future::pending::<()>().await } => {}
            }
        }
    }
    let _ = frames.send(spdy::data(data, true, &[])).await;
    let _ = frames.send(spdy::data(error, true, &[])).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_stream_objects() {
        let mut b = br#"{"Width":80,"Height":24}{"Width":1"#.to_vec();
        let got = split_json_objects(&mut b);
        assert_eq!(got, vec![br#"{"Width":80,"Height":24}"#.to_vec()]);
        b.extend_from_slice(b"00,\"Height\":40}\n");
        let got = split_json_objects(&mut b);
        assert_eq!(got, vec![br#"{"Width":100,"Height":40}"#.to_vec()]);
        assert!(b.is_empty(), "{b:?}");
        let mut s = br#"{"a":"}{"}"#.to_vec();
        assert_eq!(split_json_objects(&mut s).len(), 1);
    }

    #[test]
    fn expected_streams_by_options() {
        assert_eq!(
            expected_streams(true, true, true, false, Version::V4),
            vec![ERROR, STDIN, STDOUT, STDERR]
        );
        assert_eq!(
            expected_streams(true, true, true, true, Version::V4),
            vec![ERROR, STDIN, STDOUT, RESIZE]
        );
        assert_eq!(
            expected_streams(false, true, false, true, Version::V2),
            vec![ERROR, STDOUT]
        );
    }
}
