"""System routes: _ping, version, info, system df, events."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from tugboat.api import common
from tugboat.api.common import add_route, engine_of, json_response


async def ping(request: web.Request) -> web.StreamResponse:
    headers = {
        "Builder-Version": "1",
        "Swarm": "inactive",
        "Cache-Control": "no-cache, no-store, must-revalidate",
        "Pragma": "no-cache",
    }
    if request.method == "HEAD":
        return web.Response(status=200, headers={**headers, "Content-Length": "0"})
    return web.Response(
        status=200, text="OK", content_type="text/plain", charset="utf-8", headers=headers
    )


async def version(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    return json_response(await asyncio.get_running_loop().run_in_executor(None, engine.version))


async def info(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    return json_response(await asyncio.get_running_loop().run_in_executor(None, engine.info))


async def system_df(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    return json_response(await asyncio.get_running_loop().run_in_executor(None, engine.system_df))


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /events``: past events from ``since`` then live ones until ``until`` or disconnect."""
    engine = engine_of(request)
    filters = common.parse_filters(request.query.get("filters"))
    since = _ts(request.query.get("since"))
    until = _ts(request.query.get("until"))
    stream = common.JSONStream(request)
    await stream.start()
    queue: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    unsubscribe = engine.events.subscribe(lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev))
    try:
        if since is not None:
            for ev in engine.events.history(since):
                if _match(ev, filters) and (until is None or ev["time"] <= until):
                    await stream.send(ev)
        if until is not None and until <= time.time():
            return await stream.finish()
        while not stream.closed:
            timeout = None if until is None else max(0.0, until - time.time())
            try:
                ev = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                break
            if _match(ev, filters):
                await stream.send(ev)
    finally:
        unsubscribe()
    return await stream.finish()


def _ts(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        from tugboat.engine.util import parse_time

        return parse_time(raw)


def _match(ev: dict, filters: dict[str, list[str]]) -> bool:
    for key, vals in filters.items():
        if not vals:
            continue
        if key == "type" and ev.get("Type") not in vals:
            return False
        if key == "event" and ev.get("Action", "").split(":")[0] not in vals:
            return False
        if key in ("container", "volume", "image", "network"):
            actor = ev.get("Actor", {})
            ids = {actor.get("ID", ""), actor.get("Attributes", {}).get("name", "")}
            if not any(v in ids or actor.get("ID", "").startswith(v) for v in vals):
                return False
        if key == "label":
            attrs = ev.get("Actor", {}).get("Attributes", {})
            for v in vals:
                k, _, want = v.partition("=")
                if k not in attrs or (want and attrs[k] != want):
                    return False
    return True


def setup(app: web.Application, engine: object) -> None:
    for method in ("GET", "HEAD"):
        add_route(app, method, "/_ping", ping)
    add_route(app, "GET", "/version", version)
    add_route(app, "GET", "/info", info)
    add_route(app, "GET", "/system/df", system_df)
    add_route(app, "GET", "/events", events)


__all__ = ["json", "setup"]
