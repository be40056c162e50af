"""The node agent's HTTP API, which the API server proxies ``pods/log``, ``exec``, ``attach`` and
``portforward`` to (contract in :mod:`tugboat.cluster.apiserver.nodeproxy`):

- ``GET /containerLogs/{ns}/{pod}/{container}?follow&tailLines&timestamps&sinceSeconds&sinceTime
  &previous&limitBytes`` -> text/plain (chunked while following);
- ``GET|POST /exec/{ns}/{pod}/{container}?command=…&stdin&stdout&stderr&tty`` -> either a WebSocket,
  channel protocol (v5/v4.channel.k8s.io: first byte of each binary message is the stream: 0 stdin,
  1 stdout, 2 stderr, 3 error/status JSON, 4 resize JSON, 255 close-stream (v5)), or, for
  ``Upgrade: SPDY/3.1``, 101 with the negotiated ``X-Stream-Protocol-Version`` (403 when the client
  offers none we speak) and SPDY/3.1 streams ``error``/``stdin``/``stdout``/``stderr``/``resize``
  (:class:`tugboat.cluster.node.spdy.RemoteCommandSession`);
- ``GET|POST /attach/{ns}/{pod}/{container}`` -> the same two transports: the container's output
  from now on and its stdin when the container has ``stdin: true``;
- ``GET|POST /portForward/{ns}/{pod}?ports=P,…`` -> WebSocket, channel protocol as the Python client
  speaks it (port i: data channel 2i, error channel 2i+1; first frame per channel = the port,
  uint16 little-endian); SPDY/3.1 inside WebSocket messages (subprotocol
  ``SPDY/3.1+portforward.k8s.io``, kubectl 1.32); or plain SPDY/3.1 after ``Upgrade: SPDY/3.1`` with
  ``X-Stream-Protocol-Version: portforward.k8s.io`` (client-go).
- ``GET /healthz`` -> ok.

With TLS (what ``tug cluster node`` does unless ``--insecure-http``) every request must carry the
API server's client certificate (or a ``system:masters`` one) signed by the cluster CA: 401
without a certificate, 403 for any other identity (:mod:`tugboat.cluster.node.tls`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import ssl
import struct
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSMsgType, web

from tugboat.errors import TugError

if TYPE_CHECKING:
    from tugboat.cluster.node.agent import NodeAgent
    from tugboat.cluster.node.worker import CState, PodWorker

AGENT_KEY: web.AppKey[Any] = web.AppKey("agent")
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")


def _agent(request: web.Request) -> NodeAgent:
    return request.app[AGENT_KEY]


def _find(agent: NodeAgent, ns: str, pod: str, container: str | None) -> tuple[PodWorker, CState | None]:
    for w in agent.workers.values():
        md = w.pod["metadata"]
        if md["namespace"] == ns and md["name"] == pod:
            if container is None:
                return w, None
            c = w.cs.get(container)
            if c is None:
                raise web.HTTPNotFound(text=f"container {container} is not valid for pod {pod}")
            return w, c
    raise web.HTTPNotFound(text=f'pod "{pod}" not found on node {agent.name}')


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def _rfc3339nano(ts: str) -> str:
    return ts


async def container_logs(request: web.Request) -> web.StreamResponse:
    from tugboat.engine.logs import follow_from, parse_line, read_logs, rfc3339_to_ts

    agent = _agent(request)
    ns, pod, cname = request.match_info["ns"], request.match_info["pod"], request.match_info["container"]
    w, c = _find(agent, ns, pod, cname)
    assert c is not None
    previous = _flag(request, "previous")
    cid = c.cid
    if previous:
        # the last terminated instance: the current one while it waits for its restart
        cid = c.cid if (c.status is not None and c.status.state == "exited" and c.restart_count) else c.prev_cid
    if cid is None:
        if previous:
            raise web.HTTPBadRequest(text=f'previous terminated container "{cname}" in pod "{pod}" not found')
        reason = c.waiting_reason or "ContainerCreating"
        raise web.HTTPBadRequest(text=f'container "{cname}" in pod "{pod}" is waiting to start: {reason}')
    try:
        path = agent.engine.inspect(cid).get("LogPath") or ""
    except TugError:
        raise web.HTTPNotFound(text=f"container {cname} of pod {pod} has no logs") from None
    tail = int(request.query["tailLines"]) if request.query.get("tailLines") else None
    since = None
    if request.query.get("sinceSeconds"):
        since = time.time() - int(request.query["sinceSeconds"])
    elif request.query.get("sinceTime"):
        since = rfc3339_to_ts(request.query["sinceTime"])
    limit = int(request.query["limitBytes"]) if request.query.get("limitBytes") else None
    timestamps = _flag(request, "timestamps")
    follow = _flag(request, "follow") and not previous
    loop = asyncio.get_running_loop()
    entries, offset = await loop.run_in_executor(agent.executor, lambda: read_logs(path, tail=tail, since=since))
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
    await resp.prepare(request)
    sent = 0

    async def emit(ts: str, data: bytes) -> bool:
        nonlocal sent
        out = (ts.encode() + b" " + data) if timestamps else data
        if limit is not None:
            out = out[: max(0, limit - sent)]
        if out:
            await resp.write(out)
            sent += len(out)
        return limit is None or sent < limit

    more = True
    for _stream, ts, data in entries:
        if not await emit(ts, data):
            more = False
            break
    if follow and more:
        it = follow_from(path, offset)
        while True:
            _off, lines = next(it)
            for line in lines:
                ent = parse_line(line)
                if ent is not None and not await emit(ent[1], ent[2]):
                    more = False
                    break
            if not more:
                break
            st = c.status
            if (c.cid != cid or st is None or st.state == "exited" or w.gone) and not lines:
                # drain once more after the container ended
                _off, lines = next(it)
                for line in lines:
                    ent = parse_line(line)
                    if ent is not None:
                        await emit(ent[1], ent[2])
                break
            await asyncio.sleep(0.2)
    await resp.write_eof()
    return resp


class Channel:
    """exec/attach over WebSocket, channel protocol: the first byte of each binary message is the
    stream. The same view as :class:`tugboat.cluster.node.spdy.RemoteCommandSession`."""

    json_status = True

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.response: web.StreamResponse = ws
        self.v5 = ws.ws_protocol == "v5.channel.k8s.io"

    async def send(self, ch: int, data: bytes) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(bytes([ch]) + data)

    async def inputs(self) -> AsyncIterator[tuple[int, bytes]]:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY and msg.data:
                yield msg.data[0], bytes(msg.data[1:])
            elif msg.type == WSMsgType.TEXT and msg.data:
                # the kubelet reads a text frame as bytes too (the Python client sends str stdin so:
                # chr(channel) + text)
                data = msg.data.encode()
                yield data[0], data[1:]
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                return

    async def close(self) -> None:
        await self.ws.close()


class StreamIO(Protocol):
    """What the exec and attach handlers need from a transport (WebSocket channels or SPDY)."""

    response: web.StreamResponse
    json_status: bool

    async def send(self, ch: int, data: bytes) -> None: ...

    def inputs(self) -> AsyncIterator[tuple[int, bytes]]: ...

    async def close(self) -> None: ...


def status_body(code: int | None, message: str = "") -> dict[str, Any]:
    """The metav1.Status the v4+ protocols put on the error stream at the end of an exec."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    if code is None:
        return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command, exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


