"""A container's mount points (/etc/hosts, /etc/resolv.conf, bind mount targets) come from the
snapshotter's shared init layer: its upper dir stays empty (no inode, no copy-up per container),
`docker diff` shows only what the process changed, and only the FIFOs a start opens are made."""

from __future__ import annotations

import json
import os
import time

import engine_support
from engine_support import Daemon

daemon = engine_support.daemon


def _meta(d: Daemon, cid: str) -> dict:
    with open(os.path.join(d.root, "snapshots", "active", cid, "meta.json")) as f:
        return json.load(f)


def test_mount_points_come_from_a_shared_init_layer(daemon: Daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = daemon.client()
    bind = tmp_path / "token"
    bind.mkdir()
    (bind / "t").write_text("secret\n")
    body = {"Image": "busybox", "Cmd": ["sh", "-c", "cat /var/run/secrets/x/t /etc/hosts; echo made > /made; sleep 60"],
            "HostConfig": {"Binds": [f"{bind}:/var/run/secrets/x:ro"]}}
    ids = [c.post("/containers/create", body)["Id"] for _ in range(2)]
    try:
        for cid in ids:
            c.post(f"/containers/{cid}/start")
        metas = [_meta(daemon, cid) for cid in ids]
        init = metas[0]["lowerdirs"][0]
        assert "/snapshots/init/" in init and metas[1]["lowerdirs"] == metas[0]["lowerdirs"]
        assert os.path.isdir(os.path.join(init, "var", "run", "secrets", "x"))
        assert os.path.isfile(os.path.join(init, "etc", "hosts"))
        cid = ids[0]
        end = time.time() + 10
        while time.time() < end:
            logs = daemon.tug("logs", cid).stdout
            if b"localhost" in logs:
                break
            time.sleep(0.05)
        assert logs.startswith(b"secret\n") and b"localhost" in logs  # the real files are mounted
        upper = os.path.join(daemon.root, "snapshots", "active", cid, "upper")
        assert sorted(os.listdir(upper)) == ["made"]
        assert c.get(f"/containers/{cid}/changes") == [{"Kind": 1, "Path": "/made"}]
        # no stdin FIFO without OpenStdin
        assert sorted(n for n in os.listdir(os.path.join(daemon.root, "containers", cid))
                      if n in ("stdin", "stdout", "stderr")) == ["stderr", "stdout"]
    finally:
        for cid in ids:
            c.delete(f"/containers/{cid}", query={"force": "1"})


def test_attach_stdin_still_works(daemon: Daemon) -> None:
    r = daemon.tug("run", "--rm", "-i", "busybox", "cat", input=b"through stdin\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"through stdin\n"
