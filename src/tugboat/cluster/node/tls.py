"""TLS for the node agent's own endpoint (the kubelet API), as the kubelet does it.

- The agent serves HTTPS with a *serving certificate signed by the cluster CA*, obtained through the
  API server: the agent makes a key and a certificate request (CN ``system:node:<name>``, O
  ``system:nodes``, SANs = its addresses), posts a ``certificates.k8s.io/v1``
  CertificateSigningRequest with signer ``kubernetes.io/kubelet-serving``, and waits until the
  controller manager's signer (:mod:`tugboat.cluster.controllers.certificates`) puts the
  certificate (followed by the CA certificate) in ``status.certificate``. Key and certificate are
  kept under ``<agent root>/pki/`` and reused while valid for the same addresses.
- Clients must present a certificate signed by the cluster CA (``CERT_OPTIONAL`` in the handshake
  so that a request without one gets a 401 answer, not a bare handshake failure); only the API
  server's client identity (CN ``kube-apiserver-kubelet-client``) and members of
  ``system:masters`` are allowed (403 otherwise).

Pure crypto helpers (``make_serving_request``, ``check_serving_request``, ``sign_serving_request``)
are shared with the signer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import ipaddress
import logging
import os
import secrets
import ssl
import time
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tugboat.cluster.client.resources import Resource
from tugboat.cluster.client.rest import ApiError, ConflictError, failure, retry, transient
from tugboat.errors import InvalidArgument, Unavailable
from tugboat.util.fs import write_atomic

log = logging.getLogger(__name__)

SIGNER = "kubernetes.io/kubelet-serving"
SERVING_USAGES = ["digital signature", "key encipherment", "server auth"]
APISERVER_CLIENT_CN = "kube-apiserver-kubelet-client"
ALLOWED_USERS = frozenset({APISERVER_CLIENT_CN})
ALLOWED_GROUPS = frozenset({"system:masters"})
CSRS = Resource("certificates.k8s.io", "v1", "certificatesigningrequests", "CertificateSigningRequest",
                namespaced=False)


# ---- certificate requests (node side) and their checks/signature (signer side)
def make_serving_request(node_name: str, addresses: list[str]) -> tuple[bytes, bytes]:
    """A new EC key and a PEM certificate request for ``system:node:<name>`` covering ``addresses``
    (IPs and DNS names). Returns (key PEM, CSR PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for a in dict.fromkeys(addresses):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            sans.append(x509.DNSName(a))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}")]))
           .add_extension(x509.SubjectAlternativeName(sans), critical=False)
           .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def check_serving_request(csr_pem: bytes, usages: list[str]) -> str | None:
    """Why a kubelet-serving request must not be signed, or None when it is acceptable (what kube's
    kubelet-serving signer insists on: a node identity, server usages only, DNS/IP SANs only)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        return f"the request is not a PEM certificate request: {e}"
    if not csr.is_signature_valid:
        return "the request's signature is invalid"
    cns = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if len(cns) != 1 or not str(cns[0]).startswith("system:node:") or len(str(cns[0])) <= len("system:node:"):
        return "the subject's common name must be system:node:<node name>"
    if orgs != ["system:nodes"]:
        return "the subject's organization must be exactly system:nodes"
    if "server auth" not in usages or not set(usages) <= set(SERVING_USAGES):
        return f"usages must include 'server auth' and be among {SERVING_USAGES}"
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the request names no DNS name or IP address"
    if any(not isinstance(n, (x509.DNSName, x509.IPAddress)) for n in san):
        return "only DNS names and IP addresses are allowed as subject alternative names"
    if not len(san):
        return "the request names no DNS name or IP address"
    return None


def sign_serving_request(csr_pem: bytes, ca_cert_pem: bytes, ca_key_pem: bytes, *, seconds: int = 365 * 86400) -> bytes:
    """The serving certificate for an acceptable request, signed by the CA; PEM of the certificate
    followed by the CA certificate."""
    csr = x509.load_pem_x509_csr(csr_pem)
    ca = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument("the cluster signing key must be an EC key")
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + datetime.timedelta(seconds=seconds), ca.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(san, critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)


def ca_cert_hash(ca_pem: bytes) -> str:
    """kubeadm's CA pin: ``sha256:`` + hex SHA-256 of the CA's DER SubjectPublicKeyInfo."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    spki = ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def _split_pem(data: bytes) -> list[bytes]:
    out, cur = [], b""
    for line in data.splitlines(keepends=True):
        cur += line
        if line.startswith(b"-----END CERTIFICATE-----"):
            out.append(cur)
            cur = b""
    return out


