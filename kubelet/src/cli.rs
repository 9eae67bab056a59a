//! The command line for people: a thin client of the agent's API on `<root-dir>/kubelet.sock`,
//! printing what kubectl prints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::print;
use crate::Command;

/// The error kubectl prints for a failed request, from the `metav1.Status` answer.
fn server_error(code: u16, body: &[u8]) -> anyhow::Error {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.get("kind").and_then(Value::as_str) == Some("Status") => anyhow!(
            "Error from server ({}): {}",
            v["reason"].as_str().unwrap_or("Unknown"),
            v["message"].as_str().unwrap_or("")
        ),
        _ => anyhow!(
            "Error from server: HTTP {code}: {}",
            String::from_utf8_lossy(body)
        ),
    }
}

pub(crate) struct Api {
    socket: PathBuf,
}

impl Api {
    async fn send(&self, path: &str) -> Result<hyper::Response<hyper::body::Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| {
            anyhow!(
                "The connection to the agent at {} was refused - is rrun-kubelet running with this --root-dir? ({e})",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header("host", "localhost")
            .header("accept", "application/json")
            .body(Empty::<Bytes>::new())?;
        Ok(sender.send_request(req).await?)
    }

    /// GET, the body as JSON; a Status answer becomes kubectl's error.
    pub(crate) async fn get(&self, path: &str) -> Result<Value> {
        let resp = self.send(path).await?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        if code >= 400 {
            return Err(server_error(code, &body));
        }
        serde_json::from_slice(&body).with_context(|| format!("the agent's answer to {path}"))
    }
}

pub fn run(root: &Path, cmd: &Command) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let api = Api {
        socket: root.join("kubelet.sock"),
    };
    match rt.block_on(dispatch(&api, cmd)) {
        Ok(()) => 0,
        Err(e) => {
            let msg = format!("{e:#}");
            if msg.starts_with("Error from server") {
                eprintln!("{msg}");
            } else {
                eprintln!("error: {msg}");
            }
            1
        }
    }
}

fn check_resource(r: &str) -> Result<()> {
    match r {
        "pods" | "pod" | "po" => Ok(()),
        other => bail!("the server doesn't have a resource type \"{other}\""),
    }
}

