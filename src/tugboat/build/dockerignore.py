""".dockerignore: Docker's pattern syntax and matching rules.

- One pattern per line; surrounding blanks trimmed; empty lines and lines starting with ``#``
  ignored; a leading ``!`` makes an exception (re-include); a leading ``/`` is dropped; the
  pattern is cleaned like Go's ``filepath.Clean`` (so a trailing ``/`` means nothing special).
- ``*`` matches any run of characters except ``/``, ``?`` one character except ``/``,
  ``[a-z]``/``[^a-z]`` classes, ``\\`` escapes, and ``**`` any number of directories (zero included).
- A path is excluded when the LAST matching pattern is not an exception; a pattern matching a
  parent directory of the path matches the path too.
"""

from __future__ import annotations

import posixpath
import re

from tugboat.errors import InvalidArgument

_ESCAPE = set(".+()|{}$")


def clean(path: str) -> str:
    """Go's ``filepath.Clean`` for slash-separated paths."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    out = "/".join(parts)
    if rooted:
        return "/" + out
    return out or "."


class Pattern:
    """One line of a .dockerignore (a plain class: ``dataclasses`` costs start-up time)."""

    def __init__(self, text: str, exclusion: bool, kind: str = "exact", regex: re.Pattern[str] | None = None) -> None:
        self.text = text
        self.exclusion = exclusion
        self.kind = kind  # exact | prefix | suffix | regexp
        self.regex = regex
        self._compile()

    def __repr__(self) -> str:
        return f"Pattern({self.text!r}, exclusion={self.exclusion})"

    def _compile(self) -> None:
        pat = self.text
        rx = ["^"]
        kind = "exact"
        i = 0
        n = len(pat)
        idx = 0
        in_class = False
        while i < n:
            ch = pat[i]
            i += 1
            if ch == "*":
                if i < n and pat[i] == "*":
                    i += 1
                    if i < n and pat[i] == "/":
                        i += 1
                    if i >= n:
                        kind = "prefix" if kind == "exact" else "regexp"
                        rx.append(".*")
                    else:
                        rx.append("(.*/)?")
                        kind = "regexp"
                    if idx == 0:
                        kind = "suffix"
                else:
                    rx.append("[^/]*")
                    kind = "regexp"
            elif ch == "?":
                rx.append("[^/]")
                kind = "regexp"
            elif ch in _ESCAPE:
                rx.append("\\" + ch)
            elif ch == "\\":
                kind = "regexp"
                if i < n:
                    rx.append(re.escape(pat[i]))
                    i += 1
                else:
                    rx.append("\\\\")
            elif ch in "[]":
                rx.append(ch)
                in_class = ch == "["
                kind = "regexp"
            else:
                rx.append(re.escape(ch) if (ch == "^" and not (in_class and pat[i - 2] == "[")) else ch)
            idx += 1
        rx.append("$")
        self.kind = kind
        try:
            self.regex = re.compile("".join(rx), re.S)
        except re.error as exc:
            raise InvalidArgument(f"syntax error in .dockerignore pattern {self.text!r}: {exc}") from None

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None


def parse_patterns(text: str) -> list[str]:
    """The patterns of a .dockerignore file (``!`` kept as prefix), cleaned as Docker cleans them."""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        excl = False
        if line.startswith("!"):
            excl = True
            line = line[1:].strip()
            if not line:
                raise InvalidArgument('illegal exclusion pattern: "!"')
        line = clean(line)
        if len(line) > 1 and line.startswith("/"):
            line = line[1:]
        out.append(("!" if excl else "") + line)
    return out


class Matcher:
    """Decides whether a context path (relative, slash-separated) is excluded."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[Pattern] = []
        for p in patterns:
            excl = p.startswith("!")
            body = p[1:] if excl else p
            self.patterns.append(Pattern(clean(body) if body else body, excl))
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    @classmethod
    def from_text(cls, text: str) -> Matcher:
        return cls(parse_patterns(text))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, path: str) -> bool:
        """True when ``path`` is ignored (Docker's MatchesOrParentMatches)."""
        path = clean(path)
        matched = False
        parent = posixpath.dirname(path) or "."
        parent_dirs = parent.split("/")
        for pat in self.patterns:
            if pat.exclusion != matched:
                continue
            m = pat.match(path)
            if not m and parent != ".":
                for i in range(len(parent_dirs)):
                    if pat.match("/".join(parent_dirs[: i + 1])):
                        m = True
                        break
            if m:
                matched = not pat.exclusion
        return matched

    def may_contain_included(self, dirpath: str) -> bool:
        """Whether a walk must descend into an excluded directory (some ``!`` pattern may re-include)."""
        if not self.has_exclusions:
            return False
        dirpath = clean(dirpath)
        for pat in self.patterns:
            if not pat.exclusion:
                continue
            text = pat.text
            if "*" in text or "?" in text or "[" in text:
                return True
            if text.startswith(dirpath + "/") or text == dirpath:
                return True
        return False
