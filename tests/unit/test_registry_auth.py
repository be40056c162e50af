"""Registry authentication: htpasswd basic auth and the token flow, from raw HTTP and from our client."""

from __future__ import annotations

import base64
import json

import bcrypt
import pytest
import requests
from registry_fixtures import LocalImages, ThreadServer, free_port, make_image, thread_server

from tugboat.distribution.auth import TokenIssuer, parse_scopes
from tugboat.distribution.client import RegistryClient, parse_challenge
from tugboat.errors import PermissionDenied, Unauthorized


@pytest.fixture
def htpasswd(tmp_path):
    p = tmp_path / "htpasswd"
    h = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    p.write_text(f"alice:{h}\n")
    return str(p)


def basic(user: str, pw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


def test_basic_auth(tmp_path, htpasswd):
    with thread_server(str(tmp_path / "reg"), htpasswd=htpasswd) as s:
        r = requests.get(s.url + "/v2/")
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert requests.get(s.url + "/v2/", headers=basic("alice", "wrong")).status_code == 401
        assert requests.get(s.url + "/v2/", headers=basic("bob", "s3cret")).status_code == 401
        assert requests.get(s.url + "/v2/", headers=basic("alice", "s3cret")).status_code == 200
        r = requests.post(s.url + "/v2/a/blobs/uploads/", params={"digest": "sha256:" + "0" * 64}, data=b"x")
        assert r.status_code == 401


def test_token_flow_scopes(tmp_path, htpasswd):
    root = str(tmp_path / "reg")
    with thread_server(root, htpasswd=htpasswd, token_realm="http://127.0.0.1/token") as s:
        realm = s.url + "/token"
        r = requests.get(s.url + "/v2/")
        assert r.status_code == 401
        ch = parse_challenge(r.headers["WWW-Authenticate"])
        assert ch is not None and ch.scheme == "bearer" and ch.params["service"] == "tugboat-registry"
        r = requests.post(s.url + "/v2/team/app/blobs/uploads/")
        ch = parse_challenge(r.headers["WWW-Authenticate"])
        assert ch is not None and ch.params["scope"] == "repository:team/app:pull,push"
        # wrong password: no token
        r = requests.get(realm, params={"service": "tugboat-registry", "scope": "repository:team/app:pull,push"},
                         headers=basic("alice", "nope"))
        assert r.status_code == 401
        # a pull-only token cannot push
        r = requests.get(realm, params={"service": "tugboat-registry", "scope": "repository:team/app:pull"},
                         headers=basic("alice", "s3cret"))
        assert r.status_code == 200
        pull_token = r.json()["token"]
        auth = {"Authorization": "Bearer " + pull_token}
        assert requests.get(s.url + "/v2/", headers=auth).status_code == 200
        assert requests.get(s.url + "/v2/team/app/tags/list", headers=auth).status_code == 404  # allowed, empty
        r = requests.post(s.url + "/v2/team/app/blobs/uploads/", headers=auth)
        assert r.status_code in (401, 403)
        assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
        # nor touch another repository
        assert requests.get(s.url + "/v2/other/tags/list", headers=auth).status_code == 401
        # a push token can
        r = requests.get(realm, params=[("service", "tugboat-registry"), ("scope", "repository:team/app:pull,push")],
                         headers=basic("alice", "s3cret"))
        push_auth = {"Authorization": "Bearer " + r.json()["token"]}
        assert requests.post(s.url + "/v2/team/app/blobs/uploads/", headers=push_auth).status_code == 202
        # a forged token (signed with another key) is refused
        forged, _ = TokenIssuer(b"k" * 32).issue("alice", parse_scopes(["repository:team/app:pull,push"]))
        r = requests.post(s.url + "/v2/team/app/blobs/uploads/", headers={"Authorization": "Bearer " + forged})
        assert r.status_code == 401
        # anonymous token requests get no access
        r = requests.get(realm, params={"service": "tugboat-registry", "scope": "repository:team/app:pull"})
        claims = TokenIssuer.from_root(root).verify(r.json()["token"]) if r.status_code == 200 else None
        assert claims is None or claims["access"] == []


def test_client_with_token_auth(tmp_path, htpasswd, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dockercfg"))
    port = free_port()
    srv = ThreadServer(str(tmp_path / "reg"), port=port, htpasswd=htpasswd,
                       token_realm=f"http://127.0.0.1:{port}/token")
    srv.start()
    try:
        images = LocalImages(str(tmp_path / "local"))
        md = make_image(images.content, "tok")
        ref = f"127.0.0.1:{port}/team/app:1"
        images.tag(ref, md)
        client = RegistryClient()
        with pytest.raises(Unauthorized):
            client.login(f"127.0.0.1:{port}", "alice", "wrong")
        with pytest.raises((Unauthorized, PermissionDenied)):
            client.push(images, ref)
        assert client.login(f"127.0.0.1:{port}", "alice", "s3cret") == "Login Succeeded"
        assert client.push(images, ref, auth=("alice", "s3cret")) == md
        # credentials from the docker config file
        from tugboat.distribution.credentials import DockerConfig

        cfg = DockerConfig.load()
        cfg.set(f"127.0.0.1:{port}", "alice", "s3cret")
        cfg.save()
        saved = json.loads((tmp_path / "dockercfg" / "config.json").read_text())
        assert f"127.0.0.1:{port}" in saved["auths"]
        dst = LocalImages(str(tmp_path / "dst"))
        assert RegistryClient().pull(dst, ref) == md
        assert dst.content.exists(md)
        # one client shared by several callers (as in the daemon): a cached token is not handed
        # to a caller with the wrong password, nor to an anonymous one
        shared = RegistryClient(credentials=lambda _r: None)
        assert shared.pull(LocalImages(str(tmp_path / "d1")), ref, auth=("alice", "s3cret")) == md
        with pytest.raises(Unauthorized):
            shared.pull(LocalImages(str(tmp_path / "d2")), ref, auth=("alice", "wrong"))
        with pytest.raises((Unauthorized, PermissionDenied)):
            shared.pull(LocalImages(str(tmp_path / "d3")), ref)
    finally:
        srv.stop()


def test_first_basic_auth_push_with_parallel_blob_checks(tmp_path, htpasswd):
    """A fresh client's parallel blob checks all meet the 401 challenge: none may be taken for a
    wrong password just because a sibling request learnt the basic scheme first."""
    with thread_server(str(tmp_path / "reg"), htpasswd=htpasswd) as s:
        src = LocalImages(str(tmp_path / "src"))
        md = make_image(src.content, "app", layers=4)
        ref = f"{s.addr}/team/app:v1"
        src.tag(ref, md)
        assert RegistryClient().push(src, ref, auth=("alice", "s3cret")) == md
        with pytest.raises(Unauthorized):
            RegistryClient().push(src, ref, auth=("alice", "wrong"))
