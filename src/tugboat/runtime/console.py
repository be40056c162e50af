"""Terminals: allocate a pty in the container and pass its master over the console socket."""

from __future__ import annotations

import fcntl
import os
import socket
import termios


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise OSError(e.errno, f"connect to console socket {path}: {os.strerror(e.errno or 0).lower()}") from None
    return s


def setup_pty(sock: socket.socket, uid: int = 0, gid: int = 0, size: dict | None = None) -> None:
    """Open a pty (the container's /dev/ptmx), send the master, make the slave our ctty and stdio."""
    master, slave = os.openpty()
    if size and size.get("height") and size.get("width"):
        import struct

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", int(size["height"]), int(size["width"]), 0, 0))
    try:
        os.fchown(slave, uid, -1)  # the process's own terminal; the group stays devpts' (tty)
    except OSError:
        pass
    name = os.ttyname(slave)
    socket.send_fds(sock, [name.encode()], [master])
    os.close(master)
    sock.close()
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def recv_master(conn: socket.socket) -> int:
    """Receive a pty master sent by ``setup_pty`` (for our own `run -t`)."""
    _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    if not fds:
        raise OSError(5, "console socket: no file descriptor received")
    return fds[0]
