"""Helpers for the tug-runtime CLI tests: the lean command line, cgroup clean-up."""

from __future__ import annotations

import os
import sys

SRC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")


def cli_cmd(root: str, *global_args: str) -> list[str]:
    """`tug-runtime --root ROOT ...` as the lean launcher runs it (python -I -S)."""
    return [sys.executable, "-I", "-S", "-c",
            f"import sys; sys.path.insert(0, {SRC_DIR!r}); from tugboat.runtime.cli import main; sys.exit(main())",
            "--root", root, *global_args]


def cleanup_cgroup_parent(parent: str) -> None:
    """Remove every cgroup directory under ``parent`` in every hierarchy, deepest first."""
    base = "/sys/fs/cgroup"
    for mnt in sorted(os.listdir(base)):
        d = os.path.join(base, mnt, parent.lstrip("/"))
        if not os.path.isdir(d):
            continue
        subs = [os.path.join(r, x) for r, ds, _ in os.walk(d) for x in ds]
        for sub in [*sorted(subs, key=len, reverse=True), d]:
            try:
                os.rmdir(sub)
            except OSError:
                pass
