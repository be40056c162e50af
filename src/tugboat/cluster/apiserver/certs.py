"""The cluster's PKI: a CA, the API server's serving certificate, the admin client certificate,
a static admin bearer token, and the admin kubeconfig.

Layout under DATA_DIR (created on first start, reused afterwards; private keys mode 0600):
``pki/ca.crt ca.key apiserver.crt apiserver.key admin.crt admin.key sa.key sa.pub`` (sa.key: the
service-account token signing key, EC P-256), ``tokens.csv``
(``token,user,uid,"group1,group2"`` as kube-apiserver's --token-auth-file), ``admin.kubeconfig``
(client certificate) and ``admin-token.kubeconfig`` (bearer token).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import secrets
import ssl

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tugboat.util.fs import write_atomic


def _write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, data, mode=mode)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(k: ec.EllipticCurvePrivateKey) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _cert(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
          *, ca: bool, sans: list[x509.GeneralName] | None = None, client: bool = False, server: bool = False,
          days: int = 3650) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                          crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


class ClusterPKI:
    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.pki = os.path.join(data_dir, "pki")

    def path(self, name: str) -> str:
        return os.path.join(self.pki, name)

    @property
    def ca_cert(self) -> str:
        return self.path("ca.crt")

    @property
    def sa_key(self) -> str:
        return self.path("sa.key")

    def ensure(self, hosts: list[str]) -> None:
        """Create whatever is missing. The serving certificate covers ``hosts`` + localhost/127.0.0.1."""
        os.makedirs(self.pki, exist_ok=True)
        if not os.path.exists(self.ca_cert):
            k = _key()
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tugboat-ca")])
            c = _cert(name, k, name, k, ca=True)
            _write_atomic(self.path("ca.key"), _key_pem(k), 0o600)
            _write_atomic(self.ca_cert, c.public_bytes(serialization.Encoding.PEM))
        ca_key = serialization.load_pem_private_key(_read(self.path("ca.key")), None)
        ca = x509.load_pem_x509_certificate(_read(self.ca_cert))
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        # 10.96.0.1: the ``kubernetes`` Service's cluster IP, which in-cluster clients dial
        want = {"localhost", "127.0.0.1", "10.96.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local", *hosts}
        srv = self.path("apiserver.crt")
        regen = not os.path.exists(srv)
        if not regen:
            cur = x509.load_pem_x509_certificate(_read(srv))
            try:
                san = cur.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                have = {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
                    str(v) for v in san.get_values_for_type(x509.IPAddress)}
                regen = not want <= have
            except x509.ExtensionNotFound:
                regen = True
        if regen:
            sans: list[x509.GeneralName] = []
            for h in sorted(want):
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    sans.append(x509.DNSName(h))
            k = _key()
            c = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), k, ca.subject, ca_key,
                      ca=False, sans=sans, server=True)
            _write_atomic(self.path("apiserver.key"), _key_pem(k), 0o600)
            _write_atomic(srv, c.public_bytes(serialization.Encoding.PEM))
        if not os.path.exists(self.path("admin.crt")):
            self.issue_client("admin", ["system:masters"], "admin")
        if not os.path.exists(self.sa_key):
            # the service-account token signing key (kube-apiserver's --service-account-signing-key-file)
            k = _key()
            _write_atomic(self.sa_key, _key_pem(k), 0o600)
            _write_atomic(self.path("sa.pub"), k.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        tok = os.path.join(self.data_dir, "tokens.csv")
        if not os.path.exists(tok):
            _write_atomic(tok, f'{secrets.token_urlsafe(32)},admin,admin,"system:masters"\n'.encode(), 0o600)

    def issue_client(self, user: str, groups: list[str], basename: str) -> tuple[str, str]:
        """A client certificate (CN=user, O=groups) signed by the cluster CA; returns (cert, key) paths."""
        ca_key = serialization.load_pem_private_key(_read(self.path("ca.key")), None)
        ca = x509.load_pem_x509_certificate(_read(self.ca_cert))
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
        k = _key()
        c = _cert(x509.Name(attrs), k, ca.subject, ca_key, ca=False, client=True)
        kp, cp = self.path(f"{basename}.key"), self.path(f"{basename}.crt")
        _write_atomic(kp, _key_pem(k), 0o600)
        _write_atomic(cp, c.public_bytes(serialization.Encoding.PEM))
        return cp, kp

    def tokens(self) -> dict[str, tuple[str, list[str]]]:
        out: dict[str, tuple[str, list[str]]] = {}
        path = os.path.join(self.data_dir, "tokens.csv")
        if not os.path.exists(path):
            return out
        import csv
        with open(path, newline="") as f:
            for row in csv.reader(f):
                if len(row) >= 2 and not row[0].startswith("#"):
                    groups = row[3].split(",") if len(row) > 3 and row[3] else []
                    out[row[0]] = (row[1], groups)
        return out

    def admin_token(self) -> str:
        for tok, (user, _) in self.tokens().items():
            if user == "admin":
                return tok
        raise RuntimeError("no admin token")

    def server_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.path("apiserver.crt"), self.path("apiserver.key"))
        ctx.load_verify_locations(self.ca_cert)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def write_client_kubeconfig(self, path: str, server_url: str, cert: str, key: str, user: str) -> None:
        def b64(p: str) -> str:
            return base64.b64encode(_read(p)).decode()

        doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
               "clusters": [{"name": "tugboat", "cluster": {"server": server_url,
                                                            "certificate-authority-data": b64(self.ca_cert)}}],
               "users": [{"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
               "contexts": [{"name": "tugboat", "context": {"cluster": "tugboat", "user": user}}],
               "current-context": "tugboat"}
        _write_atomic(os.path.abspath(path), yaml.safe_dump(doc, sort_keys=False).encode(), 0o600)

    def write_kubeconfigs(self, server_url: str) -> str:
        """Write admin.kubeconfig (client certificate) and admin-token.kubeconfig; returns the first's path."""
        def b64(p: str) -> str:
            return base64.b64encode(_read(p)).decode()

        def kc(user: dict[str, str]) -> bytes:
            return yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "preferences": {},
                "clusters": [{"name": "tugboat", "cluster": {"server": server_url,
                                                             "certificate-authority-data": b64(self.ca_cert)}}],
                "users": [{"name": "admin", "user": user}],
                "contexts": [{"name": "tugboat", "context": {"cluster": "tugboat", "user": "admin",
                                                             "namespace": "default"}}],
                "current-context": "tugboat",
            }, sort_keys=False).encode()

        main = os.path.join(self.data_dir, "admin.kubeconfig")
        _write_atomic(main, kc({"client-certificate-data": b64(self.path("admin.crt")),
                                "client-key-data": b64(self.path("admin.key"))}), 0o600)
        _write_atomic(os.path.join(self.data_dir, "admin-token.kubeconfig"), kc({"token": self.admin_token()}), 0o600)
        return main
