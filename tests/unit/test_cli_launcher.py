"""The lean `tug` launcher (tugboat.cli.launcher): written into a bin dir, it runs the CLI with
`python -S` and the install-time import path (site-packages and src included)."""

from __future__ import annotations

import os
import subprocess
import sys

from tugboat.cli import launcher


def test_launcher_runs_the_cli_without_site(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python")
    target = launcher.install(str(bindir))
    assert target == str(bindir / "tug")
    text = (bindir / "tug").read_text()
    assert text.startswith(f"#!{bindir / 'python'} -S\n")
    assert os.access(target, os.X_OK)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    p = subprocess.run([target, "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("tugboat version ")
    # errors as usual (no daemon at that address), through the same entry point
    p = subprocess.run([target, "-H", f"unix://{tmp_path}/none.sock", "ps"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 1
    assert "Cannot connect to the tugboat daemon" in p.stderr
    # third-party packages (site-packages) stay importable under -S, as `tug daemon` needs them
    code = "import sys; exec(open(sys.argv[1]).read().split('from tugboat')[0]); import msgspec, tugboat"
    p = subprocess.run([str(bindir / "python"), "-S", "-c", code, target], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 0, p.stderr


def test_site_path_skips_the_script_directory() -> None:
    path = launcher.site_path()
    assert sys.path[0] not in path or sys.path.count(sys.path[0]) > 1
    assert all(os.path.isabs(p) for p in path)


def test_quick_exit_still_delivers_all_output(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`ps`, `stop` … end with os._exit after flushing: the whole (large) output arrives."""
    import socket
    import threading

    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python")
    target = launcher.install(str(bindir))
    rows = [{"Id": f"{i:064x}", "Names": [f"/c{i}"], "Image": "busybox", "Command": "sleep 9", "Created": 0,
             "Ports": [], "Labels": {}, "State": "running", "Status": "Up", "Mounts": []} for i in range(3000)]
    import json

    body = json.dumps(rows).encode()
    path = str(tmp_path / "d.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    p = subprocess.run([target, "-H", f"unix://{path}", "ps", "--format", "{{.Names}}"], capture_output=True,
                       env=env, timeout=60)
    t.join(5)
    srv.close()
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split() == [f"c{i}" for i in range(3000)]
