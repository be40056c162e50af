"""Shared helpers for the control-plane benchmarks: start an API server subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from tugboat.util.net import free_port


class ApiServerProcess:
    """``kind="real"`` runs ``tug cluster apiserver --data-dir D``; ``kind="fake"`` the in-memory
    test server (tugboat.cluster.sim.fakeapi)."""

    def __init__(self, kind: str = "real") -> None:
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix="tug-bench-")
        self.proc: subprocess.Popen | None = None
        self.kubeconfig = ""

    def __enter__(self) -> ApiServerProcess:
        if self.kind == "fake":
            self.kubeconfig = os.path.join(self.dir, "kubeconfig")
            cmd = [sys.executable, "-m", "tugboat.cluster.sim.fakeapi", "--kubeconfig", self.kubeconfig]
        else:
            self.kubeconfig = os.path.join(self.dir, "admin.kubeconfig")
            cmd = [sys.executable, "-m", "tugboat.cli.main", "cluster", "apiserver", "--data-dir", self.dir,
                   "--listen", f"127.0.0.1:{free_port()}"]
        self.log = open(os.path.join(self.dir, "apiserver.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not os.path.exists(self.kubeconfig) or not self._ready():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"API server did not start: {open(self.log.name).read()[-2000:]}")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        import ssl
        import urllib.request

        import yaml

        try:
            with open(self.kubeconfig) as f:
                server = yaml.safe_load(f)["clusters"][0]["cluster"]["server"]
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with urllib.request.urlopen(server + "/version", timeout=2, context=ctx) as r:
                return r.status in (200, 401, 403)
        except urllib.error.HTTPError as e:
            return e.code in (401, 403)
        except Exception:
            return False

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