def _usable(cert_path: str, key_path: str, ca_path: str, addresses: list[str]) -> bool:
    """An existing serving certificate: signed by ``ca_path``, covering ``addresses``, and more than a
    tenth of its lifetime left."""
    try:
        with open(cert_path, "rb") as f:
            leaf = x509.load_pem_x509_certificate(f.read())
        with open(ca_path, "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
        if not os.path.exists(key_path):
            return False
        leaf.verify_directly_issued_by(ca)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
        if not set(addresses) <= have:
            return False
        life = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds()
        left = (leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).total_seconds()
        return left > life / 10
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False


async def bootstrap_serving_cert(client: Any, node_name: str, addresses: list[str], pki_dir: str, *,
                                 ca_pem: bytes | None = None, ca_hash: str | None = None,
                                 timeout: float = 60.0) -> tuple[str, str, str]:
    """The node's serving certificate, key and the cluster CA as files under ``pki_dir``
    (``kubelet.crt``, ``kubelet.key``, ``ca.crt``): reused when still good, else requested through a
    CertificateSigningRequest and awaited. ``ca_pem`` is the CA the node trusts (from its kubeconfig);
    without it the CA that comes back with the certificate is taken, and checked against ``ca_hash``
    (``sha256:<hex>`` of its public key, as kubeadm's ``--discovery-token-ca-cert-hash``) when given."""
    os.makedirs(pki_dir, mode=0o700, exist_ok=True)
    cert_path, key_path, ca_path = (os.path.join(pki_dir, n) for n in ("kubelet.crt", "kubelet.key", "ca.crt"))
    if ca_pem is not None:
        if ca_hash and ca_cert_hash(ca_pem) != ca_hash:
            raise InvalidArgument(f"the cluster CA's hash is {ca_cert_hash(ca_pem)}, not {ca_hash}")
        write_atomic(ca_path, ca_pem)
    if os.path.exists(ca_path) and _usable(cert_path, key_path, ca_path, addresses):
        return cert_path, key_path, ca_path
    key_pem, csr_pem = make_serving_request(node_name, addresses)
    body = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": f"csr-{node_name}-{secrets.token_hex(3)}"[:253],
                         "labels": {"tugboat.io/node": node_name[:63]}},
            "spec": {"request": base64.b64encode(csr_pem).decode(), "signerName": SIGNER,
                     "usages": SERVING_USAGES}}
    name = body["metadata"]["name"]
    deadline = time.monotonic() + timeout

    async def create() -> None:
        # a busy or starting API server may time a request out: the name is fixed, so a create that
        # went through before its answer was lost comes back as 409 on the next try
        with contextlib.suppress(ConflictError):
            await client.create(CSRS, body)

    try:
        await retry(f"creating certificate signing request {name}", create, deadline=deadline)
    except ApiError as e:
        raise Unavailable(f"could not create the certificate signing request for node {node_name}: "
                          f"{failure(e)}") from None
    chain = b""
    last_error = ""
    warn_at = time.monotonic() + 30
    while time.monotonic() < deadline:
        if time.monotonic() > warn_at:
            warn_at = float("inf")
            log.warning("node %s: certificate signing request %s is not signed after 30s; is the controller "
                        "manager running with --cluster-signing-cert-file/--cluster-signing-key-file?", node_name, name)
        try:
            cur = await client.get(CSRS, name)
        except ApiError as e:
            if e.code == 404:
                raise Unavailable(f"certificate signing request {name} was deleted before it was signed") from None
            last_error = failure(e)
            await asyncio.sleep(0.5)
            continue
        except Exception as e:
            if not transient(e):
                raise
            last_error = failure(e)
            log.warning("node %s: waiting for certificate signing request %s: %s", node_name, name, last_error)
            await asyncio.sleep(0.5)
            continue
        if (cur.get("spec") or {}).get("request") != body["spec"]["request"]:
            raise InvalidArgument(f"certificate signing request {name} exists and is not node {node_name}'s request")
        st = cur.get("status") or {}
        for c in st.get("conditions") or []:
            if c.get("type") in ("Denied", "Failed") and c.get("status", "True") == "True":
                raise InvalidArgument(f"certificate signing request {name} {c['type'].lower()}: "
                                      f"{c.get('reason', '')} {c.get('message', '')}".strip())
        if st.get("certificate"):
            chain = base64.b64decode(st["certificate"])
            break
        await asyncio.sleep(0.1)
    if not chain:
        raise Unavailable(f"certificate signing request {name} of node {node_name} was not signed within "
                          f"{timeout:.0f}s: is the controller manager running with --cluster-signing-cert-file/"
                          "--cluster-signing-key-file?" + (f" (the last request failed: {last_error})" if last_error
                                                           else ""))
    certs = _split_pem(chain)
    if not certs:
        raise InvalidArgument(f"certificate signing request {name} returned no certificate")
    if ca_pem is None:
        if len(certs) < 2:
            raise InvalidArgument("the signer returned no CA certificate; give the cluster CA (--ca-file)")
        ca_pem = certs[-1]
        if ca_hash and ca_cert_hash(ca_pem) != ca_hash:
            raise InvalidArgument(f"the cluster CA's hash is {ca_cert_hash(ca_pem)}, not {ca_hash}")
        write_atomic(ca_path, ca_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    leaf = x509.load_pem_x509_certificate(certs[0])
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise InvalidArgument(f"the certificate of {name} is not signed by the cluster CA") from None
    write_atomic(key_path, key_pem, mode=0o600)
    write_atomic(cert_path, certs[0])
    return cert_path, key_path, ca_path


# ---- the serving side
def server_ssl_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(client_ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # no certificate -> 401 from the handler, a bad one fails the handshake
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def authorized(identity: tuple[str, list[str]]) -> bool:
    user, groups = identity
    return user in ALLOWED_USERS or bool(ALLOWED_GROUPS.intersection(groups))
