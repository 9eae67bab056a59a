//! SPDY/3.1 framing, as the kubelet's and kubectl's SPDY streams use it (the upgrade token
//! is `SPDY/3.1`; the frames are SPDY 3's): the frames, and the header blocks, which are
//! one zlib stream per direction and connection, flushed at each block, with the SPDY 3
//! preset dictionary.
//!
//! Flow control (WINDOW_UPDATE) is read and ignored, and never sent: the Go
//! implementation the Kubernetes clients use does neither.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// Control frame types.
pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;

/// The FIN flag of data, SYN_STREAM, SYN_REPLY and HEADERS frames.
pub const FLAG_FIN: u8 = 0x01;

/// The largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    #[error("SPDY version {0} (only 3 is spoken)")]
    Version(u16),
    #[error("{what} frame of {len} bytes is too short")]
    Short { what: &'static str, len: usize },
    #[error("header block: {0}")]
    Headers(String),
}

/// One frame; header blocks are still compressed (the connection's [`HeaderCodec`] has
/// to see every one of them, in order).
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    SynStream {
        stream: u32,
        fin: bool,
        block: Vec<u8>,
    },
    SynReply {
        stream: u32,
        fin: bool,
        block: Vec<u8>,
    },
    Headers {
        stream: u32,
        fin: bool,
        block: Vec<u8>,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last_stream: u32,
        status: u32,
    },
    /// SETTINGS, WINDOW_UPDATE and unknown control frames: nothing to do.
    Ignored(u16),
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses the first frame of `buf`: the frame and its size, `None` if incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let flags = buf[4];
    let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let body = &buf[8..8 + len];
    let fin = flags & FLAG_FIN != 0;
    let short = |what, need: usize| {
        if len < need {
            Err(SpdyError::Short { what, len })
        } else {
            Ok(())
        }
    };
    let frame = if buf[0] & 0x80 == 0 {
        Frame::Data {
            stream: be32(buf) & 0x7fff_ffff,
            fin,
            data: body.to_vec(),
        }
    } else {
        let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
        if version != 3 {
            return Err(SpdyError::Version(version));
        }
        let stream = || be32(body) & 0x7fff_ffff;
        match u16::from_be_bytes([buf[2], buf[3]]) {
            SYN_STREAM => {
                short("SYN_STREAM", 10)?;
                Frame::SynStream {
                    stream: stream(),
                    fin,
                    block: body[10..].to_vec(),
                }
            }
            SYN_REPLY => {
                short("SYN_REPLY", 4)?;
                Frame::SynReply {
                    stream: stream(),
                    fin,
                    block: body[4..].to_vec(),
                }
            }
            HEADERS => {
                short("HEADERS", 4)?;
                Frame::Headers {
                    stream: stream(),
                    fin,
                    block: body[4..].to_vec(),
                }
            }
            RST_STREAM => {
                short("RST_STREAM", 8)?;
                Frame::RstStream {
                    stream: stream(),
                    status: be32(&body[4..]),
                }
            }
            PING => {
                short("PING", 4)?;
                Frame::Ping(be32(body))
            }
            GOAWAY => {
                short("GOAWAY", 8)?;
                Frame::GoAway {
                    last_stream: stream(),
                    status: be32(&body[4..]),
                }
            }
            other => Frame::Ignored(other),
        }
    };
    Ok(Some((frame, 8 + len)))
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let len = body.len().min(0xff_ffff);
    let mut f = Vec::with_capacity(8 + len);
    f.extend_from_slice(&[0x80, 3]);
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&body[..len]);
    f
}

/// A data frame (at most 16 MiB of data: callers send smaller chunks).
pub fn data(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let len = data.len().min(0xff_ffff);
    let mut f = Vec::with_capacity(8 + len);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(if fin { FLAG_FIN } else { 0 });
    f.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&data[..len]);
    f
}

pub fn syn_reply(stream: u32, fin: bool, block: &[u8]) -> Vec<u8> {
    let mut body = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    body.extend_from_slice(block);
    control(SYN_REPLY, if fin { FLAG_FIN } else { 0 }, &body)
}

pub fn syn_stream(stream: u32, fin: bool, block: &[u8]) -> Vec<u8> {
    let mut body = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    body.extend_from_slice(block);
    control(SYN_STREAM, if fin { FLAG_FIN } else { 0 }, &body)
}

pub fn rst_stream(stream: u32, status: u32) -> Vec<u8> {
    let mut body = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    body.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &body)
}

pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

pub fn goaway(last_stream: u32) -> Vec<u8> {
    let mut body = (last_stream & 0x7fff_ffff).to_be_bytes().to_vec();
    body.extend_from_slice(&0u32.to_be_bytes());
    control(GOAWAY, 0, &body)
}

/// The SPDY 3 header compression dictionary: HTTP words, each with its length (4 bytes,
/// big-endian) in front, then a run of common header values without lengths. Built
/// here from those lists (the unit test checks its size and Adler-32 against the
/// specification's).
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &[&str] = &[
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information",
        "204 No Content",
        "301 Moved Permanently",
        "400 Bad Request",
        "401 Unauthorized",
        "403 Forbidden",
        "404 Not Found",
        "500 Internal Server Error",
        "501 Not Implemented",
        "503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
        "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
        "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    ];
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    for t in TAIL {
        d.extend_from_slice(t.as_bytes());
    }
    d
}

