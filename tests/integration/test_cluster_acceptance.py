"""Acceptance of issue 10 on a real `tug cluster up --nodes 3` (each node in its own network
namespace) with the real kubectl: what a Kubernetes user sees for bad input (`kubectl apply` and
`kubectl describe`), the pod features of the node agent (env, volumes, security context, hooks,
grace period, probes, pull secrets), and services and DNS from inside pods (session affinity,
NodePort on node addresses, headless records and SRV, search path, forwarding to an upstream that
lives on the test's own bridge, the `kubernetes` service). `tug cluster down` must leave nothing.

The cluster driver is test_cluster_workloads' (one place that runs kubectl against a cluster).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from dnslib import QTYPE, RR, A, DNSRecord
from test_cluster_workloads import Cluster, _assert_nothing_left, _snapshot

from conftest import require_binary
from tugboat.cluster.up import cluster_down, cluster_up

pytestmark = pytest.mark.slow

CLUSTER_CIDR = "10.248.0.0/16"
OUTSIDE_NAME = "outside.acceptance.test."
OUTSIDE_IP = "192.0.2.10"  # TEST-NET-1: only ever an answer, never a destination
IP_FREEBIND = 15


class Upstream:
    """A tiny UDP DNS server on the test's bridge address (bound before the bridge exists, with
    IP_FREEBIND), standing for the resolver names outside the cluster are forwarded to."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            try:
                q = DNSRecord.parse(data)
            except Exception:
                continue
            name = str(q.q.qname)
            self.queries.append(name)
            reply = q.reply()
            if name.lower() == OUTSIDE_NAME and q.q.qtype == QTYPE.A:
                reply.add_answer(RR(name, QTYPE.A, ttl=5, rdata=A(OUTSIDE_IP)))
            elif name.lower() != OUTSIDE_NAME:
                reply.header.rcode = 3  # NXDOMAIN
            with contextlib.suppress(OSError):
                self.sock.sendto(reply.pack(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_binary("kubectl")
    require_binary("nft")
    base = tmp_path_factory.mktemp("clusteracc")
    name = "a" + uuid.uuid4().hex[:5]
    subnet = f"172.27.{random.randint(1, 250)}.0/24"
    host_ip = subnet.replace(".0/24", ".1")
    state_dir = str(base / "c")
    tables_before = set(subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.splitlines())
    upstream = Upstream(host_ip)
    old_env = os.environ.get("TUG_DNS_UPSTREAMS")
    os.environ["TUG_DNS_UPSTREAMS"] = f"{host_ip}:{upstream.port}"  # the node agents inherit it
    c: Cluster | None = None
    try:
        state = cluster_up(state_dir=state_dir, nodes=3, name=name, subnet=subnet, isolated=True,
                           cluster_cidr=CLUSTER_CIDR, node_args=["--metrics-period", "2", "--lease-renew", "2"],
                           timeout=90)
        c = Cluster(state, str(base / "kcache"), name, str(base))
        c.made["upstream"] = upstream
        yield c
    finally:
        if old_env is None:
            os.environ.pop("TUG_DNS_UPSTREAMS", None)
        else:
            os.environ["TUG_DNS_UPSTREAMS"] = old_env
        made: dict[str, Any] = {"pids": [], "containers": []}
        if c is not None:
            made = _snapshot(c.state)
            for k in ("pids", "containers"):
                made[k] = sorted(set(made[k]) | set(c.made.get(k, [])))
            for p in c.made.get("procs", []):
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(Exception):
                    p.wait(5)
        problems = cluster_down(state_dir=state_dir)
        upstream.close()
        assert problems == [], problems
        tables_after = set(subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.splitlines())
        # (only this cluster's: other engineers' engines make tables on this machine meanwhile)
        made["new_tables"] = [t.strip() for t in tables_after - tables_before
                              if "tugboat" in t and (name in t or "tugboat-svc" in t)]
        if c is not None:
            _assert_nothing_left(c.state, name, made)
            routes = subprocess.run(["ip", "route", "show"], capture_output=True, text=True).stdout
            assert not [r for r in routes.splitlines() if r.startswith("10.248.")], routes


def _apply(cluster: Cluster, text: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=text)


def _pod(cluster: Cluster, name: str) -> dict:
    return cluster.json("pod", name)


def _phase(cluster: Cluster, name: str, *phases: str, timeout: float = 60) -> dict:
    return cluster.wait(f"{name} in {phases}", lambda: (p := _pod(cluster, name))["status"].get("phase") in phases
                        and p, timeout)


def _ready(cluster: Cluster, name: str, timeout: float = 60) -> dict:
    def ready() -> dict | None:
        p = _pod(cluster, name)
        ok = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
        return p if ok else None

    return cluster.wait(f"{name} ready", ready, timeout)


def _events(cluster: Cluster, name: str) -> list[tuple[str, str, str]]:
    items = cluster.json("events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [(e["type"], e["reason"], e["message"]) for e in items]


def _node(cluster: Cluster, name: str) -> dict:
    return next(n for n in cluster.state["nodes"] if n["name"] == name)


# --- bad input, as `kubectl apply` and `kubectl describe` show it ----------------------------------
INVALID_PROBES = """
apiVersion: v1
kind: Pod
metadata: {name: noprobe-handler}
spec:
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"], livenessProbe: {periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {name: two-handlers}
spec:
  containers:
  - name: main
    image: busybox
    readinessProbe: {exec: {command: ["true"]}, tcpSocket: {port: 80}}
---
apiVersion: v1
kind: Pod
metadata: {name: bad-thresholds}
spec:
  containers:
  - name: main
    image: busybox
    livenessProbe: {exec: {command: ["true"]}, successThreshold: 2}
    startupProbe: {httpGet: {port: 0}, periodSeconds: -1}
    lifecycle: {preStop: {}}
"""


def test_nodes_described_as_kube(cluster: Cluster) -> None:
    name = cluster.state["nodes"][0]["name"]
    out = cluster.wait("RegisteredNode event", lambda: (o := cluster.kubectl("describe", "node", name).stdout)
                       and "RegisteredNode" in o and o, 20)
    assert re.search(rf"Normal\s+RegisteredNode\s+.*node-controller\s+Node {name} event: Registered Node {name} in "
                     "Controller", out), out
    assert re.search(r"Ready\s+True\s+.*KubeletReady\s+kubelet is posting ready status", out), out
    assert re.search(r"InternalIP:\s+" + re.escape(cluster.state["nodes"][0]["ip"]), out), out


def test_invalid_probes_are_rejected_with_kubes_messages(cluster: Cluster) -> None:
    r = cluster.kubectl("apply", "-f", "-", input=INVALID_PROBES, check=False)
    assert r.returncode == 1
    assert ('Pod "noprobe-handler" is invalid: spec.containers[0].livenessProbe: Required value: must specify a '
            "handler type") in r.stderr, r.stderr
    assert ('Pod "two-handlers" is invalid: spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not '
            "specify more than 1 handler type") in r.stderr, r.stderr
    for msg in ("spec.containers[0].lifecycle.preStop: Required value: must specify a handler type",
                "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
                "spec.containers[0].startupProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.containers[0].startupProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0"):
        assert msg in r.stderr, r.stderr
    assert "created" not in r.stdout
    # a Deployment's template is validated the same way
    r = cluster.kubectl("create", "deployment", "x", "--image=busybox", "--dry-run=client", "-o", "json")
    dep = json.loads(r.stdout)
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 70000}}
    r = cluster.kubectl("apply", "-f", "-", input=json.dumps(dep), check=False)
    assert r.returncode == 1 and ("spec.template.spec.containers[0].readinessProbe.tcpSocket.port: Invalid value: "
                                  "70000: must be between 1 and 65535, inclusive") in r.stderr, r.stderr


def test_unschedulable_oomkilled_and_missing_image_in_describe(cluster: Cluster) -> None:
    _apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"], resources: {requests: {cpu: "64"}}}
---
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "head -c 200m /dev/zero | tail"]
    resources: {limits: {memory: 24Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: noimage}
spec:
  containers:
  - {name: main, image: "127.0.0.1:1/missing/image:1"}
""")

    def unschedulable() -> str | None:
        out = cluster.kubectl("describe", "pod", "huge").stdout
        return out if "FailedScheduling" in out else None

    out = cluster.wait("FailedScheduling", unschedulable, 30)
    assert re.search(r"Warning\s+FailedScheduling\s+.*default-scheduler\s+0/3 nodes are available: 3 Insufficient "
                     r"cpu\. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod\.",
                     out), out
    assert _pod(cluster, "huge")["status"]["phase"] == "Pending"
    cond = next(c for c in _pod(cluster, "huge")["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"

    # OOMKilled with restartPolicy Always: the last state keeps it while the container is restarted
    def oom_restarted() -> dict | None:
        cs = (_pod(cluster, "oom")["status"].get("containerStatuses") or [{}])[0]
        t = (cs.get("lastState") or {}).get("terminated") or {}
        return cs if t.get("reason") == "OOMKilled" and cs.get("restartCount", 0) >= 1 else None

    cs = cluster.wait("OOMKilled restart", oom_restarted, 60)
    assert cs["lastState"]["terminated"]["exitCode"] == 137
    out = cluster.kubectl("describe", "pod", "oom").stdout
    assert re.search(r"Last State:\s+Terminated\s+Reason:\s+OOMKilled\s+Exit Code:\s+137", out), out
    assert re.search(r"Limits:\s+memory:\s+24Mi", out), out

    def pull_backoff() -> str | None:
        out = cluster.kubectl("describe", "pod", "noimage").stdout
        return out if re.search(r"State:\s+Waiting\s+Reason:\s+ImagePullBackOff", out) and \
            "Error: ImagePullBackOff" in out else None

    out = cluster.wait("ImagePullBackOff", pull_backoff, 30)
    image = "127.0.0.1:1/missing/image:1"
    # the kubelet's events, as `kubectl describe` shows them
    assert re.search(rf'Normal\s+Pulling\s+.*kubelet\s+Pulling image "{re.escape(image)}"', out), out
    assert re.search(rf'Warning\s+Failed\s+.*kubelet\s+Failed to pull image "{re.escape(image)}": ', out), out
    assert re.search(r"Warning\s+Failed\s+.*kubelet\s+Error: ErrImagePull\n", out), out
    assert re.search(rf'Normal\s+BackOff\s+.*kubelet\s+Back-off pulling image "{re.escape(image)}"', out), out
    assert re.search(r"Warning\s+Failed\s+.*kubelet\s+Error: ImagePullBackOff\n", out), out
    cluster.kubectl("delete", "pod", "huge", "oom", "noimage", "--wait=false")


# --- the node agent's pod features -----------------------------------------------------------------
FEATURES = """
apiVersion: v1
kind: ConfigMap
metadata: {name: feat-cfg}
data: {A: "1", B: two}
---
apiVersion: v1
kind: Secret
metadata: {name: feat-sec}
stringData: {TOKEN: s3cr3t}
---
apiVersion: v1
kind: Pod
metadata: {name: feat, labels: {app: feat}}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [4000]}
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c"]
    args:
    - >-
      echo "cpu=$CPU_LIM cpum=$CPU_LIM_M memreq=$MEM_REQ memlim=$MEM_LIM cm=$CM_A,$CM_B tok=$TOKEN";
      echo "id=$(id -u):$(id -g) groups=$(id -G)"; grep CapBnd /proc/self/status;
      echo "proj=$(cat /proj/cfg-a)/$(cat /proj/podname)/$(cat /proj/TOKEN)";
      echo "dapi=$(cat /dapi/cpu_limit)/$(cat /dapi/mem_limit)/$(cat /dapi/labels)";
      grep -E ' /(mem|proj|dapi|cfg) ' /proc/mounts | awk '{print $2, $3, substr($4, 1, 2)}' | sort;
      grep ' /mem ' /proc/mounts | grep -o 'size=[0-9]*k';
      touch /rootfs 2>/dev/null && echo rootfs-writable || echo rootfs-readonly;
      touch /cfg/x 2>/dev/null && echo cfg-writable || echo cfg-readonly;
      echo ok > /mem/f && echo mem-writable:$(stat -c %g /mem/f)
    resources: {requests: {cpu: 100m, memory: 16Mi}, limits: {cpu: 500m, memory: 64Mi}}
    env:
    - {name: CPU_LIM, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
    - {name: CPU_LIM_M, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}
    - {name: MEM_REQ, valueFrom: {resourceFieldRef: {resource: requests.memory, divisor: 1Mi}}}
    - {name: MEM_LIM, valueFrom: {resourceFieldRef: {resource: limits.memory}}}
    envFrom:
    - {configMapRef: {name: feat-cfg}, prefix: CM_}
    - secretRef: {name: feat-sec}
    securityContext:
      readOnlyRootFilesystem: true
      capabilities: {drop: ["ALL"], add: ["NET_BIND_SERVICE", "CHOWN"]}
    volumeMounts:
    - {name: mem, mountPath: /mem}
    - {name: proj, mountPath: /proj}
    - {name: dapi, mountPath: /dapi}
    - {name: cfg, mountPath: /cfg}
  volumes:
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 8Mi}}
  - {name: cfg, configMap: {name: feat-cfg}}
  - name: proj
    projected:
      sources:
      - configMap: {name: feat-cfg, items: [{key: A, path: cfg-a}]}
      - secret: {name: feat-sec}
      - downwardAPI: {items: [{path: podname, fieldRef: {fieldPath: metadata.name}}]}
  - name: dapi
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: cpu_limit, resourceFieldRef: {containerName: main, resource: limits.cpu, divisor: 1m}}
      - {path: mem_limit, resourceFieldRef: {containerName: main, resource: limits.memory, divisor: 1Mi}}
