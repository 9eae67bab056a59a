//! The CRI server's library: everything `rrun-cri` is made of, by concern.
//!
//! - [`image`]: the content-addressed image store (import, unpack, overlay rootfs).
//! - [`monitor`]: the per-container monitor process and the CRI log format.

pub mod image;
pub mod monitor;
