"""A tiny docker-style flag parser (argparse costs start-up time on every `tug ps`).

A spec maps ``"-d|--detach"`` to a kind: ``bool``, ``str``, ``int``, ``list`` (repeatable).
``parse(args, spec, interspersed=False)`` returns (options by long name without dashes, positionals).
With ``interspersed=False`` parsing stops at the first positional (``tug run IMAGE CMD -x``).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not `typing`: importing it costs start-up time

if TYPE_CHECKING:
    from typing import Any


class FlagError(Exception):
    pass


def _index(spec: dict[str, Any]) -> tuple[dict[str, tuple[str, Any]], dict[str, Any]]:
    names: dict[str, tuple[str, Any]] = {}
    defaults: dict[str, Any] = {}
    for key, kind in spec.items():
        parts = key.split("|")
        longs = [p for p in parts if p.startswith("--")]
        canon = (longs[-1] if longs else parts[-1]).lstrip("-").replace("-", "_")
        for p in parts:
            names[p] = (canon, kind)
        defaults[canon] = [] if kind is list else (False if kind is bool else None)
    return names, defaults


def parse(args: list[str], spec: dict[str, Any], *, interspersed: bool = True, prog: str = "tug",
          usage: str = "") -> tuple[dict[str, Any], list[str]]:
    names, opts = _index(spec)
    pos: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            pos.extend(args[i + 1:])
            break
        if a in ("-h", "--help") and "-h" not in names:
            sys.stdout.write(usage or f"Usage:  {prog} [OPTIONS]\n")
            raise SystemExit(0)
        if not a.startswith("-") or a == "-":
            if not interspersed:
                pos.extend(args[i:])
                break
            pos.append(a)
            i += 1
            continue
        if a.startswith("--"):
            name, eq, val = a.partition("=")
            if name not in names:
                raise FlagError(f"unknown flag: {name}")
            canon, kind = names[name]
            if kind is bool:
                opts[canon] = val.lower() not in ("false", "0") if eq else True
            else:
                if not eq:
                    if i + 1 >= len(args):
                        raise FlagError(f"flag needs an argument: {name}")
                    i += 1
                    val = args[i]
                _store(opts, canon, kind, val, name)
            i += 1
            continue
        # short flags, possibly combined (-it) or with an attached value (-eFOO=1, -p=80)
        j = 1
        while j < len(a):
            name = "-" + a[j]
            if name not in names:
                raise FlagError(f"unknown shorthand flag: '{a[j]}' in {a}")
            canon, kind = names[name]
            if kind is bool:
                opts[canon] = True
                j += 1
                continue
            rest = a[j + 1:]
            if rest.startswith("="):
                rest = rest[1:]
            if not rest:
                if i + 1 >= len(args):
                    raise FlagError(f"flag needs an argument: '{a[j]}' in {a}")
                i += 1
                rest = args[i]
            _store(opts, canon, kind, rest, name)
            break
        i += 1
    return opts, pos


def _store(opts: dict[str, Any], canon: str, kind: Any, val: str, name: str) -> None:
    if kind is list:
        opts[canon].append(val)
    elif kind is int:
        try:
            opts[canon] = int(val)
        except ValueError:
            raise FlagError(f'invalid argument "{val}" for "{name}" flag: strconv.ParseInt: parsing "{val}": invalid syntax') from None
    else:
        opts[canon] = val


def filter_map(values: list[str]) -> dict[str, dict[str, bool]]:
    """Repeated ``--filter key=value`` flags as the Engine API's ``filters`` map (``{key: {value: true}}``)."""
    filters: dict[str, dict[str, bool]] = {}
    for f in values:
        k, _, v = f.partition("=")
        filters.setdefault(k, {})[v] = True
    return filters
