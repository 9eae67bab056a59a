//! The workload controllers inside the agent: Deployments and ReplicaSets (apps/v1) from the
//! manifest directory become pods the reconcile loop runs, and Services (v1) become the
//! node's nftables rules. Their state (ReplicaSets, pods' names and uids, ClusterIPs) is
//! kept in `<root>/controllers.json`, so a restarted agent adopts the same pods.

pub mod batch;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod generation;
pub mod job;
mod job_validation;
pub mod record;
pub mod replicaset;
pub mod stateful;
pub mod statefulset;
pub mod sync;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::manifest::{self, Desired};
use crate::proxy::{self, Range, Rule};
use crate::state::Shared;
use crate::store::write_atomic;
use replicaset::Observed;
use sync::State;

/// The kinds this module reads from manifests (the pod loader skips them).
pub fn is_workload(doc: &Value) -> bool {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    matches!(
        (api, kind),
        ("apps/v1", "Deployment")
            | ("apps/v1", "ReplicaSet")
            | ("v1", "Service")
            | ("apps/v1", "StatefulSet")
            | ("apps/v1", "DaemonSet")
            | ("v1", "PersistentVolumeClaim")
            | ("storage.k8s.io/v1", "StorageClass")
            | ("batch/v1", "Job")
            | ("batch/v1", "CronJob")
    )
}

/// The workload objects of the manifest directory.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub deployments: Vec<(Deployment, PathBuf)>,
    pub replicasets: Vec<(ReplicaSet, PathBuf)>,
    pub services: Vec<(Service, PathBuf)>,
    pub statefulsets: Vec<(StatefulSet, PathBuf)>,
    pub daemonsets: Vec<(DaemonSet, PathBuf)>,
    pub claims: Vec<(PersistentVolumeClaim, PathBuf)>,
    pub classes: Vec<(StorageClass, PathBuf)>,
    pub jobs: Vec<(k8s_openapi::api::batch::v1::Job, PathBuf)>,
    pub cronjobs: Vec<(k8s_openapi::api::batch::v1::CronJob, PathBuf)>,
    pub errors: BTreeMap<PathBuf, String>,
}

fn parse<T: serde::de::DeserializeOwned>(doc: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(doc).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

fn default_ns(
    m: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(), String> {
    if m.name.as_deref().unwrap_or("").is_empty() {
        return Err("metadata.name: Required value".into());
    }
    m.namespace.get_or_insert_with(|| "default".into());
    Ok(())
}

/// Reads the workload documents of the directory (a file that fails keeps nothing, and
/// says why).
pub fn scan(dir: &Path) -> Objects {
    let mut out = Objects::default();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| manifest::is_manifest_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    paths.sort();
    for p in paths {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let Ok(docs) = manifest::documents(&p, &text) else {
            continue;
        };
        for (i, doc) in docs.iter().enumerate() {
            // Deleted in the foreground: collected as if gone, while the API serves its file
            // until the dependents are (api/finalizers.rs).
            if !is_workload(doc) || crate::api::finalizers::foreground(doc) {
                continue;
            }
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
            let res = match kind {
                "Deployment" => parse::<Deployment>(doc).and_then(|mut d| {
                    default_ns(&mut d.metadata)?;
                    check_selector(
                        d.spec
                            .as_ref()
                            .map(|s| (&s.selector, s.template.metadata.as_ref())),
                    )?;
                    out.deployments.push((d, p.clone()));
                    Ok(())
                }),
                "ReplicaSet" => parse::<ReplicaSet>(doc).and_then(|mut r| {
                    default_ns(&mut r.metadata)?;
                    check_selector(r.spec.as_ref().map(|s| {
                        (
                            &s.selector,
                            s.template.as_ref().and_then(|t| t.metadata.as_ref()),
                        )
                    }))?;
                    out.replicasets.push((r, p.clone()));
                    Ok(())
                }),
                "StatefulSet" => parse::<StatefulSet>(doc).and_then(|mut s| {
                    default_ns(&mut s.metadata)?;
                    statefulset::validate(&s, None)?;
                    out.statefulsets.push((s, p.clone()));
                    Ok(())
                }),
                "DaemonSet" => parse::<DaemonSet>(doc).and_then(|mut d| {
                    default_ns(&mut d.metadata)?;
                    check_selector(
                        d.spec
                            .as_ref()
                            .map(|s| (&s.selector, s.template.metadata.as_ref())),
                    )?;
                    out.daemonsets.push((d, p.clone()));
                    Ok(())
                }),
                "PersistentVolumeClaim" => parse::<PersistentVolumeClaim>(doc).and_then(|mut c| {
                    default_ns(&mut c.metadata)?;
                    crate::storage::validate(&c, "")?;
                    out.claims.push((c, p.clone()));
                    Ok(())
                }),
                "StorageClass" => parse::<StorageClass>(doc).and_then(|s| {
                    if s.provisioner != crate::storage::PROVISIONER {
                        return Err(format!(
                            "provisioner: Unsupported value: \"{}\": this node provisions {}",
                            s.provisioner,
                            crate::storage::PROVISIONER
                        ));
                    }
                    out.classes.push((s, p.clone()));
                    Ok(())
                }),
                "Job" | "CronJob" => batch::scan_doc(kind, doc, &p, &mut out),
                _ => parse::<Service>(doc).and_then(|mut s| {
                    default_ns(&mut s.metadata)?;
                    out.services.push((s, p.clone()));
                    Ok(())
                }),
            };
            if let Err(e) = res {
                out.errors
                    .insert(p.clone(), format!("{}: document {i}: {e}", p.display()));
            }
        }
    }
    out
}

/// A Deployment's selector must select its template's labels (the API server's rule).
pub(crate) fn check_selector(
    v: Option<(
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
        Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    )>,
) -> Result<(), String> {
    let Some((sel, meta)) = v else {
        return Err("spec: Required value".into());
    };
    let labels = meta.and_then(|m| m.labels.clone()).unwrap_or_default();
    let want = sel.match_labels.clone().unwrap_or_default();
    if want.is_empty() {
        return Err("spec.selector: Required value".into());
    }
    if want.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        return Err(
            "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`"
                .into(),
        );
    }
    Ok(())
}

/// What the API shows, recomputed on each pass.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct View {
    pub deployments: Vec<Deployment>,
    pub replicasets: Vec<ReplicaSet>,
    pub services: Vec<Service>,
    pub statefulsets: Vec<StatefulSet>,
    pub daemonsets: Vec<DaemonSet>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub revisions: Vec<Value>,
    pub jobs: Vec<k8s_openapi::api::batch::v1::Job>,
    pub cronjobs: Vec<k8s_openapi::api::batch::v1::CronJob>,
    /// Service key → port key → endpoints.
    pub endpoints: BTreeMap<String, BTreeMap<String, Vec<proxy::Endpoint>>>,
}

