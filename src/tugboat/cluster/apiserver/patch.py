"""Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.

Strategic merge patch needs each list field's strategy; for the built-in kinds they come from
:data:`MERGE_KEYS` (the ``patchMergeKey``/``patchStrategy`` tags of the Kubernetes Go types),
looked up by field name and, where the same name means different things, by the parent path.
"""

from __future__ import annotations

import copy
from typing import Any

from tugboat.cluster.apiserver.meta import ApiError

# field name -> merge key ("" = merge a list of primitives as a set)
MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "imagePullSecrets": "name",
    "hostAliases": "ip", "conditions": "type", "finalizers": "", "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey", "resourceClaims": "name", "schedulingGates": "name",
    "secrets": "name", "addresses": "type", "ports": "containerPort", "podIPs": "ip", "hostIPs": "ip",
}
# (kind, dotted parent path of the list) overrides
MERGE_KEY_OVERRIDES: dict[tuple[str, str], str | None] = {
    ("Service", "spec.ports"): "port",
    ("Endpoints", "subsets.ports"): None,
    ("Endpoints", "subsets.addresses"): None,
    ("EndpointSlice", "ports"): None,
    ("EndpointSlice", "endpoints.addresses"): None,
    ("Node", "status.images"): None,
    ("Node", "spec.podCIDRs"): "",
    ("Secret", "secrets"): None,
}


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


# --- JSON patch --------------------------------------------------------------------------------
def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer: {path!r}", "Invalid")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, dict):
            if p not in cur:
                raise ApiError(422, f"the server rejected our request due to an error in our request: "
                               f"doc is missing path: \"{path}\": missing value", "Invalid")
            cur = cur[p]
        elif isinstance(cur, list):
            try:
                cur = cur[int(p)]
            except (ValueError, IndexError):
                raise ApiError(422, f"doc is missing path: \"{path}\"", "Invalid") from None
        else:
            raise ApiError(422, f"doc is missing path: \"{path}\"", "Invalid")
    return cur


def _add(doc: Any, parts: list[str], value: Any, path: str, replace: bool = False) -> Any:
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise ApiError(422, f"replace operation does not apply: doc is missing key: {path}", "Invalid")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            if replace:
                raise ApiError(422, f"replace operation does not apply: {path}", "Invalid")
            parent.append(value)
        else:
            try:
                i = int(last)
            except ValueError:
                raise ApiError(422, f"invalid array index in {path}", "Invalid") from None
            if replace:
                if not 0 <= i < len(parent):
                    raise ApiError(422, f"replace operation does not apply: doc is missing path: {path}", "Invalid")
                parent[i] = value
            else:
                if not 0 <= i <= len(parent):
                    raise ApiError(422, f"add operation does not apply: doc is missing path: \"{path}\"", "Invalid")
                parent.insert(i, value)
    else:
        raise ApiError(422, f"doc is missing path: \"{path}\"", "Invalid")
    return doc


def _remove(doc: Any, parts: list[str], path: str) -> Any:
    if not parts:
        raise ApiError(422, "cannot remove the whole document", "Invalid")
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise ApiError(422, f"remove operation does not apply: doc is missing path: \"{path}\"", "Invalid")
        return parent.pop(last)
    if isinstance(parent, list):
        try:
            return parent.pop(int(last))
        except (ValueError, IndexError):
            raise ApiError(422, f"remove operation does not apply: doc is missing path: \"{path}\"", "Invalid") from None
    raise ApiError(422, f"doc is missing path: \"{path}\"", "Invalid")


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise ApiError(400, "json patch must be a list of operations", "BadRequest")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, f"invalid JSON patch operation: {op!r}", "BadRequest")
        kind, path = op["op"], op["path"]
        parts = _pointer(path)
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        elif kind == "remove":
            _remove(doc, parts, path)
        elif kind == "replace":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path, replace=True)
        elif kind == "test":
            if _resolve(doc, parts, path) != op.get("value"):
                raise ApiError(422, f"testing value {path} failed: test failed", "Invalid")
        elif kind in ("move", "copy"):
            frm = op.get("from", "")
            val = copy.deepcopy(_resolve(doc, _pointer(frm), frm))
            if kind == "move":
                _remove(doc, _pointer(frm), frm)
            doc = _add(doc, parts, val, path)
        else:
            raise ApiError(400, f"Unexpected kind: {kind}", "BadRequest")
    return doc


# --- strategic merge patch ---------------------------------------------------------------------
def _merge_key(kind: str, path: str, field: str) -> str | None:
    full = f"{path}.{field}" if path else field
    for (k, p), key in MERGE_KEY_OVERRIDES.items():
        if k == kind and full.endswith(p):
            return key
    return MERGE_KEYS.get(field)


def strategic_merge_patch(original: Any, patch: Any, kind: str, path: str = "") -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(original, dict):
        original = {}
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = dict(original)
    retain = patch.get("$retainKeys")
    orders: dict[str, list[Any]] = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            f = k.split("/", 1)[1]
            if isinstance(result.get(f), list) and isinstance(v, list):
                result[f] = [x for x in result[f] if x not in v]
            continue
        sub = f"{path}.{k}" if path else k
        if v is None:
            result.pop(k, None)
        elif isinstance(v, list):
            key = _merge_key(kind, path, k)
            result[k] = _merge_list(result.get(k), v, key, kind, sub)
        elif isinstance(v, dict):
            merged = strategic_merge_patch(result.get(k), v, kind, sub)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
        else:
            result[k] = v
    for f, order in orders.items():
        if isinstance(result.get(f), list):
            result[f] = _order(result[f], order, _merge_key(kind, path, f))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(orig: Any, patch: list[Any], key: str | None, kind: str, path: str) -> list[Any]:
    if key is None or not isinstance(orig, list):
        # atomic list (or nothing to merge with): replace, dropping directives
        if key is not None and key != "":
            return [
                {k: v for k, v in item.items() if k != "$patch"} if isinstance(item, dict) else item
                for item in patch if not (isinstance(item, dict) and item.get("$patch") == "delete")
            ]
        if key == "":
            return list(dict.fromkeys(patch)) if all(isinstance(x, str | int) for x in patch) else list(patch)
        return copy.deepcopy(patch)
    if key == "":  # set of primitives
        out = list(orig)
        for x in patch:
            if x not in out:
                out.append(x)
        return out
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    out = [copy.deepcopy(x) for x in orig]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            out.append(copy.deepcopy(item))
            continue
        idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(strategic_merge_patch({}, item, kind, path))
        else:
            out[idx] = strategic_merge_patch(out[idx], item, kind, path)
    return out


def _order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    if key is None:
        return items
    if key == "":
        rank = {v: i for i, v in enumerate(order) if isinstance(v, str | int)}
        return sorted(items, key=lambda x: rank.get(x, len(rank)) if isinstance(x, str | int) else len(rank))
    rank = {o.get(key): i for i, o in enumerate(order) if isinstance(o, dict)}
    indexed = list(enumerate(items))
    indexed.sort(key=lambda t: (rank.get(t[1].get(key), len(rank)) if isinstance(t[1], dict) else len(rank), t[0]))
    return [x for _, x in indexed]
