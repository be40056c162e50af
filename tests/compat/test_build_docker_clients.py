# ruff: noqa: F811
"""POST /build driven by the real docker CLI (legacy builder) and docker-py's images.build."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator

import pytest

from conftest import require_binary
from engine_support import Daemon, bootstrap_busybox, cleanup_root, daemon  # noqa: F401


def _ctx(path, dockerfile: str, files: dict[str, str] | None = None) -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "Dockerfile"), "w") as f:
        f.write(textwrap.dedent(dockerfile).lstrip())
    for name, content in (files or {}).items():
        with open(os.path.join(path, name), "w") as f:
            f.write(content)
    return str(path)


def docker(d: Daemon, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=os.path.join(d.root, "docker-config"))
    e.pop("DOCKER_BUILDKIT", None)
    e.update(env or {})
    return subprocess.run([require_binary("docker"), *args], capture_output=True, text=True, timeout=120, env=e)


def test_docker_build_legacy_stream(daemon: Daemon, tmp_path) -> None:
    ctx = _ctx(tmp_path / "c1", """
        FROM busybox
        ARG FOO=default
        RUN echo building $FOO
        COPY small.txt /small.txt
        CMD ["cat", "/small.txt"]
    """, {"small.txt": "small\n", "secret.txt": "s", ".dockerignore": "secret.txt\n"})
    r = docker(daemon, "build", "--build-arg", "FOO=bar", "-t", "testimage", ctx)
    assert r.returncode == 0, r.stderr + r.stdout
    out = r.stdout
    assert "Step 1/5 : FROM busybox" in out
    assert "Step 3/5 : RUN echo building $FOO" in out
    assert "building bar" in out
    assert "Successfully tagged testimage:latest" in out
    built = [ln for ln in out.splitlines() if ln.startswith("Successfully built ")]
    assert len(built) == 1
    r2 = docker(daemon, "image", "inspect", "--format", "{{.Id}}", "testimage")
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.strip().split(":", 1)[1].startswith(built[0].split()[-1])
    # cached rebuild, DOCKER_BUILDKIT=0, -q and --iidfile
    iid = tmp_path / "iid"
    r3 = docker(daemon, "build", "-q", "--iidfile", str(iid), "--build-arg", "FOO=bar", "-t", "testimage", ctx,
                env={"DOCKER_BUILDKIT": "0"})
    assert r3.returncode == 0, r3.stderr
    assert r3.stdout.strip() == iid.read_text().strip() == r2.stdout.strip()  # -q: the CLI writes the stream text


def test_docker_build_failure_exit_code(daemon: Daemon, tmp_path) -> None:
    ctx = _ctx(tmp_path / "c2", "FROM busybox\nRUN echo out; echo err >&2; exit 3\n")
    r = docker(daemon, "build", "-t", "failing", ctx)
    assert r.returncode == 3
    assert "The command '/bin/sh -c echo out; echo err >&2; exit 3' returned a non-zero code: 3" in r.stderr
    assert "out" in r.stdout
    assert docker(daemon, "image", "inspect", "failing").returncode != 0


def test_docker_build_bad_dockerfile(daemon: Daemon, tmp_path) -> None:
    ctx = _ctx(tmp_path / "c3", "FROM busybox\nFORM x\n")
    r = docker(daemon, "build", ctx)
    assert r.returncode == 1
    assert "Dockerfile:2: unknown instruction: FORM" in r.stderr


def test_docker_sdk_images_build(daemon: Daemon, tmp_path) -> None:
    docker_sdk = pytest.importorskip("docker")
    ctx = _ctx(tmp_path / "c4", "FROM busybox\nARG FOO\nRUN echo sdk-$FOO > /foo\n")
    client = docker_sdk.DockerClient(base_url=daemon.host)
    try:
        image, logs = client.images.build(path=ctx, tag="sdkimage", buildargs={"FOO": "sdk"})
        lines = [x.get("stream", "") for x in logs]
        assert any(ln.startswith("Successfully built") for ln in lines)
        assert "sdkimage:latest" in image.tags
        with pytest.raises(docker_sdk.errors.BuildError):
            client.images.build(path=_ctx(tmp_path / "c5", "FROM busybox\nRUN exit 2\n"))
    finally:
        client.close()


def test_tug_build_through_the_daemon(daemon: Daemon, tmp_path) -> None:
    ctx = _ctx(tmp_path / "c6", "FROM busybox\nARG X\nRUN echo via-$X\n", {".dockerignore": "big\n", "big": "x"})
    r = daemon.tug("-H", daemon.host, "build", "--build-arg", "X=daemon", "-t", "viadaemon", ctx)
    assert r.returncode == 0, r.stderr
    assert b"via-daemon" in r.stderr and b"Successfully tagged viadaemon:latest" in r.stderr
    r = daemon.tug("-H", daemon.host, "build", "-q", ctx)
    assert r.returncode == 0 and r.stdout.startswith(b"sha256:")
    bad = _ctx(tmp_path / "c7", "FROM busybox\nRUN exit 4\n")
    assert daemon.tug("-H", daemon.host, "build", bad).returncode == 4


def test_client_going_away_cancels_the_build(daemon: Daemon, tmp_path) -> None:
    import time

    ctx = _ctx(tmp_path / "c8", "FROM busybox\nRUN echo started; sleep 60\n")
    e = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=os.path.join(daemon.root, "docker-config"))
    p = subprocess.Popen([require_binary("docker"), "build", "--no-cache", "-t", "cancelled", ctx],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=e)
    try:
        assert p.stdout is not None
        for line in p.stdout:
            if b"started" in line:
                break
        p.kill()
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    rt_root = os.path.join(daemon.root, "build", "runtime")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and os.path.isdir(rt_root) and os.listdir(rt_root):
        time.sleep(0.2)
    assert not os.path.isdir(rt_root) or os.listdir(rt_root) == []
    assert docker(daemon, "image", "inspect", "cancelled").returncode != 0


@pytest.fixture
def net_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with networking (the shared one has TUG_ENGINE_NO_NETWORK), on kernel objects of
    its own (TUG_NETWORK_INSTANCE), torn down at its exit."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    base = tmp_path_factory.mktemp("buildnet")
    root = str(base / "root")
    os.makedirs(root)
    bootstrap_busybox(root)
    inst = "bn" + os.urandom(3).hex()
    d = Daemon(root=root, sock=str(base / "tug.sock"), env={"TUG_NETWORK_INSTANCE": inst})
    d.start()
    try:
        yield d
    finally:
        d.stop()
        cleanup_root(root)
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert f"tugboat-{inst}" not in tables


def test_docker_build_network_modes(net_daemon: Daemon, tmp_path) -> None:
    """RUN runs on the daemon's default bridge unless --network says host or none (dockerd's
    legacy builder)."""
    daemon = net_daemon
    ctx = _ctx(tmp_path / "c9", """
        FROM busybox
        RUN echo "eth0=[$(ip -o -4 addr show eth0 2>/dev/null | grep -o 'inet [0-9.]*')]"; \\
            echo "netns=[$(readlink /proc/self/ns/net)]"
    """)
    host_ns = os.readlink("/proc/self/ns/net")
    r = docker(daemon, "build", "--no-cache", ctx)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "eth0=[inet " in r.stdout and f"netns=[{host_ns}]" not in r.stdout
    r = docker(daemon, "build", "--no-cache", "--network", "none", ctx)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "eth0=[]" in r.stdout and f"netns=[{host_ns}]" not in r.stdout
    r = docker(daemon, "build", "--no-cache", "--network", "host", ctx)
    assert r.returncode == 0, r.stderr + r.stdout
    assert f"netns=[{host_ns}]" in r.stdout
    r = docker(daemon, "build", "--no-cache", "--network", "container:abc", ctx)
    assert r.returncode != 0 and "not supported for builds" in r.stderr
    # a user network of the daemon's, by name
    assert docker(daemon, "network", "create", "--subnet", "10.217.3.0/24", "buildnet").returncode == 0
    r = docker(daemon, "build", "--no-cache", "--network", "buildnet", ctx)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "eth0=[inet 10.217.3." in r.stdout
    assert docker(daemon, "network", "rm", "buildnet").returncode == 0