pub struct Ctl {
    path: PathBuf,
    pub state: State,
    objects: Objects,
    pub view: View,
    /// The pods the controllers want, by `namespace/name`.
    pub pods: BTreeMap<String, Desired>,
    range: Range,
    /// The nft table as last written (None: none).
    written: Option<Option<String>>,
    /// The node, for DaemonSets and the claims' provisioner.
    pub node: daemonset::NodeConf,
    /// The manifests were read once (before, every object would look deleted).
    loaded: bool,
}

pub type Handle = Arc<Mutex<Ctl>>;

impl Ctl {
    /// Loads `<root>/controllers.json` (missing: empty; corrupt: an error).
    pub fn open(root: &Path, range: Range) -> anyhow::Result<Handle> {
        let path = root.join("controllers.json");
        let state = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| anyhow::anyhow!("{}: corrupt state: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        let mut c = Ctl {
            path,
            state,
            objects: Objects::default(),
            view: View::default(),
            pods: BTreeMap::new(),
            range,
            written: None,
            node: daemonset::NodeConf::default(),
            loaded: false,
        };
        c.refresh_pods();
        Ok(Arc::new(Mutex::new(c)))
    }

    pub fn set_objects(&mut self, o: Objects) {
        self.objects = o;
        self.loaded = true;
    }

