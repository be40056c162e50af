"""Decoding Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``).

Wire format: the magic ``k8s\\x00``, then a ``runtime.Unknown`` message (typeMeta{apiVersion, kind},
raw = the object's message, contentType …). Messages are decoded generically with the field table
``protobuf.json`` (see :mod:`.gen_protobuf`) into the object's JSON form. Go's protobuf marshalling
writes zero values of non-pointer fields, JSON's ``omitempty`` hides them: empty strings, false,
zero numbers (except ``replicas``), empty lists, maps and messages are dropped again.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import os
import struct
from typing import Any

from tugboat.cluster.apiserver.meta import ApiError

MAGIC = b"k8s\x00"
UNKNOWN = "k8s.io.apimachinery.pkg.runtime.Unknown"
KEEP_ZERO = {"replicas"}


@functools.cache
def _table() -> dict[str, dict[str, list[str]]]:
    with open(os.path.join(os.path.dirname(__file__), "protobuf.json")) as f:
        return json.load(f)


class _Reader:
    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def varint(self) -> int:
        shift = result = 0
        while True:
            if self.pos >= self.end:
                raise ValueError("truncated varint")
            b = self.buf[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ValueError("varint too long")

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise ValueError("truncated field")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out


def _signed(v: int, bits: int = 64) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _scalar(typ: str, wire: int, r: _Reader) -> Any:
    if wire == 0:
        v = r.varint()
        if typ == "bool":
            return bool(v)
        if typ in ("int32", "int64"):
            return _signed(v)
        if typ in ("sint32", "sint64"):
            return (v >> 1) ^ -(v & 1)
        return v
    if wire == 1:
        raw = r.take(8)
        return struct.unpack("<d", raw)[0] if typ == "double" else struct.unpack("<q", raw)[0]
    if wire == 5:
        raw = r.take(4)
        return struct.unpack("<f", raw)[0] if typ == "float" else struct.unpack("<i", raw)[0]
    if wire == 2:
        data = r.take(r.varint())
        if typ == "string":
            return data.decode("utf-8")
        if typ == "bytes":
            return base64.b64encode(data).decode()
        raise ValueError(f"length-delimited value for scalar {typ}")
    raise ValueError(f"unsupported wire type {wire}")


def _special(typ: str, buf: bytes) -> tuple[bool, Any]:
    if typ in ("k8s.io.apimachinery.pkg.apis.meta.v1.Time", "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime"):
        m = decode_message(typ, buf, raw=True)
        secs = int(m.get("seconds", 0))
        if not secs and not m.get("nanos"):
            return True, None
        t = datetime.datetime.fromtimestamp(secs, datetime.UTC)
        if typ.endswith("MicroTime"):
            return True, t.strftime("%Y-%m-%dT%H:%M:%S") + f".{int(m.get('nanos', 0)) // 1000:06d}Z"
        return True, t.strftime("%Y-%m-%dT%H:%M:%SZ")
    if typ == "k8s.io.apimachinery.pkg.api.resource.Quantity":
        return True, decode_message(typ, buf, raw=True).get("string", "")
    if typ == "k8s.io.apimachinery.pkg.util.intstr.IntOrString":
        m = decode_message(typ, buf, raw=True)
        return True, m.get("strVal", "") if m.get("type") == 1 else int(m.get("intVal", 0))
    if typ == "k8s.io.apimachinery.pkg.runtime.RawExtension":
        raw = decode_message(typ, buf, raw=True).get("raw")
        return True, json.loads(base64.b64decode(raw)) if raw else None
    return False, None


def _empty(v: Any, name: str) -> bool:
    if v is None or v == "" or v is False or v == {} or v == []:
        return True
    return v == 0 and not isinstance(v, bool) and name not in KEEP_ZERO


def decode_message(typ: str, buf: bytes, raw: bool = False) -> dict[str, Any]:
    fields = _table().get(typ)
    if fields is None:
        raise ValueError(f"unknown protobuf message {typ}")
    r = _Reader(buf)
    out: dict[str, Any] = {}
    while r.pos < r.end:
        tag = r.varint()
        num, wire = str(tag >> 3), tag & 7
        f = fields.get(num)
        if f is None:  # unknown field: skip it
            if wire == 0:
                r.varint()
            elif wire == 1:
                r.take(8)
            elif wire == 2:
                r.take(r.varint())
            elif wire == 5:
                r.take(4)
            else:
                raise ValueError(f"unsupported wire type {wire}")
            continue
        name, ftyp, label = f
        if label == "map":
            kt, vt = ftyp.split(",")
            entry = r.take(r.varint())
            er = _Reader(entry)
            key: Any = ""
            val: Any = None
            while er.pos < er.end:
                t = er.varint()
                n, w = t >> 3, t & 7
                if n == 1:
                    key = _scalar(kt, w, er)
                elif n == 2:
                    val = _scalar(vt, w, er) if vt in _SCALARS else _value(vt, er.take(er.varint()))
                else:
                    raise ValueError("bad map entry")
            if val is None:
                val = "" if vt in ("string", "bytes") else ({} if vt not in _SCALARS else 0)
            out.setdefault(name, {})[key] = val
            continue
        if ftyp in _SCALARS:
            if label == "repeated" and wire == 2 and ftyp not in ("string", "bytes"):
                pr = _Reader(r.take(r.varint()))
                lst = out.setdefault(name, [])
                while pr.pos < pr.end:
                    lst.append(_scalar(ftyp, 0 if ftyp not in ("double", "fixed64") else 1, pr))
                continue
            v = _scalar(ftyp, wire, r)
        else:
            if wire != 2:
                raise ValueError(f"message field {name} with wire type {wire}")
            v = _value(ftyp, r.take(r.varint()))
        if label == "repeated":
            out.setdefault(name, []).append(v)
        else:
            out[name] = v
    if raw:
        return out
    return {k: v for k, v in out.items() if not _empty(v, k)}


def _value(typ: str, buf: bytes) -> Any:
    ok, v = _special(typ, buf)
    if ok:
        return v
    return decode_message(typ, buf)


_SCALARS = {"string", "int32", "int64", "bool", "bytes", "double", "float", "uint32", "uint64", "sint32", "sint64",
            "fixed32", "fixed64"}


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf request body -> the object as JSON would carry it (apiVersion and kind set)."""
    if not body.startswith(MAGIC):
        raise ApiError(400, "the protobuf body does not start with the k8s magic prefix", "BadRequest")
    try:
        env = decode_message(UNKNOWN, body[len(MAGIC):], raw=True)
        tm = env.get("typeMeta") or {}
        api_version, kind = tm.get("apiVersion", ""), tm.get("kind", "")
        group, _, version = api_version.rpartition("/")
        pkg = f"k8s.io.api.{group.split('.')[0] if group else 'core'}.{version}"
        raw = base64.b64decode(env.get("raw") or "")
        typ = f"{pkg}.{kind}"
        if typ not in _table():
            raise ApiError(415, f"protobuf bodies of {api_version} {kind} are not supported; accepted media types "
                           "include: application/json, application/yaml", "UnsupportedMediaType")
        obj = decode_message(typ, raw)
    except ApiError:
        raise
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise ApiError(400, f"the protobuf body could not be decoded: {exc}", "BadRequest") from None
    out = {"kind": kind, "apiVersion": api_version}
    out.update(obj)
    return out
