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


HOOK_TIMEOUT = 120.0  # a lifecycle handler has no timeoutSeconds: bounded only by this (preStop: the grace period)


def _dial_error(host: str, port: int, e: BaseException) -> str:
    """An OSError of a connect, worded as the kubelet's Go dialer words it."""
    if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == 111:
        why = "connect: connection refused"
    elif getattr(e, "errno", None) in (113, 101):
        why = "connect: no route to host" if getattr(e, "errno", None) == 113 else "connect: network is unreachable"
    else:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return f"dial tcp {host}:{port}: {why}"


async def run_probe(probe: dict[str, Any], pod_ip: str, exec_fn: ExecFn, named_ports: dict[str, int]) -> tuple[bool, str]:
    """(success, message) of one probe attempt, or of one lifecycle handler (no ``timeoutSeconds``).

    Messages are the kubelet's: an exec probe's is the command's output; httpGet's
    ``Get "URL": dial tcp H:P: connect: connection refused`` or ``HTTP probe failed with statuscode: N``;
    tcpSocket's ``dial tcp H:P: …``. Any error (a command the engine refuses, a bad port) is a
    failed attempt, never an exception: a probe must not stop the pod's sync.
    """
    timeout = float(probe.get("timeoutSeconds") or 1) if "timeoutSeconds" in probe else HOOK_TIMEOUT
    url = ""
    target = ("", 0)
    try:
        if probe.get("exec"):
            cmd = probe["exec"].get("command") or []
            if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
                return False, f"invalid exec command {cmd!r}: must be a non-empty list of strings"
            code, out = await exec_fn(list(cmd), timeout)
            if code == 0:
                return True, ""
            if code == -1:
                return False, f"command {' '.join(cmd)!r} timed out"
            return False, out.decode(errors="replace")[:10240]
        if probe.get("httpGet"):
            hg = probe["httpGet"]
            host = hg.get("host") or pod_ip or "127.0.0.1"
            scheme = (hg.get("scheme") or "HTTP").lower()
            port = _port(hg.get("port"), named_ports)
            target = (host, port)
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
        if probe.get("sleep"):  # a lifecycle handler only (kube 1.30's PodLifecycleSleepAction)
            await asyncio.wait_for(asyncio.sleep(float(probe["sleep"].get("seconds") or 0)), timeout)
            return True, ""
        if probe.get("tcpSocket"):
            ts = probe["tcpSocket"]
            host = ts.get("host") or pod_ip or "127.0.0.1"
            port = _port(ts.get("port"), named_ports)
            target = (host, port)
            _r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            w.close()
            return True, ""
        return False, "no probe handler"
    except TimeoutError:
        if url:
            return False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
        if target[0]:
            return False, f"dial tcp {target[0]}:{target[1]}: i/o timeout"
        return False, f"probe timed out after {timeout:g}s"
    except aiohttp.ClientConnectorError as e:
        msg = _dial_error(target[0], target[1], e.os_error)
        return False, f'Get "{url}": {msg}' if url else msg
    except OSError as e:
        msg = _dial_error(target[0], target[1], e) if target[0] else (str(e) or type(e).__name__)
        return False, f'Get "{url}": {msg}' if url else msg
    except Exception as e:  # the engine refusing an exec, a bad port name …: a failed attempt
        msg = str(e) or type(e).__name__
        return False, f'Get "{url}": {msg}' if url else msg


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
