//! A small SPDY/3.1 client of the Kubernetes streaming protocols, written for the tests
//! from the SPDY 3 specification (no code shared with the server): the HTTP upgrade,
//! SYN_STREAM with zlib-compressed header blocks (the SPDY 3 dictionary), data frames,
//! and the frames the server sends back.

use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use integration_tests::scaled;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T30: Duration = Duration::from_secs(30);

/// What the server sent.
#[derive(Debug)]
pub enum Event {
    Reply(u32),
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    Reset(u32),
    Other,
}

pub struct Client {
    tcp: TcpStream,
    buf: Vec<u8>,
    deflate: Compress,
    inflate: Decompress,
    dict: Vec<u8>,
    next_stream: u32,
}

/// The SPDY 3 dictionary (section 2.6.10.1 of the draft): length-prefixed words, then
/// plain text.
fn dictionary() -> Vec<u8> {
    let words = "options head post put delete trace accept accept-charset accept-encoding \
        accept-language accept-ranges age allow authorization cache-control connection \
        content-base content-encoding content-language content-length content-location \
        content-md5 content-range content-type date etag expect expires from host if-match \
        if-modified-since if-none-match if-range if-unmodified-since last-modified location \
        max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after \
        server te trailer transfer-encoding upgrade user-agent vary via warning \
        www-authenticate method get status 200_OK version HTTP/1.1 url public set-cookie \
        keep-alive origin";
    let mut d = Vec::new();
    for w in words.split_whitespace() {
        let w = w.replace('_', " ");
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    let codes = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505";
    d.extend_from_slice(codes.as_bytes());
    for s in [
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
    ] {
        d.extend_from_slice(s.as_bytes());
    }
    d.extend_from_slice(b"Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ");
    d.extend_from_slice(b"Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT");
    d.extend_from_slice(b"chunked,text/html,image/png,image/jpg,image/gif,application/xml,");
    d.extend_from_slice(b"application/xhtml+xml,text/plain,text/javascript,public");
    d.extend_from_slice(
        b"privatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    assert_eq!(d.len(), 1423, "the SPDY 3 dictionary's length");
    d
}

impl Client {
    /// Upgrades `url` to SPDY/3.1 offering `protocols`: the client and the protocol the
    /// server chose, or the status and body of its refusal.
    pub async fn connect(
        url: &str,
        protocols: &[&str],
    ) -> Result<(Client, Option<String>), (u16, String)> {
        let rest = url.strip_prefix("http://").expect("an http URL");
        let (host, path) = rest.split_once('/').expect("a path");
        let mut tcp = TcpStream::connect(host).await.expect("connecting");
        let mut req = format!(
            "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        );
        for p in protocols {
            req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
        }
        req.push_str("Content-Length: 0\r\n\r\n");
        tcp.write_all(req.as_bytes())
            .await
            .expect("sending the upgrade");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(scaled(T30), tcp.read(&mut chunk))
                .await
                .expect("an answer in time")
                .expect("reading the answer");
            assert!(n > 0, "the server closed before answering: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if code != 101 {
            let len: usize = header("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + len {
                let mut chunk = [0u8; 4096];
                match tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            return Err((code, String::from_utf8_lossy(&buf[end..]).into_owned()));
        }
        let chosen = header("x-stream-protocol-version");
        let dict = dictionary();
        let mut deflate = Compress::new(Compression::fast(), true);
        deflate.set_dictionary(&dict).expect("the dictionary");
        let client = Client {
            tcp,
            buf: buf[end..].to_vec(),
            deflate,
            inflate: Decompress::new(true),
            dict,
            next_stream: 1,
        };
        Ok((client, chosen))
    }

    fn header_block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        // SPDY header names are lower case (Go's framer refuses others).
        for (k, v) in headers {
            for s in [&k.to_ascii_lowercase(), *v] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() * 2 + 128);
        self.deflate
            .compress_vec(&raw, &mut out, FlushCompress::Sync)
            .expect("compressing headers");
        out
    }

    /// Opens a stream with these headers (SYN_STREAM); its id.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        let block = self.header_block(headers);
        let len = 10 + block.len();
        let mut f = vec![0x80, 3, 0, 1, 0];
        f.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&block);
        self.tcp.write_all(&f).await.expect("SYN_STREAM");
        id
    }

    pub async fn send(&mut self, stream: u32, fin: bool, data: &[u8]) {
        let mut f = stream.to_be_bytes().to_vec();
        f.push(u8::from(fin));
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        self.tcp.write_all(&f).await.expect("a data frame");
    }

    /// The next frame from the server; `None` once it has closed the connection.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if self.buf.len() >= 8 {
                let len = u32::from_be_bytes([0, self.buf[5], self.buf[6], self.buf[7]]) as usize;
                if self.buf.len() >= 8 + len {
                    let frame: Vec<u8> = self.buf.drain(..8 + len).collect();
                    return Some(self.event(&frame));
                }
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(scaled(T30), self.tcp.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no SPDY frame within {T30:?}"))
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn event(&mut self, f: &[u8]) -> Event {
        let id = |b: &[u8]| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]);
        if f[0] & 0x80 == 0 {
            return Event::Data {
                stream: id(f),
                fin: f[4] & 1 != 0,
                data: f[8..].to_vec(),
            };
        }
        match u16::from_be_bytes([f[2], f[3]]) {
            2 => {
                self.inflate_block(&f[12..]);
                Event::Reply(id(&f[8..]))
            }
            3 => Event::Reset(id(&f[8..])),
            8 => {
                self.inflate_block(&f[12..]);
                Event::Other
            }
            _ => Event::Other,
        }
    }

    /// Keeps the server's header stream in step (the tests do not need its headers).
    fn inflate_block(&mut self, block: &[u8]) {
        let mut out = Vec::with_capacity(64 * 1024);
        let before = self.inflate.total_in();
        match self
            .inflate
            .decompress_vec(block, &mut out, FlushDecompress::Sync)
        {
            Ok(_) => {}
            Err(e) if e.needs_dictionary().is_some() => {
                self.inflate.set_dictionary(&self.dict).expect("dictionary");
                let used = (self.inflate.total_in() - before) as usize;
                self.inflate
                    .decompress_vec(&block[used..], &mut out, FlushDecompress::Sync)
                    .expect("the server's header block");
            }
            Err(e) => panic!("the server's header block: {e}"),
        }
    }
}