async def send_status(io: StreamIO, code: int | None, message: str = "") -> None:
    body = status_body(code, message)
    if io.json_status:
        await io.send(3, json.dumps(body).encode())
    elif code != 0:  # v2/v3: the error stream carries only an error's text
        await io.send(3, body["message"].encode())


def _is_spdy(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower().startswith("spdy/")


def _negotiate(request: web.Request, supported: tuple[str, ...]) -> str:
    """The ``X-Stream-Protocol-Version`` to answer; 403 as the kubelet does when none fits."""
    from tugboat.cluster.node.spdy import negotiate

    offered = request.headers.getall("X-Stream-Protocol-Version", [])
    if not offered:
        return ""
    chosen = negotiate(offered, supported)
    if chosen is None:
        client = " ".join(p.strip() for v in offered for p in v.split(","))
        raise web.HTTPForbidden(
            text=f"unable to upgrade: unable to negotiate protocol: client supports [{client}], "
                 f"server supports [{' '.join(supported)}]",
            headers=[("X-Accepted-Stream-Protocol-Versions", p) for p in supported])  # type: ignore[arg-type]
    return chosen


async def _open_streams(request: web.Request, *, stdin: bool, stdout: bool, stderr: bool,
                        tty: bool) -> tuple[StreamIO, bool]:
    """Upgrade the request (SPDY/3.1 or WebSocket) and return the stream view, and False when the
    SPDY client did not create the streams it asked for (the connection is then closed)."""
    if not _is_spdy(request):
        ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        return Channel(ws), True
    from tugboat.cluster.node.spdy import REMOTECOMMAND_PROTOCOLS, RemoteCommandSession
    from tugboat.cluster.upgrade import UpgradedConnection

    chosen = _negotiate(request, REMOTECOMMAND_PROTOCOLS)
    conn = await UpgradedConnection.accept(request, "SPDY/3.1",
                                           [("X-Stream-Protocol-Version", chosen)] if chosen else [])
    expected = {"error"}
    if stdin:
        expected.add("stdin")
    if stdout:
        expected.add("stdout")
    if stderr and not tty:
        expected.add("stderr")
    if tty and chosen not in ("", "v2.channel.k8s.io"):
        expected.add("resize")
    session = RemoteCommandSession(conn, chosen or "v2.channel.k8s.io", expected)
    session.start()
    problem = await session.wait_streams()
    if problem is not None:
        await session.close(linger=0)
        return session, False  # type: ignore[return-value]
    return session, True  # type: ignore[return-value]


async def exec_handler(request: web.Request) -> web.StreamResponse:
    from tugboat.engine.exec import exec_create, exec_resize, exec_start

    agent = _agent(request)
    ns, pod, cname = request.match_info["ns"], request.match_info["pod"], request.match_info["container"]
    _w, c = _find(agent, ns, pod, cname)
    assert c is not None
    cmd = request.query.getall("command", [])
    if not cmd:
        raise web.HTTPBadRequest(text="you must specify at least one command for the container")
    if c.cid is None or c.status is None or c.status.state != "running":
        raise web.HTTPBadRequest(text=f"container {cname} is not running")
    want_stdin, tty = _flag(request, "stdin"), _flag(request, "tty")
    io, ok = await _open_streams(request, stdin=want_stdin, stdout=_flag(request, "stdout"),
                                 stderr=_flag(request, "stderr"), tty=tty)
    if not ok:
        return io.response
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str | None, bytes]] = asyncio.Queue()

    def sub(stream: str | None, data: bytes) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (stream, data))

    cid = c.cid
    inputs = io.inputs().__aiter__()
    early: list[tuple[int, bytes]] = []
    size: list[int] | None = None
    pending_first: asyncio.Future[tuple[int, bytes]] | None = None
    if tty:  # the client sends the terminal's size first: start the process with it (no resize race)
        pending_first = asyncio.ensure_future(inputs.__anext__())
        await asyncio.wait({pending_first}, timeout=1.0)
        if pending_first.done():
            first = None if pending_first.exception() is not None else pending_first.result()
            pending_first = None
            if first is not None and first[0] == 4:
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    dims = json.loads(first[1])
                    size = [int(dims.get("Height", 0)), int(dims.get("Width", 0))]
            if first is not None and size is None:
                early.append(first)
    try:
        eid = await loop.run_in_executor(agent.executor, lambda: exec_create(agent.engine, cid, {
            "Cmd": cmd, "AttachStdin": want_stdin, "AttachStdout": True, "AttachStderr": True, "Tty": tty}))
        rec = await loop.run_in_executor(agent.executor, lambda: exec_start(agent.engine, eid, subscriber=sub,
                                                                            console_size=size))
    except TugError as e:
        if pending_first is not None:
            pending_first.cancel()
        await send_status(io, None, str(e))
        await io.close()
        return io.response

    async def handle(chan: int, data: bytes) -> None:
        pio = rec.pio
        if chan == 0 and pio is not None and pio.stdin_fd is not None:
            with contextlib.suppress(OSError):
                await loop.run_in_executor(None, _write_all, pio.stdin_fd, data)
        elif chan == 4:
            with contextlib.suppress(Exception):
                dims = json.loads(data)
                exec_resize(agent.engine, eid, int(dims.get("Height", 0)), int(dims.get("Width", 0)))
        elif chan == 255 and data[:1] == b"\x00" and pio is not None:
            pio.close_stdin()

    async def pump_in() -> None:
        for chan, data in early:
            await handle(chan, data)
        if pending_first is not None:
            with contextlib.suppress(StopAsyncIteration, RuntimeError, ConnectionError):
                await handle(*await pending_first)
        async for chan, data in inputs:
            await handle(chan, data)
        pio = rec.pio  # the client is gone: its stdin ends too (a shell then exits)
        if want_stdin and pio is not None:
            pio.close_stdin()

    tin = asyncio.create_task(pump_in())
    try:
        while True:
            stream, data = await queue.get()
            if stream is None:
                break
            await io.send(2 if stream == "stderr" else 1, data)
        await loop.run_in_executor(agent.executor, rec.done.wait, 30)
        await send_status(io, rec.exit_code if rec.exit_code is not None else 255)
    finally:
        tin.cancel()
        if pending_first is not None:
            pending_first.cancel()
        await io.close()
    return io.response


