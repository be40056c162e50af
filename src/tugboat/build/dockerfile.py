"""The Dockerfile parser: text -> instructions with line numbers, with Docker's exact semantics.

Two passes, as in Docker's own frontend:

1. lines -> raw nodes: parser directives (``# escape=``, ``# syntax=``, ``# check=``) at the top,
   comments, line continuations (the escape character at the end of a line, trailing blanks
   allowed; comment and empty lines inside a continuation are skipped), heredocs for RUN, COPY
   and ADD, leading ``--flag`` words, and each instruction's argument form (JSON array or shell
   string, key=value pairs, whitespace-separated words).
2. nodes -> :class:`Instruction` objects: flags checked against the instruction's own flags,
   argument counts checked, HEALTHCHECK options and ONBUILD triggers parsed, and grouped into
   global ARGs and build stages.

Variable substitution is not done here; it needs the build's state (see ``plan.py``), and is
applied to exactly the instructions Docker applies it to (:data:`EXPANDED`).
Errors are :class:`DockerfileError` with the message ``Dockerfile:3: unknown instruction: FORM``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tugboat.errors import InvalidArgument

INSTRUCTIONS = (
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
)
# Instructions whose words get variable substitution (Docker's SupportsSingleWordExpansion).
EXPANDED = frozenset(
    {"ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
)
HEREDOC_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})

# flag name -> kind ("string", "bool", "strings")
FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": "string"},
    "RUN": {"mount": "strings", "network": "string", "security": "string"},
    "COPY": {"chown": "string", "chmod": "string", "from": "string", "link": "bool", "parents": "bool",
             "exclude": "strings"},
    "ADD": {"chown": "string", "chmod": "string", "link": "bool", "checksum": "string", "keep-git-dir": "bool",
            "exclude": "strings", "unpack": "bool"},
    "HEALTHCHECK": {"interval": "string", "timeout": "string", "start-period": "string",
                    "start-interval": "string", "retries": "string"},
}

_DIRECTIVE_RE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_WS_SPLIT = re.compile(r"[\t\v\f\r ]+")
_HEREDOC_RE = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9\-_.]*$")


class DockerfileError(InvalidArgument):
    """A Dockerfile that cannot be parsed; the message carries ``file:line:``."""

    def __init__(self, filename: str, line: int, message: str) -> None:
        super().__init__(f"{filename}:{line}: {message}" if line else f"{filename}: {message}")
        self.filename = filename
        self.line = line
        self.reason = message


class Heredoc:
    # plain class (not a dataclass): decorating costs start-up time of every `tug build`
    def __init__(self, name: str, content: str, expand: bool = True, chomp: bool = False,
                 fd: int | None = None) -> None:
        self.name = name
        self.content = content
        self.expand = expand
        self.chomp = chomp
        self.fd = fd

    @property
    def data(self) -> str:
        """The content with leading tabs removed for ``<<-``."""
        if not self.chomp:
            return self.content
        return "".join(line.lstrip("\t") for line in self.content.splitlines(keepends=True))


class Instruction:
    """One instruction, before variable substitution.

    ``args``: for RUN/CMD/ENTRYPOINT/SHELL the command (JSON list, or one shell string with
    ``json`` False); for COPY/ADD/VOLUME/EXPOSE/FROM the words; for WORKDIR/USER/STOPSIGNAL/
    MAINTAINER one string. ``pairs``: ENV/LABEL (key, value) and ARG (name, default or None).
    """

    def __init__(self, cmd: str, line: int, end_line: int, original: str, args: list[str] | None = None,
                 json: bool = False, flags: dict[str, Any] | None = None,
                 pairs: list[tuple[str, str | None]] | None = None, heredocs: list[Heredoc] | None = None,
                 health: dict[str, Any] | None = None, trigger: Instruction | None = None,
                 trigger_text: str = "") -> None:
        self.cmd = cmd
        self.line = line
        self.end_line = end_line
        self.original = original
        self.args: list[str] = [] if args is None else args
        self.json = json
        self.flags: dict[str, Any] = {} if flags is None else flags
        self.pairs: list[tuple[str, str | None]] = [] if pairs is None else pairs
        self.heredocs: list[Heredoc] = [] if heredocs is None else heredocs
        self.health = health
        self.trigger = trigger  # ONBUILD
        self.trigger_text = trigger_text  # ONBUILD: the trigger as stored in the image config

    def __str__(self) -> str:
        return self.original


class Stage:
    def __init__(self, index: int, base: str, name: str | None, platform: str | None, line: int, original: str,
                 instructions: list[Instruction] | None = None) -> None:
        self.index = index
        self.base = base  # raw (before ARG substitution)
        self.name = name
        self.platform = platform
        self.line = line
        self.original = original
        self.instructions: list[Instruction] = [] if instructions is None else instructions

    @property
    def ref(self) -> str:
        return self.name if self.name is not None else str(self.index)


class Dockerfile:
    def __init__(self, filename: str, directives: dict[str, str], escape: str, meta_args: list[Instruction],
                 stages: list[Stage], instructions: list[Instruction], warnings: list[str] | None = None) -> None:
        self.filename = filename
        self.directives = directives
        self.escape = escape
        self.meta_args = meta_args
        self.stages = stages
        self.instructions = instructions  # all, in order (FROM included)
        self.warnings: list[str] = [] if warnings is None else warnings

    def stage(self, ref: str) -> Stage | None:
        """A stage by name (case-insensitive) or index."""
        low = ref.lower()
        for st in self.stages:
            if st.name == low:
                return st
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None


# ---------------------------------------------------------------------------------------------
# pass 1: lines -> nodes


class _Node:
    def __init__(self, cmd: str, rest: str, flags: list[str], original: str, start: int, end: int,
                 heredocs: list[Heredoc] | None = None) -> None:
        self.cmd = cmd  # as written
        self.rest = rest
        self.flags = flags
        self.original = original
        self.start = start
        self.end = end
        self.heredocs: list[Heredoc] = [] if heredocs is None else heredocs


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Leading ``--flag[=value]`` words (Docker's extractBuilderFlags) and the rest of the line."""
    words: list[str] = []
    IN_SPACES, IN_WORD, IN_QUOTE = 0, 1, 2
    phase = IN_SPACES
    word = ""
    quote = ""
    blank_ok = False
    pos = 0
    n = len(line)
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if phase == IN_SPACES:
            if pos == n:
                break
            if ch.isspace():
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or line[pos + 1] != "-":
                return line[pos:], words
            phase = IN_WORD
        if phase in (IN_WORD, IN_QUOTE) and pos == n:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == IN_WORD:
            if ch.isspace():
                phase = IN_SPACES
                if word == "--":
                    return line[pos:].lstrip(), words
                if blank_ok or word:
                    words.append(word)
                word = ""
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = IN_QUOTE
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word += ch
            pos += 1
            continue
        # IN_QUOTE
        if ch == quote:
            phase = IN_WORD
            pos += 1
            continue
        if ch == "\\":
            if pos + 1 == n:
                phase = IN_WORD
                pos += 1
                continue
            pos += 1
            ch = line[pos]
        word += ch
        pos += 1
    return "", words


