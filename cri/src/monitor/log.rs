//! The CRI log format, as the kubelet reads it (and containerd writes it):
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F a whole line
//! 2016-10-06T00:17:09.669794202Z stderr P the first 16 KiB of a longer line
//! ```
//!
//! One record per chunk: the UTC time with nanoseconds, the stream, `F` when the text
//! ended with its newline (which is not written: the record's own newline stands for it)
//! or `P` for a piece of a line (longer than the maximum, or left without a newline when
//! the stream ended), then the text. The kubelet joins `P` records up to the next `F`.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest text of one record; longer lines are split into `P` records. containerd's
/// default (`max_container_log_line_size`) too.
pub const MAX_LINE: usize = 16 * 1024;

/// Which of the container's streams a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
}

/// Cuts one stream's bytes into records: whole lines, or pieces of at most `max` bytes.
/// It keeps the start of an unfinished line until its end (or more than `max` bytes of it)
/// has arrived.
pub struct Framer {
    pending: Vec<u8>,
    max: usize,
}

impl Framer {
    pub fn new(max: usize) -> Framer {
        let max = max.max(1);
        Framer {
            // Reserved once, so a long-lived monitor never reallocates; only the pages a
            // long line actually reaches are ever touched.
            pending: Vec::with_capacity(max),
            max,
        }
    }

    /// Feeds the bytes just read; `emit(head, tail, full)` gets each record's text as two
    /// pieces (the kept start of the line, then the new bytes), so nothing is copied twice.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8], &[u8], bool)) {
        while !data.is_empty() {
            let room = self.max - self.pending.len();
            // A newline right after `room` bytes still ends a line of exactly `max` bytes.
            let window = &data[..data.len().min(room + 1)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                emit(&self.pending, &data[..i], true);
                self.pending.clear();
                data = &data[i + 1..];
            } else if data.len() >= room {
                emit(&self.pending, &data[..room], false);
                self.pending.clear();
                data = &data[room..];
            } else {
                self.pending.extend_from_slice(data);
                data = &[];
            }
        }
    }

    /// The stream has ended: what is left of an unfinished line becomes a `P` record.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8], &[u8], bool)) {
        if !self.pending.is_empty() {
            emit(&self.pending, &[], false);
            self.pending.clear();
        }
    }
}

/// Writes records to `out`, each with one `write` (so records of a file opened with
/// `O_APPEND` never interleave, and a reader never sees half of one unless the disk fills).
pub struct RecordWriter<W: Write> {
    out: W,
    scratch: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    pub fn new(out: W) -> RecordWriter<W> {
        RecordWriter {
            out,
            scratch: Vec::with_capacity(MAX_LINE + 64),
        }
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// One record, stamped `now`.
    pub fn record(
        &mut self,
        now: SystemTime,
        stream: Stream,
        head: &[u8],
        tail: &[u8],
        full: bool,
    ) -> io::Result<()> {
        self.scratch.clear();
        write_timestamp(&mut self.scratch, now)?;
        self.scratch.push(b' ');
        self.scratch.extend_from_slice(stream.name());
        self.scratch
            .extend_from_slice(if full { b" F " } else { b" P " });
        self.scratch.extend_from_slice(head);
        self.scratch.extend_from_slice(tail);
        self.scratch.push(b'\n');
        self.out.write_all(&self.scratch)
    }
}

/// `2016-10-06T00:17:09.669794202Z`: RFC 3339 in UTC, always nine digits of fraction
/// (containerd's layout; the kubelet parses it as RFC3339Nano).
pub fn write_timestamp(out: &mut Vec<u8>, now: SystemTime) -> io::Result<()> {
    // A clock set before 1970 (humantime refuses those) is written as the epoch.
    let now = if now < UNIX_EPOCH { UNIX_EPOCH } else { now };
    write!(out, "{}", humantime::format_rfc3339_nanos(now))
}

/// The container's log file: appended to, reopened on request (after the kubelet has
/// renamed it for rotation). While it cannot be opened, records are dropped: the
/// container is never blocked by its log.
pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
}

