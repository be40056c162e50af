"""Client machinery against the in-memory fake API server: work queue, informers, leader election."""

from __future__ import annotations

import asyncio

import pytest
from controlplane_fixtures import apiserver_fixture  # noqa: F401

from tugboat.cluster.client import ApiClient, Informer, LeaderElector, WorkQueue, load_kubeconfig
from tugboat.cluster.client.resources import CONFIGMAPS, LEASES
from tugboat.cluster.client.resources import NAMESPACES as R_NAMESPACES
from tugboat.cluster.client.rest import ConflictError, GoneError, NotFoundError
from tugboat.cluster.client.util import match_labels, milli, quantity, whole
from tugboat.cluster.sim.fakeapi import FakeApiServer


@pytest.fixture
async def fake(tmp_path):
    srv = FakeApiServer(history=50)
    await srv.start()
    client = ApiClient(load_kubeconfig(srv.write_kubeconfig(str(tmp_path / "kc"))))
    yield srv, client
    await client.close()
    await srv.stop()


async def test_workqueue_dedups_and_requeues_after_done() -> None:
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    item = await q.get()
    assert item == "a"
    q.add("a")  # while processing: held back until done
    assert len(q) == 1
    q.done("a")
    assert len(q) == 2
    assert await q.get() == "b"
    assert await q.get() == "a"


async def test_workqueue_rate_limited_backoff_grows_and_forget_resets() -> None:
    q = WorkQueue(base_delay=0.01)
    for _ in range(4):
        q.add_rate_limited("x")
    assert q.num_requeues("x") == 4
    q.forget("x")
    assert q.num_requeues("x") == 0
    q.add_rate_limited("y")
    assert await asyncio.wait_for(q.get(), 1) in ("x", "y")


async def test_crud_and_errors(fake) -> None:
    _, c = fake
    cm = await c.create(CONFIGMAPS, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    assert cm["metadata"]["resourceVersion"]
    with pytest.raises(ConflictError) as ei:
        await c.create(CONFIGMAPS, {"metadata": {"name": "a"}})
    assert ei.value.reason == "AlreadyExists"
    stale = dict(cm)
    await c.patch(CONFIGMAPS, "a", {"data": {"k": "w"}}, "default")
    with pytest.raises(ConflictError):
        await c.update(CONFIGMAPS, {**stale, "data": {"k": "z"}})
    await c.delete(CONFIGMAPS, "a", "default")
    with pytest.raises(NotFoundError):
        await c.get(CONFIGMAPS, "a", "default")


async def test_informer_list_watch_and_relist_on_410(fake) -> None:
    _, c = fake
    for i in range(3):
        await c.create(CONFIGMAPS, {"metadata": {"name": f"cm{i}", "labels": {"app": "x"}}})
    inf = Informer(c, CONFIGMAPS)
    inf.add_index("app", lambda o: [o["metadata"].get("labels", {}).get("app", "")])
    seen: list[str] = []
    inf.add_handler(on_add=lambda o: seen.append("add " + o["metadata"]["name"]),
                    on_delete=lambda o: seen.append("del " + o["metadata"]["name"]))
    inf.start()
    await inf.wait_synced(5)
    assert len(inf.by_index("app", "x")) == 3
    await c.create(CONFIGMAPS, {"metadata": {"name": "cm9"}})
    await c.delete(CONFIGMAPS, "cm0", "default")

    async def until(pred):
        for _ in range(200):
            if pred():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(seen)

    await until(lambda: "add cm9" in seen and "del cm0" in seen)
    assert inf.get("default/cm0") is None and inf.get("default/cm9") is not None
    # a watch from a compacted resourceVersion gets 410; the informer relists and converges
    await inf.stop()
    for i in range(80):
        await c.create(CONFIGMAPS, {"metadata": {"name": f"n{i}"}})
    with pytest.raises(GoneError):
        async for _ in c.watch(CONFIGMAPS, resource_version=inf.resource_version, timeout_seconds=2):
            pass
    relists = inf.relists
    inf.start()
    await until(lambda: inf.get("default/n79") is not None)
    assert inf.relists == relists + 1
    await inf.stop()


async def test_leader_election_one_leader_and_takeover(fake) -> None:
    _, c = fake
    a = LeaderElector(c, "ctl", lease_duration=1.0, renew_deadline=0.8, retry_period=0.2, identity="a")
    b = LeaderElector(c, "ctl", lease_duration=1.0, renew_deadline=0.8, retry_period=0.2, identity="b")
    running: list[str] = []

    def work(name):
        async def f():
            running.append(name)
            await asyncio.sleep(3600)
        return f

    ta = asyncio.create_task(a.run(work("a")))
    await asyncio.sleep(0.3)
    tb = asyncio.create_task(b.run(work("b")))
    await asyncio.sleep(1.5)
    assert running == ["a"]
    lease = await c.get(LEASES, "ctl", "kube-system")
    assert lease["spec"]["holderIdentity"] == "a"
    ta.cancel()  # the leader dies without releasing
    t0 = asyncio.get_running_loop().time()
    while running != ["a", "b"]:
        await asyncio.sleep(0.05)
        assert asyncio.get_running_loop().time() - t0 < 3, running
    lease = await c.get(LEASES, "ctl", "kube-system")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    tb.cancel()
    await asyncio.gather(ta, tb, return_exceptions=True)


def test_quantities_and_selectors() -> None:
    assert milli("100m") == 100 and milli("2") == 2000 and milli("0.5") == 500
    assert whole("1Gi") == 2**30 and whole("128974848") == 128974848 and whole("1k") == 1000
    assert quantity("1.5Mi") == 1.5 * 2**20
    sel = {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "In", "values": ["x", "y"]},
                                                           {"key": "c", "operator": "DoesNotExist"}]}
    assert match_labels(sel, {"a": "1", "b": "y"})
    assert not match_labels(sel, {"a": "1", "b": "y", "c": ""})
    assert match_labels({}, {"z": "1"}) and not match_labels(None, {})


