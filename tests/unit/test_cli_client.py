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


def test_fastjson_matches_json_and_create_body() -> None:
    import json

    from tugboat.cli import fastjson
    from tugboat.cli.containers import RUN_SPEC, build_create_body, parse_bytes
    from tugboat.cli.flags import parse

    for obj in ({"a": [1, 2.5, None, True], "b": 'x\u00e9"'}, [], {}, "s", 3, {"n": {"m": []}}):
        assert fastjson.dumps(obj) == json.dumps(obj)
        assert fastjson.loads(json.dumps(obj)) == obj
    with pytest.raises(ValueError):
        fastjson.loads('{"a": 1} x')
    assert parse_bytes("64m") == 64 << 20 and parse_bytes("1GB") == 1 << 30 and parse_bytes("512") == 512
    o, pos = parse(["--rm", "-e", "A=1", "-p", "8080:80", "-v", "v:/d:ro", "-m", "64m", "--cpus", "0.5",
                    "--restart", "on-failure:3", "--entrypoint", "sh", "busybox", "-c", "true"], RUN_SPEC,
                   interspersed=False)
    body = build_create_body(o, pos[0], pos[1:])
    assert body["Image"] == "busybox" and body["Entrypoint"] == ["sh"] and body["Cmd"] == ["-c", "true"]
    assert body["Env"] == ["A=1"] and body["ExposedPorts"] == {"80/tcp": {}}
    hc = body["HostConfig"]
    assert hc["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    assert hc["Binds"] == ["v:/d:ro"] and hc["AutoRemove"] is True and hc["Memory"] == 64 << 20
    assert hc["NanoCpus"] == 500_000_000 and hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert body["AttachStdout"] and not body["AttachStdin"]


def test_head_response_has_no_body_whatever_its_content_length(tmp_path) -> None:
    """A 404 to HEAD carries Content-Length but no body: the client must not wait for one."""
    import socket as _s
    import threading

    from tugboat.cli.client import DaemonClient
    from tugboat.errors import NotFound

    path = str(tmp_path / "d.sock")
    srv = _s.socket(_s.AF_UNIX, _s.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 69\r\n\r\n")
        conn.recv(65536)  # keep the connection open: a client waiting for 69 bytes would hang
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = DaemonClient(f"unix://{path}")
    c.timeout = 5
    import pytest

    with pytest.raises(NotFound):
        c.head("/containers/x/archive", query={"path": "/nothere"})
    c.close()
    srv.close()
