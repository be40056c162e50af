"""`tug` container commands: docker's names, flags and output, spoken over the Engine API."""

from __future__ import annotations

import os
import sys
import time

from tugboat.cli import fastjson as json
from tugboat.cli.client import DaemonClient, half_close, q
from tugboat.cli.flags import FlagError, filter_map, parse
from tugboat.errors import NotFound, TugError

TYPE_CHECKING = False  # not `typing`: importing it costs start-up time

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def _client(ctx: Any) -> DaemonClient:
    return DaemonClient(ctx.daemon_host)


def _err(msg: str) -> None:
    sys.stderr.write(msg.rstrip("\n") + "\n")


def _daemon_errors(fn: Callable[[list[str], Any], int]) -> Callable[[list[str], Any], int]:
    """Print errors as docker does: ``Error response from daemon: <message>``."""

    def wrapper(args: list[str], ctx: Any) -> int:
        try:
            return fn(args, ctx)
        except FlagError as exc:
            _err(f"{exc}\nSee 'tug {fn.__name__.removeprefix('cmd_').replace('_', ' ')} --help'.")
            return 125 if fn.__name__ in ("cmd_run", "cmd_create") else 1
        except TugError as exc:
            if not getattr(exc, "from_daemon", False):
                _err(exc.message)
            else:
                _err(f"Error response from daemon: {exc.message}")
            return 125 if fn.__name__ in ("cmd_run", "cmd_create") else 1

    wrapper.__name__ = fn.__name__
    return wrapper


# ------------------------------------------------------------------------------------- formatting
def _fmt():  # type: ignore[no-untyped-def]
    from tugboat.cli import image_format

    return image_format


def _render_rows(fmt: str | None, rows: list[dict], default_cols: list[tuple[str, str]],
                 quiet_key: str | None = None) -> str:
    if fmt == "json":  # docker's `--format json`: `{{json .}}` of each row (sorted keys, compact)
        from tugboat.cli.gotemplate import FUNCS, RowContext

        return "".join(FUNCS["json"](RowContext(r)) + "\n" for r in rows)
    if fmt and fmt != "table":
        headers = {k: h for h, k in default_cols}
        return _fmt().format_rows(fmt, rows, headers)
    table = [[h for h, _ in default_cols]]
    for r in rows:
        table.append([str(r.get(k, "")) for _, k in default_cols])
    from tugboat.cli.tabwriter import tabwrite  # here, not at the top: `stop`/`rm` start faster

    return tabwrite(table)


def _ago(ts: float) -> str:
    from tugboat.util.human import human_duration

    return human_duration(time.time() - ts) + " ago"


def _ports_text(ports: list[dict]) -> str:
    out = []
    for p in sorted(ports, key=lambda p: (p.get("PrivatePort", 0), p.get("PublicPort", 0))):
        if p.get("PublicPort"):
            out.append(f"{p.get('IP') or '0.0.0.0'}:{p['PublicPort']}->{p['PrivatePort']}/{p.get('Type', 'tcp')}")
        else:
            out.append(f"{p['PrivatePort']}/{p.get('Type', 'tcp')}")
    return ", ".join(out)


def _trunc_cmd(cmd: str, no_trunc: bool) -> str:
    if not no_trunc and len(cmd) > 20:
        cmd = cmd[:19] + "…"
    return f'"{cmd}"'


# ------------------------------------------------------------------------------------------ ps
PS_USAGE = """Usage:  tug ps [OPTIONS]

List containers

Options:
  -a, --all             Show all containers (default shows just running)
  -f, --filter filter   Filter output based on conditions provided
      --format string   Format output using a custom template
  -n, --last int        Show n last created containers (includes all states)
  -l, --latest          Show the latest created container (includes all states)
      --no-trunc        Don't truncate output
  -q, --quiet           Only display container IDs
  -s, --size            Display total file sizes
"""


@_daemon_errors
def cmd_ps(args: list[str], ctx: Any) -> int:
    o, _ = parse(args, {"-a|--all": bool, "-f|--filter": list, "--format": str, "-n|--last": int,
                        "-l|--latest": bool, "--no-trunc": bool, "-q|--quiet": bool, "-s|--size": bool},
                 usage=PS_USAGE)
    query: dict[str, Any] = {}
    if o["all"]:
        query["all"] = "1"
    if o["latest"]:
        query["limit"] = "1"
    elif o["last"]:
        query["limit"] = str(o["last"])
    if o["size"]:
        query["size"] = "1"
    if o["filter"]:
        query["filters"] = json.dumps(filter_map(o["filter"]))
    items = _client(ctx).get("/containers/json", query=query) or []
    if o["quiet"]:
        sys.stdout.write("".join((c["Id"] if o["no_trunc"] else c["Id"][:12]) + "\n" for c in items))
        return 0
    rows = []
    for c in items:
        size = "0B"
        if o["size"]:
            size = _fmt().human_size(c.get("SizeRw", 0)) + f" (virtual {_fmt().human_size(c.get('SizeRootFs', 0))})"
        rows.append({
            "ID": c["Id"] if o["no_trunc"] else c["Id"][:12],
            "Image": c.get("Image", ""),
            "Command": _trunc_cmd(c.get("Command", ""), o["no_trunc"]),
            "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(c.get("Created", 0))),
            "RunningFor": _ago(c.get("Created", 0)),
            "Ports": _ports_text(c.get("Ports") or []),
            "State": c.get("State", ""),
            "Status": c.get("Status", ""),
            "Size": size,
            "Names": ",".join(n.lstrip("/") for n in c.get("Names") or []),
            "Labels": ",".join(f"{k}={v}" for k, v in sorted((c.get("Labels") or {}).items())),
            "Label": (lambda labels: lambda key: labels.get(key, ""))(c.get("Labels") or {}),
            "LocalVolumes": str(sum(1 for m in c.get("Mounts") or [] if m.get("Driver") == "local")),
            "Mounts": ",".join(m.get("Name") or m.get("Source", "") for m in c.get("Mounts") or []),
            "Networks": ",".join(((c.get("NetworkSettings") or {}).get("Networks") or {}).keys()),
            "Platform": None,
        })
    cols = [("CONTAINER ID", "ID"), ("IMAGE", "Image"), ("COMMAND", "Command"), ("CREATED", "RunningFor"),
            ("STATUS", "Status"), ("PORTS", "Ports"), ("NAMES", "Names")]
    if o["size"]:
        cols.append(("SIZE", "Size"))
    sys.stdout.write(_render_rows(o["format"], rows, cols))
    return 0


