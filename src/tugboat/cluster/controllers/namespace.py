"""Namespace deletion: everything inside goes, then the ``kubernetes`` finalizer is removed."""

from __future__ import annotations

import asyncio
import logging

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ApiError, NotFoundError
from tugboat.cluster.controllers.base import Controller

log = logging.getLogger(__name__)

CONTENT = [r for r in R.ALL if r.namespaced]


class NamespaceController(Controller):
    name = "namespace"

    def setup(self) -> None:
        self.ns = self.ctx.informer(R.NAMESPACES)
        self.ns.add_handler(*self.handlers(self._maybe))

    def _maybe(self, ns: dict) -> None:
        if ns["metadata"].get("deletionTimestamp"):
            self.enqueue(ns)

    async def sync(self, key: str) -> None:
        ns = self.ns.get(key)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        name = ns["metadata"]["name"]
        remaining = 0

        async def purge(res: R.Resource) -> int:
            try:
                items = (await self.client.list(res, name)).get("items") or []
            except ApiError:
                return 0
            left = 0
            for o in items:
                left += 1
                if o["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    await self.client.delete(res, o["metadata"]["name"], name, propagation="Background")
                except NotFoundError:
                    left -= 1
                except ApiError as exc:
                    log.debug("namespace %s: delete %s: %s", name, o["metadata"]["name"], exc)
            return left

        # workloads first so that their controllers stop recreating pods
        for group in ([R.DEPLOYMENTS, R.STATEFULSETS, R.DAEMONSETS, R.JOBS, R.HPAS],
                      [r for r in CONTENT if r not in (R.DEPLOYMENTS, R.STATEFULSETS, R.DAEMONSETS, R.JOBS, R.HPAS)]):
            remaining += sum(await asyncio.gather(*(purge(r) for r in group)))
        if remaining:
            self.queue.add_after(key, 1.0)
            return
        spec = dict(ns.get("spec") or {})
        fins = [f for f in spec.get("finalizers") or [] if f != "kubernetes"]
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "spec": {"finalizers": fins}}
        try:
            await self.client.request("PUT", f"/api/v1/namespaces/{name}/finalize", body=body)
        except NotFoundError:
            # servers without the finalize subresource: update the namespace itself
            cur = await self.client.get(R.NAMESPACES, name)
            cur.setdefault("spec", {})["finalizers"] = fins
            try:
                await self.client.update(R.NAMESPACES, cur)
            except NotFoundError:
                pass
