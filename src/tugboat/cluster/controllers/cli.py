"""``tug cluster controller-manager --kubeconfig F``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any


def controller_manager(args: list[str], ctx: Any) -> int:
    from tugboat.cluster.controllers.manager import CONTROLLERS

    p = argparse.ArgumentParser(prog="tug cluster controller-manager",
                                description="Run the controllers (Deployment, ReplicaSet, GC, …) against an API server.")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--controllers", default="*", help=f"comma-separated subset of: {', '.join(CONTROLLERS)}")
    p.add_argument("--leader-elect", default="true", choices=["true", "false"])
    p.add_argument("--leader-elect-lease-duration", type=float, default=15.0)
    p.add_argument("--leader-elect-renew-deadline", type=float, default=10.0)
    p.add_argument("--leader-elect-retry-period", type=float, default=2.0)
    p.add_argument("--identity", default=None)
    p.add_argument("--node-monitor-grace-period", type=float, default=40.0)
    p.add_argument("--node-monitor-period", type=float, default=5.0)
    p.add_argument("--horizontal-pod-autoscaler-sync-period", type=float, default=15.0)
    p.add_argument("--horizontal-pod-autoscaler-downscale-stabilization", type=float, default=None,
                   help="seconds; overrides the 300 s default and spec.behavior")
    p.add_argument("--concurrent-syncs", type=int, default=4)
    p.add_argument("--local-volume-dir", default=None,
                   help="where provisioned local volumes live on nodes (default ROOT/local-volumes, "
                        "i.e. /var/lib/tugboat/local-volumes)")
    p.add_argument("--cluster-signing-cert-file", default=None,
                   help="CA certificate that signs node serving certificates (CertificateSigningRequests)")
    p.add_argument("--cluster-signing-key-file", default=None, help="its private key")
    p.add_argument("--log-level", default="WARNING")
    o = p.parse_args(args)
    logging.basicConfig(level=getattr(logging, o.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from tugboat.cluster.client.rest import ApiClient
    from tugboat.cluster.controllers.base import Options
    from tugboat.cluster.controllers.manager import ControllerManager

    opts = Options(node_monitor_grace_seconds=o.node_monitor_grace_period, node_monitor_period=o.node_monitor_period,
                   hpa_sync_period=o.horizontal_pod_autoscaler_sync_period,
                   hpa_downscale_window=o.horizontal_pod_autoscaler_downscale_stabilization,
                   workers=o.concurrent_syncs, cluster_signing_cert_file=o.cluster_signing_cert_file,
                   cluster_signing_key_file=o.cluster_signing_key_file)
    import os

    opts.local_volume_dir = o.local_volume_dir or os.path.join(ctx.data_root, "local-volumes")
    names = None if o.controllers in ("*", "") else [n.strip() for n in o.controllers.split(",") if n.strip()]

    async def run() -> None:
        client = ApiClient.from_kubeconfig(o.kubeconfig, user_agent="tug-controller-manager")
        cm = ControllerManager(client, options=opts, controllers=names, identity=o.identity)
        try:
            if o.leader_elect == "true":
                await cm.run_with_leader_election(identity=o.identity, lease_duration=o.leader_elect_lease_duration,
                                                  renew_deadline=o.leader_elect_renew_deadline,
                                                  retry_period=o.leader_elect_retry_period)
            else:
                await cm.run()
        finally:
            await client.close()

    return _run(run)


def _run(fn: Any) -> int:
    import signal

    async def main() -> None:
        task = asyncio.ensure_future(fn())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    return 0