# ------------------------------------------------------------------------------- create and run
RUN_SPEC: dict[str, Any] = {
    "-d|--detach": bool, "-i|--interactive": bool, "-t|--tty": bool, "--rm": bool, "--name": str,
    "-e|--env": list, "--env-file": list, "-l|--label": list, "-v|--volume": list, "--mount": list,
    "--tmpfs": list, "-p|--publish": list, "-P|--publish-all": bool, "--net|--network": str,
    "--network-alias": list, "--hostname|-h": str, "--dns": list, "--dns-search": list, "--dns-option": list,
    "--add-host": list, "-w|--workdir": str, "-u|--user": str, "--entrypoint": str, "--restart": str,
    "-m|--memory": str, "--memory-swap": str, "--memory-reservation": str, "--cpus": str, "--cpu-shares|-c": int,
    "--cpuset-cpus": str, "--pids-limit": int, "--ulimit": list, "--read-only": bool, "--cap-add": list,
    "--cap-drop": list, "--security-opt": list, "--privileged": bool, "--init": bool, "--stop-signal": str,
    "--stop-timeout": int, "--log-driver": str, "--log-opt": list, "--expose": list, "--volumes-from": list,
    "--health-cmd": str, "--health-interval": str, "--health-timeout": str, "--health-retries": int,
    "--health-start-period": str, "--no-healthcheck": bool, "--shm-size": str, "--ip": str, "-a|--attach": list,
    "--sig-proxy": bool, "--detach-keys": str, "--pull": str, "--platform": str, "--cidfile": str,
    "--pid": str, "--ipc": str, "--uts": str, "--group-add": list, "--device": list, "--gpus": str,
    "-q|--quiet": bool, "--oom-score-adj": int, "--domainname": str, "--label-file": list,
}


def _duration_ns(s: str | None) -> int:
    if not s:
        return 0
    import re

    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", s):
        total += float(num) * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
    return int(total * 1e9)


