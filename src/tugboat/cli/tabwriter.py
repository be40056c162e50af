"""Go's text/tabwriter as docker's table output uses it. No imports: loaded on every ``tug ps``."""

from __future__ import annotations

TYPE_CHECKING = False  # not `typing`: importing it costs start-up time
if TYPE_CHECKING:
    from collections.abc import Iterable


def tabwrite(rows: Iterable[list[str]], minwidth: int = 10, padding: int = 3) -> str:
    """Go's tabwriter.NewWriter(out, 10, 1, 3, ' ', 0) as docker uses it: the last cell of a line
    is not padded."""
    rows = [list(r) for r in rows]
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [0] * ncols
    for r in rows:
        for i, c in enumerate(r[:-1]):
            widths[i] = max(widths[i], len(c) + padding, minwidth)
    out = []
    for r in rows:
        line = "".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + (r[-1] if r else "")
        out.append(line.rstrip() if not r[-1] else line)
    return "\n".join(out) + "\n"