def parse_words(rest: str, escape: str) -> list[str]:
    """Split on blanks, keeping quotes and escapes in the words (Docker's parseWords)."""
    words: list[str] = []
    IN_SPACES, IN_WORD, IN_QUOTE = 0, 1, 2
    phase = IN_SPACES
    word = ""
    quote = ""
    blank_ok = False
    pos = 0
    n = len(rest)
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == IN_SPACES:
            if pos == n:
                break
            if ch.isspace():
                pos += 1
                continue
            phase = IN_WORD
        if phase in (IN_WORD, IN_QUOTE) and pos == n:
            if blank_ok or word:
                words.append(word)
            break
        if phase == IN_WORD:
            if ch.isspace():
                phase = IN_SPACES
                if blank_ok or word:
                    words.append(word)
                word = ""
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = IN_QUOTE
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                word += ch
                pos += 1
                ch = rest[pos]
            word += ch
            pos += 1
            continue
        # IN_QUOTE
        if ch == quote:
            phase = IN_WORD
        if ch == escape and quote != "'":
            if pos + 1 == n:
                phase = IN_WORD
                pos += 1
                continue
            pos += 1
            word += ch
            ch = rest[pos]
        word += ch
        pos += 1
    return words


def _parse_heredoc_word(word: str) -> Heredoc | None:
    m = _HEREDOC_RE.match(word)
    if m is None:
        return None
    fd_s, chomp, rest = m.groups()
    if not rest:
        return None
    from tugboat.build.shell import Lex

    try:
        words = Lex("\\").process_words(rest, {})
    except InvalidArgument:
        return None
    if len(words) != 1:
        return None
    expand = not ("'" in rest or '"' in rest)
    return Heredoc(name=words[0], content="", expand=expand, chomp=chomp == "-",
                   fd=int(fd_s) if fd_s else None)


