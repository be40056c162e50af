"""``Runtime``: the OCI runtime's Python API (what ``tug-runtime``, the engine and the builder call).

Forking is only done from a single-threaded process. When the caller has other threads (the
engine daemon), the verbs that fork (create, run, exec) run in a fresh ``python -I -S`` helper
(the ``tug-runtime`` CLI itself) spawned with ``subprocess`` (fork+exec in C, safe); the other
verbs (start, state, kill, delete, pause, resume, ps, list, wait, stats) never fork and run
in-process. Nothing Python stays resident per container: after create, each container has only
its init and the tiny C ``tug-monitor`` that records its exit status in the state directory.
"""

from __future__ import annotations

import errno
import os
import select
import sys
import time

from tugboat.errors import Conflict, InvalidArgument, NotFound, TugError, Unavailable
from tugboat.runtime import fastjson as json
from tugboat.runtime.state import StateDir, alive, oci_state, proc_start_time, status_of, write_atomic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

ContainerState = dict


class _Kernel:
    """``tugboat.runtime.kernel`` on first use: it loads ``_ctypes`` (~4 ms), which the verbs
    that only read state or write cgroup files (state, list, update, events, pause) never need."""

    def __getattr__(self, name: str) -> Any:
        from tugboat.runtime import kernel

        return getattr(kernel, name)


k = _Kernel()


def _signals() -> dict[str, int]:
    import _signal

    return {name[3:]: int(getattr(_signal, name)) for name in dir(_signal)
            if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(getattr(_signal, name), int)}


def parse_signal(sig: int | str) -> int:
    """A signal number from 9, "9", "KILL", "SIGKILL" (runc's kill syntax)."""
    if isinstance(sig, int):
        return sig
    s = str(sig).strip().upper()
    if s.isdigit():
        return int(s)
    if s.startswith("SIG"):
        s = s[3:]
    table = _signals()
    if s in table:
        return table[s]
    raise InvalidArgument(f"unknown signal {sig!r}")


def _single_threaded() -> bool:
    th = sys.modules.get("threading")
    return th is None or th.active_count() <= 1


def _os_error(e: OSError) -> TugError:
    msg = e.strerror or str(e)
    if e.errno in (errno.EPERM, errno.EACCES):
        from tugboat.errors import PermissionDenied

        return PermissionDenied(msg)
    if e.errno == errno.ENOENT:
        return NotFound(msg)
    if e.errno in (errno.EEXIST, errno.EBUSY):
        return Conflict(msg)
    from tugboat.errors import Internal

    return Internal(msg)


