"""`tug-runtime`: a runc-compatible OCI runtime command line over ``tugboat.runtime.api.Runtime``.

A small hand-written parser (argparse alone costs several ms per start, and start-up is the
hot path). Global flags come before the command, as with runc.
"""

from __future__ import annotations

import os
import sys

from tugboat.runtime import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

USAGE = """usage: tug-runtime [--root DIR] [--log FILE] [--log-format text|json] COMMAND [ARGS]

commands:
  create  --bundle DIR [--pid-file F] [--console-socket S] [--no-pivot] ID
  start   ID
  run     [-d] --bundle DIR [--pid-file F] [--console-socket S] [--no-pivot] ID
  state   ID
  kill    [--all] ID [SIGNAL]
  delete  [--force] ID
  exec    [-t] [-d] [-p process.json] [-e K=V] [--cwd DIR] [-u UID[:GID]] ID [-- CMD...]
  ps      [--format table|json] ID
  list    [-q] [--format table|json]
  pause   ID
  resume  ID
  spec    [--bundle DIR] [--rootless]
  features
  install-launcher PATH   (write a lean `python -I -S` launcher for this command)
"""

VERSION = "tug-runtime version 0.1.0\nspec: 1.0.2\n"

# flags that take a value, per command ("" = global)
_VALUE_FLAGS = {
    "": {"--root", "--log", "--log-format", "--cgroup-parent", "--stdio-fds", "--result-fd", "--criu"},
    "create": {"--bundle", "-b", "--pid-file", "--console-socket", "--preserve-fds"},
    "run": {"--bundle", "-b", "--pid-file", "--console-socket", "--preserve-fds"},
    "exec": {"--process", "-p", "--console-socket", "--pid-file", "--env", "-e", "--cwd", "--user", "-u",
             "--cap", "-c", "--additional-gids", "-g", "--preserve-fds", "--process-label", "--apparmor",
             "--cgroup"},
    "ps": {"--format", "-f"},
    "list": {"--format", "-f"},
    "spec": {"--bundle", "-b"},
    "kill": set(),
    "delete": set(),
}


class UsageError(Exception):
    pass


def parse(argv: list[str]) -> tuple[dict[str, Any], str, dict[str, Any], list[str]]:
    """(global options, command, command options, positional args)."""
    glob: dict[str, Any] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        a = argv[i]
        name, eq, val = a.partition("=")
        if name in _VALUE_FLAGS[""]:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag {name} needs a value")
                val = argv[i]
            glob[name.lstrip("-")] = val
        elif a in ("-v", "--version"):
            glob["version"] = True
        elif a in ("-h", "--help"):
            glob["help"] = True
        else:
            glob[name.lstrip("-")] = True  # --debug, --systemd-cgroup, --rootless ... accepted
        i += 1
    if i >= len(argv):
        return glob, "", {}, []
    cmd = argv[i]
    i += 1
    vflags = _VALUE_FLAGS.get(cmd, set())
    opts: dict[str, Any] = {}
    pos: list[str] = []
    while i < len(argv):
        a = argv[i]
        if a == "--":
            pos.extend(argv[i + 1 :])
            break
        if a.startswith("-") and len(a) > 1 and not pos:
            name, eq, val = a.partition("=")
            if name in vflags:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise UsageError(f"flag {name} needs a value")
                    val = argv[i]
                opts.setdefault(name.lstrip("-"), []).append(val)
            else:
                opts[name.lstrip("-")] = True
        else:
            pos.append(a)
            if cmd == "exec" and len(pos) == 1:
                # everything after the container id is the command
                rest = argv[i + 1 :]
                pos.extend(rest[1:] if rest[:1] == ["--"] else rest)
                break
        i += 1
    return glob, cmd, opts, pos


def _one(opts: dict[str, Any], *names: str) -> str | None:
    for n in names:
        v = opts.get(n)
        if isinstance(v, list):
            return v[-1]
    return None


def _flag(opts: dict[str, Any], *names: str) -> bool:
    return any(opts.get(n) is True for n in names)


class _Log:
    def __init__(self, path: str | None, fmt: str | None) -> None:
        self.path = path
        self.json = fmt == "json"

    def write(self, level: str, msg: str, echo: bool = False) -> None:
        if not self.path and not echo:
            return
        import time

        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.json:
            line = json.dumps({"level": level, "msg": msg, "time": now})
        else:
            line = f'time="{now}" level={level} msg={json.dumps(msg)}'
        if not self.path:
            sys.stderr.write(line + "\n")
            return
        try:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        # the console script: skip interpreter teardown (~5 ms) once output is flushed
        code = _main(sys.argv[1:])
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    return _main(argv)


