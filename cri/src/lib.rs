//! The CRI server's library: everything `rrun-cri` is made of, by concern, in the order of
//! a pod's life.
//!
//! - [`records`]: the records of pods and containers on disk (nothing lives only in memory).
//! - [`sandbox`]: a pod without a pause process: pinned namespaces, hostname/hosts/DNS files.
//! - [`network`]: pod networking through CNI plugins (ADD/DEL, cache, readiness).
//! - [`image`]: the content-addressed image store (import, unpack, overlay rootfs).
//! - [`ocispec`]: a CRI container request → the OCI runtime config rrun runs, with
//!   [`seccomp_profile`] (the CRI's RuntimeDefault).
//! - [`monitor`]: the per-container monitor process and the CRI log format.
//! - [`server`]: the CRI services over all of the above.
//! - [`streaming`]: the HTTP server of Exec, Attach and PortForward sessions.

pub mod error;
pub mod image;
pub mod monitor;
pub mod network;
pub mod ocispec;
pub mod records;
pub mod sandbox;
pub mod seccomp_profile;
pub mod server;
pub mod streaming;
