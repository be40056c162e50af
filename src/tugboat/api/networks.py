"""Engine API network routes: a thin adapter over ``engine.network`` (NetworkManager).

``GET /networks``, ``GET /networks/{id}``, ``POST /networks/create``, ``DELETE /networks/{id}``,
``POST /networks/{id}/connect``, ``POST /networks/{id}/disconnect``, ``POST /networks/prune``.

Connecting a container needs the engine: when the engine has ``network_connect(ref, network,
aliases=, ip=)`` / ``network_disconnect(ref, network, force=)`` those are used (they also handle
stopped containers and update the container's NetworkSettings); otherwise the container is
resolved with ``engine.get(ref)`` and the manager is called directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from tugboat.api import common
from tugboat.api.common import add_route, engine_of, json_response
from tugboat.errors import InvalidArgument, NotFound, Unavailable


def _manager(request: web.Request) -> Any:
    net = getattr(engine_of(request), "network", None)
    if net is None:
        raise Unavailable("networking is not available on this daemon")
    return net


async def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await common.run(fn, *args, **kwargs)


async def _settled(request: web.Request) -> None:
    """Let pending exit clean-ups finish: `docker stop c` answers before the container's endpoint
    is torn down, and a network view or removal right after must not see it any more."""
    engine = engine_of(request)
    if hasattr(engine, "await_cleanups") and any(not c.cleaned.is_set() for c in engine.containers()):
        await _run(engine.await_cleanups)


async def list_networks(request: web.Request) -> web.StreamResponse:
    filters = common.parse_filters(request.query.get("filters"))
    await _settled(request)
    nets = await _run(_manager(request).list, filters)
    return json_response(nets)


async def inspect_network(request: web.Request) -> web.StreamResponse:
    if getattr(engine_of(request), "network", None) is None:
        # dockerd's answer for a network it does not know: `docker inspect NAME` (which tries
        # container, image, network, volume, plugin in turn) needs a 404 to say "No such object"
        raise NotFound(f"network {request.match_info['id']} not found")
    await _settled(request)
    return json_response(await _run(_manager(request).inspect, request.match_info["id"]))


async def create_network(request: web.Request) -> web.StreamResponse:
    body = await common.read_json(request, required=True)
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON: expected an object")
    name = body.get("Name") or ""
    if not name:
        raise InvalidArgument("network name is required")
    ipam = body.get("IPAM") or {}
    if ipam.get("Driver") not in (None, "", "default"):
        raise InvalidArgument(f"IPAM driver {ipam.get('Driver')!r} is not supported")
    configs = ipam.get("Config") or []
    v4 = [c for c in configs if ":" not in (c.get("Subnet") or "")]
    if len(v4) > 1:
        raise InvalidArgument("only one IPv4 subnet per network is supported")
    cfg = v4[0] if v4 else {}
    if body.get("EnableIPv6"):
        raise InvalidArgument("IPv6 networks are not supported")
    mgr = _manager(request)
    net = await _run(
        mgr.create, name,
        subnet=cfg.get("Subnet") or None, gateway=cfg.get("Gateway") or None,
        ip_range=cfg.get("IPRange") or None, internal=bool(body.get("Internal")),
        labels=body.get("Labels") or {}, driver=body.get("Driver") or "bridge",
        options=body.get("Options") or {},
    )
    events = getattr(engine_of(request), "events", None)
    if events is not None and hasattr(events, "emit"):
        try:
            events.emit("network", "create", net["Id"], {"name": name, "type": "bridge"})
        except Exception:  # events are best effort
            pass
    return json_response({"Id": net["Id"], "Warning": ""}, status=201)


async def remove_network(request: web.Request) -> web.StreamResponse:
    await _settled(request)
    await _run(_manager(request).remove, request.match_info["id"])
    return common.no_content()


async def prune_networks(request: web.Request) -> web.StreamResponse:
    filters = common.parse_filters(request.query.get("filters"))
    if getattr(engine_of(request), "network", None) is None:
        return json_response({"NetworksDeleted": []})  # nothing to prune (`docker system prune`)
    await _settled(request)
    removed = await _run(_manager(request).prune, filters)
    return json_response({"NetworksDeleted": removed})


async def connect(request: web.Request) -> web.StreamResponse:
    body = await common.read_json(request, required=True) or {}
    ref = body.get("Container") or ""
    if not ref:
        raise InvalidArgument("container is required")
    epc = body.get("EndpointConfig") or {}
    aliases = list(epc.get("Aliases") or [])
    ip = ((epc.get("IPAMConfig") or {}).get("IPv4Address")) or None
    engine = engine_of(request)
    network = request.match_info["id"]
    if hasattr(engine, "network_connect"):
        await _run(engine.network_connect, ref, network, aliases=aliases, ip=ip)
    else:
        c = await _run(engine.get, ref)
        await _run(_manager(request).connect, c.id, network, aliases=aliases, ip=ip)
    return web.Response(status=200)


async def disconnect(request: web.Request) -> web.StreamResponse:
    body = await common.read_json(request, required=True) or {}
    ref = body.get("Container") or ""
    if not ref:
        raise InvalidArgument("container is required")
    force = bool(body.get("Force"))
    engine = engine_of(request)
    network = request.match_info["id"]
    if hasattr(engine, "network_disconnect"):
        await _run(engine.network_disconnect, ref, network, force=force)
    else:
        c = await _run(engine.get, ref)
        await _run(_manager(request).disconnect, c.id, network, force=force)
    return web.Response(status=200)


def setup(app: web.Application, engine: Any) -> None:
    add_route(app, "GET", "/networks", list_networks)
    add_route(app, "POST", "/networks/create", create_network)
    add_route(app, "POST", "/networks/prune", prune_networks)
    add_route(app, "GET", "/networks/{id}", inspect_network)
    add_route(app, "DELETE", "/networks/{id}", remove_network)
    add_route(app, "POST", "/networks/{id}/connect", connect)
    add_route(app, "POST", "/networks/{id}/disconnect", disconnect)