    fn file_of(&self, owner: Option<&str>, rs_key: &str) -> PathBuf {
        let k = owner.unwrap_or(rs_key);
        let key_of = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            sync::key(
                m.namespace.as_deref().unwrap_or("default"),
                m.name.as_deref().unwrap_or(""),
            )
        };
        self.objects
            .deployments
            .iter()
            .find(|(d, _)| key_of(&d.metadata) == k)
            .map(|(_, p)| p.clone())
            .or_else(|| {
                self.objects
                    .replicasets
                    .iter()
                    .find(|(r, _)| key_of(&r.metadata) == k)
                    .map(|(_, p)| p.clone())
            })
            .unwrap_or_default()
    }

    /// `pods` made again from the controllers' state: admitted (service account) as the
    /// manifest's pods are, and a pod that did not change keeps its shared copy, the one
    /// the agent holds as desired, rather than each pass making another.
    pub fn refresh_pods(&mut self) {
        let mut now = self.wanted_pods();
        for (k, d) in now.iter_mut() {
            // Each pod is a fresh copy here, so make_mut copies nothing.
            crate::service_account::admit(Arc::make_mut(&mut d.pod));
            if let Some(old) = self.pods.get(k).filter(|old| **old == *d) {
                *d = old.clone();
            }
        }
        self.pods = now;
    }

    fn wanted_pods(&self) -> BTreeMap<String, Desired> {
        let mut out = BTreeMap::new();
        for (k, r) in &self.state.replicasets {
            for p in &r.pods {
                let d = Desired {
                    pod: p.pod.clone().into(),
                    file: self.file_of(r.owner.as_deref(), k),
                    uid: p.uid.clone(),
                };
                out.insert(d.key(), d);
            }
        }
        stateful::wanted_pods(self, &mut out);
        out.extend(self.batch_pods());
        out
    }

    fn save(&self) {
        match serde_json::to_vec(&self.state) {
            Ok(b) => {
                if let Err(e) = write_atomic(&self.path, &b) {
                    tracing::error!("saving {}: {e}", self.path.display());
                }
            }
            Err(e) => tracing::error!("encoding the controller state: {e}"),
        }
    }
}

pub fn lock(h: &Handle) -> std::sync::MutexGuard<'_, Ctl> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the agent knows of each pod, by uid.
fn observe(shared: &Shared) -> HashMap<String, Observed> {
    let g = shared.lock();
    g.pods
        .values()
        .filter_map(|p| {
            let uid = p.metadata.uid.clone()?;
            let st = p.status.as_ref()?;
            let ready_since = st
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready" && c.status == "True")
                .map(|c| {
                    c.last_transition_time
                        .as_ref()
                        .map(|t| t.0)
                        .unwrap_or_else(Utc::now)
                });
            Some((
                uid,
                Observed {
                    phase: st.phase.clone().unwrap_or_default(),
                    ready_since,
                    restarts: st
                        .container_statuses
                        .iter()
                        .flatten()
                        .map(|c| c.restart_count)
                        .sum(),
                    ip: st.pod_ip.clone(),
                },
            ))
        })
        .collect()
}

