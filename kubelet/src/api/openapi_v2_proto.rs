//! gnostic's `openapi_v2.Document` protobuf encoding of the Swagger 2.0 document
//! (openapi_v2.rs): what kubectl and client-go ask `/openapi/v2` for and decode with gnostic's
//! Go types.
//!
//! No crate on crates.io carries gnostic's OpenAPI v2 messages, so the messages the document
//! uses are declared here as prost messages, with the field numbers of gnostic's published
//! `openapiv2/OpenAPIv2.proto` (package `openapi.v2`); prost does the wire encoding. Fields
//! and messages the document never has are left out (a decoder skips nothing it is not
//! sent). The conversion is strict: a JSON key it has no field for is an error, so the JSON
//! and the protobuf answers are the same document (a unit test converts the whole of it).

use prost::Message;
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the OpenAPI v2 document has {key:?} at {at}, which its protobuf encoding does not carry"
    )]
    Unsupported { at: String, key: String },
    #[error("the OpenAPI v2 document has a value that is not {want} at {at}")]
    Shape { at: String, want: &'static str },
    #[error("the vendor extension at {at} does not encode as YAML: {err}")]
    Yaml {
        at: String,
        err: serde_yaml_ng::Error,
    },
}

#[derive(Clone, PartialEq, Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
    #[prost(message, repeated, tag = "16")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(string, tag = "3")]
    pub description: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Paths {
    #[prost(message, repeated, tag = "1")]
    pub vendor_extension: Vec<NamedAny>,
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PathItem {
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, repeated, tag = "10")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Operation {
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(string, repeated, tag = "10")]
    pub schemes: Vec<String>,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `ParametersItem` is a oneof of a parameter (1) and a JSON reference (2); only the first
/// is used.
#[derive(Clone, PartialEq, Message)]
pub struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    pub parameter: Option<Parameter>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Parameter {
    #[prost(oneof = "parameter::Oneof", tags = "1, 2")]
    pub oneof: Option<parameter::Oneof>,
}

pub mod parameter {
    // The messages live only while the document is encoded, once: their size does not
    // matter, and unboxed they read as prost-build would generate them.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        BodyParameter(super::BodyParameter),
        #[prost(message, tag = "2")]
        NonBodyParameter(super::NonBodyParameter),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct BodyParameter {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(bool, tag = "4")]
    pub required: bool,
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
    #[prost(message, repeated, tag = "6")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NonBodyParameter {
    #[prost(oneof = "non_body_parameter::Oneof", tags = "3, 4")]
    pub oneof: Option<non_body_parameter::Oneof>,
}

pub mod non_body_parameter {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "3")]
        QueryParameterSubSchema(super::QueryParameterSubSchema),
        #[prost(message, tag = "4")]
        PathParameterSubSchema(super::PathParameterSubSchema),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct QueryParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct PathParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub r#type: String,
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

/// A oneof of a response (1) and a JSON reference (2); only the first is used.
#[derive(Clone, PartialEq, Message)]
pub struct ResponseValue {
    #[prost(message, optional, tag = "1")]
    pub response: Option<Response>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
}

/// A oneof of a schema (1) and a file schema (2); only the first is used.
#[derive(Clone, PartialEq, Message)]
pub struct SchemaItem {
    #[prost(message, optional, tag = "1")]
    pub schema: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(bool, tag = "16")]
    pub unique_items: bool,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AdditionalPropertiesItem {
    #[prost(oneof = "additional_properties_item::Oneof", tags = "1, 2")]
    pub oneof: Option<additional_properties_item::Oneof>,
}

