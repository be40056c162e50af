"""Tar header bodies read into memory are bounded (security finding S-8), in the layer reader
(snapshots/layer.py) and in the image archive reader (images/archive.py)."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile

import pytest

from tar_support import raw_tar_header
from tugboat.errors import DataCorruption
from tugboat.images.archive import _TarSource
from tugboat.snapshots.layer import MAX_SPECIAL_HEADER, LayerError, apply_layer


def _member(typ: bytes, body: bytes, name: str = "hdr") -> bytes:
    pad = -len(body) % 512
    return raw_tar_header(name, typ, len(body)) + body + b"\0" * pad


def _file(name: str, data: bytes) -> bytes:
    return _member(b"0", data, name)


def _pax(records: dict[str, bytes]) -> bytes:
    out = b""
    for k, v in records.items():
        rec = b" " + k.encode() + b"=" + v + b"\n"
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n = len(str(n)) + len(rec)
        out += str(n).encode() + rec
    return out


END = b"\0" * 1024


@pytest.mark.parametrize("typ", [b"x", b"g", b"L", b"K"])
def test_layer_refuses_oversized_special_headers(tmp_path, typ: bytes) -> None:
    size = MAX_SPECIAL_HEADER + 1
    raw = raw_tar_header("h", typ, size) + b"\0" * (size + (-size % 512)) + _file("f", b"x") + END
    with pytest.raises(LayerError, match="limit is 1048576 bytes"):
        apply_layer(io.BytesIO(gzip.compress(raw, 1)), str(tmp_path / "o"))
    assert not (tmp_path / "o" / "f").exists()


def test_layer_refuses_pax_headers_adding_up(tmp_path) -> None:
    chunk = b"v" * (MAX_SPECIAL_HEADER // 3)
    raw = b"".join(_member(b"g", _pax({f"k{i}": chunk})) for i in range(4)) + _file("f", b"x") + END
    with pytest.raises(LayerError, match="in all"):
        apply_layer(io.BytesIO(raw), str(tmp_path / "o"))


def test_layer_accepts_large_headers_within_the_limit(tmp_path) -> None:
    long_name = "d" * 200 + "/" + "f" * 200
    raw = (_member(b"x", _pax({"comment": b"c" * (MAX_SPECIAL_HEADER - 64)})) + _file("a", b"A")
           + _member(b"L", long_name.encode() + b"\0", "././@LongLink") + _file("short", b"B") + END)
    out = tmp_path / "o"
    apply_layer(io.BytesIO(raw), str(out))
    assert (out / "a").read_bytes() == b"A"
    assert (out / long_name).read_bytes() == b"B"


@pytest.mark.parametrize("record", [{"size": b"12x"}, {"uid": b"-"}, {"mtime": b"abc"}, {"size": b"-5"}])
def test_layer_refuses_bad_pax_values_cleanly(tmp_path, record: dict[str, bytes]) -> None:
    raw = _member(b"x", _pax(record)) + _file("f", b"x") + END
    with pytest.raises(LayerError, match="PAX"):
        apply_layer(io.BytesIO(raw), str(tmp_path / "o"))


def test_layer_header_bomb_uses_little_memory(tmp_path) -> None:
    """The audit's 1 MB gzip layer with a 512 MB PAX header: refused without allocating it."""
    blob = tmp_path / "bomb.gz"
    size = 512 << 20
    with gzip.open(blob, "wb", compresslevel=1) as f:
        f.write(raw_tar_header("h", b"x", size))
        zero = b"\0" * (1 << 20)
        for _ in range(size // len(zero)):
            f.write(zero)
        f.write(_file("f", b"x") + END)
    code = ("import resource, sys\n"
            "from tugboat.snapshots.layer import LayerError, apply_layer\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n"
            f"    apply_layer({str(blob)!r}, {str(tmp_path / 'o')!r})\n"
            "except LayerError:\n"
            "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    assert int(r.stdout) < 64 * 1024, f"RSS grew by {r.stdout.strip()} KiB"


@pytest.mark.parametrize("typ", [b"x", b"g", b"L", b"K"])
def test_image_archive_refuses_oversized_special_headers(typ: bytes) -> None:
    size = MAX_SPECIAL_HEADER + 1
    raw = raw_tar_header("h", typ, size) + b"\0" * (size + (-size % 512)) + _file("manifest.json", b"[]") + END
    with pytest.raises(DataCorruption, match="limit is 1048576 bytes"):
        _TarSource(io.BytesIO(raw))


def test_image_archive_refuses_global_headers_adding_up() -> None:
    chunk = b"v" * (MAX_SPECIAL_HEADER // 3)
    raw = b"".join(_member(b"g", _pax({f"k{i}": chunk})) for i in range(4)) + _file("manifest.json", b"[]") + END
    with pytest.raises(DataCorruption, match="in all"):
        _TarSource(io.BytesIO(raw))


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_image_archive_reads_long_names(fmt: int) -> None:
    buf = io.BytesIO()
    name = "blobs/" + "a" * 300 + "/manifest.json"
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        ti = tarfile.TarInfo(name)
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"{}"))
    buf.seek(0)
    src = _TarSource(buf)
    assert src.names() == {name}
    assert src.read(name) == b"{}"
