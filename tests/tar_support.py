"""Hand-made tar headers for hostile-archive tests (sizes and types no tar writer would emit)."""

from __future__ import annotations


def raw_tar_header(name: str, typ: bytes, size: int) -> bytes:
    """One 512-byte ustar header with ``size`` in the size field and a valid checksum."""
    h = bytearray(512)
    h[0:len(name)] = name.encode()
    h[100:108], h[108:116], h[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    h[124:136] = (b"%011o" % size) + b"\0"
    h[136:148] = b"00000000000\0"
    h[156:157] = typ
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = (b"%06o" % sum(h)) + b"\0 "
    return bytes(h)
