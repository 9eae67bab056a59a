//! The parent/child channel: a `SOCK_SEQPACKET` socketpair carrying one JSON-encoded
//! message per packet, so message boundaries come from the kernel and an error raised in the
//! child reaches the user as the same sentence.

use crate::error::{Context, Error, Result};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};

/// Messages between the runtime (parent) and the process it is building (child).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Message {
    /// Parent → child: id maps are written and the cgroup is joined; go on.
    Proceed,
    /// Child → parent: namespaces and mounts are in place, not yet pivoted: run the
    /// prestart and createRuntime hooks now.
    RunCreateRuntimeHooks,
    /// Parent → child: those hooks are done; here are the state documents for the hooks
    /// the child runs itself.
    HooksDone {
        create_container: String,
        start_container: String,
    },
    /// Child → parent: everything is set up; the child now waits on the exec fifo (create)
    /// or is about to execve (exec).
    Ready,
    /// Child → parent: setting up failed; the child exits after sending this.
    Failed(String),
}

const MAX_MESSAGE: usize = 64 * 1024;

pub struct Channel {
    fd: OwnedFd,
}

/// A connected pair; both ends close on exec so the container never inherits them.
pub fn channel_pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx(|| "creating sync socketpair".into())?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, msg: &Message) -> Result<()> {
        let data = serde_json::to_vec(msg).map_err(|e| Error::Invalid(e.to_string()))?;
        let data = &data[..data.len().min(MAX_MESSAGE)];
        nix::sys::socket::send(
            self.fd.as_raw_fd(),
            data,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        )
        .ctx(|| "sending on sync socket".into())?;
        Ok(())
    }

    /// The next message, or `None` when the other end closed (the child died or exec'd).
    pub fn recv(&self) -> Result<Option<Message>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = loop {
            match nix::sys::socket::recv(
                self.fd.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.ctx(|| "reading sync socket".into())?,
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
            .map_err(|e| Error::Invalid(format!("garbled sync message: {e}")))
    }

    /// Waits for `want`; a `Failed` from the child becomes its error, a hang-up a clear one.
    pub fn wait_for(&self, want: Message) -> Result<()> {
        match self.recv()? {
            Some(m) if m == want => Ok(()),
            Some(Message::Failed(reason)) => Err(Error::Child(reason)),
            Some(other) => Err(Error::Child(format!(
                "protocol error: expected {want:?}, got {other:?}"
            ))),
            None => Err(Error::Child(format!(
                "the other side exited while we waited for {want:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_hangup_is_none() {
        let (a, b) = channel_pair().unwrap();
        a.send(&Message::Failed("mount /proc: EPERM".into()))
            .unwrap();
        assert_eq!(
            b.recv().unwrap(),
            Some(Message::Failed("mount /proc: EPERM".into()))
        );
        a.send(&Message::Ready).unwrap();
        b.wait_for(Message::Ready).unwrap();
        a.send(&Message::Failed("boom".into())).unwrap();
        let err = b.wait_for(Message::Ready).unwrap_err().to_string();
        assert!(err.contains("boom"), "{err}");
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }
}
