"""The real docker CLI (and `tug pull/push`) through our daemon's Engine API to our registry."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import bcrypt
import pytest

from proc_support import stop_process

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "unit"))

from registry_fixtures import REPO_ROOT, LocalImages, ThreadServer, free_port, make_image, thread_server

from conftest import require_binary
from tugboat.distribution.client import RegistryClient


@pytest.fixture
def daemon(tmp_path):
    sock = str(tmp_path / "tug.sock")
    root = str(tmp_path / "root")
    # no container networking needed for pull/push: no bridge or nft tables are made
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "src"), TUG_ENGINE_NO_NETWORK="1")
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "tugboat.cli.main", "daemon", "--root", root, "--host",
                             f"unix://{sock}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail("daemon exited: " + (tmp_path / "daemon.log").read_text()[-2000:])
            if os.path.exists(sock):
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(sock)
                        break
                except OSError:
                    pass
            time.sleep(0.1)
        else:
            pytest.fail("daemon did not start")
        yield {"sock": sock, "root": root}
    finally:
        stop_process(proc, 20)
        log.close()


def run(cmd: list[str], sock: str, tmp_path, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}", DOCKER_CONFIG=str(tmp_path / "dockercfg"),
               TUG_HOST=f"unix://{sock}", PYTHONPATH=os.path.join(REPO_ROOT, "src"))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, input=input)


def _tag(daemon: dict, sock: str, tmp_path, src: str, dst: str) -> None:
    docker = require_binary("docker")
    r = run([docker, "tag", src, dst], sock, tmp_path)
    if r.returncode != 0:  # the images routes may not be there: tag through the image service
        from tugboat.images.service import ImageService

        ImageService(daemon["root"]).tag(src, dst)


def test_docker_cli_pull_push_through_daemon(tmp_path, daemon):
    docker = require_binary("docker")
    sock = daemon["sock"]
    with thread_server(str(tmp_path / "reg")) as s:
        src = LocalImages(str(tmp_path / "src"))
        md = make_image(src.content, "dockercli", layers=2, size=400_000)
        ref = f"{s.addr}/cli/img:1"
        src.tag(ref, md)
        RegistryClient().push(src, ref)
        r = run([docker, "pull", ref], sock, tmp_path)
        assert r.returncode == 0, r.stderr
        assert "Pulling from cli/img" in r.stdout and f"Digest: {md}" in r.stdout
        assert "Downloaded newer image" in r.stdout
        r = run([docker, "pull", ref], sock, tmp_path)
        assert r.returncode == 0 and "Image is up to date" in r.stdout
        # the same registry as localhost:PORT (plain HTTP, as docker allows for localhost)
        r = run([docker, "pull", f"localhost:{s.port}/cli/img:1"], sock, tmp_path)
        assert r.returncode == 0, r.stderr
        assert f"Digest: {md}" in r.stdout
        r = run([docker, "push", f"localhost:{s.port}/cli/img:1"], sock, tmp_path)
        assert r.returncode == 0, r.stderr
        r = run([docker, "pull", f"{s.addr}/cli/missing:1"], sock, tmp_path)
        assert r.returncode != 0 and "not found" in r.stderr
        # push under a new name: the blobs are mounted or uploaded, the manifest is the same
        _tag(daemon, sock, tmp_path, ref, f"{s.addr}/cli/copy:2")
        r = run([docker, "push", f"{s.addr}/cli/copy:2"], sock, tmp_path)
        assert r.returncode == 0, r.stderr
        assert f"2: digest: {md}" in r.stdout
        import requests

        got = requests.get(f"{s.url}/v2/cli/copy/manifests/2",
                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert got.headers["Docker-Content-Digest"] == md
        r = run([docker, "push", f"{s.addr}/cli/nothing:1"], sock, tmp_path)
        assert r.returncode != 0 and "does not exist locally" in r.stderr
        # the tug CLI does the same through the same daemon
        tug = [sys.executable, "-m", "tugboat.cli.main"]
        r = run([*tug, "pull", f"{s.addr}/cli/copy:2"], sock, tmp_path)
        assert r.returncode == 0, r.stderr
        assert f"Digest: {md}" in r.stdout
        r = run([*tug, "push", f"{s.addr}/cli/copy:2"], sock, tmp_path)
        assert r.returncode == 0, r.stderr
        assert "Layer already exists" in r.stdout


def test_docker_login_and_push_with_token_auth(tmp_path, daemon):
    docker = require_binary("docker")
    sock = daemon["sock"]
    hp = tmp_path / "htpasswd"
    hp.write_text("carol:" + bcrypt.hashpw(b"pw123", bcrypt.gensalt(rounds=4)).decode() + "\n")
    port = free_port()
    srv = ThreadServer(str(tmp_path / "reg"), port=port, htpasswd=str(hp),
                       token_realm=f"http://127.0.0.1:{port}/token").start()
    try:
        src = LocalImages(str(tmp_path / "src"))
        md = make_image(src.content, "login", layers=1)
        ref = f"127.0.0.1:{port}/priv/img:1"
        src.tag(ref, md)
        RegistryClient().push(src, ref, auth=("carol", "pw123"))
        r = run([docker, "pull", ref], sock, tmp_path)
        assert r.returncode != 0
        r = run([docker, "login", f"127.0.0.1:{port}", "-u", "carol", "--password-stdin"], sock, tmp_path,
                input="wrong\n")
        assert r.returncode != 0
        r = run([docker, "login", f"127.0.0.1:{port}", "-u", "carol", "--password-stdin"], sock, tmp_path,
                input="pw123\n")
        assert r.returncode == 0 and "Login Succeeded" in r.stdout, r.stderr
        r = run([docker, "pull", ref], sock, tmp_path)
        assert r.returncode == 0, r.stderr
        _tag(daemon, sock, tmp_path, ref, f"127.0.0.1:{port}/priv/again:1")
        r = run([docker, "push", f"127.0.0.1:{port}/priv/again:1"], sock, tmp_path)
        assert r.returncode == 0, r.stderr
        # tug login writes the same config file docker reads
        tug = [sys.executable, "-m", "tugboat.cli.main"]
        r = run([*tug, "logout", f"127.0.0.1:{port}"], sock, tmp_path)
        assert r.returncode == 0
        r = run([*tug, "login", f"127.0.0.1:{port}", "-u", "carol", "--password-stdin"], sock, tmp_path,
                input="pw123\n")
        assert r.returncode == 0 and "Login Succeeded" in r.stdout, r.stderr
        assert f"127.0.0.1:{port}" in (tmp_path / "dockercfg" / "config.json").read_text()
    finally:
        srv.stop()
