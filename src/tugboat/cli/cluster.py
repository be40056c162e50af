"""`tug cluster …`: the cluster components, one subcommand each.

The dispatch is the table :data:`SUBCOMMANDS` (name -> "module:function"); each function has the
signature ``fn(args: list[str], ctx) -> int`` and parses its own options. Other areas append their
components here (controller-manager, scheduler, simulate-nodes, …).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

SUBCOMMANDS: dict[str, str] = {
    "apiserver": "tugboat.cli.cluster:apiserver",
    "kubeconfig": "tugboat.cli.cluster:kubeconfig",  # apiserver area: client certs for components
    "controller-manager": "tugboat.cluster.controllers.cli:controller_manager",  # control-plane area
    "scheduler": "tugboat.cluster.scheduler.cli:scheduler",  # control-plane area
    "simulate-nodes": "tugboat.cluster.sim.cli:simulate_nodes",  # control-plane area
    "node": "tugboat.cluster.node.cli:node",  # nodes area
    "up": "tugboat.cluster.up:up",  # nodes area
    "down": "tugboat.cluster.up:down",  # nodes area
    "join": "tugboat.cluster.up:join",  # nodes area
    "proxy": "tugboat.cluster.proxy.cli:proxy",  # nodes area
}

USAGE = "Usage:  tug cluster COMMAND [OPTIONS]\n\nCommands:\n"


def main(args: list[str], ctx: Any) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE + "".join(f"  {n}\n" for n in sorted(SUBCOMMANDS)))
        return 0
    target = SUBCOMMANDS.get(args[0])
    if target is None:
        sys.stderr.write(f"tug cluster: unknown command {args[0]!r}\n" + USAGE +
                         "".join(f"  {n}\n" for n in sorted(SUBCOMMANDS)))
        return 1
    mod, fn = target.split(":")
    return int(getattr(importlib.import_module(mod), fn)(args[1:], ctx) or 0)


def apiserver(args: list[str], ctx: Any) -> int:
    p = argparse.ArgumentParser(prog="tug cluster apiserver",
                                description="Run the Kubernetes API server (HTTPS; cluster CA and admin kubeconfig "
                                            "are created in the data dir on first start).")
    p.add_argument("--listen", default="127.0.0.1:6443", help="HOST:PORT to serve HTTPS on (default 127.0.0.1:6443)")
    p.add_argument("--datastore", default=None,
                   help="sqlite:///PATH (default: DATA_DIR/state.db) or etcd://HOST:PORT[,HOST:PORT…]")
    p.add_argument("--data-dir", default=None, help="certificates, kubeconfigs, SQLite state (default ROOT/cluster)")
    p.add_argument("--log-level", default="WARNING")
    o = p.parse_args(args)
    import asyncio
    import logging
    import os

    logging.basicConfig(level=getattr(logging, o.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = o.data_dir or os.path.join(ctx.data_root, "cluster")
    from tugboat.cluster.apiserver.server import serve

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(o.listen, o.datastore, data_dir))
    else:
        uvloop.run(serve(o.listen, o.datastore, data_dir))
    return 0


def kubeconfig(args: list[str], ctx: Any) -> int:
    p = argparse.ArgumentParser(prog="tug cluster kubeconfig",
                                description="Issue a client certificate signed by the cluster CA and write a kubeconfig "
                                            "for it (for controllers, schedulers, node agents).")
    p.add_argument("--data-dir", default=None, help="the API server's data dir (default ROOT/cluster)")
    p.add_argument("--user", required=True, help="user name, e.g. system:node:node-1 or system:kube-scheduler")
    p.add_argument("--group", action="append", default=[], help="group (repeatable), e.g. system:nodes")
    p.add_argument("--server", default="https://127.0.0.1:6443")
    p.add_argument("-o", "--output", required=True, help="where to write the kubeconfig")
    o = p.parse_args(args)
    import os

    from tugboat.cluster.apiserver.certs import ClusterPKI

    data_dir = o.data_dir or os.path.join(ctx.data_root, "cluster")
    pki = ClusterPKI(data_dir)
    if not os.path.exists(pki.ca_cert):
        sys.stderr.write(f"no cluster CA in {data_dir}; start `tug cluster apiserver --data-dir {data_dir}` first\n")
        return 1
    base = "client-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in o.user)
    cert, key = pki.issue_client(o.user, o.group, base)
    pki.write_client_kubeconfig(o.output, o.server, cert, key, o.user)
    sys.stdout.write(f"{o.output}\n")
    return 0
