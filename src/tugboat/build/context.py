"""The build context: a directory (or an uploaded tar, extracted), filtered by .dockerignore.

Sources of COPY/ADD are resolved here: Go ``filepath.Match`` globs per path element, paths kept
inside the context (``../x`` is refused, a symlink is followed only within the context), files
excluded by .dockerignore invisible. :meth:`BuildContext.checksum` gives the content digest of a
set of sources for the layer cache (paths, modes, symlink targets and file contents; not owners
or times, as COPY resets owners and the cache should survive a ``git checkout``).

Digests of big files (``FileDigests.MIN_SIZE`` and up) of a context directory are remembered
across builds in ``<root>/build/filedigests.json``, keyed by path, size, mtime, ctime and inode
(ctime cannot be set back by a user, so a rewritten file is hashed again): a cached rebuild of a
context with large files does not read them.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import IO, Any

from tugboat.build.cache import sha256
from tugboat.build.dockerignore import Matcher, clean
from tugboat.errors import InvalidArgument, NotFound
from tugboat.util.fs import scoped_join as scoped_join

_GLOB_CHARS = set("*?[\\")


def has_glob(s: str) -> bool:
    return any(c in _GLOB_CHARS for c in s)


def go_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match`` for one path element (``*``, ``?``, ``[...]``, ``[^...]``, ``\\``)."""
    import re

    rx = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            rx.append("[^/]*")
        elif c == "?":
            rx.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            rx.append(re.escape(pattern[i]))
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                raise InvalidArgument(f"syntax error in pattern {pattern!r}")
            body = pattern[i + 1 : j]
            neg = body.startswith("^")
            if neg:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("[", "\\[")
            rx.append("[" + ("^" if neg else "") + body + "]")
            i = j
        else:
            rx.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(rx), name, re.S) is not None


def safe_extract(tf: Any, dest: str) -> None:
    """Extract a tar refusing absolute paths and escapes, keeping modes and times."""
    import tarfile

    def flt(member: Any, path: str) -> Any:
        mode = member.mode
        new = tarfile.tar_filter(member, path)
        if new.isfile() or new.isdir():
            new = new.replace(mode=mode & 0o7777, deep=False)
        return new

    tf.extractall(dest, filter=flt)


