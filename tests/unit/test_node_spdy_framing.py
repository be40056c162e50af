"""SPDY/3.1 framing of the node agent's streaming endpoints (nodes area): frames split across and
packed into transport chunks, stream types, resize JSON, PING/GOAWAY, malformed input; and the raw
HTTP upgrade (accept + dial) over a real local socket."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib

from aiohttp import web

from tugboat.cluster.node.spdy import (
    FLAG_FIN,
    GOAWAY,
    PING,
    PROTOCOL_ERROR,
    RST_STREAM,
    SYN_REPLY,
    SYN_STREAM,
    WINDOW_UPDATE,
    PortForwardSession,
    RemoteCommandSession,
    control_frame,
    data_frame,
    encode_headers,
    negotiate,
    parse_headers,
)
from tugboat.cluster.node.spdy_dict import SPDY3_DICTIONARY
from tugboat.cluster.upgrade import UpgradedConnection, dial


class MemoryTransport:
    """Chunks in from a queue, frames out into a list."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.out = b""
        self.closed = False
        self.wrote = asyncio.Event()

    async def read(self) -> bytes:
        return await self.incoming.get()

    async def write(self, data: bytes) -> None:
        self.out += data
        self.wrote.set()

    async def close(self) -> None:
        self.closed = True


class Client:
    """The client half: builds frames with its own compression context, parses what came back."""

    def __init__(self) -> None:
        self.deflate = zlib.compressobj(zdict=SPDY3_DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=SPDY3_DICTIONARY)

    def syn(self, sid: int, headers: dict[str, str], fin: bool = False) -> bytes:
        block = self.deflate.compress(encode_headers(headers)) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        return control_frame(SYN_STREAM, FLAG_FIN if fin else 0, struct.pack(">IIH", sid, 0, 0) + block)

    def frames(self, raw: bytes) -> list[tuple[bool, int, int, bytes]]:
        out = []
        while raw:
            n = struct.unpack(">I", raw[4:8])[0] & 0xFFFFFF
            head, payload, raw = raw[:8], raw[8:8 + n], raw[8 + n:]
            if head[0] & 0x80:
                kind = struct.unpack(">H", head[2:4])[0]
                if kind == SYN_REPLY:
                    assert parse_headers(self.inflate.decompress(payload[4:])) == {}
                out.append((True, kind, head[4], payload))
            else:
                out.append((False, struct.unpack(">I", head[:4])[0], head[4], payload))
        return out


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_negotiate_picks_the_clients_first_supported() -> None:
    ours = ("v5.channel.k8s.io", "v4.channel.k8s.io")
    assert negotiate(["v4.channel.k8s.io", "v5.channel.k8s.io"], ours) == "v4.channel.k8s.io"
    assert negotiate(["v9.channel.k8s.io, v5.channel.k8s.io"], ours) == "v5.channel.k8s.io"
    assert negotiate(["v9.channel.k8s.io"], ours) is None
    assert negotiate([], ours) is None


def test_headers_round_trip_lowercase() -> None:
    block = encode_headers({"streamType": "stdout", "port": "8080"})
    assert parse_headers(block) == {"streamtype": "stdout", "port": "8080"}


