"""`tug cluster up --nodes 3 --isolated` on a quiet and on a loaded machine, and through a frozen API server.

    .venv/bin/python bench/clusterup_load.py [--burners 8] [--rounds 2] [--freeze 35]

Prints the time from ``cluster_up`` to every node Ready: with no extra load, then with BURNERS
busy-looping Python processes (2-core VM: the cluster's processes get a fraction of the CPU, as in
CI), then with the API server SIGSTOPped for FREEZE seconds right after the first node agent is
spawned (longer than the agents' 30 s request timeout: each start-up request in flight times out
and is retried; before the start-up retries this killed the agent with ``Error: TimeoutError:``).
No peer figure is paired: kind/k3d start containers of a prebuilt node image, not comparable here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from tugboat.cluster.up import cluster_down, cluster_up


def one(freeze: float = 0) -> tuple[float, str]:
    base = tempfile.mkdtemp(prefix="bench-clusterup-", dir="/var/tmp")
    sd = os.path.join(base, "c")
    name = "b" + uuid.uuid4().hex[:5]
    out: dict[str, object] = {}

    def up() -> None:
        t0 = time.monotonic()
        try:
            cluster_up(state_dir=sd, nodes=3, name=name, subnet=f"172.24.{random.randint(1, 250)}.0/24",
                       isolated=True, cluster_cidr="10.240.0.0/16", timeout=300)
            out["took"] = time.monotonic() - t0
        except Exception as e:
            out["error"] = str(e).splitlines()[0]

    t = threading.Thread(target=up)
    t.start()
    api = None
    if freeze:
        while t.is_alive():
            try:
                with open(os.path.join(sd, "cluster.json")) as f:
                    procs = {p["name"]: p["pid"] for p in json.load(f)["processes"]}
            except (OSError, ValueError, KeyError):
                procs = {}
            if f"{name}-node-1" in procs:
                api = procs["apiserver"]
                os.kill(api, signal.SIGSTOP)
                try:
                    time.sleep(freeze)
                finally:
                    os.kill(api, signal.SIGCONT)
                break
            time.sleep(0.02)
    t.join()
    retries = 0
    if "took" in out:
        logs = os.path.join(sd, "logs")
        for f in os.listdir(logs):
            if "node" in f:
                with open(os.path.join(logs, f)) as fh:
                    retries += fh.read().count("trying again in")
    cluster_down(state_dir=sd)
    os.rmdir(base)
    if "took" in out:
        return float(out["took"]), f"{retries} start-up request(s) retried"  # type: ignore[arg-type]
    return -1.0, str(out.get("error"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--burners", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--freeze", type=float, default=35)
    o = ap.parse_args()
    for r in range(o.rounds):
        took, note = one()
        print(f"quiet            round {r}: up in {took:5.1f} s  ({note})", flush=True)
    burners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(o.burners)]
    try:
        for r in range(o.rounds):
            took, note = one()
            print(f"{o.burners} CPU burners    round {r}: up in {took:5.1f} s  ({note})", flush=True)
    finally:
        for p in burners:
            p.kill()
            p.wait()
    if o.freeze:
        took, note = one(o.freeze)
        print(f"API frozen {o.freeze:.0f} s   round 0: up in {took:5.1f} s  ({note})", flush=True)


if __name__ == "__main__":
    main()
