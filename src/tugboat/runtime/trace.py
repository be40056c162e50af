"""Stage timing for start-up work: ``TUG_RUNTIME_TRACE=1`` prints ms since process start."""

from __future__ import annotations

import os
import time

ENABLED = bool(os.environ.get("TUG_RUNTIME_TRACE"))
_T0 = float(os.environ.get("TUG_RUNTIME_T0") or 0) or time.time()


def mark(what: str) -> None:
    if ENABLED:
        os.write(2, f"[trace {os.getpid()} {1000 * (time.time() - _T0):7.2f} ms] {what}\n".encode())
