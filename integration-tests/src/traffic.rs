//! A bounded HTTP client for the tests that roll workloads under load: one thread in a
//! node's network namespace sends HTTP/1.0 GETs one after another and logs every answer's
//! body (or why it failed), until stopped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::kubelet::Node;
use crate::scaled;

/// One HTTP/1.0 GET from the calling thread (already in the node's network namespace).
pub fn http_get(addr: SocketAddr) -> Result<String, String> {
    let t = Duration::from_secs(5);
    let mut c = TcpStream::connect_timeout(&addr, t).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    c.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut resp = String::new();
    c.read_to_string(&mut resp)
        .map_err(|e| format!("read: {e}"))?;
    match resp.split_once("\r\n\r\n") {
        Some((head, body)) if head.contains(" 200 ") => Ok(body.trim().to_string()),
        _ => Err(format!("answer {resp:?}")),
    }
}

/// Every request a client sent: when, and its answer's body or why it failed.
#[derive(Default)]
pub struct Log(pub Vec<(Instant, Result<String, String>)>);

impl Log {
    pub fn answers(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (_, r) in &self.0 {
            if let Ok(b) = r {
                *m.entry(b.clone()).or_default() += 1;
            }
        }
        m
    }

    pub fn failures(&self) -> Vec<&String> {
        self.0
            .iter()
            .filter_map(|(_, r)| r.as_ref().err())
            .collect()
    }

    pub fn assert_no_failures(&self, what: &str) {
        let f = self.failures();
        assert!(
            f.is_empty(),
            "{what}: {} of {} requests failed: {:?}",
            f.len(),
            self.0.len(),
            &f[..f.len().min(10)]
        );
    }
}

/// The client thread.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(node: &Node, addr: SocketAddr) -> Traffic {
        let ns = format!("/proc/{}/ns/net", node.pid());
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let (s, l) = (stop.clone(), log.clone());
        let thread = thread::spawn(move || {
            let f = std::fs::File::open(&ns).expect("the node's netns");
            // Only this thread changes namespace.
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            while !s.load(Ordering::SeqCst) {
                let at = Instant::now();
                let r = http_get(addr);
                l.lock().expect("log").0.push((at, r));
            }
        });
        Traffic {
            stop,
            log,
            thread: Some(thread),
        }
    }

    pub fn sent(&self) -> usize {
        self.log.lock().expect("log").0.len()
    }

    /// Requests sent in all, and those of them sent at `at` or later.
    pub fn sent_since(&self, at: Instant) -> (usize, usize) {
        let l = self.log.lock().expect("log");
        (l.0.len(), l.0.iter().filter(|(t, _)| *t >= at).count())
    }

    /// Waits until `n` requests were sent in all.
    pub fn wait_sent(&self, n: usize) {
        let deadline = Instant::now() + scaled(Duration::from_secs(120));
        while self.sent() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} requests sent",
                self.sent()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn finish(mut self) -> Log {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("client");
        }
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `n` requests, one after another.
pub fn burst(node: &Node, addr: SocketAddr, n: usize) -> Log {
    let t = Traffic::start(node, addr);
    t.wait_sent(n);
    t.finish()
}
