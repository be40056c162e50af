"""`tug daemon --host tcp://…` with TLS client verification: only clients with a certificate from
the CA get in; the docker CLI (DOCKER_TLS_VERIFY) and `tug` (TUG_CERT_PATH) work through it,
hijacked attach/exec streams included (the client's TLS close_notify is a half-close)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess

import pytest

import engine_support
from conftest import require_binary
from engine_support import Daemon

TUG = engine_support.TUG


def _certs(d: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def builder(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1)))

    def save(fn: str, data: bytes) -> None:
        with open(os.path.join(d, fn), "wb") as f:
            f.write(data)

    def key_pem(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = builder("tug-test-ca", "tug-test-ca", ca_key).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256())
    save("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    for prefix, usage, san in (("server-", ExtendedKeyUsageOID.SERVER_AUTH, True), ("", ExtendedKeyUsageOID.CLIENT_AUTH, False)):
        k = ec.generate_private_key(ec.SECP256R1())
        b = builder("server" if san else "client", "tug-test-ca", k).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        save(prefix + "cert.pem", b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        save(prefix + "key.pem", key_pem(k))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root")
    pytest.importorskip("cryptography")
    base = tmp_path_factory.mktemp("tls")
    certs = str(base / "certs")
    os.makedirs(certs)
    _certs(certs)
    root = str(base / "root")
    os.makedirs(root)
    engine_support.bootstrap_busybox(root)
    port = _free_port()
    d = Daemon(root=root, sock=str(base / "unused.sock"), env={"TUG_ENGINE_NO_NETWORK": "1"})
    old = os.environ.get("TUG_CERT_PATH")
    os.environ["TUG_CERT_PATH"] = certs  # Daemon.start pings through DaemonClient
    log = open(os.path.join(root, "daemon-test.log"), "ab")  # noqa: SIM115
    d.proc = subprocess.Popen(
        [*TUG, "daemon", "--root", root, "--host", f"tcp://127.0.0.1:{port}", "--tlscacert",
         os.path.join(certs, "ca.pem"), "--tlscert", os.path.join(certs, "server-cert.pem"), "--tlskey",
         os.path.join(certs, "server-key.pem")],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=dict(os.environ, TUG_ENGINE_NO_NETWORK="1"),
        start_new_session=True)
    try:
        import time

        from tugboat.cli.client import DaemonClient

        end = time.time() + 30
        while not DaemonClient(f"tcp://127.0.0.1:{port}", timeout=2).ping():
            assert d.proc.poll() is None, d.log()
            assert time.time() < end, d.log()
            time.sleep(0.1)
        yield port, certs, d
    finally:
        d.stop()
        log.close()
        engine_support.cleanup_root(root)
        if old is None:
            os.environ.pop("TUG_CERT_PATH", None)
        else:
            os.environ["TUG_CERT_PATH"] = old


def test_only_verified_clients_get_in(tls_daemon) -> None:  # type: ignore[no-untyped-def]
    port, certs, _ = tls_daemon
    ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))  # no client certificate
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)), \
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        if not s.recv(100):
            raise ConnectionError("closed")
    ctx.load_cert_chain(os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")


def test_tcp_without_tls_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = subprocess.run([*TUG, "daemon", "--root", str(tmp_path / "r"), "--host", f"tcp://127.0.0.1:{_free_port()}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "needs --tlscacert" in p.stderr


def test_tug_and_docker_over_tls_with_streams(tls_daemon) -> None:  # type: ignore[no-untyped-def]
    port, certs, _ = tls_daemon
    env = dict(os.environ, TUG_HOST=f"tcp://127.0.0.1:{port}", TUG_CERT_PATH=certs)
    p = subprocess.run([*TUG, "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"],
                       capture_output=True, env=env, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (3, b"out\n", b"err\n")
    exe = require_binary("docker")
    denv = dict(os.environ, DOCKER_HOST=f"tcp://127.0.0.1:{port}", DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=certs,
                DOCKER_CONFIG=certs)
    denv.pop("DOCKER_CONTEXT", None)

    def docker(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], input=input, capture_output=True, env=denv, timeout=60)

    p = docker("run", "--rm", "busybox", "sh", "-c", "echo hi; exit 4")
    assert (p.returncode, p.stdout) == (4, b"hi\n"), p.stderr
    assert docker("run", "-d", "--name", "tls1", "busybox", "sleep", "60").returncode == 0
    try:
        p = docker("exec", "-i", "tls1", "sh", "-c", "cat; exit 5", input=b"through stdin\n")
        assert (p.returncode, p.stdout) == (5, b"through stdin\n"), p.stderr  # stdin EOF arrived
        p = subprocess.run([*TUG, "exec", "tls1", "echo", "tug-exec"], capture_output=True, env=env, timeout=60)
        assert (p.returncode, p.stdout) == (0, b"tug-exec\n"), p.stderr
    finally:
        docker("rm", "-f", "tls1")
