"""Service account tokens for pods' projected ``serviceAccountToken`` sources (the kubelet's token
manager): each is requested through the TokenRequest API, bound to the pod, with the source's
audience and expirationSeconds; it is kept per (pod, service account, audience, lifetime) and
requested again once 80 % of its lifetime has passed or it is a day old (the kubelet's rule), and
the worker rewrites the file in the pod's volume then (:func:`refresh_pod_tokens`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.util import parse_time
from tugboat.util.fs import write_atomic

log = logging.getLogger(__name__)

DEFAULT_EXPIRATION = 3600
MAX_TTL = 24 * 3600.0  # a token older than this is renewed whatever its lifetime
REFRESH_FRACTION = 0.8


@dataclass
class Token:
    token: bytes
    issued: float  # wall-clock seconds
    expires: float

    def needs_refresh(self, now: float | None = None) -> bool:
        t = time.time() if now is None else now
        if t >= self.expires:
            return True
        return t >= self.issued + REFRESH_FRACTION * (self.expires - self.issued) or t - self.issued > MAX_TTL


def token_sources(pod: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(volume name, source index, serviceAccountToken source) of every projected token source."""
    out = []
    for v in (pod.get("spec") or {}).get("volumes") or []:
        for i, s in enumerate(((v.get("projected") or {}).get("sources") or []) if isinstance(v, dict) else []):
            if isinstance(s, dict) and isinstance(s.get("serviceAccountToken"), dict):
                out.append((v["name"], i, s["serviceAccountToken"]))
    return out


def source_key(volume: str, index: int) -> str:
    return f"{volume}/{index}"


class TokenManager:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.cache: dict[tuple[str, str, str, tuple[str, ...], int], Token] = {}

    def _key(self, pod: dict[str, Any], src: dict[str, Any]) -> tuple[str, str, str, tuple[str, ...], int]:
        md, spec = pod["metadata"], pod.get("spec") or {}
        aud = src.get("audience")
        return (md["uid"], md["namespace"], spec.get("serviceAccountName") or "default",
                (aud,) if aud else (), int(src.get("expirationSeconds") or DEFAULT_EXPIRATION))

    def cached(self, pod: dict[str, Any], src: dict[str, Any]) -> Token | None:
        return self.cache.get(self._key(pod, src))

    async def get(self, pod: dict[str, Any], src: dict[str, Any], *, force: bool = False) -> Token:
        """The token for one source: cached, or requested when missing or due for renewal."""
        key = self._key(pod, src)
        tok = self.cache.get(key)
        if tok is not None and not force and not tok.needs_refresh():
            return tok
        uid, ns, sa, aud, exp = key
        body: dict[str, Any] = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                "spec": {"expirationSeconds": exp,
                                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                                            "name": pod["metadata"]["name"], "uid": uid}}}
        if aud:
            body["spec"]["audiences"] = list(aud)
        now = time.time()
        out = await self.client.request("POST", R.SERVICEACCOUNTS.path(ns, sa, "token"), body=body)
        st = out.get("status") or {}
        expires = parse_time(st.get("expirationTimestamp")) or now + exp
        tok = Token(str(st.get("token") or "").encode(), now, expires)
        if not tok.token:
            raise RuntimeError(f"the API server answered the TokenRequest for {ns}/{sa} without a token")
        self.cache[key] = tok
        return tok

    async def for_pod(self, pod: dict[str, Any]) -> dict[str, bytes]:
        """source key → token bytes, for :func:`~tugboat.cluster.node.volumes.prepare_volumes`."""
        return {source_key(v, i): (await self.get(pod, src)).token for v, i, src in token_sources(pod)}

    def forget(self, uid: str) -> None:
        for k in [k for k in self.cache if k[0] == uid]:
            del self.cache[k]


async def refresh_pod_tokens(manager: TokenManager, pod: dict[str, Any], volumes: dict[str, str]) -> int:
    """Renew the pod's tokens that are due and rewrite their files (atomically, in the volume's
    directory, which containers see through their bind mount); returns how many were renewed."""
    n = 0
    for vname, _i, src in token_sources(pod):
        cur = manager.cached(pod, src)
        if cur is not None and not cur.needs_refresh():
            continue
        d = volumes.get(vname)
        if not d:
            continue
        tok = await manager.get(pod, src, force=True)
        mode = (next((v for v in (pod.get("spec") or {}).get("volumes") or [] if v.get("name") == vname), {})
                .get("projected") or {}).get("defaultMode", 0o644)
        path = os.path.join(d, os.path.normpath(src.get("path") or "token"))
        write_atomic(path, tok.token, mode=mode)
        n += 1
    return n
