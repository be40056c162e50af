"""Raw HTTP/1.1 connection upgrades (``Connection: Upgrade``, ``Upgrade: SPDY/3.1``) for the streaming
endpoints of the API server and the node agent.

aiohttp serves WebSocket upgrades only: any other ``Upgrade`` is parsed as a plain request without a
body. :meth:`UpgradedConnection.accept` answers ``101 Switching Protocols`` and takes the
connection's payload-parser slot (the one aiohttp's WebSocket support uses), so every byte the peer
sends afterwards arrives here unparsed; what we write goes out as it is. :func:`dial` is the client
half: it sends an upgrade request over a fresh TCP (or TLS) connection and hands back the response
head and the raw streams, for the API server's splice to a node agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable
from urllib.parse import urlencode, urlsplit

from aiohttp import web

READ_CHUNK = 65536


class _RawParser:
    """Stands where aiohttp's WebSocket reader would: the peer's bytes, unparsed, into a buffer;
    reading from the socket pauses while more than ``HIGH`` bytes wait (back-pressure)."""

    HIGH, LOW = 4 * 2 ** 20, 2 ** 20

    def __init__(self, transport: asyncio.BaseTransport | None) -> None:
        self.transport = transport
        self.buf = bytearray()
        self.eof = False
        self.event = asyncio.Event()
        self.paused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.buf += data
        self.event.set()
        if len(self.buf) > self.HIGH and not self.paused and isinstance(self.transport, asyncio.ReadTransport):
            self.paused = True
            self.transport.pause_reading()
        return False, b""

    def feed_eof(self) -> None:
        self.eof = True
        self.event.set()

    async def read(self, n: int) -> bytes:
        while not self.buf and not self.eof:
            self.event.clear()
            await self.event.wait()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        if self.paused and len(self.buf) < self.LOW and isinstance(self.transport, asyncio.ReadTransport):
            self.paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
        return data


class UpgradedConnection:
    """The server side of an upgraded connection: :meth:`read` (``b""`` at end of stream),
    :meth:`write`, :meth:`close`. The handler returns :attr:`response`."""

    def __init__(self, request: web.BaseRequest, response: web.StreamResponse, reader: _RawParser) -> None:
        self.request = request
        self.response = response
        self.reader = reader
        self.closed = False

    @classmethod
    async def accept(cls, request: web.BaseRequest, protocol: str,
                     headers: Iterable[tuple[str, str]] = ()) -> UpgradedConnection:
        """Answer 101 with ``Upgrade: protocol`` (plus ``headers``) and take over the connection."""
        resp = web.StreamResponse(status=101, reason="Switching Protocols")
        resp.headers["Connection"] = "Upgrade"
        resp.headers["Upgrade"] = protocol
        for k, v in headers:
            resp.headers.add(k, v)
        resp.force_close()
        reader = _RawParser(request.transport)
        # before the 101 goes out, so that not a byte the peer sends after it is parsed as HTTP
        request.protocol.set_parser(reader)  # type: ignore[union-attr, arg-type]
        request.protocol.keep_alive(False)  # type: ignore[union-attr]
        await resp.prepare(request)
        return cls(request, resp, reader)

    async def read(self) -> bytes:
        if self.closed:
            return b""
        return await self.reader.read(READ_CHUNK)

    async def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        t = self.request.transport
        if t is None or t.is_closing():
            self.closed = True
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.response.write(data)

    async def close(self) -> None:
        """Flush and close the connection (the transport sends what it buffered first)."""
        if self.closed:
            return
        self.closed = True
        t = self.request.transport
        if t is not None and not t.is_closing():
            t.close()


class DialedConnection:
    """The client side of an upgrade: the response head and the raw streams after it."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]],
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.reader = reader
        self.writer = writer

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    async def body(self, limit: int = 65536, timeout: float = 5) -> bytes:
        """The body of a refused upgrade (Content-Length, else up to the end of the connection)."""
        n = self.header("Content-Length")
        try:
            if n is not None and n.isdigit():
                return await asyncio.wait_for(self.reader.readexactly(min(int(n), limit)), timeout)
            return await asyncio.wait_for(self.reader.read(limit), timeout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
            return e.partial if isinstance(e, asyncio.IncompleteReadError) else b""

    def close(self) -> None:
        self.writer.close()


async def dial(url: str, *, method: str = "GET", params: Iterable[tuple[str, str]] = (),
               headers: Iterable[tuple[str, str]] = (), ssl_context: ssl.SSLContext | bool = False,
               timeout: float = 5) -> DialedConnection:
    """Send an upgrade request to ``url`` (http or https) and read the response head. Raises
    ``OSError``/``TimeoutError``/``ValueError`` (malformed answer) when there is no usable answer."""
    u = urlsplit(url)
    host = u.hostname or "127.0.0.1"
    port = u.port or (443 if u.scheme == "https" else 80)
    tls: ssl.SSLContext | None = None
    if u.scheme == "https":
        tls = ssl_context if isinstance(ssl_context, ssl.SSLContext) else ssl.create_default_context()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        host, port, ssl=tls, server_hostname=host if tls is not None else None, limit=2 ** 20), timeout)
    try:
        target = u.path or "/"
        query = urlencode(list(params))
        if query:
            target += "?" + query
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {netloc}"]
        lines += [f"{k}: {v}" for k, v in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except BaseException:
        writer.close()
        raise
    status_line, *rest = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        writer.close()
        raise ValueError(f"malformed HTTP answer {status_line!r}")
    hdrs: list[tuple[str, str]] = []
    for line in rest:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs.append((k.strip(), v.strip()))
    return DialedConnection(int(parts[1]), parts[2] if len(parts) > 2 else "", hdrs, reader, writer)
