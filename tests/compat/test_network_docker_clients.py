"""The real docker CLI and docker SDK drive our network endpoints (Engine API over a unix socket).

The daemon here is our aiohttp app with only the system and network route modules over a
NetworkManager of its own kernel objects, so this runs without the engine; the full engine path
(`docker run --network`) is in tests/compat/test_network_engine.py when the engine is present.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import require_binary
from tugboat.network.manager import NetworkManager

pytestmark = pytest.mark.root

if os.geteuid() != 0:
    pytest.skip("needs root (bridges, nftables)", allow_module_level=True)


class Daemon:
    def __init__(self, root: str, sock: str) -> None:
        from aiohttp import web

        from tugboat.api.server import make_app

        self.sock = sock
        self.mgr = NetworkManager(root, instance="c" + os.urandom(2).hex())
        self.mgr.restore()
        engine = SimpleNamespace(network=self.mgr, get=self._no_containers)
        self.app = make_app(engine, modules=["tugboat.api.system", "tugboat.api.networks"])
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.runner = web.AppRunner(self.app)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    @staticmethod
    def _no_containers(ref: str) -> Any:
        from tugboat.errors import NotFound

        raise NotFound(f"No such container: {ref}")

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.runner.setup())
        site = web.UnixSite(self.runner, self.sock)
        self.loop.run_until_complete(site.start())
        self.ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.mgr.shutdown(remove_all=True)


@pytest.fixture
def daemon(tmp_path: Any) -> Iterator[Daemon]:
    d = Daemon(str(tmp_path / "root"), str(tmp_path / "tug.sock"))
    try:
        yield d
    finally:
        d.close()
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert f"tugboat-{d.mgr.instance}" not in tables


def docker(d: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_HOST": f"unix://{d.sock}", "DOCKER_CONFIG": os.path.dirname(d.sock)}
    r = subprocess.run([require_binary("docker"), *args], capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_docker_cli_network_lifecycle(daemon: Daemon) -> None:
    nid = docker(daemon, "network", "create", "--subnet", "10.214.0.0/24", "--label", "team=net",
                 "appnet").stdout.strip()
    assert len(nid) == 64
    ls = docker(daemon, "network", "ls", "--format", "{{.Name}} {{.Driver}}").stdout.split("\n")
    assert {"appnet bridge", "bridge bridge", "host host", "none null"} <= set(ls)
    info = json.loads(docker(daemon, "network", "inspect", "appnet").stdout)[0]
    assert info["Id"] == nid and info["IPAM"]["Config"][0]["Subnet"] == "10.214.0.0/24"
    assert info["Labels"] == {"team": "net"}
    assert docker(daemon, "network", "ls", "-q", "--filter", "label=team=net").stdout.strip() == nid[:12]
    r = docker(daemon, "network", "create", "--subnet", "10.214.0.0/25", "clash", check=False)
    assert r.returncode != 0 and "overlaps" in r.stderr
    r = docker(daemon, "network", "create", "--subnet", "10.214.0.0", "bad", check=False)
    assert r.returncode != 0 and "invalid subnet" in r.stderr
    r = docker(daemon, "network", "rm", "bridge", check=False)
    assert r.returncode != 0 and "pre-defined" in r.stderr
    r = docker(daemon, "network", "connect", "appnet", "nosuch", check=False)
    assert r.returncode != 0 and "No such container" in r.stderr
    docker(daemon, "network", "create", "spare")
    out = docker(daemon, "network", "prune", "-f", "--filter", "label=team=net").stdout
    assert "appnet" in out and "spare" not in out
    assert docker(daemon, "network", "rm", "spare").stdout.strip() == "spare"
    r = docker(daemon, "network", "inspect", "spare", check=False)
    assert r.returncode != 0 and "not found" in r.stderr


def test_docker_sdk_networks(daemon: Daemon) -> None:
    docker_sdk = pytest.importorskip("docker")
    client = docker_sdk.DockerClient(base_url=f"unix://{daemon.sock}", version="1.47")
    try:
        ipam = docker_sdk.types.IPAMConfig(pool_configs=[docker_sdk.types.IPAMPool(subnet="10.215.0.0/24",
                                                                                    gateway="10.215.0.254")])
        net = client.networks.create("sdknet", driver="bridge", ipam=ipam, internal=True)
        got = client.networks.get(net.id)
        assert got.name == "sdknet" and got.attrs["Internal"] is True
        assert got.attrs["IPAM"]["Config"][0]["Gateway"] == "10.215.0.254"
        assert "sdknet" in [n.name for n in client.networks.list(names=["sdknet"])]
        with pytest.raises(docker_sdk.errors.APIError):
            client.networks.create("sdknet")
        got.remove()
        with pytest.raises(docker_sdk.errors.NotFound):
            client.networks.get("sdknet")
        assert client.networks.prune()["NetworksDeleted"] in (None, [])
    finally:
        client.close()




def test_tug_network_cli(daemon: Daemon) -> None:
    import sys

    def tug(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tugboat.cli.main", "--host", f"unix://{daemon.sock}",
                               "network", *args], capture_output=True, text=True, timeout=60)

    r = tug("create", "--subnet", "10.216.0.0/24", "--gateway", "10.216.0.254", "--internal",
            "--label", "a=b", "clinet")
    assert r.returncode == 0, r.stderr
    nid = r.stdout.strip()
    ls = tug("ls").stdout.splitlines()
    assert ls[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert any(line.split()[:3] == [nid[:12], "clinet", "bridge"] for line in ls[1:])
    info = json.loads(tug("inspect", "clinet").stdout)[0]
    assert info["Internal"] is True and info["IPAM"]["Config"][0]["Gateway"] == "10.216.0.254"
    assert tug("ls", "-q", "--filter", "label=a=b").stdout.split() == [nid[:12]]
    r = tug("create", "--subnet", "10.216.0.0/25", "again")
    assert r.returncode == 1 and "overlaps" in r.stderr
    r = tug("rm", "bridge")
    assert r.returncode == 1 and "pre-defined" in r.stderr
    assert tug("rm", "clinet").stdout.strip() == "clinet"
    r = tug("inspect", "clinet")
    assert r.returncode == 1 and "not found" in r.stderr
    tug("create", "leftover")
    assert tug("prune", "-f").stdout.split() == ["Deleted", "Networks:", "leftover"]
