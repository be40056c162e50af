"""Our registry client against our registry server: push, pull, skip, mount, resume, restart."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable

import pytest
import requests
from registry_fixtures import LocalImages, ProcessServer, free_port, make_image, thread_server

from tugboat.distribution.client import RegistryClient, is_insecure_host, parse_challenge
from tugboat.distribution.credentials import (
    DockerConfig,
    decode_registry_auth,
    encode_registry_auth,
    normalize_registry,
)
from tugboat.errors import NotFound


def test_push_pull_skip_and_mount(tmp_path):
    with thread_server(str(tmp_path / "reg")) as s:
        src = LocalImages(str(tmp_path / "src"))
        md = make_image(src.content, "app", layers=3)
        ref = f"{s.addr}/team/app:v1"
        src.tag(ref, md)
        events: list[dict] = []
        assert RegistryClient().push(src, ref, progress=events.append) == md
        statuses = [e.get("status") for e in events]
        assert statuses.count("Pushed") == 3 and statuses[0].startswith("The push refers to repository")
        assert events[-1]["aux"]["Digest"] == md
        # again: every layer is already there
        events.clear()
        RegistryClient().push(src, ref, progress=events.append)
        assert [e.get("status") for e in events].count("Layer already exists") == 3
        # to another repository of the same registry: cross-repository mount
        ref2 = f"{s.addr}/team/copy:v1"
        src.tag(ref2, md)
        events.clear()
        RegistryClient().push(src, ref2, progress=events.append)
        assert [e.get("status") for e in events].count("Mounted from team/app") == 3
        # pull into an empty store
        dst = LocalImages(str(tmp_path / "dst"))
        events.clear()
        assert RegistryClient().pull(dst, ref, progress=events.append) == md
        assert sorted(dst.content.list()) == sorted(src.content.list())
        assert f"Digest: {md}" in [e.get("status") for e in events]
        assert dst.names[f"{s.addr}/team/app:v1"] == md
        # and again: nothing to download
        events.clear()
        RegistryClient().pull(dst, ref, progress=events.append)
        assert [e.get("status") for e in events].count("Already exists") == 3
        with pytest.raises(NotFound):
            RegistryClient().pull(dst, f"{s.addr}/team/app:nope")


def test_pull_index_picks_platform(tmp_path):
    with thread_server(str(tmp_path / "reg")) as s:
        src = LocalImages(str(tmp_path / "src"))
        md = make_image(src.content, "plat", layers=1)
        ref = f"{s.addr}/multi:m"
        src.tag(ref, md)
        RegistryClient().push(src, f"{s.addr}/multi:single", source=ref)
        body = src.content.read(md)
        index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                                           "size": len(body), "platform": {"os": "linux",
                                                                           "architecture": "amd64"}}]}).encode()
        r = requests.put(f"{s.url}/v2/multi/manifests/list", data=index,
                         headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
        assert r.status_code == 201
        dst = LocalImages(str(tmp_path / "dst"))
        got = RegistryClient().pull(dst, f"{s.addr}/multi:list", platform="linux/amd64")
        assert got == r.headers["Docker-Content-Digest"]
        assert dst.content.exists(md)
        with pytest.raises(NotFound):
            RegistryClient().pull(LocalImages(str(tmp_path / "d2")), f"{s.addr}/multi:list", platform="linux/s390x")


class CuttingProxy:
    """A TCP proxy that cuts the first big blob download after ``cut_after`` bytes and records
    the request heads it forwarded. ``on_cut`` runs (in the proxy thread) before the cut."""

    def __init__(self, target_port: int, cut_after: int, on_cut: Callable[[], None] | None = None) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.on_cut = on_cut
        self.port = 0
        self.heads: list[str] = []
        self.cuts = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _conn(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cw.transport.abort()  # upstream down: the client sees the connection reset, as it would
            return
        state = {"armed": False, "count": 0}

        async def up() -> None:
            while data := await cr.read(65536):
                text = data[:2048].decode("latin-1")
                if text.startswith(("GET ", "HEAD ", "PUT ", "POST ", "PATCH ")):
                    head = text.split("\r\n\r\n")[0]
                    self.heads.append(head)
                    if head.startswith("GET ") and "/blobs/" in head and "Range:" not in head and self.cuts == 0:
                        state["armed"] = True
                        state["count"] = 0
                sw.write(data)
                await sw.drain()
            sw.close()

        async def down() -> None:
            try:
                await _down()
            finally:  # the registry went away (FIN or RST): the client must see it at once
                cw.transport.abort()

        async def _down() -> None:
            while data := await sr.read(65536):
                if state["armed"]:
                    state["count"] += len(data)
                    if state["count"] > self.cut_after and self.cuts == 0:
                        self.cuts += 1
                        cw.write(data[: len(data) // 2])
                        await cw.drain()
                        if self.on_cut:
                            await self.loop.run_in_executor(None, self.on_cut)
                        cw.transport.abort()
                        sw.transport.abort()
                        return
                cw.write(data)
                await cw.drain()
            cw.close()

        await asyncio.gather(up(), down(), return_exceptions=True)
        cw.transport.abort()
        sw.transport.abort()

    def start(self) -> CuttingProxy:
        self.thread.start()
        self.ready.wait(5)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_pull_resumes_with_range_after_cut(tmp_path):
    with thread_server(str(tmp_path / "reg")) as s:
        src = LocalImages(str(tmp_path / "src"))
        md = make_image(src.content, "big", layers=1, size=3_000_000)
        src.tag(f"{s.addr}/big:1", md)
        RegistryClient().push(src, f"{s.addr}/big:1")
        proxy = CuttingProxy(s.port, cut_after=1_000_000).start()
        try:
            dst = LocalImages(str(tmp_path / "dst"))
            events: list[dict] = []
            assert RegistryClient().pull(dst, f"127.0.0.1:{proxy.port}/big:1", progress=events.append) == md
            assert proxy.cuts == 1
            assert any("Range: bytes=" in h and "/blobs/" in h for h in proxy.heads), proxy.heads
            assert any(str(e.get("status", "")).startswith("Retrying") for e in events)
            assert sorted(dst.content.list()) == sorted(src.content.list())
            assert all(dst.content.verify(d) for d in dst.content.list())
        finally:
            proxy.stop()


def test_pull_survives_registry_restart(tmp_path):
    srv = ProcessServer(str(tmp_path / "reg")).start()
    proxy = None
    try:
        src = LocalImages(str(tmp_path / "src"))
        md = make_image(src.content, "rst", layers=2, size=2_000_000)
        ref = f"127.0.0.1:{srv.port}/rst:1"
        src.tag(ref, md)
        RegistryClient().push(src, ref)

        def restart() -> None:
            srv.stop()
            srv.start()

        proxy = CuttingProxy(srv.port, cut_after=500_000, on_cut=restart).start()
        dst = LocalImages(str(tmp_path / "dst"))
        assert RegistryClient(read_timeout=10).pull(dst, f"127.0.0.1:{proxy.port}/rst:1") == md
        assert proxy.cuts == 1
        assert all(dst.content.verify(d) for d in dst.content.list())
    finally:
        if proxy:
            proxy.stop()
        srv.stop()


def test_unreachable_loopback_port_fails_fast(tmp_path):
    import time

    port = free_port()  # nothing listens there
    t = time.monotonic()
    with pytest.raises(Exception) as ei:
        RegistryClient().pull(LocalImages(str(tmp_path / "d")), f"127.0.0.1:{port}/x:1")
    assert time.monotonic() - t < 5
    assert f"127.0.0.1:{port}" in str(ei.value) and "unreachable" in str(ei.value)


def test_helpers():
    assert is_insecure_host("localhost:5000") and is_insecure_host("127.0.0.1:80") and is_insecure_host("[::1]:5000")
    assert not is_insecure_host("registry.example.com")
    assert is_insecure_host("10.1.2.3:5000", ["10.0.0.0/8"]) and is_insecure_host("reg:5000", ["reg:5000"])
    ch = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                         'scope="repository:library/busybox:pull"')
    assert ch is not None and ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                         "scope": "repository:library/busybox:pull"}
    assert normalize_registry("docker.io") == "https://index.docker.io/v1/"
    assert normalize_registry("https://localhost:5000/v2/") == "localhost:5000"
    hdr = encode_registry_auth("u", "p", "localhost:5000")
    assert decode_registry_auth(hdr) == {"username": "u", "password": "p", "serveraddress": "localhost:5000"}
    assert decode_registry_auth("") is None


def test_docker_config_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    cfg = DockerConfig.load()
    cfg.set("docker.io", "me", "pw")
    cfg.set("localhost:5000", "u", "p:with:colons")
    cfg.save()
    assert (tmp_path / "cfg" / "config.json").stat().st_mode & 0o777 == 0o600
    again = DockerConfig.load()
    assert again.get("index.docker.io") == ("me", "pw")
    assert again.get("localhost:5000") == ("u", "p:with:colons")
    assert again.remove("localhost:5000") and again.get("localhost:5000") is None


def test_docker_hub_names_use_the_mirror_first(tmp_path):
    with thread_server(str(tmp_path / "mirror")) as s:
        src = LocalImages(str(tmp_path / "src"))
        md = make_image(src.content, "mirrored", layers=1)
        src.tag(f"{s.addr}/library/mirrored:1", md)
        RegistryClient().push(src, f"{s.addr}/library/mirrored:1")
        dst = LocalImages(str(tmp_path / "dst"))
        # Docker Hub itself is pointed at a closed loopback port: only the mirror can answer
        client = RegistryClient(mirrors=[s.url], endpoints={"docker.io": f"http://127.0.0.1:{free_port()}"})
        assert client.pull(dst, "mirrored:1") == md
        assert dst.names["docker.io/library/mirrored:1"] == md
        # a name the mirror lacks falls through to the (unreachable) upstream, which is named
        with pytest.raises(Exception, match=r"docker\.io"):
            client.pull(dst, "absent:1")


def test_tls_registry_with_certs_d_ca(tmp_path):
    import shutil

    from registry_fixtures import self_signed

    from tugboat.distribution.server import ssl_context

    ca, cert, key = self_signed(str(tmp_path / "pki"))
    with thread_server(str(tmp_path / "reg"), ssl_ctx=ssl_context(cert, key)) as s:
        src = LocalImages(str(tmp_path / "src"))
        md = make_image(src.content, "tls", layers=1)
        ref = f"{s.addr}/tls/img:1"
        src.tag(ref, md)
        # without the CA: certificate verification fails, with a message naming the registry
        with pytest.raises(Exception, match="TLS error"):
            RegistryClient(certs_dirs=[str(tmp_path / "certs.d")],
                           endpoints={s.addr: f"https://{s.addr}"}).push(src, ref)
        os.makedirs(tmp_path / "certs.d" / s.addr)
        shutil.copy(ca, tmp_path / "certs.d" / s.addr / "ca.crt")
        client = RegistryClient(certs_dirs=[str(tmp_path / "certs.d")])
        assert client.endpoints_for(s.addr)[0].base.startswith("https://")
        assert client.push(src, ref) == md
        dst = LocalImages(str(tmp_path / "dst"))
        assert client.pull(dst, ref) == md


def test_push_survives_registry_restart_and_fails_fast_when_unreachable(tmp_path):
    import time

    srv = ProcessServer(str(tmp_path / "reg")).start()
    proxy = None
    try:
        src = LocalImages(str(tmp_path / "src"))
        md = make_image(src.content, "pushrst", layers=1, size=3_000_000)

        def restart() -> None:
            srv.stop()
            srv.start()

        # restart the registry while the blob's PUT streams: the client starts that upload again
        proxy = CuttingProxy(srv.port, cut_after=10**12).start()
        ref = f"127.0.0.1:{proxy.port}/pushrst:1"
        src.tag(ref, md)
        events: list[dict] = []
        timer = threading.Timer(0.0, restart)

        def progress(ev: dict) -> None:
            events.append(ev)
            if ev.get("status") == "Pushing" and not timer.is_alive() and not timer.finished.is_set():
                timer.start()

        assert RegistryClient(read_timeout=10).push(src, ref, progress=progress) == md
        timer.join(20)
        assert any(str(e.get("status", "")).startswith("Retrying") for e in events)
        got = requests.get(f"{srv.url}/v2/pushrst/manifests/1",
                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert got.status_code == 200 and got.headers["Docker-Content-Digest"] == md
    finally:
        if proxy:
            proxy.stop()
        srv.stop()
    dead = free_port()
    src.tag(f"127.0.0.1:{dead}/x:1", md)
    t = time.monotonic()
    with pytest.raises(Exception, match="unreachable"):
        RegistryClient().push(src, f"127.0.0.1:{dead}/x:1")
    assert time.monotonic() - t < 3
