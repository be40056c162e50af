"""The API server over HTTPS: auth, bad input, concurrency, dry-run, tables, discovery, watch
edge cases, and no acknowledged write lost to SIGKILL (real subprocess, real SQLite)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from apiserver_support import Http

from tugboat.cluster.apiserver.testing import ApiServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    with ApiServerProcess(tmp_path_factory.mktemp("apiserver")) as api:
        yield api


@pytest.fixture
def http(server: ApiServerProcess) -> Http:
    return Http(server)


def deployment(name: str, **spec: object) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}, **spec}}


def test_authentication(server: ApiServerProcess) -> None:
    anon = requests.get(server.url + "/api/v1/namespaces", verify=server.ca, timeout=10)
    assert anon.status_code == 401
    assert anon.json()["reason"] == "Unauthorized" and anon.json()["kind"] == "Status"
    bad = requests.get(server.url + "/api/v1/namespaces", verify=server.ca, timeout=10,
                       headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    ok = requests.get(server.url + "/api/v1/namespaces", verify=server.ca, timeout=10,
                      headers={"Authorization": f"Bearer {server.token}"})
    assert ok.status_code == 200 and ok.json()["kind"] == "NamespaceList"
    assert requests.get(server.url + "/readyz", verify=server.ca, timeout=10).text == "ok"


def test_malformed_bodies(http: Http) -> None:
    r = http("POST", "/api/v1/namespaces/default/configmaps", data=b'{"metadata": {"name": ',
             headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["reason"] == "BadRequest"
    r = http("POST", "/api/v1/namespaces/default/configmaps", data=b"metadata: [unclosed",
             headers={"Content-Type": "application/yaml"})
    assert r.status_code == 400
    r = http("POST", "/api/v1/namespaces/default/configmaps", data=b"metadata:\n  name: from-yaml\n",
             headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201 and r.json()["metadata"]["name"] == "from-yaml"
    big = json.dumps({"metadata": {"name": "big"}, "data": {"x": "a" * (3 * 1024 * 1024 + 10)}})
    r = http("POST", "/api/v1/namespaces/default/configmaps", data=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == 413
    r = http("POST", "/apis/apps/v1/namespaces/default/deployments", data=b"\x0ak8s\x00",
             headers={"Content-Type": "application/vnd.kubernetes.protobuf"})
    assert r.status_code == 400 and "magic" in r.json()["message"]
    r = http("POST", "/apis/apps/v1/namespaces/default/deployments", data=b"k8s\x00\x0a\x03\x0a\x01",
             headers={"Content-Type": "application/vnd.kubernetes.protobuf"})
    assert r.status_code == 400 and "could not be decoded" in r.json()["message"]


def test_invalid_object_causes(http: Http) -> None:
    d = deployment("bad", replicas=-1)
    d["spec"]["template"]["spec"]["containers"] = [{"name": "c"}]
    r = http("POST", "/apis/apps/v1/namespaces/default/deployments", json=d)
    assert r.status_code == 422
    st = r.json()
    assert st["reason"] == "Invalid" and st["details"]["kind"] == "Deployment" and st["details"]["name"] == "bad"
    fields = {c["field"]: c for c in st["details"]["causes"]}
    assert fields["spec.replicas"]["message"] == "Invalid value: -1: must be greater than or equal to 0"
    assert fields["spec.template.spec.containers[0].image"]["reason"] == "FieldValueRequired"
    r = http("POST", "/api/v1/namespaces/default/configmaps", json={"metadata": {}})
    assert r.status_code == 422 and "name or generateName is required" in r.text


def test_field_validation_modes(http: Http) -> None:
    d = deployment("fv")
    d["spec"]["replicaz"] = 2
    d["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    r = http("POST", "/apis/apps/v1/namespaces/default/deployments?fieldValidation=Strict", json=d)
    assert r.status_code == 400
    assert 'unknown field "spec.replicaz"' in r.json()["message"]
    assert 'unknown field "spec.template.spec.containers[0].imagee"' in r.json()["message"]
    dup = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup","name":"dup2"}}'
    r = http("POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", data=dup,
             headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and 'duplicate field "name"' in r.json()["message"]
    r = http("POST", "/apis/apps/v1/namespaces/default/deployments?fieldValidation=Warn", json=d)
    assert r.status_code == 201 and 'unknown field \\"spec.replicaz\\"' in r.headers["Warning"]
    assert "replicaz" not in r.text  # unknown fields are dropped, as Go decoding does
    d["metadata"]["name"] = "fv2"
    r = http("POST", "/apis/apps/v1/namespaces/default/deployments?fieldValidation=Ignore", json=d)
    assert r.status_code == 201 and "Warning" not in r.headers


def test_conflicts_dry_run_generation(http: Http) -> None:
    base = "/apis/apps/v1/namespaces/default/deployments"
    r = http("POST", base + "?dryRun=All", json=deployment("dry"))
    assert r.status_code == 201 and r.json()["metadata"]["uid"]
    assert http("GET", base + "/dry").status_code == 404
    created = http("POST", base, json=deployment("cc")).json()
    assert http("POST", base, json=deployment("cc")).json()["reason"] == "AlreadyExists"
    obj = dict(created)
    obj["spec"]["replicas"] = 3
    r1 = http("PUT", base + "/cc", json=obj)
    assert r1.status_code == 200 and r1.json()["metadata"]["generation"] == 2
    r2 = http("PUT", base + "/cc", json=obj)  # same (now stale) resourceVersion
    assert r2.status_code == 409 and r2.json()["reason"] == "Conflict"
    # label changes do not bump generation; resourceVersion does change
    r3 = http("PATCH", base + "/cc", data=json.dumps({"metadata": {"labels": {"x": "y"}}}),
              headers={"Content-Type": "application/merge-patch+json"})
    assert r3.json()["metadata"]["generation"] == 2
    assert int(r3.json()["metadata"]["resourceVersion"]) > int(r1.json()["metadata"]["resourceVersion"])
    # a no-op patch writes nothing
    r4 = http("PATCH", base + "/cc", data=json.dumps({"metadata": {"labels": {"x": "y"}}}),
              headers={"Content-Type": "application/merge-patch+json"})
    assert r4.json()["metadata"]["resourceVersion"] == r3.json()["metadata"]["resourceVersion"]
    # strategic merge with $setElementOrder and $patch: delete
    smp = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "side"}, {"name": "c"}],
        "containers": [{"name": "side", "image": "busybox"}]}}}}
    r5 = http("PATCH", base + "/cc", data=json.dumps(smp), headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert [c["name"] for c in r5.json()["spec"]["template"]["spec"]["containers"]] == ["side", "c"]
    smp = {"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}
    r6 = http("PATCH", base + "/cc", data=json.dumps(smp), headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert [c["name"] for c in r6.json()["spec"]["template"]["spec"]["containers"]] == ["c"]
    d = http("DELETE", base + "/cc", json={"propagationPolicy": "Background"})
    assert d.json()["status"] == "Success" and d.json()["details"]["group"] == "apps"


def test_tables_and_discovery(http: Http) -> None:
    http("POST", "/api/v1/namespaces/default/pods", json={"metadata": {"name": "tp"}, "spec": {
        "containers": [{"name": "c", "image": "nginx"}]}})
    acc = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    t = http("GET", "/api/v1/namespaces/default/pods?limit=500", headers={"Accept": acc}).json()
    assert t["kind"] == "Table"
    assert [c["name"] for c in t["columnDefinitions"]][:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    row = next(r for r in t["rows"] if r["cells"][0] == "tp")
    assert row["cells"][1:3] == ["0/1", "Pending"] and row["object"]["kind"] == "PartialObjectMetadata"
    agg = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    r = http("GET", "/apis", headers={"Accept": agg})
    assert r.headers["Content-Type"] == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    groups = {i["metadata"]["name"]: i for i in r.json()["items"]}
    assert [v["version"] for v in groups["autoscaling"]["versions"]] == ["v2", "v1"]
    dep = next(x for x in groups["apps"]["versions"][0]["resources"] if x["resource"] == "deployments")
    assert dep["shortNames"] == ["deploy"] and {s["subresource"] for s in dep["subresources"]} == {"status", "scale"}
    legacy = http("GET", "/api/v1").json()
    assert any(x["name"] == "pods/binding" for x in legacy["resources"])
    http("DELETE", "/api/v1/namespaces/default/pods/tp")


def test_watch_timeout_bookmarks_and_gone(http: Http, server: ApiServerProcess) -> None:
    t0 = time.monotonic()
    r = http("GET", "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1&resourceVersion=0")
    assert r.status_code == 200 and time.monotonic() - t0 < 5
    lines = [json.loads(x) for x in r.text.splitlines() if x]
    assert all(ev["type"] == "ADDED" for ev in lines)
    r = http("GET", "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1&sendInitialEvents=true"
                    "&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan")
    evs = [json.loads(x) for x in r.text.splitlines() if x]
    assert evs[-1]["type"] == "BOOKMARK"
    assert evs[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_metrics_api(http: Http) -> None:
    r = http("PUT", "/apis/metrics.k8s.io/v1beta1/nodes/n1", json={"usage": {"cpu": "250m", "memory": "1Gi"}})
    assert r.status_code == 200
    http("PUT", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/p1",
         json={"containers": [{"name": "c", "usage": {"cpu": "5m", "memory": "10Mi"}}]})
    nodes = http("GET", "/apis/metrics.k8s.io/v1beta1/nodes").json()
    assert nodes["kind"] == "NodeMetricsList" and nodes["items"][0]["usage"]["cpu"] == "250m"
    pods = http("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods").json()
    assert pods["items"][0]["containers"][0]["usage"]["memory"] == "10Mi"


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_sigkill_loses_no_acknowledged_write(tmp_path: Path, backend: str) -> None:
    etcd = None
    if backend == "etcd":
        import shutil

        from tugboat.cluster.apiserver.testing import EtcdProcess

        if shutil.which("etcd") is None:
            from conftest import require_binary

            require_binary("etcd")
        etcd = EtcdProcess(tmp_path / "etcd").start()
    try:
        _sigkill_case(tmp_path, etcd.datastore if etcd else None)
    finally:
        if etcd is not None:
            etcd.stop()


def _sigkill_case(tmp_path: Path, datastore: str | None) -> None:
    """16 writers create, update and delete ConfigMaps until the server is SIGKILLed; after a
    restart every acknowledged write is there: each object is in the state of its last acknowledged
    write, or in that of the one write its writer had in flight when the server died."""
    api = ApiServerProcess(tmp_path / "crash", datastore).start()
    path = "/api/v1/namespaces/default/configmaps"
    expected: dict[str, str | None] = {}  # name -> data.v of the last acknowledged write (None: deleted)
    inflight: dict[int, tuple[str, str | None]] = {}  # writer -> (name, state if its write happened)
    acked = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def writer(i: int) -> None:
        h = Http(api)
        n = 0
        while not stop.is_set():
            name = f"w{i}-{n}"
            ops: list[tuple[str, str, dict | None, str | None]] = [
                ("POST", path, {"metadata": {"name": name}, "data": {"v": "1"}}, "1"),
                ("PUT", f"{path}/{name}", {"metadata": {"name": name}, "data": {"v": "2"}}, "2"),
            ]
            if n % 3 == 0:
                ops.append(("DELETE", f"{path}/{name}", None, None))
            for method, url, body, state in ops:
                inflight[i] = (name, state)
                try:
                    r = h(method, url, json=body) if body is not None else h(method, url)
                except requests.RequestException:
                    return
                if r.status_code not in (200, 201):
                    return  # the server is going down (or something is wrong: judged below)
                with lock:
                    expected[name] = state
                    acked[0] += 1
            n += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
    finally:
        api.kill()
        stop.set()
        for t in threads:
            t.join(10)
    assert acked[0] > 50
    assert any(v is None for v in expected.values()) and any(v == "2" for v in expected.values())
    api2 = ApiServerProcess(tmp_path / "crash", datastore).start()
    try:
        items = Http(api2)("GET", path).json()["items"]
        have: dict[str, str | None] = {i["metadata"]["name"]: i["data"]["v"] for i in items}
        in_flight = dict(inflight.values())
        wrong = [(name, want, have.get(name)) for name, want in expected.items()
                 if have.get(name) != want and not (name in in_flight and have.get(name) == in_flight[name])]
        assert not wrong, f"{len(wrong)} acknowledged writes lost (name, acknowledged, found): {wrong[:5]}"
        # history from before the restart is not in the new watch cache: 410 Expired
        r = Http(api2)("GET", f"{path}?watch=true&timeoutSeconds=2&resourceVersion=2")
        ev = json.loads(r.text.splitlines()[0])
        assert ev["type"] == "ERROR" and ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired"
    finally:
        api2.stop()


def test_namespace_lifecycle_and_watch_selection(http: Http, server: ApiServerProcess, tmp_path: Path) -> None:
    assert http("POST", "/api/v1/namespaces", json={"metadata": {"name": "doomed"}}).status_code == 201
    assert http("POST", "/api/v1/namespaces/doomed/configmaps", json={"metadata": {"name": "c"}}).status_code == 201
    ns = http("DELETE", "/api/v1/namespaces/doomed").json()
    assert ns["status"]["phase"] == "Terminating" and ns["metadata"]["deletionTimestamp"]
    r = http("POST", "/api/v1/namespaces/doomed/configmaps", json={"metadata": {"name": "d"}})
    assert r.status_code == 403 and "being terminated" in r.json()["message"]
    ns["spec"]["finalizers"] = []
    assert http("PUT", "/api/v1/namespaces/doomed/finalize", json=ns).status_code == 200
    assert http("GET", "/api/v1/namespaces/doomed").status_code == 404
    # a label change moving an object out of a watch's selection is a DELETED event for that watch
    http("POST", "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "sel", "labels": {"a": "1"}}})
    rv = http("GET", "/api/v1/namespaces/default/configmaps").json()["metadata"]["resourceVersion"]

    def relabel() -> None:
        http("PATCH", "/api/v1/namespaces/default/configmaps/sel", data=json.dumps({"metadata": {"labels": {"a": "2"}}}),
             headers={"Content-Type": "application/merge-patch+json"})
        http("PATCH", "/api/v1/namespaces/default/configmaps/sel", data=json.dumps({"metadata": {"labels": {"a": "1"}}}),
             headers={"Content-Type": "application/merge-patch+json"})

    relabel()  # the watch below starts from the older resourceVersion: the changes are replayed
    r = http("GET", f"/api/v1/namespaces/default/configmaps?watch=1&labelSelector=a%3D1&resourceVersion={rv}"
                    "&timeoutSeconds=1")
    assert [json.loads(x)["type"] for x in r.text.splitlines()] == ["DELETED", "ADDED"]
    # ownerReferences are validated
    r = http("POST", "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "o", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "sel"}]}})
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "metadata.ownerReferences.uid"
    # a client certificate issued for a component works as a kubeconfig
    from tugboat.cli.cluster import kubeconfig
    from tugboat.cli.main import Context

    out = tmp_path / "node.kubeconfig"
    assert kubeconfig(["--data-dir", str(server.dir), "--user", "system:node:n9", "--group", "system:nodes",
                       "--server", server.url, "-o", str(out)], Context()) == 0
    import yaml

    kc = yaml.safe_load(out.read_text())
    user = kc["users"][0]["user"]
    (tmp_path / "c.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (tmp_path / "c.key").write_bytes(base64.b64decode(user["client-key-data"]))
    r = requests.get(server.url + "/api/v1/nodes", verify=server.ca, cert=(str(tmp_path / "c.crt"),
                                                                          str(tmp_path / "c.key")), timeout=10)
    assert r.status_code == 200


def test_etcd_outage_is_503_then_recovers(tmp_path: Path) -> None:
    import shutil

    from tugboat.cluster.apiserver.testing import EtcdProcess

    if shutil.which("etcd") is None:
        from conftest import require_binary

        require_binary("etcd")
    with EtcdProcess(tmp_path / "etcd") as etcd, ApiServerProcess(tmp_path / "api", etcd.datastore) as api:
        h = Http(api)
        assert h("POST", "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "a"}}).status_code == 201
        rv = h("GET", "/api/v1/namespaces/default/configmaps").json()["metadata"]["resourceVersion"]
        etcd.stop()
        r = h("GET", "/api/v1/namespaces/default/configmaps/a")
        assert r.status_code == 503 and r.json()["reason"] == "ServiceUnavailable"
        etcd.start()
        deadline = time.time() + 15
        while h("GET", "/api/v1/namespaces/default/configmaps/a").status_code != 200:
            assert time.time() < deadline
            time.sleep(0.2)
        # the watch cache follows etcd again: a watch from before the outage sees a change after it
        assert h("POST", "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "b"}}).status_code == 201
        r = h("GET", f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=3")
        names = [json.loads(x)["object"]["metadata"]["name"] for x in r.text.splitlines()]
        assert names[:1] == ["b"], r.text
