"""PriorityClass (+ the Priority admission), ControllerRevision and PodDisruptionBudget served by the
real API server process: CRUD, validation, discovery, OpenAPI, tables, eviction against a budget,
and the real kubectl listing them."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from apiserver_support import Http

from tugboat.cluster.apiserver.testing import ApiServerProcess

PC = "/apis/scheduling.k8s.io/v1/priorityclasses"
CR = "/apis/apps/v1/namespaces/default/controllerrevisions"
PDB = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"
PODS = "/api/v1/namespaces/default/pods"
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    with ApiServerProcess(tmp_path_factory.mktemp("apiserver")) as api:
        yield api


@pytest.fixture
def http(server: ApiServerProcess) -> Http:
    return Http(server)


def pod(name: str, labels: dict[str, str] | None = None, **spec: object) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}], **spec}}


def test_builtin_priority_classes_and_admission(http: Http) -> None:
    r = http("GET", PC)
    assert r.status_code == 200 and r.json()["kind"] == "PriorityClassList"
    by_name = {i["metadata"]["name"]: i for i in r.json()["items"]}
    assert by_name["system-node-critical"]["value"] == 2000001000
    assert by_name["system-cluster-critical"]["value"] == 2000000000
    assert by_name["system-cluster-critical"]["preemptionPolicy"] == "PreemptLowerPriority"
    assert http("DELETE", PC + "/system-node-critical").status_code == 403

    r = http("POST", PC, json={"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                               "metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"})
    assert r.status_code == 201, r.text
    # the admission resolves the class name
    r = http("POST", PODS, json=pod("p-high", priorityClassName="high"))
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["priority"] == 1000 and r.json()["spec"]["preemptionPolicy"] == "Never"
    r = http("POST", PODS, json=pod("p-crit", priorityClassName="system-cluster-critical"))
    assert r.status_code == 201 and r.json()["spec"]["priority"] == 2000000000
    # unknown class: 403 like kube
    r = http("POST", PODS, json=pod("p-bad", priorityClassName="nope"))
    assert r.status_code == 403 and r.json()["reason"] == "Forbidden"
    assert r.json()["message"] == 'pods "p-bad" is forbidden: no PriorityClass with name nope was found'
    # a contradicting integer priority is refused
    r = http("POST", PODS, json=pod("p-contra", priorityClassName="high", priority=5))
    assert r.status_code == 403 and "must not be provided in pod spec" in r.json()["message"]
    # validation: user classes may not exceed 1e9, system- names are reserved, value is immutable
    r = http("POST", PC, json={"metadata": {"name": "huge"}, "value": 2000000000})
    assert r.status_code == 422 and "maximum allowed value of a user defined priority" in r.text
    r = http("POST", PC, json={"metadata": {"name": "system-mine"}, "value": 1})
    assert r.status_code == 422
    r = http("PATCH", PC + "/high", json={"value": 7}, headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "value"


def test_global_default_priority_class(http: Http) -> None:
    r = http("POST", PC, json={"metadata": {"name": "default-prio"}, "value": 42, "globalDefault": True})
    assert r.status_code == 201, r.text
    try:
        r = http("POST", PC, json={"metadata": {"name": "second-default"}, "value": 43, "globalDefault": True})
        assert r.status_code == 403 and "Only one default can exist" in r.json()["message"]
        # the default applies to pods naming no class (the admission's cache follows the watch: poll)
        for i in range(50):
            r = http("POST", PODS, json=pod(f"p-default-{i}"))
            assert r.status_code == 201
            if r.json()["spec"].get("priorityClassName") == "default-prio":
                break
        assert r.json()["spec"]["priority"] == 42
    finally:
        assert http("DELETE", PC + "/default-prio").status_code == 200


def test_controller_revision_crud_and_table(http: Http) -> None:
    r = http("POST", CR, json={"apiVersion": "apps/v1", "kind": "ControllerRevision",
                               "metadata": {"name": "web-abc", "ownerReferences": [{
                                   "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                                   "uid": "u-1", "controller": True}]},
                               "data": {"spec": {"template": {"x": 1}}}, "revision": 3})
    assert r.status_code == 201, r.text
    assert r.json()["revision"] == 3 and "status" not in r.json()
    r = http("GET", CR + "/web-abc", headers=TABLE)
    assert [c["name"] for c in r.json()["columnDefinitions"]] == ["Name", "Controller", "Revision", "Age"]
    assert r.json()["rows"][0]["cells"][:3] == ["web-abc", "statefulset.apps/web", 3]
    r = http("PATCH", CR + "/web-abc", json={"data": {"other": 1}},
             headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 422
    assert http("POST", CR, json={"metadata": {"name": "neg"}, "data": {}, "revision": -1}).status_code == 422


def test_discovery_and_openapi(http: Http) -> None:
    found = {}
    for gv in ("scheduling.k8s.io/v1", "apps/v1", "policy/v1"):
        r = http("GET", f"/apis/{gv}")
        assert r.status_code == 200
        found.update({res["name"]: res for res in r.json()["resources"]})
    assert found["priorityclasses"]["namespaced"] is False and found["priorityclasses"]["shortNames"] == ["pc"]
    assert found["controllerrevisions"]["namespaced"] is True
    assert found["poddisruptionbudgets"]["shortNames"] == ["pdb"]
    assert "poddisruptionbudgets/status" in found
    idx = http("GET", "/openapi/v3").json()["paths"]
    assert "apis/scheduling.k8s.io/v1" in idx and "apis/policy/v1" in idx
    doc = http("GET", "/openapi/v3/apis/policy/v1").json()
    assert "io.k8s.api.policy.v1.PodDisruptionBudget" in doc["components"]["schemas"]
    doc = http("GET", "/openapi/v3/apis/scheduling.k8s.io/v1").json()
    assert "io.k8s.api.scheduling.v1.PriorityClass" in doc["components"]["schemas"]


def test_pdb_validation_status_and_eviction(http: Http, server: ApiServerProcess) -> None:
    r = http("POST", PDB, json={"metadata": {"name": "both"},
                                "spec": {"minAvailable": 1, "maxUnavailable": 1, "selector": {}}})
    assert r.status_code == 422 and "cannot be both set" in r.text
    r = http("POST", PDB, json={"metadata": {"name": "pct"}, "spec": {"minAvailable": "120%", "selector": {}}})
    assert r.status_code == 422
    r = http("POST", PDB, json={"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                "metadata": {"name": "guard"},
                                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}})
    assert r.status_code == 201, r.text
    st = r.json()["status"]
    assert st["disruptionsAllowed"] == 0 and st["currentHealthy"] == 0 and st["expectedPods"] == 0
    # a running, ready, bound pod covered by the budget
    for name in ("g1", "g2"):
        assert http("POST", PODS, json=pod(name, {"app": "guarded"}, nodeName="n1")).status_code == 201
        r = http("PATCH", f"{PODS}/{name}/status", headers={"Content-Type": "application/merge-patch+json"},
                 json={"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
        assert r.status_code == 200
    ev = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "g1", "namespace": "default"}}
    # status not yet observed by a disruption controller: 429
    r = http("POST", f"{PODS}/g1/eviction", json=ev)
    assert r.status_code == 429 and r.json()["reason"] == "TooManyRequests"
    assert r.json()["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert "Retry-After" not in r.headers
    # what the disruption controller would write: 2 healthy, 1 needed, 1 disruption allowed
    r = http("PUT", PDB + "/guard/status", json={**http("GET", PDB + "/guard").json(), "status": {
        "observedGeneration": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2,
        "disruptionsAllowed": 1}})
    assert r.status_code == 200, r.text
    r = http("POST", f"{PODS}/g1/eviction", json=ev)
    assert r.status_code == 201, r.text
    st = http("GET", PDB + "/guard").json()["status"]
    assert st["disruptionsAllowed"] == 0 and "g1" in st["disruptedPods"]
    r = http("POST", f"{PODS}/g2/eviction", json={**ev, "metadata": {"name": "g2", "namespace": "default"}})
    assert r.status_code == 429
    assert r.json()["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert "needs 1 healthy pods and has 2 currently" in r.json()["details"]["causes"][0]["message"]
    assert http("GET", f"{PODS}/g2").json()["metadata"].get("deletionTimestamp") is None
    # pods no budget covers are evicted freely
    assert http("POST", PODS, json=pod("free", {"app": "other"})).status_code == 201
    r = http("POST", f"{PODS}/free/eviction", json={**ev, "metadata": {"name": "free", "namespace": "default"}})
    assert r.status_code == 201
    # table columns
    r = http("GET", PDB, headers=TABLE)
    assert [c["name"] for c in r.json()["columnDefinitions"]] == [
        "Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"]
    assert r.json()["rows"][0]["cells"][:4] == ["guard", "1", "N/A", 0]

    # the real kubectl lists the new kinds
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
    out = subprocess.run(["kubectl", "get", "priorityclasses"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "VALUE", "GLOBAL-DEFAULT"]
    assert any(ln.split()[:3] == ["system-node-critical", "2000001000", "false"] for ln in lines)
    out = subprocess.run(["kubectl", "get", "pdb"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:5] == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE"]
    assert lines[1].split()[:4] == ["guard", "1", "N/A", "0"]
    out = subprocess.run(["kubectl", "get", "controllerrevisions"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "statefulset.apps/web" in out.stdout, out.stderr
    # kubectl's generators send these kinds as protobuf
    out = subprocess.run(["kubectl", "create", "priorityclass", "kc-high", "--value=500", "--description=from kubectl",
                          "--preemption-policy=Never"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pc = http("GET", PC + "/kc-high").json()
    assert pc["value"] == 500 and pc["description"] == "from kubectl" and pc["preemptionPolicy"] == "Never"
    out = subprocess.run(["kubectl", "create", "pdb", "kc-pdb", "--selector=app=kc", "--max-unavailable=25%"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pdb = http("GET", PDB + "/kc-pdb").json()
    assert pdb["spec"] == {"maxUnavailable": "25%", "selector": {"matchLabels": {"app": "kc"}}}
    assert pdb["status"]["disruptionsAllowed"] == 0