pub mod additional_properties_item {
    // As in `parameter`: encoded once, size no matter.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        Schema(super::Schema),
        #[prost(bool, tag = "2")]
        Boolean(bool),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

/// gnostic's `Any` keeps a value as YAML text (field 2), which kube-openapi's readers parse
/// (`x-kubernetes-group-version-kind`, the patch extensions).
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

/// The protobuf encoding of a Swagger 2.0 document.
pub fn encode(doc: &Value) -> Result<Vec<u8>, Error> {
    Ok(document(doc)?.encode_to_vec())
}

fn document(v: &Value) -> Result<Document, Error> {
    let m = object(v, "")?;
    let mut d = Document::default();
    for (k, v) in m {
        match k.as_str() {
            "swagger" => d.swagger = string(v, k)?,
            "info" => {
                let mut info = Info::default();
                for (ik, iv) in object(v, k)? {
                    let at = format!("info.{ik}");
                    match ik.as_str() {
                        "title" => info.title = string(iv, &at)?,
                        "version" => info.version = string(iv, &at)?,
                        "description" => info.description = string(iv, &at)?,
                        _ => return unsupported("info", ik),
                    }
                }
                d.info = Some(info);
            }
            "paths" => {
                let mut paths = Paths::default();
                for (p, item) in object(v, k)? {
                    if p.starts_with("x-") {
                        paths.vendor_extension.push(named_any(p, item, "paths")?);
                        continue;
                    }
                    paths.path.push(NamedPathItem {
                        name: p.clone(),
                        value: Some(path_item(item, p)?),
                    });
                }
                d.paths = Some(paths);
            }
            "definitions" => {
                let mut defs = Definitions::default();
                for (name, s) in object(v, k)? {
                    defs.additional_properties.push(NamedSchema {
                        name: name.clone(),
                        value: Some(schema(s, name)?),
                    });
                }
                d.definitions = Some(defs);
            }
            x if x.starts_with("x-") => d.vendor_extension.push(named_any(k, v, "")?),
            _ => return unsupported("", k),
        }
    }
    Ok(d)
}

fn path_item(v: &Value, at: &str) -> Result<PathItem, Error> {
    let mut p = PathItem::default();
    for (k, v) in object(v, at)? {
        let at = format!("{at}.{k}");
        let op = || operation(v, &at).map(Some);
        match k.as_str() {
            "get" => p.get = op()?,
            "put" => p.put = op()?,
            "post" => p.post = op()?,
            "delete" => p.delete = op()?,
            "patch" => p.patch = op()?,
            "parameters" => p.parameters = parameters(v, &at)?,
            x if x.starts_with("x-") => p.vendor_extension.push(named_any(k, v, &at)?),
            _ => return unsupported(&at, k),
        }
    }
    Ok(p)
}

fn operation(v: &Value, at: &str) -> Result<Operation, Error> {
    let mut o = Operation::default();
    for (k, v) in object(v, at)? {
        let at = format!("{at}.{k}");
        match k.as_str() {
            "tags" => o.tags = strings(v, &at)?,
            "description" => o.description = string(v, &at)?,
            "operationId" => o.operation_id = string(v, &at)?,
            "produces" => o.produces = strings(v, &at)?,
            "consumes" => o.consumes = strings(v, &at)?,
            "schemes" => o.schemes = strings(v, &at)?,
            "parameters" => o.parameters = parameters(v, &at)?,
            "responses" => {
                let mut r = Responses::default();
                for (code, resp) in object(v, &at)? {
                    let at = format!("{at}.{code}");
                    let mut out = Response::default();
                    for (rk, rv) in object(resp, &at)? {
                        match rk.as_str() {
                            "description" => out.description = string(rv, &at)?,
                            "schema" => {
                                out.schema = Some(SchemaItem {
                                    schema: Some(schema(rv, &at)?),
                                })
                            }
                            _ => return unsupported(&at, rk),
                        }
                    }
                    r.response_code.push(NamedResponseValue {
                        name: code.clone(),
                        value: Some(ResponseValue {
                            response: Some(out),
                        }),
                    });
                }
                o.responses = Some(r);
            }
            x if x.starts_with("x-") => o.vendor_extension.push(named_any(k, v, &at)?),
            _ => return unsupported(&at, k),
        }
    }
    Ok(o)
}

fn parameters(v: &Value, at: &str) -> Result<Vec<ParametersItem>, Error> {
    let Value::Array(ps) = v else {
        return shape(at, "an array");
    };
    ps.iter()
        .enumerate()
        .map(|(i, p)| {
            let at = format!("{at}[{i}]");
            let m = object(p, &at)?;
            let oneof = match m.get("in").and_then(Value::as_str) {
                Some("body") => {
                    let mut b = BodyParameter::default();
                    for (k, v) in m {
                        match k.as_str() {
                            "description" => b.description = string(v, &at)?,
                            "name" => b.name = string(v, &at)?,
                            "in" => b.r#in = string(v, &at)?,
                            "required" => b.required = boolean(v, &at)?,
                            "schema" => b.schema = Some(schema(v, &at)?),
                            _ => return unsupported(&at, k),
                        }
                    }
                    parameter::Oneof::BodyParameter(b)
                }
                Some("query") => {
                    let mut q = QueryParameterSubSchema::default();
                    for (k, v) in m {
                        match k.as_str() {
                            "required" => q.required = boolean(v, &at)?,
                            "in" => q.r#in = string(v, &at)?,
                            "description" => q.description = string(v, &at)?,
                            "name" => q.name = string(v, &at)?,
                            "type" => q.r#type = string(v, &at)?,
                            "uniqueItems" => q.unique_items = boolean(v, &at)?,
                            _ => return unsupported(&at, k),
                        }
                    }
                    parameter::Oneof::NonBodyParameter(NonBodyParameter {
                        oneof: Some(non_body_parameter::Oneof::QueryParameterSubSchema(q)),
                    })
                }
                Some("path") => {
                    let mut q = PathParameterSubSchema::default();
                    for (k, v) in m {
                        match k.as_str() {
                            "required" => q.required = boolean(v, &at)?,
                            "in" => q.r#in = string(v, &at)?,
                            "description" => q.description = string(v, &at)?,
                            "name" => q.name = string(v, &at)?,
                            "type" => q.r#type = string(v, &at)?,
                            "uniqueItems" => q.unique_items = boolean(v, &at)?,
                            _ => return unsupported(&at, k),
                        }
                    }
                    parameter::Oneof::NonBodyParameter(NonBodyParameter {
                        oneof: Some(non_body_parameter::Oneof::PathParameterSubSchema(q)),
                    })
                }
                _ => return unsupported(&at, "in"),
            };
            Ok(ParametersItem {
                parameter: Some(Parameter { oneof: Some(oneof) }),
            })
        })
        .collect()
}

fn schema(v: &Value, at: &str) -> Result<Schema, Error> {
    let mut s = Schema::default();
    for (k, v) in object(v, at)? {
        let at = format!("{at}.{k}");
        match k.as_str() {
            "$ref" => s.r#ref = string(v, &at)?,
            "format" => s.format = string(v, &at)?,
            "title" => s.title = string(v, &at)?,
            "description" => s.description = string(v, &at)?,
            "default" => s.default = Some(any(v, &at)?),
            "uniqueItems" => s.unique_items = boolean(v, &at)?,
            "required" => s.required = strings(v, &at)?,
            "enum" => {
                let Value::Array(a) = v else {
                    return shape(&at, "an array");
                };
                s.r#enum = a.iter().map(|e| any(e, &at)).collect::<Result<_, _>>()?;
            }
            "additionalProperties" => {
                let oneof = match v {
                    Value::Bool(b) => additional_properties_item::Oneof::Boolean(*b),
                    _ => additional_properties_item::Oneof::Schema(schema(v, &at)?),
                };
                s.additional_properties =
                    Some(Box::new(AdditionalPropertiesItem { oneof: Some(oneof) }));
            }
            "type" => {
                s.r#type = Some(TypeItem {
                    value: match v {
                        Value::Array(_) => strings(v, &at)?,
                        _ => vec![string(v, &at)?],
                    },
                })
            }
            "items" => {
                s.items = Some(ItemsItem {
                    schema: match v {
                        Value::Array(a) => {
                            a.iter().map(|i| schema(i, &at)).collect::<Result<_, _>>()?
                        }
                        _ => vec![schema(v, &at)?],
                    },
                })
            }
            "allOf" => {
                let Value::Array(a) = v else {
                    return shape(&at, "an array");
                };
                s.all_of = a.iter().map(|i| schema(i, &at)).collect::<Result<_, _>>()?;
            }
            "properties" => {
                let mut p = Properties::default();
                for (name, ps) in object(v, &at)? {
                    p.additional_properties.push(NamedSchema {
                        name: name.clone(),
                        value: Some(schema(ps, &format!("{at}.{name}"))?),
                    });
                }
                s.properties = Some(p);
            }
            "readOnly" => s.read_only = boolean(v, &at)?,
            x if x.starts_with("x-") => s.vendor_extension.push(named_any(k, v, &at)?),
            _ => return unsupported(&at, k),
        }
    }
    Ok(s)
}

