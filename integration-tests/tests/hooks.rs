//! Lifecycle hooks: order, argv/env, the state JSON on stdin, timeouts and failures.
//!
//! Every hook appends its name to `<dir>/order` and saves its stdin to
//! `<dir>/<name>.json`, where `<dir>` is a host directory that is also bind-mounted at
//! the *same path* inside the container, so the hook finds it whether it runs in the
//! host's or the container's mount namespace, before or after pivot_root.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::*;

const T10: Duration = Duration::from_secs(10);

const ALL: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

fn hook(name: &str, dir: &Path) -> Value {
    let d = dir.display();
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c",
                 format!("cat > {d}/{name}.json; echo \"$0 $1 $HOOKVAR\" > {d}/{name}.argv; echo {name} >> {d}/order"),
                 format!("{name}-arg0"), "arg1"],
        "env": [format!("HOOKVAR=env-{name}"), "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    })
}

/// A container with all six hooks and the log dir mounted at the same path.
fn hooked(env: &TestEnv) -> (Ctr<'_>, PathBuf) {
    let mut c = env.container();
    let dir = env.mkdir(&format!("hooklog-{}", c.id));
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    c.add_mount(
        json!({"destination": dir.display().to_string(), "type": "bind",
                       "source": dir.display().to_string(), "options": ["rbind", "rw"]}),
    );
    let mut hooks = json!({});
    for h in ALL {
        hooks[h] = json!([hook(h, &dir)]);
    }
    c.config_mut()["hooks"] = hooks;
    c.config_mut()["annotations"] = json!({"org.rrun.hooks": "yes"});
    (c, dir)
}

