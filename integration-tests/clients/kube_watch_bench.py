#!/usr/bin/env python3
"""Watch latency of rrun-kubelet's API, for bench/api.sh (integration-tests/tests/kubectl_bench.rs).

Usage: kube_watch_bench.py KUBECONFIG CHANGES

One ConfigMap in namespace default, a watch of the namespace's ConfigMaps open on it (the
official `kubernetes` client's watch reader, in a thread), then CHANGES label patches one
after another: for each, the time from just before the PATCH is sent to its MODIFIED event
(the one carrying that patch's label) read off the watch. A random pause of 50 to 350 ms
before each patch spreads the writes over the server's watch poll period, so the figures
are an average over its phase, not one point of it. The last line on stdout is a JSON
object: "event_ms" (write to event) and "patch_ms" (the PATCH's own round trip), in order.
"""

import json
import queue
import random
import sys
import threading
import time

from kubernetes import client, config, watch

KUBECONFIG, CHANGES = sys.argv[1], int(sys.argv[2])
NS, NAME = "default", "watch-bench"
EVENT_TIMEOUT = 30.0

config.load_kube_config(config_file=KUBECONFIG)
core = client.CoreV1Api(client.ApiClient())
cm = core.create_namespaced_config_map(
    NS, {"metadata": {"name": NAME, "labels": {"seq": "start"}}, "data": {"a": "1"}}
)
events = queue.Queue()


def reader(rv):
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=600):
        obj = ev["object"]
        if obj.metadata.name == NAME:
            events.put((time.monotonic(), ev["type"], (obj.metadata.labels or {}).get("seq")))


threading.Thread(target=reader, args=(cm.metadata.resource_version,), daemon=True).start()


def change(seq):
    """Patches the label to `seq`; (write-to-event seconds, PATCH seconds)."""
    t0 = time.monotonic()
    core.patch_namespaced_config_map(NAME, NS, {"metadata": {"labels": {"seq": seq}}})
    t1 = time.monotonic()
    deadline = t0 + EVENT_TIMEOUT
    while True:
        try:
            t, kind, got = events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            print(f"no event for seq={seq} within {EVENT_TIMEOUT}s", file=sys.stderr)
            sys.exit(1)
        if kind == "MODIFIED" and got == seq:
            return t - t0, t1 - t0


# The watch is live once a first change comes through (not measured).
change("warmup")
rng = random.Random(21)
event_ms, patch_ms = [], []
for i in range(CHANGES):
    time.sleep(rng.uniform(0.05, 0.35))
    e, p = change(str(i))
    event_ms.append(round(e * 1000.0, 2))
    patch_ms.append(round(p * 1000.0, 2))
core.delete_namespaced_config_map(NAME, NS)
print(json.dumps({"event_ms": event_ms, "patch_ms": patch_ms}))
