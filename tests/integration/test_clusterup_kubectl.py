"""`tug cluster up --nodes 3` on this machine, driven with the real kubectl; `tug cluster down` leaves nothing.

The cluster is isolated: every node in a network namespace of its own on a test-made bridge, so
nothing touches the host's network namespace but that bridge and its veths.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from cluster_support import KubectlCluster, up_cluster

pytestmark = pytest.mark.slow


Cluster = KubectlCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("clusterup")
    with up_cluster(base, nodes=3, prefix="t", subnet16="172.31", cluster_cidr="10.247.0.0/16",
                    node_args=["--metrics-period", "2", "--lease-renew", "1"],
                    controller_args=["--node-monitor-grace-period", "5", "--node-monitor-period", "1"]) as state:
        yield Cluster(state, str(base / "kcache"))
    name, state_dir = state["name"], state["dir"]
    # nothing left behind
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert f"tugc-{name}" not in links and f"tv-{name}" not in links
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"tug-{name}-" not in netns
    assert not os.path.exists(state_dir)
    with open("/proc/self/mountinfo") as f:
        assert state_dir not in f.read()


WEB = """
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
        readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http, name: http}]
"""


def test_nodes_registered_ready_with_own_addresses(cluster: Cluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert len(nodes) == 3
    ips = set()
    for n in nodes:
        conds = {c["type"]: c["status"] for c in n["status"]["conditions"]}
        assert conds["Ready"] == "True"
        ips.add(next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"))
        assert n["spec"]["podCIDR"].startswith("10.247.")
        assert int(n["status"]["capacity"]["cpu"]) >= 1
    assert len(ips) == 3
    leases = cluster.kubectl("get", "leases", "-n", "kube-node-lease").stdout
    for n in nodes:
        assert n["metadata"]["name"] in leases


def test_deployment_service_by_dns_across_nodes_and_top(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=WEB)

    def ready() -> list[dict] | None:
        pods = json.loads(cluster.kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
        ok = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                     for c in p["status"].get("conditions") or [])]
        return pods if len(ok) == 3 else None

    pods = cluster.wait("3 ready web pods", ready, 60)
    assert len({p["spec"]["nodeName"] for p in pods}) == 3  # one per node
    names = {p["metadata"]["name"] for p in pods}
    cluster.kubectl("run", "client", "--image=busybox", "--image-pull-policy=IfNotPresent", "--restart=Never",
                    "--", "sh", "-c", "for i in $(seq 1 30); do wget -q -O - http://web.default.svc.cluster.local/; done")
    cluster.wait("client to finish", lambda: cluster.pod("client")["status"].get("phase") == "Succeeded", 60)
    seen = set(cluster.kubectl("logs", "client").stdout.split())
    assert seen == names, seen
    # metrics.k8s.io from the node agents' cgroup readings
    out = cluster.wait("kubectl top pods", lambda: (r := cluster.kubectl("top", "pods", "-l", "app=web",
                                                                         check=False)).returncode == 0
                       and all(n in r.stdout for n in names) and r.stdout, 30)
    assert "CPU(cores)" in out
    assert cluster.wait("kubectl top nodes", lambda: (r := cluster.kubectl("top", "nodes", check=False)).returncode == 0
                        and r.stdout.count("-node-") == 3, 30)


def test_crashloop_restart_logs_previous_and_exec(cluster: Cluster) -> None:
    cluster.kubectl("run", "crash", "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                    "sh", "-c", "echo attempt; exit 3")

    def crashlooping() -> dict | None:
        cs = (cluster.pod("crash")["status"].get("containerStatuses") or [{}])[0]
        w = (cs.get("state") or {}).get("waiting") or {}
        return cs if w.get("reason") == "CrashLoopBackOff" and cs.get("restartCount", 0) >= 1 else None

    cs = cluster.wait("CrashLoopBackOff", crashlooping, 40)
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    assert "CrashLoopBackOff" in cluster.kubectl("get", "pod", "crash").stdout
    assert cluster.kubectl("logs", "crash", "--previous").stdout == "attempt\n"
    described = cluster.kubectl("describe", "pod", "crash").stdout
    assert "Back-off restarting failed container" in described
    # exec with stdin and exit codes, on a long-running pod
    cluster.kubectl("run", "shell", "--image=busybox", "--image-pull-policy=IfNotPresent", "--", "sleep", "3600")
    cluster.wait("shell running", lambda: cluster.pod("shell")["status"].get("phase") == "Running", 30)
    r = cluster.kubectl("exec", "-i", "shell", "--", "sh", "-c", "cat; echo err >&2; exit 4", input="hello\n",
                        check=False)
    assert r.returncode == 4 and r.stdout == "hello\n" and "err" in r.stderr
    r = cluster.kubectl("exec", "shell", "--", "cat", "/etc/resolv.conf")
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in r.stdout


def test_logs_follow_and_timestamps(cluster: Cluster) -> None:
    cluster.kubectl("run", "talker", "--image=busybox", "--image-pull-policy=IfNotPresent", "--restart=Never",
                    "--", "sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.5; done")
    cluster.wait("talker started", lambda: cluster.pod("talker")["status"].get("phase") in ("Running", "Succeeded"), 30)
    r = cluster.kubectl("logs", "-f", "talker", timeout=30)
    assert r.stdout.split() == ["line1", "line2", "line3"]
    r = cluster.kubectl("logs", "--timestamps", "--tail=1", "talker")
    ts, line = r.stdout.strip().split(" ", 1)
    assert line == "line3" and ts[:4].isdigit() and ts.endswith("Z")


def test_readiness_gates_endpoints_and_bad_image(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: gated, labels: {app: gated}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    readinessProbe: {exec: {command: ["test", "-f", "/tmp/ready"]}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: gated}
spec:
  selector: {app: gated}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: noimage}
spec:
  containers:
  - {name: main, image: "127.0.0.1:1/nothing/here:1"}
""")
    cluster.wait("gated running", lambda: cluster.pod("gated")["status"].get("phase") == "Running", 30)
    time.sleep(2)
    st = cluster.pod("gated")["status"]
    assert not st["containerStatuses"][0]["ready"]

    def ready_endpoints() -> list[str]:
        sl = json.loads(cluster.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=gated",
                                        "-o", "json").stdout)["items"]
        return [a for s in sl for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
                for a in e["addresses"]]

    assert ready_endpoints() == []
    cluster.kubectl("exec", "gated", "--", "touch", "/tmp/ready")
    assert cluster.wait("endpoint ready", ready_endpoints, 20) == [st["podIP"]]

    def pull_failed() -> str | None:
        cs = (cluster.pod("noimage")["status"].get("containerStatuses") or [{}])[0]
        reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
        return reason if reason in ("ErrImagePull", "ImagePullBackOff") else None

    cluster.wait("ErrImagePull", pull_failed, 30)
    assert "Failed to pull image" in cluster.kubectl("describe", "pod", "noimage").stdout


