"""`tug network create|ls|inspect|rm|prune|connect|disconnect` — the daemon's Engine API through
:class:`tugboat.cli.client.DaemonClient`."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from tugboat.errors import InvalidArgument, NotFound, TugError

USAGE = """Usage:  tug network COMMAND

Manage networks

Commands:
  connect     Connect a container to a network
  create      Create a network
  disconnect  Disconnect a container from a network
  inspect     Display detailed information on one or more networks
  ls          List networks
  prune       Remove all unused networks
  rm          Remove one or more networks
"""

def _request(host: str, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
    """One API request through the CLI's DaemonClient; parsed JSON (or None); TugError on error."""
    from tugboat.cli.client import DaemonClient

    client = DaemonClient(host)
    try:
        return client.call(method, path, query=query, body=body)
    finally:
        client.close()


def _kv(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        if not k:
            raise InvalidArgument(f"invalid {what} {it!r}")
        out[k] = v
    return out


def _filters(items: list[str]) -> str:
    f: dict[str, dict[str, bool]] = {}
    for it in items:
        k, _, v = it.partition("=")
        f.setdefault(k, {})[v] = True
    return json.dumps(f)


def network(args: list[str], ctx: Any) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    sub, rest = args[0], args[1:]
    host = ctx.daemon_host
    fn = {"create": _create, "ls": _ls, "list": _ls, "inspect": _inspect, "rm": _rm, "remove": _rm,
          "prune": _prune, "connect": _connect, "disconnect": _disconnect}.get(sub)
    if fn is None:
        sys.stderr.write(f"tug network: unknown command {sub!r}\n{USAGE}")
        return 1
    return fn(rest, host)


def _create(args: list[str], host: str) -> int:
    p = argparse.ArgumentParser(prog="tug network create")
    p.add_argument("-d", "--driver", default="bridge")
    p.add_argument("--subnet")
    p.add_argument("--gateway")
    p.add_argument("--ip-range")
    p.add_argument("--internal", action="store_true")
    p.add_argument("--attachable", action="store_true")
    p.add_argument("--label", action="append", default=[])
    p.add_argument("-o", "--opt", action="append", default=[])
    p.add_argument("name")
    a = p.parse_args(args)
    cfg = {k: v for k, v in (("Subnet", a.subnet), ("Gateway", a.gateway), ("IPRange", a.ip_range)) if v}
    body = {"Name": a.name, "Driver": a.driver, "Internal": a.internal, "Attachable": a.attachable,
            "Labels": _kv(a.label, "label"), "Options": _kv(a.opt, "option"),
            "IPAM": {"Driver": "default", "Config": [cfg] if cfg else []}}
    out = _request(host, "POST", "/networks/create", body)
    print(out["Id"])
    return 0


def _ls(args: list[str], host: str) -> int:
    p = argparse.ArgumentParser(prog="tug network ls")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format")
    a = p.parse_args(args)
    query = {"filters": _filters(a.filter)} if a.filter else None
    nets = sorted(_request(host, "GET", "/networks", query=query) or [], key=lambda n: n["Name"])
    if a.quiet:
        for n in nets:
            print(n["Id"] if a.no_trunc else n["Id"][:12])
        return 0
    if a.format == "json":
        for n in nets:
            print(json.dumps(n))
        return 0
    rows = [("NETWORK ID", "NAME", "DRIVER", "SCOPE")]
    rows += [(n["Id"] if a.no_trunc else n["Id"][:12], n["Name"], n["Driver"], n["Scope"]) for n in nets]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("   ".join(c.ljust(widths[i]) for i, c in enumerate(r[:3])) + "   " + r[3])
    return 0


def _inspect(args: list[str], host: str) -> int:
    p = argparse.ArgumentParser(prog="tug network inspect")
    p.add_argument("-f", "--format")
    p.add_argument("names", nargs="+")
    a = p.parse_args(args)
    out, rc = [], 0
    for n in a.names:
        try:
            out.append(_request(host, "GET", "/networks/" + urllib.parse.quote(n, safe="")))
        except NotFound as exc:
            sys.stderr.write(f"Error: {exc}\n")
            rc = 1
    print(json.dumps(out, indent=4))
    return rc


def _rm(args: list[str], host: str) -> int:
    p = argparse.ArgumentParser(prog="tug network rm")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("names", nargs="+")
    a = p.parse_args(args)
    rc = 0
    for n in a.names:
        try:
            _request(host, "DELETE", "/networks/" + urllib.parse.quote(n, safe=""))
            print(n)
        except NotFound as exc:
            if not a.force:
                sys.stderr.write(f"Error response from daemon: {exc}\n")
                rc = 1
        except TugError as exc:
            sys.stderr.write(f"Error response from daemon: {exc}\n")
            rc = 1
    return rc


def _prune(args: list[str], host: str) -> int:
    p = argparse.ArgumentParser(prog="tug network prune")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--filter", action="append", default=[])
    a = p.parse_args(args)
    if not a.force:
        sys.stdout.write("WARNING! This will remove all custom networks not used by at least one container.\n"
                         "Are you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    query = {"filters": _filters(a.filter)} if a.filter else None
    out = _request(host, "POST", "/networks/prune", query=query) or {}
    deleted = out.get("NetworksDeleted") or []
    if deleted:
        print("Deleted Networks:")
        for n in deleted:
            print(n)
    return 0


def _connect(args: list[str], host: str) -> int:
    p = argparse.ArgumentParser(prog="tug network connect")
    p.add_argument("--alias", action="append", default=[])
    p.add_argument("--ip")
    p.add_argument("network")
    p.add_argument("container")
    a = p.parse_args(args)
    epc: dict[str, Any] = {"Aliases": a.alias}
    if a.ip:
        epc["IPAMConfig"] = {"IPv4Address": a.ip}
    _request(host, "POST", f"/networks/{urllib.parse.quote(a.network, safe='')}/connect",
             {"Container": a.container, "EndpointConfig": epc})
    return 0


def _disconnect(args: list[str], host: str) -> int:
    p = argparse.ArgumentParser(prog="tug network disconnect")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("network")
    p.add_argument("container")
    a = p.parse_args(args)
    _request(host, "POST", f"/networks/{urllib.parse.quote(a.network, safe='')}/disconnect",
             {"Container": a.container, "Force": a.force})
    return 0
