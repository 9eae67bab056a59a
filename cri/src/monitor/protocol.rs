//! Every message between the CRI server, the container's monitor and their helpers, as
//! serde types that both ends use:
//!
//! - [`StartReport`]: the monitor's (and the pod init's) one line on stdout to the server;
//! - [`HelperAnswer`]: what a `rrun-cri monitor --helper` run writes on its result fd;
//! - [`ExecStatus`]: the exec helper's status file;
//! - [`ExitStatus`]: `exit.json`, the container's end, which the monitor writes and the
//!   server reads (possibly a server of another version: see [`ExitStatus::parse`]).
//!
//! A failure carries its [`ErrorKind`] across the processes, so that what the runtime
//! refuses as the caller's mistake reaches the client as InvalidArgument or NotFound.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

/// A failure on the other side of a process boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// A failure of the runtime library, with its causes, classified as the server would.
    pub fn runtime(e: &rrun::Error) -> Self {
        Failure::new(crate::error::runtime_kind(e), error_chain(e))
    }

    /// The same failure, its message prefixed with what was being done.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        Failure::new(self.kind, format!("{what}: {}", self.message))
    }
}

/// A failure that is only a message is ours (a pipe, a fork, a file): Internal.
impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::new(ErrorKind::Internal, message)
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        Error::new(f.kind, f.message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// An error and its causes, each once (rrun's messages often carry their cause already).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

/// The one line a starting monitor (or pod init) writes on stdout; the server reads it
/// until end of file. `{"pid":N}` or `{"error":"...","kind":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StartReport {
    Started { pid: i32 },
    Failed(#[serde(with = "as_error")] Failure),
}

/// A [`Failure`] as the fields `error` (the message) and `kind` (Internal when absent).
mod as_error {
    use super::{ErrorKind, Failure};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Fields {
        error: String,
        #[serde(default = "internal")]
        kind: ErrorKind,
    }

    fn internal() -> ErrorKind {
        ErrorKind::Internal
    }

    pub fn serialize<S: Serializer>(f: &Failure, s: S) -> Result<S::Ok, S::Error> {
        Fields {
            error: f.message.clone(),
            kind: f.kind,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Failure, D::Error> {
        let f = Fields::deserialize(d)?;
        Ok(Failure::new(f.kind, f.error))
    }
}

impl StartReport {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"error":"encoding the report: {e}","kind":"internal"}}"#)
        })
    }

    /// The report in `text`, or (Internal) `missing()` when there is none.
    pub fn parse(text: &str, missing: impl FnOnce() -> String) -> Self {
        serde_json::from_str(text.trim())
            .unwrap_or_else(|_| StartReport::Failed(Failure::new(ErrorKind::Internal, missing())))
    }
}

/// The most a helper's answer may take: the reader reads it only once the writer has
/// exited, so it must fit in a pipe.
const MAX_ANSWER: usize = 8192;

/// A helper's answer: a number (a pid, a count) or a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelperAnswer {
    Done(i64),
    Failed(Failure),
}

impl HelperAnswer {
    /// The answer as bytes that fit [`MAX_ANSWER`] (a long message is cut).
    pub fn encode(r: Result<i64, Failure>) -> Vec<u8> {
        let mut answer = match r {
            Ok(n) => HelperAnswer::Done(n),
            Err(f) => HelperAnswer::Failed(f),
        };
        if let HelperAnswer::Failed(f) = &mut answer {
            // Escapes can at most sextuple a character: cut to what surely fits.
            let keep = (MAX_ANSWER - 100) / 6;
            if f.message.len() > keep {
                let mut end = keep;
                while !f.message.is_char_boundary(end) {
                    end -= 1;
                }
                f.message.truncate(end);
            }
        }
        serde_json::to_vec(&answer).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<i64, Failure> {
        if bytes.is_empty() {
            return Err("the helper process ended without an answer"
                .to_string()
                .into());
        }
        match serde_json::from_slice(bytes) {
            Ok(HelperAnswer::Done(n)) => Ok(n),
            Ok(HelperAnswer::Failed(f)) => Err(f),
            Err(_) => Err(format!(
                "bad answer from the helper: {:?}",
                String::from_utf8_lossy(bytes)
            )
            .into()),
        }
    }
}

/// The exec helper's result: `{"exit_code":N,"timed_out":B}` or
/// `{"error":"...","kind":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExecStatus {
    Exited { exit_code: i32, timed_out: bool },
    Failed(#[serde(with = "as_error")] Failure),
}

impl ExecStatus {
    /// The status in `bytes`, or the failure of a helper that left none.
    pub fn parse(bytes: Option<&[u8]>) -> Self {
        bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_else(|| {
                ExecStatus::Failed(Failure::new(
                    ErrorKind::Internal,
                    "the exec helper died without a status",
                ))
            })
    }
}

/// `exit.json`: how the container ended. The fields are those the monitor has always
/// written, so a server upgraded under running containers reads what their older monitors
/// write, and a file missing a field (written by hand, or by a future monitor) still gives
/// an exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// 128 + the signal for a killed init; 255 when the file does not say.
    #[serde(default = "unknown_exit_code")]
    pub exit_code: i32,
    /// The signal that killed the init.
    #[serde(default)]
    pub signal: Option<i32>,
    /// When the init was reaped, in Unix nanoseconds (0: unknown).
    #[serde(default)]
    pub finished_at_ns: u64,
    /// Whether the container's cgroup saw an OOM kill.
    #[serde(default)]
    pub oom_killed: bool,
}

