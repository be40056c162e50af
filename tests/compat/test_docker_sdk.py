"""docker-py (the `docker` package, 7.x) against the tugboat daemon."""

from __future__ import annotations

import pytest

import engine_support
from engine_support import Daemon

docker = pytest.importorskip("docker")

daemon = engine_support.daemon


@pytest.fixture(scope="module")
def client(daemon: Daemon):  # type: ignore[no-untyped-def]
    c = docker.DockerClient(base_url=daemon.host, version="auto")
    yield c
    c.close()


def test_version_and_ping(client) -> None:  # type: ignore[no-untyped-def]
    assert client.ping() is True
    assert client.version()["ApiVersion"] == "1.50"


def test_run_remove_returns_output(client) -> None:  # type: ignore[no-untyped-def]
    assert client.containers.run("busybox", "echo hi", remove=True) == b"hi\n"
    with pytest.raises(docker.errors.ContainerError) as ei:
        client.containers.run("busybox", ["sh", "-c", "echo bad >&2; exit 2"], remove=True)
    assert ei.value.exit_status == 2 and b"bad" in ei.value.stderr


def test_run_detached_and_manage(client) -> None:  # type: ignore[no-untyped-def]
    c = client.containers.run("busybox", ["sleep", "30"], detach=True, name="sdk1", labels={"a": "b"})
    c.reload()
    assert c.status == "running" and c.name == "sdk1"
    assert [x.name for x in client.containers.list(filters={"label": "a=b"})] == ["sdk1"]
    code, out = c.exec_run(["sh", "-c", "echo from-exec"])
    assert code == 0 and out == b"from-exec\n"
    c.stop(timeout=1)
    c.reload()
    assert c.status == "exited"
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("sdk1")


def test_images_and_volumes(client) -> None:  # type: ignore[no-untyped-def]
    img = client.images.get("busybox:latest")
    assert "busybox:latest" in img.tags
    assert client.images.get(img.short_id.split(":")[1]).id == img.id
    v = client.volumes.create("sdkvol")
    assert v.name == "sdkvol"
    assert "sdkvol" in [x.name for x in client.volumes.list()]
    v.remove()
    with pytest.raises(docker.errors.ImageNotFound):
        client.containers.create("definitely-not-here:1")