def test_remote_command_streams_frames_split_and_packed() -> None:
    async def run() -> None:
        t = MemoryTransport()
        s = RemoteCommandSession(t, "v5.channel.k8s.io", {"stdin", "stdout", "resize"})
        s.start()
        c = Client()
        wire = (c.syn(1, {"streamType": "error"}) + c.syn(3, {"streamType": "stdin"})
                + c.syn(5, {"streamType": "bogus"}) + c.syn(7, {"streamType": "stdout"})
                + c.syn(9, {"streamType": "stdout"}) + c.syn(11, {"streamType": "resize"}))
        for i in range(0, len(wire), 7):  # frames cut across chunks
            t.incoming.put_nowait(wire[i:i + 7])
        assert await s.wait_streams(5) is None
        await settle()
        frames = c.frames(t.out)
        replies = [struct.unpack(">I", p[:4])[0] for ctl, k, _f, p in frames if ctl and k == SYN_REPLY]
        resets = [struct.unpack(">II", p) for ctl, k, _f, p in frames if ctl and k == RST_STREAM]
        assert replies == [1, 3, 7, 11]
        assert resets == [(5, PROTOCOL_ERROR), (9, PROTOCOL_ERROR)]  # unknown type, duplicate type
        t.out = b""
        # stdin data, a resize split over two frames plus a second object, stdin FIN, a PING: one chunk
        t.incoming.put_nowait(data_frame(3, 0, b"hello") + data_frame(11, 0, b'{"Width":80,')
                              + data_frame(11, 0, b'"Height":24}\n{"Width":100,"Height":30}\n')
                              + data_frame(3, FLAG_FIN, b"") + control_frame(PING, 0, struct.pack(">I", 1)))
        got = []
        it = s.inputs().__aiter__()
        for _ in range(4):
            got.append(await asyncio.wait_for(it.__anext__(), 5))
        assert got[0] == (0, b"hello")
        assert [json.loads(d) for ch, d in got[1:3]] == [{"Width": 80, "Height": 24}, {"Width": 100, "Height": 30}]
        assert all(ch == 4 for ch, _ in got[1:3])
        assert got[3] == (255, b"\x00")
        await settle()
        frames = c.frames(t.out)
        assert (True, PING, 0, struct.pack(">I", 1)) in frames
        assert (True, WINDOW_UPDATE, 0, struct.pack(">II", 3, 5)) in frames
        t.out = b""
        # output, the status, then FIN on every stream we write; the client's GOAWAY ends it
        await s.send(1, b"x" * 70000)
        await s.send(3, b'{"status":"Success"}')
        t.incoming.put_nowait(control_frame(GOAWAY, 0, struct.pack(">II", 0, 0)))
        await asyncio.wait_for(s.close(linger=5), 5)
        assert t.closed
        frames = c.frames(t.out)
        data = [(k, f, p) for ctl, k, f, p in frames if not ctl]
        assert b"".join(p for k, _f, p in data if k == 7) == b"x" * 70000
        assert max(len(p) for _k, _f, p in data) <= 65536  # big writes are cut into several frames
        fins = [k for k, f, _p in data if f & FLAG_FIN]
        assert sorted(fins) == [1, 3, 7, 11]
        assert b"".join(p for k, _f, p in data if k == 1) == b'{"status":"Success"}'

    asyncio.run(run())


def test_missing_streams_and_malformed_frames_end_the_session() -> None:
    async def run() -> None:
        t = MemoryTransport()
        s = RemoteCommandSession(t, "v4.channel.k8s.io", {"stdout"})
        s.start()
        t.incoming.put_nowait(Client().syn(1, {"streamType": "error"}))
        assert await s.wait_streams(0.3) == "timed out waiting for the client to create the streams ['stdout']"
        t.incoming.put_nowait(b"\x80\x02\x00\x01\x00\x00\x00\x00")  # SPDY/2: not ours
        problem = await s.wait_streams(5)
        assert problem is not None and "SPDY version 2" in problem
        assert any(ctl and k == GOAWAY for ctl, k, _f, _p in Client().frames(t.out[t.out.index(b"\x80\x03\x00\x07"):]))
        it = s.inputs().__aiter__()
        try:
            await asyncio.wait_for(it.__anext__(), 2)
            raise AssertionError("inputs did not end")
        except StopAsyncIteration:
            pass

    asyncio.run(run())


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data.upper())
            await w.drain()
        w.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


def test_port_forward_session_joins_streams_to_the_port() -> None:
    async def run() -> None:
        srv, port = await _echo_server()
        t = MemoryTransport()
        s = PortForwardSession(t, "127.0.0.1")
        runner = asyncio.create_task(s.run())
        c = Client()
        # data sent before the pod connection is up is kept, then delivered; FIN half-closes
        t.incoming.put_nowait(c.syn(1, {"streamType": "error", "port": str(port), "requestID": "0"})
                              + c.syn(3, {"streamType": "data", "port": str(port), "requestID": "0"})
                              + data_frame(3, FLAG_FIN, b"ping"))
        # a port nobody listens on: the error goes on that request's error stream
        t.incoming.put_nowait(c.syn(5, {"streamType": "error", "port": "1", "requestID": "1"})
                              + c.syn(7, {"streamType": "data", "port": "1", "requestID": "1"}))
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            frames = c.frames(t.out)
            fins = {k for ctl, k, f, _p in frames if not ctl and f & FLAG_FIN}
            if {1, 3, 5, 7} <= fins or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        data = {k: b"" for k in (1, 3, 5, 7)}
        for ctl, k, _f, p in frames:
            if not ctl:
                data[k] += p
        assert data[3] == b"PING" and data[1] == b""
        assert data[5].startswith(b"error forwarding port 1 to pod")
        t.incoming.put_nowait(b"")
        await asyncio.wait_for(runner, 5)
        srv.close()
        await srv.wait_closed()

    asyncio.run(run())


