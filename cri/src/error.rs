//! The CRI server's error: a kind and a message, and the one table that turns a kind into
//! a gRPC code ([`ErrorKind::code`]).
//!
//! Every failure is classified where its typed error is known (the `From` impls below, and
//! the monitor, which sends the kind along with its message), and becomes a
//! [`tonic::Status`] only at the server's edge, the RPC handlers' `?`. The codes are the
//! ones the CRI and containerd give: an unknown id or image is NotFound, a request the
//! server cannot carry out as written is InvalidArgument, stopping or removing what is
//! already gone is no error at all, and a failure below us that we cannot classify (a CNI
//! plugin's, the container's init's) is Unknown, as containerd answers it.

use serde::{Deserialize, Serialize};

/// What went wrong, as far as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or cannot be carried out as written.
    InvalidArgument,
    /// No pod, container or image has that id or name.
    NotFound,
    /// A pod or container with that name and attempt exists.
    AlreadyExists,
    /// The object is not in a state that allows the operation (exec in a stopped container).
    FailedPrecondition,
    /// The operation's time ran out.
    DeadlineExceeded,
    /// The request asks for something rrun does not do.
    Unimplemented,
    /// A service we depend on (a registry, the streaming server) cannot be reached.
    Unavailable,
    /// A limit of the server was reached.
    ResourceExhausted,
    /// The registry wants credentials.
    Unauthenticated,
    /// The registry refused the credentials.
    PermissionDenied,
    /// Content did not match its digest.
    DataLoss,
    /// The server failed (its disk, the kernel): not the caller's doing.
    Internal,
    /// A component below failed in a way we cannot classify (containerd's default).
    Unknown,
}

impl ErrorKind {
    /// The gRPC code of each kind: the one place where codes are chosen.
    pub fn code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorKind::Unimplemented => Code::Unimplemented,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::ResourceExhausted => Code::ResourceExhausted,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
            ErrorKind::DataLoss => Code::DataLoss,
            ErrorKind::Internal => Code::Internal,
            ErrorKind::Unknown => Code::Unknown,
        }
    }
}

/// A failed CRI operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The same error, its message prefixed with what was being done.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
        }
    }
    pub fn invalid_argument(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    pub fn already_exists(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, m)
    }
    pub fn failed_precondition(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, m)
    }
    pub fn deadline_exceeded(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::DeadlineExceeded, m)
    }
    pub fn unimplemented(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unimplemented, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, m)
    }
    pub fn resource_exhausted(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceExhausted, m)
    }
    pub fn internal(m: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, m.to_string())
    }
    pub fn unknown(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unknown, m)
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.kind.code(), e.message)
    }
}

/// The kind of an error of the runtime library.
pub fn runtime_kind(e: &rrun::Error) -> ErrorKind {
    match e {
        rrun::Error::NotFound(_) => ErrorKind::NotFound,
        rrun::Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
        rrun::Error::WrongState { .. } => ErrorKind::FailedPrecondition,
        rrun::Error::Spec(_) | rrun::Error::Invalid(_) | rrun::Error::InvalidId(_) => {
            ErrorKind::InvalidArgument
        }
        // What the container's init met (a missing executable, a mount the kernel
        // refused): containerd answers the OCI runtime's failure as Unknown.
        rrun::Error::Child(_) | rrun::Error::Hook { .. } => ErrorKind::Unknown,
        _ => ErrorKind::Internal,
    }
}

impl From<rrun::Error> for Error {
    fn from(e: rrun::Error) -> Self {
        Error::new(runtime_kind(&e), e.to_string())
    }
}

impl From<crate::ocispec::SpecError> for Error {
    fn from(e: crate::ocispec::SpecError) -> Self {
        use crate::ocispec::SpecError;
        match e {
            SpecError::Invalid(m) => Error::invalid_argument(m),
            SpecError::Unsupported(m) => Error::unimplemented(m),
            SpecError::Runtime(e) => e.into(),
        }
    }
}

impl From<crate::records::StoreError> for Error {
    fn from(e: crate::records::StoreError) -> Self {
        Error::internal(e)
    }
}

impl From<crate::sandbox::SandboxError> for Error {
    fn from(e: crate::sandbox::SandboxError) -> Self {
        Error::internal(e)
    }
}

impl From<crate::image::ImageError> for Error {
    fn from(e: crate::image::ImageError) -> Self {
        use crate::image::ImageError;
        let kind = match &e {
            ImageError::NotFound(_) => ErrorKind::NotFound,
            ImageError::InvalidReference { .. } | ImageError::Ambiguous { .. } => {
                ErrorKind::InvalidArgument
            }
            ImageError::DigestMismatch { .. } => ErrorKind::DataLoss,
            e if e.is_no_space() => ErrorKind::ResourceExhausted,
            _ => ErrorKind::Internal,
        };
        Error::new(kind, e.to_string())
    }
}

/// A failed pull of `name`.
pub fn pull_error(name: &str, e: crate::image::PullError) -> Error {
    use crate::image::PullError;
    let msg = format!("pulling image {name:?}: {e}");
    let kind = match &e {
        PullError::InvalidReference(_) | PullError::BadAuth(_) => ErrorKind::InvalidArgument,
        PullError::NotFound(_) => ErrorKind::NotFound,
        PullError::Unauthenticated(_) => ErrorKind::Unauthenticated,
        PullError::PermissionDenied(_) => ErrorKind::PermissionDenied,
        PullError::Unavailable(_) | PullError::Tls(_) => ErrorKind::Unavailable,
        PullError::Timeout(_) => ErrorKind::DeadlineExceeded,
        PullError::Corrupt(_) => ErrorKind::DataLoss,
        PullError::Unsupported(_) | PullError::Config { .. } => ErrorKind::FailedPrecondition,
        // A full disk (ENOSPC, EDQUOT) is a limit of the node, as containerd's
        // "no space left on device" is the kubelet's cue for image garbage collection.
        PullError::Store(s) if s.is_no_space() => ErrorKind::ResourceExhausted,
        PullError::Registry(_) | PullError::Store(_) => ErrorKind::Internal,
    };
    Error::new(kind, msg)
}

