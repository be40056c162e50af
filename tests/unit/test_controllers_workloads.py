"""Jobs, StatefulSets, DaemonSets, Endpoints/EndpointSlices and PVC provisioning."""

from __future__ import annotations

from controlplane_fixtures import Cluster, apiserver_fixture, cluster_fixture, deployment  # noqa: F401

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.util import pod_ready


def _cond(obj: dict, t: str) -> dict | None:
    return next((x for x in (obj.get("status") or {}).get("conditions") or [] if x["type"] == t), None)


async def test_job_completions_parallelism_and_backoff(cluster: Cluster) -> None:
    c = await cluster.start(nodes=2, controllers=["job"])
    tmpl = {"metadata": {"annotations": {"sim.tugboat.io/complete-after": "300ms"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "w", "image": "busybox"}]}}
    await c.client.create(R.JOBS, {"metadata": {"name": "work"}, "spec": {"completions": 4, "parallelism": 2,
                                                                         "template": tmpl}})
    seen_active: list[int] = []

    async def complete() -> dict | None:
        j = await c.client.get(R.JOBS, "work", "default")
        seen_active.append(int((j.get("status") or {}).get("active") or 0))
        cond = _cond(j, "Complete")
        return j if cond and cond["status"] == "True" else None

    j = await c.wait_for(complete, timeout=30, what="job complete")
    assert j["status"]["succeeded"] == 4 and j["status"].get("completionTime")
    assert max(seen_active) <= 2
    pods = (await c.client.list(R.PODS, "default", label_selector="job-name=work"))["items"]
    assert len(pods) == 4 and all(p["status"]["phase"] == "Succeeded" for p in pods)
    # Indexed completion mode: one pod per index, completedIndexes in kube's range notation
    await c.client.create(R.JOBS, {"metadata": {"name": "idx"}, "spec": {
        "completions": 3, "parallelism": 2, "completionMode": "Indexed", "template": tmpl}})

    async def idx_done() -> dict | None:
        j = await c.client.get(R.JOBS, "idx", "default")
        cond = _cond(j, "Complete")
        return j if cond and cond["status"] == "True" else None

    j = await c.wait_for(idx_done, timeout=30, what="indexed job complete")
    assert j["status"]["completedIndexes"] == "0-2" and j["status"]["succeeded"] == 3
    pods = (await c.client.list(R.PODS, "default", label_selector="job-name=idx"))["items"]
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1", "2"]
    assert all(p["metadata"]["name"].startswith(f"idx-{p['metadata']['annotations']['batch.kubernetes.io/job-completion-index']}-")
               for p in pods)
    # failing pods: backoffLimit 1 -> 2 failures -> Failed
    tmpl = {"metadata": {"annotations": {"sim.tugboat.io/fail-after": "200ms"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "w", "image": "busybox"}]}}
    await c.client.create(R.JOBS, {"metadata": {"name": "bad"}, "spec": {"backoffLimit": 1, "template": tmpl}})

    async def failed() -> dict | None:
        j = await c.client.get(R.JOBS, "bad", "default")
        cond = _cond(j, "Failed")
        return j if cond and cond["status"] == "True" else None

    j = await c.wait_for(failed, timeout=30, what="job failed")
    assert _cond(j, "Failed")["reason"] == "BackoffLimitExceeded"
    assert j["status"]["failed"] == 2
    # ttlSecondsAfterFinished removes a finished job
    tmpl = {"metadata": {"annotations": {"sim.tugboat.io/complete-after": "100ms"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "w", "image": "busybox"}]}}
    await c.client.create(R.JOBS, {"metadata": {"name": "brief"}, "spec": {"ttlSecondsAfterFinished": 1,
                                                                          "template": tmpl}})

    async def cleaned() -> bool:
        jobs = {x["metadata"]["name"] for x in (await c.client.list(R.JOBS, "default"))["items"]}
        return "brief" not in jobs

    await c.wait_for(cleaned, timeout=20, what="job removed after its TTL")


