"""Registry client: pull, push and login against any OCI / Docker registry.

- Endpoints: ``docker.io`` is ``registry-1.docker.io``; mirrors (``--registry-mirror``) are tried
  first for docker.io names. Plain HTTP is used for insecure registries: loopback addresses,
  ``localhost`` and those listed in ``insecure``; everything else is HTTPS.
- Auth: on ``401`` the ``WWW-Authenticate`` challenge is parsed; ``Basic`` resends with the
  credentials, ``Bearer`` fetches a token for the scope from the realm (with the credentials, if
  any) and caches it per (registry, scope) until it expires.
- Pull: manifest (an index resolves to the host's platform), then config and layers in parallel,
  each streamed through a verifying ContentStore writer; an interrupted download resumes with
  ``Range`` where it stopped; blobs the store already has are skipped.
- Push: each blob is checked with ``HEAD`` (skipped when present), mounted from another repository
  of the same registry when known, otherwise uploaded with POST + PUT; then the manifest.
- An unreachable registry fails within ``connect_timeout`` seconds with ``Unavailable`` naming it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import platform as _platform
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tugboat.errors import (
    DataCorruption,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TugError,
    Unauthorized,
    Unavailable,
)

ProgressFn = Callable[[dict], None]

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "https://registry-1.docker.io"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
CHUNK = 1 << 20


def short_id(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def host_platform() -> tuple[str, str, str]:
    m = _platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}.get(m, m)
    variant = "v8" if arch == "arm64" else ("v7" if arch == "arm" else "")
    return "linux", arch, variant


def is_insecure_host(host: str, insecure: list[str] | tuple[str, ...] = ()) -> bool:
    """Plain HTTP allowed: loopback (as docker does for localhost) and listed registries/CIDRs."""
    hostname = host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") or "]:" in host else host.strip("[]")
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(hostname)
        if ip.is_loopback:
            return True
    except ValueError:
        ip = None
    for entry in insecure:
        e = entry.strip()
        for prefix in ("http://", "https://"):
            if e.startswith(prefix):
                e = e[len(prefix):]
        e = e.rstrip("/")
        if e in (host, hostname):
            return True
        if ip is not None and "/" in e:
            try:
                if ip in ipaddress.ip_network(e, strict=False):
                    return True
            except ValueError:
                pass
    return False


@dataclass
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``WWW-Authenticate: Bearer realm="…",service="…",scope="…"`` (or ``Basic …``)."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'([A-Za-z_]+)\s*=\s*"((?:[^"\\]|\\.)*)"', rest)}
    for k, v in re.findall(r'([A-Za-z_]+)\s*=\s*([^",\s]+)', rest):
        params.setdefault(k.lower(), v)
    return Challenge(scheme.lower(), params)


@dataclass
class Endpoint:
    """One registry base URL (``http(s)://host[:port]``) and the name the repository has there."""

    registry: str  # the registry's name in references, e.g. docker.io, localhost:5000
    base: str  # http(s)://host:port
    mirror: bool = False


class RegistryClient:
    """Talks to registries. Synchronous wrappers run the async implementation on a private loop."""

    def __init__(
        self,
        *,
        mirrors: list[str] | tuple[str, ...] = (),
        insecure: list[str] | tuple[str, ...] = (),
        endpoints: dict[str, str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        concurrency: int = 3,
        retries: int = 5,
        credentials: Callable[[str], tuple[str, str] | None] | None = None,
        certs_dirs: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        self.certs_dirs = list(certs_dirs if certs_dirs is not None else _default_certs_dirs())
        self._ssl: dict[str, Any] = {}
        self.mirrors = [m.rstrip("/") for m in mirrors]
        self.insecure = list(insecure)
        self.endpoints = dict(endpoints or {})
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.concurrency = concurrency
        self.retries = retries
        self._credentials = credentials
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._auth_schemes: dict[str, Challenge] = {}

    # ---------------- plumbing ----------------
    def _creds_for(self, registry: str, auth: Any) -> tuple[str, str] | None:
        if isinstance(auth, tuple):
            return auth
        if isinstance(auth, dict) and auth.get("username"):
            return auth["username"], auth.get("password", "")
        if self._credentials is not None:
            return self._credentials(registry)
        from tugboat.distribution.credentials import DockerConfig

        return DockerConfig.load().get(registry)

    def endpoints_for(self, registry: str) -> list[Endpoint]:
        out: list[Endpoint] = []
        if registry == DOCKER_HUB:
            out.extend(Endpoint(registry, m, mirror=True) for m in self.mirrors)
        if registry in self.endpoints:
            out.append(Endpoint(registry, self.endpoints[registry].rstrip("/")))
        elif registry == DOCKER_HUB:
            out.append(Endpoint(registry, DOCKER_HUB_ENDPOINT))
        else:
            insecure = is_insecure_host(registry, self.insecure) and self._certs_dir(registry) is None
            out.append(Endpoint(registry, f"{'http' if insecure else 'https'}://{registry}"))
        return out

    def _certs_dir(self, host: str) -> str | None:
        """docker's ``certs.d/<host[:port]>/`` (``ca.crt``, ``client.cert``/``client.key``), if any."""
        for base in self.certs_dirs:
            d = os.path.join(base, host)
            if os.path.isdir(d):
                return d
        return None

    def ssl_for(self, base: str) -> Any:
        """The TLS setting for an endpoint: a context trusting its certs.d CA, or the default."""
        if not base.startswith("https://"):
            return None
        host = base[len("https://"):].split("/", 1)[0]
        if host in self._ssl:
            return self._ssl[host]
        import ssl

        ctx: Any = None
        d = self._certs_dir(host)
        if d is not None:
            ctx = ssl.create_default_context()
            for name in sorted(os.listdir(d)):
                if name.endswith(".crt"):
                    ctx.load_verify_locations(os.path.join(d, name))
            for name in sorted(os.listdir(d)):
                if name.endswith(".cert"):
                    key = os.path.join(d, name[:-5] + ".key")
                    if os.path.exists(key):
                        ctx.load_cert_chain(os.path.join(d, name), key)
        self._ssl[host] = ctx
        return ctx

    def _session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, connect=self.connect_timeout,
                                        sock_read=self.read_timeout)
        conn = aiohttp.TCPConnector(limit=max(8, self.concurrency * 2), ttl_dns_cache=60)
        return aiohttp.ClientSession(timeout=timeout, connector=conn, auto_decompress=False)

    async def _token(self, session: aiohttp.ClientSession, ch: Challenge, scope: str,
                     creds: tuple[str, str] | None) -> str:
        realm = ch.params.get("realm")
        if not realm:
            raise Unauthorized("registry sent a Bearer challenge without a realm")
        who = ""
        if creds:  # the password is part of the key: a wrong one never reuses another login's token
            import hashlib

            who = creds[0] + ":" + hashlib.sha256(creds[1].encode()).hexdigest()
        key = (realm + "|" + ch.params.get("service", "") + "|" + who, scope)
        cached = self._tokens.get(key)
        if cached and cached[1] > time.time() + 10:
            return cached[0]
        params: list[tuple[str, str]] = []
        if ch.params.get("service"):
            params.append(("service", ch.params["service"]))
        for s in scope.split(" "):
            if s:
                params.append(("scope", s))
        headers = {}
        if creds:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        try:
            async with session.get(realm, params=params, headers=headers, ssl=self.ssl_for(realm) or True) as r:
                body = await r.read()
                if r.status == 401:
                    raise Unauthorized(f"{realm}: invalid username or password")
                if r.status >= 400:
                    raise Unauthorized(f"token request to {realm} failed: {r.status} {body[:200]!r}")
        except aiohttp.ClientError as e:
            raise Unavailable(f"token server {realm} is unreachable: {e}") from None
        doc = json.loads(body)
        token = doc.get("token") or doc.get("access_token")
        if not token:
            raise Unauthorized(f"token server {realm} returned no token")
        ttl = int(doc.get("expires_in") or 60)
        self._tokens[key] = (token, time.time() + ttl)
        return token

    async def _request(
        self,
        session: aiohttp.ClientSession,
        ep: Endpoint,
        method: str,
        path: str,
        *,
        scope: str,
        auth: Any = None,
        headers: dict[str, str] | None = None,
        data: Any = None,
        params: dict[str, str] | None = None,
        allow: tuple[int, ...] = (),
    ) -> aiohttp.ClientResponse:
        """One request with auth handled; the caller reads and releases the response."""
        url = path if path.startswith("http") else ep.base + path
        hdrs = dict(headers or {})
        creds = self._creds_for(ep.registry, auth) if not ep.mirror else None
        for attempt in range(3):
            ch = self._auth_schemes.get(ep.base)
            if ch is not None:
                if ch.scheme == "bearer":
                    hdrs["Authorization"] = "Bearer " + await self._token(session, ch, scope, creds)
                elif ch.scheme == "basic" and creds:
                    hdrs["Authorization"] = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            try:
                body = data() if callable(data) else data
                resp = await session.request(method, url, headers=hdrs, data=body, params=params,
                                             allow_redirects=True, ssl=self.ssl_for(ep.base) or True)
            except aiohttp.ClientSSLError as e:
                raise Unavailable(f"registry {ep.registry}: TLS error: {e}") from None
            except (TimeoutError, aiohttp.ClientConnectorError, aiohttp.ServerTimeoutError) as e:
                raise Unavailable(
                    f"registry {ep.registry} ({ep.base}) is unreachable: {e or type(e).__name__}") from None
            except aiohttp.ClientError as e:
                raise Unavailable(f"registry {ep.registry} ({ep.base}): {e or type(e).__name__}") from None
            if resp.status == 401 and attempt < 2:
                ch_new = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                resp.release()
                if ch_new is None:
                    raise Unauthorized(f"registry {ep.registry} requires authentication")
                # compare with the scheme THIS request was sent with: concurrent requests share
                # _auth_schemes, and a sibling may have learnt the challenge meanwhile
                old = ch
                if ch_new.scheme == "basic" and not creds:
                    raise Unauthorized(f"registry {ep.registry} requires authentication: log in first")
                if old is not None and old.scheme == ch_new.scheme and ch_new.scheme == "basic":
                    raise Unauthorized(f"registry {ep.registry}: invalid username or password")
                if old is not None and ch_new.scheme == "bearer" and ch_new.params.get("error") == "insufficient_scope":
                    raise PermissionDenied(
                        f"registry {ep.registry}: access denied for {scope}"
                        + ("" if creds else " (not logged in)"))
                if old is not None and ch_new.scheme == "bearer":
                    # token refused: drop cached ones for this scope and try once more
                    self._tokens = {k: v for k, v in self._tokens.items() if k[1] != scope}
                self._auth_schemes[ep.base] = ch_new
                continue
            if resp.status in (401, 403) and resp.status not in allow:
                text = (await resp.read())[:300].decode(errors="replace")
                resp.release()
                raise (Unauthorized if resp.status == 401 else PermissionDenied)(
                    f"registry {ep.registry}: {resp.status} {_error_message(text)} ({scope})")
            return resp
        raise Unauthorized(f"registry {ep.registry}: authentication failed")

    async def _ping(self, session: aiohttp.ClientSession, ep: Endpoint) -> None:
        try:
            async with session.get(ep.base + "/v2/", ssl=self.ssl_for(ep.base) or True) as r:
                await r.read()
        except aiohttp.ClientSSLError as e:
            raise Unavailable(f"registry {ep.registry}: TLS error: {e}") from None
        except (TimeoutError, aiohttp.ClientError) as e:
            raise Unavailable(f"registry {ep.registry} ({ep.base}) is unreachable: {e or type(e).__name__}") from None

    # ---------------- login ----------------
    async def login_async(self, registry: str, username: str, password: str) -> str:
        from tugboat.distribution.credentials import DOCKER_HUB_KEY

        reg = DOCKER_HUB if registry in (DOCKER_HUB_KEY, "index.docker.io") else registry
        ep = self.endpoints_for(reg)[-1]
        async with self._session() as session:
            try:
                r = await session.get(ep.base + "/v2/", ssl=self.ssl_for(ep.base) or True)
            except (TimeoutError, aiohttp.ClientConnectorError) as e:
                raise Unavailable(f"registry {reg} ({ep.base}) is unreachable: {e}") from None
            ch = parse_challenge(r.headers.get("WWW-Authenticate", ""))
            r.release()
            if r.status != 401 or ch is None:
                return "Login Succeeded"
            creds = (username, password)
            if ch.scheme == "bearer":
                self._tokens.clear()
                await self._token(session, ch, "", creds)
                return "Login Succeeded"
            hdr = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
            async with session.get(ep.base + "/v2/", headers={"Authorization": hdr},
                                   ssl=self.ssl_for(ep.base) or True) as r2:
                if r2.status == 401:
                    raise Unauthorized(f"login to {reg} failed: invalid username or password")
                if r2.status >= 400:
                    raise Unauthorized(f"login to {reg} failed: {r2.status}")
        return "Login Succeeded"

    def login(self, registry: str, username: str, password: str) -> str:
        return _run(self.login_async(registry, username, password))

    # ---------------- pull ----------------
    async def fetch_manifest(self, session: aiohttp.ClientSession, ep: Endpoint, repo: str, ref: str,
                             auth: Any) -> tuple[bytes, str, str]:
        scope = f"repository:{repo}:pull"
        resp = await self._request(session, ep, "GET", f"/v2/{repo}/manifests/{ref}", scope=scope, auth=auth,
                                   headers={"Accept": ACCEPT})
        try:
            body = await resp.read()
            if resp.status == 404:
                raise NotFound(f"manifest for {ep.registry}/{repo}:{ref} not found: manifest unknown")
            if resp.status >= 400:
                raise TugError(f"registry {ep.registry}: GET manifest {repo}:{ref}: {resp.status} "
                               f"{_error_message(body.decode(errors='replace'))}")
            mt = resp.headers.get("Content-Type", "").split(";")[0].strip()
        finally:
            resp.release()
        try:
            doc = json.loads(body)
        except ValueError:
            raise DataCorruption(f"registry {ep.registry} returned a manifest that is not JSON") from None
        mt = doc.get("mediaType") or mt
        import hashlib

        if ref.startswith("sha"):
            alg = ref.split(":", 1)[0]
            got = f"{alg}:{hashlib.new(alg, body).hexdigest()}"
            if got != ref:
                raise DataCorruption(f"manifest digest mismatch: asked for {ref}, got {got}")
            digest = ref
        else:
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        return body, mt, digest

    async def _download(self, session: aiohttp.ClientSession, ep: Endpoint, repo: str, desc: dict, store: Any,
                        auth: Any, progress: ProgressFn | None) -> None:
        digest, size = desc["digest"], int(desc.get("size", -1))
        ident = short_id(digest)
        if store.exists(digest):
            return
        scope = f"repository:{repo}:pull"
        writer = store.writer(expected_digest=digest, expected_size=size if size >= 0 else None)
        with writer:
            attempt = 0
            last_emit = 0.0
            while True:
                headers = {}
                if writer.size:
                    headers["Range"] = f"bytes={writer.size}-"
                try:
                    resp = await self._request(session, ep, "GET", f"/v2/{repo}/blobs/{digest}", scope=scope,
                                               auth=auth, headers=headers)
                    try:
                        if resp.status == 404:
                            raise NotFound(f"blob {digest} not found in {ep.registry}/{repo}")
                        if resp.status >= 400 and resp.status != 416:
                            raise TugError(f"registry {ep.registry}: GET blob {digest}: {resp.status}")
                        if writer.size and resp.status == 200:
                            # server ignored Range: start over
                            writer.abort()
                            writer = store.writer(expected_digest=digest, expected_size=size if size >= 0 else None)
                        loop = asyncio.get_running_loop()
                        pending: list[bytes] = []
                        npend = 0
                        try:
                            async for chunk in resp.content.iter_chunked(CHUNK):
                                pending.append(chunk)
                                npend += len(chunk)
                                if npend >= 2 * CHUNK:
                                    data = b"".join(pending)
                                    pending, npend = [], 0
                                    await loop.run_in_executor(None, writer.write, data)
                                    now = time.monotonic()
                                    if progress and now - last_emit > 0.1:
                                        last_emit = now
                                        _emit(progress, {"status": "Downloading", "id": ident, "progressDetail": {
                                            "current": writer.size, "total": size},
                                            "progress": _bar(writer.size, size)})
                        finally:
                            # keep what arrived before an interruption: the retry asks for the rest
                            if pending:
                                await loop.run_in_executor(None, writer.write, b"".join(pending))
                    finally:
                        resp.release()
                    if size >= 0 and writer.size < size:
                        raise aiohttp.ClientPayloadError(f"short read: {writer.size} of {size} bytes")
                    break
                except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, Unavailable, ConnectionResetError) as e:
                    attempt += 1
                    if attempt > self.retries:
                        raise Unavailable(f"download of {digest} from {ep.registry} failed: {e}") from None
                    _emit(progress, {"status": f"Retrying in {attempt} second{'s' if attempt > 1 else ''}",
                                     "progressDetail": {}, "id": ident})
                    await asyncio.sleep(min(attempt * 0.5, 3))
            _emit(progress, {"status": "Verifying Checksum", "progressDetail": {}, "id": ident})
            try:
                await asyncio.get_running_loop().run_in_executor(None, writer.commit)
            except DataCorruption as e:
                raise DataCorruption(f"blob {digest} from {ep.registry}/{repo}: {e}") from None
        _emit(progress, {"status": "Download complete", "progressDetail": {}, "id": ident})

    async def pull_async(self, images: Any, ref: str, *, auth: Any = None, progress: ProgressFn | None = None,
                         platform: str | None = None) -> Any:
        from tugboat.oci.reference import parse_reference

        r = parse_reference(ref)
        store = _content_store(images)
        tagref = r.digest or r.tag or "latest"
        lease = images.lease() if hasattr(images, "lease") else contextlib.nullcontext()
        with lease:
            return await self._pull_leased(images, r, store, tagref, auth, progress, platform)

    async def _pull_leased(self, images: Any, r: Any, store: Any, tagref: str, auth: Any,
                           progress: ProgressFn | None, platform: str | None) -> Any:
        last_err: Exception | None = None
        before = None
        if hasattr(images, "resolve"):
            try:
                before = await asyncio.get_running_loop().run_in_executor(None, images.resolve, str(r))
            except TugError:
                before = None
        async with self._session() as session:
            for ep in self.endpoints_for(r.domain):
                try:
                    manifest_digest = await self._pull_from(session, ep, r.path, tagref, store, auth, progress,
                                                            platform)
                    break
                except (Unavailable, NotFound, Unauthorized) as e:
                    last_err = e
                    if ep.mirror:
                        continue
                    raise
            else:
                assert last_err is not None
                raise last_err
        _emit(progress, {"status": f"Digest: {manifest_digest}"})
        image = await asyncio.get_running_loop().run_in_executor(None, _register, images, r, manifest_digest)
        same = before is not None and getattr(before, "id", None) == getattr(image, "id", 0)
        _emit(progress, {"status": f"Status: {'Image is up to date' if same else 'Downloaded newer image'} "
                                   f"for {r.familiar}"})
        return image

    async def _pull_from(self, session: aiohttp.ClientSession, ep: Endpoint, repo: str, ref: str, store: Any,
                         auth: Any, progress: ProgressFn | None, platform: str | None) -> str:
        body, mt, top_digest = await self.fetch_manifest(session, ep, repo, ref, auth)
        _emit(progress, {"status": f"Pulling from {repo}", "id": ref})
        docs: list[tuple[bytes, str]] = [(body, top_digest)]
        doc = json.loads(body)
        if mt in INDEX_TYPES or "manifests" in doc:
            child = _pick_platform(doc, platform)
            if child is None:
                raise NotFound(f"no matching manifest for {platform or '/'.join(p for p in host_platform() if p)} "
                               f"in the manifest list entries of {ep.registry}/{repo}:{ref}")
            body2, mt, d2 = await self.fetch_manifest(session, ep, repo, child["digest"], auth)
            docs.append((body2, d2))
            doc = json.loads(body2)
        if "config" not in doc:
            raise InvalidArgument(f"{ep.registry}/{repo}:{ref} is not an image (media type {mt})")
        layers = [d for d in doc.get("layers", []) if not d.get("urls")]
        present = {d["digest"] for d in layers if store.exists(d["digest"])}
        for d in layers:
            _emit(progress, {"status": "Already exists" if d["digest"] in present else "Pulling fs layer",
                             "progressDetail": {}, "id": short_id(d["digest"])})
        sem = asyncio.Semaphore(self.concurrency)

        async def one(d: dict, quiet: bool) -> None:
            async with sem:
                await self._download(session, ep, repo, d, store, auth, None if quiet else progress)

        tasks = [asyncio.ensure_future(one(doc["config"], True))]
        tasks += [asyncio.ensure_future(one(d, False)) for d in layers]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        loop = asyncio.get_running_loop()
        for b, d in docs:
            if not store.exists(d):
                await loop.run_in_executor(None, store.put, b, d)
        await loop.run_in_executor(None, _record_sources, store,
                                   [doc["config"]["digest"], *(d["digest"] for d in layers)], f"{ep.registry}/{repo}")
        for d in layers:
            if d["digest"] not in present:
                _emit(progress, {"status": "Pull complete", "progressDetail": {}, "id": short_id(d["digest"])})
        return top_digest

    async def inspect_async(self, ref: str, *, auth: Any = None) -> dict:
        """docker's ``GET /distribution/{name}/json``: the manifest descriptor and its platforms."""
        from tugboat.oci.reference import parse_reference

        r = parse_reference(ref)
        last: Exception | None = None
        async with self._session() as session:
            for ep in self.endpoints_for(r.domain):
                try:
                    body, mt, digest = await self.fetch_manifest(session, ep, r.path, r.digest or r.tag or "latest",
                                                                 auth)
                    break
                except (Unavailable, NotFound, Unauthorized) as e:
                    last = e
                    if not ep.mirror:
                        raise
            else:
                assert last is not None
                raise last
            doc = json.loads(body)
            platforms: list[dict] = []
            if "manifests" in doc:
                platforms = [m["platform"] for m in doc["manifests"] if isinstance(m.get("platform"), dict)]
            elif isinstance(doc.get("config"), dict):
                cfg_desc = doc["config"]
                resp = await self._request(session, ep, "GET", f"/v2/{r.path}/blobs/{cfg_desc['digest']}",
                                           scope=f"repository:{r.path}:pull", auth=auth)
                try:
                    cfg = json.loads(await resp.read()) if resp.status == 200 else {}
                finally:
                    resp.release()
                p = {k: cfg[k] for k in ("architecture", "os", "variant") if cfg.get(k)}
                if p:
                    platforms = [p]
        return {"Descriptor": {"mediaType": mt, "digest": digest, "size": len(body)}, "Platforms": platforms}

    def pull(self, images: Any, ref: str, *, auth: Any = None, progress: ProgressFn | None = None,
             platform: str | None = None) -> Any:
        return _run(self.pull_async(images, ref, auth=auth, progress=progress, platform=platform))

    # ---------------- push ----------------
    async def push_async(self, images: Any, ref: str, *, auth: Any = None, progress: ProgressFn | None = None,
                         source: str | None = None) -> str:
        """Push the local image ``source`` (default ``ref``) to ``ref``; returns the manifest digest."""
        from tugboat.oci.reference import parse_reference

        r = parse_reference(ref)
        store = _content_store(images)
        loop = asyncio.get_running_loop()
        manifest_bytes, mt = await loop.run_in_executor(None, _local_manifest, images, source or str(r), store)
        doc = json.loads(manifest_bytes)
        ep = self.endpoints_for(r.domain)[-1]
        repo = r.path
        scope = f"repository:{repo}:pull,push"
        _emit(progress, {"status": f"The push refers to repository [{r.name if r.domain != DOCKER_HUB else 'docker.io/' + repo}]"})
        blobs = [doc["config"], *doc.get("layers", [])]
        layers = [d for d in doc.get("layers", []) if not d.get("urls")]
        for d in reversed(layers):
            _emit(progress, {"status": "Preparing", "progressDetail": {}, "id": short_id(d["digest"])})
        sem = asyncio.Semaphore(self.concurrency)
        async with self._session() as session:
            await self._ping(session, ep)  # an unreachable registry fails now, not after upload retries

            async def one(d: dict) -> None:
                async with sem:
                    await self._upload_blob(session, ep, repo, d, store, scope, auth,
                                            progress if d is not doc["config"] else None)

            await asyncio.gather(*[one(d) for d in blobs if not d.get("urls")])
            import hashlib

            digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
            tag = r.tag or digest
            resp = await self._request(session, ep, "PUT", f"/v2/{repo}/manifests/{tag}", scope=scope, auth=auth,
                                       headers={"Content-Type": mt}, data=manifest_bytes)
            try:
                body = await resp.read()
                if resp.status not in (200, 201, 202):
                    raise TugError(f"registry {ep.registry}: manifest upload to {repo}:{tag} failed: "
                                   f"{resp.status} {_error_message(body.decode(errors='replace'))}")
            finally:
                resp.release()
        _emit(progress, {"status": f"{r.tag or 'latest'}: digest: {digest} size: {len(manifest_bytes)}"})
        _emit(progress, {"progressDetail": {}, "aux": {"Tag": r.tag or "", "Digest": digest,
                                                        "Size": len(manifest_bytes)}})
        _remember_source(images, digest, r.name)
        return digest

    async def _upload_blob(self, session: aiohttp.ClientSession, ep: Endpoint, repo: str, d: dict, store: Any,
                           scope: str, auth: Any, progress: ProgressFn | None) -> None:
        """Upload one blob; a connection lost on the way restarts the upload (with back-off)."""
        attempt = 0
        while True:
            try:
                return await self._upload_blob_once(session, ep, repo, d, store, scope, auth, progress)
            except (Unavailable, aiohttp.ClientError, ConnectionResetError) as e:
                attempt += 1
                if attempt > self.retries:
                    raise Unavailable(f"upload of {d['digest']} to {ep.registry} failed: {e}") from None
                _emit(progress, {"status": f"Retrying in {attempt} second{'s' if attempt > 1 else ''}",
                                 "progressDetail": {}, "id": short_id(d["digest"])})
                await asyncio.sleep(min(attempt * 0.5, 3))

    async def _upload_blob_once(self, session: aiohttp.ClientSession, ep: Endpoint, repo: str, d: dict,
                                store: Any, scope: str, auth: Any, progress: ProgressFn | None) -> None:
        digest, ident = d["digest"], short_id(d["digest"])
        resp = await self._request(session, ep, "HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope, auth=auth)
        resp.release()
        if resp.status == 200:
            _emit(progress, {"status": "Layer already exists", "progressDetail": {}, "id": ident})
            return
        params = {}
        mount_from = _known_source(store, digest, ep.registry, repo)
        if mount_from:
            params = {"mount": digest, "from": mount_from}
            scope = f"{scope} repository:{mount_from}:pull"
        resp = await self._request(session, ep, "POST", f"/v2/{repo}/blobs/uploads/", scope=scope, auth=auth,
                                   params=params)
        try:
            await resp.read()
            if resp.status == 201 and mount_from:
                _emit(progress, {"status": f"Mounted from {mount_from}", "progressDetail": {}, "id": ident})
                return
            if resp.status != 202:
                raise TugError(f"registry {ep.registry}: starting an upload to {repo} failed: {resp.status}")
            location = urllib.parse.urljoin(ep.base + "/", resp.headers["Location"])
        finally:
            resp.release()
        path = store.path(digest)
        size = os.path.getsize(path)
        sent = 0
        last = 0.0

        async def body() -> Any:
            nonlocal sent, last
            loop = asyncio.get_running_loop()
            with open(path, "rb") as f:
                while True:
                    chunk = await loop.run_in_executor(None, f.read, 4 * CHUNK)
                    if not chunk:
                        break
                    sent += len(chunk)
                    now = time.monotonic()
                    if progress and now - last > 0.1:
                        last = now
                        _emit(progress, {"status": "Pushing", "id": ident, "progressDetail": {
                            "current": sent, "total": size}, "progress": _bar(sent, size)})
                    yield chunk

        sep = "&" if "?" in location else "?"
        resp = await self._request(session, ep, "PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}",
                                   scope=scope, auth=auth,
                                   headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                                   data=lambda: body())
        try:
            text = await resp.read()
            if resp.status not in (201, 204):
                raise TugError(f"registry {ep.registry}: upload of {digest} failed: {resp.status} "
                               f"{_error_message(text.decode(errors='replace'))}")
        finally:
            resp.release()
        _emit(progress, {"status": "Pushed", "progressDetail": {}, "id": ident})

    def push(self, images: Any, ref: str, *, auth: Any = None, progress: ProgressFn | None = None,
             source: str | None = None) -> str:
        return _run(self.push_async(images, ref, auth=auth, progress=progress, source=source))


# ---------------- helpers ----------------
def _default_certs_dirs() -> list[str]:
    dirs = ["/etc/docker/certs.d", "/etc/tugboat/certs.d"]
    from tugboat.distribution.credentials import config_dir

    dirs.append(os.path.join(config_dir(), "certs.d"))
    return dirs



def _emit(progress: ProgressFn | None, ev: dict) -> None:
    if progress is not None:
        progress(ev)


def _bar(cur: int, total: int) -> str:
    if total <= 0:
        return ""
    width = 50
    n = min(width, int(width * cur / total))
    return "[" + "=" * max(n - 1, 0) + (">" if n else "") + " " * (width - n) + f"] {_human(cur)}/{_human(total)}"


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}TB"


def _error_message(text: str) -> str:
    try:
        doc = json.loads(text)
        errs = doc.get("errors") or []
        if errs:
            return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errs)
        if doc.get("message"):
            return str(doc["message"])
    except (ValueError, AttributeError):
        pass
    return text.strip()[:200]


