"""A lean launcher for ``tug-runtime``: ``python -I -S`` plus only the runtime's modules.

pip's console script starts Python with ``site`` (the venv's site-packages and .pth files);
the runtime needs nothing from site-packages, so the launcher skips it and puts only the
directory holding the ``tugboat`` package on ``sys.path``. ``tug-runtime install-launcher PATH``
writes one (e.g. over the console script, or as /usr/local/bin/tug-runtime).
"""

from __future__ import annotations

import os
import sys


def launcher_text(python: str | None = None) -> str:
    import tugboat

    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(tugboat.__file__)))
    return (
        f"#!{python or sys.executable} -IS\n"
        "# tug-runtime lean launcher (written by `tug-runtime install-launcher`)\n"
        "import sys\n"
        f"sys.path.insert(0, {pkg_parent!r})\n"
        "from tugboat.runtime.cli import main\n"
        "sys.exit(main())\n"
    )


def write_launcher(path: str, python: str | None = None) -> str:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(launcher_text(python))
    os.chmod(tmp, 0o755)
    os.rename(tmp, path)
    return path
