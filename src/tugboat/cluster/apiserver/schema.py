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


def _walk(t: str, value: Any, path: str, out: list[str], defs: dict[str, dict[str, Any]]) -> None:
    if value is None:
        return
    if t.startswith("ref:"):
        d = defs.get(t[4:])
        if d is None or not isinstance(value, dict):
            return
        props = d["p"]
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            ft = props.get(k)
            if ft is None:
                if k.startswith("$"):  # patch directives survive into nothing
                    continue
                out.append(f'unknown field "{sub}"')
            else:
                _walk(ft, v, sub, out, defs)
    elif t.startswith("list:"):
        if isinstance(value, list):
            for i, v in enumerate(value):
                _walk(t[5:], v, f"{path}[{i}]", out, defs)
    elif t.startswith("map:") and isinstance(value, dict):
        for k, v in value.items():
            _walk(t[4:], v, f"{path}[{k}]", out, defs)


def unknown_fields(rt: ResourceType, obj: Any) -> list[str]:
    if not rt.schema_name:
        return []
    out: list[str] = []
    _walk("ref:" + rt.schema_name, obj, "", out, definitions())
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
