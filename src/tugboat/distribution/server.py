"""The registry server: the OCI distribution spec v1.1 on aiohttp.

``make_app(root, ...)`` returns an ``aiohttp.web.Application`` serving ``/v2/``; ``tug registry
serve`` runs it. Storage is :class:`tugboat.distribution.storage.RegistryStorage` (blobs once for
all repositories in a tugboat ContentStore, uploads verified then renamed into place).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tugboat.distribution import manifest as mf
from tugboat.distribution.auth import (
    DEFAULT_SERVICE,
    AuthFailure,
    Authorizer,
    BasicAuthorizer,
    Htpasswd,
    Scope,
    TokenAuthorizer,
    TokenIssuer,
    parse_basic,
    parse_scopes,
)
from tugboat.distribution.storage import (
    TAG_RE,
    DigestError,
    RegistryStorage,
    Upload,
    parse_digest,
    valid_name,
)
from tugboat.errors import TugError

log = logging.getLogger("tugboat.registry")

MAX_MANIFEST = 4 * 1024 * 1024
CHUNK_FLUSH = 4 * 1024 * 1024
STORAGE: web.AppKey[RegistryStorage] = web.AppKey("storage", RegistryStorage)
AUTH: web.AppKey[Authorizer] = web.AppKey("auth", Authorizer)

_ROUTES = [
    ("upload", re.compile(r"^(?P<name>.+)/blobs/uploads/(?P<uuid>[^/]+)$")),
    ("uploads", re.compile(r"^(?P<name>.+)/blobs/uploads/?$")),
    ("blob", re.compile(r"^(?P<name>.+)/blobs/(?P<digest>[^/]+)$")),
    ("manifest", re.compile(r"^(?P<name>.+)/manifests/(?P<ref>[^/]+)$")),
    ("tags", re.compile(r"^(?P<name>.+)/tags/list$")),
    ("referrers", re.compile(r"^(?P<name>.+)/referrers/(?P<digest>[^/]+)$")),
]

MESSAGES = {
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "MANIFEST_BLOB_UNKNOWN": "manifest references a manifest or blob unknown to registry",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_UNKNOWN": "manifest unknown to registry",
    "NAME_INVALID": "invalid repository name",
    "NAME_UNKNOWN": "repository name not known to registry",
    "SIZE_INVALID": "provided length did not match content length",
    "UNAUTHORIZED": "authentication required",
    "DENIED": "requested access to the resource is denied",
    "UNSUPPORTED": "the operation is unsupported",
    "TOOMANYREQUESTS": "too many requests",
    "RANGE_INVALID": "invalid content range",
}


class RegistryError(Exception):
    def __init__(self, status: int, code: str, message: str | None = None, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message or MESSAGES.get(code, code))
        self.status = status
        self.code = code
        self.message = message or MESSAGES.get(code, code)
        self.detail = detail
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, detail: Any = None,
                   headers: dict[str, str] | None = None, method: str = "GET") -> web.Response:
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    h = {"Docker-Distribution-API-Version": "registry/2.0", **(headers or {})}
    if method == "HEAD":
        return web.Response(status=status, headers=h)
    return web.json_response(body, status=status, headers=h)


def _executor(request: web.Request) -> Callable[..., Awaitable[Any]]:
    loop = asyncio.get_running_loop()

    def run(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return loop.run_in_executor(None, fn, *args)

    return run


def _check_digest(digest: str) -> tuple[str, str]:
    try:
        return parse_digest(digest)
    except DigestError as e:
        raise RegistryError(400, "UNSUPPORTED" if e.unsupported else "DIGEST_INVALID", str(e)) from None


def _upload_headers(name: str, up: Upload) -> dict[str, str]:
    return {
        "Location": f"/v2/{name}/blobs/uploads/{up.id}",
        "Range": f"0-{max(up.offset - 1, 0)}",
        "Docker-Upload-UUID": up.id,
        "OCI-Chunk-Min-Length": "0",
    }


class Registry:
    """Request handlers; one per application."""

    def __init__(self, storage: RegistryStorage, authorizer: Authorizer, *, max_manifest: int = MAX_MANIFEST,
                 read_only: bool = False, allow_sparse: bool = False) -> None:
        self.allow_sparse = allow_sparse
        self.s = storage
        self.auth = authorizer
        self.max_manifest = max_manifest
        self.read_only = read_only
        self.locks: dict[str, asyncio.Lock] = {}

    def lock(self, key: str) -> asyncio.Lock:
        lk = self.locks.get(key)
        if lk is None:
            lk = self.locks[key] = asyncio.Lock()
        return lk

    # ---- dispatch ----
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        method = request.method
        try:
            if tail == "":
                self._authorize(request, [])
                return web.json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})
            if tail == "_catalog":
                self._authorize(request, [Scope("registry", "catalog", {"*"})])
                return await self.catalog(request)
            for kind, rx in _ROUTES:
                m = rx.match(tail)
                if m is None:
                    continue
                name = m.group("name")
                if not valid_name(name):
                    raise RegistryError(400, "NAME_INVALID", f"invalid repository name {name!r}", {"name": name})
                actions = {"GET": {"pull"}, "HEAD": {"pull"}, "DELETE": {"delete"}}.get(method, {"push", "pull"})
                scopes = [Scope("repository", name, actions)]
                if kind == "uploads" and method == "POST" and request.query.get("from"):
                    src = request.query["from"]
                    if valid_name(src) and src != name:
                        scopes.append(Scope("repository", src, {"pull"}))
                self._authorize(request, scopes)
                handler = getattr(self, f"{kind}_{method.lower()}", None)
                if handler is None:
                    raise RegistryError(405, "UNSUPPORTED", f"{method} is not supported on {kind}")
                if self.read_only and method in ("POST", "PUT", "PATCH", "DELETE"):
                    raise RegistryError(405, "UNSUPPORTED", "the registry is read-only")
                return await handler(request, **m.groupdict())
            raise RegistryError(404, "NAME_UNKNOWN", f"no route for {request.path}")
        except RegistryError as e:
            return error_response(e.status, e.code, e.message, e.detail, e.headers, method)
        except AuthFailure as e:
            h = {"WWW-Authenticate": e.challenge} if e.challenge else {}
            return error_response(e.status, e.code, str(e), None, h, method)
        except TugError as e:
            code = {400: "UNSUPPORTED", 404: "BLOB_UNKNOWN"}.get(e.http_status, "UNKNOWN")
            return error_response(e.http_status if 400 <= e.http_status < 600 else 500, code, e.message,
                                  method=method)
        except Exception as e:
            if request.transport is None or request.transport.is_closing():
                raise  # the client is gone (dropped upload): nothing to answer
            log.exception("registry: %s %s failed", method, request.path)
            return error_response(500, "UNKNOWN", f"internal error: {type(e).__name__}: {e}", method=method)

    def _authorize(self, request: web.Request, scopes: list[Scope]) -> None:
        self.auth.check(request.headers, scopes)

    # ---- blobs ----
    async def _blob_in_repo(self, request: web.Request, name: str, digest: str) -> str:
        _check_digest(digest)
        run = _executor(request)
        if not await run(self.s.blob_linked, name, digest):
            raise RegistryError(404, "BLOB_UNKNOWN", f"blob {digest} not found in {name}", {"digest": digest})
        return self.s.blob_path(digest)

    async def blob_head(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        path = await self._blob_in_repo(request, name, digest)
        size = os.stat(path).st_size
        return web.Response(status=200, headers={
            "Content-Length": str(size), "Docker-Content-Digest": digest,
            "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
        })

    async def blob_get(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        path = await self._blob_in_repo(request, name, digest)
        size = os.stat(path).st_size
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream",
                   "Accept-Ranges": "bytes", "Cache-Control": "max-age=31536000"}
        rng = request.headers.get("Range")
        if rng:
            parsed = _parse_range(rng, size)
            if parsed is None:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        return web.FileResponse(path, chunk_size=1 << 20, headers=headers)

    async def blob_delete(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        _check_digest(digest)
        if not await _executor(request)(self.s.unlink_blob, name, digest):
            raise RegistryError(404, "BLOB_UNKNOWN", f"blob {digest} not found in {name}", {"digest": digest})
        return web.Response(status=202, headers={"Content-Length": "0"})

    # ---- uploads ----
    async def uploads_post(self, request: web.Request, name: str) -> web.StreamResponse:
        run = _executor(request)
        q = request.query
        mount = q.get("mount")
        if mount:
            _check_digest(mount)
            src = q.get("from")
            ok = False
            if src and valid_name(src):
                ok = await run(self.s.blob_linked, src, mount)
            elif not src:
                ok = await run(self.s.blob_exists, mount)  # anonymous mount: any repository's blob
            if ok:
                await run(self.s.link_blob, name, mount)
                return web.Response(status=201, headers={
                    "Location": f"/v2/{name}/blobs/{mount}", "Docker-Content-Digest": mount, "Content-Length": "0"})
        digest = q.get("digest")
        up = await run(self.s.new_upload, name)
        if digest is not None:
            _check_digest(digest)
            try:
                await self._receive(request, up, None)
                await self._finish(request, up, digest)
            except BaseException:
                await run(self.s.drop_upload, up)
                raise
            return web.Response(status=201, headers={
                "Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest, "Content-Length": "0"})
        return web.Response(status=202, headers={**_upload_headers(name, up), "Content-Length": "0"})

    async def _get_upload(self, request: web.Request, name: str, uuid: str) -> Upload:
        up = await _executor(request)(self.s.get_upload, name, uuid)
        if up is None:
            raise RegistryError(404, "BLOB_UPLOAD_UNKNOWN", f"upload {uuid} not found", {"uuid": uuid})
        return up

    async def upload_get(self, request: web.Request, name: str, uuid: str) -> web.StreamResponse:
        up = await self._get_upload(request, name, uuid)
        return web.Response(status=204, headers=_upload_headers(name, up))

    async def upload_delete(self, request: web.Request, name: str, uuid: str) -> web.StreamResponse:
        up = await self._get_upload(request, name, uuid)
        async with self.lock(up.id):
            await _executor(request)(self.s.drop_upload, up)
        return web.Response(status=204)

    def _content_range(self, request: web.Request, up: Upload) -> None:
        cr = request.headers.get("Content-Range")
        if not cr:
            return
        m = re.fullmatch(r"\s*(?:bytes[ =])?(\d+)-(\d+)(?:/(\d+|\*))?\s*", cr)
        if m is None:
            raise RegistryError(416, "BLOB_UPLOAD_INVALID", f"invalid Content-Range {cr!r}",
                                headers=_upload_headers(up.name, up))
        start, end = int(m.group(1)), int(m.group(2))
        clen = request.content_length
        if start != up.offset or end < start or (clen is not None and end - start + 1 != clen):
            raise RegistryError(416, "BLOB_UPLOAD_INVALID",
                                f"chunk {start}-{end} does not continue the upload at offset {up.offset}",
                                headers=_upload_headers(up.name, up))

    async def upload_patch(self, request: web.Request, name: str, uuid: str) -> web.StreamResponse:
        up = await self._get_upload(request, name, uuid)
        async with self.lock(up.id):
            self._content_range(request, up)
            await self._receive(request, up, None)
        return web.Response(status=202, headers={**_upload_headers(name, up), "Content-Length": "0"})

    async def upload_put(self, request: web.Request, name: str, uuid: str) -> web.StreamResponse:
        up = await self._get_upload(request, name, uuid)
        digest = request.query.get("digest")
        if not digest:
            raise RegistryError(400, "DIGEST_INVALID", "the digest query parameter is required")
        _check_digest(digest)
        async with self.lock(up.id):
            if request.content_length or request.headers.get("Content-Range"):
                self._content_range(request, up)
            await self._receive(request, up, None)
            await self._finish(request, up, digest)
        return web.Response(status=201, headers={
            "Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest, "Content-Length": "0"})

    async def _finish(self, request: web.Request, up: Upload, digest: str) -> None:
        try:
            await _executor(request)(self.s.finish_upload, up, digest)
        except DigestError as e:
            raise RegistryError(400, "DIGEST_INVALID", str(e), {"digest": digest}) from None

    async def _receive(self, request: web.Request, up: Upload, limit: int | None) -> None:
        """Append the request body to the upload; on any failure roll back to where it was."""
        if not request.can_read_body:
            return
        run = _executor(request)
        start = up.offset
        hasher = await run(self.s.upload_hasher, up)
        saved = hasher.copy()
        f = await run(open, up.path, "r+b")
        try:
            f.seek(start)

            def write(data: bytes) -> None:
                hasher.update(data)
                f.write(data)

            buf: list[bytes] = []
            n = 0
            pending: asyncio.Future[Any] | None = None  # hash+write of the previous batch, overlapping reads
            try:
                async for chunk in request.content.iter_any():
                    buf.append(chunk)
                    n += len(chunk)
                    if n >= CHUNK_FLUSH:
                        data = b"".join(buf)
                        buf, n = [], 0
                        if pending is not None:
                            await pending
                        pending = run(write, data)
                        up.offset += len(data)
            finally:
                if pending is not None:
                    await asyncio.shield(pending)
            if buf:
                data = b"".join(buf)
                await run(write, data)
                up.offset += len(data)
            await run(f.flush)
            clen = request.content_length
            if clen is not None and up.offset - start != clen:
                raise RegistryError(400, "SIZE_INVALID", f"received {up.offset - start} bytes, expected {clen}")
        except BaseException:
            # a dropped connection or a bad chunk: nothing of this request stays
            with contextlib.suppress(OSError):
                f.truncate(start)
            up.offset = start
            up.hasher = saved
            raise
        finally:
            f.close()

    # ---- manifests ----
    async def _resolve(self, request: web.Request, name: str, ref: str) -> tuple[str, str]:
        run = _executor(request)
        if ":" in ref:
            _check_digest(ref)
            digest = ref
        else:
            if not TAG_RE.match(ref):
                raise RegistryError(400, "TAG_INVALID", f"invalid tag {ref!r}")
            d = await run(self.s.resolve_tag, name, ref)
            if d is None:
                code = "MANIFEST_UNKNOWN" if await run(self.s.repo_exists, name) else "NAME_UNKNOWN"
                raise RegistryError(404, code, f"manifest {ref!r} not found in {name}", {"tag": ref})
            digest = d
        mt = await run(self.s.manifest_media_type, name, digest)
        if mt is None or not await run(self.s.blob_exists, digest):
            raise RegistryError(404, "MANIFEST_UNKNOWN", f"manifest {ref} not found in {name}", {"digest": digest})
        return digest, mt

    async def manifest_head(self, request: web.Request, name: str, ref: str) -> web.StreamResponse:
        digest, mt = await self._resolve(request, name, ref)
        size = self.s.blob_size(digest)
        return web.Response(status=200, headers={
            "Content-Type": mt, "Content-Length": str(size), "Docker-Content-Digest": digest})

    async def manifest_get(self, request: web.Request, name: str, ref: str) -> web.StreamResponse:
        digest, mt = await self._resolve(request, name, ref)
        data = await _executor(request)(self.s.read_blob, digest)
        return web.Response(body=data, status=200, headers={
            "Content-Type": mt, "Docker-Content-Digest": digest})

    async def manifest_put(self, request: web.Request, name: str, ref: str) -> web.StreamResponse:
        run = _executor(request)
        if request.content_length is not None and request.content_length > self.max_manifest:
            raise RegistryError(413, "SIZE_INVALID", f"manifest is larger than {self.max_manifest} bytes")
        data = bytearray()
        async for chunk in request.content.iter_any():
            data += chunk
            if len(data) > self.max_manifest:
                raise RegistryError(413, "SIZE_INVALID", f"manifest is larger than {self.max_manifest} bytes")
        body = bytes(data)
        tags = [t for t in request.query.getall("tag", [])]
        if ":" in ref:
            alg, _ = _check_digest(ref)
            digest = mf_digest(body, alg)
            if digest != ref:
                raise RegistryError(400, "DIGEST_INVALID", f"manifest hashes to {digest}, not {ref}", {"digest": ref})
        else:
            if not TAG_RE.match(ref):
                raise RegistryError(400, "TAG_INVALID", f"invalid tag {ref!r}", {"tag": ref})
            digest = mf_digest(body, "sha256")
            tags.insert(0, ref)
        for t in tags:
            if not TAG_RE.match(t):
                raise RegistryError(400, "TAG_INVALID", f"invalid tag {t!r}", {"tag": t})
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise RegistryError(400, "MANIFEST_INVALID", f"manifest is not valid JSON: {e}") from None
        try:
            if not isinstance(doc, dict):
                raise mf.ManifestError("MANIFEST_INVALID", "manifest is not a JSON object")
            mt = mf.media_type_of(doc, request.headers.get("Content-Type"))
            mf.check_shape(doc, mt)
            blobs, manifests = mf.required_blobs(doc, mt)
        except mf.ManifestError as e:
            raise RegistryError(400, e.code, str(e), e.detail) from None
        for d in [*blobs, *manifests]:
            try:
                parse_digest(d)
            except DigestError as e:
                raise RegistryError(400, "MANIFEST_INVALID", f"bad digest in manifest: {e}", {"digest": d}) from None

        def missing() -> list[str]:
            out = [d for d in blobs if not self.s.blob_linked(name, d)]
            out += [d for d in manifests if self.s.manifest_media_type(name, d) is None]
            return out

        absent = [] if self.allow_sparse else await run(missing)
        if absent:
            raise RegistryError(400, "MANIFEST_BLOB_UNKNOWN", f"manifest references unknown blobs: {', '.join(absent)}",
                                {"digest": absent[0]})
        headers = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest,
                   "Content-Length": "0"}
        subject = doc.get("subject") if isinstance(doc.get("subject"), dict) else None

        def store() -> None:
            self.s.put_manifest(name, body, digest, mt)
            if subject:
                self.s.add_referrer(name, subject["digest"], digest, mf.referrer_descriptor(doc, mt, digest, len(body)))
            for t in tags:
                self.s.tag(name, t, digest)

        if subject:
            try:
                parse_digest(subject["digest"])
            except DigestError as e:
                raise RegistryError(400, "MANIFEST_INVALID", f"bad subject digest: {e}") from None
            headers["OCI-Subject"] = subject["digest"]
        await run(store)
        resp = web.Response(status=201, headers=headers)
        extra = [t for t in tags if t != ref]
        if extra:
            resp.headers["OCI-Tag"] = ", ".join(extra)
        return resp

    async def manifest_delete(self, request: web.Request, name: str, ref: str) -> web.StreamResponse:
        run = _executor(request)
        if ":" in ref:
            _check_digest(ref)
            if not await run(self.s.delete_manifest, name, ref):
                raise RegistryError(404, "MANIFEST_UNKNOWN", f"manifest {ref} not found in {name}", {"digest": ref})
        else:
            if not TAG_RE.match(ref):
                raise RegistryError(400, "TAG_INVALID", f"invalid tag {ref!r}")
            if not await run(self.s.delete_tag, name, ref):
                raise RegistryError(404, "MANIFEST_UNKNOWN", f"tag {ref} not found in {name}", {"tag": ref})
        return web.Response(status=202, headers={"Content-Length": "0"})

    # ---- discovery ----
    async def tags_get(self, request: web.Request, name: str) -> web.StreamResponse:
        run = _executor(request)
        if not await run(self.s.repo_exists, name):
            raise RegistryError(404, "NAME_UNKNOWN", f"repository {name} not found", {"name": name})
        tags = await run(self.s.list_tags, name)
        page, link = _paginate(request, tags, f"/v2/{name}/tags/list")
        headers = {"Link": link} if link else {}
        return web.json_response({"name": name, "tags": page}, headers=headers)

    async def catalog(self, request: web.Request) -> web.StreamResponse:
        repos = await _executor(request)(self.s.catalog)
        page, link = _paginate(request, repos, "/v2/_catalog")
        headers = {"Link": link} if link else {}
        return web.json_response({"repositories": page}, headers=headers)

    async def referrers_get(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        _check_digest(digest)
        refs = await _executor(request)(self.s.referrers, name, digest)
        headers = {}
        at = request.query.get("artifactType")
        if at:
            refs = [r for r in refs if r.get("artifactType") == at]
            headers["OCI-Filters-Applied"] = "artifactType"
        body = {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": refs}
        return web.Response(body=json.dumps(body).encode(), content_type=mf.OCI_INDEX, headers=headers)


def mf_digest(body: bytes, alg: str) -> str:
    return f"{alg}:{hashlib.new(alg, body).hexdigest()}"


def _paginate(request: web.Request, items: list[str], path: str) -> tuple[list[str], str | None]:
    last = request.query.get("last")
    if last:
        items = [i for i in items if i > last]
    n_s = request.query.get("n")
    if n_s is None or n_s == "":
        return items, None
    try:
        n = int(n_s)
    except ValueError:
        raise RegistryError(400, "PAGINATION_NUMBER_INVALID", f"invalid n={n_s!r}") from None
    if n < 0:
        raise RegistryError(400, "PAGINATION_NUMBER_INVALID", f"invalid n={n_s!r}")
    page = items[:n]
    link = None
    if len(items) > n and page:
        link = f'<{path}?n={n}&last={urllib.parse.quote(page[-1], safe="")}>; rel="next"'
    return page, link


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if m is None or (m.group(1) == "" and m.group(2) == ""):
        return None
    a, b = m.group(1), m.group(2)
    if a == "":
        n = int(b)
        if n == 0 or size == 0:
            return None
        return max(size - n, 0), size - 1
    start = int(a)
    end = int(b) if b else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


# ---- token endpoint ----
class TokenEndpoint:
    def __init__(self, issuer: TokenIssuer, htpasswd: Htpasswd | None, anonymous_pull: bool = False) -> None:
        self.issuer = issuer
        self.htpasswd = htpasswd
        self.anonymous_pull = anonymous_pull

    def _grant(self, user: str | None, scopes: list[Scope]) -> list[Scope]:
        out = []
        for s in scopes:
            if user is not None:
                allowed = {"pull", "push", "delete", "*"}
            elif self.anonymous_pull:
                allowed = {"pull"}
            else:
                allowed = set()
            got = s.actions & allowed
            if got:
                out.append(Scope(s.type, s.name, got))
        return out

    async def handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        user: str | None = None
        if request.method == "POST":
            form = await request.post()
            scopes = parse_scopes([str(v) for v in form.getall("scope", [])])
            if form.get("grant_type") == "password":
                creds: tuple[str, str] | None = (str(form.get("username", "")), str(form.get("password", "")))
            else:
                creds = parse_basic(request.headers.get("Authorization"))
        else:
            scopes = parse_scopes(request.query.getall("scope", []))
            creds = parse_basic(request.headers.get("Authorization"))
        if creds is not None:
            ok = self.htpasswd is not None and await loop.run_in_executor(None, self.htpasswd.verify, *creds)
            if not ok:
                return error_response(401, "UNAUTHORIZED", "invalid username or password",
                                      headers={"WWW-Authenticate": f'Basic realm="{self.issuer.service}"'})
            user = creds[0]
        elif not self.anonymous_pull and self.htpasswd is not None and not scopes:
            return error_response(401, "UNAUTHORIZED", "authentication required",
                                  headers={"WWW-Authenticate": f'Basic realm="{self.issuer.service}"'})
        grants = self._grant(user, scopes)
        token, ttl = self.issuer.issue(user or "", grants)
        import datetime

        issued = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({"token": token, "access_token": token, "expires_in": ttl, "issued_at": issued})


def make_app(
    root: str,
    *,
    htpasswd: str | None = None,
    token_realm: str | None = None,
    token_issuer: str = "tugboat",
    token_service: str = DEFAULT_SERVICE,
    anonymous_pull: bool = False,
    max_manifest: int = MAX_MANIFEST,
    read_only: bool = False,
    allow_sparse: bool = False,
) -> web.Application:
    """The registry application. ``token_realm`` turns on bearer tokens (served at ``/token``);
    ``allow_sparse`` accepts manifests naming blobs or child manifests the registry does not have
    (mirrors of partial multi-platform images); by default they get MANIFEST_BLOB_UNKNOWN."""
    storage = RegistryStorage(root)
    hp = Htpasswd(htpasswd) if htpasswd else None
    authorizer: Authorizer
    app = web.Application(client_max_size=max_manifest + 1024)
    if token_realm:
        issuer = TokenIssuer.from_root(storage.root, issuer=token_issuer, service=token_service)
        authorizer = TokenAuthorizer(issuer, token_realm)
        ep = TokenEndpoint(issuer, hp, anonymous_pull)
        path = urllib.parse.urlparse(token_realm).path or "/token"
        app.router.add_route("GET", path, ep.handle)
        app.router.add_route("POST", path, ep.handle)
    elif hp is not None:
        authorizer = BasicAuthorizer(hp, token_service)
    else:
        authorizer = Authorizer()
    reg = Registry(storage, authorizer, max_manifest=max_manifest, read_only=read_only, allow_sparse=allow_sparse)
    app[STORAGE] = storage
    app[AUTH] = authorizer
    app.router.add_route("*", "/v2/{tail:.*}", reg.dispatch)
    app.router.add_route("*", "/v2", reg.dispatch)
    return app


def ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def serve(app: web.Application, host: str, port: int, ssl_ctx: ssl.SSLContext | None = None,
                ready: Callable[[int], None] | None = None) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx, backlog=512)
    await site.start()
    actual = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        actual = server.sockets[0].getsockname()[1]
    if ready:
        ready(actual)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
