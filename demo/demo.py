"""`make demo`: the main job, end to end, on a fresh machine (filled in as the areas land)."""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    return subprocess.call([sys.executable, "-m", "tugboat.cli.main", "--version"])


if __name__ == "__main__":
    raise SystemExit(main())
