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

USAGE = """usage: tug-runtime [--root DIR] [--log FILE] [--log-format text|json] [--debug] COMMAND [ARGS]

commands:
  create  --bundle DIR [--pid-file F] [--console-socket S] [--no-pivot] ID
  start   ID
  run     [-d] [--keep] --bundle DIR [--pid-file F] [--console-socket S] [--no-pivot] ID
  state   ID
  kill    [--all] ID [SIGNAL]
  delete  [--force] ID
  exec    [-t] [-d] [-p process.json] [-e K=V] [--cwd DIR] [-u UID[:GID]] [--cgroup [CTRL[,CTRL]:]PATH] ID [-- CMD...]
  ps      [--format table|json] ID [PS-OPTIONS]
  list    [-q] [--format table|json]
  pause   ID
  resume  ID
  update  [-r FILE|-] [--memory N] [--cpu-quota N] [--pids-limit N] ... ID
  events  [--stats] [--interval 5s] ID
  spec    [--bundle DIR] [--rootless]
  features
  checkpoint, restore   (need CRIU: not supported)
  install-launcher PATH   (write a lean `python -I -S` launcher for this command)

`tug-runtime COMMAND -h` describes a command.
"""

# The first line is for tools that check for a runc-compatible runtime (`runc version N.N.N`):
# it says which runc release's command line this one follows, after our own version.
VERSION = ("tug-runtime version 0.1.0 (command line of runc version 1.1.5)\n"
           "commit: none (tugboat 0.1.0)\nspec: 1.0.2\n")

# command -> (arguments, one-line description, options); the layout of `-h` is runc's
# (urfave/cli: "NAME:" first, then "<program> <command> - <description>")
COMMANDS: dict[str, tuple[str, str, str]] = {
    "checkpoint": ("[command options] <container-id>", "checkpoint a running container",
                   "--image-path, --work-path, --parent-path, --leave-running, --pre-dump ... (needs CRIU: "
                   "tug-runtime does not support it)"),
    "create": ("[command options] <container-id>", "create a container",
               "--bundle value, -b value, --console-socket value, --pid-file value, --no-pivot, --preserve-fds value"),
    "delete": ("[command options] <container-id>", "delete any resources held by the container often used "
               "with detached container", "--force, -f"),
    "events": ("[command options] <container-id>", "display container events such as OOM notifications, cpu, "
               "memory, and IO usage statistics", "--interval value (default: 5s), --stats"),
    "exec": ("[command options] <container-id> <command> [command options]  || -p process.json <container-id>",
             "execute new process inside the container",
             "--console-socket value, --cwd value, --env value, -e value, --tty, -t, --user value, -u value, "
             "--additional-gids value, -g value, --process value, -p value, --detach, -d, --pid-file value, "
             "--no-new-privs, --cap value, -c value, --preserve-fds value, --cgroup value, --ignore-paused"),
    "features": ("", "show the enabled features", ""),
    "kill": ("[command options] <container-id> [signal]", "kill sends the specified signal (default: SIGTERM) "
             "to the container's init process", "--all, -a"),
    "list": ("[command options]", "lists containers started by runc with the given root",
             "--format value, -f value (table or json), --quiet, -q"),
    "pause": ("<container-id>", "pause suspends all processes inside the container", ""),
    "ps": ("[command options] <container-id> [ps options]", "ps displays the processes running inside a container",
           "--format value, -f value (table or json)"),
    "restore": ("[command options] <container-id>", "restore a container from a previous checkpoint",
                "(needs CRIU: tug-runtime does not support it)"),
    "resume": ("<container-id>", "resumes all processes that have been previously paused", ""),
    "run": ("[command options] <container-id>", "create and run a container",
            "--bundle value, -b value, --console-socket value, --detach, -d, --keep, --pid-file value, "
            "--no-pivot, --preserve-fds value"),
    "spec": ("[command options]", "create a new specification file", "--bundle value, -b value, --rootless"),
    "start": ("<container-id>", "executes the user defined process in a created container", ""),
    "state": ("<container-id>", "output the state of a container", ""),
    "update": ("[command options] <container-id>", "update container resource constraints",
               "--resources value, -r value (file with the JSON resources, - for stdin), --blkio-weight value, "
               "--cpu-period value, --cpu-quota value, --cpu-share value, --cpu-rt-period value, "
               "--cpu-rt-runtime value, --cpuset-cpus value, --cpuset-mems value, --kernel-memory value "
               "(ignored), --kernel-memory-tcp value (ignored), --memory value, --memory-reservation value, "
               "--memory-swap value, --pids-limit value"),
}