fn order(dir: &Path) -> Vec<String> {
    let all: Vec<String> = fs::read_to_string(dir.join("order"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    if !is_runc() {
        return all;
    }
    // runc 1.1 runs poststart hooks at the end of `create` instead of during `start`
    // (fixed in runc 1.2), so for runc poststart's position is not checked; it is
    // reported last once the others are done (it must still run exactly once).
    let post = all.iter().filter(|h| *h == "poststart").count();
    assert!(post <= 1, "poststart ran {post} times: {all:?}");
    let mut v: Vec<String> = all.into_iter().filter(|h| h != "poststart").collect();
    if post == 1 && v.iter().any(|h| h == "startContainer") {
        let at = v.iter().position(|h| h == "startContainer").unwrap() + 1;
        v.insert(at, "poststart".into());
    }
    v
}

fn state_of(dir: &Path, name: &str) -> Value {
    let text = fs::read_to_string(dir.join(format!("{name}.json")))
        .unwrap_or_else(|e| panic!("{name} hook wrote no state: {e}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{name} hook stdin is not JSON ({e}): {text:?}"))
}

/// The status the runtime-spec says each hook sees.
fn spec_status(name: &str) -> &'static str {
    match name {
        "prestart" | "createRuntime" | "createContainer" => "creating",
        "startContainer" => "created",
        "poststart" => "running",
        "poststop" => "stopped",
        _ => unreachable!(),
    }
}

#[test]
fn hooks_run_in_order_with_state_on_stdin() {
    let env = TestEnv::new("hooksorder");
    let (mut c, dir) = hooked(&env);
    c.sh(&format!(
        "echo user-process >> {}/order; sleep 1000",
        dir.display()
    ));

    c.create();
    assert_eq!(
        order(&dir),
        ["prestart", "createRuntime", "createContainer"]
    );
    let pid = c.pid() as i64;

    c.start().ok();
    wait_for(
        T10,
        || order(&dir).len() >= 6,
        "hooks of start and the process",
    );
    let o = order(&dir);
    assert_eq!(o[..3], ["prestart", "createRuntime", "createContainer"]);
    assert_eq!(o[3], "startContainer", "{o:?}");
    // poststart runs after the process started; the two may race.
    let mut rest = o[4..].to_vec();
    rest.sort();
    assert_eq!(rest, ["poststart", "user-process"], "{o:?}");

    c.kill("KILL").ok();
    c.wait_status("stopped", T10);
    c.delete().ok();
    let o = order(&dir);
    assert_eq!(o.last().map(String::as_str), Some("poststop"), "{o:?}");
    assert_eq!(o.len(), 7, "each hook ran once: {o:?}");

    for name in ALL {
        let st = state_of(&dir, name);
        assert_eq!(st["id"], c.id.as_str(), "{name}: {st}");
        assert!(st["ociVersion"].is_string(), "{name}: {st}");
        assert_eq!(
            Path::new(st["bundle"].as_str().unwrap_or_default()),
            c.path(),
            "{name}: {st}"
        );
        let in_container = matches!(name, "createContainer" | "startContainer");
        if is_runc() && in_container {
            // runc 1.1 reports the pid as seen from inside the container (1) to the
            // hooks it runs from the container's init.
            assert!(
                [Some(1), Some(pid)].contains(&st["pid"].as_i64()),
                "{name}: {st}"
            );
        } else if name != "poststop" {
            assert_eq!(st["pid"].as_i64(), Some(pid), "{name}: {st}");
        }
        let status = st["status"].as_str().unwrap_or_default();
        eprintln!("{name}: status {status:?} pid {}", st["pid"]);
        if is_runc() {
            // runc 1.1 runs poststart during create and passes it "created"; only
            // check it is a valid status.
            assert!(
                ["creating", "created", "running", "stopped"].contains(&status),
                "{name}: {st}"
            );
        } else {
            assert_eq!(status, spec_status(name), "{name}: {st}");
        }
        assert_eq!(st["annotations"]["org.rrun.hooks"], "yes", "{name}: {st}");
        let argv = fs::read_to_string(dir.join(format!("{name}.argv"))).unwrap();
        assert_eq!(
            argv.trim(),
            format!("{name}-arg0 arg1 env-{name}"),
            "{name} argv/env"
        );
    }
}

#[test]
fn hooks_of_run() {
    let env = TestEnv::new("hooksrun");
    let (mut c, dir) = hooked(&env);
    c.sh(&format!("echo user-process >> {}/order", dir.display()));
    c.run().ok();
    let o = order(&dir);
    assert_eq!(
        o[..4],
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer"
        ],
        "{o:?}"
    );
    assert_eq!(o.last().map(String::as_str), Some("poststop"), "{o:?}");
    assert_eq!(o.len(), 7, "{o:?}");
    env.assert_nothing_left(&c.id, c.path());
}

fn assert_create_failed_cleanly(env: &TestEnv, c: &Ctr<'_>, out: &Output) {
    out.failed();
    assert!(
        out.stderr.to_lowercase().contains("hook"),
        "the error should mention the hook: {out}"
    );
    env.assert_nothing_left(&c.id, c.path());
    assert!(env.list_json().is_empty(), "list is not empty");
    assert!(env.rt(["state", &c.id]).status.code() != Some(0));
}

#[test]
fn failing_create_runtime_hook_fails_create() {
    let env = TestEnv::new("hookfail");
    let mut c = env.container();
    let marker = env.dir().join("ran");
    c.sh(&format!("touch {}", marker.display()));
    c.config_mut()["hooks"] = json!({
        "createRuntime": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", "echo hook-says-no >&2; exit 3"],
            "env": [format!("RRUN_TEST_ID={}", c.id)]
        }]
    });
    let out = c.create_cmd(&[]).run();
    assert_create_failed_cleanly(&env, &c, &out);
    // `run` fails the same way, and the process never ran.
    let out = c.run();
    assert_create_failed_cleanly(&env, &c, &out);
    assert!(!marker.exists());
}

