"""The node endpoint's TLS (nodes area): serving certificates through CertificateSigningRequests signed
by the controller manager, and client-certificate authentication of the API server.

Real sockets on 127.0.0.1, a real API server process, the real csrsigning controller."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tugboat.cluster.apiserver.certs import ClusterPKI
from tugboat.cluster.apiserver.nodeproxy import KUBELET_CLIENT_CN, kubelet_client_ssl
from tugboat.cluster.apiserver.testing import ApiServerProcess
from tugboat.cluster.client.rest import ApiClient
from tugboat.cluster.controllers.base import Options
from tugboat.cluster.controllers.manager import ControllerManager
from tugboat.cluster.node import tls
from tugboat.cluster.node.server import start_server
from tugboat.errors import InvalidArgument


def _pki(d: Path) -> ClusterPKI:
    pki = ClusterPKI(str(d))
    pki.ensure(["127.0.0.1"])
    return pki


def _read(p: str) -> bytes:
    with open(p, "rb") as f:
        return f.read()


def test_serving_request_checked_and_signed(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    _key, csr_pem = tls.make_serving_request("n1", ["10.1.2.3", "n1"])
    assert tls.check_serving_request(csr_pem, tls.SERVING_USAGES) is None
    assert "server auth" in (tls.check_serving_request(csr_pem, ["digital signature", "client auth"]) or "")
    assert "not a PEM" in (tls.check_serving_request(b"junk", tls.SERVING_USAGES) or "")
    chain = tls.sign_serving_request(csr_pem, _read(pki.ca_cert), _read(pki.path("ca.key")), seconds=3600)
    leaf_pem, ca_pem = tls._split_pem(chain)
    assert ca_pem == _read(pki.ca_cert)
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(v) for v in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    life = leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=55) < life <= datetime.timedelta(hours=1)
    # the CA pin has kubeadm's form and changes with the CA
    pin = tls.ca_cert_hash(ca_pem)
    assert pin.startswith("sha256:") and len(pin) == 7 + 64
    assert pin != tls.ca_cert_hash(_read(_pki(tmp_path / "other").ca_cert))


def test_requests_for_other_identities_are_refused() -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def csr(cn: str, orgs: list[str], sans: list[x509.GeneralName]) -> bytes:
        k = ec.generate_private_key(ec.SECP256R1())
        b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
            + [x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(k, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    ip = [x509.DNSName("n1")]
    assert "common name" in tls.check_serving_request(csr("admin", ["system:nodes"], ip), tls.SERVING_USAGES)
    assert "organization" in tls.check_serving_request(csr("system:node:n1", ["system:masters"], ip),
                                                       tls.SERVING_USAGES)
    assert "DNS names and IP" in tls.check_serving_request(
        csr("system:node:n1", ["system:nodes"], [x509.RFC822Name("a@b.c")]), tls.SERVING_USAGES)
    assert "no DNS name" in tls.check_serving_request(csr("system:node:n1", ["system:nodes"], []),
                                                      tls.SERVING_USAGES)


def _node_tls(pki: ClusterPKI, d: Path) -> ssl.SSLContext:
    key_pem, csr_pem = tls.make_serving_request("n1", ["127.0.0.1"])
    chain = tls.sign_serving_request(csr_pem, _read(pki.ca_cert), _read(pki.path("ca.key")))
    (d / "kubelet.key").write_bytes(key_pem)
    (d / "kubelet.crt").write_bytes(chain)
    return tls.server_ssl_context(str(d / "kubelet.crt"), str(d / "kubelet.key"), pki.ca_cert)


async def _get(url: str, ctx: ssl.SSLContext | bool) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url, ssl=ctx, timeout=aiohttp.ClientTimeout(total=10)) as r:
        return r.status, await r.text()


def test_node_endpoint_requires_the_api_servers_certificate(tmp_path: Path) -> None:
    pki = _pki(tmp_path / "cluster")
    stranger = _pki(tmp_path / "stranger")
    agent: Any = SimpleNamespace(port=0, kubelet_ssl=_node_tls(pki, tmp_path), workers={}, name="n1")

    def client_ctx(p: ClusterPKI, user: str | None, groups: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=pki.ca_cert)  # trusts the cluster CA only
        if user:
            cert, key = p.issue_client(user, groups or [], user.replace(":", "_"))
            ctx.load_cert_chain(cert, key)
        return ctx

    async def main() -> None:
        runner = await start_server(agent, "127.0.0.1", 0)
        base = f"https://127.0.0.1:{agent.port}"
        try:
            # no client certificate: 401, on every path
            assert await _get(f"{base}/healthz", client_ctx(pki, None)) == (401, "Unauthorized")
            assert (await _get(f"{base}/containerLogs/default/p/c", client_ctx(pki, None)))[0] == 401
            # a certificate of the cluster CA but someone else: 403
            st, text = await _get(f"{base}/pods", client_ctx(pki, "system:node:n2", ["system:nodes"]))
            assert st == 403 and "user=system:node:n2" in text
            # a certificate from another CA: the handshake fails
            with pytest.raises(aiohttp.ClientError):
                await _get(f"{base}/healthz", client_ctx(stranger, KUBELET_CLIENT_CN, ["system:masters"]))
            # plain HTTP to the TLS port gets nothing useful
            with pytest.raises(aiohttp.ClientError):
                await _get(f"http://127.0.0.1:{agent.port}/healthz", False)
            # the API server's kubelet client identity (what nodeproxy uses), issued on first use
            ctx = kubelet_client_ssl(pki.data_dir)
            assert (tmp_path / "cluster" / "pki" / "apiserver-kubelet-client.crt").exists()
            assert await _get(f"{base}/healthz", ctx) == (200, "ok")
            st, body = await _get(f"{base}/pods", ctx)
            assert st == 200 and '"PodList"' in body
            # the admin (system:masters) is let in as well
            assert (await _get(f"{base}/healthz", client_ctx(pki, "admin2", ["system:masters"])))[0] == 200
        finally:
            await runner.cleanup()

    asyncio.run(main())


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with ApiServerProcess(tmp_path_factory.mktemp("tlsapi") / "as") as api:
        yield api


def _with_signer(api: ApiServerProcess, fn: Any, keep: float = 3600.0) -> Any:
    async def main() -> Any:
        pki = ClusterPKI(str(api.dir))
        opts = Options(cluster_signing_cert_file=pki.ca_cert, cluster_signing_key_file=pki.path("ca.key"),
                       csr_keep_seconds=keep)
        async with ApiClient.from_kubeconfig(api.kubeconfig) as c, \
                ApiClient.from_kubeconfig(api.kubeconfig) as node_client:
            cm = ControllerManager(c, options=opts, controllers=["csrsigning"])
            task = asyncio.create_task(cm.run())
            try:
                return await fn(node_client, pki)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    return asyncio.run(main())


def test_bootstrap_through_a_csr_signed_by_the_controller_manager(apiserver: ApiServerProcess,
                                                                    tmp_path: Path) -> None:
    async def flow(client: ApiClient, pki: ClusterPKI) -> None:
        d = str(tmp_path / "pki")
        # without the CA in hand: it comes back with the certificate and is checked against the pin
        pin = tls.ca_cert_hash(_read(pki.ca_cert))
        cert, key, ca = await tls.bootstrap_serving_cert(client, "n1", ["127.0.0.1", "n1"], d, ca_hash=pin,
                                                         timeout=30)
        assert _read(ca) == _read(pki.ca_cert)
        leaf = x509.load_pem_x509_certificate(_read(cert))
        leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(_read(ca)))
        csrs = await client.list(tls.CSRS)
        items = csrs["items"] if isinstance(csrs, dict) else csrs
        mine = [c for c in items if (c["metadata"].get("labels") or {}).get("tugboat.io/node") == "n1"]
        assert len(mine) == 1
        conds = {c["type"]: c for c in mine[0]["status"]["conditions"]}
        assert conds["Approved"]["reason"] == "AutoApproved"
        assert base64.b64decode(mine[0]["status"]["certificate"]).startswith(_read(cert))
        # kept and reused while good for the same addresses; a new address means a new request
        assert await tls.bootstrap_serving_cert(client, "n1", ["127.0.0.1"], d, ca_pem=_read(pki.ca_cert)) \
            == (cert, key, ca)
        before = _read(cert)
        await tls.bootstrap_serving_cert(client, "n1", ["127.0.0.2"], d, ca_pem=_read(pki.ca_cert), timeout=30)
        assert _read(cert) != before
        # a wrong pin is refused
        with pytest.raises(InvalidArgument, match="hash"):
            await tls.bootstrap_serving_cert(client, "n2", ["127.0.0.1"], str(tmp_path / "p2"),
                                             ca_hash="sha256:" + "0" * 64, timeout=30)
        # a request that is not a node serving request is denied, with the reason
        _, bad = tls.make_serving_request("n3", ["127.0.0.1"])
        await client.create(tls.CSRS, {"metadata": {"name": "bad-usage"}, "spec": {
            "request": base64.b64encode(bad).decode(), "signerName": tls.SIGNER, "usages": ["client auth"]}})
        for _ in range(100):
            got = await client.get(tls.CSRS, "bad-usage")
            if (got.get("status") or {}).get("conditions"):
                break
            await asyncio.sleep(0.1)
        cond = got["status"]["conditions"][0]
        assert cond["type"] == "Denied" and "server auth" in cond["message"]
        assert not got["status"].get("certificate")

    _with_signer(apiserver, flow)


def test_kubectl_sees_csrs(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    import os
    import subprocess

    from conftest import require_binary

    require_binary("kubectl")
    _, req = tls.make_serving_request("n9", ["127.0.0.1"])
    asyncio.run(_create(apiserver, req))
    r = subprocess.run(["kubectl", "--cache-dir", str(tmp_path / "kc"), "get", "csr", "pending-n9"],
                       capture_output=True, text=True, timeout=30, env=dict(os.environ, KUBECONFIG=apiserver.kubeconfig))
    assert r.returncode == 0, r.stderr
    assert "kubernetes.io/kubelet-serving" in r.stdout and "Pending" in r.stdout


async def _create(api: ApiServerProcess, req: bytes) -> None:
    async with ApiClient.from_kubeconfig(api.kubeconfig) as c:
        await c.create(tls.CSRS, {"metadata": {"name": "pending-n9"}, "spec": {
            "request": base64.b64encode(req).decode(), "signerName": tls.SIGNER, "usages": tls.SERVING_USAGES}})


def test_finished_requests_are_cleaned_up(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    async def flow(client: ApiClient, pki: ClusterPKI) -> None:
        await tls.bootstrap_serving_cert(client, "gone", ["127.0.0.1"], str(tmp_path), ca_pem=_read(pki.ca_cert),
                                         timeout=30)

        async def names() -> list[str]:
            out = await client.list(tls.CSRS)
            items = out["items"] if isinstance(out, dict) else out
            return [c["metadata"]["name"] for c in items if (c["metadata"].get("labels") or {}).get(
                "tugboat.io/node") == "gone"]

        assert len(await names()) == 1
        for _ in range(80):
            if not await names():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"issued request not deleted: {await names()}")

    _with_signer(apiserver, flow, keep=2.0)
