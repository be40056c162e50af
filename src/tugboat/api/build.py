"""``POST /build`` (the legacy builder's API, as the docker CLI and docker-py use it) and
``POST /build/prune``.

The request body is the (uncompressed, possibly gzip) tar of the context, chunked from the CLI
or with Content-Length from docker-py; it is spooled to a file under ``<root>/build/tmp`` while
it arrives, then the build runs in a worker thread. The response is dockerd's chunked JSON stream::

    {"stream":"Step 1/3 : FROM busybox\\n"}
    {"stream":" ---> 5cbda70e77b2\\n"}
    {"stream":"Step 2/3 : RUN echo hi\\n"}
    {"stream":" ---> Running in 1a2b3c4d5e6f\\n"}
    {"stream":"hi\\n"}
    {"stream":" ---> Removed intermediate container 1a2b3c4d5e6f\\n"}
    {"stream":" ---> 9d366562fff5\\n"}
    {"aux":{"ID":"sha256:…"}}
    {"stream":"Successfully built 9d366562fff5\\n"}
    {"stream":"Successfully tagged app:latest\\n"}

and on failure ``{"errorDetail":{"code":3,"message":"The command '/bin/sh -c exit 3' returned a
non-zero code: 3"},"error":"…"}`` (the CLI exits with ``code``). ``q=1`` sends only the image ID.
A client that goes away cancels the build (nothing is tagged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
from typing import Any

from aiohttp import web

from tugboat.api import common
from tugboat.errors import InvalidArgument, TugError

_BUILDERS: dict[int, Any] = {}


def _builder(engine: Any) -> Any:
    b = _BUILDERS.get(id(engine))
    if b is None:
        from tugboat.build.builder import Builder

        images = engine.images
        if images is None:
            raise TugError("image service is not available in this build")
        b = Builder(images, getattr(images, "snapshots", None), network=getattr(engine, "network", None),
                    root=getattr(engine, "root", None) or images.root)
        _BUILDERS[id(engine)] = b
    return b


def _json_map(raw: str | None, what: str) -> dict[str, str]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidArgument(f"invalid {what} parameter: {raw}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"invalid {what} parameter: {raw}")
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _familiar(tag: str) -> str:
    from tugboat.oci.reference import parse_reference

    try:
        return parse_reference(tag).familiar
    except TugError:
        return tag


class _LegacyStream:
    """Turns builder progress events into dockerd's legacy build messages."""

    def __init__(self) -> None:
        self.running: dict[tuple[str, int], str] = {}
        self.kind: dict[tuple[str, int], str] = {}

    def convert(self, ev: dict[str, Any]) -> list[dict[str, Any]]:
        t = ev.get("type")
        key = (ev.get("stage", ""), ev.get("n", 0))
        if t == "step":
            text = ev["text"]
            self.kind[key] = text.split(None, 1)[0].upper() if text else ""
            return [{"stream": f"Step {ev['n']}/{ev['total']} : {text}\n"}]
        if t == "cached":
            self.kind[key] = "CACHED"
            return [{"stream": " ---> Using cache\n"}]
        if t == "output":
            out = []
            k = key
            if k not in self.running:
                cid = os.urandom(6).hex()
                self.running[k] = cid
                out.append({"stream": f" ---> Running in {cid}\n"})
            out.append({"stream": ev["text"]})
            return out
        if t == "step-done":
            out = []
            kind = self.kind.get(key, "")
            if kind == "RUN" and key not in self.running:
                cid = os.urandom(6).hex()
                self.running[key] = cid
                out.append({"stream": f" ---> Running in {cid}\n"})
            if key in self.running and kind != "CACHED":
                out.append({"stream": f" ---> Removed intermediate container {self.running[key]}\n"})
            short = str(ev.get("id", "")).split(":", 1)[-1][:12]
            if short and short != "scratch":
                out.append({"stream": f" ---> {short}\n"})
            return out
        if t == "trigger":
            return [{"stream": f"# Executing 1 build trigger\n ---> Running trigger: {ev['text']}\n"}]
        if t == "warning":
            return [{"stream": f"{ev['text']}\n"}]
        if t == "pull":
            return [{"status": f"Pulling from {ev['ref']}"}]
        return []


