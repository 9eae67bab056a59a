//! The runtime side of CNI (what libcni does for containerd): executing plugins per the
//! specification (the `CNI_*` environment, the configuration on stdin, the result or error
//! on stdout), chaining a list's plugins through `prevResult` on ADD and undoing them in
//! reverse on DEL, injecting the capability arguments a plugin declares into its
//! `runtimeConfig`, choosing the version with `VERSION`, and a timeout on every call.
//!
//! Written here rather than taken from a crate: the Rust CNI crates are for writing
//! plugins (`cni-plugin`, `rscni`); the one runtime-side crate (`rust-cni`, 0.1) has no
//! result cache, no timeout and no capability arguments, and is young and thinly
//! maintained. The runtime side is small: a process call and some JSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Map, Value};

use super::types::{version_cmp, CniErrorReply, ConfList, VersionReply, SUPPORTED_VERSIONS};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("CNI plugin {typ:?} not found in {dirs}")]
    NotFound { typ: String, dirs: String },
    #[error("starting CNI plugin {}: {source}", plugin.display())]
    Spawn {
        plugin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin type={typ:?} ({command}) did not answer within {secs} s: killed")]
    Timeout {
        typ: String,
        command: String,
        secs: u64,
    },
    /// The plugin's own message, in libcni's words.
    #[error("plugin type={typ:?} failed ({command}): {msg}")]
    Failed {
        typ: String,
        command: String,
        msg: String,
    },
}

/// What every call of one pod's network shares.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub container_id: &'a str,
    /// Empty on DEL when the namespace is gone (plugins then release what they can).
    pub netns: &'a str,
    pub ifname: &'a str,
    /// `CNI_ARGS` (`K=V;K=V`).
    pub args: &'a str,
    pub bin_dirs: &'a [PathBuf],
    pub timeout: Duration,
}

/// The first `bin_dirs` entry holding an executable file named `typ`.
pub fn find_plugin(bin_dirs: &[PathBuf], typ: &str) -> Result<PathBuf, ExecError> {
    use std::os::unix::fs::PermissionsExt;
    bin_dirs
        .iter()
        .map(|d| d.join(typ))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| ExecError::NotFound {
            typ: typ.to_string(),
            dirs: join_paths(bin_dirs),
        })
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs one plugin command; its stdout on success.
fn invoke(typ: &str, command: &str, call: &Call<'_>, stdin: &[u8]) -> Result<Vec<u8>, ExecError> {
    let plugin = find_plugin(call.bin_dirs, typ)?;
    let mut cmd = Command::new(&plugin);
    cmd.env("CNI_COMMAND", command)
        .env("CNI_PATH", join_paths(call.bin_dirs))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if command != "VERSION" {
        cmd.env("CNI_CONTAINERID", call.container_id)
            .env("CNI_NETNS", call.netns)
            .env("CNI_IFNAME", call.ifname)
            .env("CNI_ARGS", call.args);
    }
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        plugin: plugin.clone(),
        source,
    })?;
    let pid = child.id();
    // Written from a thread: a plugin that does not read must not block us past the
    // timeout (the pipe holds 64 KiB; a config is smaller, but nothing promises it).
    if let Some(mut input) = child.stdin.take() {
        let data = stdin.to_vec();
        std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(call.timeout) {
        Ok(r) => r.map_err(|source| ExecError::Spawn {
            plugin: plugin.clone(),
            source,
        })?,
        Err(_) => {
            // Not reaped yet (the waiter still waits), so the pid is still the plugin's.
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(ExecError::Timeout {
                typ: typ.to_string(),
                command: command.to_lowercase(),
                secs: call.timeout.as_secs(),
            });
        }
    };
    if out.status.success() {
        return Ok(out.stdout);
    }
    let msg = match serde_json::from_slice::<CniErrorReply>(&out.stdout) {
        Ok(e) if !e.msg.is_empty() => {
            if e.details.is_empty() {
                e.msg
            } else {
                format!("{}; {}", e.msg, e.details)
            }
        }
        _ => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let text = if stderr.trim().is_empty() {
                stdout.trim().to_string()
            } else {
                stderr.trim().to_string()
            };
            format!("{} ({text})", out.status)
        }
    };
    Err(ExecError::Failed {
        typ: typ.to_string(),
        command: command.to_lowercase(),
        msg,
    })
}

