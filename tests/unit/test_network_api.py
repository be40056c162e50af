"""The network route module over a recording fake manager (no root): request → call mapping."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from tugboat.api.server import make_app
from tugboat.errors import Conflict, NotFound


class FakeNetworks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def _rec(self, name: str, *a: Any, **kw: Any) -> Any:
        self.calls.append((name, a, kw))

    def create(self, name: str, **kw: Any) -> dict:
        self._rec("create", name, **kw)
        if name == "taken":
            raise Conflict("network with name taken already exists")
        return {"Id": "f" * 64, "Name": name}

    def list(self, filters: Any = None) -> list:
        self._rec("list", filters)
        return [{"Name": "bridge"}]

    def inspect(self, ref: str) -> dict:
        self._rec("inspect", ref)
        if ref == "nope":
            raise NotFound("network nope not found")
        return {"Name": ref}

    def remove(self, ref: str) -> None:
        self._rec("remove", ref)

    def prune(self, filters: Any = None) -> list:
        self._rec("prune", filters)
        return ["old"]

    def connect(self, cid: str, net: str, **kw: Any) -> dict:
        self._rec("connect", cid, net, **kw)
        return {}

    def disconnect(self, cid: str, net: str, **kw: Any) -> None:
        self._rec("disconnect", cid, net, **kw)


async def test_network_routes_map_to_the_manager() -> None:
    nets = FakeNetworks()
    engine = SimpleNamespace(network=nets, get=lambda ref: SimpleNamespace(id="c" * 64))
    app = make_app(engine, modules=["tugboat.api.networks"])
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/v1.47/networks/create", json={
            "Name": "app", "Driver": "bridge", "Internal": True, "Labels": {"a": "b"},
            "Options": {"com.docker.network.bridge.name": "br-app"},
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.254",
                                                      "IPRange": "10.9.0.128/25"}]}})
        assert r.status == 201 and (await r.json()) == {"Id": "f" * 64, "Warning": ""}
        assert nets.calls[-1] == ("create", ("app",), {
            "subnet": "10.9.0.0/24", "gateway": "10.9.0.254", "ip_range": "10.9.0.128/25",
            "internal": True, "labels": {"a": "b"}, "driver": "bridge",
            "options": {"com.docker.network.bridge.name": "br-app"}})
        r = await client.post("/networks/create", json={"Name": "taken"})
        assert r.status == 409 and "already exists" in (await r.json())["message"]
        r = await client.post("/networks/create", json={"Name": "v6", "EnableIPv6": True})
        assert r.status == 400
        r = await client.get("/networks", params={"filters": '{"label":{"a=b":true}}'})
        assert r.status == 200 and nets.calls[-1] == ("list", ({"label": ["a=b"]},), {})
        r = await client.get("/networks/nope")
        assert r.status == 404 and (await r.json())["message"] == "network nope not found"
        r = await client.delete("/v1.50/networks/app")
        assert r.status == 204 and nets.calls[-1] == ("remove", ("app",), {})
        r = await client.post("/networks/prune")
        assert (await r.json()) == {"NetworksDeleted": ["old"]}
        r = await client.post("/networks/app/connect", json={
            "Container": "web", "EndpointConfig": {"Aliases": ["w"], "IPAMConfig": {"IPv4Address": "10.9.0.9"}}})
        assert r.status == 200
        assert nets.calls[-1] == ("connect", ("c" * 64, "app"), {"aliases": ["w"], "ip": "10.9.0.9"})
        r = await client.post("/networks/app/disconnect", json={"Container": "web", "Force": True})
        assert r.status == 200 and nets.calls[-1] == ("disconnect", ("c" * 64, "app"), {"force": True})
