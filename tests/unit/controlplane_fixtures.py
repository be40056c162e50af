"""Fixtures for the control-plane tests: the real API server (``tug cluster apiserver``) as a
subprocess on a temporary data dir, plus simulated nodes, the scheduler and the controller
manager running in the test's event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import yaml

from tugboat.cluster.client import ApiClient, load_kubeconfig
from tugboat.cluster.controllers.base import Options
from tugboat.cluster.controllers.manager import ControllerManager
from tugboat.cluster.scheduler.scheduler import Scheduler
from tugboat.cluster.sim.nodes import SimNodes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    def __init__(self, data_dir: str) -> None:
        self.dir = data_dir
        self.kubeconfig = os.path.join(data_dir, "admin.kubeconfig")
        self.proc: subprocess.Popen | None = None

    def _ready(self) -> bool:
        try:
            with open(self.kubeconfig) as f:
                server = yaml.safe_load(f)["clusters"][0]["cluster"]["server"]
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with urllib.request.urlopen(server + "/version", timeout=2, context=ctx) as r:
                return r.status == 200
        except urllib.error.HTTPError as e:
            return e.code in (401, 403)
        except Exception:
            return False

    def start(self) -> None:
        self.log = open(os.path.join(self.dir, "apiserver.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tugboat.cli.main", "cluster", "apiserver", "--data-dir", self.dir,
             "--listen", f"127.0.0.1:{free_port()}"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while not (os.path.exists(self.kubeconfig) and self._ready()):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                with open(os.path.join(self.dir, "apiserver.log")) as f:
                    pytest.fail("API server did not start:\n" + f.read()[-3000:])
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Cluster:
    """A running control plane: ``client`` for the test, ``sim`` nodes, ``scheduler``, ``cm``."""

    def __init__(self, api: ApiServer) -> None:
        self.api = api
        self.kubeconfig = api.kubeconfig
        self.client = ApiClient(load_kubeconfig(api.kubeconfig))
        self._clients: list[ApiClient] = [self.client]
        self._tasks: list[asyncio.Task] = []
        self.sim: SimNodes | None = None
        self.scheduler: Scheduler | None = None
        self.cm: ControllerManager | None = None

    def new_client(self) -> ApiClient:
        c = ApiClient(load_kubeconfig(self.kubeconfig))
        self._clients.append(c)
        return c

    async def start(self, *, nodes: int = 3, options: Options | None = None, controllers: list[str] | None = None,
                    scheduler: bool = True, node_kw: dict | None = None) -> Cluster:
        if nodes:
            self.sim = SimNodes(self.new_client(), nodes, heartbeat_seconds=1.0, metrics_seconds=0.5,
                                **(node_kw or {}))
            await self.sim.start()
        if scheduler:
            self.scheduler = Scheduler(self.new_client())
            self._tasks.append(asyncio.ensure_future(self.scheduler.run()))
        if controllers != []:
            opts = options or Options(node_monitor_grace_seconds=3, node_monitor_period=0.5, hpa_sync_period=0.5,
                                      hpa_downscale_window=3, job_backoff_seconds=0.2)
            self.cm = ControllerManager(self.new_client(), options=opts, controllers=controllers)
            self._tasks.append(asyncio.ensure_future(self.cm.run()))
        return self

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.sim is not None:
            await self.sim.stop()
        for c in self._clients:
            await c.close()

    async def wait_for(self, pred: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "") -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        last: Any = None
        while True:
            try:
                last = await pred()
            except Exception as exc:  # a transient API error is not a verdict
                last = exc
            if last and not isinstance(last, Exception):
                return last
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what or pred}: last={last!r}")
            await asyncio.sleep(0.1)


@pytest.fixture(name="apiserver")
def apiserver_fixture(tmp_path):
    api = ApiServer(str(tmp_path / "api"))
    os.makedirs(api.dir)
    api.start()
    yield api
    api.stop()


@pytest.fixture(name="cluster")
async def cluster_fixture(apiserver):
    c = Cluster(apiserver)
    yield c
    await c.stop()


def deployment(name: str, replicas: int = 3, image: str = "nginx:1.27", *, ns: str = "default", **spec: Any) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": image,
                                                           "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}},
                     **spec}}


def pod(name: str, *, ns: str = "default", labels: dict | None = None, cpu: str = "100m", **spec: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": cpu}}}], **spec}}
