"""Fixtures for the API server compat tests: one API server per datastore (sqlite, etcd) per module."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tugboat.cluster.apiserver.testing import ApiServerProcess, EtcdProcess


@dataclass
class Cluster:
    api: ApiServerProcess
    datastore: str
    cache_dir: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ, KUBECONFIG=self.api.kubeconfig, **(env or {}))
        full_env.pop("KUBERNETES_SERVICE_HOST", None)
        r = subprocess.run(["kubectl", "--cache-dir", self.cache_dir, *args], input=input, capture_output=True,
                           text=True, env=full_env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r


@pytest.fixture(scope="module", params=["sqlite", "etcd"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from conftest import require_binary

    require_binary("kubectl")
    base = tmp_path_factory.mktemp(f"cluster-{request.param}")
    etcd: EtcdProcess | None = None
    datastore = None
    if request.param == "etcd":
        if shutil.which("etcd") is None:
            require_binary("etcd")
        etcd = EtcdProcess(base / "etcd").start()
        datastore = etcd.datastore
    api = ApiServerProcess(base / "apiserver", datastore)
    try:
        api.start()
        yield Cluster(api, request.param, str(base / "kubecache"))
    finally:
        api.stop()
        if etcd is not None:
            etcd.stop()


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)
