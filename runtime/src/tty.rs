//! The container's terminal: a pty made inside the container's own devpts, its master sent
//! to the caller over `--console-socket` with SCM_RIGHTS (as runc does), its slave made the
//! process's stdio and controlling terminal.

use crate::error::{Context, Error, Result};
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, Winsize};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Connects to the caller's console socket (done by the runtime, on the host).
pub fn connect_console_socket(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path).ctx(|| format!("connecting to console socket {}", path.display()))
}

/// In the container, after pivot_root: opens a pty, hands its master to `socket`, and makes
/// the slave our stdio and controlling terminal. Returns the slave's path for /dev/console.
pub fn setup_terminal(socket: &UnixStream, size: Option<(u16, u16)>) -> Result<PathBuf> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .ctx(|| "opening /dev/ptmx".into())?;
    grantpt(&master).ctx(|| "grantpt".into())?;
    unlockpt(&master).ctx(|| "unlockpt".into())?;
    let slave_path = PathBuf::from(ptsname_r(&master).ctx(|| "ptsname".into())?);
    let slave = nix::fcntl::open(
        &slave_path,
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("opening {}", slave_path.display()))?;
    if let Some((rows, cols)) = size {
        set_window_size(slave.as_raw_fd(), rows, cols)?;
    }
    send_fd(socket, master.as_raw_fd(), &slave_path.to_string_lossy())?;
    drop(master);
    for target in 0..=2 {
        dup2_raw(slave.as_raw_fd(), target)?;
    }
    set_controlling_terminal(0)?;
    Ok(slave_path)
}

/// Sends `fd` with `name` as the payload, the way runc's console socket protocol does.
pub fn send_fd(socket: &UnixStream, fd: RawFd, name: &str) -> Result<()> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .ctx(|| "sending pty master over console socket".into())?;
    Ok(())
}

/// Receives one fd sent with [`send_fd`].
pub fn recv_fd(socket: &UnixStream) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ctx(|| "receiving pty master".into())?;
    for c in msg.cmsgs().ctx(|| "reading control message".into())? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: SCM_RIGHTS just installed this descriptor in our table; we own it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(Error::Invalid(
        "console socket message carried no file descriptor".into(),
    ))
}

fn dup2_raw(from: RawFd, to: RawFd) -> Result<()> {
    // SAFETY: plain dup2 on descriptors we hold; `to` is one of our stdio slots.
    let r = unsafe { libc::dup2(from, to) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| format!("dup2 pty to fd {to}"));
    }
    Ok(())
}

fn set_controlling_terminal(fd: RawFd) -> Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument and touches no memory of ours.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "TIOCSCTTY".into());
    }
    Ok(())
}

pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) -> Result<()> {
    let ws = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a Winsize that lives on our stack for the call.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "TIOCSWINSZ".into());
    }
    Ok(())
}
