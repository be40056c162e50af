"""kube's root-ca-cert-publisher: every active namespace has the ConfigMap ``kube-root-ca.crt``
holding the CA bundle that verifies the API server (``ca.crt``), which the service account token
volume of every pod projects; a changed or deleted one is put back."""

from __future__ import annotations

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ConflictError, NotFoundError
from tugboat.cluster.controllers.base import Controller

NAME = "kube-root-ca.crt"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
               "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
               "distributions of Kubernetes clusters.")


def root_ca(ctx_options: object, client: object) -> str:
    """The CA bundle to publish: ``options.extra["root_ca_file"]`` (kube's --root-ca-file), else the
    CA this controller manager verifies the API server with, else the cluster signing CA."""
    extra = getattr(ctx_options, "extra", {}) or {}
    path = extra.get("root_ca_file") or ""
    if path:
        with open(path) as f:
            return f.read()
    cfg = getattr(client, "config", None)
    data = getattr(cfg, "ca_data", None)
    if data:
        return data.decode() if isinstance(data, bytes) else str(data)
    path = getattr(ctx_options, "cluster_signing_cert_file", None) or ""
    if path:
        with open(path) as f:
            return f.read()
    return ""


class RootCACertPublisher(Controller):
    name = "root-ca-cert-publisher"
    component = "root-ca-cert-publisher"

    def setup(self) -> None:
        self.ns = self.ctx.informer(R.NAMESPACES)
        self.cms = self.ctx.informers.get(R.CONFIGMAPS, field_selector=f"metadata.name={NAME}")
        self.ns.add_handler(self.enqueue, lambda old, new: self.enqueue(new), None)
        self.cms.add_handler(None, lambda old, new: self._cm_changed(new), self._cm_changed)
        self.ca = root_ca(self.ctx.options, self.client)

    def _cm_changed(self, cm: dict) -> None:
        ns = cm["metadata"].get("namespace")
        if ns:
            self.queue.add(ns)

    def wanted(self) -> dict:
        return {"ca.crt": self.ca}

    async def sync(self, key: str) -> None:
        if not self.ca:
            return
        ns = self.ns.get(key)
        if ns is None or ns["metadata"].get("deletionTimestamp") or \
                (ns.get("status") or {}).get("phase") == "Terminating":
            return
        cm = self.cms.get(f"{key}/{NAME}")
        if cm is None:
            try:
                await self.client.create(R.CONFIGMAPS, {
                    "metadata": {"name": NAME, "namespace": key,
                                 "annotations": {"kubernetes.io/description": DESCRIPTION}},
                    "data": self.wanted()}, key)
            except ConflictError:
                pass  # made meanwhile; its informer event brings us back if it differs
            except NotFoundError:
                pass  # the namespace went away
            return
        ann = cm["metadata"].get("annotations") or {}
        if cm.get("data") == self.wanted() and not cm.get("binaryData") and \
                ann.get("kubernetes.io/description") == DESCRIPTION:
            return
        new = {**cm, "data": self.wanted()}
        new.pop("binaryData", None)
        new["metadata"] = {**cm["metadata"], "annotations": {**ann, "kubernetes.io/description": DESCRIPTION}}
        try:
            await self.client.update(R.CONFIGMAPS, new)
        except (ConflictError, NotFoundError):
            self.queue.add(key)
