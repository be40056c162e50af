"""Development tool: regenerate ``schemas.json`` (field names and types of the served kinds).

Run ``python -m tugboat.cluster.apiserver.gen_schemas`` with the ``kubernetes`` client installed
(a test dependency). It walks the client's model classes (their ``openapi_types`` and
``attribute_map``: the API's field names and types, nothing else) from the root kinds the API
server serves, and writes a compact type table:
``{"Definition.Name": {"p": {jsonField: type}, "r": [required fields]}}`` where a type is
``string|integer|number|boolean|date-time|any|int-or-string|quantity``, ``ref:<Name>``,
``list:<type>`` or ``map:<type>``. The server turns it into OpenAPI v3 and uses it for field
validation; it does not need the client at run time.
"""

from __future__ import annotations

import json
import os
import re

ROOTS = {
    "V1Namespace": "io.k8s.api.core.v1", "V1Pod": "io.k8s.api.core.v1", "V1Service": "io.k8s.api.core.v1",
    "V1Endpoints": "io.k8s.api.core.v1", "V1Node": "io.k8s.api.core.v1", "V1ConfigMap": "io.k8s.api.core.v1",
    "V1Secret": "io.k8s.api.core.v1", "V1ServiceAccount": "io.k8s.api.core.v1",
    "V1PersistentVolume": "io.k8s.api.core.v1", "V1PersistentVolumeClaim": "io.k8s.api.core.v1",
    "CoreV1Event": "io.k8s.api.core.v1", "V1Deployment": "io.k8s.api.apps.v1", "V1ReplicaSet": "io.k8s.api.apps.v1",
    "V1StatefulSet": "io.k8s.api.apps.v1", "V1DaemonSet": "io.k8s.api.apps.v1", "V1Job": "io.k8s.api.batch.v1", "V1CronJob": "io.k8s.api.batch.v1",
    "V1HorizontalPodAutoscaler": "io.k8s.api.autoscaling.v1", "V2HorizontalPodAutoscaler": "io.k8s.api.autoscaling.v2",
    "V1EndpointSlice": "io.k8s.api.discovery.v1", "V1Lease": "io.k8s.api.coordination.v1",
    "V1StorageClass": "io.k8s.api.storage.v1", "V1Binding": "io.k8s.api.core.v1", "V1Scale": "io.k8s.api.autoscaling.v1",
    "V1Eviction": "io.k8s.api.policy.v1", "V1PodDisruptionBudget": "io.k8s.api.policy.v1",
    "V1PriorityClass": "io.k8s.api.scheduling.v1", "V1ControllerRevision": "io.k8s.api.apps.v1", "V1DeleteOptions": "io.k8s.apimachinery.pkg.apis.meta.v1",
}
META = {"ObjectMeta", "LabelSelector", "LabelSelectorRequirement", "OwnerReference", "ManagedFieldsEntry",
        "ListMeta", "Condition", "DeleteOptions", "Preconditions"}
# fields whose client type hides the API type
SPECIAL = {("V1ContainerPort", "container_port"): "integer"}
INT_OR_STRING = {"maxUnavailable", "maxSurge", "targetPort", "port", "partition", "minAvailable"}


def main() -> None:
    import kubernetes.client.models as m

    out: dict[str, dict] = {}
    names: dict[str, str] = {}

    def defname(cls: str, pkg: str) -> str:
        if cls in names:
            return names[cls]
        base = re.sub(r"^(V\d+(?:alpha\d+|beta\d+)?|CoreV1|EventsV1|StorageV1|DiscoveryV1)", "", cls)
        n = f"io.k8s.apimachinery.pkg.apis.meta.v1.{base}" if base in META else f"{pkg}.{base}"
        names[cls] = n
        return n

    def conv(t: str, pkg: str, field: str) -> str:
        t = t.strip()
        if t.startswith(("List[", "list[")):
            return "list:" + conv(t[5:-1], pkg, field)
        if t.startswith(("Dict[", "dict(")):
            inner = t[t.index(",") + 1:-1]
            return "map:" + conv(inner, pkg, field)
        prim = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "datetime": "date-time",
                "date": "string", "object": "any", "bytearray": "string"}
        if t in prim:
            if t == "object" and field in INT_OR_STRING:
                return "int-or-string"
            return prim[t]
        cls = getattr(m, t, None)
        if cls is None:
            return "any"
        walk(t, pkg)
        return "ref:" + defname(t, pkg)

    def walk(cls_name: str, pkg: str) -> None:
        n = defname(cls_name, pkg)
        if n in out:
            return
        cls = getattr(m, cls_name)
        out[n] = {"p": {}, "r": []}
        fields = getattr(cls, "model_fields", {})
        for py, t in cls.openapi_types.items():
            js = cls.attribute_map[py]
            out[n]["p"][js] = SPECIAL.get((cls_name, py)) or conv(t, pkg, js)
            f = fields.get(py)
            if f is not None and f.is_required():
                out[n]["r"].append(js)

    for root, pkg in ROOTS.items():
        walk(root, pkg)
    path = os.path.join(os.path.dirname(__file__), "schemas.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, separators=(",", ":"), sort_keys=True)
    os.replace(path + ".tmp", path)
    print(f"wrote {len(out)} definitions to {path}")


if __name__ == "__main__":
    main()
