"""Engine API routes for registries: ``POST /images/create`` (pull, and import with ``fromSrc``),
``POST /images/{name}/push``, ``POST /auth``. Pull and push stream docker's JSON progress messages.

Registry settings come from the engine when it has them (``engine.registry_mirrors``,
``engine.insecure_registries``), else from ``TUG_REGISTRY_MIRRORS`` / ``TUG_INSECURE_REGISTRIES``
(comma separated).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from typing import Any

from aiohttp import web

from tugboat.api import common
from tugboat.distribution.client import RegistryClient
from tugboat.distribution.credentials import decode_registry_auth
from tugboat.errors import InvalidArgument, NotFound, TugError, Unauthorized


def _list_setting(engine: Any, attr: str, env: str) -> list[str]:
    val = getattr(engine, attr, None)
    if val is None:
        cfg = getattr(engine, "config", None)
        val = getattr(cfg, attr, None) if cfg is not None and not isinstance(cfg, dict) else (
            cfg.get(attr) if isinstance(cfg, dict) else None)
    if val:
        return list(val)
    raw = os.environ.get(env, "")
    return [x.strip() for x in raw.split(",") if x.strip()]


_CLIENTS: dict[tuple[int, tuple[str, ...], tuple[str, ...]], RegistryClient] = {}


def client_for(engine: Any) -> RegistryClient:
    """One client per engine and settings, so bearer tokens are cached across requests."""
    mirrors = tuple(_list_setting(engine, "registry_mirrors", "TUG_REGISTRY_MIRRORS"))
    insecure = tuple(_list_setting(engine, "insecure_registries", "TUG_INSECURE_REGISTRIES"))
    key = (id(engine), mirrors, insecure)
    client = _CLIENTS.get(key)
    if client is None:
        if len(_CLIENTS) > 16:
            _CLIENTS.clear()
        client = _CLIENTS[key] = RegistryClient(mirrors=mirrors, insecure=insecure)
    return client


def _auth_from(request: web.Request) -> dict[str, str] | None:
    return decode_registry_auth(request.headers.get("X-Registry-Auth"))


async def _stream_job(request: web.Request, job: Any) -> web.StreamResponse:
    """Run ``job(progress)`` and stream its progress events; errors before the first event become
    a plain error response (as dockerd does), later ones an ``errorDetail`` message."""
    queue: asyncio.Queue[dict | None] = asyncio.Queue()
    task = asyncio.ensure_future(job(queue.put_nowait))
    task.add_done_callback(lambda _t: queue.put_nowait(None))
    first = await queue.get()
    if first is None:
        task.result()  # raises the error: the middleware maps it to a status and message
        first = {}
    stream = common.JSONStream(request)
    try:
        if first:
            await stream.send(first)
        while True:
            ev = await queue.get()
            if ev is None:
                break
            await stream.send(ev)
        try:
            task.result()
        except TugError as e:
            await stream.error(e.message)
        except Exception as e:  # a bug or an OS error: still end the stream with a message
            common.log.error("pull/push failed", exc_info=e)
            await stream.error(common.internal_message(e))
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    return await stream.finish()


async def images_create(request: web.Request) -> web.StreamResponse:
    engine = common.engine_of(request)
    q = request.query
    if q.get("fromSrc"):
        return await _import(request, engine)
    name = q.get("fromImage", "")
    if not name:
        raise InvalidArgument("fromImage or fromSrc is required")
    tag = q.get("tag", "")
    ref = name
    if tag:
        ref = f"{name}@{tag}" if ":" in tag and tag.split(":", 1)[0] in ("sha256", "sha512") else f"{name}:{tag}"
    images = engine.images if hasattr(engine, "images") else engine
    if images is None:
        raise TugError("the image service is not available")
    client = client_for(engine)
    auth = _auth_from(request)
    platform = q.get("platform") or None

    async def job(progress: Any) -> Any:
        return await client.pull_async(images, ref, auth=auth, progress=progress, platform=platform)

    return await _stream_job(request, job)


async def _import(request: web.Request, engine: Any) -> web.StreamResponse:
    """``docker import``: the body (``fromSrc=-``) is a rootfs tarball."""
    q = request.query
    if q["fromSrc"] != "-":
        raise InvalidArgument("only fromSrc=- (the request body) is supported")
    repo, tag = q.get("repo", ""), q.get("tag", "")
    ref = (f"{repo}:{tag}" if tag else repo) or None
    changes = q.getall("changes", [])
    loop = asyncio.get_running_loop()
    fd, path = tempfile.mkstemp(prefix="tug-import-")
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.content.iter_chunked(1 << 20):
                await loop.run_in_executor(None, f.write, chunk)
        img = await loop.run_in_executor(None, lambda: engine.images.import_rootfs(path, ref, changes=changes or None))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    stream = common.JSONStream(request)
    await stream.send({"status": img.id})
    return await stream.finish()


async def images_push(request: web.Request) -> web.StreamResponse:
    engine = common.engine_of(request)
    name = request.match_info["name"]
    tag = request.query.get("tag", "")
    images = engine.images
    from tugboat.oci.reference import parse_reference

    base = parse_reference(name, default_tag=False)
    if tag:
        refs = [f"{base.name}:{tag}"]
    elif base.tag:
        refs = [str(base)]
    else:
        loop = asyncio.get_running_loop()
        all_images = await loop.run_in_executor(None, images.list)
        refs = sorted(t for im in all_images for t in (im.repo_tags or [])
                      if str(parse_reference(t, default_tag=False).name) == base.name)
        refs = [str(parse_reference(t)) for t in refs]
    if not refs:
        raise NotFound(f"An image does not exist locally with the tag: {base.familiar_name}")
    loop = asyncio.get_running_loop()
    for r in refs:
        try:
            await loop.run_in_executor(None, images.resolve, r)
        except NotFound:
            raise NotFound(f"An image does not exist locally with the tag: {parse_reference(r).familiar}") from None
    client = client_for(engine)
    auth = _auth_from(request)

    async def job(progress: Any) -> None:
        for r in refs:
            await client.push_async(images, r, auth=auth, progress=progress)

    return await _stream_job(request, job)


async def auth(request: web.Request) -> web.StreamResponse:
    engine = common.engine_of(request)
    body = await common.read_json(request, required=True)
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON: expected an object")
    user, pw = body.get("username") or "", body.get("password") or ""
    server = body.get("serveraddress") or "docker.io"
    if not user:
        raise Unauthorized("username is required")
    from tugboat.distribution.credentials import normalize_registry

    reg = normalize_registry(server)
    await client_for(engine).login_async("docker.io" if reg.startswith("https://index.docker.io") else reg, user, pw)
    return common.json_response({"Status": "Login Succeeded", "IdentityToken": ""})


async def distribution_inspect(request: web.Request) -> web.StreamResponse:
    engine = common.engine_of(request)
    name = request.match_info["name"]
    info = await client_for(engine).inspect_async(name, auth=_auth_from(request))
    return common.json_response(info)


def setup(app: web.Application, engine: Any) -> None:
    common.add_route(app, "GET", "/distribution/{name:.+}/json", distribution_inspect)
    common.add_route(app, "POST", "/images/create", images_create)
    common.add_route(app, "POST", "/images/{name:.+}/push", images_push)
    common.add_route(app, "POST", "/auth", auth)
