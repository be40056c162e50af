"""An async Kubernetes REST client on aiohttp: CRUD, patch, subresources and watch streams.

Objects are plain dicts (the JSON the API server sends), decoded with msgspec for speed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
import msgspec

from tugboat.cluster.client.kubeconfig import KubeConfig, load_kubeconfig
from tugboat.cluster.client.resources import Resource
from tugboat.errors import Conflict, NotFound, TugError, Unavailable, describe

log = logging.getLogger(__name__)
T = TypeVar("T")

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSONPATCH = "application/json-patch+json"


class ApiError(TugError):
    """An error Status from the API server (``code``, ``reason``); ``request`` is the verb and path
    that got it (set by :meth:`ApiClient.request`)."""

    def __init__(self, code: int, reason: str, message: str, body: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = code
        self.reason = reason
        self.body = body or {}
        self.request = ""


class RequestFailed(TugError):
    """A request that got no answer: the connection failed or broke, or the answer did not come in
    time. Names the request (``request`` = verb and path) and the server; ``__cause__`` is the
    transport's own error."""

    http_status = 503

    def __init__(self, request: str, server: str, what: str) -> None:
        super().__init__(f"{request} to the API server {server}: {what}")
        self.request = request
        self.server = server


class ApiTimeout(RequestFailed, TimeoutError):
    """No answer within the request's timeout (still a ``TimeoutError`` to code that catches those)."""

    http_status = 504


class ApiConnectionError(RequestFailed, ConnectionError):
    """The connection could not be made or broke (still a ``ConnectionError``/``OSError``)."""


# answers worth another try: the server is starting, overloaded or briefly unable to answer
TRANSIENT_CODES = frozenset({429, 500, 502, 503, 504})


def transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed when tried again (timeouts, connection errors, 5xx, 429)."""
    if isinstance(exc, ApiError):
        return exc.code in TRANSIENT_CODES
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return False
    return isinstance(exc, (RequestFailed, TimeoutError, ConnectionError, aiohttp.ClientError))


def failure(exc: BaseException) -> str:
    """An error of a request, for a person: type, message and the request (verb and path)."""
    text = describe(exc)
    req = getattr(exc, "request", "")
    if isinstance(exc, ApiError):
        text = f"{type(exc).__name__} {exc.code}{' ' + exc.reason if exc.reason else ''}: {exc}"
        if req:
            text = f"{req}: {text}"
    elif isinstance(exc, RequestFailed):
        text = f"{type(exc).__name__}: {exc}"
    return text


async def retry(what: str, fn: Callable[[], Awaitable[T]], *, deadline: float, first_delay: float = 0.2,
                max_delay: float = 5.0) -> T:
    """``await fn()`` until it succeeds, retrying transient failures (see :func:`transient`) with
    jittered exponential back-off until ``deadline`` (``time.monotonic()``); other errors go through
    at once. Past the deadline: :class:`~tugboat.errors.Unavailable` naming ``what``, the attempts,
    and the last failure with its type and request."""
    delay, attempt, start = first_delay, 0, time.monotonic()
    while True:
        attempt += 1
        try:
            return await fn()
        except Exception as e:
            if not transient(e):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(f"{what}: still failing after {attempt} attempt{'s' if attempt > 1 else ''} "
                                  f"in {time.monotonic() - start:.0f}s; the last: {failure(e)}") from e
            pause = min(left, delay * random.uniform(0.5, 1.0))
            log.warning("%s: %s; trying again in %.1fs", what, failure(e), pause)
            await asyncio.sleep(pause)
            delay = min(max_delay, delay * 2)


class NotFoundError(ApiError, NotFound):
    pass


class ConflictError(ApiError, Conflict):
    """409: ``reason`` is ``Conflict`` (stale resourceVersion) or ``AlreadyExists``."""


class GoneError(ApiError):
    """410: the resourceVersion asked for is too old (relist)."""


def _error(code: int, body: bytes) -> ApiError:
    try:
        st = _decode(body)
        if not isinstance(st, dict):
            raise ValueError
    except Exception:
        st = {"message": body.decode(errors="replace")[:500] or f"HTTP {code}"}
    reason = st.get("reason") or ""
    msg = st.get("message") or f"HTTP {code} {reason}"
    cls = {404: NotFoundError, 409: ConflictError, 410: GoneError}.get(code, ApiError)
    return cls(code, reason, msg, st)


class ApiClient:
    """Talks to one API server. Create inside a running event loop; ``await close()`` at the end."""

    def __init__(self, config: KubeConfig, *, max_connections: int = 64, user_agent: str = "tugboat",
                 request_timeout: float = 30.0) -> None:
        self.config = config
        self.request_timeout = request_timeout  # of a request that names none (lists take at least 120 s)
        self.base = config.server
        self._ssl = config.ssl_context()
        self._headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if config.token:
            self._headers["Authorization"] = f"Bearer {config.token}"
        self._max = max_connections
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, **kw: Any) -> ApiClient:
        return cls(load_kubeconfig(path), **kw)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            conn = aiohttp.TCPConnector(limit=self._max, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=conn, headers=self._headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- raw requests
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        timeout = self.request_timeout if timeout is None else timeout
        url = self.base + path
        if params:
            url += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        data = None if body is None else (body if isinstance(body, bytes) else _encode(body))
        headers = {"Content-Type": content_type} if data is not None else None
        for attempt in range(6):
            try:
                async with self.session.request(
                    method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
                ) as resp:
                    raw = await resp.read()
                    status, rheaders = resp.status, resp.headers
            except TimeoutError as e:  # aiohttp's own timer raises a bare TimeoutError: say which request
                raise ApiTimeout(f"{method} {path}", self.base, f"no answer within {timeout:g}s") from e
            except aiohttp.ClientConnectorCertificateError:
                raise  # the server is not who the kubeconfig says: no retry helps
            except (aiohttp.ClientConnectionError, ConnectionError) as e:
                raise ApiConnectionError(f"{method} {path}", self.base, describe(e)) from e
            if status == 429 and attempt < 5 and "Retry-After" in rheaders:
                await asyncio.sleep(float(rheaders.get("Retry-After", "1") or 1) * random.uniform(0.5, 1))
                continue
            if status >= 400:
                err = _error(status, raw)
                err.request = f"{method} {path}"
                raise err
            if not raw:
                return None
            ctype = rheaders.get("Content-Type", "")
            if "json" not in ctype and not raw.startswith((b"{", b"[")):
                return raw.decode(errors="replace")
            return _decode(raw)
        raise ApiError(429, "TooManyRequests", "too many requests")  # pragma: no cover

    # ---- typed verbs
    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict:
        return await self.request("GET", res.path(namespace, name))

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = 500,
        resource_version: str | None = None,
    ) -> dict:
        """List every page; returns a List dict whose ``metadata.resourceVersion`` is the first page's."""
        params: dict[str, Any] = {
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "limit": limit,
            "resourceVersion": resource_version,
        }
        first = await self.request("GET", res.path(namespace), params=params, timeout=max(120, self.request_timeout))
        items = list(first.get("items") or [])
        cont = (first.get("metadata") or {}).get("continue")
        while cont:
            page = await self.request(
                "GET", res.path(namespace), params={**params, "continue": cont, "resourceVersion": None},
                timeout=max(120, self.request_timeout),
            )
            items.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue")
        first["items"] = items
        meta = first.setdefault("metadata", {})
        meta.pop("continue", None)
        return first

    async def create(self, res: Resource, obj: dict, namespace: str | None = None) -> dict:
        ns = namespace or (obj.get("metadata") or {}).get("namespace")
        if res.namespaced and not ns:
            ns = "default"
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        return await self.request("POST", res.path(ns), body=obj)

    async def update(self, res: Resource, obj: dict, *, subresource: str | None = None) -> dict:
        md = obj["metadata"]
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        return await self.request("PUT", res.path(md.get("namespace"), md["name"], subresource), body=obj)

    async def update_status(self, res: Resource, obj: dict) -> dict:
        return await self.update(res, obj, subresource="status")

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        content_type: str = MERGE,
        subresource: str | None = None,
    ) -> dict:
        return await self.request(
            "PATCH", res.path(namespace, name, subresource), body=patch, content_type=content_type
        )

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str | None = None,
        grace_period: int | None = None,
        preconditions: dict | None = None,
    ) -> Any:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation:
            body["propagationPolicy"] = propagation
        if grace_period is not None:
            body["gracePeriodSeconds"] = grace_period
        if preconditions:
            body["preconditions"] = preconditions
        return await self.request("DELETE", res.path(namespace, name), body=body)

    async def bind(self, namespace: str, pod: str, node: str, uid: str | None = None) -> Any:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        if uid:
            body["metadata"]["uid"] = uid
        return await self.request("POST", f"/api/v1/namespaces/{namespace}/pods/{pod}/binding", body=body)

    async def evict(self, namespace: str, pod: str) -> Any:
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": namespace}}
        return await self.request("POST", f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction", body=body)

    # ---- watch
    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        bookmarks: bool = True,
    ) -> AsyncIterator[dict]:
        """Yield watch events ``{"type", "object"}`` until the server closes the stream.

        An ``ERROR`` event with code 410 raises :class:`GoneError` (the caller relists).
        """
        params: dict[str, Any] = {
            "watch": "true",
            "resourceVersion": resource_version,
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "timeoutSeconds": timeout_seconds,
        }
        if bookmarks:
            params["allowWatchBookmarks"] = "true"
        url = self.base + res.path(namespace) + "?" + urlencode({k: v for k, v in params.items() if v is not None})
        async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_seconds + 30)) as resp:
            if resp.status >= 400:
                raise _error(resp.status, await resp.read())
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 1 :]
                    if not line.strip():
                        continue
                    ev = _decode(line)
                    if ev.get("type") == "ERROR":
                        st = ev.get("object") or {}
                        raise _error(int(st.get("code") or 500), _encode(st))
                    yield ev
            if buf.strip():
                ev = _decode(buf)
                if ev.get("type") == "ERROR":
                    st = ev.get("object") or {}
                    raise _error(int(st.get("code") or 500), _encode(st))
                yield ev