def test_memory_limit_oomkilled(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "head -c 200m /dev/zero | tail"]
    resources: {limits: {memory: 32Mi}}
""")

    def terminated() -> dict | None:
        cs = (cluster.pod("hog")["status"].get("containerStatuses") or [{}])[0]
        return (cs.get("state") or {}).get("terminated")

    t = cluster.wait("hog terminated", terminated, 60)
    assert t["reason"] == "OOMKilled" and t["exitCode"] == 137, t
    assert cluster.pod("hog")["status"]["phase"] == "Failed"
    import re

    described = cluster.kubectl("describe", "pod", "hog").stdout
    assert re.search(r"State:\s+Terminated\s+Reason:\s+OOMKilled\s+Exit Code:\s+137", described), described


def test_pod_containers_share_ipc(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: ipc}
spec:
  containers:
  - name: writer
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo shared-by-writer > /dev/shm/segment && exec sleep 3600"]
  - name: reader
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
""")
    cluster.wait("ipc ready", lambda: all(c.get("ready") for c in cluster.pod("ipc")["status"].get(
        "containerStatuses") or [{}]), 60)
    assert cluster.kubectl("exec", "ipc", "-c", "reader", "--", "cat", "/dev/shm/segment").stdout == \
        "shared-by-writer\n"
    ns = {c: cluster.kubectl("exec", "ipc", "-c", c, "--", "readlink", "/proc/self/ns/ipc").stdout
          for c in ("writer", "reader")}
    assert ns["writer"] == ns["reader"] and ns["writer"].startswith("ipc:["), ns
    cluster.kubectl("delete", "pod", "ipc", "--wait=false")


