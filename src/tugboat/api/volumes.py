"""Volume routes: create, list, inspect, remove, prune."""

from __future__ import annotations

from aiohttp import web

from tugboat.api.common import (
    add_route,
    engine_of,
    json_response,
    no_content,
    parse_filters,
    query_bool,
    read_json,
    run,
)
from tugboat.errors import InvalidArgument


async def create(request: web.Request) -> web.StreamResponse:
    body = await read_json(request) or {}
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON: expected an object")
    labels = body.get("Labels") or {}
    opts = body.get("DriverOpts") or {}
    if not isinstance(labels, dict) or not isinstance(opts, dict):
        raise InvalidArgument("invalid value for Labels/DriverOpts: must be an object")
    vol = await run(engine_of(request).volume_create, body.get("Name") or None,
                    body.get("Driver") or "local", labels, opts)
    return json_response(vol, 201)


async def list_(request: web.Request) -> web.StreamResponse:
    vols = await run(engine_of(request).volume_list, parse_filters(request.query.get("filters")))
    return json_response({"Volumes": vols, "Warnings": None})


async def inspect(request: web.Request) -> web.StreamResponse:
    return json_response(await run(engine_of(request).volumes.inspect, request.match_info["name"]))


async def remove(request: web.Request) -> web.StreamResponse:
    await run(engine_of(request).volume_remove, request.match_info["name"], query_bool(request, "force"))
    return no_content()


async def prune(request: web.Request) -> web.StreamResponse:
    return json_response(await run(engine_of(request).volume_prune, parse_filters(request.query.get("filters"))))


def setup(app: web.Application, engine: object) -> None:
    add_route(app, "POST", "/volumes/create", create)
    add_route(app, "GET", "/volumes", list_)
    add_route(app, "POST", "/volumes/prune", prune)
    add_route(app, "GET", "/volumes/{name}", inspect)
    add_route(app, "DELETE", "/volumes/{name}", remove)
