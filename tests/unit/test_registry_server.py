"""The registry server over real loopback sockets: uploads, manifests, discovery, bad input, gc."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time

import pytest
import requests
from registry_fixtures import ProcessServer, thread_server

from tugboat.distribution.storage import RegistryStorage

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes, alg: str = "sha256") -> str:
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"


@pytest.fixture
def reg(tmp_path):
    with thread_server(str(tmp_path / "reg")) as s:
        yield s


def push_blob(base: str, name: str, data: bytes, alg: str = "sha256") -> str:
    d = sha(data, alg)
    r = requests.post(f"{base}/v2/{name}/blobs/uploads/", params={"digest": d}, data=data)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    return d


def push_image(base: str, name: str, tag: str, seed: str = "x", extra: dict | None = None) -> tuple[str, bytes]:
    cfg = json.dumps({"seed": seed}).encode()
    layer = seed.encode() * 100
    cd, ld = push_blob(base, name, cfg), push_blob(base, name, layer)
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cfg)},
         "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": len(layer)}]}
    m.update(extra or {})
    body = json.dumps(m).encode()
    r = requests.put(f"{base}/v2/{name}/manifests/{tag}", data=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"], body


def test_ping_and_error_shape(reg):
    r = requests.get(reg.url + "/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    r = requests.get(reg.url + "/v2/nope/manifests/latest")
    assert r.status_code == 404
    err = r.json()["errors"][0]
    assert err["code"] == "NAME_UNKNOWN" and err["message"]


def test_blob_monolithic_get_head_and_ranges(reg):
    data = os.urandom(5000)
    d = push_blob(reg.url, "a/b", data)
    h = requests.head(f"{reg.url}/v2/a/b/blobs/{d}")
    assert h.status_code == 200 and h.headers["Content-Length"] == "5000" and h.headers["Docker-Content-Digest"] == d
    assert requests.get(f"{reg.url}/v2/a/b/blobs/{d}").content == data
    r = requests.get(f"{reg.url}/v2/a/b/blobs/{d}", headers={"Range": "bytes=500-1499"})
    assert r.status_code == 206 and r.content == data[500:1500]
    assert r.headers["Content-Range"] == "bytes 500-1499/5000"
    r = requests.get(f"{reg.url}/v2/a/b/blobs/{d}", headers={"Range": "bytes=-100"})
    assert r.status_code == 206 and r.content == data[-100:]
    for bad in ("bytes=500-0", "bytes=6000-7000"):
        assert requests.get(f"{reg.url}/v2/a/b/blobs/{d}", headers={"Range": bad}).status_code == 416
    # the blob is not visible from another repository until mounted
    assert requests.head(f"{reg.url}/v2/other/blobs/{d}").status_code == 404
    r = requests.post(f"{reg.url}/v2/other/blobs/uploads/", params={"mount": d, "from": "a/b"})
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/other/blobs/{d}"
    assert requests.get(f"{reg.url}/v2/other/blobs/{d}").content == data
    # stored once
    st = RegistryStorage(reg.root)
    assert list(st.list_blobs()) == [d]


def test_chunked_upload_out_of_order_status_and_cancel(reg):
    data = os.urandom(3000)
    r = requests.post(f"{reg.url}/v2/c/blobs/uploads/")
    assert r.status_code == 202
    loc = reg.url + r.headers["Location"]
    r = requests.patch(loc, data=data[:1000], headers={"Content-Range": "0-999",
                                                       "Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.headers["Range"] == "0-999"
    loc = reg.url + r.headers["Location"]
    r = requests.patch(loc, data=data[2000:], headers={"Content-Range": "2000-2999"})
    assert r.status_code == 416
    r = requests.get(loc)
    assert r.status_code == 204 and r.headers["Range"] == "0-999"
    r = requests.patch(loc, data=data[1000:2000], headers={"Content-Range": "1000-1999"})
    assert r.status_code == 202
    r = requests.put(loc, params={"digest": sha(data)}, data=data[2000:], headers={"Content-Range": "2000-2999"})
    assert r.status_code == 201, r.text
    assert requests.get(f"{reg.url}/v2/c/blobs/{sha(data)}").content == data
    # cancel
    r = requests.post(f"{reg.url}/v2/c/blobs/uploads/")
    loc = reg.url + r.headers["Location"]
    requests.patch(loc, data=b"abc")
    assert requests.delete(loc).status_code == 204
    assert requests.get(loc).json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    assert os.listdir(os.path.join(reg.root, "uploads")) == []


def test_digest_mismatch_stores_nothing(reg):
    data = b"hello world"
    wrong = sha(b"something else")
    r = requests.post(f"{reg.url}/v2/m/blobs/uploads/", params={"digest": wrong}, data=data)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    r = requests.post(f"{reg.url}/v2/m/blobs/uploads/")
    loc = reg.url + r.headers["Location"]
    r = requests.put(loc, params={"digest": wrong}, data=data)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    st = RegistryStorage(reg.root)
    assert list(st.list_blobs()) == []
    assert os.listdir(os.path.join(reg.root, "uploads")) == []
    assert requests.head(f"{reg.url}/v2/m/blobs/{sha(data)}").status_code == 404
    r = requests.post(f"{reg.url}/v2/m/blobs/uploads/", params={"digest": "sha256:xyz"}, data=data)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    r = requests.post(f"{reg.url}/v2/m/blobs/uploads/", params={"digest": "md5:" + "0" * 32}, data=data)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_sha512_blob(reg):
    data = os.urandom(100)
    d = push_blob(reg.url, "s", data, "sha512")
    assert d.startswith("sha512:")
    assert requests.get(f"{reg.url}/v2/s/blobs/{d}").content == data


def test_manifest_missing_blobs_oversized_invalid_names(reg):
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": sha(b"nope"), "size": 4}, "layers": []}).encode()
    r = requests.put(f"{reg.url}/v2/x/manifests/t", data=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    big = b'{"schemaVersion":2,"pad":"' + b"x" * (5 * 1024 * 1024) + b'"}'
    r = requests.put(f"{reg.url}/v2/x/manifests/t", data=big, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413
    r = requests.put(f"{reg.url}/v2/x/manifests/t", data=b"{not json", headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    for name in ("UPPER/case", "a//b", "-lead", "trail-", "a/../b"):
        r = requests.get(f"{reg.url}/v2/{name}/tags/list")
        assert r.status_code in (400, 404)
        if r.status_code == 400:
            assert r.json()["errors"][0]["code"] == "NAME_INVALID"
    r = requests.post(f"{reg.url}/v2/Bad_Name/blobs/uploads/")
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "NAME_INVALID"
    # pushing by a digest that does not match the body
    _d, body = push_image(reg.url, "x", "ok")
    r = requests.put(f"{reg.url}/v2/x/manifests/{sha(b'other')}", data=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_manifests_tags_pagination_catalog_delete(reg):
    digests = {}
    for t in ("c", "a", "b", "d"):
        digests[t], _body = push_image(reg.url, "p/q", t, seed=t)
    r = requests.get(f"{reg.url}/v2/p/q/manifests/a", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_MANIFEST
    assert sha(r.content) == digests["a"] == r.headers["Docker-Content-Digest"]
    assert requests.head(f"{reg.url}/v2/p/q/manifests/{digests['a']}").status_code == 200
    r = requests.get(f"{reg.url}/v2/p/q/tags/list", params={"n": 2})
    assert r.json() == {"name": "p/q", "tags": ["a", "b"]}
    assert r.headers["Link"] == '</v2/p/q/tags/list?n=2&last=b>; rel="next"'
    r = requests.get(f"{reg.url}/v2/p/q/tags/list", params={"n": 2, "last": "b"})
    assert r.json()["tags"] == ["c", "d"] and "Link" not in r.headers
    push_image(reg.url, "other", "1")
    assert requests.get(f"{reg.url}/v2/_catalog").json() == {"repositories": ["other", "p/q"]}
    # delete by tag, then by digest
    assert requests.delete(f"{reg.url}/v2/p/q/manifests/c").status_code == 202
    assert requests.get(f"{reg.url}/v2/p/q/manifests/c").status_code == 404
    assert requests.get(f"{reg.url}/v2/p/q/manifests/{digests['c']}").status_code == 200
    assert requests.delete(f"{reg.url}/v2/p/q/manifests/{digests['d']}").status_code == 202
    assert requests.get(f"{reg.url}/v2/p/q/tags/list").json()["tags"] == ["a", "b"]


def test_index_and_referrers(reg):
    d1, b1 = push_image(reg.url, "r", "v1", seed="one")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": d1, "size": len(b1), "platform": {"os": "linux",
                                                                                "architecture": "amd64"}}]}).encode()
    r = requests.put(f"{reg.url}/v2/r/manifests/multi", data=index, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 201
    missing = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha(b"z"), "size": 1}]}).encode()
    r = requests.put(f"{reg.url}/v2/r/manifests/bad", data=missing, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    subject = {"mediaType": OCI_MANIFEST, "digest": d1, "size": len(b1)}
    sbom, _ = push_image(reg.url, "r", "sbom", seed="sbom",
                         extra={"artifactType": "application/vnd.example.sbom", "subject": subject,
                                "annotations": {"k": "v"}})
    sig, _ = push_image(reg.url, "r", "sig", seed="sig",
                        extra={"artifactType": "application/vnd.example.sig", "subject": subject})
    r = requests.get(f"{reg.url}/v2/r/referrers/{d1}")
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_INDEX
    got = {m["digest"]: m for m in r.json()["manifests"]}
    assert set(got) == {sbom, sig}
    assert got[sbom]["artifactType"] == "application/vnd.example.sbom" and got[sbom]["annotations"] == {"k": "v"}
    r = requests.get(f"{reg.url}/v2/r/referrers/{d1}", params={"artifactType": "application/vnd.example.sig"})
    assert [m["digest"] for m in r.json()["manifests"]] == [sig]
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    r = requests.get(f"{reg.url}/v2/r/referrers/{sha(b'nothing')}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    assert requests.get(f"{reg.url}/v2/r/referrers/sha256:bad").status_code == 400
    # deleting a referrer removes it from the list
    requests.delete(f"{reg.url}/v2/r/manifests/{sig}")
    assert [m["digest"] for m in requests.get(f"{reg.url}/v2/r/referrers/{d1}").json()["manifests"]] == [sbom]


def test_oci_subject_header(reg):
    d1, b1 = push_image(reg.url, "s2", "v1", seed="base")
    cfg = b"{}"
    cd = push_blob(reg.url, "s2", cfg)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "x/y",
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd, "size": 2},
                       "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": d1, "size": len(b1)}}).encode()
    r = requests.put(f"{reg.url}/v2/s2/manifests/{sha(body)}", data=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and r.headers["OCI-Subject"] == d1


def _raw_request(port: int, head: bytes, body: bytes) -> None:
    """Send a request whose body is cut short, then drop the connection."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head + body)
    time.sleep(0.2)
    s.close()


