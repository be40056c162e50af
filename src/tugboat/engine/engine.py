"""The Engine: the one facade above images, runtime, network and volumes.

Every public method is synchronous and thread-safe; the API server calls them from an executor.
State lives in ``<root>/containers/<id>/`` (see docs/areas/engine.md): ``container.json`` (the
record, written atomically), ``container-json.log`` (json-file logs), the stdio FIFOs, the OCI
bundle (``bundle/config.json``, ``bundle/rootfs`` = the overlay mount), ``hostname``, ``hosts``,
``resolv.conf``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import platform
import secrets
import shutil
import signal as _signal
import socket
import stat
import subprocess
import threading
import time
from typing import Any

from tugboat.engine import spec as specmod
from tugboat.engine.events import EventBus
from tugboat.engine.iopump import IOPump, ProcessIO
from tugboat.engine.logs import JsonFileWriter
from tugboat.engine.rt import RuntimeAdapter
from tugboat.engine.util import (
    NAME_RE,
    ZERO_TIME,
    dumps_compact,
    human_duration,
    new_id,
    now_rfc3339,
    parse_signal,
    random_name,
    read_json,
    reap_exit_code,
    rfc3339_to_ts,
    write_json_atomic,
)
from tugboat.errors import Conflict, InvalidArgument, NotFound, NotModified, TugError
from tugboat.util.fs import write_atomic
from tugboat.volumes.store import VolumeStore

log = logging.getLogger("tugboat.engine")

ENGINE_VERSION = "28.2.2-tugboat"
PR_SET_CHILD_SUBREAPER = 36


# parts of the data root that hold containers' files (their setuid binaries, env, logs): root only
PRIVATE_DIRS = ("containers", "snapshots", "volumes", "build")


def _harden_root(root: str, runtime_root: str) -> None:
    """Create the data root or tighten an existing one, as dockerd does at start: the root is
    traversable only (0711) and every directory holding containers' files is 0700, so no other host
    user reaches a container's setuid files, its environment or its logs."""
    os.makedirs(root, mode=0o711, exist_ok=True)
    os.chmod(root, 0o711)
    for d in (*(os.path.join(root, n) for n in PRIVATE_DIRS), runtime_root):
        os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)


def set_subreaper() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception:
        pass


def _exit_code_for_error(msg: str) -> int:
    low = msg.lower()
    if "executable file not found" in low or "no such file or directory" in low:
        return 127
    if "permission denied" in low:
        return 126
    return 128


class Container:
    """An in-memory container record; ``data`` is docker's inspect shape plus ``Tug``."""

    def __init__(self, data: dict, path: str) -> None:
        self.data = data
        self.dir = path
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.exit_gen = 0
        self.removed = False
        self.pio: ProcessIO | None = None  # output of the current run
        self.pio_next: ProcessIO | None = None  # where attach-before-start lands
        self.restart_timer: threading.Timer | None = None
        # set while no exit clean-up (runtime delete, network teardown, rootfs unmount) is pending
        self.cleaned = threading.Event()
        self.cleaned.set()
        self.fs_users = 0  # `docker cp`/export of a stopped container holding its rootfs mounted

    @property
    def id(self) -> str:
        return self.data["Id"]

    @property
    def name(self) -> str:
        return self.data["Name"]

    @property
    def state(self) -> dict:
        return self.data["State"]

    @property
    def tug(self) -> dict:
        return self.data.setdefault("Tug", {})

    @property
    def running(self) -> bool:
        return bool(self.state.get("Running"))

    def save(self) -> None:
        write_json_atomic(os.path.join(self.dir, "container.json"), self.data, mode=0o600)  # env: secrets

    def wait_reached(self, condition: str, gen: int) -> bool:
        """Whether a wait for ``condition`` begun at exit generation ``gen`` is over (hold the lock)."""
        if condition == "removed":
            return self.removed
        if condition == "not-running":
            return not self.running and not self.state.get("Restarting")
        return self.exit_gen != gen