/// One pass: controllers, then Services; the new rules are in place before the pods that
/// leave are handed to the reconcile loop, so traffic stops going to a pod before its stop.
pub async fn pass(shared: &Arc<Shared>, h: &Handle) {
    if !lock(h).loaded {
        return;
    }
    let obs = observe(shared);
    let job_obs = batch::observe(shared);
    let now = Utc::now();
    let (rules, ready_to_write) = {
        let mut c = lock(h);
        let c = &mut *c;
        let mut changed = false;
        // The API's watches wake when the view moves (a pass that changes nothing is quiet).
        let before = c.view.clone();
        let dkeys: Vec<String> = c
            .objects
            .deployments
            .iter()
            .map(|(d, _)| {
                sync::key(
                    d.metadata.namespace.as_deref().unwrap_or("default"),
                    d.metadata.name.as_deref().unwrap_or(""),
                )
            })
            .collect();
        changed |= sync::forget_deployments(&mut c.state, &dkeys);
        let mut deployments = Vec::new();
        for (d, _) in c.objects.deployments.clone() {
            match sync::sync_deployment(&mut c.state, &d, &obs, now) {
                Ok((ch, st)) => {
                    changed |= ch;
                    let mut d = d.clone();
                    let rec = c
                        .state
                        .deployments
                        .get(&sync::key(
                            d.metadata.namespace.as_deref().unwrap_or("default"),
                            d.metadata.name.as_deref().unwrap_or(""),
                        ))
                        .cloned()
                        .unwrap_or_default();
                    d.metadata.uid = Some(rec.uid);
                    d.metadata.creation_timestamp = rec.created;
                    d.metadata.generation = Some(rec.generation.number);
                    // The controller writes the newest revision on the Deployment too.
                    let dk = sync::key(
                        d.metadata.namespace.as_deref().unwrap_or("default"),
                        d.metadata.name.as_deref().unwrap_or(""),
                    );
                    let rev = c
                        .state
                        .replicasets
                        .values()
                        .filter(|r| r.owner.as_deref() == Some(dk.as_str()))
                        .map(sync::RsRec::revision)
                        .max();
                    if let Some(rev) = rev.filter(|r| *r > 0) {
                        d.metadata
                            .annotations
                            .get_or_insert_with(Default::default)
                            .insert(deployment::REVISION.into(), rev.to_string());
                    }
                    d.status = Some(st);
                    deployments.push(d);
                }
                Err(e) => tracing::warn!("deployment: {e}"),
            }
        }
        let sets: Vec<ReplicaSet> = c
            .objects
            .replicasets
            .iter()
            .map(|(r, _)| r.clone())
            .collect();
        changed |= sync::sync_standalone(&mut c.state, &sets);
        changed |= sync::sync_pods(&mut c.state, &obs);
        let (used, cri_up) = {
            let g = shared.lock();
            let used: std::collections::BTreeSet<String> = g
                .desired
                .values()
                .map(|d| &*d.pod)
                .chain(g.pods.values().map(|p| &**p))
                .flat_map(crate::storage::claims_of)
                .collect();
            (used, g.cri_up)
        };
        // Until the agent has listed the node, a pod that is still there looks gone.
        if cri_up {
            let (ch, evs) = stateful::pass(c, &obs, &used, now);
            changed |= ch;
            if !evs.is_empty() {
                record::emit(&mut shared.lock(), evs);
            }
        }
        let mut notes = Vec::new();
        changed |= c.sync_batch(&job_obs, now, &mut notes);
        batch::record(shared, notes);
        c.view.deployments = deployments;
        c.view.replicasets = c
            .state
            .replicasets
            .values()
            .map(|r| r.published(&obs, now))
            .collect();
        c.refresh_pods();
        changed |= services(shared, c, &obs);
        if changed {
            c.save();
        }
        if changed || c.view != before {
            shared.changes.mark();
        }
        // Until the agent has seen every wanted pod once, endpoints would be missing.
        let seen = {
            let g = shared.lock();
            g.cri_up && c.pods.values().all(|d| g.pods.contains_key(&d.key()))
        };
        (rules(c), seen || c.written.is_some())
    };
    if ready_to_write {
        let body = proxy::nft::render(&rules);
        let stale = lock(h).written.as_ref() != Some(&body);
        if stale {
            let b2 = body.clone();
            let r = tokio::task::spawn_blocking(move || proxy::nft::apply(b2.as_deref())).await;
            match r {
                Ok(Ok(())) => lock(h).written = Some(body),
                Ok(Err(e)) => tracing::error!("service rules: {e}"),
                Err(e) => tracing::error!("service rules: {e}"),
            }
        }
    }
    // Lock order: the controllers' state, then the agent's (as the manifest reader does).
    let ctl = lock(h);
    let pods = ctl.pods.clone();
    let mut g = shared.lock();
    let ours: HashSet<String> = g
        .desired
        .iter()
        .filter(|(_, d)| is_controlled(&d.pod))
        .map(|(k, _)| k.clone())
        .collect();
    // A pod replaced under the same name (a new uid) counts as a change.
    let before: HashSet<(String, String)> = ours
        .iter()
        .filter_map(|k| g.desired.get(k).map(|d| (k.clone(), d.uid.clone())))
        .collect();
    let now_keys: HashSet<(String, String)> = pods
        .iter()
        .map(|(k, d)| (k.clone(), d.uid.clone()))
        .collect();
    if before != now_keys {
        for k in &ours {
            g.desired.remove(k);
        }
        // Admitted already (refresh_pods), as the manifest's pods are.
        g.desired.extend(pods);
        drop(g);
        drop(ctl);
        shared.wake.notify_one();
    }
}

/// A pod a ReplicaSet of this agent made.
pub fn is_controlled(pod: &Pod) -> bool {
    pod.metadata.owner_references.iter().flatten().any(|o| {
        matches!(
            o.kind.as_str(),
            "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job"
        ) && o.controller == Some(true)
    })
}

