"""Starting processes: the container init (fork chain + setup) and ``exec`` into a container.

The caller ("P", always a single-threaded process: the CLI or a helper spawned by the API)
forks this chain::

    P ──fork──> X (setsid, forks A, exits: A is nobody's zombie)
                 A: child subreaper; forks B; waits for the init's pid; then execs tug-monitor
                 B: joins the cgroup, setns()/unshare() the namespaces (user ns first; P
                    writes the id maps); forks C when a pid or time namespace must apply
                 C: the container init: mounts, /dev, pivot_root, masked/readonly paths,
                    rlimits, user, capabilities, seccomp; reports "ready" to P; blocks on
                    exec.fifo until ``start``; execs the user's process

All child-side errors go back to P over a pipe as one JSON line ``{"error": "..."}``. Between
fork and exec only this module's code runs, in a process with one thread.
"""

from __future__ import annotations

import errno
import os
import resource

from tugboat.runtime import fastjson as json
from tugboat.runtime import kernel as k
from tugboat.runtime.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RLIMITS = {
    "RLIMIT_CPU": resource.RLIMIT_CPU,
    "RLIMIT_FSIZE": resource.RLIMIT_FSIZE,
    "RLIMIT_DATA": resource.RLIMIT_DATA,
    "RLIMIT_STACK": resource.RLIMIT_STACK,
    "RLIMIT_CORE": resource.RLIMIT_CORE,
    "RLIMIT_RSS": resource.RLIMIT_RSS,
    "RLIMIT_NPROC": resource.RLIMIT_NPROC,
    "RLIMIT_NOFILE": resource.RLIMIT_NOFILE,
    "RLIMIT_MEMLOCK": resource.RLIMIT_MEMLOCK,
    "RLIMIT_AS": resource.RLIMIT_AS,
    "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": resource.RLIMIT_SIGPENDING,
    "RLIMIT_MSGQUEUE": resource.RLIMIT_MSGQUEUE,
    "RLIMIT_NICE": resource.RLIMIT_NICE,
    "RLIMIT_RTPRIO": resource.RLIMIT_RTPRIO,
    "RLIMIT_RTTIME": resource.RLIMIT_RTTIME,
}
_INF = 2**64 - 1


def _lim(v: int) -> int:
    return resource.RLIM_INFINITY if v < 0 or v >= _INF else v


def plan_rlimits(rlimits: list[dict[str, Any]] | None, can_raise: bool) -> tuple[list[tuple[int, int, int]], list[str]]:
    """(resource, soft, hard) triples, clamped to the current hard limits when we cannot raise them."""
    out: list[tuple[int, int, int]] = []
    warnings: list[str] = []
    for rl in rlimits or []:
        name = str(rl.get("type", "")).upper()
        res = RLIMITS.get(name)
        if res is None:
            raise ValueError(f"rlimit {name!r} is not a known resource")
        soft, hard = _lim(int(rl.get("soft", 0))), _lim(int(rl.get("hard", 0)))
        if not can_raise:
            _, cur_hard = resource.getrlimit(res)
            if cur_hard != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > cur_hard):
                warnings.append(
                    f"{name} hard limit {rl.get('hard')} is above the current hard limit {cur_hard} "
                    "(CAP_SYS_RESOURCE is not in the bounding set): clamped"
                )
                hard = cur_hard
                if soft == resource.RLIM_INFINITY or soft > hard:
                    soft = hard
        out.append((res, soft, hard))
    return out, warnings


class UserPlan(Record):
    uid: int = 0
    gid: int = 0
    additional_gids: list[int]
    umask: int | None = None


class ProcessPlan(Record):
    """Everything the child needs, computed by P before forking (no parsing after fork)."""

    args: list[str]
    env: list[str]
    cwd: str
    user: UserPlan
    caps: dict[str, int]
    last_cap: int
    rlimits: list[tuple[int, int, int]]
    no_new_privileges: bool
    seccomp: bytes | None
    terminal: bool
    oom_score_adj: int | None = None
    console_size: dict[str, int] | None = None
    seccomp_notify: bool = False  # the filter has SCMP_ACT_NOTIFY rules: hand its listener to P


