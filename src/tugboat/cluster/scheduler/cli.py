"""``tug cluster scheduler --kubeconfig F``."""

from __future__ import annotations

import argparse
import logging
from typing import Any


def scheduler(args: list[str], ctx: Any) -> int:
    p = argparse.ArgumentParser(prog="tug cluster scheduler", description="Assign pending pods to nodes.")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--leader-elect", default="true", choices=["true", "false"])
    p.add_argument("--leader-elect-lease-duration", type=float, default=15.0)
    p.add_argument("--leader-elect-renew-deadline", type=float, default=10.0)
    p.add_argument("--leader-elect-retry-period", type=float, default=2.0)
    p.add_argument("--identity", default=None)
    p.add_argument("--bind-concurrency", type=int, default=64)
    p.add_argument("--percentage-of-nodes-to-score", type=int, default=0)
    p.add_argument("--log-level", default="WARNING")
    o = p.parse_args(args)
    logging.basicConfig(level=getattr(logging, o.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from tugboat.cluster.client.leaderelection import LeaderElector
    from tugboat.cluster.client.rest import ApiClient
    from tugboat.cluster.controllers.cli import _run
    from tugboat.cluster.scheduler.scheduler import Scheduler

    async def run() -> None:
        client = ApiClient.from_kubeconfig(o.kubeconfig, max_connections=o.bind_concurrency + 8,
                                           user_agent="tug-scheduler")

        async def work() -> None:
            await Scheduler(client, bind_concurrency=o.bind_concurrency,
                            percentage_of_nodes_to_score=o.percentage_of_nodes_to_score).run()

        try:
            if o.leader_elect == "true":
                el = LeaderElector(client, "kube-scheduler", "kube-system", identity=o.identity,
                                   lease_duration=o.leader_elect_lease_duration,
                                   renew_deadline=o.leader_elect_renew_deadline,
                                   retry_period=o.leader_elect_retry_period)
                while True:
                    await el.run(work)
            else:
                await work()
        finally:
            await client.close()

    return _run(run)
