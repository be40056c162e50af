"""`tug info`, `tug version`, `tug events`, `tug system …`, `tug volume …` over the daemon."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from tugboat.cli.client import q
from tugboat.cli.containers import (
    FlagError,
    _client,
    _daemon_errors,
    _err,
    _fmt,
    _print_inspect,
    _render_rows,
)
from tugboat.cli.flags import filter_map, parse


@_daemon_errors
def cmd_version(args: list[str], ctx: Any) -> int:
    o, _ = parse(args, {"-f|--format": str})
    from tugboat import __version__

    client_info = {"Version": __version__, "ApiVersion": "1.50", "Os": "linux", "Arch": "amd64"}
    try:
        server = _client(ctx).get("/version")
    except Exception as exc:
        server = None
        err = exc
    if o["format"]:
        sys.stdout.write(_fmt().render(o["format"], {"Client": client_info, "Server": server}) + "\n")
        return 0
    sys.stdout.write(f"Client:\n Version:           {__version__}\n API version:       1.50\n OS/Arch:           linux/amd64\n\n")
    if server is None:
        _err(str(err))
        return 1
    sys.stdout.write(f"Server: {server.get('Platform', {}).get('Name', '')}\n Engine:\n"
                     f"  Version:          {server.get('Version')}\n"
                     f"  API version:      {server.get('ApiVersion')} (minimum version {server.get('MinAPIVersion')})\n"
                     f"  OS/Arch:          {server.get('Os')}/{server.get('Arch')}\n"
                     f"  Kernel:           {server.get('KernelVersion')}\n")
    return 0


@_daemon_errors
def cmd_info(args: list[str], ctx: Any) -> int:
    o, _ = parse(args, {"-f|--format": str})
    info = _client(ctx).get("/info")
    if o["format"]:
        sys.stdout.write(_fmt().render(o["format"], info) + "\n")
        return 0
    w = sys.stdout.write
    w("Server:\n")
    w(f" Containers: {info['Containers']}\n  Running: {info['ContainersRunning']}\n"
      f"  Paused: {info['ContainersPaused']}\n  Stopped: {info['ContainersStopped']}\n")
    w(f" Images: {info['Images']}\n Server Version: {info['ServerVersion']}\n Storage Driver: {info['Driver']}\n")
    w(f" Logging Driver: {info['LoggingDriver']}\n Cgroup Driver: {info['CgroupDriver']}\n"
      f" Cgroup Version: {info['CgroupVersion']}\n")
    w(f" Kernel Version: {info['KernelVersion']}\n Operating System: {info['OperatingSystem']}\n"
      f" OSType: {info['OSType']}\n Architecture: {info['Architecture']}\n CPUs: {info['NCPU']}\n"
      f" Total Memory: {info['MemTotal'] / 1024**3:.2f}GiB\n Name: {info['Name']}\n ID: {info['ID']}\n"
      f" Docker Root Dir: {info['DockerRootDir']}\n Live Restore Enabled: {str(info['LiveRestoreEnabled']).lower()}\n")
    for warn in info.get("Warnings") or []:
        _err(warn)
    return 0


@_daemon_errors
def cmd_events(args: list[str], ctx: Any) -> int:
    from tugboat.engine.util import parse_time

    o, _ = parse(args, {"-f|--filter": list, "--format": str, "--since": str, "--until": str})
    query: dict[str, Any] = {}
    if o["since"]:
        query["since"] = f"{parse_time(o['since']):.9f}"
    if o["until"]:
        query["until"] = f"{parse_time(o['until']):.9f}"
    if o["filter"]:
        query["filters"] = json.dumps(filter_map(o["filter"]))
    for ev in _client(ctx).json_stream("GET", "/events", query=query):
        if o["format"]:
            out = json.dumps(ev) if o["format"] == "json" else _fmt().render(o["format"], ev)
            sys.stdout.write(out + "\n")
        else:
            ts = ev.get("timeNano", 0)
            t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts / 1e9)) + f".{ts % 1_000_000_000:09d}Z"
            attrs = ", ".join(f"{k}={v}" for k, v in sorted((ev.get("Actor", {}).get("Attributes") or {}).items()))
            sys.stdout.write(f"{t} {ev['Type']} {ev['Action']} {ev['Actor']['ID']} ({attrs})\n")
        sys.stdout.flush()
    return 0


@_daemon_errors
def cmd_system(args: list[str], ctx: Any) -> int:
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write("Usage:  tug system COMMAND\n\nManage tugboat\n\nCommands:\n  check   Check the image store\n"
                         "  df      Show disk usage\n  events  Get real time events from the server\n"
                         "  info    Display system-wide information\n  prune   Remove unused data\n")
        return 0
    sub, rest = args[0], args[1:]
    if sub in ("df", "prune"):
        from tugboat.cli.client import DaemonUnreachable

        try:
            return _system_df(rest, ctx) if sub == "df" else _system_prune(rest, ctx)
        except DaemonUnreachable:
            # no daemon: the image store on the data root is all there is to report or prune
            from tugboat.cli import images

            return images.system_df(rest, ctx) if sub == "df" else images.system_prune(rest, ctx)
    if sub == "events":
        return cmd_events(rest, ctx)
    if sub == "info":
        return cmd_info(rest, ctx)
    if sub == "check":
        from tugboat.cli.images import system_check

        return system_check(rest, ctx)
    _err(f"tug: 'system {sub}' is not a tug command.\nSee 'tug system --help'")
    return 1


def _system_df(args: list[str], ctx: Any) -> int:
    o, _ = parse(args, {"-v|--verbose": bool, "--format": str})
    df = _client(ctx).get("/system/df")
    f = _fmt()
    imgs, conts, vols = df.get("Images") or [], df.get("Containers") or [], df.get("Volumes") or []
    isize = sum(i.get("Size", 0) for i in imgs)
    iactive = sum(1 for i in imgs if i.get("Containers", 0) > 0)
    ireclaim = sum(i.get("Size", 0) for i in imgs if i.get("Containers", 0) == 0)
    csize = sum(c.get("SizeRw", 0) for c in conts)
    cactive = sum(1 for c in conts if c.get("State") == "running")
    vsize = sum((v.get("UsageData") or {}).get("Size", 0) for v in vols)
    vactive = sum(1 for v in vols if (v.get("UsageData") or {}).get("RefCount", 0) > 0)

    def pct(a: int, b: int) -> str:
        return f"{f.human_size(a)} ({int(a * 100 / b) if b else 0}%)"

    rows = [
        {"Type": "Images", "TotalCount": len(imgs), "Active": iactive, "Size": f.human_size(isize), "Reclaimable": pct(ireclaim, isize)},
        {"Type": "Containers", "TotalCount": len(conts), "Active": cactive, "Size": f.human_size(csize), "Reclaimable": pct(csize, csize)},
        {"Type": "Local Volumes", "TotalCount": len(vols), "Active": vactive, "Size": f.human_size(vsize), "Reclaimable": pct(vsize, vsize)},
        {"Type": "Build Cache", "TotalCount": 0, "Active": 0, "Size": "0B", "Reclaimable": "0B"},
    ]
    cols = [("TYPE", "Type"), ("TOTAL", "TotalCount"), ("ACTIVE", "Active"), ("SIZE", "Size"), ("RECLAIMABLE", "Reclaimable")]
    sys.stdout.write(_render_rows(o["format"], rows, cols))
    return 0


def _system_prune(args: list[str], ctx: Any) -> int:
    o, _ = parse(args, {"-a|--all": bool, "-f|--force": bool, "--volumes": bool, "--filter": list})
    if not o["force"]:
        sys.stdout.write("WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n"
                         + ("  - all anonymous volumes not used by at least one container\n" if o["volumes"] else "")
                         + ("  - all images without at least one container associated to them\n" if o["all"] else "  - all dangling images\n")
                         + "\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    client = _client(ctx)
    total = 0
    res = client.post("/containers/prune")
    if res.get("ContainersDeleted"):
        sys.stdout.write("Deleted Containers:\n" + "".join(d + "\n" for d in res["ContainersDeleted"]) + "\n")
    total += res.get("SpaceReclaimed", 0)
    try:
        res = client.post("/networks/prune")
        if res.get("NetworksDeleted"):
            sys.stdout.write("Deleted Networks:\n" + "".join(d + "\n" for d in res["NetworksDeleted"]) + "\n")
    except Exception:
        pass
    if o["volumes"]:
        res = client.post("/volumes/prune")
        if res.get("VolumesDeleted"):
            sys.stdout.write("Deleted Volumes:\n" + "".join(d + "\n" for d in res["VolumesDeleted"]) + "\n")
        total += res.get("SpaceReclaimed", 0)
    filters = {"dangling": {"false" if o["all"] else "true": True}}
    res = client.post("/images/prune", query={"filters": json.dumps(filters)})
    if res.get("ImagesDeleted"):
        sys.stdout.write("Deleted Images:\n" + "".join(
            "".join(f"{k.lower()}: {v}\n" for k, v in d.items()) for d in res["ImagesDeleted"]) + "\n")
    total += res.get("SpaceReclaimed", 0)
    sys.stdout.write(f"Total reclaimed space: {_fmt().human_size(total)}\n")
    return 0


@_daemon_errors
def cmd_volume(args: list[str], ctx: Any) -> int:
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write("Usage:  tug volume COMMAND\n\nManage volumes\n\nCommands:\n  create\n  inspect\n  ls\n  prune\n  rm\n")
        return 0
    sub, rest = args[0], args[1:]
    client = _client(ctx)
    if sub == "create":
        o, pos = parse(rest, {"-d|--driver": str, "--label": list, "-o|--opt": list, "--name": str})
        labels = dict(x.partition("=")[::2] for x in o["label"])
        opts = dict(x.partition("=")[::2] for x in o["opt"])
        name = pos[0] if pos else o["name"]
        v = client.post("/volumes/create", {"Name": name or "", "Driver": o["driver"] or "local",
                                            "DriverOpts": opts, "Labels": labels})
        sys.stdout.write(v["Name"] + "\n")
        return 0
    if sub in ("ls", "list"):
        o, _ = parse(rest, {"-q|--quiet": bool, "-f|--filter": list, "--format": str})
        filters = filter_map(o["filter"])
        vols = client.get("/volumes", query={"filters": json.dumps(filters) if filters else None})["Volumes"] or []
        if o["quiet"]:
            sys.stdout.write("".join(v["Name"] + "\n" for v in vols))
            return 0
        rows = [{"Driver": v["Driver"], "Name": v["Name"], "Mountpoint": v["Mountpoint"], "Scope": v["Scope"],
                 "Labels": ",".join(f"{k}={x}" for k, x in (v.get("Labels") or {}).items())} for v in vols]
        sys.stdout.write(_render_rows(o["format"], rows, [("DRIVER", "Driver"), ("VOLUME NAME", "Name")]))
        return 0
    if sub == "inspect":
        o, pos = parse(rest, {"-f|--format": str})
        results, rc = [], 0
        for n in pos:
            try:
                results.append(client.get(f"/volumes/{q(n)}"))
            except Exception as exc:
                _err(f"Error response from daemon: {exc}")
                rc = 1
        _print_inspect(results, o["format"])
        return rc
    if sub in ("rm", "remove"):
        o, pos = parse(rest, {"-f|--force": bool})
        if not pos:
            raise FlagError('"tug volume rm" requires at least 1 argument.')
        rc = 0
        for n in pos:
            try:
                client.delete(f"/volumes/{q(n)}", query={"force": "1" if o["force"] else None})
                sys.stdout.write(n + "\n")
            except Exception as exc:
                _err(f"Error response from daemon: {exc}")
                rc = 1
        return rc
    if sub == "prune":
        o, _ = parse(rest, {"-f|--force": bool, "-a|--all": bool, "--filter": list})
        if not o["force"]:
            sys.stdout.write("WARNING! This will remove anonymous local volumes not used by at least one container.\n"
                             "Are you sure you want to continue? [y/N] ")
            sys.stdout.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                return 0
        filters = {"all": {"true": True}} if o["all"] else {}
        res = client.post("/volumes/prune", query={"filters": json.dumps(filters) if filters else None})
        if res.get("VolumesDeleted"):
            sys.stdout.write("Deleted Volumes:\n" + "".join(v + "\n" for v in res["VolumesDeleted"]) + "\n")
        sys.stdout.write(f"Total reclaimed space: {_fmt().human_size(res.get('SpaceReclaimed', 0))}\n")
        return 0
    _err(f"tug: 'volume {sub}' is not a tug command.\nSee 'tug volume --help'")
    return 1
