"""Container routes of the Engine API: thin handlers over :class:`tugboat.engine.engine.Engine`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import threading
import time
from typing import Any

from aiohttp import web

from tugboat.api import common
from tugboat.api.common import (
    add_route,
    engine_of,
    json_response,
    mux_frame,
    no_content,
    parse_filters,
    query_bool,
    query_int,
    read_json,
    run,
)
from tugboat.engine.logs import follow_from, parse_line, read_logs
from tugboat.errors import InvalidArgument, NotFound


async def create(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    body = await read_json(request, required=True)
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON: expected an object")
    name = request.query.get("name")
    res = await run(engine.create, body, name, request.query.get("platform"))
    return json_response(res, 201)


async def list_(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    filters = parse_filters(request.query.get("filters"))
    args = (query_bool(request, "all"), query_int(request, "limit"), query_bool(request, "size"), filters)
    if not args[2] and not filters:
        # in memory, lock-free and ~20 µs a container: two thread hand-offs would cost more
        return json_response(engine.list(*args))
    return json_response(await run(engine.list, *args))


async def inspect(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    return json_response(await run(engine.inspect, request.match_info["id"], query_bool(request, "size")))


async def start(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    await request.read()
    await run(engine.start, request.match_info["id"])
    return no_content()


async def stop(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    await run(engine.stop, request.match_info["id"], query_int(request, "t"), request.query.get("signal"))
    return no_content()


async def restart(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    await run(engine.restart, request.match_info["id"], query_int(request, "t"))
    return no_content()


async def kill(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    await run(engine.kill, request.match_info["id"], request.query.get("signal"))
    return no_content()


async def pause(request: web.Request) -> web.StreamResponse:
    await run(engine_of(request).pause, request.match_info["id"])
    return no_content()


async def unpause(request: web.Request) -> web.StreamResponse:
    await run(engine_of(request).unpause, request.match_info["id"])
    return no_content()


async def remove(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    await run(engine.remove, request.match_info["id"], query_bool(request, "force"),
              query_bool(request, "v"), query_bool(request, "link"))
    return no_content()


async def rename(request: web.Request) -> web.StreamResponse:
    await run(engine_of(request).rename, request.match_info["id"], request.query.get("name", ""))
    return no_content()


async def update(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, required=True)
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON: expected an object")
    return json_response(await run(engine_of(request).update, request.match_info["id"], body))


async def resize(request: web.Request) -> web.StreamResponse:
    h = query_int(request, "h", 0) or 0
    w = query_int(request, "w", 0) or 0
    await run(engine_of(request).resize, request.match_info["id"], h, w)
    return web.Response(status=200)


async def prune(request: web.Request) -> web.StreamResponse:
    filters = parse_filters(request.query.get("filters"))
    return json_response(await run(engine_of(request).container_prune, filters))


async def wait(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    ref = request.match_info["id"]
    condition = request.query.get("condition") or "not-running"
    c = engine.get(ref)  # 404 before the headers
    if condition not in ("not-running", "next-exit", "removed"):
        raise InvalidArgument(f"invalid condition: {condition!r}")
    # register now (before the client's start) so next-exit cannot miss the exit
    with c.lock:
        gen = c.exit_gen
    resp = web.StreamResponse(status=200)
    resp.content_type = "application/json"
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    cancelled = threading.Event()

    def blocking() -> dict:
        deadline_poll = 1.0
        with c.lock:
            while True:
                if cancelled.is_set():
                    return {}
                if c.wait_reached(condition, gen):
                    break
                c.changed.wait(deadline_poll)
            return {"StatusCode": int(c.state.get("ExitCode") or 0)}

    fut = asyncio.get_running_loop().run_in_executor(common.executor(), blocking)
    try:
        while True:
            try:
                res = await asyncio.wait_for(asyncio.shield(fut), 1.0)
                break
            except TimeoutError:
                if common.client_gone(request):
                    cancelled.set()
                    return resp
    finally:
        cancelled.set()
    with contextlib.suppress(ConnectionError, RuntimeError):
        await resp.write(json.dumps(res).encode() + b"\n")
        await resp.write_eof()
    return resp


def _frame(tty: bool, stream: str, data: bytes) -> bytes:
    if tty:
        return data
    return mux_frame(1 if stream == "stdout" else 2, data)


async def logs(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    c, path = engine.log_path(request.match_info["id"])
    q = request.query
    want = tuple(s for s in ("stdout", "stderr") if query_bool(request, s))
    if not want:
        raise InvalidArgument("Bad parameters: you must choose at least one stream")
    if (c.data["HostConfig"].get("LogConfig") or {}).get("Type") == "none":
        raise InvalidArgument('configured logging driver does not support reading')
    follow = query_bool(request, "follow")
    timestamps = query_bool(request, "timestamps")
    tail_raw = q.get("tail", "all")
    tail = None if tail_raw in ("", "all") else int(tail_raw) if tail_raw.lstrip("-").isdigit() else None
    if tail is not None and tail < 0:
        tail = None
    since = float(q["since"]) if q.get("since") and q["since"] != "0" else None
    until = float(q["until"]) if q.get("until") and q["until"] != "0" else None
    tty = bool(c.data["Config"].get("Tty"))
    resp = web.StreamResponse(status=200)
    resp.content_type = "application/vnd.docker.raw-stream" if tty else "application/vnd.docker.multiplexed-stream"
    resp.enable_chunked_encoding()
    await resp.prepare(request)

    def fmt(stream: str, ts: str, data: bytes) -> bytes:
        if timestamps:
            data = ts.encode() + b" " + data
        return _frame(tty, stream, data)

    entries, offset = await run(read_logs, path, tail=tail, since=since, until=until, streams=want)
    try:
        buf = b"".join(fmt(*e) for e in entries)
        if buf:
            await resp.write(buf)
        if follow and (until is None or until > time.time()):
            gen = follow_from(path, offset)
            while True:
                running = c.running or c.state.get("Restarting")
                _, lines = next(gen)
                out = []
                for line in lines:
                    ent = parse_line(line)
                    if ent and ent[0] in want:
                        out.append(fmt(*ent))
                if out:
                    await resp.write(b"".join(out))
                if not running or c.removed:
                    break
                if until is not None and time.time() >= until:
                    break
                if common.client_gone(request):
                    return resp
                await asyncio.sleep(0.05)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass
    return resp


async def attach(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    c = engine.get(request.match_info["id"])
    want_stdin = query_bool(request, "stdin")
    want_out = query_bool(request, "stdout")
    want_err = query_bool(request, "stderr")
    want_logs = query_bool(request, "logs")
    stream_live = query_bool(request, "stream")
    tty = bool(c.data["Config"].get("Tty"))
    ctype = ("application/vnd.docker.raw-stream" if tty or not common.version_at_least(request, "1.42")
             else "application/vnd.docker.multiplexed-stream")
    with c.lock:
        pio = c.pio if c.running and c.pio is not None else c.pio_next
    if pio is None:
        raise NotFound(f"No such container: {c.id}")
    conn = await common.hijack(request, ctype)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def on_output(stream: str | None, data: bytes) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (stream, data))

    if want_logs:
        entries, _ = await run(read_logs, c.data["LogPath"],
                               streams=tuple(s for s, w in (("stdout", want_out), ("stderr", want_err)) if w))
        for stream, _ts, data in entries:
            await conn.send(_frame(tty, stream, data))
    unsubscribe = pio.subscribe(on_output) if stream_live else None
    stdin_task = None
    detach_keys = _detach_keys(request.query.get("detachKeys"))
    detached = asyncio.Event()
    if want_stdin and stream_live:
        stdin_task = asyncio.create_task(_pump_stdin(conn, pio, c.data["Config"].get("StdinOnce", False),
                                                     detach_keys if tty else b"", detached))
    try:
        if stream_live:
            while True:
                getter = asyncio.ensure_future(queue.get())
                waiters = {getter}
                det = asyncio.ensure_future(detached.wait())
                waiters.add(det)
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED, timeout=1.0)
                det.cancel()
                if getter not in done:
                    getter.cancel()
                    if detached.is_set() or conn.broken:
                        break
                    continue
                stream, data = getter.result()
                if stream is None:
                    break
                if (stream == "stdout" and want_out) or (stream == "stderr" and want_err):
                    await conn.send(_frame(tty, stream, data))
                if conn.broken:
                    break
    finally:
        if unsubscribe is not None:
            unsubscribe()
        if stdin_task is not None:
            stdin_task.cancel()
        await conn.close()
    return common.HIJACK_DONE()


def _detach_keys(raw: str | None) -> bytes:
    spec = raw or "ctrl-p,ctrl-q"
    out = bytearray()
    for k in spec.split(","):
        k = k.strip()
        if k.startswith("ctrl-") and len(k) == 6:
            ch = k[5]
            out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}.get(ch, (ord(ch.lower()) - 96) & 0x1F))
        elif len(k) == 1:
            out.append(ord(k))
    return bytes(out)


async def _pump_stdin(conn: common.Hijacked, pio: Any, stdin_once: bool, detach_keys: bytes,
                      detached: asyncio.Event) -> None:
    matched = 0
    try:
        while True:
            data = await conn.recv()
            while not pio.stdin_ready.is_set() and not pio.closed.is_set():
                await asyncio.sleep(0.005)
            if not data:
                break
            if detach_keys:
                for b in data:
                    if b == detach_keys[matched]:
                        matched += 1
                        if matched == len(detach_keys):
                            detached.set()
                            return
                    else:
                        matched = 0
            await write_all_fd(pio, data)
    finally:
        if stdin_once and not detached.is_set():
            pio.close_stdin()


async def write_all_fd(pio: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        fd = pio.stdin_fd
        if fd is None:
            return
        try:
            n = os.write(fd, view)
            view = view[n:]
        except BlockingIOError:
            await asyncio.sleep(0.01)
        except OSError:
            return


async def top(request: web.Request) -> web.StreamResponse:
    return json_response(await run(engine_of(request).top, request.match_info["id"],
                                   request.query.get("ps_args") or "-ef"))


async def stats(request: web.Request) -> web.StreamResponse:
    from tugboat.engine.stats import docker_stats

    engine = engine_of(request)
    c = engine.get(request.match_info["id"])
    stream = query_bool(request, "stream", True)
    one_shot = query_bool(request, "one-shot")
    prev: dict | None = None
    if not stream:
        if not one_shot:
            prev = await run(docker_stats, engine, c, None)
            await asyncio.sleep(0.5 if c.running else 0)
        return json_response(await run(docker_stats, engine, c, prev))
    resp = web.StreamResponse(status=200)
    resp.content_type = "application/json"
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        while not common.client_gone(request):
            cur = await run(docker_stats, engine, c, prev)
            await resp.write(json.dumps(cur).encode() + b"\n")
            prev = cur
            if c.removed:
                break
            await asyncio.sleep(1.0)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass
    return resp


async def archive_head(request: web.Request) -> web.StreamResponse:
    from tugboat.engine import archive

    engine = engine_of(request)
    path = request.query.get("path") or ""
    st = await run(archive.stat_path, engine, request.match_info["id"], path)
    return web.Response(status=200, headers={"X-Docker-Container-Path-Stat": _b64(st),
                                             "Content-Type": "application/x-tar"})


def _b64(obj: Any) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


async def archive_get(request: web.Request) -> web.StreamResponse:
    from tugboat.engine import archive

    engine = engine_of(request)
    path = request.query.get("path") or ""
    if not path:
        raise InvalidArgument("path is required")
    st, proc = await run(archive.open_archive, engine, request.match_info["id"], path)
    resp = web.StreamResponse(status=200, headers={"X-Docker-Container-Path-Stat": _b64(st)})
    resp.content_type = "application/x-tar"
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await _stream_proc(request, resp, proc)
    return resp


async def _stream_proc(request: web.Request, resp: web.StreamResponse, proc: Any) -> None:
    from tugboat.engine import archive

    try:
        await common.copy_to_response(resp, proc.stdout.read)
    finally:
        with contextlib.suppress(Exception):
            proc.kill()
        await run(proc.wait)
        archive.done(proc)


async def archive_put(request: web.Request) -> web.StreamResponse:
    from tugboat.engine import archive

    engine = engine_of(request)
    path = request.query.get("path") or ""
    if not path:
        raise InvalidArgument("path is required")
    no_overwrite = query_bool(request, "noOverwriteDirNonDir")
    copy_uid = query_bool(request, "copyUIDGID")
    proc = await run(archive.start_extract, engine, request.match_info["id"], path, no_overwrite, copy_uid)
    try:
        async for chunk in request.content.iter_chunked(65536):
            await run(proc.stdin.write, chunk)
        await run(proc.stdin.close)
    except BrokenPipeError:
        pass
    except BaseException:  # the client went away mid-upload
        with contextlib.suppress(Exception):
            proc.kill()
        await run(proc.wait)
        archive.done(proc)
        raise
    await run(archive.finish_extract, proc)
    return web.Response(status=200)


async def export(request: web.Request) -> web.StreamResponse:
    from tugboat.engine import archive

    engine = engine_of(request)
    proc = await run(archive.open_export, engine, request.match_info["id"])
    resp = web.StreamResponse(status=200)
    resp.content_type = "application/octet-stream"
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await _stream_proc(request, resp, proc)
    return resp


async def changes(request: web.Request) -> web.StreamResponse:
    from tugboat.engine import archive

    return json_response(await run(archive.changes, engine_of(request), request.match_info["id"]))


async def commit(request: web.Request) -> web.StreamResponse:
    q = request.query
    body = await read_json(request)
    if body is not None and not isinstance(body, dict):
        raise InvalidArgument("invalid JSON: expected an object")
    cid = q.get("container") or ""
    if not cid:
        raise InvalidArgument("container is required")
    image_id = await run(engine_of(request).commit, cid, q.get("repo") or None, q.get("tag") or None,
                         q.get("comment") or "", q.get("author") or "", q.getall("changes", []),
                         query_bool(request, "pause", True), body or None)
    return json_response({"Id": image_id}, 201)


def setup(app: web.Application, engine: object) -> None:
    add_route(app, "POST", "/commit", commit)
    add_route(app, "POST", "/containers/create", create)
    add_route(app, "GET", "/containers/json", list_)
    add_route(app, "POST", "/containers/prune", prune)
    add_route(app, "GET", "/containers/{id}/json", inspect)
    add_route(app, "POST", "/containers/{id}/start", start)
    add_route(app, "POST", "/containers/{id}/stop", stop)
    add_route(app, "POST", "/containers/{id}/restart", restart)
    add_route(app, "POST", "/containers/{id}/kill", kill)
    add_route(app, "POST", "/containers/{id}/pause", pause)
    add_route(app, "POST", "/containers/{id}/unpause", unpause)
    add_route(app, "POST", "/containers/{id}/wait", wait)
    add_route(app, "POST", "/containers/{id}/attach", attach)
    add_route(app, "POST", "/containers/{id}/resize", resize)
    add_route(app, "POST", "/containers/{id}/rename", rename)
    add_route(app, "POST", "/containers/{id}/update", update)
    add_route(app, "DELETE", "/containers/{id}", remove)
    add_route(app, "GET", "/containers/{id}/logs", logs)
    add_route(app, "GET", "/containers/{id}/top", top)
    add_route(app, "GET", "/containers/{id}/stats", stats)
    add_route(app, "HEAD", "/containers/{id}/archive", archive_head)
    add_route(app, "GET", "/containers/{id}/archive", archive_get)
    add_route(app, "PUT", "/containers/{id}/archive", archive_put)
    add_route(app, "GET", "/containers/{id}/export", export)
    add_route(app, "GET", "/containers/{id}/changes", changes)