def _main(argv: list[str]) -> int:
    try:
        glob, cmd, opts, pos = parse(argv)
    except UsageError as e:
        sys.stderr.write(f"tug-runtime: {e}\n{USAGE}")
        return 2
    if glob.get("version") or cmd == "version":
        sys.stdout.write(VERSION)
        return 0
    if glob.get("help") or not cmd or cmd == "help":
        sys.stdout.write(USAGE)
        return 0 if cmd or glob.get("help") else 2
    log = _Log(glob.get("log"), glob.get("log-format"))
    result_fd = int(glob["result-fd"]) if glob.get("result-fd") else None
    if result_fd is not None:
        os.set_inheritable(result_fd, False)  # never into the container

    def warn(msg: str) -> None:
        sys.stderr.write(f"tug-runtime: warning: {msg}\n")
        log.write("warning", msg)

    if glob.get("debug"):
        log.write("debug", f"tug-runtime {cmd} {' '.join(pos)}".strip(), echo=True)
    try:
        code = _dispatch(glob, cmd, opts, pos, warn, result_fd)
    except Exception as e:
        from tugboat.errors import TugError

        if isinstance(e, UsageError):
            sys.stderr.write(f"tug-runtime: {e}\n")
            log.write("error", str(e))
            return 2
        msg = str(e) if isinstance(e, TugError) else f"{type(e).__name__}: {e}"
        if isinstance(e, OSError) and not isinstance(e, TugError):
            msg = e.strerror or str(e)
        sys.stderr.write(f"tug-runtime: {msg}\n")
        log.write("error", msg)
        if result_fd is not None:
            kind = type(e).__name__ if isinstance(e, TugError) else "Internal"
            _result(result_fd, {"error": msg, "kind": kind})
        return 255 if cmd == "exec" else 1  # runc: exec's own failures exit 255
    return code


def _result(fd: int | None, obj: dict[str, Any]) -> None:
    if fd is not None:
        os.write(fd, (json.dumps(obj) + "\n").encode())


def _need_id(pos: list[str], cmd: str) -> str:
    if not pos:
        raise UsageError(f"{cmd}: a container id is required")
    return pos[0]