class BuildContext:
    """A context directory plus its ignore rules. ``close()`` removes an extracted tar."""

    def __init__(self, root: str, matcher: Matcher | None = None, owned: bool = False) -> None:
        self.root = os.path.realpath(root)
        self.matcher = matcher or Matcher([])
        self.owned = owned
        self._hash_cache: Any = {}

    @classmethod
    def open(cls, source: str | IO[bytes], tmp_dir: str, dockerfile: str = "Dockerfile",
             digests_file: str | None = None) -> BuildContext:
        if isinstance(source, str) and os.path.isdir(source):
            ctx = cls(source)
            if digests_file:
                ctx._hash_cache = FileDigests(digests_file)
        else:
            import tarfile
            import tempfile

            os.makedirs(tmp_dir, exist_ok=True)
            d = tempfile.mkdtemp(prefix=f"{os.getpid()}-ctx-", dir=tmp_dir)
            try:
                if isinstance(source, str):
                    if not os.path.exists(source):
                        raise NotFound(f"unable to prepare context: path {source!r} not found")
                    tf = tarfile.open(source, mode="r:*")  # noqa: SIM115
                else:
                    tf = tarfile.open(fileobj=source, mode="r|*")  # noqa: SIM115
                with tf:
                    safe_extract(tf, d)
            except tarfile.TarError as exc:
                _shutil().rmtree(d, ignore_errors=True)
                raise InvalidArgument(f"failed to read the build context: {exc}") from None
            except BaseException:
                _shutil().rmtree(d, ignore_errors=True)
                raise
            ctx = cls(d, owned=True)
        ctx.matcher = ctx._load_ignore(dockerfile)
        return ctx

    def _load_ignore(self, dockerfile: str) -> Matcher:
        candidates = []
        if dockerfile and not os.path.isabs(dockerfile):
            candidates.append(os.path.join(self.root, dockerfile + ".dockerignore"))
        elif dockerfile:
            candidates.append(dockerfile + ".dockerignore")
        candidates.append(os.path.join(self.root, ".dockerignore"))
        for p in candidates:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError), open(p, encoding="utf-8",
                                                                                  errors="replace") as f:
                return Matcher.from_text(f.read())
        return Matcher([])

    def close(self) -> None:
        if isinstance(self._hash_cache, FileDigests):
            with contextlib.suppress(OSError):
                self._hash_cache.save()
        if self.owned:
            _shutil().rmtree(self.root, ignore_errors=True)
            self.owned = False

    def __enter__(self) -> BuildContext:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- reading the Dockerfile ---------------------------------------------------------------

    def read_dockerfile(self, name: str) -> bytes:
        if os.path.isabs(name) and not name.startswith(self.root + "/"):
            path = name
        else:
            rel = clean(name.lstrip("/")) if not os.path.isabs(name) else os.path.relpath(name, self.root)
            if rel.startswith("../") or rel == "..":
                raise InvalidArgument(f"the Dockerfile ({name}) must be within the build context")
            path = os.path.join(self.root, rel)
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(
                f"Cannot locate specified Dockerfile: {name}"
            ) from None

    # ---- sources -----------------------------------------------------------------------------

    def excluded(self, rel: str) -> bool:
        return bool(self.matcher) and rel not in (".", "") and self.matcher.excluded(rel)

    def resolve(self, src: str) -> list[tuple[str, str]]:
        """(named, real) context-relative paths matching a COPY/ADD source (``.``: the context)."""
        return resolve_in(self.root, src, self.excluded, what="build context", matcher=self.matcher)

    def walk(self, rel: str) -> Iterator[tuple[str, os.stat_result]]:
        """(relative path, lstat) of ``rel`` and everything below it that is not ignored."""
        yield from walk_tree(self.root, rel, self.excluded, self.matcher)

    def checksum(self, rels: list[str], exclude: Matcher | None = None) -> str:
        """The content digest of sources (``exclude``: COPY --exclude, relative to each source)."""
        h = sha256()
        for rel in rels:
            h.update(b"\0src\0" + rel.encode())
            skip, descend = self.excluded, self.matcher
            if exclude:
                from tugboat.build.copy import _Descend, excluding

                skip, descend = excluding(self.excluded, exclude, rel), _Descend(self.matcher, exclude, rel)
            for path, st in walk_tree(self.root, rel, skip, descend):
                h.update(tree_entry_digest(self.root, path, st, self._hash_cache).encode())
        return "sha256:" + h.hexdigest()


class FileDigests:
    """A dict-like cache of big files' digests, kept in a JSON file between builds."""

    MIN_SIZE = 256 << 10
    MAX_ENTRIES = 4096

    def __init__(self, path: str) -> None:
        self.path = path
        self._mem: dict[str, str] = {}
        self._disk: dict[str, str] | None = None
        self._dirty = False

    def _load(self) -> dict[str, str]:
        if self._disk is None:
            import json

            try:
                with open(self.path, "rb") as f:
                    data = json.loads(f.read())
                self._disk = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._disk = {}
        return self._disk

    @staticmethod
    def _big(key: str) -> bool:
        return int(key.split("\0")[1]) >= FileDigests.MIN_SIZE

    def get(self, key: str) -> str | None:
        if key in self._mem:
            return self._mem[key]
        return self._load().get(key) if self._big(key) else None

    def __setitem__(self, key: str, digest: str) -> None:
        self._mem[key] = digest
        if self._big(key):
            disk = self._load()
            disk[key] = digest
            while len(disk) > self.MAX_ENTRIES:
                del disk[next(iter(disk))]
            self._dirty = True

    def save(self) -> None:
        if not self._dirty or self._disk is None:
            return
        import json

        from tugboat.util.fs import write_atomic

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_atomic(self.path, json.dumps(self._disk, separators=(",", ":")).encode())
        self._dirty = False


