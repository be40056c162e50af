"""The Kubernetes client's failed requests name themselves (verb, path, server, type), and start-up
retries transient failures with back-off until a deadline (real HTTP servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.kubeconfig import KubeConfig
from tugboat.cluster.client.rest import (
    ApiClient,
    ApiConnectionError,
    ApiError,
    ApiTimeout,
    failure,
    retry,
    transient,
)
from tugboat.errors import TugError, Unavailable, describe


@asynccontextmanager
async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)  # stalled handlers: cancel
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def client(base: str, **kw: object) -> ApiClient:
    return ApiClient(KubeConfig(server=base), **kw)  # type: ignore[arg-type]


def test_a_request_without_answer_is_an_api_timeout_naming_verb_path_and_server() -> None:
    async def main() -> None:
        async def stall(_: web.Request) -> web.Response:
            await asyncio.sleep(10)
            return web.json_response({})

        async with serve(stall) as base:
            c = client(base, request_timeout=0.3)
            try:
                t0 = time.monotonic()
                with pytest.raises(ApiTimeout) as ei:
                    await c.create(R.NODES, {"metadata": {"name": "n1"}})
                assert time.monotonic() - t0 < 3
            finally:
                await c.close()
        e = ei.value
        # still a TimeoutError to code that catches those, and a TugError with a message
        assert isinstance(e, TimeoutError) and isinstance(e, TugError)
        assert str(e) == f"POST /api/v1/nodes to the API server {base}: no answer within 0.3s"
        assert e.request == "POST /api/v1/nodes"
        assert failure(e).startswith("ApiTimeout: POST /api/v1/nodes to the API server")
        assert transient(e)

    asyncio.run(main())


def test_a_refused_connection_is_an_api_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused

        async def main() -> None:
            c = client(f"http://127.0.0.1:{port}")
            try:
                with pytest.raises(ApiConnectionError) as ei:
                    await c.get(R.LEASES, "n1", "kube-node-lease")
            finally:
                await c.close()
            e = ei.value
            assert isinstance(e, ConnectionError) and isinstance(e, OSError)
            assert str(e).startswith(f"GET /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1 to the "
                                     f"API server http://127.0.0.1:{port}: ")
            assert "Connect" in str(e) and transient(e)

        asyncio.run(main())


def test_an_error_status_records_its_request() -> None:
    async def main() -> None:
        async def forbidden(_: web.Request) -> web.Response:
            return web.json_response({"kind": "Status", "reason": "Forbidden", "message": "nodes is forbidden",
                                      "code": 403}, status=403)

        async with serve(forbidden) as base:
            c = client(base)
            try:
                with pytest.raises(ApiError) as ei:
                    await c.patch(R.NODES, "n1", {"status": {}}, subresource="status")
            finally:
                await c.close()
        assert ei.value.request == "PATCH /api/v1/nodes/n1/status"
        assert failure(ei.value) == "PATCH /api/v1/nodes/n1/status: ApiError 403 Forbidden: nodes is forbidden"
        assert not transient(ei.value)

    asyncio.run(main())


def test_retry_outlasts_timeouts_and_5xx_then_returns_the_answer() -> None:
    async def main() -> None:
        hits: list[str] = []

        async def flaky(req: web.Request) -> web.Response:
            hits.append(req.method)
            if len(hits) == 1:
                await asyncio.sleep(5)  # times out
            if len(hits) in (2, 3):
                return web.json_response({"kind": "Status", "reason": "ServiceUnavailable", "message": "starting",
                                          "code": 503}, status=503)
            if len(hits) == 4:
                return web.json_response({"kind": "Status", "reason": "TooManyRequests", "message": "slow down",
                                          "code": 429}, status=429)  # no Retry-After: the client's retry is ours
            return web.json_response({"kind": "Node", "metadata": {"name": "n1"}}, status=201)

        async with serve(flaky) as base:
            c = client(base, request_timeout=0.3)
            try:
                got = await retry("registering", lambda: c.create(R.NODES, {"metadata": {"name": "n1"}}),
                                  deadline=time.monotonic() + 20, first_delay=0.05)
            finally:
                await c.close()
        assert got["metadata"]["name"] == "n1"
        assert hits == ["POST"] * 5

    asyncio.run(main())


def test_retry_lets_a_permanent_error_through_at_once() -> None:
    async def main() -> None:
        hits = 0

        async def conflict(_: web.Request) -> web.Response:
            nonlocal hits
            hits += 1
            return web.json_response({"kind": "Status", "reason": "Invalid", "message": "bad node", "code": 422},
                                     status=422)

        async with serve(conflict) as base:
            c = client(base)
            try:
                with pytest.raises(ApiError) as ei:
                    await retry("registering", lambda: c.create(R.NODES, {"metadata": {"name": "n1"}}),
                                deadline=time.monotonic() + 20)
            finally:
                await c.close()
        assert ei.value.code == 422 and hits == 1

    asyncio.run(main())


def test_retry_gives_up_at_the_deadline_naming_the_step_and_the_last_request() -> None:
    async def main() -> None:
        hits = 0

        async def stall(_: web.Request) -> web.Response:
            nonlocal hits
            hits += 1
            await asyncio.sleep(10)
            return web.json_response({})

        async with serve(stall) as base:
            c = client(base, request_timeout=0.2)
            t0 = time.monotonic()
            try:
                with pytest.raises(Unavailable) as ei:
                    await retry("registering the node", lambda: c.get(R.NODES, "n1"),
                                deadline=time.monotonic() + 1.5, first_delay=0.05)
            finally:
                await c.close()
            took = time.monotonic() - t0
        msg = str(ei.value)
        assert msg.startswith(f"registering the node: still failing after {hits} attempts in ")
        assert f"the last: ApiTimeout: GET /api/v1/nodes/n1 to the API server {base}: no answer within 0.2s" in msg
        assert hits >= 3 and 1.4 < took < 4
        assert isinstance(ei.value.__cause__, ApiTimeout)

    asyncio.run(main())


def test_describe_never_leaves_an_exception_unnamed() -> None:
    def deep() -> None:
        raise TimeoutError

    try:
        deep()
    except TimeoutError as e:
        text = describe(e)
    assert text.startswith("TimeoutError without a message (in deep, ")
    assert "test_cluster_client_retry.py:" in text or "tests/unit" in text
    assert describe(ValueError("x")) == "ValueError: x"
    assert describe(Unavailable("the registry is down")) == "the registry is down"
    try:
        try:
            raise OSError(5, "I/O error")
        except OSError as inner:
            raise RuntimeError from inner
    except RuntimeError as e:
        assert describe(e).endswith("caused by OSError: [Errno 5] I/O error")