async fn dispatch(api: &Api, cmd: &Command) -> Result<()> {
    match cmd {
        Command::Get {
            resource,
            name,
            output,
            namespace,
            all_namespaces,
        } => {
            let workload = crate::print_workloads::resource(resource)
                .or_else(|| crate::print_config::resource(resource));
            if workload.is_none() {
                check_resource(resource)?;
            }
            let (group, plural) = workload.unwrap_or(("/api/v1", "pods"));
            let out = output.as_deref().unwrap_or("");
            if !["", "wide", "json", "yaml", "name"].contains(&out) {
                bail!("unable to match a printer suitable for the output format \"{out}\", allowed formats are: json,name,wide,yaml");
            }
            let (items, single) = match name {
                Some(n) => (
                    vec![
                        api.get(&format!("{group}/namespaces/{namespace}/{plural}/{n}"))
                            .await?,
                    ],
                    true,
                ),
                None => {
                    let path = if *all_namespaces {
                        format!("{group}/{plural}")
                    } else {
                        format!("{group}/namespaces/{namespace}/{plural}")
                    };
                    let list = api.get(&path).await?;
                    (list["items"].as_array().cloned().unwrap_or_default(), false)
                }
            };
            let mut stdout = std::io::stdout().lock();
            match out {
                "json" | "yaml" => {
                    let v = if single {
                        items[0].clone()
                    } else {
                        serde_json::json!({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}})
                    };
                    let text = if out == "json" {
                        print::json4(&v) + "\n"
                    } else {
                        serde_yaml_ng::to_string(&v)?
                    };
                    stdout.write_all(text.as_bytes())?;
                }
                "name" => {
                    for p in &items {
                        writeln!(
                            stdout,
                            "{}/{}",
                            crate::print_config::singular(plural)
                                .unwrap_or_else(|| crate::print_workloads::singular(plural)),
                            p["metadata"]["name"].as_str().unwrap_or("")
                        )?;
                    }
                }
                _ => {
                    if items.is_empty() {
                        if *all_namespaces {
                            eprintln!("No resources found");
                        } else {
                            eprintln!("No resources found in {namespace} namespace.");
                        }
                        return Ok(());
                    }
                    let config = crate::print_config::table(plural, &items, *all_namespaces);
                    let text = if let Some(t) = config {
                        t
                    } else if workload.is_some() {
                        crate::print_workloads::table(plural, &items, *all_namespaces)
                    } else {
                        print::pods_table(&items, out == "wide", *all_namespaces)
                    };
                    stdout.write_all(text.as_bytes())?;
                }
            }
            Ok(())
        }
        Command::Describe {
            resource,
            name,
            namespace,
        } => {
            if let Some((group, plural @ ("jobs" | "cronjobs"))) =
                crate::print_workloads::resource(resource)
            {
                let o = api
                    .get(&format!("{group}/namespaces/{namespace}/{plural}/{name}"))
                    .await?;
                let uid = o["metadata"]["uid"].as_str().unwrap_or("");
                let events = api
                    .get(&format!(
                        "/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.uid={uid}"
                    ))
                    .await?;
                print!("{}", crate::print_batch::describe(plural, &o, &events));
                return Ok(());
            }
            if let Some((group, plural)) = crate::print_stateful::resource(resource)
                .filter(|(_, p)| *p != "controllerrevisions")
            {
                let o = api
                    .get(&format!("{group}/namespaces/{namespace}/{plural}/{name}"))
                    .await?;
                let uid = o["metadata"]["uid"].as_str().unwrap_or("");
                let pods = api
                    .get(&format!("/api/v1/namespaces/{namespace}/pods"))
                    .await?;
                let events = api
                    .get(&format!(
                        "/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.uid={uid}"
                    ))
                    .await?;
                print!(
                    "{}",
                    crate::print_stateful::describe(plural, &o, &pods, &events)
                );
                return Ok(());
            }
            if let Some((_, plural)) = crate::print_config::resource(resource) {
                let o = api
                    .get(&format!("/api/v1/namespaces/{namespace}/{plural}/{name}"))
                    .await?;
                if plural == "secrets" {
                    print!("{}", crate::print_config::describe_secret(&o));
                    return Ok(());
                }
                let uid = o["metadata"]["uid"].as_str().unwrap_or("");
                let events = api
                    .get(&format!(
                        "/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.uid={uid}"
                    ))
                    .await?;
                print!("{}", crate::print_config::describe_configmap(&o, &events));
                return Ok(());
            }
            check_resource(resource)?;
            let pod = api
                .get(&format!("/api/v1/namespaces/{namespace}/pods/{name}"))
                .await?;
            let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
            let events = api
                .get(&format!(
                    "/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.uid={uid}"
                ))
                .await?;
            print!("{}", print::describe(&pod, &events));
            Ok(())
        }
        Command::Logs {
            pod,
            container,
            follow,
            previous,
            tail,
            namespace,
        } => {
            let mut q = Vec::new();
            if let Some(c) = container {
                q.push(format!("container={c}"));
            }
            if *follow {
                q.push("follow=true".into());
            }
            if *previous {
                q.push("previous=true".into());
            }
            if let Some(t) = tail.filter(|t| *t >= 0) {
                q.push(format!("tailLines={t}"));
            }
            let path = format!(
                "/api/v1/namespaces/{namespace}/pods/{pod}/log?{}",
                q.join("&")
            );
            let resp = api.send(&path).await?;
            let code = resp.status().as_u16();
            let mut body = resp.into_body();
            if code >= 400 {
                let b = body.collect().await?.to_bytes();
                return Err(server_error(code, &b));
            }
            let mut stdout = std::io::stdout();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
            }
            Ok(())
        }
        Command::Rollout {
            action,
            target,
            namespace,
            timeout,
            revision,
            to_revision,
        } => {
            let r = crate::rollout_cli::Rollout {
                action,
                target,
                namespace,
                timeout: *timeout,
                revision: *revision,
                to_revision: *to_revision,
            };
            crate::rollout_cli::rollout(api, &r).await
        }
        Command::Scale {
            target,
            replicas,
            namespace,
        } => crate::rollout_cli::scale(api, target, *replicas, namespace).await,
        Command::Apply { file } => apply(api, file).await,
        Command::Delete { file } => delete(api, file).await,
        Command::Create {
            resource,
            name,
            from,
            namespace,
        } => create_job(api, resource, name, from, namespace).await,
    }
}