def tree_entry_digest(root: str, rel: str, st: os.stat_result, cache: Any = None) -> str:
    full = os.path.join(root, rel) if rel != "." else root
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        key = f"{full}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}"
        digest = cache.get(key) if cache is not None else None
        if digest is None:
            fh = sha256()
            if st.st_size > 1 << 20:  # OpenSSL's is several times faster on big files
                import hashlib

                fh = hashlib.sha256()
            with open(full, "rb") as f:
                while chunk := f.read(1 << 20):
                    fh.update(chunk)
            digest = fh.hexdigest()
            if cache is not None:
                cache[key] = digest
        return f"f {rel} {mode:o} {digest}\n"
    if stat.S_ISDIR(st.st_mode):
        return f"d {rel} {mode:o}\n"
    if stat.S_ISLNK(st.st_mode):
        return f"l {rel} {os.readlink(full)}\n"
    return f"o {rel} {st.st_mode:o} {st.st_rdev}\n"


def _has_included_below(root: str, rel: str, excluded: Any, matcher: Matcher | None) -> bool:
    """An excluded directory still exists in the context when a ``!`` pattern re-includes
    something below it (Docker sends the parents of every included file)."""
    if matcher is None or not matcher.may_contain_included(rel) or not os.path.isdir(os.path.join(root, rel)):
        return False
    return any(p != rel for p, _st in walk_tree(root, rel, excluded, matcher))


def resolve_in(root: str, src: str, excluded: Any, what: str = "build context",
               matcher: Matcher | None = None) -> list[tuple[str, str]]:
    """(path as named, real path) pairs under ``root`` matching ``src`` (globs per element, the
    named path's symlinks followed inside ``root``), ``excluded`` filtered."""
    norm = clean(src)
    if norm == ".." or norm.startswith("../"):
        raise InvalidArgument(f"forbidden path outside the {what}: {src} ()")
    norm = clean("/" + norm).lstrip("/") or "."
    if not has_glob(norm):
        if norm != "." and excluded(norm) and not _has_included_below(root, norm, excluded, matcher):
            raise NotFound(
                f"file not found in {what} or excluded by .dockerignore: stat {src}: file does not exist"
            )
        full = scoped_join(root, norm)
        if not os.path.lexists(full):
            raise NotFound(
                f"file not found in {what} or excluded by .dockerignore: stat {src}: file does not exist"
            )
        real = os.path.relpath(full, root)
        if real != "." and excluded(real) and not _has_included_below(root, real, excluded, matcher):
            raise NotFound(
                f"file not found in {what} or excluded by .dockerignore: stat {src}: file does not exist"
            )
        return [(norm, real)]
    parts = norm.split("/")
    matches = [""]
    for i, part in enumerate(parts):
        nxt: list[str] = []
        for base in matches:
            d = os.path.join(root, base) if base else root
            if not has_glob(part):
                cand = f"{base}/{part}" if base else part
                if os.path.lexists(os.path.join(root, cand)):
                    nxt.append(cand)
                continue
            try:
                names = sorted(os.listdir(d))
            except (NotADirectoryError, FileNotFoundError):
                continue
            for name in names:
                if go_match(part, name):
                    nxt.append(f"{base}/{name}" if base else name)
        matches = nxt
        if i < len(parts) - 1:
            matches = [m for m in matches if os.path.isdir(os.path.join(root, m))]
    matches = [m for m in matches if not excluded(m) or _has_included_below(root, m, excluded, matcher)]
    if not matches:
        raise NotFound(f"no source files were specified (pattern {src!r} matched nothing)")
    return [(m, m) for m in matches]


def walk_tree(root: str, rel: str, excluded: Any, matcher: Any = None) -> Iterator[tuple[str, os.stat_result]]:
    full = os.path.join(root, rel) if rel != "." else root
    st = os.lstat(full)
    yield rel, st
    if not stat.S_ISDIR(st.st_mode):
        return
    stack = [rel]
    while stack:
        cur = stack.pop()
        d = os.path.join(root, cur) if cur != "." else root
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            child = f"{cur}/{name}" if cur != "." else name
            cst = os.lstat(os.path.join(d, name))
            if excluded(child):
                if stat.S_ISDIR(cst.st_mode) and matcher is not None and matcher.may_contain_included(child):
                    stack.append(child)
                continue
            yield child, cst
            if stat.S_ISDIR(cst.st_mode):
                stack.append(child)


def _shutil() -> Any:
    """``shutil`` on first use: it imports bz2 and lzma, start-up time a cached build does not need."""
    import shutil

    return shutil
