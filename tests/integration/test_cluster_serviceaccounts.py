"""Service account credentials on a real 1-node `tug cluster up`, with the real kubectl (apiserver and
nodes areas): a pod running the host's kubectl with no kubeconfig talks to the cluster through its
mounted token (in-cluster config); `kubectl create token` gives a bearer token kubectl can use from
outside; expired, wrongly signed and orphaned (pod deleted) tokens are refused; opting out of the
automount leaves no volume; every namespace gets the ``kube-root-ca.crt`` ConfigMap."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cluster_support import KubectlCluster, up_cluster
from conftest import require_binary
from tugboat.cluster.apiserver.serviceaccounts import ISSUER, TokenIssuer

pytestmark = pytest.mark.slow

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def kubectl_binary() -> str:
    """The host's real kubectl (a static Go binary; gcloud's dispatcher keeps versioned ones beside it)."""
    path = os.path.realpath(require_binary("kubectl"))
    versioned = os.path.join(os.path.dirname(path), "kubectl.1.32")
    return versioned if os.path.exists(versioned) else path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubectlCluster]:
    base = tmp_path_factory.mktemp("satokens")
    with up_cluster(base, nodes=1, prefix="a", subnet16="172.26", cluster_cidr="10.243.0.0/16") as state:
        yield KubectlCluster(state, str(base / "kcache"))


def pki(c: KubectlCluster, name: str) -> str:
    return os.path.join(os.path.dirname(c.state["kubeconfig"]), "pki", name)


def server_url(c: KubectlCluster) -> str:
    return str(c.kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout)


def as_bearer(c: KubectlCluster, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl with nothing but the server, the cluster CA and ``token``."""
    ca = pki(c, "ca.crt")
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run(["kubectl", "--kubeconfig", "/dev/null", "--cache-dir", c.cache, "--server", server_url(c),
                           "--certificate-authority", ca, "--token", token, *args],
                          capture_output=True, text=True, env=env, timeout=60)


def running(c: KubectlCluster, pod: str, timeout: float = 90) -> dict:
    return c.wait(f"{pod} running", lambda: (p := c.pod(pod))["status"].get("phase") == "Running" and p, timeout)


