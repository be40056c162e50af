"""OCI hooks: run each with the container state on stdin, its own env and timeout."""

from __future__ import annotations

import json
import subprocess

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def run_hooks_warn(kind: str, hooks: list[dict[str, Any]] | None, state: dict[str, Any], warn: Any) -> None:
    """poststart/poststop: a failing hook is a warning and the remaining hooks still run."""
    for i, hook in enumerate(hooks or []):
        try:
            run_hooks(kind, [hook], state, first_index=i)
        except OSError as e:
            warn(str(e.strerror or e))


def run_hooks(
    kind: str, hooks: list[dict[str, Any]] | None, state: dict[str, Any], first_index: int = 0,
    cwd: str | None = None,
) -> None:
    """Run the hooks of one kind in order; the first failure raises OSError naming the hook.

    ``cwd``: the hooks' working directory (runc runs createContainer hooks in the rootfs)."""
    payload = json.dumps(state).encode()
    for i, hook in enumerate(hooks or [], start=first_index):
        path = hook.get("path")
        if not path:
            raise OSError(22, f"{kind} hook #{i}: no path")
        args = hook.get("args") or [path]
        timeout = hook.get("timeout")
        try:
            proc = subprocess.run(
                args,
                executable=path,
                input=payload,
                env={e.split("=", 1)[0]: e.split("=", 1)[1] for e in hook.get("env") or [] if "=" in e},
                capture_output=True,
                timeout=timeout if timeout and timeout > 0 else None,
                check=False,
                cwd=cwd,
            )
        except subprocess.TimeoutExpired:
            raise OSError(62, f"error running hook #{i} ({kind} {path}): timed out after {timeout}s") from None
        except OSError as e:
            raise OSError(e.errno, f"error running hook #{i} ({kind} {path}): {e.strerror}") from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).decode(errors="replace").strip()
            if proc.returncode < 0:
                import signal

                how = f"signal: {(signal.strsignal(-proc.returncode) or str(-proc.returncode)).lower()}"
            else:
                how = f"exit status {proc.returncode}"
            raise OSError(0, f"error running hook #{i} ({kind} {path}): {how}" + (f": {detail}" if detail else ""))
