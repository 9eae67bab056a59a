//! rrun: a low-level OCI runtime (runtime-spec 1.2), as a library.
//!
//! The public face is small: a [`Runtime`] over a state directory does the runc-compatible
//! operations (`create`, `start`, `state`, `kill`, `delete`, `exec`, `pause`, `update`,
//! `stats`, `events`) with [`CreateOptions`] and [`ExecOptions`]; errors are [`Error`]s
//! whose variants a caller can match on; [`spec`] loads and checks `config.json`. Beside
//! it, what a caller that keeps containers (the CRI server) legitimately shares with the
//! runtime: [`pod_cgroup`] (a cgroup of its own above the containers' cgroups), [`pty`]
//! (receiving a terminal's master), [`procfs`] (process identity, the mount table) and
//! [`atomic_file`].
//!
//! Inside, one kernel mechanism per module, following a container's life: `spec` →
//! `namespaces` → `rootfs` → `process` (clone, parent/child sync, exec) with `security`
//! (capabilities, seccomp, no_new_privileges) and `tty` → `hooks` → `state` (what lives
//! under `--root`); `cgroups` beside them; `container` strings them into the operations.

pub mod atomic_file;
pub mod pod_cgroup;
pub mod procfs;
pub mod pty;
pub mod spec;

mod cgroups;
mod container;
mod error;
mod hooks;
mod namespaces;
mod process;
mod rootfs;
mod security;
mod state;
mod tty;

pub use cgroups::{
    parse_size, BlkioEntry, BlkioStats, CpuStats, CpuUsage, Event, HugetlbStats, MemoryEntry,
    MemoryStats, OomCount, PidsStats, Stats, Throttling,
};
pub use container::{load_bundle, CreateOptions, ExecOptions, Runtime};
pub use error::{Error, Result};
pub use rootfs::parse_mount_options;
pub use security::sealed_exe::reexec_from_protected_exe;
pub use state::{validate_id, Status, DEFAULT_ROOT};

/// What `rrun run` needs to run a container in the foreground: signals blocked before the
/// container exists, then relayed to it until it exits.
pub mod foreground {
    pub use crate::process::{block_signals, supervise};
}

/// The runtime-spec version this runtime implements.
pub const OCI_VERSION: &str = "1.2.0";