def test_in_cluster_kubectl_uses_the_mounted_token(cluster: KubectlCluster) -> None:
    kbin = kubectl_binary()
    c = cluster
    c.kubectl("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Pod
metadata: {{name: incluster}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    volumeMounts: [{{name: kbin, mountPath: /kbin, readOnly: true}}]
  volumes:
  - {{name: kbin, hostPath: {{path: {os.path.dirname(kbin)}, type: Directory}}}}
""")
    pod = running(c, "incluster")
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "default"
    [vol] = [v for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
    assert {"name": vol["name"], "readOnly": True, "mountPath": SA_DIR} in spec["containers"][0]["volumeMounts"]

    def sh(script: str) -> subprocess.CompletedProcess[str]:
        return c.kubectl("exec", "incluster", "--", "sh", "-c", script, check=False, timeout=90)

    r = sh(f"ls {SA_DIR}; cat {SA_DIR}/namespace; echo; env | grep ^KUBERNETES_SERVICE_")
    assert r.returncode == 0, r.stderr
    for want in ("ca.crt", "namespace", "token", "default", "KUBERNETES_SERVICE_HOST=10.96.0.1",
                 "KUBERNETES_SERVICE_PORT=443"):
        assert want in r.stdout, r.stdout
    ca = Path(pki(c, "ca.crt")).read_text()
    assert sh(f"cat {SA_DIR}/ca.crt").stdout == ca
    assert sh(f"echo x > {SA_DIR}/token").returncode != 0  # mounted read-only
    # kubectl inside the pod: no kubeconfig anywhere, so client-go's in-cluster config
    exe = f"/kbin/{os.path.basename(kbin)}"
    r = sh(f"HOME=/tmp {exe} get pods -o name")
    assert r.returncode == 0 and "pod/incluster" in r.stdout, (r.stdout, r.stderr)
    r = sh(f"HOME=/tmp {exe} auth whoami -o jsonpath='{{.status.userInfo.username}} {{.status.userInfo.groups}}'")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("system:serviceaccount:default:default "), r.stdout
    assert "system:serviceaccounts:default" in r.stdout and "system:authenticated" in r.stdout
    # the token is bound to this pod (and to its node)
    tok = sh(f"cat {SA_DIR}/token").stdout.strip()
    claims = TokenIssuer.from_file(pki(c, "sa.key")).verify(tok)
    assert claims["kubernetes.io"]["pod"] == {"name": "incluster", "uid": pod["metadata"]["uid"]}
    assert claims["kubernetes.io"]["node"]["name"] == spec["nodeName"]
    assert "warnafter" in claims["kubernetes.io"]


def test_python_client_in_cluster_config_with_a_pods_files(cluster: KubectlCluster, tmp_path: Path) -> None:
    """The kubernetes Python client's load_incluster_config(), fed the files and environment a pod
    gets (copied out of a running pod; the API server is reached at its node-side address)."""
    kubernetes = pytest.importorskip("kubernetes")
    from kubernetes.config.incluster_config import InClusterConfigLoader

    c = cluster
    c.kubectl("run", "pyclient", "--image=busybox", "--image-pull-policy=IfNotPresent", "--", "sleep", "3600")
    running(c, "pyclient")
    for f in ("token", "ca.crt"):
        (tmp_path / f).write_text(c.kubectl("exec", "pyclient", "--", "cat", f"{SA_DIR}/{f}").stdout)
    host, _, port = server_url(c).removeprefix("https://").rpartition(":")
    cfg = kubernetes.client.Configuration()
    InClusterConfigLoader(str(tmp_path / "token"), str(tmp_path / "ca.crt"),
                          environ={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}).load_and_set(cfg)
    with kubernetes.client.ApiClient(cfg) as api:
        names = [p.metadata.name for p in kubernetes.client.CoreV1Api(api).list_namespaced_pod("default").items]
        assert "pyclient" in names
        who = kubernetes.client.AuthenticationV1Api(api).create_self_subject_review({"apiVersion":
                                                                                     "authentication.k8s.io/v1",
                                                                                     "kind": "SelfSubjectReview"})
        assert who.status.user_info.username == "system:serviceaccount:default:default"
        assert who.status.user_info.extra["authentication.kubernetes.io/pod-name"] == ["pyclient"]


def test_create_token_from_outside_and_refusals(cluster: KubectlCluster) -> None:
    c = cluster
    tok = c.kubectl("create", "token", "default").stdout.strip()
    r = as_bearer(c, tok, "get", "pods", "-A", "-o", "name")
    assert r.returncode == 0, r.stderr
    r = as_bearer(c, tok, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert r.stdout == "system:serviceaccount:default:default", (r.stdout, r.stderr)
    # the cluster's signing key, but expired an hour ago
    key = pki(c, "sa.key")
    iss = TokenIssuer.from_file(key)
    sa = c.json("serviceaccount", "default")
    kw = {"namespace": "default", "sa_name": "default", "sa_uid": sa["metadata"]["uid"], "audiences": [ISSUER]}
    fresh = iss.sign(iss.claims(expiration=600, **kw))
    assert as_bearer(c, fresh, "get", "pods").returncode == 0  # the same claims, in time: accepted
    expired = iss.sign(iss.claims(expiration=600, now=time.time() - 3600, **kw))
    other = TokenIssuer(ec.generate_private_key(ec.SECP256R1()))
    forged = other.sign(other.claims(expiration=600, **kw))
    wrong_aud = iss.sign(iss.claims(**{**kw, "audiences": ["vault"]}, expiration=600))
    for bad in (expired, forged, wrong_aud, tok[:-6] + "AAAAAA"):
        r = as_bearer(c, bad, "get", "pods")
        assert r.returncode != 0 and "Unauthorized" in r.stderr, r.stderr
    # the audience a token asks for is the one it gets
    vault = c.kubectl("create", "token", "default", "--audience", "vault").stdout.strip()
    assert iss.verify(vault, audiences=["vault"])["aud"] == ["vault"]
    assert "Unauthorized" in as_bearer(c, vault, "get", "pods").stderr
    # kube's limits
    r = c.kubectl("create", "token", "default", "--duration", "1m", check=False)
    assert r.returncode != 0 and "may not specify a duration less than 10 minutes" in r.stderr
    r = c.kubectl("create", "token", "nobody", check=False)
    assert r.returncode != 0 and 'serviceaccounts "nobody" not found' in r.stderr


def test_token_of_a_deleted_pod_or_account_is_refused(cluster: KubectlCluster) -> None:
    c = cluster
    c.kubectl("create", "serviceaccount", "robot")
    c.kubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: victim}
spec:
  serviceAccountName: robot
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}]
""")
    bound = c.kubectl("create", "token", "robot", "--bound-object-kind", "Pod", "--bound-object-name",
                      "victim").stdout.strip()
    unbound = c.kubectl("create", "token", "robot").stdout.strip()
    assert as_bearer(c, bound, "get", "pods").returncode == 0
    r = c.kubectl("create", "token", "default", "--bound-object-kind", "Pod", "--bound-object-name", "victim",
                  check=False)
    assert r.returncode != 0 and "different serviceaccount name" in r.stderr
    c.kubectl("delete", "pod", "victim", "--grace-period=0", "--force", "--wait=true", timeout=90)
    r = as_bearer(c, bound, "get", "pods")
    assert r.returncode != 0 and "Unauthorized" in r.stderr, r.stderr
    assert as_bearer(c, unbound, "get", "pods").returncode == 0
    c.kubectl("delete", "serviceaccount", "robot")
    r = as_bearer(c, unbound, "get", "pods")
    assert r.returncode != 0 and "Unauthorized" in r.stderr
    # a pod naming a missing account is refused, as kube's admission does
    r = c.kubectl("run", "orphan", "--image=busybox", "--overrides", '{"spec":{"serviceAccountName":"robot"}}',
                  check=False)
    assert r.returncode != 0 and 'serviceaccount "robot" not found' in r.stderr, r.stderr


def test_long_lived_token_secret(cluster: KubectlCluster) -> None:
    """A kubernetes.io/service-account-token Secret gets a token (kube's tokens controller) that works
    until the Secret is deleted."""
    c = cluster
    c.kubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: ServiceAccount
metadata: {name: ci}
---
apiVersion: v1
kind: Secret
metadata:
  name: ci-token
  annotations: {kubernetes.io/service-account.name: ci}
type: kubernetes.io/service-account-token
""")
    sec = c.wait("ci-token filled", lambda: (s := c.json("secret", "ci-token")).get("data", {}).get("token") and s, 30)
    data = {k: base64.b64decode(v).decode() for k, v in sec["data"].items()}
    assert data["namespace"] == "default" and data["ca.crt"] == Path(pki(c, "ca.crt")).read_text()
    sa = c.json("serviceaccount", "ci")
    assert sec["metadata"]["annotations"]["kubernetes.io/service-account.uid"] == sa["metadata"]["uid"]
    r = as_bearer(c, data["token"], "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert r.stdout == "system:serviceaccount:default:ci", r.stderr
    c.kubectl("delete", "secret", "ci-token")
    r = as_bearer(c, data["token"], "get", "pods")
    assert r.returncode != 0 and "Unauthorized" in r.stderr


def test_automount_opt_out_and_root_ca_configmap(cluster: KubectlCluster) -> None:
    c = cluster
    c.kubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: ServiceAccount
metadata: {name: quiet}
automountServiceAccountToken: false
---
apiVersion: v1
kind: Pod
metadata: {name: notoken}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: quietpod}
spec:
  serviceAccountName: quiet
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}]
""")
    for name in ("notoken", "quietpod"):
        pod = running(c, name)
        assert not [v for v in pod["spec"].get("volumes") or [] if v["name"].startswith("kube-api-access-")]
        assert not pod["spec"]["containers"][0].get("volumeMounts")
        r = c.kubectl("exec", name, "--", "ls", SA_DIR, check=False)
        assert r.returncode != 0, r.stdout
    # the root CA publisher: a new namespace gets kube-root-ca.crt, and it comes back when deleted
    ca = Path(pki(c, "ca.crt")).read_text()
    c.kubectl("create", "namespace", "sat-ns")

    def cm() -> dict | None:
        r = c.kubectl("get", "configmap", "kube-root-ca.crt", "-n", "sat-ns", "-o", "json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    got = c.wait("kube-root-ca.crt in sat-ns", cm, 30)
    assert got["data"] == {"ca.crt": ca}
    assert "kube-apiserver" in got["metadata"]["annotations"]["kubernetes.io/description"]
    c.kubectl("delete", "configmap", "kube-root-ca.crt", "-n", "sat-ns")
    c.wait("kube-root-ca.crt back", lambda: (x := cm()) is not None and x["metadata"]["uid"] != got["metadata"]["uid"],
           30)
    c.kubectl("patch", "configmap", "kube-root-ca.crt", "-n", "sat-ns", "-p", '{"data":{"ca.crt":"junk"}}')
    c.wait("kube-root-ca.crt restored", lambda: (x := cm()) is not None and x["data"] == {"ca.crt": ca}, 30)
    # a pod in the new namespace gets its token volume filled
    c.kubectl("run", "-n", "sat-ns", "fresh", "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
              "sleep", "3600")
    c.wait("fresh running", lambda: c.json("pod", "fresh", "-n", "sat-ns")["status"].get("phase") == "Running", 90)
    r = c.kubectl("exec", "-n", "sat-ns", "fresh", "--", "cat", f"{SA_DIR}/namespace")
    assert r.stdout == "sat-ns"