def plan_process(
    proc: dict[str, Any], bounding_now: int, last_cap: int, seccomp_prog: bytes | None, can_raise: bool
) -> tuple[ProcessPlan, list[str]]:
    from tugboat.runtime import caps as capmod

    cap_masks, warnings = capmod.plan(proc.get("capabilities"), bounding_now)
    rlimits, rl_warn = plan_rlimits(proc.get("rlimits"), can_raise)
    warnings += rl_warn
    user = proc.get("user") or {}
    args = list(proc.get("args") or [])
    if not args:
        raise ValueError("process.args must not be empty")
    umask = user.get("umask")
    return (
        ProcessPlan(
            args=args,
            env=list(proc.get("env") or []),
            cwd=proc.get("cwd") or "/",
            user=UserPlan(
                uid=int(user.get("uid") or 0),
                gid=int(user.get("gid") or 0),
                additional_gids=[int(g) for g in user.get("additionalGids") or []],
                umask=int(umask) if umask is not None else None,
            ),
            caps=cap_masks,
            last_cap=last_cap,
            rlimits=rlimits,
            no_new_privileges=bool(proc.get("noNewPrivileges")),
            seccomp=seccomp_prog,
            terminal=bool(proc.get("terminal")),
            oom_score_adj=proc.get("oomScoreAdj"),
            console_size=proc.get("consoleSize"),
        ),
        warnings,
    )


class InitSpec(Record):
    config: dict[str, Any]
    rootfs: str
    state_dir: str
    fifo: str | None
    plan: ProcessPlan
    cgroup_procs: list[str]
    cgroup_dirs: dict[str, str]
    stdio: tuple[int | None, int | None, int | None] = (None, None, None)
    console_socket: str | None = None
    preserve_fds: int = 0
    no_pivot: bool = False
    monitor: str | None = None
    fifo_fd: int | None = None
    console_conn: Any = None
    mount_sources: dict[int, str] = {}  # set per instance by start_init
    mount_fds: dict[int, int] = {}  # bind sources opened by P (open_tree), with a user namespace
    seccomp_agent: dict[str, Any] | None = None  # {"path", "metadata", "state"} for SCMP_ACT_NOTIFY
    seccomp_conn: Any = None
    bundle_dir: str = "."
    hooks: dict[str, list[dict[str, Any]]]
    hook_state: dict[str, Any]


# ---------------------------------------------------------------- sync channel


class Channel:
    """JSON lines over a pipe (child to P) and a reply pipe (P to child)."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.reply_r, self.reply_w = os.pipe()
        self._buf = b""

    def send(self, msg: dict[str, Any]) -> None:
        if self.w < 0:
            raise OSError(errno.EPIPE, "sync channel closed")
        data = (json.dumps(msg) + "\n").encode()
        while data:
            n = os.write(self.w, data)
            data = data[n:]

    def recv(self) -> dict[str, Any] | None:
        while b"\n" not in self._buf:
            chunk = os.read(self.r, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def wait_reply(self) -> None:
        data = os.read(self.reply_r, 1)
        if data != b"1":
            raise OSError(errno.EPIPE, "the runtime went away during setup")

    def reply(self) -> None:
        os.write(self.reply_w, b"1")

    def close_parent_ends(self) -> None:
        os.close(self.w)
        os.close(self.reply_r)
        self.w = self.reply_r = -1

    def close_all(self) -> None:
        # never close a number twice: it may already belong to another fd (a pidfd)
        for fd in (self.r, self.w, self.reply_r, self.reply_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.r = self.w = self.reply_r = self.reply_w = -1


def _report_error(ch: Channel, e: BaseException) -> None:
    """In a forked child that is about to ``_exit``: tell the parent why, best effort."""
    try:
        ch.send({"error": _error_text(e)})
    except BaseException:
        pass


def _error_text(e: BaseException) -> str:
    from tugboat.runtime.trace import ENABLED

    if ENABLED:
        import traceback

        return "".join(traceback.format_exception(e))
    if isinstance(e, OSError):
        text = e.strerror or str(e)
        if e.filename:
            text = f"{text}: {e.filename}"
        return text
    return str(e) or type(e).__name__


def _namespaces(config: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    joined: dict[str, str] = {}
    new: list[str] = []
    for ns in (config.get("linux") or {}).get("namespaces") or []:
        t = ns.get("type")
        if t not in k.NAMESPACE_FLAGS:
            raise ValueError(f"unknown namespace type {t!r}")
        if ns.get("path"):
            joined[t] = ns["path"]
        else:
            new.append(t)
    return joined, new


def write_id_maps(pid: int, config: dict[str, Any]) -> None:
    linux = config.get("linux") or {}
    for kind, key in (("uid_map", "uidMappings"), ("gid_map", "gidMappings")):
        lines = "".join(
            f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in linux.get(key) or []
        )
        if not lines:
            continue
        try:
            with open(f"/proc/{pid}/{kind}", "w") as f:
                f.write(lines)
        except OSError as e:
            raise OSError(e.errno, f"write {kind} for the user namespace: {os.strerror(e.errno or 0).lower()}") from None


# ---------------------------------------------------------------- P side


class Started(Record):
    init_pid: int
    monitor_pid: int
    warnings: list[str]


def join_cgroup(procs_files: list[str], pid: int) -> None:
    data = str(pid).encode()
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        except OSError as e:
            raise OSError(e.errno, f"join cgroup {path}: {os.strerror(e.errno or 0).lower()}") from None
        finally:
            os.close(fd)


def _hold(held: dict[str, int], key: str, pid: int) -> None:
    """Open a pidfd for a child-reported pid right away (it is alive: it is talking to us)."""
    try:
        held[key] = k.pidfd_open(pid)
    except OSError:
        pass


def close_fds_except(keep: set[int]) -> None:
    """Close every fd not in ``keep``: the init must not hold the caller's pipes and sockets."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _preimport(terminal: bool, hooks: bool) -> None:
    """Import in P every module the children may need: after unshare(user)/pivot_root the
    interpreter's own files can be out of reach (e.g. a stdlib under a 0700 home directory)."""
    import stat  # noqa: F401  (rootfs)

    from tugboat.runtime import rootfs, trace  # noqa: F401

    if terminal:
        from tugboat.runtime import console  # noqa: F401
    if hooks:
        from tugboat.runtime import hooks as _hooks  # noqa: F401
    if trace.ENABLED:
        import traceback  # noqa: F401


