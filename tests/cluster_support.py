"""Driving a `tug cluster up` cluster with the real kubectl, shared by the cluster test modules."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import require_binary
from tugboat.cluster.up import cluster_down, cluster_up


@dataclass
class KubectlCluster:
    """A running cluster (``state`` as `cluster_up` returns it) and kubectl's cache directory."""

    state: dict
    cache: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=self.state["kubeconfig"])
        r = subprocess.run(["kubectl", "--cache-dir", self.cache, *args], input=input, capture_output=True,
                           text=True, env=env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def pod(self, name: str) -> dict:
        return self.json("pod", name)

    def wait(self, what: str, pred: Callable[[], Any], timeout: float = 60, interval: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = pred()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@contextlib.contextmanager
def up_cluster(base: Path, *, nodes: int, prefix: str, subnet16: str, cluster_cidr: str, timeout: float = 180,
               **options: Any) -> Iterator[dict]:
    """`tug cluster up --isolated` for a test module (a random name starting with ``prefix`` and a
    random /24 of ``subnet16``, e.g. "172.31"); yields the state; `cluster down` afterwards must
    report no problem. ``options`` go to :func:`cluster_up` (node_args, controller_args …)."""
    require_binary("kubectl")
    require_binary("nft")
    state_dir = str(base / "c")
    try:
        yield cluster_up(state_dir=state_dir, nodes=nodes, name=prefix + uuid.uuid4().hex[:5],
                         subnet=f"{subnet16}.{random.randint(1, 250)}.0/24", isolated=True,
                         cluster_cidr=cluster_cidr, timeout=timeout, **options)
    finally:
        problems = cluster_down(state_dir=state_dir)
        assert problems == [], problems
