"""Health checks (HEALTHCHECK / ``--health-*``): one scheduler thread runs each container's test
as an exec at its interval and keeps docker's ``State.Health`` (status, failing streak, last 5
results)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from tugboat.engine.util import now_rfc3339

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3


def _secs(ns: Any, default: float) -> float:
    try:
        v = int(ns or 0)
    except (TypeError, ValueError):
        return default
    return v / 1e9 if v > 0 else default


def health_config(c: Any) -> dict | None:
    hc = c.data["Config"].get("Healthcheck") or None
    if not hc:
        return None
    test = hc.get("Test") or []
    if not test or test[0] == "NONE":
        return None
    return hc


class HealthMonitor:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tug-health", daemon=True)
        self._thread.start()

    def container_started(self, c: Any) -> None:
        hc = health_config(c)
        if hc is None:
            c.state.pop("Health", None)
            return
        c.state["Health"] = {"Status": "starting", "FailingStreak": 0, "Log": []}
        with self._lock:  # first probe soon after start (docker: after one interval)
            self._next[c.id] = time.monotonic() + min(_secs(hc.get("Interval"), DEFAULT_INTERVAL), 1.0)
        c.data.setdefault("Tug", {})["HealthStarted"] = time.time()

    def forget(self, cid: str) -> None:
        with self._lock:
            self._next.pop(cid, None)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._lock:
                due = [cid for cid, t in self._next.items() if t <= now]
                for cid in due:
                    self._next[cid] = float("inf")
            for cid in due:
                threading.Thread(target=self._probe, args=(cid,), daemon=True).start()

    def _probe(self, cid: str) -> None:
        from tugboat.engine import exec as ex

        try:
            c = self.engine.get(cid)
        except Exception:
            self.forget(cid)
            return
        hc = health_config(c)
        if hc is None or not c.running:
            self.forget(cid)
            return
        test = list(hc["Test"])
        cmd = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:] if test[0] == "CMD" else test
        timeout = _secs(hc.get("Timeout"), DEFAULT_TIMEOUT)
        out: list[bytes] = []
        start = now_rfc3339()
        code = -1
        try:
            eid = ex.exec_create(self.engine, cid, {"Cmd": cmd, "AttachStdout": True, "AttachStderr": True})
            rec = ex.exec_start(self.engine, eid, subscriber=lambda s, d: out.append(d) if s else None)
            if rec.done.wait(timeout):
                code = int(rec.exit_code if rec.exit_code is not None else -1)
            else:
                with contextlib.suppress(Exception):
                    import os
                    import signal

                    os.kill(rec.pid, signal.SIGKILL)
                out.append(f"Health check exceeded timeout ({timeout:g}s)".encode())
            self.engine.execs.pop(eid, None)
            with c.lock:
                ids = c.data.get("ExecIDs") or []
                if eid in ids:
                    ids.remove(eid)
        except Exception as exc:
            out.append(str(exc).encode())
        self._record(c, hc, start, code, b"".join(out).decode(errors="replace")[:4096])

    def _record(self, c: Any, hc: dict, start: str, code: int, output: str) -> None:
        with c.lock:
            if not c.running:
                self.forget(c.id)
                return
            h = c.state.setdefault("Health", {"Status": "starting", "FailingStreak": 0, "Log": []})
            log = list(h.get("Log") or [])
            log.append({"Start": start, "End": now_rfc3339(), "ExitCode": code, "Output": output})
            h["Log"] = log[-5:]
            old = h.get("Status")
            started = c.data.get("Tug", {}).get("HealthStarted", 0)
            in_start_period = time.time() - started < _secs(hc.get("StartPeriod"), 0)
            if code == 0:
                h["Status"] = "healthy"
                h["FailingStreak"] = 0
            elif not in_start_period:
                h["FailingStreak"] = int(h.get("FailingStreak") or 0) + 1
                if h["FailingStreak"] >= int(hc.get("Retries") or DEFAULT_RETRIES):
                    h["Status"] = "unhealthy"
            c.save()
            if h["Status"] != old:
                self.engine._event(c, f"health_status: {h['Status']}")
        with self._lock:
            if c.id in self._next:
                self._next[c.id] = time.monotonic() + _secs(hc.get("Interval"), DEFAULT_INTERVAL)

    def close(self) -> None:
        self._stop.set()
