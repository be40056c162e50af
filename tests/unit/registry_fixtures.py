"""Shared helpers for the registry tests: a registry server on a free loopback port, test images."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from proc_support import stop_process
from tugboat.content.store import ContentStore
from tugboat.distribution.server import make_app
from tugboat.util.net import free_port

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ThreadServer:
    """``make_app(root, **kw)`` served on 127.0.0.1:<free port> from a background thread."""

    def __init__(self, root: str, port: int = 0, ssl_ctx: Any = None, **kw: Any) -> None:
        self.ssl_ctx = ssl_ctx
        self.root = root
        self.kw = kw
        self.port = port
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        app = make_app(self.root, **self.kw)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self.ssl_ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def start(self) -> ThreadServer:
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("registry server did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def thread_server(root: str, ssl_ctx: Any = None, **kw: Any) -> Iterator[ThreadServer]:
    s = ThreadServer(root, ssl_ctx=ssl_ctx, **kw).start()
    try:
        yield s
    finally:
        s.stop()


class ProcessServer:
    """``tug registry serve`` as a child process (for restarts)."""

    def __init__(self, root: str, port: int | None = None, args: list[str] | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProcessServer:
        cmd = [sys.executable, "-m", "tugboat.cli.main", "registry", "serve", "--addr", f"127.0.0.1:{self.port}",
               "--root", self.root, *self.args]
        env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "src"))
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("registry did not start listening")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def make_layer(seed: str, size: int) -> tuple[bytes, str]:
    """A gzip layer tar holding one file of ``size`` pseudo-random bytes; (blob, diff_id)."""
    data = bytearray()
    h = hashlib.sha256(seed.encode()).digest()
    while len(data) < size:
        h = hashlib.sha256(h).digest()
        data += h
    data = bytes(data[:size])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo(f"file-{seed}")
        ti.size = len(data)
        ti.mtime = 0
        t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, compresslevel=1, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest()


def make_image(store: ContentStore, name: str = "img", layers: int = 2, size: int = 50_000) -> str:
    """Write a small OCI image into ``store``; returns its manifest digest."""
    descs, diffs = [], []
    for i in range(layers):
        blob, diff = make_layer(f"{name}-{i}", size)
        d = store.put(blob)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": len(blob)})
        diffs.append(diff)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                      "rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
    cd = store.put(cfg)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                                      "size": len(cfg)}, "layers": descs}).encode()
    return store.put(manifest)


def write_oci_layout(store: ContentStore, manifest_digest: str, path: str, tag: str = "latest") -> None:
    """An OCI image layout directory (for skopeo ``oci:PATH:TAG``) holding the image."""
    doc = json.loads(store.read(manifest_digest))
    os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
    for d in [manifest_digest, doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]:
        with open(os.path.join(path, "blobs", "sha256", d.split(":")[1]), "wb") as f:
            f.write(store.read(d))
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
            {"mediaType": doc["mediaType"], "digest": manifest_digest, "size": store.size(manifest_digest),
             "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)


class LocalImages:
    """The two things the registry client asks of an image service: its content store and
    ``resolve(ref).manifest_digest`` (names recorded by ``register``). Used where the images area's
    ImageService is not what is under test."""

    def __init__(self, root: str) -> None:
        self.content = ContentStore(os.path.join(root, "content"))
        self.names: dict[str, str] = {}

    def tag(self, ref: str, digest: str) -> None:
        from tugboat.oci.reference import parse_reference

        self.names[str(parse_reference(ref))] = digest

    def register(self, ref: str, digest: str) -> str:
        self.names[ref] = digest
        return digest

    def resolve(self, ref: str) -> Any:
        from tugboat.errors import NotFound
        from tugboat.oci.reference import parse_reference

        digest = self.names.get(str(parse_reference(ref)))
        if digest is None:
            raise NotFound(f"No such image: {ref}")

        class _Image:
            manifest_digest = digest

        return _Image()


def self_signed(tmp: str) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, server.crt, server.key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tug test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (os.path.join(tmp, "ca.crt"), os.path.join(tmp, "server.crt"), os.path.join(tmp, "server.key"))
    os.makedirs(tmp, exist_ok=True)
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths
