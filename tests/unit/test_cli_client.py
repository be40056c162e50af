"""DaemonClient (raw HTTP/1.1 over a unix socket) against a tiny real server; lean imports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from tugboat.cli.client import DaemonClient
from tugboat.errors import Conflict, NotFound, Unavailable


def _serve(path: str, responses: list[bytes]) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)

    def run() -> None:
        conn, _ = srv.accept()
        for resp in responses:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            conn.sendall(resp)
        conn.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_keepalive_json_chunked_and_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "s.sock")
    body = b'{"a": 1}'
    chunked = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" \
              b"3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n"
    t = _serve(path, [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        chunked,
        b'HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 35\r\n\r\n{"message":"No such container: x"}\n',
        b'HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{"message":"in"}\n',
        b"HTTP/1.1 304 Not Modified\r\n\r\n",
    ])
    c = DaemonClient(f"unix://{path}")
    assert c.get("/x") == {"a": 1}
    assert c.get("/y") == [1, 2]
    with pytest.raises(NotFound, match="No such container: x"):
        c.get("/containers/x/json")
    with pytest.raises(Conflict):
        c.post("/z")
    assert c.status_of("POST", "/containers/x/stop") == 304
    t.join(5)


def test_unreachable_daemon_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = DaemonClient(f"unix://{tmp_path}/none.sock")
    with pytest.raises(Unavailable, match="Is the daemon running"):
        c.get("/version")


def test_cli_path_does_not_import_aiohttp() -> None:
    code = ("import sys; from tugboat.cli.main import main; "
            "sys.argv=['tug','--host','unix:///nonexistent.sock','ps']; rc=main(); "
            "print(rc, 'aiohttp' in sys.modules, 'asyncio' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert p.stdout.split() == ["1", "False", "False"], p.stderr
    assert "Cannot connect to the tugboat daemon" in p.stderr
