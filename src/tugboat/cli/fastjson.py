"""JSON decoding without importing the ``json`` package (which pulls in ``re`` and ``enum``).

``tug ps`` runs all day; this uses the C scanner and encoder of ``_json`` directly.
"""

from __future__ import annotations

import _json

_CONST = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _parse_constant(s: str) -> float:
    return _CONST[s]


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_parse_constant)
    memo: dict = {}


_scan = _json.make_scanner(_Context())
_WS = " \t\n\r"


def loads(s: str | bytes) -> object:
    if isinstance(s, bytes):
        s = s.decode("utf-8")
    i, n = 0, len(s)
    while i < n and s[i] in _WS:
        i += 1
    try:
        obj, end = _scan(s, i)
    except StopIteration:
        raise ValueError(f"invalid JSON at offset {i}") from None
    while end < n and s[end] in _WS:
        end += 1
    if end != n:
        raise ValueError(f"extra data at offset {end}")
    return obj


def raw_decode(s: str, i: int = 0) -> tuple[object, int]:
    """Decode one value starting at ``i`` (whitespace skipped); raises ValueError if incomplete."""
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    try:
        return _scan(s, i)
    except StopIteration:
        raise ValueError("incomplete JSON") from None


def _default(o: object) -> object:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_encode = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ": ", ", ",
                             False, False, True)


def dumps(obj: object) -> str:
    """``json.dumps(obj)`` (same separators and ASCII escaping) through the C encoder."""
    if isinstance(obj, str):
        return _json.encode_basestring_ascii(obj)
    return "".join(_encode(obj, 0))
