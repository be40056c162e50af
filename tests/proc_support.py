"""Helpers for tests that start server processes (tests/ is on sys.path: pytest prepends the
directory of tests/conftest.py), e.g. ``from proc_support import stop_process``."""

from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen, timeout: float = 20, sig: int = signal.SIGTERM) -> None:
    """Signal ``proc`` (SIGTERM) if it still runs, wait up to ``timeout`` seconds, then SIGKILL it."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