def _pick_platform(index: dict, platform: str | None) -> dict | None:
    if platform:
        parts = platform.split("/")
        want = (parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")
    else:
        want = host_platform()
    best = None
    for m in index.get("manifests", []):
        p = m.get("platform") or {}
        variant_ok = not want[2] or p.get("variant", "") in ("", want[2])
        if (p.get("os") == want[0] and p.get("architecture") == want[1] and variant_ok
                and (best is None or p.get("variant", "") == want[2])):
            best = m
    return best


def _content_store(images: Any) -> Any:
    for attr in ("content", "store", "content_store"):
        s = getattr(images, attr, None)
        if s is not None and hasattr(s, "writer"):
            return s
    if hasattr(images, "writer") and hasattr(images, "exists"):
        return images  # a bare ContentStore
    raise InvalidArgument("image service has no content store")


def _register(images: Any, ref: Any, manifest_digest: str) -> Any:
    """Hand the pulled manifest to the image service: ``register(ref, digest)`` records the name
    and unpacks the layers; the pulled digest becomes a repo digest (``name@sha256:…``)."""
    fn = getattr(images, "register", None)
    if fn is None:
        return manifest_digest  # a bare ContentStore: the blobs are in, nothing else to record
    image = fn(str(ref), manifest_digest)
    add = getattr(images, "add_repo_digest", None)
    image_id = getattr(image, "id", None)
    if add is not None and image_id:
        add(image_id, f"{ref.name}@{manifest_digest}")
        image = images.resolve(image_id)
    return image


def _local_manifest(images: Any, ref: str, store: Any) -> tuple[bytes, str]:
    """The exact manifest bytes of a local image and their media type."""
    if hasattr(images, "resolve"):
        img = images.resolve(ref)
        digest = getattr(img, "manifest_digest", None)
        if digest and store.exists(digest):
            data = store.read(digest)
            doc = json.loads(data)
            if "manifests" in doc:
                child = _pick_platform(doc, None)
                if child is not None and store.exists(child["digest"]):
                    data = store.read(child["digest"])
                    doc = json.loads(data)
            return data, doc.get("mediaType") or OCI_MANIFEST
        m = getattr(img, "manifest", None)
        if m:
            data = json.dumps(m, separators=(",", ":")).encode()
            return data, m.get("mediaType") or OCI_MANIFEST
        raise NotFound(f"No such image: {ref}")
    raise InvalidArgument("image service cannot resolve references")


_SOURCES_LOCK = threading.Lock()


def _sources_path(store: Any) -> str | None:
    root = getattr(store, "root", None)
    return os.path.join(root, "..", "distribution-sources.json") if root else None


def _remember_source(images: Any, manifest_digest: str, repo_name: str) -> None:
    """Remember which repository a pushed manifest's blobs now live in (for cross-repo mounts)."""
    try:
        store = _content_store(images)
        doc = json.loads(store.read(manifest_digest) if store.exists(manifest_digest) else b"{}")
    except (TugError, ValueError, OSError):
        return
    digests = [d["digest"] for d in [doc.get("config") or {}, *doc.get("layers", [])] if d.get("digest")]
    _record_sources(store, digests, repo_name)


def _record_sources(store: Any, digests: list[str], repo_name: str) -> None:
    path = _sources_path(store)
    if not path:
        return
    with _SOURCES_LOCK:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = {}
        for d in digests:
            lst = data.setdefault(d, [])
            if repo_name not in lst:
                lst.append(repo_name)
                del lst[:-5]
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.rename(tmp, path)
        except OSError:
            pass


def _known_source(store: Any, digest: str, registry: str, repo: str) -> str | None:
    path = _sources_path(store)
    if not path:
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    for name in data.get(digest, []):
        reg, _, other = name.partition("/")
        if reg == registry and other != repo:
            return other
    return None


def _run(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code (also from inside a running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as e:
            error.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]
