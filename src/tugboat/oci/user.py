"""An image's ``User`` (``name``, ``uid``, ``name:group``, ``uid:gid``) resolved against the
``/etc/passwd`` and ``/etc/group`` of its root filesystem, as docker and BuildKit do. Used by the
engine (container start, exec) and the builder (RUN). Callers pick how the files are opened
(plain or symlink-scoped join)."""

from __future__ import annotations

from typing import Any

from tugboat.errors import InvalidArgument


def read_colon_file(path: str) -> list[list[str]]:
    """The fields of a passwd/group style file; [] when it is missing or unreadable."""
    try:
        with open(path, errors="replace") as f:
            return [ln.rstrip("\n").split(":") for ln in f if ln.strip() and not ln.startswith("#")]
    except OSError:
        return []


def lookup_user(passwd: list[list[str]], groups: list[list[str]], user: str) -> dict[str, Any]:
    """OCI ``process.user`` (uid, gid, additionalGids) for a non-empty ``user[:group]``."""
    name, _, group = user.partition(":")
    uid: int | None = None
    gid: int | None = None
    uname = None
    if name.isdigit():
        uid = int(name)
        for p in passwd:
            if len(p) >= 4 and p[2] == name:
                gid, uname = (int(p[3]) if p[3].isdigit() else 0), p[0]
                break
    else:
        for p in passwd:
            if len(p) >= 4 and p[0] == name:
                uid, gid, uname = int(p[2]), int(p[3]), p[0]
                break
        if uid is None:
            raise InvalidArgument(f"unable to find user {name}: no matching entries in passwd file")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            for g in groups:
                if len(g) >= 3 and g[0] == group:
                    gid = int(g[2])
                    break
            else:
                raise InvalidArgument(f"unable to find group {group}: no matching entries in group file")
    out: dict[str, Any] = {"uid": uid, "gid": gid or 0}
    if uname:
        extra = sorted({int(g[2]) for g in groups if len(g) >= 4 and g[2].isdigit() and uname in g[3].split(",")})
        if extra:
            out["additionalGids"] = extra
    return out