def resolve_bind_sources(config: dict[str, Any], bundle: str) -> dict[int, str]:
    """Absolute paths of the bind mounts' sources (relative ones are relative to the bundle)."""
    from tugboat.runtime.rootfs import is_bind

    out: dict[int, str] = {}
    for i, m in enumerate(config.get("mounts") or []):
        if is_bind(m) and m.get("source"):
            src = m["source"]
            out[i] = src if src.startswith("/") else os.path.join(bundle, src)
    return out


def open_bind_sources(config: dict[str, Any], sources: dict[int, str]) -> dict[int, int]:
    """Detached copies (open_tree) of the bind sources, made by P with the host's credentials:
    inside a user namespace the container's root may not reach them (a 0700 parent directory).
    The init attaches them with move_mount (runc passes fds of the sources for the same reason)."""
    out: dict[int, int] = {}
    mounts = config.get("mounts") or []
    try:
        for i, src in sources.items():
            recursive = "rbind" in (mounts[i].get("options") or [])
            try:
                out[i] = k.open_tree(src, k.OPEN_TREE_CLONE | (k.AT_RECURSIVE if recursive else 0))
            except OSError as e:
                if e.errno == errno.ENOENT:
                    continue  # reported by mount_entry, with the mount named
                raise OSError(e.errno, f"open bind source {src}: {os.strerror(e.errno or 0).lower()}") from None
    except BaseException:
        for fd in out.values():
            os.close(fd)
        raise
    return out


def _seccomp_agent_connect(path: str) -> Any:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise OSError(e.errno, "failed to connect with seccomp agent specified in the seccomp profile: "
                      f"{path}: {os.strerror(e.errno or 0).lower()}") from None
    return s


def _seccomp_agent_send(conn: Any, agent: dict[str, Any], pidfd: int, remote_fd: int, pid: int) -> None:
    """Send the listener fd of ``pid`` (its fd number ``remote_fd``) and runc's
    ContainerProcessState JSON to the seccomp agent, over SCM_RIGHTS."""
    import socket

    fd = k.pidfd_getfd(pidfd, remote_fd)
    try:
        state = dict(agent["state"])
        if not state.get("pid"):
            state["pid"] = pid  # the container's init (an exec's state names the init it joins)
        payload = {"ociVersion": state.get("ociVersion", "1.0.2"), "fds": ["seccompFd"], "pid": pid,
                   "metadata": agent.get("metadata") or "", "state": state}
        try:
            socket.send_fds(conn, [json.dumps(payload).encode()], [fd])
        except OSError as e:
            raise OSError(e.errno, f"cannot send seccomp fd to {agent['path']}: "
                          f"{os.strerror(e.errno or 0).lower()}") from None
    finally:
        os.close(fd)
        conn.close()


def load_seccomp(plan: ProcessPlan, ch: Channel | None) -> None:
    """Install the filter; with SCMP_ACT_NOTIFY rules hand the listener fd to P (which passes it
    to the seccomp agent) and wait until it has: syscalls the filter notifies block until then."""
    if plan.seccomp is None:
        return
    if not plan.seccomp_notify:
        k.seccomp_set_filter(plan.seccomp)
        return
    fd = k.seccomp_set_filter(plan.seccomp, k.SECCOMP_FILTER_FLAG_NEW_LISTENER)
    if ch is None:
        raise OSError(errno.EINVAL, "seccomp: SCMP_ACT_NOTIFY without a runtime to hand the listener to")
    ch.send({"seccompFd": fd})  # write(2): never notified (refused for write by validation)
    ch.wait_reply()
    os.close(fd)