"""


def test_env_volumes_and_security_context(cluster: Cluster) -> None:
    _apply(cluster, FEATURES)
    _phase(cluster, "feat", "Succeeded", "Failed")
    out = cluster.kubectl("logs", "feat").stdout.splitlines()
    assert out[0] == "cpu=1 cpum=500 memreq=16 memlim=67108864 cm=1,two tok=s3cr3t", out  # limits.cpu rounds up
    ids, groups = out[1].split(" groups=")
    assert ids == "id=1000:3000" and sorted(groups.split()) == ["2000", "3000", "4000"], out  # + fsGroup, supplemental
    cap_bnd = int(out[2].split()[1], 16)
    assert cap_bnd == (1 << 10) | (1 << 0), out[2]  # NET_BIND_SERVICE | CHOWN, nothing else
    assert out[3] == "proj=1/feat/s3cr3t", out
    assert out[4] == 'dapi=500/64/app="feat"', out
    # configMap, downwardAPI and projected volumes are read-only; emptyDir Memory is a tmpfs of sizeLimit
    assert out[5:9] == ["/cfg ext4 ro", "/dapi ext4 ro", "/mem tmpfs rw", "/proj ext4 ro"] or \
        [line.rsplit(" ", 1)[1] for line in out[5:9]] == ["ro", "ro", "rw", "ro"], out
    assert out[9] == "size=8192k", out
    # fsGroup owns the emptyDir (set-group-ID): a new file there gets group 2000, not runAsGroup's 3000
    assert out[10:] == ["rootfs-readonly", "cfg-readonly", "mem-writable:2000"], out
    assert _pod(cluster, "feat")["status"]["phase"] == "Succeeded"


def test_hooks_grace_period_and_startup_probe(cluster: Cluster) -> None:
    marks = os.path.join(cluster.tmp, "hooks")
    os.makedirs(marks, exist_ok=True)
    _apply(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'echo term >> /marks/log; exit 0' TERM; while true; do sleep 0.1; done"]
    lifecycle:
      # longer than a probe's default 1 s timeout: a hook is not a probe
      postStart: {{exec: {{command: ["sh", "-c", "sleep 1.5; echo poststart >> /marks/log"]}}}}
      preStop: {{exec: {{command: ["sh", "-c", "echo prestop >> /marks/log"]}}}}
    startupProbe: {{exec: {{command: [grep, -q, poststart, /marks/log]}}, periodSeconds: 1, failureThreshold: 20}}
    volumeMounts: [{{name: marks, mountPath: /marks}}]
  volumes:
  - {{name: marks, hostPath: {{path: {marks}, type: Directory}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: stubborn}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {{name: main, image: busybox, imagePullPolicy: IfNotPresent,
      command: ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: neverstarts}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
    startupProbe: {{httpGet: {{port: 8080, path: /healthz}}, periodSeconds: 1, failureThreshold: 2}}
""")
    p = _ready(cluster, "hooked", 40)
    cs = p["status"]["containerStatuses"][0]
    assert cs["started"] and cs["restartCount"] == 0, cs
    with open(os.path.join(marks, "log")) as f:
        assert f.read() == "poststart\n"
    _phase(cluster, "stubborn", "Running")
    t0 = time.monotonic()
    cluster.kubectl("delete", "pod", "hooked", timeout=60)
    took_hooked = time.monotonic() - t0
    with open(os.path.join(marks, "log")) as f:
        assert f.read() == "poststart\nprestop\nterm\n"  # preStop ran before the TERM
    assert took_hooked < 8, took_hooked  # the container exits on TERM: no need to wait for the grace period
    t0 = time.monotonic()
    cluster.kubectl("delete", "pod", "stubborn", timeout=60)
    took = time.monotonic() - t0
    assert 2 <= took < 9, took  # TERM ignored: killed after terminationGracePeriodSeconds

    # a startup probe that never passes: the kubelet's message, Killing, then restarts
    ip = _pod(cluster, "neverstarts")["status"].get("podIP")

    def killed() -> list | None:
        ev = _events(cluster, "neverstarts")
        return ev if any(r == "Killing" for _t, r, _m in ev) else None

    ev = cluster.wait("startup probe kill", killed, 30)
    ip = _pod(cluster, "neverstarts")["status"]["podIP"]
    assert ("Warning", "Unhealthy", f'Startup probe failed: Get "http://{ip}:8080/healthz": dial tcp {ip}:8080: '
            "connect: connection refused") in ev, ev
    assert ("Normal", "Killing", "Container main failed startup probe, will be restarted") in ev, ev
    cluster.wait("restarted", lambda: _pod(cluster, "neverstarts")["status"]["containerStatuses"][0]["restartCount"]
                 >= 1, 20)
    cluster.kubectl("delete", "pod", "neverstarts", "--wait=false")


