"""Image routes of the Engine API over ImageService: list, inspect, history, tag, remove, prune,
load, save (``images/create`` and push belong to ``tugboat.api.distribution``, build to
``tugboat.api.build``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from typing import Any

from aiohttp import web

from tugboat.api import common
from tugboat.api.common import add_route, engine_of, json_response, parse_filters, query_bool, run
from tugboat.engine.util import rfc3339_to_ts
from tugboat.errors import InvalidArgument, NotFound, TugError


def _images(request: web.Request) -> Any:
    svc = engine_of(request).images
    if svc is None:
        raise TugError("the image service is not available")
    return svc


def _containers_using(engine: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in engine.containers():
        out[c.data.get("Image", "")] = out.get(c.data.get("Image", ""), 0) + 1
    return out


def _match_ref(img: Any, pattern: str) -> bool:
    import fnmatch

    for t in img.repo_tags:
        repo, _, _tag = t.rpartition(":")
        if ":" in pattern:
            if fnmatch.fnmatch(t, pattern):
                return True
        elif fnmatch.fnmatch(repo, pattern) or fnmatch.fnmatch(repo.rsplit("/", 1)[-1], pattern):
            return True
    return False


def list_images(engine: Any, all_: bool, filters: dict[str, list[str]]) -> list[dict]:
    svc = engine.images
    users = _containers_using(engine)
    out = []
    imgs = svc.list()
    for img in imgs:
        if filters.get("dangling"):
            want = filters["dangling"][0].lower() in ("1", "true")
            if bool(not img.repo_tags) != want:
                continue
        if filters.get("reference") and not any(_match_ref(img, p) for p in filters["reference"]):
            continue
        labels = ((img.config.get("config") or {}).get("Labels")) or {}
        if filters.get("label"):
            ok = True
            for lf in filters["label"]:
                k, eq, v = lf.partition("=")
                if k not in labels or (eq and labels[k] != v):
                    ok = False
            if not ok:
                continue
        for key in ("before", "since"):
            if filters.get(key):
                other = svc.resolve(filters[key][0])
                if key == "before" and not img.created < other.created:
                    break
                if key == "since" and not img.created > other.created:
                    break
        else:
            out.append({
                "Id": img.id,
                "ParentId": "",
                "RepoTags": list(img.repo_tags),
                "RepoDigests": list(img.repo_digests),
                "Created": int(rfc3339_to_ts(img.created)) if img.created else 0,
                "Size": img.size,
                "SharedSize": -1,
                "VirtualSize": img.size,
                "Labels": labels or None,
                "Containers": users.get(img.id, 0),
            })
    return out


async def list_(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    _images(request)
    filters = parse_filters(request.query.get("filters"))
    if request.query.get("filter"):
        filters.setdefault("reference", []).append(request.query["filter"])
    return json_response(await run(list_images, engine, query_bool(request, "all"), filters))


def _inspect(svc: Any, name: str) -> dict:
    img = svc.resolve(name)
    data = img.inspect()
    data.setdefault("Size", img.size)
    return data


async def inspect(request: web.Request) -> web.StreamResponse:
    return json_response(await run(_inspect, _images(request), request.match_info["name"]))


async def history(request: web.Request) -> web.StreamResponse:
    return json_response(await run(_images(request).history, request.match_info["name"]))


async def tag(request: web.Request) -> web.StreamResponse:
    svc = _images(request)
    repo = request.query.get("repo") or ""
    tg = request.query.get("tag") or "latest"
    if not repo:
        raise InvalidArgument("repository name must have at least one component")
    await run(svc.tag, request.match_info["name"], f"{repo}:{tg}")
    engine_of(request).events.emit("image", "tag", request.match_info["name"], {"name": f"{repo}:{tg}"})
    return web.Response(status=201)


async def remove(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    svc = _images(request)
    name = request.match_info["name"]

    def in_use(image_id: str) -> str | None:
        for c in engine.containers():
            if c.data.get("Image") == image_id:
                return c.id
        return None

    if hasattr(engine, "flush_removals"):  # removed containers' snapshots no longer hold layers
        await run(engine.flush_removals)
    res = await run(svc.remove, name, query_bool(request, "force"), in_use, not query_bool(request, "noprune"))
    for ev in res:
        if "Deleted" in ev:
            engine.events.emit("image", "delete", ev["Deleted"], {"name": name})
        else:
            engine.events.emit("image", "untag", ev["Untagged"], {"name": name})
    return json_response(res)


async def prune(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    svc = _images(request)
    filters = parse_filters(request.query.get("filters"))
    all_ = (filters.pop("dangling", ["true"]) or ["true"])[0].lower() in ("0", "false")

    def in_use(image_id: str) -> bool:
        return any(c.data.get("Image") == image_id for c in engine.containers())

    if hasattr(engine, "flush_removals"):
        await run(engine.flush_removals)
    return json_response(await run(svc.prune, all_, in_use, filters))


async def load(request: web.Request) -> web.StreamResponse:
    svc = _images(request)
    fd, path = tempfile.mkstemp(prefix="tug-load-", dir=getattr(svc, "tmp_dir", None) if os.path.isdir(getattr(svc, "tmp_dir", "") or "") else None)
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.content.iter_chunked(1 << 20):
                await run(f.write, chunk)
        stream = common.JSONStream(request)
        try:
            names = await run(svc.load, path)
        except TugError as exc:
            await stream.error(exc.message)
            return await stream.finish()
        for n in names:
            label = "Loaded image ID" if n.startswith("sha256:") else "Loaded image"
            await stream.send({"stream": f"{label}: {n}\n"})
        return await stream.finish()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


async def _save(request: web.Request, names: list[str]) -> web.StreamResponse:
    svc = _images(request)
    if not names:
        raise InvalidArgument("no image names given")
    for n in names:
        await run(svc.resolve, n)
    r, w = os.pipe()
    rf = os.fdopen(r, "rb")
    wf = os.fdopen(w, "wb")

    def produce() -> None:
        try:
            svc.save(names, wf)
        finally:
            with contextlib.suppress(OSError):
                wf.close()

    fut = asyncio.get_running_loop().run_in_executor(common.executor(), produce)
    resp = web.StreamResponse(status=200)
    resp.content_type = "application/x-tar"
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        await common.copy_to_response(resp, rf.read)
    finally:
        rf.close()
        with contextlib.suppress(Exception):
            await fut
    return resp


async def save_many(request: web.Request) -> web.StreamResponse:
    return await _save(request, request.query.getall("names", []))


async def save_one(request: web.Request) -> web.StreamResponse:
    return await _save(request, [request.match_info["name"]])


def setup(app: web.Application, engine: object) -> None:
    add_route(app, "GET", "/images/json", list_)
    add_route(app, "POST", "/images/prune", prune)
    add_route(app, "POST", "/images/load", load)
    add_route(app, "GET", "/images/get", save_many)
    add_route(app, "GET", "/images/{name:.+}/json", inspect)
    add_route(app, "GET", "/images/{name:.+}/history", history)
    add_route(app, "GET", "/images/{name:.+}/get", save_one)
    add_route(app, "POST", "/images/{name:.+}/tag", tag)
    add_route(app, "DELETE", "/images/{name:.+}", remove)


_ = NotFound