/// A vendor extension as gnostic keeps it: its value as YAML.
fn named_any(name: &str, v: &Value, at: &str) -> Result<NamedAny, Error> {
    Ok(NamedAny {
        name: name.to_string(),
        value: Some(any(v, &format!("{at}.{name}"))?),
    })
}

fn any(v: &Value, at: &str) -> Result<Any, Error> {
    let yaml = serde_yaml_ng::to_string(v).map_err(|err| Error::Yaml {
        at: at.to_string(),
        err,
    })?;
    Ok(Any { yaml })
}

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Error> {
    v.as_object().map_or_else(|| shape(at, "an object"), Ok)
}

fn string(v: &Value, at: &str) -> Result<String, Error> {
    v.as_str()
        .map_or_else(|| shape(at, "a string"), |s| Ok(s.to_string()))
}

fn strings(v: &Value, at: &str) -> Result<Vec<String>, Error> {
    let Value::Array(a) = v else {
        return shape(at, "an array of strings");
    };
    a.iter().map(|s| string(s, at)).collect()
}

fn boolean(v: &Value, at: &str) -> Result<bool, Error> {
    v.as_bool().map_or_else(|| shape(at, "a boolean"), Ok)
}

fn unsupported<T>(at: &str, key: &str) -> Result<T, Error> {
    Err(Error::Unsupported {
        at: at.to_string(),
        key: key.to_string(),
    })
}

fn shape<T>(at: &str, want: &'static str) -> Result<T, Error> {
    Err(Error::Shape {
        at: at.to_string(),
        want,
    })
}
