"""Docker-style output helpers for image commands: Go-template ``--format``, tabwriter tables,
human sizes and durations. Lean imports (used on every ``tug images``)."""

from __future__ import annotations

import json
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


def render(template: str, obj: dict[str, Any], funcs: dict[str, Callable[..., str]] | None = None) -> str:
    """A small subset of Go templates: ``{{.Field}}``, ``{{.A.B}}``, ``{{json .}}``,
    ``{{json .Field}}``, ``{{upper .F}}``, ``{{lower .F}}``, ``{{join .F ", "}}``,
    ``{{index .Map "key"}}``, plus ``\\t``/``\\n`` escapes."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")

    def lookup(expr: str) -> Any:
        if expr == ".":
            return obj
        cur: Any = obj
        for part in expr.lstrip(".").split("."):
            cur = cur.get(part) if isinstance(cur, dict) else getattr(cur, part, None)
        return cur

    def fmt(v: Any) -> str:
        if v is None:
            return "<no value>"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + " ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "map[" + " ".join(f"{k}:{fmt(x)}" for k, x in sorted(v.items())) + "]"
        return str(v)

    def repl(m: re.Match[str]) -> str:
        expr = m.group(1)
        words = _split_words(expr)
        if not words:
            return ""
        if words[0] == "json" and len(words) == 2:
            return json.dumps(lookup(words[1]), separators=(",", ":"))
        if words[0] in ("upper", "lower", "title") and len(words) == 2:
            s = fmt(lookup(words[1]))
            return getattr(s, words[0])()
        if words[0] == "join" and len(words) == 3:
            v = lookup(words[1]) or []
            return _unquote(words[2]).join(str(x) for x in v)
        if words[0] == "index" and len(words) == 3:
            v = lookup(words[1]) or {}
            return fmt(v.get(_unquote(words[2])) if isinstance(v, dict) else None)
        if words[0] == "println":
            return " ".join(fmt(lookup(w)) for w in words[1:]) + "\n"
        if funcs and words[0] in funcs:
            return funcs[words[0]](*[lookup(w) for w in words[1:]])
        if words[0].startswith("."):
            return fmt(lookup(words[0]))
        raise ValueError(f'template: unsupported expression "{expr}"')

    return _TEMPLATE_RE.sub(repl, template)


def _split_words(expr: str) -> list[str]:
    out: list[str] = []
    for m in re.finditer(r'"(?:[^"\\]|\\.)*"|\S+', expr):
        out.append(m.group(0))
    return out


def _unquote(s: str) -> str:
    if len(s) >= 2 and s[0] == s[-1] == '"':
        return json.loads(s)
    return s


def format_rows(fmt: str, items: list[dict[str, Any]], headers: dict[str, str]) -> str:
    """docker's ``--format``: ``table …`` prints a header row (through the tabwriter),
    anything else one line per item; ``json`` is ``{{json .}}``."""
    if fmt == "json":
        fmt = "{{json .}}"
    if fmt.startswith("table"):
        body = fmt[len("table"):].strip() or "\t".join("{{." + k + "}}" for k in headers)
        head = _TEMPLATE_RE.sub(lambda m: headers.get(m.group(1).lstrip("."), m.group(1).lstrip(".").upper()),
                                body.replace("\\t", "\t"))
        rows = [head.split("\t")] + [render(body, it).split("\t") for it in items]
        return tabwrite(rows)
    return "".join(render(fmt, it) + "\n" for it in items)