class Runtime:
    """One state root of containers.

    ``cgroup_parent``: with no ``linux.cgroupsPath`` in a config, containers go to
    ``<cgroup_parent>/<id>`` in every hierarchy (default ``/tugboat``); ``None`` gives runc's
    behaviour (``<id>`` relative to the caller's own cgroup).
    """

    def __init__(
        self,
        state_root: str,
        *,
        cgroup_parent: str | None = "/tugboat",
        warn: Callable[[str], None] | None = None,
        force_helper: bool = False,
    ) -> None:
        self.root = os.path.abspath(state_root)
        self.cgroup_parent = cgroup_parent
        self._warn = warn
        self.force_helper = force_helper
        # the CLI exits right after create/run, so it need not hand the monitor to init
        self.double_fork = True

    # ------------------------------------------------------------------ helpers

    def warn(self, msg: str) -> None:
        if self._warn is not None:
            self._warn(msg)
        else:
            import logging

            logging.getLogger("tugboat.runtime").warning("%s", msg)

    def _sd(self, container_id: str) -> StateDir:
        return StateDir(self.root, container_id)

    def _load(self, container_id: str) -> tuple[StateDir, dict[str, Any]]:
        sd = self._sd(container_id)
        return sd, sd.load()

    def _manager(self, record: dict[str, Any]) -> Any:
        from tugboat.runtime.cgroups import manager_from_state

        return manager_from_state(record)

    def _status(self, sd: StateDir, record: dict[str, Any]) -> str:
        mgr = self._manager(record)
        frozen = False
        if mgr is not None and record.get("pid") and alive(record["pid"], record.get("pidStart")):
            frozen = mgr.frozen()
        return status_of(sd, record, frozen)

    def _use_helper(self) -> bool:
        return self.force_helper or not _single_threaded()

    # ------------------------------------------------------------------ lifecycle

    def create(
        self,
        container_id: str,
        bundle: str,
        *,
        console_socket: str | None = None,
        pid_file: str | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        no_pivot: bool = False,
        preserve_fds: int = 0,
    ) -> ContainerState:
        """Create a container (init waits on exec.fifo); returns its OCI state ("created")."""
        if self._use_helper():
            self._helper(
                ["create", "--bundle", bundle, *(["--console-socket", console_socket] if console_socket else []),
                 *(["--pid-file", pid_file] if pid_file else []), *(["--no-pivot"] if no_pivot else []),
                 container_id],
                stdio=(stdin, stdout, stderr),
            )
            return self.state(container_id)
        return self._create(container_id, bundle, console_socket=console_socket, pid_file=pid_file,
                            stdio=(stdin, stdout, stderr), no_pivot=no_pivot, preserve_fds=preserve_fds)

    def _create(
        self,
        container_id: str,
        bundle: str,
        *,
        console_socket: str | None,
        pid_file: str | None,
        stdio: tuple[int | None, int | None, int | None],
        no_pivot: bool,
        preserve_fds: int,
    ) -> ContainerState:
        from tugboat.runtime import caps as capmod
        from tugboat.runtime import process
        from tugboat.runtime.cgroups import new_manager
        from tugboat.runtime.trace import mark

        mark("create: imports done")
        sd = self._sd(container_id)
        bundle = os.path.abspath(bundle)
        try:
            with open(os.path.join(bundle, "config.json"), "rb") as f:
                config = json.loads(f.read())
        except FileNotFoundError:
            raise NotFound(f"bundle {bundle}: config.json not found") from None
        except ValueError as e:
            raise InvalidArgument(f"bundle {bundle}: config.json is not valid JSON: {e}") from None
        if not isinstance(config, dict):
            raise InvalidArgument("config.json: not a JSON object")
        if not str(config.get("ociVersion", "1")).startswith("1"):
            raise InvalidArgument(f"config.json: unsupported ociVersion {config.get('ociVersion')!r}")
        root_path = (config.get("root") or {}).get("path") or "rootfs"
        rootfs = os.path.realpath(os.path.join(bundle, root_path))
        if not os.path.isdir(rootfs):
            raise NotFound(f"rootfs {rootfs} does not exist")
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(sd.path, 0o711)
        except FileExistsError:
            raise Conflict(f"container with id {container_id} already exists") from None
        if not isinstance(config.get("process"), dict):
            # the spec allows creating without a process; `start` must then fail: record only
            record = {"ociVersion": config.get("ociVersion", "1.0.2"), "id": container_id, "pid": 0,
                      "bundle": bundle, "rootfs": rootfs, "created": _rfc3339(time.time_ns()),
                      "annotations": config.get("annotations") or {}, "config": config, "noProcess": True}
            sd.save(record)
            return oci_state(sd, record, "created")
        linux = config.get("linux") or {}
        mgr = None
        warnings: list[str] = []
        try:
            candidate = new_manager(linux.get("cgroupsPath"), container_id, parent=self.cgroup_parent)
            # checked before we own it: a pre-existing cgroup is never removed or signalled by us
            if candidate.frozen():
                raise Conflict("container's cgroup unexpectedly frozen")  # the init would hang there
            if candidate.pids():
                self.warn("container's cgroup is not empty: "
                          f"{len(candidate.pids())} process(es) already in {candidate.path}")
            mgr = candidate
            cg_warnings: list[str] = []
            mgr.create()  # directories now (the init bind-mounts them); limits in parallel below

            # linux.devices are created, not allowed: access stays with linux.resources.devices.
            # Device rules are written once the init is ready (its /dev nodes made), as runc does.
            resources = dict(linux.get("resources") or {})
            device_rules = resources.pop("devices", None)

            def prepare_cgroup() -> None:
                cg_warnings.extend(mgr.apply(resources))

            def after_ready() -> None:
                if device_rules is not None:
                    cg_warnings.extend(mgr.apply({"devices": device_rules}))
                mark("create: cgroup ready")
            os.mkfifo(sd.fifo, 0o622)
            os.chmod(sd.fifo, 0o622)
            seccomp_prog = None
            if linux.get("seccomp"):
                from tugboat.runtime.monitor import cache_dir
                from tugboat.runtime.seccomp import compile_cached

                seccomp_prog = compile_cached(linux["seccomp"], os.path.join(cache_dir(), "seccomp"))
            mark("create: seccomp")
            bounding = capmod.read_bounding_mask()
            can_raise = bool(bounding & (1 << capmod.CAP_NUMBERS["CAP_SYS_RESOURCE"]))
            plan, pw = process.plan_process(config["process"], bounding, capmod.last_cap(), seccomp_prog, can_raise)
            warnings += pw
            for w in warnings:
                self.warn(w)
            hooks = config.get("hooks") or {}
            created_ns = time.time_ns()
            hook_state = {"ociVersion": config.get("ociVersion", "1.0.2"), "id": container_id, "status": "creating",
                          "pid": 0, "bundle": bundle, "annotations": config.get("annotations") or {}}
            seccomp_agent = _seccomp_agent(linux.get("seccomp"), plan, hook_state)

            def created_runtime(pid: int) -> None:
                from tugboat.runtime.hooks import run_hooks

                st = dict(hook_state, status="created", pid=pid)
                run_hooks("prestart", hooks.get("prestart"), st)
                run_hooks("createRuntime", hooks.get("createRuntime"), st)

            mark("create: planned")
            from tugboat.runtime.monitor import ensure_monitor

            spec = process.InitSpec(
                config=config, rootfs=rootfs, state_dir=sd.path, fifo=sd.fifo, plan=plan, bundle_dir=bundle,
                cgroup_procs=mgr.procs_files(),
                cgroup_dirs={name: d for name, d in mgr.dirs().items() if name} if hasattr(mgr, "dirs") else {},
                stdio=stdio, console_socket=os.path.abspath(console_socket) if console_socket else None,
                preserve_fds=preserve_fds, no_pivot=no_pivot, monitor=ensure_monitor(),
                hooks=hooks, hook_state=dict(hook_state, status="created"), seccomp_agent=seccomp_agent,
            )
            mark("create: plan ready")
            started = process.start_init(spec, on_created_runtime=created_runtime, prepare=prepare_cgroup,
                                         double_fork=self.double_fork, after_ready=after_ready)
            mark("create: init ready")
            for w in cg_warnings + started.warnings:
                self.warn(w)
            record = {
                "ociVersion": config.get("ociVersion", "1.0.2"),
                "id": container_id,
                "pid": started.init_pid,
                "pidStart": proc_start_time(started.init_pid),
                "monitorPid": started.monitor_pid,
                "monitorPidStart": proc_start_time(started.monitor_pid),
                "bundle": bundle,
                "rootfs": rootfs,
                "created": _rfc3339(created_ns),
                "annotations": config.get("annotations") or {},
                "config": config,
                "cgroup": mgr.describe(),
            }
            sd.save(record)
            if pid_file:
                write_atomic(os.path.abspath(pid_file), str(started.init_pid).encode())
            return oci_state(sd, record, "created")
        except BaseException as e:
            self._cleanup_failed(sd, mgr)
            if isinstance(e, OSError):
                raise _os_error(e) from None
            if isinstance(e, ValueError):
                raise InvalidArgument(str(e)) from None
            raise

    def _cleanup_failed(self, sd: StateDir, mgr: Any) -> None:
        if mgr is not None:
            signal_cgroup(mgr, 9)
            try:
                mgr.destroy()
            except OSError as e:
                self.warn(f"cleanup: {e}")
        _rmtree(sd.path)

    def start(self, container_id: str) -> None:
        """Release a created container's init (it execs the user's process); run poststart hooks."""
        sd, record = self._load(container_id)
        if record.get("noProcess"):
            raise InvalidArgument(f"container {container_id} has no process to start (config.json has no process)")
        status = self._status(sd, record)
        if status != "created":
            raise Conflict(f"cannot start a container that is {status}" if status != "stopped"
                           else "cannot start a container that has stopped")
        try:
            fd = os.open(sd.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Conflict("cannot start an already running container") from None
        pidfd = self._pidfd(record)
        try:
            got = False
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if pidfd is not None:
                poller.register(pidfd, select.POLLIN)
            while True:
                events = poller.poll(10000)
                if not events:
                    raise Unavailable(f"container {container_id}: init did not respond to start within 10s")
                released = False
                for efd, _ in events:
                    if efd == fd:
                        data = os.read(fd, 16)
                        if data:
                            got = True
                        elif got:
                            released = True  # EOF after the byte: the init has exec'd
                    elif efd == pidfd and not got:
                        raise Conflict(f"container {container_id}: init exited before start")
                    elif efd == pidfd:
                        released = True
                if released:
                    break
        finally:
            os.close(fd)
            if pidfd is not None:
                os.close(pidfd)
        try:
            os.unlink(sd.fifo)
        except FileNotFoundError:
            pass
        hooks = (record.get("config") or {}).get("hooks") or {}
        if hooks.get("poststart"):
            from tugboat.runtime.hooks import run_hooks_warn

            st = oci_state(sd, record, "running")  # the process may already be gone: report it started
            run_hooks_warn("poststart", hooks["poststart"], st, self.warn)

    def run(self, container_id: str, bundle: str, detach: bool = False, **kwargs: Any) -> int | ContainerState:
        """create + start; detached: return the state; else wait, delete and return the exit status."""
        self.create(container_id, bundle, **kwargs)
        try:
            self.start(container_id)
        except BaseException:
            self.delete(container_id, force=True)
            raise
        if detach:
            return self.state(container_id)
        code = self.wait(container_id)
        self.delete(container_id, force=True)
        return code

    def state(self, container_id: str) -> ContainerState:
        sd, record = self._load(container_id)
        return oci_state(sd, record, self._status(sd, record))

    def _pidfd(self, record: dict[str, Any], key: str = "pid") -> int | None:
        """A pidfd for the recorded process, or None if it is gone (start time checked)."""
        pid = record.get(key) or 0
        if not pid:
            return None
        try:
            fd = k.pidfd_open(pid)
        except OSError:
            return None
        if proc_start_time(pid) != record.get(key + "Start") or record.get(key + "Start") is None:
            os.close(fd)
            return None
        return fd

    def kill(self, container_id: str, signal: int | str = "SIGTERM", all: bool = False) -> None:
        sd, record = self._load(container_id)
        sig = parse_signal(signal)
        status = self._status(sd, record)
        if status == "stopped":
            if all:
                return  # runc: `kill --all` of a stopped container is a no-op
            raise Conflict("container not running")
        if all:
            mgr = self._manager(record)
            if mgr is not None:
                signal_cgroup(mgr, sig)
            return
        fd = self._pidfd(record)
        if fd is None:
            raise Conflict("container not running")
        try:
            k.pidfd_send_signal(fd, sig)
        except OSError as e:
            raise _os_error(e) from None
        finally:
            os.close(fd)

    def delete(self, container_id: str, force: bool = False) -> None:
        """Remove a stopped (or created) container; ``force`` kills a running one first."""
        sd = self._sd(container_id)
        try:
            record = sd.load()
        except NotFound:
            if os.path.isdir(sd.path):
                _rmtree(sd.path)
                return
            if force:
                return  # runc: `delete --force` of a missing container succeeds
            raise
        status = self._status(sd, record)
        mgr = self._manager(record)
        if status in ("running", "paused") and not force:
            raise Conflict(f"cannot delete container {container_id} that is not stopped: {status}")
        if status != "stopped":
            if status == "paused" and mgr is not None:
                try:
                    mgr.freeze(False)
                except OSError:
                    pass
            fd = self._pidfd(record)
            if fd is not None:
                try:
                    k.pidfd_send_signal(fd, 9)
                except OSError:
                    pass
                _wait_fd(fd, 10.0)
                os.close(fd)
        if mgr is not None:
            signal_cgroup(mgr, 9)
        mfd = self._pidfd(record, "monitorPid")
        if mfd is not None:
            _wait_fd(mfd, 5.0)
            os.close(mfd)
        hooks = (record.get("config") or {}).get("hooks") or {}
        if hooks.get("poststop"):
            from tugboat.runtime.hooks import run_hooks_warn

            run_hooks_warn("poststop", hooks["poststop"], oci_state(sd, record, "stopped"), self.warn)
        if mgr is not None:
            try:
                mgr.destroy()
            except OSError as e:
                self.warn(str(e.strerror or e))
        _rmtree(sd.path)

    def pause(self, container_id: str) -> None:
        sd, record = self._load(container_id)
        status = self._status(sd, record)
        if status not in ("running", "created"):
            raise Conflict(f"container {container_id} is not running: {status}")
        mgr = self._manager(record)
        if mgr is None:
            raise Unavailable("container has no cgroup")
        try:
            mgr.freeze(True)
        except OSError as e:
            raise _os_error(e) from None

    def resume(self, container_id: str) -> None:
        sd, record = self._load(container_id)
        status = self._status(sd, record)
        if status != "paused":
            raise Conflict(f"container {container_id} is not paused: {status}")
        try:
            self._manager(record).freeze(False)
        except OSError as e:
            raise _os_error(e) from None

    def ps(self, container_id: str) -> list[int]:
        _, record = self._load(container_id)
        mgr = self._manager(record)
        return sorted(mgr.pids()) if mgr is not None else []

    def list(self) -> list[ContainerState]:
        out: list[ContainerState] = []
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return out
        for name in names:
            try:
                out.append(self.state(name))
            except (NotFound, InvalidArgument, ValueError, OSError):
                continue
        return out

    def wait(self, container_id: str, timeout: float | None = None) -> int:
        """Block until the container's init has exited; its exit status (128+signal if killed)."""
        sd, record = self._load(container_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        # the init's pidfd turns readable as soon as it exits; the monitor writes the record
        # right after reaping it (waiting for the monitor's own exit can lag by a scheduler tick)
        for key in ("pid", "monitorPid"):
            fd = self._pidfd(record, key)
            if fd is not None:
                ok = _wait_fd(fd, None if deadline is None else max(0.0, deadline - time.monotonic()))
                os.close(fd)
                if not ok:
                    raise Unavailable(f"container {container_id} still running after {timeout}s")
                break
        info = sd.exit_info()
        from tugboat.runtime.trace import ENABLED, mark

        if ENABLED and info is not None:
            from tugboat.runtime.trace import _T0

            mark(f"wait: done; monitor recorded exit at {(info[2] / 1e9 - _T0) * 1000:.2f}")
        if info is None:
            # init gone, record not written yet: poll until the monitor writes it or is gone
            mfd = self._pidfd(record, "monitorPid")
            try:
                for _ in range(2000):
                    info = sd.exit_info()
                    if info is not None:
                        break
                    if mfd is None or _wait_fd(mfd, 0.001):
                        info = sd.exit_info()
                        break
            finally:
                if mfd is not None:
                    os.close(mfd)
        return info[0] if info is not None else -1

    def stats(self, container_id: str) -> dict[str, int]:
        _, record = self._load(container_id)
        mgr = self._manager(record)
        return mgr.stats() if mgr is not None else {}

    def update(self, container_id: str, resources: dict[str, Any]) -> list[str]:
        """Write new cgroup limits (an OCI ``LinuxResources`` delta: only the fields given
        change) to a created, running or paused container and record them; returns warnings.
        Build the delta from runc-style flags with ``tugboat.runtime.update``."""
        from tugboat.runtime.cgroups import normalize_resources
        from tugboat.runtime.update import complete_for_v2, merge

        sd, record = self._load(container_id)
        status = self._status(sd, record)
        if status == "stopped":
            raise Conflict(f"cannot update container {container_id}: it is stopped")
        mgr = self._manager(record)
        if mgr is None:
            raise Unavailable(f"container {container_id} has no cgroup")
        config = record.setdefault("config", {})
        linux = config.setdefault("linux", {})
        old = normalize_resources(linux.get("resources"))
        resources = normalize_resources(resources)
        if resources.pop("devices", None) is not None:
            self.warn("update: device rules are not changed by an update (as with runc); ignored")
        if getattr(mgr, "version", 1) == 2:
            resources = complete_for_v2(old, resources)
        try:
            warnings = mgr.apply(resources)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        except OSError as e:
            raise _os_error(e) from None
        linux["resources"] = merge(old, resources)
        sd.save(record)
        return warnings

    # ------------------------------------------------------------------ exec

    def exec(
        self,
        container_id: str,
        process: dict[str, Any],
        *,
        detach: bool = False,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        console_socket: str | None = None,
        pid_file: str | None = None,
    ) -> int:
        """Run ``process`` (OCI process object) in the container: its pid if detached, else its exit status."""
        if self._use_helper():
            import tempfile

            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                f.write(json.dumps(process))
                pfile = f.name
            try:
                args = ["exec", "--process", pfile, *(["-d"] if detach else []),
                        *(["--console-socket", console_socket] if console_socket else []),
                        *(["--pid-file", pid_file] if pid_file else []), container_id]
                res = self._helper(args, stdio=(stdin, stdout, stderr), want_result=True)
            finally:
                os.unlink(pfile)
            return int(res.get("pid") if detach else res.get("exitStatus", -1))
        return self._exec(container_id, process, detach=detach, stdio=(stdin, stdout, stderr),
                          console_socket=console_socket, pid_file=pid_file)

    def _exec(
        self,
        container_id: str,
        process_obj: dict[str, Any],
        *,
        detach: bool,
        stdio: tuple[int | None, int | None, int | None],
        console_socket: str | None,
        pid_file: str | None,
        ignore_paused: bool = False,
        on_started: Callable[[], None] | None = None,
        sub_cgroups: dict[str, str] | None = None,
    ) -> int:
        from tugboat.runtime import caps as capmod
        from tugboat.runtime import process

        sd, record = self._load(container_id)
        status = self._status(sd, record)
        if status == "paused" and not ignore_paused:
            raise Conflict("cannot exec in a paused container (resume it first)")
        if status not in ("running", "created", "paused"):
            raise Conflict(f"cannot exec in a container that is {status}")
        config = record.get("config") or {}
        linux = config.get("linux") or {}
        seccomp_prog = None
        if linux.get("seccomp"):
            from tugboat.runtime.monitor import cache_dir
            from tugboat.runtime.seccomp import compile_cached

            seccomp_prog = compile_cached(linux["seccomp"], os.path.join(cache_dir(), "seccomp"))
        bounding = capmod.read_bounding_mask(str(record["pid"]))
        try:
            plan, warnings = process.plan_process(process_obj, bounding, capmod.last_cap(), seccomp_prog, False)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        for w in warnings:
            self.warn(w)
        seccomp_agent = _seccomp_agent(linux.get("seccomp"), plan, {
            "ociVersion": record.get("ociVersion", "1.0.2"), "id": container_id, "status": "running",
            "pid": record["pid"], "bundle": record.get("bundle", ""), "annotations": record.get("annotations") or {}})
        pidfd = self._pidfd(record)
        if pidfd is None:
            raise Conflict("container not running")
        mgr = self._manager(record)
        procs = mgr.procs_files() if mgr is not None else []
        if sub_cgroups and mgr is not None:  # `exec --cgroup`: checked here, before any fork
            try:
                procs = mgr.procs_files_for(sub_cgroups)
            except ValueError as e:
                os.close(pidfd)
                raise InvalidArgument(f"exec --cgroup: {e}") from None
            except OSError as e:
                os.close(pidfd)
                raise NotFound(f"exec --cgroup: {e.strerror}") from None
        types = [n["type"] for n in linux.get("namespaces") or []]
        spec = process.ExecSpec(
            init_pid=record["pid"], init_pidfd=pidfd, namespaces=types,
            cgroup_procs=procs, plan=plan, stdio=stdio,
            console_socket=os.path.abspath(console_socket) if console_socket else None,
            in_userns="user" in types, seccomp_agent=seccomp_agent,
        )
        try:
            e1, e2 = process.start_exec(spec, detach)
        except OSError as e:
            raise _os_error(e) from None
        finally:
            os.close(pidfd)
        if pid_file:
            write_atomic(os.path.abspath(pid_file), str(e2).encode())
        if detach:
            os.waitpid(e1, 0)
            return e2
        if on_started is not None:
            on_started()
        while True:
            try:
                _, st = os.waitpid(e1, 0)
                break
            except InterruptedError:
                continue
        return os.waitstatus_to_exitcode(st)

    # ------------------------------------------------------------------ helper process

    def _helper(
        self, args: list[str], *, stdio: tuple[int | None, int | None, int | None], want_result: bool = False
    ) -> dict[str, Any]:
        """Run a forking verb in a fresh single-threaded ``python -I -S`` (the tug-runtime CLI)."""
        import subprocess

        import tugboat

        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(tugboat.__file__)))
        # duplicates above 2: the helper's own 0/1/2 are /dev/null and an error pipe
        fds = [os.dup(fd if fd is not None else i) for i, fd in enumerate(stdio)]
        r, w = os.pipe()
        cmd = [
            sys.executable, "-I", "-S", "-c",
            f"import sys; sys.path.insert(0, {pkg_parent!r}); from tugboat.runtime.cli import main; sys.exit(main())",
            "--root", self.root, "--cgroup-parent", self.cgroup_parent or "",
            "--stdio-fds", ",".join(str(fd) for fd in fds), "--result-fd", str(w), *args,
        ]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, pass_fds=[*fds, w], close_fds=True)
        finally:
            os.close(w)
            for fd in fds:
                os.close(fd)
        with os.fdopen(r, "rb") as rf:
            # one line, written when the helper is done (the container may keep a copy open
            # until it execs, so do not wait for EOF)
            result_raw = rf.readline()
        _, err = proc.communicate()
        result: dict[str, Any] = {}
        for line in result_raw.decode(errors="replace").splitlines():
            try:
                result.update(json.loads(line))
            except ValueError:
                pass
        for line in err.decode(errors="replace").splitlines():
            if line.startswith("tug-runtime: warning: "):
                self.warn(line[len("tug-runtime: warning: "):])
        if "error" in result:
            from tugboat import errors as errmod

            cls = getattr(errmod, result.get("kind", "Internal"), errmod.Internal)
            raise cls(result["error"])
        if proc.returncode != 0 and not want_result:
            from tugboat.errors import Internal

            raise Internal(err.decode(errors="replace").strip() or f"tug-runtime helper exited {proc.returncode}")
        if want_result and "exitStatus" not in result and "pid" not in result:
            from tugboat.errors import Internal

            raise Internal(err.decode(errors="replace").strip() or "tug-runtime helper gave no result")
        return result


