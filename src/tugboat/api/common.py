"""Helpers every Engine API route module uses.

- :func:`add_route` registers a handler at ``/<path>`` and at ``/v{version}/<path>``.
- :func:`middleware` checks the path version (1.24 … 1.50), maps :class:`~tugboat.errors.TugError`
  to docker's ``{"message": …}`` bodies with the right status, and catches bad JSON.
- :func:`json_response`, :func:`error_response`, :func:`bool_value` (dockerd's rule),
  :func:`parse_filters`, :func:`read_json`, :class:`JSONStream` (chunked progress streams),
  :func:`hijack` (the attach/exec ``101 UPGRADED`` connection takeover).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tugboat.errors import InvalidArgument, NotModified, TugError

log = logging.getLogger("tugboat.api")

API_VERSION = "1.50"
MIN_API_VERSION = "1.24"
SERVER_VERSION = "28.2.2-tugboat"
SERVER_HEADER = "Docker/28.2.2 (linux)"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ENGINE_KEY: web.AppKey[Any] = web.AppKey("engine", object)


def _vtuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return (0,)


def engine_of(request: web.Request) -> Any:
    """The Engine the app was made with."""
    return request.app[ENGINE_KEY]


def api_version(request: web.Request) -> str:
    """The API version the client asked for (the path prefix), or the current one."""
    return request.match_info.get("version") or API_VERSION


def version_at_least(request: web.Request, v: str) -> bool:
    return _vtuple(api_version(request)) >= _vtuple(v)


def add_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Register ``handler`` for ``method path`` with and without the ``/vX.Y`` prefix."""
    app.router.add_route(method, path, handler)
    app.router.add_route(method, r"/v{version:[0-9]+\.[0-9]+}" + path, handler)


def bool_value(value: str | None) -> bool:
    """dockerd's httputils.BoolValue: "", 0, no, false, none are false; anything else true."""
    if value is None:
        return False
    return value.strip().lower() not in ("", "0", "no", "false", "none")


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    if name not in request.query:
        return default
    return bool_value(request.query.get(name))


def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"invalid value for {name}: {raw!r}: must be an integer") from None