def main_help() -> str:
    cmds = "".join(f"   {n:<11} {d[1]}\n" for n, d in sorted(COMMANDS.items()))
    return ("NAME:\n   tug-runtime, in place of runc - Open Container Initiative runtime\n\n"
            "USAGE:\n   tug-runtime [global options] command [command options] [arguments...]\n\n"
            "VERSION:\n   0.1.0 (command line of runc 1.1.5)\n\n"
            f"COMMANDS:\n{cmds}\n"
            "GLOBAL OPTIONS:\n   --debug, --log value, --log-format value (text or json), --root value, "
            "--systemd-cgroup (ignored), --rootless value, --help, -h, --version, -v\n")


def command_help(cmd: str) -> str | None:
    if cmd not in COMMANDS:
        return None
    args, desc, opts = COMMANDS[cmd]
    text = (f"NAME:\n   tug-runtime {cmd}, in place of runc {cmd} - {desc}\n\n"
            f"USAGE:\n   tug-runtime {cmd} {args}\n")
    if opts:
        text += f"\nOPTIONS:\n   {opts}\n"
    return text


_UPDATE_FLAGS = {"--resources", "-r", "--blkio-weight", "--cpu-period", "--cpu-quota", "--cpu-share", "--cpu-shares",
                 "--cpu-rt-period", "--cpu-rt-runtime", "--cpuset-cpus", "--cpuset-mems", "--kernel-memory",
                 "--kernel-memory-tcp", "--memory", "--memory-reservation", "--memory-swap", "--pids-limit",
                 "--l3-cache-schema", "--mem-bw-schema"}
_CRIU_FLAGS = {"--image-path", "--work-path", "--parent-path", "--page-server", "--manage-cgroups-mode",
               "--empty-ns", "--status-fd", "--lsm-profile", "--lsm-mount-context", "--bundle", "-b",
               "--console-socket", "--pid-file"}

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
    "update": _UPDATE_FLAGS,
    "events": {"--interval"},
    "checkpoint": _CRIU_FLAGS,
    "restore": _CRIU_FLAGS,
}
# commands whose arguments after the container id are not ours (runc: SkipArgReorder)
_NO_REORDER = {"exec", "ps"}


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
        if a.startswith("-") and len(a) > 1 and (not pos or cmd not in _NO_REORDER) and a != "-":
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
            line = json.dumps({"level": level, "msg": msg, "time": now}, compact=True)
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
    if cmd == "help" or (cmd and (_flag(opts, "h", "help") and not (cmd in _NO_REORDER and pos))):
        topic = (pos[0] if pos else "") if cmd == "help" else cmd
        if not topic:
            sys.stdout.write(main_help())
            return 0
        text = command_help(topic)
        if text is None:
            sys.stderr.write(f"No help topic for '{topic}'\n")
            return 3
        sys.stdout.write(text)
        return 0
    if glob.get("help") or not cmd:
        sys.stdout.write(main_help() if glob.get("help") else USAGE)
        return 0 if glob.get("help") else 2
    log = _Log(glob.get("log"), glob.get("log-format"))
    result_fd = int(glob["result-fd"]) if glob.get("result-fd") else None
    if result_fd is not None:
        os.set_inheritable(result_fd, False)  # never into the container

    def warn(msg: str) -> None:
        sys.stderr.write(f"tug-runtime: warning: {msg}\n")
        log.write("warning", msg)

    debug = None
    if glob.get("debug"):
        def debug(msg: str) -> None:
            log.write("debug", msg, echo=True)

        debug(f"tug-runtime {cmd} {' '.join(pos)}".strip())
    try:
        code = _dispatch(glob, cmd, opts, pos, warn, result_fd, debug)
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
    glob: dict[str, Any], cmd: str, opts: dict[str, Any], pos: list[str], warn: Any, result_fd: int | None,
    debug: Any = None,
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
    if cmd in ("checkpoint", "restore"):
        return _criu(cmd, opts, pos)
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
            _debug_setup(debug, cid)
            rt._create(cid, bundle, stdio=stdio, **kw)
            _debug_ready(debug, rt, cid)
            _result(result_fd, {"ok": True})
            return 0
        detach = _flag(opts, "d", "detach")
        return _run(rt, cid, bundle, detach, stdio, kw, result_fd, keep=_flag(opts, "keep"), debug=debug)
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
        return _exec(rt, opts, pos, stdio, result_fd, debug)
    if cmd == "update":
        return _update(rt, opts, _need_id(pos, cmd), warn)
    if cmd == "events":
        from tugboat.runtime.events import parse_duration, stream

        interval = parse_duration(_one(opts, "interval") or "5s")
        return stream(rt, _need_id(pos, cmd), interval=interval, stats_only=_flag(opts, "stats"))
    raise UsageError(f"unknown command {cmd!r}\n{USAGE}")


