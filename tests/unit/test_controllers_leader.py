"""Two ``tug cluster controller-manager`` processes: exactly one acts; after SIGKILL of the
leader the other takes over within the lease duration (plus one retry period)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from controlplane_fixtures import Cluster, apiserver_fixture, cluster_fixture, deployment  # noqa: F401

from tugboat.cluster.client import resources as R

LEASE = 3.0
RETRY = 0.3


def _start_cm(kubeconfig: str, ident: str, logdir: str) -> subprocess.Popen:
    log = open(os.path.join(logdir, f"{ident}.log"), "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "tugboat.cli.main", "cluster", "controller-manager", "--kubeconfig", kubeconfig,
         "--identity", ident, "--controllers", "deployment,replicaset",
         "--leader-elect-lease-duration", str(LEASE), "--leader-elect-renew-deadline", "2",
         "--leader-elect-retry-period", str(RETRY)], stdout=log, stderr=subprocess.STDOUT)


async def test_two_controller_managers_one_acts_and_takeover(cluster: Cluster, tmp_path) -> None:
    c = await cluster.start(nodes=2, controllers=[])
    procs = {ident: _start_cm(c.kubeconfig, ident, str(tmp_path)) for ident in ("cm-a", "cm-b")}
    try:
        async def holder() -> str | None:
            lease = await c.client.get(R.LEASES, "kube-controller-manager", "kube-system")
            return (lease.get("spec") or {}).get("holderIdentity") or None

        leader = await c.wait_for(holder, timeout=30, what="a leader")
        other = "cm-b" if leader == "cm-a" else "cm-a"
        await c.client.create(R.DEPLOYMENTS, deployment("le", 3))

        async def ready(name: str, n: int) -> bool:
            d = await c.client.get(R.DEPLOYMENTS, name, "default")
            return (d.get("status") or {}).get("availableReplicas") == n

        await c.wait_for(lambda: ready("le", 3), timeout=30, what="deployment via the leader")
        evs = (await c.client.list(R.EVENTS, "default"))["items"]
        actors = {e.get("reportingInstance") for e in evs
                  if e.get("reportingComponent") in ("deployment-controller", "replicaset-controller")}
        assert actors == {leader}, actors
        # kill the leader hard; the other one takes over
        procs[leader].send_signal(signal.SIGKILL)
        procs[leader].wait()
        t_kill = time.monotonic()
        while await holder() != other:
            assert time.monotonic() - t_kill < LEASE + 2 * RETRY + 1.0, "no takeover within the lease duration"
            await asyncio.sleep(0.05)
        takeover = time.monotonic() - t_kill
        print(f"takeover after SIGKILL: {takeover:.2f}s (lease {LEASE}s, retry {RETRY}s)")
        assert takeover <= LEASE + 2 * RETRY + 1.0, takeover
        # and it acts
        await c.client.patch(R.DEPLOYMENTS, "le", {"spec": {"replicas": 4}}, "default", subresource="scale")
        await c.wait_for(lambda: ready("le", 4), timeout=30, what="scale by the new leader")
        evs = (await c.client.list(R.EVENTS, "default"))["items"]
        assert any(e.get("reportingInstance") == other for e in evs)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
