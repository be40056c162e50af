"""`tug daemon`: the engine daemon in the foreground, or `tug daemon start|stop|status`."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

USAGE = """Usage:  tug daemon [OPTIONS]
        tug daemon start|stop|status [OPTIONS]

Run the tugboat engine daemon (Docker Engine API on a unix socket).

Options:
      --root DIR              data root (default /var/lib/tugboat)
  -H, --host HOST             unix:///run/tugboat/tug.sock (default) or tcp://IP:PORT (TLS only)
      --log-level LEVEL       debug, info, warn, error (default info)
      --registry-mirror URL   registry mirror (repeatable)
      --insecure-registry R   registries reached over plain HTTP (repeatable)
      --tlscacert/--tlscert/--tlskey FILE   TLS for tcp:// (client certificates are verified)
      --pidfile FILE          (default <root>/tugd.pid)
"""


def _parse(args: list[str], ctx: Any) -> tuple[str | None, dict]:
    opts: dict[str, Any] = {"root": ctx.root, "host": ctx.host, "log_level": "info", "mirrors": [],
                            "insecure": [], "tlscacert": None, "tlscert": None, "tlskey": None,
                            "pidfile": None}
    sub = None
    i = 0
    keymap = {"--root": "root", "-H": "host", "--host": "host", "--log-level": "log_level", "-l": "log_level",
              "--tlscacert": "tlscacert", "--tlscert": "tlscert", "--tlskey": "tlskey", "--pidfile": "pidfile",
              "-p": "pidfile"}
    while i < len(args):
        a = args[i]
        name, eq, val = a.partition("=")
        if a in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(0)
        if name in keymap or name in ("--registry-mirror", "--insecure-registry"):
            if not eq:
                if i + 1 >= len(args):
                    raise SystemExit(f"flag needs an argument: {name}")
                val = args[i + 1]
                i += 1
            if name == "--registry-mirror":
                opts["mirrors"].append(val)
            elif name == "--insecure-registry":
                opts["insecure"].append(val)
            else:
                opts[keymap[name]] = val
        elif a in ("--tlsverify", "--tls", "-D", "--debug", "--live-restore"):
            if a in ("-D", "--debug"):
                opts["log_level"] = "debug"
        elif sub is None and a in ("start", "stop", "status", "run"):
            sub = a
        else:
            raise SystemExit(f"unknown flag: {a}\nSee 'tug daemon --help'.")
        i += 1
    from tugboat.paths import daemon_host, data_root

    opts["root"] = data_root(opts["root"])
    opts["host"] = daemon_host(opts["host"])
    opts["pidfile"] = opts["pidfile"] or os.path.join(opts["root"], "tugd.pid")
    return sub, opts


def cmd_daemon(args: list[str], ctx: Any) -> int:
    sub, opts = _parse(args, ctx)
    if sub in (None, "run"):
        return serve(opts)
    if sub == "start":
        return start_background(opts)
    if sub == "stop":
        return stop_background(opts)
    return status(opts)


def _socket_path(host: str) -> str | None:
    if host.startswith("unix://"):
        return host[7:]
    if host.startswith("/"):
        return host
    return None


def serve(opts: dict) -> int:
    import asyncio
    import logging
    import signal

    level = {"warn": "WARNING", "warning": "WARNING", "fatal": "CRITICAL"}.get(opts["log_level"].lower(),
                                                                            opts["log_level"].upper())
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("tugboat.daemon")
    from aiohttp import web

    from tugboat.api.server import make_app
    from tugboat.engine.engine import Engine, set_subreaper

    set_subreaper()
    try:  # two FIFOs and a pidfd per container: lift the soft fd limit to the hard one
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    os.makedirs(opts["root"], mode=0o711, exist_ok=True)
    host = opts["host"]
    path = _socket_path(host)
    ssl_ctx = None
    if path is None:
        if not host.startswith("tcp://"):
            raise SystemExit(f"unsupported --host {host!r}: use unix:///path or tcp://IP:PORT")
        if not (opts["tlscacert"] and opts["tlscert"] and opts["tlskey"]):
            raise SystemExit("tcp:// needs --tlscacert, --tlscert and --tlskey (client certificates are verified)")
        import ssl

        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=opts["tlscacert"])
        ssl_ctx.verify_mode = ssl.CERT_REQUIRED
        ssl_ctx.load_cert_chain(opts["tlscert"], opts["tlskey"])
    else:
        from tugboat.cli.client import DaemonClient

        if os.path.exists(path):
            if DaemonClient(host, timeout=2).ping():
                raise SystemExit(f"another daemon is already serving {host}")
            os.unlink(path)
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    engine = Engine(opts["root"])
    engine.registry_mirrors = opts["mirrors"]
    engine.insecure_registries = opts["insecure"]
    app = make_app(engine)
    with open(opts["pidfile"] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(opts["pidfile"] + ".tmp", opts["pidfile"])

    sock_ino = [0]

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        if path is not None:
            site: web.BaseSite = web.UnixSite(runner, path)
            await site.start()
            os.chmod(path, 0o660)
            sock_ino[0] = os.stat(path).st_ino
            try:
                import grp

                os.chown(path, 0, grp.getgrnam("tugboat").gr_gid)
            except (KeyError, OSError):
                pass
        else:
            hp = host[6:].rstrip("/")
            h, _, p = hp.rpartition(":")
            site = web.TCPSite(runner, h, int(p), ssl_context=ssl_ctx)
            await site.start()
        log.info("tugboat daemon serving %s (root %s, runtime %s)", host, opts["root"], engine.runtime.kind)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, stop.set)
        await stop.wait()
        log.info("shutting down (containers keep running)")
        await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()
        if path is not None:
            try:
                if os.stat(path).st_ino == sock_ino[0]:  # not a newer daemon's socket
                    os.unlink(path)
            except OSError:
                pass
        try:
            with open(opts["pidfile"]) as f:
                if f.read().strip() == str(os.getpid()):
                    os.unlink(opts["pidfile"])
        except OSError:
            pass
    return 0


def _read_pid(opts: dict) -> int | None:
    try:
        with open(opts["pidfile"]) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
        return pid
    except (OSError, ValueError, IndexError):
        return None


def start_background(opts: dict) -> int:
    import subprocess

    from tugboat.cli.client import DaemonClient

    if DaemonClient(opts["host"], timeout=2).ping():
        sys.stdout.write(f"tugboat daemon already running at {opts['host']}\n")
        return 0
    os.makedirs(opts["root"], mode=0o711, exist_ok=True)
    logf = open(os.path.join(opts["root"], "daemon.log"), "ab",  # noqa: SIM115
                opener=lambda p, f: os.open(p, f | os.O_CLOEXEC, 0o600))
    cmd = [sys.executable, "-m", "tugboat.cli.main", "daemon", "--root", opts["root"], "--host", opts["host"],
           "--log-level", opts["log_level"], "--pidfile", opts["pidfile"]]
    for m in opts["mirrors"]:
        cmd += ["--registry-mirror", m]
    for r in opts["insecure"]:
        cmd += ["--insecure-registry", r]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.stderr.write(f"tugboat daemon exited with status {proc.returncode}; see {logf.name}\n")
            return 1
        if DaemonClient(opts["host"], timeout=2).ping():
            sys.stdout.write(f"tugboat daemon started (pid {proc.pid}) at {opts['host']}\n")
            return 0
        time.sleep(0.05)
    sys.stderr.write("tugboat daemon did not answer within 20s\n")
    return 1


def stop_background(opts: dict) -> int:
    import signal

    pid = _read_pid(opts)
    if pid is None:
        sys.stdout.write("tugboat daemon is not running\n")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:  # a zombie (its reaper is elsewhere) has stopped
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    raise ProcessLookupError
        except OSError:
            sys.stdout.write("tugboat daemon stopped\n")
            return 0
        time.sleep(0.05)
    sys.stderr.write(f"tugboat daemon (pid {pid}) did not stop within 20s\n")
    return 1


def status(opts: dict) -> int:
    from tugboat.cli.client import DaemonClient

    pid = _read_pid(opts)
    if DaemonClient(opts["host"], timeout=2).ping():
        sys.stdout.write(f"tugboat daemon is running (pid {pid or '?'}) at {opts['host']}\n")
        return 0
    sys.stdout.write("tugboat daemon is not running\n")
    return 3