/// Plugin `i`'s stdin: its config with the list's name and the chosen version, the
/// previous result, and the capability arguments it declares (libcni's buildOneConfig).
fn plugin_config(
    list: &ConfList,
    i: usize,
    version: &str,
    prev: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Vec<u8> {
    let mut conf = list.plugins[i].clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(version.to_string()));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let runtime: Map<String, Value> = list
        .capabilities(i)
        .into_iter()
        .filter_map(|cap| capability_args.get(&cap).map(|v| (cap, v.clone())))
        .collect();
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    serde_json::to_vec(&conf).unwrap_or_default()
}

/// ADD through the list: each plugin gets the previous one's result; the last result is
/// the network's. On an error, the results so far are returned with it (for the DEL).
pub fn add_list(
    list: &ConfList,
    version: &str,
    call: &Call<'_>,
    capability_args: &Map<String, Value>,
) -> Result<Value, (ExecError, Option<Value>)> {
    let mut prev: Option<Value> = None;
    for i in 0..list.plugins.len() {
        let typ = list.plugin_type(i);
        let stdin = plugin_config(list, i, version, prev.as_ref(), capability_args);
        let out = invoke(typ, "ADD", call, &stdin).map_err(|e| (e, prev.clone()))?;
        let result: Value = serde_json::from_slice(&out).map_err(|e| {
            (
                ExecError::Failed {
                    typ: typ.to_string(),
                    command: "add".into(),
                    msg: format!("its result is not JSON: {e}"),
                },
                prev.clone(),
            )
        })?;
        prev = Some(result);
    }
    prev.ok_or_else(|| {
        (
            ExecError::Failed {
                typ: String::new(),
                command: "add".into(),
                msg: "the list has no plugins".into(),
            },
            None,
        )
    })
}

