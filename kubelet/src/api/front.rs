//! The API's front: discovery, and every read of a kind in the registry answered the same
//! way whichever part of the agent holds the objects (get, list with label and field
//! selectors, watch, and the meta.k8s.io/v1 Table when the client asks for it). What it does
//! not answer itself (logs, the kubelet's own paths, writes) goes to the routes behind it.
//!
//! resourceVersions: each object gets one from a counter that moves whenever the object's
//! content changes (seeded from the clock at start, so it keeps rising across restarts).
//! Watches are pushed: a watch sleeps until the agent's change signal moves (changes.rs),
//! then lists the kind again and sends what changed.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::registry::{self, Kind};
use super::select::Selector;
use super::{bad_request, discovery, local, paging, query_bool, status_error, table};
use crate::state::Shared;

/// How long a woken watch lets a burst of changes settle before it lists (one list for a
/// pass that changes many pods, not one per pod).
const COALESCE: Duration = Duration::from_millis(10);
/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

pub(super) struct Front {
    pub(super) shared: Arc<Shared>,
    inner: Router,
    rv: Mutex<Versions>,
}

struct Versions {
    next: u64,
    /// `plural/ns/name` → (content hash, resourceVersion).
    seen: HashMap<String, (u64, u64)>,
}

pub fn router(shared: Arc<Shared>) -> Router {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let front = Arc::new(Front {
        inner: super::rest::router(shared.clone()),
        shared,
        rv: Mutex::new(Versions {
            next: seed,
            seen: HashMap::new(),
        }),
    });
    Router::new().fallback(move |req: Request| {
        let f = front.clone();
        async move {
            let write = req.method() != Method::GET;
            let shared = f.shared.clone();
            let r = f.handle(req).await;
            // What a write stored outside the agent's state (the namespaces' and the stored
            // metadata's files) is served at once: the watches look again.
            if write {
                shared.changes.mark();
            }
            r
        }
    })
}

/// What a resource path names.
pub(super) struct Target {
    pub(super) kind: &'static Kind,
    pub(super) ns: Option<String>,
    pub(super) name: Option<String>,
    pub(super) sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let t = |plural: &str, ns: Option<&str>, tail: &[&str]| -> Option<Target> {
        let kind = registry::find(group, plural).filter(|k| k.version == version)?;
        if kind.namespaced != ns.is_some() && !(tail.is_empty() && ns.is_none()) {
            return None;
        }
        Some(Target {
            kind,
            ns: ns.map(str::to_string),
            name: tail.first().map(|s| s.to_string()),
            sub: tail.get(1).map(|s| s.to_string()),
        })
    };
    match rest {
        [] => None,
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => t(plural, Some(ns), tail),
        [plural, tail @ ..] if tail.len() <= 2 => t(plural, None, tail),
        _ => None,
    }
}

fn query(req: &Request) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .collect::<BTreeMap<String, String>>()
        })
        .unwrap_or_default()
}

