"""Docker-style output helpers for image commands: Go-template ``--format``, tabwriter tables,
human sizes and durations. Lean imports (used on every ``tug images``)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from tugboat.cli.tabwriter import tabwrite as tabwrite
from tugboat.util.human import human_duration as human_duration
from tugboat.util.human import human_size as human_size

_TEMPLATE_RE = re.compile(r"{{\s*(.*?)\s*}}")


def parse_time(rfc3339: str) -> float | None:
    if not rfc3339:
        return None
    s = rfc3339.rstrip("Z")
    frac = 0.0
    if "." in s:
        s, f = s.split(".", 1)
        f = re.split(r"[+-]", f)[0]
        frac = float("0." + f) if f.isdigit() else 0.0
    else:
        s = re.split(r"[+](?=\d\d:\d\d$)", s)[0]
    try:
        import calendar

        return calendar.timegm(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")) + frac
    except ValueError:
        return None


def since(rfc3339: str) -> str:
    t = parse_time(rfc3339)
    if t is None or t <= 0:
        return "N/A"
    return human_duration(time.time() - t) + " ago"


def render(template: str, obj: Any, funcs: dict[str, Callable[..., Any]] | None = None) -> str:
    """docker's Go-template ``--format`` over ``obj`` (see :mod:`tugboat.cli.gotemplate`), with the
    ``\\t``/``\\n`` escapes docker's formatter expands."""
    from tugboat.cli.gotemplate import render as go_render

    return go_render(template.replace("\\t", "\t").replace("\\n", "\n"), obj, funcs)


def format_rows(fmt: str, items: list[dict[str, Any]], headers: dict[str, str]) -> str:
    """docker's ``--format``: ``table …`` prints a header row (through the tabwriter),
    anything else one line per item; ``json`` is ``{{json .}}``."""
    from tugboat.cli.gotemplate import RowContext

    items = [RowContext(it) for it in items]  # `{{json .}}` of a row: sorted keys, as docker
    if fmt == "json":
        fmt = "{{json .}}"
    if fmt.startswith("table"):
        body = fmt[len("table"):].strip() or "\t".join("{{." + k + "}}" for k in headers)
        head = _TEMPLATE_RE.sub(lambda m: headers.get(m.group(1).lstrip("."), m.group(1).lstrip(".").upper()),
                                body.replace("\\t", "\t"))
        rows = [head.split("\t")] + [render(body, it).split("\t") for it in items]
        return tabwrite(rows)
    return "".join(render(fmt, it) + "\n" for it in items)
