//! `cri_clients`: rrun-cri answers the clients that exist, not only our own tonic client.
//!
//! - grpc-core (Python's grpcio), which sends the socket path percent-encoded as the HTTP/2
//!   `:authority`, and the socket path as is (what kubelets of 1.20 and later send);
//! - a runtime.v1alpha2 client (kubelets 1.20 to 1.25), through a whole pod's life;
//! - a handler that panics answers INTERNAL, and the server goes on serving;
//! - hugepage limits on a node without the hugetlb controller, as containerd treats them.

use std::process::Command;
use std::time::Duration;

use integration_tests::cri::*;
use k8s_cri::v1alpha2 as alpha;
use prost::Message;

const T30: Duration = Duration::from_secs(30);

/// Re-encodes a v1 message as its v1alpha2 twin: same field numbers, so the bytes are the
/// same (the premise of serving v1alpha2 with the v1 code).
fn to_alpha<A: Message, B: Message + Default>(m: &A) -> B {
    B::decode(m.encode_to_vec().as_slice()).expect("v1 bytes decode as v1alpha2")
}

fn python_client() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/grpc_core_cri.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_core_client_is_served_with_any_authority() {
    let server = CriServer::start("grpcio").await;
    let out = Command::new("python3")
        .arg(python_client())
        .arg(server.socket())
        .output()
        .expect("running python3 (scripts/setup.sh installs grpcio)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the grpc-core client failed ({}):\n{stderr}\nserver:\n{}",
        out.status,
        server.stderr_tail(40)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("client's JSON");
    eprintln!("grpcio {}", v["grpcio"]);
    for channel in ["default", "path", "localhost"] {
        let c = &v[channel];
        let show = |call: &str| format!("{channel}/{call}: {}", c[call]);
        assert_eq!(c["version_v1"]["code"], "OK", "{}", show("version_v1"));
        // VersionResponse: 1 version, 2 runtime_name, 4 runtime_api_version.
        assert_eq!(
            c["version_v1"]["fields"]["2"],
            "rrun",
            "{}",
            show("version_v1")
        );
        assert_eq!(
            c["version_v1"]["fields"]["4"],
            "v1",
            "{}",
            show("version_v1")
        );
        assert_eq!(
            c["version_v1alpha2"]["code"],
            "OK",
            "{}",
            show("version_v1alpha2")
        );
        assert_eq!(
            c["version_v1alpha2"]["fields"]["4"],
            "v1alpha2",
            "{}",
            show("version_v1alpha2")
        );
        assert_eq!(c["list_pods"]["code"], "OK", "{}", show("list_pods"));
        assert_eq!(
            c["list_images_v1alpha2"]["code"],
            "OK",
            "{}",
            show("list_images_v1alpha2")
        );
        assert_eq!(
            c["status_unknown"]["code"],
            "NOT_FOUND",
            "{}",
            show("status_unknown")
        );
    }
    assert_no_leftovers(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1alpha2_client_runs_a_pod_through_its_life() {
    let server = CriServer::start("v1alpha2").await;
    server.import_busybox();
    let channel = cri_proto::connect(server.socket()).await.expect("connect");
    let mut rt = alpha::runtime_service_client::RuntimeServiceClient::new(channel.clone());
    let mut img = alpha::image_service_client::ImageServiceClient::new(channel);

    let version = rt
        .version(alpha::VersionRequest {
            version: "v1alpha2".into(),
        })
        .await
        .expect("v1alpha2 Version")
        .into_inner();
    assert_eq!(version.runtime_api_version, "v1alpha2");
    assert_eq!(version.runtime_name, "rrun");
    // The same server still answers v1 as v1.
    let v1 = server
        .runtime()
        .version(api::VersionRequest::default())
        .await
        .expect("v1 Version")
        .into_inner();
    assert_eq!(v1.runtime_api_version, "v1");

    let status = img
        .image_status(alpha::ImageStatusRequest {
            image: Some(alpha::ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("v1alpha2 ImageStatus")
        .into_inner();
    assert!(
        status.image.is_some(),
        "busybox is in the store: {status:?}"
    );

    let pod_cfg = server.pod_config("alpha");
    let pod = rt
        .run_pod_sandbox(alpha::RunPodSandboxRequest {
            config: Some(to_alpha(&pod_cfg)),
            runtime_handler: String::new(),
        })
        .await
        .expect("v1alpha2 RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let c_cfg = server.sh_config("main", "echo hello-from-v1alpha2; exec sleep 600");
    let cid = rt
        .create_container(alpha::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(to_alpha(&c_cfg)),
            sandbox_config: Some(to_alpha(&pod_cfg)),
        })
        .await
        .expect("v1alpha2 CreateContainer")
        .into_inner()
        .container_id;
    rt.start_container(alpha::StartContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .expect("v1alpha2 StartContainer");
    wait_log_line(
        &CriServer::log_path(&pod_cfg, &c_cfg),
        "hello-from-v1alpha2",
        T30,
    )
    .await;

    let st = rt
        .container_status(alpha::ContainerStatusRequest {
            container_id: cid.clone(),
            verbose: false,
        })
        .await
        .expect("v1alpha2 ContainerStatus")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(st.state, alpha::ContainerState::ContainerRunning as i32);
    assert_eq!(st.metadata.map(|m| m.name).as_deref(), Some("main"));
    let listed = rt
        .list_containers(alpha::ListContainersRequest { filter: None })
        .await
        .expect("v1alpha2 ListContainers")
        .into_inner()
        .containers;
    assert!(listed.iter().any(|c| c.id == cid));
    let pods = rt
        .pod_sandbox_status(alpha::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .expect("v1alpha2 PodSandboxStatus")
        .into_inner();
    assert_eq!(
        pods.status.map(|s| s.state),
        Some(alpha::PodSandboxState::SandboxReady as i32)
    );
    let exec = rt
        .exec_sync(alpha::ExecSyncRequest {
            container_id: cid.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo out; exit 7".into()],
            timeout: 20,
        })
        .await
        .expect("v1alpha2 ExecSync")
        .into_inner();
    assert_eq!((exec.exit_code, exec.stdout.as_slice()), (7, &b"out\n"[..]));

    rt.stop_container(alpha::StopContainerRequest {
        container_id: cid.clone(),
        timeout: 0,
    })
    .await
    .expect("v1alpha2 StopContainer");
    rt.remove_container(alpha::RemoveContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .expect("v1alpha2 RemoveContainer");
    rt.stop_pod_sandbox(alpha::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("v1alpha2 StopPodSandbox");
    rt.remove_pod_sandbox(alpha::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("v1alpha2 RemovePodSandbox");
    let unknown = rt
        .container_status(alpha::ContainerStatusRequest {
            container_id: cid,
            verbose: false,
        })
        .await;
    expect_code(
        unknown,
        Code::NotFound,
        "v1alpha2 status of a removed container",
    );
    assert_no_leftovers(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_internal_and_the_server_goes_on() {
    let server = CriServer::start_with(
        "panic",
        StartOptions {
            env: vec![("RRUN_CRI_FAULT".into(), "image-fs-info".into())],
            ..Default::default()
        },
    )
    .await;
    let pid = server.server_pid().expect("server pid");
    for round in 0..3 {
        let r = server
            .images()
            .image_fs_info(api::ImageFsInfoRequest {})
            .await;
        let st = expect_code(r, Code::Internal, "ImageFsInfo with a fault injected");
        assert!(
            st.message().contains("panicked"),
            "round {round}: {}",
            show(&st)
        );
        // The same connection and the server go on.
        server
            .runtime()
            .version(api::VersionRequest::default())
            .await
            .expect("Version after a panic");
        server
            .images()
            .list_images(api::ListImagesRequest { filter: None })
            .await
            .expect("ListImages after a panic");
    }
    assert!(pid_alive(pid), "the server died");
    assert_eq!(server.server_pid(), Some(pid));
    let log = server.stderr();
    assert!(
        log.contains("a CRI handler panicked"),
        "no log line for the panic:\n{}",
        server.stderr_tail(20)
    );
    // Everything still works end to end after the panics.
    server.import_busybox();
    let cfg = server.pod_config("after");
    let id = server.run_pod(&cfg).await;
    server.stop_and_remove_pod(&id).await;
    assert_no_leftovers(&server);
}

/// The kubelet sends a hugepage limit of 0 for every page size the node has. On a node
/// without the hugetlb controller containerd skips them with a warning (its
/// `tolerate_missing_hugetlb_controller`, default true); with the setting false the
/// container is refused with a clear message. Where the controller exists, the limit is
/// applied and read back from the container's cgroup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hugepage_limits_follow_the_hugetlb_controller() {
    let has_hugetlb = hugetlb_controller_here();
    let huge = |cfg: &mut api::ContainerConfig| {
        let res = cfg
            .linux
            .as_mut()
            .and_then(|l| l.resources.as_mut())
            .expect("resources");
        res.hugepage_limits = vec![api::HugepageLimit {
            page_size: "2MB".into(),
            limit: 0,
        }];
    };

    let (server, pod_cfg, pod) = CriServer::with_busybox_pod("huge").await;
    let mut cfg = server.sh_config("huge", "exec sleep 600");
    huge(&mut cfg);
    let id = server.create_container(&pod, &pod_cfg, &cfg).await;
    server.start_container(&id).await;
    let pid = server.container_pid(&id).await;
    if has_hugetlb {
        let max = if is_cgroup2() {
            cgroup_file(pid, "hugetlb", "hugetlb.2MB.max")
        } else {
            cgroup_file(pid, "hugetlb", "hugetlb.2MB.limit_in_bytes")
        };
        assert_eq!(
            max.trim(),
            "0",
            "the limit is applied where the controller exists"
        );
    } else {
        eprintln!("no hugetlb controller here: the limits were skipped, as containerd does");
        assert!(
            server.stderr().contains("hugepage limits skipped"),
            "no warning in the server's log"
        );
    }
    server.stop_and_remove_pod(&pod).await;
    assert_no_leftovers(&server);

    if has_hugetlb {
        eprintln!("skipping the tolerate_missing_hugetlb_controller = false case: this node has the controller");
        return;
    }
    let strict = CriServer::start_with(
        "huge-strict",
        StartOptions {
            config_toml: Some("tolerate_missing_hugetlb_controller = false\n".into()),
            ..Default::default()
        },
    )
    .await;
    strict.import_busybox();
    let pod_cfg = strict.pod_config("strict");
    let pod = strict.run_pod(&pod_cfg).await;
    let mut cfg = strict.sh_config("huge", "exec sleep 600");
    huge(&mut cfg);
    let r = strict.try_create_container(&pod, &pod_cfg, &cfg).await;
    let st = expect_code(
        r,
        Code::FailedPrecondition,
        "hugepage limits, not tolerated",
    );
    assert!(st.message().contains("hugetlb"), "{}", show(&st));
    strict.stop_and_remove_pod(&pod).await;
    assert_no_leftovers(&strict);
}

/// Whether a container's cgroup here can take hugepage limits: the controller enabled at
/// the v2 root, or (v1, hybrid) a hugetlb hierarchy in our /proc/self/cgroup.
fn hugetlb_controller_here() -> bool {
    if is_cgroup2() {
        return std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "hugetlb"));
    }
    std::fs::read_to_string("/proc/self/cgroup").is_ok_and(|t| {
        t.lines().any(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|x| x == "hugetlb"))
        })
    })
}
