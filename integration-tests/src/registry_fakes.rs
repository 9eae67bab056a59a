//! A token service for the registry's `auth: token:` mode (the Docker token
//! authentication spec), small enough to read: it issues RS256 JWTs signed with a key the
//! test makes (`openssl`), which the real `docker-registry` verifies against the
//! certificate given as its `rootcertbundle`.
//!
//! It answers what registries' token services answer to clients:
//! - `GET realm?service=..&scope=..` with basic auth (user and password, or any user and the
//!   refresh token, as containerd falls back to), or anonymous (a token with no access);
//! - `POST realm` with `grant_type=refresh_token` (the OAuth2 refresh-token grant), unless
//!   told to answer 405 to POSTs, as some registries' services do.
//!
//! Wrong credentials get 401 with a JSON message that, like a careless service's, echoes
//! the secret it was given: the client must redact it.
//!
//! Also here: [`BlobProxy`], a loopback proxy that damages or stalls one blob on its way from
//! the registry.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

/// The token service's account and secrets.
#[derive(Clone)]
pub struct TokenAccount {
    pub user: String,
    pub password: String,
    /// The refresh token (the CRI's `identity_token`) that the POST grant accepts.
    pub refresh_token: String,
}

struct Shared {
    account: TokenAccount,
    key: ring::rsa::KeyPair,
    cert_der: Vec<u8>,
    service: String,
    issuer: String,
    post_supported: AtomicBool,
    /// One line per request: `METHOD grant outcome` (no secrets).
    requests: Mutex<Vec<String>>,
    stop: AtomicBool,
}

