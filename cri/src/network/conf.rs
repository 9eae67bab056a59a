//! Finding the network configuration as containerd (go-cni over libcni) does: the files of
//! the conf dir ending in `.conf`, `.conflist` or `.json`, by name; the first that holds a
//! network wins (a list with no plugins, or a single config with no `type`, is skipped);
//! a file that does not parse is an error, not skipped, so a typo does not silently select
//! the next file.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::types::ConfList;

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

/// The first network configuration of `dir`, or `None` when it has none (or is missing).
pub fn load_dir(dir: &Path) -> Result<Option<ConfList>, ConfError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            ) && p.is_file()
        })
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read(&path).map_err(|source| ConfError::Io {
            path: path.clone(),
            source,
        })?;
        let is_list = path.extension().and_then(|e| e.to_str()) == Some("conflist");
        let parsed = if is_list {
            parse_list(&text, &path)
        } else {
            parse_single(&text, &path)
        };
        match parsed {
            Ok(Some(list)) => return Ok(Some(list)),
            Ok(None) => tracing::warn!("CNI config {} has no network: skipped", path.display()),
            Err(why) => return Err(ConfError::Invalid { path, why }),
        }
    }
    Ok(None)
}

fn object(text: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn string_field(m: &Map<String, Value>, key: &str) -> Result<String, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("{key:?} must be a string, not {other}")),
    }
}

/// A `.conflist`; `None` when it lists no plugins.
pub fn parse_list(text: &[u8], path: &Path) -> Result<Option<ConfList>, String> {
    let m = object(text)?;
    let name = string_field(&m, "name")?;
    if name.is_empty() {
        return Err("the list has no \"name\"".into());
    }
    let cni_version = string_field(&m, "cniVersion")?;
    let cni_versions = match m.get("cniVersions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("\"cniVersions\" holds a non-string: {v}"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("\"cniVersions\" must be an array, not {other}")),
    };
    let disable_check = m
        .get("disableCheck")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let plugins = match m.get("plugins") {
        None | Some(Value::Null) => return Err("the list has no \"plugins\"".into()),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(format!("\"plugins\" must be an array, not {other}")),
    };
    if plugins.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(plugins.len());
    for (i, p) in plugins.iter().enumerate() {
        let Value::Object(p) = p else {
            return Err(format!("plugin {i} is not an object"));
        };
        let typ = string_field(p, "type").map_err(|e| format!("plugin {i}: {e}"))?;
        if typ.is_empty() || typ.contains('/') {
            return Err(format!(
                "plugin {i} has no usable \"type\" (a binary name): {typ:?}"
            ));
        }
        out.push(p.clone());
    }
    Ok(Some(ConfList {
        name,
        cni_version,
        cni_versions,
        disable_check,
        plugins: out,
        source: path.to_path_buf(),
    }))
}

/// A single `.conf`/`.json` network configuration as a list of one; `None` without a
/// `type`.
pub fn parse_single(text: &[u8], path: &Path) -> Result<Option<ConfList>, String> {
    let m = object(text)?;
    let typ = string_field(&m, "type")?;
    if typ.is_empty() {
        return Ok(None);
    }
    let list = serde_json::json!({
        "name": string_field(&m, "name")?,
        "cniVersion": string_field(&m, "cniVersion")?,
        "plugins": [Value::Object(m)],
    });
    parse_list(list.to_string().as_bytes(), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write");
    }

    #[test]
    fn the_first_file_by_name_with_a_network_wins() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(load_dir(&d.path().join("missing")).expect("load"), None);
        assert_eq!(load_dir(d.path()).expect("load"), None);
        write(d.path(), "README", "not a config");
        write(
            d.path(),
            "05-empty.conflist",
            r#"{"name":"e","plugins":[]}"#,
        );
        write(
            d.path(),
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            d.path(),
            "10-a.conf",
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge","bridge":"x0"}"#,
        );
        let list = load_dir(d.path()).expect("load").expect("a network");
        assert_eq!(list.name, "a");
        assert_eq!(list.cni_version, "0.4.0");
        assert_eq!(list.plugin_type(0), "bridge");
        assert_eq!(list.plugins[0]["bridge"], "x0");
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it() {
        let d = tempfile::tempdir().expect("tempdir");
        write(
            d.path(),
            "10-bad.conflist",
            r#"{"name":"n","plugins":[{}]}"#,
        );
        write(
            d.path(),
            "20-ok.conflist",
            r#"{"name":"o","plugins":[{"type":"x"}]}"#,
        );
        let e = load_dir(d.path()).expect_err("broken").to_string();
        assert!(e.contains("10-bad.conflist") && e.contains("type"), "{e}");
        for bad in [
            "{",
            "[]",
            r#"{"plugins":[{"type":"x"}]}"#,
            r#"{"name":"n","plugins":{}}"#,
            r#"{"name":"n","plugins":[{"type":"../x"}]}"#,
            r#"{"name":"n","cniVersion":1,"plugins":[{"type":"x"}]}"#,
        ] {
            assert!(parse_list(bad.as_bytes(), Path::new("f")).is_err(), "{bad}");
        }
    }

    #[test]
    fn capabilities_are_the_ones_set_true() {
        let list = parse_list(
            br#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"portmap",
                "capabilities":{"portMappings":true,"bandwidth":false}}]}"#,
            Path::new("f"),
        )
        .expect("parse")
        .expect("list");
        assert_eq!(list.capabilities(0), vec!["portMappings".to_string()]);
    }
}