def start_init(
    spec: InitSpec, on_created_runtime: Any = None, prepare: Any = None, double_fork: bool = True,
    after_ready: Any = None,
) -> Started:
    """Fork the chain; return when init is ready (blocked on exec.fifo) or raise OSError.

    ``prepare()`` runs in P while the children set up namespaces and mounts (cgroup creation);
    P then moves the init into ``spec.cgroup_procs`` as soon as its pid is known, also in
    parallel with the init's setup: the first cgroup.procs write waits for an RCU grace period
    (~5-20 ms on cgroup v1), the largest single cost of a start. The init cannot exec the
    user's process before P has returned from here, so limits always apply to it.
    """
    _preimport(spec.plan.terminal, bool(spec.hooks.get("createContainer") or spec.hooks.get("startContainer")))
    if spec.plan.terminal and spec.console_socket:
        from tugboat.runtime import console as cons

        spec.console_conn = cons.connect(spec.console_socket)
    # relative bind sources are relative to the bundle (checked here, before any fork)
    spec.mount_sources = resolve_bind_sources(spec.config, spec.bundle_dir)
    if spec.seccomp_agent is not None:
        spec.seccomp_conn = _seccomp_agent_connect(spec.seccomp_agent["path"])
    joined_ns, new_ns = _namespaces(spec.config)
    if spec.mount_sources and ("user" in new_ns or "user" in joined_ns):
        try:
            spec.mount_fds = open_bind_sources(spec.config, spec.mount_sources)
        except BaseException:
            if spec.seccomp_conn is not None:
                spec.seccomp_conn.close()
            raise
    ch = Channel()
    pid_r, pid_w = os.pipe()
    # the state dir as an O_PATH dirfd: the init opens exec.fifo relative to it after
    # pivot_root/chroot, without /proc and without path access (user namespaces)
    spec.fifo_fd = os.open(os.path.dirname(spec.fifo), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if spec.fifo else None
    x = os.fork()
    if x == 0:
        try:
            os.close(ch.r)
            os.close(ch.reply_w)
            keep = {0, 1, 2, ch.w, ch.reply_r, pid_r, pid_w, *range(3, 3 + spec.preserve_fds)}
            keep.update(fd for fd in (*spec.stdio, spec.fifo_fd) if fd is not None)
            keep.update(spec.mount_fds.values())
            if spec.console_conn is not None:
                keep.add(spec.console_conn.fileno())
            close_fds_except(keep)
            os.setsid()
            if double_fork and os.fork() != 0:
                os._exit(0)
            _run_a(spec, ch, pid_r, pid_w)
        except BaseException as e:
            _report_error(ch, e)
        os._exit(1)
    os.close(pid_r)
    os.close(pid_w)
    ch.close_parent_ends()
    if spec.fifo_fd is not None:
        os.close(spec.fifo_fd)
    if spec.console_conn is not None:
        spec.console_conn.close()
    for fd in spec.mount_fds.values():
        os.close(fd)
    if double_fork:
        os.waitpid(x, 0)
    init_pid = monitor_pid = 0
    ready = False
    cgroupns_waiting = False
    seccomp_fd: int | None = None
    held: dict[str, int] = {}
    warnings: list[str] = []
    try:
        if prepare is not None:
            prepare()
        while True:
            msg = ch.recv()
            if msg is None:
                raise OSError(errno.EIO, "container init exited during setup without saying why")
            if "error" in msg:
                raise OSError(errno.EIO, msg["error"])
            if "warning" in msg:
                warnings.append(msg["warning"])
            if "monitor" in msg:
                monitor_pid = msg["monitor"]
                _hold(held, "monitor", monitor_pid)
            if "userns" in msg:
                write_id_maps(msg["userns"], spec.config)
                ch.reply()
            if "pid" in msg:
                init_pid = msg["pid"]
                _hold(held, "init", init_pid)
                try:
                    join_cgroup(spec.cgroup_procs, init_pid)
                except OSError as e:
                    if e.errno != errno.ESRCH:
                        raise
                    # the init already died: its own error message follows on the channel
                if cgroupns_waiting:
                    ch.reply()
            if "cgroupns" in msg:
                if init_pid:
                    ch.reply()
                else:
                    cgroupns_waiting = True
            if "hooks" in msg:
                if on_created_runtime is not None:
                    on_created_runtime(init_pid)
                ch.reply()
            if "seccompFd" in msg:
                seccomp_fd = msg["seccompFd"]
            if seccomp_fd is not None and init_pid:  # the init's pid comes from B: any order
                if spec.seccomp_conn is None or "init" not in held:
                    raise OSError(errno.EINVAL, "seccomp: listener fd received but no seccomp agent")
                _seccomp_agent_send(spec.seccomp_conn, dict(spec.seccomp_agent or {}), held["init"],
                                    seccomp_fd, init_pid)
                spec.seccomp_conn = None
                seccomp_fd = None
                ch.reply()
            if msg.get("ready"):
                ready = True
            if ready and init_pid and monitor_pid:  # B's and C's messages may come in any order
                if after_ready is not None:
                    after_ready()
                return Started(init_pid=init_pid, monitor_pid=monitor_pid, warnings=warnings)
    except BaseException:
        # leave nothing half-made: kill whatever got started (through pidfds opened on receipt)
        for fd in held.values():
            try:
                k.pidfd_send_signal(fd, 9)
            except OSError:
                pass
        raise
    finally:
        ch.close_all()
        for fd in held.values():
            os.close(fd)
        if spec.seccomp_conn is not None:
            spec.seccomp_conn.close()


# ---------------------------------------------------------------- A: monitor-to-be


def _run_a(spec: InitSpec, ch: Channel, pid_r: int, pid_w: int) -> None:
    k.prctl(k.PR_SET_CHILD_SUBREAPER, 1)
    ch.send({"monitor": os.getpid()})
    b = os.fork()
    if b == 0:
        try:
            os.close(pid_r)
            _run_b(spec, ch, pid_w)
        except BaseException as e:
            _report_error(ch, e)
        os._exit(1)
    os.close(pid_w)
    data = b""
    while True:
        chunk = os.read(pid_r, 64)
        if not chunk:
            break
        data += chunk
    if not data:
        os.waitpid(b, 0)
        os._exit(1)
    init_pid = int(data)
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, 1 << 20)
    if spec.monitor:
        try:
            os.execv(spec.monitor, [spec.monitor, spec.state_dir, str(init_pid)])
        except OSError:
            pass
    from tugboat.runtime.monitor import python_monitor

    python_monitor(spec.state_dir, init_pid)


