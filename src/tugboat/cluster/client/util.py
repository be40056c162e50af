"""Small helpers every component needs: quantities, label selectors, times, owner references."""

from __future__ import annotations

import datetime as _dt
import hashlib
import random
import string
from decimal import Decimal
from typing import Any

_SUFFIX = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
    "P": Decimal(10**15), "E": Decimal(10**18),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}
_qcache: dict[str, Decimal] = {}


def quantity(q: Any) -> Decimal:
    """Parse a Kubernetes quantity (``100m``, ``1.5Gi``, ``2``, ``1e3``)."""
    if q is None:
        return Decimal(0)
    if isinstance(q, int | float):
        return Decimal(str(q))
    s = str(q).strip()
    d = _qcache.get(s)
    if d is not None:
        return d
    num, suf = s, ""
    for cand in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"):
        if s.endswith(cand):
            num, suf = s[:-2], cand
            break
    else:
        if s and s[-1] in "numkMGTPE" and not (s[-1] == "E" and len(s) > 1 and s[-2].isdigit() and False):
            num, suf = s[:-1], s[-1]
    try:
        d = Decimal(num) * _SUFFIX[suf]
    except Exception:
        raise ValueError(f"quantities must match the regular expression: invalid quantity {q!r}") from None
    if len(_qcache) < 10000:
        _qcache[s] = d
    return d


def milli(q: Any) -> int:
    """A quantity in thousandths (cpu millicores)."""
    return int((quantity(q) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def whole(q: Any) -> int:
    """A quantity as an integer (memory bytes)."""
    return int(quantity(q).to_integral_value(rounding="ROUND_CEILING"))


def now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s: str | None) -> float:
    """RFC3339 (with or without fraction) to a UNIX timestamp; 0 for None."""
    if not s:
        return 0.0
    s = s.replace("Z", "+00:00")
    try:
        return _dt.datetime.fromisoformat(s).timestamp()
    except ValueError:
        return 0.0


def rand_suffix(n: int = 5) -> str:
    return "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=n))


def hash_obj(data: bytes) -> str:
    """Kube's pod-template-hash style: short, label-safe."""
    h = int(hashlib.sha256(data).hexdigest()[:16], 16)
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    out = ""
    for _ in range(10):
        h, r = divmod(h, len(alphabet))
        out += alphabet[r]
    return out


def key(obj: dict) -> str:
    md = obj["metadata"]
    ns = md.get("namespace")
    return f"{ns}/{md['name']}" if ns else md["name"]


def split_key(k: str) -> tuple[str | None, str]:
    if "/" in k:
        ns, name = k.split("/", 1)
        return ns, name
    return None, k


# ---- label selectors
def match_labels(selector: dict | None, labels: dict | None) -> bool:
    """Match a LabelSelector (``matchLabels`` + ``matchExpressions``). An empty selector matches all;
    ``None`` matches nothing (as in Kubernetes)."""
    if selector is None:
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    return all(match_expression(expr, labels) for expr in selector.get("matchExpressions") or [])


def match_expression(expr: dict, labels: dict) -> bool:
    k, op, vals = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return k in labels and labels[k] in vals
    if op == "NotIn":
        return k not in labels or labels[k] not in vals
    if op == "Exists":
        return k in labels
    if op == "DoesNotExist":
        return k not in labels
    if op in ("Gt", "Lt"):
        try:
            a, b = int(labels[k]), int(vals[0])
        except (KeyError, ValueError, IndexError):
            return False
        return a > b if op == "Gt" else a < b
    return False


def selector_string(selector: dict | None) -> str:
    """A LabelSelector as the ``labelSelector`` query string."""
    parts = [f"{k}={v}" for k, v in sorted((selector or {}).get("matchLabels", {}).items())]
    for e in (selector or {}).get("matchExpressions") or []:
        op, k, vals = e["operator"], e["key"], e.get("values") or []
        if op == "In":
            parts.append(f"{k} in ({','.join(vals)})")
        elif op == "NotIn":
            parts.append(f"{k} notin ({','.join(vals)})")
        elif op == "Exists":
            parts.append(k)
        elif op == "DoesNotExist":
            parts.append(f"!{k}")
    return ",".join(parts)


def controller_of(obj: dict) -> dict | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def owner_ref(owner: dict, *, controller: bool = True, block: bool = True) -> dict:
    return {
        "apiVersion": owner.get("apiVersion"),
        "kind": owner.get("kind"),
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": block,
    }


def condition(obj: dict, ctype: str) -> dict | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def set_condition(status: dict, ctype: str, cstatus: str, reason: str = "", message: str = "", *,
                  probe_time: bool = False) -> bool:
    """Set a condition; returns True when anything changed. lastTransitionTime moves only on a
    status change."""
    conds = status.setdefault("conditions", [])
    t = now()
    for c in conds:
        if c.get("type") == ctype:
            changed = c.get("status") != cstatus or c.get("reason") != reason or c.get("message") != message
            if c.get("status") != cstatus:
                c["lastTransitionTime"] = t
            c["status"], c["reason"], c["message"] = cstatus, reason, message
            if ("lastUpdateTime" in c or probe_time) and changed:
                c["lastUpdateTime"] = t
            return changed
    c = {"type": ctype, "status": cstatus, "reason": reason, "message": message, "lastTransitionTime": t}
    if probe_time:
        c["lastUpdateTime"] = t
    conds.append(c)
    return True


def pod_ready(pod: dict) -> bool:
    c = condition(pod, "Ready")
    return bool(c and c.get("status") == "True")


def pod_active(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") and not pod["metadata"].get(
        "deletionTimestamp"
    )


ALNUM = string.ascii_lowercase + string.digits
