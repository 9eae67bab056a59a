//! The harness itself: a hung runtime fails the test instead of hanging it, and the
//! guard cleans up containers, processes, cgroups and temp dirs even after a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::*;

fn assert_all_gone(id: &str, dir: &Path) {
    wait_for(
        Duration::from_secs(10),
        || pids_with_env(id).is_empty(),
        "container processes gone",
    );
    assert!(!dir.exists(), "temp dir {} left", dir.display());
    for cg in cgroup_dirs(&format!("{CGROUP_PARENT}/{id}")) {
        assert!(!cg.exists(), "cgroup {} left", cg.display());
    }
}

#[test]
fn hung_invocation_fails_instead_of_hanging() {
    let env = TestEnv::new("hung");
    let mut c = env.container();
    c.set_args(["sleep", "1000"]);
    let t0 = Instant::now();
    let res = catch_unwind(AssertUnwindSafe(|| {
        c.run_cmd(&[]).timeout(Duration::from_secs(2)).run()
    }));
    let err = res.expect_err("a `run` of sleep 1000 cannot finish within 2 s");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(msg.contains("runtime hung"), "{msg}");
    assert!(t0.elapsed() < scaled(Duration::from_secs(10)));
    let id = c.id.clone();
    let dir = env.dir().to_path_buf();
    drop(c);
    drop(env);
    assert_all_gone(&id, &dir);
}

#[test]
fn guard_cleans_up_after_a_panic() {
    let (tx, rx) = std::sync::mpsc::channel();
    let res = std::thread::spawn(move || {
        let env = TestEnv::new("panicky");
        let mut c = env.container();
        c.set_args(["sleep", "1000"]);
        c.create_and_start();
        let mut d = env.container();
        d.set_args(["sleep", "1000"]);
        d.create();
        tx.send((vec![c.id.clone(), d.id.clone()], env.dir().to_path_buf()))
            .unwrap();
        panic!("test failure with live containers");
    })
    .join();
    assert!(res.is_err());
    let (ids, dir) = rx.recv().unwrap();
    for id in &ids {
        assert_all_gone(id, &dir);
    }
}