impl LogFile {
    /// Opens (creating it and its parents) `path`.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        let mut log = LogFile {
            path: path.to_path_buf(),
            file: None,
        };
        log.reopen()?;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file's descriptor, if open.
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.file.as_ref().map(|f| f.as_raw_fd())
    }

    /// Closes the file and opens the path again; on failure the log stays closed (records
    /// are dropped) until a reopen succeeds.
    pub fn reopen(&mut self) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        self.file = None;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)?;
        self.file = Some(file);
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T0: &str = "2016-10-06T00:17:09.669794202Z";

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_475_713_029, 669_794_202)
    }

    /// Feeds `chunks` of one stream through a framer of `max` bytes (then the end of the
    /// stream) and returns the log text.
    fn frame(max: usize, chunks: &[&[u8]]) -> String {
        let mut w = RecordWriter::new(Vec::new());
        let mut f = Framer::new(max);
        let mut emit = |h: &[u8], t: &[u8], full: bool| {
            w.record(t0(), Stream::Stdout, h, t, full).unwrap();
        };
        for c in chunks {
            f.feed(c, &mut emit);
        }
        f.finish(&mut emit);
        String::from_utf8(w.out).unwrap()
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines()
            .map(|l| l.strip_prefix(T0).unwrap().to_string())
            .collect()
    }

    #[test]
    fn timestamp_is_containerds_layout() {
        let mut v = Vec::new();
        write_timestamp(&mut v, t0()).unwrap();
        assert_eq!(String::from_utf8(v).unwrap(), T0);
        // Nine digits even when the fraction is round.
        let mut v = Vec::new();
        write_timestamp(&mut v, UNIX_EPOCH + Duration::from_secs(86_400)).unwrap();
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "1970-01-02T00:00:00.000000000Z"
        );
        let mut v = Vec::new();
        write_timestamp(&mut v, UNIX_EPOCH - Duration::from_secs(5)).unwrap();
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn full_lines_one_record_each() {
        let out = frame(16, &[b"hello\nworld\n", b"\n"]);
        assert_eq!(
            lines(&out),
            [" stdout F hello", " stdout F world", " stdout F "]
        );
    }

    #[test]
    fn a_line_split_across_reads_is_one_record() {
        let out = frame(16, &[b"hel", b"lo wo", b"rld\nnext", b"\n"]);
        assert_eq!(lines(&out), [" stdout F hello world", " stdout F next"]);
    }

    #[test]
    fn long_lines_are_split_at_the_maximum() {
        let out = frame(4, &[b"abcdefghij\n"]);
        assert_eq!(
            lines(&out),
            [" stdout P abcd", " stdout P efgh", " stdout F ij"]
        );
        // Across reads too, and a line of exactly the maximum is one full record.
        let out = frame(4, &[b"ab", b"cdef", b"gh\n", b"wxyz\n"]);
        assert_eq!(
            lines(&out),
            [" stdout P abcd", " stdout F efgh", " stdout F wxyz"]
        );
    }

    #[test]
    fn what_is_left_at_the_end_is_a_partial_record() {
        let out = frame(16, &[b"done\nno newline"]);
        assert_eq!(lines(&out), [" stdout F done", " stdout P no newline"]);
        assert!(out.ends_with('\n'));
        // Nothing left: nothing written.
        assert_eq!(frame(16, &[b"x\n"]).lines().count(), 1);
        assert_eq!(frame(16, &[]), "");
    }

    #[test]
    fn interleaved_streams_keep_their_own_lines() {
        let mut w = RecordWriter::new(Vec::new());
        let mut out = Framer::new(MAX_LINE);
        let mut err = Framer::new(MAX_LINE);
        let feed = |f: &mut Framer, s: Stream, data: &[u8], w: &mut RecordWriter<Vec<u8>>| {
            let mut emit = |h: &[u8], t: &[u8], full: bool| {
                w.record(t0(), s, h, t, full).unwrap();
            };
            f.feed(data, &mut emit);
            if data.is_empty() {
                f.finish(&mut emit);
            }
        };
        feed(&mut out, Stream::Stdout, b"out-a", &mut w);
        feed(&mut err, Stream::Stderr, b"err-1\nerr-", &mut w);
        feed(&mut out, Stream::Stdout, b"-b\nout-c\n", &mut w);
        feed(&mut err, Stream::Stderr, b"2", &mut w);
        feed(&mut out, Stream::Stdout, b"", &mut w);
        feed(&mut err, Stream::Stderr, b"", &mut w);
        let text = String::from_utf8(w.out).unwrap();
        assert_eq!(
            lines(&text),
            [
                " stderr F err-1",
                " stdout F out-a-b",
                " stdout F out-c",
                " stderr P err-2"
            ]
        );
    }

    #[test]
    fn text_is_kept_byte_for_byte() {
        // Not UTF-8, carriage returns, tabs: the log carries bytes, not characters.
        let mut w = RecordWriter::new(Vec::new());
        let mut f = Framer::new(MAX_LINE);
        let mut emit = |h: &[u8], t: &[u8], full: bool| {
            w.record(t0(), Stream::Stderr, h, t, full).unwrap();
        };
        f.feed(b"\xff\xfe\tx\r\n", &mut emit);
        let mut want = T0.as_bytes().to_vec();
        want.extend_from_slice(b" stderr F \xff\xfe\tx\r\n");
        assert_eq!(w.out, want);
    }

    #[test]
    fn log_file_reopens_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/0.log");
        let mut log = LogFile::open(&path).unwrap();
        log.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("old.log")).unwrap();
        log.write_all(b"two\n").unwrap();
        log.reopen().unwrap();
        log.write_all(b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("old.log")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        // An unopenable path drops records instead of failing the writer.
        std::fs::remove_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a"), "a file, not a dir").unwrap();
        assert!(log.reopen().is_err());
        log.write_all(b"lost\n").unwrap();
    }
}
