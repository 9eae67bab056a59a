use std::path::PathBuf;

/// Everything that can go wrong in the runtime library, one variant per subject so a caller
/// (the CLI, the CRI server) can tell "no such container" from "the kernel said no".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error(
        "invalid container id {0:?}: use letters, digits, '_', '+', '-' and '.' (not only dots)"
    )]
    InvalidId(String),
    /// Displayed by [`wrong_state`]: a `kill` of a stopped container says "container not
    /// running", the words containerd's runc shim (`checkKillError`) looks for to treat the
    /// process as already gone, as runc says them.
    #[error("{}", wrong_state(id, status, action, wanted))]
    WrongState {
        id: String,
        status: String,
        action: &'static str,
        wanted: &'static str,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },
    #[error("reading state of container at {path}: {source}")]
    StateCorrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error("container init failed: {0}")]
    Child(String),
    #[error("hook {path} ({kind}): {reason}")]
    Hook {
        kind: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a human context to io and nix errors at the place they happen.
pub(crate) trait Context<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Sys {
            context: context(),
            source,
        })
    }
}

fn wrong_state(id: &str, status: &str, action: &str, wanted: &str) -> String {
    if action == "kill" && status == "stopped" {
        format!("container not running: container {id:?} is stopped: kill needs it {wanted}")
    } else {
        format!("container {id:?} is {status}: {action} needs it {wanted}")
    }
}
