"""Every active namespace gets a ``default`` ServiceAccount."""

from __future__ import annotations

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ApiError, ConflictError
from tugboat.cluster.controllers.base import Controller


class ServiceAccountController(Controller):
    name = "serviceaccount"

    def setup(self) -> None:
        self.ns = self.ctx.informer(R.NAMESPACES)
        self.sas = self.ctx.informer(R.SERVICEACCOUNTS)
        self.ns.add_handler(*self.handlers(self.enqueue))
        self.sas.add_handler(on_delete=lambda sa: self.queue.add(sa["metadata"]["namespace"]))

    async def sync(self, key: str) -> None:
        ns = self.ns.get(key)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        if self.sas.get(f"{key}/default") is not None:
            return
        try:
            await self.client.create(R.SERVICEACCOUNTS, {"metadata": {"name": "default", "namespace": key}}, key)
        except ConflictError:
            pass
        except ApiError:
            raise
