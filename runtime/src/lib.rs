//! rrun: a low-level OCI runtime (runtime-spec 1.2).
//!
//! The modules follow a container's life: [`spec`] (load and check `config.json`) →
//! [`namespaces`] → [`rootfs`] → [`process`] (clone, parent/child sync, exec) with
//! [`security`] (capabilities, no_new_privileges) and [`tty`] → [`hooks`] → [`state`]
//! (what lives under `--root`). [`container`] strings them into the runc-compatible
//! operations (`create`, `start`, `kill`, `delete`, `exec`, ...) that the CLI and the CRI
//! server call.

pub mod atomic_file;
pub mod cgroups;
pub mod container;
pub mod hooks;
pub mod namespaces;
pub mod process;
pub mod procfs;
pub mod rootfs;
pub mod security;
pub mod spec;
pub mod state;
pub mod tty;

mod error;
pub use error::{Error, Result};

/// The runtime-spec version this runtime implements.
pub const OCI_VERSION: &str = "1.2.0";
