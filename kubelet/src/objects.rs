//! ConfigMaps and Secrets from the manifest directory, namespaced, as the API server would
//! hold them: validated (keys, the required keys of each Secret type), `immutable` enforced
//! (an edit of an immutable object is refused and the old content stays in force).
//!
//! Secret bytes never reach an error message: a bad Secret is named by file, document and
//! field only. The agent keeps Secrets in memory; their only files are their volumes' and,
//! for an immutable one, its pinned copy.
//!
//! An immutable object's content is pinned under `<root-dir>/immutable/` (0600 files in a
//! 0700 directory), so that an edit made while the agent was down is refused at its next
//! start too, as the API server refuses it whatever happened to its clients; deleting the
//! object (while the agent runs) unpins it, and it may then come back with new content.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::Value;

/// One ConfigMap or Secret: its data as bytes (a ConfigMap's `data` and `binaryData`, a
/// Secret's `data` with `stringData` over it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub data: BTreeMap<String, Vec<u8>>,
    pub immutable: bool,
    /// A ConfigMap's `binaryData` keys: in its volumes, not in env (as with the kubelet).
    pub binary: std::collections::BTreeSet<String>,
    /// A Secret's type (`Opaque` when left out); empty for ConfigMaps.
    pub type_: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }

    /// The API server's lower-case resource name, as in `configmap "x" not found`.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }
}

/// `(kind, namespace, name)`.
pub type Key = (Kind, String, String);

/// Is this document one of ours (the pod parser skips it)?
pub fn is_object(doc: &Value) -> bool {
    doc.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && matches!(
            doc.get("kind").and_then(Value::as_str),
            Some("ConfigMap" | "Secret")
        )
}

/// A data key as the API server accepts it: `[-._a-zA-Z0-9]+`, at most 253 bytes, not `.`
/// or `..` (a key is a file name in a volume).
pub fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn check_keys<'a>(keys: impl Iterator<Item = &'a String>, field: &str) -> Result<(), String> {
    for k in keys {
        if !valid_key(k) {
            return Err(format!(
                "{field}[{k:?}]: Invalid value: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
            ));
        }
    }
    Ok(())
}

fn meta_name(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(String, String), String> {
    let name = meta.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err("metadata.name: Required value".into());
    }
    if !crate::manifest::dns_subdomain(&name) {
        return Err(format!("metadata.name: Invalid value: {name:?}"));
    }
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    if !crate::manifest::dns_label(&ns) {
        return Err(format!("metadata.namespace: Invalid value: {ns:?}"));
    }
    Ok((ns, name))
}

fn parse_config_map(doc: &Value) -> Result<(Key, Object), String> {
    let cm: ConfigMap = serde_path_to_error::deserialize(doc)
        .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    let (ns, name) = meta_name(&cm.metadata)?;
    let mut data = BTreeMap::new();
    for (k, v) in cm.data.into_iter().flatten() {
        data.insert(k, v.into_bytes());
    }
    check_keys(data.keys(), "data")?;
    let mut binary = std::collections::BTreeSet::new();
    for (k, v) in cm.binary_data.into_iter().flatten() {
        if data.contains_key(&k) {
            return Err(format!(
                "binaryData[{k:?}]: Invalid value: duplicate of key present in data"
            ));
        }
        if !valid_key(&k) {
            return Err(format!("binaryData[{k:?}]: Invalid value"));
        }
        binary.insert(k.clone());
        data.insert(k, v.0);
    }
    let obj = Object {
        data,
        binary,
        immutable: cm.immutable.unwrap_or(false),
        type_: String::new(),
    };
    Ok(((Kind::ConfigMap, ns, name), obj))
}

/// The keys each built-in Secret type requires (the API server's validation).
fn check_secret_type(type_: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    let need = |k: &str| {
        if data.contains_key(k) {
            Ok(())
        } else {
            Err(format!("data[{k}]: Required value"))
        }
    };
    match type_ {
        "Opaque" => Ok(()),
        "kubernetes.io/dockerconfigjson" => {
            need(".dockerconfigjson")?;
            serde_json::from_slice::<Value>(&data[".dockerconfigjson"])
                .map(|_| ())
                .map_err(|_| "data[.dockerconfigjson]: Invalid value: not valid JSON".to_string())
        }
        "kubernetes.io/dockercfg" => need(".dockercfg"),
        "kubernetes.io/tls" => {
            need("tls.crt")?;
            need("tls.key")
        }
        "kubernetes.io/basic-auth" => {
            if data.contains_key("username") || data.contains_key("password") {
                Ok(())
            } else {
                Err("data[username]: Required value: must have at least one of username or password".into())
            }
        }
        "kubernetes.io/ssh-auth" => need("ssh-privatekey"),
        _ => Ok(()),
    }
}

