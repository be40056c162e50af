"""Variable substitution in Dockerfile words, with Docker's exact rules.

Docker expands ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:+alt}``,
``${VAR+alt}``, ``${VAR:?msg}``, ``${VAR#pat}``, ``${VAR%pat}`` (and the greedy ``##``/``%%``),
``${VAR/pat/repl}`` in the words of some instructions (ENV, ARG, LABEL, COPY, ADD, WORKDIR, USER,
EXPOSE, VOLUME, STOPSIGNAL, FROM). Quotes are removed the way a POSIX shell removes them, and
the escape character (``\\`` or the one set by the ``escape`` directive) escapes the next one.

:func:`Lex.process_word` gives one string (whitespace kept); :func:`Lex.process_words` splits
into words the way the shell would (unquoted expansions are split on whitespace).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tugboat.errors import InvalidArgument

_EOF = ""
_SPECIAL_PARAMS = set("@*#?-$!0")


class _Words:
    __slots__ = ("in_word", "word", "words")

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw_string(self, s: str) -> None:
        self.word += s
        self.in_word = True

    def get(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _Scanner:
    __slots__ = ("pos", "src")

    def __init__(self, src: str) -> None:
        self.src = src
        self.pos = 0

    def peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else _EOF

    def next(self) -> str:
        if self.pos < len(self.src):
            ch = self.src[self.pos]
            self.pos += 1
            return ch
        return _EOF


def _pattern_to_regex(pattern: str, greedy: bool, anchor_start: bool, anchor_end: bool) -> re.Pattern[str]:
    """A shell glob (``*``, ``?``, ``[...]``, ``\\x``) as a regex, for ``#``/``%``/``/`` modifiers."""
    out = []
    i = 0
    star = ".*" if greedy else ".*?"
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(ch))
        i += 1
    rx = "".join(out)
    if anchor_start:
        rx = "^" + rx
    if anchor_end:
        rx = rx + "$"
    return re.compile(rx, re.S)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    full = _pattern_to_regex(pattern, True, True, True)
    ends = range(len(value), -1, -1) if greedy else range(0, len(value) + 1)
    for end in ends:
        if full.match(value[:end]):
            return value[end:]
    return value


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    full = _pattern_to_regex(pattern, True, True, True)
    starts = range(0, len(value) + 1) if greedy else range(len(value), -1, -1)
    for start in starts:
        if full.match(value[start:]):
            return value[:start]
    return value


class Lex:
    """Docker's shell-word processor (one per escape token)."""

    def __init__(self, escape: str = "\\", *, raw_quotes: bool = False, raw_escapes: bool = False,
                 skip_unset: bool = False) -> None:
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand one word: quotes removed, variables substituted, whitespace kept."""
        return _Word(self, word, env).process()[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand and split into words like a shell."""
        return _Word(self, word, env).process()[1]

    def process_word_used(self, word: str, env: Mapping[str, str]) -> tuple[str, set[str]]:
        """Like :meth:`process_word`, also returning the variable names referenced."""
        w = _Word(self, word, env)
        return w.process()[0], w.used


