"""Small helpers of the engine: IDs, names, times, signals, atomic JSON files."""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import signal as _signal
import stat
import time
from datetime import UTC, datetime
from typing import Any

from tugboat.errors import InvalidArgument
from tugboat.util.fs import write_atomic
from tugboat.util.human import human_duration as human_duration

ZERO_TIME = "0001-01-01T00:00:00Z"

_ADJ = ["admiring", "adoring", "affectionate", "agitated", "amazing", "angry", "awesome", "blissful", "bold", "boring", "brave", "busy", "charming", "clever", "cool", "compassionate", "competent", "confident", "cranky", "crazy", "dazzling", "determined", "distracted", "dreamy", "eager", "ecstatic", "elastic", "elated", "elegant", "eloquent", "epic", "fervent", "festive", "flamboyant", "focused", "friendly", "frosty", "gallant", "gifted", "goofy", "gracious", "happy", "hardcore", "heuristic", "hopeful", "hungry", "infallible", "inspiring", "jolly", "jovial", "keen", "kind", "laughing", "loving", "lucid", "magical", "modest", "musing", "mystifying", "naughty", "nervous", "nice", "nifty", "nostalgic", "objective", "optimistic", "peaceful", "pedantic", "pensive", "practical", "priceless", "quirky", "quizzical", "recursing", "relaxed", "reverent", "romantic", "sad", "serene", "sharp", "silly", "sleepy", "stoic", "strange", "stupefied", "suspicious", "sweet", "tender", "thirsty", "trusting", "unruffled", "upbeat", "vibrant", "vigilant", "vigorous", "wizardly", "wonderful", "xenodochial", "youthful", "zealous", "zen"]
_NAMES = ["albattani", "allen", "almeida", "archimedes", "ardinghelli", "aryabhata", "austin", "babbage", "banach", "bardeen", "bartik", "bassi", "beaver", "bell", "bhabha", "bhaskara", "blackwell", "bohr", "booth", "borg", "bose", "boyd", "brahmagupta", "brattain", "brown", "buck", "burnell", "cannon", "carson", "cartwright", "cerf", "chandrasekhar", "chaplygin", "chatelet", "chatterjee", "chebyshev", "clarke", "colden", "cori", "cray", "curie", "darwin", "davinci", "diffie", "dijkstra", "dirac", "driscoll", "dubinsky", "easley", "edison", "einstein", "elion", "engelbart", "euclid", "euler", "fermat", "fermi", "feynman", "franklin", "galileo", "gates", "goldberg", "goldstine", "goodall", "gould", "greider", "hamilton", "hawking", "heisenberg", "hermann", "hodgkin", "hofstadter", "hopper", "hugle", "hypatia", "jackson", "jang", "jennings", "jepsen", "johnson", "joliot", "jones", "kalam", "kapitsa", "keller", "kepler", "khorana", "kilby", "kirch", "knuth", "kowalevski", "lalande", "lamarr", "lamport", "leakey", "leavitt", "lewin", "lichterman", "liskov", "lovelace", "lumiere", "mahavira", "margulis", "matsumoto", "maxwell", "mayer", "mccarthy", "mcclintock", "mclean", "mcnulty", "meitner", "mendel", "mendeleev", "merkle", "mirzakhani", "moore", "morse", "murdock", "napier", "nash", "neumann", "newton", "nightingale", "nobel", "noether", "northcutt", "noyce", "panini", "pare", "pascal", "pasteur", "payne", "perlman", "pike", "poincare", "poitras", "ptolemy", "raman", "ramanujan", "ride", "ritchie", "robinson", "roentgen", "rosalind", "rubin", "saha", "sammet", "shannon", "shaw", "shirley", "shockley", "sinoussi", "snyder", "spence", "stonebraker", "sutherland", "swanson", "swartz", "swirles", "taussig", "tesla", "tharp", "thompson", "torvalds", "turing", "varahamihira", "visvesvaraya", "volhard", "wescoff", "wiles", "williams", "wilson", "wing", "wozniak", "wright", "wu", "yalow", "yonath", "zhukovsky"]

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def new_id() -> str:
    return secrets.token_hex(32)


def random_name() -> str:
    return f"{random.choice(_ADJ)}_{random.choice(_NAMES)}"


def now_rfc3339(ts: float | None = None) -> str:
    """RFC 3339 with nanoseconds, UTC (``2026-11-28T23:14:05.108763000Z``)."""
    ts = time.time() if ts is None else ts
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}000Z"


