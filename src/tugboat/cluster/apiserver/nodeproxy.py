"""Streaming pod subresources (log, exec, attach, portforward) proxied to the pod's node agent.

The contract with node agents (the kubelet's own API, by path):
- The Node object says where its agent listens: ``status.daemonEndpoints.kubeletEndpoint.Port`` and
  the first ``status.addresses`` entry of type ``InternalIP`` (else ``Hostname``). The agent serves
  plain HTTP unless the node has annotation ``tugboat.io/kubelet-scheme: https``. Over HTTPS the API
  server verifies the agent's serving certificate against the cluster CA (it must name the node's
  address) and presents its own client certificate, CN ``kube-apiserver-kubelet-client`` (O
  ``system:masters``), signed by the cluster CA (``DATA_DIR/pki/apiserver-kubelet-client.{crt,key}``,
  made on first use) — what kube-apiserver's ``--kubelet-client-certificate`` and
  ``--kubelet-certificate-authority`` do.
- ``GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&timestamps=&sinceSeconds=
  &sinceTime=&previous=&limitBytes=`` -> ``text/plain`` (chunked when following);
- ``GET|POST /exec/{namespace}/{pod}/{container}?command=…&stdin=&stdout=&stderr=&tty=`` and
  ``GET|POST /attach/{namespace}/{pod}/{container}?…``: either a WebSocket speaking the
  ``v5.channel.k8s.io``/``v4.channel.k8s.io`` channel protocol (the API server relays messages as
  they are, choosing the subprotocol the client offered), or an ``Upgrade: SPDY/3.1`` with
  ``X-Stream-Protocol-Version`` negotiation (v5/v4/v3/v2.channel.k8s.io): the node answers 101 with
  the chosen version (403 when none fits) and speaks SPDY/3.1 on the raw connection;
- ``GET|POST /portForward/{namespace}/{pod}?ports=…``: a WebSocket, channel protocol as the Python
  client uses it; with subprotocol ``SPDY/3.1+portforward.k8s.io`` SPDY frames inside the WebSocket
  (kubectl 1.32's); or ``Upgrade: SPDY/3.1`` with ``X-Stream-Protocol-Version: portforward.k8s.io``
  (client-go's SPDY port-forwarder).

SPDY upgrades are not terminated here: the API server forwards the upgrade request to the node
(same method, query, ``X-Stream-Protocol-Version`` values, its own client certificate), passes a
refusal back as the node gave it (status and body, e.g. 403 ``unable to negotiate protocol``), and
on ``101`` answers the client ``101`` with the node's ``X-Stream-Protocol-Version`` and splices the
two connections byte for byte (:mod:`tugboat.cluster.upgrade`) until either side closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from tugboat.cluster.apiserver.meta import ApiError
from tugboat.cluster.apiserver.registry import ResourceType

if TYPE_CHECKING:
    from tugboat.cluster.apiserver.server import APIServer

WS_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                "channel.k8s.io", "SPDY/3.1+portforward.k8s.io")


KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"
_ssl_contexts: dict[str, ssl.SSLContext] = {}


def kubelet_client_ssl(data_dir: str | None) -> ssl.SSLContext:
    """The TLS context for talking to node agents: the cluster CA as trust anchor, the API server's
    kubelet-client certificate as identity (issued into ``data_dir/pki`` when missing)."""
    if not data_dir:
        raise ApiError(503, "the API server has no data directory, hence no client certificate for node agents",
                       "ServiceUnavailable")
    ctx = _ssl_contexts.get(data_dir)
    if ctx is not None:
        return ctx
    from tugboat.cluster.apiserver.certs import ClusterPKI

    pki = ClusterPKI(data_dir)
    cert, key = pki.path("apiserver-kubelet-client.crt"), pki.path("apiserver-kubelet-client.key")
    if not (os.path.exists(cert) and os.path.exists(key)):
        cert, key = pki.issue_client(KUBELET_CLIENT_CN, ["system:masters"], "apiserver-kubelet-client")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.ca_cert)
    ctx.load_cert_chain(cert, key)
    _ssl_contexts[data_dir] = ctx
    return ctx


def _ssl_for(srv: APIServer, url: str) -> ssl.SSLContext | bool:
    return kubelet_client_ssl(srv.data_dir) if url.startswith("https://") else False


def node_endpoint(node: dict[str, Any]) -> str | None:
    st = node.get("status") or {}
    port = ((st.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    if not port:
        return None
    addrs = {a.get("type"): a.get("address") for a in st.get("addresses") or []}
    host = addrs.get("InternalIP") or addrs.get("Hostname")
    if not host:
        return None
    scheme = ((node.get("metadata") or {}).get("annotations") or {}).get("tugboat.io/kubelet-scheme", "http")
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _container(pod: dict[str, Any], requested: str | None, name: str) -> str:
    cs = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    ics = [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
    if requested:
        if requested not in cs + ics:
            raise ApiError(400, f"container {requested} is not valid for pod {name}", "BadRequest")
        return requested
    if len(cs) == 1:
        return cs[0]
    default = ((pod.get("metadata") or {}).get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
    if default in cs:
        return default
    raise ApiError(400, f"a container name must be specified for pod {name}, choose one of: [{' '.join(cs)}]",
                   "BadRequest")


async def handle(srv: APIServer, request: web.Request, rt: ResourceType, ns: str, name: str, sub: str) -> web.StreamResponse:
    if rt.plural != "pods" or rt.group != "":
        raise ApiError(404, "the server could not find the requested resource", "NotFound")
    pod = await srv.objects.get(rt, ns, name)
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        raise ApiError(400, f"pod {name} does not have a host assigned", "BadRequest")
    node_rt = srv.registry.get("", "v1", "nodes")
    assert node_rt is not None
    try:
        node = await srv.objects.get(node_rt, None, node_name)
    except ApiError:
        raise ApiError(503, f'node "{node_name}" of pod {name} is not registered', "ServiceUnavailable") from None
    base = node_endpoint(node)
    if base is None:
        raise ApiError(503, f"no node agent endpoint for node {node_name!r} (status.daemonEndpoints."
                       "kubeletEndpoint.Port and an InternalIP address are needed)", "ServiceUnavailable")
    q = request.query
    if sub == "portforward":
        url = f"{base}/portForward/{ns}/{name}"
    else:
        container = _container(pod, q.get("container"), name)
        kind = {"log": "containerLogs", "exec": "exec", "attach": "attach"}.get(sub)
        if kind is None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        url = f"{base}/{kind}/{ns}/{name}/{container}"
    params = [(k, v) for k, v in q.items() if k != "container"]
    tls = _ssl_for(srv, url)
    if sub == "log":
        return await _proxy_http(request, url, params, tls)
    upgrade = request.headers.get("Upgrade", "").lower()
    if upgrade.startswith("spdy/"):
        return await _proxy_spdy(request, url, params, tls)
    if upgrade != "websocket":
        raise ApiError(400, "Upgrade request required (Upgrade: websocket or SPDY/3.1)", "BadRequest")
    return await _proxy_ws(request, url, params, tls)


async def _proxy_http(request: web.Request, url: str, params: list[tuple[str, str]],
                      tls: ssl.SSLContext | bool = False) -> web.StreamResponse:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url, params=params, ssl=tls) as r:
            if r.status != 200:
                text = await r.text()
                raise ApiError(r.status if r.status >= 400 else 500, text.strip() or f"node agent answered {r.status}")
            resp = web.StreamResponse(status=200, headers={"Content-Type": r.headers.get("Content-Type", "text/plain")})
            await resp.prepare(request)
            async for chunk in r.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    except aiohttp.ClientError as exc:
        raise ApiError(502, f"error dialing the node agent at {url}: {exc}", "ServiceUnavailable") from None


async def _proxy_ws(request: web.Request, url: str, params: list[tuple[str, str]],
                    tls: ssl.SSLContext | bool = False) -> web.StreamResponse:
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    protos = [p for p in offered if p in WS_PROTOCOLS] or ["v4.channel.k8s.io"]
    session = aiohttp.ClientSession()
    try:
        try:
            upstream = await session.ws_connect(url.replace("http", "ws", 1), params=params, protocols=protos,
                                                ssl=tls)
        except aiohttp.ClientError as exc:
            raise ApiError(502, f"error dialing the node agent at {url}: {exc}", "ServiceUnavailable") from None
        ws = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else protos[:1])
        await ws.prepare(request)

        async def pump(src: Any, dst: Any) -> None:
            async for msg in src:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                else:
                    break
            await dst.close()

        tasks = [asyncio.create_task(pump(ws, upstream)), asyncio.create_task(pump(upstream, ws))]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t, 2)
        for t in pending:
            t.cancel()
        await upstream.close()
        await ws.close()
        return ws
    finally:
        await session.close()


async def _proxy_spdy(request: web.Request, url: str, params: list[tuple[str, str]],
                      tls: ssl.SSLContext | bool = False) -> web.StreamResponse:
    """Forward an ``Upgrade: SPDY/3.1`` to the node agent and splice the connections on 101."""
    from tugboat.cluster.upgrade import UpgradedConnection, dial

    offered = request.headers.getall("X-Stream-Protocol-Version", [])
    headers = [("Connection", "Upgrade"), ("Upgrade", request.headers.get("Upgrade", "SPDY/3.1"))]
    headers += [("X-Stream-Protocol-Version", v) for v in offered]
    try:
        up = await dial(url, method=request.method, params=params, headers=headers, ssl_context=tls)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ApiError(502, f"error dialing the node agent at {url}: {exc}", "ServiceUnavailable") from None
    if up.status != 101:
        try:
            body = await up.body()
        finally:
            up.close()
        resp = web.Response(status=up.status, reason=up.reason or None, body=body,
                            content_type=(up.header("Content-Type") or "text/plain").split(";")[0])
        for v in up.header_values("X-Accepted-Stream-Protocol-Versions"):
            resp.headers.add("X-Accepted-Stream-Protocol-Versions", v)
        return resp
    chosen = up.header_values("X-Stream-Protocol-Version")
    try:
        down = await UpgradedConnection.accept(request, up.header("Upgrade") or "SPDY/3.1",
                                               [("X-Stream-Protocol-Version", v) for v in chosen])
    except BaseException:
        up.close()
        raise

    async def to_node() -> None:
        while data := await down.read():
            up.writer.write(data)
            await up.writer.drain()
        if up.writer.can_write_eof():
            with contextlib.suppress(OSError):
                up.writer.write_eof()

    async def to_client() -> None:
        while data := await up.reader.read(65536):
            await down.write(data)

    tasks = {asyncio.create_task(to_node()), asyncio.create_task(to_client())}
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if pending:  # one direction ended: give the other a moment to drain, then hang up both
            await asyncio.wait(pending, timeout=2)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        up.close()
        await down.close()
    return down.response
