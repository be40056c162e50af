"""The served kinds' field types (``schemas.json``, see :mod:`.gen_schemas`) and what they drive:
unknown-field detection for ``fieldValidation=Strict|Warn``, and the OpenAPI documents."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from tugboat.cluster.apiserver.registry import ResourceType


@functools.cache
def definitions() -> dict[str, dict[str, Any]]:
    with open(os.path.join(os.path.dirname(__file__), "schemas.json")) as f:
        return json.load(f)


def _walk(t: str, value: Any, path: str, out: list[str], defs: dict[str, dict[str, Any]], prune: bool = False) -> None:
    if value is None:
        return
    if t.startswith("ref:"):
        d = defs.get(t[4:])
        if d is None or not isinstance(value, dict):
            return
        props = d["p"]
        drop = []
        for k, v in value.items():
            ft = props.get(k)
            if ft is None:
                if not k.startswith("$"):  # patch directives are not fields
                    out.append(f'unknown field "{path}.{k}"' if path else f'unknown field "{k}"')
                    drop.append(k)
            elif (ft[0] in "rlm") and isinstance(v, dict | list) and ft != "map:string":
                _walk(ft, v, f"{path}.{k}" if path else k, out, defs, prune)
        if prune:
            for k in drop:
                del value[k]
    elif t.startswith("list:"):
        if isinstance(value, list):
            sub = t[5:]
            if sub[0] in "rlm":
                for i, v in enumerate(value):
                    _walk(sub, v, f"{path}[{i}]", out, defs, prune)
    elif t.startswith("map:") and isinstance(value, dict):
        sub = t[4:]
        if sub[0] in "rlm":
            for k, v in value.items():
                _walk(sub, v, f"{path}[{k}]", out, defs, prune)


def unknown_fields(rt: ResourceType, obj: Any, prune: bool = False) -> list[str]:
    """Messages for fields the kind does not have; with ``prune`` they are also removed (what
    decoding into the typed object does on a real API server)."""
    if not rt.schema_name:
        return []
    out: list[str] = []
    _walk("ref:" + rt.schema_name, obj, "", out, definitions(), prune)
    return out


def duplicate_fields(body: bytes) -> list[str]:
    if not body:
        return []
    dups: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                dups.append(f'duplicate field "{k}"')
            seen.add(k)
        return dict(pairs)

    if body.count(b'"') < 4:
        return []
    try:
        json.loads(body, object_pairs_hook=hook)
    except ValueError:
        return []
    return dups
