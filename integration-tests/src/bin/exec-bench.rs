//! Exec round trip through a CRI streaming server, rrun-cri vs containerd 1.6's CRI (with
//! runc): in one running busybox container, N times one after the other, the Exec RPC
//! for `echo hi`, then the WebSocket (`v4.channel.k8s.io`) session on the URL it answered
//! until the server closes it, its output and Success status checked. Prints one line per
//! server: `<server> <median ms> <min> <max> <n>`, or `<server> failed: <why>`. Run by
//! bench/exec.sh (needs root; `RRUN_CRI_BIN` and `RRUN_BIN` name the binaries).
//!
//!   exec-bench [N]      (default 50, after 3 untimed warmups)

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use integration_tests::cri::{api, Client, CriServer};
use integration_tests::engines::{Containerd, Runtime, CRI_RUNTIME, CRI_SANDBOX_IMAGE, CTR_IMAGE};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Rt = integration_tests::cri::api::runtime_service_client::RuntimeServiceClient<
    tonic::transport::Channel,
>;

const WARMUP: usize = 3;

/// One exec: RPC, handshake, output, status; its time in ms.
async fn round_trip(rt: &mut Rt, container: &str) -> Result<f64, String> {
    let t = Instant::now();
    let url = rt
        .exec(api::ExecRequest {
            container_id: container.into(),
            cmd: vec!["echo".into(), "hi".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("Exec: {e}"))?
        .into_inner()
        .url;
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (mut out, mut status) = (Vec::new(), Vec::new());
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Binary(b)) => match b.split_first() {
                Some((1, d)) => out.extend_from_slice(d),
                Some((3, d)) => status.extend_from_slice(d),
                _ => {}
            },
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let status = String::from_utf8_lossy(&status);
    if out != b"hi\n" || !status.contains("Success") {
        return Err(format!("unexpected answer: {out:?}, status {status}"));
    }
    Ok(ms)
}

async fn measure(rt: &mut Rt, container: &str, n: usize) -> Result<Vec<f64>, String> {
    for _ in 0..WARMUP {
        round_trip(rt, container).await?;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(round_trip(rt, container).await?);
    }
    Ok(v)
}

async fn rrun_cri(n: usize) -> Result<Vec<f64>, String> {
    let (s, pod, pod_id) = CriServer::with_busybox_pod("exec-bench").await;
    let c = s
        .run_container(&pod_id, &pod, &s.sh_config("c", "exec sleep 100000"))
        .await;
    let r = measure(&mut s.runtime(), &c, n).await;
    s.stop_and_remove_pod(&pod_id).await;
    r
}

async fn containerd(cd: &Containerd, n: usize) -> Result<Vec<f64>, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut client = loop {
        if let Ok(mut c) = Client::connect(&cd.socket).await {
            if c.runtime
                .version(api::VersionRequest::default())
                .await
                .is_ok()
            {
                break c;
            }
        }
        if Instant::now() > deadline {
            return Err("containerd's CRI plugin did not come up".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let logs = cd.dir.join("pod-logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let pod_cfg = cd.host_network_pod_config("exec-bench", &logs);
    let r = &mut client.runtime;
    let pod = r
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: CRI_RUNTIME.into(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox: {e}"))?
        .into_inner()
        .pod_sandbox_id;
    let result = async {
        let c = r
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(api::ContainerConfig {
                    metadata: Some(api::ContainerMetadata {
                        name: "c".into(),
                        attempt: 0,
                    }),
                    image: Some(api::ImageSpec {
                        image: CTR_IMAGE.into(),
                        ..Default::default()
                    }),
                    command: ["sleep", "100000"].map(String::from).to_vec(),
                    log_path: "c.log".into(),
                    linux: Some(api::LinuxContainerConfig::default()),
                    ..Default::default()
                }),
                sandbox_config: Some(pod_cfg),
            })
            .await
            .map_err(|e| format!("CreateContainer: {e}"))?
            .into_inner()
            .container_id;
        r.start_container(api::StartContainerRequest {
            container_id: c.clone(),
        })
        .await
        .map_err(|e| format!("StartContainer: {e}"))?;
        measure(r, &c, n).await
    }
    .await;
    let _ = r
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await;
    let _ = r
        .remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await;
    result
}

fn print(name: &str, r: Result<Vec<f64>, String>) -> Option<f64> {
    match r {
        Ok(mut v) if !v.is_empty() => {
            v.sort_by(|a, b| a.total_cmp(b));
            let median = v[v.len() / 2];
            println!(
                "{name} {median:.2} {:.2} {:.2} {}",
                v[0],
                v[v.len() - 1],
                v.len()
            );
            Some(median)
        }
        Ok(_) => {
            println!("{name} failed: no samples");
            None
        }
        Err(e) => {
            println!("{name} failed: {e}");
            None
        }
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("exec-bench: tokio: {e}");
            std::process::exit(1);
        }
    };
    let ours = print("rrun-cri", rt.block_on(rrun_cri(n)));
    let theirs = Runtime::Runc.path().and_then(|runc| {
        let cd = Containerd::start_with_cri(&runc);
        cd.import_image("k8s.io", CRI_SANDBOX_IMAGE, &["sleep", "1000000"]);
        cd.import_image("k8s.io", CTR_IMAGE, &["sh"]);
        print("containerd", rt.block_on(containerd(&cd, n)))
    });
    if let (Some(a), Some(b)) = (ours, theirs) {
        println!("ratio {:.2}", a / b);
    }
}
