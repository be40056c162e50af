"""Pod spec translation (env, command/args, resources, QoS, probes) and volume files, without root."""

from __future__ import annotations

import base64
import os

import pytest

from tugboat.cluster.node import podspec, volumes
from tugboat.cluster.node.probes import ProbeState, run_probe

POD = {
    "metadata": {"name": "p", "namespace": "team", "uid": "u-1", "labels": {"app": "web"},
             "annotations": {"note": "x"}},
    "spec": {"nodeName": "n1", "serviceAccountName": "default", "containers": []},
    "status": {"podIP": "10.244.1.5", "hostIP": "172.30.0.2"},
}
CM = {"metadata": {"name": "cfg", "namespace": "team"}, "data": {"MODE": "fast", "LEVEL": "3"}}
SECRET = {"metadata": {"name": "sec", "namespace": "team"},
          "data": {"PASSWORD": base64.b64encode(b"hunter2").decode()}}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def env_of(container: dict, **kw) -> dict[str, str]:
    out = podspec.container_env(POD, container, configmaps={"cfg": CM}, secrets={"sec": SECRET},
                                node_allocatable={"cpu": "2", "memory": "4Gi"}, **kw)
    return dict(e.split("=", 1) for e in out)


def test_env_sources_precedence_and_expansion() -> None:
    c = {
        "name": "main",
        "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "sec"}}],
        "env": [
            {"name": "CFG_MODE", "value": "slow"},  # env wins over envFrom
            {"name": "GREETING", "value": "hi $(POD_NAME) $$(KEPT) $(UNDEFINED)"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "LATE", "value": "$(POD_NAME)"},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU_REQ_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
            {"name": "CPU_LIM", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "LVL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "LEVEL"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "PASSWORD"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "x", "optional": True}}},
        ],
    }
    env = env_of(c, service_env={"WEB_SERVICE_HOST": "10.96.0.9"})
    assert env["CFG_MODE"] == "slow" and env["CFG_LEVEL"] == "3" and env["PASSWORD"] == "hunter2"
    # $(POD_NAME) is not defined yet when GREETING is built; $$ escapes
    assert env["GREETING"] == "hi $(POD_NAME) $(KEPT) $(UNDEFINED)"
    assert env["LATE"] == "p" and env["NS"] == "team" and env["APP"] == "web" and env["IP"] == "10.244.1.5"
    assert env["MEM"] == "64" and env["CPU_REQ_M"] == "250" and env["CPU_LIM"] == "2"  # node allocatable
    assert env["LVL"] == "3" and env["PW"] == "hunter2" and "OPT" not in env
    assert env["WEB_SERVICE_HOST"] == "10.96.0.9"


def test_missing_references_are_config_errors() -> None:
    with pytest.raises(podspec.ConfigError, match='configmap "nope" not found'):
        env_of({"name": "m", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]})
    with pytest.raises(podspec.ConfigError, match="couldn't find key NOPE in Secret team/sec"):
        env_of({"name": "m", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "NOPE"}}}]})
    with pytest.raises(podspec.ConfigError, match='secret "gone" not found'):
        env_of({"name": "m", "envFrom": [{"secretRef": {"name": "gone"}}]})


def test_command_args_resources_qos_user_probe_validation() -> None:
    c = {"command": ["echo", "$(A)"], "args": ["$(B)", "x"]}
    assert podspec.command_args(c, ["A=1", "B=2"]) == (["echo", "1"], ["2", "x"])
    assert podspec.command_args({"args": ["a"]}, []) == (None, ["a"])
    r = podspec.resources({"resources": {"limits": {"memory": "128Mi", "cpu": "500m"}}})
    assert r == {"memory_limit": 128 * 1024 * 1024, "cpu_quota": 50000, "cpu_shares": 512}
    assert podspec.resources({})["cpu_shares"] == 2
    g = {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}
    b = {"containers": [{"resources": {"requests": {"cpu": "100m"}}}]}
    assert podspec.qos_class(g) == "Guaranteed" and podspec.qos_class(b) == "Burstable"
    assert podspec.qos_class({"containers": [{}]}) == "BestEffort"
    assert podspec.user_of({"runAsUser": 1000}, {"runAsGroup": 3000}) == "1000:3000"
    assert podspec.user_of({}, {}) is None
    assert podspec.validate_probe({"exec": {"command": ["true"]}}) is None
    assert "exactly one handler" in str(podspec.validate_probe({"exec": {"command": ["x"]}, "tcpSocket": {"port": 1}}))
    cms, secrets = podspec.referenced_objects({"containers": [{"envFrom": [{"configMapRef": {"name": "a"}}]}],
                                               "volumes": [{"name": "v", "secret": {"secretName": "s"}}]})
    assert cms == {"a"} and secrets == {"s"}


