"""ControllerRevisions for StatefulSets and DaemonSets (kube's controller history): one revision
per distinct pod template, ``data`` = ``{"spec": {"template": {…, "$patch": "replace"}}}`` (the
strategic merge patch ``kubectl rollout undo`` applies), ``revision`` numbers increasing, a
template that returns (a rollback) gets its old revision renumbered to the newest, history
trimmed to ``spec.revisionHistoryLimit``. ``kubectl rollout history|undo`` read these."""

from __future__ import annotations

import copy
import logging

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.informer import Informer
from tugboat.cluster.client.rest import ApiClient, ConflictError, NotFoundError
from tugboat.cluster.client.util import owner_ref
from tugboat.cluster.controllers.base import owned_by

log = logging.getLogger(__name__)
HASH_LABEL = "controller-revision-hash"


def revision_data(obj: dict) -> dict:
    tpl = copy.deepcopy((obj.get("spec") or {}).get("template") or {})
    tpl["$patch"] = "replace"
    return {"spec": {"template": tpl}}


async def sync_history(client: ApiClient, revisions: Informer, obj: dict, name: str, hash_value: str,
                       keep: set[str] | None = None) -> int:
    """Make sure revision ``name`` exists for ``obj``'s current template and is the newest;
    trim old ones. -> its revision number (0 if it could not be written)."""
    ns = obj["metadata"]["namespace"]
    owned = sorted(owned_by(revisions, obj), key=lambda r: int(r.get("revision") or 0))
    top = int(owned[-1].get("revision") or 0) if owned else 0
    mine = next((r for r in owned if r["metadata"]["name"] == name), None)
    number = top
    if mine is None:
        number = top + 1
        labels = {**(((obj["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}),
                  HASH_LABEL: hash_value}
        body = {"apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": [owner_ref(obj)]},
                "data": revision_data(obj), "revision": number}
        cause = (obj["metadata"].get("annotations") or {}).get("kubernetes.io/change-cause")
        if cause:
            body["metadata"]["annotations"] = {"kubernetes.io/change-cause": cause}
        try:
            await client.create(R.CONTROLLERREVISIONS, body, ns)
        except ConflictError:
            return 0  # written already; the informer has not caught up
    elif int(mine.get("revision") or 0) < top:
        number = top + 1
        try:
            await client.patch(R.CONTROLLERREVISIONS, name, {"revision": number}, ns)
        except (ConflictError, NotFoundError):
            return 0
    else:
        number = int(mine.get("revision") or 0)
    limit = int((obj.get("spec") or {}).get("revisionHistoryLimit", 10))
    keep = {name, *(keep or set())}
    old = [r for r in owned if r["metadata"]["name"] not in keep]
    for r in old[: max(0, len(old) - limit)]:
        try:
            await client.delete(R.CONTROLLERREVISIONS, r["metadata"]["name"], ns)
        except NotFoundError:
            pass
    return number
