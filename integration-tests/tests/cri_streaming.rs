//! `cri_streaming`: Exec, Attach and PortForward through rrun-cri's streaming server, with
//! a WebSocket client of the Kubernetes channel protocols written here (independent of the
//! server's code): the RPC answers a one-time URL, the test connects to it as the kubelet
//! would, and checks what the real container did (its output, its exit code, the
//! terminal's size as `stty` sees it, what an HTTP server in the pod's network namespace
//! answered). Bad tokens and gone containers get HTTP errors, and nothing is left behind.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use integration_tests::cri::*;
use integration_tests::scaled;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[path = "cri_streaming/spdy_client.rs"]
mod spdy_client;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const T30: Duration = Duration::from_secs(30);

/// Connects to a streaming URL offering `protocols`; the HTTP status and body of a refusal.
async fn connect(url: &str, protocols: &[&str]) -> Result<(Ws, Option<String>), (u16, String)> {
    connect_query(url, "", protocols).await
}

async fn connect_query(
    url: &str,
    query: &str,
    protocols: &[&str],
) -> Result<(Ws, Option<String>), (u16, String)> {
    let ws_url = format!("{}{query}", url.replacen("http://", "ws://", 1));
    let mut req = ws_url.as_str().into_client_request().expect("a request");
    if !protocols.is_empty() {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocols.join(", ").parse().expect("a header value"),
        );
    }
    let connected = tokio::time::timeout(scaled(T30), tokio_tungstenite::connect_async(req))
        .await
        .unwrap_or_else(|_| panic!("no handshake from {url} within {T30:?}"));
    match connected {
        Ok((ws, resp)) => {
            let chosen = resp
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Ok((ws, chosen))
        }
        Err(WsError::Http(resp)) => Err((
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("connecting to {url}: {e}"),
    }
}

async fn send(ws: &mut Ws, ch: u8, data: &[u8]) {
    let mut msg = vec![ch];
    msg.extend_from_slice(data);
    ws.send(Message::binary(msg))
        .await
        .expect("sending a frame");
}

/// The next data frame (channel, data), `None` at the end of the session.
async fn next_frame(ws: &mut Ws) -> Option<(u8, Vec<u8>)> {
    loop {
        let msg = tokio::time::timeout(scaled(T30), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no frame within {T30:?}"));
        match msg {
            Some(Ok(Message::Binary(b))) => {
                if let Some((&ch, rest)) = b.split_first() {
                    return Some((ch, rest.to_vec()));
                }
            }
            Some(Ok(Message::Close(_))) | None => return None,
            Some(Ok(_)) => {}
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return None,
            Some(Err(e)) => panic!("reading the session: {e}"),
        }
    }
}

/// Everything received per channel until the session ends.
async fn read_to_end(ws: &mut Ws, mut got: HashMap<u8, Vec<u8>>) -> HashMap<u8, Vec<u8>> {
    while let Some((ch, data)) = next_frame(ws).await {
        got.entry(ch).or_default().extend_from_slice(&data);
    }
    got
}

/// Reads until channel `ch` has received something containing `needle`.
async fn read_until(ws: &mut Ws, got: &mut HashMap<u8, Vec<u8>>, ch: u8, needle: &str) {
    loop {
        let text = String::from_utf8_lossy(got.get(&ch).map_or(&[][..], |v| v)).into_owned();
        if text.contains(needle) {
            return;
        }
        let Some((c, data)) = next_frame(ws).await else {
            panic!("the session ended before channel {ch} said {needle:?}; it said {text:?}");
        };
        got.entry(c).or_default().extend_from_slice(&data);
    }
}

fn text(got: &HashMap<u8, Vec<u8>>, ch: u8) -> String {
    String::from_utf8_lossy(got.get(&ch).map_or(&[][..], |v| v)).into_owned()
}

fn status(got: &HashMap<u8, Vec<u8>>) -> serde_json::Value {
    serde_json::from_slice(got.get(&3).map_or(&[][..], |v| v))
        .unwrap_or_else(|e| panic!("the error channel {:?}: {e}", text(got, 3)))
}

async fn exec_url(
    s: &CriServer,
    id: &str,
    cmd: &[&str],
    (stdin, tty): (bool, bool),
) -> Result<String, Status> {
    s.runtime()
        .exec(api::ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|c| c.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .map(|r| r.into_inner().url)
}

async fn attach_url(s: &CriServer, id: &str, stdin: bool, stderr: bool) -> String {
    s.runtime()
        .attach(api::AttachRequest {
            container_id: id.into(),
            stdin,
            tty: false,
            stdout: true,
            stderr,
        })
        .await
        .unwrap_or_else(|e| panic!("Attach: {e}"))
        .into_inner()
        .url
}

async fn port_forward_url(s: &CriServer, pod: &str, ports: &[i32]) -> String {
    s.runtime()
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: ports.to_vec(),
        })
        .await
        .unwrap_or_else(|e| panic!("PortForward: {e}"))
        .into_inner()
        .url
}

/// A pod `p` with a running `sleep` container: where the exec tests start.
async fn sleeper(name: &str) -> (CriServer, String, String) {
    let (s, pod, pod_id) = CriServer::with_busybox_pod(name).await;
    let c = s
        .run_container(&pod_id, &pod, &s.sh_config("c", "exec sleep 100000"))
        .await;
    (s, pod_id, c)
}

/// Waits (bounded) until no process of the container runs `sleep 99999`, and no exec
/// helper or session directory of the server is left.
async fn assert_execs_gone(s: &CriServer, c: &str) {
    let deadline = tokio::time::Instant::now() + scaled(T30);
    loop {
        let ps = s.exec_ok(c, &["ps"]).await;
        let helpers: Vec<i32> = s
            .test_processes(None)
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("exec-sync"))
                    .unwrap_or(false)
            })
            .collect();
        let dirs: Vec<_> = s
            .state_paths()
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("stream-"))
            })
            .collect();
        if !ps.contains("sleep 99999") && helpers.is_empty() && dirs.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: ps {ps:?}, helpers {helpers:?}, dirs {dirs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Exec
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn exec_pipes_stdin_stdout_stderr_and_the_exit_code() {
    let (s, _pod, c) = sleeper("exec-pipes").await;
    let script = "cat; echo to-stderr >&2; exit 3";
    let url = exec_url(&s, &c, &["sh", "-c", script], (true, false))
        .await
        .expect("Exec");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (mut ws, proto) = connect(&url, &["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .await
        .expect("the handshake");
    assert_eq!(proto.as_deref(), Some("v5.channel.k8s.io"));
    send(&mut ws, 0, b"line one\n").await;
    send(&mut ws, 0, b"line two\n").await;
    // v5: the client closes stdin; cat sees its end of file.
    send(&mut ws, 255, &[0]).await;
    let got = read_to_end(&mut ws, HashMap::new()).await;
    assert_eq!(text(&got, 1), "line one\nline two\n");
    assert_eq!(text(&got, 2), "to-stderr\n");
    let st = status(&got);
    assert_eq!(st["status"], "Failure", "{st}");
    assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
    assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode", "{st}");
    assert_eq!(st["details"]["causes"][0]["message"], "3", "{st}");
    assert_execs_gone(&s, &c).await;
}

#[tokio::test]
async fn exec_older_protocols() {
    let (s, _pod, c) = sleeper("exec-old").await;
    // v4: a JSON status, Success for exit 0.
    let url = exec_url(&s, &c, &["echo", "hello"], (false, false))
        .await
        .expect("Exec");
    let (mut ws, proto) = connect(&url, &["v4.channel.k8s.io"]).await.expect("v4");
    assert_eq!(proto.as_deref(), Some("v4.channel.k8s.io"));
    let got = read_to_end(&mut ws, HashMap::new()).await;
    assert_eq!(text(&got, 1), "hello\n");
    assert_eq!(status(&got)["status"], "Success");
    // channel.k8s.io (v1): the failure as text, nothing on success.
    let url = exec_url(&s, &c, &["sh", "-c", "exit 2"], (false, false))
        .await
        .expect("Exec");
    let (mut ws, _) = connect(&url, &["channel.k8s.io"]).await.expect("v1");
    let got = read_to_end(&mut ws, HashMap::new()).await;
    assert!(text(&got, 3).contains("exit code 2"), "{:?}", text(&got, 3));
    let url = exec_url(&s, &c, &["true"], (false, false))
        .await
        .expect("Exec");
    let (mut ws, _) = connect(&url, &["v3.channel.k8s.io"]).await.expect("v3");
    let got = read_to_end(&mut ws, HashMap::new()).await;
    assert_eq!(text(&got, 3), "");
    // A command that is not there: a failure in the status, not a hang.
    let url = exec_url(&s, &c, &["/no/such/binary"], (false, false))
        .await
        .expect("Exec");
    let (mut ws, _) = connect(&url, &["v4.channel.k8s.io"]).await.expect("v4");
    let got = read_to_end(&mut ws, HashMap::new()).await;
    assert_eq!(status(&got)["status"], "Failure", "{:?}", text(&got, 3));
    assert_execs_gone(&s, &c).await;
}

#[tokio::test]
async fn exec_with_a_terminal_follows_resizes() {
    let (s, _pod, c) = sleeper("exec-tty").await;
    let script = "read a; stty size; read b; stty size; test -t 0 && echo is-a-tty; exit 5";
    let url = exec_url(&s, &c, &["sh", "-c", script], (true, true))
        .await
        .expect("Exec");
    let (mut ws, _) = connect(&url, &["v5.channel.k8s.io"]).await.expect("v5");
    // Frames are handled in order: the resize is done before the line reaches `read`.
    send(&mut ws, 4, br#"{"Width":100,"Height":40}"#).await;
    send(&mut ws, 0, b"one\n").await;
    let mut got = HashMap::new();
    read_until(&mut ws, &mut got, 1, "40 100").await;
    send(&mut ws, 4, br#"{"Width":120,"Height":50}"#).await;
    send(&mut ws, 0, b"two\n").await;
    let got = read_to_end(&mut ws, got).await;
    let out = text(&got, 1);
    assert!(out.contains("50 120"), "{out:?}");
    assert!(out.contains("is-a-tty"), "{out:?}");
    assert!(!got.contains_key(&2), "a terminal has no stderr");
    assert_eq!(status(&got)["details"]["causes"][0]["message"], "5");
    assert_execs_gone(&s, &c).await;
}

#[tokio::test]
async fn exec_whose_client_goes_is_killed_and_reaped() {
    let (s, _pod, c) = sleeper("exec-gone").await;
    for tty in [false, true] {
        let url = exec_url(
            &s,
            &c,
            &["sh", "-c", "echo started; exec sleep 99999"],
            (false, tty),
        )
        .await
        .expect("Exec");
        let (mut ws, _) = connect(&url, &["v4.channel.k8s.io"]).await.expect("v4");
        let mut got = HashMap::new();
        read_until(&mut ws, &mut got, 1, "started").await;
        drop(ws);
        assert_execs_gone(&s, &c).await;
    }
}

// ---------------------------------------------------------------------------------------
// Attach
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn attach_two_clients_to_stdio_while_the_log_goes_on() {
    let (s, pod, pod_id) = CriServer::with_busybox_pod("attach").await;
    let mut cfg = s.sh_config(
        "c",
        "echo ready; while read l; do echo \"out:$l\"; echo \"err:$l\" >&2; done; echo stdin-ended",
    );
    cfg.stdin = true;
    cfg.stdin_once = true;
    let c = s.run_container(&pod_id, &pod, &cfg).await;
    // Two sessions: one writes stdin and reads stdout, one reads both outputs.
    let (mut a, _) = connect(
        &attach_url(&s, &c, true, false).await,
        &["v5.channel.k8s.io"],
    )
    .await
    .expect("attach 1");
    let (mut b, _) = connect(
        &attach_url(&s, &c, false, true).await,
        &["v4.channel.k8s.io"],
    )
    .await
    .expect("attach 2");
    send(&mut a, 0, b"hello\n").await;
    let (mut got_a, mut got_b) = (HashMap::new(), HashMap::new());
    read_until(&mut a, &mut got_a, 1, "out:hello\n").await;
    read_until(&mut b, &mut got_b, 1, "out:hello\n").await;
    read_until(&mut b, &mut got_b, 2, "err:hello\n").await;
    // stdinOnce: the first session's end of stdin is the container's.
    send(&mut a, 255, &[0]).await;
    let got_a = read_to_end(&mut a, got_a).await;
    let got_b = read_to_end(&mut b, got_b).await;
    assert!(
        text(&got_a, 1).ends_with("stdin-ended\n"),
        "{:?}",
        text(&got_a, 1)
    );
    assert!(!got_a.contains_key(&2), "attach 1 did not ask for stderr");
    assert_eq!(status(&got_a)["status"], "Success");
    assert_eq!(status(&got_b)["status"], "Success");
    let st = s.wait_exited(&c).await;
    assert_eq!(st.exit_code, 0);
    let log = std::fs::read_to_string(CriServer::log_path(&pod, &cfg)).expect("the log");
    for line in [
        "stdout F ready",
        "stdout F out:hello",
        "stderr F err:hello",
        "stdout F stdin-ended",
    ] {
        assert!(log.contains(line), "{line:?} not in the log:\n{log}");
    }
    // The container has ended: Attach is refused.
    let e = s
        .runtime()
        .attach(api::AttachRequest {
            container_id: c.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("Attach to an exited container");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn attach_to_a_terminal_resizes_it() {
    let (s, pod, pod_id) = CriServer::with_busybox_pod("attach-tty").await;
    let mut cfg = s.sh_config("t", "read l; stty size; echo \"got:$l\"");
    cfg.tty = true;
    cfg.stdin = true;
    let c = s.run_container(&pod_id, &pod, &cfg).await;
    let url = s
        .runtime()
        .attach(api::AttachRequest {
            container_id: c.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .unwrap_or_else(|e| panic!("Attach: {e}"))
        .into_inner()
        .url;
    let (mut ws, _) = connect(&url, &["v5.channel.k8s.io"]).await.expect("attach");
    // The monitor handles one client's messages in order: the size is set before the
    // line reaches `read`.
    send(&mut ws, 4, br#"{"Width":77,"Height":22}"#).await;
    send(&mut ws, 0, b"x\n").await;
    let got = read_to_end(&mut ws, HashMap::new()).await;
    let out = text(&got, 1);
    assert!(out.contains("22 77"), "{out:?}");
    assert!(out.contains("got:x"), "{out:?}");
    assert_eq!(status(&got)["status"], "Success");
    assert_eq!(s.wait_exited(&c).await.exit_code, 0);
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

// ---------------------------------------------------------------------------------------
// PortForward
// ---------------------------------------------------------------------------------------

/// An HTTP exchange over a port-forward session of `ports`: the answer on each port.
async fn http_over_port_forward(url: &str, ports: &[u16]) -> HashMap<u16, String> {
    let query = ports
        .iter()
        .map(|p| format!("port={p}"))
        .collect::<Vec<_>>()
        .join("&");
    let (mut ws, proto) = connect_query(url, &format!("?{query}"), &["v4.channel.k8s.io"])
        .await
        .expect("the port-forward handshake");
    assert_eq!(proto.as_deref(), Some("v4.channel.k8s.io"));
    let mut got: HashMap<u8, Vec<u8>> = HashMap::new();
    // Each channel opens with its port, little-endian.
    for i in 0..ports.len() {
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            let (c, data) = next_frame(&mut ws).await.expect("a channel's first frame");
            assert_eq!(c, ch, "channels open in order");
            got.entry(c).or_default().extend_from_slice(&data);
        }
    }
    for (i, p) in ports.iter().enumerate() {
        assert_eq!(got[&(2 * i as u8)], p.to_le_bytes(), "data channel of {p}");
        assert_eq!(
            got[&(2 * i as u8 + 1)],
            p.to_le_bytes(),
            "error channel of {p}"
        );
    }
    got.clear();
    for i in 0..ports.len() {
        send(&mut ws, 2 * i as u8, b"GET /index.html HTTP/1.0\r\n\r\n").await;
    }
    let got = read_to_end(&mut ws, got).await;
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let data = text(&got, 2 * i as u8);
            let err = text(&got, 2 * i as u8 + 1);
            (
                *p,
                if err.is_empty() {
                    data
                } else {
                    format!("error: {err}")
                },
            )
        })
        .collect()
}

/// Runs busybox `httpd` on 127.0.0.1:`port` in the pod, one container per port, each
/// serving `index.html` = `<tag>-<port>`; returns once wget in the pod gets the answer.
async fn start_httpds(
    s: &CriServer,
    pod: &api::PodSandboxConfig,
    pod_id: &str,
    tag: &str,
    ports: [u16; 2],
) {
    for (name, port) in ["a", "b"].into_iter().zip(ports) {
        let cmd = format!(
            "mkdir -p /tmp/www && echo {tag}-{port} > /tmp/www/index.html && \
             exec httpd -f -p 127.0.0.1:{port} -h /tmp/www"
        );
        let c = s.run_container(pod_id, pod, &s.sh_config(name, &cmd)).await;
        let deadline = tokio::time::Instant::now() + scaled(T30);
        let url = format!("http://127.0.0.1:{port}/index.html");
        loop {
            let r = s.exec_sync(&c, &["wget", "-q", "-O", "-", &url], 10).await;
            if r.as_ref().is_ok_and(|r| r.exit_code == 0) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "httpd on {port}: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn port_forward_reaches_http_servers_in_the_pod() {
    let (s, pod, pod_id) = CriServer::with_busybox_pod("portfwd").await;
    start_httpds(&s, &pod, &pod_id, "served-by", [8080, 8081]).await;
    // Only in the pod's network namespace: the node's own 127.0.0.1 has nothing there
    // (or something else), and the answers name the pod's servers.
    // Two ports in one session, and two sessions at once to the same port.
    let url1 = port_forward_url(&s, &pod_id, &[8080, 8081]).await;
    let url2 = port_forward_url(&s, &pod_id, &[8080]).await;
    let (one, two) = tokio::join!(
        http_over_port_forward(&url1, &[8080, 8081]),
        http_over_port_forward(&url2, &[8080])
    );
    for (answers, port) in [(&one, 8080), (&one, 8081), (&two, 8080)] {
        let body = &answers[&port];
        assert!(body.starts_with("HTTP/1."), "{port}: {body:?}");
        assert!(
            body.ends_with(&format!("served-by-{port}\n")),
            "{port}: {body:?}"
        );
    }
    // Without a query, the request's ports; nothing listens on 8082: the error channel says so.
    let url = port_forward_url(&s, &pod_id, &[8082]).await;
    let (mut ws, _) = connect(&url, &["v4.channel.k8s.io"])
        .await
        .expect("handshake");
    let got = read_to_end(&mut ws, HashMap::new()).await;
    let err = String::from_utf8_lossy(&got[&1][2..]).into_owned();
    assert!(
        err.contains("8082") && err.to_lowercase().contains("refused"),
        "{err:?}"
    );
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

// ---------------------------------------------------------------------------------------
// Bad requests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let (s, pod_id, c) = sleeper("stream-bad").await;
    let before = s.state_paths();
    // RPCs: unknown container or pod, no command.
    let e = exec_url(&s, "nope", &["true"], (false, false))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = exec_url(&s, &c, &[], (false, false))
        .await
        .expect_err("no command");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = s
        .runtime()
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: "nope".into(),
            port: vec![80],
        })
        .await
        .expect_err("unknown pod");
    assert_eq!(e.code(), Code::NotFound, "{e}");

    // A URL works once.
    let url = exec_url(&s, &c, &["true"], (false, false))
        .await
        .expect("Exec");
    let (mut ws, _) = connect(&url, &["v4.channel.k8s.io"])
        .await
        .expect("first use");
    let got = read_to_end(&mut ws, HashMap::new()).await;
    assert_eq!(status(&got)["status"], "Success");
    let (code, body) = refused(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("token"), "{body}");
    // A token that never was, and a path that is no endpoint.
    let base = url
        .rsplit_once("/exec/")
        .expect("an exec URL")
        .0
        .to_string();
    let (code, _) = refused(&format!("{base}/exec/0123456789abcdef"), &[]).await;
    assert_eq!(code, 404);
    let (code, _) = refused(&format!("{base}/other/x"), &[]).await;
    assert_eq!(code, 404);
    // An exec token is not an attach token.
    let url = exec_url(&s, &c, &["true"], (false, false))
        .await
        .expect("Exec");
    let (code, _) = refused(&url.replacen("/exec/", "/attach/", 1), &[]).await;
    assert_eq!(code, 404);
    // No protocol this server speaks.
    let url = exec_url(&s, &c, &["true"], (false, false))
        .await
        .expect("Exec");
    let (code, body) = refused(&url, &["v9.channel.k8s.io"]).await;
    assert_eq!(code, 400, "{body}");
    // Not an upgrade at all.
    let url = exec_url(&s, &c, &["true"], (false, false))
        .await
        .expect("Exec");
    let (code, body) = plain_get(&url).await;
    assert_eq!(code, 400, "{body}");
    // The container stops between the RPC and the connection.
    let url = exec_url(&s, &c, &["true"], (false, false))
        .await
        .expect("Exec");
    s.stop_container(&c, 0).await;
    let (code, body) = refused(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("not running"), "{body}");
    let e = exec_url(&s, &c, &["true"], (false, false))
        .await
        .expect_err("stopped");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    // Nothing of the refused or finished sessions is left.
    let after = s.state_paths();
    let new: Vec<_> = after
        .difference(&before)
        .filter(|p| !p.ends_with("exit.json"))
        .collect();
    assert!(new.is_empty(), "new paths: {new:?}");
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

/// A handshake that must be refused: the status code and body.
async fn refused(url: &str, protocols: &[&str]) -> (u16, String) {
    match connect(url, protocols).await {
        Ok(_) => panic!("{url}: the handshake succeeded; a refusal was expected"),
        Err(e) => e,
    }
}

/// A GET without an upgrade: the status code and body.
async fn plain_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut tcp = tokio::net::TcpStream::connect(host).await.expect("connect");
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut answer = String::new();
    tokio::time::timeout(scaled(T30), tcp.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, answer)
}

// ---------------------------------------------------------------------------------------
// SPDY/3.1 (kubelet 1.20, older kubectl)
// ---------------------------------------------------------------------------------------

/// Reads a SPDY session until the server closes it: data per stream, and which streams
/// the server ended (FIN).
async fn spdy_read_to_end(
    c: &mut spdy_client::Client,
) -> (HashMap<u32, Vec<u8>>, std::collections::HashSet<u32>) {
    let (mut data, mut ended) = (
        HashMap::<u32, Vec<u8>>::new(),
        std::collections::HashSet::new(),
    );
    while let Some(ev) = c.next().await {
        match ev {
            spdy_client::Event::Data {
                stream,
                fin,
                data: d,
            } => {
                data.entry(stream).or_default().extend_from_slice(&d);
                if fin {
                    ended.insert(stream);
                }
            }
            // containerd resets the client's stdin stream once the process is gone.
            spdy_client::Event::Reset(_)
            | spdy_client::Event::Reply(_)
            | spdy_client::Event::Other => {}
        }
    }
    (data, ended)
}

fn spdy_text(data: &HashMap<u32, Vec<u8>>, stream: u32) -> String {
    String::from_utf8_lossy(data.get(&stream).map_or(&[][..], |v| v)).into_owned()
}

#[tokio::test]
async fn spdy_exec_with_pipes_and_with_a_terminal() {
    let (s, _pod, c) = sleeper("spdy-exec").await;
    let url = exec_url(
        &s,
        &c,
        &["sh", "-c", "cat; echo oops >&2; exit 4"],
        (true, false),
    )
    .await
    .expect("Exec");
    let (mut cl, proto) =
        spdy_client::Client::connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"])
            .await
            .expect("the upgrade");
    assert_eq!(proto.as_deref(), Some("v4.channel.k8s.io"));
    // The kubelet's client opens error first, then the streams asked for.
    let error = cl.open(&[("streamType", "error")]).await;
    let stdin = cl.open(&[("streamType", "stdin")]).await;
    let stdout = cl.open(&[("streamType", "stdout")]).await;
    let stderr = cl.open(&[("streamType", "stderr")]).await;
    cl.send(stdin, false, b"over spdy\n").await;
    // The end of the stdin stream is the end of the process's stdin.
    cl.send(stdin, true, b"").await;
    let (data, ended) = spdy_read_to_end(&mut cl).await;
    assert_eq!(spdy_text(&data, stdout), "over spdy\n");
    assert_eq!(spdy_text(&data, stderr), "oops\n");
    let st: serde_json::Value =
        serde_json::from_str(&spdy_text(&data, error)).expect("a status on the error stream");
    assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
    assert_eq!(st["details"]["causes"][0]["message"], "4", "{st}");
    for id in [error, stdout, stderr] {
        assert!(ended.contains(&id), "stream {id} was not ended");
    }

    // With a terminal: stdin, stdout and resize.
    let script = "read a; stty size; exit 0";
    let url = exec_url(&s, &c, &["sh", "-c", script], (true, true))
        .await
        .expect("Exec");
    let (mut cl, _) = spdy_client::Client::connect(&url, &["v4.channel.k8s.io"])
        .await
        .expect("the upgrade");
    let error = cl.open(&[("streamType", "error")]).await;
    let stdin = cl.open(&[("streamType", "stdin")]).await;
    let stdout = cl.open(&[("streamType", "stdout")]).await;
    let resize = cl.open(&[("streamType", "resize")]).await;
    // Two objects, the second split across frames: the last one counts.
    cl.send(resize, false, br#"{"Width":90,"Height":30}{"Width":1"#)
        .await;
    cl.send(resize, false, br#"10,"Height":33}"#).await;
    cl.send(stdin, false, b"go\n").await;
    let (data, _) = spdy_read_to_end(&mut cl).await;
    assert!(
        spdy_text(&data, stdout).contains("33 110"),
        "{:?}",
        spdy_text(&data, stdout)
    );
    let st: serde_json::Value = serde_json::from_str(&spdy_text(&data, error)).expect("status");
    assert_eq!(st["status"], "Success", "{st}");

    // A protocol the server does not speak.
    let url = exec_url(&s, &c, &["true"], (false, false))
        .await
        .expect("Exec");
    let (code, body) = match spdy_client::Client::connect(&url, &["v9.channel.k8s.io"]).await {
        Ok(_) => panic!("an unknown protocol was accepted"),
        Err(e) => e,
    };
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("v9.channel.k8s.io"), "{body}");
    assert_execs_gone(&s, &c).await;
}

#[tokio::test]
async fn spdy_port_forward_several_connections_on_one_session() {
    let (s, pod, pod_id) = CriServer::with_busybox_pod("spdy-pf").await;
    start_httpds(&s, &pod, &pod_id, "spdy", [9080, 9081]).await;
    let url = port_forward_url(&s, &pod_id, &[9080, 9081]).await;
    let (mut cl, proto) = spdy_client::Client::connect(&url, &["portforward.k8s.io"])
        .await
        .expect("the upgrade");
    assert_eq!(proto.as_deref(), Some("portforward.k8s.io"));
    // A stream of no known type is refused (RST_STREAM), the session goes on.
    let bogus = cl.open(&[("streamType", "bogus"), ("port", "9080")]).await;
    // Three connections at once (two to one port), and one to a port nothing listens on.
    let mut pairs = Vec::new();
    for (req, port) in [("0", "9080"), ("1", "9080"), ("2", "9081"), ("3", "9099")] {
        let hdr = |t| [("streamType", t), ("port", port), ("requestID", req)];
        let error = cl.open(&hdr("error")).await;
        let data = cl.open(&hdr("data")).await;
        pairs.push((port, error, data));
    }
    for &(_, _, data) in &pairs {
        cl.send(data, false, b"GET /index.html HTTP/1.0\r\n\r\n")
            .await;
    }
    // Until every data stream has ended.
    let (mut got, mut ended) = (
        HashMap::<u32, Vec<u8>>::new(),
        std::collections::HashSet::new(),
    );
    let (mut replied, mut reset) = (std::collections::HashSet::new(), Vec::new());
    while pairs.iter().any(|(_, _, d)| !ended.contains(d)) {
        match cl.next().await {
            Some(spdy_client::Event::Data { stream, fin, data }) => {
                got.entry(stream).or_default().extend_from_slice(&data);
                if fin {
                    ended.insert(stream);
                }
            }
            Some(spdy_client::Event::Reply(id)) => {
                replied.insert(id);
            }
            Some(spdy_client::Event::Reset(id)) => reset.push(id),
            Some(spdy_client::Event::Other) => {}
            None => panic!("the server closed the session; got {got:?}"),
        }
    }
    assert_eq!(reset, vec![bogus]);
    for &(_, error, data) in &pairs {
        assert!(
            replied.contains(&error) && replied.contains(&data),
            "{replied:?}"
        );
    }
    for &(port, error, data) in &pairs[..3] {
        let body = spdy_text(&got, data);
        assert!(body.starts_with("HTTP/1."), "{port}: {body:?}");
        assert!(
            body.ends_with(&format!("spdy-{port}\n")),
            "{port}: {body:?}"
        );
        assert_eq!(spdy_text(&got, error), "", "{port}");
    }
    let (_, error, _) = pairs[3];
    let err = spdy_text(&got, error);
    assert!(
        err.contains("9099") && err.to_lowercase().contains("refused"),
        "{err:?}"
    );
    drop(cl);
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

// ---------------------------------------------------------------------------------------
// Parity: the same sessions against containerd 1.6's CRI streaming server (with runc)
// ---------------------------------------------------------------------------------------

/// One exec over WebSocket v4 (no stdin: v4 cannot close it) and one over SPDY v4 with
/// stdin: what each session got (stdout, stderr, the status's reason and exit code).
async fn exec_cases(urls: [String; 2]) -> Vec<(String, String, String, String, String)> {
    let [ws_url, spdy_url] = urls;
    let mut results = Vec::new();
    let (mut ws, _) = connect(&ws_url, &["v4.channel.k8s.io"])
        .await
        .expect("the WebSocket handshake");
    let got = read_to_end(&mut ws, HashMap::new()).await;
    let st = status(&got);
    results.push((
        text(&got, 1),
        text(&got, 2),
        st["reason"].as_str().unwrap_or("").to_string(),
        st["details"]["causes"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        st["message"].as_str().unwrap_or("").to_string(),
    ));
    let (mut cl, proto) = spdy_client::Client::connect(&spdy_url, &["v4.channel.k8s.io"])
        .await
        .expect("the SPDY upgrade");
    assert_eq!(proto.as_deref(), Some("v4.channel.k8s.io"));
    let error = cl.open(&[("streamType", "error")]).await;
    let stdin = cl.open(&[("streamType", "stdin")]).await;
    let stdout = cl.open(&[("streamType", "stdout")]).await;
    let stderr = cl.open(&[("streamType", "stderr")]).await;
    cl.send(stdin, false, b"in\n").await;
    cl.send(stdin, true, b"").await;
    let (data, _) = spdy_read_to_end(&mut cl).await;
    let st: serde_json::Value =
        serde_json::from_str(&spdy_text(&data, error)).expect("a status on the error stream");
    results.push((
        spdy_text(&data, stdout),
        spdy_text(&data, stderr),
        st["reason"].as_str().unwrap_or("").to_string(),
        st["details"]["causes"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        st["message"].as_str().unwrap_or("").to_string(),
    ));
    results
}

const PARITY_WS: &[&str] = &["sh", "-c", "echo out; echo err >&2; exit 3"];
const PARITY_SPDY: &[&str] = &["sh", "-c", "cat; echo err >&2; exit 4"];

fn parity_expected() -> Vec<(String, String, String, String, String)> {
    let s = |a: &str| a.to_string();
    let message = |cmd: &[&str], code| {
        format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            cmd.join(" ")
        )
    };
    vec![
        (
            s("out\n"),
            s("err\n"),
            s("NonZeroExitCode"),
            s("3"),
            message(PARITY_WS, 3),
        ),
        (
            s("in\n"),
            s("err\n"),
            s("NonZeroExitCode"),
            s("4"),
            message(PARITY_SPDY, 4),
        ),
    ]
}

async fn parity_urls(
    rt: &mut cri_proto::RuntimeServiceClient<tonic::transport::Channel>,
    c: &str,
) -> [String; 2] {
    let mut urls = Vec::new();
    for (cmd, stdin) in [(PARITY_WS, false), (PARITY_SPDY, true)] {
        let url = rt
            .exec(api::ExecRequest {
                container_id: c.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty: false,
                stdin,
                stdout: true,
                stderr: true,
            })
            .await
            .unwrap_or_else(|e| panic!("Exec: {e}"))
            .into_inner()
            .url;
        urls.push(url);
    }
    [urls[0].clone(), urls[1].clone()]
}

#[tokio::test]
async fn exec_sessions_answer_as_rrun_cri_answers_them() {
    let (s, _pod, c) = sleeper("stream-parity").await;
    let urls = parity_urls(&mut s.runtime(), &c).await;
    assert_eq!(exec_cases(urls).await, parity_expected());
    assert_execs_gone(&s, &c).await;
}

#[test]
fn containerd_answers_the_same_exec_sessions() {
    use integration_tests::engines::{
        have, Containerd, Runtime, CRI_RUNTIME, CRI_SANDBOX_IMAGE, CTR_IMAGE,
    };
    let tools = ["containerd", "ctr", "containerd-shim-runc-v2"];
    if let Some(t) = tools.iter().find(|t| !have(t)) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{t} is not installed"
        );
        println!("SKIPPED: {t} is not installed");
        return;
    }
    let Some(runc) = Runtime::Runc.path() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "runc is not installed"
        );
        return;
    };
    let cd = Containerd::start_with_cri(&runc);
    cd.import_image("k8s.io", CRI_SANDBOX_IMAGE, &["sleep", "1000000"]);
    cd.import_image("k8s.io", CTR_IMAGE, &["sh"]);
    let logs = cd.dir.join("pod-logs");
    std::fs::create_dir_all(&logs).expect("mkdir pod-logs");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + scaled(T30);
        let mut client = loop {
            if let Ok(mut c) = Client::connect(&cd.socket).await {
                if c.runtime
                    .version(api::VersionRequest::default())
                    .await
                    .is_ok()
                {
                    break c;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "containerd's CRI plugin did not come up:\n{}",
                cd.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let pod_cfg = cd.host_network_pod_config("parity", &logs);
        let r = &mut client.runtime;
        let pod = r
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(pod_cfg.clone()),
                runtime_handler: CRI_RUNTIME.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", cd.log()))
            .into_inner()
            .pod_sandbox_id;
        let c = r
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(api::ContainerConfig {
                    metadata: Some(api::ContainerMetadata {
                        name: "app".into(),
                        attempt: 0,
                    }),
                    image: Some(api::ImageSpec {
                        image: CTR_IMAGE.into(),
                        ..Default::default()
                    }),
                    command: ["sleep", "100000"].map(String::from).to_vec(),
                    log_path: "app.log".into(),
                    linux: Some(api::LinuxContainerConfig::default()),
                    ..Default::default()
                }),
                sandbox_config: Some(pod_cfg),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", cd.log()))
            .into_inner()
            .container_id;
        r.start_container(api::StartContainerRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", cd.log()));
        let urls = parity_urls(r, &c).await;
        assert_eq!(exec_cases(urls).await, parity_expected());
        for res in [
            r.stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .map(drop),
            r.remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .map(drop),
        ] {
            res.unwrap_or_else(|e| panic!("removing the pod: {e}"));
        }
    });
}