def parse_filters(raw: str | None) -> dict[str, list[str]]:
    """Parse ``filters`` (map form ``{"k":{"v":true}}`` or list form ``{"k":["v"]}``)."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidArgument(f"invalid filter: {raw!r} is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidArgument("invalid filter: expected a JSON object")
    out: dict[str, list[str]] = {}
    for key, val in data.items():
        if isinstance(val, dict):
            out[key] = [k for k, on in val.items() if on]
        elif isinstance(val, list):
            out[key] = [str(v) for v in val]
        elif isinstance(val, str):
            out[key] = [val]
        else:
            raise InvalidArgument(f"invalid filter {key!r}")
    return out


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode() + b"\n", status=status, content_type="application/json"
    )


def error_response(status: int, message: str) -> web.Response:
    return web.Response(
        body=json.dumps({"message": message}).encode() + b"\n",
        status=status,
        content_type="application/json",
    )


def no_content(status: int = 204) -> web.Response:
    return web.Response(status=status)


async def read_json(request: web.Request, *, required: bool = False) -> Any:
    """The request body as JSON (``None`` when empty and not required); 400 naming the problem."""
    body = await request.read()
    if not body.strip():
        if required:
            raise InvalidArgument("invalid JSON: request body is empty")
        return None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise InvalidArgument(f"invalid JSON: {exc}") from None


def check_version(version: str | None) -> None:
    if not version:
        return
    v = _vtuple(version)
    if v > _vtuple(API_VERSION):
        raise InvalidArgument(
            f"client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )
    if v < _vtuple(MIN_API_VERSION):
        raise InvalidArgument(
            f"client version {version} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version"
        )


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        check_version(request.match_info.get("version"))
        return await handler(request)
    except NotModified:
        return web.Response(status=304)
    except TugError as exc:
        status = exc.http_status if 400 <= exc.http_status < 600 else 500
        return error_response(status, exc.message)
    except web.HTTPNotFound:
        return error_response(404, "page not found")
    except web.HTTPMethodNotAllowed:
        return error_response(405, "method not allowed")
    except web.HTTPException:
        raise
    except (ConnectionResetError, BrokenPipeError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, internal_message(exc))


def internal_message(exc: BaseException) -> str:
    """What an API client is told of an unexpected error: never host paths, never a traceback
    (the detail is in the daemon log). An ``OSError`` keeps its kernel reason, as dockerd's do."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"error processing the request: {exc.strerror} (details in the daemon log)"
    return f"internal error ({type(exc).__name__}); details in the daemon log"


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Standard headers dockerd adds to every response."""
    h = response.headers
    h["Api-Version"] = API_VERSION
    h["Docker-Experimental"] = "false"
    h["Ostype"] = "linux"
    h["Server"] = SERVER_HEADER


class JSONStream:
    """A chunked response of JSON messages separated by ``\\r\\n`` (pull/push/build/events)."""

    def __init__(self, request: web.Request, content_type: str = "application/json") -> None:
        self.request = request
        self.resp = web.StreamResponse(status=200)
        self.resp.content_type = content_type
        self.resp.enable_chunked_encoding()
        self.started = False
        self.closed = False

    async def start(self) -> None:
        if not self.started:
            self.started = True
            await self.resp.prepare(self.request)

    async def send(self, obj: Any) -> None:
        await self.start()
        if self.closed:
            return
        try:
            await self.resp.write(json.dumps(obj).encode() + b"\r\n")
        except (ConnectionError, RuntimeError):
            self.closed = True

    async def error(self, message: str, code: int | None = None) -> None:
        detail: dict[str, Any] = {"message": message}
        if code is not None:
            detail["code"] = code
        await self.send({"errorDetail": detail, "error": message})

    async def finish(self) -> web.StreamResponse:
        await self.start()
        if not self.closed:
            try:
                await self.resp.write_eof()
            except (ConnectionError, RuntimeError):
                pass
        return self.resp


class Hijacked:
    """A connection taken over after ``101 UPGRADED``: raw bytes both ways, half-close aware.

    ``recv()`` returns ``b""`` once the client half-closed; writing keeps working until
    :meth:`close`.
    """

    def __init__(self, request: web.Request, sock: socket.socket, tail: bytes) -> None:
        self.request = request
        self.sock = sock
        self._tail = tail
        self.loop = asyncio.get_running_loop()
        self.broken = False

    async def recv(self, n: int = 65536) -> bytes:
        if self._tail:
            data, self._tail = self._tail, b""
            return data
        try:
            return await self.loop.sock_recv(self.sock, n)
        except OSError:
            return b""

    async def send(self, data: bytes) -> None:
        if self.broken or not data:
            return
        try:
            await self.loop.sock_sendall(self.sock, data)
        except OSError:
            self.broken = True

    async def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        transport = self.request.transport
        if transport is not None:
            transport.close()


class _TLSHijacked(Hijacked):
    """A hijacked TLS connection: the TLS object and its memory BIOs taken over from asyncio's TLS
    layer (paused), bytes moved on the socket by us; the client's close_notify is a half-close."""

    def __init__(self, request: web.Request, sock: socket.socket, tail: bytes, ssl_object: Any,
                 incoming: Any, outgoing: Any) -> None:
        super().__init__(request, sock, tail)
        self.tls = ssl_object
        self.incoming = incoming
        self.outgoing = outgoing
        self.eof = False

    async def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def recv(self, n: int = 65536) -> bytes:
        import ssl

        if self._tail:
            data, self._tail = self._tail, b""
            return data
        while not self.eof:
            try:
                data = self.tls.read(n)
                if data:
                    return data
                self.eof = True  # close_notify
            except ssl.SSLWantReadError:
                try:
                    raw = await self.loop.sock_recv(self.sock, 65536)
                except OSError:
                    raw = b""
                if not raw:
                    self.eof = True
                else:
                    self.incoming.write(raw)
            except ssl.SSLZeroReturnError:
                self.eof = True
            except (ssl.SSLError, OSError):
                self.eof = True
            with contextlib.suppress(OSError):
                await self._flush()  # e.g. TLS 1.3 key updates answered
        return b""

    async def send(self, data: bytes) -> None:
        import ssl

        if self.broken or not data:
            return
        try:
            self.tls.write(data)
            await self._flush()
        except (ssl.SSLError, OSError):
            self.broken = True

    async def close(self) -> None:
        import ssl

        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self.tls.unwrap()  # our close_notify
        with contextlib.suppress(ssl.SSLError, OSError):
            await self._flush()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        transport = self.request.transport
        if transport is not None:
            transport.abort()  # asyncio's TLS state is ours now: no second shutdown through it


