"""``docker exec``: extra processes in a running container (runtime exec, pipes or a pty)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
from typing import Any

from tugboat.engine.iopump import ProcessIO, Subscriber
from tugboat.engine.util import new_id, reap_exit_code
from tugboat.errors import Conflict, InvalidArgument, NotFound, TugError


class ExecRecord:
    def __init__(self, eid: str, container: Any, cfg: dict) -> None:
        self.id = eid
        self.container = container
        self.cfg = cfg
        self.running = False
        self.exit_code: int | None = None
        self.pid = 0
        self.done = threading.Event()
        self.started = False
        self.pio: ProcessIO | None = None

    def inspect(self) -> dict:
        cfg = self.cfg
        cmd = list(cfg.get("Cmd") or [])
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": bool(cfg.get("Tty")),
                "entrypoint": cmd[0] if cmd else "",
                "arguments": cmd[1:],
                "privileged": bool(cfg.get("Privileged")),
                "user": cfg.get("User") or "",
            },
            "OpenStdin": bool(cfg.get("AttachStdin")),
            "OpenStderr": bool(cfg.get("AttachStderr")),
            "OpenStdout": bool(cfg.get("AttachStdout")),
            "CanRemove": False,
            "ContainerID": self.container.id,
            "DetachKeys": cfg.get("DetachKeys") or "",
            "Pid": self.pid,
        }


def exec_create(engine: Any, ref: str, cfg: dict) -> str:
    if not isinstance(cfg, dict):
        raise InvalidArgument("invalid exec config")
    cmd = cfg.get("Cmd")
    if not cmd or not isinstance(cmd, list) or not all(isinstance(x, str) for x in cmd):
        raise InvalidArgument("No exec command specified")
    c = engine.get(ref)
    if not c.running:
        raise Conflict(f"container {c.id} is not running")
    if c.state.get("Paused"):
        raise Conflict(f"container {c.id} is paused, unpause the container before exec")
    eid = new_id()
    rec = ExecRecord(eid, c, dict(cfg))
    engine.execs[eid] = rec
    with c.lock:
        ids = c.data.get("ExecIDs") or []
        ids.append(eid)
        c.data["ExecIDs"] = ids
    engine._event(c, "exec_create: " + " ".join(cmd))
    return eid


def get_exec(engine: Any, eid: str) -> ExecRecord:
    rec = engine.execs.get(eid)
    if rec is None:
        matches = [r for k, r in engine.execs.items() if k.startswith(eid)] if eid else []
        if len(matches) != 1:
            raise NotFound(f"No such exec instance: {eid}")
        rec = matches[0]
    return rec


def exec_start(engine: Any, eid: str, *, tty: bool | None = None, detach: bool = False,
               console_size: list[int] | None = None, subscriber: Subscriber | None = None) -> ExecRecord:
    from tugboat.engine.engine import _accept_master, _set_winsize
    from tugboat.engine.spec import resolve_user

    rec = get_exec(engine, eid)
    if rec.started:
        raise Conflict(f"Error: Exec command {rec.id} has already run")
    c = rec.container
    if not c.running:
        raise Conflict(f"container {c.id} is not running")
    rec.started = True
    cfg = rec.cfg
    tty = bool(cfg.get("Tty")) if tty is None else tty
    ccfg = c.data["Config"]
    env = list(ccfg.get("Env") or [])
    keys = {e.split("=", 1)[0]: i for i, e in enumerate(env)}
    for e in cfg.get("Env") or []:
        k = e.split("=", 1)[0]
        if k in keys:
            env[keys[k]] = e
        else:
            env.append(e)
    if tty and "TERM" not in keys:
        env.append("TERM=xterm")
    user = resolve_user(c.tug["Rootfs"], cfg.get("User") or ccfg.get("User") or "")
    from tugboat.engine.spec import _cap_names

    caps = None
    spec_path = os.path.join(c.dir, "bundle", "config.json")
    with contextlib.suppress(Exception):
        from tugboat.engine.util import read_json

        caps = read_json(spec_path)["process"]["capabilities"]
    if cfg.get("Privileged"):
        allc = _cap_names()
        caps = {"bounding": allc, "effective": allc, "permitted": allc, "inheritable": [], "ambient": []}
    process: dict[str, Any] = {
        "terminal": tty,
        "user": user,
        "args": list(cfg["Cmd"]),
        "env": env,
        "cwd": cfg.get("WorkingDir") or ccfg.get("WorkingDir") or "/",
        "noNewPrivileges": False,
    }
    if caps:
        process["capabilities"] = caps
    size = console_size or cfg.get("ConsoleSize")
    if tty and size and size[0] and size[1]:
        process["consoleSize"] = {"height": size[0], "width": size[1]}
    pio = ProcessIO("exec:" + rec.id)
    pio.buffer = [] if (subscriber is None and not detach) else None
    if subscriber is not None:
        pio.subscribe(subscriber)
    rec.pio = pio
    workdir = os.path.join(c.dir, "exec", rec.id)
    os.makedirs(workdir, exist_ok=True)
    to_close: list[int] = []
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    to_close.append(devnull)
    console = None
    listener = None
    box: list[int] = []
    acceptor = None
    try:
        if tty:
            console = os.path.join("/tmp", f"tug-exec-{rec.id[:12]}.sock")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(console)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(console)
            listener.listen(1)
            listener.settimeout(10)
            acceptor = threading.Thread(target=_accept_master, args=(listener, box), daemon=True)
            acceptor.start()
            stdin = stdout = stderr = devnull
        else:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            to_close += [out_w, err_w]
            stdout, stderr = out_w, err_w
            if cfg.get("AttachStdin") and not detach:
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
                to_close.append(in_r)
                os.set_blocking(in_w, False)
                pio.stdin_fd = in_w
                stdin = in_r
            else:
                stdin = devnull
        try:
            pid = engine.runtime.exec(c.id, process, stdin=stdin, stdout=stdout, stderr=stderr,
                                      console_socket=console, workdir_tmp=workdir)
        except TugError as exc:
            rec.exit_code = 127 if "not found" in exc.message or "no such file" in exc.message.lower() else 126
            rec.done.set()
            if not tty:
                os.close(out_r)
                os.close(err_r)
            pio.close_stdin()
            pio.publish("stderr", (exc.message + "\r\n").encode())
            pio.closed.set()
            pio.stdin_ready.set()
            for cb in list(pio.subscribers):
                cb(None, b"")
            return rec
        if tty:
            assert acceptor is not None
            acceptor.join(5)
            if box:
                master = box[0]
                pio.pty_master = master
                pio.stdin_fd = master
                if size and size[0] and size[1]:
                    _set_winsize(master, int(size[0]), int(size[1]))
                engine.pump.add_output(os.dup(master), "stdout", pio)
            else:
                pio.closed.set()
        else:
            engine.pump.add_output(out_r, "stdout", pio)
            engine.pump.add_output(err_r, "stderr", pio)
    finally:
        for fd in to_close:
            with contextlib.suppress(OSError):
                os.close(fd)
        if listener is not None:
            listener.close()
        if console:
            with contextlib.suppress(OSError):
                os.unlink(console)
    rec.pid = pid
    rec.running = True
    pio.stdin_ready.set()
    engine._event(c, "exec_start: " + " ".join(cfg["Cmd"]))

    def on_exit() -> None:
        code = reap_exit_code(pid)
        if code is None:
            code = 255
        pio.closed.wait(2)
        rec.exit_code = code
        rec.running = False
        pio.close_stdin()
        if pio.pty_master is not None:
            with contextlib.suppress(OSError):
                os.close(pio.pty_master)
        rec.done.set()
        engine._event(c, "exec_die", {"execID": rec.id, "exitCode": str(code)})
        shutil.rmtree(workdir, ignore_errors=True)

    engine.pump.watch_exit(pid, on_exit, drain=pio)
    return rec


def exec_resize(engine: Any, eid: str, h: int, w: int) -> None:
    from tugboat.engine.engine import _set_winsize

    rec = get_exec(engine, eid)
    if rec.pio is not None and rec.pio.pty_master is not None:
        _set_winsize(rec.pio.pty_master, h, w)
