"""A real `tug cluster up --nodes 3` (real node agents, each node in its own network namespace) driven
with the real kubectl: the node endpoint's TLS authentication, a StatefulSet's claim pinned to its
volume's node and keeping its data, an HPA scaling a CPU-burning Deployment up and back down; then
`tug cluster down` must leave nothing behind (nodes area)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cluster_support import KubectlCluster
from conftest import require_binary
from tugboat.cluster.up import cluster_down, cluster_up

pytestmark = pytest.mark.slow

CLUSTER_CIDR = "10.246.0.0/16"


@dataclass
class Cluster(KubectlCluster):
    name: str = ""
    tmp: str = ""
    made: dict[str, Any] = field(default_factory=dict)

    def pki(self, name: str) -> str:
        return os.path.join(self.state["dir"], "apiserver", "pki", name)


def _snapshot(state: dict) -> dict[str, Any]:
    """What the cluster made that must be gone after `down`: container ids (-> cgroups), process ids."""
    ids: list[str] = []
    for n in state["nodes"]:
        d = os.path.join(n["root"], "containers")
        if os.path.isdir(d):
            ids += [c for c in os.listdir(d) if re.fullmatch(r"[0-9a-f]{64}", c)]
    pids = [p["pid"] for p in state["processes"]]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            root = os.readlink(f"/proc/{pid}/root")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if root.startswith(state["dir"]) or state["dir"] in cmd:
            pids.append(int(pid))
    return {"containers": ids, "pids": sorted(set(pids))}


def _assert_nothing_left(state: dict, name: str, made: dict[str, Any]) -> None:
    problems: list[str] = []
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    problems += [f"link {w}" for w in re.findall(rf"\b(tugc-{name}|tv-{name}-\d+)\b", links)]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    problems += [f"netns {w}" for w in re.findall(rf"\btug-{name}-n\d+\b", netns)]
    routes = subprocess.run(["ip", "route", "show"], capture_output=True, text=True).stdout
    problems += [f"route {r}" for r in routes.splitlines() if r.startswith(CLUSTER_CIDR.split(".0.0/")[0] + ".")
                 or state["subnet"].split("/")[0] in r]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    problems += [f"nft {t}" for t in tables.splitlines() if t.strip() in made.get("new_tables", [])]
    with open("/proc/self/mountinfo") as f:
        problems += [f"mount {line.split()[4]}" for line in f if state["dir"] in line]
    if os.path.exists(state["dir"]):
        problems.append(f"state dir {state['dir']}")
    for pid in made["pids"]:
        if os.path.exists(f"/proc/{pid}"):
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1][0] != "Z":
                    problems.append(f"process {pid}")
    for cid in made["containers"]:
        problems += [f"cgroup {p}" for p in glob.glob(f"/sys/fs/cgroup/*/tugboat/{cid}")]
    assert not problems, problems


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_binary("kubectl")
    require_binary("nft")
    base = tmp_path_factory.mktemp("clusterwl")
    name = "w" + uuid.uuid4().hex[:5]
    subnet = f"172.29.{random.randint(1, 250)}.0/24"
    state_dir = str(base / "c")
    tables_before = set(subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.splitlines())
    c: Cluster | None = None
    try:
        state = cluster_up(state_dir=state_dir, nodes=3, name=name, subnet=subnet, isolated=True,
                           cluster_cidr=CLUSTER_CIDR, node_args=["--metrics-period", "2", "--lease-renew", "2"],
                           controller_args=["--horizontal-pod-autoscaler-sync-period", "2"], timeout=180)
        c = Cluster(state, str(base / "kcache"), name, str(base))
        yield c
    finally:
        made: dict[str, Any] = {"pids": [], "containers": []}
        if c is not None:
            made = _snapshot(c.state)
            for k in ("pids", "containers"):  # what the tests saw while running
                made[k] = sorted(set(made[k]) | set(c.made.get(k, [])))
        assert made["pids"] or c is None
        problems = cluster_down(state_dir=state_dir)
        assert problems == [], problems
        tables_after = set(subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.splitlines())
        made["new_tables"] = [t.strip() for t in tables_after - tables_before if "tugboat" in t]
        if c is not None:
            assert made["containers"], "the tests ran containers: their ids must have been collected"
            _assert_nothing_left(c.state, name, made)


@pytest.fixture(autouse=True)
def _remember(cluster: Cluster) -> Iterator[None]:
    """Record the containers and processes each test leaves running (they are gone by teardown,
    but their cgroups must be too)."""
    yield
    snap = _snapshot(cluster.state)
    for k in ("pids", "containers"):
        cluster.made[k] = sorted(set(cluster.made.get(k, [])) | set(snap[k]))


def _node_url(cluster: Cluster, node: str, path: str) -> str:
    n = next(x for x in cluster.state["nodes"] if x["name"] == node)
    return f"https://{n['ip']}:{n['port']}{path}"


def _https_status(url: str, ctx: ssl.SSLContext) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_node_endpoint_only_serves_the_api_server(cluster: Cluster) -> None:
    nodes = cluster.json("nodes")["items"]
    assert {n["metadata"]["annotations"]["tugboat.io/kubelet-scheme"] for n in nodes} == {"https"}
    csrs = cluster.json("csr")["items"]
    for n in nodes:
        mine = [c for c in csrs if c["metadata"]["labels"]["tugboat.io/node"] == n["metadata"]["name"]]
        assert mine and mine[0]["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
        assert mine[0]["status"]["certificate"]
    cluster.kubectl("run", "echo", "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                    "sh", "-c", "mkdir -p /w && echo secured > /w/index.html && echo started && "
                                "exec httpd -f -p 8080 -h /w")
    cluster.wait("echo running", lambda: cluster.json("pod", "echo")["status"].get("phase") == "Running", 30)
    node = cluster.json("pod", "echo")["spec"]["nodeName"]
    url = _node_url(cluster, node, "/containerLogs/default/echo/echo")
    ca = cluster.pki("ca.crt")
    # the node's serving certificate is the cluster CA's and names the node's address
    anonymous = ssl.create_default_context(cafile=ca)
    assert _https_status(url, anonymous)[0] == 401
    # a certificate signed by the cluster CA for another identity: 403
    from tugboat.cluster.apiserver.certs import ClusterPKI

    pki = ClusterPKI(os.path.join(cluster.state["dir"], "apiserver"))
    cert, key = pki.issue_client("system:node:intruder", ["system:nodes"], "intruder")
    other = ssl.create_default_context(cafile=ca)
    other.load_cert_chain(cert, key)
    status, text = _https_status(url, other)
    assert status == 403 and "system:node:intruder" in text
    # without TLS nothing is served
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(url.replace("https://", "http://"), timeout=5)
    # through the API server (its kubelet client certificate): logs, exec, port-forward
    assert cluster.wait("logs", lambda: cluster.kubectl("logs", "echo", check=False).stdout) == "started\n"
    assert cluster.kubectl("exec", "echo", "--", "cat", "/w/index.html").stdout == "secured\n"
    env = dict(os.environ, KUBECONFIG=cluster.state["kubeconfig"])
    proc = subprocess.Popen(["kubectl", "--cache-dir", cluster.cache, "port-forward", "pod/echo", ":8080"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        m = re.search(r"127\.0\.0\.1:(\d+) -> 8080", proc.stdout.readline())
        assert m
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/", timeout=10) as r:
            assert r.read() == b"secured\n"
    finally:
        proc.kill()
        proc.wait(5)
    cluster.kubectl("delete", "pod", "echo", "--grace-period=0", "--wait=false")


STS = """
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "hostname >> /data/boots; exec sleep 3600"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 16Mi}}}
"""


def test_statefulset_claim_keeps_data_and_pins_the_pod_to_its_volumes_node(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=STS)

    def running() -> dict | None:
        p = cluster.json("pods", "-l", "app=db")["items"]
        return p[0] if p and p[0]["status"].get("phase") == "Running" and p[0]["metadata"]["name"] == "db-0" \
            and not p[0]["metadata"].get("deletionTimestamp") else None

    first = cluster.wait("db-0 running", running, 60)
    pvc = cluster.json("pvc", "data-db-0")
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["storageClassName"] == "standard"
    pv = cluster.json("pv", pvc["spec"]["volumeName"])
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    pinned = terms[0]["matchExpressions"][0]["values"]
    node = first["spec"]["nodeName"]
    assert pinned == [node]
    # the volume lives in the cluster's state dir (so `down` removes it)
    assert pv["spec"]["local"]["path"].startswith(cluster.state["dir"])
    cluster.kubectl("exec", "db-0", "--", "sh", "-c", "echo payload > /data/x")

    # deleted: the new db-0 comes back on the volume's node with the data
    cluster.kubectl("delete", "pod", "db-0", "--wait=false")
    second = cluster.wait("db-0 replaced", lambda: (p := running()) and p["metadata"]["uid"] != first["metadata"]["uid"]
                          and p, 60)
    assert second["spec"]["nodeName"] == node
    assert cluster.kubectl("exec", "db-0", "--", "cat", "/data/x").stdout == "payload\n"

    # that node cordoned: the pod cannot go anywhere else (Pending, kube's reasons), and returns
    # there with its data once the node is schedulable again
    cluster.kubectl("cordon", node)
    try:
        cluster.kubectl("delete", "pod", "db-0", "--wait=false")

        def unschedulable() -> str | None:
            p = cluster.json("pod", "db-0")
            if p["metadata"]["uid"] == second["metadata"]["uid"]:
                return None
            c = [x for x in p["status"].get("conditions") or [] if x["type"] == "PodScheduled"]
            return c[0].get("message") if c and c[0]["status"] == "False" else None

        msg = cluster.wait("db-0 unschedulable", unschedulable, 60)
        assert "2 node(s) had volume node affinity conflict" in msg and "1 node(s) were unschedulable" in msg, msg
        assert "volume node affinity conflict" in cluster.kubectl("describe", "pod", "db-0").stdout
    finally:
        cluster.kubectl("uncordon", node)
    third = cluster.wait("db-0 back", running, 60)
    assert third["spec"]["nodeName"] == node
    out = cluster.kubectl("exec", "db-0", "--", "cat", "/data/x", "/data/boots").stdout.split()
    assert out == ["payload", "db-0", "db-0", "db-0"], out
    cluster.kubectl("delete", "statefulset", "db", "--wait=false")


def burner(ctl: str) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: burn}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: burn}}}}
  template:
    metadata: {{labels: {{app: burn}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: main
        image: busybox
        imagePullPolicy: IfNotPresent
        # burns CPU (bounded by the limit) until the test creates /ctl/stop
        command: ["sh", "-c", "while [ ! -f /ctl/stop ]; do :; done; exec sleep 3600"]
        resources: {{requests: {{cpu: 100m}}, limits: {{cpu: 250m}}}}
        volumeMounts: [{{name: ctl, mountPath: /ctl}}]
      volumes:
      - {{name: ctl, hostPath: {{path: {ctl}, type: DirectoryOrCreate}}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: burn}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: burn}}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}
  behavior:
    scaleDown: {{stabilizationWindowSeconds: 10}}
"""


