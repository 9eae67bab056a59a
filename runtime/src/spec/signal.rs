//! Signal names as `rrun kill` takes them.

use std::str::FromStr;

use nix::sys::signal::Signal;

use super::SpecError;

/// Parses a signal as `kill` takes it: `KILL`, `SIGKILL`, `sigkill` or `9`.
pub fn parse_signal(s: &str) -> Result<Signal, SpecError> {
    let unknown = || SpecError::UnknownSignal(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(unknown());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let n: i32 = t.parse().map_err(|_| unknown())?;
        return Signal::try_from(n).map_err(|_| unknown());
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let bare = match bare {
        "IOT" => "ABRT",
        "CLD" => "CHLD",
        "POLL" => "IO",
        other => other,
    };
    Signal::from_str(&format!("SIG{bare}")).map_err(|_| unknown())
}
