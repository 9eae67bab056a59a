#!/usr/bin/env bash
# The second demo: a CronJob firing Jobs and a StatefulSet with stable names, per-pod DNS
# and volume claims kept across a pod's deletion, on a throw-away rrun node.
#
#   bash scripts/demo-stateful.sh        (as root; from a user account: sudo bash ...)
#
# The node is scripts/demo.sh's (its setup, and its cleanup: everything it made is removed
# afterwards, also on failure or Ctrl-C); this file is the scenario it runs there, with the
# agent's cluster DNS on. It applies a headless Service and a StatefulSet `db` of 3 pods
# (each appends "<hostname> started <time>" to the file of its own claim and prints it) and
# a CronJob `tick` every minute (Forbid) whose pods look up each db pod's DNS name. Shown:
# the ordered start (db-1 only once db-0 is Ready), the claims, a Job made now from the
# CronJob (`create job --from=cronjob/tick`) answering db-N.db.default.svc.cluster.local
# with each pod's IP, db-1 deleted and back under its name with the same claim (its file
# has both starts), and the CronJob's own Job at the next minute.
set -euo pipefail
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    # Run directly: demo.sh makes the node and sources this file on it.
    RRUN_DEMO=stateful exec bash "$(dirname "${BASH_SOURCE[0]}")/demo.sh"
fi

# From here on, sourced by demo.sh: kubectl (the stock kubectl on the node's API), $work,
# $image, say, die.

cat >"$work/stateful.yaml" <<EOF
apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: db, port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  replicas: 3
  serviceName: db
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: db
        image: $image
        imagePullPolicy: Never
        command: [sh, -c, 'echo "\$(hostname) started \$(date -u +%H:%M:%S)" >> /data/starts; cat /data/starts; trap "exit 0" TERM; while :; do sleep 1; done']
        readinessProbe:
          exec: {command: [test, -s, /data/starts]}
          periodSeconds: 1
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: 2
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: tick
            image: $image
            imagePullPolicy: Never
            command: [sh, -c, 'echo "tick at \$(date -u +%H:%M:%S)"; for i in 0 1 2; do echo "  db-\$i.db.default.svc.cluster.local -> \$(nslookup db-\$i.db.default.svc.cluster.local | sed -n "s/^Address: //p")"; done']
EOF

# "db-0:Ready db-1:Running ..." for the set's pods.
db_pods() {
    kubectl get pods -o json | jq -r '[.items[] | select(.metadata.labels.app == "db")
        | .metadata.name + ":" + (if any(.status.conditions[]?; .type == "Ready" and .status == "True")
            then "Ready" else (.status.phase // "Pending") end)] | sort | join(" ")'
}

# Waits (up to $2 s) until the set's pods are "$1", printing each change.
watch_db() {
    local want="$1" limit="$2" start=$SECONDS last="" now
    while :; do
        now="$(db_pods)"
        if [[ "$now" != "$last" ]]; then
            printf '  %3ds  %s\n' $((SECONDS - start)) "${now:-(no pods)}"
            last="$now"
        fi
        [[ "$now" == "$want" ]] && return 0
        ((SECONDS - start < limit)) || die "the StatefulSet did not reach '$want' in ${limit}s: $(tail -20 "$work/log/rrun-kubelet.log")"
        sleep 0.2
    done
}

# The one pod of Job $1, once the Job succeeded (up to $2 s).
job_pod() {
    local job="$1" limit="$2" start=$SECONDS
    until [[ "$(kubectl get jobs "$job" -o json 2>/dev/null | jq '.status.succeeded // 0')" == 1 ]]; do
        ((SECONDS - start < limit)) || die "Job $job did not succeed in ${limit}s"
        sleep 0.2
    done
    kubectl get pods -o json | jq -r --arg j "$job" '.items[] | select(.metadata.labels["job-name"] == $j) | .metadata.name'
}

say "kubectl apply -f stateful.yaml  (Service db (headless), StatefulSet db of 3 with a claim template, CronJob tick every minute)"
kubectl apply -f "$work/stateful.yaml"
say "ordered start (OrderedReady): db-1 is created only once db-0 is Ready, db-2 once db-1 is"
watch_db "db-0:Ready db-1:Ready db-2:Ready" 120
kubectl get statefulsets
echo
kubectl get pvc
echo
kubectl get pods -o wide

say "each pod's claim: what it wrote there"
for i in 0 1 2; do
    printf 'db-%s: ' "$i"
    kubectl logs "db-$i"
done

say "per-pod DNS: kubectl create job tick-now --from=cronjob/tick (its pod looks up each db pod)"
kubectl create job tick-now --from=cronjob/tick
pod="$(job_pod tick-now 60)"
kubectl logs "$pod"

say "delete pod db-1: the StatefulSet brings back db-1, with the same claim"
uid="$(kubectl get pods db-1 -o json | jq -r .metadata.uid)"
kubectl delete pod db-1 --wait=false
start=$SECONDS
until [[ "$(kubectl get pods db-1 -o json 2>/dev/null | jq -r .metadata.uid)" != "$uid" ]]; do
    ((SECONDS - start < 60)) || die "db-1 did not come back in 60 s"
    sleep 0.2
done
watch_db "db-0:Ready db-1:Ready db-2:Ready" 60
printf 'db-1: '
kubectl logs db-1
echo
kubectl describe pvc data-db-1

say "the CronJob's own Job: waiting for the next minute"
start=$SECONDS
while :; do
    job="$(kubectl get jobs -o json | jq -r '[.items[] | select(.metadata.name | test("^tick-[0-9]+$"))
        | select(.status.succeeded == 1) | .metadata.name] | sort | last // empty')"
    [[ -n "$job" ]] && break
    ((SECONDS - start < 150)) || die "the CronJob fired no Job in 150 s"
    sleep 1
done
kubectl get cronjobs
echo
kubectl get jobs
echo
kubectl logs "$(job_pod "$job" 10)"
echo
kubectl describe statefulset db