# ---------------------------------------------------------------- B: namespaces


def _run_b(spec: InitSpec, ch: Channel, pid_w: int) -> None:
    me = str(os.getpid())
    joined, new = _namespaces(spec.config)
    userns = "user" in new or "user" in joined
    if "user" in joined:
        _setns_path(joined.pop("user"), "user")
    if "user" in new:
        k.unshare(k.CLONE_NEWUSER)
        ch.send({"userns": os.getpid()})
        ch.wait_reply()
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    for t, path in joined.items():
        _setns_path(path, t)
    flags = 0
    for t in new:
        if t not in ("user", "cgroup"):  # a cgroup ns is made by the init once P moved it
            flags |= k.NAMESPACE_FLAGS[t]
    from tugboat.runtime.trace import mark

    mark("B: unshare")
    if flags:
        try:
            k.unshare(flags)
        except OSError as e:
            raise OSError(e.errno, f"unshare namespaces ({', '.join(t for t in new if t != 'user')}): "
                          f"{os.strerror(e.errno or 0).lower()}") from None
    offsets = (spec.config.get("linux") or {}).get("timeOffsets")
    if offsets and "time" in new:
        with open("/proc/self/timens_offsets", "w") as f:
            for clock, off in offsets.items():
                f.write(f"{clock} {int(off.get('secs', 0))} {int(off.get('nanosecs', 0))}\n")
    mark("B: unshared")
    needs_fork = any(t in ("pid", "time") for t in new) or any(t in ("pid", "time") for t in joined)
    if needs_fork:
        c = os.fork()
        if c != 0:
            os.write(pid_w, str(c).encode())
            ch.send({"pid": c})
            os._exit(0)
        _run_init(spec, ch, pid_w, in_userns=userns, new=new, joined_types=tuple(joined))
    else:
        os.write(pid_w, me.encode())
        ch.send({"pid": os.getpid()})
        _run_init(spec, ch, pid_w, in_userns=userns, new=new, joined_types=tuple(joined))


def _setns_path(path: str, t: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"open {t} namespace {path}: {os.strerror(e.errno or 0).lower()}") from None
    try:
        k.setns(fd, k.NAMESPACE_FLAGS[t], f"join {t} namespace {path}")
    finally:
        os.close(fd)


# ---------------------------------------------------------------- C: init


