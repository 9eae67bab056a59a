//! Server-side apply through the API: `PATCH` with `application/apply-patch+yaml` (what
//! `kubectl apply --server-side` and the client libraries' `Apply` send), answered as the API
//! server does: the `fieldManager` query parameter required (422 otherwise), `force=true`
//! taking over conflicting fields, 409 `Conflict` with `FieldManagerConflict` causes
//! otherwise, an apply to a missing object creating it (201). The merge and the ownership are
//! `managed_fields.rs`; who a non-apply write records as its manager is here too.

// A failed step's error is the request's answer (a Response), made once per request.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::front::{url_pairs, Front};
use super::managed_fields::{self, Applied};
use super::openapi::{self, Validation};
use super::registry::Kind;
use super::{bad_request, status_error};

pub const MEDIA_TYPE: &str = "application/apply-patch+yaml";

/// Who a write is, for managedFields.
pub(super) enum Writer {
    /// A create, replace, patch or scale: an Update entry for this manager.
    Update {
        manager: String,
        subresource: &'static str,
    },
    /// An apply: the entries are already computed.
    Applied,
}

impl Writer {
    /// The `fieldManager` query parameter, else the API server's default: the User-Agent up
    /// to its first `/` (`kubectl/v1.33.0 (linux/amd64) ...` → `kubectl`).
    pub(super) fn of(
        query: Option<&str>,
        headers: &HeaderMap,
        subresource: &'static str,
    ) -> Writer {
        let given = url_pairs(query.unwrap_or(""))
            .into_iter()
            .find(|(k, _)| k == "fieldManager")
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty());
        let manager = given.unwrap_or_else(|| {
            let ua = headers
                .get(header::USER_AGENT)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            ua.split('/')
                .next()
                .unwrap_or("")
                .chars()
                .take(128)
                .collect()
        });
        Writer::Update {
            manager,
            subresource,
        }
    }

    /// Records the write of `new` over `old` (None: a create) in `new`'s managedFields.
    pub(super) fn record(&self, kind: &Kind, old: Option<&Value>, new: &mut Value) {
        if let Writer::Update {
            manager,
            subresource,
        } = self
        {
            let service = kind.plural == "services";
            managed_fields::update(old, new, manager, &kind.api_version(), subresource, service);
        }
    }
}

fn invalid_options(field: &str, reason: &str, why: &str) -> Response {
    status_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("PatchOptions.meta.k8s.io \"\" is invalid: {field}: {why}"),
        Some(json!({"group": "meta.k8s.io", "kind": "PatchOptions",
                    "causes": [{"reason": reason, "message": why, "field": field}]})),
    )
}