/// `create job NAME --from=cronjob/CJ`: kubectl's Job of a CronJob's template (the
/// `cronjob.kubernetes.io/instantiate: manual` annotation, owned by the CronJob), written
/// as `NAME.json` into the manifest dir.
async fn create_job(api: &Api, kind: &str, name: &str, from: &str, ns: &str) -> Result<()> {
    if !matches!(kind, "job" | "jobs") {
        bail!("only \"create job NAME --from=cronjob/NAME\" is supported");
    }
    let cj = match from.split_once('/') {
        Some(("cronjob" | "cronjobs" | "cj", n)) => n,
        _ => bail!("from must be of the form cronjob/NAME"),
    };
    let c = api
        .get(&format!("/apis/batch/v1/namespaces/{ns}/cronjobs/{cj}"))
        .await?;
    let job = crate::controllers::cronjob::manual_job(&c, name).map_err(|e| anyhow!(e))?;
    let dir = manifest_dir(api).await?;
    let dest = dir.join(format!("{name}.json"));
    if dest.exists() {
        bail!("Error from server (AlreadyExists): jobs.batch \"{name}\" already exists");
    }
    crate::store::write_atomic(&dest, &serde_json::to_vec_pretty(&job)?)
        .with_context(|| format!("writing {}", dest.display()))?;
    println!("job.batch/{name} created");
    Ok(())
}

pub(crate) async fn manifest_dir(api: &Api) -> Result<PathBuf> {
    let c = api.get("/configz").await?;
    c["kubeletconfig"]["staticPodPath"]
        .as_str()
        .map(PathBuf::from)
        .context("the agent did not say where its manifests are")
}

fn target(dir: &Path, file: &Path) -> Result<PathBuf> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{}: not a file name", file.display()))?;
    if !crate::manifest::is_manifest_name(&name) {
        bail!(
            "{}: the file name must end in .yaml, .yml or .json (and not start with a dot)",
            file.display()
        );
    }
    Ok(dir.join(name))
}

/// `apply -f`: the file is validated, then written (atomically) into the manifest dir
/// under its own name.
/// `deployment.apps/web`, `service/web`: a document's name as kubectl prints it.
fn resource_name(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or("").to_lowercase();
    let group = doc["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .map(|(g, _)| format!(".{g}"))
        .unwrap_or_default();
    format!(
        "{kind}{group}/{}",
        doc["metadata"]["name"].as_str().unwrap_or("")
    )
}

async fn apply(api: &Api, file: &Path) -> Result<()> {
    // Validation first: a file that would not load changes nothing.
    crate::manifest::load_file(file).map_err(|e| anyhow!("error validating {e}"))?;
    let batch =
        crate::controllers::batch::check_file(file).map_err(|e| anyhow!("error validating {e}"))?;
    let dir = manifest_dir(api).await?;
    let dest = target(&dir, file)?;
    // A Job's template cannot change (the API server's rule).
    for (name, doc) in &batch {
        let Some(n) = name.strip_prefix("job.batch/") else {
            continue;
        };
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
        if let Ok(old) = api
            .get(&format!("/apis/batch/v1/namespaces/{ns}/jobs/{n}"))
            .await
        {
            let (Ok(old), Ok(new)) = (
                serde_json::from_value(old),
                serde_json::from_value(doc.clone()),
            ) else {
                continue;
            };
            if let Some(e) = crate::controllers::job::immutable_change(&old, &new) {
                bail!("The {}", e.replacen("Job.batch", "Job", 1));
            }
        }
    }
    // What kubectl prints: one line per document, in the file's order, against what the
    // file held before.
    let named = |path: &Path| -> Vec<(String, Value)> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        crate::manifest::documents(path, &text)
            .unwrap_or_default()
            .into_iter()
            .map(|d| (resource_name(&d), d))
            .collect()
    };
    let old = if dest.exists() {
        named(&dest)
    } else {
        Vec::new()
    };
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    crate::store::write_atomic(&dest, &data)
        .with_context(|| format!("writing {}", dest.display()))?;
    for (name, doc) in named(file) {
        let verb = match old.iter().find(|(n, _)| *n == name) {
            Some((_, d)) if *d == doc => "unchanged",
            Some(_) => "configured",
            None => "created",
        };
        println!("{name} {verb}");
    }
    Ok(())
}

