#!/usr/bin/env bash
# README command 1: a whole rrun node in a minute.
#
#   bash scripts/demo.sh        (as root; from a user account: sudo bash scripts/demo.sh)
#
# Installs what is missing (scripts/setup.sh), builds the release binaries, and makes a
# throw-away "node": a network and mount namespace of its own (held by one process, as the
# integration tests' Node does; nothing is added to `ip netns`), a temporary directory for
# every state dir, and a cgroup of its own below which the pods' cgroups go. On it run
# rrun-cri (the CRI server, pods on a CNI bridge inside the node) and rrun-kubelet (the node
# agent). The demo applies a Deployment of 3 busybox httpd replicas (each page says its
# version) and a Service, then rolls the Deployment from v1 to v2 while a client inside the
# node sends requests to the Service's ClusterIP one after another, printing `kubectl get
# deployments` as it goes and the tally at the end (failed requests: 0). kubectl is the
# stock one (the machine's, or Debian's that setup.sh installs) on the agent's API with the
# admin kubeconfig the agent writes. Everything it
# made is removed afterwards (processes, pods, mounts, cgroups, the namespaces, temp dirs),
# also on failure or Ctrl-C. The host's network, mounts and cgroups are never changed.
#
# `RRUN_DEMO=stateful` (what scripts/demo-stateful.sh sets) runs that script's scenario on
# the same node instead (a CronJob and a StatefulSet); RRUN_DEMO_PROFILE=debug uses the
# debug binaries (built if missing) instead of a release build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -x "$HOME/.cargo/bin/cargo" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
((EUID == 0)) || { echo "demo.sh: containers need root: run 'sudo bash scripts/demo.sh'" >&2; exit 1; }

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo.sh: %s\n' "$*" >&2; exit 1; }

say "setup (scripts/setup.sh: only what is missing)"
# The demo needs neither the stock kubelet nor grpcio: setup.sh skips them.
RRUN_SETUP_MINIMAL=1 bash scripts/setup.sh

profile="${RRUN_DEMO_PROFILE:-release}"
[[ "$profile" == release || "$profile" == debug ]] || die "RRUN_DEMO_PROFILE: release or debug"
if [[ "$profile" == release ]]; then
    say "cargo build --release (rrun-cri, rrun-kubelet, rrun-fixtures)"
    cargo build --release -q -p rrun-cri -p rrun-kubelet -p rootfs-fixtures
else
    say "cargo build (rrun-cri, rrun-kubelet, rrun-fixtures)"
    cargo build -q -p rrun-cri -p rrun-kubelet -p rootfs-fixtures
fi
bin="$PWD/target/$profile"
for b in rrun-cri rrun-cri-monitor rrun-kubelet rrun-fixtures; do
    [[ -x "$bin/$b" ]] || die "missing $bin/$b after the build"
done

