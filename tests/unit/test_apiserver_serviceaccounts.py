"""Service account tokens (apiserver area): JWT signing and verification, the TokenRequest
subresource, token authentication, the ServiceAccount admission plugin (in-process API server over
real SQLite), the node's token manager refresh rule, and the root CA publisher's bundle choice."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tugboat.cluster.apiserver import serviceaccounts as sat
from tugboat.cluster.apiserver.meta import ApiError
from tugboat.cluster.apiserver.server import APIServer, build
from tugboat.cluster.apiserver.storage.sqlite import SQLiteStore
from tugboat.cluster.node import satokens
from tugboat.cluster.node.volumes import prepare_volumes


def issuer() -> sat.TokenIssuer:
    return sat.TokenIssuer(ec.generate_private_key(ec.SECP256R1()))


def payload(token: str) -> dict[str, Any]:
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def claims(iss: sat.TokenIssuer, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"namespace": "ns1", "sa_name": "robot", "sa_uid": "u-sa", "audiences": [sat.ISSUER],
                            "expiration": 600}
    args.update(kw)
    return iss.claims(**args)


# --- JWT ------------------------------------------------------------------------------------------------
def test_jwt_roundtrip_and_kube_claims() -> None:
    iss = issuer()
    tok = iss.sign(claims(iss, pod=("p", "u-pod"), node=("n1", "u-node")))
    hdr = json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))
    assert hdr == {"alg": "ES256", "kid": iss.kid}
    c = iss.verify(tok)
    assert c["sub"] == "system:serviceaccount:ns1:robot" and c["iss"] == sat.ISSUER and c["aud"] == [sat.ISSUER]
    assert c["exp"] - c["iat"] == 600 and c["nbf"] == c["iat"] and c["jti"]
    assert c["kubernetes.io"] == {"namespace": "ns1", "serviceaccount": {"name": "robot", "uid": "u-sa"},
                                  "pod": {"name": "p", "uid": "u-pod"}, "node": {"name": "n1", "uid": "u-node"}}
    # the JWK verifies it too (what an OIDC relying party would use)
    jwk = sat.jwks(iss)["keys"][0]
    assert jwk["kid"] == iss.kid and jwk["crv"] == "P-256" and jwk["alg"] == "ES256"
    x = int.from_bytes(base64.urlsafe_b64decode(jwk["x"] + "=="), "big")
    y = int.from_bytes(base64.urlsafe_b64decode(jwk["y"] + "=="), "big")
    pub = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    assert pub.public_numbers() == iss.public.public_numbers()


def test_jwt_rejects_tampering_other_keys_time_and_audience() -> None:
    iss, other = issuer(), issuer()
    tok = iss.sign(claims(iss))
    h, p, s = tok.split(".")
    forged = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    forged["sub"] = "system:serviceaccount:kube-system:admin"
    p2 = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    for bad, why in [(f"{h}.{p2}.{s}", "invalid signature"), (other.sign(claims(other)), "invalid signature"),
                     (f"{h}.{p}.{s[:-4]}", "signature"), ("a.b", "not a JWT"), (f"{h}.!!.{s}", "malformed")]:
        with pytest.raises(sat.InvalidToken, match=why):
            iss.verify(bad)
    with pytest.raises(sat.InvalidToken, match="expired"):
        iss.verify(tok, now=time.time() + 600 + 61)
    iss.verify(tok, now=time.time() + 600 + 30)  # within the leeway
    with pytest.raises(sat.InvalidToken, match="not valid yet"):
        iss.verify(tok, now=time.time() - 120)
    vault = iss.sign(claims(iss, audiences=["vault"]))
    with pytest.raises(sat.InvalidToken, match="audiences"):
        iss.verify(vault)
    assert iss.verify(vault, audiences=["vault"])["aud"] == ["vault"]
    hs = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    with pytest.raises(sat.InvalidToken, match="algorithm"):
        iss.verify(f"{hs}.{p}.{s}")


# --- admission ------------------------------------------------------------------------------------------
def test_mount_api_access_as_kube() -> None:
    pod: dict[str, Any] = {"spec": {
        "initContainers": [{"name": "i"}],
        "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [
            {"name": "mine", "mountPath": sat.TOKEN_MOUNT_PATH}]}],
        "volumes": [{"name": "mine", "emptyDir": {}}]}}
    vname = sat.mount_api_access(pod)
    assert vname is not None and vname.startswith("kube-api-access-") and len(vname) == len("kube-api-access-") + 5
    spec = pod["spec"]
    want = {"name": vname, "readOnly": True, "mountPath": sat.TOKEN_MOUNT_PATH}
    assert spec["initContainers"][0]["volumeMounts"] == [want]
    assert spec["containers"][0]["volumeMounts"] == [want]
    assert spec["containers"][1]["volumeMounts"] == [{"name": "mine", "mountPath": sat.TOKEN_MOUNT_PATH}]
    vol = spec["volumes"][1]
    assert vol == {"name": vname, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}
    # every container already has something there: no volume
    pod2: dict[str, Any] = {"spec": {"containers": [{"name": "a", "volumeMounts": [
        {"name": "x", "mountPath": sat.TOKEN_MOUNT_PATH}]}], "volumes": [{"name": "x", "emptyDir": {}}]}}
    assert sat.mount_api_access(pod2) is None and len(pod2["spec"]["volumes"]) == 1


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[APIServer]:
    store = SQLiteStore(str(tmp_path / "state.db"))
    s = await build(store, require_auth=False)
    try:
        yield s
    finally:
        await s.stop()
        await store.close()


def rt(srv: APIServer, plural: str):  # type: ignore[no-untyped-def]
    r = srv.registry.get("", "v1", plural)
    assert r is not None
    return r


def pod_obj(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


async def test_admission_defaults_account_and_honours_automount(srv: APIServer) -> None:
    pods, sas = rt(srv, "pods"), rt(srv, "serviceaccounts")
    p = await srv.objects.create(pods, "default", pod_obj("p1"))
    assert p["spec"]["serviceAccountName"] == "default" and p["spec"]["serviceAccount"] == "default"
    [vol] = [v for v in p["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
    assert p["spec"]["containers"][0]["volumeMounts"] == [
        {"name": vol["name"], "readOnly": True, "mountPath": sat.TOKEN_MOUNT_PATH}]
    # opted out on the pod
    p = await srv.objects.create(pods, "default", pod_obj("p2", automountServiceAccountToken=False))
    assert not p["spec"].get("volumes") and not p["spec"]["containers"][0].get("volumeMounts")
    # opted out on the ServiceAccount; the pod may opt back in
    await srv.objects.create(sas, "default", {"metadata": {"name": "quiet"}, "automountServiceAccountToken": False})
    p = await srv.objects.create(pods, "default", pod_obj("p3", serviceAccountName="quiet"))
    assert not p["spec"].get("volumes")
    p = await srv.objects.create(pods, "default", pod_obj("p4", serviceAccountName="quiet",
                                                          automountServiceAccountToken=True))
    assert [v["name"][:16] for v in p["spec"]["volumes"]] == ["kube-api-access-"]
    # a missing account is refused, a missing namespace says so first
    with pytest.raises(ApiError) as ei:
        await srv.objects.create(pods, "default", pod_obj("p5", serviceAccountName="ghost"))
    assert ei.value.code == 403 and 'serviceaccount "ghost" not found' in str(ei.value.status())
    with pytest.raises(ApiError) as ei:
        await srv.objects.create(pods, "nowhere", pod_obj("p6"))
    assert ei.value.code == 404


async def test_token_request_and_authentication(srv: APIServer) -> None:
    pods, sas = rt(srv, "pods"), rt(srv, "serviceaccounts")
    sa = await srv.objects.create(sas, "default", {"metadata": {"name": "robot"}})
    pod = await srv.objects.create(pods, "default", pod_obj("w", serviceAccountName="robot"))
    iss = srv.sa_issuer
    tr = await sat.token_request(srv.objects, iss, "default", "robot", {"spec": {}})
    assert tr["kind"] == "TokenRequest" and tr["spec"]["expirationSeconds"] == 3600
    assert tr["spec"]["audiences"] == [sat.ISSUER]
    c = payload(tr["status"]["token"])
    assert c["exp"] - c["iat"] == 3600 and "pod" not in c["kubernetes.io"]
    who = await sat.authenticate(srv.objects, iss, tr["status"]["token"])
    assert who.name == "system:serviceaccount:default:robot"
    assert who.groups == ["system:serviceaccounts", "system:serviceaccounts:default"]
    # bound to the pod, with the admission's magic lifetime: a year, refresh asked after 3607 s
    ref = {"kind": "Pod", "apiVersion": "v1", "name": "w", "uid": pod["metadata"]["uid"]}
    tr = await sat.token_request(srv.objects, iss, "default", "robot",
                                 {"spec": {"expirationSeconds": 3607, "boundObjectRef": ref}})
    c = payload(tr["status"]["token"])
    assert c["kubernetes.io"]["pod"] == {"name": "w", "uid": pod["metadata"]["uid"]}
    assert c["kubernetes.io"]["serviceaccount"] == {"name": "robot", "uid": sa["metadata"]["uid"]}
    assert c["exp"] - c["iat"] == sat.EXTENDED_EXPIRATION and c["kubernetes.io"]["warnafter"] == c["iat"] + 3607
    exp_ts = time.mktime(time.strptime(tr["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(exp_ts - (c["iat"] + 3607)) <= 1
    bound = tr["status"]["token"]
    who = await sat.authenticate(srv.objects, iss, bound)
    assert who.extra["authentication.kubernetes.io/pod-name"] == ["w"]
    # bad requests
    for body, code in [({"spec": {"expirationSeconds": 60}}, 422),
                       ({"spec": {"boundObjectRef": {**ref, "uid": "other"}}}, 409),
                       ({"spec": {"boundObjectRef": {**ref, "name": "nope"}}}, 404),
                       ({"spec": {"boundObjectRef": {"kind": "Deployment", "name": "x"}}}, 422),
                       ({"kind": "Pod"}, 400)]:
        with pytest.raises(ApiError) as ei:
            await sat.token_request(srv.objects, iss, "default", "robot", body)
        assert ei.value.code == code, body
    with pytest.raises(ApiError) as ei:
        await sat.token_request(srv.objects, iss, "default", "default", {"spec": {"boundObjectRef": ref}})
    assert ei.value.code == 400  # the pod runs as another account
    with pytest.raises(ApiError) as ei:
        await sat.token_request(srv.objects, iss, "default", "nobody", {})
    assert ei.value.code == 404
    # the pod goes: its token stops working; the unbound one still works
    await srv.objects.delete(pods, "default", "w", {"gracePeriodSeconds": 0})
    with pytest.raises(sat.InvalidToken, match="deleted"):
        await sat.authenticate(srv.objects, iss, bound)
    # the account goes (and comes back with another uid): every token of it stops working
    unbound = (await sat.token_request(srv.objects, iss, "default", "robot", {}))["status"]["token"]
    await srv.objects.delete(sas, "default", "robot", {})
    await srv.objects.create(sas, "default", {"metadata": {"name": "robot"}})
    with pytest.raises(sat.InvalidToken, match="UID"):
        await sat.authenticate(srv.objects, iss, unbound)


# --- node: token manager and projected volume -----------------------------------------------------------
def test_token_refresh_rule() -> None:
    t = satokens.Token(b"x", issued=1000.0, expires=1000.0 + 3607)
    assert not t.needs_refresh(1000.0 + 0.79 * 3607)
    assert t.needs_refresh(1000.0 + 0.81 * 3607)
    assert t.needs_refresh(1000.0 + 3607)
    long = satokens.Token(b"x", issued=0.0, expires=10 * 24 * 3600.0)
    assert not long.needs_refresh(23 * 3600.0) and long.needs_refresh(25 * 3600.0)


class InProcessTokenApi:
    """The node's API client reduced to the one call the token manager makes, answered by the
    in-process API server's TokenRequest handler (no HTTP)."""

    def __init__(self, srv: APIServer) -> None:
        self.srv = srv
        self.calls: list[tuple[str, dict]] = []

    async def request(self, method: str, path: str, *, body: dict) -> dict:
        assert method == "POST"
        self.calls.append((path, body))
        parts = path.split("/")  # /api/v1/namespaces/NS/serviceaccounts/NAME/token
        return await sat.token_request(self.srv.objects, self.srv.sa_issuer, parts[4], parts[6], body)