def _parse_ports(specs: list[str], exposed: dict[str, dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for spec in specs:
        proto = "tcp"
        if "/" in spec:
            spec, proto = spec.rsplit("/", 1)
        parts = spec.split(":")
        if len(parts) == 1:
            hip, hport, cport = "", "", parts[0]
        elif len(parts) == 2:
            hip, hport, cport = "", parts[0], parts[1]
        else:
            hip, hport, cport = ":".join(parts[:-2]), parts[-2], parts[-1]
        if "-" in cport:
            a, b = cport.split("-")
            hp = hport.split("-") if hport else None
            for k, p in enumerate(range(int(a), int(b) + 1)):
                key = f"{p}/{proto}"
                exposed[key] = {}
                out.setdefault(key, []).append({"HostIp": hip, "HostPort": str(int(hp[0]) + k) if hp else ""})
            continue
        key = f"{int(cport)}/{proto}"
        exposed[key] = {}
        out.setdefault(key, []).append({"HostIp": hip.strip("[]"), "HostPort": hport})
    return out


def _parse_mount(spec: str) -> dict:
    m: dict[str, Any] = {"Type": "volume"}
    for part in spec.split(","):
        k, eq, v = part.partition("=")
        k = k.strip().lower()
        if k == "type":
            m["Type"] = v
        elif k in ("source", "src"):
            m["Source"] = v
        elif k in ("target", "destination", "dst"):
            m["Target"] = v
        elif k in ("readonly", "ro"):
            m["ReadOnly"] = (not eq) or v.lower() in ("1", "true")
        elif k == "volume-nocopy":
            m.setdefault("VolumeOptions", {})["NoCopy"] = (not eq) or v.lower() in ("1", "true")
        elif k == "tmpfs-size":
            m.setdefault("TmpfsOptions", {})["SizeBytes"] = parse_bytes(v)
        elif k == "tmpfs-mode":
            m.setdefault("TmpfsOptions", {})["Mode"] = int(v, 8)
        elif k == "bind-propagation":
            m.setdefault("BindOptions", {})["Propagation"] = v
        elif k == "volume-label":
            lk, _, lv = v.partition("=")
            m.setdefault("VolumeOptions", {}).setdefault("Labels", {})[lk] = lv
        else:
            raise FlagError(f"invalid argument \"{spec}\" for \"--mount\" flag: unexpected key '{k}' in '{part}'")
    return m


def _env_list(o: dict) -> list[str]:
    env = []
    for f in o["env_file"]:
        with open(f) as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    env.append(line if "=" in line else f"{line}={os.environ.get(line, '')}")
    for e in o["env"]:
        env.append(e if "=" in e else f"{e}={os.environ.get(e, '')}")
    return env


def parse_bytes(s: str | None) -> int:
    """``512m``, ``1g``, ``100k``, ``64MB`` or a plain number of bytes (no `re`: start-up time)."""
    if not s:
        return 0
    t = s.strip().lower()
    if t.endswith("b") and len(t) > 1 and not t[-2].isdigit():
        t = t[:-1]
    mult = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}.get(t[-1:], 0)
    num = t[:-1] if mult else t
    try:
        return int(float(num) * (mult or 1))
    except ValueError:
        raise FlagError(f"invalid size: {s!r}") from None


def build_create_body(o: dict, image: str, cmd: list[str]) -> dict:
    exposed: dict[str, dict] = {}
    for e in o["expose"]:
        p = e if "/" in e else e + "/tcp"
        exposed[p] = {}
    port_bindings = _parse_ports(o["publish"], exposed)
    labels = {}
    for lf in o["label_file"]:
        with open(lf) as fh:
            for line in fh:
                if line.strip() and not line.startswith("#"):
                    k, _, v = line.strip().partition("=")
                    labels[k] = v
    for lab in o["label"]:
        k, _, v = lab.partition("=")
        labels[k] = v
    attach = [a.lower() for a in o["attach"]]
    detach = o["detach"]
    cfg: dict[str, Any] = {
        "Hostname": o["hostname"] or "",
        "Domainname": o["domainname"] or "",
        "User": o["user"] or "",
        "AttachStdin": (o["interactive"] and not detach) or "stdin" in attach,
        "AttachStdout": not detach and (not attach or "stdout" in attach),
        "AttachStderr": not detach and (not attach or "stderr" in attach),
        "Tty": o["tty"],
        "OpenStdin": o["interactive"],
        "StdinOnce": o["interactive"] and not detach,
        "Env": _env_list(o),
        "Cmd": cmd or None,
        "Image": image,
        "WorkingDir": o["workdir"] or "",
        "Entrypoint": [o["entrypoint"]] if o["entrypoint"] is not None else None,
        "Labels": labels,
    }
    if exposed:
        cfg["ExposedPorts"] = exposed
    if o["stop_signal"]:
        cfg["StopSignal"] = o["stop_signal"]
    if o["stop_timeout"] is not None:
        cfg["StopTimeout"] = o["stop_timeout"]
    if o["no_healthcheck"]:
        cfg["Healthcheck"] = {"Test": ["NONE"]}
    elif o["health_cmd"]:
        cfg["Healthcheck"] = {"Test": ["CMD-SHELL", o["health_cmd"]],
                              "Interval": _duration_ns(o["health_interval"]),
                              "Timeout": _duration_ns(o["health_timeout"]),
                              "Retries": o["health_retries"] or 0,
                              "StartPeriod": _duration_ns(o["health_start_period"])}
    restart = {"Name": "no", "MaximumRetryCount": 0}
    if o["restart"]:
        name, _, cnt = o["restart"].partition(":")
        restart = {"Name": name, "MaximumRetryCount": int(cnt or 0)}
    binds = []
    for v in o["volume"]:
        binds.append(v)
    tmpfs = {}
    for t in o["tmpfs"]:
        dst, _, opts = t.partition(":")
        tmpfs[dst] = opts
    ulimits = []
    for u in o["ulimit"]:
        name, _, val = u.partition("=")
        soft, _, hard = val.partition(":")
        ulimits.append({"Name": name, "Soft": int(soft), "Hard": int(hard or soft)})
    log_cfg = {}
    for lo in o["log_opt"]:
        k, _, v = lo.partition("=")
        log_cfg[k] = v
    nano = 0
    if o["cpus"]:
        try:
            nano = round(float(o["cpus"]) * 1e9)
        except ValueError:
            raise FlagError(f'invalid argument "{o["cpus"]}" for "--cpus" flag: failed to parse {o["cpus"]} as a rational number') from None
    tty_size = [0, 0]
    if o["tty"]:
        try:
            sz = os.get_terminal_size(sys.stdout.fileno())
            tty_size = [sz.lines, sz.columns]
        except OSError:
            pass
    mem = parse_bytes(o["memory"]) if o["memory"] else 0
    swap = 0
    if o["memory_swap"]:
        swap = -1 if o["memory_swap"] == "-1" else parse_bytes(o["memory_swap"])
    host: dict[str, Any] = {
        "Binds": binds or None,
        "LogConfig": {"Type": o["log_driver"] or "", "Config": log_cfg},
        "NetworkMode": o["network"] or "default",
        "PortBindings": port_bindings,
        "RestartPolicy": restart,
        "AutoRemove": o["rm"],
        "VolumesFrom": o["volumes_from"] or None,
        "ConsoleSize": tty_size,
        "CapAdd": o["cap_add"] or None,
        "CapDrop": o["cap_drop"] or None,
        "Dns": o["dns"], "DnsOptions": o["dns_option"], "DnsSearch": o["dns_search"],
        "ExtraHosts": o["add_host"] or None,
        "Privileged": o["privileged"],
        "PublishAllPorts": o["publish_all"],
        "ReadonlyRootfs": o["read_only"],
        "SecurityOpt": o["security_opt"] or None,
        "Tmpfs": tmpfs or None,
        "Memory": mem,
        "MemorySwap": swap,
        "MemoryReservation": parse_bytes(o["memory_reservation"]) if o["memory_reservation"] else 0,
        "NanoCpus": nano,
        "CpuShares": o["cpu_shares"] or 0,
        "CpusetCpus": o["cpuset_cpus"] or "",
        "PidsLimit": o["pids_limit"],
        "Ulimits": ulimits or None,
        "Init": True if o["init"] else None,
        "Mounts": [_parse_mount(m) for m in o["mount"]] or None,
        "ShmSize": parse_bytes(o["shm_size"]) if o["shm_size"] else 0,
        "PidMode": o["pid"] or "",
        "IpcMode": o["ipc"] or "",
        "UTSMode": o["uts"] or "",
        "GroupAdd": o["group_add"] or None,
    }
    if o["oom_score_adj"] is not None:
        host["OomScoreAdj"] = o["oom_score_adj"]
    endpoints: dict[str, Any] = {}
    net = o["network"] or "default"
    if net not in ("host", "none") and not net.startswith("container:"):
        ep: dict[str, Any] = {}
        if o["network_alias"]:
            ep["Aliases"] = o["network_alias"]
        if o["ip"]:
            ep["IPAMConfig"] = {"IPv4Address": o["ip"]}
        endpoints[net] = ep
    body = dict(cfg)
    body["HostConfig"] = host
    body["NetworkingConfig"] = {"EndpointsConfig": endpoints}
    return body


def _pull(client: DaemonClient, image: str, quiet: bool = False) -> None:
    """Pull through the daemon (``POST /images/create``), progress on stderr like docker run."""
    name, tag = image, ""
    last = name.rsplit("/", 1)[-1]
    if "@" in name:
        name, _, tag = name.partition("@")
    elif ":" in last:
        name, _, tag = name.rpartition(":")
    query = {"fromImage": name, "tag": tag or "latest"}
    for msg in client.json_stream("POST", "/images/create", query=query):
        if msg.get("errorDetail") or msg.get("error"):
            raise TugError((msg.get("errorDetail") or {}).get("message") or msg.get("error"))
        if quiet or msg.get("progressDetail", {}).get("total"):
            continue
        line = msg.get("status", "")
        if msg.get("id"):
            line = f"{msg['id']}: {line}"
        if line:
            _err(line)


def _create(client: DaemonClient, o: dict, image: str, cmd: list[str]) -> str:
    body = build_create_body(o, image, cmd)
    query = {"name": o["name"]} if o["name"] else None
    if o["pull"] == "always":
        _pull(client, image, o["quiet"])
    try:
        res = client.post("/containers/create", body, query=query)
    except NotFound as exc:
        if o["pull"] == "never" or "No such image" not in exc.message:
            raise
        _err(f"Unable to find image '{image if ':' in image.rsplit('/', 1)[-1] or '@' in image else image + ':latest'}' locally")
        _pull(client, image, o["quiet"])
        res = client.post("/containers/create", body, query=query)
    for w in res.get("Warnings") or []:
        _err(f"WARNING: {w}")
    if o.get("cidfile"):
        with open(o["cidfile"], "w") as f:
            f.write(res["Id"])
    return res["Id"]


CREATE_USAGE = "Usage:  tug create [OPTIONS] IMAGE [COMMAND] [ARG...]\n\nCreate a new container\n"
RUN_USAGE = "Usage:  tug run [OPTIONS] IMAGE [COMMAND] [ARG...]\n\nCreate and run a new container from an image\n"


@_daemon_errors
def cmd_create(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, RUN_SPEC, interspersed=False, usage=CREATE_USAGE)
    if not pos:
        raise FlagError('"tug create" requires at least 1 argument.')
    cid = _create(_client(ctx), o, pos[0], pos[1:])
    sys.stdout.write(cid + "\n")
    return 0


@_daemon_errors
def cmd_run(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, RUN_SPEC, interspersed=False, usage=RUN_USAGE)
    if not pos:
        raise FlagError('"tug run" requires at least 1 argument.')
    if o["tty"] and o["interactive"] and not os.isatty(0):
        _err("the input device is not a TTY")
        return 1
    client = _client(ctx)
    cid = _create(client, o, pos[0], pos[1:])
    if o["detach"]:
        client.post(f"/containers/{cid}/start")
        sys.stdout.write(cid + "\n")
        return 0
    return _attach_run(ctx, cid, tty=o["tty"], stdin=o["interactive"], start=True,
                       condition="removed" if o["rm"] else "next-exit", sig_proxy=not o["tty"])


class _Waiter:
    """The wait request, sent before start; its answer is read once the output has ended (no
    thread: the kernel buffers the few bytes, and `threading` costs start-up time)."""

    def __init__(self, ctx: Any, cid: str, condition: str) -> None:
        self.result: dict | None = None
        self.client = _client(ctx)
        self.resp = self.client.stream_response("POST", f"/containers/{cid}/wait",
                                                query={"condition": condition})

    def join(self, timeout: float | None = None) -> dict:
        if self.result is None:
            try:
                if timeout is not None:
                    self.resp.sock.settimeout(timeout)
                data = b""
                for chunk in self.resp.chunks():  # the one JSON object; not the trailer
                    data += chunk
                    if data.strip():
                        try:
                            self.result = json.loads(data)
                            break
                        except ValueError:
                            continue
                if self.result is None:
                    self.result = json.loads(data) if data.strip() else {}
            except Exception:
                self.result = {}
        return self.result


def _attach_run(ctx: Any, cid: str, *, tty: bool, stdin: bool, start: bool, condition: str,
                sig_proxy: bool = True, logs: bool = False, detach_keys: str | None = None) -> int:
    client = _client(ctx)
    query = {"stream": "1", "stdout": "1", "stderr": "1"}
    if stdin:
        query["stdin"] = "1"
    if logs:
        query["logs"] = "1"
    if detach_keys:
        query["detachKeys"] = detach_keys
    sock, early = client.hijack(f"/containers/{cid}/attach", query=query)
    waiter = _Waiter(ctx, cid, condition) if start else None
    restore = None
    if tty and stdin and os.isatty(0):
        restore = _raw_terminal()
    if start:
        try:
            client.post(f"/containers/{cid}/start")
        except TugError as exc:
            if restore:
                restore()
            _err(f"Error response from daemon: {exc.message}")
            sock.close()
            if waiter is not None:
                waiter.join(10)
            low = exc.message.lower()
            if "executable file not found" in low or "no such file or directory" in low:
                return 127
            if "permission denied" in low:
                return 126
            return 125
    if tty:
        _resize(client, f"/containers/{cid}/resize")
        _install_winch(lambda: _resize(_client(ctx), f"/containers/{cid}/resize"))
    elif sig_proxy:
        _install_sig_proxy(ctx, cid)
    if stdin:
        import threading

        threading.Thread(target=_copy_stdin, args=(sock,), daemon=True).start()
    else:
        half_close(sock)
    try:
        _copy_output(sock, early, tty)
    finally:
        if restore:
            restore()
    if waiter is None:
        info = _client(ctx).get(f"/containers/{cid}/json")
        return int(info["State"].get("ExitCode", 0))
    return int(waiter.join().get("StatusCode", 0))


def _copy_output(sock: Any, early: bytes, tty: bool) -> None:
    out = sys.stdout.buffer
    err = sys.stderr.buffer
    buf = early
    while True:
        if tty:
            if buf:
                out.write(buf)
                out.flush()
                buf = b""
        else:
            while len(buf) >= 8:
                size = int.from_bytes(buf[4:8], "big")
                if len(buf) < 8 + size:
                    break
                stream, payload = buf[0], buf[8:8 + size]
                buf = buf[8 + size:]
                target = err if stream == 2 else out
                if stream == 3:
                    _err(f"error from daemon in stream: {payload.decode(errors='replace')}")
                    continue
                target.write(payload)
                target.flush()
        try:
            data = sock.recv(65536)
        except OSError:
            break
        if not data:
            break
        buf += data


def _copy_stdin(sock: Any) -> None:

    try:
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    half_close(sock)


def _raw_terminal() -> Callable[[], None]:
    import termios
    import tty as _tty

    fd = 0
    old = termios.tcgetattr(fd)
    _tty.setraw(fd)

    def restore() -> None:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)

    return restore


