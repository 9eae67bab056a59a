//! Accepting any HTTP/2 `:authority` on a unix socket.
//!
//! On a unix socket the authority names no host, and real CRI clients fill it with what
//! they like: grpc-go in the kubelets of 1.20 and several later releases sends the socket's
//! path (`/run/rrun/cri.sock`), grpc-core (Python, C++, Ruby) sends the path percent-encoded,
//! grpc-java sends the path. containerd (grpc-go's server) accepts all of them. The `h2`
//! crate under tonic validates `:authority` as an RFC 3986 authority and resets the stream
//! with PROTOCOL_ERROR before any of our code runs, and it has no option to relax that
//! (hyperium/h2#487 is still open).
//!
//! So the server's connections are read through [`AnyAuthority`], which rewrites an
//! `:authority` that is not a valid URI authority to `localhost` (what grpc-go itself now
//! sends on unix sockets) before h2 sees it. HPACK is stateful (a header block may refer
//! to entries that earlier blocks added to the decoder's dynamic table), so every header
//! block of the connection is decoded with the client's table (`loona-hpack`, a maintained
//! fork of the `hpack` crate) and encoded again as plain literals that never touch the
//! server's dynamic table. Everything else (the preface, DATA, SETTINGS, ...) passes through
//! byte for byte, and the write side is untouched.
//!
//! The same pass renames `grpc-timeout` to [`crate::serve::DEADLINE_HEADER`]: tonic's server
//! enforces that header itself and answers CANCELLED past it, with no option, where gRPC
//! (and containerd) answer DEADLINE_EXCEEDED; `serve` enforces the renamed header instead.
//!
//! Hand-written because no crate rewrites HTTP/2 headers on the wire; the frame layout is
//! RFC 9113 section 4 and 6.2/6.10, the header representations RFC 7541 section 6.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The largest frame any HTTP/2 peer must accept (SETTINGS_MAX_FRAME_SIZE's initial value):
/// rewritten header blocks are cut into frames of at most this size.
const MIN_MAX_FRAME_SIZE: usize = 16_384;
/// A frame length above 2^24-1 cannot be encoded; a header block this large is refused.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// What the rewritten authority becomes.
const REPLACEMENT: &[u8] = b"localhost";

/// An accepted connection whose incoming HTTP/2 header blocks carry a valid `:authority`.
pub struct AnyAuthority<S> {
    inner: S,
    rewriter: Rewriter,
    /// Bytes read from `inner` that are not yet a whole frame.
    input: Vec<u8>,
    /// Bytes ready for the reader.
    output: Vec<u8>,
    /// How much of `output` was already handed out.
    output_pos: usize,
    eof: bool,
}

impl<S> AnyAuthority<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: Rewriter::default(),
            input: Vec::new(),
            output: Vec::new(),
            output_pos: 0,
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AnyAuthority<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.output_pos < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.output_pos);
                buf.put_slice(&this.output[this.output_pos..this.output_pos + n]);
                this.output_pos += n;
                if this.output_pos == this.output.len() {
                    this.output.clear();
                    this.output_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                // A frame cut short by the peer's close is handed on as it is: h2 reports it.
                this.eof = true;
                this.output.append(&mut this.input);
                continue;
            }
            this.input.extend_from_slice(rb.filled());
            let consumed = this.rewriter.feed(&this.input, &mut this.output)?;
            this.input.drain(..consumed);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AnyAuthority<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AnyAuthority<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The client→server half of an HTTP/2 connection, frame by frame.
struct Rewriter {
    state: Phase,
    decoder: loona_hpack::Decoder<'static>,
    /// A HEADERS frame waiting for its CONTINUATION frames.
    pending: Option<PendingBlock>,
    /// Whether a rewrite was logged on this connection.
    told: bool,
}

#[derive(PartialEq)]
enum Phase {
    Preface,
    Frames,
    /// Not HTTP/2 with prior knowledge: passed on untouched for h2 to refuse.
    Raw,
}

