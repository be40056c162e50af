"""fsGroup: the node agent gives a pod's volumes the group, as the kubelet's SetVolumeOwnership."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tugboat.cluster.node import volumes


def _pod(fs_group: int | None) -> dict:
    sc = {"fsGroup": fs_group} if fs_group is not None else {}
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u-1"},
            "spec": {"securityContext": sc, "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "host", "hostPath": {"path": "HOST"}}]}}


def test_fs_group_owns_managed_volumes_only(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    pod = _pod(4321)
    pod["spec"]["volumes"][2]["hostPath"]["path"] = str(host)
    cm = {"metadata": {"name": "cfg"}, "data": {"app.conf": "x=1\n"}}
    vols = volumes.prepare_volumes(str(tmp_path / "root"), pod, configmaps={"cfg": cm}, secrets={}, pv_paths={})
    scratch = os.stat(vols["scratch"])
    assert scratch.st_gid == 4321
    assert scratch.st_mode & stat.S_ISGID and stat.S_IMODE(scratch.st_mode) & 0o070 == 0o070
    files = [os.path.join(d, f) for d, _, fs in os.walk(vols["cfg"]) for f in fs]
    assert files and all(os.lstat(f).st_gid == 4321 for f in files)
    conf = os.stat(os.path.join(vols["cfg"], "app.conf"))
    assert stat.S_IMODE(conf.st_mode) & 0o060 == 0o040  # read-only volume: group read, no write
    assert os.stat(host).st_gid != 4321  # hostPath is never re-grouped
    # a file the container made in the emptyDir keeps the group on the next sync
    Path(vols["scratch"], "new").write_text("data")
    os.chown(Path(vols["scratch"], "new"), 0, 0)
    volumes.prepare_volumes(str(tmp_path / "root"), pod, configmaps={"cfg": cm}, secrets={}, pv_paths={})
    assert os.stat(Path(vols["scratch"], "new")).st_gid == 4321


def test_no_fs_group_leaves_ownership(tmp_path: Path) -> None:
    pod = _pod(None)
    pod["spec"]["volumes"].pop()
    cm = {"metadata": {"name": "cfg"}, "data": {"a": "1"}}
    vols = volumes.prepare_volumes(str(tmp_path / "root"), pod, configmaps={"cfg": cm}, secrets={}, pv_paths={})
    assert os.stat(vols["scratch"]).st_gid == os.getgid()
    assert not os.stat(vols["scratch"]).st_mode & stat.S_ISGID


def test_on_root_mismatch_skips_an_owned_volume(tmp_path: Path) -> None:
    pod = _pod(4321)
    pod["spec"]["volumes"] = pod["spec"]["volumes"][:1]
    pod["spec"]["securityContext"]["fsGroupChangePolicy"] = "OnRootMismatch"
    vols = volumes.prepare_volumes(str(tmp_path / "root"), pod, configmaps={}, secrets={}, pv_paths={})
    assert os.stat(vols["scratch"]).st_gid == 4321  # the first time: the root mismatched
    Path(vols["scratch"], "inner").write_text("x")
    os.chown(Path(vols["scratch"], "inner"), 0, 0)
    volumes.prepare_volumes(str(tmp_path / "root"), pod, configmaps={}, secrets={}, pv_paths={})
    assert os.stat(Path(vols["scratch"], "inner")).st_gid == 0  # root matched: no walk
