"""`tug cluster node`: run a node agent against an API server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import time
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
    p.add_argument("--tls-cert-file", default=None,
                   help="serving certificate of the kubelet API (default: requested from the cluster through a "
                        "CertificateSigningRequest and kept in AGENT_STATE/pki)")
    p.add_argument("--tls-private-key-file", default=None, help="its key")
    p.add_argument("--client-ca-file", default=None,
                   help="CA of the client certificates accepted (default: the kubeconfig's CA, else the CA "
                        "returned with the serving certificate)")
    p.add_argument("--ca-cert-hash", default=None,
                   help="sha256:<hex> pin of the cluster CA's public key (checked when the CA is learned)")
    p.add_argument("--pin-kubeconfig-ca", action="store_true",
                   help="when the kubeconfig does not verify the server, write the CA learned with the serving "
                        "certificate into it (what `tug cluster join` asks for)")
    p.add_argument("--insecure-http", action="store_true",
                   help="serve the kubelet API as plain HTTP without authentication (tests only)")
    p.add_argument("--request-timeout", type=float, default=30.0,
                   help="seconds to wait for the API server's answer to one request (lists: at least 120)")
    p.add_argument("--startup-timeout", type=float, default=300.0,
                   help="seconds start-up (serving certificate, registration, first lists) keeps retrying "
                        "requests that time out, fail to connect or get 5xx/429, before giving up")
    p.add_argument("--start-slots", type=int, default=8,
                   help="pods being started at once (sandbox to containers started); more queue in order")
    p.add_argument("--log-level", default="WARNING")
    o = p.parse_args(args)
    logging.basicConfig(level=getattr(logging, o.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine_root = o.engine_root or ctx.data_root
    agent_root = o.agent_root or os.path.join(engine_root, "node")
    os.makedirs(agent_root, exist_ok=True)
    labels = dict(kv.split("=", 1) for kv in o.label)
    from tugboat.cluster.client.rest import ApiClient, failure
    from tugboat.cluster.node.agent import NodeAgent
    from tugboat.engine.engine import Engine
    from tugboat.errors import Unavailable

    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + o.startup_timeout
        engine = await loop.run_in_executor(None, Engine, engine_root)
        client = ApiClient.from_kubeconfig(o.kubeconfig, request_timeout=o.request_timeout)
        name = o.name or socket.gethostname().lower()
        agent: NodeAgent | None = None
        stop = asyncio.Event()
        starting = asyncio.current_task()

        def on_signal() -> None:
            stop.set()
            if starting is not None:  # a stop during start-up (`tug cluster down`) ends the retries at once
                starting.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)

        async def give_up() -> None:
            if agent is not None:
                with contextlib.suppress(Exception):
                    await agent.stop(remove_pods=o.cleanup_on_exit)
            await client.close()
            await loop.run_in_executor(None, engine.shutdown)

        try:
            kubelet_ssl = None if o.insecure_http else await _serving_tls(o, client, name, agent_root, deadline)
            if kubelet_ssl is not None and o.pin_kubeconfig_ca and _pin_ca(o.kubeconfig,
                                                                           os.path.join(agent_root, "pki", "ca.crt")):
                await client.close()
                # from now on the API server is verified
                client = ApiClient.from_kubeconfig(o.kubeconfig, request_timeout=o.request_timeout)
            agent = NodeAgent(client, name=name, engine=engine, root=agent_root,
                              pod_cidr=o.pod_cidr, cluster_cidr=o.cluster_cidr, node_ip=o.node_ip, port=o.port,
                              listen_host=o.listen, dns=not o.no_dns, proxy=not o.no_proxy,
                              lease_renew=o.lease_renew, metrics_period=o.metrics_period, labels=labels,
                              bridge=o.bridge, kubelet_ssl=kubelet_ssl,
                              startup_timeout=max(1.0, deadline - time.monotonic()),
                              start_slots=max(1, o.start_slots))
            await agent.start()
            starting = None
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            await give_up()
            return
        except Exception as e:
            # whatever still escapes start-up is reported with the node, its type and its request
            await give_up()
            raise Unavailable(f"node {name}: start-up failed: {failure(e)}") from e
        print(f"tug cluster node: {agent.name} ready (pod CIDR {agent.pod_cidr}, node IP {agent.node_ip}, "
              f"kubelet port {agent.port})", flush=True)
        await stop.wait()
        await agent.stop(remove_pods=o.cleanup_on_exit)
        await client.close()
        await loop.run_in_executor(None, engine.shutdown)

    asyncio.run(main())
    return 0


async def _serving_tls(o: argparse.Namespace, client: Any, name: str, agent_root: str,
                       deadline: float) -> ssl.SSLContext:
    """The kubelet API's TLS: given files, or a serving certificate obtained from the cluster."""
    from tugboat.cluster.client.kubeconfig import load_kubeconfig
    from tugboat.cluster.node.agent import default_node_ip
    from tugboat.cluster.node.tls import bootstrap_serving_cert, server_ssl_context

    if o.tls_cert_file or o.tls_private_key_file:
        if not (o.tls_cert_file and o.tls_private_key_file and o.client_ca_file):
            raise SystemExit("tug cluster node: --tls-cert-file needs --tls-private-key-file and --client-ca-file")
        return server_ssl_context(o.tls_cert_file, o.tls_private_key_file, o.client_ca_file)
    ca_pem: bytes | None = None
    if o.client_ca_file:
        with open(o.client_ca_file, "rb") as f:
            ca_pem = f.read()
    else:
        kc = load_kubeconfig(o.kubeconfig)
        if kc.ca_data and not kc.insecure:
            ca_pem = kc.ca_data
    node_ip = o.node_ip or default_node_ip()
    cert, key, ca = await bootstrap_serving_cert(client, name, [node_ip, name], os.path.join(agent_root, "pki"),
                                                 ca_pem=ca_pem, ca_hash=o.ca_cert_hash,
                                                 timeout=max(1.0, deadline - time.monotonic()))
    return server_ssl_context(cert, key, ca)


def _pin_ca(kubeconfig: str, ca_file: str) -> bool:
    """Make an insecure kubeconfig verify the server with ``ca_file``; True when it was changed."""
    import yaml

    from tugboat.util.fs import write_atomic

    with open(kubeconfig) as f:
        doc = yaml.safe_load(f)
    changed = False
    for c in doc.get("clusters") or []:
        cl = c.get("cluster") or {}
        if cl.get("insecure-skip-tls-verify") and os.path.exists(ca_file):
            cl.pop("insecure-skip-tls-verify")
            cl["certificate-authority"] = os.path.abspath(ca_file)
            changed = True
    if changed:
        write_atomic(kubeconfig, yaml.safe_dump(doc, sort_keys=False).encode(), mode=0o600)
    return changed
