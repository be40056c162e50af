"""One thread that moves every container's output and notices every exit.

Container output arrives on FIFOs (``<container dir>/stdout`` and ``stderr``) that the container
itself holds open read-write, so the daemon may die without SIGPIPE-ing it; a restarted daemon
re-opens them. Exec processes use plain pipes. Exits are noticed through pidfds. Callbacks run on
the pump thread and must be quick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tugboat.engine")

Subscriber = Callable[[str | None, bytes], None]  # (stream or None at end, data)


class ProcessIO:
    """Output fan-out of one process: the log writer plus live subscribers (attach)."""

    def __init__(self, key: str, writer: Any = None) -> None:
        self.key = key
        self.writer = writer
        self.subscribers: list[Subscriber] = []
        self.lock = threading.Lock()
        self.open_streams = 0
        self.closed = threading.Event()
        self.stdin_fd: int | None = None  # write end for stdin (pipe/FIFO, or the pty master)
        self.pty_master: int | None = None
        self.buffer: list[tuple[str, bytes]] | None = None  # kept for exec until first attach
        self.stdin_ready = threading.Event()  # set once stdin_fd is final (or there is none)

    def subscribe(self, cb: Subscriber) -> Callable[[], None]:
        with self.lock:
            if self.buffer:
                for stream, data in self.buffer:
                    cb(stream, data)
                self.buffer = None
            done = self.closed.is_set()
            if not done:
                self.subscribers.append(cb)
        if done:
            cb(None, b"")

        def unsubscribe() -> None:
            with self.lock:
                if cb in self.subscribers:
                    self.subscribers.remove(cb)

        return unsubscribe

    def publish(self, stream: str, data: bytes) -> None:
        if self.writer is not None:
            try:
                self.writer.write(stream, data)
            except Exception:
                log.exception("log write failed for %s", self.key)
        with self.lock:
            subs = list(self.subscribers)
            if not subs and self.buffer is not None:
                self.buffer.append((stream, data))
        for cb in subs:
            cb(stream, data)

    def stream_closed(self) -> None:
        with self.lock:
            self.open_streams -= 1
            if self.open_streams > 0:
                return
            subs = list(self.subscribers)
            self.subscribers.clear()
        if self.writer is not None:
            self.writer.flush_partial()
        self.closed.set()
        for cb in subs:
            cb(None, b"")

    def abort(self) -> None:
        """The process never started: end every subscriber's stream."""
        with self.lock:
            subs = list(self.subscribers)
            self.subscribers.clear()
        self.closed.set()
        self.stdin_ready.set()
        for cb in subs:
            cb(None, b"")

    def close_stdin(self) -> None:
        fd, self.stdin_fd = self.stdin_fd, None
        if fd is not None and fd != self.pty_master:
            with contextlib.suppress(OSError):
                os.close(fd)


class IOPump:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self._r, selectors.EVENT_READ, ("wake", None, None))
        self._lock = threading.Lock()
        self._pending: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name="tug-iopump", daemon=True)
        self._stop = False
        self._thread.start()

    def _call(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._pending.append(fn)
        with contextlib.suppress(BlockingIOError):
            os.write(self._w, b"x")

    def add_output(self, fd: int, stream: str, pio: ProcessIO) -> None:
        """Read ``fd`` (non-blocking) into ``pio`` as ``stream`` until EOF; the pump closes it."""
        os.set_blocking(fd, False)
        with pio.lock:
            pio.open_streams += 1
        self._call(lambda: self.sel.register(fd, selectors.EVENT_READ, ("out", stream, pio)))

    def watch_exit(self, pid: int, on_exit: Callable[[], None], drain: ProcessIO | None = None) -> None:
        """Call ``on_exit()`` once ``pid`` has exited (after draining ``drain``'s outputs)."""
        try:
            pfd = os.pidfd_open(pid)
        except ProcessLookupError:
            threading.Thread(target=on_exit, daemon=True).start()
            return
        self._call(lambda: self.sel.register(pfd, selectors.EVENT_READ, ("exit", on_exit, drain)))

    def _drain(self, pio: ProcessIO) -> None:
        for key in list(self.sel.get_map().values()):
            kind, stream, owner = key.data
            if kind == "out" and owner is pio:
                self._read(key.fd, stream, pio, until_eagain=True)

    def _read(self, fd: int, stream: str, pio: ProcessIO, until_eagain: bool = False) -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:  # EIO: a pty master after the slave closed
                data = b""
            if not data:
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)
                if pio.pty_master == fd:
                    pio.pty_master = None
                    pio.stdin_fd = None
                pio.stream_closed()
                return
            pio.publish(stream, data)
            if not until_eagain and len(data) < 65536:
                return

    def _run(self) -> None:
        last_reap = 0.0
        while not self._stop:
            try:
                events = self.sel.select(1.0)
            except OSError:
                continue
            now = time.monotonic()
            if now - last_reap > 3.0:
                last_reap = now
                reap_monitors()
            for key, _ in events:
                kind, a, b = key.data
                try:
                    if kind == "wake":
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._r, 4096)
                        with self._lock:
                            pending, self._pending = self._pending, []
                        for fn in pending:
                            try:
                                fn()
                            except Exception:
                                log.exception("iopump registration failed")
                    elif kind == "out":
                        self._read(key.fd, a, b)
                    elif kind == "exit":
                        self.sel.unregister(key.fd)
                        os.close(key.fd)
                        if b is not None:
                            self._drain(b)
                        threading.Thread(target=a, daemon=True).start()
                except Exception:
                    log.exception("iopump error")

    def close(self) -> None:
        self._stop = True
        self._call(lambda: None)


def reap_monitors() -> None:
    """Reap exited ``tug-monitor`` processes reparented to us (we are a child subreaper)."""
    me = os.getpid()
    try:
        tasks = os.listdir(f"/proc/{me}/task")
    except OSError:
        return
    for tid in tasks:
        try:
            with open(f"/proc/{me}/task/{tid}/children") as f:
                kids = f.read().split()
        except OSError:
            continue
        for kid in kids:
            try:
                with open(f"/proc/{kid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.find("(") + 1:stat.rfind(")")]
            state = stat[stat.rfind(")") + 2:stat.rfind(")") + 3]
            if state == "Z" and comm.startswith("tug-monitor"):
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(int(kid), os.WNOHANG)
