//! The one table of the API's resources: what discovery lists, how paths resolve, and how
//! each kind is printed (the API server's printer columns). Adding a kind is one entry.

use serde_json::Value;

use super::table;

/// A printer column (meta.k8s.io/v1 TableColumnDefinition); priority 1 is `-o wide` only.
pub struct Column {
    pub name: &'static str,
    pub ty: &'static str,
    pub format: &'static str,
    pub priority: u8,
    pub description: &'static str,
}

pub const fn col(name: &'static str, priority: u8, description: &'static str) -> Column {
    Column {
        name,
        ty: "string",
        format: "",
        priority,
        description,
    }
}

pub const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    priority: 0,
    description: "Name must be unique within a namespace.",
};
pub const AGE: Column = col(
    "Age",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

pub struct Kind {
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short: &'static [&'static str],
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    /// `all` puts the kind in `kubectl get all`.
    pub categories: &'static [&'static str],
    /// (name, kind, verbs) of the subresources.
    pub subresources: &'static [(&'static str, &'static str, &'static [&'static str])],
    pub columns: &'static [Column],
    /// The cells of one object, in the order of `columns`.
    pub cells: fn(&Value) -> Vec<Value>,
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name the API server uses in messages: `pods`, `deployments.apps`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Reads and watches (writes answer MethodNotAllowed).
const READ: &[&str] = &["get", "list", "watch"];
/// The kinds the API also writes (`write::WRITABLE`).
const WRITE: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const ALL: &[&str] = &["all"];
const GET: &[&str] = &["get"];
const SCALE: &[&str] = &["get", "patch", "update"];

pub static KINDS: &[Kind] = &[
    Kind {
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short: &["po"],
        group: "",
        version: "v1",
        namespaced: true,
        verbs: READ,
        categories: ALL,
        subresources: &[("log", "Pod", GET), ("status", "Pod", GET)],
        columns: table::POD,
        cells: table::pod,
    },
    Kind {
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        short: &["cm"],
        group: "",
        version: "v1",
        namespaced: true,
        verbs: WRITE,
        categories: &[],
        subresources: &[],
        columns: table::CONFIGMAP,
        cells: table::configmap,
    },
    Kind {
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short: &[],
        group: "",
        version: "v1",
        namespaced: true,
        verbs: WRITE,
        categories: &[],
        subresources: &[],
        columns: table::SECRET,
        cells: table::secret,
    },
    Kind {
        kind: "Service",
        plural: "services",
        singular: "service",
        short: &["svc"],
        group: "",
        version: "v1",
        namespaced: true,
        verbs: WRITE,
        categories: ALL,
        subresources: &[("status", "Service", GET)],
        columns: table::SERVICE,
        cells: table::service,
    },
    Kind {
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        short: &["ep"],
        group: "",
        version: "v1",
        namespaced: true,
        verbs: READ,
        categories: &[],
        subresources: &[],
        columns: table::ENDPOINTS,
        cells: table::endpoints,
    },
    Kind {
        kind: "Event",
        plural: "events",
        singular: "event",
        short: &["ev"],
        group: "",
        version: "v1",
        namespaced: true,
        verbs: READ,
        categories: &[],
        subresources: &[],
        columns: table::EVENT,
        cells: table::event,
    },
    Kind {
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short: &["ns"],
        group: "",
        version: "v1",
        namespaced: false,
        verbs: WRITE,
        categories: &[],
        subresources: &[("status", "Namespace", GET)],
        columns: table::NAMESPACE,
        cells: table::namespace,
    },
    Kind {
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short: &["no"],
        group: "",
        version: "v1",
        namespaced: false,
        verbs: READ,
        categories: &[],
        subresources: &[("status", "Node", GET)],
        columns: table::NODE,
        cells: table::node,
    },
    Kind {
        kind: "PersistentVolumeClaim",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        short: &["pvc"],
        group: "",
        version: "v1",
        namespaced: true,
        verbs: READ,
        categories: &[],
        subresources: &[("status", "PersistentVolumeClaim", GET)],
        columns: table::PVC,
        cells: table::pvc,
    },
    Kind {
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        short: &["deploy"],
        group: "apps",
        version: "v1",
        namespaced: true,
        verbs: WRITE,
        categories: ALL,
        subresources: &[("status", "Deployment", GET), ("scale", "Scale", SCALE)],
        columns: table::DEPLOYMENT,
        cells: table::deployment,
    },
    Kind {
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        short: &["rs"],
        group: "apps",
        version: "v1",
        namespaced: true,
        verbs: READ,
        categories: ALL,
        subresources: &[("status", "ReplicaSet", GET), ("scale", "Scale", GET)],
        columns: table::REPLICASET,
        cells: table::replicaset,
    },
    Kind {
        kind: "StatefulSet",
        plural: "statefulsets",
        singular: "statefulset",
        short: &["sts"],
        group: "apps",
        version: "v1",
        namespaced: true,
        verbs: WRITE,
        categories: ALL,
        subresources: &[("status", "StatefulSet", GET), ("scale", "Scale", SCALE)],
        columns: table::STATEFULSET,
        cells: table::statefulset,
    },
    Kind {
        kind: "DaemonSet",
        plural: "daemonsets",
        singular: "daemonset",
        short: &["ds"],
        group: "apps",
        version: "v1",
        namespaced: true,
        verbs: WRITE,
        categories: ALL,
        subresources: &[("status", "DaemonSet", GET)],
        columns: table::DAEMONSET,
        cells: table::daemonset,
    },
    Kind {
        kind: "ControllerRevision",
        plural: "controllerrevisions",
        singular: "controllerrevision",
        short: &[],
        group: "apps",
        version: "v1",
        namespaced: true,
        verbs: READ,
        categories: &[],
        subresources: &[],
        columns: table::CONTROLLERREVISION,
        cells: table::controllerrevision,
    },
    Kind {
        kind: "Job",
        plural: "jobs",
        singular: "job",
        short: &[],
        group: "batch",
        version: "v1",
        namespaced: true,
        verbs: WRITE,
        categories: ALL,
        subresources: &[("status", "Job", GET)],
        columns: table::JOB,
        cells: table::job,
    },
    Kind {
        kind: "CronJob",
        plural: "cronjobs",
        singular: "cronjob",
        short: &["cj"],
        group: "batch",
        version: "v1",
        namespaced: true,
        verbs: WRITE,
        categories: ALL,
        subresources: &[("status", "CronJob", GET)],
        columns: table::CRONJOB,
        cells: table::cronjob,
    },
    Kind {
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        short: &[],
        group: "discovery.k8s.io",
        version: "v1",
        namespaced: true,
        verbs: READ,
        categories: &[],
        subresources: &[],
        columns: table::ENDPOINTSLICE,
        cells: table::endpointslice,
    },
];

/// The kind served at `group`/`plural` ("" is the core group).
pub fn find(group: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.plural == plural)
}

/// The groups other than core, with their versions, in discovery order.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS.iter().filter(|k| !k.group.is_empty()) {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_consistent() {
        for k in KINDS {
            assert_eq!(
                k.columns.len(),
                (k.cells)(&Value::Null).len(),
                "{}: columns and cells differ",
                k.plural
            );
            if k.plural != "events" {
                assert_eq!(k.columns[0].name, "Name", "{}", k.plural);
            }
        }
        assert_eq!(
            find("apps", "deployments").unwrap().qualified(),
            "deployments.apps"
        );
        assert_eq!(groups()[0], ("apps", "v1"));
        for k in KINDS {
            assert_eq!(
                k.verbs.contains(&"create"),
                super::super::write::WRITABLE.contains(&k.plural),
                "{}",
                k.plural
            );
        }
    }
}
