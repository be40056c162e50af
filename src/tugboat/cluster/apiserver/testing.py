"""Test support: a real etcd and a real API server as subprocesses on free loopback ports.

Used by this area's tests and available to other cluster areas' tests::

    with EtcdProcess(tmp_path / "etcd") as etcd, ApiServerProcess(tmp_path / "as", etcd.datastore) as api:
        subprocess.run(["kubectl", "--kubeconfig", api.kubeconfig, "get", "pods"])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tugboat.util.net import free_port


def _wait_port(port: int, proc: subprocess.Popen[Any], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s: {log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class EtcdProcess:
    """etcd (Debian's etcd-server) in ``data_dir`` on free loopback ports."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.peer = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restart(self) -> None:
        """Stop and start again on the same ports and data (an etcd outage)."""
        self.stop()
        self.start()

    @property
    def datastore(self) -> str:
        return f"etcd://127.0.0.1:{self.port}"

    def start(self) -> EtcdProcess:
        binary = shutil.which("etcd")
        if binary is None:
            raise FileNotFoundError("etcd is not installed (Debian package etcd-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port, self.peer = free_port(), free_port()
        peer = self.peer
        log = self.dir / "etcd.log"
        self.proc = subprocess.Popen(
            [binary, "--name", "tug", "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"tug=http://127.0.0.1:{peer}", "--log-level", "error",
             "--quota-backend-bytes", str(2 * 1024**3)],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
        )
        _wait_port(self.port, self.proc, 20, "etcd", log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(self.url + "/v3/kv/range", data=b'{"key":"AA=="}', method="POST")
                with urllib.request.urlopen(req, timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("etcd did not become ready")

    def stop(self) -> None:
        _stop(self.proc)

    def __enter__(self) -> EtcdProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ApiServerProcess:
    """``tug cluster apiserver`` in a subprocess, its data in ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike[str], datastore: str | None = None, port: int = 0) -> None:
        self.dir = Path(data_dir)
        self.datastore = datastore
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> str:
        return str(self.dir / "admin.kubeconfig")

    @property
    def token_kubeconfig(self) -> str:
        return str(self.dir / "admin-token.kubeconfig")

    @property
    def ca(self) -> str:
        return str(self.dir / "pki" / "ca.crt")

    @property
    def token(self) -> str:
        for line in (self.dir / "tokens.csv").read_text().splitlines():
            parts = line.split(",")
            if len(parts) > 1 and parts[1] == "admin":
                return parts[0]
        raise RuntimeError("no admin token")

    def ssl_context(self, client_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca)
        if client_cert:
            ctx.load_cert_chain(str(self.dir / "pki" / "admin.crt"), str(self.dir / "pki" / "admin.key"))
        return ctx

    def start(self) -> ApiServerProcess:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        cmd = [sys.executable, "-m", "tugboat.cli.main", "cluster", "apiserver",
               "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.dir)]
        if self.datastore:
            cmd += ["--datastore", self.datastore]
        log = self.dir / "apiserver.log"
        self.proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                     start_new_session=True)
        _wait_port(self.port, self.proc, 30, "apiserver", log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (self.dir / "admin.kubeconfig").exists():
                try:
                    with urllib.request.urlopen(self.url + "/readyz", context=self.ssl_context(False), timeout=2) as r:
                        if r.status == 200:
                            return self
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"apiserver not ready: {log.read_text()[-3000:]}")

    def stop(self) -> None:
        _stop(self.proc)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> ApiServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
