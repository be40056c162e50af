"""`tug-runtime`: the runc-compatible OCI runtime command line (filled in by the runtime issue)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    sys.stderr.write("tug-runtime: not built yet\n")
    return 1