/// `delete -f`: the file of the same name leaves the manifest dir; waits (as kubectl does)
/// until its pods are gone.
async fn delete(api: &Api, file: &Path) -> Result<()> {
    let pods = crate::manifest::load_file(file).map_err(|e| anyhow!("error validating {e}"))?;
    let dir = manifest_dir(api).await?;
    let dest = target(&dir, file)?;
    if !dest.exists() {
        let names: Vec<String> = pods
            .iter()
            .map(|p| {
                format!(
                    "pods \"{}\" not found",
                    p.pod.metadata.name.clone().unwrap_or_default()
                )
            })
            .collect();
        bail!(
            "Error from server (NotFound): {}",
            names.join("\nError from server (NotFound): ")
        );
    }
    let in_dir = crate::manifest::load_file(&dest).unwrap_or(pods);
    std::fs::remove_file(&dest).with_context(|| format!("removing {}", dest.display()))?;
    for p in &in_dir {
        println!(
            "pod \"{}\" deleted",
            p.pod.metadata.name.clone().unwrap_or_default()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    for p in &in_dir {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}",
            p.pod.metadata.namespace.as_deref().unwrap_or("default"),
            p.pod.metadata.name.as_deref().unwrap_or("")
        );
        loop {
            match api.get(&path).await {
                Ok(v)
                    if v["metadata"]["uid"].as_str() == Some(&p.uid)
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => break,
            }
        }
    }
    Ok(())
}

/// One step of `kubectl rollout status` for a Deployment (its `DeploymentStatusViewer`):
/// the line to print and whether the rollout is complete; an error once the Deployment says
/// its progress deadline is exceeded.
pub(crate) fn deployment_status(d: &Value) -> Result<(String, bool)> {
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    let st = &d["status"];
    let generation = |v: &Value| v.as_i64().unwrap_or(0);
    if st.is_null()
        || generation(&d["metadata"]["generation"]) > generation(&st["observedGeneration"])
    {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    let timed_out = st["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
    if timed_out {
        bail!("deployment \"{name}\" exceeded its progress deadline");
    }
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let (replicas, updated, available) = (
        n(&st["replicas"]),
        n(&st["updatedReplicas"]),
        n(&st["availableReplicas"]),
    );
    let waiting = |m: String| {
        Ok((
            format!("Waiting for deployment \"{name}\" rollout to finish: {m}"),
            false,
        ))
    };
    if updated < want {
        return waiting(format!(
            "{updated} out of {want} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return waiting(format!(
            "{} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return waiting(format!(
            "{available} of {updated} updated replicas are available..."
        ));
    }
    Ok((
        format!("deployment \"{name}\" successfully rolled out"),
        true,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_status_lines() {
        let d = |replicas: i64, st: Value| serde_json::json!({"metadata": {"name": "web"}, "spec": {"replicas": replicas}, "status": st});
        let line = |v: &Value| deployment_status(v).unwrap().0;
        assert_eq!(
            line(&d(3, serde_json::json!({"replicas": 4, "updatedReplicas": 1, "availableReplicas": 3}))),
            "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
        );
        assert_eq!(
            line(&d(3, serde_json::json!({"replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}))),
            "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
        );
        assert_eq!(
            line(&d(3, serde_json::json!({"replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}))),
            "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available..."
        );
        let ok = d(
            3,
            serde_json::json!({"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            deployment_status(&ok).unwrap(),
            (
                "deployment \"web\" successfully rolled out".to_string(),
                true
            )
        );
        let stuck = d(
            3,
            serde_json::json!({"replicas": 4, "updatedReplicas": 1, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        );
        assert_eq!(
            deployment_status(&stuck).unwrap_err().to_string(),
            "deployment \"web\" exceeded its progress deadline"
        );
    }

    #[test]
    fn documents_are_named_as_kubectl_prints_them() {
        let doc = |v: &str, k: &str| serde_json::json!({"apiVersion": v, "kind": k, "metadata": {"name": "web"}});
        assert_eq!(
            resource_name(&doc("apps/v1", "Deployment")),
            "deployment.apps/web"
        );
        assert_eq!(resource_name(&doc("v1", "Service")), "service/web");
        assert_eq!(
            resource_name(&doc("batch/v1", "CronJob")),
            "cronjob.batch/web"
        );
    }
}
