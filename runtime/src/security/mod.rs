//! What limits the container's process: capabilities, seccomp, LSM labels,
//! no_new_privileges.

mod capabilities;
pub mod lsm;
pub mod sealed_exe;
pub mod seccomp;

pub use capabilities::CapabilitySets;

use crate::error::{Error, Result};

/// Keeps the permitted set across the switch away from uid 0.
pub fn keep_capabilities(keep: bool) -> Result<()> {
    nix::sys::prctl::set_keepcaps(keep).map_err(|e| Error::Invalid(format!("PR_SET_KEEPCAPS: {e}")))
}

pub fn set_no_new_privileges() -> Result<()> {
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| Error::Invalid(format!("PR_SET_NO_NEW_PRIVS: {e}")))
}