def _run_init(
    spec: InitSpec, ch: Channel, pid_w: int, *, in_userns: bool, new: list[str], joined_types: tuple[str, ...] = ()
) -> None:
    from tugboat.runtime import rootfs as rf
    from tugboat.runtime.trace import mark

    mark("init: started")

    os.close(pid_w)
    config = spec.config
    linux = config.get("linux") or {}
    plan = spec.plan
    ctx = rf.RootfsContext(
        rootfs=spec.rootfs, config=config, cgroup_dirs=spec.cgroup_dirs, in_userns=in_userns,
        has_netns="network" in new,
    )
    console = spec.console_conn  # connected by P: the socket may be unreachable from a user ns
    if plan.terminal and console is None:
        raise OSError(errno.EINVAL, "process.terminal is set but no console socket was given")
    fifo_fd = spec.fifo_fd  # the state dir, opened (O_PATH) by P
    if "cgroup" in new:
        ch.send({"cgroupns": True})
        ch.wait_reply()  # P has moved us into the container's cgroups: that becomes the ns root
        k.unshare(k.CLONE_NEWCGROUP)
    own_mounts = "mount" in new or "mount" in joined_types
    if own_mounts:
        rf.prepare_root(ctx)
        for i, m in enumerate(config.get("mounts") or []):
            rf.mount_entry(ctx, m, spec.mount_sources.get(i), spec.mount_fds.get(i))
        rf.setup_dev(ctx)
        rf.finish_dev(ctx)
    mark("init: mounts done")
    if spec.hooks.get("prestart") or spec.hooks.get("createRuntime"):
        ch.send({"hooks": "createRuntime"})
        ch.wait_reply()
    if spec.hooks.get("createContainer"):
        from tugboat.runtime.hooks import run_hooks

        # runc runs them in the rootfs (before pivot_root): relative paths resolve inside it
        run_hooks("createContainer", spec.hooks["createContainer"], spec.hook_state, cwd=spec.rootfs)
    if own_mounts:
        rf.pivot_root(spec.rootfs, spec.no_pivot)
    else:
        # the host's mount namespace: no mounts of ours there, just a chroot
        os.chdir(spec.rootfs)
        os.chroot(".")
        os.chdir("/")
    mark("init: pivoted")
    for key, value in (linux.get("sysctl") or {}).items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError as e:
            raise OSError(e.errno, f"sysctl {key}={value}: {os.strerror(e.errno or 0).lower()}") from None
    if own_mounts:
        rf.mask_paths(linux.get("maskedPaths") or [])
        rf.readonly_paths(linux.get("readonlyPaths") or [])
        rf.finish_root(config)
    if "uts" in new:
        if config.get("hostname"):
            k.sethostname(config["hostname"])
        if config.get("domainname"):
            k.setdomainname(config["domainname"])
    if plan.oom_score_adj is not None:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(plan.oom_score_adj))
        except OSError as e:
            ch.send({"warning": f"oomScoreAdj {plan.oom_score_adj} not applied: {os.strerror(e.errno or 0).lower()}"})
    path, env = _enter_process(plan, spec.stdio, console, in_userns, " set in config.json", ch,
                               preserve_fds=spec.preserve_fds)
    if plan.no_new_privileges:
        # as late as possible, but before startContainer hooks (they run under the filter) and
        # while P still listens (SCMP_ACT_NOTIFY), as runc does
        load_seccomp(plan, ch)
    mark("init: ready")
    ch.send({"ready": True})
    os.close(ch.w)
    os.close(ch.reply_r)
    ch.w = ch.reply_r = -1
    if fifo_fd is not None:
        try:
            fd = os.open(os.path.basename(spec.fifo or "exec.fifo"), os.O_WRONLY | os.O_CLOEXEC, dir_fd=fifo_fd)
        except OSError as e:
            os.write(2, f"tug-runtime: open exec fifo: {os.strerror(e.errno or 0)}\n".encode())
            os._exit(127)
        os.write(fd, b"0")
        # fd stays open (O_CLOEXEC): `start` reads until EOF, i.e. until the exec happened
        os.close(fifo_fd)
    if spec.hooks.get("startContainer"):
        from tugboat.runtime.hooks import run_hooks

        try:
            run_hooks("startContainer", spec.hooks["startContainer"], spec.hook_state)
        except OSError as e:
            os.write(2, f"tug-runtime: {e.strerror}\n".encode())
            os._exit(127)
    mark("init: exec")
    finish_exec(plan, path, env)