#[test]
fn hook_timeout_fails_create() {
    let env = TestEnv::new("hooktimeout");
    let mut c = env.container();
    c.set_args(["true"]);
    c.config_mut()["hooks"] = json!({
        "createRuntime": [{
            "path": "/bin/sleep",
            "args": ["sleep", "1000"],
            "env": [format!("RRUN_TEST_ID={}", c.id)],
            "timeout": 1
        }]
    });
    let t0 = Instant::now();
    let out = c.create_cmd(&[]).run();
    let took = t0.elapsed();
    // Far below the hook's 1000 s even when scaled for the emulated VM pass.
    assert!(
        took < scaled(Duration::from_secs(15)),
        "create took {took:?} with a 1 s hook timeout"
    );
    assert!(
        took >= Duration::from_millis(900),
        "create failed before the timeout: {took:?}"
    );
    // The sleeping hook (which carries the id in its env) is gone too.
    assert_create_failed_cleanly(&env, &c, &out);
}

#[test]
fn missing_hook_binary_fails_create() {
    let env = TestEnv::new("hookmissing");
    let mut c = env.container();
    c.set_args(["true"]);
    c.config_mut()["hooks"] = json!({
        "createRuntime": [{"path": "/nonexistent/hook", "args": ["hook"]}]
    });
    let out = c.create_cmd(&[]).run();
    out.failed();
    env.assert_nothing_left(&c.id, c.path());
    assert!(env.list_json().is_empty());
}

#[test]
fn failing_poststop_hook_is_a_warning() {
    let env = TestEnv::new("hookpost");
    let mut c = env.container();
    c.set_args(["sleep", "1000"]);
    c.config_mut()["hooks"] = json!({
        "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 1"]}]
    });
    c.create_and_start();
    c.kill("KILL").ok();
    c.wait_status("stopped", T10);
    // runtime-spec: a failing poststop hook is logged as a warning, the remaining hooks
    // and the lifecycle continue.
    let out = c.delete();
    out.ok();
    assert!(
        !out.stderr.trim().is_empty(),
        "the hook failure is logged: {out}"
    );
    env.assert_nothing_left(&c.id, c.path());
}

/// runtime-spec: a failing poststart or poststop hook is logged as a warning, and the
/// remaining hooks and the lifecycle go on. runc 1.1 differs: it stops at the first failing
/// hook and fails the operation (and runs poststart during `create`, which then fails and
/// destroys the container), so the case is checked against runc for that, not for parity.
#[test]
fn failing_poststart_and_poststop_hooks_warn_and_the_rest_run() {
    let env = TestEnv::new("hookwarn");
    let mut c = env.container();
    let dir = env.mkdir(&format!("hookwarn-{}", c.id));
    c.set_args(["sleep", "1000"]);
    let mark = |name: &str, code: i32| {
        json!({"path": "/bin/sh",
               "args": ["sh", "-c", format!("echo {name} >> {}/order; exit {code}", dir.display())]})
    };
    c.config_mut()["hooks"] = json!({
        "poststart": [mark("poststart-1", 1), mark("poststart-2", 0)],
        "poststop": [mark("poststop-1", 1), mark("poststop-2", 0)],
    });
    if is_runc() {
        let out = c.create_cmd(&[]).run();
        out.failed();
        assert_eq!(order(&dir), ["poststart-1", "poststop-1"], "{out}");
        env.assert_nothing_left(&c.id, c.path());
        return;
    }
    c.create();
    let out = c.start();
    out.ok();
    assert!(out.stderr.contains("warning"), "{out}");
    assert_eq!(c.status().as_deref(), Some("running"));
    assert_eq!(order(&dir), ["poststart-1", "poststart-2"]);
    c.kill("KILL").ok();
    c.wait_status("stopped", T10);
    let out = c.delete();
    out.ok();
    assert!(out.stderr.contains("warning"), "{out}");
    assert_eq!(
        order(&dir),
        ["poststart-1", "poststart-2", "poststop-1", "poststop-2"]
    );
    env.assert_nothing_left(&c.id, c.path());
}