def test_kubeconfig_variants(tmp_path) -> None:
    import base64

    import yaml

    (tmp_path / "ca.pem").write_text("CA")
    (tmp_path / "tok").write_text("s3cret\n")
    doc = {"current-context": "b", "clusters": [
        {"name": "c1", "cluster": {"server": "https://127.0.0.1:6443/", "certificate-authority": "ca.pem"}},
        {"name": "c2", "cluster": {"server": "https://127.0.0.1:7443",
                                   "certificate-authority-data": base64.b64encode(b"CA2").decode(),
                                   "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u1", "user": {"token": "abc"}}, {"name": "u2", "user": {"tokenFile": str(tmp_path / "tok")}}],
        "contexts": [{"name": "a", "context": {"cluster": "c1", "user": "u1"}},
                     {"name": "b", "context": {"cluster": "c2", "user": "u2", "namespace": "team"}}]}
    (tmp_path / "kc").write_text(yaml.safe_dump(doc))
    kc = load_kubeconfig(str(tmp_path / "kc"))
    assert (kc.server, kc.namespace, kc.token, kc.ca_data, kc.insecure) == (
        "https://127.0.0.1:7443", "team", "s3cret", b"CA2", True)
    kc = load_kubeconfig(str(tmp_path / "kc"), context="a")
    assert (kc.server, kc.token, kc.ca_data) == ("https://127.0.0.1:6443", "abc", b"CA")


async def test_real_api_server_with_client_cert_and_token(apiserver) -> None:
    import os

    for name in ("admin.kubeconfig", "admin-token.kubeconfig"):
        path = os.path.join(apiserver.dir, name)
        if not os.path.exists(path):
            continue
        async with ApiClient.from_kubeconfig(path) as c:
            nss = await c.list(R_NAMESPACES)
            assert "default" in {n["metadata"]["name"] for n in nss["items"]}
            cm = await c.create(CONFIGMAPS, {"metadata": {"name": name.split(".")[0]}, "data": {"a": "1"}})
            seen = []
            async for ev in c.watch(CONFIGMAPS, "default", resource_version="0", timeout_seconds=1):
                seen.append(ev["object"]["metadata"]["name"])
                if cm["metadata"]["name"] in seen:
                    break
            assert cm["metadata"]["name"] in seen