/// DEL through the list in reverse, each plugin given the cached result (from 0.4.0 on).
/// Every plugin is called even when one fails; the first error is returned.
pub fn del_list(
    list: &ConfList,
    version: &str,
    call: &Call<'_>,
    capability_args: &Map<String, Value>,
    cached: Option<&Value>,
) -> Result<(), ExecError> {
    let prev = cached.filter(|_| version_cmp(version, "0.4.0").is_ge());
    let mut first_err = None;
    for i in (0..list.plugins.len()).rev() {
        let stdin = plugin_config(list, i, version, prev, capability_args);
        if let Err(e) = invoke(list.plugin_type(i), "DEL", call, &stdin) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The version to use the list at: the highest of its `cniVersions` (else its
/// `cniVersion`) that this runtime and every plugin support, as each answers VERSION.
pub fn negotiate(
    list: &ConfList,
    bin_dirs: &[PathBuf],
    timeout: Duration,
) -> Result<String, String> {
    let mut candidates: Vec<String> = if list.cni_versions.is_empty() {
        vec![list.cni_version.clone()]
    } else {
        list.cni_versions.clone()
    };
    candidates.retain(|v| !v.is_empty());
    if candidates.is_empty() {
        return Err(format!("{}: no \"cniVersion\"", list.source.display()));
    }
    let ours: Vec<String> = candidates
        .iter()
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .cloned()
        .collect();
    if ours.is_empty() {
        return Err(format!(
            "{}: CNI version {} is not supported (this runtime speaks {})",
            list.source.display(),
            candidates.join(", "),
            SUPPORTED_VERSIONS.join(", ")
        ));
    }
    let call = Call {
        container_id: "",
        netns: "",
        ifname: "",
        args: "",
        bin_dirs,
        timeout,
    };
    let mut usable = ours;
    let mut seen = std::collections::HashSet::new();
    for i in 0..list.plugins.len() {
        let typ = list.plugin_type(i);
        if !seen.insert(typ.to_string()) {
            continue;
        }
        let probe = serde_json::json!({ "cniVersion": usable.last().cloned().unwrap_or_default() });
        let out = invoke(typ, "VERSION", &call, probe.to_string().as_bytes())
            .map_err(|e| format!("{}: {e}", list.source.display()))?;
        let reply: VersionReply = serde_json::from_slice(&out).map_err(|e| {
            format!(
                "{}: plugin {typ:?} answered VERSION with no version list: {e}",
                list.source.display()
            )
        })?;
        let before = usable.clone();
        usable.retain(|v| reply.supported_versions.contains(v));
        if usable.is_empty() {
            return Err(format!(
                "{}: plugin {typ:?} supports CNI versions {}, not {}",
                list.source.display(),
                reply.supported_versions.join(", "),
                before.join(", ")
            ));
        }
    }
    usable.sort_by(|a, b| version_cmp(a, b));
    usable
        .pop()
        .ok_or_else(|| format!("{}: no usable CNI version", list.source.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_plugin_gets_name_version_prev_result_and_only_its_capabilities() {
        let list = super::super::conf::parse_list(
            br#"{"name":"net","cniVersion":"1.0.0","plugins":[
                {"type":"bridge","bridge":"b0"},
                {"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}"#,
            Path::new("f"),
        )
        .expect("parse")
        .expect("list");
        let mut caps = Map::new();
        caps.insert("portMappings".into(), serde_json::json!([{"hostPort": 1}]));
        caps.insert(
            "dns".into(),
            serde_json::json!({"nameservers": ["1.1.1.1"]}),
        );
        let prev = serde_json::json!({"cniVersion": "1.0.0", "ips": []});
        let first: Value =
            serde_json::from_slice(&plugin_config(&list, 0, "1.0.0", None, &caps)).expect("json");
        assert_eq!(
            first,
            serde_json::json!({"type":"bridge","bridge":"b0","name":"net","cniVersion":"1.0.0"})
        );
        let second: Value =
            serde_json::from_slice(&plugin_config(&list, 1, "1.0.0", Some(&prev), &caps))
                .expect("json");
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["snat"], true);
        assert_eq!(
            second["runtimeConfig"],
            serde_json::json!({"portMappings": [{"hostPort": 1}]})
        );
    }

    /// Plugins as shell scripts in a temp dir: real processes, the spec's interface.
    fn plugins(scripts: &[(&str, &str)]) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        for (name, body) in scripts {
            let p = d.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write plugin");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        d
    }

    fn list(text: &str) -> ConfList {
        super::super::conf::parse_list(text.as_bytes(), Path::new("t.conflist"))
            .expect("parse")
            .expect("list")
    }

    #[test]
    fn add_chains_results_and_del_runs_in_reverse_with_the_cached_result() {
        let d = plugins(&[
            // Records its environment and stdin, answers a result naming itself.
            (
                "one",
                r#"cat > "$0.$CNI_COMMAND.in"; env | grep ^CNI_ | sort > "$0.$CNI_COMMAND.env"
                   echo "$0" >> "${0%/*}/order"
                   echo '{"cniVersion":"1.0.0","ips":[{"address":"10.9.9.9/24"}]}'"#,
            ),
            (
                "two",
                r#"cat > "$0.$CNI_COMMAND.in"; echo "$0" >> "${0%/*}/order"
                   echo '{"cniVersion":"1.0.0","ips":[{"address":"10.9.9.10/24"}]}'"#,
            ),
        ]);
        let l =
            list(r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"one"},{"type":"two"}]}"#);
        let dirs = [PathBuf::from("/nonexistent"), d.path().to_path_buf()];
        let call = Call {
            container_id: "c1",
            netns: "/run/netns/x",
            ifname: "eth0",
            args: "K8S_POD_NAME=p",
            bin_dirs: &dirs,
            timeout: Duration::from_secs(30),
        };
        let result = add_list(&l, "1.0.0", &call, &Map::new()).expect("add");
        assert_eq!(result["ips"][0]["address"], "10.9.9.10/24");
        let read = |f: &str| std::fs::read_to_string(d.path().join(f)).expect(f);
        let two_in: Value = serde_json::from_str(&read("two.ADD.in")).expect("json");
        assert_eq!(two_in["prevResult"]["ips"][0]["address"], "10.9.9.9/24");
        let env = read("one.ADD.env");
        for want in [
            "CNI_COMMAND=ADD",
            "CNI_CONTAINERID=c1",
            "CNI_NETNS=/run/netns/x",
            "CNI_IFNAME=eth0",
            "CNI_ARGS=K8S_POD_NAME=p",
        ] {
            assert!(env.contains(want), "{want} not in {env}");
        }
        assert!(
            env.contains(&format!("CNI_PATH=/nonexistent:{}", d.path().display())),
            "{env}"
        );
        del_list(&l, "1.0.0", &call, &Map::new(), Some(&result)).expect("del");
        let one_del: Value = serde_json::from_str(&read("one.DEL.in")).expect("json");
        assert_eq!(one_del["prevResult"], result);
        let order: Vec<String> = read("order")
            .lines()
            .map(|l| l.rsplit('/').next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(order, ["one", "two", "two", "one"]);
    }

    #[test]
    fn a_plugin_error_carries_its_message_and_a_hung_plugin_is_killed() {
        let d = plugins(&[
            (
                "failer",
                r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"no luck","details":"at all"}'; exit 1"#,
            ),
            ("crasher", "echo oops >&2; exit 2"),
            ("sleeper", "exec sleep 30"),
        ]);
        let dirs = [d.path().to_path_buf()];
        // Generous for the plugins that answer (on a loaded machine), short for the one
        // that never does.
        let add = |typ: &str, timeout: Duration| {
            let call = Call {
                container_id: "c1",
                netns: "",
                ifname: "eth0",
                args: "",
                bin_dirs: &dirs,
                timeout,
            };
            let l = list(&format!(
                r#"{{"name":"n","cniVersion":"1.0.0","plugins":[{{"type":"{typ}"}}]}}"#
            ));
            add_list(&l, "1.0.0", &call, &Map::new())
                .expect_err("must fail")
                .0
                .to_string()
        };
        assert_eq!(
            add("failer", Duration::from_secs(60)),
            r#"plugin type="failer" failed (add): no luck; at all"#
        );
        let e = add("crasher", Duration::from_secs(60));
        assert!(e.contains("failed (add)") && e.contains("oops"), "{e}");
        let e = add("sleeper", Duration::from_millis(300));
        assert!(e.contains("did not answer within"), "{e}");
    }

    #[test]
    fn the_version_is_the_highest_every_plugin_speaks() {
        let d = plugins(&[
            (
                "old",
                r#"echo '{"cniVersion":"0.4.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}'"#,
            ),
            (
                "new",
                r#"echo '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}'"#,
            ),
        ]);
        let dirs = [d.path().to_path_buf()];
        let t = Duration::from_secs(30);
        let both = list(
            r#"{"name":"n","cniVersion":"1.1.0","cniVersions":["0.4.0","1.0.0","1.1.0"],
                "plugins":[{"type":"old"},{"type":"new"}]}"#,
        );
        assert_eq!(negotiate(&both, &dirs, t), Ok("1.0.0".to_string()));
        let only_new = list(r#"{"name":"n","cniVersion":"1.1.0","plugins":[{"type":"new"}]}"#);
        assert_eq!(negotiate(&only_new, &dirs, t), Ok("1.1.0".to_string()));
        let too_new = list(r#"{"name":"n","cniVersion":"1.1.0","plugins":[{"type":"old"}]}"#);
        let e = negotiate(&too_new, &dirs, t).expect_err("old cannot 1.1.0");
        assert!(e.contains("\"old\" supports") && e.contains("1.1.0"), "{e}");
        let unknown = list(r#"{"name":"n","cniVersion":"9.9.9","plugins":[{"type":"old"}]}"#);
        assert!(negotiate(&unknown, &dirs, t).is_err());
    }

    #[test]
    fn a_missing_plugin_is_named_with_the_dirs() {
        let dirs = [
            PathBuf::from("/nonexistent/a"),
            PathBuf::from("/nonexistent/b"),
        ];
        let e = find_plugin(&dirs, "bridge")
            .expect_err("missing")
            .to_string();
        assert!(
            e.contains("\"bridge\"") && e.contains("/nonexistent/a:/nonexistent/b"),
            "{e}"
        );
    }
}