fn unknown_exit_code() -> i32 {
    255
}

impl ExitStatus {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_files_of_the_old_monitor_are_read() {
        // Exactly what monitors before this module wrote with format!.
        let old = b"{\"exit_code\":137,\"signal\":9,\"finished_at_ns\":1765000000123456789,\"oom_killed\":true}\n";
        let e = ExitStatus::parse(old).unwrap();
        assert_eq!(
            e,
            ExitStatus {
                exit_code: 137,
                signal: Some(9),
                finished_at_ns: 1_765_000_000_123_456_789,
                oom_killed: true,
            }
        );
        let old = b"{\"exit_code\":0,\"signal\":null,\"finished_at_ns\":0,\"oom_killed\":false}\n";
        assert_eq!(ExitStatus::parse(old).unwrap().exit_code, 0);
        // The old server's reader defaulted a missing code to 255.
        assert_eq!(ExitStatus::parse(b"{}").unwrap().exit_code, 255);
        assert!(ExitStatus::parse(b"{\"exit_code\":").is_err());
    }

    #[test]
    fn exit_files_round_trip_in_the_old_shape() {
        let e = ExitStatus {
            exit_code: 2,
            signal: None,
            finished_at_ns: 5,
            oom_killed: false,
        };
        let text = String::from_utf8(e.to_json()).unwrap();
        assert_eq!(
            text,
            "{\"exit_code\":2,\"signal\":null,\"finished_at_ns\":5,\"oom_killed\":false}\n"
        );
        assert_eq!(ExitStatus::parse(text.as_bytes()).unwrap(), e);
    }

    #[test]
    fn helper_answers_carry_the_kind() {
        assert_eq!(HelperAnswer::decode(&HelperAnswer::encode(Ok(42))), Ok(42));
        let f = Failure::new(ErrorKind::InvalidArgument, "bad \"sysctl\"\n\\x");
        assert_eq!(
            HelperAnswer::decode(&HelperAnswer::encode(Err(f.clone()))),
            Err(f)
        );
        assert!(HelperAnswer::decode(b"").is_err());
        assert!(HelperAnswer::decode(b"ok 5").is_err());
        let long = Failure::new(ErrorKind::Unknown, "\u{1}é".repeat(100_000));
        let bytes = HelperAnswer::encode(Err(long));
        assert!(bytes.len() <= MAX_ANSWER, "{}", bytes.len());
        assert_eq!(
            HelperAnswer::decode(&bytes).unwrap_err().kind,
            ErrorKind::Unknown
        );
    }

    #[test]
    fn start_reports_round_trip() {
        for r in [
            StartReport::Started { pid: 7 },
            StartReport::Failed(Failure::new(ErrorKind::NotFound, "no such\tthing")),
        ] {
            assert_eq!(StartReport::parse(&r.to_line(), String::new), r);
        }
        let StartReport::Failed(f) = StartReport::parse("", || "boom".into()) else {
            panic!("an empty report is a failure");
        };
        assert_eq!(f, Failure::new(ErrorKind::Internal, "boom"));
        // The shape the server has always read, with the kind beside.
        assert_eq!(StartReport::Started { pid: 7 }.to_line(), r#"{"pid":7}"#);
        let line = StartReport::Failed(Failure::new(ErrorKind::NotFound, "x")).to_line();
        assert_eq!(line, r#"{"error":"x","kind":"not_found"}"#);
    }

    #[test]
    fn runtime_failures_are_classified() {
        let f = Failure::runtime(&rrun::Error::Invalid("invalid sysctl name".into()));
        assert_eq!(f.kind, ErrorKind::InvalidArgument);
        let f = Failure::runtime(&rrun::Error::Child("exec: ENOENT".into()));
        assert_eq!(Error::from(f).kind(), ErrorKind::Unknown);
    }

    #[test]
    fn exec_statuses() {
        let s = ExecStatus::Exited {
            exit_code: 3,
            timed_out: false,
        };
        let bytes = serde_json::to_vec(&s).unwrap();
        assert_eq!(ExecStatus::parse(Some(&bytes)), s);
        assert!(matches!(ExecStatus::parse(None), ExecStatus::Failed(_)));
    }

    #[test]
    fn helper_answers_round_trip() {
        let parse = |r| HelperAnswer::decode(&HelperAnswer::encode(r));
        assert_eq!(parse(Ok(1234)), Ok(1234));
        let no = Failure::from("no: such".to_string());
        assert_eq!(parse(Err(no.clone())), Err(no));
        assert!(HelperAnswer::decode(b"").is_err());
        assert!(HelperAnswer::decode(b"ok x").is_err());
        assert!(HelperAnswer::decode(b"junk").is_err());
        // A long message still fits the pipe.
        assert!(HelperAnswer::encode(Err("x".repeat(100_000).into())).len() <= 8192);
    }

    #[test]
    fn error_chain_names_each_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "top: low",
            Some(Box::new(E("low", Some(Box::new(E("root", None)))))),
        );
        assert_eq!(error_chain(&e), "top: low: root");
    }
}