def _resize(client: DaemonClient, path: str) -> None:
    try:
        sz = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return
    try:
        client.post(path, query={"h": str(sz.lines), "w": str(sz.columns)})
    except TugError:
        pass


def _install_winch(cb: Callable[[], None]) -> None:
    import signal

    signal.signal(signal.SIGWINCH, lambda *_: cb())


_PROXIED_SIGNALS = {1: "HUP", 2: "INT", 3: "QUIT", 10: "USR1", 12: "USR2", 15: "TERM"}


def _install_sig_proxy(ctx: Any, cid: str) -> None:
    import _signal  # not `signal`: it imports `enum` (start-up time)

    def handler(signum: int, _frame: Any) -> None:
        try:
            _client(ctx).post(f"/containers/{cid}/kill",
                              query={"signal": _PROXIED_SIGNALS.get(signum, str(signum))})
        except TugError:
            pass

    for s in _PROXIED_SIGNALS:
        _signal.signal(s, handler)


# ------------------------------------------------------------------ start/stop/kill/rm/restart…
def _each(ctx: Any, names: list[str], action: Callable[[DaemonClient, str], None], *, ok_missing: bool = False) -> int:
    client = _client(ctx)
    rc = 0
    for n in names:
        try:
            action(client, n)
            sys.stdout.write(n + "\n")
        except TugError as exc:
            _err(f"Error response from daemon: {exc.message}")
            if not (ok_missing and isinstance(exc, NotFound)):
                rc = 1
    return rc


