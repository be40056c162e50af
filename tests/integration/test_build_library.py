"""library/ base images built from Debian packages, and a Flask app on the python image.

Slow (debootstrap and apt-get from the Debian mirror, pip from PyPI): runs only with
``TUG_TEST_LIBRARY=1``. ``TUG_TEST_LIBRARY_ROOT`` reuses a data root that already has the images.
"""

from __future__ import annotations

import os
import shutil
import textwrap

import pytest

from tugboat.build.builder import Builder
from tugboat.images.bootstrap import bootstrap
from tugboat.images.service import ImageService

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("TUG_TEST_LIBRARY"), reason="set TUG_TEST_LIBRARY=1 (minutes, network)"),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageService:
    root = os.environ.get("TUG_TEST_LIBRARY_ROOT") or str(tmp_path_factory.mktemp("library"))
    return ImageService(root)


def test_python_image_and_a_flask_app(images: ImageService, tmp_path) -> None:
    if not images.exists("python:3.11-slim"):
        bootstrap(images, "python:3.11-slim")
    py = images.resolve("python:3.11-slim")
    assert py.config["config"]["Cmd"] == ["python3"]
    ctx = tmp_path / "flask"
    ctx.mkdir()
    (ctx / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    ca = "/etc/ssl/certs/ca-certificates.crt"  # this machine reaches PyPI through a proxy with its own CA
    shutil.copy(ca, ctx / "host-ca.crt")
    (ctx / "Dockerfile").write_text(textwrap.dedent("""
        FROM python:3.11-slim
        WORKDIR /app
        RUN --mount=type=bind,source=host-ca.crt,target=/host-ca.crt pip install --cert /host-ca.crt flask
        COPY app.py .
        RUN python -c "import app; print('flask', app.app.name)"
        CMD ["python", "-m", "flask", "run", "--host", "0.0.0.0"]
    """).lstrip())
    events: list[dict] = []
    img = Builder(images).build(str(ctx), tags=["flaskapp:latest"], progress=events.append, no_cache=True)
    assert "flask app\n" in "".join(e["text"] for e in events if e["type"] == "output")
    assert img.config["config"]["WorkingDir"] == "/app"


@pytest.mark.parametrize("name", ["postgres:15", "redis", "nginx"])
def test_other_library_images(images: ImageService, name: str) -> None:
    img = images.resolve(name) if images.exists(name) else bootstrap(images, name)
    cfg = img.config["config"]
    assert cfg.get("ExposedPorts")