/// The two zlib streams of one connection's header blocks.
pub struct HeaderCodec {
    inflate: Decompress,
    deflate: Compress,
    dictionary: Vec<u8>,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCodec {
    pub fn new() -> HeaderCodec {
        let dictionary = dictionary();
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh compressor always takes a dictionary: nothing can fail here.
        let _ = deflate.set_dictionary(&dictionary);
        HeaderCodec {
            inflate: Decompress::new(true),
            deflate,
            dictionary,
        }
    }

    /// Decompresses and parses the peer's next header block (names are lower case in
    /// SPDY; a value holding several values separated by NUL is kept whole).
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let raw = self.inflate_block(block)?;
        parse_header_block(&raw)
    }

    fn inflate_block(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(1024);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(SpdyError::Headers(format!(
                        "larger than {MAX_HEADER_BLOCK} bytes"
                    )));
                }
                out.reserve(out.len());
            }
            let (in0, out0) = (self.inflate.total_in(), out.len());
            let r = self
                .inflate
                .decompress_vec(&block[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.inflate.total_in() - in0) as usize;
            match r {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| SpdyError::Headers(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Headers(e.to_string())),
            }
            let progress = self.inflate.total_in() > in0 || out.len() > out0;
            if (pos >= block.len() && out.len() < out.capacity()) || !progress {
                return Ok(out);
            }
        }
    }

    /// Builds and compresses a header block.
    pub fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            for s in [k.to_ascii_lowercase().as_str(), v] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.len().max(64));
            }
            let in0 = self.deflate.total_in();
            let _ = self
                .deflate
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync);
            pos += (self.deflate.total_in() - in0) as usize;
            if pos >= raw.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// A decompressed header block: a count, then each name and value with its length.
fn parse_header_block(raw: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let bad = |what: &str| SpdyError::Headers(what.to_string());
    let mut rest = raw;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        if rest.len() < n {
            return Err(bad("truncated"));
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Ok(a)
    };
    let count = be32(take(4)?) as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specifications() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // The Adler-32 that zlib streams compressed with it announce (FDICT).
        let (mut a, mut b) = (1u32, 0u32);
        for &x in &d {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn handmade_frames_parse() {
        // DATA, stream 5, FIN, "hi".
        let f = [0, 0, 0, 5, 1, 0, 0, 2, b'h', b'i'];
        assert_eq!(
            parse(&f),
            Ok(Some((
                Frame::Data {
                    stream: 5,
                    fin: true,
                    data: b"hi".to_vec()
                },
                10
            )))
        );
        // PING 7.
        let p = [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7];
        assert_eq!(parse(&p), Ok(Some((Frame::Ping(7), 12))));
        assert_eq!(ping(7), p);
        // RST_STREAM 3, CANCEL (5).
        let r = [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5];
        assert_eq!(
            parse(&r),
            Ok(Some((
                Frame::RstStream {
                    stream: 3,
                    status: 5
                },
                16
            )))
        );
        assert_eq!(rst_stream(3, 5), r);
        // WINDOW_UPDATE is read and ignored.
        let w = [0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 1, 0];
        assert_eq!(parse(&w), Ok(Some((Frame::Ignored(WINDOW_UPDATE), 16))));
        // Incomplete: nothing yet.
        assert_eq!(parse(&p[..11]), Ok(None));
        assert_eq!(parse(&p[..3]), Ok(None));
        // SPDY 2 is refused; a short SYN_STREAM too.
        assert_eq!(
            parse(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]),
            Err(SpdyError::Version(2))
        );
        assert!(parse(&[0x80, 3, 0, 1, 0, 0, 0, 2, 0, 1]).is_err());
        assert_eq!(data(5, true, b"hi"), [0, 0, 0, 5, 1, 0, 0, 2, b'h', b'i']);
    }

    #[test]
    fn header_blocks_round_trip_through_one_zlib_stream() {
        let mut client = HeaderCodec::new();
        let mut server = HeaderCodec::new();
        let blocks = [
            vec![("streamType", "error")],
            vec![("streamType", "stdout"), ("port", "8080")],
            vec![("streamType", "stdout"), ("requestID", "0")],
        ];
        for h in &blocks {
            let wire = syn_stream(1, false, &client.encode(h));
            let (frame, n) = parse(&wire).unwrap().unwrap();
            assert_eq!(n, wire.len());
            let Frame::SynStream { stream, block, .. } = frame else {
                panic!("{frame:?}");
            };
            assert_eq!(stream, 1);
            let got = server.decode(&block).unwrap();
            let want: Vec<(String, String)> = h
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect();
            assert_eq!(got, want);
        }
        // The first block announces the dictionary (FDICT) with its Adler-32.
        let mut fresh = HeaderCodec::new();
        let b = fresh.encode(&[("a", "b")]);
        assert_eq!(b[1] & 0x20, 0x20);
        assert_eq!(&b[2..6], &0xe3c6_a7c2u32.to_be_bytes());
        // Garbage is an error, not a panic.
        assert!(HeaderCodec::new().decode(b"\x78\xbb junk").is_err());
    }
}
