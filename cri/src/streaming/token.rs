//! One-time tokens: the last part of a streaming URL, naming the request it was made for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Request;

/// How long a URL stays usable: the kubelet's own cache keeps them a minute.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);

/// At most this many unused URLs at once (containerd's cache has the same bound): a
/// caller that asks without ever connecting cannot grow the server without end.
const MAX_PENDING: usize = 1000;

#[derive(Default)]
pub struct Tokens {
    pending: Mutex<HashMap<String, (Request, Instant)>>,
}

impl Tokens {
    /// Stores `req` under a new random token.
    pub fn insert(&self, req: Request) -> Result<String, String> {
        let token = random_token().map_err(|e| format!("reading /dev/urandom: {e}"))?;
        let now = Instant::now();
        let mut pending = self.lock();
        pending.retain(|_, (_, made)| now.duration_since(*made) < TOKEN_TTL);
        if pending.len() >= MAX_PENDING {
            return Err(format!(
                "{MAX_PENDING} streaming URLs are waiting to be used; try again later"
            ));
        }
        pending.insert(token.clone(), (req, now));
        Ok(token)
    }

    /// Takes the request of `token`: a token works once, and not after [`TOKEN_TTL`].
    pub fn take(&self, token: &str) -> Option<Request> {
        let (req, made) = self.lock().remove(token)?;
        (made.elapsed() < TOKEN_TTL).then_some(req)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Request, Instant)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// 16 random bytes in URL-safe characters (hex).
fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_proto::api;

    fn req() -> Request {
        Request::PortForward(api::PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![80],
        })
    }

    #[test]
    fn a_token_works_once() {
        let t = Tokens::default();
        let a = t.insert(req()).unwrap();
        let b = t.insert(req()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(t.take(&a).is_some());
        assert!(t.take(&a).is_none());
        assert!(t.take("nope").is_none());
        assert!(t.take(&b).is_some());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let t = Tokens::default();
        let a = t.insert(req()).unwrap();
        let old = Instant::now().checked_sub(TOKEN_TTL).unwrap();
        t.lock().get_mut(&a).unwrap().1 = old;
        assert!(t.take(&a).is_none());
    }
}