def parse_time(s: str) -> float:
    """Unix seconds from a unix timestamp (``1700000000.5``), RFC 3339, or a duration (``1h``)."""
    s = s.strip()
    if not s:
        raise InvalidArgument("empty time value")
    try:
        return float(s)
    except ValueError:
        pass
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", s)
    if m:
        mult = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        return time.time() - float(m.group(1)) * mult
    t = s.replace("Z", "+00:00")
    m2 = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", t)
    frac = 0.0
    if m2:
        t = m2.group(1) + m2.group(3)
        frac = float(m2.group(2) or 0)
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise InvalidArgument(f"invalid time value {s!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp() + frac


_TS_CACHE: dict[str, float] = {}


def rfc3339_to_ts(s: str) -> float:
    if not s or s.startswith("0001-"):
        return 0.0
    ts = _TS_CACHE.get(s)
    if ts is None:
        ts = parse_time(s)
        if "T" in s:  # absolute times only (a duration such as "1h" is relative to now)
            if len(_TS_CACHE) >= 4096:  # `ps` asks for the same few hundred records' times
                _TS_CACHE.clear()
            _TS_CACHE[s] = ts
    return ts


def parse_signal(value: str | int | None, default: int = _signal.SIGKILL) -> int:
    """A signal from ``9``, ``KILL``, ``SIGKILL`` (docker accepts all three)."""
    if value is None or value == "":
        return default
    if isinstance(value, int):
        return value
    v = value.strip().upper()
    if v.isdigit():
        n = int(v)
        if n < 1 or n > 64:
            raise InvalidArgument(f"Invalid signal: {value}")
        return n
    if not v.startswith("SIG"):
        v = "SIG" + v
    if v.startswith("SIGRTMIN+"):
        return int(_signal.SIGRTMIN) + int(v[9:])
    try:
        return int(getattr(_signal.Signals, v))
    except AttributeError:
        raise InvalidArgument(f"Invalid signal: {value}") from None


def dumps_compact(data: Any) -> bytes:
    """Compact JSON (as ``json.dumps(separators=(",", ":"))`` reads back) through msgspec's C
    encoder, several times faster on a container's record or runtime spec; a value msgspec does
    not take (a lone surrogate from a non-UTF-8 name) goes through ``json`` as before."""
    try:
        return _msgspec_json().encode(data)
    except (TypeError, UnicodeEncodeError, ValueError, OverflowError):
        return json.dumps(data, separators=(",", ":")).encode()


def _msgspec_json() -> Any:
    import msgspec.json

    return msgspec.json


def write_json_atomic(path: str, data: Any, *, mode: int | None = None) -> None:
    write_atomic(path, dumps_compact(data), mode=mode)


def read_json(path: str) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read())


def reap_exit_code(pid: int) -> int | None:
    """Wait for our child ``pid``; docker's exit code (128+N when killed by signal N), or None when
    ``pid`` is not our child."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def parse_bytes(s: str | int | None) -> int:
    """``512m``, ``1g``, ``100k`` or a plain number of bytes."""
    if s is None or s == "":
        return 0
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)b?", s.strip().lower())
    if not m:
        raise InvalidArgument(f"invalid size: {s!r}")
    mult = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[m.group(2)]
    return int(float(m.group(1)) * mult)


# -- reading a file of a container's rootfs ------------------------------------------------------
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_SYS_OPENAT2 = 437  # x86_64 and aarch64 alike
_openat2_state: list[Any] = []  # [libc] once probed, [None] when openat2 is missing


def _openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """``openat2(2)`` through libc's ``syscall``; raises ``OSError`` (``ENOSYS`` on old kernels)."""
    import ctypes

    if not _openat2_state:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        _openat2_state.append(libc)
    libc = _openat2_state[0]
    how = (ctypes.c_uint64 * 3)(flags, 0, resolve)  # struct open_how {flags, mode, resolve}
    fd = libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def read_in_root(root: str, rel: str, limit: int = 4 << 20) -> bytes | None:
    """The content of the regular file ``rel`` of the tree ``root`` (a container's rootfs), with
    every symlink and ``..`` resolved as if ``root`` were ``/`` (``openat2`` with
    ``RESOLVE_IN_ROOT``), so a container can never point the engine at a host file. ``None`` when
    it is missing, not a regular file (a FIFO never blocks us: ``O_NONBLOCK``), unreadable or
    larger than ``limit`` bytes."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fd = _openat2(dfd, rel.lstrip("/"), flags, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            if exc.errno != 38:  # ENOSYS: a kernel before 5.6, resolve by hand (racy, but scoped)
                return None
            from tugboat.util.fs import scoped_join

            try:
                fd = os.open(scoped_join(root, rel), flags | os.O_NOFOLLOW)
            except (OSError, InvalidArgument):
                return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
                return None
            chunks: list[bytes] = []
            size = 0
            while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
            return None if size > limit else b"".join(chunks)
        except OSError:
            return None
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def read_colon_file_in_root(root: str, rel: str) -> list[list[str]]:
    """The fields of the passwd/group style file ``rel`` of a container's rootfs ([] when absent),
    read through :func:`read_in_root`."""
    data = read_in_root(root, rel)
    if data is None:
        return []
    text = data.decode(errors="replace")
    return [ln.split(":") for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
