"""Container probes (exec, httpGet, tcpSocket) and their thresholds, as the kubelet runs them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

ExecFn = Callable[[list[str], float], Awaitable[tuple[int, bytes]]]


def _port(p: Any, named: dict[str, int]) -> int:
    if isinstance(p, int):
        return p
    if isinstance(p, str) and p.isdigit():
        return int(p)
    if p in named:
        return named[p]
    raise ValueError(f"port {p!r} not found in the container's ports")


async def run_probe(probe: dict[str, Any], pod_ip: str, exec_fn: ExecFn, named_ports: dict[str, int]) -> tuple[bool, str]:
    """(success, message) of one probe attempt."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if probe.get("exec"):
            code, out = await exec_fn(list(probe["exec"]["command"]), timeout)
            if code == 0:
                return True, ""
            if code == -1:
                return False, f"command timed out after {int(timeout)}s"
            return False, f"command {probe['exec']['command']!r} exited with {code}: {out.decode(errors='replace')[:200]}"
        if probe.get("httpGet"):
            hg = probe["httpGet"]
            host = hg.get("host") or pod_ip or "127.0.0.1"
            scheme = (hg.get("scheme") or "HTTP").lower()
            port = _port(hg.get("port"), named_ports)
            path = hg.get("path") or "/"
            url = f"{scheme}://{host}:{port}{path if path.startswith('/') else '/' + path}"
            headers = {h["name"]: h["value"] for h in hg.get("httpHeaders") or []}
            headers.setdefault("User-Agent", "kube-probe/1.32")
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                    s.get(url, headers=headers, ssl=False, allow_redirects=True) as r:
                await r.read()
                if 200 <= r.status < 400:
                    return True, ""
                return False, f"HTTP probe failed with statuscode: {r.status}"
        if probe.get("tcpSocket"):
            ts = probe["tcpSocket"]
            host = ts.get("host") or pod_ip or "127.0.0.1"
            port = _port(ts.get("port"), named_ports)
            _r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            w.close()
            return True, ""
        return False, "no probe handler"
    except TimeoutError:
        return False, f"probe timed out after {timeout:g}s"
    except (OSError, aiohttp.ClientError, ValueError) as e:
        return False, str(e) or type(e).__name__


@dataclass
class ProbeState:
    """Counters of one probe of one container (reset when the container restarts)."""

    probe: dict[str, Any]
    kind: str  # liveness | readiness | startup
    started_at: float = field(default_factory=time.monotonic)
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0
    result: bool | None = None  # None until decided
    last_message: str = ""

    def __post_init__(self) -> None:
        self.next_at = self.started_at + float(self.probe.get("initialDelaySeconds") or 0)

    @property
    def period(self) -> float:
        return float(self.probe.get("periodSeconds") or 10)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, message: str, now: float) -> bool | None:
        """Apply one attempt; returns the new decided result when it changed."""
        self.next_at = now + self.period
        self.last_message = message
        before = self.result
        if ok:
            self.successes += 1
            self.failures = 0
            need = int(self.probe.get("successThreshold") or 1)
            if self.successes >= need:
                self.result = True
        else:
            self.failures += 1
            self.successes = 0
            need = int(self.probe.get("failureThreshold") or 3)
            if self.failures >= need:
                self.result = False
        return self.result if self.result != before else None