def test_killed_container_restarts_and_get_pods_shows_it(cluster: Cluster) -> None:
    cluster.kubectl("run", "victim", "--image=busybox", "--image-pull-policy=IfNotPresent", "--", "sleep", "3600")
    _apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: initializing}
spec:
  terminationGracePeriodSeconds: 0
  initContainers:
  - {name: first, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "60"]}
  containers:
  - {name: main, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
""")
    row = cluster.wait("Init:0/1", lambda: (r := cluster.kubectl("get", "pod", "initializing", "--no-headers")
                                             .stdout.split()) and r[2] == "Init:0/1" and r, 30)
    assert row[1] == "0/1", row
    cluster.kubectl("delete", "pod", "initializing", "--wait=false")
    p = _ready(cluster, "victim", 30)
    cid = p["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    root = _node(cluster, p["spec"]["nodeName"])["root"]
    with open(os.path.join(root, "containers", cid, "container.json")) as f:
        pid = int(json.load(f)["State"]["Pid"])
    os.kill(pid, signal.SIGKILL)

    def restarted() -> dict | None:
        cs = _pod(cluster, "victim")["status"]["containerStatuses"][0]
        return cs if cs.get("restartCount") == 1 and cs.get("ready") else None

    cs = cluster.wait("victim restarted", restarted, 30)
    assert cs["lastState"]["terminated"]["exitCode"] == 137 and cs["lastState"]["terminated"]["reason"] == "Error"
    row = cluster.kubectl("get", "pod", "victim", "--no-headers").stdout.split()
    assert row[:3] == ["victim", "1/1", "Running"], row
    assert row[3] == "1" and re.fullmatch(r"\(\d+s", row[4]) and row[5] == "ago)", row  # `1 (3s ago)` as kube
    out = cluster.kubectl("describe", "pod", "victim").stdout
    assert re.search(r"Last State:\s+Terminated\s+Reason:\s+Error\s+Exit Code:\s+137", out), out
    assert re.search(r"Restart Count:\s+1\n", out), out
    # events of the same second in the order they happened (kubectl sorts by time only)
    reasons = [line.split()[1] for line in out.split("Events:", 1)[1].splitlines()[3:] if line.strip()]
    assert reasons[:2] == ["Scheduled", "Pulled"], out
    cluster.kubectl("delete", "pod", "victim", "--wait=false")


def test_logs_since_limit_and_top_containers(cluster: Cluster) -> None:
    cluster.kubectl("run", "chatty", "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                    "sh", "-c", "echo early1; echo early2; sleep 3; echo late; exec sleep 3600")
    _phase(cluster, "chatty", "Running")
    cluster.wait("late line", lambda: "late" in cluster.kubectl("logs", "chatty").stdout, 20)
    assert cluster.kubectl("logs", "chatty", "--since=2s").stdout == "late\n"
    assert cluster.kubectl("logs", "chatty").stdout == "early1\nearly2\nlate\n"
    assert cluster.kubectl("logs", "chatty", "--limit-bytes=8").stdout == "early1\ne"
    assert cluster.kubectl("logs", "chatty", "--tail=2").stdout == "early2\nlate\n"
    r = cluster.kubectl("logs", "chatty", "--previous", check=False)
    assert r.returncode == 1 and 'previous terminated container "chatty" in pod "chatty" not found' in r.stderr
    out = cluster.wait("top pod --containers", lambda: (r := cluster.kubectl("top", "pod", "chatty", "--containers",
                                                                             check=False)).returncode == 0 and r.stdout,
                       30)
    assert out.split("\n")[0].split() == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"], out
    assert out.split("\n")[1].split()[:2] == ["chatty", "chatty"], out
    cluster.kubectl("delete", "pod", "chatty", "--wait=false")


def test_image_pull_secret_with_our_registry(cluster: Cluster) -> None:
    """`tug registry serve --htpasswd` on node 2's loopback; a pod without the secret fails to pull,
    one with a kubernetes.io/dockerconfigjson secret pulls and runs."""
    require_binary("htpasswd")
    node = cluster.state["nodes"][1]
    tmp = os.path.join(cluster.tmp, "registry")
    os.makedirs(tmp, exist_ok=True)
    subprocess.run(["htpasswd", "-Bbc", os.path.join(tmp, "htpasswd"), "alice", "wonderland"], check=True,
                   capture_output=True)
    port_file = os.path.join(tmp, "port")
    tug = os.path.join(os.path.dirname(sys.executable), "tug")
    if not os.path.exists(tug):
        tug = shutil.which("tug") or "tug"
    proc = subprocess.Popen(["ip", "netns", "exec", node["netns"], tug, "registry", "serve", "--addr", "127.0.0.1:0",
                             "--root", os.path.join(tmp, "data"), "--htpasswd", os.path.join(tmp, "htpasswd"),
                             "--port-file", port_file], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cluster.made.setdefault("procs", []).append(proc)
    try:
        def bound() -> str | None:
            if not os.path.exists(port_file):
                return None
            with open(port_file) as f:
                return f.read().strip() or None

        port = int(cluster.wait("registry port", bound, 20))
        image = f"127.0.0.1:{port}/private/box:1"
        push = subprocess.run(["ip", "netns", "exec", node["netns"], sys.executable, "-c", f"""
from tugboat.images.bootstrap import bootstrap_busybox
from tugboat.images.service import ImageService
from tugboat.distribution.client import RegistryClient
images = ImageService({os.path.join(tmp, 'images')!r})
bootstrap_busybox(images, {image!r})
RegistryClient().push(images, {image!r}, auth=("alice", "wonderland"))
"""], capture_output=True, text=True, timeout=60)
        assert push.returncode == 0, push.stderr
        _apply(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: private-nosecret}}
spec:
  nodeName: {node['name']}
  containers:
  - {{name: main, image: "{image}", command: [sleep, "3600"]}}
""")

        def pull_denied() -> str | None:
            ev = _events(cluster, "private-nosecret")
            return next((m for _t, r, m in ev if r == "Failed" and "Failed to pull image" in m), None)

        msg = cluster.wait("pull without the secret refused", pull_denied, 30)
        assert "authentication" in msg, msg
        cluster.kubectl("delete", "pod", "private-nosecret", "--wait=true", timeout=60)
        cluster.kubectl("create", "secret", "docker-registry", "regcred", f"--docker-server=127.0.0.1:{port}",
                        "--docker-username=alice", "--docker-password=wonderland")
        _apply(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: private}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node['name']}}}
  imagePullSecrets: [{{name: regcred}}]
  containers:
  - {{name: main, image: "{image}", command: [sh, -c, "echo pulled-with-secret; exec sleep 3600"]}}