async def test_statefulset_ordered_with_volumes_and_pvc_provisioning(cluster: Cluster) -> None:
    c = await cluster.start(nodes=2, controllers=["statefulset", "persistentvolume-binder"])
    sts = {"metadata": {"name": "db"}, "spec": {
        "replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "pg", "image": "postgres"}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}
    await c.client.create(R.STATEFULSETS, sts)

    async def ready() -> dict | None:
        s = await c.client.get(R.STATEFULSETS, "db", "default")
        return s if (s.get("status") or {}).get("readyReplicas") == 3 else None

    s = await c.wait_for(ready, timeout=30, what="3 ready replicas")
    assert s["status"]["currentRevision"] == s["status"]["updateRevision"]
    pods = sorted((await c.client.list(R.PODS, "default", label_selector="app=db"))["items"],
                  key=lambda p: p["metadata"]["name"])
    assert [p["metadata"]["name"] for p in pods] == ["db-0", "db-1", "db-2"]
    # ordered: each pod was created after the previous one was ready
    created = [p["metadata"]["creationTimestamp"] for p in pods]
    assert created == sorted(created)
    assert pods[1]["spec"]["hostname"] == "db-1" and pods[1]["spec"]["subdomain"] == "db"
    vols = {v["name"]: v for v in pods[1]["spec"]["volumes"]}
    assert vols["data"]["persistentVolumeClaim"]["claimName"] == "data-db-1"

    async def bound() -> list | None:
        pvcs = (await c.client.list(R.PVCS, "default"))["items"]
        ok = len(pvcs) == 3 and all((p.get("status") or {}).get("phase") == "Bound" for p in pvcs)
        return pvcs if ok else None

    pvcs = await c.wait_for(bound, timeout=20, what="PVCs bound")
    by = {p["metadata"]["name"]: p for p in pvcs}
    pv = await c.client.get(R.PVS, by["data-db-1"]["spec"]["volumeName"])
    node_terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert node_terms["values"] == [pods[1]["spec"]["nodeName"]]
    assert pv["spec"]["local"]["path"].endswith(pv["metadata"]["name"])
    assert by["data-db-1"]["spec"]["storageClassName"] == "standard"
    # scale down removes the highest ordinal
    await c.client.patch(R.STATEFULSETS, "db", {"spec": {"replicas": 2}}, "default")

    async def two() -> bool:
        ps = (await c.client.list(R.PODS, "default", label_selector="app=db"))["items"]
        return sorted(p["metadata"]["name"] for p in ps) == ["db-0", "db-1"]

    await c.wait_for(two, timeout=20, what="scaled down to db-0, db-1")
    # rolling update from the highest ordinal; revisions converge
    await c.client.patch(R.STATEFULSETS, "db", {"spec": {"template": {"spec": {"containers": [
        {"name": "pg", "image": "postgres:17"}]}}}}, "default", content_type="application/strategic-merge-patch+json")

    async def rolled() -> bool:
        s = await c.client.get(R.STATEFULSETS, "db", "default")
        st = s.get("status") or {}
        ps = (await c.client.list(R.PODS, "default", label_selector="app=db"))["items"]
        return (st.get("updatedReplicas") == 2 and st.get("readyReplicas") == 2
                and st.get("currentRevision") == st.get("updateRevision")
                and {p["spec"]["containers"][0]["image"] for p in ps} == {"postgres:17"})

    await c.wait_for(rolled, timeout=30, what="statefulset rolled to postgres:17")


async def test_daemonset_one_pod_per_eligible_node(cluster: Cluster) -> None:
    c = await cluster.start(nodes=3, controllers=["daemonset"])
    await c.client.patch(R.NODES, "sim-node-2", {"spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}})
    ds = {"metadata": {"name": "agent"}, "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
        "metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a", "image": "agent"}]}}}}
    await c.client.create(R.DAEMONSETS, ds)

    async def placed() -> dict | None:
        d = await c.client.get(R.DAEMONSETS, "agent", "default")
        st = d.get("status") or {}
        return d if st.get("desiredNumberScheduled") == 2 and st.get("numberReady") == 2 else None

    await c.wait_for(placed, timeout=20, what="daemonset on 2 untainted nodes")
    pods = (await c.client.list(R.PODS, "default", label_selector="app=agent"))["items"]
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["sim-node-0", "sim-node-1"]
    # rolling update: every pod replaced with the new template, one node at a time
    await c.client.patch(R.DAEMONSETS, "agent", {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "agent:2"}]}}}}, "default", content_type="application/strategic-merge-patch+json")

    async def updated() -> bool:
        d = await c.client.get(R.DAEMONSETS, "agent", "default")
        st = d.get("status") or {}
        pods = [p for p in (await c.client.list(R.PODS, "default", label_selector="app=agent"))["items"]
                if not p["metadata"].get("deletionTimestamp")]
        return (st.get("updatedNumberScheduled") == 2 and st.get("numberReady") == 2 and len(pods) == 2
                and {p["spec"]["containers"][0]["image"] for p in pods} == {"agent:2"})

    await c.wait_for(updated, timeout=30, what="daemonset rolled to agent:2")


async def test_endpoints_and_slices_follow_ready_pods(cluster: Cluster) -> None:
    c = await cluster.start(nodes=2, controllers=["deployment", "replicaset", "endpoints", "endpointslice"])
    dep = deployment("api", 3)
    dep["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8080}]
    await c.client.create(R.DEPLOYMENTS, dep)
    await c.client.create(R.SERVICES, {"metadata": {"name": "api"}, "spec": {
        "selector": {"app": "api"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}})

    async def eps() -> dict | None:
        e = await c.client.get(R.ENDPOINTS, "api", "default")
        subs = e.get("subsets") or []
        return e if subs and len(subs[0].get("addresses") or []) == 3 else None

    e = await c.wait_for(eps, timeout=20, what="3 endpoint addresses")
    assert e["subsets"][0]["ports"] == [{"port": 8080, "protocol": "TCP", "name": "web"}]
    pods = (await c.client.list(R.PODS, "default", label_selector="app=api"))["items"]
    assert {a["ip"] for a in e["subsets"][0]["addresses"]} == {p["status"]["podIP"] for p in pods if pod_ready(p)}

    async def slices() -> list | None:
        s = (await c.client.list(R.ENDPOINTSLICES, "default", label_selector="kubernetes.io/service-name=api"))["items"]
        return s if s and sum(len(x.get("endpoints") or []) for x in s) == 3 else None

    s = await c.wait_for(slices, timeout=20, what="endpoint slice")
    assert s[0]["ports"][0]["port"] == 8080 and s[0]["addressType"] == "IPv4"
    assert s[0]["metadata"]["ownerReferences"][0]["kind"] == "Service"
    # scale to 1: endpoints shrink
    await c.client.patch(R.DEPLOYMENTS, "api", {"spec": {"replicas": 1}}, "default", subresource="scale")

    async def one() -> bool:
        e = await c.client.get(R.ENDPOINTS, "api", "default")
        subs = e.get("subsets") or []
        return bool(subs) and len(subs[0].get("addresses") or []) == 1

    await c.wait_for(one, timeout=20, what="1 endpoint address")
