//! Container logs from the CRI log files (`<timestamp> <stream> <P|F> <text>` lines): the
//! text with the prefix stripped, partial lines joined, optionally followed.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

/// The text of CRI log content: each line's message; `P` (partial) lines get no newline.
pub fn strip(content: &str) -> String {
    let mut out = String::new();
    for line in content.split_inclusive('\n') {
        let Some(body) = line.strip_suffix('\n') else {
            // An unfinished line: the writer is mid-write; the caller keeps it for later.
            break;
        };
        let mut parts = body.splitn(4, ' ');
        let (_ts, _stream, tag) = (parts.next(), parts.next(), parts.next());
        let msg = parts.next().unwrap_or("");
        out.push_str(msg);
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    lines[lines.len().saturating_sub(n)..].concat()
}

/// Reads complete lines of `path` from `offset`, returning the text and the new offset.
pub fn read_from(path: &Path, offset: u64) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let complete = buf
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..complete]).into_owned();
    Ok((strip(&text), offset + complete as u64))
}

pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_prefix_and_joins_partials() {
        let s = "2024-01-01T00:00:00.000000000Z stdout P hel\n2024-01-01T00:00:00.000000001Z stdout F lo\n2024-01-01T00:00:01Z stderr F x y\n2024-01-01T00:00:02Z stdout F unfinished";
        assert_eq!(strip(s), "hello\nx y\n");
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
    }
}
