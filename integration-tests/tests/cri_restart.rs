//! `cri_restart`: the CRI server keeps no state only in memory. `kill -9` it while a pod
//! runs, start it again on the same dirs: pods and containers are listed with the right
//! states, a running container was never interrupted (same pid), one that exited while
//! the server was down shows its real exit code, logs kept flowing into the same file,
//! and everything can still be stopped and removed.

use std::time::Duration;

use integration_tests::cri::*;

const T30: Duration = Duration::from_secs(30);

fn tick_numbers(path: &std::path::Path) -> Vec<i64> {
    parse_cri_log(&read_log(path))
        .iter()
        .filter_map(|l| l.text.strip_prefix("tick-").and_then(|n| n.parse().ok()))
        .collect()
}

#[tokio::test]
async fn kill9_and_restart_keeps_pods_containers_and_logs() {
    let (s, pod, pod_id) = CriServer::with_busybox_pod("restart").await;

    let long = s.sh_config(
        "long",
        "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done",
    );
    let long_id = s.run_container(&pod_id, &pod, &long).await;
    // Exits while the server is down: it waits for a file the test creates then.
    let short = s.sh_config(
        "short",
        "echo short-started; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo short-done; exit 4",
    );
    let short_id = s.run_container(&pod_id, &pod, &short).await;
    let done = s.sh_config("done", "echo finished-before; exit 0");
    let done_id = s.run_container(&pod_id, &pod, &done).await;
    let created_id = s
        .create_container(
            &pod_id,
            &pod,
            &s.sh_config("later", "echo started-after-restart"),
        )
        .await;
    let long_log = CriServer::log_path(&pod, &long);
    wait_log_line(&long_log, "tick-3", T30).await;
    wait_log_line(&CriServer::log_path(&pod, &short), "short-started", T30).await;
    let done_st = s.wait_exited(&done_id).await;
    assert_eq!(done_st.exit_code, 0);
    let long_pid = s.container_pid(&long_id).await;
    let short_pid = s.container_pid(&short_id).await;
    let long_started = s.container_status(&long_id).await.started_at;

    s.kill9();

    // While the server is down: the short container exits, the long one keeps logging.
    std::fs::write(format!("/proc/{short_pid}/root/tmp/go"), "").expect("releasing short");
    wait_until(
        T30,
        "the short container to exit while the server is down",
        || !pid_alive(short_pid),
    )
    .await;
    let before = *tick_numbers(&long_log).last().expect("ticks");
    wait_until(T30, "ticks logged while the server is down", || {
        tick_numbers(&long_log).last().copied().unwrap_or(0) > before + 3
    })
    .await;
    assert!(
        pid_alive(long_pid),
        "the long container died with the server"
    );

    s.restart().await;

    let pods = s.list_pods(None).await;
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].id, pod_id);
    assert_eq!(pods[0].state, api::PodSandboxState::SandboxReady as i32);
    assert_eq!(pods[0].labels, pod.labels);

    let st = s.container_status(&long_id).await;
    assert_eq!(
        st.state,
        api::ContainerState::ContainerRunning as i32,
        "long after restart: {st:?}"
    );
    assert_eq!(
        st.started_at, long_started,
        "started_at changed across the restart"
    );
    assert_eq!(
        s.container_pid(&long_id).await,
        long_pid,
        "long's pid changed"
    );
    assert_eq!(st.labels, long.labels);
    assert_eq!(st.annotations, long.annotations);

    let st = s.container_status(&short_id).await;
    assert_eq!(
        st.state,
        api::ContainerState::ContainerExited as i32,
        "short after restart: {st:?}"
    );
    assert_eq!(st.exit_code, 4, "short's real exit code: {st:?}");
    assert_eq!(st.reason, "Error");
    assert!(
        st.finished_at >= st.started_at && st.finished_at > 0,
        "{st:?}"
    );
    wait_log_line(&CriServer::log_path(&pod, &short), "short-done", T30).await;

    let st = s.container_status(&done_id).await;
    assert_eq!(st.state, api::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 0);
    assert_eq!(st.reason, "Completed");
    assert_eq!(
        st.finished_at, done_st.finished_at,
        "finished_at changed across the restart"
    );

    let st = s.container_status(&created_id).await;
    assert_eq!(
        st.state,
        api::ContainerState::ContainerCreated as i32,
        "created container after restart: {st:?}"
    );
    let listed = s.list_containers(api::ContainerFilter::default()).await;
    assert_eq!(listed.len(), 4, "{listed:?}");

    // Logs keep flowing into the same file, without a gap or a repeat.
    let now = *tick_numbers(&long_log).last().expect("ticks");
    wait_until(T30, "ticks after the restart", || {
        tick_numbers(&long_log).last().copied().unwrap_or(0) > now + 3
    })
    .await;
    let ticks = tick_numbers(&long_log);
    let want: Vec<i64> = (0..ticks.len() as i64).collect();
    assert_eq!(ticks, want, "the log lost or repeated lines");

    // The restarted server still drives everything.
    assert_eq!(s.exec_ok(&long_id, &["hostname"]).await.trim(), "p");
    s.start_container(&created_id).await;
    let st = s.wait_exited(&created_id).await;
    assert_eq!(st.exit_code, 0);
    wait_log_line(
        &CriServer::log_path(&pod, &s.sh_config("later", "")),
        "started-after-restart",
        T30,
    )
    .await;
    s.stop_container(&long_id, 1).await;
    let st = s.container_status(&long_id).await;
    assert_eq!(st.state, api::ContainerState::ContainerExited as i32);
    assert!(!pid_alive(long_pid), "long alive after StopContainer");
    for c in [&long_id, &short_id, &done_id, &created_id] {
        s.remove_container(c).await;
    }
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn restart_keeps_images() {
    let s = CriServer::start("restartimg").await;
    let id = s.import_busybox();
    s.restart().await;
    let st = s
        .images()
        .image_status(api::ImageStatusRequest {
            image: Some(image_spec(BUSYBOX)),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus after restart: {}", show(&e)))
        .into_inner();
    let img = st.image.expect("the image is gone after a restart");
    assert_eq!(
        img.id.trim_start_matches("sha256:"),
        id.trim_start_matches("sha256:")
    );
    // And it still runs containers.
    let pod = s.pod_config("p");
    let pod_id = s.run_pod(&pod).await;
    let c = s
        .run_container(&pod_id, &pod, &s.sh_config("c", "true"))
        .await;
    assert_eq!(s.wait_exited(&c).await.exit_code, 0);
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn pod_removed_after_restart_leaves_nothing() {
    let (s, pod, pod_id) = CriServer::with_busybox_pod("restartrm").await;
    let c = s
        .run_container(&pod_id, &pod, &s.sh_config("c", "exec sleep 1000"))
        .await;
    s.wait_state(&c, api::ContainerState::ContainerRunning, T30)
        .await;
    let pid = s.container_pid(&c).await;
    s.kill9();
    s.restart().await;
    // Straight to RemovePodSandbox: it must kill and remove the running container.
    s.runtime()
        .remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox after restart: {}", show(&e)));
    assert!(!pid_alive(pid), "container alive after RemovePodSandbox");
    assert!(s.list_pods(None).await.is_empty());
    assert!(s
        .list_containers(api::ContainerFilter::default())
        .await
        .is_empty());
    assert_no_leftovers(&s);
}

/// The harness's guard cleans up after a server killed with its pod still running (what
/// a failing test leaves): no process, mount, cgroup or dir survives the drop.
#[tokio::test]
async fn guard_cleans_up_after_a_killed_server() {
    let (s, pod, pod_id) = CriServer::with_busybox_pod("guard").await;
    let c = s
        .run_container(&pod_id, &pod, &s.sh_config("c", "exec sleep 1000"))
        .await;
    s.wait_state(&c, api::ContainerState::ContainerRunning, T30)
        .await;
    let pid = s.container_pid(&c).await;
    let dir = s.dir().to_path_buf();
    let cgroups = integration_tests::cgroup_dirs(s.cgroup_parent());
    assert!(
        cgroups.iter().any(|d| d.is_dir()),
        "no cgroup of the pod under {}",
        s.cgroup_parent()
    );
    s.kill9();
    drop(s);
    assert!(!pid_alive(pid), "container {pid} survived the guard");
    assert!(
        integration_tests::mounts_under(&dir).is_empty(),
        "mounts left under {}",
        dir.display()
    );
    assert!(!dir.exists(), "{} left", dir.display());
    let left: Vec<_> = cgroups.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
}

/// A server killed in the middle of CreateContainer (wherever the kill lands) leaves
/// nothing that survives the pod's removal by the restarted server.
#[tokio::test]
async fn kill9_during_create_container_leaves_nothing_after_the_pod_is_removed() {
    let s = CriServer::start("killcreate").await;
    s.import_busybox();
    for (round, delay_ms) in [0u64, 5, 20, 60, 150].into_iter().enumerate() {
        let pod = s.pod_config(&format!("p{round}"));
        let pod_id = s.run_pod(&pod).await;
        let cfg = s.sh_config("c", "exec sleep 1000");
        let mut rt = s.runtime();
        let req = api::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(cfg),
            sandbox_config: Some(pod.clone()),
        };
        let create = tokio::spawn(async move { rt.create_container(req).await });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        s.kill9();
        let _ = create.await;
        s.restart().await;
        // Whatever the restarted server knows of the container goes with the pod.
        s.stop_and_remove_pod(&pod_id).await;
        assert!(
            s.list_containers(api::ContainerFilter::default())
                .await
                .is_empty(),
            "round {round}: containers listed after the pod's removal"
        );
        assert_no_leftovers(&s);
    }
}

/// A container running across a restart still produces its STOPPED event when it ends
/// (the kubelet's evented PLEG waits for it).
#[tokio::test]
async fn events_for_a_container_that_exits_after_a_restart() {
    let (s, pod, pod_id) = CriServer::with_busybox_pod("restartev").await;
    let cfg = s.sh_config(
        "waiter",
        "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 5",
    );
    let c = s.run_container(&pod_id, &pod, &cfg).await;
    s.wait_state(&c, api::ContainerState::ContainerRunning, T30)
        .await;
    let pid = s.container_pid(&c).await;
    s.restart().await;
    let mut stream = s.container_events().await;
    std::fs::write(format!("/proc/{pid}/root/tmp/go"), "").expect("releasing the container");
    let deadline = std::time::Instant::now() + integration_tests::scaled(T30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(ev))) => {
                if ev.container_id == c
                    && ev.container_event_type
                        == api::ContainerEventType::ContainerStoppedEvent as i32
                {
                    break;
                }
            }
            Ok(Ok(None)) => panic!("the event stream ended"),
            Ok(Err(e)) => panic!("the event stream failed: {}", show(&e)),
            Err(_) => panic!(
                "no STOPPED event for a container that exited after the restart (within {:?})",
                integration_tests::scaled(T30)
            ),
        }
    }
    let st = s.container_status(&c).await;
    assert_eq!(st.exit_code, 5, "{st:?}");
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}
