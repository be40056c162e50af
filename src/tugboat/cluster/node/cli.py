"""`tug cluster node`: run a node agent against an API server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from typing import Any


def node(args: list[str], ctx: Any) -> int:
    p = argparse.ArgumentParser(prog="tug cluster node",
                                description="Run a node agent: registers a Node, runs the pods bound to it through "
                                            "the engine, serves logs/exec/port-forward, service proxy and cluster DNS.")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--name", default=None, help="node name (default: the host name)")
    p.add_argument("--engine-root", default=None, help="engine data root (default ROOT)")
    p.add_argument("--root", dest="agent_root", default=None, help="node agent state (default ENGINE_ROOT/node)")
    p.add_argument("--pod-cidr", default=None, help="this node's pod subnet (default: Node.spec.podCIDR or derived)")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16")
    p.add_argument("--node-ip", default=None, help="InternalIP to advertise (default: first global address)")
    p.add_argument("--port", type=int, default=10250, help="kubelet API port (0: any)")
    p.add_argument("--listen", default="0.0.0.0", help="kubelet API address")
    p.add_argument("--bridge", default="tugpods0", help="name of the node's pod bridge")
    p.add_argument("--cleanup-on-exit", action="store_true",
                   help="on SIGTERM remove this node's pods, pod network and rules (used by `tug cluster down`)")
    p.add_argument("--no-dns", action="store_true", help="do not run the cluster DNS on the pod gateway")
    p.add_argument("--no-proxy", action="store_true", help="do not program service rules (nftables)")
    p.add_argument("--lease-renew", type=float, default=10.0)
    p.add_argument("--metrics-period", type=float, default=15.0)
    p.add_argument("--label", action="append", default=[], help="K=V node label (repeatable)")
    p.add_argument("--log-level", default="WARNING")
    o = p.parse_args(args)
    logging.basicConfig(level=getattr(logging, o.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine_root = o.engine_root or ctx.data_root
    agent_root = o.agent_root or os.path.join(engine_root, "node")
    os.makedirs(agent_root, exist_ok=True)
    labels = dict(kv.split("=", 1) for kv in o.label)
    from tugboat.cluster.client.rest import ApiClient
    from tugboat.cluster.node.agent import NodeAgent
    from tugboat.engine.engine import Engine

    async def main() -> None:
        loop = asyncio.get_running_loop()
        engine = await loop.run_in_executor(None, Engine, engine_root)
        client = ApiClient.from_kubeconfig(o.kubeconfig)
        agent = NodeAgent(client, name=o.name or socket.gethostname().lower(), engine=engine, root=agent_root,
                          pod_cidr=o.pod_cidr, cluster_cidr=o.cluster_cidr, node_ip=o.node_ip, port=o.port,
                          listen_host=o.listen, dns=not o.no_dns, proxy=not o.no_proxy, lease_renew=o.lease_renew,
                          metrics_period=o.metrics_period, labels=labels, bridge=o.bridge)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await agent.start()
        print(f"tug cluster node: {agent.name} ready (pod CIDR {agent.pod_cidr}, node IP {agent.node_ip}, "
              f"kubelet port {agent.port})", flush=True)
        await stop.wait()
        await agent.stop(remove_pods=o.cleanup_on_exit)
        await client.close()
        await loop.run_in_executor(None, engine.shutdown)

    asyncio.run(main())
    return 0