struct PendingBlock {
    stream_id: u32,
    /// The HEADERS frame's flags, without PADDED and END_HEADERS.
    flags: u8,
    /// The five priority bytes, if the frame had them.
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self {
            state: Phase::Preface,
            decoder: loona_hpack::Decoder::new(),
            pending: None,
            told: false,
        }
    }
}

fn protocol_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Rewriter {
    /// Moves every whole unit (the preface, whole frames) of `input` to `out`, rewritten;
    /// returns how many bytes of `input` were used.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                Phase::Raw => {
                    out.extend_from_slice(rest);
                    return Ok(input.len());
                }
                Phase::Preface => {
                    let n = rest.len().min(PREFACE.len());
                    if rest[..n] != PREFACE[..n] {
                        self.state = Phase::Raw;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(pos);
                    }
                    out.extend_from_slice(PREFACE);
                    pos += PREFACE.len();
                    self.state = Phase::Frames;
                }
                Phase::Frames => {
                    if rest.len() < FRAME_HEADER_LEN {
                        return Ok(pos);
                    }
                    let len = usize::from(rest[0]) << 16
                        | usize::from(rest[1]) << 8
                        | usize::from(rest[2]);
                    if rest.len() < FRAME_HEADER_LEN + len {
                        return Ok(pos);
                    }
                    let frame = &rest[..FRAME_HEADER_LEN + len];
                    self.frame(frame, out)?;
                    pos += frame.len();
                }
            }
        }
    }

    fn frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let typ = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_LEN..];
        match (typ, &mut self.pending) {
            (TYPE_CONTINUATION, Some(p)) if p.stream_id == stream_id => {
                if p.block.len() + payload.len() > MAX_HEADER_BLOCK {
                    return Err(protocol_error("HTTP/2 header block too large"));
                }
                p.block.extend_from_slice(payload);
                if flags & FLAG_END_HEADERS != 0 {
                    let done = self.pending.take().expect("matched Some above");
                    self.emit(done, out)?;
                }
                Ok(())
            }
            // Any other frame inside a header block is a connection error that h2 reports;
            // our decoder state would no longer follow the client's, so stop here.
            (_, Some(_)) => Err(protocol_error(
                "HTTP/2 frame inside an unfinished header block",
            )),
            (TYPE_HEADERS, None) => {
                let mut body = payload;
                let mut pad = 0;
                if flags & FLAG_PADDED != 0 {
                    let (&n, tail) = body
                        .split_first()
                        .ok_or_else(|| protocol_error("HTTP/2 HEADERS frame without pad length"))?;
                    pad = usize::from(n);
                    body = tail;
                }
                let mut priority = None;
                if flags & FLAG_PRIORITY != 0 {
                    if body.len() < 5 {
                        return Err(protocol_error("HTTP/2 HEADERS frame priority cut short"));
                    }
                    let mut p = [0u8; 5];
                    p.copy_from_slice(&body[..5]);
                    priority = Some(p);
                    body = &body[5..];
                }
                if pad > body.len() {
                    return Err(protocol_error(
                        "HTTP/2 HEADERS padding longer than the frame",
                    ));
                }
                let block = PendingBlock {
                    stream_id,
                    flags: flags & !(FLAG_PADDED | FLAG_END_HEADERS),
                    priority,
                    block: body[..body.len() - pad].to_vec(),
                };
                if flags & FLAG_END_HEADERS != 0 {
                    self.emit(block, out)
                } else {
                    self.pending = Some(block);
                    Ok(())
                }
            }
            (_, None) => {
                out.extend_from_slice(frame);
                Ok(())
            }
        }
    }

    /// Writes one whole header block as HEADERS (+ CONTINUATION) frames.
    fn emit(&mut self, p: PendingBlock, out: &mut Vec<u8>) -> io::Result<()> {
        let block = self.rewrite_block(&p.block)?;
        let mut first = Vec::with_capacity(5 + block.len());
        if let Some(prio) = p.priority {
            first.extend_from_slice(&prio);
        }
        let first_room = MIN_MAX_FRAME_SIZE - first.len();
        let (head, mut tail) = block.split_at(block.len().min(first_room));
        first.extend_from_slice(head);
        let mut flags = p.flags & (FLAG_END_STREAM | FLAG_PRIORITY);
        if tail.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        write_frame(out, TYPE_HEADERS, flags, p.stream_id, &first);
        while !tail.is_empty() {
            let (chunk, rest) = tail.split_at(tail.len().min(MIN_MAX_FRAME_SIZE));
            let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
            write_frame(out, TYPE_CONTINUATION, flags, p.stream_id, chunk);
            tail = rest;
        }
        Ok(())
    }

    /// Decodes `block` with the client's table and encodes it again as literals without
    /// indexing, `:authority` made valid.
    fn rewrite_block(&mut self, block: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(block.len() + 16);
        let mut rewritten = None;
        self.decoder
            .decode_with_cb(block, |name, value| {
                let mut value: &[u8] = &value;
                if &*name == b":authority" && !valid_authority(value) {
                    rewritten = Some(String::from_utf8_lossy(value).into_owned());
                    value = REPLACEMENT;
                }
                // The caller's deadline is enforced by serve's own layer, which answers
                // DEADLINE_EXCEEDED; tonic's would answer CANCELLED.
                let name: &[u8] = if &*name == b"grpc-timeout" {
                    crate::serve::DEADLINE_HEADER.as_bytes()
                } else {
                    &name
                };
                encode_literal(&mut out, name, value);
            })
            .map_err(|e| protocol_error(format!("HTTP/2 header block: {e:?}")))?;
        if let Some(original) = rewritten {
            // Once per connection: a kubelet sends the same authority with every call.
            if !self.told {
                self.told = true;
                tracing::debug!(authority = %original, "HTTP/2 :authority is not a URI authority; read as localhost");
            }
        }
        Ok(out)
    }
}

fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// RFC 7541 6.2.2: literal header field without indexing, new name, no Huffman coding.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    for s in [name, value] {
        out.extend(loona_hpack::encoder::encode_integer(s.len(), 7));
        out.extend_from_slice(s);
    }
}

fn write_frame(out: &mut Vec<u8>, typ: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, typ, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(flags: u8, stream: u32, block: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        write_frame(&mut f, TYPE_HEADERS, flags, stream, block);
        f
    }

    /// Decodes every header block of `bytes` (after the preface) with a fresh decoder, as
    /// the server would, and returns them.
    fn server_view(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut dec = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut pending = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (typ, flags) = (rest[3], rest[4]);
            let mut payload = &rest[9..9 + len];
            if typ == TYPE_HEADERS && flags & FLAG_PRIORITY != 0 {
                payload = &payload[5..];
            }
            if typ == TYPE_HEADERS || typ == TYPE_CONTINUATION {
                assert!(len <= MIN_MAX_FRAME_SIZE);
                pending.extend_from_slice(payload);
                if flags & FLAG_END_HEADERS != 0 {
                    blocks.push(dec.decode(&pending).expect("server decodes"));
                    pending.clear();
                }
            }
            rest = &rest[9 + len..];
        }
        blocks
    }

    fn client_block(enc: &mut loona_hpack::Encoder<'_>, authority: &[u8]) -> Vec<u8> {
        enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/runtime.v1.RuntimeService/Version"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
        ])
    }

    #[test]
    fn socket_path_authority_becomes_localhost_and_table_state_follows() {
        // The client's encoder indexes its headers, so its second block is mostly
        // references to its dynamic table: the rewriter must follow that table.
        let mut enc = loona_hpack::Encoder::new();
        let mut wire = PREFACE.to_vec();
        wire.extend(headers_frame(
            FLAG_END_HEADERS,
            1,
            &client_block(&mut enc, b"/run/rrun/cri.sock"),
        ));
        // A DATA frame in between passes untouched.
        write_frame(&mut wire, 0x0, 0x1, 1, b"\0\0\0\0\0");
        wire.extend(headers_frame(
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
            &client_block(&mut enc, b"/run/rrun/cri.sock"),
        ));
        wire.extend(headers_frame(
            FLAG_END_HEADERS,
            5,
            &client_block(&mut enc, b"localhost:1234"),
        ));

        // Fed in small pieces, as a socket may deliver it.
        let mut rw = Rewriter::default();
        let (mut input, mut out) = (Vec::new(), Vec::new());
        for piece in wire.chunks(7) {
            input.extend_from_slice(piece);
            let used = rw.feed(&input, &mut out).expect("feed");
            input.drain(..used);
        }
        assert!(input.is_empty());
        let blocks = server_view(&out);
        assert_eq!(blocks.len(), 3);
        let authority = |b: &Vec<(Vec<u8>, Vec<u8>)>| {
            b.iter()
                .find(|(n, _)| n == b":authority")
                .map(|(_, v)| v.clone())
        };
        assert_eq!(authority(&blocks[0]).as_deref(), Some(&b"localhost"[..]));
        assert_eq!(authority(&blocks[1]).as_deref(), Some(&b"localhost"[..]));
        assert_eq!(
            authority(&blocks[2]).as_deref(),
            Some(&b"localhost:1234"[..])
        );
        assert!(blocks[1]
            .iter()
            .any(|(n, v)| n == b":path" && v.ends_with(b"/Version")));
        // The DATA frame is there, byte for byte.
        assert!(out
            .windows(14)
            .any(|w| w == [0, 0, 5, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn percent_encoded_path_padding_priority_and_continuations() {
        let mut enc = loona_hpack::Encoder::new();
        let block = client_block(&mut enc, b"%2Frun%2Frrun%2Fcri.sock");
        let (a, b) = block.split_at(10);
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 0, 16]); // priority
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut wire = PREFACE.to_vec();
        write_frame(
            &mut wire,
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY,
            1,
            &payload,
        );
        write_frame(&mut wire, TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b);
        let mut out = Vec::new();
        let used = Rewriter::default().feed(&wire, &mut out).expect("feed");
        assert_eq!(used, wire.len());
        let blocks = server_view(&out);
        assert!(blocks[0].contains(&(b":authority".to_vec(), b"localhost".to_vec())));
    }

    #[test]
    fn a_huge_block_is_cut_into_continuations() {
        let mut enc = loona_hpack::Encoder::new();
        let big = vec![b'x'; 40_000];
        let block = enc.encode([(&b":authority"[..], &b"/a/b"[..]), (b"x-big", &big[..])]);
        let mut wire = PREFACE.to_vec();
        // The client may send large frames if the server allowed it.
        write_frame(&mut wire, TYPE_HEADERS, FLAG_END_HEADERS, 1, &block);
        let mut out = Vec::new();
        Rewriter::default().feed(&wire, &mut out).expect("feed");
        let blocks = server_view(&out);
        assert_eq!(blocks[0][1].1.len(), 40_000);
    }

    #[test]
    fn not_http2_passes_through_and_garbage_fails_cleanly() {
        let mut out = Vec::new();
        let used = Rewriter::default()
            .feed(b"GET / HTTP/1.1\r\n\r\n", &mut out)
            .expect("raw");
        assert_eq!(used, 18);
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");

        let mut wire = PREFACE.to_vec();
        write_frame(
            &mut wire,
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0x7f],
        );
        assert!(Rewriter::default().feed(&wire, &mut Vec::new()).is_err());

        let mut wire = PREFACE.to_vec();
        write_frame(
            &mut wire,
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_END_HEADERS,
            1,
            &[200, 1, 2],
        );
        assert!(Rewriter::default().feed(&wire, &mut Vec::new()).is_err());
    }
}
