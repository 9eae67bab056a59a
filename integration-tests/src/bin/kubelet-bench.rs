//! Manifest written → container Running under the stock kubelet (Debian's v1.20), rrun-cri
//! vs containerd 1.6, on the stock-kubelet test's node (`integration_tests::kubelet`): for
//! each endpoint, one kubelet, then N hostNetwork pods one after the other, each timed from
//! the rename of its manifest into `--pod-manifest-path` to the first `/pods` answer (the
//! read-only port, polled every 10 ms) that shows its container running; each pod removed
//! (untimed) before the next. Prints one line per endpoint: `<endpoint> <median ms> <min>
//! <max> <n>`, or `<endpoint> failed: <why>`. Run by bench/kubelet.sh.
//!
//!   kubelet-bench [N]      (default 10; needs root and the kubelet of scripts/kubelet.sh)

use std::time::{Duration, Instant};

use integration_tests::kubelet::{
    container, find_pod, kubelet_binary, kubelet_pods, pod, start_engine, CgroupRoot, Endpoint,
    Kubelet, Node,
};

fn running(pods: &serde_json::Value, name: &str) -> bool {
    find_pod(pods, name)
        .and_then(|p| {
            p["status"]["containerStatuses"]
                .as_array()?
                .first()
                .cloned()
        })
        .is_some_and(|c| c["state"]["running"].is_object())
}

fn gone(pods: &serde_json::Value, name: &str) -> bool {
    find_pod(pods, name).is_none()
}

/// Polls `/pods` every 10 ms until `cond`; `Err` after `timeout` or if the kubelet exits.
fn poll(
    kubelet: &mut Kubelet,
    node: &Node,
    timeout: Duration,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = kubelet.exited() {
            return Err(format!(
                "the kubelet exited ({st}): {}",
                kubelet.log_tail(5)
            ));
        }
        if kubelet_pods(node).is_some_and(|p| cond(&p)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out: {}", kubelet.log_tail(5)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn measure(ep: Endpoint, bin: &std::path::Path, n: usize) -> Result<Vec<f64>, String> {
    let tag = format!("bench-{ep:?}").to_lowercase();
    let cgroups = CgroupRoot::new(&tag);
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let mut kubelet = Kubelet::start(bin, &node, &engine.socket(), &cgroups, &tag);
    // Warm-up: the kubelet's start-up (and the first pod) is not what is measured.
    let mut samples = Vec::new();
    for i in 0..=n {
        let name = format!("bench{i}");
        let manifest = pod(&name, true, container(&["sleep", "1000000"]));
        let t = Instant::now();
        kubelet.add_pod(&name, &manifest);
        poll(&mut kubelet, &node, Duration::from_secs(120), |p| {
            running(p, &name)
        })?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if i > 0 {
            samples.push(ms);
        }
        kubelet.remove_pod(&name);
        poll(&mut kubelet, &node, Duration::from_secs(120), |p| {
            gone(p, &name)
        })?;
    }
    kubelet.stop();
    drop(kubelet);
    drop(engine);
    drop(node);
    drop(cgroups);
    Ok(samples)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let bin = match kubelet_binary() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("kubelet-bench: no kubelet: {why}");
            std::process::exit(1);
        }
    };
    for ep in [Endpoint::Containerd, Endpoint::RrunCri] {
        match measure(ep, &bin, n).await {
            Ok(mut v) => {
                v.sort_by(f64::total_cmp);
                let median = if v.len() % 2 == 1 {
                    v[v.len() / 2]
                } else {
                    (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
                };
                println!(
                    "{ep:?} {median:.0} {:.0} {:.0} {}",
                    v[0],
                    v[v.len() - 1],
                    v.len()
                );
            }
            Err(why) => println!("{ep:?} failed: {}", why.replace('\n', " | ")),
        }
    }
}
