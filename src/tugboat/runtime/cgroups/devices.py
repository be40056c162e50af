"""devices controller (v1): the OCI allow/deny list, then the devices every container needs."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# what runc always allows: null, zero, full, random, urandom, tty, console, ptmx, pts/*, net/tun
DEFAULT_ALLOWED = [
    ("c", 1, 3),
    ("c", 1, 5),
    ("c", 1, 7),
    ("c", 1, 8),
    ("c", 1, 9),
    ("c", 5, 0),
    ("c", 5, 1),
    ("c", 5, 2),
    ("c", 136, -1),
    ("c", 10, 200),
]


def _num(v: int | None) -> str:
    return "*" if v is None or v < 0 else str(v)


def clean_access(access: str | None) -> str:
    """Only the letters the kernel knows (r, w, m), each once, in that order; runc does the same
    (e.g. "rwa" from a config becomes "rw")."""
    if access is None:
        return "rwm"
    return "".join(c for c in "rwm" if c in access)


def rule_line(rule: dict[str, Any]) -> str:
    kind = rule.get("type") or "a"
    if kind == "u":
        kind = "c"  # unbuffered character device
    access = clean_access(rule.get("access"))
    if kind == "a":
        return "a"
    return f"{kind} {_num(rule.get('major'))}:{_num(rule.get('minor'))} {access}"


def v1(res: dict[str, Any]) -> list[tuple[str, str]]:
    rules = res.get("devices")
    if rules is None:
        return []
    out: list[tuple[str, str]] = []
    deny_all = False  # after a deny-all and before any allow, another deny changes nothing
    for rule in rules:
        access = clean_access(rule.get("access"))
        if not access:
            continue  # no valid access letter: the rule means nothing
        allow = bool(rule.get("allow"))
        line = rule_line(rule)
        if line == "a" and access != "rwm":
            line = f"a *:* {access}"
        if line == "a":
            deny_all = not allow
        elif allow:
            deny_all = False
        elif deny_all:
            continue
        out.append(("devices.allow" if allow else "devices.deny", line))
    for kind, major, minor in DEFAULT_ALLOWED:
        out.append(("devices.allow", f"{kind} {major}:{_num(minor)} rwm"))
    return out


def v2(res: dict[str, Any]) -> list[tuple[str, str]]:
    """cgroup v2 has no device files (it takes a BPF program); not supported yet."""
    return []
