//! The stock `kubectl` of this machine kind (`/usr/lib/google-cloud-sdk/bin/kubectl.1.NN`),
//! run inside a test node's network namespace against an agent's kubeconfig.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::agent::Agent;
use crate::engines::have;
use crate::kubelet::{start_engine, CgroupRoot, Endpoint, Engine, Node};
use crate::{scaled, Output};

/// Where the machine keeps its kubectl versions.
pub const DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// The oldest and the newest kubectl the tests drive.
pub const VERSIONS: &[&str] = &["1.27", "1.33"];

/// The binary of one kubectl version (`"1.33"`).
pub fn bin(version: &str) -> PathBuf {
    Path::new(DIR).join(format!("kubectl.{version}"))
}

/// The binaries of [`VERSIONS`]; `None`, with the reason printed as skipped, when one of
/// them or nft is missing.
pub fn bins_or_skip() -> Option<Vec<PathBuf>> {
    let bins: Vec<PathBuf> = VERSIONS.iter().map(|v| bin(v)).collect();
    if bins.iter().all(|b| b.is_file()) && have("nft") {
        return Some(bins);
    }
    eprintln!("skipped: needs {DIR}/kubectl.{{1.27,1.33}} and nft");
    None
}

/// A node whose agent serves the Kubernetes API, on rrun-cri. Fields drop in this order:
/// the agent before its CRI server, the node, then the cgroup root.
pub struct ApiNode {
    pub agent: Agent,
    pub engine: Engine,
    pub node: Node,
    _cgroups: CgroupRoot,
}

impl ApiNode {
    /// `service_cidr`: the agent's `--service-cluster-ip-range` (one per test binary, so
    /// tests running side by side do not share ClusterIPs).
    pub async fn start(tag: &str, service_cidr: &str) -> ApiNode {
        let cgroups = CgroupRoot::new(tag);
        let node = Node::start();
        let engine = start_engine(Endpoint::RrunCri, &node).await;
        let agent = Agent::start(
            &node,
            &engine.socket(),
            &cgroups,
            tag,
            &[format!("--service-cluster-ip-range={service_cidr}")],
        );
        ApiNode {
            agent,
            engine,
            node,
            _cgroups: cgroups,
        }
    }
}

/// One kubectl binary with its own kubeconfig and cache directory.
pub struct Kubectl<'a> {
    node: &'a Node,
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
    timeout: Duration,
}

impl<'a> Kubectl<'a> {
    /// `tag` names the cache directory under the node's directory (one per client, as
    /// discovery caches differ between versions).
    pub fn new(node: &'a Node, bin: &Path, kubeconfig: &Path, tag: &str) -> Kubectl<'a> {
        Kubectl {
            node,
            bin: bin.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            cache: node.dir().join(format!("kcache-{tag}")),
            timeout: Duration::from_secs(60),
        }
    }

    /// The bound on one invocation (before `scaled`).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    fn prefix(&self) -> Vec<String> {
        vec![
            self.bin.display().to_string(),
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--cache-dir={}", self.cache.display()),
        ]
    }

    pub fn node(&self) -> &'a Node {
        self.node
    }

    /// kubectl in the node's network namespace, to spawn (a watch that runs on).
    pub fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new("nsenter");
        c.args(["--target", &self.node.pid().to_string(), "--net", "--"])
            .args(self.prefix());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut full = self.prefix();
        full.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        self.node
            .run_net(&refs, scaled(self.timeout))
            .unwrap_or_else(|| panic!("kubectl {args:?} timed out"))
    }

    /// Runs and expects success; stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed ({}):\n{}\n{}",
            o.status,
            o.stdout,
            o.stderr
        );
        o.stdout
    }

    /// Runs a shell line in the node's network namespace; `{k}` stands for kubectl with its
    /// flags.
    pub fn sh(&self, line: &str) -> Output {
        let line = line.replace("{k}", &self.prefix().join(" "));
        self.node
            .run_net(&["sh", "-c", &line], scaled(self.timeout))
            .unwrap_or_else(|| panic!("timed out: {line}"))
    }

    /// Polls `kubectl args` until `done(stdout)` holds; the agent must stay up meanwhile.
    pub fn wait(&self, agent: &mut Agent, args: &[&str], what: &str, done: impl Fn(&str) -> bool) {
        let timeout = scaled(Duration::from_secs(120));
        let deadline = Instant::now() + timeout;
        loop {
            agent.assert_alive();
            let o = self.run(args);
            if o.status.success() && done(&o.stdout) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last kubectl {args:?}:\n{}\n{}\nagent log:\n{}",
                o.stdout,
                o.stderr,
                agent.log_tail(30)
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The words of each line (kubectl's columns, whitespace-separated).
pub fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}
