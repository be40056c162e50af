"""Engine API answers that need no container to run: `ps` PORTS of exited containers, and the 404s
that let `docker inspect NAME` print "No such object" on a daemon without networking."""

from __future__ import annotations

import os

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tugboat.api.server import make_app


@pytest.fixture
async def served(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TUG_ENGINE_NO_NETWORK", "1")
    from tugboat.engine.engine import Engine

    engine = Engine(str(tmp_path / "root"), restore=False, subreaper=False)
    async with TestClient(TestServer(make_app(engine))) as c:
        yield engine, c
    engine.shutdown()


def _record(engine, cid: str, name: str, running: bool):  # type: ignore[no-untyped-def]
    from tugboat.engine.engine import Container

    ports = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "443/tcp": None}
    data = {
        "Id": cid, "Name": "/" + name, "Created": "2026-01-01T00:00:00.000000000Z", "Path": "sleep",
        "Args": ["9"], "Image": "sha256:" + "0" * 64,
        "Config": {"Image": "busybox", "Labels": {}},
        "State": {"Status": "running" if running else "exited", "Running": running, "ExitCode": 0 if running else 137,
                  "StartedAt": "2026-01-01T00:00:01.000000000Z", "FinishedAt": "2026-01-01T00:00:02.000000000Z"},
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkSettings": {"Ports": ports, "Networks": {}},
        "Mounts": [],
    }
    c = Container(data, os.path.join(engine.containers_dir, cid))
    engine._containers[cid] = c
    engine._names[c.name] = cid
    return c


async def test_ps_shows_no_ports_for_exited_containers(served) -> None:  # type: ignore[no-untyped-def]
    engine, client = served
    _record(engine, "a" * 64, "up", running=True)
    _record(engine, "b" * 64, "down", running=False)
    r = await client.get("/containers/json", params={"all": "1"})
    assert r.status == 200
    by_name = {c["Names"][0]: c for c in await r.json()}
    assert sorted((p["PrivatePort"], p.get("PublicPort")) for p in by_name["/up"]["Ports"]) == [(80, 8080), (443, None)]
    assert by_name["/down"]["Ports"] == []
    assert by_name["/down"]["State"] == "exited"


async def test_missing_network_is_404_without_networking(served) -> None:  # type: ignore[no-untyped-def]
    _engine, client = served
    r = await client.get("/v1.50/networks/missing")
    assert r.status == 404
    assert (await r.json())["message"] == "network missing not found"
    for path in ("/v1.50/containers/missing/json", "/v1.50/volumes/missing", "/v1.50/plugins/missing/json"):
        assert (await client.get(path)).status == 404, path


async def test_network_prune_without_networking_prunes_nothing(served) -> None:  # type: ignore[no-untyped-def]
    _engine, client = served
    r = await client.post("/v1.50/networks/prune")
    assert r.status == 200
    assert await r.json() == {"NetworksDeleted": []}