""")
        p = _ready(cluster, "private", 40)
        assert p["status"]["containerStatuses"][0]["imageID"]
        ev = _events(cluster, "private")
        assert any(r == "Pulled" and m.startswith(f'Successfully pulled image "{image}" in ') for _t, r, m in ev), ev
        assert cluster.kubectl("logs", "private").stdout == "pulled-with-secret\n"
        cluster.kubectl("delete", "pod", "private", "--wait=false")
    finally:
        proc.kill()
        proc.wait(5)


# --- services and DNS from inside pods -------------------------------------------------------------
SERVICES = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
         labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: httpd
        image: busybox
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{containerPort: 8080, name: http}]
        readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: http, name: http}]
---
apiVersion: v1
kind: Service
metadata: {name: spread}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http, name: http}]
---
apiVersion: v1
kind: Service
metadata: {name: headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 8080, targetPort: http, name: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: named, labels: {app: named}}
spec:
  hostname: box
  subdomain: boxes
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: ownresolver}
spec:
  terminationGracePeriodSeconds: 1
  dnsPolicy: "None"
  dnsConfig:
    nameservers: ["192.0.2.53"]
    searches: ["corp.example"]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  containers:
  - {name: main, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Service
metadata: {name: boxes}
spec:
  clusterIP: None
  selector: {app: named}
  ports: [{port: 1, name: x}]
"""