async def test_projected_token_written_and_renewed(srv: APIServer, tmp_path: Path) -> None:
    await srv.objects.create(rt(srv, "serviceaccounts"), "default", {"metadata": {"name": "robot"}})
    vault = {"name": "vault", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 7200, "path": "v/t"}}]}}
    pod = await srv.objects.create(rt(srv, "pods"), "default", pod_obj("p", serviceAccountName="robot",
                                                                       volumes=[vault]))
    vname = next(v["name"] for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access-"))
    uid = pod["metadata"]["uid"]
    api = InProcessTokenApi(srv)
    m = satokens.TokenManager(api)
    toks = await m.for_pod(pod)
    assert set(toks) == {"vault/0", f"{vname}/0"}
    path, body = api.calls[-1]
    assert path == "/api/v1/namespaces/default/serviceaccounts/robot/token"
    assert body["spec"] == {"expirationSeconds": 3607,
                            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": uid}}
    assert api.calls[0][1]["spec"]["audiences"] == ["vault"]
    assert srv.sa_issuer.verify(toks["vault/0"].decode(), audiences=["vault"])["kubernetes.io"]["pod"]["uid"] == uid
    who = await sat.authenticate(srv.objects, srv.sa_issuer, toks[f"{vname}/0"].decode())
    assert who.name == "system:serviceaccount:default:robot"
    vols = prepare_volumes(str(tmp_path), pod, configmaps={"kube-root-ca.crt": {"data": {"ca.crt": "PEM"}}},
                           secrets={}, pv_paths={}, sa_tokens=toks)
    d = vols[vname]
    assert {f: Path(d, f).read_text() for f in ("token", "ca.crt", "namespace")} == \
        {"token": toks[f"{vname}/0"].decode(), "ca.crt": "PEM", "namespace": "default"}
    assert Path(vols["vault"], "v/t").read_text() == toks["vault/0"].decode()
    # nothing due: nothing requested; once due (80 %), the file is rewritten with a new token
    assert await satokens.refresh_pod_tokens(m, pod, vols) == 0 and len(api.calls) == 2
    for tok in m.cache.values():  # 85 % of their lifetime has passed
        shift = 0.85 * (tok.expires - tok.issued)
        tok.issued -= shift
        tok.expires -= shift
    assert await satokens.refresh_pod_tokens(m, pod, vols) == 2 and len(api.calls) == 4
    new = Path(d, "token").read_text()
    assert new != toks[f"{vname}/0"].decode() and payload(new)["jti"] != payload(toks[f"{vname}/0"].decode())["jti"]
    assert Path(vols["vault"], "v/t").read_text() != toks["vault/0"].decode()
    m.forget(uid)
    assert not m.cache
    # no token for a source: a config error naming the volume
    from tugboat.cluster.node.podspec import ConfigError
    with pytest.raises(ConfigError, match="volume vault: no service account token"):
        prepare_volumes(str(tmp_path / "b"), pod, configmaps={"kube-root-ca.crt": {"data": {"ca.crt": "x"}}},
                        secrets={}, pv_paths={}, sa_tokens={})


def test_root_ca_choice(tmp_path: Path) -> None:
    from tugboat.cluster.controllers.base import Options
    from tugboat.cluster.controllers.rootca import root_ca

    class Cfg:
        ca_data = b"FROM-KUBECONFIG"

    class Client:
        config = Cfg()

    f = tmp_path / "ca.crt"
    f.write_text("FROM-FILE")
    assert root_ca(Options(), Client()) == "FROM-KUBECONFIG"
    assert root_ca(Options(extra={"root_ca_file": str(f)}), Client()) == "FROM-FILE"
    assert root_ca(Options(cluster_signing_cert_file=str(f)), object()) == "FROM-FILE"
