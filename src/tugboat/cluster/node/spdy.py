"""kubectl's port-forward: SPDY/3.1 frames carried in WebSocket binary messages
(subprotocol ``SPDY/3.1+portforward.k8s.io``).

Per forwarded connection kubectl opens two streams with headers ``streamtype: error|data``,
``port`` and ``requestid``; we answer each SYN_STREAM with a SYN_REPLY, connect the data stream
to the pod's port, pipe bytes both ways as DATA frames (acknowledging received data with
WINDOW_UPDATE), and close with FIN. Errors are written on the error stream. Header blocks are
zlib streams using the SPDY/3 dictionary, one compression context per direction per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from typing import Any

from aiohttp import WSMsgType, web

from tugboat.cluster.node.spdy_dict import SPDY3_DICTIONARY

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01


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
        kb, vb = k.encode(), v.encode()
        out += struct.pack(">I", len(kb)) + kb + struct.pack(">I", len(vb)) + vb
    return out


def control_frame(ftype: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(payload)) + payload


class Session:
    def __init__(self, ws: web.WebSocketResponse, host: str, ports_ok: Any) -> None:
        self.ws = ws
        self.host = host
        self.ports_ok = ports_ok
        self.buf = b""
        self.inflate = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        self.deflate = zlib.compressobj(zdict=SPDY3_DICTIONARY)
        self.streams: dict[int, dict[str, str]] = {}
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.pending: dict[int, list[bytes | None]] = {}  # data (None = FIN) before the pod connection is up
        self.by_request: dict[str, dict[str, int]] = {}
        self.tasks: set[asyncio.Task] = set()
        self.lock = asyncio.Lock()

    async def send(self, frame: bytes) -> None:
        async with self.lock:
            if not self.ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.send_bytes(frame)

    def _compress(self, block: bytes) -> bytes:
        return self.deflate.compress(block) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    async def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 8:
            length = struct.unpack(">I", self.buf[4:8])[0] & 0xFFFFFF
            if len(self.buf) < 8 + length:
                return
            head, payload = self.buf[:8], self.buf[8:8 + length]
            self.buf = self.buf[8 + length:]
            flags = head[4]
            if head[0] & 0x80:
                ftype = struct.unpack(">H", head[2:4])[0]
                await self.control(ftype, flags, payload)
            else:
                sid = struct.unpack(">I", head[:4])[0] & 0x7FFFFFFF
                await self.data(sid, flags, payload)

    async def control(self, ftype: int, flags: int, payload: bytes) -> None:
        if ftype == SYN_STREAM:
            sid = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            headers = parse_headers(self.inflate.decompress(payload[10:]))
            self.streams[sid] = headers
            await self.send(control_frame(SYN_REPLY, 0, struct.pack(">I", sid) + self._compress(encode_headers({}))))
            req = self.by_request.setdefault(headers.get("requestid", ""), {})
            req[headers.get("streamtype", "")] = sid
            if headers.get("streamtype") == "data":
                self.pending[sid] = []
                t = asyncio.create_task(self.connect(sid, headers))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)
            if flags & FLAG_FIN:
                await self.half_closed(sid)
        elif ftype == PING:
            await self.send(control_frame(PING, 0, payload))
        elif ftype == RST_STREAM:
            sid = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            w = self.writers.pop(sid, None)
            if w is not None:
                w.close()
        elif ftype == GOAWAY:
            await self.ws.close()

    async def data(self, sid: int, flags: int, payload: bytes) -> None:
        w = self.writers.get(sid)
        if payload:
            if w is not None:
                w.write(payload)
                with contextlib.suppress(ConnectionError):
                    await w.drain()
            elif sid in self.pending:
                self.pending[sid].append(payload)
            await self.send(control_frame(WINDOW_UPDATE, 0, struct.pack(">II", sid, len(payload))))
        if flags & FLAG_FIN:
            if w is None and sid in self.pending:
                self.pending[sid].append(None)
            else:
                await self.half_closed(sid)

    async def half_closed(self, sid: int) -> None:
        w = self.writers.get(sid)
        if w is not None and w.can_write_eof():
            with contextlib.suppress(OSError):
                w.write_eof()

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
                await self.send(data_frame(err_sid, FLAG_FIN, msg))
            await self.send(data_frame(sid, FLAG_FIN, b""))
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
                await self.send(data_frame(sid, 0, chunk))
        except ConnectionError:
            pass
        finally:
            await self.send(data_frame(sid, FLAG_FIN, b""))
            if err_sid is not None:
                await self.send(data_frame(err_sid, FLAG_FIN, b""))
            self.writers.pop(sid, None)
            writer.close()

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        for w in self.writers.values():
            w.close()


async def serve(request: web.Request, host: str) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("SPDY/3.1+portforward.k8s.io",), max_msg_size=0)
    await ws.prepare(request)
    s = Session(ws, host, None)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await s.feed(msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
    finally:
        await s.close()
        await ws.close()
    return ws
