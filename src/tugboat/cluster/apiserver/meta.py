"""API machinery helpers: Status errors, timestamps, label and field selectors."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

# HTTP status code -> the reason kubectl prints for errors without an explicit one
_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    406: "NotAcceptable", 409: "Conflict", 410: "Expired", 413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
    501: "NotImplemented", 503: "ServiceUnavailable", 504: "Timeout",
}


class ApiError(Exception):
    """An error answered as a ``kind: Status`` object with HTTP status ``code``."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details is not None:
            st["details"] = self.details
        return st


def qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(404, f'{qualified(resource, group)} "{name}" not found', "NotFound",
                    {"name": name, "group": group, "kind": resource} if group else {"name": name, "kind": resource})


def already_exists(resource: str, group: str, name: str) -> ApiError:
    d = {"name": name, "kind": resource}
    if group:
        d["group"] = group
    return ApiError(409, f'{qualified(resource, group)} "{name}" already exists', "AlreadyExists", d)


def conflict(resource: str, group: str, name: str, why: str = "the object has been modified; please apply your "
             "changes to the latest version and try again") -> ApiError:
    d = {"name": name, "kind": resource}
    if group:
        d["group"] = group
    return ApiError(409, f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}', "Conflict", d)


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """causes: (reason e.g. FieldValueInvalid, field path, message)."""
    msgs = [f"{f}: {m}" if f else m for _, f, m in causes]
    msg = f'{kind}.{group} "{name}" is invalid: ' if group else f'{kind} "{name}" is invalid: '
    msg += msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    details: dict[str, Any] = {"name": name, "kind": kind,
                               "causes": [{"reason": r, "message": m, "field": f} for r, f, m in causes]}
    if group:
        details["group"] = group
    return ApiError(422, msg, "Invalid", details)


_now_cache: list[Any] = [0, ""]


def now_rfc3339() -> str:
    t = int(time.time())
    if _now_cache[0] != t:
        _now_cache[0], _now_cache[1] = t, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    return str(_now_cache[1])


def parse_time(s: str | None) -> float | None:
    if not s:
        return None
    try:
        return datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration (k8s.io/apimachinery/pkg/util/duration)."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if h < 24 * 365 * 2:
        return f"{d}d"
    if h < 24 * 365 * 8:
        y = d // 365
        return f"{y}y{d % 365}d" if d % 365 else f"{y}y"
    return f"{d // 365}y"


def age(ts: str | None) -> str:
    t = parse_time(ts)
    if t is None:
        return "<unknown>"
    return human_duration(time.time() - t)


# --- label selectors -----------------------------------------------------------------------------
_LABEL_TOKEN = re.compile(r"\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*")

LabelPredicate = Callable[[dict[str, str]], bool]


def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p for p in (x.strip() for x in out) if p]


def parse_label_selector(sel: str | None) -> LabelPredicate | None:
    if not sel or not sel.strip():
        return None
    preds: list[LabelPredicate] = []
    for part in _split_top(sel):
        m = _LABEL_TOKEN.fullmatch(part)
        if not m:
            raise ApiError(400, f"unable to parse requirement: invalid label selector: {part!r}", "BadRequest")
        neg, key, op, val, setop, setvals = m.groups()
        if op:
            if neg:
                raise ApiError(400, f"unable to parse requirement: {part!r}", "BadRequest")
            v = val or ""
            if op == "!=":
                preds.append(lambda lb, k=key, v=v: lb.get(k) != v)
            else:
                preds.append(lambda lb, k=key, v=v: lb.get(k) == v)
        elif setop:
            vals = {x.strip() for x in setvals.split(",") if x.strip()}
            if setop == "in":
                preds.append(lambda lb, k=key, vs=vals: lb.get(k) in vs)
            else:
                preds.append(lambda lb, k=key, vs=vals: lb.get(k) not in vs)
        elif neg:
            preds.append(lambda lb, k=key: k not in lb)
        else:
            preds.append(lambda lb, k=key: k in lb)
    return lambda lb: all(p(lb) for p in preds)


def selector_from_label_selector(ls: dict[str, Any] | None) -> str:
    """metav1.LabelSelector -> selector string (for Scale status and tables)."""
    if not ls:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((ls.get("matchLabels") or {}).items())]
    for e in ls.get("matchExpressions") or []:
        op, key, vals = e.get("operator"), e.get("key"), e.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(vals))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(vals))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def parse_field_selector(sel: str | None, allowed: set[str], resource: str) -> list[tuple[str, bool, str]] | None:
    """-> [(field, equals?, value)]; unsupported fields are a 400 like the real apiserver's."""
    if not sel or not sel.strip():
        return None
    out = []
    for part in _split_top(sel):
        if "!=" in part:
            f, v = part.split("!=", 1)
            eq = False
        elif "==" in part:
            f, v = part.split("==", 1)
            eq = True
        elif "=" in part:
            f, v = part.split("=", 1)
            eq = True
        else:
            raise ApiError(400, f"invalid selector: '{sel}'; can't understand '{part}'", "BadRequest")
        f = f.strip()
        if f not in allowed:
            raise ApiError(400, f'field label not supported: {f}', "BadRequest")
        out.append((f, eq, v.strip()))
    return out


def parse_bool(v: str | None) -> bool:
    return (v or "").lower() in ("1", "t", "true")
