"""Real third-party clients and servers against ours: skopeo -> tug registry, and our client ->
Debian's docker-registry (distribution 2.8)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import bcrypt
import pytest
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "unit"))

from registry_fixtures import (
    LocalImages,
    free_port,
    make_image,
    thread_server,
    write_oci_layout,
)

from conftest import require_binary
from tugboat.distribution.client import RegistryClient


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = require_binary("skopeo")
    env = dict(os.environ, HOME=os.environ.get("HOME", "/root"))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=check, env=env)


@pytest.fixture
def oci_image(tmp_path):
    images = LocalImages(str(tmp_path / "local"))
    md = make_image(images.content, "skopeo", layers=2, size=300_000)
    layout = str(tmp_path / "layout")
    write_oci_layout(images.content, md, layout, "v1")
    return images, md, layout


def test_skopeo_copy_to_and_from_our_registry(tmp_path, oci_image):
    images, md, layout = oci_image
    with thread_server(str(tmp_path / "reg")) as s:
        skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{s.addr}/skopeo/img:v1")
        r = requests.get(f"{s.url}/v2/skopeo/img/manifests/v1",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == md
        out = str(tmp_path / "back")
        skopeo("copy", "--src-tls-verify=false", f"docker://{s.addr}/skopeo/img:v1", f"oci:{out}:v1")
        with open(os.path.join(out, "index.json")) as f:
            idx = json.load(f)
        assert idx["manifests"][0]["digest"] == md
        for d in images.content.list():
            with open(os.path.join(out, "blobs", *d.split(":")), "rb") as f:
                assert f.read() == images.content.read(d)
        insp = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{s.addr}/skopeo/img:v1").stdout)
        assert insp["Digest"] == md and insp["Layers"] == [lay["digest"] for lay in
                                                           json.loads(images.content.read(md))["layers"]]
        # registry to registry (cross-repository) and tag listing, then delete
        skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
               f"docker://{s.addr}/skopeo/img:v1", f"docker://{s.addr}/skopeo/copy:v2")
        tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{s.addr}/skopeo/copy").stdout)
        assert tags["Tags"] == ["v2"]
        skopeo("delete", "--tls-verify=false", f"docker://{s.addr}/skopeo/copy:v2")
        assert requests.get(f"{s.url}/v2/skopeo/copy/manifests/{md}").status_code == 404
        # our client pulls what skopeo pushed
        dst = LocalImages(str(tmp_path / "dst"))
        assert RegistryClient().pull(dst, f"{s.addr}/skopeo/img:v1") == md


def test_skopeo_with_basic_and_token_auth(tmp_path, oci_image):
    _images, _md, layout = oci_image
    hp = tmp_path / "htpasswd"
    hp.write_text("bob:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode() + "\n")
    with thread_server(str(tmp_path / "reg"), htpasswd=str(hp)) as s:
        bad = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "bob:wrong", f"oci:{layout}:v1",
                     f"docker://{s.addr}/a/b:1", check=False)
        assert bad.returncode != 0 and ("401" in bad.stderr or "unauthorized" in bad.stderr.lower())
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "bob:pw", f"oci:{layout}:v1",
               f"docker://{s.addr}/a/b:1")
    from registry_fixtures import ThreadServer

    port = free_port()
    srv = ThreadServer(str(tmp_path / "reg2"), port=port, htpasswd=str(hp),
                       token_realm=f"http://127.0.0.1:{port}/token").start()
    try:
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "bob:pw", f"oci:{layout}:v1",
               f"docker://127.0.0.1:{port}/tok/img:1")
        out = skopeo("inspect", "--tls-verify=false", "--creds", "bob:pw", f"docker://127.0.0.1:{port}/tok/img:1")
        assert json.loads(out.stdout)["Name"].endswith("/tok/img")
        bad = skopeo("inspect", "--tls-verify=false", "--creds", "bob:nope", f"docker://127.0.0.1:{port}/tok/img:1",
                     check=False)
        assert bad.returncode != 0
    finally:
        srv.stop()


@pytest.fixture
def docker_registry(tmp_path):
    exe = require_binary("docker-registry")
    port = free_port()
    cfg = tmp_path / "dreg.yml"
    cfg.write_text(f"""version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {tmp_path / 'dreg-data'}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
""")
    proc = subprocess.Popen([exe, "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        r = requests.get(f"http://127.0.0.1:{port}/v2/")
        assert r.headers.get("Docker-Distribution-Api-Version") == "registry/2.0"  # it is distribution, not ours
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_our_client_with_docker_registry(tmp_path, docker_registry):
    src = LocalImages(str(tmp_path / "src"))
    md = make_image(src.content, "dreg", layers=3, size=200_000)
    ref = f"{docker_registry}/ours/app:1"
    src.tag(ref, md)
    events: list[dict] = []
    assert RegistryClient().push(src, ref, progress=events.append) == md
    assert [e.get("status") for e in events].count("Pushed") == 3
    ref2 = f"{docker_registry}/ours/other:1"
    src.tag(ref2, md)
    events.clear()
    RegistryClient().push(src, ref2, progress=events.append)
    assert [e.get("status") for e in events].count("Mounted from ours/app") == 3
    dst = LocalImages(str(tmp_path / "dst"))
    assert RegistryClient().pull(dst, ref) == md
    assert sorted(dst.content.list()) == sorted(src.content.list())
    # what skopeo sees matches
    insp = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}").stdout)
    assert insp["Digest"] == md
