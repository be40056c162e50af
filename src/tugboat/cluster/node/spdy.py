"""SPDY/3.1 as kubectl and client-go speak it: one framing implementation, two transports.

Transports (anything with ``read() -> bytes`` (``b""`` at the end), ``write(bytes)``, ``close()``):
- :class:`WebSocketTransport`: SPDY frames carried in WebSocket binary messages (kubectl 1.32's
  port-forward, subprotocol ``SPDY/3.1+portforward.k8s.io``);
- :class:`tugboat.cluster.upgrade.UpgradedConnection`: the raw connection after a ``101`` answer
  to ``Upgrade: SPDY/3.1`` (client-go's SPDY executor and port-forwarder, older kubectl, and kubectl
  1.32 with ``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`` / ``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``).

:class:`SpdySession` is the framing: frames are parsed from whatever byte chunks the transport
yields (a frame may span chunks, a chunk may hold several frames); the client opens streams with
SYN_STREAM (header block: zlib stream with the SPDY/3 dictionary, one compression context per
direction per session), we answer SYN_REPLY or RST_STREAM, DATA frames flow both ways (received
data acknowledged with WINDOW_UPDATE), FIN half-closes a stream, PING is echoed, GOAWAY ends the
session. Subclasses get ``on_stream/on_data/on_fin/on_reset`` calls:

- :class:`PortForwardSession` (``portforward.k8s.io``): per forwarded connection two streams
  with headers ``streamtype: error|data``, ``port`` and ``requestid``; the data stream is joined to
  the pod's port, a failure is written on the error stream.
- :class:`RemoteCommandSession` (exec/attach, ``v5``/``v4``/``v3``/``v2.channel.k8s.io``): streams
  ``error``, ``stdin``, ``stdout``, ``stderr``, ``resize`` (``streamtype`` header); the exec waits
  for the streams the request asked for, then stdout/stderr go out as DATA, stdin FIN closes the
  process's stdin, resize carries JSON ``{"Width":W,"Height":H}`` objects, and the exit status goes
  on the error stream (v4+: a metav1.Status JSON) before every stream is FINished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import zlib
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from aiohttp import WSMsgType, web

from tugboat.cluster.node.spdy_dict import SPDY3_DICTIONARY

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
# RST_STREAM status codes (SPDY/3 section 2.6.3)
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM = 1, 2, 3

PORTFORWARD_PROTOCOLS = ("portforward.k8s.io",)
REMOTECOMMAND_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io")
STREAM_TYPES = ("error", "stdin", "stdout", "stderr", "resize")
STREAM_CREATION_TIMEOUT = 30.0


def parse_headers(block: bytes) -> dict[str, str]:
    n = struct.unpack(">I", block[:4])[0]
    pos = 4
    out: dict[str, str] = {}
    for _ in range(n):
        ln = struct.unpack(">I", block[pos:pos + 4])[0]
        name = block[pos + 4:pos + 4 + ln].decode()
        pos += 4 + ln
        lv = struct.unpack(">I", block[pos:pos + 4])[0]
        value = block[pos + 4:pos + 4 + lv].decode(errors="replace")
        pos += 4 + lv
        out[name.lower()] = value
    return out


def encode_headers(headers: dict[str, str]) -> bytes:
    out = struct.pack(">I", len(headers))
    for k, v in headers.items():
        kb, vb = k.lower().encode(), v.encode()
        out += struct.pack(">I", len(kb)) + kb + struct.pack(">I", len(vb)) + vb
    return out


def control_frame(ftype: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(payload)) + payload


class Transport(Protocol):
    async def read(self) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class WebSocketTransport:
    """SPDY frames in WebSocket binary messages."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def read(self) -> bytes:
        while True:
            try:
                msg = await self.ws.receive()
            except (ConnectionError, RuntimeError):
                return b""
            if msg.type == WSMsgType.BINARY:
                if msg.data:
                    return bytes(msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return b""

    async def write(self, data: bytes) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(data)

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close()


def negotiate(offered: Iterable[str], supported: Iterable[str]) -> str | None:
    """The first protocol the client offered (``X-Stream-Protocol-Version`` values, in its order)
    that we support; None when there is none."""
    sup = list(supported)
    for value in offered:
        for p in value.split(","):
            if p.strip() in sup:
                return p.strip()
    return None


class SpdySession:
    """The server side of one SPDY/3.1 session over a :class:`Transport`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.buf = b""
        self.inflate = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        self.deflate = zlib.compressobj(zdict=SPDY3_DICTIONARY)
        self.streams: dict[int, dict[str, str]] = {}
        self.lock = asyncio.Lock()
        self.ended = asyncio.Event()  # GOAWAY received or the transport ended
        self.failed: str | None = None  # a framing error that ended the session

    # -- output -----------------------------------------------------------------------------
    async def send_frame(self, frame: bytes) -> None:
        async with self.lock:
            await self.transport.write(frame)

    def _compress(self, block: bytes) -> bytes:
        return self.deflate.compress(block) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    async def reply(self, sid: int, headers: dict[str, str] | None = None, fin: bool = False) -> None:
        async with self.lock:  # compression context and frame order go together
            block = self._compress(encode_headers(headers or {}))
            await self.transport.write(control_frame(SYN_REPLY, FLAG_FIN if fin else 0,
                                                     struct.pack(">I", sid) + block))

    async def send_data(self, sid: int, data: bytes, fin: bool = False) -> None:
        # kubectl's spdystream takes frames up to 16 MiB; keep them small so streams interleave
        for i in range(0, max(len(data), 1), 65536):
            chunk = data[i:i + 65536]
            last = i + 65536 >= len(data)
            await self.send_frame(data_frame(sid, FLAG_FIN if (fin and last) else 0, chunk))

    async def reset(self, sid: int, status: int = PROTOCOL_ERROR) -> None:
        await self.send_frame(control_frame(RST_STREAM, 0, struct.pack(">II", sid & 0x7FFFFFFF, status)))

    async def goaway(self) -> None:
        await self.send_frame(control_frame(GOAWAY, 0, struct.pack(">II", 0, 0)))

    # -- input ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Read and dispatch frames until the peer goes away or the transport ends."""
        try:
            while not self.ended.is_set():
                data = await self.transport.read()
                if not data:
                    break
                await self.feed(data)
        except (ValueError, zlib.error, struct.error) as e:
            self.failed = f"malformed SPDY frame: {e}"
            with contextlib.suppress(Exception):
                await self.goaway()
        finally:
            self.ended.set()
            await self.on_end()

    async def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 8 and not self.ended.is_set():
            length = struct.unpack(">I", self.buf[4:8])[0] & 0xFFFFFF
            if len(self.buf) < 8 + length:
                return
            head, payload = self.buf[:8], self.buf[8:8 + length]
            self.buf = self.buf[8 + length:]
            flags = head[4]
            if head[0] & 0x80:
                version, ftype = struct.unpack(">HH", head[:4])
                if version & 0x7FFF != VERSION:
                    raise ValueError(f"SPDY version {version & 0x7FFF} (only 3 is spoken)")
                await self.control(ftype, flags, payload)
            else:
                sid = struct.unpack(">I", head[:4])[0] & 0x7FFFFFFF
                await self.data(sid, flags, payload)

    async def control(self, ftype: int, flags: int, payload: bytes) -> None:
        if ftype == SYN_STREAM:
            sid = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            headers = parse_headers(self.inflate.decompress(payload[10:]))
            if sid in self.streams or sid % 2 == 0:
                await self.reset(sid, PROTOCOL_ERROR)
                return
            self.streams[sid] = headers
            await self.on_stream(sid, headers, bool(flags & FLAG_FIN))
        elif ftype == HEADERS:
            self.inflate.decompress(payload[4:])  # keeps the decompression context in step
        elif ftype == PING:
            await self.send_frame(control_frame(PING, 0, payload))
        elif ftype == RST_STREAM:
            sid = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            await self.on_reset(sid)
        elif ftype == GOAWAY:
            self.ended.set()
        # SETTINGS, WINDOW_UPDATE, SYN_REPLY (we open no streams): nothing to do

    async def data(self, sid: int, flags: int, payload: bytes) -> None:
        if sid not in self.streams:
            await self.reset(sid, INVALID_STREAM)
            return
        if payload:
            await self.on_data(sid, payload)
            await self.send_frame(control_frame(WINDOW_UPDATE, 0, struct.pack(">II", sid, len(payload))))
        if flags & FLAG_FIN:
            await self.on_fin(sid)

    # -- hooks ------------------------------------------------------------------------------
    async def on_stream(self, sid: int, headers: dict[str, str], fin: bool) -> None:
        await self.reply(sid)

    async def on_data(self, sid: int, data: bytes) -> None:
        return None

    async def on_fin(self, sid: int) -> None:
        return None

    async def on_reset(self, sid: int) -> None:
        return None

    async def on_end(self) -> None:
        return None


class PortForwardSession(SpdySession):
    """kubectl port-forward: ``error``/``data`` stream pairs per ``requestid``, joined to ``host:port``."""

    def __init__(self, transport: Transport, host: str) -> None:
        super().__init__(transport)
        self.host = host
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.pending: dict[int, list[bytes | None]] = {}  # data (None = FIN) before the pod connection is up
        self.by_request: dict[str, dict[str, int]] = {}
        self.tasks: set[asyncio.Task] = set()

    async def on_stream(self, sid: int, headers: dict[str, str], fin: bool) -> None:
        stype = headers.get("streamtype", "")
        if stype not in ("error", "data"):
            await self.reset(sid, PROTOCOL_ERROR)
            return
        await self.reply(sid)
        req = self.by_request.setdefault(headers.get("requestid", ""), {})
        req[stype] = sid
        if stype == "data":
            self.pending[sid] = []
            t = asyncio.create_task(self.connect(sid, headers))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)
        if fin:
            await self.on_fin(sid)

    async def on_data(self, sid: int, data: bytes) -> None:
        w = self.writers.get(sid)
        if w is not None:
            w.write(data)
            with contextlib.suppress(ConnectionError):
                await w.drain()
        elif sid in self.pending:
            self.pending[sid].append(data)

    async def on_fin(self, sid: int) -> None:
        w = self.writers.get(sid)
        if w is None:
            if sid in self.pending:
                self.pending[sid].append(None)
            return
        if w.can_write_eof():
            with contextlib.suppress(OSError):
                w.write_eof()

    async def on_reset(self, sid: int) -> None:
        w = self.writers.pop(sid, None)
        if w is not None:
            w.close()

    async def connect(self, sid: int, headers: dict[str, str]) -> None:
        port_s = headers.get("port", "")
        err_sid = self.by_request.get(headers.get("requestid", ""), {}).get("error")
        try:
            port = int(port_s)
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, port), 5)
        except (TimeoutError, ValueError, OSError) as e:
            self.pending.pop(sid, None)
            if err_sid is not None:
                msg = f"error forwarding port {port_s} to pod: {e}".encode()
                await self.send_data(err_sid, msg, fin=True)
            await self.send_data(sid, b"", fin=True)
            return
        for chunk in self.pending.pop(sid, []):
            if chunk is None:
                if writer.can_write_eof():
                    writer.write_eof()
            else:
                writer.write(chunk)
        self.writers[sid] = writer
        try:
            while True:
                chunk = await reader.read(32768)
                if not chunk:
                    break
                await self.send_data(sid, chunk)
        except ConnectionError:
            pass
        finally:
            await self.send_data(sid, b"", fin=True)
            if err_sid is not None:
                await self.send_data(err_sid, b"", fin=True)
            self.writers.pop(sid, None)
            writer.close()

    async def on_end(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        for w in self.writers.values():
            w.close()


class RemoteCommandSession(SpdySession):
    """exec/attach streams. The handler's view (the same as the WebSocket channel's):
    ``send(1|2|3, data)`` for stdout/stderr/error, :meth:`inputs` yields ``(0, data)`` for stdin,
    ``(255, b"\\x00")`` when stdin is closed (FIN), ``(4, json)`` per resize object."""

    def __init__(self, transport: Transport, protocol: str, expected: Iterable[str]) -> None:
        super().__init__(transport)
        self.protocol = protocol
        self.json_status = protocol in ("v4.channel.k8s.io", "v5.channel.k8s.io")
        self.expected = set(expected) | {"error"}
        self.by_type: dict[str, int] = {}
        # bounded: a process slower than its stdin holds the session's reading (back-pressure)
        self.queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(maxsize=64)
        self.input_closed = False
        self.ready = asyncio.Event()
        self.resize_buf = ""
        self.finished: set[int] = set()
        self.runner: asyncio.Task | None = None

    def start(self) -> None:
        self.runner = asyncio.create_task(self.run())

    async def wait_streams(self, timeout: float = STREAM_CREATION_TIMEOUT) -> str | None:
        """Wait until the client opened every stream the request asked for; an error text if not."""
        waiter = asyncio.create_task(self.ready.wait())
        ender = asyncio.create_task(self.ended.wait())
        try:
            await asyncio.wait({waiter, ender}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            ender.cancel()
        if self.ready.is_set():
            return None
        missing = sorted(self.expected - set(self.by_type))
        if self.ended.is_set():
            return self.failed or f"the client went away before creating the streams {missing}"
        return f"timed out waiting for the client to create the streams {missing}"

    async def on_stream(self, sid: int, headers: dict[str, str], fin: bool) -> None:
        stype = headers.get("streamtype", "")
        if stype not in STREAM_TYPES or stype in self.by_type or (stype == "resize" and self.protocol ==
                                                                  "v2.channel.k8s.io"):
            await self.reset(sid, PROTOCOL_ERROR)  # unknown or duplicate stream type
            return
        self.by_type[stype] = sid
        await self.reply(sid)
        if self.expected <= set(self.by_type):
            self.ready.set()
        if fin:
            await self.on_fin(sid)

    def _type(self, sid: int) -> str | None:
        return next((t for t, s in self.by_type.items() if s == sid), None)

    async def on_data(self, sid: int, data: bytes) -> None:
        stype = self._type(sid)
        if stype == "stdin":
            await self.queue.put((0, data))
        elif stype == "resize":  # a sequence of JSON objects, as Go's json.Encoder writes them
            self.resize_buf = (self.resize_buf + data.decode(errors="replace"))[-65536:]
            dec = json.JSONDecoder()
            while True:
                text = self.resize_buf.lstrip()
                try:
                    obj, end = dec.raw_decode(text)
                except ValueError:
                    self.resize_buf = text
                    break
                self.resize_buf = text[end:]
                if isinstance(obj, dict):
                    await self.queue.put((4, json.dumps(obj).encode()))

    async def on_fin(self, sid: int) -> None:
        if self._type(sid) == "stdin":
            await self.queue.put((255, b"\x00"))

    async def on_end(self) -> None:
        self.input_closed = True
        with contextlib.suppress(asyncio.QueueFull):  # full: inputs() ends once it has drained it
            self.queue.put_nowait(None)

    async def inputs(self) -> AsyncIterator[tuple[int, bytes]]:
        while not (self.input_closed and self.queue.empty()):
            item = await self.queue.get()
            if item is None:
                return
            yield item

    async def send(self, ch: int, data: bytes) -> None:
        sid = self.by_type.get({1: "stdout", 2: "stderr", 3: "error"}.get(ch, ""))
        if sid is not None and sid not in self.finished and data:
            await self.send_data(sid, data)

    async def close(self, linger: float = 2.0) -> None:
        """FIN every stream we may write, give the client ``linger`` seconds to hang up (so our
        last bytes are not lost to a reset), then close the transport."""
        for stype in ("stdout", "stderr", "error", "stdin", "resize"):
            sid = self.by_type.get(stype)
            if sid is not None and sid not in self.finished:
                self.finished.add(sid)
                await self.send_data(sid, b"", fin=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), linger)
        await self.transport.close()
        if self.runner is not None:
            self.runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.runner


async def serve_portforward_ws(request: web.Request, host: str) -> web.WebSocketResponse:
    """kubectl 1.32's port-forward: SPDY inside WebSocket (``SPDY/3.1+portforward.k8s.io``)."""
    ws = web.WebSocketResponse(protocols=("SPDY/3.1+portforward.k8s.io",), max_msg_size=0)
    await ws.prepare(request)
    s = PortForwardSession(WebSocketTransport(ws), host)
    try:
        await s.run()
    finally:
        await ws.close()
    return ws


async def serve_portforward_upgrade(request: web.Request, host: str) -> web.StreamResponse:
    """client-go's SPDY port-forward: ``Upgrade: SPDY/3.1`` + ``X-Stream-Protocol-Version:
    portforward.k8s.io``; the caller has negotiated the protocol."""
    from tugboat.cluster.upgrade import UpgradedConnection

    conn = await UpgradedConnection.accept(request, "SPDY/3.1",
                                           [("X-Stream-Protocol-Version", PORTFORWARD_PROTOCOLS[0])])
    s = PortForwardSession(conn, host)
    try:
        await s.run()
    finally:
        await conn.close()
    return conn.response
