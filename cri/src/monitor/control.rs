//! The control socket, `<state-dir>/ctl.sock`: one request, `reopen`, which reopens the
//! CRI log file (the kubelet's log rotation), served from the monitor's loop.

use super::supervise::Running;
use super::sys;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long a control client may take to send its request and read the answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(1);

impl Running {
    /// Answers the control clients waiting on ctl.sock.
    pub(super) fn serve_control(&mut self) {
        loop {
            match self.control.accept() {
                Ok((stream, _)) => {
                    self.answer(stream);
                    // A reopen ran code the loop does not otherwise need (rare: at each
                    // log rotation); give its pages back as after the setup.
                    sys::drop_clean_exe_pages();
                    sys::trim_heap();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // WouldBlock: no one else waits; any other error is the client's loss.
                Err(_) => return,
            }
        }
    }

    /// One request, `reopen\n`, answered `ok\n` after the log is reopened (or `error:
    /// ...\n`). A client is given [`CONTROL_TIMEOUT`]: the loop must not stall on it.
    fn answer(&mut self, mut stream: UnixStream) {
        if stream.set_nonblocking(false).is_err()
            || stream.set_read_timeout(Some(CONTROL_TIMEOUT)).is_err()
            || stream.set_write_timeout(Some(CONTROL_TIMEOUT)).is_err()
        {
            return;
        }
        let mut req = [0u8; 64];
        let mut n = 0;
        while n < req.len() && !req[..n].contains(&b'\n') {
            match stream.read(&mut req[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
        let line = req[..n].split(|&b| b == b'\n').next().unwrap_or_default();
        let answer = if line.trim_ascii() == b"reopen" {
            match self.log.get_mut().reopen() {
                Ok(()) => "ok\n".to_string(),
                Err(e) => format!(
                    "error: reopening {}: {e}\n",
                    self.log.get_ref().path().display()
                ),
            }
        } else {
            "error: unknown request (the only one is \"reopen\")\n".to_string()
        };
        let _ = stream.write_all(answer.as_bytes());
    }
}