async def build(request: web.Request) -> web.StreamResponse:
    engine = common.engine_of(request)
    q = request.query
    if q.get("version") == "2":
        raise InvalidArgument("BuildKit (version=2) is not supported by this daemon; use the legacy builder")
    if q.get("remote"):
        raise InvalidArgument("remote build contexts are not supported; send the context as a tar")
    tags = q.getall("t", [])
    dockerfile = q.get("dockerfile") or "Dockerfile"
    build_args = _json_map(q.get("buildargs"), "buildargs")
    labels = _json_map(q.get("labels"), "labels")
    no_cache = common.bool_value(q.get("nocache"))
    pull = common.bool_value(q.get("pull"))
    quiet = common.bool_value(q.get("q"))
    target = q.get("target") or None
    builder = _builder(engine)
    for t in tags:
        from tugboat.oci.reference import parse_reference

        parse_reference(t)

    # spool the context while it arrives (chunked or not)
    os.makedirs(builder.tmp_dir, exist_ok=True)
    fd, ctx_path = tempfile.mkstemp(prefix=f"{os.getpid()}-upload-", suffix=".tar", dir=builder.tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.content.iter_any():
                f.write(chunk)
        return await _run_build(request, builder, ctx_path, dockerfile=dockerfile, tags=tags,
                                build_args=build_args, labels=labels, no_cache=no_cache, pull=pull, quiet=quiet,
                                target=target, network_mode=q.get("networkmode") or "default")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(ctx_path)


async def _run_build(request: web.Request, builder: Any, ctx_path: str, *, quiet: bool, **kw: Any) -> web.StreamResponse:
    from tugboat.build.builder import BuildError

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    cancel = threading.Event()

    def progress(ev: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ev)

    def work() -> Any:
        try:
            return builder.build(ctx_path, progress=progress, cancel=cancel, **kw)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    stream = common.JSONStream(request)
    await stream.start()
    conv = _LegacyStream()
    buffered: list[dict[str, Any]] = []
    fut = loop.run_in_executor(common.executor(), work)
    try:
        while True:
            try:
                ev = await asyncio.wait_for(queue.get(), timeout=0.5)
            except TimeoutError:
                if stream.closed or common.client_gone(request):
                    cancel.set()  # the client went away: stop the build, tag nothing
                continue
            if ev is None:
                break
            for msg in conv.convert(ev):
                if quiet:
                    buffered.append(msg)
                else:
                    await stream.send(msg)
            if stream.closed or common.client_gone(request):
                cancel.set()
        try:
            image = await fut
        except BuildError as exc:
            for msg in buffered:
                await stream.send(msg)
            await stream.error(exc.message, exc.code)
            return await stream.finish()
        except TugError as exc:
            for msg in buffered:
                await stream.send(msg)
            await stream.error(exc.message)
            return await stream.finish()
        if quiet:
            await stream.send({"aux": {"ID": image.id}})
            await stream.send({"stream": image.id + "\n"})
            return await stream.finish()
        await stream.send({"aux": {"ID": image.id}})
        await stream.send({"stream": f"Successfully built {image.short_id}\n"})
        for t in kw.get("tags") or []:
            await stream.send({"stream": f"Successfully tagged {_familiar(t)}\n"})
        return await stream.finish()
    except (asyncio.CancelledError, ConnectionError):
        cancel.set()
        raise
    finally:
        if not fut.done():
            cancel.set()
            with contextlib.suppress(BaseException):
                await asyncio.shield(fut)


async def prune(request: web.Request) -> web.StreamResponse:
    engine = common.engine_of(request)
    builder = _builder(engine)
    n = await common.run(builder.prune)
    return common.json_response({"CachesDeleted": None, "SpaceReclaimed": 0, "Records": n})


def setup(app: web.Application, engine: Any) -> None:
    common.add_route(app, "POST", "/build", build)
    common.add_route(app, "POST", "/build/prune", prune)
