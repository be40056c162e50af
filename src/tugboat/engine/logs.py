"""docker's json-file log driver: one JSON object a line ``{"log","stream","time"}``.

:class:`JsonFileWriter` appends (with ``max-size``/``max-file`` rotation: ``<path>.1`` …);
:func:`read_logs` yields ``(stream, time_str, bytes)`` entries honouring tail/since/until.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator

from tugboat.engine.util import now_rfc3339, parse_bytes, rfc3339_to_ts


def _private(path: str, flags: int) -> int:
    """Logs hold what containers print (secrets too): readable by root only."""
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


class JsonFileWriter:
    def __init__(self, path: str, max_size: str | int | None = None, max_file: str | int | None = None) -> None:
        self.path = path
        self.max_size = parse_bytes(max_size) if max_size else 0
        self.max_file = max(1, int(max_file or 1))
        self._lock = threading.Lock()
        self._f = open(path, "ab", buffering=0, opener=_private)  # noqa: SIM115
        self._size = self._f.tell()
        self.partial: dict[str, bytes] = {}

    def write(self, stream: str, data: bytes) -> None:
        """Append raw output; complete lines become entries, a trailing partial line waits."""
        buf = self.partial.get(stream, b"") + data
        lines = buf.split(b"\n")
        rest = lines.pop()
        if len(rest) > 16384:
            lines.append(rest)
            rest = b""
            self.partial[stream] = b""
            out = [ln + b"\n" for ln in lines[:-1]] + [lines[-1]]
        else:
            self.partial[stream] = rest
            out = [ln + b"\n" for ln in lines]
        if out:
            self._emit(stream, out)

    def flush_partial(self) -> None:
        for stream, rest in list(self.partial.items()):
            if rest:
                self._emit(stream, [rest])
            self.partial[stream] = b""

    def _emit(self, stream: str, chunks: list[bytes]) -> None:
        ts = now_rfc3339()
        payload = b"".join(
            json.dumps({"log": c.decode("utf-8", "replace"), "stream": stream, "time": ts}).encode() + b"\n"
            for c in chunks
        )
        with self._lock:
            if self.max_size and self._size + len(payload) > self.max_size and self._size > 0:
                self._rotate()
            self._f.write(payload)
            self._size += len(payload)

    def _rotate(self) -> None:
        self._f.close()
        if self.max_file > 1:
            for i in range(self.max_file - 1, 0, -1):
                src = self.path if i == 1 else f"{self.path}.{i - 1}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i}")
        self._f = open(self.path, "wb", buffering=0, opener=_private)  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        self.flush_partial()
        with self._lock:
            self._f.close()


def log_files(path: str) -> list[str]:
    """Rotated files oldest first, then the live file."""
    files = []
    i = 1
    while os.path.exists(f"{path}.{i}"):
        files.append(f"{path}.{i}")
        i += 1
    return [*reversed(files), path]


def parse_line(line: bytes) -> tuple[str, str, bytes] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec.get("stream", "stdout"), rec.get("time", ""), rec.get("log", "").encode()


def read_logs(path: str, *, tail: int | None = None, since: float | None = None,
              until: float | None = None, streams: tuple[str, ...] = ("stdout", "stderr")
              ) -> tuple[list[tuple[str, str, bytes]], int]:
    """Entries now in the log, and the byte offset in the live file where following resumes."""
    entries: list[tuple[str, str, bytes]] = []
    offset = 0
    for fpath in log_files(path):
        try:
            with open(fpath, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        if fpath == path:
            # only complete lines; following resumes after them
            cut = data.rfind(b"\n") + 1
            data, offset = data[:cut], cut
        for line in data.splitlines():
            ent = parse_line(line)
            if ent is None or ent[0] not in streams:
                continue
            if since is not None or until is not None:
                ts = rfc3339_to_ts(ent[1])
                if since is not None and ts < since:
                    continue
                if until is not None and ts > until:
                    continue
            entries.append(ent)
    if tail is not None and tail >= 0:
        entries = entries[len(entries) - tail:] if tail else []
    return entries, offset


def follow_from(path: str, offset: int) -> Iterator[tuple[int, list[bytes]]]:
    """Yield (new offset, complete new lines) each time it is called via ``next`` (non-blocking)."""
    while True:
        lines: list[bytes] = []
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                if size < offset:  # rotated
                    offset = 0
                f.seek(offset)
                data = f.read()
            cut = data.rfind(b"\n") + 1
            if cut:
                lines = data[:cut].splitlines()
                offset += cut
        except FileNotFoundError:
            pass
        yield offset, lines
