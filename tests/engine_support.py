"""Fixtures for engine tests (shared by tests/integration and tests/compat): a real `tug daemon` on a
temporary root and socket, with busybox. tests/ is on sys.path (pytest prepends conftest dirs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from proc_support import stop_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUG = [sys.executable, "-m", "tugboat.cli.main"]


@dataclass
class Daemon:
    root: str
    sock: str
    proc: subprocess.Popen | None = None
    env: dict | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.env or {})
        log = open(os.path.join(self.root, "daemon-test.log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([*TUG, "daemon", "--root", self.root, "--host", self.host],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                     start_new_session=True)
        from tugboat.cli.client import DaemonClient

        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log()}")
            if os.path.exists(self.sock) and DaemonClient(self.host, timeout=2).ping():
                return
            time.sleep(0.05)
        raise RuntimeError("daemon did not start: " + self.log())

    def log(self) -> str:
        try:
            with open(os.path.join(self.root, "daemon-test.log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, 20, sig)
        self.proc = None

    def client(self):  # type: ignore[no-untyped-def]
        from tugboat.cli.client import DaemonClient

        return DaemonClient(self.host)

    def tug(self, *args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        env = dict(os.environ, TUG_HOST=self.host, TUG_ROOT=self.root)
        return subprocess.run([*TUG, *args], input=input, capture_output=True, timeout=timeout, env=env)


def bootstrap_busybox(root: str) -> None:
    from tugboat.images.bootstrap import bootstrap_busybox as boot
    from tugboat.images.service import ImageService

    svc = ImageService(root)
    if not svc.exists("busybox:latest"):
        boot(svc, "busybox:latest")


def cleanup_root(root: str) -> None:
    """Kill leftover containers of this root and unmount its overlays."""
    cdir = os.path.join(root, "runtime")
    if os.path.isdir(cdir):
        from tugboat.runtime.api import Runtime

        rt = Runtime(cdir)
        for st in rt.list():
            with contextlib.suppress(Exception):
                rt.delete(st["id"], force=True)
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f]
    for m in reversed(mounts):
        if m.startswith(root):
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    base = tmp_path_factory.mktemp("engine")
    root = str(base / "root")
    os.makedirs(root)
    bootstrap_busybox(root)
    d = Daemon(root=root, sock=str(base / "tug.sock"), env={"TUG_ENGINE_NO_NETWORK": "1"})
    d.start()
    try:
        yield d
    finally:
        d.stop()
        cleanup_root(root)
