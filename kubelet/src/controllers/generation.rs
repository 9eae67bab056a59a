//! `metadata.generation` of the objects the controllers run (Deployments, StatefulSets,
//! DaemonSets): the API server bumps it on every change of the spec, and `kubectl rollout
//! status` waits until `status.observedGeneration` has caught up with it. Manifest files
//! carry no generation, so the controller counts the spec's changes itself and keeps the
//! count in `controllers.json` (so it survives restarts of the agent).

use serde::{Deserialize, Serialize};

/// The generation of one object and the hash of the spec it was counted at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub number: i64,
    pub spec: String,
}

impl Generation {
    /// Counts `spec` in; true when the record changed (a new spec, or the first one).
    pub fn observe<T: Serialize>(&mut self, spec: &T) -> bool {
        let h = hash(spec);
        if self.number > 0 && self.spec == h {
            return false;
        }
        self.number += 1;
        self.spec = h;
        true
    }
}

/// FNV-1a over the spec's JSON: stable across builds (std's hasher is not), and a collision
/// costs at most one missed bump of a counter people read, not a wrong rollout.
fn hash<T: Serialize>(spec: &T) -> String {
    let text = serde_json::to_string(spec).unwrap_or_default();
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_on_spec_changes_only() {
        let mut g = Generation::default();
        assert!(g.observe(&serde_json::json!({"replicas": 1})));
        assert_eq!(g.number, 1);
        assert!(!g.observe(&serde_json::json!({"replicas": 1})));
        assert!(g.observe(&serde_json::json!({"replicas": 2})));
        assert!(g.observe(&serde_json::json!({"replicas": 1})));
        assert_eq!(g.number, 3);
        // Kept across a restart: the record round-trips through controllers.json.
        let mut back: Generation =
            serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back, g);
        assert!(!back.observe(&serde_json::json!({"replicas": 1})));
    }
}