def test_dropped_connection_commits_nothing_and_upload_restarts(reg):
    data = os.urandom(2_000_000)
    d = sha(data)
    r = requests.post(f"{reg.url}/v2/drop/blobs/uploads/")
    loc = r.headers["Location"]
    r = requests.patch(reg.url + loc, data=data[:500_000], headers={"Content-Range": "0-499999"})
    assert r.status_code == 202
    # a PATCH that dies halfway: the server must roll back to 500000
    head = (f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Range: 500000-1999999\r\nContent-Length: 1500000\r\n\r\n").encode()
    _raw_request(reg.port, head, data[500_000:900_000])
    # a monolithic PUT that dies halfway commits nothing
    head = (f"POST /v2/drop/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    _raw_request(reg.port, head, data[:700_000])
    deadline = time.time() + 5
    while time.time() < deadline:
        r = requests.get(reg.url + loc)
        if r.headers.get("Range") == "0-499999":
            break
        time.sleep(0.05)
    assert r.status_code == 204 and r.headers["Range"] == "0-499999"
    assert requests.head(f"{reg.url}/v2/drop/blobs/{d}").status_code == 404
    assert list(RegistryStorage(reg.root).list_blobs()) == []
    # the upload continues where it stood
    r = requests.patch(reg.url + loc, data=data[500_000:], headers={"Content-Range": f"500000-{len(data) - 1}"})
    assert r.status_code == 202, r.text
    r = requests.put(reg.url + r.headers["Location"], params={"digest": d})
    assert r.status_code == 201, r.text
    assert requests.get(f"{reg.url}/v2/drop/blobs/{d}").content == data


def test_upload_survives_restart_and_gc(tmp_path, capsys):
    root = str(tmp_path / "reg")
    srv = ProcessServer(root).start()
    try:
        data = os.urandom(10_000)
        r = requests.post(f"{srv.url}/v2/rs/blobs/uploads/")
        loc = r.headers["Location"]
        requests.patch(srv.url + loc, data=data[:4000], headers={"Content-Range": "0-3999"})
        srv.stop()
        srv.start()
        r = requests.get(srv.url + loc)
        assert r.status_code == 204 and r.headers["Range"] == "0-3999"
        r = requests.put(srv.url + loc, params={"digest": sha(data)}, data=data[4000:],
                         headers={"Content-Range": "4000-9999"})
        assert r.status_code == 201, r.text
        kept, _ = push_image(srv.url, "rs", "keep", seed="keep")
        gone, _ = push_image(srv.url, "rs", "gone", seed="gone")
        requests.delete(f"{srv.url}/v2/rs/manifests/{gone}")
    finally:
        srv.stop()
    from tugboat.cli.main import main

    assert main(["registry", "gc", "--root", root, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would remove {gone}" in out and "would remove 4 blobs" in out
    st = RegistryStorage(root)
    assert st.blob_exists(gone)
    res = st.gc()
    # the unreferenced raw blob, the deleted manifest and its two blobs go; the kept image stays
    assert sha(data) in res["removed"] and gone in res["removed"]
    assert kept not in res["removed"]
    assert st.blob_exists(kept) and not st.blob_exists(gone)
    assert len(list(st.list_blobs())) == 3
