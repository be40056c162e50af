"""`tug cluster proxy`: the service proxy (and optionally the cluster DNS) without a node agent."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any


def proxy(args: list[str], ctx: Any) -> int:
    p = argparse.ArgumentParser(prog="tug cluster proxy",
                                description="Program this network namespace's nftables table `ip tugboat-svc` from "
                                            "Services and EndpointSlices; optionally serve the cluster DNS.")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--cluster-cidr", default=None, help="sources outside it are masqueraded to ClusterIPs")
    p.add_argument("--dns-listen", default=None, help="HOST:PORT to serve cluster DNS on (UDP+TCP)")
    p.add_argument("--domain", default="cluster.local")
    p.add_argument("--log-level", default="WARNING")
    o = p.parse_args(args)
    logging.basicConfig(level=getattr(logging, o.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from tugboat.cluster.client import Informer
    from tugboat.cluster.client import resources as R
    from tugboat.cluster.client.rest import ApiClient
    from tugboat.cluster.proxy.dns import ClusterDNS
    from tugboat.cluster.proxy.model import ServiceModel
    from tugboat.cluster.proxy.nftables import ServiceProxy

    async def main() -> None:
        client = ApiClient.from_kubeconfig(o.kubeconfig)
        model = ServiceModel()
        svcs, slices = Informer(client, R.SERVICES), Informer(client, R.ENDPOINTSLICES)
        model.attach(svcs, slices)
        sp = ServiceProxy(model, cluster_cidr=o.cluster_cidr)
        task = asyncio.create_task(sp.run())
        dns = None
        if o.dns_listen:
            host, _, port = o.dns_listen.rpartition(":")
            dns = ClusterDNS(model, domain=o.domain)
            await dns.start(host or "127.0.0.1", int(port))
        svcs.start()
        slices.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        task.cancel()
        await svcs.stop()
        await slices.stop()
        if dns is not None:
            await dns.stop()
        sp.cleanup()
        await client.close()

    asyncio.run(main())
    return 0
