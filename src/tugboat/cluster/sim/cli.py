"""``tug cluster simulate-nodes --kubeconfig F --count N``."""

from __future__ import annotations

import argparse
import logging
from typing import Any


def simulate_nodes(args: list[str], ctx: Any) -> int:
    p = argparse.ArgumentParser(prog="tug cluster simulate-nodes",
                                description="Register N simulated nodes that heartbeat and run bound pods (kwok-like).")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--prefix", default="sim-node-")
    p.add_argument("--cpu", default="32")
    p.add_argument("--memory", default="256Gi")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--zones", type=int, default=3)
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE added to every node")
    p.add_argument("--heartbeat-seconds", type=float, default=10.0)
    p.add_argument("--metrics-seconds", type=float, default=5.0)
    p.add_argument("--no-metrics", action="store_true")
    p.add_argument("--log-level", default="WARNING")
    o = p.parse_args(args)
    logging.basicConfig(level=getattr(logging, o.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from tugboat.cluster.client.rest import ApiClient
    from tugboat.cluster.controllers.cli import _run
    from tugboat.cluster.sim.nodes import SimNodes

    labels = dict(kv.split("=", 1) for kv in o.label)

    async def run() -> None:
        client = ApiClient.from_kubeconfig(o.kubeconfig, user_agent="tug-simulate-nodes")
        sim = SimNodes(client, o.count, prefix=o.prefix, cpu=o.cpu, memory=o.memory, max_pods=o.max_pods,
                       zones=o.zones, labels=labels, heartbeat_seconds=o.heartbeat_seconds,
                       metrics=not o.no_metrics, metrics_seconds=o.metrics_seconds)
        try:
            await sim.run()
        finally:
            await client.close()

    return _run(run)