class _Done(web.StreamResponse):
    """Returned by hijacking handlers: aiohttp must write nothing more on the connection."""

    async def prepare(self, request: web.BaseRequest) -> Any:  # type: ignore[override]
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


HIJACK_DONE = _Done


def wants_upgrade(request: web.Request) -> bool:
    return "upgrade" in request.headers.get("Connection", "").lower() and bool(
        request.headers.get("Upgrade")
    )


async def hijack(request: web.Request, content_type: str) -> Hijacked:
    """Answer ``101 UPGRADED`` (or ``200`` without an Upgrade header) and take the socket over."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("client went away")
    await request.read()  # consume any (normally empty) body
    proto: Any = request.protocol
    transport.pause_reading()
    tail = bytes(getattr(proto, "_message_tail", b"") or b"")
    if tail:
        proto._message_tail = b""
    raw: socket.socket = transport.get_extra_info("socket")
    ssl_object = transport.get_extra_info("ssl_object")
    ssl_proto = getattr(transport, "_ssl_protocol", None)
    if ssl_object is not None and ssl_proto is not None:
        # tcp:// with TLS: asyncio's TLS layer closes the connection on the client's close_notify
        # (docker half-closes stdin that way), so the hijacked stream drives the TLS object itself
        inner = getattr(ssl_proto, "_transport", None)
        if inner is not None:
            inner.pause_reading()
    sock = socket.socket(fileno=__import__("os").dup(raw.fileno()))
    sock.setblocking(False)
    if wants_upgrade(request):
        head = (
            "HTTP/1.1 101 UPGRADED\r\n"
            f"Content-Type: {content_type}\r\n"
            "Connection: Upgrade\r\nUpgrade: tcp\r\n"
            f"Api-Version: {API_VERSION}\r\nDocker-Experimental: false\r\nOstype: linux\r\n"
            f"Server: {SERVER_HEADER}\r\n\r\n"
        )
    else:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n"
    if ssl_object is not None and ssl_proto is not None:
        h: Hijacked = _TLSHijacked(request, sock, tail, ssl_object, ssl_proto._incoming, ssl_proto._outgoing)
    else:
        h = Hijacked(request, sock, tail)
    await h.send(head.encode())
    return h


def mux_frame(stream: int, data: bytes) -> bytes:
    """docker's 8-byte multiplexed-stream frame header plus payload."""
    return bytes((stream, 0, 0, 0)) + len(data).to_bytes(4, "big") + data


def docker_json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


_EXECUTOR: Any = None


def executor() -> Any:
    """A roomy thread pool for blocking engine calls (waits and stops block for long)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        from concurrent.futures import ThreadPoolExecutor

        _EXECUTOR = ThreadPoolExecutor(max_workers=256, thread_name_prefix="tug-api")
    return _EXECUTOR


async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking engine call in the API thread pool."""
    import functools

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor(), functools.partial(fn, *args, **kwargs))


async def copy_to_response(resp: web.StreamResponse, read: Callable[[int], bytes]) -> None:
    """Send what the blocking ``read`` gives (64 KiB at a time, in the API thread pool) until EOF,
    then end the body; a client that went away ends it quietly."""
    try:
        while True:
            chunk = await run(read, 1 << 16)
            if not chunk:
                break
            await resp.write(chunk)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass


def client_gone(request: web.Request) -> bool:
    t = request.transport
    return t is None or t.is_closing()