def heredocs_in(line: str) -> list[Heredoc]:
    """The heredoc markers (``<<EOF``, ``<<-EOF``, ``<<"EOF"``) found in an instruction line."""
    if "<<" not in line:
        return []
    from tugboat.build.shell import Lex

    try:
        words = Lex("\\", raw_quotes=True, raw_escapes=True).process_words(line, {})
    except InvalidArgument:
        return []
    docs = []
    for w in words:
        doc = _parse_heredoc_word(w)
        if doc is not None:
            docs.append(doc)
    return docs


def is_heredoc_word(word: str) -> Heredoc | None:
    return _parse_heredoc_word(word)


def _parse_json_array(rest: str) -> list[str] | None:
    """A JSON array of strings, None when ``rest`` is not JSON (then it is shell form)."""
    s = rest.lstrip()
    if not s.startswith("["):
        return None
    try:
        value = json.loads(s)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise InvalidArgument("when using JSON array syntax, arrays must be comprised of strings only")
    return value


def _lex_lines(text: str, filename: str) -> tuple[dict[str, str], str, list[_Node], list[str]]:
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    directives: dict[str, str] = {}
    directives_done = False
    escape = "\\"
    warnings: list[str] = []
    nodes: list[_Node] = []
    cont_re = re.compile(re.escape(escape) + r"[ \t]*$")

    def check_directive(line: str, lineno: int) -> None:
        nonlocal directives_done, escape, cont_re
        if directives_done:
            return
        m = _DIRECTIVE_RE.match(line)
        if m is None:
            directives_done = True
            return
        key = m.group(1).lower()
        if key not in _DIRECTIVES:
            directives_done = True
            return
        if key in directives:
            raise DockerfileError(filename, lineno, f"only one {key} parser directive can be used")
        directives[key] = m.group(2)
        if key == "escape":
            value = m.group(2)
            if value not in ("`", "\\"):
                raise DockerfileError(filename, lineno,
                                      f"invalid escape token '{value}' does not match ` or \\")
            escape = value
            cont_re = re.compile(re.escape(escape) + r"[ \t]*$")

    def trim_cont(line: str) -> tuple[str, bool]:
        m = cont_re.search(line)
        if m is None:
            return line, True
        return line[: m.start()], False

    i = 0
    n = len(lines)
    while i < n:
        raw = lines[i].rstrip("\r")
        i += 1
        lineno = i
        stripped = raw.lstrip(" \t")
        check_directive(stripped, lineno)
        if stripped.startswith("#"):
            stripped = ""
        line, eol = trim_cont(stripped)
        if eol and line == "":
            continue
        start = lineno
        empty_cont = False
        while not eol and i < n:
            raw2 = lines[i].rstrip("\r")
            i += 1
            directives_done = True
            s2 = raw2.lstrip(" \t")
            if s2.startswith("#"):
                continue
            if s2 == "":
                empty_cont = True
                continue
            part, eol = trim_cont(raw2)
            line += part
        if empty_cont:
            warnings.append(f"{filename}:{start}: empty continuation line")
        stripped_line = line.strip()
        if not stripped_line:
            continue
        parts = _WS_SPLIT.split(stripped_line, maxsplit=1)
        cmd = parts[0]
        rest, flags = _extract_flags(parts[1]) if len(parts) > 1 else ("", [])
        node = _Node(cmd=cmd, rest=rest, flags=flags, original=stripped_line, start=start, end=i)
        if cmd.upper() in HEREDOC_INSTRUCTIONS and "<<" in line and _parse_json_array_safe(rest) is None:
            for doc in heredocs_in(stripped_line):
                content: list[str] = []
                terminated = False
                while i < n:
                    body = lines[i].rstrip("\r")
                    i += 1
                    candidate = body
                    if doc.chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == doc.name:
                        terminated = True
                        break
                    content.append(body + "\n")
                if not terminated:
                    raise DockerfileError(filename, start, f"unterminated heredoc {doc.name}")
                doc.content = "".join(content)
                node.heredocs.append(doc)
            node.end = i
        nodes.append(node)
    return directives, escape, nodes, warnings


