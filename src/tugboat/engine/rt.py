"""The engine's view of the OCI runtime.

:class:`RuntimeAdapter` wraps ``tugboat.runtime.api.Runtime`` when it is importable and falls back
to the ``runc`` binary otherwise (same verbs). The engine never talks to either directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Any

from tugboat.errors import Conflict, InvalidArgument, NotFound, TugError

log = logging.getLogger("tugboat.engine")


def _start_error(msg: str) -> TugError:
    """dockerd's start failure wording; the CLI picks exit 126/127 from it."""
    text = msg.strip().splitlines()[-1] if msg.strip() else "unknown error"
    return InvalidArgument(
        "failed to create task for container: failed to create shim task: OCI runtime create "
        f"failed: {text}: unknown"
    )


CREATE_TIMEOUT = 120.0  # seconds; a create normally takes tens of milliseconds


class _CreateWorker:
    """The daemon's end of :mod:`tugboat.engine.rtworker` (one long-lived create helper)."""

    def __init__(self, root: str, cgroup_parent: str | None) -> None:
        self.root = root
        self.cgroup_parent = cgroup_parent
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None

    def _spawn(self) -> None:
        import tugboat

        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(tugboat.__file__)))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            code = (f"import sys; sys.path.insert(0, {pkg_parent!r}); "
                    "from tugboat.engine.rtworker import serve; "
                    f"serve({theirs.fileno()}, {self.root!r}, {self.cgroup_parent!r})")
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         pass_fds=[theirs.fileno()], close_fds=True,
                                         start_new_session=True)  # no terminal ^C
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            proc, self.proc = self.proc, None
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(5)

    def create(self, req: dict, fds: list[int]) -> dict | None:
        """The worker's reply, or None when no request reached a worker (use the fallback)."""
        with self.lock:
            if self.proc is not None and self.proc.poll() is not None:
                self._drop()
            if self.sock is None:
                try:
                    self._spawn()
                except OSError as exc:
                    log.warning("cannot start the runtime create worker: %s", exc)
                    return None
            assert self.sock is not None
            try:
                socket.send_fds(self.sock, [json.dumps(req).encode()], fds)
            except OSError:
                self._drop()
                return None
            self.sock.settimeout(CREATE_TIMEOUT)
            try:
                raw = self.sock.recv(65536)
            except TimeoutError:
                raw = None
            except OSError:
                raw = b""
            finally:
                if self.sock is not None:
                    self.sock.settimeout(None)
            if not raw:
                self._drop()  # a stuck create must not hold every later one: a new worker serves them
                from tugboat.errors import Internal

                if raw is None:
                    raise Internal(f"the runtime did not create the container within {CREATE_TIMEOUT} s")
                raise Internal("the runtime create worker died during create")
            return json.loads(raw)

    def close(self) -> None:
        with self.lock:
            self._drop()