/// `a=b&c=d`, percent-decoded (`+` is a space).
pub(super) fn url_pairs(q: &str) -> Vec<(String, String)> {
    fn dec(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(x) => {
                        out.push(x);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                },
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

fn wants_table(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn hash(v: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

pub fn not_found(kind: &Kind, name: &str) -> Response {
    status_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", kind.qualified()),
        Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
    )
}

impl Front {
    async fn handle(self: Arc<Self>, req: Request) -> Response {
        let path = req.uri().path().to_string();
        if req.method() == Method::GET {
            if path.trim_end_matches('/') == "/openapi/v2" {
                return super::openapi_v2::serve(req.headers());
            }
            if let Some(r) = super::openapi::serve(&path, req.uri().query()) {
                return r;
            }
            if let Some(doc) = discovery::document(&path) {
                return Json(doc).into_response();
            }
        }
        if let Some(Target {
            kind,
            ns: Some(ns),
            name: Some(name),
            sub: Some(sub),
        }) = parse_path(&path)
        {
            if kind.plural == "pods" && matches!(sub.as_str(), "exec" | "attach" | "portforward") {
                let q = super::stream::pairs(req.uri().query());
                return super::stream::serve(&self.shared, &sub, &ns, &name, q, req).await;
            }
        }
        let target = match parse_path(&path) {
            Some(t) if t.sub.as_deref() == Some("scale") => return self.scale(t, req).await,
            Some(t) if req.method() == Method::GET => t,
            // A controller's pod or a StatefulSet's claim is deleted by its controller
            // (`workloads.rs`), not as a file of the manifest dir.
            Some(t)
                if req.method() == Method::DELETE
                    && t.sub.is_none()
                    && t.name.is_some()
                    && matches!(t.kind.plural, "pods" | "persistentvolumeclaims") =>
            {
                return self.pass(req).await
            }
            Some(t) if t.sub.is_none() || t.sub.as_deref() == Some("status") => {
                return self.write(t, req).await
            }
            _ => return self.pass(req).await,
        };
        if matches!(target.sub.as_deref(), Some(s) if s != "status") {
            return self.pass(req).await;
        }
        let q = query(&req);
        let table = wants_table(&req);
        let mut fields = q.get("fieldSelector").cloned();
        if let Some(n) = &target.name {
            fields = Some(match fields {
                Some(f) if !f.is_empty() => format!("{f},metadata.name={n}"),
                _ => format!("metadata.name={n}"),
            });
        }
        let sel = match Selector::new(
            q.get("labelSelector").map(String::as_str),
            fields.as_deref(),
        ) {
            Ok(s) => s,
            Err(e) => return bad_request(e),
        };
        if query_bool(q.get("watch").map(String::as_str)) {
            return self.watch(target, q, sel, table);
        }
        let items = match self.objects(target.kind, target.ns.as_deref()).await {
            Ok(i) => i,
            Err(r) => return r,
        };
        let items: Vec<Value> = items.into_iter().filter(|o| sel.matches(o)).collect();
        let rv = self.list_version();
        let include = q.get("includeObject").map(String::as_str).unwrap_or("");
        if let Some(name) = &target.name {
            let Some(obj) = items.into_iter().next() else {
                return not_found(target.kind, name);
            };
            if table {
                return Json(table::table(target.kind, &[obj], &rv, include, true)).into_response();
            }
            return Json(obj).into_response();
        }
        let page = match paging::page(
            items,
            q.get("limit").map(String::as_str),
            q.get("continue").map(String::as_str),
        ) {
            Ok(p) => p,
            Err(e) => return bad_request(e),
        };
        let mut meta = json!({"resourceVersion": rv});
        if let Some(next) = page.next {
            meta["continue"] = next.into();
            meta["remainingItemCount"] = page.remaining.unwrap_or(0).into();
        }
        if table {
            let mut t = table::table(target.kind, &page.items, &rv, include, true);
            t["metadata"] = meta;
            return Json(t).into_response();
        }
        Json(json!({
            "kind": format!("{}List", target.kind.kind),
            "apiVersion": target.kind.api_version(),
            "metadata": meta,
            "items": page.items,
        }))
        .into_response()
    }

    async fn pass(&self, req: Request) -> Response {
        match self.inner.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }

    /// A new resourceVersion, for an object just written.
    pub(super) fn bump(&self) -> String {
        let mut v = self.rv.lock().unwrap_or_else(|e| e.into_inner());
        v.next += 1;
        v.next.to_string()
    }

    fn list_version(&self) -> String {
        let v = self.rv.lock().unwrap_or_else(|e| e.into_inner());
        v.next.to_string()
    }

    /// Gives each object its resourceVersion (a new one when its content changed).
    fn stamp(&self, kind: &Kind, items: &mut [Value]) {
        let mut v = self.rv.lock().unwrap_or_else(|e| e.into_inner());
        for o in items {
            if let Some(m) = o["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            o["apiVersion"] = kind.api_version().into();
            o["kind"] = kind.kind.into();
            if kind.plural == "deployments" && o["status"].is_object() {
                // The controllers compute a Deployment's status from the spec they show in
                // the same pass: that status has observed that generation.
                let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                o["metadata"]["generation"] = g.into();
                o["status"]["observedGeneration"] = g.into();
            }
            let key = format!(
                "{}/{}/{}",
                kind.plural,
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            );
            let h = hash(o);
            let rv = match v.seen.get(&key) {
                Some((old, rv)) if *old == h => *rv,
                _ => {
                    v.next += 1;
                    let rv = v.next;
                    v.seen.insert(key, (h, rv));
                    rv
                }
            };
            o["metadata"]["resourceVersion"] = rv.to_string().into();
        }
    }

    /// All objects of `kind` (in `ns` when given), stamped.
    pub(super) async fn objects(
        &self,
        kind: &'static Kind,
        ns: Option<&str>,
    ) -> Result<Vec<Value>, Response> {
        let mut items = match (kind.group, kind.plural) {
            ("", "namespaces") => local::namespaces(&self.shared, self.seen_namespaces()),
            ("", "nodes") => {
                let rt = self.runtime_version().await;
                vec![local::node(&self.shared, rt)]
            }
            ("", "configmaps") => {
                local::config_objects(&self.shared, crate::objects::Kind::ConfigMap)
            }
            ("", "secrets") => local::config_objects(&self.shared, crate::objects::Kind::Secret),
            _ => self.inner_list(kind).await?,
        };
        // (ConfigMaps and Secrets stay in the agent's objects while finalizers hold them.)
        if super::write::WRITABLE.contains(&kind.plural)
            && !matches!(kind.plural, "namespaces" | "configmaps" | "secrets")
        {
            // An object deleted in the foreground is gone from the controllers' view while
            // its dependents go; its file still defines it.
            for o in super::finalizers::terminating(&self.shared.config.manifest_dir, kind.plural) {
                let same = |i: &Value| {
                    i["metadata"]["name"] == o["metadata"]["name"]
                        && i["metadata"]["namespace"] == o["metadata"]["namespace"]
                };
                if !items.iter().any(same) {
                    items.push(o);
                }
            }
        }
        if let Some(ns) = ns {
            items.retain(|o| o["metadata"]["namespace"].as_str() == Some(ns));
        }
        items.sort_by(|a, b| {
            let k = |o: &Value| {
                (
                    o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                )
            };
            k(a).cmp(&k(b))
        });
        self.overlay(kind, &mut items);
        for o in &mut items {
            super::defaults::apply(kind.plural, o);
        }
        self.stamp(kind, &mut items);
        Ok(items)
    }

    /// The list of every namespace from the routes behind (empty when nothing serves the
    /// kind yet: the agent has no such objects).
    async fn inner_list(&self, kind: &Kind) -> Result<Vec<Value>, Response> {
        let path = if kind.group.is_empty() {
            format!("/api/{}/{}", kind.version, kind.plural)
        } else {
            format!("/apis/{}/{}/{}", kind.group, kind.version, kind.plural)
        };
        let req = match Request::get(&path)
            .header(header::ACCEPT, "application/json")
            .body(Body::empty())
        {
            Ok(r) => r,
            Err(e) => return Err(bad_request(e.to_string())),
        };
        let resp = self.pass(req).await;
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 256 << 20)
            .await
            .unwrap_or_default();
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(
                (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
            );
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    fn seen_namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = {
            let g = self.shared.lock();
            g.pods
                .values()
                .filter_map(|p| p.metadata.namespace.clone())
                .chain(g.objects.iter().map(|((_, ns, _), _, _)| ns.clone()))
                .collect()
        };
        out.extend(self.stored_namespaces());
        let c = crate::controllers::lock(&self.shared.workloads);
        out.extend(
            c.view
                .deployments
                .iter()
                .filter_map(|d| d.metadata.namespace.clone()),
        );
        out.extend(
            c.view
                .services
                .iter()
                .filter_map(|s| s.metadata.namespace.clone()),
        );
        out
    }

    async fn runtime_version(&self) -> Option<(String, String)> {
        let mut c = self.shared.cri.get().await?;
        let v = c
            .runtime
            .version(cri_proto::api::VersionRequest::default())
            .await
            .ok()?
            .into_inner();
        Some((v.runtime_name, v.runtime_version))
    }

    /// A watch: chunked JSON events, one a line, from the objects' changes.
    fn watch(
        self: Arc<Self>,
        target: Target,
        q: BTreeMap<String, String>,
        sel: Selector,
        table: bool,
    ) -> Response {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, Infallible>>(64);
        let since: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let bookmarks = query_bool(q.get("allowWatchBookmarks").map(String::as_str));
        let deadline = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(|t| Instant::now() + Duration::from_secs(t));
        let include = q.get("includeObject").cloned().unwrap_or_default();
        let kind = target.kind;
        tokio::spawn(async move {
            // Counted until the task ends: at the client's disconnect, or the deadline.
            let _live = crate::metrics::LongRunning::start(
                &self.shared.metrics,
                crate::metrics::LongRunningLabels {
                    verb: "WATCH".into(),
                    group: kind.group.into(),
                    version: kind.version.into(),
                    resource: kind.plural.into(),
                },
            );
            let mut changes = self.shared.changes.subscribe();
            let mut known = Known::new();
            let mut first = true;
            let mut headers = true;
            let mut dirty = true;
            let mut last_bookmark = Instant::now();
            loop {
                if dirty {
                    dirty = false;
                    // Seen before the list: a change from here on wakes the next round.
                    changes.borrow_and_update();
                    let items = match self.objects(kind, target.ns.as_deref()).await {
                        Ok(i) => i,
                        Err(_) => return,
                    };
                    let events = diff(&mut known, items, &sel, first, since);
                    first = false;
                    for (ty, o) in events {
                        let object = if table {
                            let rv = o["metadata"]["resourceVersion"]
                                .as_str()
                                .unwrap_or("")
                                .to_string();
                            let t = table::table(kind, &[o], &rv, &include, headers);
                            headers = false;
                            t
                        } else {
                            o
                        };
                        let line = format!("{}\n", json!({"type": ty, "object": object}));
                        if tx.send(Ok(line)).await.is_err() {
                            return;
                        }
                    }
                }
                if bookmarks && last_bookmark.elapsed() >= BOOKMARK_EVERY {
                    last_bookmark = Instant::now();
                    let rv = self.list_version();
                    let obj = json!({"kind": kind.kind, "apiVersion": kind.api_version(),
                                     "metadata": {"resourceVersion": rv,
                                     "annotations": {"k8s.io/initial-events-end": "true"}}});
                    let line = format!("{}\n", json!({"type": "BOOKMARK", "object": obj}));
                    if tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return;
                }
                // Asleep until a change, the next bookmark or the end.
                let timer = [bookmarks.then(|| last_bookmark + BOOKMARK_EVERY), deadline]
                    .into_iter()
                    .flatten()
                    .min();
                let due = async {
                    match timer {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = changes.changed() => {
                        if r.is_err() {
                            return;
                        }
                        tokio::time::sleep(COALESCE).await;
                        dirty = true;
                    }
                    () = due => {}
                    () = tx.closed() => return,
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(stream),
        )
            .into_response()
    }
}

/// What a watch has sent: each object's key, resourceVersion and text (a DELETED event
/// carries the object's last state).
type Known = HashMap<String, (String, Box<str>)>;

/// The events that take a watch from `known` to `items` (those `sel` matches), and `known`
/// updated. The first round sends the objects newer than `since` (all of them when 0).
fn diff(
    known: &mut Known,
    items: Vec<Value>,
    sel: &Selector,
    first: bool,
    since: u64,
) -> Vec<(&'static str, Value)> {
    let mut events = Vec::new();
    let mut now_keys = std::collections::HashSet::new();
    for o in items.into_iter().filter(|o| sel.matches(o)) {
        let key = format!(
            "{}/{}",
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap_or("")
        );
        let rv = o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        now_keys.insert(key.clone());
        // Kept as text, not as a JSON tree: a watch holds every object it has sent, and
        // the tree of a pod takes several times its text's memory.
        let text = |o: &Value| o.to_string().into_boxed_str();
        match known.get_mut(&key) {
            None => {
                let new = rv.parse::<u64>().unwrap_or(0) > since;
                known.insert(key, (rv, text(&o)));
                if !first || since == 0 || new {
                    events.push(("ADDED", o));
                }
            }
            Some(seen) if seen.0 != rv => {
                *seen = (rv, text(&o));
                events.push(("MODIFIED", o));
            }
            _ => {}
        }
    }
    let gone: Vec<String> = known
        .keys()
        .filter(|k| !now_keys.contains(*k))
        .cloned()
        .collect();
    for k in gone {
        if let Some((_, o)) = known.remove(&k) {
            events.push(("DELETED", serde_json::from_str(&o).unwrap_or(Value::Null)));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, rv: &str, app: &str) -> Value {
        json!({"metadata": {"namespace": "default", "name": name, "resourceVersion": rv,
                            "labels": {"app": app}}})
    }

    fn kinds(evs: &[(&'static str, Value)]) -> Vec<(&'static str, String)> {
        evs.iter()
            .map(|(t, o)| (*t, o["metadata"]["name"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    #[test]
    fn diff_sends_what_changed_only() {
        let all = Selector::new(None, None).unwrap();
        let mut known = HashMap::new();
        let evs = diff(
            &mut known,
            vec![obj("a", "5", "x"), obj("b", "9", "x")],
            &all,
            true,
            0,
        );
        assert_eq!(kinds(&evs), [("ADDED", "a".into()), ("ADDED", "b".into())]);
        // The same list again (a wake-up for another kind's change): nothing.
        let evs = diff(
            &mut known,
            vec![obj("a", "5", "x"), obj("b", "9", "x")],
            &all,
            false,
            0,
        );
        assert!(evs.is_empty(), "{evs:?}");
        let evs = diff(
            &mut known,
            vec![obj("a", "6", "x"), obj("c", "10", "x")],
            &all,
            false,
            0,
        );
        let mut got = kinds(&evs);
        got.sort();
        assert_eq!(
            got,
            [
                ("ADDED", "c".into()),
                ("DELETED", "b".into()),
                ("MODIFIED", "a".into())
            ]
        );
    }

    #[test]
    fn diff_first_round_after_a_version_and_selector() {
        let mut known = HashMap::new();
        let all = Selector::new(None, None).unwrap();
        // Watching from resourceVersion 7: only the newer objects are sent at first, the
        // others are known.
        let evs = diff(
            &mut known,
            vec![obj("a", "5", "x"), obj("b", "9", "x")],
            &all,
            true,
            7,
        );
        assert_eq!(kinds(&evs), [("ADDED", "b".into())]);
        let evs = diff(
            &mut known,
            vec![obj("a", "8", "x"), obj("b", "9", "x")],
            &all,
            false,
            7,
        );
        assert_eq!(kinds(&evs), [("MODIFIED", "a".into())]);
        // An object that stops matching the selector leaves the watch as DELETED.
        let mut known = HashMap::new();
        let sel = Selector::new(Some("app=x"), None).unwrap();
        diff(
            &mut known,
            vec![obj("a", "5", "x"), obj("b", "5", "y")],
            &sel,
            true,
            0,
        );
        let evs = diff(&mut known, vec![obj("a", "6", "y")], &sel, false, 0);
        assert_eq!(kinds(&evs), [("DELETED", "a".into())]);
    }

    #[test]
    fn paths() {
        let t = parse_path("/api/v1/namespaces/default/pods/web").unwrap();
        assert_eq!(
            (t.kind.plural, t.ns.as_deref(), t.name.as_deref()),
            ("pods", Some("default"), Some("web"))
        );
        let t = parse_path("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(
            (t.kind.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = parse_path("/apis/apps/v1/deployments").unwrap();
        assert_eq!((t.kind.plural, t.ns.as_deref()), ("deployments", None));
        let t = parse_path("/api/v1/nodes/n1").unwrap();
        assert_eq!(t.name.as_deref(), Some("n1"));
        let t = parse_path("/api/v1/namespaces/default/pods/web/log").unwrap();
        assert_eq!(t.sub.as_deref(), Some("log"));
        assert!(parse_path("/api/v1/namespaces/default/nodes").is_none());
        assert!(parse_path("/apis/apps/v2/deployments").is_none());
        assert_eq!(
            url_pairs("labelSelector=app%3Dweb&fieldSelector=a+b"),
            vec![
                ("labelSelector".into(), "app=web".into()),
                ("fieldSelector".into(), "a b".into())
            ]
        );
    }
}
