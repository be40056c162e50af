"""A node agent's start-up outlasts an API server that stops answering for a while (as a busy CI
machine makes it), and when it finally gives up it says which node, which step and which request.

The API server is really frozen (SIGSTOP: the kernel still accepts connections, nothing answers),
the node agents are the real `tug cluster node`; requests time out after 1 s here (``--request-timeout``)
so that a few seconds of freezing are many timed-out requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import require_binary
from tugboat.cluster.up import cluster_down, cluster_up

pytestmark = pytest.mark.slow


def _kubeconfig(path: Path, server: str) -> str:
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
           "users": [{"name": "u", "user": {"token": "t"}}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}], "current-context": "c"}
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("tls", [False, True], ids=["insecure-http", "serving-cert"])
def test_a_silent_api_server_ends_start_up_with_the_node_step_and_request_named(tmp_path: Path, tls: bool) -> None:
    # a listening socket nobody accepts on: connections complete, no answer ever comes
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        server = f"https://127.0.0.1:{hole.getsockname()[1]}"
        kc = _kubeconfig(tmp_path / "kc", server)
        root = tmp_path / "root"
        argv = [sys.executable, "-m", "tugboat.cli.main", "--root", str(root), "cluster", "node",
                "--kubeconfig", kc, "--name", "bh1", "--node-ip", "127.0.0.1", "--listen", "127.0.0.1",
                "--port", "0", "--pod-cidr", "10.250.1.0/24", "--no-dns", "--no-proxy",
                "--request-timeout", "0.5", "--startup-timeout", "2.5", *([] if tls else ["--insecure-http"])]
        env = {k: v for k, v in os.environ.items() if k != "TUG_DEBUG"}
        t0 = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                           env={**env, "TUG_ENGINE_NO_NETWORK": "1"})
        took = time.monotonic() - t0
    assert p.returncode == 1, (p.stdout, p.stderr)
    err = p.stderr
    # each failed try is logged while start-up goes on
    assert err.count("no answer within 0.5s; trying again in") >= 2, err
    last = err.strip().splitlines()[-1]
    if tls:
        step = r"creating certificate signing request csr-bh1-[0-9a-f]{6}"
        request = "POST /apis/certificates.k8s.io/v1/certificatesigningrequests"
    else:
        step, request = "registering the node", "POST /api/v1/nodes"
    assert re.fullmatch(rf"Error: node bh1: start-up failed: {step}: still failing after \d+ attempts in "
                        rf"\d+s; the last: ApiTimeout: {re.escape(request)} to the API server {re.escape(server)}: "
                        r"no answer within 0\.5s", last), last
    assert "TimeoutError:" not in err and "Traceback" not in err
    assert took < 30


def test_sigterm_ends_a_retrying_start_up_at_once(tmp_path: Path) -> None:
    """`tug cluster down` stops agents with SIGTERM: one still retrying its start-up stops then, not at
    its start-up deadline."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        kc = _kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{hole.getsockname()[1]}")
        argv = [sys.executable, "-m", "tugboat.cli.main", "--root", str(tmp_path / "root"), "cluster", "node",
                "--kubeconfig", kc, "--name", "bh2", "--node-ip", "127.0.0.1", "--listen", "127.0.0.1",
                "--port", "0", "--pod-cidr", "10.250.2.0/24", "--no-dns", "--no-proxy", "--insecure-http",
                "--request-timeout", "0.5", "--startup-timeout", "120"]
        env = {k: v for k, v in os.environ.items() if k != "TUG_DEBUG"}
        errf = tmp_path / "stderr"
        with open(errf, "w") as err:
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env={**env, "TUG_ENGINE_NO_NETWORK": "1"})
        try:
            # wait until it is retrying (a logged retry), then stop it
            deadline = time.monotonic() + 30
            while "trying again in" not in errf.read_text() and time.monotonic() < deadline and p.poll() is None:
                time.sleep(0.1)
            seen = errf.read_text()
            assert "trying again in" in seen, seen
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            rc = p.wait(20)
            took = time.monotonic() - t0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        rest = errf.read_text()[len(seen):]
    assert rc == 0 and took < 5, (rc, took, seen + rest)
    assert "Traceback" not in seen + rest and "Error" not in rest


def _flap(api_pid: int, until: float, stopped: threading.Event) -> None:
    """Freeze the API server 4 s (the agents' first requests come in that time), let it answer 0.3 s,
    freeze 3 s, …, until ``until``: a request sent more than 1 s before a thaw times out."""
    first = True
    try:
        while time.monotonic() < until:
            os.kill(api_pid, signal.SIGSTOP)
            stopped.set()
            time.sleep(4.0 if first else 3.0)
            first = False
            os.kill(api_pid, signal.SIGCONT)
            time.sleep(0.3)
    finally:
        os.kill(api_pid, signal.SIGCONT)


def test_node_agents_start_through_a_freezing_api_server(tmp_path: Path) -> None:
    require_binary("nft")
    require_binary("kubectl")
    name = "z" + uuid.uuid4().hex[:5]
    state_dir = str(tmp_path / "c")
    result: dict[str, Any] = {}

    def up() -> None:
        try:
            result["state"] = cluster_up(state_dir=state_dir, nodes=2, name=name, isolated=True,
                                         subnet=f"172.25.{random.randint(1, 250)}.0/24", cluster_cidr="10.241.0.0/16",
                                         node_args=["--request-timeout", "1"], timeout=120)
        except Exception as e:  # reported below
            result["error"] = e

    t = threading.Thread(target=up)
    flapper: threading.Thread | None = None
    stopped = threading.Event()
    api_pid = None
    try:
        t.start()
        # freeze from the moment the first node agent is spawned, for 10 s
        deadline = time.monotonic() + 60
        while t.is_alive() and time.monotonic() < deadline:
            try:
                with open(os.path.join(state_dir, "cluster.json")) as f:
                    st = json.load(f)
            except (OSError, ValueError):
                st = {"processes": []}
            procs = {p["name"]: p["pid"] for p in st["processes"]}
            if f"{name}-node-1" in procs:
                api_pid = procs["apiserver"]
                flapper = threading.Thread(target=_flap, args=(api_pid, time.monotonic() + 10, stopped))
                flapper.start()
                break
            time.sleep(0.02)
        t.join(180)
        if flapper is not None:
            flapper.join(30)
        assert stopped.is_set(), f"the API server was never frozen: {result}"
        assert "error" not in result, result.get("error")
        state = result["state"]
        logs = {n["name"]: (Path(state_dir) / "logs" / f"{n['name']}.log").read_text() for n in state["nodes"]}
        # the agents met timed-out requests, retried them, and are up and running
        retried = "\n".join(line for text in logs.values() for line in text.splitlines()
                            if "no answer within 1s" in line)
        assert re.search(r"ApiTimeout: (GET|POST|PUT|PATCH) /\S+ to the API server https://", retried), logs
        for n in state["nodes"]:
            assert f"tug cluster node: {n['name']} ready" in logs[n["name"]], logs[n["name"]]
        for p in state["processes"]:
            os.kill(p["pid"], 0)
        ready = subprocess.run(["kubectl", "get", "nodes", "-o", "jsonpath={.items[*].status.conditions[?(@.type=="
                                "\"Ready\")].status}"], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "KUBECONFIG": state["kubeconfig"]})
        assert ready.stdout.split() == ["True", "True"], ready
    finally:
        if api_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(api_pid, signal.SIGCONT)
        t.join(180)
        problems = cluster_down(state_dir=state_dir)
        assert problems == [], problems
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert f"tugc-{name}" not in links
    assert f"tug-{name}-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