def _dispatch(
    glob: dict[str, Any], cmd: str, opts: dict[str, Any], pos: list[str], warn: Any, result_fd: int | None
) -> int:
    if cmd == "spec":
        return _spec(opts)
    if cmd == "install-launcher":
        from tugboat.runtime.launcher import write_launcher

        if not pos:
            raise UsageError("install-launcher: a path is required")
        sys.stdout.write(write_launcher(pos[0]) + "\n")
        return 0
    if cmd == "features":
        sys.stdout.write(json.dumps(_features(), indent=2) + "\n")
        return 0
    from tugboat.runtime.api import Runtime

    root = glob.get("root") or ("/run/tug-runtime" if os.geteuid() == 0 else
                                 os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/tmp", "tug-runtime"))
    parent = glob.get("cgroup-parent") or None
    rt = Runtime(root, cgroup_parent=parent, warn=warn)
    rt.double_fork = False
    stdio: tuple[int | None, int | None, int | None] = (None, None, None)
    if glob.get("stdio-fds"):
        a, b, c = (int(x) for x in glob["stdio-fds"].split(","))
        stdio = (a, b, c)

    if cmd in ("create", "run"):
        cid = _need_id(pos, cmd)
        bundle = _one(opts, "bundle", "b") or os.getcwd()
        kw: dict[str, Any] = {
            "console_socket": _one(opts, "console-socket"),
            "pid_file": _one(opts, "pid-file"),
            "no_pivot": _flag(opts, "no-pivot"),
            "preserve_fds": int(_one(opts, "preserve-fds") or 0),
        }
        if cmd == "create":
            rt._create(cid, bundle, stdio=stdio, **kw)
            _result(result_fd, {"ok": True})
            return 0
        detach = _flag(opts, "d", "detach")
        return _run(rt, cid, bundle, detach, stdio, kw, result_fd, keep=_flag(opts, "keep"))
    if cmd == "start":
        rt.start(_need_id(pos, cmd))
        return 0
    if cmd == "state":
        sys.stdout.write(json.dumps(rt.state(_need_id(pos, cmd)), indent=2) + "\n")
        return 0
    if cmd == "kill":
        cid = _need_id(pos, cmd)
        rt.kill(cid, pos[1] if len(pos) > 1 else "SIGTERM", all=_flag(opts, "all", "a"))
        return 0
    if cmd == "delete":
        rt.delete(_need_id(pos, cmd), force=_flag(opts, "force", "f"))
        return 0
    if cmd == "pause":
        rt.pause(_need_id(pos, cmd))
        return 0
    if cmd == "resume":
        rt.resume(_need_id(pos, cmd))
        return 0
    if cmd == "ps":
        cid = _need_id(pos, cmd)
        pids = rt.ps(cid)
        if (_one(opts, "format", "f") or "table") == "json":
            sys.stdout.write(json.dumps(pids) + "\n")
            return 0
        import subprocess

        # runc: the arguments after the id replace ps's default `-ef`
        out = subprocess.run(["ps", *(pos[1:] or ["-ef"])], capture_output=True, text=True, check=False).stdout
        lines = out.splitlines()
        if lines:
            header = lines[0].split()
            col = header.index("PID") if "PID" in header else 1
            sys.stdout.write(lines[0] + "\n")
            for line in lines[1:]:
                fields = line.split()
                if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
                    sys.stdout.write(line + "\n")
        return 0
    if cmd == "list":
        states = rt.list()
        fmt = _one(opts, "format", "f") or "table"
        if _flag(opts, "quiet", "q"):
            for s in states:
                sys.stdout.write(s["id"] + "\n")
        elif fmt == "json":
            sys.stdout.write(json.dumps(states, compact=True) + "\n")
        else:
            rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
            rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], "root") for s in states]
            widths = [max(len(r[i]) for r in rows) for i in range(6)]
            for r in rows:
                sys.stdout.write("   ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() + "\n")
        return 0
    if cmd == "exec":
        return _exec(rt, opts, pos, stdio, result_fd)
    raise UsageError(f"unknown command {cmd!r}\n{USAGE}")


def _spec(opts: dict[str, Any]) -> int:
    from tugboat.runtime.spec import default_spec

    bundle = _one(opts, "bundle", "b") or "."
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise UsageError("File config.json exists. Remove it first")
    spec = default_spec(["sh"], terminal=True, rootless=_flag(opts, "rootless"))
    spec["root"]["readonly"] = True  # as `runc spec` writes it; the engine's default stays rw
    with open(path, "w") as f:
        f.write(json.dumps(spec, indent=2))
    return 0


def _features() -> dict[str, Any]:
    from tugboat.runtime.seccomp import syscall_table

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "nosuid", "nodev", "noexec", "bind", "rbind", "private", "rprivate",
                         "shared", "rshared", "slave", "rslave"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": __import__("tugboat.runtime.caps", fromlist=["CAPABILITIES"]).CAPABILITIES,
            "cgroup": {"v1": True, "v2": True, "systemd": False},
            "seccomp": {"enabled": True, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                                                      "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_LOG",
                                                      "SCMP_ACT_TRACE"],
                        "operators": ["SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GT",
                                      "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ"],
                        "archs": ["SCMP_ARCH_X86_64"], "syscalls": len(syscall_table())},
        },
    }


def _run(
    rt: Any, cid: str, bundle: str, detach: bool, stdio: tuple[int | None, int | None, int | None],
    kw: dict[str, Any], result_fd: int | None, keep: bool = False,
) -> int:
    import _signal as signal

    from tugboat.runtime import kernel as k

    console = None
    if not detach and not kw.get("console_socket"):
        try:
            with open(os.path.join(bundle, "config.json"), "rb") as f:
                terminal = bool(json.loads(f.read()).get("process", {}).get("terminal"))
        except (OSError, ValueError):
            terminal = False
        if terminal:
            console = _ConsoleProxy()
            kw["console_socket"] = console.path
    try:
        rt._create(cid, bundle, stdio=stdio, **kw)
    except BaseException:
        if console is not None:
            console.close()
        raise
    if console is not None:
        console.accept()
    try:
        rt.start(cid)
    except BaseException:
        rt.delete(cid, force=True)
        raise
    if detach:
        _result(result_fd, {"ok": True})
        return 0
    record = rt._sd(cid).load()
    pidfd = rt._pidfd(record)

    def forward(signum: int, _frame: Any) -> None:
        if pidfd is not None:
            try:
                k.pidfd_send_signal(pidfd, signum)
            except OSError:
                pass

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, forward)
    try:
        if console is not None:
            console.pump(pidfd)
        from tugboat.runtime.trace import mark

        mark("run: started")
        code = rt.wait(cid)
        mark("run: exited")
    finally:
        if pidfd is not None:
            os.close(pidfd)
        if not keep:  # `run --keep` leaves the stopped container (and its cgroup) for inspection
            rt.delete(cid, force=True)
        mark("run: deleted")
        if console is not None:
            console.close()
    return code


