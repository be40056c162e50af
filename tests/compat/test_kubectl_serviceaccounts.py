"""Service account tokens against a real API server process with the real kubectl and plain HTTPS
(apiserver area, no root): `kubectl create token` (a protobuf TokenRequest), the token as a bearer
credential, refusals, TokenReview, OIDC discovery and the signing key's file mode."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from collections.abc import Iterator

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import require_binary
from tugboat.cluster.apiserver.serviceaccounts import ISSUER, TokenIssuer
from tugboat.cluster.apiserver.testing import ApiServerProcess


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    require_binary("kubectl")
    a = ApiServerProcess(tmp_path_factory.mktemp("sa") / "apiserver")
    try:
        a.start()
        yield a
    finally:
        a.stop()


def kubectl(api: ApiServerProcess, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    base = ["--kubeconfig", api.kubeconfig] if token is None else \
        ["--kubeconfig", "/dev/null", "--server", api.url, "--certificate-authority", api.ca, "--token", token]
    return subprocess.run(["kubectl", "--cache-dir", str(api.dir / "kcache"), *base, *args], capture_output=True,
                          text=True, env=env, timeout=60)


def http(api: ApiServerProcess, method: str, path: str, *, token: str | None = None, scheme: str = "Bearer",
         **kw: object) -> requests.Response:
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    cert = None if token else (str(api.dir / "pki" / "admin.crt"), str(api.dir / "pki" / "admin.key"))
    return requests.request(method, api.url + path, headers=headers, cert=cert, verify=api.ca, timeout=30,
                            **kw)  # type: ignore[arg-type]


def test_create_token_and_use_it(api: ApiServerProcess) -> None:
    r = kubectl(api, "create", "token", "default", "--duration", "15m")
    assert r.returncode == 0, r.stderr
    tok = r.stdout.strip()
    claims = TokenIssuer.from_file(str(api.dir / "pki" / "sa.key")).verify(tok)
    assert claims["exp"] - claims["iat"] == 900 and claims["sub"] == "system:serviceaccount:default:default"
    r = kubectl(api, "auth", "whoami", "-o", "json", token=tok)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)["status"]["userInfo"]
    assert info["username"] == "system:serviceaccount:default:default"
    assert info["groups"] == ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]
    assert kubectl(api, "get", "pods", token=tok).returncode == 0
    # the scheme is case-insensitive (the Python client sends "bearer")
    assert http(api, "GET", "/api/v1/namespaces/default/pods", token=tok, scheme="bearer").status_code == 200
    for bad in (tok[:-8] + "AAAAAAAA", tok.replace(".", "x", 1), "eyJ.a.b"):
        assert http(api, "GET", "/api/v1/namespaces/default/pods", token=bad).status_code == 401
    r = kubectl(api, "get", "pods", token=tok[:-8] + "AAAAAAAA")
    assert r.returncode != 0 and "Unauthorized" in r.stderr


def test_token_review_discovery_and_key(api: ApiServerProcess) -> None:
    tok = kubectl(api, "create", "token", "default").stdout.strip()
    vault = kubectl(api, "create", "token", "default", "--audience", "vault").stdout.strip()

    def review(token: str, audiences: list[str] | None = None) -> dict:
        spec: dict = {"token": token}
        if audiences:
            spec["audiences"] = audiences
        r = http(api, "POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                 json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec})
        assert r.status_code == 201, r.text
        return r.json()["status"]

    st = review(tok)
    sa = json.loads(kubectl(api, "get", "sa", "default", "-o", "json").stdout)
    assert st["authenticated"] is True and st["audiences"] == [ISSUER]
    assert st["user"]["username"] == "system:serviceaccount:default:default"
    assert st["user"]["uid"] == sa["metadata"]["uid"]
    assert review(vault, ["vault"])["authenticated"] is True
    st = review(vault)
    assert not st.get("authenticated") and "audiences" in st["error"]
    other = TokenIssuer(ec.generate_private_key(ec.SECP256R1()))
    st = review(other.sign(other.claims(namespace="default", sa_name="default", sa_uid=sa["metadata"]["uid"],
                                        audiences=[ISSUER], expiration=600)))
    assert not st.get("authenticated") and "invalid signature" in st["error"]
    assert review(api.token)["user"]["username"] == "admin"
    # discovery lists the subresource and the review, as kube does
    r = kubectl(api, "get", "--raw", "/api/v1")
    res = {x["name"]: x for x in json.loads(r.stdout)["resources"]}
    assert res["serviceaccounts/token"]["kind"] == "TokenRequest"
    assert res["serviceaccounts/token"]["group"] == "authentication.k8s.io"
    r = kubectl(api, "api-resources", "--api-group", "authentication.k8s.io", "-o", "name")
    assert "tokenreviews.authentication.k8s.io" in r.stdout.split()
    # OIDC discovery: the JWKS key is the one that verifies our tokens
    oidc = json.loads(kubectl(api, "get", "--raw", "/.well-known/openid-configuration").stdout)
    assert oidc["issuer"] == ISSUER and oidc["jwks_uri"].endswith("/openid/v1/jwks")
    [jwk] = json.loads(kubectl(api, "get", "--raw", "/openid/v1/jwks").stdout)["keys"]
    pub = ec.EllipticCurvePublicNumbers(int.from_bytes(base64.urlsafe_b64decode(jwk["x"] + "=="), "big"),
                                        int.from_bytes(base64.urlsafe_b64decode(jwk["y"] + "=="), "big"),
                                        ec.SECP256R1()).public_key()
    h, p, s = tok.split(".")
    sig = base64.urlsafe_b64decode(s + "==")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    pub.verify(encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")),
               f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))
    assert stat.S_IMODE(os.stat(api.dir / "pki" / "sa.key").st_mode) == 0o600
