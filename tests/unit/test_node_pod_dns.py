"""The pod resolv.conf the node agent writes, by dnsPolicy and dnsConfig (as the kubelet)."""

from __future__ import annotations

from tugboat.cluster.node.worker import _host_resolv, pod_dns, render_resolv_conf


def test_cluster_first_with_dns_config() -> None:
    spec = {"dnsConfig": {"nameservers": ["10.0.0.53"], "searches": ["corp.example"],
                          "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}
    servers, search, opts = pod_dns(spec, "team", "10.96.0.10", "cluster.local")
    assert servers == ["10.96.0.10", "10.0.0.53"]
    assert search == ["team.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]
    assert opts == ["ndots:2", "edns0"]  # dnsConfig overrides the default ndots:5
    assert render_resolv_conf(servers, search, opts) == (
        "search team.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
        "nameserver 10.96.0.10\nnameserver 10.0.0.53\noptions ndots:2 edns0\n")


def test_none_policy_uses_only_dns_config() -> None:
    spec = {"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.example"],
                                               "options": [{"name": "timeout", "value": "1"}]}}
    assert render_resolv_conf(*pod_dns(spec, "ns", "10.96.0.10", "cluster.local")) == (
        "search a.example\nnameserver 1.2.3.4\noptions timeout:1\n")


def test_default_and_host_network_use_the_node_resolv_conf() -> None:
    host = _host_resolv()
    assert pod_dns({"dnsPolicy": "Default"}, "ns", "10.96.0.10", "cluster.local") == (host[0][:3], host[1], host[2])
    # ClusterFirst on the host network falls back to Default; ClusterFirstWithHostNet does not
    assert pod_dns({"hostNetwork": True}, "ns", "10.96.0.10", "cluster.local")[0] == host[0][:3]
    assert pod_dns({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}, "ns", "10.96.0.10",
                   "cluster.local")[0] == ["10.96.0.10"]
    # no cluster DNS configured: ClusterFirst behaves as Default
    assert pod_dns({}, "ns", None, "cluster.local")[0] == host[0][:3]