def _seccomp_agent(seccomp: dict[str, Any] | None, plan: Any, state: dict[str, Any]) -> dict[str, Any] | None:
    """With SCMP_ACT_NOTIFY rules: mark the plan and say where its listener fd goes (runc's
    ``listenerPath``/``listenerMetadata``); the profile was validated when compiled."""
    from tugboat.runtime.seccomp import uses_notify

    if seccomp is None or plan.seccomp is None or not uses_notify(seccomp):
        return None
    plan.seccomp_notify = True
    return {"path": seccomp["listenerPath"], "metadata": seccomp.get("listenerMetadata") or "", "state": dict(state)}


def signal_cgroup(mgr: Any, sig: int) -> None:
    """Signal every process of a cgroup through pidfds: a pid is used only after its pidfd is
    open and the pid is seen in the cgroup again (so a recycled pid is never signalled)."""
    pids = mgr.pids()
    fds: dict[int, int] = {}
    for pid in pids:
        try:
            fds[pid] = k.pidfd_open(pid)
        except OSError:
            continue
    try:
        still = set(mgr.pids())
        for pid, fd in fds.items():
            if pid in still:
                try:
                    k.pidfd_send_signal(fd, sig)
                except OSError:
                    pass
    finally:
        for fd in fds.values():
            os.close(fd)


def _wait_fd(fd: int, timeout: float | None) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(None if timeout is None else int(timeout * 1000)))


def _rmtree(path: str) -> None:
    """rm -rf without importing shutil (start-up cost); state dirs are shallow."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                _rmtree(e.path)
            else:
                os.unlink(e.path)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def _rfc3339(ns: int) -> str:
    from tugboat.runtime.state import rfc3339

    return rfc3339(ns)