/// A failed CNI ADD or DEL (`what`) for pod `id`, in containerd's words: a plugin's failure
/// is Unknown, as containerd answers it; a request the network cannot serve is the caller's.
pub fn network_error(id: &str, what: &str, e: crate::network::NetworkError) -> Error {
    if let crate::network::NetworkError::BadArgument(m) = e {
        return Error::invalid_argument(m);
    }
    Error::unknown(format!("failed to {what} network for sandbox {id:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn code(e: impl Into<Error>) -> Code {
        tonic::Status::from(e.into()).code()
    }

    #[test]
    fn every_kind_has_its_own_code() {
        let kinds = [
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::FailedPrecondition,
            ErrorKind::DeadlineExceeded,
            ErrorKind::Unimplemented,
            ErrorKind::Unavailable,
            ErrorKind::ResourceExhausted,
            ErrorKind::Unauthenticated,
            ErrorKind::PermissionDenied,
            ErrorKind::DataLoss,
            ErrorKind::Internal,
            ErrorKind::Unknown,
        ];
        let codes: std::collections::HashSet<_> = kinds.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&Code::Ok));
    }

    #[test]
    fn the_table_of_caller_errors() {
        assert_eq!(code(Error::not_found("pod")), Code::NotFound);
        assert_eq!(code(Error::invalid_argument("x")), Code::InvalidArgument);
        assert_eq!(code(Error::deadline_exceeded("x")), Code::DeadlineExceeded);
        assert_eq!(
            code(Error::failed_precondition("x")),
            Code::FailedPrecondition
        );
        assert_eq!(code(Error::internal("disk")), Code::Internal);
    }

    #[test]
    fn runtime_errors_are_classified() {
        assert_eq!(code(rrun::Error::NotFound("c".into())), Code::NotFound);
        assert_eq!(
            code(rrun::Error::AlreadyExists("c".into())),
            Code::AlreadyExists
        );
        assert_eq!(
            code(rrun::Error::InvalidId("../x".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(rrun::Error::Invalid("bad sysctl".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(rrun::Error::WrongState {
                id: "c".into(),
                status: "stopped".into(),
                action: "exec in",
                wanted: "running",
            }),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(rrun::Error::Child("exec: ENOENT".into())),
            Code::Unknown
        );
        let io = rrun::Error::Io {
            context: "x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(code(io), Code::Internal);
    }

    #[test]
    fn spec_and_image_errors_are_classified() {
        use crate::ocispec::SpecError;
        assert_eq!(
            code(SpecError::Invalid("no command specified".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(SpecError::Unsupported("windows".into())),
            Code::Unimplemented
        );
        assert_eq!(
            code(SpecError::Runtime(rrun::Error::NotFound("t".into()))),
            Code::NotFound
        );
        assert_eq!(
            code(crate::image::ImageError::NotFound("busybox".into())),
            Code::NotFound
        );
        let pulled = |e| tonic::Status::from(pull_error("i", e)).code();
        use crate::image::PullError;
        assert_eq!(pulled(PullError::NotFound("i".into())), Code::NotFound);
        assert_eq!(
            pulled(PullError::Timeout("60s".into())),
            Code::DeadlineExceeded
        );
        assert_eq!(
            pulled(PullError::InvalidReference("::".into())),
            Code::InvalidArgument
        );
    }

    #[test]
    fn a_full_disk_is_resource_exhausted() {
        use crate::image::{ImageError, PullError};
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let io = ImageError::Io {
                op: "writing",
                path: "/x/tmp/ingest-1".into(),
                source: std::io::Error::from_raw_os_error(errno),
            };
            assert!(io.is_no_space());
            assert_eq!(
                tonic::Status::from(pull_error("i", PullError::Store(io))).code(),
                Code::ResourceExhausted
            );
        }
        let full = ImageError::NoSpace {
            disk: "/x (tmpfs t, 8.0 MiB)".into(),
            reason: "layer 0: writing: No space left on device".into(),
        };
        let e = pull_error("i", PullError::Store(full));
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        assert!(e
            .message()
            .contains("no space left on the image filesystem /x (tmpfs t"));
        // Imports too; any other I/O failure stays the server's own.
        let import = ImageError::Io {
            op: "writing",
            path: "/x/blob".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(code(import), Code::ResourceExhausted);
        let other = ImageError::Io {
            op: "writing",
            path: "/x/blob".into(),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        };
        assert_eq!(code(other), Code::Internal);
    }

    #[test]
    fn network_errors_are_containerds() {
        use crate::network::NetworkError;
        let e = network_error("p", "setup", NetworkError::NotReady("no conf".into()));
        assert_eq!(e.kind(), ErrorKind::Unknown);
        assert!(e
            .message()
            .starts_with("failed to setup network for sandbox \"p\""));
        let e = network_error("p", "setup", NetworkError::BadArgument("port 0".into()));
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = Error::not_found("image \"x\"").context("creating container c");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.message(), "creating container c: image \"x\"");
    }
}
