"""Long-lived tokens in Secrets (kube's tokens controller, for Secrets users create since 1.24): a
Secret of type ``kubernetes.io/service-account-token`` annotated ``kubernetes.io/service-account.name``
gets ``data.token``, ``data.ca.crt`` and ``data.namespace`` (and the account's uid annotation).

The token is a TokenRequest bound to the Secret (with the longest lifetime the API grants, 2^32 s),
so it stops working when the Secret (or the account) is deleted, as a legacy token does; it is not
kube's legacy token format (issuer ``kubernetes/serviceaccount``), which clients never look into.
"""

from __future__ import annotations

import base64
import logging

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ApiError, ConflictError, NotFoundError
from tugboat.cluster.controllers.base import Controller
from tugboat.cluster.controllers.rootca import root_ca

log = logging.getLogger(__name__)

TYPE = "kubernetes.io/service-account-token"
NAME_ANN = "kubernetes.io/service-account.name"
UID_ANN = "kubernetes.io/service-account.uid"
LIFETIME = 1 << 32


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class ServiceAccountTokenSecrets(Controller):
    name = "serviceaccount-token"
    component = "serviceaccount-token-controller"

    def setup(self) -> None:
        self.secrets = self.ctx.informers.get(R.SECRETS, field_selector=f"type={TYPE}")
        self.secrets.add_handler(self.enqueue, lambda old, new: self.enqueue(new), None)
        self.ca = root_ca(self.ctx.options, self.client)

    async def sync(self, key: str) -> None:
        sec = self.secrets.get(key)
        if sec is None:
            return
        md = sec["metadata"]
        ns, sname = md["namespace"], md["name"]
        ann = md.get("annotations") or {}
        sa_name = ann.get(NAME_ANN)
        data = sec.get("data") or {}
        if not sa_name or md.get("deletionTimestamp") or data.get("token"):
            return
        try:
            sa = await self.client.get(R.SERVICEACCOUNTS, sa_name, ns)
        except NotFoundError:
            self.enqueue_after(key, 2.0)  # the account may come later
            return
        if ann.get(UID_ANN) and ann[UID_ANN] != sa["metadata"]["uid"]:
            return  # made for an account of the same name that is gone
        try:
            tr = await self.client.request("POST", R.SERVICEACCOUNTS.path(ns, sa_name, "token"), body={
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": LIFETIME,
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": sname,
                                            "uid": md["uid"]}}})
        except NotFoundError:
            return
        token = (tr.get("status") or {}).get("token") or ""
        if not token:
            return
        new = {**sec, "metadata": {**md, "annotations": {**ann, UID_ANN: sa["metadata"]["uid"]}},
               "data": {**data, "token": _b64(token), "namespace": _b64(ns),
                        **({"ca.crt": _b64(self.ca)} if self.ca else {})}}
        try:
            await self.client.update(R.SECRETS, new)
        except ConflictError:
            self.queue.add(key)
        except (NotFoundError, ApiError) as exc:
            log.info("secret %s: token not stored: %s", key, exc)