fn parse_secret(doc: &Value) -> Result<(Key, Object), String> {
    // The error names the field only: a decoding error could quote the secret bytes.
    let s: Secret = serde_path_to_error::deserialize(doc)
        .map_err(|e| format!("{}: invalid value", e.path()))?;
    let (ns, name) = meta_name(&s.metadata)?;
    let mut data: BTreeMap<String, Vec<u8>> = s
        .data
        .into_iter()
        .flatten()
        .map(|(k, v)| (k, v.0))
        .collect();
    check_keys(data.keys(), "data")?;
    let string_data = s.string_data.unwrap_or_default();
    check_keys(string_data.keys(), "stringData")?;
    for (k, v) in string_data {
        data.insert(k, v.into_bytes());
    }
    let type_ = s.type_.unwrap_or_else(|| "Opaque".into());
    check_secret_type(&type_, &data)?;
    let obj = Object {
        data,
        binary: Default::default(),
        immutable: s.immutable.unwrap_or(false),
        type_,
    };
    Ok(((Kind::Secret, ns, name), obj))
}

/// Parses a ConfigMap or Secret document; the error names the field, never a value.
pub fn parse_doc(doc: &Value) -> Result<(Key, Object), String> {
    match doc.get("kind").and_then(Value::as_str) {
        Some("ConfigMap") => parse_config_map(doc),
        _ => parse_secret(doc),
    }
}

/// The pinned copies of immutable objects, one file each.
#[derive(Debug, Clone)]
struct Pins {
    dir: PathBuf,
    items: BTreeMap<Key, Object>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Pinned {
    kind: String,
    namespace: String,
    name: String,
    #[serde(rename = "type", default)]
    type_: String,
    /// Base64, as the API shows Secret data.
    data: BTreeMap<String, String>,
    #[serde(default)]
    binary: std::collections::BTreeSet<String>,
}

impl Pins {
    fn file(&self, (kind, ns, name): &Key) -> PathBuf {
        self.dir
            .join(format!("{}_{ns}_{name}.json", kind.resource()))
    }

    /// Reads the pinned objects; an unreadable pin is skipped with an error in the log (the
    /// object is then unpinned, never invented).
    fn load(dir: PathBuf) -> Pins {
        use base64::Engine;
        let mut items = BTreeMap::new();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let parsed = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Pinned>(&b).map_err(|e| e.to_string()));
            let pin = match parsed {
                Ok(pin) => pin,
                Err(e) => {
                    tracing::error!(
                        "{}: unreadable pin of an immutable object: {e}",
                        p.display()
                    );
                    continue;
                }
            };
            let kind = match pin.kind.as_str() {
                "ConfigMap" => Kind::ConfigMap,
                "Secret" => Kind::Secret,
                _ => continue,
            };
            let mut data = BTreeMap::new();
            for (k, v) in pin.data {
                match base64::engine::general_purpose::STANDARD.decode(v) {
                    Ok(b) => {
                        data.insert(k, b);
                    }
                    Err(_) => continue,
                }
            }
            let obj = Object {
                data,
                immutable: true,
                binary: pin.binary,
                type_: pin.type_,
            };
            items.insert((kind, pin.namespace, pin.name), obj);
        }
        Pins { dir, items }
    }

    /// Writes the pin, 0600 and atomically (a crash leaves the old pin or the new one).
    fn save(&mut self, key: &Key, obj: &Object) -> std::io::Result<()> {
        use base64::Engine;
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let (kind, ns, name) = key;
        let pin = Pinned {
            kind: kind.as_str().into(),
            namespace: ns.clone(),
            name: name.clone(),
            type_: obj.type_.clone(),
            data: obj
                .data
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        base64::engine::general_purpose::STANDARD.encode(v),
                    )
                })
                .collect(),
            binary: obj.binary.clone(),
        };
        crate::store::write_private(
            &self.file(key),
            &serde_json::to_vec(&pin).unwrap_or_default(),
        )?;
        self.items.insert(key.clone(), obj.clone());
        Ok(())
    }

    fn remove(&mut self, key: &Key) {
        if self.items.remove(key).is_some() {
            let _ = std::fs::remove_file(self.file(key));
        }
    }
}

/// The ConfigMaps and Secrets in force, and why some documents were refused.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    items: BTreeMap<Key, Object>,
    /// The file each object came from, for errors about it.
    origins: BTreeMap<Key, PathBuf>,
    pub errors: BTreeMap<PathBuf, String>,
    /// Bumped whenever an object's content changes (volume refreshes watch it).
    pub generation: u64,
    /// Where immutable objects are pinned (none: in memory only, as in unit tests).
    pins: Option<Pins>,
    /// The `kube-root-ca.crt` ConfigMap, in every namespace (see [`Objects::publish_root_ca`]).
    root_ca: Option<Object>,
}

