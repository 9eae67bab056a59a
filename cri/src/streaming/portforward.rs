//! Port forwarding: TCP connections to `localhost:PORT` inside the pod's network
//! namespace, carried over the client's session.
//!
//! Over WebSocket (the kubelet's v4 port-forward protocol) one session carries one
//! connection per port: the ports come from the URL's query (`?port=80&port=8080`) or,
//! without one, from the PortForward request; the i-th port gets data channel `2i` and
//! error channel `2i + 1`, each opened with the port in two little-endian bytes. What the
//! client writes on a data channel goes to the connection; what the connection says comes
//! back on it; a failure to connect is text on the error channel.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::websocket::Link;
use super::Backend;

/// The ports of a session: the query's `port` parameters, else the request's.
pub fn ports_of(query: Option<&str>, requested: &[i32]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("port=") {
            for p in v.split(',') {
                ports.push(parse_port(p)?);
            }
        }
    }
    if ports.is_empty() {
        for &p in requested {
            ports.push(parse_port(&p.to_string())?);
        }
    }
    if ports.is_empty() {
        return Err("port forwarding needs at least one port (?port=N)".to_string());
    }
    // Two channels per port, numbered in one byte.
    if ports.len() > 127 {
        return Err(format!("{} ports asked; at most 127", ports.len()));
    }
    Ok(ports)
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.trim().parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{p:?} is not a port number (1 to 65535)")),
    }
}

/// Connects to `localhost:port` in the network namespace `netns` (`None`: the node's).
/// `setns` changes only the calling thread's namespace, so it happens in a thread of its
/// own that ends with the connect; the socket stays in the namespace it was made in.
pub async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("portforward-connect".into())
        .spawn(move || {
            let result = (|| {
                if let Some(ns) = &netns {
                    let f = std::fs::File::open(ns)?;
                    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?;
                }
                let addrs = [
                    std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
                ];
                let s = std::net::TcpStream::connect(&addrs[..])?;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(s)
            })();
            let _ = tx.send(result);
        })?;
    let s = rx
        .await
        .map_err(|_| std::io::Error::other("the connecting thread died"))??;
    TcpStream::from_std(s)
}

pub async fn run(pod: &str, ports: &[u16], link: Link, backend: Arc<dyn Backend>) {
    let Link {
        mut incoming,
        outgoing,
    } = link;
    let netns = backend.network_namespace(pod);
    // The client's data for each port's connection.
    let mut to_conn: HashMap<u8, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut conns = tokio::task::JoinSet::new();
    // Every channel is opened before any connection can say something on its own.
    for (i, &port) in ports.iter().enumerate() {
        for ch in [2 * i, 2 * i + 1] {
            if outgoing
                .send((ch as u8, port.to_le_bytes().to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    for (i, &port) in ports.iter().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        let (tx, rx) = mpsc::channel(16);
        to_conn.insert(data_ch, tx);
        let out = outgoing.clone();
        let netns = netns.clone();
        let pod = pod.to_string();
        conns.spawn(async move {
            let stream = match netns {
                Ok(ns) => connect(ns, port).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match stream {
                Ok(s) => forward(s, rx, data_ch, &out).await,
                Err(e) => {
                    let msg = format!("error forwarding port {port} to pod {pod}: {e}");
                    let _ = out.send((err_ch, msg.into_bytes())).await;
                }
            }
        });
    }
    drop(outgoing);
    loop {
        tokio::select! {
            msg = incoming.recv() => match msg {
                Some((ch, data)) => {
                    if let Some(tx) = to_conn.get(&ch) {
                        // A connection that has ended takes no more.
                        if tx.send(data).await.is_err() {
                            to_conn.remove(&ch);
                        }
                    }
                }
                // The client has gone: every connection goes with it.
                None => {
                    conns.abort_all();
                    return;
                }
            },
            done = conns.join_next() => {
                if done.is_none() {
                    return;
                }
            }
        }
    }
}

/// Copies between one connection and its data channel until the connection ends.
async fn forward(
    stream: TcpStream,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    ch: u8,
    out: &mpsc::Sender<(u8, Vec<u8>)>,
) {
    let (mut r, mut w) = stream.into_split();
    let upstream = async {
        while let Some(data) = from_client.recv().await {
            if w.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
        std::future::pending::<()>().await
    };
    let downstream = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if out.send((ch, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_the_query_or_the_request() {
        assert_eq!(
            ports_of(Some("port=80&port=8080"), &[1]),
            Ok(vec![80, 8080])
        );
        assert_eq!(ports_of(Some("port=80,81"), &[]), Ok(vec![80, 81]));
        assert_eq!(ports_of(None, &[443]), Ok(vec![443]));
        assert!(ports_of(None, &[]).is_err());
        assert!(ports_of(Some("port=0"), &[]).is_err());
        assert!(ports_of(Some("port=x"), &[]).is_err());
        assert!(ports_of(None, &[70000]).is_err());
    }
}