@_daemon_errors
def cmd_start(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"-a|--attach": bool, "-i|--interactive": bool, "--detach-keys": str})
    if not pos:
        raise FlagError('"tug start" requires at least 1 argument.')
    if o["attach"] or o["interactive"]:
        client = _client(ctx)
        info = client.get(f"/containers/{q(pos[0])}/json")
        return _attach_run(ctx, info["Id"], tty=bool(info["Config"].get("Tty")), stdin=o["interactive"],
                           start=True, condition="next-exit", detach_keys=o["detach_keys"])
    return _each(ctx, pos, lambda c, n: c.status_of("POST", f"/containers/{q(n)}/start"))


@_daemon_errors
def cmd_stop(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"-t|--time|--timeout": int, "-s|--signal": str})
    if not pos:
        raise FlagError('"tug stop" requires at least 1 argument.')
    query = {"t": o["timeout"], "signal": o["signal"]}
    return _each(ctx, pos, lambda c, n: c.status_of("POST", f"/containers/{q(n)}/stop", query=query))


@_daemon_errors
def cmd_restart(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"-t|--time|--timeout": int, "-s|--signal": str})
    if not pos:
        raise FlagError('"tug restart" requires at least 1 argument.')
    return _each(ctx, pos, lambda c, n: c.status_of("POST", f"/containers/{q(n)}/restart", query={"t": o["timeout"]}))


@_daemon_errors
def cmd_kill(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"-s|--signal": str})
    if not pos:
        raise FlagError('"tug kill" requires at least 1 argument.')
    return _each(ctx, pos, lambda c, n: c.post(f"/containers/{q(n)}/kill", query={"signal": o["signal"]}))


@_daemon_errors
def cmd_rm(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"-f|--force": bool, "-v|--volumes": bool, "-l|--link": bool})
    if not pos:
        raise FlagError('"tug rm" requires at least 1 argument.')
    query = {"force": "1" if o["force"] else None, "v": "1" if o["volumes"] else None}
    return _each(ctx, pos, lambda c, n: c.delete(f"/containers/{q(n)}", query=query), ok_missing=o["force"])


@_daemon_errors
def cmd_pause(args: list[str], ctx: Any) -> int:
    _, pos = parse(args, {})
    return _each(ctx, pos, lambda c, n: c.post(f"/containers/{q(n)}/pause"))


@_daemon_errors
def cmd_unpause(args: list[str], ctx: Any) -> int:
    _, pos = parse(args, {})
    return _each(ctx, pos, lambda c, n: c.post(f"/containers/{q(n)}/unpause"))


@_daemon_errors
def cmd_wait(args: list[str], ctx: Any) -> int:
    _, pos = parse(args, {})
    client = _client(ctx)
    rc = 0
    for n in pos:
        try:
            resp = client.stream_response("POST", f"/containers/{q(n)}/wait")
            res = json.loads(resp.read() or b"{}")
            sys.stdout.write(f"{res.get('StatusCode', 0)}\n")
        except TugError as exc:
            _err(f"Error response from daemon: {exc.message}")
            rc = 1
    return rc


@_daemon_errors
def cmd_rename(args: list[str], ctx: Any) -> int:
    _, pos = parse(args, {})
    if len(pos) != 2:
        raise FlagError('"tug rename" requires exactly 2 arguments.')
    _client(ctx).post(f"/containers/{q(pos[0])}/rename", query={"name": pos[1]})
    return 0