def apply_credentials(plan: ProcessPlan, *, in_userns: bool, ch: Channel | None = None) -> None:
    """Bounding set, no_new_privs, user and groups, capability sets; seccomp here without
    no_new_privs (loading it then needs CAP_SYS_ADMIN), else the caller loads it later."""
    caps = plan.caps
    for cap in range(plan.last_cap + 1):
        if not caps["bounding"] & (1 << cap):
            try:
                k.prctl(k.PR_CAPBSET_DROP, cap)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise OSError(e.errno, f"drop capability {cap} from the bounding set: {e.strerror}") from None
    if plan.no_new_privileges:
        k.prctl(k.PR_SET_NO_NEW_PRIVS, 1)
    elif plan.seccomp is not None:
        # without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it before dropping caps
        load_seccomp(plan, ch)
    u = plan.user
    k.prctl(k.PR_SET_KEEPCAPS, 1)
    if not in_userns or _setgroups_allowed():
        try:
            os.setgroups(u.additional_gids)
        except OSError as e:
            raise OSError(e.errno, f"setgroups {u.additional_gids}: {os.strerror(e.errno or 0).lower()}") from None
    try:
        os.setresgid(u.gid, u.gid, u.gid)
        os.setresuid(u.uid, u.uid, u.uid)
    except OSError as e:
        raise OSError(e.errno, f"set user {u.uid}:{u.gid}: {os.strerror(e.errno or 0).lower()}") from None
    k.prctl(k.PR_SET_KEEPCAPS, 0)
    if u.umask is not None:
        os.umask(u.umask)
    k.capset(caps["effective"] | 0, caps["permitted"], caps["inheritable"])
    k.prctl(k.PR_CAP_AMBIENT, k.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(plan.last_cap + 1):
        if caps["ambient"] & (1 << cap):
            k.prctl(k.PR_CAP_AMBIENT, k.PR_CAP_AMBIENT_RAISE, cap)


def finish_exec(plan: ProcessPlan, path: str, env: list[str]) -> None:
    """execve the user's process (the seccomp filter is already loaded: ``load_seccomp``)."""
    try:
        os.execve(path, plan.args, dict(e.split("=", 1) if "=" in e else (e, "") for e in env))
    except OSError as e:
        os.write(2, f"tug-runtime: exec {plan.args[0]}: {os.strerror(e.errno or 0).lower()}\n".encode())
        os._exit(127)


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "allow"
    except OSError:
        return True


def _dup_stdio(stdio: tuple[int | None, int | None, int | None], preserve_fds: int = 0) -> None:
    """The process's stdio onto 0-2; the originals are closed at exec (a container's process gets
    fds 0-2 and the preserved 3..3+N only, as with runc)."""
    for target, fd in enumerate(stdio):
        if fd is not None and fd != target:
            os.dup2(fd, target)
    _no_inherit(stdio, preserve_fds)


def _no_inherit(stdio: tuple[int | None, int | None, int | None], preserve_fds: int) -> None:
    for fd in set(stdio):
        if fd is not None and fd > 2 and not fd < 3 + preserve_fds:
            os.set_inheritable(fd, False)


def _with_home(env: list[str], uid: int) -> list[str]:
    if any(e.startswith("HOME=") for e in env):
        return env
    home = "/"
    try:
        with open("/etc/passwd") as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    home = parts[5] or "/"
                    break
    except OSError:
        pass
    return [*env, f"HOME={home}"]


def _lookpath(name: str, env: list[str], cwd: str) -> str:
    if "/" in name:
        path = name if name.startswith("/") else os.path.join(cwd, name)
        if not os.path.exists(path):
            raise OSError(errno.ENOENT, f'exec: "{name}": no such file or directory')
        return path
    search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for e in env:
        if e.startswith("PATH="):
            search = e[5:]
    for d in search.split(":"):
        p = os.path.join(d or ".", name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise OSError(errno.ENOENT, f'exec: "{name}": executable file not found in $PATH')


# ---------------------------------------------------------------- exec into a running container


class ExecSpec(Record):
    init_pid: int
    init_pidfd: int
    namespaces: list[str]  # OCI types to join (those the container has)
    cgroup_procs: list[str]
    plan: ProcessPlan
    stdio: tuple[int | None, int | None, int | None] = (None, None, None)
    console_socket: str | None = None
    in_userns: bool = False
    seccomp_agent: dict[str, Any] | None = None  # {"path", "metadata", "state"} for SCMP_ACT_NOTIFY


def start_exec(spec: ExecSpec, detach: bool) -> tuple[int, int]:
    """Fork E1 (joins cgroup and namespaces) which forks E2 (the process). Returns (E1 pid, E2 pid).

    E1 exits with E2's exit status (128+signal when killed) unless ``detach``.
    """
    _preimport(spec.plan.terminal, False)
    agent_conn = _seccomp_agent_connect(spec.seccomp_agent["path"]) if spec.seccomp_agent is not None else None
    ch = Channel()
    e1 = os.fork()
    if e1 == 0:
        try:
            os.close(ch.r)
            os.close(ch.reply_w)
            if agent_conn is not None:
                agent_conn.close()  # P's: the agent must see only P's end
            _run_exec_e1(spec, ch, detach)
        except BaseException as e:
            _report_error(ch, e)
        os._exit(255)
    ch.close_parent_ends()
    e2 = 0
    ready = False
    seccomp_fd: int | None = None
    try:
        while True:
            msg = ch.recv()
            if msg is None:
                raise OSError(errno.EIO, "exec failed during setup without saying why")
            if "error" in msg:
                raise OSError(errno.EIO, msg["error"])
            if "pid" in msg:
                e2 = msg["pid"]
            if "seccompFd" in msg:
                seccomp_fd = msg["seccompFd"]
            if seccomp_fd is not None and e2:
                if agent_conn is None:
                    raise OSError(errno.EINVAL, "seccomp: listener fd received but no seccomp agent")
                pidfd = k.pidfd_open(e2)
                try:
                    _seccomp_agent_send(agent_conn, dict(spec.seccomp_agent or {}), pidfd, seccomp_fd, e2)
                finally:
                    os.close(pidfd)
                agent_conn = None
                seccomp_fd = None
                ch.reply()
            if msg.get("ready"):
                ready = True
            if ready and e2:  # E1's pid message and E2's ready come in either order
                return e1, e2
    except BaseException:
        if e2:
            try:
                fd = k.pidfd_open(e2)
                k.pidfd_send_signal(fd, 9)
                os.close(fd)
            except OSError:
                pass
        try:
            os.waitpid(e1, 0)
        except ChildProcessError:
            pass
        raise
    finally:
        ch.close_all()
        if agent_conn is not None:
            agent_conn.close()


def _run_exec_e1(spec: ExecSpec, ch: Channel, detach: bool) -> None:
    me = str(os.getpid()).encode()
    for path in spec.cgroup_procs:
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, me)
            finally:
                os.close(fd)
        except OSError:
            pass
    console = None
    if spec.plan.terminal:
        if not spec.console_socket:
            raise OSError(errno.EINVAL, "process.terminal is set but no console socket was given")
        from tugboat.runtime import console as cons

        console = cons.connect(spec.console_socket)
    flags = 0
    for t in spec.namespaces:
        flags |= k.NAMESPACE_FLAGS[t]
    if flags:
        k.setns(spec.init_pidfd, flags, "join the container's namespaces")
    if detach:
        os.setsid()
    e2 = os.fork()
    if e2 == 0:
        try:
            _run_exec_e2(spec, ch, console)
        except BaseException as e:
            _report_error(ch, e)
        os._exit(255)
    ch.send({"pid": e2})
    # E2 reports ready itself (its copy of the channel closes at exec)
    os.close(ch.w)
    ch.w = -1
    if detach:
        os._exit(0)
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    while True:
        try:
            _, status = os.waitpid(e2, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)



def _enter_process(
    plan: Any, stdio: Any, console: Any, in_userns: bool, cwd_origin: str, ch: Channel | None = None,
    preserve_fds: int = 0,
) -> tuple[str, dict]:
    """The last steps before exec, shared by a container's init and by exec: rlimits, the
    executable's path, stdio (or the pty), cwd, then credentials. Returns (path, env)."""
    for res, soft, hard in plan.rlimits:
        resource.setrlimit(res, (soft, hard))
    env = _with_home(plan.env, plan.user.uid)
    path = _lookpath(plan.args[0], env, plan.cwd)
    if console is not None:
        from tugboat.runtime import console as cons

        cons.setup_pty(console, plan.user.uid, plan.user.gid, plan.console_size)
        _no_inherit(stdio, preserve_fds)
    else:
        _dup_stdio(stdio, preserve_fds)
    try:
        os.chdir(plan.cwd)
    except OSError as e:
        raise OSError(e.errno, f"chdir to cwd {plan.cwd!r}{cwd_origin}: {os.strerror(e.errno or 0).lower()}") from None
    apply_credentials(plan, in_userns=in_userns, ch=ch)
    return path, env

def _run_exec_e2(spec: ExecSpec, ch: Channel, console: Any) -> None:
    plan = spec.plan
    path, env = _enter_process(plan, spec.stdio, console, spec.in_userns, "", ch)
    if plan.no_new_privileges:
        load_seccomp(plan, ch)
    ch.send({"ready": True})
    finish_exec(plan, path, env)
