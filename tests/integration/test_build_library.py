"""library/ base images built from Debian packages; a Flask app built FROM the python image and
served through a published port; the postgres image answering psql through a published port.

Runs by default (about 4-6 minutes: one debootstrap, apt-get from the Debian mirror, pip from
PyPI; the four images are built once, side by side, in one data root shared by the module). Skipped when the mirror
or PyPI cannot be reached, or with ``TUG_SKIP_LIBRARY=1``. ``TUG_TEST_LIBRARY_ROOT`` reuses a
data root that already has the images.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import require_binary
from engine_support import Daemon, cleanup_root
from tugboat.build.builder import Builder
from tugboat.images.bootstrap import bootstrap, host_debian_mirror
from tugboat.images.service import ImageService

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),  # the first test makes the Debian and python images
    pytest.mark.skipif(bool(os.environ.get("TUG_SKIP_LIBRARY")), reason="TUG_SKIP_LIBRARY is set"),
]


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status < 400
    except Exception:
        return False


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageService]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed")
    given = os.environ.get("TUG_TEST_LIBRARY_ROOT")
    if not given:
        try:
            mirror = host_debian_mirror()
        except Exception as exc:
            pytest.skip(f"no Debian mirror configured: {exc}")
        if not _reachable(mirror.rstrip("/") + "/dists/bookworm/Release"):
            pytest.skip(f"the Debian mirror {mirror} cannot be reached")
    root = given or str(tmp_path_factory.mktemp("library"))
    yield ImageService(root)
    if not given:
        cleanup_root(root)


LIBRARY = ("python:3.11-slim", "postgres:15", "redis", "nginx")


@pytest.fixture(scope="module")
def library(images: ImageService) -> dict[str, Any]:
    """The four library images, built side by side once the Debian base exists (their apt-get
    downloads overlap): name -> Image, or the exception its build raised."""
    if not images.exists("debian:bookworm-slim"):
        bootstrap(images, "debian:bookworm-slim")
    out: dict[str, Any] = {}

    def make(name: str) -> None:
        try:
            out[name] = images.resolve(name) if images.exists(name) else bootstrap(images, name)
        except Exception as exc:
            out[name] = exc

    threads = [threading.Thread(target=make, args=(n,), name=f"library-{n}") for n in LIBRARY]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _image(library: dict[str, Any], name: str) -> Any:
    img = library[name]
    if isinstance(img, Exception):
        raise img
    return img


@pytest.fixture(scope="module")
def daemon(images: ImageService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon on the library root, with networking of its own (published ports)."""
    base = tmp_path_factory.mktemp("libdaemon")
    inst = "lib" + os.urandom(2).hex()
    d = Daemon(root=images.root, sock=str(base / "tug.sock"), env={"TUG_NETWORK_INSTANCE": inst})
    d.start()
    try:
        yield d
    finally:
        with contextlib.suppress(Exception):
            ids = d.tug("ps", "-aq").stdout.split()
            if ids:
                d.tug("rm", "-f", *[i.decode() for i in ids], timeout=120)
        d.stop()
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert f"tugboat-{inst}" not in tables


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(d: Daemon, *args: str) -> str:
    r = d.tug("run", "-d", *args, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout.decode().strip()


def _logs(d: Daemon, cid: str) -> str:
    r = d.tug("logs", cid, timeout=30)
    return (r.stdout + r.stderr).decode(errors="replace")[-3000:]


def test_python_image_and_a_flask_app_on_a_published_port(images: ImageService, library: dict[str, Any],
                                                         daemon: Daemon, tmp_path) -> None:
    py = _image(library, "python:3.11-slim")
    assert py.config["config"]["Cmd"] == ["python3"]
    if not _reachable("https://pypi.org/simple/flask/"):
        pytest.skip("PyPI cannot be reached")
    ctx = tmp_path / "flask"
    ctx.mkdir()
    (ctx / "app.py").write_text(textwrap.dedent("""
        from flask import Flask
        app = Flask(__name__)

        @app.route("/")
        def hello():
            return "hello from flask in tugboat\\n"
    """))
    # the host's CA bundle: where PyPI is reached through a TLS-intercepting proxy, pip needs it
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", ctx / "host-ca.crt")
    (ctx / "Dockerfile").write_text(textwrap.dedent("""
        FROM python:3.11-slim
        WORKDIR /app
        RUN --mount=type=bind,source=host-ca.crt,target=/host-ca.crt pip install --cert /host-ca.crt flask
        COPY app.py .
        RUN python -c "import app; print('flask', app.app.name)"
        EXPOSE 5000
        CMD ["python", "-m", "flask", "run", "--host", "0.0.0.0"]
    """).lstrip())
    events: list[dict] = []
    img = Builder(images).build(str(ctx), tags=["flaskapp:latest"], progress=events.append, no_cache=True)
    assert "flask app\n" in "".join(e["text"] for e in events if e["type"] == "output")
    assert img.config["config"]["WorkingDir"] == "/app"
    port = _free_port()
    cid = _run(daemon, "-p", f"127.0.0.1:{port}:5000", "flaskapp")
    body = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                body = r.read().decode()
            break
        time.sleep(0.5)
    assert body == "hello from flask in tugboat\n", _logs(daemon, cid)
    daemon.tug("rm", "-f", cid, timeout=60)


def test_postgres_image_answers_psql_on_a_published_port(library: dict[str, Any], daemon: Daemon) -> None:
    img = _image(library, "postgres:15")
    cfg = img.config["config"]
    assert cfg["ExposedPorts"] == {"5432/tcp": {}} and "/var/lib/postgresql/data" in cfg["Volumes"]
    psql = require_binary("psql")
    port = _free_port()
    cid = _run(daemon, "-e", "POSTGRES_PASSWORD=s3cret", "-e", "POSTGRES_USER=app", "-e", "POSTGRES_DB=appdb",
               "-p", f"127.0.0.1:{port}:5432", "postgres:15")
    env = dict(os.environ, PGPASSWORD="s3cret", PGCONNECT_TIMEOUT="5")
    out = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = subprocess.run([psql, "-h", "127.0.0.1", "-p", str(port), "-U", "app", "-d", "appdb", "-tAc",
                            "select current_user || '@' || current_database()"],
                           capture_output=True, text=True, env=env, timeout=30)
        if r.returncode == 0:
            out = r.stdout.strip()
            break
        time.sleep(1)
    assert out == "app@appdb", _logs(daemon, cid)
    bad = subprocess.run([psql, "-h", "127.0.0.1", "-p", str(port), "-U", "app", "-d", "appdb", "-c", "select 1"],
                         capture_output=True, text=True, env=dict(env, PGPASSWORD="wrong"), timeout=30)
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr
    daemon.tug("rm", "-f", cid, timeout=60)


@pytest.mark.parametrize("name", ["redis", "nginx"])
def test_other_library_images(library: dict[str, Any], name: str) -> None:
    cfg = _image(library, name).config["config"]
    assert cfg.get("ExposedPorts")
