//! A network namespace a test makes to be "the node" of its pods' network (tests/cri_network.rs):
//! the CRI server runs inside it (`nsenter --net`, which keeps the machine's mounts and
//! cgroup tree, unlike `ip netns exec`, which remounts `/sys`), so the CNI plugins it runs
//! make their bridge, veth ends, routes and port-mapping rules there and never in the
//! machine's own network namespace. Dropping the guard deletes the namespace with all of
//! that in it.
//!
//! Also: the CNI config a test writes (Debian's bridge, host-local, portmap), and what the
//! leak checks look at (veths, IPAM files, iptables rules, both backends).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Debian's plugins (containernetworking-plugins).
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// Are the tools and plugins the network tests need here? `Err(what is missing)`.
pub fn missing_tools() -> Result<(), String> {
    let mut missing = Vec::new();
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        if !Path::new(CNI_BIN_DIR).join(p).is_file() {
            missing.push(format!("{CNI_BIN_DIR}/{p} (containernetworking-plugins)"));
        }
    }
    for tool in ["ip", "nsenter", "iptables-save"] {
        let found = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            missing.push(tool.to_string());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join(", "))
    }
}

/// The node's network namespace (`/run/netns/<name>`), deleted on drop.
pub struct NodeNetns {
    name: String,
}

impl NodeNetns {
    /// `ip netns add rrun-<tag>-<pid>-<n>` with its loopback up.
    pub fn new(tag: &str) -> NodeNetns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect();
        let name = format!("rrun-{tag}-{}-{n}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let node = NodeNetns { name };
        run_ok(Command::new("ip").args(["-n", &node.name, "link", "set", "lo", "up"]));
        node
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// The command line that runs a program in the node's network namespace only.
    pub fn wrap(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--net={}", self.path().display()),
            "--".into(),
        ]
    }

    /// Runs `args` in the node's network namespace; the output whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        let wrap = self.wrap();
        Command::new(&wrap[0])
            .args(&wrap[1..])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {args:?} in the node: {e}"))
    }

    /// An HTTP/1.0 GET of `http://addr/` from the node (a thread of this process that
    /// enters the node's network namespace; 5 s timeouts): the body, or why not.
    pub fn http_get(&self, addr: &str) -> Result<String, String> {
        let path = self.path();
        let addr = addr.to_string();
        std::thread::spawn(move || -> Result<String, String> {
            use std::io::{Read, Write};
            let ns = fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
            // Only this short-lived thread changes namespace.
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {}: {e}", path.display()))?;
            let sock: std::net::SocketAddr =
                addr.parse().map_err(|e| format!("address {addr}: {e}"))?;
            let t = Duration::from_secs(5);
            let mut c = std::net::TcpStream::connect_timeout(&sock, t)
                .map_err(|e| format!("connect {addr}: {e}"))?;
            c.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
            c.write_all(b"GET / HTTP/1.0\r\n\r\n")
                .map_err(|e| format!("send to {addr}: {e}"))?;
            let mut resp = String::new();
            c.read_to_string(&mut resp)
                .map_err(|e| format!("read from {addr}: {e}"))?;
            match resp.split_once("\r\n\r\n") {
                Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
                    Ok(body.to_string())
                }
                _ => Err(format!("{addr} answered {resp:?}")),
            }
        })
        .join()
        .unwrap_or_else(|_| Err("the client thread panicked".into()))
    }

    /// The names of the node's veth interfaces.
    pub fn veths(&self) -> Vec<String> {
        let out = self.run(&["ip", "-o", "link", "show", "type", "veth"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// The node's iptables rules (both the nft and the legacy backend) that mention
    /// `needle`.
    pub fn rules_mentioning(&self, needle: &str) -> Vec<String> {
        let mut hits = Vec::new();
        for save in [
            "iptables-nft-save",
            "iptables-legacy-save",
            "ip6tables-nft-save",
        ] {
            let out = self.run(&[save]);
            hits.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.contains(needle))
                    .map(|l| format!("{save}: {l}")),
            );
        }
        hits
    }
}

impl Drop for NodeNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The network the tests use: a bridge `rrbr0` whose gateway address (`<prefix>1`) is the
/// node's, host-local IPAM in `ipam_dir`, DNS in the result, no masquerading, and portmap.
pub fn conflist(prefix: &str, ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "rrun-test",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "rrbr0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": format!("{prefix}0/24") }]],
                    "dataDir": ipam_dir.display().to_string(),
                },
                "dns": { "nameservers": [format!("{prefix}53")], "search": ["cni.test"] },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    })
}

/// Writes `value` as `dir/name` atomically (a watcher never sees half a file).
pub fn write_config(dir: &Path, name: &str, value: &Value) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, value.to_string()).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, dir.join(name)).expect("rename config");
}

/// host-local's reservations left in `ipam_dir` (one file per address, named by it; the
/// lock and last-reserved files are not reservations).
pub fn ipam_reservations(ipam_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(nets) = fs::read_dir(ipam_dir) else {
        return out;
    };
    for net in nets.flatten() {
        let Ok(files) = fs::read_dir(net.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name != "lock" && !name.starts_with("last_reserved_ip") {
                out.push(f.path().display().to_string());
            }
        }
    }
    out
}