def test_port_forward(cluster: Cluster) -> None:
    import re
    import urllib.request

    cluster.kubectl("run", "pf", "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                    "sh", "-c", "mkdir -p /w && echo forwarded > /w/index.html && exec httpd -f -p 8080 -h /w")
    cluster.wait("pf running", lambda: cluster.pod("pf")["status"].get("phase") == "Running", 30)
    env = dict(os.environ, KUBECONFIG=cluster.state["kubeconfig"])
    proc = subprocess.Popen(["kubectl", "--cache-dir", cluster.cache, "port-forward", "pod/pf", ":8080"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+) -> 8080", line)
        assert m, line
        for _ in range(3):  # several connections over one forwarding session
            with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/", timeout=10) as r:
                assert r.read() == b"forwarded\n"
    finally:
        proc.kill()
        proc.wait(5)


def test_init_containers_volumes_env_and_security_context(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello, mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata: {name: full, labels: {tier: demo}}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 3000}
  initContainers:
  - name: prepare
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo prepared > /work/state"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c"]
    args:
    - >-
      cat /work/state; cat /etc/settings/greeting; echo; cat /etc/creds/password; echo;
      cat /etc/info/labels; echo; echo "$(GREETING)-$mode-$POD_IP"; id -u; id -g;
      touch /rootfs-write 2>/dev/null && echo writable || echo readonly
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    envFrom: [{configMapRef: {name: settings}, prefix: ""}]
    securityContext: {readOnlyRootFilesystem: true}
    volumeMounts:
    - {name: work, mountPath: /work}
    - {name: settings, mountPath: /etc/settings, readOnly: true}
    - {name: creds, mountPath: /etc/creds}
    - {name: info, mountPath: /etc/info}
  volumes:
  - {name: work, emptyDir: {}}
  - {name: settings, configMap: {name: settings}}
  - {name: creds, secret: {secretName: creds}}
  - {name: info, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
""")
    cluster.wait("full succeeded", lambda: cluster.pod("full")["status"].get("phase") == "Succeeded", 60)
    pod = cluster.pod("full")
    ip = pod["status"]["podIP"]
    out = cluster.kubectl("logs", "full").stdout.split("\n")
    assert out[:9] == ["prepared", "hello", "hunter2", 'tier="demo"', f"hello-fast-{ip}", "1000", "3000",
                       "readonly", ""], out
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["reason"] == "Completed"
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds["Initialized"] == "True" and conds["Ready"] == "False"


def test_killed_node_agent_goes_notready_and_pods_move(cluster: Cluster) -> None:
    """Runs last: it kills the agent of the node running the pod (its containers are left to
    `tug cluster down`, which must still remove everything)."""
    import signal

    cluster.kubectl("apply", "-f", "-", input="""
apiVersion: apps/v1
kind: Deployment
metadata: {name: mover}
spec:
  replicas: 1
  selector: {matchLabels: {app: mover}}
  template:
    metadata: {labels: {app: mover}}
    spec:
      terminationGracePeriodSeconds: 0
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 1}
      containers:
      - {name: main, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
""")

    def placed() -> tuple[str, str] | None:
        pods = json.loads(cluster.kubectl("get", "pods", "-l", "app=mover", "-o", "json").stdout)["items"]
        return next(((p["metadata"]["name"], p["spec"]["nodeName"]) for p in pods
                     if p["status"].get("phase") == "Running"), None)

    pod, victim = cluster.wait("mover running", placed, 30)
    # a pod bound to the victim with the default (300 s) tolerations: it stays there
    cluster.kubectl("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Pod
metadata: {{name: stay}}
spec:
  nodeName: {victim}
  containers:
  - {{name: main, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}}
""")
    cluster.wait("stay running", lambda: cluster.pod("stay")["status"].get("phase") == "Running", 30)
    stay_cid = cluster.pod("stay")["status"]["containerStatuses"][0]["containerID"]
    agent = next(p for p in cluster.state["processes"] if p["name"] == victim)
    os.kill(agent["pid"], signal.SIGKILL)

    def not_ready() -> bool:
        node = json.loads(cluster.kubectl("get", "node", victim, "-o", "json").stdout)
        return any(c["type"] == "Ready" and c["status"] != "True" for c in node["status"]["conditions"])

    cluster.wait("node NotReady", not_ready, 30)
    assert "NotReady" in cluster.kubectl("get", "nodes").stdout

    def moved() -> bool:
        pods = json.loads(cluster.kubectl("get", "pods", "-l", "app=mover", "-o", "json").stdout)["items"]
        return any(p["metadata"]["name"] != pod and p["spec"].get("nodeName") not in (None, victim)
                   and p["status"].get("phase") == "Running" for p in pods)

    cluster.wait("replacement pod on another node", moved, 60)

    # the agent comes back: the node is Ready again, the surviving pod is adopted (same container,
    # no restart), the evicted pod's containers are removed
    from tugboat.cluster.up import STATE_FILE, _write_state

    log = open(os.path.join(cluster.state["dir"], "logs", f"{victim}.log"), "ab")  # noqa: SIM115
    proc = subprocess.Popen(agent["argv"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    agent["pid"] = proc.pid
    _write_state(os.path.join(cluster.state["dir"], STATE_FILE), cluster.state)
    cluster.wait("node Ready again", lambda: not not_ready(), 30)

    def adopted() -> dict | None:
        cs = cluster.pod("stay")["status"]["containerStatuses"][0]
        return cs if cs.get("ready") else None

    cs = cluster.wait("stay ready after the restart", adopted, 30)
    assert cs["containerID"] == stay_cid and cs["restartCount"] == 0
    assert cluster.kubectl("exec", "stay", "--", "echo", "alive").stdout == "alive\n"
