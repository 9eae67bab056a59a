//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`): what kubectl's typed
//! clients send for `kubectl create deployment|job|cronjob|configmap|secret|service|namespace`.
//!
//! The body is the API machinery's envelope: the magic `k8s\0`, then a `runtime.Unknown`
//! whose `typeMeta` names the kind and whose `raw` is that kind's message. The messages are
//! k8s-pb's prost types; each becomes the JSON the API server would have stored (its
//! `ToJson` impl is generated, protobuf_json.rs), which the rest of the write path handles as
//! if the client had sent JSON. Answers stay JSON: kubectl Accepts
//! `application/vnd.kubernetes.protobuf, */*` (or `..., application/json`) and decodes either.

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, SecondsFormat};
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{Duration, FieldsV1, MicroTime, Time};
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value};

use super::protobuf_json;

/// The prefix of every Kubernetes protobuf object.
const MAGIC: &[u8] = b"k8s\0";

/// The media type kubectl names protobuf bodies with.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the protobuf body does not start with the Kubernetes magic number (k8s\\0)")]
    Magic,
    #[error("the protobuf envelope (runtime.Unknown) does not decode: {0}")]
    Envelope(prost::DecodeError),
    #[error("the protobuf envelope is encoded with {0:?}, not plain")]
    Encoding(String),
    #[error("the protobuf body of {kind} ({api_version}) does not decode: {err}")]
    Message {
        api_version: String,
        kind: String,
        err: prost::DecodeError,
    },
    #[error("the server does not decode {kind} ({api_version}) from protobuf; send it as application/json")]
    Kind { api_version: String, kind: String },
}

/// The JSON form of one protobuf-encoded object, with its `apiVersion` and `kind`.
pub fn to_json(body: &[u8]) -> Result<Value, Error> {
    let inner = body.strip_prefix(MAGIC).ok_or(Error::Magic)?;
    let env = Unknown::decode(inner).map_err(Error::Envelope)?;
    let enc = env.content_encoding.unwrap_or_default();
    if !enc.is_empty() {
        return Err(Error::Encoding(enc));
    }
    let tm = env.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = env.raw.unwrap_or_default();
    let Some(decoded) = protobuf_json::decode(&api_version, &kind, &raw) else {
        return Err(Error::Kind { api_version, kind });
    };
    let body = decoded.map_err(|err| Error::Message {
        api_version: api_version.clone(),
        kind: kind.clone(),
        err,
    })?;
    let mut out = Map::new();
    out.insert("apiVersion".into(), api_version.into());
    out.insert("kind".into(), kind.into());
    if let Value::Object(m) = body {
        out.extend(m);
    }
    Ok(Value::Object(out))
}

/// A protobuf message's JSON form.
pub trait ToJson {
    fn to_json(&self) -> Value;
}

/// Sets `key` unless the value is what the API server's JSON leaves out: an absent
/// optional, an empty list or map, an empty string (Go writes every non-pointer string
/// field to protobuf, `""` included, where its JSON has `omitempty`), or a zero Time.
pub fn field<T: ToJson>(m: &mut Map<String, Value>, key: &str, v: &T) {
    let v = v.to_json();
    let empty = match &v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if !empty {
        m.insert(key.into(), v);
    }
}

/// A plain Go int whose zero means "not set" (see the generator's ZERO_IS_UNSET).
pub fn nonzero<T: Copy + Default + PartialEq + Into<Value>>(
    m: &mut Map<String, Value>,
    key: &str,
    v: &Option<T>,
) {
    if let Some(n) = v.filter(|n| *n != T::default()) {
        m.insert(key.into(), n.into());
    }
}

/// `map<string, bytes>` (Secret `data`, ConfigMap `binaryData`).
pub fn bytes_map(m: &mut Map<String, Value>, key: &str, v: &BTreeMap<String, Vec<u8>>) {
    if !v.is_empty() {
        let o: Map<String, Value> = v.iter().map(|(k, b)| (k.clone(), b64(b).into())).collect();
        m.insert(key.into(), Value::Object(o));
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

impl<T: ToJson> ToJson for Option<T> {
    fn to_json(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToJson::to_json)
    }
}

impl<T: ToJson> ToJson for Box<T> {
    fn to_json(&self) -> Value {
        (**self).to_json()
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(ToJson::to_json).collect())
    }
}

impl<T: ToJson> ToJson for BTreeMap<String, T> {
    fn to_json(&self) -> Value {
        if self.is_empty() {
            return Value::Null;
        }
        Value::Object(self.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
    }
}

impl ToJson for String {
    fn to_json(&self) -> Value {
        self.clone().into()
    }
}

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl ToJson for $t {
            fn to_json(&self) -> Value {
                (*self).into()
            }
        }
    )*};
}
scalar!(bool, i32, i64, f64);

