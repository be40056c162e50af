"""Write a lean ``tug`` launcher into a virtualenv (``make venv`` runs this after ``pip install -e``).

pip's console-script wrapper starts Python normally: ``site`` scans site-packages and runs the
``.pth`` files (the editable-install path, setuptools' ``_distutils_hack``). The launcher written
here starts ``python -S`` and appends the directories ``site`` had added at install time (about
3 ms less per ``tug`` command). ``PYTHON*`` variables still apply (``PYTHONPATH`` first, as usual).
``pip install -e .`` puts pip's wrapper back (correct, only slower): run this again.

    python -m tugboat.cli.launcher [BIN_DIR]      # default: the running interpreter's bin dir
"""

from __future__ import annotations

import os
import sys
import sysconfig

TEMPLATE = """#!{python} -S
# tugboat's lean launcher (python -m tugboat.cli.launcher); `pip install -e` replaces it with pip's
import sys
sys.path.extend([p for p in {path!r} if p not in sys.path])
from tugboat.cli.main import main
if __name__ == "__main__":
    rc = main()
    if sys.modules["tugboat.cli.main"].quick_exit:  # done: skip the interpreter's teardown
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            sys.exit(rc)
        import os
        os._exit(rc)
    sys.exit(rc)
"""


def launcher_text(python: str, path: list[str]) -> str:
    return TEMPLATE.format(python=python, path=path)


def site_path() -> list[str]:
    """``sys.path`` without its first entry (the script's directory, or the current one for ``-m``
    and ``-c``): the interpreter's own paths, plus what ``site`` and ``.pth`` files added."""
    out: list[str] = []
    for p in sys.path[1:]:
        if not p or not os.path.isabs(p) or not os.path.isdir(p) or p in out:
            continue
        out.append(p)
    return out


def install(bin_dir: str | None = None) -> str:
    bin_dir = bin_dir or sysconfig.get_path("scripts")
    python = os.path.join(bin_dir, "python")
    if not os.path.exists(python):
        python = sys.executable
    target = os.path.join(bin_dir, "tug")
    import tugboat

    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(tugboat.__file__)))
    # tugboat's own directory first: `import tugboat` then never lists site-packages
    path = [pkg_parent, *(p for p in site_path() if p != pkg_parent)]
    tmp = f"{target}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(launcher_text(python, path))
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    return target


if __name__ == "__main__":
    print(install(sys.argv[1] if len(sys.argv) > 1 else None))
