//! Terminals of containers with `process.terminal`: the console socket on which the
//! container's init sends its pty master (runc's `--console-socket` protocol), and the
//! master's window size.

pub use crate::container::{console_pair, receive_master};
pub use crate::tty::{recv_fd, set_window_size};