/// Allocates the Services' addresses and computes their endpoints: the Ready pods the
/// agent wants (a pod leaving is no longer wanted) that have an IP.
fn services(shared: &Shared, c: &mut Ctl, obs: &HashMap<String, Observed>) -> bool {
    let mut changed = false;
    let keys: Vec<String> = c
        .objects
        .services
        .iter()
        .map(|(s, _)| {
            sync::key(
                s.metadata.namespace.as_deref().unwrap_or("default"),
                s.metadata.name.as_deref().unwrap_or(""),
            )
        })
        .collect();
    let before = c.state.services.len();
    c.state.services.retain(|k, _| keys.contains(k));
    changed |= before != c.state.services.len();
    let mut wanted: Vec<(std::sync::Arc<Pod>, String)> = shared
        .lock()
        .desired
        .values()
        .filter(|d| !is_controlled(&d.pod))
        .map(|d| (d.pod.clone(), d.uid.clone()))
        .collect();
    wanted.extend(c.pods.values().map(|d| (d.pod.clone(), d.uid.clone())));
    let ready: Vec<(std::sync::Arc<Pod>, Ipv4Addr)> = wanted
        .into_iter()
        .filter_map(|(p, uid)| {
            let o = obs.get(&uid)?;
            let ip: Ipv4Addr = o.ip.as_deref()?.parse().ok()?;
            o.ready().then_some((p, ip))
        })
        .collect();
    let mut view = Vec::new();
    c.view.endpoints.clear();
    for (svc, _) in c.objects.services.clone() {
        let key = sync::key(
            svc.metadata.namespace.as_deref().unwrap_or("default"),
            svc.metadata.name.as_deref().unwrap_or(""),
        );
        let others: Vec<proxy::SvcRec> = c
            .state
            .services
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(_, r)| r.clone())
            .collect();
        let other_refs: Vec<&proxy::SvcRec> = others.iter().collect();
        let mut rec = c
            .state
            .services
            .get(&key)
            .cloned()
            .unwrap_or_else(|| proxy::SvcRec {
                uid: replicaset::random_uid(),
                created: Some(Time(Utc::now())),
                ..Default::default()
            });
        if let Err(e) = proxy::allocate(&svc, &key, c.range, &mut rec, &other_refs) {
            tracing::warn!(service = %key, "{e}");
            continue;
        }
        if c.state.services.get(&key) != Some(&rec) {
            c.state.services.insert(key.clone(), rec.clone());
            changed = true;
        }
        let mut s = svc.clone();
        s.metadata.uid = Some(rec.uid.clone());
        s.metadata.creation_timestamp = rec.created.clone();
        let spec = s.spec.get_or_insert_with(Default::default);
        spec.type_.get_or_insert_with(|| "ClusterIP".into());
        let ip = rec
            .cluster_ip
            .map(|i| i.to_string())
            .unwrap_or_else(|| "None".into());
        spec.cluster_ip = Some(ip.clone());
        spec.cluster_ips = Some(vec![ip]);
        for p in spec.ports.iter_mut().flatten() {
            p.protocol.get_or_insert_with(|| "TCP".into());
            p.node_port = rec.node_ports.get(&proxy::port_key(p)).copied();
        }
        c.view.endpoints.insert(key, proxy::endpoints(&s, &ready));
        view.push(s);
    }
    c.view.services = view;
    changed
}

fn rules(c: &Ctl) -> Vec<Rule> {
    let mut out = Vec::new();
    for s in &c.view.services {
        let key = sync::key(
            s.metadata.namespace.as_deref().unwrap_or("default"),
            s.metadata.name.as_deref().unwrap_or(""),
        );
        let rec = c.state.services.get(&key);
        for p in s
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
        {
            let pk = proxy::port_key(p);
            let cluster_ip = rec.and_then(|r| r.cluster_ip);
            let node_port = rec.and_then(|r| r.node_ports.get(&pk).copied());
            if cluster_ip.is_none() && node_port.is_none() {
                continue;
            }
            out.push(Rule {
                service: key.clone(),
                protocol: proxy::protocol(p).to_string(),
                cluster_ip,
                port: p.port,
                node_port,
                endpoints: c
                    .view
                    .endpoints
                    .get(&key)
                    .and_then(|e| e.get(&pk))
                    .cloned()
                    .unwrap_or_default(),
                affinity: proxy::affinity(s).ok().flatten(),
            });
        }
    }
    out
}

/// The controllers' loop: a pass every 250 ms, or at once when `kicks` asks (an API write
/// waiting for one). Never returns.
pub async fn run(
    shared: Arc<Shared>,
    h: Handle,
    mut kicks: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    loop {
        let n = shared.passes.begin();
        pass(&shared, &h).await;
        shared.passes.end(n);
        // A kick that came during the pass asks for the next one.
        let tick = Duration::from_millis(250);
        if let Ok(None) = tokio::time::timeout(tick, kicks.recv()).await {
            tokio::time::sleep(tick).await;
        }
        while kicks.try_recv().is_ok() {}
    }
}

/// On a clean stop the Services' rules go (the pods keep running, as with the kubelet).
pub fn shutdown(h: &Handle) {
    if lock(h).written.as_ref().is_some_and(Option::is_some) {
        if let Err(e) = proxy::nft::apply(None) {
            tracing::error!("removing the service rules: {e}");
        }
    }
}
