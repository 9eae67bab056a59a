//! The Kubernetes CRI (runtime.v1) API shared by the CRI server and `rrun-kubelet`.
//!
//! Placeholder: the CRI issue fills this crate with the `k8s-cri` bindings, a unix-socket
//! connector and the server plumbing both sides share.
