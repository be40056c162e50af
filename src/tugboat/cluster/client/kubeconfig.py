"""Reading a kubeconfig file: server URL, CA, client certificate or bearer token.

Supports what kube's components and kubectl write: ``certificate-authority(-data)``,
``insecure-skip-tls-verify``, ``client-certificate(-data)`` + ``client-key(-data)``, ``token`` and
``tokenFile``. The current context picks the cluster and user.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass

import yaml

from tugboat.errors import InvalidArgument, NotFound


@dataclass
class KubeConfig:
    server: str
    namespace: str = "default"
    ca_data: bytes | None = None
    insecure: bool = False
    cert_data: bytes | None = None
    key_data: bytes | None = None
    token: str | None = None

    def ssl_context(self) -> ssl.SSLContext | bool:
        """An SSL context for aiohttp (``False`` for plain http)."""
        if not self.server.startswith("https://"):
            return False
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data:
            ctx.load_verify_locations(cadata=self.ca_data.decode())
        if self.cert_data and self.key_data:
            # load_cert_chain only takes files: write them to a private temp dir, then remove
            with tempfile.TemporaryDirectory() as d:
                cp, kp = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
                with open(os.open(cp, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                    f.write(self.cert_data)
                with open(os.open(kp, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                    f.write(self.key_data)
                ctx.load_cert_chain(cp, kp)
        return ctx


def _data(entry: dict, key: str, base_dir: str) -> bytes | None:
    if entry.get(key + "-data"):
        return base64.b64decode(entry[key + "-data"])
    path = entry.get(key)
    if path:
        if not os.path.isabs(path):
            path = os.path.join(base_dir, path)
        with open(path, "rb") as f:
            return f.read()
    return None


def _named(items: list[dict] | None, name: str, what: str) -> dict:
    for item in items or []:
        if item.get("name") == name:
            return item.get(what) or {}
    raise InvalidArgument(f"kubeconfig: {what} {name!r} not found")


def load_kubeconfig(path: str | None = None, context: str | None = None) -> KubeConfig:
    """Load ``path`` (default ``$KUBECONFIG`` or ``~/.kube/config``)."""
    path = path or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise NotFound(f"kubeconfig {path} not found") from None
    base_dir = os.path.dirname(os.path.abspath(path))
    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        contexts = doc.get("contexts") or []
        if not contexts:
            raise InvalidArgument(f"kubeconfig {path} has no contexts")
        ctx_name = contexts[0]["name"]
    ctx = _named(doc.get("contexts"), ctx_name, "context")
    cluster = _named(doc.get("clusters"), ctx["cluster"], "cluster")
    user = _named(doc.get("users"), ctx["user"], "user") if ctx.get("user") else {}
    token = user.get("token")
    if not token and user.get("tokenFile"):
        with open(user["tokenFile"]) as f:
            token = f.read().strip()
    return KubeConfig(
        server=cluster["server"].rstrip("/"),
        namespace=ctx.get("namespace") or "default",
        ca_data=_data(cluster, "certificate-authority", base_dir),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_data=_data(user, "client-certificate", base_dir),
        key_data=_data(user, "client-key", base_dir),
        token=token,
    )