class RuntimeAdapter:
    """create/start/kill/delete/state/exec/pause/resume/ps/stats over one runtime state root."""

    def __init__(self, state_root: str, prefer: str = "auto") -> None:
        self.state_root = state_root
        os.makedirs(state_root, exist_ok=True)
        self.impl: Any = None
        self.kind = "runc"
        self.worker: _CreateWorker | None = None
        if prefer in ("auto", "tugboat") and not os.environ.get("TUG_ENGINE_RUNC"):
            try:
                from tugboat.runtime.api import Runtime

                self.impl = Runtime(state_root)
                self.kind = "tugboat"
                if not os.environ.get("TUG_ENGINE_NO_CREATE_WORKER"):
                    self.worker = _CreateWorker(self.impl.root, self.impl.cgroup_parent)
            except ImportError:
                self.impl = None
        self.runc = shutil.which("runc") or "runc"

    # -- helpers for the runc fallback ---------------------------------------------------------
    def _runc(self, *args: str, stdin: int | None = None, stdout: int | None = None,
              stderr: int | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [self.runc, "--root", self.state_root, *args]
        with tempfile.TemporaryFile() as errf:
            p = subprocess.run(
                cmd,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.DEVNULL,
                stderr=errf if stderr is None else stderr,
                check=False,
                close_fds=True,
            )
            errf.seek(0)
            err = errf.read().decode(errors="replace")
        if check and p.returncode != 0:
            if "does not exist" in err or "not exist" in err:
                raise NotFound(err.strip())
            raise TugError(err.strip() or f"runc {args[0]} failed with status {p.returncode}")
        p.stderr = err
        return p

    def _runc_logged(self, args: list[str], cid: str, log_path: str, console_socket: str | None,
                     stdin: int, stdout: int, stderr: int) -> int:
        """``runc create``/``exec --detach`` with its JSON log at ``log_path``; its exit status."""
        if console_socket:
            args = [*args, "--console-socket", console_socket]
        cmd = [self.runc, "--root", self.state_root, "--log", log_path, "--log-format", "json", *args, cid]
        return subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=stderr, close_fds=True, check=False).returncode

    # -- verbs ----------------------------------------------------------------------------------
    def create(self, cid: str, bundle: str, *, stdin: int, stdout: int, stderr: int,
               console_socket: str | None = None) -> int:
        """Create the container (stopped before the user process); returns the init's PID."""
        pid_file = os.path.join(bundle, "init.pid")
        if self.impl is not None:
            try:  # the pid comes back in the answer: no pid file to write and read
                pid = self._worker_create(cid, bundle, console_socket=console_socket, pid_file=None,
                                          stdio=[stdin, stdout, stderr])
                if pid is None:
                    st = self.impl.create(cid, bundle, console_socket=console_socket, pid_file=None,
                                          stdin=stdin, stdout=stdout, stderr=stderr)
                    pid = int((st or {}).get("pid") or 0)
            except TugError as exc:
                raise _start_error(str(exc)) from None
            if not pid:
                pid = int(self.impl.state(cid).get("pid") or 0)
            return pid
        log_path = os.path.join(bundle, "runc.log")
        rc = self._runc_logged(["create", "--bundle", bundle, "--pid-file", pid_file], cid, log_path,
                               console_socket, stdin, stdout, stderr)
        if rc != 0:
            msg = _last_runc_error(log_path) or f"runc create exited with status {rc}"
            self.delete(cid, force=True)
            raise _start_error(msg)
        with open(pid_file) as f:
            return int(f.read().strip())

    def _worker_create(self, cid: str, bundle: str, *, console_socket: str | None, pid_file: str | None,
                       stdio: list[int]) -> int | None:
        """Create through the long-lived worker: the init's pid (0 if the worker did not say), or
        None when the worker is unavailable (nothing was done)."""
        if self.worker is None:
            return None
        req = {"id": cid, "bundle": bundle, "console_socket": console_socket, "pid_file": pid_file}
        try:
            resp = self.worker.create(req, stdio)
        except TugError:  # the worker died or hung mid-create: remove whatever it left
            with contextlib.suppress(Exception):
                self.impl.delete(cid, force=True)
            raise
        if resp is None:
            return None
        for w in resp.get("warnings") or ():
            self.impl.warn(w)
        if "error" in resp:
            from tugboat import errors as errmod

            cls = getattr(errmod, str(resp.get("kind") or "Internal"), None)
            if not (isinstance(cls, type) and issubclass(cls, TugError)):
                cls = errmod.Internal
            raise cls(resp["error"])
        return int(resp.get("pid") or 0)

    def close(self) -> None:
        """Stop the create worker (the daemon's shutdown; it also exits on its own with us)."""
        if self.worker is not None:
            self.worker.close()

    def start(self, cid: str) -> None:
        if self.impl is not None:
            try:
                self.impl.start(cid)
            except TugError as exc:
                raise _start_error(str(exc)) from None
            return
        p = self._runc("start", cid, check=False)
        if p.returncode != 0:
            raise _start_error(p.stderr)

    def state(self, cid: str) -> dict | None:
        if self.impl is not None:
            try:
                return dict(self.impl.state(cid))
            except NotFound:
                return None
            except TugError:
                return None
        p = self._runc("state", cid, stdout=subprocess.PIPE, check=False)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout)

    def kill(self, cid: str, sig: int, all_: bool = False) -> None:
        if self.impl is not None:
            self.impl.kill(cid, sig, all=all_)
            return
        args = ["kill", *(["--all"] if all_ else []), cid, str(sig)]
        p = self._runc(*args, check=False)
        if p.returncode != 0 and "not running" in p.stderr:
            raise Conflict(p.stderr.strip())

    def delete(self, cid: str, force: bool = False) -> None:
        try:
            if self.impl is not None:
                self.impl.delete(cid, force=force)
                return
            self._runc("delete", *(["--force"] if force else []), cid, check=False)
        except NotFound:
            pass

    def pause(self, cid: str) -> None:
        if self.impl is not None:
            self.impl.pause(cid)
        else:
            self._runc("pause", cid)

    def resume(self, cid: str) -> None:
        if self.impl is not None:
            self.impl.resume(cid)
        else:
            self._runc("resume", cid)

    def ps(self, cid: str) -> list[int]:
        if self.impl is not None:
            return list(self.impl.ps(cid))
        p = self._runc("ps", "--format", "json", cid, stdout=subprocess.PIPE, check=False)
        if p.returncode != 0:
            return []
        return list(json.loads(p.stdout or b"[]") or [])

    def exec(self, cid: str, process: dict, *, stdin: int, stdout: int, stderr: int,
             console_socket: str | None = None, workdir_tmp: str) -> int:
        """Start ``process`` in the container, detached; returns its PID."""
        pid_file = os.path.join(workdir_tmp, "exec.pid")
        if self.impl is not None:
            res = self.impl.exec(cid, process, detach=True, stdin=stdin, stdout=stdout,
                                 stderr=stderr, console_socket=console_socket, pid_file=pid_file)
            if os.path.exists(pid_file):
                with open(pid_file) as f:
                    return int(f.read().strip())
            return int(res)
        proc_path = os.path.join(workdir_tmp, "process.json")
        with open(proc_path, "w") as f:
            json.dump(process, f)
        log_path = os.path.join(workdir_tmp, "runc.log")
        rc = self._runc_logged(["exec", "--detach", "--pid-file", pid_file, "--process", proc_path], cid,
                               log_path, console_socket, stdin, stdout, stderr)
        if rc != 0:
            raise _start_error(_last_runc_error(log_path) or "runc exec failed")
        with open(pid_file) as f:
            return int(f.read().strip())

    def exit_status(self, cid: str) -> int | None:
        """The recorded exit status of a container whose init has exited (None if unknown)."""
        if self.impl is not None:
            try:
                return int(self.impl.wait(cid, timeout=5))
            except TugError:
                return None
        st = self.state(cid)
        if st is not None and st.get("exitStatus") is not None:
            return int(st["exitStatus"])
        return None

    def stats(self, cid: str, pid: int) -> dict:
        if self.impl is not None and hasattr(self.impl, "stats"):
            try:
                return dict(self.impl.stats(cid))
            except TugError:
                return {}
        return _cgroup_stats(pid)


def _last_runc_error(log_path: str) -> str:
    try:
        with open(log_path) as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("level") == "error":
            return str(rec.get("msg", ""))
    return ""


def _cgroup_paths(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                for c in ctrls.split(","):
                    out[c or "unified"] = path
    except OSError:
        pass
    return out


def _read_int(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _cgroup_stats(pid: int) -> dict:
    """memory usage/limit, cpu usage (ns), pids current from the v1 hierarchies of ``pid``."""
    paths = _cgroup_paths(pid)
    base = "/sys/fs/cgroup"
    st: dict[str, Any] = {}
    if "memory" in paths:
        d = f"{base}/memory{paths['memory']}"
        st["memory_usage"] = _read_int(f"{d}/memory.usage_in_bytes")
        st["memory_limit"] = _read_int(f"{d}/memory.limit_in_bytes")
    if "cpuacct" in paths:
        st["cpu_usage_ns"] = _read_int(f"{base}/cpuacct{paths['cpuacct']}/cpuacct.usage")
    if "pids" in paths:
        st["pids_current"] = _read_int(f"{base}/pids{paths['pids']}/pids.current")
    return st