def test_services_and_dns_from_pods(cluster: Cluster) -> None:
    _apply(cluster, SERVICES)
    cluster.kubectl("run", "dnsclient", "--image=busybox", "--image-pull-policy=IfNotPresent", "--", "sleep", "3600")

    def web_ready() -> list[dict] | None:
        pods = cluster.json("pods", "-l", "app=web")["items"]
        ok = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                     for c in p["status"].get("conditions") or [])]
        return pods if len(ok) == 3 else None

    pods = cluster.wait("3 ready web pods", web_ready, 60)
    names = {p["metadata"]["name"] for p in pods}
    ips = sorted(p["status"]["podIP"] for p in pods)
    _ready(cluster, "dnsclient", 30)

    def sh(script: str) -> str:
        # (busybox nslookup tries every search suffix and exits 1 when one of them is NXDOMAIN)
        return cluster.kubectl("exec", "dnsclient", "--", "sh", "-c", script, timeout=60, check=False).stdout

    def endpoints_in(svc: str) -> bool:
        sl = cluster.json("endpointslices", "-l", f"kubernetes.io/service-name={svc}")["items"]
        return sorted(a for s in sl for e in s.get("endpoints") or [] for a in e["addresses"]) == ips

    cluster.wait("endpoints", lambda: endpoints_in("sticky") and endpoints_in("spread"), 20)
    time.sleep(1)  # the proxies apply a change within a second
    # sessionAffinity ClientIP: every request of one client to the same pod; short name via the search path
    seen = sh("for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://sticky/; done").split()
    assert len(seen) == 10 and len(set(seen)) == 1 and seen[0] in names, seen
    # without affinity the same client reaches every replica
    seen = set(sh("for i in $(seq 1 30); do wget -q -O - http://spread.default/; done").split())
    assert seen == names, seen
    # NodePort on every node's address, from the host and from inside another node
    svc = cluster.json("service", "spread")
    node_port = svc["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767
    for n in cluster.state["nodes"]:
        with urllib.request.urlopen(f"http://{n['ip']}:{node_port}/", timeout=10) as r:
            assert r.read().decode().strip() in names
    other = cluster.state["nodes"][0]
    r = subprocess.run(["ip", "netns", "exec", other["netns"], "busybox", "wget", "-q", "-O", "-",
                        f"http://{cluster.state['nodes'][2]['ip']}:{node_port}/"], capture_output=True, text=True,
                       timeout=20)
    assert r.stdout.strip() in names, r
    # headless: the ready pods' addresses, SRV records naming each pod
    out = sh("nslookup headless")
    assert sorted(re.findall(r"Name:\s+headless\.default\.svc\.cluster\.local\s+Address:\s+([\d.]+)", out)) == ips, out
    out = sh("nslookup -type=SRV _http._tcp.headless.default.svc.cluster.local")
    targets = sorted(re.findall(r"service = \d+ \d+ 8080 ([\w.-]+)", out))
    assert targets == sorted(f"{ip.replace('.', '-')}.headless.default.svc.cluster.local" for ip in ips), out
    out = sh("nslookup -type=SRV _http._tcp.sticky.default.svc.cluster.local")
    assert re.search(r"service = \d+ \d+ 80 sticky\.default\.svc\.cluster\.local", out), out
    pod_ip = ips[0]
    out = sh(f"nslookup {pod_ip.replace('.', '-')}.headless.default.svc.cluster.local")
    assert re.search(rf"Address:\s+{re.escape(pod_ip)}\b", out), out
    # a pod with hostname + subdomain (as a StatefulSet's) has its own name under the headless service
    named_ip = _ready(cluster, "named", 30)["status"]["podIP"]
    assert cluster.kubectl("exec", "named", "--", "hostname", "-f").stdout.strip() == \
        "box.boxes.default.svc.cluster.local"
    out = cluster.wait("box.boxes resolves", lambda: (o := sh("nslookup box.boxes.default.svc.cluster.local"))
                       and re.search(rf"Address:\s+{re.escape(named_ip)}\b", o) and o, 15)
    # dnsPolicy None: only the pod's dnsConfig; ClusterFirst: the cluster DNS on the node's pod gateway
    _ready(cluster, "ownresolver", 30)
    assert cluster.kubectl("exec", "ownresolver", "--", "cat", "/etc/resolv.conf").stdout == (
        "search corp.example\nnameserver 192.0.2.53\noptions ndots:2 edns0\n")
    client_node = _node(cluster, _pod(cluster, "dnsclient")["spec"]["nodeName"])
    gateway = client_node["pod_cidr"].replace(".0/24", ".1")
    assert sh("cat /etc/resolv.conf") == (
        f"search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver {gateway}\noptions ndots:5\n")
    # names outside the cluster go to the upstream (here: the test's own resolver on its bridge)
    upstream = cluster.made["upstream"]
    out = sh(f"nslookup {OUTSIDE_NAME.rstrip('.')}")
    assert re.search(rf"Name:\s+{re.escape(OUTSIDE_NAME.rstrip('.'))}\s+Address:\s+{OUTSIDE_IP}", out), out
    assert OUTSIDE_NAME in upstream.queries
    assert not [q for q in upstream.queries if q.endswith("cluster.local.")], upstream.queries
    # the `kubernetes` service leads to the API server
    out = sh("nc -w 3 kubernetes.default.svc.cluster.local 443 </dev/null && echo connected")
    assert out.strip().endswith("connected"), out
    eps = cluster.json("endpoints", "kubernetes")
    host, port = cluster.state["server"].rsplit("/", 1)[-1].rsplit(":", 1)
    assert eps["subsets"][0]["addresses"][0]["ip"] == host and eps["subsets"][0]["ports"][0]["port"] == int(port)


def test_python_client_logs_exec_and_port_forward(cluster: Cluster) -> None:
    """The kubernetes Python client against the real node agents (through the API server)."""
    kubernetes = pytest.importorskip("kubernetes")
    from kubernetes.stream import portforward, stream

    cluster.kubectl("run", "pyc", "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                    "sh", "-c", "mkdir -p /w && echo via-python > /w/index.html && echo one && echo two && "
                                "exec httpd -f -p 8080 -h /w")
    _ready(cluster, "pyc", 30)
    api = kubernetes.config.new_client_from_config(config_file=cluster.state["kubeconfig"])
    try:
        core = kubernetes.client.CoreV1Api(api)
        pods = {p.metadata.name: p for p in core.list_namespaced_pod("default").items}
        assert pods["pyc"].status.phase == "Running" and pods["pyc"].status.pod_ip
        assert core.read_namespaced_pod_log("pyc", "default") == "one\ntwo\n"
        assert core.read_namespaced_pod_log("pyc", "default", tail_lines=1, timestamps=True).endswith(" two\n")
        resp = core.read_namespaced_pod_log("pyc", "default", follow=True, _preload_content=False)
        try:
            first = next(resp.stream(16))
            assert first.startswith(b"one\n"), first
        finally:
            resp.release_conn()
        # exec: plain output, then stdin/stdout/stderr and the exit code over the channel protocol
        out = stream(core.connect_get_namespaced_pod_exec, "pyc", "default", command=["cat", "/w/index.html"],
                     stdout=True, stderr=True, stdin=False, tty=False)
        assert out == "via-python\n"
        ws = stream(core.connect_get_namespaced_pod_exec, "pyc", "default",
                    command=["sh", "-c", "read x; echo got:$x; echo oops >&2; exit 6"],
                    stdout=True, stderr=True, stdin=True, tty=False, _preload_content=False)
        try:
            # a str goes out as a TEXT frame, bytes as a BINARY one: both are stdin, as for the kubelet
            ws.write_stdin("hello ")
            ws.write_stdin(b"world\n")
            ws.run_forever(timeout=20)
            assert not ws.is_open()
            assert ws.read_stdout(timeout=1) == "got:hello world\n"
            assert ws.read_stderr(timeout=1) == "oops\n"
            assert ws.returncode == 6
        finally:
            ws.close()
        # port-forward over the channel protocol (`?ports=`), as the Python client does it
        pf = portforward(core.connect_get_namespaced_pod_portforward, "pyc", "default", ports="8080")
        try:
            sock = pf.socket(8080)
            sock.setblocking(True)
            sock.settimeout(10)
            sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: pyc\r\n\r\n")
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            sock.close()
            assert data.startswith(b"HTTP/1.") and data.endswith(b"via-python\n"), data
            assert pf.error(8080) is None
        finally:
            pf.close()
    finally:
        api.close()
    cluster.kubectl("delete", "pod", "pyc", "--wait=false")
