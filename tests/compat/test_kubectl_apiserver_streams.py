"""kubectl logs / exec / top through the API server to a stand-in node agent (the node agent
contract in docs/areas/apiserver.md), and the errors without one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from aiohttp import web

from tugboat.cluster.apiserver.testing import ApiServerProcess, free_port


class FakeAgent:
    """Serves the kubelet paths the API server proxies to."""

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.requests: list[str] = []

    async def logs(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(str(request.rel_url))
        body = "line 1\nline 2\nline 3\n"
        if request.query.get("tailLines") == "1":
            body = "line 3\n"
        return web.Response(text=body)

    async def exec(self, request: web.Request) -> web.WebSocketResponse:
        self.requests.append(str(request.rel_url))
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"))
        await ws.prepare(request)
        cmd = request.query.getall("command", [])
        await ws.send_bytes(b"\x01" + (" ".join(cmd[1:]) + "\n").encode())
        if cmd[:1] == ["fail"]:
            st = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode", "message": "exit 3",
                  "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}
        else:
            st = {"metadata": {}, "status": "Success"}
        await ws.send_bytes(b"\x03" + json.dumps(st).encode())
        await ws.close()
        return ws

    def start(self) -> FakeAgent:
        app = web.Application()
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.logs)
        app.router.add_get("/exec/{ns}/{pod}/{container}", self.exec)
        self.thread.start()

        async def run() -> web.AppRunner:
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner

        self.runner = asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServerProcess, FakeAgent, str]]:
    from conftest import require_binary

    require_binary("kubectl")
    base = tmp_path_factory.mktemp("streams")
    agent = FakeAgent().start()
    with ApiServerProcess(base / "apiserver") as api:
        try:
            yield api, agent, str(base / "kc")
        finally:
            agent.stop()


def kubectl(env: tuple[ApiServerProcess, FakeAgent, str], *args: str) -> subprocess.CompletedProcess[str]:
    api, _, cache = env
    return subprocess.run(["kubectl", "--cache-dir", cache, *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, KUBECONFIG=api.kubeconfig))


def test_logs_exec_top_through_node_agent(env: tuple[ApiServerProcess, FakeAgent, str], tmp_path: Path) -> None:
    api, agent, _ = env
    s = requests.Session()
    s.cert = (str(api.dir / "pki" / "admin.crt"), str(api.dir / "pki" / "admin.key"))

    def call(method: str, path: str, **kw: object) -> requests.Response:
        return s.request(method, api.url + path, verify=api.ca, timeout=10, **kw)  # type: ignore[arg-type]

    call("POST", "/api/v1/nodes", json={"metadata": {"name": "agent-1"}, "status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": agent.port}},
        "allocatable": {"cpu": "2", "memory": "4Gi"}, "capacity": {"cpu": "2", "memory": "4Gi"},
        "conditions": [{"type": "Ready", "status": "True"}]}}).raise_for_status()
    call("POST", "/api/v1/namespaces/default/pods", json={"metadata": {"name": "unsched"}, "spec": {
        "containers": [{"name": "c", "image": "busybox"}]}}).raise_for_status()
    r = kubectl(env, "logs", "unsched")
    assert r.returncode != 0 and "does not have a host assigned" in r.stderr
    call("POST", "/api/v1/namespaces/default/pods", json={"metadata": {"name": "web"}, "spec": {
        "nodeName": "agent-1", "containers": [{"name": "nginx", "image": "nginx"}]}}).raise_for_status()
    r = kubectl(env, "logs", "web")
    assert r.returncode == 0 and r.stdout == "line 1\nline 2\nline 3\n", r.stderr
    r = kubectl(env, "logs", "web", "--tail=1")
    assert r.stdout == "line 3\n" and any("tailLines=1" in q for q in agent.requests)
    r = kubectl(env, "exec", "web", "--", "echo", "hello", "world")
    assert r.returncode == 0 and r.stdout == "hello world\n", r.stderr
    assert any(q.startswith("/exec/default/web/nginx?") for q in agent.requests)
    r = kubectl(env, "exec", "web", "--", "fail", "now")
    assert r.returncode == 3 and "command terminated with exit code 3" in r.stderr
    # metrics pushed by the agent show in kubectl top
    call("PUT", "/apis/metrics.k8s.io/v1beta1/nodes/agent-1",
         json={"usage": {"cpu": "500m", "memory": "1Gi"}}).raise_for_status()
    call("PUT", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web",
         json={"containers": [{"name": "nginx", "usage": {"cpu": "12m", "memory": "20Mi"}}]}).raise_for_status()
    r = kubectl(env, "top", "pod")
    assert r.returncode == 0 and r.stdout.split("\n")[1].split() == ["web", "12m", "20Mi"], r.stdout + r.stderr
    r = kubectl(env, "top", "node")
    row = r.stdout.split("\n")[1].split()
    assert row[:2] == ["agent-1", "500m"] and row[2] == "25%", r.stdout + r.stderr
    # a deleted pod's metrics go with it
    call("POST", "/api/v1/namespaces/default/pods", json={"metadata": {"name": "short"}, "spec": {
        "containers": [{"name": "c", "image": "busybox"}]}}).raise_for_status()
    call("PUT", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/short",
         json={"containers": [{"name": "c", "usage": {"cpu": "1m", "memory": "1Mi"}}]}).raise_for_status()
    assert call("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/short").status_code == 200
    call("DELETE", "/api/v1/namespaces/default/pods/short").raise_for_status()
    deadline = time.time() + 5
    while call("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/short").status_code != 404:
        assert time.time() < deadline
        time.sleep(0.05)


def test_python_client_exec_and_logs(env: tuple[ApiServerProcess, FakeAgent, str]) -> None:
    from kubernetes import client, config
    from kubernetes.stream import stream

    api, agent, _ = env
    c = config.new_client_from_config(config_file=api.kubeconfig)
    try:
        core = client.CoreV1Api(c)
        try:
            core.read_namespaced_pod("web", "default")
        except client.ApiException:
            core.create_node({"metadata": {"name": "agent-2"}, "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": agent.port}}}})
            core.create_namespaced_pod("default", {"metadata": {"name": "web"}, "spec": {
                "nodeName": "agent-2", "containers": [{"name": "nginx", "image": "nginx"}]}})
        out = stream(core.connect_get_namespaced_pod_exec, "web", "default", command=["echo", "from", "python"],
                     stdout=True, stderr=True, stdin=False, tty=False)
        assert out == "from python\n"
        assert core.read_namespaced_pod_log("web", "default", tail_lines=1) == "line 3\n"
    finally:
        c.close()
