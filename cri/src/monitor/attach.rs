//! The monitor's attach socket: `<state-dir>/attach.sock`, where the streaming server's
//! Attach sessions reach the container's stdio.
//!
//! A `SOCK_SEQPACKET` unix socket (0600), so that every message arrives whole and neither
//! side keeps a reassembly buffer. From the monitor: `[1 | 2, data...]`, what the
//! container wrote on stdout (a terminal's output is stdout) or stderr, the same bytes the
//! log gets, to every attached client. From a client: `[0, data...]` for the container's
//! stdin (a pipe, with `--stdin`, or the terminal), `[4, width: u16 BE, height: u16 BE]` to
//! resize the terminal, `[255]` when the client's stdin has ended.
//!
//! The monitor never waits for a client: a message that does not fit in a client's socket
//! buffer drops that client (its session ends; the log has everything), and stdin beyond
//! what the container's pipe holds is lost. With `--stdin-once`, the container's stdin is
//! closed when the first client that wrote to it ends its stdin or goes, as the kubelet's
//! `stdinOnce` asks.

use nix::errno::Errno;
use nix::sys::socket::{
    accept4, bind, listen, recv, sendmsg, socket, AddressFamily, Backlog, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 4;
pub const CLOSE_STDIN: u8 = 255;

/// At most this many sessions at once (the poll loop keeps their readiness in a bit mask).
pub const MAX_CLIENTS: usize = 32;

/// The largest message a client may send (the rest of a longer one is cut off).
const MAX_INPUT: usize = 32 * 1024;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("attach.sock")
}

/// The listening socket, 0600 from the start.
pub fn bind_listener(path: &Path) -> Result<OwnedFd, String> {
    use nix::sys::stat::{umask, Mode};
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let addr = UnixAddr::new(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = std::fs::remove_file(path);
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = bind(fd.as_raw_fd(), &addr);
    umask(old);
    bound.map_err(|e| format!("binding {}: {e}", path.display()))?;
    listen(&fd, Backlog::new(8).unwrap_or(Backlog::MAXCONN))
        .map_err(|e| format!("listening on {}: {e}", path.display()))?;
    Ok(fd)
}

/// Where client input goes.
#[derive(Default)]
pub struct Input {
    /// The container's stdin: the pipe's write end, or the terminal's master.
    pub stdin: Option<OwnedFd>,
    /// The terminal's master (for resizes), if the container has one.
    pub tty: Option<OwnedFd>,
    /// `--stdin-once`.
    pub once: bool,
}

pub struct Client {
    fd: OwnedFd,
    wrote_stdin: bool,
}

impl Client {
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Accepts every waiting client (beyond [`MAX_CLIENTS`], they are closed at once).
pub fn accept_all(listener: &OwnedFd, clients: &mut Vec<Client>) {
    loop {
        match accept4(
            listener.as_raw_fd(),
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        ) {
            Ok(fd) => {
                // SAFETY: accept4 just returned this descriptor, owned by no one else.
                let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                if clients.len() < MAX_CLIENTS {
                    clients.push(Client {
                        fd,
                        wrote_stdin: false,
                    });
                }
            }
            Err(Errno::EINTR) | Err(Errno::ECONNABORTED) => continue,
            Err(_) => return,
        }
    }
}

/// Sends the container's output to every client; drops those that cannot take it now.
pub fn fan_out(clients: &mut Vec<Client>, stream: u8, data: &[u8], input: &mut Input) {
    let head = [stream];
    let mut i = 0;
    while i < clients.len() {
        let iov = [IoSlice::new(&head), IoSlice::new(data)];
        let sent = sendmsg::<()>(
            clients[i].fd.as_raw_fd(),
            &iov,
            &[],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        );
        match sent {
            Ok(_) => i += 1,
            Err(Errno::EINTR) => {}
            Err(_) => drop_client(clients, i, input),
        }
    }
}

/// Reads one message of client `i`; false when the client has gone (it is then removed).
pub fn read_client(clients: &mut Vec<Client>, i: usize, buf: &mut [u8], input: &mut Input) -> bool {
    let limit = buf.len().min(MAX_INPUT + 1);
    let n = match recv(
        clients[i].fd.as_raw_fd(),
        &mut buf[..limit],
        MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => {
            drop_client(clients, i, input);
            return false;
        }
        Ok(n) => n,
        Err(Errno::EAGAIN) | Err(Errno::EINTR) => return true,
        Err(_) => {
            drop_client(clients, i, input);
            return false;
        }
    };
    match buf[..n] {
        [STDIN, ref data @ ..] => {
            if let Some(fd) = &input.stdin {
                clients[i].wrote_stdin = true;
                let _ = nix::unistd::write(fd, data);
            }
        }
        [RESIZE, w1, w2, h1, h2] => {
            if let Some(tty) = &input.tty {
                let (w, h) = (u16::from_be_bytes([w1, w2]), u16::from_be_bytes([h1, h2]));
                let _ = rrun::pty::set_window_size(tty.as_raw_fd(), h, w);
            }
        }
        [CLOSE_STDIN] => end_stdin(input, true),
        _ => {}
    }
    true
}

fn drop_client(clients: &mut Vec<Client>, i: usize, input: &mut Input) {
    let c = clients.swap_remove(i);
    end_stdin(input, c.wrote_stdin);
}

/// A client's stdin has ended: with `--stdin-once` (and no terminal), so has the
/// container's.
fn end_stdin(input: &mut Input, wrote: bool) {
    if input.once && wrote && input.tty.is_none() {
        input.stdin = None;
    }
}