def _debug_setup(debug: Any, cid: str) -> None:
    """`--debug`: runc's phrases for the steps ours correspond to (its tests look for them)."""
    if debug is not None:
        debug(f"nsexec container setup: forking the init of container {cid} "
              "(monitor, namespaces, then the init process)")


def _debug_ready(debug: Any, rt: Any, cid: str) -> None:
    if debug is not None:
        pid = rt._sd(cid).load().get("pid")
        debug(f"child process in init(): pid {pid} set up the rootfs, namespaces and credentials")
        debug("init: closing the pipe to signal completion (the init reported ready; it waits on exec.fifo)")


def _update(rt: Any, opts: dict[str, Any], cid: str, warn: Any) -> int:
    from tugboat.runtime import update as up

    rfile = _one(opts, "resources", "r")
    if rfile:
        if rfile == "-":
            raw = sys.stdin.read()
        else:
            try:
                with open(rfile) as f:
                    raw = f.read()
            except OSError as e:
                raise UsageError(f"update -r {rfile}: {e.strerror}") from None
        try:
            delta = up.resources_from_json(json.loads(raw))
        except ValueError as e:
            raise UsageError(f"update -r {rfile}: invalid JSON: {e}") from None
    else:
        values = {}
        for name in list(up.FLAGS) + list(up.RDT_FLAGS):
            v = _one(opts, name)
            if v is not None:
                values[name] = v
        delta = up.resources_from_flags(values)
    for w in rt.update(cid, delta):
        warn(w)
    return 0


def _criu(cmd: str, opts: dict[str, Any], pos: list[str]) -> int:
    """checkpoint/restore: the arguments are checked as runc checks them, then refused (no CRIU)."""
    cid = _need_id(pos, cmd)
    image = _one(opts, "image-path") or "checkpoint"
    parent = _one(opts, "parent-path")
    if cmd == "checkpoint" and parent:
        if parent.startswith("/"):
            raise UsageError("--parent-path must be relative (to --image-path)")
        real = os.path.join(image, parent)
        if not os.path.isdir(real):
            raise UsageError(f"invalid --parent-path: stat {real}: "
                             + ("not a directory" if os.path.exists(real) else "no such file or directory"))
    from tugboat.errors import Unavailable

    raise Unavailable(f"{cmd} {cid}: checkpoint/restore needs CRIU, which tug-runtime does not support")


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
    kw: dict[str, Any], result_fd: int | None, keep: bool = False, debug: Any = None,
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
    _debug_setup(debug, cid)
    try:
        rt._create(cid, bundle, stdio=stdio, **kw)
    except BaseException:
        if console is not None:
            console.close()
        raise
    _debug_ready(debug, rt, cid)
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
    result_fd: int | None, debug: Any = None,
) -> int:
    cid = _need_id(pos, "exec")
    sub_cgroups = _sub_cgroups(opts.get("cgroup", []))
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

    def exec_debug() -> None:
        if debug is not None:
            debug("child process in init(): the exec process joined the container's cgroup and namespaces")
            debug("setns_init: about to exec (the process reported ready)")

    def started() -> None:
        exec_debug()
        if proxy is not None:
            proxy.accept()
            proxy.pump(None)

    if debug is not None:
        debug(f"nsexec container setup: forking a process to join container {cid}")
    try:
        res = rt._exec(cid, proc, detach=detach, stdio=stdio, console_socket=console_socket,
                       pid_file=_one(opts, "pid-file"), ignore_paused=_flag(opts, "ignore-paused"),
                       on_started=started, sub_cgroups=sub_cgroups)
    finally:
        if proxy is not None:
            proxy.close()
    if detach:
        exec_debug()
        _result(result_fd, {"pid": res})
        return 0
    _result(result_fd, {"exitStatus": res})
    return res if res >= 0 else 255


def _sub_cgroups(values: list[str]) -> dict[str, str] | None:
    """`exec --cgroup [CTRL[,CTRL]:]PATH` (repeatable) -> controller ("" = all) -> relative path."""
    if not values:
        return None
    out: dict[str, str] = {}
    for v in values:
        ctrls, sep, path = v.rpartition(":")
        rel = os.path.normpath(path.lstrip("/")) if path.strip("/") else ""
        if rel == ".":
            rel = ""
        if rel == ".." or rel.startswith("../"):
            raise UsageError(f"exec --cgroup: {path} is not a sub cgroup path")
        for c in (ctrls.split(",") if sep else [""]):
            out[c.strip()] = rel
    return out


if __name__ == "__main__":
    sys.exit(main())
