//! rrun-kubelet's Jobs and CronJobs (batch/v1), through rrun-cri and, for Jobs, through
//! containerd 1.6's CRI with runc as the control, on a node of the test's own namespaces.
//!
//! `jobs`: three Jobs at once — 6 completions with parallelism 2 (never more than 2 pods
//! unfinished, observed every 100 ms; 6 successes), one whose pods exit 3 until its
//! backoffLimit of 2 (Failed, BackoffLimitExceeded, the second wait longer than the first:
//! the controller's 10 s, 20 s), an Indexed one whose pods print their index and hostname
//! (read back with `logs`); `get jobs`, `describe job`; the events; a broken manifest and a
//! refused template change beside them; after the manifests go, no pod in the API and no
//! sandbox or container in the CRI.
//!
//! `cronjob`: every minute, Forbid, one success kept, a job of 62 s: the next minute's Job
//! starts only after the running one finished (never two at once), JobAlreadyActive said,
//! Jobs named `<cronjob>-<scheduled minutes>`, the oldest success deleted when the next
//! one completes (about 3 minutes: it waits for real minutes).

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::agent::Agent;
use integration_tests::cri::{api, Client};
use integration_tests::engines::have;
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Node, IMAGE};
use integration_tests::{scaled, Value};

fn skip_endpoint(ep: Endpoint) -> bool {
    ep == Endpoint::Containerd && !(have("containerd") && have("ctr"))
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn owner(p: &Value) -> String {
    p["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn finished(p: &Value) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

/// An API time, in seconds since the epoch.
fn time(v: &Value) -> i64 {
    let t = humantime::parse_rfc3339(v.as_str().unwrap_or(""))
        .unwrap_or_else(|e| panic!("not a time: {v}: {e}"));
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn has_cond(j: &Value, t: &str) -> Option<Value> {
    j["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == t && c["status"] == "True")
        .cloned()
}

/// Waits until the CRI has no sandbox and no container left (the agent removed its pods').
async fn no_cri_leftovers(socket: &std::path::Path) {
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    loop {
        let mut c = Client::connect(socket).await.expect("connect to the CRI");
        let pods = c
            .runtime
            .list_pod_sandbox(api::ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items;
        let ctrs = c
            .runtime
            .list_containers(api::ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers;
        if pods.is_empty() && ctrs.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left in the CRI: {} sandboxes, {} containers",
            pods.len(),
            ctrs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn job(name: &str, extra: &str, policy: &str, script: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{extra}  template:
    spec:
      restartPolicy: {policy}
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        image: {IMAGE}
        imagePullPolicy: Never
        command: [sh, -c, '{script}']
"#
    )
}

fn events(agent: &Agent) -> Vec<Value> {
    items(
        &agent
            .get_json("/api/v1/namespaces/default/events")
            .unwrap_or_default(),
    )
}

fn event_reasons(agent: &Agent, kind: &str, name: &str) -> Vec<String> {
    events(agent)
        .iter()
        .filter(|e| e["involvedObject"]["kind"] == kind && e["involvedObject"]["name"] == name)
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn jobs(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let tag = format!("batch-{ep:?}").to_lowercase();
    let cgroups = CgroupRoot::new(&tag);
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let mut agent = Agent::start(&node, &engine.socket(), &cgroups, &tag, &[]);
    agent.write_manifest(
        "par.yaml",
        &job(
            "par",
            "  completions: 6\n  parallelism: 2\n",
            "Never",
            "sleep 1; echo done",
        ),
    );
    agent.write_manifest(
        "fail.yaml",
        &job(
            "fail",
            "  backoffLimit: 2\n",
            "Never",
            "echo failing; exit 3",
        ),
    );
    agent.write_manifest(
        "idx.yaml",
        &job(
            "idx",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
            "Never",
            "echo index=$JOB_COMPLETION_INDEX host=$(hostname)",
        ),
    );

    // A broken manifest beside them: said, and the others run.
    agent.write_manifest("bad.yaml", BAD_CRONJOB);

    // Parallelism observed while the Jobs run.
    let deadline = Instant::now() + scaled(Duration::from_secs(180));
    let mut most = 0;
    let mut seen_par = BTreeSet::new();
    loop {
        agent.assert_alive();
        let pods = items(
            &agent
                .get_json("/api/v1/namespaces/default/pods")
                .unwrap_or_default(),
        );
        let par: Vec<&Value> = pods.iter().filter(|p| owner(p) == "par").collect();
        most = most.max(par.iter().filter(|p| !finished(p)).count());
        seen_par.extend(
            par.iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string()),
        );
        let js = items(
            &agent
                .get_json("/apis/batch/v1/namespaces/default/jobs")
                .unwrap_or_default(),
        );
        let done = |n: &str| {
            js.iter().any(|j| {
                j["metadata"]["name"] == n
                    && (has_cond(j, "Complete").is_some() || has_cond(j, "Failed").is_some())
            })
        };
        if done("par") && done("fail") && done("idx") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the jobs did not finish: {}\n{}",
            serde_json::to_string_pretty(&js).unwrap_or_default(),
            agent.log_tail(40)
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(most, 2, "unfinished pods of par at once");
    assert_eq!(seen_par.len(), 6, "{seen_par:?}");

    let par = agent
        .get_json("/apis/batch/v1/namespaces/default/jobs/par")
        .expect("par");
    assert_eq!(par["status"]["succeeded"], 6, "{par}");
    assert!(has_cond(&par, "Complete").is_some(), "{par}");
    assert!(par["status"]["completionTime"].is_string(), "{par}");
    let uid = par["metadata"]["uid"].as_str().unwrap_or("");
    let pods = items(
        &agent
            .get_json("/api/v1/namespaces/default/pods")
            .expect("pods"),
    );
    let par_pods: Vec<&Value> = pods.iter().filter(|p| owner(p) == "par").collect();
    assert_eq!(par_pods.len(), 6);
    for p in &par_pods {
        assert_eq!(phase(p), "Succeeded", "{p}");
        let l = &p["metadata"]["labels"];
        assert_eq!(l["job-name"], "par");
        assert_eq!(l["controller-uid"], uid);
        assert_eq!(l["batch.kubernetes.io/job-name"], "par");
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        assert!(name.starts_with("par-") && name.len() == 9, "{name}");
    }
    // Finished pods keep their logs.
    let name = par_pods[0]["metadata"]["name"].as_str().unwrap_or("");
    let out = agent.cli(&["logs", name]);
    assert!(out.status.success() && out.stdout == "done\n", "{out}");

    // Back-off until the limit.
    let fail = agent
        .get_json("/apis/batch/v1/namespaces/default/jobs/fail")
        .expect("fail");
    let c = has_cond(&fail, "Failed").expect("Failed");
    assert_eq!(c["reason"], "BackoffLimitExceeded", "{fail}");
    assert_eq!(c["message"], "Job has reached the specified backoff limit");
    assert_eq!(fail["status"]["failed"], 3, "{fail}");
    let mut fp: Vec<&Value> = pods.iter().filter(|p| owner(p) == "fail").collect();
    assert_eq!(fp.len(), 3);
    fp.sort_by_key(|p| time(&p["metadata"]["creationTimestamp"]));
    let mut gaps = Vec::new();
    for w in fp.windows(2) {
        assert_eq!(phase(w[0]), "Failed", "{}", w[0]);
        let ended =
            time(&w[0]["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]);
        let next = time(&w[1]["metadata"]["creationTimestamp"]);
        gaps.push(next - ended);
    }
    // Times are whole seconds: 10 s and 20 s of back-off may read one less.
    assert!(
        gaps[0] >= 9 && gaps[1] >= 19 && gaps[1] > gaps[0],
        "gaps {gaps:?}"
    );
    let reasons = event_reasons(&agent, "Job", "fail");
    assert!(
        reasons.iter().any(|r| r == "BackoffLimitExceeded"),
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| *r == "SuccessfulCreate").count(),
        3
    );
    let out = agent.cli(&["describe", "job", "fail"]);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout
            .contains("Pods Statuses:    0 Active (0 Ready) / 0 Succeeded / 3 Failed\n")
            && out.stdout.contains("BackoffLimitExceeded")
            && out.stdout.contains("job-controller"),
        "{out}"
    );

    // Indexed: each pod knows its index and is named after it.
    let idx = agent
        .get_json("/apis/batch/v1/namespaces/default/jobs/idx")
        .expect("idx");
    assert_eq!(idx["status"]["completedIndexes"], "0-2", "{idx}");
    let mut seen = BTreeSet::new();
    for p in pods.iter().filter(|p| owner(p) == "idx") {
        let i = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        assert!(name.starts_with(&format!("idx-{i}-")), "{name}");
        let out = agent.cli(&["logs", name]);
        assert_eq!(out.stdout, format!("index={i} host=idx-{i}\n"), "{out}");
        seen.insert(i);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["0", "1", "2"]);

    let out = agent.cli(&["get", "jobs"]);
    assert!(out.status.success(), "{out}");
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    );
    assert!(
        lines.iter().any(|l| l[..3] == ["fail", "Failed", "0/1"]),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l[..3] == ["idx", "Complete", "3/3"]),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l[..3] == ["par", "Complete", "6/6"]),
        "{out}"
    );
    let reasons = event_reasons(&agent, "Job", "par");
    assert!(reasons.iter().any(|r| r == "Completed"), "{reasons:?}");
    assert!(
        agent
            .log_text()
            .contains("bad.yaml: document 0: spec.schedule: Invalid value: \"every minute\""),
        "{}",
        agent.log_tail(40)
    );
    let bad = node.dir().join("bad.yaml");
    std::fs::write(&bad, BAD_CRONJOB).expect("write");
    let out = agent.cli(&["apply", "-f", &bad.display().to_string()]);
    assert!(
        !out.status.success()
            && out.stderr.contains("error validating")
            && out.stderr.contains("spec.schedule: Invalid value"),
        "{out}"
    );

    // A Job's template is immutable: `apply` refuses the change, and written to the
    // manifest dir anyway it is refused by the agent, naming the file and field.
    let changed = job(
        "par",
        "  completions: 6\n  parallelism: 2\n",
        "Never",
        "sleep 1; echo changed",
    );
    let f = node.dir().join("par.yaml");
    std::fs::write(&f, &changed).expect("write");
    let out = agent.cli(&["apply", "-f", &f.display().to_string()]);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("The Job \"par\" is invalid: spec.template: Invalid value")
            && out.stderr.contains("field is immutable"),
        "{out}"
    );
    agent.write_manifest("par.yaml", &changed);
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    while !agent
        .log_text()
        .contains("par.yaml: Job.batch \"par\" is invalid: spec.template: Invalid value")
    {
        assert!(Instant::now() < deadline, "{}", agent.log_tail(40));
        thread::sleep(Duration::from_millis(100));
    }
    let par = agent
        .get_json("/apis/batch/v1/namespaces/default/jobs/par")
        .expect("par");
    assert_eq!(par["status"]["succeeded"], 6, "{par}");

    // Gone with the manifests: Jobs, pods.
    for f in ["par.yaml", "fail.yaml", "idx.yaml", "bad.yaml"] {
        agent.remove_manifest(f);
    }
    agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "no pods",
        |l| items(l).is_empty(),
    );
    agent.wait_for(
        "/apis/batch/v1/namespaces/default/jobs",
        Duration::from_secs(10),
        "no jobs",
        |l| items(l).is_empty(),
    );
    no_cri_leftovers(&engine.socket()).await;
    drop(agent);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_rrun_cri() {
    jobs(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_containerd() {
    jobs(Endpoint::Containerd).await;
}

const BAD_CRONJOB: &str = r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: bad
spec:
  schedule: every minute
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: work
            image: busybox
"#;

const CRONJOB: &str = r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
spec:
  schedule: "* * * * *"
  timeZone: Etc/UTC
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 1
          containers:
          - name: work
            image: IMAGE
            imagePullPolicy: Never
            command: [sh, -c, 'sleep 62']
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_forbid_and_history() {
    let ep = Endpoint::RrunCri;
    let tag = "cron";
    let cgroups = CgroupRoot::new(tag);
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let mut agent = Agent::start(&node, &engine.socket(), &cgroups, tag, &[]);
    agent.write_manifest("tick.yaml", &CRONJOB.replace("IMAGE", IMAGE));
    // Until the first success is deleted for the second one (a minute to the first run,
    // 62 s of it, the second after it, 62 s more).
    let deadline = Instant::now() + scaled(Duration::from_secs(270));
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut most_active = 0;
    let mut most_pods = 0;
    // From the scheduled minute to the first container running (whole seconds).
    let mut latency = None;
    let first = loop {
        agent.assert_alive();
        let js = items(
            &agent
                .get_json("/apis/batch/v1/namespaces/default/jobs")
                .unwrap_or_default(),
        );
        let pods = items(
            &agent
                .get_json("/api/v1/namespaces/default/pods")
                .unwrap_or_default(),
        );
        most_active = most_active.max(
            js.iter()
                .filter(|j| has_cond(j, "Complete").is_none() && has_cond(j, "Failed").is_none())
                .count(),
        );
        most_pods = most_pods.max(pods.iter().filter(|p| !finished(p)).count());
        if latency.is_none() {
            for p in &pods {
                let started = &p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"];
                let minutes = owner(p)
                    .strip_prefix("tick-")
                    .and_then(|m| m.parse::<i64>().ok());
                if let (true, Some(m)) = (started.is_string(), minutes) {
                    latency = Some(time(started) - m * 60);
                }
            }
        }
        let before = names.len();
        names.extend(
            js.iter()
                .map(|j| j["metadata"]["name"].as_str().unwrap_or("").to_string()),
        );
        // Two runs seen, and the first one deleted by the history limit.
        if names.len() >= 2 && before >= 2 {
            let first = names.iter().next().cloned().unwrap_or_default();
            let complete: Vec<&Value> = js
                .iter()
                .filter(|j| has_cond(j, "Complete").is_some())
                .collect();
            if !js.iter().any(|j| j["metadata"]["name"] == first.as_str()) && complete.len() == 1 {
                break first;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the cronjob did not get through two runs: {names:?}\n{}\n{}",
            serde_json::to_string_pretty(&js).unwrap_or_default(),
            agent.log_tail(40)
        );
        thread::sleep(Duration::from_millis(200));
    };
    eprintln!("scheduled minute to the first run's container running: {latency:?} s");
    assert_eq!(most_active, 1, "Forbid: never two Jobs at once");
    assert_eq!(most_pods, 1, "Forbid: never two pods at once");
    // Named after the scheduled minute.
    for n in &names {
        let minutes: i64 = n
            .strip_prefix("tick-")
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("job name {n}"));
        assert!(minutes > 28_000_000, "{n}");
    }
    let cj = agent
        .get_json("/apis/batch/v1/namespaces/default/cronjobs/tick")
        .expect("cronjob");
    let last = time(&cj["status"]["lastScheduleTime"]);
    assert_eq!(last % 60, 0, "{cj}");
    assert!(cj["status"]["lastSuccessfulTime"].is_string(), "{cj}");
    let reasons = event_reasons(&agent, "CronJob", "tick");
    for r in [
        "SuccessfulCreate",
        "JobAlreadyActive",
        "SawCompletedJob",
        "SuccessfulDelete",
    ] {
        assert!(reasons.iter().any(|x| x == r), "{r} not in {reasons:?}");
    }
    let deleted = events(&agent).iter().any(|e| {
        e["reason"] == "SuccessfulDelete" && e["message"] == format!("Deleted job {first}")
    });
    assert!(deleted, "{first}");
    let out = agent.cli(&["describe", "cronjob", "tick"]);
    assert!(
        out.stdout
            .contains("Concurrency Policy:            Forbid\n")
            && out.stdout.contains("SawCompletedJob")
            && out.stdout.contains("cronjob-controller"),
        "{out}"
    );
    let out = agent.cli(&["get", "cronjobs"]);
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"],
        "{out}"
    );
    assert_eq!(
        lines[1][..8],
        ["tick", "*", "*", "*", "*", "*", "Etc/UTC", "False"],
        "{out}"
    );

    // kubectl's `create job --from=cronjob/`.
    let out = agent.cli(&["create", "job", "by-hand", "--from=cronjob/tick"]);
    assert!(out.status.success(), "{out}");
    assert_eq!(out.stdout, "job.batch/by-hand created\n");
    let j = agent.wait_for(
        "/apis/batch/v1/namespaces/default/jobs/by-hand",
        Duration::from_secs(10),
        "the manual job",
        |j| j["status"]["startTime"].is_string(),
    );
    assert_eq!(
        j["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );

    agent.remove_manifest("by-hand.json");
    agent.remove_manifest("tick.yaml");
    agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "no pods",
        |l| items(l).is_empty(),
    );
    agent.wait_for(
        "/apis/batch/v1/namespaces/default/jobs",
        Duration::from_secs(10),
        "no jobs",
        |l| items(l).is_empty(),
    );
    no_cri_leftovers(&engine.socket()).await;
    drop(agent);
    drop(engine);
}
