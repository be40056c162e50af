"""``--change`` instructions of ``docker import``/``docker commit`` applied to an image config."""

from __future__ import annotations

import json
import shlex
from typing import Any

from tugboat.errors import InvalidArgument

ALLOWED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER",
           "VOLUME", "WORKDIR")


def _cmdlist(rest: str) -> list[str]:
    rest = rest.strip()
    if rest.startswith("["):
        try:
            v = json.loads(rest)
        except json.JSONDecodeError:
            v = None
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v
    return ["/bin/sh", "-c", rest]


def _kv(rest: str) -> list[tuple[str, str]]:
    words = shlex.split(rest)
    if len(words) >= 2 and "=" not in words[0]:
        return [(words[0], rest.split(None, 1)[1].strip())]
    out = []
    for w in words:
        if "=" not in w:
            raise InvalidArgument(f"invalid change: key-value pair {w!r} has no '='")
        k, v = w.split("=", 1)
        out.append((k, v))
    return out


def apply_changes(cfg: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Apply Dockerfile-style change lines to a container config (``Env``, ``Cmd`` …)."""
    cfg = dict(cfg)
    for line in changes:
        line = line.strip()
        if not line:
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr not in ALLOWED:
            raise InvalidArgument(f"{instr} is not a valid change command")
        if instr == "CMD":
            cfg["Cmd"] = _cmdlist(rest)
        elif instr == "ENTRYPOINT":
            cfg["Entrypoint"] = _cmdlist(rest)
        elif instr == "ENV":
            env = list(cfg.get("Env") or [])
            for k, v in _kv(rest):
                env = [e for e in env if e.split("=", 1)[0] != k] + [f"{k}={v}"]
            cfg["Env"] = env
        elif instr == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            for k, v in _kv(rest):
                labels[k] = v
            cfg["Labels"] = labels
        elif instr == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in rest.split():
                ports[p if "/" in p else p + "/tcp"] = {}
            cfg["ExposedPorts"] = ports
        elif instr == "VOLUME":
            vols = dict(cfg.get("Volumes") or {})
            for v in _cmdlist(rest) if rest.strip().startswith("[") else rest.split():
                vols[v] = {}
            cfg["Volumes"] = vols
        elif instr == "USER":
            cfg["User"] = rest.strip()
        elif instr == "WORKDIR":
            cfg["WorkingDir"] = rest.strip()
        elif instr == "STOPSIGNAL":
            cfg["StopSignal"] = rest.strip()
        elif instr == "ONBUILD":
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), rest.strip()]
    return cfg