def _write_all(fd: int, data: bytes) -> None:
    import select

    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
        except BlockingIOError:
            select.select([], [fd], [], 1)


async def attach_handler(request: web.Request) -> web.StreamResponse:
    agent = _agent(request)
    ns, pod, cname = request.match_info["ns"], request.match_info["pod"], request.match_info["container"]
    _w, c = _find(agent, ns, pod, cname)
    assert c is not None
    if c.cid is None:
        raise web.HTTPBadRequest(text=f"container {cname} is not running")
    cid = c.cid
    ctr = agent.engine.get(cid)
    pio = ctr.pio
    if pio is None:
        raise web.HTTPBadRequest(text=f"container {cname} is not running")
    io, ok = await _open_streams(request, stdin=_flag(request, "stdin"), stdout=_flag(request, "stdout"),
                                 stderr=_flag(request, "stderr"), tty=_flag(request, "tty"))
    if not ok:
        return io.response
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str | None, bytes]] = asyncio.Queue()
    unsub = pio.subscribe(lambda s, d: loop.call_soon_threadsafe(queue.put_nowait, (s, d)))

    async def pump_in() -> None:
        async for chan, data in io.inputs():
            if chan == 0 and pio.stdin_fd is not None:
                with contextlib.suppress(OSError):
                    await loop.run_in_executor(None, _write_all, pio.stdin_fd, data)
            elif chan == 4:
                with contextlib.suppress(Exception):
                    size = json.loads(data)
                    agent.engine.resize(cid, int(size.get("Height", 0)), int(size.get("Width", 0)))

    tin = asyncio.create_task(pump_in())
    try:
        while True:
            get = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({get, tin}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                break
            stream, data = get.result()
            if stream is None:
                await send_status(io, 0)
                break
            await io.send(2 if stream == "stderr" else 1, data)
    finally:
        unsub()
        tin.cancel()
        await io.close()
    return io.response


async def port_forward(request: web.Request) -> web.StreamResponse:
    agent = _agent(request)
    ns, pod = request.match_info["ns"], request.match_info["pod"]
    w, _ = _find(agent, ns, pod, None)
    from tugboat.cluster.node import spdy

    if _is_spdy(request):  # client-go's SPDY port-forwarder: SPDY/3.1 on the upgraded connection
        _negotiate(request, spdy.PORTFORWARD_PROTOCOLS)
        return await spdy.serve_portforward_upgrade(request, w.pod_ip or "127.0.0.1")
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if "SPDY/3.1+portforward.k8s.io" in offered:  # kubectl: SPDY frames inside the WebSocket
        return await spdy.serve_portforward_ws(request, w.pod_ip or "127.0.0.1")
    ports = [int(p) for p in ",".join(request.query.getall("ports", [])).split(",") if p.strip()]
    if not ports:
        raise web.HTTPBadRequest(text="query parameter \"port\" is required")
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
    await ws.prepare(request)
    ch = Channel(ws)
    writers: dict[int, asyncio.StreamWriter] = {}
    tasks: list[asyncio.Task] = []
    host = w.pod_ip or "127.0.0.1"
    for i, port in enumerate(ports):
        await ch.send(2 * i, struct.pack("<H", port))
        await ch.send(2 * i + 1, struct.pack("<H", port))
        try:
            r, wr = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        except (TimeoutError, OSError) as e:
            await ch.send(2 * i + 1, f"error forwarding port {port} to pod {pod}: {e}".encode())
            continue
        writers[i] = wr

        async def pump_out(idx: int = i, reader: asyncio.StreamReader = r) -> None:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await ch.send(2 * idx, data)
            await ws.close()

        tasks.append(asyncio.create_task(pump_out()))
    try:
        async for chan, data in ch.inputs():
            if chan % 2 == 0 and chan // 2 in writers:
                writers[chan // 2].write(data)
                await writers[chan // 2].drain()
    finally:
        for t in tasks:
            t.cancel()
        for wr in writers.values():
            wr.close()
        await ws.close()
    return ws


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def pods_list(request: web.Request) -> web.Response:
    agent = _agent(request)
    items = [w.pod for w in agent.workers.values()]
    return web.json_response({"kind": "PodList", "apiVersion": "v1", "items": items})


@web.middleware
async def _authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
    """Over TLS, only the API server (or a cluster admin) may use the node's endpoint: no client
    certificate -> 401, a CA-signed certificate of anyone else -> 403 (the handshake already refused
    certificates from other CAs)."""
    from tugboat.cluster.node.tls import authorized
    from tugboat.util.net import peer_identity

    if request.transport is None or request.transport.get_extra_info("sslcontext") is None:
        return await handler(request)  # plain HTTP: the agent was started without TLS (tests, --insecure-http)
    who = peer_identity(request.transport.get_extra_info("peercert"))
    if who is None:
        return web.Response(status=401, text="Unauthorized")
    if not authorized(who):
        verb = "create" if request.method == "POST" or request.headers.get("Upgrade") else "get"
        return web.Response(status=403, text=f"Forbidden (user={who[0]}, verb={verb}, resource=nodes, "
                                             "subresource=proxy)")
    return await handler(request)


def make_app(agent: NodeAgent) -> web.Application:
    app = web.Application(middlewares=[_authenticate])
    app[AGENT_KEY] = agent
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/pods", pods_list)
    app.router.add_get("/containerLogs/{ns}/{pod}/{container}", container_logs)
    app.router.add_get("/exec/{ns}/{pod}/{container}", exec_handler)
    app.router.add_post("/exec/{ns}/{pod}/{container}", exec_handler)
    app.router.add_get("/attach/{ns}/{pod}/{container}", attach_handler)
    app.router.add_post("/attach/{ns}/{pod}/{container}", attach_handler)
    app.router.add_get("/portForward/{ns}/{pod}", port_forward)
    app.router.add_post("/portForward/{ns}/{pod}", port_forward)
    return app


async def start_server(agent: NodeAgent, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    """Serve the kubelet API on ``host:port`` (0: any free port, written back to ``agent.port``);
    HTTPS with client-certificate authentication when ``ssl_context`` (default: the agent's
    ``kubelet_ssl``, see :mod:`tugboat.cluster.node.tls`) is set, else plain HTTP."""
    if ssl_context is None:
        ssl_context = getattr(agent, "kubelet_ssl", None)
    runner = web.AppRunner(make_app(agent), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    if port == 0:
        srv = site._server
        if srv is not None and srv.sockets:  # type: ignore[union-attr]
            agent.port = srv.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner


_ = dt
