"""The Engine API server's common layer over a real socket: ping, versions, errors, booleans."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tugboat.api.common import bool_value, parse_filters
from tugboat.api.server import make_app
from tugboat.errors import InvalidArgument


@pytest.fixture
async def client(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TUG_ENGINE_NO_NETWORK", "1")
    from tugboat.engine.engine import Engine

    engine = Engine(str(tmp_path / "root"), restore=False, subreaper=False)
    async with TestClient(TestServer(make_app(engine))) as c:
        yield c
    engine.shutdown()


def test_bool_value_is_dockerds_rule() -> None:
    for v in ("", "0", "no", "false", "None", " FALSE "):
        assert bool_value(v) is False
    for v in ("1", "True", "yes", "anything"):
        assert bool_value(v) is True


def test_filters_both_forms() -> None:
    assert parse_filters('{"status":{"exited":true},"label":{"a=b":true,"c":false}}') == {
        "status": ["exited"], "label": ["a=b"]}
    assert parse_filters('{"status":["exited"]}') == {"status": ["exited"]}
    with pytest.raises(InvalidArgument):
        parse_filters("{nope")


async def test_ping_head_and_get(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.head("/_ping")
    assert r.status == 200
    assert r.headers["Api-Version"] == "1.50"
    assert r.headers["Ostype"] == "linux"
    assert r.headers["Docker-Experimental"] == "false"
    assert r.headers["Server"].startswith("Docker/")
    assert await r.read() == b""
    r = await client.get("/v1.44/_ping")
    assert r.status == 200 and await r.text() == "OK"


async def test_version_unversioned_and_prefixed(client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/version", "/v1.24/version", "/v1.50/version"):
        r = await client.get(path)
        assert r.status == 200
        data = await r.json()
        assert data["ApiVersion"] == "1.50" and data["MinAPIVersion"] == "1.24"


async def test_version_bounds_and_errors(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.get("/v1.51/version")
    assert r.status == 400 and r.headers["Content-Type"] == "application/json"
    assert (await r.json())["message"].startswith("client version 1.51 is too new")
    r = await client.get("/v1.12/info")
    assert r.status == 400 and "too old" in (await r.json())["message"]
    r = await client.get("/v1.50/nothing/here")
    assert r.status == 404 and (await r.json()) == {"message": "page not found"}
    r = await client.get("/containers/nope/json")
    assert r.status == 404 and (await r.json())["message"] == "No such container: nope"
    r = await client.post("/containers/create", data=b"{bad", headers={"Content-Type": "application/json"})
    assert r.status == 400 and "invalid JSON" in (await r.json())["message"]
    r = await client.get("/containers/json", params={"all": "False", "filters": json.dumps({"status": ["exited"]})})
    assert r.status == 200 and await r.json() == []


async def test_info_and_volumes(client) -> None:  # type: ignore[no-untyped-def]
    info = await (await client.get("/info")).json()
    assert info["OSType"] == "linux" and info["Swarm"]["LocalNodeState"] == "inactive"
    r = await client.post("/volumes/create", json={"Name": "v1", "Labels": {"k": "v"}})
    assert r.status == 201 and (await r.json())["Name"] == "v1"
    r = await client.post("/volumes/create", json={"Name": "bad/name"})
    assert r.status == 400
    ls = await (await client.get("/volumes")).json()
    assert [v["Name"] for v in ls["Volumes"]] == ["v1"] and ls["Warnings"] is None
    assert (await client.delete("/volumes/v1")).status == 204
    r = await client.get("/volumes/v1")
    assert r.status == 404 and (await r.json())["message"] == "get v1: no such volume"