def _parse_json_array_safe(rest: str) -> list[str] | None:
    try:
        return _parse_json_array(rest)
    except InvalidArgument:
        return None


# ---------------------------------------------------------------------------------------------
# pass 2: nodes -> instructions

_GO_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": 1_000_000, "s": 1_000_000_000,
             "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_go_duration(s: str) -> int:
    """A Go ``time.ParseDuration`` string in nanoseconds (``30s``, ``1m30s``, ``500ms``)."""
    orig = s
    neg = False
    if s[:1] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise InvalidArgument(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _GO_DURATION_RE.match(s, pos)
        if m is None:
            if re.match(r"(\d+(?:\.\d*)?|\.\d+)$", s[pos:]):
                raise InvalidArgument(f'time: missing unit in duration "{orig}"')
            raise InvalidArgument(f'time: invalid duration "{orig}"')
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    ns = round(total)
    return -ns if neg else ns


def _parse_flags(cmd: str, words: list[str]) -> dict[str, Any]:
    allowed = FLAGS.get(cmd, {})
    out: dict[str, Any] = {}
    for arg in words:
        if not arg.startswith("--"):
            raise InvalidArgument(f"arg should start with -- : {arg}")
        if arg == "--":
            break
        body = arg[2:]
        name, eq, value = body.partition("=")
        kind = allowed.get(name)
        if kind is None:
            raise InvalidArgument(f"unknown flag: {name}")
        if name in out and kind != "strings":
            raise InvalidArgument(f"duplicate flag specified: {name}")
        if kind == "bool":
            if eq and value == "":
                raise InvalidArgument(f"missing a value on flag: {name}")
            low = value.lower()
            if low in ("true", ""):
                out[name] = True
            elif low == "false":
                out[name] = False
            else:
                raise InvalidArgument(f"expecting boolean value for flag {name}, not: {value}")
        elif kind == "string":
            if not eq:
                raise InvalidArgument(f"missing a value on flag: {name}")
            out[name] = value
        else:
            if not eq:
                raise InvalidArgument(f"missing a value on flag: {name}")
            out.setdefault(name, []).append(value)
    return out


def _name_val(rest: str, key: str, escape: str) -> list[tuple[str, str | None]]:
    words = parse_words(rest, escape)
    if not words:
        raise InvalidArgument(f"{key} requires at least one argument")
    if "=" not in words[0]:
        parts = _WS_SPLIT.split(rest.strip(), maxsplit=1)
        if len(parts) < 2 or parts[1] == "":
            raise InvalidArgument(f"{key} must have two arguments")
        return [(parts[0], parts[1])]
    out: list[tuple[str, str | None]] = []
    for w in words:
        if "=" not in w:
            raise InvalidArgument(f"Syntax error - can't find = in {w!r}. Must be of the form: name=value")
        k, _, v = w.partition("=")
        out.append((k, v))
    return out


_SUGGEST_CACHE: dict[str, str | None] = {}


def _suggest(word: str) -> str | None:
    """The closest instruction name (Levenshtein distance ≤ 2), as Docker's "did you mean"."""
    up = word.upper()

    def dist(a: str, b: str) -> int:
        prev = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            cur = [i]
            for j, cb in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
            prev = cur
        return prev[-1]

    best, best_d = None, 3
    for name in INSTRUCTIONS:
        d = dist(up, name)
        if d < best_d:
            best, best_d = name, d
    return best


def _instruction(node: _Node, escape: str, *, in_onbuild: bool = False) -> Instruction:
    cmd = node.cmd.upper()
    if cmd not in INSTRUCTIONS:
        hint = _suggest(node.cmd)
        msg = f"unknown instruction: {node.cmd}"
        if hint is not None:
            msg += f" (did you mean {hint.lower() if node.cmd.islower() else hint}?)"
        raise InvalidArgument(msg)
    ins = Instruction(cmd=cmd, line=node.start, end_line=node.end, original=node.original,
                      heredocs=node.heredocs)
    rest = node.rest
    if cmd == "ONBUILD":
        ins.flags = _parse_flags(cmd, node.flags)
        if not rest.strip():
            raise InvalidArgument("ONBUILD requires at least one argument")
        parts = _WS_SPLIT.split(rest.strip(), maxsplit=1)
        trig = parts[0].upper()
        if trig == "ONBUILD":
            raise InvalidArgument("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trig in ("MAINTAINER", "FROM"):
            raise InvalidArgument(f"{trig} isn't allowed as an ONBUILD trigger")
        sub_rest, sub_flags = _extract_flags(parts[1]) if len(parts) > 1 else ("", [])
        sub = _Node(cmd=parts[0], rest=sub_rest, flags=sub_flags, original=rest.strip(), start=node.start,
                    end=node.end)
        ins.trigger = _instruction(sub, escape, in_onbuild=True)
        ins.trigger_text = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original)
        ins.args = [ins.trigger_text]
        return ins
    ins.flags = _parse_flags(cmd, node.flags)

    if cmd in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
        arr = _parse_json_array(rest) if rest else None
        if arr is not None:
            ins.json = True
            ins.args = arr
            ins.heredocs = []
        elif rest:
            ins.args = [rest]
        if cmd == "SHELL":
            if not ins.json:
                raise InvalidArgument("SHELL requires the arguments to be in JSON form")
            if not ins.args:
                raise InvalidArgument("SHELL requires at least one argument")
        if cmd == "RUN" and not ins.args:
            raise InvalidArgument("RUN requires at least one argument")
        return ins

    if cmd in ("COPY", "ADD", "VOLUME"):
        arr = _parse_json_array(rest) if rest else None
        if arr is not None:
            ins.json = True
            ins.args = arr
            ins.heredocs = []
        else:
            ins.args = [w for w in _WS_SPLIT.split(rest.strip()) if w] if rest.strip() else []
        if cmd == "VOLUME":
            if not ins.args:
                raise InvalidArgument("VOLUME requires at least one argument")
            for v in ins.args:
                if not v.strip():
                    raise InvalidArgument("VOLUME specified can not be an empty string")
        elif len(ins.args) < 2:
            raise InvalidArgument(
                f"{cmd} requires at least two arguments, but only one was provided. "
                "Destination could not be determined."
            )
        return ins

    if cmd in ("FROM", "EXPOSE"):
        ins.args = [w for w in _WS_SPLIT.split(rest.strip()) if w] if rest.strip() else []
        if cmd == "EXPOSE" and not ins.args:
            raise InvalidArgument("EXPOSE requires at least one argument")
        if cmd == "FROM":
            if len(ins.args) not in (1, 3) or (len(ins.args) == 3 and ins.args[1].lower() != "as"):
                raise InvalidArgument("FROM requires either one or three arguments")
            if len(ins.args) == 3:
                name = ins.args[2].lower()
                if not _STAGE_NAME_RE.match(name):
                    raise InvalidArgument(
                        f"invalid name for build stage: {ins.args[2]!r}, name can't start with a number "
                        "or contain symbols"
                    )
        return ins

    if cmd in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"):
        if not rest.strip():
            raise InvalidArgument(f"{cmd} requires exactly one argument")
        ins.args = [rest]
        if cmd == "STOPSIGNAL" and len(_WS_SPLIT.split(rest.strip())) != 1:
            raise InvalidArgument("STOPSIGNAL requires exactly one argument")
        return ins

    if cmd in ("ENV", "LABEL"):
        if not rest.strip():
            raise InvalidArgument(f"{cmd} requires at least one argument")
        ins.pairs = _name_val(rest, cmd, escape)
        if cmd == "ENV":
            for k, _v in ins.pairs:
                if k == "":
                    raise InvalidArgument("ENV names can not be blank")
        return ins

    if cmd == "ARG":
        words = parse_words(rest, escape)
        if not words:
            raise InvalidArgument("ARG requires at least one argument")
        for w in words:
            if "=" in w:
                k, _, v = w.partition("=")
                ins.pairs.append((k, v))
            else:
                ins.pairs.append((w, None))
            if not ins.pairs[-1][0]:
                raise InvalidArgument("ARG names can not be blank")
        return ins

    if cmd == "HEALTHCHECK":
        text = rest.strip()
        if not text:
            raise InvalidArgument("HEALTHCHECK requires at least one argument")
        hparts = re.split(r"\s+", text, maxsplit=1)
        typ = hparts[0]
        cmd_rest = hparts[1].strip() if len(hparts) > 1 else ""
        typ_u = typ.upper()
        if typ_u == "NONE":
            if cmd_rest:
                raise InvalidArgument("HEALTHCHECK NONE takes no arguments")
            if ins.flags:
                raise InvalidArgument("HEALTHCHECK NONE takes no arguments")
            ins.health = {"Test": ["NONE"]}
            return ins
        if typ_u != "CMD":
            raise InvalidArgument(f'Unknown type "{typ}" in HEALTHCHECK (try CMD)')
        arr = _parse_json_array(cmd_rest) if cmd_rest else None
        if arr is not None:
            test = ["CMD", *arr]
            ins.json = True
        else:
            test = ["CMD-SHELL", cmd_rest] if cmd_rest else ["CMD-SHELL"]
        if len(test) == 1:
            raise InvalidArgument("Missing command after HEALTHCHECK CMD")
        health: dict[str, Any] = {"Test": test}
        for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                          ("start-interval", "StartInterval")):
            value = ins.flags.get(flag, "")
            if value:
                ns = parse_go_duration(value)
                if ns != 0 and ns < 1_000_000:
                    raise InvalidArgument(f'Interval "{flag}" cannot be less than 1ms')
                if ns < 0:
                    raise InvalidArgument(f'Interval "{flag}" cannot be negative')
                if ns:
                    health[key] = ns
        retries = ins.flags.get("retries", "")
        if retries:
            try:
                r = int(retries, 10)
            except ValueError:
                raise InvalidArgument(f'strconv.ParseInt: parsing "{retries}": invalid syntax') from None
            if r < 0:
                raise InvalidArgument(f"--retries cannot be negative ({r})")
            if r:
                health["Retries"] = r
        ins.health = health
        ins.args = test[1:]
        return ins
    raise InvalidArgument(f"unknown instruction: {node.cmd}")  # pragma: no cover


