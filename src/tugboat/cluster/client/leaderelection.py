"""Leader election on a coordination.k8s.io/v1 Lease (client-go's resourcelock semantics).

A candidate acquires the lease when it is free or when the holder has not renewed it for
``leaseDurationSeconds`` as observed on the candidate's own clock; the leader renews every
``retry_period`` and steps down (calls ``on_stopped``) if it cannot renew within ``renew_deadline``.
Updates use the Lease's resourceVersion, so two candidates never both win.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

from tugboat.cluster.client.resources import LEASES
from tugboat.cluster.client.rest import ApiClient, ApiError, NotFoundError
from tugboat.cluster.client.util import now_micro, rand_suffix

log = logging.getLogger(__name__)


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}_{rand_suffix(6)}"


class LeaderElector:
    def __init__(
        self,
        client: ApiClient,
        name: str,
        namespace: str = "kube-system",
        *,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.is_leader = False
        self._observed: dict | None = None  # last seen spec
        self._observed_at = 0.0  # monotonic time we saw it change

    def _spec(self, transitions: int, acquire_time: str | None) -> dict:
        t = now_micro()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "acquireTime": acquire_time or t,
            "renewTime": t,
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self) -> bool:
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except NotFoundError:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(0, None),
            }
            try:
                await self.client.create(LEASES, body, self.namespace)
            except ApiError:
                return False
            self._observe(body["spec"])
            return True
        spec = lease.get("spec") or {}
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and time.monotonic() - self._observed_at < duration:
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        acquire = spec.get("acquireTime") if holder == self.identity else None
        if holder != self.identity:
            transitions += 1
        lease["spec"] = self._spec(transitions, acquire)
        try:
            await self.client.update(LEASES, lease)
        except ApiError as exc:
            log.debug("lease %s: update failed: %s", self.name, exc)
            return False
        self._observe(lease["spec"])
        return True

    def _observe(self, spec: dict) -> None:
        ident = (spec.get("holderIdentity"), spec.get("renewTime"))
        if self._observed is None or ident != (self._observed.get("holderIdentity"), self._observed.get("renewTime")):
            self._observed = dict(spec)
            self._observed_at = time.monotonic()

    async def release(self) -> None:
        if not self.is_leader:
            return
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                await self.client.update(LEASES, lease)
        except Exception:
            pass
        self.is_leader = False

    async def run(self, on_started: Callable[[], Awaitable[None]], on_stopped: Callable[[], None] | None = None) -> None:
        """Campaign until leader, run ``on_started`` while renewing; return when leadership is lost
        (``on_started`` is cancelled then)."""
        while True:
            try:
                if await self.try_acquire_or_renew():
                    break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("lease %s: %s", self.name, exc)
            await asyncio.sleep(self.retry_period)
        self.is_leader = True
        log.info("lease %s/%s: %s became leader", self.namespace, self.name, self.identity)
        work = asyncio.ensure_future(on_started())
        try:
            last_renew = time.monotonic()
            while not work.done():
                await asyncio.wait([work], timeout=self.retry_period)
                if work.done():
                    break
                try:
                    ok = await asyncio.wait_for(self.try_acquire_or_renew(), self.renew_deadline)
                except (TimeoutError, Exception):
                    ok = False
                if ok:
                    last_renew = time.monotonic()
                elif time.monotonic() - last_renew > self.renew_deadline:
                    log.warning("lease %s: lost leadership", self.name)
                    break
        finally:
            self.is_leader = False
            if work.done() and not work.cancelled() and work.exception() is not None:
                log.error("lease %s: leader work failed: %r", self.name, work.exception())
            if not work.done():
                work.cancel()
                try:
                    await work
                except (asyncio.CancelledError, Exception):
                    pass
            if on_stopped:
                on_stopped()