def test_hpa_scales_a_cpu_burning_deployment_up_then_down(cluster: Cluster) -> None:
    ctl = os.path.join(cluster.tmp, "burn-ctl")
    cluster.kubectl("apply", "-f", "-", input=burner(ctl))

    def replicas() -> int:
        return int(cluster.json("deployment", "burn")["spec"].get("replicas") or 0)

    t0 = time.monotonic()
    try:
        cluster.wait("scale up to 3", lambda: replicas() == 3, 60)
        up = time.monotonic() - t0
        hpa = cluster.json("hpa", "burn")
        assert hpa["status"]["desiredReplicas"] == 3
        util = hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
        assert util > 50, hpa["status"]  # above the target (up to 250m used of 100m requested)
        # the new replicas run across the nodes and report metrics too
        cluster.wait("3 burners ready", lambda: len([p for p in cluster.json("pods", "-l", "app=burn")["items"]
                                                      if p["status"].get("phase") == "Running"]) == 3, 30)
    finally:
        os.makedirs(ctl, exist_ok=True)
        with open(os.path.join(ctl, "stop"), "w"):
            pass
    t1 = time.monotonic()
    cluster.wait("scale down to 1", lambda: replicas() == 1, 60)
    down = time.monotonic() - t1
    # not before the stabilization window (10 s) has passed since the last high recommendation,
    # which is at most one HPA sync period (2 s) before the load stopped (without the window it
    # would take one metrics period + one sync: <= ~5 s)
    assert down >= 7.5, down
    events = cluster.kubectl("describe", "hpa", "burn").stdout
    assert "SuccessfulRescale" in events and "New size: 3" in events and "New size: 1" in events
    print(f"HPA: scaled up in {up:.1f}s, down {down:.1f}s after the load stopped")
    cluster.kubectl("delete", "hpa,deployment", "burn", "--wait=false")


