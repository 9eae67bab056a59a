//! `cri_bad_requests`: requests a CRI server must refuse, with the gRPC code containerd
//! (and the kubelet's expectations) give, a message, no panic, and nothing left half-made:
//! after every failing request the server's state dirs, the mounts under the test's dirs,
//! the test's cgroups and processes are as they were before it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use integration_tests::cri::*;
use integration_tests::mounts_under;

const T30: Duration = Duration::from_secs(30);

/// What must not change across a failing request.
struct Snapshot {
    paths: BTreeSet<PathBuf>,
    mounts: Vec<String>,
    procs: Vec<i32>,
    cgroups: BTreeSet<PathBuf>,
}

fn cgroup_tree(s: &CriServer) -> BTreeSet<PathBuf> {
    fn walk(d: &std::path::Path, out: &mut BTreeSet<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.insert(e.path());
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut set = BTreeSet::new();
    for d in integration_tests::cgroup_dirs(s.cgroup_parent()) {
        if d.is_dir() {
            set.insert(d.clone());
            walk(&d, &mut set);
        }
    }
    set
}

fn snapshot(s: &CriServer) -> Snapshot {
    let mut mounts = mounts_under(s.dir());
    mounts.sort();
    Snapshot {
        paths: s.state_paths(),
        mounts,
        procs: s.test_processes(s.server_pid()),
        cgroups: cgroup_tree(s),
    }
}

/// Panics unless nothing changed since `before` (waits a little for late cleanups).
#[track_caller]
fn assert_unchanged(s: &CriServer, before: &Snapshot, what: &str) {
    let deadline = std::time::Instant::now() + integration_tests::scaled(Duration::from_secs(5));
    loop {
        let now = snapshot(s);
        let new_paths: Vec<_> = now.paths.difference(&before.paths).collect();
        let new_cg: Vec<_> = now.cgroups.difference(&before.cgroups).collect();
        let new_procs: Vec<_> = now
            .procs
            .iter()
            .filter(|p| !before.procs.contains(p))
            .collect();
        if new_paths.is_empty()
            && now.mounts == before.mounts
            && new_cg.is_empty()
            && new_procs.is_empty()
        {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{what}: left half-made:\n  new paths: {new_paths:?}\n  mounts before {:?} now {:?}\n  new cgroups: {new_cg:?}\n  new processes: {new_procs:?}",
                before.mounts, now.mounts
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server survived (it answers, and its stderr has no panic).
async fn assert_alive(s: &CriServer) {
    s.runtime()
        .version(api::VersionRequest::default())
        .await
        .unwrap_or_else(|e| panic!("the server stopped answering: {}", show(&e)));
    let err = s.stderr();
    assert!(
        !err.contains("panicked at"),
        "the server panicked:\n{}",
        s.stderr_tail(80)
    );
}

async fn setup(name: &str) -> (CriServer, api::PodSandboxConfig, String) {
    let s = CriServer::start(name).await;
    s.import_busybox();
    let pod = s.pod_config("p");
    let id = s.run_pod(&pod).await;
    (s, pod, id)
}

#[tokio::test]
async fn run_pod_sandbox_without_metadata_is_invalid() {
    let s = CriServer::start("badpod").await;
    // A first pod makes the server's own directories: they are not half-made pods.
    let warm = s.pod_config("warm");
    let warm_id = s.run_pod(&warm).await;
    s.stop_and_remove_pod(&warm_id).await;
    let before = snapshot(&s);
    let run = |cfg: Option<api::PodSandboxConfig>| {
        let mut rt = s.runtime();
        async move {
            rt.run_pod_sandbox(api::RunPodSandboxRequest {
                config: cfg,
                runtime_handler: String::new(),
            })
            .await
        }
    };
    expect_code(
        run(None).await,
        Code::InvalidArgument,
        "RunPodSandbox without config",
    );
    assert_unchanged(&s, &before, "RunPodSandbox without config");
    let mut cfg = s.pod_config("nometa");
    cfg.metadata = None;
    expect_code(
        run(Some(cfg)).await,
        Code::InvalidArgument,
        "RunPodSandbox without metadata",
    );
    assert_unchanged(&s, &before, "RunPodSandbox without metadata");
    let mut cfg = s.pod_config("escape");
    if let Some(l) = cfg.linux.as_mut() {
        l.cgroup_parent = format!("{}/../../..", s.cgroup_parent());
    }
    expect_code(
        run(Some(cfg)).await,
        Code::InvalidArgument,
        "RunPodSandbox with a cgroup parent escaping with ..",
    );
    assert_unchanged(
        &s,
        &before,
        "RunPodSandbox with a cgroup parent escaping with ..",
    );
    let mut cfg = s.pod_config("noname");
    if let Some(m) = cfg.metadata.as_mut() {
        m.name.clear();
    }
    expect_code(
        run(Some(cfg)).await,
        Code::InvalidArgument,
        "RunPodSandbox with an empty name",
    );
    assert_unchanged(&s, &before, "RunPodSandbox with an empty name");
    assert!(s.list_pods(None).await.is_empty());
    assert_alive(&s).await;
}

#[tokio::test]
async fn create_container_with_missing_fields_is_invalid() {
    let (s, pod, pod_id) = setup("badctr").await;
    let before = snapshot(&s);
    let create = |cfg: Option<api::ContainerConfig>| {
        let mut rt = s.runtime();
        let pod = pod.clone();
        let pod_id = pod_id.clone();
        async move {
            rt.create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod_id,
                config: cfg,
                sandbox_config: Some(pod),
            })
            .await
        }
    };
    expect_code(
        create(None).await,
        Code::InvalidArgument,
        "CreateContainer without config",
    );
    assert_unchanged(&s, &before, "CreateContainer without config");
    let mut cfg = s.sh_config("nometa", "true");
    cfg.metadata = None;
    expect_code(
        create(Some(cfg)).await,
        Code::InvalidArgument,
        "CreateContainer without metadata",
    );
    assert_unchanged(&s, &before, "CreateContainer without metadata");
    let mut cfg = s.sh_config("noimage", "true");
    cfg.image = None;
    expect_code(
        create(Some(cfg)).await,
        Code::InvalidArgument,
        "CreateContainer without image",
    );
    assert_unchanged(&s, &before, "CreateContainer without image");
    let mut cfg = s.sh_config("emptyimage", "true");
    cfg.image = Some(image_spec(""));
    expect_code(
        create(Some(cfg)).await,
        Code::InvalidArgument,
        "CreateContainer with image \"\"",
    );
    assert_unchanged(&s, &before, "CreateContainer with image \"\"");
    assert!(s
        .list_containers(api::ContainerFilter::default())
        .await
        .is_empty());
    assert_alive(&s).await;
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let s = CriServer::start("unknown").await;
    let before = snapshot(&s);
    let mut rt = s.runtime();
    let nope = "0123456789abcdef-no-such-id".to_string();
    expect_code(
        rt.pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: nope.clone(),
            verbose: false,
        })
        .await,
        Code::NotFound,
        "PodSandboxStatus of an unknown pod",
    );
    expect_code(
        rt.container_status(api::ContainerStatusRequest {
            container_id: nope.clone(),
            verbose: false,
        })
        .await,
        Code::NotFound,
        "ContainerStatus of an unknown container",
    );
    expect_code(
        rt.start_container(api::StartContainerRequest {
            container_id: nope.clone(),
        })
        .await,
        Code::NotFound,
        "StartContainer of an unknown container",
    );
    expect_code(
        rt.exec_sync(api::ExecSyncRequest {
            container_id: nope.clone(),
            cmd: vec!["true".into()],
            timeout: 0,
        })
        .await,
        Code::NotFound,
        "ExecSync in an unknown container",
    );
    expect_code(
        rt.container_stats(api::ContainerStatsRequest {
            container_id: nope.clone(),
        })
        .await,
        Code::NotFound,
        "ContainerStats of an unknown container",
    );
    expect_code(
        rt.pod_sandbox_stats(api::PodSandboxStatsRequest {
            pod_sandbox_id: nope.clone(),
        })
        .await,
        Code::NotFound,
        "PodSandboxStats of an unknown pod",
    );
    expect_code(
        rt.update_container_resources(api::UpdateContainerResourcesRequest {
            container_id: nope.clone(),
            linux: Some(api::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "UpdateContainerResources of an unknown container",
    );
    expect_code(
        rt.reopen_container_log(api::ReopenContainerLogRequest {
            container_id: nope.clone(),
        })
        .await,
        Code::NotFound,
        "ReopenContainerLog of an unknown container",
    );
    // containerd answers NotFound; the kubelet takes that and success alike.
    if let Err(e) = rt
        .stop_container(api::StopContainerRequest {
            container_id: nope.clone(),
            timeout: 1,
        })
        .await
    {
        assert_eq!(
            e.code(),
            Code::NotFound,
            "StopContainer of an unknown id: {}",
            show(&e)
        );
    }
    let pod = s.pod_config("ghost");
    expect_code(
        rt.create_container(api::CreateContainerRequest {
            pod_sandbox_id: nope.clone(),
            config: Some(s.sh_config("c", "true")),
            sandbox_config: Some(pod),
        })
        .await,
        Code::NotFound,
        "CreateContainer in an unknown pod",
    );
    // Removal is idempotent (the CRI says so): an unknown id is not an error.
    rt.remove_container(api::RemoveContainerRequest {
        container_id: nope.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemoveContainer of an unknown id: {}", show(&e)));
    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: nope.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox of an unknown id: {}", show(&e)));
    // containerd answers NotFound; "already reclaimed" is fine too.
    if let Err(e) = rt
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: nope.clone(),
        })
        .await
    {
        assert_eq!(
            e.code(),
            Code::NotFound,
            "StopPodSandbox of an unknown id: {}",
            show(&e)
        );
    }
    assert_unchanged(&s, &before, "requests with unknown ids");
    assert_alive(&s).await;
}

#[tokio::test]
async fn removed_container_is_not_found() {
    let (s, pod, pod_id) = setup("removed").await;
    let c = s
        .run_container(&pod_id, &pod, &s.sh_config("c", "true"))
        .await;
    s.wait_exited(&c).await;
    s.remove_container(&c).await;
    let mut rt = s.runtime();
    expect_code(
        rt.container_status(api::ContainerStatusRequest {
            container_id: c.clone(),
            verbose: true,
        })
        .await,
        Code::NotFound,
        "ContainerStatus of a removed container",
    );
    expect_code(
        rt.start_container(api::StartContainerRequest {
            container_id: c.clone(),
        })
        .await,
        Code::NotFound,
        "StartContainer of a removed container",
    );
    let listed = s
        .list_containers(api::ContainerFilter {
            id: c.clone(),
            ..Default::default()
        })
        .await;
    assert!(
        listed.is_empty(),
        "a removed container is listed: {listed:?}"
    );
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn create_container_in_a_removed_or_stopped_sandbox_fails() {
    let (s, pod, pod_id) = setup("deadpod").await;
    s.stop_and_remove_pod(&pod_id).await;
    let before = snapshot(&s);
    let r = s
        .try_create_container(&pod_id, &pod, &s.sh_config("late", "true"))
        .await;
    expect_code(r, Code::NotFound, "CreateContainer in a removed pod");
    assert_unchanged(&s, &before, "CreateContainer in a removed pod");

    let pod2 = s.pod_config("stopped");
    let id2 = s.run_pod(&pod2).await;
    s.runtime()
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: id2.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox: {}", show(&e)));
    let before = snapshot(&s);
    let r = s
        .try_create_container(&id2, &pod2, &s.sh_config("late", "true"))
        .await;
    let e = r.expect_err("CreateContainer in a stopped pod succeeded");
    assert!(!e.message().is_empty(), "no message: {}", show(&e));
    assert_unchanged(&s, &before, "CreateContainer in a stopped pod");
    s.stop_and_remove_pod(&id2).await;
    assert_alive(&s).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn duplicate_pod_name_and_attempt_already_exists() {
    let s = CriServer::start("duppod").await;
    let pod = s.pod_config("p");
    let id = s.run_pod(&pod).await;
    let before = snapshot(&s);
    expect_code(
        s.try_run_pod(&pod).await,
        Code::AlreadyExists,
        "a second pod p, attempt 0",
    );
    assert_unchanged(&s, &before, "duplicate RunPodSandbox");
    assert_eq!(s.list_pods(None).await.len(), 1);
    // The next attempt is a new pod.
    let mut again = pod.clone();
    if let Some(m) = again.metadata.as_mut() {
        m.attempt = 1;
    }
    let id2 = s.run_pod(&again).await;
    assert_ne!(id, id2);
    s.stop_and_remove_pod(&id).await;
    s.stop_and_remove_pod(&id2).await;
    assert_alive(&s).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn duplicate_container_name_in_a_pod_already_exists() {
    let (s, pod, pod_id) = setup("dupctr").await;
    let cfg = s.sh_config("c", "exec sleep 1000");
    let first = s.run_container(&pod_id, &pod, &cfg).await;
    s.wait_state(&first, api::ContainerState::ContainerRunning, T30)
        .await;
    let before = snapshot(&s);
    expect_code(
        s.try_create_container(&pod_id, &pod, &cfg).await,
        Code::AlreadyExists,
        "a second container c, attempt 0, in the same pod",
    );
    assert_unchanged(&s, &before, "duplicate CreateContainer");
    // Attempt 1 (a restart by the kubelet) is fine; so is the same name in another pod.
    let mut retry = cfg.clone();
    if let Some(m) = retry.metadata.as_mut() {
        m.attempt = 1;
    }
    s.create_container(&pod_id, &pod, &retry).await;
    let other = s.pod_config("other");
    let other_id = s.run_pod(&other).await;
    s.create_container(&other_id, &other, &cfg).await;
    s.stop_and_remove_pod(&pod_id).await;
    s.stop_and_remove_pod(&other_id).await;
    assert_alive(&s).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn missing_image_is_not_found_and_named() {
    let (s, pod, pod_id) = setup("noimage").await;
    let before = snapshot(&s);
    let image = "localhost/rrun-absent:9";
    let cfg = s.container_config("c", image, &["true"]);
    let e = expect_code(
        s.try_create_container(&pod_id, &pod, &cfg).await,
        Code::NotFound,
        "CreateContainer of a missing image",
    );
    assert!(
        e.message().contains(image),
        "the message should name the image {image}: {}",
        show(&e)
    );
    assert_unchanged(&s, &before, "CreateContainer of a missing image");
    s.stop_and_remove_pod(&pod_id).await;
    assert_alive(&s).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn nonsense_values_are_invalid_arguments() {
    let (s, pod, pod_id) = setup("nonsense").await;
    let before = snapshot(&s);
    let mut cases: Vec<(&str, api::ContainerConfig)> = Vec::new();

    let mut c = s.sh_config("negmem", "true");
    if let Some(r) = c.linux.as_mut().and_then(|l| l.resources.as_mut()) {
        r.memory_limit_in_bytes = -5;
    }
    cases.push(("negative memory limit", c));

    let mut c = s.sh_config("negcpu", "true");
    if let Some(r) = c.linux.as_mut().and_then(|l| l.resources.as_mut()) {
        r.cpu_shares = -10;
    }
    cases.push(("negative cpu shares", c));

    let mut c = s.sh_config("seccompmissing", "true");
    if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.seccomp = Some(api::SecurityProfile {
            profile_type: api::security_profile::ProfileType::Localhost as i32,
            localhost_ref: s.dir().join("no/such/profile.json").display().to_string(),
        });
    }
    cases.push(("a seccomp Localhost profile that does not exist", c));

    let bad_profile = s.mkdir("seccomp").join("garbage.json");
    std::fs::write(&bad_profile, "this is { not json").expect("write");
    let mut c = s.sh_config("seccompgarbage", "true");
    if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.seccomp = Some(api::SecurityProfile {
            profile_type: api::security_profile::ProfileType::Localhost as i32,
            localhost_ref: bad_profile.display().to_string(),
        });
    }
    cases.push(("a seccomp Localhost profile that is not JSON", c));

    let mut c = s.sh_config("seccomprel", "true");
    if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.seccomp = Some(api::SecurityProfile {
            profile_type: api::security_profile::ProfileType::Localhost as i32,
            localhost_ref: "relative/profile.json".into(),
        });
    }
    cases.push(("a relative seccomp Localhost path", c));

    let mut c = s.sh_config("relmount", "true");
    c.mounts.push(api::Mount {
        container_path: "relative/dest".into(),
        host_path: s.mkdir("m").display().to_string(),
        ..Default::default()
    });
    cases.push(("a relative mount destination", c));

    for (what, cfg) in cases {
        let e = expect_code(
            s.try_create_container(&pod_id, &pod, &cfg).await,
            Code::InvalidArgument,
            &format!("CreateContainer with {what}"),
        );
        assert!(!e.message().is_empty());
        assert_unchanged(&s, &before, &format!("CreateContainer with {what}"));
    }

    // And for a running container: UpdateContainerResources with a negative limit.
    let c = s
        .run_container(&pod_id, &pod, &s.sh_config("ok", "exec sleep 1000"))
        .await;
    s.wait_state(&c, api::ContainerState::ContainerRunning, T30)
        .await;
    let pid = s.container_pid(&c).await;
    let limit = memory_limit(pid);
    expect_code(
        s.runtime()
            .update_container_resources(api::UpdateContainerResourcesRequest {
                container_id: c.clone(),
                linux: Some(api::LinuxContainerResources {
                    memory_limit_in_bytes: -1024,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "UpdateContainerResources with a negative memory limit",
    );
    assert_eq!(
        memory_limit(pid),
        limit,
        "a refused update changed the limit"
    );
    s.stop_and_remove_pod(&pod_id).await;
    assert_alive(&s).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn start_twice_and_exec_in_an_exited_container_fail_cleanly() {
    let (s, pod, pod_id) = setup("twice").await;
    let c = s
        .run_container(&pod_id, &pod, &s.sh_config("c", "exec sleep 1000"))
        .await;
    s.wait_state(&c, api::ContainerState::ContainerRunning, T30)
        .await;
    let pid = s.container_pid(&c).await;
    let e = s
        .runtime()
        .start_container(api::StartContainerRequest {
            container_id: c.clone(),
        })
        .await
        .expect_err("StartContainer of a running container succeeded");
    assert!(!e.message().is_empty());
    assert_eq!(
        s.container_pid(&c).await,
        pid,
        "a second start changed the container"
    );
    assert!(pid_alive(pid));

    let done = s
        .run_container(&pod_id, &pod, &s.sh_config("done", "true"))
        .await;
    s.wait_exited(&done).await;
    let e = s
        .exec_sync(&done, &["true"], 0)
        .await
        .expect_err("ExecSync in an exited container succeeded");
    assert!(!e.message().is_empty(), "{}", show(&e));
    s.stop_and_remove_pod(&pod_id).await;
    assert_alive(&s).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn empty_requests_never_panic_the_server() {
    let s = CriServer::start("empty").await;
    let mut rt = s.runtime();
    let mut im = s.images();
    // Every unary RPC with a default (empty) message: any answer but a crash.
    let mut answers: Vec<(&str, Result<(), Status>)> = vec![
        (
            "RunPodSandbox",
            rt.run_pod_sandbox(api::RunPodSandboxRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "StopPodSandbox",
            rt.stop_pod_sandbox(api::StopPodSandboxRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "RemovePodSandbox",
            rt.remove_pod_sandbox(api::RemovePodSandboxRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "PodSandboxStatus",
            rt.pod_sandbox_status(api::PodSandboxStatusRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "ListPodSandbox",
            rt.list_pod_sandbox(api::ListPodSandboxRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "CreateContainer",
            rt.create_container(api::CreateContainerRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "StartContainer",
            rt.start_container(api::StartContainerRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "StopContainer",
            rt.stop_container(api::StopContainerRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "RemoveContainer",
            rt.remove_container(api::RemoveContainerRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "ListContainers",
            rt.list_containers(api::ListContainersRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "ContainerStatus",
            rt.container_status(api::ContainerStatusRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "UpdateContainerResources",
            rt.update_container_resources(api::UpdateContainerResourcesRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "ReopenContainerLog",
            rt.reopen_container_log(api::ReopenContainerLogRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "ExecSync",
            rt.exec_sync(api::ExecSyncRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "Exec",
            rt.exec(api::ExecRequest::default()).await.map(|_| ()),
        ),
        (
            "Attach",
            rt.attach(api::AttachRequest::default()).await.map(|_| ()),
        ),
        (
            "PortForward",
            rt.port_forward(api::PortForwardRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "ContainerStats",
            rt.container_stats(api::ContainerStatsRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "ListContainerStats",
            rt.list_container_stats(api::ListContainerStatsRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "PodSandboxStats",
            rt.pod_sandbox_stats(api::PodSandboxStatsRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "ListPodSandboxStats",
            rt.list_pod_sandbox_stats(api::ListPodSandboxStatsRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "UpdateRuntimeConfig",
            rt.update_runtime_config(api::UpdateRuntimeConfigRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "Status",
            rt.status(api::StatusRequest::default()).await.map(|_| ()),
        ),
        (
            "RuntimeConfig",
            rt.runtime_config(api::RuntimeConfigRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "ListImages",
            im.list_images(api::ListImagesRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "ImageStatus",
            im.image_status(api::ImageStatusRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "PullImage",
            im.pull_image(api::PullImageRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "RemoveImage",
            im.remove_image(api::RemoveImageRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "ImageFsInfo",
            im.image_fs_info(api::ImageFsInfoRequest::default())
                .await
                .map(|_| ()),
        ),
    ];
    let mut bad = Vec::new();
    for (name, r) in answers.drain(..) {
        if let Err(e) = r {
            // A handler that panics shows up as Unknown/Internal with h2/transport text,
            // or the connection drops (Unavailable).
            if matches!(e.code(), Code::Unknown | Code::Unavailable | Code::Internal) {
                bad.push(format!("{name}: {}", show(&e)));
            }
        }
    }
    assert_alive(&s).await;
    assert!(
        bad.is_empty(),
        "answers that look like crashes:\n  {}",
        bad.join("\n  ")
    );
    assert!(
        s.list_pods(None).await.is_empty(),
        "an empty RunPodSandbox made a pod"
    );
    assert_no_leftovers(&s);
}

/// Issue 17: malformed but decodable requests — ids that are paths or hold a NUL, huge
/// strings, negative timeouts — are InvalidArgument, never an unknown id, and touch
/// nothing: not the server's state, and not the file an id like `../../x` would name.
#[tokio::test]
async fn malformed_ids_names_and_timeouts_are_invalid_arguments() {
    let (s, pod, pod_id) = setup("malformed").await;
    let c = s
        .run_container(&pod_id, &pod, &s.sh_config("ok", "exec sleep 1000"))
        .await;
    // What a `..` id would reach from the state dirs, were it ever joined to a path.
    let bait = s.mkdir("bait");
    std::fs::write(bait.join("file"), "keep").expect("write bait");
    let before = snapshot(&s);
    let huge = "a".repeat(1 << 20);
    let bad_ids = [
        "../../bait".to_string(),
        format!("{c}/../../bait"),
        "..%2f..".into(),
        format!("{}\0x", &c[..12]),
        huge.clone(),
    ];
    let mut rt = s.runtime();
    for id in &bad_ids {
        let shown: String = id.chars().take(30).collect();
        let what = |rpc: &str| format!("{rpc} of the id {shown:?}");
        let cid = || id.clone();
        expect_code(
            rt.container_status(api::ContainerStatusRequest {
                container_id: cid(),
                verbose: true,
            })
            .await,
            Code::InvalidArgument,
            &what("ContainerStatus"),
        );
        expect_code(
            rt.start_container(api::StartContainerRequest {
                container_id: cid(),
            })
            .await,
            Code::InvalidArgument,
            &what("StartContainer"),
        );
        expect_code(
            rt.stop_container(api::StopContainerRequest {
                container_id: cid(),
                timeout: 0,
            })
            .await,
            Code::InvalidArgument,
            &what("StopContainer"),
        );
        expect_code(
            rt.remove_container(api::RemoveContainerRequest {
                container_id: cid(),
            })
            .await,
            Code::InvalidArgument,
            &what("RemoveContainer"),
        );
        expect_code(
            rt.exec_sync(api::ExecSyncRequest {
                container_id: cid(),
                cmd: vec!["true".into()],
                timeout: 0,
            })
            .await,
            Code::InvalidArgument,
            &what("ExecSync"),
        );
        expect_code(
            rt.pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: cid(),
                verbose: true,
            })
            .await,
            Code::InvalidArgument,
            &what("PodSandboxStatus"),
        );
        expect_code(
            rt.stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: cid(),
            })
            .await,
            Code::InvalidArgument,
            &what("StopPodSandbox"),
        );
        expect_code(
            rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: cid(),
            })
            .await,
            Code::InvalidArgument,
            &what("RemovePodSandbox"),
        );
        assert_unchanged(&s, &before, &what("requests"));
    }
    // Names that no Kubernetes object has.
    for (i, name) in ["a/b".to_string(), "a\0b".into(), huge.clone()]
        .iter()
        .enumerate()
    {
        let mut p = s.pod_config(&format!("bad{i}"));
        if let Some(m) = p.metadata.as_mut() {
            m.name = name.clone();
        }
        expect_code(
            s.try_run_pod(&p).await,
            Code::InvalidArgument,
            "RunPodSandbox, bad name",
        );
        let mut cfg = s.sh_config("x", "true");
        if let Some(m) = cfg.metadata.as_mut() {
            m.name = name.clone();
        }
        expect_code(
            s.try_create_container(&pod_id, &pod, &cfg).await,
            Code::InvalidArgument,
            "CreateContainer, bad name",
        );
        assert_unchanged(&s, &before, "requests with bad names");
    }
    // Negative timeouts.
    expect_code(
        rt.exec_sync(api::ExecSyncRequest {
            container_id: c.clone(),
            cmd: vec!["true".into()],
            timeout: -1,
        })
        .await,
        Code::InvalidArgument,
        "ExecSync with a negative timeout",
    );
    expect_code(
        rt.stop_container(api::StopContainerRequest {
            container_id: c.clone(),
            timeout: -5,
        })
        .await,
        Code::InvalidArgument,
        "StopContainer with a negative timeout",
    );
    assert_eq!(
        s.container_status(&c).await.state,
        api::ContainerState::ContainerRunning as i32,
        "a refused stop stopped the container"
    );
    assert_eq!(
        std::fs::read_to_string(bait.join("file")).expect("bait"),
        "keep"
    );
    s.stop_and_remove_pod(&pod_id).await;
    assert_alive(&s).await;
    assert_no_leftovers(&s);
}

/// The codes of the create, exec, stop and remove paths, end to end (the server's table is
/// `cri/src/error.rs`): no command anywhere is InvalidArgument and leaves nothing made, a
/// pod id with `../` or a NUL is InvalidArgument, exec in an exited container is
/// FailedPrecondition, and stopping or removing a removed container is no error.
#[tokio::test]
async fn create_exec_stop_and_remove_have_the_cri_codes() {
    let (s, pod, pod_id) = setup("codes").await;
    let image = "localhost/rrun-nocmd:1";
    s.import(&FixtureImage {
        reference: image.into(),
        cmd: Vec::new(),
        ..FixtureImage::default()
    });
    let before = snapshot(&s);
    let e = expect_code(
        s.try_create_container(&pod_id, &pod, &s.container_config("c", image, &[]))
            .await,
        Code::InvalidArgument,
        "CreateContainer with no command in the request nor the image",
    );
    assert!(e.message().contains("no command"), "{}", show(&e));
    assert_unchanged(&s, &before, "CreateContainer with no command");

    let rt = s.runtime();
    for bad in [format!("../{pod_id}"), format!("{pod_id}\0"), "..".into()] {
        expect_code(
            rt.clone()
                .create_container(api::CreateContainerRequest {
                    pod_sandbox_id: bad.clone(),
                    config: Some(s.sh_config("c", "true")),
                    sandbox_config: Some(pod.clone()),
                })
                .await,
            Code::InvalidArgument,
            &format!("CreateContainer in pod {bad:?}"),
        );
    }
    assert_unchanged(&s, &before, "CreateContainer with malformed pod ids");

    let done = s
        .run_container(&pod_id, &pod, &s.sh_config("done", "true"))
        .await;
    s.wait_exited(&done).await;
    expect_code(
        s.exec_sync(&done, &["true"], 0).await,
        Code::FailedPrecondition,
        "ExecSync in an exited container",
    );
    for round in 0..2 {
        rt.clone()
            .stop_container(api::StopContainerRequest {
                container_id: done.clone(),
                timeout: 0,
            })
            .await
            .unwrap_or_else(|e| panic!("StopContainer #{round}: {}", show(&e)));
        rt.clone()
            .remove_container(api::RemoveContainerRequest {
                container_id: done.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemoveContainer #{round}: {}", show(&e)));
    }
    s.stop_and_remove_pod(&pod_id).await;
    assert_alive(&s).await;
    assert_no_leftovers(&s);
}
