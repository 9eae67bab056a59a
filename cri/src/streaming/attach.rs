//! An Attach session: a client of the container monitor's attach socket
//! ([`crate::monitor::attach`] has the message format).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::sys::socket::{
    connect, recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::remotecommand::{parse_resize, Outcome, Want, RESIZE, STDERR, STDIN, STDOUT};
use super::websocket::CLOSE_CHANNEL;
use crate::monitor::attach as wire;

/// The largest stdin message sent to the monitor at once (it reads at most this much).
const CHUNK: usize = 32 * 1024;

/// Connects to the monitor's attach socket.
pub fn connect_monitor(path: &Path) -> Result<OwnedFd, String> {
    let conn = || -> std::io::Result<OwnedFd> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        Ok(fd)
    };
    conn().map_err(|e| {
        format!(
            "connecting to the container's monitor ({}): {e}",
            path.display()
        )
    })
}

async fn send_msg(sock: &AsyncFd<OwnedFd>, msg: &[u8]) -> std::io::Result<()> {
    loop {
        let mut guard = sock.writable().await?;
        match guard.try_io(|fd| Ok(send(fd.as_raw_fd(), msg, MsgFlags::MSG_NOSIGNAL)?)) {
            Ok(r) => return r.map(drop),
            Err(_would_block) => continue,
        }
    }
}

pub(super) async fn attach(
    conn: OwnedFd,
    stdin: bool,
    want: Want,
    mut incoming: mpsc::Receiver<(u8, Vec<u8>)>,
    out: &mpsc::Sender<(u8, Vec<u8>)>,
) -> Outcome {
    let sock = match super::async_fd(conn) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("the monitor's connection: {e}")),
    };
    let output = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Ok(mut guard) = sock.readable().await else {
                return;
            };
            let n = match guard.try_io(|fd| Ok(recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?))
            {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
                Err(_would_block) => continue,
            };
            let ch = match buf[0] {
                wire::STDOUT if want.stdout => STDOUT,
                wire::STDERR if want.stderr => STDERR,
                _ => continue,
            };
            if out.send((ch, buf[1..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let input = async {
        while let Some((ch, data)) = incoming.recv().await {
            let sent = match ch {
                STDIN if stdin => {
                    let mut r = Ok(());
                    for chunk in data.chunks(CHUNK) {
                        let mut msg = Vec::with_capacity(1 + chunk.len());
                        msg.push(wire::STDIN);
                        msg.extend_from_slice(chunk);
                        r = send_msg(&sock, &msg).await;
                        if r.is_err() {
                            break;
                        }
                    }
                    r
                }
                RESIZE => match parse_resize(&data) {
                    Some((w, h)) => {
                        let [w1, w2] = w.to_be_bytes();
                        let [h1, h2] = h.to_be_bytes();
                        send_msg(&sock, &[wire::RESIZE, w1, w2, h1, h2]).await
                    }
                    None => Ok(()),
                },
                CLOSE_CHANNEL if stdin && data.first() == Some(&STDIN) => {
                    send_msg(&sock, &[wire::CLOSE_STDIN]).await
                }
                _ => Ok(()),
            };
            // The monitor has gone: the output side sees it too and ends the session.
            if sent.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = output => Outcome::Exited(0),
        () = input => Outcome::Gone,
    }
}