@_daemon_errors
def cmd_update(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"-m|--memory": str, "--cpus": str, "--cpu-shares|-c": int, "--pids-limit": int,
                          "--restart": str, "--memory-swap": str, "--cpuset-cpus": str})
    body: dict[str, Any] = {}
    if o["memory"]:
        body["Memory"] = parse_bytes(o["memory"])
    if o["memory_swap"]:
        body["MemorySwap"] = -1 if o["memory_swap"] == "-1" else parse_bytes(o["memory_swap"])
    if o["cpus"]:
        body["NanoCpus"] = int(float(o["cpus"]) * 1e9)
    if o["cpu_shares"]:
        body["CpuShares"] = o["cpu_shares"]
    if o["pids_limit"]:
        body["PidsLimit"] = o["pids_limit"]
    if o["cpuset_cpus"]:
        body["CpusetCpus"] = o["cpuset_cpus"]
    if o["restart"]:
        name, _, cnt = o["restart"].partition(":")
        body["RestartPolicy"] = {"Name": name, "MaximumRetryCount": int(cnt or 0)}
    return _each(ctx, pos, lambda c, n: c.post(f"/containers/{q(n)}/update", body))


# ------------------------------------------------------------------------------ logs/attach/exec
@_daemon_errors
def cmd_logs(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"-f|--follow": bool, "-t|--timestamps": bool, "-n|--tail": str, "--since": str,
                          "--until": str, "--details": bool})
    if len(pos) != 1:
        raise FlagError('"tug logs" requires exactly 1 argument.')
    client = _client(ctx)
    info = client.get(f"/containers/{q(pos[0])}/json")
    query: dict[str, Any] = {"stdout": "1", "stderr": "1", "tail": o["tail"] or "all"}
    if o["follow"]:
        query["follow"] = "1"
    if o["timestamps"]:
        query["timestamps"] = "1"
    from tugboat.engine.util import parse_time

    if o["since"]:
        query["since"] = f"{parse_time(o['since']):.9f}"
    if o["until"]:
        query["until"] = f"{parse_time(o['until']):.9f}"
    resp = client.stream_response("GET", f"/containers/{info['Id']}/logs", query=query)
    tty = bool(info["Config"].get("Tty"))
    out, err = sys.stdout.buffer, sys.stderr.buffer
    buf = b""
    for chunk in resp.chunks():
        if tty:
            out.write(chunk)
            out.flush()
            continue
        buf += chunk
        while len(buf) >= 8:
            size = int.from_bytes(buf[4:8], "big")
            if len(buf) < 8 + size:
                break
            (err if buf[0] == 2 else out).write(buf[8:8 + size])
            buf = buf[8 + size:]
        out.flush()
        err.flush()
    return 0


@_daemon_errors
def cmd_attach(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"--no-stdin": bool, "--sig-proxy": bool, "--detach-keys": str})
    if len(pos) != 1:
        raise FlagError('"tug attach" requires exactly 1 argument.')
    info = _client(ctx).get(f"/containers/{q(pos[0])}/json")
    if not info["State"].get("Running"):
        _err("You cannot attach to a stopped container, start it first")
        return 1
    stdin = bool(info["Config"].get("OpenStdin")) and not o["no_stdin"]
    return _attach_run(ctx, info["Id"], tty=bool(info["Config"].get("Tty")), stdin=stdin, start=False,
                       condition="next-exit", detach_keys=o["detach_keys"])


@_daemon_errors
def cmd_exec(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"-d|--detach": bool, "-i|--interactive": bool, "-t|--tty": bool, "-e|--env": list,
                          "--env-file": list, "-w|--workdir": str, "-u|--user": str, "--privileged": bool,
                          "--detach-keys": str}, interspersed=False)
    if len(pos) < 2:
        raise FlagError('"tug exec" requires at least 2 arguments.')
    client = _client(ctx)
    cref, cmd = pos[0], pos[1:]
    if o["tty"] and o["interactive"] and not os.isatty(0):
        _err("the input device is not a TTY")
        return 1
    size = [0, 0]
    if o["tty"]:
        try:
            sz = os.get_terminal_size(sys.stdout.fileno())
            size = [sz.lines, sz.columns]
        except OSError:
            pass
    body = {"User": o["user"] or "", "Privileged": o["privileged"], "Tty": o["tty"],
            "AttachStdin": o["interactive"] and not o["detach"], "AttachStdout": not o["detach"],
            "AttachStderr": not o["detach"], "Detach": o["detach"], "DetachKeys": o["detach_keys"] or "",
            "Env": _env_list(o) or None, "WorkingDir": o["workdir"] or "", "Cmd": cmd, "ConsoleSize": size}
    eid = client.post(f"/containers/{q(cref)}/exec", body)["Id"]
    if o["detach"]:
        client.post(f"/exec/{eid}/start", {"Detach": True, "Tty": o["tty"]})
        return 0
    sock, early = client.hijack(f"/exec/{eid}/start", body={"Detach": False, "Tty": o["tty"], "ConsoleSize": size})
    restore = _raw_terminal() if o["tty"] and o["interactive"] and os.isatty(0) else None
    if o["tty"]:
        _resize(client, f"/exec/{eid}/resize")
        _install_winch(lambda: _resize(_client(ctx), f"/exec/{eid}/resize"))
    import threading

    if o["interactive"]:
        threading.Thread(target=_copy_stdin, args=(sock,), daemon=True).start()
    else:
        half_close(sock)
    try:
        _copy_output(sock, early, o["tty"])
    finally:
        if restore:
            restore()
    res = _client(ctx).get(f"/exec/{eid}/json")
    return int(res.get("ExitCode") or 0)


