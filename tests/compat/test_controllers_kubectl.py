"""The real kubectl against the control plane on simulated nodes: get, describe with events,
rollout status/history/undo, scale, autoscale, top."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "unit"))

from controlplane_fixtures import Cluster, apiserver_fixture, cluster_fixture  # noqa: F401

from conftest import require_binary


async def kubectl(c: Cluster, *args: str, home: str, check: bool = True) -> str:
    env = {**os.environ, "KUBECONFIG": c.kubeconfig, "HOME": home}
    p = await asyncio.create_subprocess_exec("kubectl", *args, env=env, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(p.communicate(), 90)
    text = out.decode()
    if check and p.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} -> {p.returncode}\n{text}")
    return text


async def test_kubectl_rollout_scale_describe(cluster: Cluster, tmp_path) -> None:
    require_binary("kubectl")
    c = await cluster.start(nodes=3)
    home = str(tmp_path)
    k = lambda *a, **kw: kubectl(c, *a, home=home, **kw)  # noqa: E731
    assert "deployment.apps/web created" in await k("create", "deployment", "web", "--image=nginx:1.26", "--replicas=3")
    assert 'deployment "web" successfully rolled out' in await k("rollout", "status", "deployment/web", "--timeout=60s")
    out = await k("get", "deployment", "web")
    assert out.split("\n")[1].split()[:4] == ["web", "3/3", "3", "3"]
    out = await k("get", "pods", "-o", "wide")
    rows = [r.split() for r in out.strip().split("\n")[1:]]
    assert len(rows) == 3 and all(r[1] == "1/1" and r[2] == "Running" and r[6].startswith("sim-node-") for r in rows)
    nodes = await k("get", "nodes")
    assert nodes.count(" Ready ") == 3
    # describe shows the scheduler's and the controllers' events
    pod = rows[0][0]
    desc = await k("describe", "pod", pod)
    assert f"Successfully assigned default/{pod} to sim-node-" in desc and "default-scheduler" in desc
    logs = await k("logs", pod)
    assert f"simulated container nginx of pod default/{pod} started" in logs
    desc = await k("describe", "deployment", "web")
    assert "ScalingReplicaSet" in desc and "deployment-controller" in desc
    assert "NewReplicaSetAvailable" in desc
    # update, history, undo
    await k("set", "image", "deployment/web", "nginx=nginx:1.27")
    assert "successfully rolled out" in await k("rollout", "status", "deployment/web", "--timeout=60s")
    hist = await k("rollout", "history", "deployment/web")
    assert [line.split()[0] for line in hist.strip().split("\n")[2:]] == ["1", "2"]
    assert "rolled back" in await k("rollout", "undo", "deployment/web")
    assert "successfully rolled out" in await k("rollout", "status", "deployment/web", "--timeout=60s")
    image = await k("get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    assert image.strip() == "nginx:1.26"
    # scale
    assert "scaled" in await k("scale", "deployment", "web", "--replicas=5")
    assert "successfully rolled out" in await k("rollout", "status", "deployment/web", "--timeout=60s")
    out = await k("get", "rs", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.spec.replicas} {end}")
    assert sorted(int(x) for x in out.split()) == [0, 5]
    # autoscale creates an HPA the controller reports on; top reads the simulated metrics
    assert "autoscaled" in await k("autoscale", "deployment", "web", "--min=2", "--max=6", "--cpu-percent=50")
    out = await k("get", "hpa", "web")
    assert out.split("\n")[1].split()[:2] == ["web", "Deployment/web"]
    for _ in range(50):
        top = await k("top", "pods", check=False)
        if "web-" in top:
            break
        await asyncio.sleep(0.2)
    assert "CPU(cores)" in top and "web-" in top


MANIFEST = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: pg, image: postgres:16}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: a, image: busybox}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  completions: 2
  template:
    metadata: {annotations: {sim.tugboat.io/complete-after: 300ms}}
    spec: {restartPolicy: Never, containers: [{name: w, image: busybox}]}
"""


async def test_kubectl_statefulset_daemonset_job(cluster: Cluster, tmp_path) -> None:
    require_binary("kubectl")
    c = await cluster.start(nodes=2)
    home = str(tmp_path)
    k = lambda *a, **kw: kubectl(c, *a, home=home, **kw)  # noqa: E731
    (tmp_path / "m.yaml").write_text(MANIFEST)
    out = await k("apply", "--validate=false", "-f", str(tmp_path / "m.yaml"))
    assert "statefulset.apps/db created" in out and "daemonset.apps/agent created" in out
    out = await k("rollout", "status", "statefulset/db", "--timeout=60s")
    assert "roll out complete" in out or "successfully rolled out" in out
    out = await k("rollout", "status", "daemonset/agent", "--timeout=60s")
    assert 'daemon set "agent" successfully rolled out' in out
    out = await k("wait", "--for=condition=complete", "job/once", "--timeout=60s")
    assert "job.batch/once condition met" in out
    out = await k("get", "pods", "-l", "app=db")
    assert "db-0" in out and "db-1" in out
    desc = await k("describe", "node", "sim-node-0")
    assert "Ready" in desc and "agent-" in desc
    # drain: cordon + evictions; the StatefulSet's pods come back on the other node
    out = await k("drain", "sim-node-0", "--ignore-daemonsets", "--timeout=60s")
    assert "node/sim-node-0 drained" in out
    out = await k("rollout", "status", "statefulset/db", "--timeout=60s")
    assert "roll out complete" in out or "successfully rolled out" in out
    nodes = await k("get", "pods", "-l", "app=db", "-o", "jsonpath={.items[*].spec.nodeName}")
    assert set(nodes.split()) == {"sim-node-1"}
    assert "SchedulingDisabled" in await k("get", "node", "sim-node-0")
