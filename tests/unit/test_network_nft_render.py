"""The nftables ruleset text (network/nft.py render), checked by nft itself when it is installed."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tugboat.network import nft


def _ruleset() -> nft.Ruleset:
    return nft.Ruleset(bridges=[nft.BridgeRules("tug0", "172.17.0.0/16"), nft.BridgeRules("tug-br1", "172.18.0.0/16")],
                       ports=[nft.PortRule("tcp", "127.0.0.1", 8080, "172.17.0.2", 80)])


def test_container_traffic_to_host_loopback_is_dropped_before_conntrack() -> None:
    text = nft.render(_ruleset(), "t1")
    chain = text.split("chain prerouting-raw {", 1)[1].split("\n  }", 1)[0]
    assert "type filter hook prerouting priority raw; policy accept;" in chain
    assert 'iifname { "tug0", "tug-br1" } ip daddr 127.0.0.0/8 drop' in chain
    # it lives in our own filter table, which every render replaces whole
    assert text.index("table inet tugboat-t1 {") < text.index("chain prerouting-raw")
    assert "prerouting-raw" not in nft.render(nft.Ruleset(), "t1")  # no bridges: no chain


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="nft -c needs root and nftables")
def test_ruleset_is_valid_nft() -> None:
    r = subprocess.run(["nft", "-c", "-f", "-"], input=nft.render(_ruleset(), "chk").encode(), capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