# ------------------------------------------------------------------------- inspect and friends
@_daemon_errors
def cmd_inspect(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"-f|--format": str, "-s|--size": bool, "--type": str})
    if not pos:
        raise FlagError('"tug inspect" requires at least 1 argument.')
    client = _client(ctx)
    results: list[Any] = []
    rc = 0
    kinds = [o["type"]] if o["type"] else ["container", "image", "network", "volume"]
    paths = {"container": "/containers/{}/json", "image": "/images/{}/json", "network": "/networks/{}",
             "volume": "/volumes/{}"}
    for name in pos:
        missing = f"Error: No such object: {name}"
        for k in kinds:
            try:
                query = {"size": "1"} if o["size"] and k == "container" else None
                results.append(client.get(paths[k].format(q(name)), query=query))
                break
            except TugError as exc:
                if not getattr(exc, "from_daemon", False) or (o["type"] and not isinstance(exc, NotFound)):
                    raise
                if o["type"]:  # docker prints the daemon's own words for a typed inspect
                    missing = f"Error response from daemon: {exc.message}"
                continue
        else:
            _err(missing)
            rc = 1
    _print_inspect(results, o["format"])
    return rc


def _print_inspect(results: list[Any], fmt: str | None) -> None:
    if fmt:
        f = _fmt()
        for r in results:
            sys.stdout.write(f.render(fmt, r) + "\n")
        if not results:
            sys.stdout.write("\n")  # as docker prints when nothing matched
    else:
        import json as _json

        sys.stdout.write(_json.dumps(results, indent=4) + "\n")


@_daemon_errors
def cmd_container_inspect(args: list[str], ctx: Any) -> int:
    return cmd_inspect(["--type", "container", *args], ctx)


@_daemon_errors
def cmd_top(args: list[str], ctx: Any) -> int:
    _, pos = parse(args, {}, interspersed=False)
    if not pos:
        raise FlagError('"tug top" requires at least 1 argument.')
    res = _client(ctx).get(f"/containers/{q(pos[0])}/top", query={"ps_args": " ".join(pos[1:]) or None})
    from tugboat.cli.tabwriter import tabwrite

    sys.stdout.write(tabwrite([res["Titles"], *res["Processes"]]))
    return 0


@_daemon_errors
def cmd_port(args: list[str], ctx: Any) -> int:
    _, pos = parse(args, {})
    if not pos:
        raise FlagError('"tug port" requires at least 1 argument.')
    info = _client(ctx).get(f"/containers/{q(pos[0])}/json")
    ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
    want = pos[1] if len(pos) > 1 else None
    if want and "/" not in want:
        want += "/tcp"
    for key, binds in sorted(ports.items()):
        if want and key != want:
            continue
        for b in binds or []:
            line = f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}"
            sys.stdout.write(line + "\n" if want else f"{key} -> {line}\n")
    return 0


@_daemon_errors
def cmd_stats(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"-a|--all": bool, "--no-stream": bool, "--format": str, "--no-trunc": bool})
    client = _client(ctx)
    if not pos:
        pos = [c["Id"] for c in client.get("/containers/json", query={"all": "1" if o["all"] else None})]
    f = _fmt()
    while True:
        rows = []
        for n in pos:
            s = client.get(f"/containers/{q(n)}/stats", query={"stream": "0"})
            cpu = s.get("cpu_stats") or {}
            pre = s.get("precpu_stats") or {}
            dcpu = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get("total_usage", 0)
            dsys = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
            pct = (dcpu / dsys * cpu.get("online_cpus", 1) * 100.0) if dsys > 0 and dcpu > 0 else 0.0
            mem = s.get("memory_stats") or {}
            usage, limit = mem.get("usage", 0), mem.get("limit", 0)
            rows.append({"ID": s.get("id", "")[:12], "Container": n, "Name": s.get("name", "").lstrip("/"),
                         "CPUPerc": f"{pct:.2f}%",
                         "MemUsage": f"{_bin(usage)} / {_bin(limit)}",
                         "MemPerc": f"{(usage / limit * 100 if limit else 0):.2f}%",
                         "NetIO": _netio(s.get("networks") or {}), "BlockIO": "0B / 0B",
                         "PIDs": str((s.get("pids_stats") or {}).get("current", 0))})
        cols = [("CONTAINER ID", "ID"), ("NAME", "Name"), ("CPU %", "CPUPerc"), ("MEM USAGE / LIMIT", "MemUsage"),
                ("MEM %", "MemPerc"), ("NET I/O", "NetIO"), ("BLOCK I/O", "BlockIO"), ("PIDS", "PIDs")]
        out = _render_rows(o["format"], rows, cols)
        if not o["no_stream"]:
            sys.stdout.write("\x1b[2J\x1b[H")
        sys.stdout.write(out)
        sys.stdout.flush()
        if o["no_stream"]:
            return 0
        time.sleep(1)
        _ = f


def _netio(nets: dict) -> str:
    rx = sum(n.get("rx_bytes", 0) for n in nets.values())
    tx = sum(n.get("tx_bytes", 0) for n in nets.values())
    hs = _fmt().human_size
    return f"{hs(rx)} / {hs(tx)}"


def _bin(n: float) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    n = float(n)
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.4g}{units[i]}"


@_daemon_errors
def cmd_diff(args: list[str], ctx: Any) -> int:
    _, pos = parse(args, {})
    if len(pos) != 1:
        raise FlagError('"tug diff" requires exactly 1 argument.')
    for ch in _client(ctx).get(f"/containers/{q(pos[0])}/changes") or []:
        sys.stdout.write(f"{'CAD'[ch['Kind']]} {ch['Path']}\n")
    return 0