def test_join_gets_its_serving_certificate_and_ca_through_the_token(cluster: Cluster) -> None:
    """`tug cluster join --token --ca-cert-hash` from a test-made network namespace on the cluster's
    bridge (another machine as far as the cluster can tell)."""
    import ipaddress
    import signal

    from tugboat.cluster.apiserver.certs import ClusterPKI
    from tugboat.cluster.node.tls import ca_cert_hash
    from tugboat.cluster.up import _prepare_images, _tug, _unmount_under

    st = cluster.state
    pki = ClusterPKI(os.path.join(st["dir"], "apiserver"))
    with open(pki.ca_cert, "rb") as f:
        pin = ca_cert_hash(f.read())
    token = pki.admin_token()
    ip = str(list(ipaddress.ip_network(st["subnet"]).hosts())[19])
    ns, veth = f"tj-{cluster.name}", f"tj-{cluster.name}"[:15]
    node = f"{cluster.name}-joined"
    root = os.path.join(cluster.tmp, "join-root")
    os.makedirs(root)
    procs: list[subprocess.Popen] = []
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns], check=True)
        subprocess.run(["ip", "link", "set", veth, "master", st["bridge"], "up"], check=True)
        for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{ip}/24", "dev", "eth0"],
                    ["link", "set", "eth0", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        _prepare_images(root, [])
        enter = ["nsenter", f"--net=/var/run/netns/{ns}"]
        # a wrong pin: refused before the node serves anything
        bad = subprocess.run([*enter, *_tug(), "--root", os.path.join(cluster.tmp, "bad-root"), "cluster", "join",
                              "--server", st["server"], "--token", token, "--ca-cert-hash", "sha256:" + "1" * 64,
                              "--name", f"{cluster.name}-bad", "--node-ip", ip, "--port", "10251",
                              "--listen", ip], capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "hash" in bad.stderr + bad.stdout, bad
        log = open(os.path.join(cluster.tmp, "join.log"), "ab")  # noqa: SIM115
        procs.append(subprocess.Popen([*enter, *_tug(), "--root", root, "cluster", "join", "--server", st["server"],
                                       "--token", token, "--ca-cert-hash", pin, "--name", node, "--node-ip", ip,
                                       "--listen", ip, "--port", "10250", "--pod-cidr", "10.246.20.0/24",
                                       "--cluster-cidr", CLUSTER_CIDR, "--cleanup-on-exit", "--metrics-period", "2"],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        log.close()

        def ready() -> bool:
            r = cluster.kubectl("get", "node", node, "-o", "json", check=False)
            if r.returncode != 0:
                assert procs[0].poll() is None, Path(cluster.tmp, "join.log").read_text()[-2000:]
                return False
            return any(c["type"] == "Ready" and c["status"] == "True" for c in json.loads(r.stdout)["status"]["conditions"])

        cluster.wait("joined node Ready", ready, 60)
        assert cluster.json("node", node)["metadata"]["annotations"]["tugboat.io/kubelet-scheme"] == "https"
        # the CA came back with the serving certificate; the node's kubeconfig verifies the server now
        with open(os.path.join(root, "node", "pki", "ca.crt"), "rb") as f, open(pki.ca_cert, "rb") as g:
            assert f.read() == g.read()
        with open(os.path.join(root, "node", "kubeconfig")) as f:
            kc = f.read()
        assert "insecure-skip-tls-verify" not in kc and "certificate-authority" in kc
        cluster.kubectl("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Pod
metadata: {{name: onjoined}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: main, image: busybox, imagePullPolicy: IfNotPresent, command: [sh, -c, "echo from-joined; sleep 3600"]}}
""")
        try:
            cluster.wait("pod on the joined node", lambda: cluster.kubectl("logs", "onjoined", check=False).stdout
                         == "from-joined\n", 60)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{cluster.kubectl('describe', 'pod', 'onjoined', check=False).stdout}\n"
                                 f"{cluster.kubectl('logs', 'onjoined', check=False).stderr}\n"
                                 f"{Path(cluster.tmp, 'join.log').read_text()[-3000:]}") from None
        assert cluster.kubectl("exec", "onjoined", "--", "hostname").stdout == "onjoined\n"
        cluster.kubectl("delete", "pod", "onjoined", "--grace-period=0", "--force", "--wait=false", check=False)
    finally:
        ids = os.listdir(os.path.join(root, "containers")) if os.path.isdir(os.path.join(root, "containers")) else []
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        cluster.kubectl("delete", "node", node, f"{cluster.name}-bad", "--ignore-not-found", check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        problems: list[str] = []
        _unmount_under(root, problems)
        assert not problems, problems
    # the agent removed its pod's containers on SIGTERM (--cleanup-on-exit): nothing holds a cgroup
    left = [c for c in ids if glob.glob(f"/sys/fs/cgroup/*/tugboat/{c}")]
    assert not left, left
