"""An async Kubernetes REST client on aiohttp: CRUD, patch, subresources and watch streams.

Objects are plain dicts (the JSON the API server sends), decoded with msgspec for speed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec

from tugboat.cluster.client.kubeconfig import KubeConfig, load_kubeconfig
from tugboat.cluster.client.resources import Resource
from tugboat.errors import Conflict, NotFound, TugError

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSONPATCH = "application/json-patch+json"


class ApiError(TugError):
    """An error Status from the API server (``code``, ``reason``)."""

    def __init__(self, code: int, reason: str, message: str, body: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = code
        self.reason = reason
        self.body = body or {}


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

    def __init__(self, config: KubeConfig, *, max_connections: int = 64, user_agent: str = "tugboat") -> None:
        self.config = config
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
        timeout: float = 30.0,
    ) -> Any:
        url = self.base + path
        if params:
            url += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        data = None if body is None else (body if isinstance(body, bytes) else _encode(body))
        headers = {"Content-Type": content_type} if data is not None else None
        for attempt in range(6):
            async with self.session.request(
                method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                raw = await resp.read()
                if resp.status == 429 and attempt < 5 and "Retry-After" in resp.headers:
                    await asyncio.sleep(float(resp.headers.get("Retry-After", "1") or 1) * random.uniform(0.5, 1))
                    continue
                if resp.status >= 400:
                    raise _error(resp.status, raw)
                if not raw:
                    return None
                ctype = resp.headers.get("Content-Type", "")
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
        first = await self.request("GET", res.path(namespace), params=params, timeout=120)
        items = list(first.get("items") or [])
        cont = (first.get("metadata") or {}).get("continue")
        while cont:
            page = await self.request(
                "GET", res.path(namespace), params={**params, "continue": cont, "resourceVersion": None}, timeout=120
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
