"""Driving a `tug cluster up` cluster with the real kubectl, shared by the cluster test modules."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
