//! `/openapi/v2`: the Swagger 2.0 document the API server serves, made once from the same
//! generated schemas as `/openapi/v3` (openapi.rs) and shaped as the API server's: every
//! definition under `#/definitions/` (a reference keeps its description beside `$ref`, where
//! OpenAPI 3 wraps it in an `allOf`), the kinds' `x-kubernetes-group-version-kind`, the patch
//! extensions, and the served resources' paths with their query parameters.
//!
//! kubectl and client-go ask for it as gnostic's protobuf `openapi_v2.Document`
//! (openapi_v2_proto.rs): older kubectl for `explain` and for client-side validation, kubectl
//! up to 1.28 for `apply`'s strategic merge patches, `kubectl explain
//! --output=plaintext-openapiv2` still. The answer follows the Accept header as
//! kube-openapi's handler does: either protobuf spelling, JSON, or 406.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::openapi::{self, COMPONENTS};
use super::openapi_v2_proto;

const DEFINITIONS: &str = "#/definitions/";

/// The media type kube-openapi answers protobuf with (for either spelling asked).
const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
/// What kubectl (1.20 to 1.33) and client-go put in Accept: the older spelling.
const PROTOBUF_OLD_SUBTYPE: &str = "com.github.proto-openapi.spec.v2@v1.0+protobuf";
const PROTOBUF_SUBTYPE: &str = "com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// One encoding of the document with its ETag (kube-openapi's: the SHA-512 of the bytes).
struct Encoded {
    body: Bytes,
    etag: String,
}

impl Encoded {
    fn new(body: Vec<u8>) -> Encoded {
        let digest = ring::digest::digest(&ring::digest::SHA512, &body);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        Encoded {
            body: body.into(),
            etag: format!("\"{hex}\""),
        }
    }
}

struct Encodings {
    json: Encoded,
    /// The protobuf encoding, or why the document has none (a bug the unit tests catch).
    protobuf: Result<Encoded, String>,
}

fn encodings() -> &'static Encodings {
    static ENC: OnceLock<Encodings> = OnceLock::new();
    // Built on the first request, not at start: most clients never ask for v2, and the two
    // encodings are some 750 kB kept for the agent's life.
    ENC.get_or_init(|| {
        let start = std::time::Instant::now();
        let doc = document();
        let enc = Encodings {
            json: Encoded::new(serde_json::to_vec(&doc).unwrap_or_default()),
            protobuf: openapi_v2_proto::encode(&doc)
                .map(Encoded::new)
                .map_err(|e| e.to_string()),
        };
        tracing::info!(
            json_bytes = enc.json.body.len(),
            protobuf_bytes = enc.protobuf.as_ref().map_or(0, |e| e.body.len()),
            ms = start.elapsed().as_millis() as u64,
            "/openapi/v2 built"
        );
        enc
    })
}

