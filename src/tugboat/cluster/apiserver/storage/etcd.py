"""etcd v3 datastore, spoken through etcd's gRPC-gateway JSON API over aiohttp (no gRPC library).

Calls: ``/v3/kv/range`` (get, list, count), ``/v3/kv/txn`` (create = compare create_revision 0;
update/delete = compare mod_revision), ``/v3/kv/compaction``, ``/v3/watch`` (one streaming POST
per watch, ``prev_kv`` on). Keys and values travel base64-encoded; int64 fields arrive as strings.
Several endpoints may be given; a failing one is rotated out.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

from tugboat.cluster.apiserver.storage.base import (
    Compacted,
    Event,
    KeyExists,
    KeyNotFound,
    KeyValue,
    ListResult,
    RevisionMismatch,
    Store,
    StoreUnavailable,
    prefix_end,
)

_enc = msgspec.json.Encoder().encode
_dec = msgspec.json.Decoder().decode
_JSON = {"Content-Type": "application/json"}


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def _kv(d: dict[str, Any]) -> KeyValue:
    return KeyValue(_unb64(d.get("key")).decode(), _unb64(d.get("value")), int(d.get("mod_revision", 0)),
                    int(d.get("create_revision", 0)))


class EtcdStore(Store):
    def __init__(self, endpoints: list[str]) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = endpoints
        self._ep = 0
        self._session: aiohttp.ClientSession | None = None
        self._compact_rev = 0

    async def start(self) -> None:
        conn = aiohttp.TCPConnector(limit=128, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30))
        await self.current_revision()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None, "store not started"
        last: Exception | None = None
        for _ in range(len(self.endpoints) * 2):
            url = self.endpoints[self._ep] + path
            try:
                async with self._session.post(url, data=_enc(body), headers=_JSON) as r:
                    raw = await r.read()
                    data = _dec(raw) if raw else None
                    if r.status != 200:
                        msg = (data or {}).get("error") or (data or {}).get("message") or str(data)
                        if "compacted" in msg:
                            raise Compacted(int(body.get("revision", 0) or 0), self._compact_rev)
                        raise StoreUnavailable(f"etcd {path}: {msg}")
                    return data
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                last = exc
                self._ep = (self._ep + 1) % len(self.endpoints)
                await asyncio.sleep(0.05)
        raise StoreUnavailable(f"etcd unreachable at {', '.join(self.endpoints)}: {last}")

    async def current_revision(self) -> int:
        d = await self._call("/v3/kv/range", {"key": _b64("\x00"), "count_only": True})
        return int(d["header"]["revision"])

    async def compact_revision(self) -> int:
        return self._compact_rev

    async def get(self, key: str) -> KeyValue | None:
        d = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = d.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0) -> ListResult:
        start = max(prefix, start_after + "\x00") if start_after else prefix
        body: dict[str, Any] = {"key": _b64(start), "range_end": _b64(prefix_end(prefix))}
        if limit:
            body["limit"] = limit
        if revision:
            if revision < self._compact_rev:
                raise Compacted(revision, self._compact_rev)
            body["revision"] = revision
        d = await self._call("/v3/kv/range", body)
        rev = revision or int(d["header"]["revision"])
        return ListResult([_kv(x) for x in d.get("kvs") or []], rev, bool(d.get("more")))

    async def count(self, prefix: str) -> int:
        d = await self._call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                              "count_only": True})
        return int(d.get("count", 0))

    async def create(self, key: str, value: bytes) -> int:
        k = _b64(key)
        d = await self._call("/v3/kv/txn", {
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": k, "value": _b64(value)}}],
        })
        if not d.get("succeeded"):
            raise KeyExists(key)
        return int(d["header"]["revision"])

    async def _txn_on_mod(self, key: str, expected: int, op: dict[str, Any]) -> dict[str, Any]:
        k = _b64(key)
        d = await self._call("/v3/kv/txn", {
            "compare": [{"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": str(expected)}],
            "success": [op],
            "failure": [{"request_range": {"key": k}}],
        })
        if not d.get("succeeded"):
            rr = ((d.get("responses") or [{}])[0].get("response_range") or {}).get("kvs") or []
            if not rr:
                raise KeyNotFound(key)
            raise RevisionMismatch(_kv(rr[0]))
        return d

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        d = await self._txn_on_mod(key, expected_revision, {"request_put": {"key": _b64(key), "value": _b64(value)}})
        return int(d["header"]["revision"])

    async def delete(self, key: str, expected_revision: int = 0) -> tuple[int, KeyValue]:
        op = {"request_delete_range": {"key": _b64(key), "prev_kv": True}}
        if expected_revision:
            d = await self._txn_on_mod(key, expected_revision, op)
        else:
            d = await self._call("/v3/kv/txn", {"success": [op]})
        resp = (d.get("responses") or [{}])[0].get("response_delete_range") or {}
        prev = resp.get("prev_kvs") or []
        if not prev:
            raise KeyNotFound(key)
        return int(d["header"]["revision"]), _kv(prev[0])

    async def compact(self, revision: int) -> None:
        if revision <= self._compact_rev:
            return
        try:
            await self._call("/v3/kv/compaction", {"revision": str(revision), "physical": False})
        except Compacted:
            pass
        self._compact_rev = revision

    async def watch(self, prefix: str, after_revision: int) -> AsyncIterator[Event]:  # type: ignore[override]
        assert self._session is not None
        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                   "start_revision": str(after_revision + 1), "prev_kv": True}}
        url = self.endpoints[self._ep] + "/v3/watch"
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        try:
            async with self._session.post(url, json=body, timeout=timeout) as r:
                if r.status != 200:
                    raise StoreUnavailable(f"etcd watch: HTTP {r.status}: {await r.text()}")
                buf = b""
                dec = json.JSONDecoder()
                async for chunk in r.content.iter_any():
                    buf += chunk
                    text = buf.decode("utf-8", errors="strict") if buf else ""
                    pos = 0
                    while True:
                        while pos < len(text) and text[pos] in " \r\n\t":
                            pos += 1
                        if pos >= len(text):
                            break
                        try:
                            msg, end = dec.raw_decode(text, pos)
                        except ValueError:
                            break
                        pos = end
                        for ev in self._events(msg, after_revision):
                            yield ev
                    buf = text[pos:].encode()
        except (aiohttp.ClientError, OSError) as exc:
            raise StoreUnavailable(f"etcd watch failed: {exc}") from exc

    def _events(self, msg: dict[str, Any], after: int) -> list[Event]:
        res = msg.get("result") or {}
        if "error" in msg:
            raise StoreUnavailable(f"etcd watch: {msg['error']}")
        crev = int(res.get("compact_revision", 0) or 0)
        if crev:
            self._compact_rev = max(self._compact_rev, crev)
            raise Compacted(after, crev)
        if res.get("canceled"):
            raise StoreUnavailable(f"etcd watch canceled: {res.get('cancel_reason', '')}")
        out = []
        for e in res.get("events") or []:
            kv = e.get("kv") or {}
            prev = e.get("prev_kv")
            key = _unb64(kv.get("key")).decode()
            rev = int(kv.get("mod_revision", 0))
            if e.get("type") == "DELETE":
                last = _unb64(prev.get("value")) if prev else b""
                out.append(Event("DELETE", key, last, rev, int(prev.get("create_revision", 0)) if prev else 0, last))
            else:
                crev_k = int(kv.get("create_revision", 0))
                out.append(Event("PUT", key, _unb64(kv.get("value")), rev, crev_k,
                                 _unb64(prev.get("value")) if prev else None, crev_k == rev))
        return out
