"""Parsing ``labelSelector`` / ``fieldSelector`` query strings (used by the in-memory API server)."""

from __future__ import annotations

import re
from collections.abc import Callable

_SET = re.compile(r"^\s*(!?)([^\s!=<>(),]+)\s*(?:(in|notin)\s*\(([^)]*)\)|(==|=|!=)\s*([^\s,]*))?\s*$")


def _split(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def parse_label_selector(s: str | None) -> Callable[[dict], bool]:
    if not s:
        return lambda labels: True
    reqs: list[Callable[[dict], bool]] = []
    for part in _split(s):
        m = _SET.match(part)
        if not m:
            raise ValueError(f"unable to parse requirement: {part!r}")
        neg, k, setop, setvals, op, val = m.groups()
        if setop:
            vals = {v.strip() for v in setvals.split(",") if v.strip()}
            if setop == "in":
                reqs.append(lambda lb, k=k, vals=vals: lb.get(k) in vals)
            else:
                reqs.append(lambda lb, k=k, vals=vals: lb.get(k) not in vals)
        elif op:
            if op == "!=":
                reqs.append(lambda lb, k=k, v=val: lb.get(k) != v)
            else:
                reqs.append(lambda lb, k=k, v=val: lb.get(k) == v)
        elif neg:
            reqs.append(lambda lb, k=k: k not in lb)
        else:
            reqs.append(lambda lb, k=k: k in lb)
    return lambda labels: all(r(labels) for r in reqs)


def field_value(obj: dict, path: str) -> str:
    cur: object = obj
    for p in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    return "" if cur is None else str(cur)


def parse_field_selector(s: str | None) -> Callable[[dict], bool]:
    if not s:
        return lambda obj: True
    reqs: list[Callable[[dict], bool]] = []
    for part in s.split(","):
        if "!=" in part:
            k, v = part.split("!=", 1)
            reqs.append(lambda o, k=k.strip(), v=v.strip(): field_value(o, k) != v)
        else:
            k, v = part.replace("==", "=").split("=", 1)
            reqs.append(lambda o, k=k.strip(), v=v.strip(): field_value(o, k) == v)
    return lambda obj: all(r(obj) for r in reqs)
