"""JSON through the C accelerator ``_json`` alone: ``import json`` pulls in ``re`` and ``enum``,
which cost as much as Python's own start-up; the runtime's start path avoids them.

``loads``/``dumps`` behave like ``json.loads``/``json.dumps`` (compact or indented output).
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


_scan = _json.make_scanner(_Ctx())
_WS = " \t\n\r"


def loads(s: str | bytes) -> Any:
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("utf-8-sig" if s[:3] == b"\xef\xbb\xbf" else "utf-8")
    i = 0
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    try:
        obj, end = _scan(s, i)
    except StopIteration as e:
        raise ValueError(f"Expecting value: char {e.value}") from None
    while end < n and s[end] in _WS:
        end += 1
    if end != n:
        raise ValueError(f"Extra data: char {end}")
    _Ctx.memo.clear()
    return obj


def _float_repr(o: float) -> str:
    if o != o:
        return "NaN"
    if o == float("inf"):
        return "Infinity"
    if o == float("-inf"):
        return "-Infinity"
    return float.__repr__(o)


def _default(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def dumps(obj: Any, indent: int | None = None, compact: bool = False) -> str:
    if indent is not None:
        import json

        return json.dumps(obj, indent=indent)
    enc = _json.make_encoder(
        {}, _default, _json.encode_basestring_ascii, None, ":" if compact else ": ", "," if compact else ", ",
        False, False, True
    )
    # c_make_encoder: markers, default, encoder, indent, key_separator, item_separator,
    # sort_keys, skipkeys, allow_nan -- and a float repr at the end in 3.11? handled below
    return "".join(enc(obj, 0))
