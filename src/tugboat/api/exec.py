"""Exec routes: create, start (hijacked), resize, inspect."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tugboat.api import common
from tugboat.api.common import add_route, engine_of, json_response, mux_frame, read_json, run
from tugboat.engine import exec as ex
from tugboat.errors import InvalidArgument, TugError


async def create(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, required=True)
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON: expected an object")
    eid = await run(ex.exec_create, engine_of(request), request.match_info["id"], body)
    return json_response({"Id": eid}, 201)


async def start(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    body = await read_json(request) or {}
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON: expected an object")
    eid = request.match_info["id"]
    rec = ex.get_exec(engine, eid)
    detach = bool(body.get("Detach"))
    tty = bool(body.get("Tty", rec.cfg.get("Tty")))
    size = body.get("ConsoleSize")
    if detach:
        await run(ex.exec_start, engine, eid, tty=tty, detach=True, console_size=size)
        return web.Response(status=200)
    if rec.started:
        raise common.Conflict(f"Error: Exec command {rec.id} has already run")
    if not rec.container.running:
        raise common.Conflict(f"container {rec.container.id} is not running")
    ctype = "application/vnd.docker.raw-stream" if tty else "application/vnd.docker.multiplexed-stream"
    conn = await common.hijack(request, ctype)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def on_output(stream: str | None, data: bytes) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (stream, data))

    want_out = bool(rec.cfg.get("AttachStdout", True))
    want_err = bool(rec.cfg.get("AttachStderr", True))
    try:
        rec = await run(ex.exec_start, engine, eid, tty=tty, console_size=size, subscriber=on_output)
    except Exception as exc:
        if isinstance(exc, TugError):
            msg = str(exc)
        else:
            common.log.error("exec start failed", exc_info=exc)
            msg = common.internal_message(exc)
        await conn.send(f"{msg}\r\n".encode())
        await conn.close()
        return common.HIJACK_DONE()
    stdin_task = None
    if rec.cfg.get("AttachStdin") and rec.pio is not None:
        from tugboat.api.containers import _pump_stdin

        stdin_task = asyncio.create_task(_pump_stdin(conn, rec.pio, True, b"", asyncio.Event()))
    try:
        while True:
            stream, data = await queue.get()
            if stream is None:
                break
            if (stream == "stdout" and want_out) or (stream == "stderr" and want_err):
                await conn.send(data if tty else mux_frame(1 if stream == "stdout" else 2, data))
            if conn.broken:
                break
        await run(rec.done.wait, 5)
    finally:
        if stdin_task is not None:
            stdin_task.cancel()
        await conn.close()
    return common.HIJACK_DONE()


async def resize(request: web.Request) -> web.StreamResponse:
    h = common.query_int(request, "h", 0) or 0
    w = common.query_int(request, "w", 0) or 0
    await run(ex.exec_resize, engine_of(request), request.match_info["id"], h, w)
    return web.Response(status=200)


async def inspect(request: web.Request) -> web.StreamResponse:
    rec = ex.get_exec(engine_of(request), request.match_info["id"])
    return json_response(rec.inspect())


def setup(app: web.Application, engine: object) -> None:
    add_route(app, "POST", "/containers/{id}/exec", create)
    add_route(app, "POST", "/exec/{id}/start", start)
    add_route(app, "POST", "/exec/{id}/resize", resize)
    add_route(app, "GET", "/exec/{id}/json", inspect)
