"""The controller manager: every controller in one process on shared informers, acting only while
it holds the ``kube-controller-manager`` Lease in kube-system."""

from __future__ import annotations

import asyncio
import importlib
import logging

from tugboat.cluster.client.leaderelection import LeaderElector
from tugboat.cluster.client.rest import ApiClient
from tugboat.cluster.controllers.base import Context, Controller, Options

log = logging.getLogger(__name__)

CONTROLLERS: dict[str, str] = {
    "replicaset": "tugboat.cluster.controllers.replicaset:ReplicaSetController",
    "deployment": "tugboat.cluster.controllers.deployment:DeploymentController",
    "garbagecollector": "tugboat.cluster.controllers.gc:GarbageCollector",
    "namespace": "tugboat.cluster.controllers.namespace:NamespaceController",
    "endpoints": "tugboat.cluster.controllers.endpoints:EndpointsController",
    "endpointslice": "tugboat.cluster.controllers.endpoints:EndpointSliceController",
    "nodelifecycle": "tugboat.cluster.controllers.nodelifecycle:NodeLifecycleController",
    "job": "tugboat.cluster.controllers.job:JobController",
    "statefulset": "tugboat.cluster.controllers.statefulset:StatefulSetController",
    "daemonset": "tugboat.cluster.controllers.daemonset:DaemonSetController",
    "horizontalpodautoscaling": "tugboat.cluster.controllers.hpa:HPAController",
    "persistentvolume-binder": "tugboat.cluster.controllers.volume:PersistentVolumeController",
    "serviceaccount": "tugboat.cluster.controllers.serviceaccount:ServiceAccountController",
    "disruption": "tugboat.cluster.controllers.disruption:DisruptionController",
    "csrsigning": "tugboat.cluster.controllers.certificates:CSRSigningController",
    "root-ca-cert-publisher": "tugboat.cluster.controllers.rootca:RootCACertPublisher",
    "serviceaccount-token": "tugboat.cluster.controllers.satokensecrets:ServiceAccountTokenSecrets",
}


class ControllerManager:
    def __init__(self, client: ApiClient, *, options: Options | None = None, controllers: list[str] | None = None,
                 identity: str | None = None) -> None:
        self.client = client
        self.identity = identity
        self.options = options or Options()
        self.names = controllers or list(CONTROLLERS)
        self.ctx: Context | None = None
        self.controllers: dict[str, Controller] = {}

    def _build(self) -> None:
        self.ctx = Context(self.client, self.options)
        if self.identity:
            self.ctx.recorder.host = self.identity
        for name in self.names:
            mod, cls = CONTROLLERS[name].split(":")
            try:
                klass = getattr(importlib.import_module(mod), cls)
            except (ImportError, AttributeError) as exc:
                log.warning("controller %s unavailable: %s", name, exc)
                continue
            self.controllers[name] = klass(self.ctx)

    async def run(self) -> None:
        """Run every controller until cancelled (no leader election)."""
        self._build()
        assert self.ctx is not None
        self.ctx.informers.start()
        await self.ctx.informers.wait_synced(120)
        for c in self.controllers.values():
            c.start()
            starter = getattr(c, "on_started", None)
            if starter is not None:
                await starter()
        log.info("controller-manager: running %s", ", ".join(self.controllers))
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        for c in self.controllers.values():
            await c.stop()
        if self.ctx is not None:
            await self.ctx.informers.stop()
            await self.ctx.flush_events()
        self.controllers.clear()

    async def run_with_leader_election(self, *, identity: str | None = None, lease_duration: float = 15.0,
                                       renew_deadline: float = 10.0, retry_period: float = 2.0) -> None:
        identity = identity or self.identity
        self.identity = identity
        elector = LeaderElector(self.client, "kube-controller-manager", "kube-system", identity=identity,
                                lease_duration=lease_duration, renew_deadline=renew_deadline,
                                retry_period=retry_period)
        self.elector = elector
        self.identity = elector.identity
        while True:
            await elector.run(self.run)
            log.warning("controller-manager: leadership lost; campaigning again")