def test_volume_files_and_mounts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pod = {**POD, "spec": {"volumes": [
        {"name": "cache", "emptyDir": {}},
        {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "MODE", "path": "conf/mode"}]}},
        {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}},
        {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                                                   {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"name": "host", "hostPath": {"path": str(tmp_path / "hp"), "type": "DirectoryOrCreate"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "claim"}},
    ]}}
    vols = volumes.prepare_volumes(str(tmp_path / "root"), pod, configmaps={"cfg": CM}, secrets={"sec": SECRET},
                                   pv_paths={"claim": str(tmp_path / "pv")})
    assert _read(os.path.join(vols["cfg"], "conf/mode")) == "fast"
    assert not os.path.exists(os.path.join(vols["cfg"], "LEVEL"))  # only the listed items
    sp = os.path.join(vols["sec"], "PASSWORD")
    assert _read(sp) == "hunter2" and (os.stat(sp).st_mode & 0o777) == 0o400
    assert _read(os.path.join(vols["info"], "labels")) == 'app="web"'
    assert _read(os.path.join(vols["info"], "name")) == "p"
    assert os.path.isdir(tmp_path / "hp") and os.path.isdir(tmp_path / "pv")
    mounts = volumes.container_mounts({"volumeMounts": [
        {"name": "cache", "mountPath": "/cache"}, {"name": "data", "mountPath": "/data", "subPath": "a/b"},
        {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True}, {"name": "sec", "mountPath": "/s"},
        {"name": "info", "mountPath": "/i"}, {"name": "host", "mountPath": "/h"}]}, vols)
    # configMap, secret, downwardAPI (and projected) are read-only whatever the mount says, as the kubelet mounts them
    assert [(m.container_path, m.readonly) for m in mounts] == [
        ("/cache", False), ("/data", False), ("/etc/cfg", True), ("/s", True), ("/i", True), ("/h", False)]
    assert mounts[1].host_path == str(tmp_path / "pv" / "a" / "b") and os.path.isdir(mounts[1].host_path)
    with pytest.raises(podspec.ConfigError):
        volumes.container_mounts({"volumeMounts": [{"name": "x", "mountPath": "/x", "subPath": "../../etc"}]},
                                 {"x": str(tmp_path)})
    with pytest.raises(podspec.ConfigError, match='configmap "other" not found'):
        volumes.prepare_volumes(str(tmp_path / "root"), {**POD, "spec": {"volumes": [
            {"name": "c", "configMap": {"name": "other"}}]}}, configmaps={}, secrets={}, pv_paths={})
    volumes.cleanup_pod_dir(str(tmp_path / "root"), "u-1")
    assert not os.path.exists(volumes.pod_dir(str(tmp_path / "root"), "u-1"))
    assert os.path.isdir(tmp_path / "pv")  # claim data outlives the pod


def test_probe_thresholds() -> None:
    p = ProbeState({"periodSeconds": 1, "failureThreshold": 2, "successThreshold": 2, "initialDelaySeconds": 5},
                   "readiness", started_at=100.0)
    assert not p.due(104.0) and p.due(105.0)
    assert p.record(True, "", 105.0) is None  # one success is not enough
    assert p.record(True, "", 106.0) is True
    assert p.record(False, "boom", 107.0) is None
    assert p.record(False, "boom", 108.0) is False
    assert p.next_at == 109.0 and p.last_message == "boom"


