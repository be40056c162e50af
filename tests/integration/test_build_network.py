# ruff: noqa: F811
"""RUN networking: the build's --network (default, bridge, host, none), RUN --network, and the
private bridge a daemon-less build makes for --network=bridge (gone after the build, also after a
killed build)."""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest
from build_fixtures import BuildEnv, busybox_root, env  # noqa: F401

from tugboat.errors import InvalidArgument

PROBE = """
FROM busybox
RUN echo "eth0=[$(ip -o -4 addr show eth0 2>/dev/null | grep -o 'inet [0-9.]*')]"; \\
    echo "netns=[$(readlink /proc/self/ns/net)]"; echo "hosts=[$(grep -c "$(hostname)" /etc/hosts)]"
"""


def _links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout


def test_daemonless_default_is_the_host_network(env: BuildEnv, tmp_path) -> None:
    env.build(env.context(tmp_path, PROBE), no_cache=True)
    assert f"netns=[{os.readlink('/proc/self/ns/net')}]" in env.output()


def test_network_none(env: BuildEnv, tmp_path) -> None:
    env.build(env.context(tmp_path, PROBE), no_cache=True, network_mode="none")
    out = env.output()
    assert "eth0=[]" in out and f"netns=[{os.readlink('/proc/self/ns/net')}]" not in out


def test_private_bridge_for_a_daemonless_build(env: BuildEnv, tmp_path) -> None:
    df = PROBE + "RUN --network=none ip -o link | grep -c eth0 || echo no-eth0\nRUN --network=host echo host-ok\n"
    env.build(env.context(tmp_path, df), no_cache=True, network_mode="bridge")
    out = env.output()
    assert "eth0=[inet " in out, out
    assert f"netns=[{os.readlink('/proc/self/ns/net')}]" not in out
    assert "hosts=[1]" in out  # /etc/hosts names the step's hostname
    assert "no-eth0" in out and "host-ok" in out
    # the private bridge, its nft tables and its state are gone once the build is over
    assert f"tug-b{os.getpid()}" not in _links()
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert f"tugboat-b{os.getpid()}" not in tables
    assert not os.path.exists(os.path.join(env.root, "build", "tmp", f"{os.getpid()}-net"))


def test_network_is_not_part_of_the_cache_key(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, "FROM busybox\nRUN echo net-key > /k\n")
    a = env.build(ctx, no_cache=True, network_mode="none")
    b = env.build(ctx, network_mode="host")
    assert env.cached_steps() == [2] and a.id == b.id


def test_bad_network_modes(env: BuildEnv, tmp_path) -> None:
    with pytest.raises(InvalidArgument, match="not supported for builds"):
        env.build(env.context(tmp_path, PROBE), network_mode="container:abc")
    with pytest.raises(InvalidArgument, match="unsupported network mode 'bridge' for RUN"):
        env.build(env.context(tmp_path, "FROM busybox\nRUN --network=bridge true\n"), no_cache=True)
    with pytest.raises(Exception, match="nosuchnet"):
        env.build(env.context(tmp_path, "FROM busybox\nRUN true\n"), no_cache=True, network_mode="nosuchnet")
    assert f"tug-b{os.getpid()}" not in _links()


def test_a_killed_builds_private_network_is_removed(env: BuildEnv) -> None:
    from tugboat.network.manager import NetworkManager
    from tugboat.network.models import ContainerNetworkSpec

    p = subprocess.Popen(["true"])
    p.wait()
    dead = p.pid
    d = os.path.join(env.root, "build", "tmp", f"{dead}-net")
    nm = NetworkManager(d, instance=f"b{dead}", fsync=False)
    try:
        nm.setup_container(f"build-{dead}-0", ContainerNetworkSpec(mode="bridge"))
        assert f"tug-b{dead}" in _links()
        env.builder.cleanup()
        assert f"tug-b{dead}" not in _links()
        assert not os.path.exists(d)
    finally:
        with contextlib.suppress(Exception):  # its state directory is gone already
            nm.shutdown(remove_all=True)
