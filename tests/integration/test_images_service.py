"""ImageService end to end on a real data root: bootstrap, snapshots, tags, rmi, import,
save/load, prune, check."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile

import pytest
from images_fixtures import entry, gz, make_tar

from tugboat.errors import Conflict, DataCorruption, InvalidArgument, NotFound
from tugboat.images.bootstrap import bootstrap_busybox
from tugboat.images.service import ImageService
from tugboat.oci import image as oci
from tugboat.oci.image import LayerBlob
from tugboat.snapshots.layer import LayerError
from tugboat.snapshots.mount import umount


@pytest.fixture
def svc(tmp_path) -> ImageService:
    return ImageService(str(tmp_path / "root"))


@pytest.fixture
def bb(svc: ImageService):
    return bootstrap_busybox(svc, "busybox")


def store_state(s: ImageService) -> tuple:
    return (sorted(s.content.list()), s.snapshots.list_layers(), json.dumps(s.db.read(), sort_keys=True),
            os.listdir(s.content.ingest_dir) if os.path.exists(s.content.ingest_dir) else [],
            s.snapshots.leftovers())


def test_bootstrap_busybox_is_reproducible_and_runs(tmp_path, svc, bb) -> None:
    other = bootstrap_busybox(ImageService(str(tmp_path / "other")), "busybox")
    assert other.id == bb.id and other.manifest == bb.manifest
    assert bb.repo_tags == ["busybox:latest"]
    assert bb.config["config"]["Cmd"] == ["sh"]
    lowers = svc.snapshots.ensure_layers(bb)
    assert os.path.islink(os.path.join(lowers[0], "bin/sh"))
    spec = svc.snapshots.prepare("c1", bb)
    mnt = tmp_path / "mnt"
    spec.mount(str(mnt))
    try:
        out = subprocess.run(["chroot", str(mnt), "/bin/sh", "-c", "echo hi > /new; rm /bin/ls; echo ok"],
                             capture_output=True, text=True, check=True).stdout
        assert out == "ok\n"
    finally:
        umount(str(mnt))
    lb = svc.snapshots.diff("c1")
    with tarfile.open(svc.content.path(lb.digest)) as tf:
        names = tf.getnames()
    assert "new" in names and "bin/.wh.ls" in names
    # commit the diff as a new image; its layers are shared with busybox
    img = svc.create_image({"config": {"Cmd": ["cat", "/new"]}}, [*_layers_of(bb), lb], ["mine:1"])
    assert img.chain_ids[0] == bb.chain_ids[0] and len(img.layers) == 2
    assert len(svc.snapshots.list_layers()) == 2
    svc.snapshots.remove("c1")
    with pytest.raises(NotFound):
        svc.snapshots.upperdir("c1")


def _layers_of(img) -> list[LayerBlob]:
    return [LayerBlob(d["digest"], d["mediaType"], diff, d["size"])
            for d, diff in zip(img.manifest["layers"], img.layers, strict=True)]


def test_resolve_forms(svc, bb) -> None:
    assert svc.resolve("busybox").id == bb.id
    assert svc.resolve("docker.io/library/busybox:latest").id == bb.id
    assert svc.resolve(bb.id).id == bb.id
    assert svc.resolve(bb.short_id).id == bb.id
    assert svc.resolve(bb.id[7:]).id == bb.id
    assert svc.resolve(f"busybox@{bb.manifest_digest}").id == bb.id
    with pytest.raises(NotFound, match=r"^No such image: nothere:latest$"):
        svc.resolve("nothere")
    with pytest.raises(NotFound, match="No such image: busybox:2"):
        svc.resolve("busybox:2")


def test_tag_untag_rmi(svc, bb) -> None:
    svc.tag("busybox", "localhost:5000/x")
    svc.tag(bb.short_id, "other:v1")
    assert sorted(svc.resolve(bb.id).repo_tags) == ["busybox:latest", "localhost:5000/x:latest", "other:v1"]
    with pytest.raises(InvalidArgument, match="digest"):
        svc.tag("busybox", f"x@{bb.manifest_digest}")
    # removing one of several names only untags
    assert svc.remove("localhost:5000/x") == [{"Untagged": "localhost:5000/x:latest"}]
    # by ID with names in several repositories: refused unless forced
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        svc.remove(bb.short_id)
    # in use by a container
    assert svc.remove("other:v1", in_use=lambda i: "c0ffee" if i == bb.id else None) == [{"Untagged": "other:v1"}]
    with pytest.raises(Conflict, match="container c0ffee is using its referenced image"):
        svc.remove("busybox", in_use=lambda i: "c0ffee")
    events = svc.remove("busybox")
    assert events == [{"Untagged": "busybox:latest"}, {"Deleted": bb.id}]
    assert svc.list() == []
    assert list(svc.content.list()) == [] and svc.snapshots.list_layers() == []


def test_import_rootfs(tmp_path, svc) -> None:
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(make_tar([entry("bin", "dir"), entry("bin/app", data=b"#!/bin/sh\n", mode=0o755)]))
    img = svc.import_rootfs(str(tar), "imported:1", ["CMD [\"/bin/app\"]", "ENV A=1", "EXPOSE 80",
                                                     "WORKDIR /srv", "LABEL k=v"], "hello")
    cfg = img.config["config"]
    assert cfg["Cmd"] == ["/bin/app"] and cfg["Env"] == ["A=1"] and cfg["ExposedPorts"] == {"80/tcp": {}}
    assert cfg["WorkingDir"] == "/srv" and cfg["Labels"] == {"k": "v"}
    assert img.config["history"][0]["comment"] == "hello"
    assert img.manifest["layers"][0]["mediaType"] == oci.OCI_LAYER_GZIP
    assert os.path.exists(os.path.join(svc.snapshots.layer_fs(img.chain_ids[0]), "bin/app"))
    with pytest.raises(InvalidArgument, match="RUN is not a valid change command"):
        svc.import_rootfs(str(tar), "x", ["RUN true"])


def test_hostile_import_stores_nothing(tmp_path, svc, bb) -> None:
    before = store_state(svc)
    tar = tmp_path / "evil.tar.gz"
    tar.write_bytes(gz(make_tar([entry("ok", data=b"x"), entry("../../evil", data=b"x")])))
    with pytest.raises(LayerError, match="refusing layer"):
        svc.import_rootfs(str(tar), "evil")
    assert store_state(svc) == before
    assert not os.path.exists(tmp_path / "evil")


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci"])
def test_save_load_roundtrip(tmp_path, svc, bb, fmt: str) -> None:
    svc.tag("busybox", "localhost:5000/bb:2")
    out = str(tmp_path / ("layout" if fmt == "oci" else "bb.tar"))
    svc.save(["busybox", "localhost:5000/bb:2"], out, fmt)
    other = ImageService(str(tmp_path / "other"))
    loaded = other.load(out)
    assert sorted(loaded) == ["busybox:latest", "localhost:5000/bb:2"]
    img = other.resolve("localhost:5000/bb:2")
    assert img.id == bb.id
    if fmt != "docker-archive":
        assert img.manifest_digest == bb.manifest_digest  # stored blobs kept as they are
    assert other.check()["ok"]


def test_save_untagged_by_id_and_stream(tmp_path, svc, bb) -> None:
    buf = io.BytesIO()
    svc.save([bb.short_id], buf)
    other = ImageService(str(tmp_path / "o2"))
    assert other.load(io.BytesIO(buf.getvalue())) == [bb.id]
    assert other.resolve(bb.id).repo_tags == []


def _docker_archive(tmp_path, layer: bytes, diff_id: str, tags=("evil:1",)) -> str:
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    p = str(tmp_path / "arch.tar")
    man = json.dumps([{"Config": "config.json", "RepoTags": list(tags), "Layers": ["l/layer.tar"]}]).encode()
    with tarfile.open(p, "w") as tf:
        for name, data in [("config.json", cfg), ("l/layer.tar", layer), ("manifest.json", man)]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return p


def test_load_corrupt_layer_leaves_store_unchanged(tmp_path, svc, bb) -> None:
    before = store_state(svc)
    layer = make_tar([entry("f", data=b"hello")])
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DataCorruption, match="digest mismatch"):
        svc.load(_docker_archive(tmp_path, layer, wrong))
    assert store_state(svc) == before


def test_load_hostile_layer_refused(tmp_path, svc, bb) -> None:
    import hashlib

    before = store_state(svc)
    layer = make_tar([entry("/etc/evil", data=b"x")])
    with pytest.raises(LayerError, match="absolute path"):
        svc.load(_docker_archive(tmp_path, layer, "sha256:" + hashlib.sha256(layer).hexdigest()))
    assert store_state(svc) == before
    assert svc.gc()["blobs"] == 0
    assert svc.check()["ok"]


def test_prune_dangling_and_all(tmp_path, svc, bb) -> None:
    tar = tmp_path / "r.tar"
    tar.write_bytes(make_tar([entry("x", data=b"1")]))
    dangling = svc.import_rootfs(str(tar))
    assert dangling.repo_tags == []
    res = svc.prune()
    assert res["ImagesDeleted"] == [{"Deleted": dangling.id}] and res["SpaceReclaimed"] > 0
    assert [i.id for i in svc.list()] == [bb.id]
    assert svc.prune(all=True, in_use=lambda i: "c1")["ImagesDeleted"] is None
    svc.prune(all=True)
    assert svc.list() == [] and list(svc.content.list()) == []


def test_check_detects_corruption(svc, bb) -> None:
    assert svc.check()["ok"]
    layer = bb.manifest["layers"][0]["digest"]
    p = svc.content.path(layer)
    os.chmod(p, 0o644)
    with open(p, "r+b") as f:
        f.seek(10)
        f.write(b"XX")
    res = svc.check()
    assert not res["ok"] and any("does not match its digest" in x for x in res["problems"])


def test_many_layers_mount_and_prepare_again(tmp_path, svc) -> None:
    layers = [svc.write_layer(io.BytesIO(make_tar([entry(f"f{i}", data=str(i).encode())]))) for i in range(60)]
    img = svc.create_image({}, layers, ["many:1"])
    spec = svc.snapshots.prepare("k", img)
    assert len(spec.options(check=False)) > 4096  # beyond one page: mounted through fsconfig
    mnt = str(tmp_path / "mnt")
    spec.mount(mnt)
    try:
        assert len(os.listdir(mnt)) == 60
        with open(os.path.join(mnt, "f59")) as f:
            assert f.read() == "59"
    finally:
        umount(mnt)
    assert svc.snapshots.prepare("k", img).upperdir == spec.upperdir  # re-prepare after a restart
    with pytest.raises(Conflict):
        svc.snapshots.prepare("k", None)


def _tagger(root: str, prefix: str, n: int) -> None:
    s = ImageService(root)
    for i in range(n):
        s.tag("busybox", f"{prefix}:{i}")


def test_concurrent_processes_tagging(svc, bb) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_tagger, args=(svc.root, f"p{k}", 25)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    tags = svc.resolve("busybox").repo_tags
    assert len(tags) == 1 + 4 * 25


@pytest.mark.parametrize("tamper", ["media-type", "size", "blob-bytes", "config-diff-id"])
def test_tampered_oci_layout_refused_store_unchanged(tmp_path, svc, bb, tamper: str) -> None:
    import hashlib

    layout = tmp_path / "layout"
    svc.save(["busybox"], str(layout), "oci")
    index = json.loads((layout / "index.json").read_text())
    mdesc = index["manifests"][0]
    manifest = json.loads((layout / "blobs/sha256" / mdesc["digest"][7:]).read_text())
    layer = manifest["layers"][0]
    if tamper == "media-type":
        layer["mediaType"] = "application/x-unknown-layer"
    elif tamper == "size":
        layer["size"] += 1
    elif tamper == "blob-bytes":
        p = layout / "blobs/sha256" / layer["digest"][7:]
        data = bytearray(p.read_bytes())
        data[100] ^= 0xFF
        p.write_bytes(bytes(data))
    else:
        cfg = json.loads((layout / "blobs/sha256" / manifest["config"]["digest"][7:]).read_text())
        cfg["rootfs"]["diff_ids"] = ["sha256:" + "1" * 64]
        raw = json.dumps(cfg).encode()
        d = hashlib.sha256(raw).hexdigest()
        (layout / "blobs/sha256" / d).write_bytes(raw)
        manifest["config"] = {**manifest["config"], "digest": "sha256:" + d, "size": len(raw)}
    raw = json.dumps(manifest).encode()
    d = hashlib.sha256(raw).hexdigest()
    (layout / "blobs/sha256" / d).write_bytes(raw)
    index["manifests"][0] = {**mdesc, "digest": "sha256:" + d, "size": len(raw)}
    (layout / "index.json").write_text(json.dumps(index))
    fresh = ImageService(str(tmp_path / "fresh"))
    fresh.content.put(b"something already there")
    before = store_state(fresh)
    with pytest.raises((InvalidArgument, DataCorruption)) as ei:
        fresh.load(str(layout))
    assert {"media-type": "unsupported layer media type", "size": "size mismatch",
            "blob-bytes": "digest mismatch", "config-diff-id": "diff ID mismatch"}[tamper] in str(ei.value)
    assert store_state(fresh) == before


def test_api_shapes(svc, bb) -> None:
    s = bb.summary()
    assert s["Id"] == bb.id and s["RepoTags"] == ["busybox:latest"] and s["Size"] == bb.size > 1_000_000
    assert isinstance(s["Created"], int) and s["Created"] > 1_600_000_000
    h = svc.history("busybox")
    assert h[0]["Id"] == bb.id and h[0]["Tags"] == ["busybox:latest"] and h[0]["Size"] == bb.size
    assert h[0]["CreatedBy"].startswith("tug image bootstrap busybox")
    doc = bb.inspect()
    assert doc["RootFS"]["Layers"] == bb.layers and doc["Config"]["Env"][0].startswith("PATH=")


def test_truncated_gzip_import_stores_nothing(tmp_path, svc, bb) -> None:
    before = store_state(svc)
    blob = gz(make_tar([entry("f", data=os.urandom(300_000))]))
    p = tmp_path / "cut.tar.gz"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(LayerError, match="gzip"):
        svc.import_rootfs(str(p), "cut")
    with pytest.raises(LayerError):
        svc.import_rootfs(io.BytesIO(blob[: len(blob) // 2]), "cut")
    assert store_state(svc) == before
