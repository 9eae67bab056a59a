//! The Deployment controller's arithmetic: maxSurge and maxUnavailable resolved with
//! Kubernetes' rounding, and one step of a RollingUpdate or a Recreate over the
//! Deployment's ReplicaSets.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// `25%` of `total`, rounded up (surge) or down (unavailable), or a plain number.
pub fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool) -> Result<i32, String> {
    let v = v.cloned().unwrap_or(IntOrString::String("25%".into()));
    match v {
        IntOrString::Int(n) if n >= 0 => Ok(n),
        IntOrString::Int(n) => Err(format!("{n}: must be greater than or equal to 0")),
        IntOrString::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|n| n.parse().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("{s:?}: a valid percent string must be a numeric string followed by an ending '%'"))?;
            let scaled = p * i64::from(total);
            let n = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            Ok(n as i32)
        }
    }
}

/// maxSurge and maxUnavailable of a rollout to `replicas`; both zero would never move, so
/// unavailable becomes 1 then (as `ResolveFenceposts` does).
pub fn fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    replicas: i32,
) -> Result<(i32, i32), String> {
    let s = resolve(surge, replicas, true).map_err(|e| format!("maxSurge: {e}"))?;
    let u = resolve(unavailable, replicas, false).map_err(|e| format!("maxUnavailable: {e}"))?;
    Ok(if s == 0 && u == 0 { (0, 1) } else { (s, u) })
}

/// A ReplicaSet as the rollout sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Set {
    /// spec.replicas
    pub replicas: i32,
    /// Pods it has now.
    pub pods: i32,
    pub available: i32,
}

/// One RollingUpdate step: the new ReplicaSet's replicas and the old ones' (oldest first
/// in `old`), as `reconcileNewReplicaSet` then `reconcileOldReplicaSets` compute them: the
/// counts are the ReplicaSets' replicas (pods already leaving are not counted), and a step
/// that scales the new one up does nothing else.
pub fn rolling(
    replicas: i32,
    surge: i32,
    unavailable: i32,
    new: Set,
    old: &[Set],
) -> (i32, Vec<i32>) {
    let mut old_replicas: Vec<i32> = old.iter().map(|s| s.replicas).collect();
    let old_total: i32 = old_replicas.iter().sum();
    if new.replicas > replicas {
        return (replicas, old_replicas);
    }
    if new.replicas < replicas {
        let max_total = replicas + surge;
        let total = new.replicas + old_total;
        if total < max_total {
            let up = (max_total - total).min(replicas - new.replicas);
            return (new.replicas + up, old_replicas);
        }
    }
    let min_available = replicas - unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let mut budget = new.replicas + old_total - min_available - new_unavailable;
    if budget <= 0 {
        return (new.replicas, old_replicas);
    }
    // First the old pods that are not available anyway (cleanupUnhealthyReplicas).
    let mut available: Vec<i32> = old.iter().map(|s| s.available).collect();
    for (i, r) in old_replicas.iter_mut().enumerate() {
        if budget <= 0 {
            break;
        }
        let cut = (*r - available[i]).max(0).min(budget);
        *r -= cut;
        budget -= cut;
        available[i] = available[i].min(*r);
    }
    // Then available ones, while enough stay available.
    let total_available: i32 = new.available + available.iter().sum::<i32>();
    let mut can_remove = total_available - min_available;
    for r in old_replicas.iter_mut() {
        if can_remove <= 0 {
            break;
        }
        let cut = (*r).min(can_remove);
        *r -= cut;
        can_remove -= cut;
    }
    (new.replicas, old_replicas)
}