/// The whole Swagger 2.0 document: every served group/version in one.
fn document() -> Value {
    let mut definitions = Map::new();
    let mut paths = Map::new();
    for d in openapi::docs() {
        let v3: Value = serde_json::from_slice(&d.body).unwrap_or_default();
        if let Some(schemas) = v3["components"]["schemas"].as_object() {
            for (name, s) in schemas {
                definitions.insert(name.clone(), schema(s, Some(name)));
            }
        }
        if let Some(ps) = v3["paths"].as_object() {
            for (p, item) in ps {
                paths.insert(p.clone(), path_item(p, item));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": openapi::TITLE, "version": openapi::VERSION},
        "paths": paths,
        "definitions": definitions,
    })
}

/// An OpenAPI 3 schema (as openapi.rs makes it) in Swagger 2.0's terms.
fn schema(s: &Value, name: Option<&str>) -> Value {
    let Value::Object(m) = s else {
        return s.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        match k.as_str() {
            "$ref" => {
                let r = v.as_str().unwrap_or_default();
                let to = r.strip_prefix(COMPONENTS).unwrap_or(r);
                out.insert(k.clone(), format!("{DEFINITIONS}{to}").into());
            }
            // The API server's OpenAPI 3 wraps a reference in an allOf to keep a description
            // beside it; Swagger 2.0 has it beside `$ref`.
            "allOf"
                if v.as_array()
                    .is_some_and(|a| a.len() == 1 && a[0].get("$ref").is_some()) =>
            {
                if let Value::Object(inner) = schema(&v[0], None) {
                    out.extend(inner);
                }
            }
            "allOf" => {
                let all = v
                    .as_array()
                    .map(|a| a.iter().map(|i| schema(i, None)).collect());
                out.insert(k.clone(), Value::Array(all.unwrap_or_default()));
            }
            "properties" => {
                let props = v.as_object().map(|p| {
                    p.iter()
                        .map(|(f, ps)| (f.clone(), schema(ps, None)))
                        .collect::<Map<String, Value>>()
                });
                out.insert(k.clone(), Value::Object(props.unwrap_or_default()));
            }
            "items" | "additionalProperties" if v.is_object() => {
                out.insert(k.clone(), schema(v, None));
            }
            // Swagger 2.0 has no int-or-string: the API server's v2 calls IntOrString a
            // string of format int-or-string and Quantity a string.
            "x-kubernetes-int-or-string" => {
                if !m.contains_key("type") {
                    out.insert("type".into(), "string".into());
                    if name == Some("io.k8s.apimachinery.pkg.util.intstr.IntOrString") {
                        out.insert("format".into(), "int-or-string".into());
                    }
                }
            }
            // OpenAPI 3 only.
            "nullable" | "oneOf" | "anyOf" => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// One path of openapi.rs's OpenAPI 3 document in Swagger 2.0's terms, with its path
/// parameters declared as the API server declares them.
fn path_item(path: &str, item: &Value) -> Value {
    let mut out = Map::new();
    if let Some(ops) = item.as_object() {
        for (verb, op) in ops {
            out.insert(verb.clone(), operation(op));
        }
    }
    let params: Vec<Value> = ["name", "namespace"]
        .iter()
        .filter(|p| path.contains(&format!("{{{p}}}")))
        .map(|p| {
            let what = if *p == "name" {
                "name of the object"
            } else {
                "object name and auth scope, such as for teams and projects"
            };
            json!({"name": p, "in": "path", "required": true, "type": "string",
                   "uniqueItems": true, "description": what})
        })
        .collect();
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    Value::Object(out)
}

fn operation(op: &Value) -> Value {
    let Value::Object(m) = op else {
        return op.clone();
    };
    let mut out = Map::new();
    let mut params = Vec::new();
    for (k, v) in m {
        match k.as_str() {
            "parameters" => {
                for p in v.as_array().into_iter().flatten() {
                    let mut q = Map::new();
                    for (pk, pv) in p.as_object().into_iter().flatten() {
                        if pk == "schema" {
                            // A Swagger 2.0 non-body parameter has its type inline.
                            q.extend(pv.as_object().cloned().unwrap_or_default());
                        } else {
                            q.insert(pk.clone(), pv.clone());
                        }
                    }
                    params.push(Value::Object(q));
                }
            }
            "requestBody" => {
                let s = body_schema(v);
                params.insert(
                    0,
                    json!({"name": "body", "in": "body", "required": true, "schema": s}),
                );
            }
            "responses" => {
                let rs: Map<String, Value> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(code, r)| {
                        let mut o = json!({"description": r["description"]});
                        if r.get("content").is_some() {
                            o["schema"] = body_schema(r);
                        }
                        (code.clone(), o)
                    })
                    .collect();
                out.insert(k.clone(), Value::Object(rs));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    Value::Object(out)
}

/// The schema of an OpenAPI 3 request body or response (its JSON content's).
fn body_schema(v: &Value) -> Value {
    let s = &v["content"]["application/json"]["schema"];
    if s.is_null() {
        json!({"type": "object"})
    } else {
        schema(s, None)
    }
}

/// Which encoding an Accept header asks for, as kube-openapi's handler picks it: the first
/// clause (by q, then the more specific, then order, as goautoneg sorts them) naming JSON or
/// either protobuf spelling, `*` matching either.
fn negotiate(accept: &str) -> Option<bool> {
    let mut clauses: Vec<(f32, usize, &str)> = accept
        .split(',')
        .enumerate()
        .filter_map(|(i, c)| {
            let mut parts = c.split(';').map(str::trim);
            let media = parts.next().filter(|m| !m.is_empty())?;
            let q = parts
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse().ok())
                .unwrap_or(1.0);
            Some((q, i, media))
        })
        .filter(|(q, _, _)| *q > 0.0)
        .collect();
    let wildcards = |media: &str| media.split('/').filter(|p| p.trim() == "*").count();
    clauses.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(wildcards(a.2).cmp(&wildcards(b.2)))
            .then(a.1.cmp(&b.1))
    });
    clauses.into_iter().find_map(|(_, _, media)| {
        let (ty, sub) = media.split_once('/').unwrap_or((media, ""));
        if ty != "application" && ty != "*" {
            return None;
        }
        match sub {
            "json" | "*" => Some(false),
            PROTOBUF_SUBTYPE | PROTOBUF_OLD_SUBTYPE => Some(true),
            _ => None,
        }
    })
}

/// The answer to a GET of `/openapi/v2`.
pub fn serve(headers: &HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .filter(|a| !a.trim().is_empty())
        .unwrap_or("*/*");
    let Some(protobuf) = negotiate(accept) else {
        return (
            StatusCode::NOT_ACCEPTABLE,
            [(header::VARY, HeaderValue::from_static("Accept"))],
        )
            .into_response();
    };
    let enc = encodings();
    let (encoded, content_type) = if protobuf {
        match &enc.protobuf {
            Ok(e) => (e, PROTOBUF),
            Err(why) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, why.clone()).into_response();
            }
        }
    } else {
        (&enc.json, "application/json")
    };
    let etag = HeaderValue::from_str(&encoded.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .map(|t| t.trim())
                // A weak tag matches too (If-None-Match compares weakly, as Go's ServeContent).
                .any(|t| t.strip_prefix("W/").unwrap_or(t) == encoded.etag || t == "*")
        });
    let common = [
        (header::VARY, HeaderValue::from_static("Accept")),
        (header::ETAG, etag),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        encoded.body.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::openapi_v2_proto::{additional_properties_item, Document, Schema};
    use prost::Message;

    fn doc() -> Value {
        serde_json::from_slice(&encodings().json.body).unwrap()
    }

    fn get(accept: Option<&str>, etag: Option<&str>) -> Response {
        let mut h = HeaderMap::new();
        if let Some(a) = accept {
            h.insert(header::ACCEPT, HeaderValue::from_str(a).unwrap());
        }
        if let Some(e) = etag {
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(e).unwrap());
        }
        serve(&h)
    }

    #[test]
    fn definitions_are_the_api_servers() {
        let d = doc();
        assert_eq!(d["swagger"], "2.0");
        let defs = &d["definitions"];
        let deploy = &defs["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deploy["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        // The description beside `$ref`, no allOf.
        assert_eq!(
            deploy["properties"]["spec"],
            json!({"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec",
                   "description": "Specification of the desired behavior of the Deployment."})
        );
        let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert_eq!(
            containers["items"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Container"
        );
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let ios = &defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(
            (&ios["type"], &ios["format"]),
            (&json!("string"), &json!("int-or-string"))
        );
        let q = &defs["io.k8s.apimachinery.pkg.api.resource.Quantity"];
        assert_eq!((&q["type"], q.get("format")), (&json!("string"), None));
        // Every kind of every group/version, and everything referred to, is there.
        for kind in [
            "Pod",
            "Service",
            "Node",
            "Job",
            "CronJob",
            "EndpointSlice",
            "Scale",
        ] {
            assert!(
                defs.as_object()
                    .unwrap()
                    .values()
                    .any(|s| s["x-kubernetes-group-version-kind"][0]["kind"] == kind),
                "{kind}"
            );
        }
        let text = d.to_string();
        assert!(!text.contains("#/components/") && !text.contains("allOf"));
        for r in text.split("\"$ref\":\"").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            let name = name.strip_prefix(DEFINITIONS).unwrap();
            assert!(defs.get(name).is_some(), "{name}");
        }
    }

    #[test]
    fn paths_as_swagger_2() {
        let d = doc();
        let item = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        let patch = &item["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(patch["parameters"].as_array().unwrap().contains(
            &json!({"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true})
        ));
        assert_eq!(
            item["put"]["parameters"][0],
            json!({"name": "body", "in": "body", "required": true,
                   "schema": {"$ref": "#/definitions/io.k8s.api.apps.v1.Deployment"}})
        );
        assert_eq!(
            item["get"]["responses"]["200"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.Deployment"
        );
        let names: Vec<&Value> = item["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["name"])
            .collect();
        assert_eq!(names, [&json!("name"), &json!("namespace")]);
        assert!(d["paths"]["/api/v1/nodes/{name}"]["get"].is_object());
        assert!(d["paths"]["/api/v1/nodes"]["parameters"].is_null());
    }

    #[test]
    fn accept_as_kube_openapi_reads_it() {
        let old = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
        let new = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
        assert_eq!(negotiate(old), Some(true));
        assert_eq!(negotiate(new), Some(true));
        assert_eq!(negotiate(&format!("{old}, application/json")), Some(true));
        assert_eq!(negotiate("application/json, */*"), Some(false));
        assert_eq!(negotiate("*/*"), Some(false));
        assert_eq!(
            negotiate(&format!("application/json;q=0.5, {new}")),
            Some(true)
        );
        assert_eq!(negotiate("text/html, application/yaml"), None);
        assert_eq!(negotiate(&format!("*/*, {old}")), Some(true));
        assert_eq!(negotiate(&format!("application/*, {old}")), Some(true));
        assert_eq!(
            negotiate(&format!("{old};q=0, application/json")),
            Some(false)
        );

        let r = get(Some(old), None);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROTOBUF);
        let r = get(None, None);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let etag = r.headers()[header::ETAG].to_str().unwrap().to_string();
        assert_eq!(etag.len(), 130, "{etag}");
        assert_eq!(
            get(Some("application/json"), Some(&etag)).status(),
            StatusCode::NOT_MODIFIED
        );
        let weak = format!("\"other\", W/{etag}");
        assert_eq!(get(None, Some(&weak)).status(), StatusCode::NOT_MODIFIED);
        // The protobuf encoding has its own tag.
        assert_eq!(get(Some(new), Some(&etag)).status(), StatusCode::OK);
        assert_eq!(
            get(Some("text/plain"), None).status(),
            StatusCode::NOT_ACCEPTABLE
        );
    }

    fn named<'a>(d: &'a Document, name: &str) -> &'a Schema {
        let defs = &d.definitions.as_ref().unwrap().additional_properties;
        defs.iter()
            .find(|n| n.name == name)
            .unwrap()
            .value
            .as_ref()
            .unwrap()
    }

    #[test]
    fn protobuf_decodes_to_the_same_document() {
        let bytes = &encodings().protobuf.as_ref().unwrap().body;
        let d = Document::decode(bytes.as_ref()).unwrap();
        assert_eq!(d.swagger, "2.0");
        assert_eq!(d.info.as_ref().unwrap().title, "Kubernetes");
        let json = doc();
        assert_eq!(
            d.definitions.as_ref().unwrap().additional_properties.len(),
            json["definitions"].as_object().unwrap().len()
        );
        assert_eq!(
            d.paths.as_ref().unwrap().path.len(),
            json["paths"].as_object().unwrap().len()
        );

        let deploy = named(&d, "io.k8s.api.apps.v1.Deployment");
        let gvk = &deploy.vendor_extension[0];
        assert_eq!(gvk.name, "x-kubernetes-group-version-kind");
        assert_eq!(
            gvk.value.as_ref().unwrap().yaml,
            "- group: apps\n  kind: Deployment\n  version: v1\n"
        );
        let spec = deploy
            .properties
            .as_ref()
            .unwrap()
            .additional_properties
            .iter()
            .find(|p| p.name == "spec")
            .unwrap();
        assert_eq!(
            spec.value.as_ref().unwrap().r#ref,
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );

        let pod_spec = named(&d, "io.k8s.api.core.v1.PodSpec");
        let props = &pod_spec.properties.as_ref().unwrap().additional_properties;
        let containers = props
            .iter()
            .find(|p| p.name == "containers")
            .unwrap()
            .value
            .as_ref()
            .unwrap();
        assert_eq!(containers.r#type.as_ref().unwrap().value, ["array"]);
        assert_eq!(
            containers.items.as_ref().unwrap().schema[0].r#ref,
            "#/definitions/io.k8s.api.core.v1.Container"
        );
        let ext: Vec<(&str, &str)> = containers
            .vendor_extension
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_ref().unwrap().yaml.as_str()))
            .collect();
        assert_eq!(
            ext,
            [
                ("x-kubernetes-patch-merge-key", "name\n"),
                ("x-kubernetes-patch-strategy", "merge\n")
            ]
        );
        assert!(pod_spec.required.contains(&"containers".to_string()));
        let selector = props
            .iter()
            .find(|p| p.name == "nodeSelector")
            .unwrap()
            .value
            .as_ref()
            .unwrap();
        let ap = selector
            .additional_properties
            .as_ref()
            .unwrap()
            .oneof
            .as_ref()
            .unwrap();
        let additional_properties_item::Oneof::Schema(s) = ap else {
            panic!("{ap:?}")
        };
        assert_eq!(s.r#type.as_ref().unwrap().value, ["string"]);
    }

    #[test]
    fn protobuf_known_bytes() {
        let tiny = json!({"swagger": "2.0", "info": {"title": "t", "version": "v"},
                          "definitions": {"a": {"type": "string", "x-k": true}}});
        let bytes = openapi_v2_proto::encode(&tiny).unwrap();
        let want: &[u8] = &[
            0x0a, 3, b'2', b'.', b'0', // swagger = 1
            0x12, 6, 0x0a, 1, b't', 0x12, 1, b'v', // info = 2 {title = 1, version = 2}
            0x4a, 35, // definitions = 9
            0x0a, 33, // additional_properties = 1: NamedSchema
            0x0a, 1, b'a', // name = 1
            0x12, 28, // value = 2: Schema
            0xb2, 0x01, 8, 0x0a, 6, b's', b't', b'r', b'i', b'n',
            b'g', // type = 22 {value = 1}
            0xfa, 0x01, 14, // vendor_extension = 31: NamedAny
            0x0a, 3, b'x', b'-', b'k', // name = 1
            0x12, 7, 0x12, 5, b't', b'r', b'u', b'e', b'\n', // value = 2: Any {yaml = 2}
        ];
        assert_eq!(bytes, want);
        let unsupported = openapi_v2_proto::encode(&json!({"definitions": {"a": {"oneOf": []}}}));
        assert!(unsupported.is_err());
    }

    /// A generic decoder (protoc's, a build dependency) reads the answer as one well-formed
    /// message.
    #[test]
    fn protoc_decodes_raw() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let bytes = &encodings().protobuf.as_ref().unwrap().body;
        let mut child = Command::new("protoc")
            .arg("--decode_raw")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("protoc (scripts/setup.sh installs protobuf-compiler)");
        let mut stdin = child.stdin.take().unwrap();
        let input = bytes.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("1: \"2.0\"\n2 {\n"), "{}", &text[..200]);
        assert!(text.contains("1: \"io.k8s.api.apps.v1.Deployment\""));
        assert!(text.contains("1: \"x-kubernetes-group-version-kind\""));
        assert!(text.contains("1: \"/apis/apps/v1/namespaces/{namespace}/deployments/{name}\""));
    }
}
