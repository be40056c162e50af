"""A registry with no route to it fails within seconds, naming the registry.

The "registry" is an address inside a network namespace this test creates (veth pair, packets to
it dropped by an nft rule inside the namespace): connections hang like a black-holed public
registry. Nothing leaves the machine.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time

import pytest

from conftest import require_binary
from tugboat.distribution.client import RegistryClient
from tugboat.errors import Unavailable


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


@pytest.fixture
def blackhole():
    require_binary("ip")
    require_binary("nft")
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"tugreg-{tag}", f"trh{tag}", f"trn{tag}"
    octet = 16 + int(tag[:2], 16) % 200
    host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, timeout=30, text=True,
                       input="table inet tugblackhole {\n chain input {\n  type filter hook input priority 0; policy drop;\n }\n}\n")
        yield ns_ip
    finally:
        sh("ip", "link", "del", host_if, check=False)
        sh("ip", "netns", "del", ns, check=False)


def test_pull_from_blackholed_registry_fails_fast(tmp_path, blackhole):
    from tugboat.content.store import ContentStore

    store = ContentStore(os.path.join(tmp_path, "content"))
    client = RegistryClient(connect_timeout=2.0, insecure=[f"{blackhole}:5000"])
    t = time.monotonic()
    with pytest.raises(Unavailable) as ei:
        client.pull(store, f"{blackhole}:5000/library/busybox:latest")
    elapsed = time.monotonic() - t
    assert elapsed < 6, elapsed
    assert f"{blackhole}:5000" in str(ei.value) and "unreachable" in str(ei.value)


def test_docker_hub_name_through_dead_mirror_and_endpoint(tmp_path, blackhole):
    """docker.io names try the mirror first, then Docker Hub (here: the black hole too)."""
    from tugboat.content.store import ContentStore

    store = ContentStore(os.path.join(tmp_path, "content"))
    client = RegistryClient(connect_timeout=1.5, mirrors=[f"http://{blackhole}:5000"],
                            endpoints={"docker.io": f"https://{blackhole}"})
    t = time.monotonic()
    with pytest.raises(Unavailable) as ei:
        client.pull(store, "busybox")
    elapsed = time.monotonic() - t
    assert elapsed < 6, elapsed
    assert "docker.io" in str(ei.value)
