"""Pod network attach/detach (``cluster/node/podnet.py``: rtnetlink + ioctls, no forks) in a
test-made network namespace acting as the node; the pods are processes in netns of their own."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from conftest import require_binary
from tugboat.cluster.node.podnet import PodNetwork, delete_link
from tugboat.errors import TugError
from tugboat.network import kernel


def _sh(*args: str) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, f"{args}: {r.stderr}"
    return r.stdout


def test_attach_detach_in_a_node_netns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    require_binary("busybox")
    node = f"tn-pn-{uuid.uuid4().hex[:6]}"
    _sh("ip", "netns", "add", node)
    pods: list[subprocess.Popen] = []
    try:
        def body() -> None:
            # everything below runs in the node netns (this thread's, inherited by its children)
            pn = PodNetwork(str(tmp_path), "10.252.9.0/24", "10.252.0.0/16", bridge="tpn0")
            pn.setup()
            for _ in range(2):
                pods.append(subprocess.Popen(["unshare", "--net", "sleep", "60"]))
            time.sleep(0.2)
            ips = [pn.attach(f"uid-{i}", p.pid) for i, p in enumerate(pods)]
            assert ips == ["10.252.9.2", "10.252.9.3"]
            a, b = (f"/proc/{p.pid}/ns/net" for p in pods)
            addr = _sh("nsenter", f"--net={a}", "ip", "-o", "-4", "addr", "show", "dev", "eth0")
            assert "10.252.9.2/24" in addr
            assert _sh("nsenter", f"--net={a}", "ip", "route", "show", "default").startswith(
                "default via 10.252.9.1 dev eth0")
            link = _sh("ip", "-d", "-j", "link", "show", pn.host_ifname("uid-0"))
            info = json.loads(link)[0]
            assert info["master"] == "tpn0" and "UP" in info["flags"]
            assert info["linkinfo"]["info_slave_data"]["hairpin"] is True
            # pod to pod over the bridge, pod to its gateway
            _sh("nsenter", f"--net={b}", "busybox", "ping", "-c1", "-W2", "10.252.9.2")
            _sh("nsenter", f"--net={a}", "busybox", "ping", "-c1", "-W2", "10.252.9.1")
            # the IPAM survives a restart; detach removes the link and frees the address
            assert json.loads((tmp_path / "ipam.json").read_text()) == {"10.252.9.2": "uid-0",
                                                                      "10.252.9.3": "uid-1"}
            pn.detach("uid-0")
            assert subprocess.run(["ip", "link", "show", pn.host_ifname("uid-0")],
                                  capture_output=True).returncode != 0
            assert PodNetwork(str(tmp_path), "10.252.9.0/24", "10.252.0.0/16").ip_of("uid-0") is None
            assert delete_link(pn.host_ifname("uid-0")) is False
            # a pod whose process is gone: an error naming the cause, nothing left allocated
            with pytest.raises(TugError, match="pod network setup failed"):
                pn.attach("uid-gone", 2 ** 22 + 12345)
            assert pn.ip_of("uid-gone") is None
            pn.teardown()

        kernel.in_netns(f"/var/run/netns/{node}", body)
    finally:
        for p in pods:
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", node], capture_output=True)