class _Word:
    def __init__(self, lex: Lex, source: str, env: Mapping[str, str]) -> None:
        self.lex = lex
        self.source = source
        self.env = env
        self.sc = _Scanner(source)
        self.escape = lex.escape
        self.raw_quotes = lex.raw_quotes
        self.raw_escapes = lex.raw_escapes
        self.used: set[str] = set()

    def process(self) -> tuple[str, list[str]]:
        try:
            return self.stop_on(_EOF)
        except InvalidArgument as exc:
            raise InvalidArgument(f"failed to process {self.source!r}: {exc.message}") from None

    def getenv(self, name: str) -> tuple[str, bool]:
        self.used.add(name)
        if name in self.env:
            return self.env[name], True
        return "", False

    def stop_on(self, stop: str, raw_escapes: bool | None = None) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        saved_raw = self.raw_escapes
        if raw_escapes is not None:
            self.raw_escapes = raw_escapes
        try:
            sc = self.sc
            while sc.peek() != _EOF:
                ch = sc.peek()
                if stop != _EOF and ch == stop:
                    sc.next()
                    return "".join(result), words.get()
                if ch == "$":
                    tmp = self.dollar()
                    result.append(tmp)
                    words.add_string(tmp)
                elif ch == "'":
                    tmp = self.single_quote()
                    result.append(tmp)
                    words.add_raw_string(tmp)
                elif ch == '"':
                    tmp = self.double_quote()
                    result.append(tmp)
                    words.add_raw_string(tmp)
                else:
                    ch = sc.next()
                    if ch == self.escape:
                        if self.raw_escapes:
                            words.add_raw_char(ch)
                            result.append(ch)
                        ch = sc.next()
                        if ch == _EOF:
                            break
                        words.add_raw_char(ch)
                    else:
                        words.add_char(ch)
                    result.append(ch)
            if stop != _EOF:
                raise InvalidArgument(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result), words.get()
        finally:
            self.raw_escapes = saved_raw

    def single_quote(self) -> str:
        out: list[str] = []
        ch = self.sc.next()
        if self.raw_quotes:
            out.append(ch)
        while True:
            ch = self.sc.next()
            if ch == _EOF:
                raise InvalidArgument("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        out: list[str] = []
        ch = self.sc.next()
        if self.raw_quotes:
            out.append(ch)
        while True:
            p = self.sc.peek()
            if p == _EOF:
                raise InvalidArgument("unexpected end of statement while looking for matching double-quote")
            if p == '"':
                ch = self.sc.next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if p == "$":
                out.append(self.dollar())
                continue
            ch = self.sc.next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                nxt = self.sc.peek()
                if nxt == _EOF:
                    continue
                if nxt in ('"', "$", self.escape):
                    ch = self.sc.next()
            out.append(ch)

    def name(self) -> str:
        sc = self.sc
        out: list[str] = []
        while sc.peek() != _EOF:
            ch = sc.peek()
            if not out and ch.isdigit():
                while sc.peek() != _EOF and sc.peek().isdigit():
                    out.append(sc.next())
                return "".join(out)
            if not out and ch in _SPECIAL_PARAMS:
                return sc.next()
            if not (ch.isalnum() or ch == "_"):
                break
            out.append(sc.next())
        return "".join(out)

    def dollar(self) -> str:
        sc = self.sc
        sc.next()
        if sc.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.getenv(name)
            if not found and self.lex.skip_unset:
                return "$" + name
            return value
        sc.next()
        p = sc.peek()
        if p == _EOF:
            raise InvalidArgument("syntax error: missing '}'")
        if p in "{}:":
            raise InvalidArgument("syntax error: bad substitution")
        name = self.name()
        ch = sc.next()
        chs = ch
        if ch == "}":
            value, found = self.getenv(name)
            if not found and self.lex.skip_unset:
                return "${" + name + "}"
            return value
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = sc.next()
            chs += ch
            if ch not in "+-?#%" or ch == _EOF:
                if ch == _EOF:
                    raise InvalidArgument("syntax error: missing '}'")
                raise InvalidArgument(f"unsupported modifier ({chs}) in substitution")
        if ch in ("+", "-", "?", "#", "%") and ch != _EOF:
            raw = ch in "#%"
            try:
                word, _ = self.stop_on("}", raw_escapes=raw or None)
            except InvalidArgument:
                if sc.peek() == _EOF:
                    raise InvalidArgument("syntax error: missing '}'") from None
                raise
            value, found = self.getenv(name)
            if self.lex.skip_unset and not found:
                return "${" + name + chs + word + "}"
            if ch == "-":
                return word if (not found or (null_is_unset and value == "")) else value
            if ch == "+":
                return "" if (not found or (null_is_unset and value == "")) else word
            if ch == "?":
                if not found:
                    raise InvalidArgument(f"{name}: {word or 'is not allowed to be unset'}")
                if null_is_unset and value == "":
                    raise InvalidArgument(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            greedy = False
            if word.startswith(ch):
                greedy = True
                word = word[1:]
            if ch == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        if ch == "/":
            replace_all = sc.peek() == "/"
            if replace_all:
                sc.next()
            pattern, _ = self.stop_on("/", raw_escapes=True)
            replacement, _ = self.stop_on("}", raw_escapes=True)
            value, found = self.getenv(name)
            if self.lex.skip_unset and not found:
                return "${" + name + "/" + pattern + "/" + replacement + "}"
            rx = _pattern_to_regex(pattern, True, False, False)
            if replace_all:
                return rx.sub(lambda _m: replacement, value)
            return rx.sub(lambda _m: replacement, value, count=1)
        if ch == _EOF:
            raise InvalidArgument("syntax error: missing '}'")
        raise InvalidArgument(f"unsupported modifier ({chs}) in substitution")


_DEFAULT = Lex("\\")


def expand(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Expand one word with the default (or given) escape token."""
    lex = _DEFAULT if escape == "\\" else Lex(escape)
    return lex.process_word(word, env)