/// The API server's check of a PATCH's options: `fieldManager` required for apply, `force`
/// only there.
pub(super) fn check_options(ctype: &str, query: Option<&str>) -> Result<(), Response> {
    let q = url_pairs(query.unwrap_or(""));
    let has = |k: &str| q.iter().any(|(n, v)| n == k && !v.is_empty());
    if ctype == MEDIA_TYPE && !has("fieldManager") {
        return Err(invalid_options(
            "fieldManager",
            "FieldValueRequired",
            "Required value: is required for apply patch",
        ));
    }
    if ctype != MEDIA_TYPE && q.iter().any(|(n, _)| n == "force") {
        return Err(invalid_options(
            "force",
            "FieldValueForbidden",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    Ok(())
}

impl Front {
    /// An apply to `name`. `check_options` has passed.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn apply(
        &self,
        kind: &'static Kind,
        ns: &str,
        name: &str,
        body: &Bytes,
        query: Option<&str>,
        dry: bool,
        validation: Validation,
    ) -> Result<Response, Response> {
        let q = url_pairs(query.unwrap_or(""));
        let manager = q
            .iter()
            .find(|(k, _)| k == "fieldManager")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let force = super::query_bool(
            q.iter()
                .find(|(k, _)| k == "force")
                .map(|(_, v)| v.as_str()),
        );
        // JSON is YAML: one parser for both.
        let mut config: Value = serde_yaml_ng::from_slice(body)
            .map_err(|e| bad_request(format!("error decoding YAML: {e}")))?;
        if !config.is_object() {
            return Err(bad_request(
                "the apply configuration is not an object".into(),
            ));
        }
        if !config["metadata"]["managedFields"].is_null() {
            return Err(bad_request("metadata.managedFields must be nil".into()));
        }
        let want = kind.api_version();
        match config["apiVersion"].as_str() {
            Some(v) if v == want => {}
            Some(v) => {
                return Err(bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({want})"
                )))
            }
            None => {
                return Err(bad_request(
                    "apiVersion and kind are required in an apply configuration".into(),
                ))
            }
        }
        if config["kind"].is_null() {
            return Err(bad_request(
                "apiVersion and kind are required in an apply configuration".into(),
            ));
        }
        match config["metadata"]["name"].as_str() {
            Some(n) if n != name => {
                return Err(bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
            Some(_) => {}
            None => config["metadata"]["name"] = name.into(),
        }
        self.check_body(kind, ns, &config)?;
        let warnings = openapi::unknown_fields(kind, &mut config, validation)?;
        let a = Applied {
            config: &config,
            manager: &manager,
            api_version: &want,
            force,
            service: kind.plural == "services",
        };
        let cur = self.current(kind, ns, name).await?;
        let stored = self.stored(kind, ns, name);
        let mut r = match (cur, stored) {
            (Some(_), None) => return Err(self.file_owned(kind, name)),
            (None, None) => {
                let obj = managed_fields::apply(None, &a).map_err(|c| conflicts(&c))?;
                self.create(kind, ns, Ok(obj), dry, &Writer::Applied)
                    .await?
            }
            (cur, Some(stored)) => {
                let given = config["metadata"]["resourceVersion"].as_str().unwrap_or("");
                let live_rv = cur
                    .as_ref()
                    .and_then(|c| c["metadata"]["resourceVersion"].as_str());
                if !given.is_empty() && live_rv != Some(given) {
                    return Err(super::write::conflict(kind, name));
                }
                let mut obj =
                    managed_fields::apply(Some(&stored), &a).map_err(|c| conflicts(&c))?;
                self.finish(kind, ns, name, &mut obj, &stored, dry, &Writer::Applied)?
            }
        };
        openapi::warn(&mut r, &warnings);
        Ok(r)
    }
}

/// 409 with one `FieldManagerConflict` cause per field, as the API server's
/// `NewApplyConflict` (no name or kind in its details).
fn conflicts(cs: &[managed_fields::Conflict]) -> Response {
    let causes: Vec<Value> = cs
        .iter()
        .map(|c| {
            json!({"type": "FieldManagerConflict",
                   "message": format!("conflict with {}", c.owner),
                   "field": super::fieldset::display(&c.path)})
        })
        .collect();
    status_error(
        StatusCode::CONFLICT,
        "Conflict",
        managed_fields::conflict_message(cs),
        Some(json!({"causes": causes})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(r: Response) -> (StatusCode, Value) {
        let code = r.status();
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (code, serde_json::from_slice(&b).unwrap())
    }

    #[tokio::test]
    async fn patch_options_as_the_api_server_checks_them() {
        assert!(check_options(MEDIA_TYPE, Some("fieldManager=kubectl&force=false")).is_ok());
        assert!(check_options("application/merge-patch+json", Some("fieldManager=x")).is_ok());
        let (code, s) = text(check_options(MEDIA_TYPE, Some("force=true")).unwrap_err()).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            s["message"],
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
        );
        let (_, s) =
            text(check_options("application/merge-patch+json", Some("force=true")).unwrap_err())
                .await;
        assert_eq!(s["details"]["causes"][0]["field"], "force");
    }

    #[test]
    fn the_manager_defaults_to_the_user_agent_product() {
        let mut h = HeaderMap::new();
        h.insert(
            header::USER_AGENT,
            "kubectl/v1.33.0 (linux/amd64) kubernetes/abc"
                .parse()
                .unwrap(),
        );
        let name = |w: Writer| match w {
            Writer::Update { manager, .. } => manager,
            Writer::Applied => String::new(),
        };
        assert_eq!(name(Writer::of(None, &h, "")), "kubectl");
        assert_eq!(
            name(Writer::of(Some("fieldManager=kubectl-edit"), &h, "")),
            "kubectl-edit"
        );
    }
}