impl Objects {
    /// Objects whose immutable ones are pinned under `<root>/immutable/`.
    pub fn pinned_under(root: &Path) -> Objects {
        Objects {
            pins: Some(Pins::load(root.join("immutable"))),
            ..Objects::default()
        }
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Object> {
        self.items
            .get(&(kind, ns.to_string(), name.to_string()))
            .or_else(|| {
                let root_ca =
                    kind == Kind::ConfigMap && name == crate::service_account::ROOT_CA_CONFIG_MAP;
                self.root_ca.as_ref().filter(|_| root_ca)
            })
    }

    /// Publishes `ca_pem` as the `kube-root-ca.crt` ConfigMap (key `ca.crt`) of every
    /// namespace, as the controller manager's root-ca-cert-publisher does; the pods'
    /// `kube-api-access-*` volumes read it. A manifest's own object of that name wins.
    pub fn publish_root_ca(&mut self, ca_pem: &str) {
        self.root_ca = Some(Object {
            data: [("ca.crt".to_string(), ca_pem.as_bytes().to_vec())].into(),
            immutable: false,
            binary: Default::default(),
            type_: String::new(),
        });
        self.generation += 1;
    }

    #[cfg(test)]
    pub fn insert(&mut self, key: Key, obj: Object) {
        self.items.insert(key, obj);
        self.generation += 1;
    }

    /// Re-reads the directory's ConfigMaps and Secrets. An immutable object keeps its
    /// content against an edit (the edit is an error); a file that stops parsing keeps its
    /// objects, as it keeps its pods.
    pub fn rescan(&mut self, dir: &Path) {
        let mut next: BTreeMap<Key, Object> = BTreeMap::new();
        let mut errors = BTreeMap::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| crate::manifest::is_manifest_name(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        // A file that does not parse may hold a pinned object: it stays pinned.
        let mut broken = false;
        for p in paths {
            let docs = std::fs::read_to_string(&p)
                .map_err(|e| e.to_string())
                .and_then(|t| crate::manifest::documents(&p, &t));
            let Ok(docs) = docs else {
                broken = true;
                // The pod parser reports the file; its objects stay as they were.
                for (k, o) in &self.items {
                    if self.origin_of(k) == Some(&p) {
                        next.insert(k.clone(), o.clone());
                    }
                }
                continue;
            };
            for (i, doc) in docs.iter().enumerate().filter(|(_, d)| is_object(d)) {
                match parse_doc(doc) {
                    Ok((key, obj)) => {
                        self.origins.insert(key.clone(), p.clone());
                        next.entry(key).or_insert(obj);
                    }
                    Err(e) => {
                        errors.insert(p.clone(), format!("{}: document {i}: {e}", p.display()));
                    }
                }
            }
        }
        let pinned = self.pins.as_ref().map(|p| &p.items);
        for (key, new) in next.iter_mut() {
            let Some(old) = self
                .items
                .get(key)
                .filter(|o| o.immutable)
                .or_else(|| pinned.and_then(|p| p.get(key)))
            else {
                continue;
            };
            if new != old {
                let (kind, ns, name) = key;
                let file = self.origin_of(key).cloned().unwrap_or_default();
                let field = if new.immutable { "data" } else { "immutable" };
                let e = format!(
                    "{}: {} \"{name}\" is invalid: {field}: Forbidden: field is immutable when `immutable` is set (in namespace {ns}; the old content stays in force)",
                    file.display(),
                    kind.as_str()
                );
                errors
                    .entry(file)
                    .and_modify(|x: &mut String| {
                        x.push_str("; ");
                        x.push_str(&e);
                    })
                    .or_insert(e);
                *new = old.clone();
            }
        }
        if let Some(pins) = self.pins.as_mut() {
            for (key, obj) in &next {
                if obj.immutable && pins.items.get(key) != Some(obj) {
                    if let Err(e) = pins.save(key, obj) {
                        let (kind, ns, name) = key;
                        tracing::error!("pinning immutable {} {ns}/{name}: {e}", kind.as_str());
                    }
                }
            }
            if !broken {
                let gone: Vec<Key> = pins
                    .items
                    .keys()
                    .filter(|k| !next.contains_key(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    pins.remove(&k);
                }
            }
        }
        if next != self.items {
            self.generation += 1;
        }
        self.origins.retain(|k, _| next.contains_key(k));
        self.items = next;
        self.errors = errors;
    }

    fn origin_of(&self, key: &Key) -> Option<&PathBuf> {
        self.origins.get(key)
    }

    /// The objects in force with the file each came from (the API lists them).
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Object, Option<&PathBuf>)> {
        self.items.iter().map(|(k, o)| (k, o, self.origins.get(k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &Path, text: &str) -> Objects {
        std::fs::write(dir.join("o.yaml"), text).unwrap();
        let mut o = Objects::default();
        o.rescan(dir);
        o
    }

    #[test]
    fn kinds_types_and_immutability() {
        let dir = tempfile::tempdir().unwrap();
        let o = load(
            dir.path(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {a: x}\nbinaryData: {b: AAEC}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ns}\ndata: {pw: aHVudGVyMg==}\nstringData: {user: bob}\n",
        );
        assert!(o.errors.is_empty(), "{:?}", o.errors);
        let cm = o.get(Kind::ConfigMap, "default", "cm").unwrap();
        assert_eq!(cm.data["b"], vec![0u8, 1, 2]);
        let s = o.get(Kind::Secret, "ns", "s").unwrap();
        assert_eq!(s.data["pw"], b"hunter2");
        assert_eq!(s.type_, "Opaque");
        for (doc, want) in [
            ("kind: Secret\nmetadata: {name: t}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x}", "data[tls.key]: Required value"),
            ("kind: Secret\nmetadata: {name: t}\ntype: kubernetes.io/basic-auth\nstringData: {x: y}", "at least one of username or password"),
            ("kind: Secret\nmetadata: {name: t}\ntype: kubernetes.io/dockerconfigjson\nstringData: {.dockerconfigjson: '{nope'}", "not valid JSON"),
            ("kind: Secret\nmetadata: {name: t}\ndata: {k: 'hunter2!!'}", "data.k: invalid value"),
            ("kind: ConfigMap\nmetadata: {name: t}\ndata: {'a/b': x}", "Invalid value"),
            ("kind: ConfigMap\nmetadata: {name: t}\ndata: {a: x}\nbinaryData: {a: AA==}", "duplicate"),
        ] {
            let o = load(dir.path(), &format!("apiVersion: v1\n{doc}\n"));
            let e = o.errors.values().next().unwrap_or_else(|| panic!("{doc}"));
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let mut o = Objects::default();
        let f = dir.path().join("o.yaml");
        std::fs::write(&f, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: im}\nimmutable: true\ndata: {a: one}\n").unwrap();
        o.rescan(dir.path());
        let g = o.generation;
        std::fs::write(&f, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: im}\nimmutable: true\ndata: {a: two}\n").unwrap();
        o.rescan(dir.path());
        assert_eq!(
            o.get(Kind::ConfigMap, "default", "im").unwrap().data["a"],
            b"one"
        );
        assert!(
            o.errors.values().any(|e| e.contains("field is immutable")),
            "{:?}",
            o.errors
        );
        assert_eq!(o.generation, g);
        std::fs::remove_file(&f).unwrap();
        o.rescan(dir.path());
        assert!(o.get(Kind::ConfigMap, "default", "im").is_none());
    }

    #[test]
    fn immutable_pins_survive_a_restart() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let f = dir.path().join("o.yaml");
        let doc = |v: &str| {
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nimmutable: true\nstringData: {{k: {v}}}\n")
        };
        std::fs::write(&f, doc("one")).unwrap();
        let mut o = Objects::pinned_under(root.path());
        o.rescan(dir.path());
        let pin = root.path().join("immutable/secret_default_s.json");
        let mode = std::fs::metadata(&pin).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The agent restarts after an edit: the pin refuses it.
        std::fs::write(&f, doc("two")).unwrap();
        let mut o = Objects::pinned_under(root.path());
        o.rescan(dir.path());
        assert_eq!(
            o.get(Kind::Secret, "default", "s").unwrap().data["k"],
            b"one"
        );
        let e = o.errors.values().next().unwrap();
        assert!(e.contains("Secret \"s\" is invalid: data: Forbidden: field is immutable when `immutable` is set"), "{e}");
        assert!(!e.contains("two") && !e.contains("one"), "{e}");
        // Made mutable: refused too.
        std::fs::write(
            &f,
            doc("one").replace("immutable: true", "immutable: false"),
        )
        .unwrap();
        o.rescan(dir.path());
        assert!(o
            .errors
            .values()
            .any(|e| e.contains("immutable: Forbidden")));
        // Deleted, the pin goes; the object may then come back with new content.
        std::fs::remove_file(&f).unwrap();
        o.rescan(dir.path());
        assert!(!pin.exists());
        std::fs::write(&f, doc("two")).unwrap();
        let mut o = Objects::pinned_under(root.path());
        o.rescan(dir.path());
        assert!(o.errors.is_empty(), "{:?}", o.errors);
        assert_eq!(
            o.get(Kind::Secret, "default", "s").unwrap().data["k"],
            b"two"
        );
    }
}