def test_raw_upgrade_accept_and_dial_over_a_socket() -> None:
    """UpgradedConnection takes over an aiohttp connection after 101; dial is its client."""

    seen: dict[str, int] = {}

    async def slow(request: web.Request) -> web.StreamResponse:
        conn = await UpgradedConnection.accept(request, "SPDY/3.1")
        await asyncio.sleep(0.5)  # the peer keeps sending meanwhile
        seen["paused"] = int(conn.reader.paused)
        seen["buffered"] = len(conn.reader.buf)
        total = 0
        while total < 24 * 2 ** 20 and (data := await conn.read()):
            total += len(data)
        seen["total"] = total
        await conn.write(str(total).encode())
        await conn.close()
        return conn.response

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Refuse"):
            return web.Response(status=403, text="no thanks")
        conn = await UpgradedConnection.accept(request, "SPDY/3.1", [("X-Stream-Protocol-Version", "test")])
        while data := await conn.read():
            await conn.write(data[::-1])
            if data.endswith(b"!"):
                break
        await conn.close()
        return conn.response

    async def run() -> None:
        app = web.Application()
        app.router.add_post("/up", handler)
        app.router.add_get("/slow", slow)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            hdrs = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
            up = await dial(f"http://127.0.0.1:{port}/up", method="POST", headers=hdrs, params=[("a", "b c")])
            assert up.status == 101 and up.header("x-stream-protocol-version") == "test"
            assert up.header("Upgrade") == "SPDY/3.1" and "Transfer-Encoding" not in dict(up.headers)
            # bytes that look like HTTP are not parsed as HTTP after the upgrade
            up.writer.write(b"GET / HTTP/1.1\r\n\r\n")
            await up.writer.drain()
            assert await asyncio.wait_for(up.reader.readexactly(18), 5) == b"\n\r\n\r1.1/PTTH / TEG"
            up.writer.write(b"bye!")
            assert await asyncio.wait_for(up.reader.read(), 5) == b"!eyb"  # then the server closes
            up.close()
            refused = await dial(f"http://127.0.0.1:{port}/up", method="POST", headers=[*hdrs, ("X-Refuse", "1")])
            assert refused.status == 403 and await refused.body() == b"no thanks"
            refused.close()
            # back-pressure: a reader that does not keep up pauses the socket instead of buffering all
            up = await dial(f"http://127.0.0.1:{port}/slow", headers=hdrs)
            assert up.status == 101
            blob = b"z" * (24 * 2 ** 20)
            up.writer.write(blob)
            await asyncio.wait_for(up.writer.drain(), 20)
            assert await asyncio.wait_for(up.reader.read(), 20) == str(len(blob)).encode()
            up.close()
            assert seen["paused"] == 1 and seen["buffered"] < 8 * 2 ** 20, seen
        finally:
            await runner.cleanup()

    asyncio.run(run())


def test_slow_stdin_consumer_holds_the_session_back() -> None:
    async def run() -> None:
        t = MemoryTransport()
        s = RemoteCommandSession(t, "v5.channel.k8s.io", {"stdin"})
        s.start()
        c = Client()
        t.incoming.put_nowait(c.syn(1, {"streamType": "error"}) + c.syn(3, {"streamType": "stdin"}))
        assert await s.wait_streams(5) is None
        for i in range(200):
            t.incoming.put_nowait(data_frame(3, 0, b"%03d" % i))
        t.incoming.put_nowait(data_frame(3, FLAG_FIN, b""))
        await settle()
        assert s.queue.qsize() == 64 and t.incoming.qsize() > 100  # reading stopped, nothing dropped
        got = []
        async for ch, data in s.inputs():
            got.append((ch, data))
            if ch == 255:
                break
        assert got == [(0, b"%03d" % i) for i in range(200)] + [(255, b"\x00")]
        t.incoming.put_nowait(b"")
        await asyncio.wait_for(s.close(linger=1), 5)

    asyncio.run(run())