pub struct TokenService {
    port: u16,
    shared: Arc<Shared>,
    cert_pem: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub const SERVICE: &str = "rrun-test-registry";
pub const ISSUER: &str = "rrun-test-token-issuer";

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TokenService {
    /// Makes a key and a self-signed certificate in `dir`, then serves on 127.0.0.1.
    pub fn start(dir: &Path, account: TokenAccount) -> TokenService {
        let key_pem = dir.join("token-key.pem");
        let cert_pem = dir.join("token-cert.pem");
        let key_der = dir.join("token-key.der");
        let cert_der = dir.join("token-cert.der");
        let p = |x: &Path| x.to_str().expect("utf-8 path").to_string();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=rrun test token issuer",
            "-keyout",
            &p(&key_pem),
            "-out",
            &p(&cert_pem),
        ]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &p(&key_pem),
            "-outform",
            "DER",
            "-out",
            &p(&key_der),
        ]);
        openssl(&[
            "x509",
            "-in",
            &p(&cert_pem),
            "-outform",
            "DER",
            "-out",
            &p(&cert_der),
        ]);
        let key = ring::rsa::KeyPair::from_pkcs8(&std::fs::read(&key_der).expect("key"))
            .expect("a PKCS#8 RSA key");
        let shared = Arc::new(Shared {
            account,
            key,
            cert_der: std::fs::read(&cert_der).expect("cert"),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            post_supported: AtomicBool::new(true),
            requests: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("token service bind");
        let port = listener.local_addr().expect("addr").port();
        let s2 = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s3 = s2.clone();
                std::thread::spawn(move || {
                    let _ = serve(&s3, conn);
                });
            }
        });
        TokenService {
            port,
            shared,
            cert_pem,
            thread: Some(thread),
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The certificate the registry trusts (`rootcertbundle`).
    pub fn cert(&self) -> &Path {
        &self.cert_pem
    }

    /// Whether `POST realm` is served (else 405, as services without OAuth2 answer).
    pub fn set_post_supported(&self, yes: bool) {
        self.shared.post_supported.store(yes, Ordering::SeqCst);
    }

    /// The requests so far, one `METHOD what outcome` line each.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A JWT granting `scopes` (`repository:NAME:ACTIONS`); none for an anonymous client.
fn token(shared: &Shared, subject: &str, scopes: &[String]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let header = serde_json::json!({
        "alg": "RS256",
        "typ": "JWT",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&shared.cert_der)],
    });
    let claims = serde_json::json!({
        "iss": shared.issuer,
        "sub": subject,
        "aud": shared.service,
        "exp": now + 600,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", std::process::id()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut sig = vec![0u8; shared.key.public().modulus_len()];
    shared
        .key
        .sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .expect("signing a token");
    format!("{input}.{}", b64url(&sig))
}

fn respond(conn: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

fn serve(shared: &Shared, mut conn: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut basic: Option<(String, String)> = None;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((&h, ""));
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("authorization") {
            if let Some(b) = value.strip_prefix("Basic ") {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&raw).into_owned();
                let (u, p) = text.split_once(':').unwrap_or((&text, ""));
                basic = Some((u.to_string(), p.to_string()));
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let log = |what: String| {
        shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    };
    if path != "/token" {
        return respond(&mut conn, "404 Not Found", "{}");
    }
    let acct = &shared.account;
    match method.as_str() {
        "GET" => {
            let q = form_pairs(query);
            let scopes: Vec<String> = q
                .iter()
                .filter(|(k, _)| k == "scope")
                .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
                .collect();
            match basic {
                None => {
                    log("GET anonymous ok".into());
                    let t = token(shared, "", &[]);
                    respond(
                        &mut conn,
                        "200 OK",
                        &serde_json::json!({"token": t}).to_string(),
                    )
                }
                Some((u, p))
                    if (u == acct.user && p == acct.password) || p == acct.refresh_token =>
                {
                    log("GET basic ok".into());
                    let t = token(shared, &u, &scopes);
                    respond(
                        &mut conn,
                        "200 OK",
                        &serde_json::json!({"token": t, "access_token": t, "expires_in": 600})
                            .to_string(),
                    )
                }
                Some((_, p)) => {
                    log("GET basic refused".into());
                    let msg = format!("test token service: invalid credentials (got {p:?})");
                    respond(
                        &mut conn,
                        "401 Unauthorized",
                        &serde_json::json!({"details": msg}).to_string(),
                    )
                }
            }
        }
        "POST" if !shared.post_supported.load(Ordering::SeqCst) => {
            log("POST unsupported".into());
            respond(&mut conn, "405 Method Not Allowed", "{}")
        }
        "POST" => {
            let form = form_pairs(&String::from_utf8_lossy(&body));
            let get = |k: &str| {
                form.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            if get("grant_type") != "refresh_token" || get("service") != shared.service {
                log(format!("POST {} refused", get("grant_type")));
                return respond(
                    &mut conn,
                    "400 Bad Request",
                    r#"{"error":"unsupported_grant_type"}"#,
                );
            }
            let given = get("refresh_token");
            if given != acct.refresh_token {
                log("POST refresh_token refused".into());
                let msg = format!("test token service: unknown refresh token {given}");
                return respond(
                    &mut conn,
                    "401 Unauthorized",
                    &serde_json::json!({"error": "invalid_grant", "error_description": msg})
                        .to_string(),
                );
            }
            log("POST refresh_token ok".into());
            let scopes: Vec<String> = get("scope").split(' ').map(str::to_string).collect();
            let t = token(shared, &acct.user, &scopes);
            respond(
                &mut conn,
                "200 OK",
                &serde_json::json!({"access_token": t, "expires_in": 600, "scope": get("scope")})
                    .to_string(),
            )
        }
        _ => respond(&mut conn, "405 Method Not Allowed", "{}"),
    }
}

/// What a [`BlobProxy`] does to the answers to `GET .../blobs/<digest>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobFault {
    /// Flips one byte in the middle of every answer's body: a registry or a network that
    /// serves bytes that do not match the digest, while the registry's own copy stays good.
    FlipMiddleByte,
    /// Passes the first this many bytes of the first answer's body, then holds that
    /// connection without a byte more until the proxy is dropped: a pull stopped at a known
    /// point of a download, however busy the machine. Later answers pass whole.
    StallAfter(u64),
}

/// A proxy on 127.0.0.1 in front of a registry that applies a [`BlobFault`] to one blob's
/// downloads; everything else passes unchanged. It speaks HTTP/1.1 as registry clients do
/// (one request at a time per connection); a response it cannot frame (no Content-Length)
/// ends its parsing of that connection, whose bytes then pass through as they are.
pub struct BlobProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    shared: Arc<ProxyShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct ProxyShared {
    fault: BlobFault,
    blob_path: String,
    /// Answers to the blob's GETs that got the fault so far.
    faulted: Mutex<usize>,
    /// Woken when a fault is applied or the proxy stops.
    cond: std::sync::Condvar,
    stopping: AtomicBool,
}

impl BlobProxy {
    pub fn start(target: String, digest: &str, fault: BlobFault) -> BlobProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(ProxyShared {
            fault,
            blob_path: format!("/blobs/{digest}"),
            faulted: Mutex::new(0),
            cond: std::sync::Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let (stop2, shared2) = (stop.clone(), shared.clone());
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (target, shared) = (target.clone(), shared2.clone());
                std::thread::spawn(move || {
                    let _ = relay(client, &target, &shared);
                });
            }
        });
        BlobProxy {
            port,
            stop,
            shared,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many answers to the blob's GETs got the fault so far.
    pub fn faulted(&self) -> usize {
        *self
            .shared
            .faulted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for BlobProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Releases a stalled answer (its connection then closes).
        self.shared.stopping.store(true, Ordering::SeqCst);
        let guard = self
            .shared
            .faulted
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.shared.cond.notify_all();
        drop(guard);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A request's or response's head (up to and with the empty line); `None` at end of stream.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        if r.read_until(b'\n', &mut head)? == 0 {
            return Ok(None);
        }
        if &head[start..] == b"\r\n" || &head[start..] == b"\n" {
            return Ok(Some(head));
        }
    }
}

/// The head's Content-Length; `None` when it has none or the body is chunked.
fn content_length(head: &str) -> Option<u64> {
    let mut len = None;
    for line in head.lines().skip(1) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        if k == "transfer-encoding" {
            return None;
        }
        if k == "content-length" {
            len = v.trim().parse().ok();
        }
    }
    len
}

/// Copies `n` bytes, flipping the one at offset `flip` (if any).
fn copy_body(
    from: &mut impl Read,
    to: &mut impl Write,
    n: u64,
    flip: Option<u64>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let mut off = 0u64;
    while off < n {
        let want = buf
            .len()
            .min(usize::try_from(n - off).unwrap_or(usize::MAX));
        let got = from.read(&mut buf[..want])?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(at) = flip.filter(|at| (off..off + got as u64).contains(at)) {
            buf[(at - off) as usize] ^= 0xff;
        }
        to.write_all(&buf[..got])?;
        off += got as u64;
    }
    Ok(())
}

fn relay(client: TcpStream, target: &str, shared: &ProxyShared) -> std::io::Result<()> {
    let server = TcpStream::connect(target)?;
    let mut c_read = BufReader::new(client.try_clone()?);
    let mut c_write = client;
    let mut s_read = BufReader::new(server.try_clone()?);
    let mut s_write = server;
    loop {
        let Some(request) = read_head(&mut c_read)? else {
            return Ok(());
        };
        let request_text = String::from_utf8_lossy(&request).into_owned();
        let line = request_text.lines().next().unwrap_or_default().to_string();
        let is_head = line.starts_with("HEAD ");
        let the_blob = line.starts_with("GET ") && line.contains(&shared.blob_path);
        s_write.write_all(&request)?;
        if let Some(n) = content_length(&request_text) {
            copy_body(&mut c_read, &mut s_write, n, None)?;
        }
        let Some(response) = read_head(&mut s_read)? else {
            return Ok(());
        };
        let response_text = String::from_utf8_lossy(&response).into_owned();
        c_write.write_all(&response)?;
        let status: u16 = response_text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if is_head || status < 200 || status == 204 || status == 304 {
            continue;
        }
        let Some(n) = content_length(&response_text) else {
            // Unframed: the rest of the connection passes through untouched.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
            });
            std::io::copy(&mut s_read, &mut c_write)?;
            return Ok(());
        };
        if !(the_blob && matches!(status, 200 | 206) && n > 0) {
            copy_body(&mut s_read, &mut c_write, n, None)?;
            continue;
        }
        let mut faulted = shared.faulted.lock().unwrap_or_else(|p| p.into_inner());
        match shared.fault {
            BlobFault::FlipMiddleByte => {
                *faulted += 1;
                drop(faulted);
                copy_body(&mut s_read, &mut c_write, n, Some(n / 2))?;
            }
            BlobFault::StallAfter(first) if *faulted == 0 && first < n => {
                *faulted += 1;
                drop(faulted);
                copy_body(&mut s_read, &mut c_write, first, None)?;
                c_write.flush()?;
                let mut held = shared.faulted.lock().unwrap_or_else(|p| p.into_inner());
                while !shared.stopping.load(Ordering::SeqCst) {
                    held = shared.cond.wait(held).unwrap_or_else(|p| p.into_inner());
                }
                return Ok(());
            }
            BlobFault::StallAfter(_) => {
                drop(faulted);
                copy_body(&mut s_read, &mut c_write, n, None)?;
            }
        }
    }
}