async def test_probe_handlers_against_real_sockets() -> None:
    import asyncio

    from aiohttp import web

    async def ok(_r: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def bad(_r: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/bad", bad)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def exec_fn(cmd: list[str], timeout: float) -> tuple[int, bytes]:
        return (0, b"") if cmd == ["true"] else (1, b"nope")

    try:
        assert await run_probe({"httpGet": {"path": "/ok", "port": "web"}}, "127.0.0.1", exec_fn, {"web": port}) == \
            (True, "")
        ok_, msg = await run_probe({"httpGet": {"path": "/bad", "port": port}}, "127.0.0.1", exec_fn, {})
        assert not ok_ and "statuscode: 503" in msg
        assert (await run_probe({"tcpSocket": {"port": port}}, "127.0.0.1", exec_fn, {}))[0]
        assert (await run_probe({"exec": {"command": ["true"]}}, "", exec_fn, {}))[0]
        ok_, msg = await run_probe({"exec": {"command": ["false"]}}, "", exec_fn, {})
        assert (ok_, msg) == (False, "nope")  # the kubelet's message: the command's output
        ok_, msg = await run_probe({"httpGet": {"path": "/ok", "port": "nosuch"}}, "127.0.0.1", exec_fn, {})
        assert not ok_ and "nosuch" in msg

        async def refused(cmd: list[str], timeout: float) -> tuple[int, bytes]:
            raise RuntimeError("No exec command specified")

        # whatever the engine raises is a failed attempt, not an exception out of the pod's sync
        assert await run_probe({"exec": {"command": ["x"]}}, "", refused, {}) == (False, "No exec command specified")
        assert not (await run_probe({"exec": {"command": [True]}}, "", exec_fn, {}))[0]
    finally:
        await runner.cleanup()
    # nothing listens any more
    assert await run_probe({"tcpSocket": {"port": port}, "timeoutSeconds": 1}, "127.0.0.1", exec_fn, {}) == \
        (False, f"dial tcp 127.0.0.1:{port}: connect: connection refused")
    assert await run_probe({"httpGet": {"path": "/ok", "port": port}, "timeoutSeconds": 1}, "127.0.0.1", exec_fn,
                           {}) == (False, f'Get "http://127.0.0.1:{port}/ok": dial tcp 127.0.0.1:{port}: connect: '
                                          "connection refused")

    # a lifecycle handler has no timeoutSeconds: it is not cut off after a probe's 1 s
    async def slow(cmd: list[str], timeout: float) -> tuple[int, bytes]:
        return (0, b"") if timeout > 60 else (-1, b"")

    assert (await run_probe({"exec": {"command": ["sleep", "2"]}}, "", slow, {}))[0]
    assert not (await run_probe({"exec": {"command": ["sleep", "2"]}, "timeoutSeconds": 1}, "", slow, {}))[0]
    _ = asyncio


def test_api_server_validates_probes_and_hooks_as_kube() -> None:
    from tugboat.cluster.apiserver.kinds import default_pod, validate_pod

    def errors(container: dict, init: dict | None = None) -> list[str]:
        pod = {"metadata": {"name": "p", "namespace": "default"},
               "spec": {"containers": [{"name": "c", "image": "busybox", **container}],
                        **({"initContainers": [{"name": "i", "image": "busybox", **init}]} if init else {})}}
        default_pod(pod)
        return [f"{path}: {msg}" for _kind, path, msg in validate_pod(pod, None)]

    assert errors({"livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 0}}) == []  # 0 → default
    assert errors({"readinessProbe": {"httpGet": {"port": "http"}}, "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}) == []
    assert errors({"livenessProbe": {}}) == [
        "spec.containers[0].livenessProbe: Required value: must specify a handler type"]
    assert errors({"readinessProbe": {"exec": {"command": ["x"]}, "tcpSocket": {"port": 1}}}) == [
        "spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type"]
    assert errors({"startupProbe": {"tcpSocket": {"port": 0}, "successThreshold": 3, "failureThreshold": -1}}) == [
        "spec.containers[0].startupProbe.tcpSocket.port: Invalid value: 0: must be between 1 and 65535, inclusive",
        "spec.containers[0].startupProbe.failureThreshold: Invalid value: -1: must be greater than or equal to 0",
        "spec.containers[0].startupProbe.successThreshold: Invalid value: 3: must be 1"]
    assert errors({"livenessProbe": {"httpGet": {"port": "web--1-", "scheme": "FTP"}}}) == [
        'spec.containers[0].livenessProbe.httpGet.port: Invalid value: "web--1-": must not contain consecutive hyphens',
        'spec.containers[0].livenessProbe.httpGet.port: Invalid value: "web--1-": must not begin or end with a hyphen',
        'spec.containers[0].livenessProbe.httpGet.scheme: Unsupported value: "FTP": supported values: "HTTP", '
        '"HTTPS"']
    assert errors({"lifecycle": {"postStart": {"exec": {}}}}) == [
        "spec.containers[0].lifecycle.postStart.exec.command: Required value"]
    assert errors({}, init={"readinessProbe": {"exec": {"command": ["x"]}}}) == [
        "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without "
        "restartPolicy=Always"]
    assert errors({}, init={"restartPolicy": "Always", "readinessProbe": {"exec": {"command": ["x"]}}}) == []


def test_pod_metrics_need_two_samples_as_metrics_server() -> None:
    """A pod is reported once each container has a rate; its first sample is not a 0 % reading."""
    from types import SimpleNamespace

    from tugboat.cluster.node import metrics

    used = {"cid-a": 0, "cid-b": 0}

    class Runtime:
        def stats(self, cid: str) -> dict:
            used[cid] += 500_000_000  # 0.5 s of CPU per collection
            return {"cpu_usage_ns": used[cid], "memory_usage": 10 << 20, "memory_stat_total_inactive_file": 2 << 20}

    def container(name: str, cid: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, cid=cid, init=False, status=SimpleNamespace(state="running"))

    pod = {"metadata": {"name": "p", "namespace": "default", "labels": {"app": "x"}}}
    worker = SimpleNamespace(pod=pod, cs={"a": container("a", "cid-a")})
    agent = SimpleNamespace(workers={"u1": worker}, runtime=Runtime(), name="n1")
    pods, node = metrics.collect(agent)
    assert pods == [] and node["kind"] == "NodeMetrics"  # first sample: no rate yet, not a 0
    pods, _ = metrics.collect(agent)
    assert [p["metadata"]["name"] for p in pods] == ["p"]
    cpu = pods[0]["containers"][0]["usage"]["cpu"]
    assert cpu.endswith("n") and int(cpu[:-1]) > 0 and pods[0]["containers"][0]["usage"]["memory"] == "8192Ki"
    worker.cs["b"] = container("b", "cid-b")  # a new container: the pod waits for its second sample
    assert metrics.collect(agent)[0] == []
    assert [c["name"] for c in metrics.collect(agent)[0][0]["containers"]] == ["a", "b"]