fn rfc3339(seconds: Option<i64>, nanos: Option<i32>, form: SecondsFormat) -> Value {
    let (s, n) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
    if s == 0 && n == 0 {
        // Go's zero time: the API server's JSON has null (left out).
        return Value::Null;
    }
    let nanos = u32::try_from(n).unwrap_or(0);
    DateTime::from_timestamp(s, nanos).map_or(Value::Null, |t| t.to_rfc3339_opts(form, true).into())
}

/// metav1.Time: RFC 3339 to the second.
impl ToJson for Time {
    fn to_json(&self) -> Value {
        rfc3339(self.seconds, None, SecondsFormat::Secs)
    }
}

/// metav1.MicroTime: RFC 3339 to the microsecond.
impl ToJson for MicroTime {
    fn to_json(&self) -> Value {
        rfc3339(self.seconds, self.nanos, SecondsFormat::Micros)
    }
}

/// metav1.Duration: Go's `time.Duration` string (`1h2m3.5s`).
impl ToJson for Duration {
    fn to_json(&self) -> Value {
        go_duration(self.duration.unwrap_or(0)).into()
    }
}

/// Go's `time.Duration.String`, which the JSON form of metav1.Duration is; hand-written as
/// no crate formats it Go's way (humantime puts spaces between the units).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let frac = |v: u64, unit: u64| {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let width = unit.to_string().len() - 1;
        let digits = format!("{rest:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", frac(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", frac(n, 1_000_000));
    }
    let secs = n / 1_000_000_000;
    let sub = n % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let s = frac(s * 1_000_000_000 + sub, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

/// resource.Quantity: its string (`100m`, `1Gi`).
impl ToJson for Quantity {
    fn to_json(&self) -> Value {
        self.string.clone().map_or(Value::Null, Value::from)
    }
}

/// intstr.IntOrString: `type` 1 is the string, else the int; Go writes a zero value (no
/// port given) for every non-pointer one, which JSON leaves out.
impl ToJson for IntOrString {
    fn to_json(&self) -> Value {
        match (self.r#type, &self.str_val, self.int_val) {
            (Some(1), Some(s), _) => s.clone().into(),
            (_, _, Some(i)) if i != 0 => i.into(),
            _ => Value::Null,
        }
    }
}

/// runtime.RawExtension: the embedded object, JSON already.
impl ToJson for RawExtension {
    fn to_json(&self) -> Value {
        raw_json(&self.raw)
    }
}

/// metav1.FieldsV1 (managedFields): the field set, JSON already.
impl ToJson for FieldsV1 {
    fn to_json(&self) -> Value {
        raw_json(&self.raw)
    }
}

fn raw_json(raw: &Option<Vec<u8>>) -> Value {
    raw.as_deref()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::core::v1::{Secret, ServicePort};
    use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut b = MAGIC.to_vec();
        b.extend(u.encode_to_vec());
        b
    }

    #[test]
    fn secret_bytes_are_base64_and_empty_strings_left_out() {
        let s = Secret {
            metadata: Some(ObjectMeta {
                name: Some("sec".into()),
                namespace: Some(String::new()),
                creation_timestamp: Some(Time::default()),
                ..Default::default()
            }),
            data: [("password".to_string(), b"hunter2".to_vec())].into(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let v = to_json(&envelope("v1", "Secret", s.encode_to_vec())).expect("decodes");
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "sec"}, "data": {"password": "aHVudGVyMg=="},
                "type": "Opaque"})
        );
    }

    #[test]
    fn int_or_string_and_acronyms() {
        let p = ServicePort {
            port: Some(80),
            target_port: Some(IntOrString {
                r#type: Some(1),
                int_val: Some(0),
                str_val: Some("http".into()),
            }),
            node_port: Some(0),
            ..Default::default()
        };
        // nodePort 0 is Go's unset plain int (a NodePort service gets one allocated).
        assert_eq!(
            p.to_json(),
            serde_json::json!({"port": 80, "targetPort": "http"})
        );
        let unset = IntOrString {
            r#type: Some(0),
            int_val: Some(0),
            str_val: Some(String::new()),
        };
        assert_eq!(unset.to_json(), Value::Null);
    }

    #[test]
    fn unknown_kind_and_bad_magic() {
        let e = to_json(&envelope("v1", "Widget", vec![])).expect_err("no Widget");
        assert!(e.to_string().contains("Widget (v1)"), "{e}");
        assert!(matches!(to_json(b"{}"), Err(Error::Magic)));
    }

    #[test]
    fn durations_as_go_prints_them() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(go_duration(-60_000_000_000), "-1m0s");
    }

    #[test]
    fn times_in_rfc3339() {
        let t = Time {
            seconds: Some(1_700_000_000),
            nanos: Some(5),
        };
        assert_eq!(t.to_json(), "2023-11-14T22:13:20Z");
    }
}