class _ConsoleProxy:
    """For `run` with terminal=true and no --console-socket: receive the pty and copy I/O."""

    def __init__(self) -> None:
        import socket
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="tug-console-")
        self.path = os.path.join(self.dir, "sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)
        self.master: int | None = None
        self.saved: Any = None

    def accept(self) -> None:
        from tugboat.runtime.console import recv_master

        self.sock.settimeout(0.5)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            self.master = recv_master(conn)

    def pump(self, pidfd: int | None) -> None:
        import select

        if self.master is None:
            return
        if os.isatty(0):
            import termios
            import tty

            self.saved = termios.tcgetattr(0)
            tty.setraw(0)
        fds = [self.master, 0]
        if pidfd is not None:
            fds.append(pidfd)
        while True:
            try:
                ready, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            if self.master in ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    fds.remove(0)
                else:
                    os.write(self.master, data)
            if pidfd is not None and pidfd in ready and self.master not in ready:
                break

    def close(self) -> None:
        import shutil

        if self.saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, self.saved)
        if self.master is not None:
            os.close(self.master)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _exec(
    rt: Any, opts: dict[str, Any], pos: list[str], stdio: tuple[int | None, int | None, int | None],
    result_fd: int | None,
) -> int:
    cid = _need_id(pos, "exec")
    pfile = _one(opts, "process", "p")
    if pfile:
        with open(pfile) as f:
            proc = json.loads(f.read())
    else:
        if len(pos) < 2:
            raise UsageError("exec: a command is required (or -p process.json)")
        record = rt._sd(cid).load()
        base = dict((record.get("config") or {}).get("process") or {})
        proc = {k: v for k, v in base.items() if k not in ("args", "terminal", "consoleSize")}
        proc["args"] = pos[1:]
        proc["terminal"] = _flag(opts, "tty", "t")
        env = list(proc.get("env") or [])
        for e in opts.get("env", []) + opts.get("e", []):
            env.append(e)
        proc["env"] = env
        if _one(opts, "cwd"):
            proc["cwd"] = _one(opts, "cwd")
        user = _one(opts, "user", "u")
        if user:
            uid, _, gid = user.partition(":")
            proc["user"] = {"uid": int(uid), "gid": int(gid or 0)}
        gids = [g for v in opts.get("additional-gids", []) + opts.get("g", []) for g in v.split(",") if g]
        if gids:
            proc.setdefault("user", {})["additionalGids"] = [int(g) for g in gids]
        caps = opts.get("cap", []) + opts.get("c", [])
        if caps:
            c = dict(proc.get("capabilities") or {})
            for kind in ("bounding", "effective", "permitted"):
                c[kind] = list(dict.fromkeys([*(c.get(kind) or []), *caps]))
            proc["capabilities"] = c
        if _flag(opts, "no-new-privs"):
            proc["noNewPrivileges"] = True
    detach = _flag(opts, "d", "detach")
    console_socket = _one(opts, "console-socket")
    proxy = None
    if proc.get("terminal") and not console_socket and not detach:
        proxy = _ConsoleProxy()  # like runc: our own pty proxy for a foreground `exec -t`
        console_socket = proxy.path

    def started() -> None:
        if proxy is not None:
            proxy.accept()
            proxy.pump(None)

    try:
        res = rt._exec(cid, proc, detach=detach, stdio=stdio, console_socket=console_socket,
                       pid_file=_one(opts, "pid-file"), ignore_paused=_flag(opts, "ignore-paused"),
                       on_started=started)
    finally:
        if proxy is not None:
            proxy.close()
    if detach:
        _result(result_fd, {"pid": res})
        return 0
    _result(result_fd, {"exitStatus": res})
    return res if res >= 0 else 255


if __name__ == "__main__":
    sys.exit(main())