def parse(text: str | bytes, filename: str = "Dockerfile") -> Dockerfile:
    """Parse a Dockerfile. Raises :class:`DockerfileError` (``Dockerfile:3: ...``)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            text = text.decode("latin-1")
    directives, escape, nodes, warnings = _lex_lines(text, filename)
    if not nodes:
        raise DockerfileError(filename, 0, f"the Dockerfile ({filename}) cannot be empty")
    meta: list[Instruction] = []
    stages: list[Stage] = []
    instructions: list[Instruction] = []
    names: set[str] = set()
    for node in nodes:
        try:
            ins = _instruction(node, escape)
        except DockerfileError:
            raise
        except InvalidArgument as exc:
            raise DockerfileError(filename, node.start, exc.message) from None
        instructions.append(ins)
        if ins.cmd == "FROM":
            name = ins.args[2].lower() if len(ins.args) == 3 else None
            if name is not None:
                if name in names:
                    raise DockerfileError(filename, node.start, f'duplicate stage name "{name}"')
                names.add(name)
            stages.append(Stage(index=len(stages), base=ins.args[0], name=name,
                                platform=ins.flags.get("platform"), line=ins.line, original=ins.original))
            continue
        if not stages:
            if ins.cmd == "ARG":
                meta.append(ins)
                continue
            raise DockerfileError(filename, node.start, "no build stage in current context")
        stages[-1].instructions.append(ins)
    return Dockerfile(filename=filename, directives=directives, escape=escape, meta_args=meta,
                      stages=stages, instructions=instructions, warnings=warnings)