class Engine:
    def __init__(self, root: str, *, runtime_root: str | None = None, restore: bool = True,
                 subreaper: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.containers_dir = os.path.join(self.root, "containers")
        self.runtime_root = runtime_root or os.path.join(self.root, "runtime")
        _harden_root(self.root, self.runtime_root)
        self.runtime = RuntimeAdapter(self.runtime_root)
        self.volumes = VolumeStore(os.path.join(self.root, "volumes"))
        self.events = EventBus()
        self.pump = IOPump()
        from tugboat.engine.health import HealthMonitor

        self.health = HealthMonitor(self)
        self.images: Any = None
        self.snapshotter: Any = None
        self.network: Any = None
        self._init_images()
        self._init_network()
        self._lock = threading.RLock()
        self._containers: dict[str, Container] = {}
        self._names: dict[str, str] = {}
        self.execs: dict[str, Any] = {}
        self._reaper = _Reaper(self._delete_removed)
        self.started_at = time.time()
        self.shutting_down = False
        if subreaper:  # exec'd processes are reparented to us: their exit codes come from waitpid
            set_subreaper()
        self._load()
        if restore:
            self.restore()

    # -- wiring to other areas -----------------------------------------------------------------
    def _init_images(self) -> None:
        try:
            from tugboat.images.service import ImageService

            self.images = ImageService(self.root)
        except ImportError:
            self.images = None
        if self.images is not None:
            self.snapshotter = getattr(self.images, "snapshotter", None)

    def _init_network(self) -> None:
        if os.environ.get("TUG_ENGINE_NO_NETWORK"):
            return
        try:
            from tugboat.network.manager import NetworkManager

            self.network = NetworkManager(self.root)
        except ImportError:
            self.network = None
        except Exception:
            log.exception("network manager failed to initialise; containers get --network none")
            self.network = None

    def _image_service(self) -> Any:
        if self.images is None:
            raise TugError("image service is not available in this build")
        return self.images

    # -- loading and live restore --------------------------------------------------------------
    def _load(self) -> None:
        for cid in os.listdir(self.containers_dir):
            path = os.path.join(self.containers_dir, cid)
            if cid.endswith(".removing"):  # a removal the daemon did not finish
                self._delete_removed(cid[: -len(".removing")], path)
                continue
            try:
                data = read_json(os.path.join(path, "container.json"))
            except (OSError, ValueError):
                continue
            for private in (os.path.join(path, "container.json"), data.get("LogPath") or ""):
                with contextlib.suppress(OSError):  # an older daemon wrote them world-readable
                    if private and os.stat(private).st_mode & 0o077:
                        os.chmod(private, 0o600)
            c = Container(data, path)
            c.pio_next = self._new_pio(c)
            self._containers[c.id] = c
            self._names[c.name] = c.id

    def restore(self) -> None:
        """Re-adopt running containers; record exits that happened while the daemon was away."""
        if self.network is not None:
            try:
                self.network.restore()
            except Exception:
                log.exception("network restore failed")
        for c in list(self._containers.values()):
            with c.lock:
                if not c.running:
                    if c.state.get("Status") != "created":
                        # an exited container keeps no mount (an older daemon left them mounted)
                        self._unmount_rootfs(c)
                    continue
                st = self.runtime.state(c.id)
                pid = int(c.state.get("Pid") or 0)
                alive = st is not None and st.get("status") in ("running", "paused") and pid > 0
                if alive:
                    self._adopt(c, pid)
                    continue
                code = 255
                if st is not None and st.get("exitStatus") is not None and int(st["exitStatus"]) >= 0:
                    code = int(st["exitStatus"])
                self._finish_exit(c, code, restore=True)
            self._cleanup_exited(c)
        for c in list(self._containers.values()):
            pol = (c.data["HostConfig"].get("RestartPolicy") or {}).get("Name") or "no"
            if (not c.running and c.tug.get("WantRunning") and pol in ("always", "unless-stopped")
                    and not c.tug.get("ManuallyStopped")):
                self._schedule_restart(c, 0.0)

    def _adopt(self, c: Container, pid: int) -> None:
        pio = c.pio_next or self._new_pio(c)
        c.pio_next = self._new_pio(c)
        c.pio = pio
        pio.writer = self._log_writer(c)
        pio.stdin_ready.set()
        for stream in ("stdout", "stderr"):
            fifo = os.path.join(c.dir, stream)
            if os.path.exists(fifo) and not c.data["Config"].get("Tty"):
                fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                self.pump.add_output(fd, stream, pio)
        if c.data["Config"].get("Tty") or not os.path.exists(os.path.join(c.dir, "stdout")):
            pio.closed.set()
        from tugboat.engine.health import health_config

        if health_config(c) is not None:
            self.health.container_started(c)
        self.pump.watch_exit(pid, lambda: self._on_exit(c, pid), drain=pio)

    # -- lookups ---------------------------------------------------------------------------------
    def get(self, ref: str) -> Container:
        if not ref:
            raise NotFound("No such container: ")
        with self._lock:
            name = ref if ref.startswith("/") else "/" + ref
            if name in self._names:
                return self._containers[self._names[name]]
            if ref in self._containers:
                return self._containers[ref]
            matches = [c for cid, c in self._containers.items() if cid.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def containers(self) -> list[Container]:
        with self._lock:
            return list(self._containers.values())

    # -- create --------------------------------------------------------------------------------
    def create(self, body: dict, name: str | None = None, platform_: str | None = None) -> dict:
        if not isinstance(body, dict):
            raise InvalidArgument("Config cannot be empty in order to create a container")
        cfg = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
        host = dict(body.get("HostConfig") or {})
        netcfg = dict(body.get("NetworkingConfig") or {})
        image_ref = cfg.get("Image")
        if not image_ref or not isinstance(image_ref, str):
            raise InvalidArgument("Config cannot be empty in order to create a container")
        specmod.validate(cfg, host)
        if name is not None and name != "":
            if not NAME_RE.match(name):
                raise InvalidArgument(
                    f'Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed'
                )
            cname = "/" + name.lstrip("/")
        else:
            cname = None
        image = self._image_service().resolve(image_ref)
        icfg = (image.config or {}).get("config") or {}
        cid = new_id()
        with self._lock:
            if cname is None:
                cname = "/" + random_name()
                while cname in self._names:
                    cname = "/" + random_name()
            if cname in self._names:
                other = self._names[cname]
                raise Conflict(
                    f'Conflict. The container name "{cname}" is already in use by container '
                    f'"{other}". You have to remove (or rename) that container to be able to reuse '
                    "that name."
                )
            self._names[cname] = cid  # reserve
        cdir = os.path.join(self.containers_dir, cid)
        created_ok = False
        try:
            os.makedirs(cdir)
            data = specmod.fill_defaults(cid, cname, cfg, host, netcfg, image, icfg)
            # as dockerd: no log file (and an empty LogPath) for the "none" logging driver
            no_log = ((data["HostConfig"].get("LogConfig") or {}).get("Type") or "json-file") == "none"
            data["LogPath"] = "" if no_log else os.path.join(cdir, f"{cid}-json.log")
            data["HostnamePath"] = os.path.join(cdir, "hostname")
            data["HostsPath"] = os.path.join(cdir, "hosts")
            data["ResolvConfPath"] = os.path.join(cdir, "resolv.conf")
            c = Container(data, cdir)
            rootfs = os.path.join(cdir, "bundle", "rootfs")
            os.makedirs(rootfs)
            c.tug["Rootfs"] = rootfs
            self._mount_rootfs(c, image)
            c.data["Mounts"] = self._setup_mounts(c, icfg)
            # the FIFOs a start opens (and a restarted daemon reopens): stdin only for OpenStdin,
            # stdout/stderr unless a TTY carries the output (an inode each on the data root)
            ccfg = data["Config"]
            streams = ("stdin",) if ccfg.get("OpenStdin") else ()
            if not ccfg.get("Tty"):
                streams += ("stdout", "stderr")
            for stream in streams:
                os.mkfifo(os.path.join(cdir, stream), 0o600)
            if data["LogPath"]:
                os.close(os.open(data["LogPath"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600))
            c.pio_next = self._new_pio(c)
            c.save()
            created_ok = True
        finally:
            if not created_ok:
                with self._lock:
                    self._names.pop(cname, None)
                with contextlib.suppress(Exception):
                    self._cleanup_dir(cid, cdir)
        with self._lock:
            self._containers[cid] = c
        self._event(c, "create")
        return {"Id": cid, "Warnings": []}

    def _mount_rootfs(self, c: Container, image: Any) -> None:
        rootfs = c.tug["Rootfs"]
        if os.path.ismount(rootfs):
            return
        if self.snapshotter is None:
            raise TugError("snapshotter is not available in this build")
        rs = self.snapshotter.prepare(c.id, image, mountpoints=_mountpoints(c.data))
        rs.mount(rootfs)

    def _unmount_rootfs(self, c: Container) -> None:
        rootfs = c.tug.get("Rootfs")
        if rootfs and os.path.ismount(rootfs):
            _lazy_umount(rootfs)

    def fs_acquire(self, ref: str) -> tuple[Container, str]:
        """The mounted rootfs of a container that is not running (``docker cp``, ``export``):
        mounted for the caller (a stopped container keeps none), until :meth:`fs_release`."""
        c = self.get(ref)
        with c.lock:
            self._await_cleanup(c)
            if c.removed:
                raise NotFound(f"No such container: {ref}")
            rootfs = c.tug.get("Rootfs")
            if not rootfs:
                raise InvalidArgument(f"container {c.id} has no filesystem")
            if not os.path.ismount(rootfs):
                self._mount_rootfs(c, self._image_service().resolve(c.data["Image"]))
            c.fs_users += 1
            return c, rootfs

    def fs_release(self, c: Container) -> None:
        with c.lock:
            c.fs_users = max(0, c.fs_users - 1)
            if c.fs_users == 0 and not c.running and not c.removed and c.state.get("Status") != "created":
                self._unmount_rootfs(c)

    def await_cleanups(self, timeout: float = 30.0) -> None:
        """Wait until no container's exit clean-up is pending (network views and removals call
        this: a container that has just stopped no longer holds its endpoint)."""
        deadline = time.monotonic() + timeout
        for c in self.containers():
            if not c.cleaned.is_set():
                c.cleaned.wait(max(0.0, deadline - time.monotonic()))

    def _await_cleanup(self, c: Container) -> None:
        """(holding c.lock) wait for a pending exit clean-up; it never takes c.lock itself."""
        if not c.cleaned.is_set() and not c.cleaned.wait(60):
            log.warning("exit clean-up of %s did not finish within 60 s", c.id[:12])

    def _cleanup_dir(self, cid: str, cdir: str) -> None:
        rootfs = os.path.join(cdir, "bundle", "rootfs")
        if os.path.ismount(rootfs):
            _lazy_umount(rootfs)
        if self.snapshotter is not None:
            with contextlib.suppress(Exception):
                self.snapshotter.remove(cid)
        shutil.rmtree(cdir, ignore_errors=True)

    def _setup_mounts(self, c: Container, icfg: dict) -> list[dict]:
        from tugboat.engine.mounts import resolve_mounts

        return resolve_mounts(self, c, icfg)

    def _new_pio(self, c: Container) -> ProcessIO:
        return ProcessIO(c.id)

    # -- start ---------------------------------------------------------------------------------
    def start(self, ref: str) -> None:
        c = self.get(ref)
        with c.lock:
            if c.state.get("Paused"):
                raise Conflict("cannot start a paused container, try unpause instead")
            if c.running:
                raise NotModified("container already running")
            if c.restart_timer is not None:
                c.restart_timer.cancel()
                c.restart_timer = None
            c.tug["ManuallyStopped"] = False
            try:
                self._start_locked(c)
            except TugError as exc:
                c.state["Error"] = exc.message
                c.state["ExitCode"] = _exit_code_for_error(exc.message)
                c.save()
                if c.data["HostConfig"].get("AutoRemove"):
                    threading.Thread(target=self._auto_remove, args=(c,), daemon=True).start()
                raise

    def _start_locked(self, c: Container) -> None:
        hc = c.data["HostConfig"]
        cfg = c.data["Config"]
        tty = bool(cfg.get("Tty"))
        self._await_cleanup(c)
        # a stopped container's rootfs is unmounted (and after a host reboot, any container's)
        if not os.path.ismount(c.tug["Rootfs"]):
            self._mount_rootfs(c, self._image_service().resolve(c.data["Image"]))
        netinfo = self._setup_network(c)
        fds_to_close: list[int] = []
        pio = c.pio_next or self._new_pio(c)
        pio.writer = self._log_writer(c)
        console_sock = None
        master_box: list[int] = []
        try:
            spec = specmod.build_spec(self, c, netinfo)
            bundle = os.path.join(c.dir, "bundle")
            # rewritten at every start and read at once by the runtime: atomic, no fsync needed
            write_atomic(os.path.join(bundle, "config.json"), dumps_compact(spec),
                         sync=False)
            devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            fds_to_close.append(devnull)
            if tty:
                console_sock, listener = self._console_listener(c)
                acceptor = threading.Thread(target=_accept_master, args=(listener, master_box), daemon=True)
                acceptor.start()
                stdin_fd = stdout_fd = stderr_fd = devnull
            else:
                out_r = {}
                out_w = {}
                for stream in ("stdout", "stderr"):
                    fifo = os.path.join(c.dir, stream)
                    out_r[stream] = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                    out_w[stream] = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
                    fds_to_close.append(out_w[stream])
                stdout_fd, stderr_fd = out_w["stdout"], out_w["stderr"]
                if cfg.get("OpenStdin"):
                    fifo = os.path.join(c.dir, "stdin")
                    in_r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                    in_w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                    os.set_blocking(in_r, True)
                    fds_to_close.append(in_r)
                    pio.stdin_fd = in_w
                    stdin_fd = in_r
                else:
                    stdin_fd = devnull
            try:
                pid = self.runtime.create(c.id, bundle, stdin=stdin_fd, stdout=stdout_fd,
                                          stderr=stderr_fd, console_socket=console_sock)
            except TugError:
                if not tty:
                    for fd in out_r.values():
                        os.close(fd)
                if pio.stdin_fd is not None:
                    pio.close_stdin()
                raise
            if tty:
                acceptor.join(5)
                listener.close()
                if not master_box:
                    self.runtime.delete(c.id, force=True)
                    raise TugError("did not receive the container's console from the runtime")
                master = master_box[0]
                pio.pty_master = master
                pio.stdin_fd = master
                size = hc.get("ConsoleSize") or [0, 0]
                if size and size[0] and size[1]:
                    _set_winsize(master, int(size[0]), int(size[1]))
                self.pump.add_output(os.dup(master), "stdout", pio)
            else:
                for stream, fd in out_r.items():
                    self.pump.add_output(fd, stream, pio)
            try:
                self.runtime.start(c.id)
            except TugError:
                self.runtime.delete(c.id, force=True)
                raise
        except BaseException:
            if pio.writer is not None:
                pio.writer.close()
                pio.writer = None
            self._teardown_network(c)
            pio.abort()
            c.pio_next = self._new_pio(c)
            raise
        finally:
            for fd in fds_to_close:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if console_sock:
                with contextlib.suppress(OSError):
                    os.unlink(console_sock)
        c.pio = pio
        c.pio_next = self._new_pio(c)
        pio.stdin_ready.set()
        st = c.state
        st.update(
            Status="running", Running=True, Paused=False, Restarting=False, OOMKilled=False,
            Dead=False, Pid=pid, ExitCode=0, Error="", StartedAt=now_rfc3339(),
            FinishedAt=ZERO_TIME,
        )
        c.tug["WantRunning"] = True
        c.tug["PidStart"] = _proc_start_time(pid)
        self.health.container_started(c)
        if netinfo is not None:
            c.data["NetworkSettings"] = specmod.network_settings(netinfo, c)
        c.save()
        self._event(c, "start")
        c.changed.notify_all()
        self.pump.watch_exit(pid, lambda: self._on_exit(c, pid), drain=pio)

    def _log_writer(self, c: Container) -> JsonFileWriter | None:
        lc = c.data["HostConfig"].get("LogConfig") or {}
        opts = lc.get("Config") or {}
        if (lc.get("Type") or "json-file") not in ("json-file", "local"):
            return None
        return JsonFileWriter(c.data["LogPath"], opts.get("max-size"), opts.get("max-file"))

    def _console_listener(self, c: Container) -> tuple[str, socket.socket]:
        path = os.path.join("/tmp", f"tug-console-{c.id[:12]}-{secrets.token_hex(4)}.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(1)
        s.settimeout(10)
        return path, s

    def _setup_network(self, c: Container) -> Any:
        if self.network is None:
            return None
        from tugboat.engine.spec import network_spec

        return self.network.setup_container(c.id, network_spec(c))

    def _teardown_network(self, c: Container) -> None:
        if self.network is None:
            return
        try:
            self.network.teardown_container(c.id)
        except Exception:
            log.exception("network teardown of %s failed", c.id[:12])

    # -- exit handling -------------------------------------------------------------------------
    def _on_exit(self, c: Container, pid: int) -> None:
        code = reap_exit_code(pid)
        if code is None:
            code = self.runtime.exit_status(c.id)
        if code is None or code < 0:
            code = 255
        with c.lock:
            if c.state.get("Pid") != pid or not c.running:
                return
            self._finish_exit(c, code)
        self._cleanup_exited(c)

    def _finish_exit(self, c: Container, code: int, restore: bool = False) -> None:
        """(holding c.lock) Record the exit and wake waiters (`stop`, `wait`); the caller then runs
        :meth:`_cleanup_exited` without the lock, so `docker stop` answers before the runtime
        state, cgroups, network and rootfs mount are gone (start/rm/cp wait for that)."""
        c.cleaned.clear()
        pio = c.pio
        if pio is not None:
            pio.close_stdin()
            if pio.pty_master is not None:
                with contextlib.suppress(OSError):
                    os.close(pio.pty_master)
            if not restore and not pio.closed.wait(0.2):
                # every process of the container is normally gone with its init (a PID
                # namespace), so the FIFOs reach EOF at once; else kill what is left
                self.runtime.delete(c.id, force=True)
                pio.closed.wait(10)
            if pio.writer is not None:
                pio.writer.close()
                pio.writer = None
        st = c.state
        self.health.forget(c.id)
        st.update(Status="exited", Running=False, Paused=False, Restarting=False, Pid=0,
                  ExitCode=code, FinishedAt=now_rfc3339())
        if code == 137 and _oom_killed(c):
            st["OOMKilled"] = True
        c.exit_gen += 1
        hc = c.data["HostConfig"]
        restart = self._should_restart(c, code) and not self.shutting_down
        if hc.get("AutoRemove") and not self._should_restart(c, code):
            # removed right away: no need to persist the exit first (a daemon dying in between
            # finds the record running, records the exit again and removes it then)
            self._event(c, "die", {"exitCode": str(code)})
            c.changed.notify_all()
            threading.Thread(target=self._auto_remove, args=(c,), daemon=True).start()
            return
        if restart:
            c.data["RestartCount"] = int(c.data.get("RestartCount") or 0) + 1
            st["Restarting"] = True
            st["Status"] = "restarting"
        c.save()
        self._event(c, "die", {"exitCode": str(code)})
        c.changed.notify_all()
        if restart:
            delay = min(0.1 * (2 ** min(c.data["RestartCount"] - 1, 10)), 10.0)
            self._schedule_restart(c, delay)

    def _cleanup_exited(self, c: Container) -> None:
        """After an exit, without c.lock: delete the runtime state (cgroups), tear down the
        network and unmount the rootfs (docker keeps no mount for a stopped container)."""
        if c.cleaned.is_set():
            return
        try:
            self.runtime.delete(c.id, force=True)
            self._teardown_network(c)
            if c.fs_users == 0:
                self._unmount_rootfs(c)
        except Exception:
            log.exception("exit clean-up of %s failed", c.id[:12])
        finally:
            c.cleaned.set()

    def _should_restart(self, c: Container, code: int) -> bool:
        pol = c.data["HostConfig"].get("RestartPolicy") or {}
        name = pol.get("Name") or "no"
        if c.tug.get("ManuallyStopped") or c.removed:
            return False
        if name == "always" or name == "unless-stopped":
            return True
        if name == "on-failure":
            mx = int(pol.get("MaximumRetryCount") or 0)
            return code != 0 and (mx == 0 or int(c.data.get("RestartCount") or 0) < mx)
        return False

    def _schedule_restart(self, c: Container, delay: float) -> None:
        def go() -> None:
            with c.lock:
                c.restart_timer = None
                if c.removed or c.running or c.tug.get("ManuallyStopped"):
                    c.state["Restarting"] = False
                    if not c.running and c.state.get("Status") == "restarting":
                        c.state["Status"] = "exited"
                    return
                try:
                    self._start_locked(c)
                except TugError as exc:
                    c.state.update(Restarting=False, Status="exited", Error=exc.message)
                    c.save()
                    code = _exit_code_for_error(exc.message)
                    if self._should_restart(c, code):
                        c.data["RestartCount"] = int(c.data.get("RestartCount") or 0) + 1
                        self._schedule_restart(c, 1.0)

        t = threading.Timer(delay, go)
        t.daemon = True
        c.restart_timer = t
        t.start()

    def _auto_remove(self, c: Container) -> None:
        try:
            self.remove(c.id, force=True, volumes=True)
        except NotFound:
            pass
        except Exception:
            log.exception("auto-remove of %s failed", c.id[:12])

    # -- stop/kill/restart/pause ------------------------------------------------------------------
    def stop(self, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
        c = self.get(ref)
        with c.lock:
            if c.restart_timer is not None:
                c.restart_timer.cancel()
                c.restart_timer = None
                c.tug["ManuallyStopped"] = True
                if c.state.get("Restarting"):
                    c.state.update(Restarting=False, Status="exited")
                    c.save()
                    return
            if not c.running:
                raise NotModified("container already stopped")
            c.tug["ManuallyStopped"] = True
            c.tug["WantRunning"] = False
            if _restarts_after_daemon_restart(c):
                c.save()  # else the exit's save records it (one fsync less per stop)
            cfg = c.data["Config"]
            stopsig = parse_signal(sig or cfg.get("StopSignal") or "SIGTERM", _signal.SIGTERM)
            if timeout is None:
                timeout = cfg.get("StopTimeout")
                if timeout is None:
                    timeout = 10
            gen = c.exit_gen
            if c.state.get("Paused"):
                with contextlib.suppress(TugError):
                    self.runtime.resume(c.id)
            if timeout != 0 or stopsig == _signal.SIGKILL:
                with contextlib.suppress(TugError):
                    self.runtime.kill(c.id, stopsig)
            deadline = None if timeout < 0 else time.monotonic() + timeout
            while c.exit_gen == gen:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                c.changed.wait(left if left is not None else 1.0)
            if c.exit_gen == gen:
                with contextlib.suppress(TugError):
                    self.runtime.kill(c.id, _signal.SIGKILL, all_=True)
                end = time.monotonic() + 30
                while c.exit_gen == gen and time.monotonic() < end:
                    c.changed.wait(1.0)
        self._event(c, "stop")

    def kill(self, ref: str, sig: str | int | None = None) -> None:
        c = self.get(ref)
        signum = parse_signal(sig, _signal.SIGKILL)
        with c.lock:
            if not c.running:
                raise Conflict(f"cannot kill container: {ref}: container {c.id} is not running")
            if signum in (_signal.SIGKILL, _signal.SIGTERM, _signal.SIGINT):
                c.tug["ManuallyStopped"] = True
                c.tug["WantRunning"] = False
                if _restarts_after_daemon_restart(c):
                    c.save()
            self.runtime.kill(c.id, signum)
            gen = c.exit_gen
            if signum == _signal.SIGKILL:
                end = time.monotonic() + 10
                while c.exit_gen == gen and time.monotonic() < end:
                    c.changed.wait(0.5)
        self._event(c, "kill", {"signal": str(signum)})

    def restart(self, ref: str, timeout: int | None = None) -> None:
        c = self.get(ref)
        with contextlib.suppress(NotModified):
            self.stop(c.id, timeout)
        with c.lock:
            c.tug["ManuallyStopped"] = False
            if not c.running:
                self._start_locked(c)
        self._event(c, "restart")

    def pause(self, ref: str) -> None:
        c = self.get(ref)
        with c.lock:
            if not c.running:
                raise Conflict(f"Container {c.id} is not running")
            if c.state.get("Paused"):
                raise Conflict(f"Container {c.id} is already paused")
            self.runtime.pause(c.id)
            c.state.update(Paused=True, Status="paused")
            c.save()
        self._event(c, "pause")

    def unpause(self, ref: str) -> None:
        c = self.get(ref)
        with c.lock:
            if not c.state.get("Paused"):
                raise Conflict(f"Container {c.id} is not paused")
            self.runtime.resume(c.id)
            c.state.update(Paused=False, Status="running")
            c.save()
        self._event(c, "unpause")

    # -- wait ------------------------------------------------------------------------------------
    def wait(self, ref: str, condition: str = "not-running", timeout: float | None = None,
             cancelled: threading.Event | None = None) -> dict:
        if condition in ("", None):
            condition = "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: {condition!r}")
        c = self.get(ref)
        deadline = None if timeout is None else time.monotonic() + timeout
        with c.lock:
            gen = c.exit_gen
            while True:
                if cancelled is not None and cancelled.is_set():
                    raise TugError("wait cancelled")
                if c.wait_reached(condition, gen):
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TugError("timeout waiting for the container")
                c.changed.wait(min(left, 1.0) if left is not None else 1.0)
            res: dict[str, Any] = {"StatusCode": int(c.state.get("ExitCode") or 0)}
            if c.state.get("Error"):
                res["Error"] = {"Message": c.state["Error"]}
            return res

    # -- remove ---------------------------------------------------------------------------------
    def remove(self, ref: str, force: bool = False, volumes: bool = False, link: bool = False) -> None:
        c = self.get(ref)
        if link:
            raise InvalidArgument("Conflict, cannot remove the default link name of the container")
        with c.lock:
            if c.removed:
                return
            if c.running:
                if not force:
                    if c.state.get("Paused"):
                        raise Conflict(
                            f'cannot remove container "{c.name}": container is paused and must be '
                            "unpaused first"
                        )
                    raise Conflict(
                        f'cannot remove container "{c.name}": container is running: stop the '
                        "container before removing or force remove"
                    )
                c.tug["ManuallyStopped"] = True
                if c.state.get("Paused"):
                    with contextlib.suppress(TugError):
                        self.runtime.resume(c.id)
                gen = c.exit_gen
                with contextlib.suppress(TugError):
                    self.runtime.kill(c.id, _signal.SIGKILL, all_=True)
                end = time.monotonic() + 15
                while c.exit_gen == gen and time.monotonic() < end:
                    c.changed.wait(0.5)
                if c.running:
                    raise Conflict(f"could not kill running container {c.id}, cannot remove")
            if c.restart_timer is not None:
                c.restart_timer.cancel()
                c.restart_timer = None
            c.removed = True
            c.tug["ManuallyStopped"] = True
            if c.cleaned.is_set():
                self.runtime.delete(c.id, force=True)  # a created one's; a no-op after an exit
                self._unmount_rootfs(c)
            # else the exit clean-up still runs (runtime state, network, mount): `rm` and `wait
            # removed` need not wait for it; the reaper waits before deleting the snapshot
            with self._lock:
                self._containers.pop(c.id, None)
                if self._names.get(c.name) == c.id:
                    self._names.pop(c.name, None)
            if volumes:
                for m in c.data.get("Mounts") or []:
                    if m.get("Type") == "volume" and m.get("Tug_Anonymous"):
                        with contextlib.suppress(TugError):
                            self.volumes.remove(m["Name"], in_use=self.volume_users)
            tmp = c.dir + ".removing"
            try:
                os.rename(c.dir, tmp)  # the record is gone: `_load` skips (and deletes) *.removing
            except OSError:
                tmp = c.dir
            # `wait removed` (docker run --rm) is answered now; the snapshot and directory
            # (unmounted, renamed, keyed by this id only) are deleted by the reaper thread
            c.changed.notify_all()
        self._event(c, "destroy")
        self._reaper.put(c.id, tmp, c)

    def flush_removals(self, timeout: float | None = 60.0) -> None:
        """Wait until removed containers' snapshots and directories are deleted (image removal
        calls this first, so a just-removed container's layers are no longer in use)."""
        self._reaper.flush(timeout)

    def _delete_removed(self, cid: str, path: str, c: Container | None = None) -> None:
        if c is None:  # left by a daemon that died: its runtime state may be left too
            with contextlib.suppress(Exception):
                self.runtime.delete(cid, force=True)
        elif not c.cleaned.wait(60):
            log.warning("exit clean-up of %s did not finish within 60 s", cid[:12])
        rootfs = os.path.join(path, "bundle", "rootfs")
        if os.path.ismount(rootfs):  # renamed while the exit clean-up was still unmounting it
            _lazy_umount(rootfs)
        if self.snapshotter is not None:
            with contextlib.suppress(Exception):
                self.snapshotter.remove(cid)
        shutil.rmtree(path, ignore_errors=True)

    # -- inspect/list -----------------------------------------------------------------------------
    def inspect(self, ref: str, size: bool = False) -> dict:
        c = self.get(ref)
        out = _snapshot(c)
        out.pop("Tug", None)
        for m in out.get("Mounts") or []:
            for k in [k for k in m if k.startswith("Tug_")]:
                m.pop(k)
        st = out["State"]
        st.setdefault("Health", None)
        if st.get("Health") is None:
            st.pop("Health", None)
        if size:
            out["SizeRw"] = self._size_rw(c)
            out["SizeRootFs"] = out["SizeRw"]
        from tugboat.engine import shape

        return shape.container(out)  # dockerd's field order and zero values

    def _size_rw(self, c: Container) -> int:
        if self.snapshotter is None:
            return 0
        try:
            upper = self.snapshotter.upperdir(c.id)
        except Exception:
            return 0
        total = 0
        for dp, _, files in os.walk(upper):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dp, f)).st_size
        return total

    def status_text(self, c: Container) -> str:
        st = c.state
        now = time.time()
        if st.get("Restarting"):
            return f"Restarting ({st.get('ExitCode', 0)}) {human_duration(now - rfc3339_to_ts(st.get('FinishedAt', '')))} ago"
        if st.get("Running"):
            up = f"Up {human_duration(now - rfc3339_to_ts(st.get('StartedAt', '')))}"
            if st.get("Paused"):
                return up + " (Paused)"
            h = (st.get("Health") or {}).get("Status")
            if h:
                return up + (" (health: starting)" if h == "starting" else f" ({h})")
            return up
        if st.get("Status") == "created" or st.get("StartedAt", ZERO_TIME) == ZERO_TIME:
            return "Created"
        return f"Exited ({st.get('ExitCode', 0)}) {human_duration(now - rfc3339_to_ts(st.get('FinishedAt', '')))} ago"

    def list(self, all_: bool = False, limit: int | None = None, size: bool = False,
             filters: dict[str, list[str]] | None = None) -> list[dict]:
        filters = filters or {}
        cs = sorted(self.containers(), key=lambda c: c.data.get("Created", ""), reverse=True)
        out = []
        for c in cs:  # no container lock: a slow start must not block `ps`
            if not all_ and not c.running and not filters.get("status") and not (limit and limit > 0):
                continue
            for _ in range(5):
                try:
                    if _match_filters(self, c, filters):
                        out.append(self._summary(c, size))
                    break
                except RuntimeError:  # changed while we read it
                    continue
            if limit is not None and limit > 0 and len(out) >= limit:
                break
        return out

    def _summary(self, c: Container, size: bool) -> dict:
        d = c.data
        cfg = d["Config"]
        cmd = " ".join([d.get("Path") or "", *(d.get("Args") or [])]).strip()
        ports = []
        # docker shows no PORTS for a created or exited container (its mappings are released)
        live_ports = (d.get("NetworkSettings") or {}).get("Ports") or {} if c.running else {}
        for pk, binds in live_ports.items():
            port, _, proto = pk.partition("/")
            if binds:
                for b in binds:
                    ports.append({"IP": b.get("HostIp") or "0.0.0.0", "PrivatePort": int(port),
                                  "PublicPort": int(b.get("HostPort") or 0), "Type": proto or "tcp"})
            else:
                ports.append({"PrivatePort": int(port), "Type": proto or "tcp"})
        s = {
            "Id": c.id,
            "Names": [c.name],
            "Image": cfg.get("Image") or d.get("Image"),
            "ImageID": d.get("Image"),
            "Command": cmd,
            "Created": int(rfc3339_to_ts(d.get("Created", ""))),
            "Ports": ports,
            "Labels": cfg.get("Labels") or {},
            "State": c.state.get("Status"),
            "Status": self.status_text(c),
            "HostConfig": {"NetworkMode": d["HostConfig"].get("NetworkMode", "bridge")},
            "NetworkSettings": {"Networks": (d.get("NetworkSettings") or {}).get("Networks", {})},
            "Mounts": [
                {k: v for k, v in m.items() if not k.startswith("Tug_")} for m in d.get("Mounts") or []
            ],
        }
        if size:
            s["SizeRw"] = self._size_rw(c)
            s["SizeRootFs"] = s["SizeRw"]
        return s

    # -- rename/update/resize -----------------------------------------------------------------------
    def rename(self, ref: str, new: str) -> None:
        c = self.get(ref)
        if not new or not NAME_RE.match(new):
            raise InvalidArgument(f"Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        nn = "/" + new.lstrip("/")
        with self._lock:
            if nn in self._names:
                if self._names[nn] == c.id:
                    raise InvalidArgument("Renaming a container with the same name as its current name")
                raise Conflict(
                    f'Conflict. The container name "{nn}" is already in use by container '
                    f'"{self._names[nn]}". You have to remove (or rename) that container to be able to '
                    "reuse that name."
                )
            old = c.name
            self._names.pop(old, None)
            self._names[nn] = c.id
        with c.lock:
            c.data["Name"] = nn
            c.save()
        if self.network is not None:  # network helper: the embedded DNS follows the new name
            with contextlib.suppress(Exception):
                self.network.rename(c.id, nn)
        self._event(c, "rename", {"oldName": old})

    # -- network connect/disconnect (network helper; used by tugboat.api.networks) -------------
    def network_connect(self, ref: str, network: str, aliases: list[str] | None = None,
                        ip: str | None = None) -> None:
        """Attach a container to one more network: now if it runs, at its next start anyway."""
        if self.network is None:
            raise TugError("networking is not available on this daemon")
        c = self.get(ref)
        name = self.network.inspect(network)["Name"]
        with c.lock:
            self._await_cleanup(c)
            epc = c.tug.setdefault("NetworkingConfig", {}).setdefault("EndpointsConfig", {})
            mode = c.data["HostConfig"].get("NetworkMode") or "bridge"
            if mode in ("host", "none") or mode.startswith("container:"):
                raise Conflict("container sharing network namespace with another container or host "
                               "cannot be connected to any other network")
            if c.running:
                self.network.connect(c.id, name, aliases=list(aliases or []), ip=ip)
                c.data["NetworkSettings"] = specmod.network_settings(self.network.container_info(c.id), c)
            elif name in epc or name == mode:
                raise Conflict(f"endpoint with name {c.name.lstrip('/')} already exists in network {name}")
            epc[name] = {"Aliases": list(aliases or []) or None,
                         "IPAMConfig": {"IPv4Address": ip} if ip else None}
            c.save()

    def network_disconnect(self, ref: str, network: str, force: bool = False) -> None:
        if self.network is None:
            raise TugError("networking is not available on this daemon")
        c = self.get(ref)
        name = self.network.inspect(network)["Name"]
        with c.lock:
            self._await_cleanup(c)
            epc = c.tug.setdefault("NetworkingConfig", {}).setdefault("EndpointsConfig", {})
            if c.running:
                self.network.disconnect(c.id, name, force=force)
                c.data["NetworkSettings"] = specmod.network_settings(self.network.container_info(c.id), c)
            elif name not in epc and not force:
                raise NotFound(f"container {c.id[:12]} is not connected to network {name}")
            epc.pop(name, None)
            if (c.data["HostConfig"].get("NetworkMode") or "bridge") == name:
                # docker leaves a stopped container without that network: start it on none
                c.data["HostConfig"]["NetworkMode"] = "none" if not epc else next(iter(epc))
            c.save()

    def update(self, ref: str, body: dict) -> dict:
        c = self.get(ref)
        specmod.validate({}, body)
        with c.lock:
            hc = c.data["HostConfig"]
            for k, v in body.items():
                if k == "RestartPolicy" or k in specmod.RESOURCE_KEYS:
                    hc[k] = v
            c.save()
            if c.running:
                specmod.apply_resources_live(c)
        self._event(c, "update")
        return {"Warnings": []}

    def resize(self, ref: str, h: int, w: int) -> None:
        c = self.get(ref)
        with c.lock:
            if not c.running:
                raise Conflict(f"Container {c.id} is not running")
            pio = c.pio
            if pio is not None and pio.pty_master is not None:
                _set_winsize(pio.pty_master, h, w)

    # -- logs ---------------------------------------------------------------------------------------
    def log_path(self, ref: str) -> tuple[Container, str]:
        c = self.get(ref)
        return c, c.data["LogPath"]

    # -- volumes ------------------------------------------------------------------------------------
    def volume_users(self, name: str) -> list[str]:
        users = []
        for c in self.containers():
            for m in c.data.get("Mounts") or []:
                if m.get("Type") == "volume" and m.get("Name") == name:
                    users.append(c.id)
        return users

    def volume_create(self, name: str | None, driver: str = "local", labels: dict | None = None,
                      options: dict | None = None) -> dict:
        vol, created = self.volumes.create(name, driver=driver, labels=labels, options=options)
        if created:
            self.events.emit("volume", "create", vol["Name"], {"driver": vol["Driver"]})
        return vol

    def volume_remove(self, name: str, force: bool = False) -> None:
        self.volumes.remove(name, in_use=self.volume_users, force=force)
        self.events.emit("volume", "destroy", name, {"driver": "local"})

    def volume_list(self, filters: dict[str, list[str]] | None = None) -> list[dict]:
        filters = filters or {}
        out = []
        for v in self.volumes.list():
            if "name" in filters and not any(f in v["Name"] for f in filters["name"]):
                continue
            if "dangling" in filters:
                want = filters["dangling"][0].lower() in ("1", "true")
                if bool(self.volume_users(v["Name"])) == want:
                    continue
            if "label" in filters and not _labels_match(v.get("Labels") or {}, filters["label"]):
                continue
            if "driver" in filters and v["Driver"] not in filters["driver"]:
                continue
            out.append(v)
        return out

    def volume_prune(self, filters: dict[str, list[str]] | None = None) -> dict:
        filters = filters or {}
        all_ = (filters.get("all") or ["false"])[0].lower() in ("1", "true")
        deleted, reclaimed = [], 0
        for v in self.volumes.list():
            if self.volume_users(v["Name"]):
                continue
            anon = "com.docker.volume.anonymous" in (v.get("Labels") or {})
            if not anon and not all_:
                continue
            if "label" in filters and not _labels_match(v.get("Labels") or {}, filters["label"]):
                continue
            size = self.volumes.size(v["Name"])
            with contextlib.suppress(TugError):
                self.volume_remove(v["Name"])
                deleted.append(v["Name"])
                reclaimed += size
        return {"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}

    # -- system ------------------------------------------------------------------------------------
    def version(self) -> dict:
        from tugboat.api.common import API_VERSION, MIN_API_VERSION

        kernel = platform.release()
        details = {"ApiVersion": API_VERSION, "Arch": "amd64", "BuildTime": "", "Experimental": "false",
                   "GitCommit": "tugboat", "GoVersion": f"python{platform.python_version()}",
                   "KernelVersion": kernel, "MinAPIVersion": MIN_API_VERSION, "Os": "linux"}
        return {
            "Platform": {"Name": "tugboat Engine"},
            "Components": [
                {"Name": "Engine", "Version": ENGINE_VERSION, "Details": details},
                {"Name": "runtime", "Version": self.runtime.kind, "Details": {"GitCommit": ""}},
                {"Name": "docker-init", "Version": "tini", "Details": {"GitCommit": ""}},
            ],
            "Version": ENGINE_VERSION,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "tugboat",
            "GoVersion": f"python{platform.python_version()}",
            "Os": "linux",
            "Arch": _arch(),
            "KernelVersion": kernel,
            "BuildTime": "",
        }

    def info(self) -> dict:
        cs = self.containers()
        running = sum(1 for c in cs if c.running and not c.state.get("Paused"))
        paused = sum(1 for c in cs if c.state.get("Paused"))
        images = 0
        if self.images is not None:
            with contextlib.suppress(Exception):
                images = len(self.images.list())
        mem = 0
        with contextlib.suppress(OSError), open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
        warnings = []
        if self.network is None:
            warnings.append("WARNING: networking is not available; containers run with --network none")
        return {
            "ID": _daemon_id(self.root),
            "Containers": len(cs),
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": len(cs) - running - paused,
            "Images": images,
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "none"],
                        "Log": ["json-file", "none"]},
            "MemoryLimit": True,
            "SwapLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "CPUSet": True,
            "PidsLimit": True,
            "IPv4Forwarding": True,
            "Debug": False,
            "NFd": len(os.listdir("/proc/self/fd")),
            "NGoroutines": threading.active_count(),
            "SystemTime": now_rfc3339(),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "1",
            "NEventsListener": 0,
            "KernelVersion": platform.release(),
            "OperatingSystem": _os_name(),
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": platform.machine(),
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": ["127.0.0.0/8"], "Mirrors": []},
            "NCPU": os.cpu_count() or 1,
            "MemTotal": mem,
            "DockerRootDir": self.root,
            "HttpProxy": "",
            "HttpsProxy": "",
            "NoProxy": "",
            "Name": socket.gethostname(),
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": ENGINE_VERSION,
            "Runtimes": {"runc": {"path": self.runtime.kind}},
            "DefaultRuntime": "runc",
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                      "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": True,
            "Isolation": "",
            "InitBinary": "docker-init",
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "Warnings": warnings,
        }

    def system_df(self) -> dict:
        imgs = []
        if self.images is not None:
            with contextlib.suppress(Exception):
                for im in self.images.list():
                    users = sum(1 for c in self.containers() if c.data.get("Image") == im.id)
                    imgs.append({"Id": im.id, "ParentId": "", "RepoTags": im.repo_tags,
                                 "RepoDigests": im.repo_digests,
                                 "Created": int(rfc3339_to_ts(im.created)) if im.created else 0,
                                 "Size": im.size, "SharedSize": -1, "Labels": {}, "Containers": users})
        conts = [self._summary(c, True) for c in self.containers()]
        vols = []
        for v in self.volumes.list():
            v = dict(v)
            v["UsageData"] = {"Size": self.volumes.size(v["Name"]), "RefCount": len(self.volume_users(v["Name"]))}
            vols.append(v)
        return {"LayersSize": sum(i["Size"] for i in imgs), "Images": imgs, "Containers": conts,
                "Volumes": vols, "BuildCache": []}

    def container_prune(self, filters: dict[str, list[str]] | None = None) -> dict:
        deleted = []
        filters = filters or {}
        for c in self.containers():
            if c.running:
                continue
            if "label" in filters and not _labels_match(c.data["Config"].get("Labels") or {}, filters["label"]):
                continue
            if "until" in filters:
                from tugboat.engine.util import parse_time

                if rfc3339_to_ts(c.data["Created"]) > parse_time(filters["until"][0]):
                    continue
            with contextlib.suppress(TugError):
                self.remove(c.id)
                deleted.append(c.id)
        return {"ContainersDeleted": deleted, "SpaceReclaimed": 0}

    def commit(self, ref: str, repo: str | None = None, tag: str | None = None, comment: str = "",
               author: str = "", changes: list[str] | None = None, pause: bool = True,
               config: dict | None = None) -> str:
        """``docker commit``: the container's upper layer on top of its image, as a new image."""
        from tugboat.images.changes import apply_changes
        from tugboat.oci.image import LayerBlob

        c = self.get(ref)
        svc = self._image_service()
        base = svc.resolve(c.data["Image"])
        paused_here = False
        if pause and c.running and not c.state.get("Paused"):
            with contextlib.suppress(TugError):
                self.runtime.pause(c.id)
                paused_here = True
        try:
            layer = self.snapshotter.diff(c.id)
        finally:
            if paused_here:
                with contextlib.suppress(TugError):
                    self.runtime.resume(c.id)
        layers = [LayerBlob(d["digest"], d["mediaType"], diff, int(d["size"]))
                  for d, diff in zip(base.manifest.get("layers", []), base.layers, strict=False)]
        layers.append(layer)
        newcfg = copy.deepcopy(base.config)
        inner = dict(newcfg.get("config") or {})
        ccfg = c.data["Config"]
        for k in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes",
                  "StopSignal", "Healthcheck", "OnBuild"):
            if ccfg.get(k) is not None:
                inner[k] = ccfg[k]
        if config:
            inner.update(config)
        inner = apply_changes(inner, changes or [])
        newcfg["config"] = inner
        newcfg.pop("created", None)
        if author:
            newcfg["author"] = author
        hist = list(newcfg.get("history") or [])
        hist.append({"created": now_rfc3339(), "created_by": " ".join([c.data["Path"], *c.data["Args"]]),
                     "comment": comment or ""})
        newcfg["history"] = hist
        tags = []
        if repo:
            tags.append(f"{repo}:{tag or 'latest'}")
        img = svc.create_image(newcfg, layers, tags)
        self._event(c, "commit")
        return img.id

    # -- misc ---------------------------------------------------------------------------------------
    def _event(self, c: Container, action: str, extra: dict | None = None) -> None:
        attrs = {"name": c.name.lstrip("/"), "image": c.data["Config"].get("Image", "")}
        attrs.update(c.data["Config"].get("Labels") or {})
        if extra:
            attrs.update(extra)
        self.events.emit("container", action, c.id, attrs)

    def top(self, ref: str, ps_args: str = "-ef") -> dict:
        c = self.get(ref)
        if not c.running:
            raise Conflict(f"container {c.id} is not running")
        pids = set(self.runtime.ps(c.id)) or {int(c.state.get("Pid") or 0)}
        p = subprocess.run(["ps", *ps_args.split()], capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise InvalidArgument(f"ps: {p.stderr.strip()}")
        lines = p.stdout.splitlines()
        titles = lines[0].split()
        try:
            pid_col = titles.index("PID")
        except ValueError:
            raise InvalidArgument("Couldn't find PID field in ps output") from None
        procs = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > pid_col and fields[pid_col].isdigit() and int(fields[pid_col]) in pids:
                procs.append(fields)
        return {"Titles": titles, "Processes": procs}

    def stats(self, ref: str) -> dict:
        c = self.get(ref)
        pid = int(c.state.get("Pid") or 0)
        raw = self.runtime.stats(c.id, pid) if c.running else {}
        return raw

    def shutdown(self) -> None:
        """Stop serving: leave containers running (live restore), stop threads."""
        self.shutting_down = True
        self.health.close()
        if self.network is not None and hasattr(self.network, "shutdown"):
            try:
                self.network.shutdown(remove_all=False)
            except Exception:
                log.exception("network shutdown failed")
        for c in self.containers():
            if c.restart_timer is not None:
                c.restart_timer.cancel()
        for c in self.containers():
            c.cleaned.wait(10)
            if not c.lock.acquire(timeout=2):  # a verb still running on it: leave its mount be
                continue
            try:
                if not c.running and c.fs_users == 0:
                    self._unmount_rootfs(c)  # only running containers keep a mount past the daemon
            finally:
                c.lock.release()
        self._reaper.flush(30)
        self.pump.close()
        self.runtime.close()
        if self.network is not None:  # network helper: no bridges/rules/netns left when idle
            try:
                self.network.shutdown(remove_all=not any(c.running for c in self.containers()))
            except Exception:
                log.exception("network shutdown failed")


class _Reaper:
    """One thread deleting removed containers' snapshots and directories after `rm` answered
    (a removed record is already renamed to ``<id>.removing``; `_load` finishes leftovers)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.cond = threading.Condition()
        self.queue: list[tuple[str, str, Any]] = []
        self.busy = False
        self.thread: threading.Thread | None = None

    def put(self, cid: str, path: str, c: Any = None) -> None:
        with self.cond:
            self.queue.append((cid, path, c))
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="tug-reaper", daemon=True)
                self.thread.start()
            self.cond.notify_all()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue:
                    self.busy = False
                    self.cond.notify_all()
                    self.cond.wait()
                cid, path, c = self.queue.pop(0)
                self.busy = True
            try:
                self.fn(cid, path, c)
            except Exception:
                log.exception("deleting removed container %s failed", cid[:12])

    def flush(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self.queue or self.busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                self.cond.wait(left)


_KERNEL_FS = ("/proc", "/sys", "/dev")


def _mountpoints(data: dict) -> list[tuple[str, bool]]:
    """(destination, is a directory) of the mounts a container's runtime spec will have that
    need a mount point in its rootfs: the three /etc files, bind mounts and tmpfs mounts
    (volumes are left out: their copy-up reads what the image has at the mount point)."""
    hc = data.get("HostConfig") or {}
    out: dict[str, bool] = {"/etc/hostname": False, "/etc/hosts": False, "/etc/resolv.conf": False}
    for spec in hc.get("Binds") or []:
        parts = str(spec).split(":")
        if len(parts) >= 2 and parts[0].startswith("/") and parts[1].startswith("/"):
            out[parts[1]] = not os.path.exists(parts[0]) or os.path.isdir(parts[0])
    for m in hc.get("Mounts") or []:
        typ = (m.get("Type") or "volume").lower()
        dst = m.get("Target") or m.get("Destination") or ""
        if typ == "bind" and os.path.exists(m.get("Source") or ""):
            out[dst] = os.path.isdir(m["Source"])
        elif typ == "tmpfs":
            out[dst] = True
    for dst in hc.get("Tmpfs") or {}:
        out[dst] = True
    if hc.get("Init"):
        out["/sbin/docker-init"] = False
    return [(p, d) for p, d in out.items() if isinstance(p, str) and p.startswith("/")
            and not any(p == k or p.startswith(k + "/") for k in _KERNEL_FS)]


def _lazy_umount(path: str) -> None:
    """``umount -l`` without forking /bin/umount (umount2 with MNT_DETACH through ctypes)."""
    try:
        from tugboat.snapshots.mount import MNT_DETACH, umount

        umount(path, MNT_DETACH)
        return
    except ImportError:
        pass
    except OSError:
        if not os.path.ismount(path):
            return
    subprocess.run(["umount", "-l", path], check=False, capture_output=True)


def _snapshot(c: Container) -> dict:
    """A deep copy of a record without waiting for the container's lock (retried on races)."""
    for _ in range(10):
        try:
            return copy.deepcopy(c.data)
        except RuntimeError:
            continue
    with c.lock:
        return copy.deepcopy(c.data)


def _accept_master(listener: socket.socket, box: list[int]) -> None:
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    with conn:
        try:
            _msg, anc, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(4 * 4))
        except OSError:
            return
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds = list(memoryview(data).cast("i"))
                if fds:
                    box.append(fds[0])
                    for extra in fds[1:]:
                        os.close(extra)


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _proc_start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def _restarts_after_daemon_restart(c: Container) -> bool:
    pol = (c.data["HostConfig"].get("RestartPolicy") or {}).get("Name") or "no"
    return pol in ("always", "unless-stopped")


def _oom_killed(c: Container) -> bool:
    """Whether the kernel OOM-killed a process of the container's memory cgroup during this run:
    the ``oom_kill`` counter of v1 ``memory.oom_control`` or v2 ``memory.events`` (the cgroup is
    ``/tugboat/<id>``, made fresh at each start), as dockerd sets ``State.OOMKilled``."""
    try:
        from tugboat.runtime.cgroups import detect

        mounts = detect()
    except (ImportError, OSError):
        return False
    files = []
    if mounts.v1.get("memory"):
        files.append(os.path.join(mounts.v1["memory"], "tugboat", c.id, "memory.oom_control"))
    if mounts.unified:
        files.append(os.path.join(mounts.unified, "tugboat", c.id, "memory.events"))
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                return True
    return False


def _labels_match(labels: dict, wanted: list[str]) -> bool:
    for w in wanted:
        k, eq, v = w.partition("=")
        if k not in labels or (eq and labels[k] != v):
            return False
    return True


def _match_filters(engine: Engine, c: Container, filters: dict[str, list[str]]) -> bool:
    d = c.data
    for key, vals in filters.items():
        if not vals:
            continue
        if key == "status":
            if c.state.get("Status") not in vals:
                return False
        elif key == "name":
            import re

            if not any(re.search(v, c.name.lstrip("/")) for v in vals):
                return False
        elif key == "id":
            if not any(c.id.startswith(v) for v in vals):
                return False
        elif key == "label":
            if not _labels_match(d["Config"].get("Labels") or {}, vals):
                return False
        elif key == "ancestor":
            ok = False
            for v in vals:
                if v == d["Config"].get("Image") or d.get("Image", "").startswith(v) or \
                        d.get("Image") == f"sha256:{v}" or d["Config"].get("Image") == f"{v}:latest":
                    ok = True
                elif engine.images is not None:
                    with contextlib.suppress(Exception):
                        ok = engine.images.resolve(v).id == d.get("Image")
                if ok:
                    break
            if not ok:
                return False
        elif key == "exited":
            if c.running or str(c.state.get("ExitCode")) not in vals:
                return False
        elif key == "volume":
            names = {m.get("Name") for m in d.get("Mounts") or []} | {m.get("Destination") for m in d.get("Mounts") or []}
            if not any(v in names for v in vals):
                return False
        elif key == "network":
            nets = set(((d.get("NetworkSettings") or {}).get("Networks") or {}).keys())
            if not any(v in nets for v in vals):
                return False
        elif key == "health":
            h = (c.state.get("Health") or {}).get("Status", "none")
            if h not in vals:
                return False
        elif key in ("before", "since"):
            try:
                other = engine.get(vals[0])
            except NotFound:
                return False
            if key == "before" and not d["Created"] < other.data["Created"]:
                return False
            if key == "since" and not d["Created"] > other.data["Created"]:
                return False
        elif key == "is-task":
            continue
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
    return True


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _daemon_id(root: str) -> str:
    path = os.path.join(root, "engine-id")
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        did = secrets.token_hex(16)
        with contextlib.suppress(OSError), open(path, "w") as f:
            f.write(did)
        return did


_ = stat