@_daemon_errors
def cmd_export(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"-o|--output": str})
    if len(pos) != 1:
        raise FlagError('"tug export" requires exactly 1 argument.')
    if not o["output"] and os.isatty(1):
        _err("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        return 1
    out = open(o["output"], "wb") if o["output"] else sys.stdout.buffer  # noqa: SIM115
    try:
        for chunk in _client(ctx).stream("GET", f"/containers/{q(pos[0])}/export"):
            out.write(chunk)
    finally:
        if o["output"]:
            out.close()
    return 0


@_daemon_errors
def cmd_cp(args: list[str], ctx: Any) -> int:
    _o, pos = parse(args, {"-a|--archive": bool, "-L|--follow-link": bool, "-q|--quiet": bool})
    if len(pos) != 2:
        raise FlagError('"tug cp" requires exactly 2 arguments.')
    src, dst = pos
    client = _client(ctx)

    def split(s: str) -> tuple[str | None, str]:
        if ":" in s and not s.startswith(("/", ".")):
            c, _, p = s.partition(":")
            return c, p
        return None, s

    sc, sp = split(src)
    dc, dp = split(dst)
    if (sc is None) == (dc is None):
        raise FlagError("copying between containers is not supported" if sc else "must specify at least one container source")
    if sc is not None:
        return _cp_from(client, sc, sp, dp)
    return _cp_to(client, sp, dc or "", dp)


def _cp_from(client: DaemonClient, cref: str, path: str, dest: str) -> int:
    import io
    import tarfile

    resp = client.stream_response("GET", f"/containers/{q(cref)}/archive", query={"path": path})
    data = b"".join(resp.chunks())
    if dest == "-":
        sys.stdout.buffer.write(data)
        return 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
        if not members:
            return 0
        root = members[0].name.split("/")[0]
        if os.path.isdir(dest) and not (path.endswith("/.")):
            target_dir = dest
        else:
            target_dir = os.path.dirname(os.path.abspath(dest)) or "."
            newname = os.path.basename(dest.rstrip("/"))
            for m in members:
                rest = m.name[len(root):]
                m.name = newname + rest
        if path.endswith("/."):
            os.makedirs(dest, exist_ok=True)
            for m in members:
                m.name = m.name[len(root):].lstrip("/") or "."
            target_dir = dest
        tf.extractall(target_dir, filter="tar")
    return 0


def _cp_to(client: DaemonClient, src: str, cref: str, path: str) -> int:
    import io
    import tarfile

    buf = io.BytesIO()
    if src == "-":
        buf.write(sys.stdin.buffer.read())
        dest_dir = path
    else:
        if not os.path.lexists(src):
            _err(f"lstat {os.path.abspath(src)}: no such file or directory")
            return 1
        dest_dir = path
        arcname = os.path.basename(src.rstrip("/"))
        try:
            client.head(f"/containers/{q(cref)}/archive", query={"path": path})
            exists = True
        except NotFound:
            exists = False
            dest_dir = os.path.dirname(path.rstrip("/")) or "/"
            arcname = os.path.basename(path.rstrip("/"))
        if exists:
            resp = client.head(f"/containers/{q(cref)}/archive", query={"path": path})
            import base64

            st = json.loads(base64.b64decode(resp.headers.get("x-docker-container-path-stat", "e30=")))
            if not (st.get("mode", 0) & (1 << 31)):
                dest_dir = os.path.dirname(path.rstrip("/")) or "/"
                arcname = os.path.basename(path.rstrip("/"))
        with tarfile.open(fileobj=buf, mode="w") as tf:
            if src.endswith("/.") and os.path.isdir(src):
                for name in os.listdir(src):
                    tf.add(os.path.join(src, name), arcname=name)
            else:
                tf.add(src, arcname=arcname)
    client.put(f"/containers/{q(cref)}/archive", raw_body=buf.getvalue(),
               query={"path": dest_dir, "noOverwriteDirNonDir": "true"},
               headers={"Content-Type": "application/x-tar"})
    return 0


@_daemon_errors
def cmd_commit(args: list[str], ctx: Any) -> int:
    o, pos = parse(args, {"-m|--message": str, "-a|--author": str, "-c|--change": list, "-p|--pause": bool})
    if not pos:
        raise FlagError('"tug commit" requires at least 1 argument.')
    query: dict[str, Any] = {"container": pos[0], "comment": o["message"], "author": o["author"]}
    if len(pos) > 1:
        repo, _, tag = pos[1].rpartition(":") if ":" in pos[1].rsplit("/", 1)[-1] else (pos[1], "", "")
        query["repo"] = repo
        query["tag"] = tag or "latest"
    if o["change"]:
        query["changes"] = o["change"]
    res = _client(ctx).post("/commit", query=query)
    sys.stdout.write(res["Id"] + "\n")
    return 0


@_daemon_errors
def cmd_container_prune(args: list[str], ctx: Any) -> int:
    o, _ = parse(args, {"-f|--force": bool, "--filter": list})
    if not o["force"]:  # confirm like docker
        sys.stdout.write("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    filters = filter_map(o["filter"])
    res = _client(ctx).post("/containers/prune", query={"filters": json.dumps(filters) if filters else None})
    deleted = res.get("ContainersDeleted") or []
    if deleted:
        sys.stdout.write("Deleted Containers:\n" + "".join(d + "\n" for d in deleted) + "\n")
    sys.stdout.write(f"Total reclaimed space: {_fmt().human_size(res.get('SpaceReclaimed', 0))}\n")
    return 0


CONTAINER_SUB = {
    "ls": "cmd_ps", "list": "cmd_ps", "ps": "cmd_ps", "run": "cmd_run", "create": "cmd_create",
    "start": "cmd_start", "stop": "cmd_stop", "restart": "cmd_restart", "kill": "cmd_kill", "rm": "cmd_rm",
    "remove": "cmd_rm", "logs": "cmd_logs", "exec": "cmd_exec", "attach": "cmd_attach",
    "inspect": "cmd_container_inspect", "top": "cmd_top", "stats": "cmd_stats", "cp": "cmd_cp",
    "port": "cmd_port", "rename": "cmd_rename", "wait": "cmd_wait", "export": "cmd_export", "diff": "cmd_diff",
    "pause": "cmd_pause", "unpause": "cmd_unpause", "update": "cmd_update", "prune": "cmd_container_prune",
    "commit": "cmd_commit",
}


def cmd_container(args: list[str], ctx: Any) -> int:
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write("Usage:  tug container COMMAND\n\nManage containers\n\nCommands:\n" +
                         "".join(f"  {k}\n" for k in sorted(CONTAINER_SUB)))
        return 0
    fn = CONTAINER_SUB.get(args[0])
    if fn is None:
        _err(f"tug container: '{args[0]}' is not a tug container command.")
        return 1
    return int(globals()[fn](args[1:], ctx))