# Not below /var: the node's /var is a directory of its own.
work="$(mktemp -d "${TMPDIR:-/tmp}/rrun-demo.XXXXXX")"
[[ "$work" != /var/* ]] || die "the temp dir $work is below /var; set TMPDIR"
chmod 755 "$work"
mkdir -p "$work"/{var,cri/root,cri/run,cni-conf,cni-ipam,manifests,agent,pod-logs,log}
cgroup_name="rrun-demo-$$"
service_range="10.97.0.0/24"
holder="" cri_pid="" agent_pid="" client_pid=""

# Every cgroup hierarchy's mount point (v1 controllers, the named systemd one, v2).
cgroup_mounts() { awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo | sort -u; }

# The pids of every process still in the demo's cgroups.
cgroup_pids() {
    local m
    for m in $(cgroup_mounts); do
        [[ -d "$m/$cgroup_name" ]] || continue
        find "$m/$cgroup_name" -name cgroup.procs -exec cat {} + 2>/dev/null
    done | sort -u
}

# Processes whose mount namespace is the node's (the CRI server's monitors and helpers).
node_pids() {
    [[ -n "$holder" ]] || return 0
    local ns p
    ns="$(readlink "/proc/$holder/ns/mnt" 2>/dev/null)" || return 0
    for p in /proc/[0-9]*; do
        [[ "$(readlink "$p/ns/mnt" 2>/dev/null)" == "$ns" ]] && echo "${p#/proc/}"
    done
    return 0
}

stop_pid() { # pid: SIGTERM, up to 10 s, then SIGKILL
    local pid="$1" i
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local status=$? m pids i
    trap - EXIT INT TERM
    set +e
    say "cleaning up"
    [[ -n "$client_pid" ]] && kill -KILL "$client_pid" 2>/dev/null
    if [[ -n "$agent_pid" ]] && kill -0 "$agent_pid" 2>/dev/null; then
        # The pods go the agent's way (preStop, graceful stop, sandbox removal).
        rm -f "$work"/manifests/*.yaml "$work"/manifests/*.json
        for ((i = 0; i < 300; i++)); do
            kubectl get pods 2>&1 | grep -q '^No resources found' && break
            sleep 0.1
        done
        # A clean stop also removes the Services' nftables table.
        stop_pid "$agent_pid"
    fi
    stop_pid "$cri_pid"
    # Whatever is left: in the demo's cgroups, or in the node's mount namespace.
    for ((i = 0; i < 50; i++)); do
        pids="$(cgroup_pids; node_pids | grep -vx "$holder")"
        [[ -n "$pids" ]] || break
        # shellcheck disable=SC2086 # one pid per word
        kill -KILL $pids 2>/dev/null
        sleep 0.1
    done
    # The holder last: with it the node's namespaces (and every mount in them) go.
    [[ -n "$holder" ]] && kill -KILL "$holder" 2>/dev/null && wait "$holder" 2>/dev/null
    for m in $(cgroup_mounts); do
        [[ -d "$m/$cgroup_name" ]] && find "$m/$cgroup_name" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    # --one-file-system: never follow a mount that might be left below (there is none
    # once the node's mount namespace is gone).
    rm -rf --one-file-system "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for m in $(cgroup_mounts); do mkdir "$m/$cgroup_name"; done

say "the node: its own network and mount namespaces, state in $work"
# As the integration tests' Node: /var is the node's own; /proc/sys is read-only except
# /proc/sys/net, which is the node's network namespace's (the CNI bridge plugin writes there).
cat >"$work/holder.sh" <<EOF
set -e
ip link set lo up
mount --bind '$work' '$work'
mount --make-shared '$work'
mount --bind '$work/var' /var
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount --bind /proc/sys/net /proc/sys/net
mount -o remount,bind,rw /proc/sys/net
touch '$work/ready'
exec sleep infinity
EOF
unshare --net --mount --propagation private -- sh "$work/holder.sh" >"$work/log/holder.log" 2>&1 &
holder=$!
for ((i = 0; i < 200; i++)); do
    [[ -e "$work/ready" ]] && break
    kill -0 "$holder" 2>/dev/null || die "setting up the node failed: $(cat "$work/log/holder.log")"
    sleep 0.05
done
[[ -e "$work/ready" ]] || die "the node's namespaces were not set up in time"
on_node() { nsenter --target "$holder" --net --mount -- "$@"; }
echo "node network namespace: $(readlink "/proc/$holder/ns/net") (host: $(readlink /proc/self/ns/net))"

# The pods' network: a bridge inside the node, the node's side the gateway (the pods'
# default route: the cluster DNS address is the node's), no masquerade.
cat >"$work/cni-conf/10-demo.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "rrun-demo", "plugins": [{"type": "bridge", "bridge": "rrundemo0",
 "isGateway": true, "ipMasq": false, "ipam": {"type": "host-local",
 "ranges": [[{"subnet": "10.88.99.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
 "dataDir": "$work/cni-ipam"}}]}
EOF

image="localhost/rrun-demo:1"
"$bin/rrun-fixtures" image "$work/busybox.tar" --ref "$image" >/dev/null
"$bin/rrun-cri" --root "$work/cri/root" image import "$work/busybox.tar" >/dev/null

# The stateful scenario's per-pod names need the node's cluster DNS (on a link-local
# address of the node, as NodeLocal DNSCache; no upstream: an empty resolv.conf).
agent_flags=()
if [[ "${RRUN_DEMO:-}" == stateful ]]; then
    : >"$work/resolv.conf"
    agent_flags=(--cluster-dns=169.254.20.10 --cluster-domain=cluster.local --resolv-conf="$work/resolv.conf")
fi

say "rrun-cri and rrun-kubelet on the node"
on_node "$bin/rrun-cri" --socket "$work/cri/cri.sock" --root "$work/cri/root" \
    --runtime-root "$work/cri/run" --cni-conf-dir "$work/cni-conf" --cni-bin-dir /usr/lib/cni \
    >"$work/log/rrun-cri.log" 2>&1 &
cri_pid=$!
for ((i = 0; i < 300; i++)); do
    [[ -S "$work/cri/cri.sock" ]] && break
    kill -0 "$cri_pid" 2>/dev/null || die "rrun-cri exited: $(tail -20 "$work/log/rrun-cri.log")"
    sleep 0.1
done
[[ -S "$work/cri/cri.sock" ]] || die "rrun-cri did not create its socket"
on_node env RRUN_LOG=warn "$bin/rrun-kubelet" \
    --pod-manifest-path="$work/manifests" \
    --container-runtime-endpoint="unix://$work/cri/cri.sock" \
    --root-dir="$work/agent" --pod-logs-dir="$work/pod-logs" \
    --cgroup-root="/$cgroup_name" --node-name=demo-node \
    --service-cluster-ip-range="$service_range" "${agent_flags[@]}" \
    >"$work/log/rrun-kubelet.log" 2>&1 &
agent_pid=$!
# The stock kubectl (the machine's, or Debian's kubernetes-client that setup.sh installs where
# there is none) with the admin kubeconfig the agent writes at its start, run in the node's
# network namespace, where the agent's API listens (127.0.0.1:6443).
kubectl_bin="$(command -v kubectl)" || die "kubectl not found (scripts/setup.sh installs Debian's kubernetes-client)"
kubectl() {
    nsenter --target "$holder" --net -- "$kubectl_bin" --kubeconfig="$work/agent/kubeconfig" \
        --cache-dir="$work/kube-cache" "$@"
}
for ((i = 0; i < 300; i++)); do
    kubectl get pods >/dev/null 2>&1 && break
    kill -0 "$agent_pid" 2>/dev/null || die "rrun-kubelet exited: $(tail -20 "$work/log/rrun-kubelet.log")"
    sleep 0.1
done
echo "rrun-cri pid $cri_pid, rrun-kubelet pid $agent_pid (API: $work/agent/kubelet.sock)"

if [[ "${RRUN_DEMO:-}" == stateful ]]; then
    # shellcheck source=scripts/demo-stateful.sh
    . scripts/demo-stateful.sh
    exit 0
fi

# The Deployment (version $1) and its Service.
manifest() {
    cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: httpd
        image: $image
        imagePullPolicy: Never
        env: [{name: VERSION, value: $1}]
        command: [sh, -c, 'mkdir /www && echo \$VERSION > /www/index.html && exec httpd -f -p 8080 -h /www']
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: http}
          periodSeconds: 1
        lifecycle:
          preStop:
            exec: {command: [sleep, "1"]}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: http
EOF
}

# Waits (up to $2 s) until every replica of the Deployment runs version $1 and is available.
wait_rolled() {
    local want="$1" limit="$2" start=$SECONDS line
    while :; do
        line="$(kubectl get deployments web -o json 2>/dev/null |
            jq -r '[.status.replicas, .status.updatedReplicas, .status.availableReplicas] | map(. // 0) | join(" ")')" || line=""
        if [[ "$line" == "3 3 3" ]] && [[ "$(kubectl get pods -o json | jq '.items | length')" == 3 ]]; then
            return 0
        fi
        ((SECONDS - start < limit)) || die "the Deployment did not reach $want in ${limit}s: $(tail -20 "$work/log/rrun-kubelet.log")"
        sleep 0.2
    done
}

say "kubectl apply -f web.yaml  (Deployment web, 3 replicas of v1; Service web)"
manifest v1 >"$work/web.yaml"
kubectl apply -f "$work/web.yaml"
wait_rolled v1 90
kubectl get deployments
echo
kubectl get pods -o wide
echo
kubectl get services
ip="$(kubectl get services web -o json | jq -r .spec.clusterIP)"
[[ "$ip" =~ ^[0-9.]+$ ]] || die "the Service has no ClusterIP"
# The node's route to the Service range (on a real node the default route does this).
on_node ip route add "$service_range" dev rrundemo0

# The client: inside the node's network namespace, one request after another to the
# ClusterIP until told to stop; a tally of answers by body and of failures.
cat >"$work/client.sh" <<'EOF'
# HTTP/1.0 over bash's /dev/tcp: no process per request.
ip="$1" dir="$2"
sent=0 failed=0
declare -A seen=()
get() {
    local resp=""
    exec 3<>"/dev/tcp/$ip/80" || return 1
    printf 'GET / HTTP/1.0\r\nHost: %s\r\n\r\n' "$ip" >&3
    # Up to the end of the answer (read returns non-zero there: no NUL in it).
    IFS= read -r -d '' -t 5 resp <&3
    exec 3>&-
    [[ "$resp" == "HTTP/1."[01]" 200 "* ]] || { echo "answer: ${resp%%$'\r'*}"; return 1; }
    body="${resp#*$'\r\n\r\n'}"
    body="${body%$'\n'}"
}
while [[ ! -e "$dir/stop" ]]; do
    sent=$((sent + 1))
    if get >>"$dir/client.err" 2>&1; then
        seen[$body]=$((${seen[$body]:-0} + 1))
    else
        failed=$((failed + 1))
    fi
    if ((sent % 50 == 0)); then
        echo "$sent $failed" >"$dir/progress.tmp" && mv "$dir/progress.tmp" "$dir/progress"
    fi
done
{
    echo "sent $sent"
    echo "failed $failed"
    for v in "${!seen[@]}"; do echo "answer $v ${seen[$v]}"; done
} >"$dir/tally"
EOF
mkdir "$work/client"
nsenter --target "$holder" --net -- bash "$work/client.sh" "$ip" "$work/client" &
client_pid=$!

say "rolling update to v2 while the client sends requests to http://$ip/ from inside the node"
for ((i = 0; i < 100; i++)); do [[ -e "$work/client/progress" ]] && break; sleep 0.1; done
manifest v2 >"$work/web.yaml"
kubectl apply -f "$work/web.yaml"
start=$SECONDS
while :; do
    sleep 2
    read -r sent failed <"$work/client/progress" || true
    printf -- '--- %2ds: %s requests so far, %s failed\n' $((SECONDS - start)) "${sent:-0}" "${failed:-0}"
    kubectl get deployments
    kubectl get replicasets | tail -n +2 | sed 's/^/  replicaset /'
    line="$(kubectl get deployments web -o json | jq -r '[.status.replicas, .status.updatedReplicas, .status.availableReplicas] | map(. // 0) | join(" ")')"
    # Done: v2's ReplicaSet beside v1's (so the agent has seen v2), 3 pods, all v2 and available.
    if [[ "$line" == "3 3 3" ]] && [[ "$(kubectl get replicasets -o json | jq '.items | length')" == 2 ]] &&
        [[ "$(kubectl get pods -o json | jq '.items | length')" == 3 ]]; then
        break
    fi
    ((SECONDS - start < 120)) || die "the rollout did not finish in 120 s"
done
# 50 more requests against v2 only, then the tally.
read -r mark _ <"$work/client/progress"
for ((i = 0; i < 100; i++)); do
    read -r sent _ <"$work/client/progress"
    ((sent < mark + 50)) || break
    sleep 0.1
done
touch "$work/client/stop"
wait "$client_pid" || true
client_pid=""

say "after the rollout"
kubectl get pods -o wide
echo
kubectl get replicasets
echo
kubectl get endpoints

sent="$(awk '$1 == "sent" { print $2 }' "$work/client/tally")"
failed="$(awk '$1 == "failed" { print $2 }' "$work/client/tally")"
say "tally: $sent requests to the Service during the rollout, $failed failed"
awk '$1 == "answer" { printf "  answered by %s: %s\n", $2, $3 }' "$work/client/tally" | sort
if ((failed != 0)); then
    echo "demo.sh: $failed requests failed:" >&2
    sort "$work/client/client.err" | uniq -c | head >&2
    exit 1
fi