/// One Recreate step: old ones to zero; the new one scaled up only when no old pod is left.
pub fn recreate(replicas: i32, old: &[Set]) -> (Option<i32>, Vec<i32>) {
    let olds = vec![0; old.len()];
    let old_pods: i32 = old.iter().map(|s| s.pods).sum();
    if old_pods > 0 {
        (None, olds)
    } else {
        (Some(replicas), olds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn rounding() {
        // 25% of 10: surge rounds 2.5 up to 3, unavailable down to 2.
        assert_eq!(fenceposts(None, None, 10).unwrap(), (3, 2));
        assert_eq!(
            fenceposts(Some(&pct("10%")), Some(&pct("10%")), 5).unwrap(),
            (1, 0)
        );
        assert_eq!(
            fenceposts(Some(&pct("0%")), Some(&pct("0%")), 5).unwrap(),
            (0, 1)
        );
        assert_eq!(
            fenceposts(Some(&IntOrString::Int(1)), Some(&IntOrString::Int(0)), 3).unwrap(),
            (1, 0)
        );
        assert_eq!(resolve(Some(&pct("100%")), 3, false).unwrap(), 3);
        assert_eq!(resolve(Some(&pct("1%")), 3, true).unwrap(), 1);
        assert!(resolve(Some(&pct("x%")), 3, true).is_err());
        assert!(resolve(Some(&IntOrString::Int(-1)), 3, true).is_err());
    }

    fn set(replicas: i32, pods: i32, available: i32) -> Set {
        Set {
            replicas,
            pods,
            available,
        }
    }

    #[test]
    fn rolling_surge_one_unavailable_zero() {
        // 3 replicas, maxSurge 1, maxUnavailable 0: one new pod at a time.
        let (n, o) = rolling(3, 1, 0, set(0, 0, 0), &[set(3, 3, 3)]);
        assert_eq!((n, o), (1, vec![3]));
        // The new pod is not available yet: nothing old goes.
        let (n, o) = rolling(3, 1, 0, set(1, 1, 0), &[set(3, 3, 3)]);
        assert_eq!((n, o), (1, vec![3]));
        // Available: one old goes, and no more new one until it has gone.
        let (n, o) = rolling(3, 1, 0, set(1, 1, 1), &[set(3, 3, 3)]);
        assert_eq!((n, o), (1, vec![2]));
        // The old pod going is not counted: the next new one starts.
        let (n, o) = rolling(3, 1, 0, set(1, 1, 1), &[set(2, 3, 3)]);
        assert_eq!((n, o), (2, vec![2]));
        let (n, o) = rolling(3, 1, 0, set(2, 2, 2), &[set(2, 2, 2)]);
        assert_eq!((n, o), (2, vec![1]));
        // The end: all new.
        let (n, o) = rolling(3, 1, 0, set(3, 3, 3), &[set(1, 1, 1)]);
        assert_eq!((n, o), (3, vec![0]));
    }

    #[test]
    fn rolling_unavailable_and_unhealthy_old() {
        // maxSurge 0, maxUnavailable 1: an old pod goes first.
        let (n, o) = rolling(3, 0, 1, set(0, 0, 0), &[set(3, 3, 3)]);
        assert_eq!((n, o), (0, vec![2]));
        let (n, o) = rolling(3, 0, 1, set(0, 0, 0), &[set(2, 2, 2)]);
        assert_eq!((n, o), (1, vec![2]));
        // An old ReplicaSet whose pods never became available is cut first, oldest first.
        let (n, o) = rolling(3, 1, 0, set(1, 1, 0), &[set(3, 3, 3), set(1, 1, 0)]);
        assert_eq!((n, o), (1, vec![3, 0]));
        // Scaled down mid-rollout: the new one is clamped.
        assert_eq!(rolling(2, 1, 0, set(3, 3, 3), &[]).0, 2);
    }

    #[test]
    fn recreate_waits_for_old_pods() {
        assert_eq!(recreate(3, &[set(3, 3, 3)]), (None, vec![0]));
        assert_eq!(recreate(3, &[set(0, 1, 0)]), (None, vec![0]));
        assert_eq!(recreate(3, &[set(0, 0, 0)]), (Some(3), vec![0]));
    }
}
