//! Events of the controllers' decisions (SuccessfulCreate, SuccessfulDelete,
//! ProvisioningSucceeded, ...), about the object that decided, into the agent's event ring.

use chrono::Utc;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::state::Inner;

/// One decision of a controller.
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub ns: String,
    pub name: String,
    pub uid: String,
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
    /// The controller's name (`statefulset-controller`, ...).
    pub component: &'static str,
}

impl Ev {
    pub fn of(
        meta: &ObjectMeta,
        (api_version, kind, component): (&'static str, &'static str, &'static str),
        type_: &'static str,
        reason: &'static str,
        message: String,
    ) -> Ev {
        Ev {
            api_version,
            kind,
            ns: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            type_,
            reason,
            message,
            component,
        }
    }
}

/// Adds the events to the ring, folding a repeat of a recent one into its count.
pub fn emit(g: &mut Inner, evs: Vec<Ev>) {
    let now = Time(Utc::now());
    for e in evs {
        let same = g.events.iter_mut().rev().take(50).find(|x| {
            x.involved_object.uid.as_deref() == Some(e.uid.as_str())
                && x.reason.as_deref() == Some(e.reason)
                && x.message.as_deref() == Some(e.message.as_str())
        });
        if let Some(x) = same {
            x.count = Some(x.count.unwrap_or(1) + 1);
            x.last_timestamp = Some(now.clone());
            continue;
        }
        // Only a new event is logged (a repeat just counts).
        tracing::info!(object = %format!("{}/{}/{}", e.kind, e.ns, e.name), reason = e.reason, "{}", e.message);
        let n = g.events.len();
        g.events.push_back(Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}{n:x}",
                    e.name,
                    Utc::now().timestamp_nanos_opt().unwrap_or(0)
                )),
                namespace: Some(e.ns.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some(e.kind.into()),
                api_version: Some(e.api_version.into()),
                name: Some(e.name),
                namespace: Some(e.ns),
                uid: Some(e.uid),
                ..Default::default()
            },
            reason: Some(e.reason.into()),
            message: Some(e.message),
            type_: Some(e.type_.into()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now.clone()),
            source: Some(EventSource {
                component: Some(e.component.into()),
                host: None,
            }),
            ..Default::default()
        });
        while g.events.len() > 1000 {
            g.events.pop_front();
        }
    }
}
