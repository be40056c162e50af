"""Go ``text/template`` for ``--format``/``-f``, as the docker CLI executes it over decoded JSON.

Supported: text and ``{{pipeline}}`` actions with ``{{-``/``-}}`` trimming and ``{{/* comments */}}``;
fields (``.A.B``, map keys), ``$`` and variables (``$x := …``, ``$x = …``, ``$x.Field``);
``if``/``else if``/``else``, ``range`` (slices, maps in sorted key order, ``$i, $v :=``, ``else``,
``break``/``continue``), ``with``/``else with``; pipelines (``a | b``), parenthesised arguments with
fields (``(index .A 0).Name``); literals (strings, raw strings, numbers, ``true``/``false``/``nil``).
Functions: Go's ``and or not len index slice print printf println eq ne lt le gt ge html js
urlquery`` and docker's ``json join split title lower upper pad truncate``. Values print as Go's
``%v`` does (``map[k:v]``, ``[a b]``, ``<no value>`` for a missing key). A callable value (e.g.
``ps``'s ``.Label "key"``) is called with the command's arguments.
"""

from __future__ import annotations

import json as _json
import re
from collections.abc import Callable
from typing import Any

from tugboat.errors import InvalidArgument


class TemplateError(InvalidArgument):
    pass


class _Missing:
    """A map key that is not there: prints ``<no value>``, is false, is nil for functions."""

    def __repr__(self) -> str:
        return "<no value>"


MISSING = _Missing()


class _Nil:
    """A JSON null where docker's typed structs have a nil slice (prints ``[]``) or map (``map[]``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


NIL_SLICE = _Nil("[]")
NIL_MAP = _Nil("map[]")
NIL_PTR = _Nil("<nil>")
# docker's API types: fields that are slices or maps (a null prints as Go prints a nil one), and
# pointer fields omitted from the JSON when nil (a missing one prints <nil>)
_SLICE_FIELDS = frozenset({
    "Entrypoint", "Cmd", "Env", "Shell", "OnBuild", "Binds", "Links", "Dns", "DnsOptions", "DnsSearch",
    "ExtraHosts", "CapAdd", "CapDrop", "GroupAdd", "SecurityOpt", "Devices", "DeviceRequests",
    "DeviceCgroupRules", "Ulimits", "VolumesFrom", "Mounts", "Aliases", "DNSNames", "Args",
    "RepoTags", "RepoDigests", "Layers", "Warnings", "MaskedPaths", "ReadonlyPaths", "ConsoleSize",
    "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps", "ExecIDs", "Test", "Log", "Secrets", "Configs",
})
_MAP_FIELDS = frozenset({
    "Labels", "Volumes", "ExposedPorts", "Ports", "Options", "Tmpfs", "StorageOpt", "Sysctls",
    "DriverOpts", "Networks", "Annotations", "Data",
})
_PTR_FIELDS = frozenset({"Health", "Healthcheck", "IPAMConfig", "Platform", "Status", "UsageData"})


def _unnil(v: Any) -> Any:
    return None if isinstance(v, _Nil) else v

# ------------------------------------------------------------------------------------- lexing
_ACTION = re.compile(r"{{(-\s)?(.*?)(\s-)?}}", re.S)
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)+')
  | (?P<decl>:=)
  | (?P<op>[|(),=])
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""", re.X)


def _tokens(src: str) -> list[tuple[str, str, bool]]:
    """(kind, text, preceded by space) of one action's content."""
    out: list[tuple[str, str, bool]] = []
    pos, space = 0, True
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m:
            raise TemplateError(f'template parsing error: template: :1: unexpected "{src[pos]}" in command')
        kind = m.lastgroup or ""
        if kind == "ws":
            space = True
        else:
            out.append((kind, m.group(0), space))
            space = False
        pos = m.end()
    return out


# ------------------------------------------------------------------------------------- parsing
# Node kinds: ("text", s) ("out", pipe) ("if", pipe, body, else) ("range", pipe, body, else)
# ("with", pipe, body, else) ("break",) ("continue",)
# pipe = (decl_names, assign_only, [command, ...]); command = [operand, ...]
# operand: ("dot",) ("field", base_operand_or_None, names) ("var", name, names) ("lit", v)
#          ("func", name) ("pipe", pipe, names)


class _Parser:
    def __init__(self, template: str) -> None:
        self.items = self._split(template)
        self.pos = 0

    @staticmethod
    def _split(t: str) -> list[tuple[str, str]]:
        items: list[tuple[str, str]] = []
        pos = 0
        trim_next = False
        for m in _ACTION.finditer(t):
            text = t[pos:m.start()]
            if trim_next:
                text = text.lstrip()
            if m.group(1):
                text = text.rstrip()
            if text:
                items.append(("text", text))
            body = m.group(2)
            if not body.strip().startswith("/*"):
                items.append(("action", body.strip()))
            trim_next = bool(m.group(3))
            pos = m.end()
        rest = t[pos:]
        if "{{" in rest:
            raise TemplateError("template parsing error: template: :1: unclosed action")
        if trim_next:
            rest = rest.lstrip()
        if rest:
            items.append(("text", rest))
        return items

    def parse(self) -> list[tuple]:
        body, end = self._list()
        if end is not None:
            raise TemplateError(f"template parsing error: template: :1: unexpected {{{{{end}}}}}")
        return body

    def _list(self) -> tuple[list[tuple], str | None]:
        """Nodes until {{end}}/{{else…}} (returned as the terminator) or the end of input."""
        nodes: list[tuple] = []
        while self.pos < len(self.items):
            kind, val = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                nodes.append(("text", val))
                continue
            word = val.split(None, 1)[0] if val else ""
            rest = val[len(word):].strip()
            if word in ("end", "else"):
                return nodes, val
            if word in ("if", "range", "with"):
                nodes.append(self._control(word, rest))
            elif word in ("break", "continue"):
                nodes.append((word,))
            elif word in ("define", "template", "block"):
                raise TemplateError(f"template parsing error: template: :1: {{{{{word}}}}} is not supported")
            else:
                nodes.append(("out", self._pipe(_tokens(val))))
        return nodes, None

    def _control(self, word: str, rest: str) -> tuple:
        if not rest:
            raise TemplateError(f"template parsing error: template: :1: missing value for {word}")
        pipe = self._pipe(_tokens(rest), allow_two=(word == "range"))
        body, end = self._list()
        if end is None:
            raise TemplateError("template parsing error: template: :1: unexpected EOF")
        else_body: list[tuple] = []
        if end != "end":
            tail = end[len("else"):].strip()
            if tail:  # {{else if …}} / {{else with …}}: a nested control ending at the same {{end}}
                w = tail.split(None, 1)[0]
                if not ((word in ("if", "with") and w == "if") or (word == "with" and w == "with")):
                    raise TemplateError(f"template parsing error: template: :1: unexpected {{{{{end}}}}}")
                return (word, pipe, body, [self._control(w, tail[len(w):].strip())])
            else_body, end2 = self._list()
            if end2 != "end":
                raise TemplateError("template parsing error: template: :1: expected end; found "
                                    + (f"{{{{{end2}}}}}" if end2 else "EOF"))
        return (word, pipe, body, else_body)

    def _pipe(self, toks: list[tuple[str, str, bool]], allow_two: bool = False) -> tuple:
        decl: list[str] = []
        assign = False
        # $x := … / $x = … / $i, $v := …
        i = 0
        names: list[str] = []
        while i < len(toks) and toks[i][0] == "var":
            names.append(toks[i][1])
            if i + 1 < len(toks) and toks[i + 1][1] == "," and allow_two:
                i += 2
                continue
            break
        j = i + 1
        if names and j < len(toks) and (toks[j][0] == "decl" or toks[j][1] == "="):
            decl = names
            assign = toks[j][1] == "="
            toks = toks[j + 1:]
        cmds, pos = self._commands(toks, 0)
        if pos != len(toks):
            raise TemplateError(f'template parsing error: template: :1: unexpected "{toks[pos][1]}" in operand')
        if not cmds:
            raise TemplateError("template parsing error: template: :1: missing value for command")
        return (decl, assign, cmds)

    def _commands(self, toks: list[tuple[str, str, bool]], pos: int) -> tuple[list[list[tuple]], int]:
        cmds: list[list[tuple]] = []
        cur: list[tuple] = []
        while pos < len(toks):
            text = toks[pos][1]
            if text == "|":
                if not cur:
                    raise TemplateError("template parsing error: template: :1: missing command before |")
                cmds.append(cur)
                cur = []
                pos += 1
                continue
            if text == ")":
                break
            op, pos = self._operand(toks, pos)
            cur.append(op)
        if cur:
            cmds.append(cur)
        return cmds, pos

    def _operand(self, toks: list[tuple[str, str, bool]], pos: int) -> tuple[tuple, int]:
        kind, text, _sp = toks[pos]
        pos += 1
        if kind == "field":
            op: tuple = ("dot",) if text == "." else ("field", None, text[1:].split("."))
        elif kind == "var":
            op = ("var", text, [])
        elif kind == "str":
            op = ("lit", _json.loads(text.replace("\\'", "'")))
        elif kind == "raw":
            op = ("lit", text[1:-1])
        elif kind == "char":
            op = ("lit", ord(_json.loads('"' + text[1:-1] + '"')))
        elif kind == "num":
            op = ("lit", _number(text))
        elif kind == "ident":
            op = {"true": ("lit", True), "false": ("lit", False), "nil": ("lit", None)}.get(text, ("func", text))
        elif text == "(":
            sub, pos = self._commands(toks, pos)
            if pos >= len(toks) or toks[pos][1] != ")":
                raise TemplateError("template parsing error: template: :1: unclosed left paren")
            pos += 1
            op = ("pipe", ([], False, sub), [])
        else:
            raise TemplateError(f'template parsing error: template: :1: unexpected "{text}" in operand')
        # fields chained right after a variable or a parenthesised pipeline: $x.A, (…).B
        while pos < len(toks) and toks[pos][0] == "field" and not toks[pos][2] and op[0] in ("var", "pipe") \
                and toks[pos][1] != ".":
            op = (op[0], op[1], op[2] + toks[pos][1][1:].split("."))
            pos += 1
        return op, pos


def _number(text: str) -> int | float:
    t = text.lower()
    if t.lstrip("+-").startswith("0x"):
        return int(t, 16)
    if any(ch in t for ch in ".e"):
        return float(text)
    return int(text)


# ------------------------------------------------------------------------------------ printing
def gofmt(v: Any) -> str:
    """Go's ``%v`` of a value decoded from JSON."""
    if v is MISSING:
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, _Nil):
        return v.text
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e21:
            return str(int(v))
        r = repr(v)
        if "e" in r:  # Go: 1e-07, 1.5e+21
            mant, _, exp = r.partition("e")
            sign = "-" if exp.startswith("-") else "+"
            exp = exp.lstrip("+-").rjust(2, "0")
            return f"{mant}e{sign}{exp}"
        return r
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(gofmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_map_value(k, v[k])}" for k in sorted(v)) + "]"
    return str(v)


def _map_value(key: Any, v: Any) -> str:
    # ExposedPorts {"80/tcp": {}} and Volumes {"/data": {}} are Go map[string]struct{}: `{}`
    if v == {} and isinstance(key, str) and "/" in key:
        return "{}"
    return gofmt(v)


def _is_struct(d: dict) -> bool:
    """Whether a JSON object stands for a Go struct (exported CamelCase fields, kept in order) rather
    than a map (Go's encoding/json sorts map keys: labels, ports, networks …)."""
    return bool(d) and all(isinstance(k, str) and k[:1].isupper() and k.isalnum() for k in d)


def _plain(v: Any) -> Any:
    if v is MISSING or isinstance(v, _Nil):
        return None
    if isinstance(v, dict):
        keys = list(v) if _is_struct(v) else sorted(v)
        return {k: _plain(v[k]) for k in keys if not callable(v[k])}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return int(v)
    return v


class RowContext(dict):
    """One row of a `ps`/`images`/… table: docker marshals such a formatter context as a map
    (sorted keys) through json.Marshal (HTML characters escaped)."""


def go_json_escape(text: str) -> str:
    """encoding/json's HTML-safe escaping of an encoded document."""
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _json_fn(v: Any) -> str:
    if isinstance(v, RowContext):
        row = {k: _plain(v[k]) for k in sorted(v) if not callable(v[k])}
        return go_json_escape(_json.dumps(row, ensure_ascii=False, separators=(",", ":")))
    return _json.dumps(_plain(v), ensure_ascii=False, separators=(",", ":"))


def _truth(v: Any) -> bool:
    if v is MISSING or v is None or isinstance(v, _Nil):
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict)):
        return bool(v)
    return True


def _quote(s: str) -> str:
    return _json.dumps(s, ensure_ascii=False).replace("\\u007f", "\\x7f")


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*))?([a-zA-Z%])")


def _printf(fmt: str, *args: Any) -> str:
    out = []
    pos = 0
    ai = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if width == "*":
            width = str(args[ai]) if ai < len(args) else ""
            ai += 1
        if prec == "*":
            prec = str(args[ai]) if ai < len(args) else ""
            ai += 1
        if ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        a = args[ai]
        ai += 1
        spec = flags + (width or "") + (f".{prec}" if prec else "")
        if verb in "vs":
            text = gofmt(a)
            if verb == "s" and prec:
                text = text[: int(prec)]
            out.append(("%" + flags.replace("0", "") + (width or "") + "s") % text)
        elif verb == "q":
            out.append(("%" + (width or "") + "s") % _quote(gofmt(a) if not isinstance(a, str) else a))
        elif verb == "d":
            try:
                out.append(("%" + flags + (width or "") + "d") % int(a))
            except (TypeError, ValueError):
                out.append(f"%!d({type(a).__name__}={gofmt(a)})")
        elif verb in "feEgG":
            try:
                out.append(("%" + spec + verb) % float(a))
            except (TypeError, ValueError):
                out.append(f"%!{verb}({type(a).__name__}={gofmt(a)})")
        elif verb in "xX":
            if isinstance(a, str):
                h = a.encode().hex()
                out.append(h.upper() if verb == "X" else h)
            else:
                try:
                    out.append(("%" + flags + (width or "") + verb) % int(a))
                except (TypeError, ValueError):
                    out.append(f"%!{verb}({gofmt(a)})")
        elif verb == "T":
            out.append(_gotype(a))
        elif verb == "t":
            out.append(gofmt(a) if isinstance(a, bool) else f"%!t({gofmt(a)})")
        elif verb == "c":
            out.append(chr(int(a)))
        else:
            out.append(f"%!{verb}({gofmt(a)})")
    out.append(fmt[pos:])
    if ai < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{type(a).__name__}={gofmt(a)}" for a in args[ai:]) + ")")
    return "".join(out)


def _gotype(a: Any) -> str:
    if a is None or a is MISSING:
        return "<nil>"
    if isinstance(a, bool):
        return "bool"
    if isinstance(a, int):
        return "int"
    if isinstance(a, float):
        return "float64"
    if isinstance(a, str):
        return "string"
    if a is NIL_PTR:
        return "<nil>"
    if isinstance(a, (list, tuple)) or a is NIL_SLICE:
        return "[]interface {}"
    if isinstance(a, dict) or a is NIL_MAP:
        return "map[string]interface {}"
    return type(a).__name__


def _sprint(*args: Any) -> str:
    # fmt.Sprint: a space between operands when neither is a string
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += gofmt(a)
    return out


def _index(v: Any, *keys: Any) -> Any:
    if v is NIL_MAP:
        return MISSING
    v = _unnil(v)
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k, MISSING) if isinstance(k, str) else MISSING
        elif isinstance(v, (list, tuple, str)):
            if not isinstance(k, int) or isinstance(k, bool):
                raise TemplateError(f"error calling index: cannot index slice/array with type {type(k).__name__}")
            if not 0 <= k < len(v):
                raise TemplateError(f"error calling index: index out of range: {k}")
            v = v[k]
        elif v is None or v is MISSING:
            raise TemplateError("error calling index: index of untyped nil")
        else:
            raise TemplateError(f"error calling index: can't index item of type {type(v).__name__}")
    return v


def _slice(v: Any, *idx: int) -> Any:
    if len(idx) > 2:
        return v[idx[0]:idx[1]]
    return v[slice(*idx)] if idx else v


def _len(v: Any) -> int:
    if isinstance(v, _Nil):
        return 0
    if v is None or v is MISSING:
        raise TemplateError("error calling len: len of nil pointer")
    try:
        return len(v)
    except TypeError:
        raise TemplateError(f"error calling len: len of type {type(v).__name__}") from None


def _cmp(a: Any, b: Any) -> tuple[Any, Any]:
    a, b = _unnil(a), _unnil(b)
    if a is MISSING:
        a = None
    if b is MISSING:
        b = None
    if isinstance(a, bool) != isinstance(b, bool) and a is not None and b is not None:
        raise TemplateError("error calling eq: incompatible types for comparison")
    return a, b


def _eq(a: Any, *bs: Any) -> bool:
    if not bs:
        raise TemplateError("error calling eq: missing argument for comparison")
    for b in bs:
        x, y = _cmp(a, b)
        if x == y:
            return True
    return False


def _ordered(name: str, op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def f(a: Any, b: Any) -> bool:
        x, y = _cmp(a, b)
        try:
            return op(x, y)
        except TypeError:
            raise TemplateError(f"error calling {name}: incompatible types for comparison") from None

    return f


def _title(s: Any) -> str:
    return re.sub(r"(^|[^\w'])(\w)", lambda m: m.group(1) + m.group(2).upper(), gofmt(s))


def _truncate(s: Any, n: int) -> str:
    s = gofmt(s)
    return s if len(s) < n else s[:n]


def _pad(s: Any, prefix: int, suffix: int) -> str:
    return " " * prefix + gofmt(s) + " " * suffix


def _html(*a: Any) -> str:
    table = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&#39;", '"': "&#34;", "\0": "\ufffd"}
    return "".join(table.get(ch, ch) for ch in _sprint(*a))


def _js(*a: Any) -> str:
    s = _sprint(*a)
    return "".join({"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026",
                    "=": "\\u003D", "\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, ch) for ch in s)


def _urlquery(*a: Any) -> str:
    from urllib.parse import quote_plus

    return quote_plus(_sprint(*a))


FUNCS: dict[str, Callable[..., Any]] = {
    "json": _json_fn,
    "join": lambda v, sep: sep.join(gofmt(x) for x in (v if isinstance(v, (list, tuple)) else [])),
    "split": lambda s, sep: gofmt(s).split(sep) if sep else list(gofmt(s)),
    "title": _title,
    "lower": lambda s: gofmt(s).lower(),
    "upper": lambda s: gofmt(s).upper(),
    "pad": _pad,
    "truncate": _truncate,
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": _sprint,
    "printf": _printf,
    "println": lambda *a: " ".join(gofmt(x) for x in a) + "\n",
    "not": lambda v: not _truth(v),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _ordered("lt", lambda a, b: a < b),
    "le": _ordered("le", lambda a, b: a <= b),
    "gt": _ordered("gt", lambda a, b: a > b),
    "ge": _ordered("ge", lambda a, b: a >= b),
    "html": _html,
    "js": _js,
    "urlquery": _urlquery,
}


# ------------------------------------------------------------------------------------ executing
class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Exec:
    def __init__(self, root: Any, funcs: dict[str, Callable[..., Any]]) -> None:
        self.funcs = funcs
        self.vars: list[list[tuple[str, Any]]] = [[("$", root)]]
        self.out: list[str] = []

    def lookup_var(self, name: str) -> Any:
        for scope in reversed(self.vars):
            for k, v in reversed(scope):
                if k == name:
                    return v
        raise TemplateError(f"template: :1: undefined variable: {name}")

    def set_var(self, name: str, value: Any) -> None:
        for scope in reversed(self.vars):
            for i, (k, _) in enumerate(scope):
                if k == name:
                    scope[i] = (k, value)
                    return
        raise TemplateError(f"template: :1: undefined variable: {name}")

    def run(self, nodes: list[tuple], dot: Any) -> None:
        for n in nodes:
            kind = n[0]
            if kind == "text":
                self.out.append(n[1])
            elif kind == "out":
                v = self.pipe(n[1], dot)
                if not n[1][0]:
                    # a nil interface{} (JSON null) prints "<no value>"; nested in a list or map,
                    # or through printf, fmt prints it as "<nil>"
                    self.out.append("<no value>" if v is None else gofmt(v))
            elif kind == "if":
                self.vars.append([])
                try:
                    if _truth(self.pipe(n[1], dot)):
                        self.run(n[2], dot)
                    else:
                        self.run(n[3], dot)
                finally:
                    self.vars.pop()
            elif kind == "with":
                self.vars.append([])
                try:
                    v = self.pipe(n[1], dot)
                    if _truth(v):
                        self.run(n[2], v)
                    else:
                        self.run(n[3], dot)
                finally:
                    self.vars.pop()
            elif kind == "range":
                self._range(n, dot)
            elif kind == "break":
                raise _Break()
            elif kind == "continue":
                raise _Continue()

    def _range(self, n: tuple, dot: Any) -> None:
        decl, _assign, cmds = n[1]
        self.vars.append([])
        try:
            v = self.pipe(([], False, cmds), dot)
            if isinstance(v, dict):
                pairs = [(k, v[k]) for k in sorted(v)]
            elif isinstance(v, (list, tuple, str)):
                pairs = list(enumerate(v)) if not isinstance(v, str) else []
                if isinstance(v, str):
                    raise TemplateError(f"range can't iterate over {v}")
            elif isinstance(v, int) and not isinstance(v, bool):
                pairs = [(i, i) for i in range(v)]
            elif v is None or v is MISSING or isinstance(v, _Nil):
                pairs = []
            else:
                raise TemplateError(f"range can't iterate over {gofmt(v)}")
            if not pairs:
                self.run(n[3], dot)
                return
            for k, elem in pairs:
                scope = self.vars[-1]
                scope.clear()
                if len(decl) == 1:
                    scope.append((decl[0], elem))
                elif len(decl) == 2:
                    scope.append((decl[0], k))
                    scope.append((decl[1], elem))
                try:
                    self.vars.append([])
                    try:
                        self.run(n[2], elem)
                    finally:
                        self.vars.pop()
                except _Continue:
                    continue
                except _Break:
                    break
        finally:
            self.vars.pop()

    def pipe(self, pipe: tuple, dot: Any) -> Any:
        decl, assign, cmds = pipe
        v: Any = None
        first = True
        for cmd in cmds:
            v = self.command(cmd, dot, None if first else (v,))
            first = False
        if decl:
            if assign:
                self.set_var(decl[0], v)
            else:
                self.vars[-1].append((decl[-1], v))
        return v

    def command(self, cmd: list[tuple], dot: Any, piped: tuple | None) -> Any:
        head = cmd[0]
        if head[0] == "func":
            name = head[1]
            if name in ("and", "or"):
                return self._andor(name, cmd[1:], dot, piped)
            fn = self.funcs.get(name)
            if fn is None:
                raise TemplateError(f'template parsing error: template: :1: function "{name}" not defined')
            args = [self.operand(a, dot) for a in cmd[1:]]
            if piped is not None:
                args.append(piped[0])
            try:
                return fn(*args)
            except TemplateError:
                raise
            except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
                raise TemplateError(f"template: :1: error calling {name}: {exc}") from None
        v = self.operand(head, dot)
        args = [self.operand(a, dot) for a in cmd[1:]]
        if piped is not None:
            args.append(piped[0])
        if callable(v):
            return v(*args)
        if args:
            raise TemplateError(f"template: :1: can't give argument to non-function {_desc(head)}")
        return v

    def _andor(self, name: str, ops: list[tuple], dot: Any, piped: tuple | None) -> Any:
        thunks: list[Callable[[], Any]] = [lambda o=o: self.operand(o, dot) for o in ops]
        if piped is not None:
            thunks.append(lambda: piped[0])
        if not thunks:
            raise TemplateError(f"template: :1: wrong number of args for {name}: want at least 1 got 0")
        v: Any = None
        for t in thunks:
            v = t()
            if (name == "and") != _truth(v):
                return v
        return v

    def operand(self, op: tuple, dot: Any) -> Any:
        kind = op[0]
        if kind == "dot":
            return dot
        if kind == "lit":
            return op[1]
        if kind == "field":
            return _fields(dot, op[2])
        if kind == "var":
            return _fields(self.lookup_var(op[1]), op[2])
        if kind == "pipe":
            return _fields(self.pipe(op[1], dot), op[2])
        if kind == "func":
            fn = self.funcs.get(op[1])
            if fn is None:
                raise TemplateError(f'template parsing error: template: :1: function "{op[1]}" not defined')
            return fn()
        raise TemplateError(f"template: :1: unexpected operand {op!r}")


def _fields(v: Any, names: list[str]) -> Any:
    for name in names:
        if isinstance(v, dict):
            v = v.get(name, MISSING)
            if v is None:
                v = NIL_SLICE if name in _SLICE_FIELDS else NIL_MAP if name in _MAP_FIELDS else \
                    NIL_PTR if name in _PTR_FIELDS else None
            elif v is MISSING and name in _PTR_FIELDS:
                v = NIL_PTR
        elif v is MISSING:
            return MISSING
        elif v is None or isinstance(v, _Nil):
            raise TemplateError(f"template: :1: nil pointer evaluating interface {{}}.{name}")
        else:
            attr = getattr(v, name, MISSING)
            if attr is MISSING:
                raise TemplateError(f"template: :1: can't evaluate field {name} in type {type(v).__name__}")
            v = attr
    return v


def _desc(op: tuple) -> str:
    if op[0] == "field":
        return "." + ".".join(op[2])
    if op[0] == "var":
        return op[1] + "".join("." + n for n in op[2])
    return str(op[1]) if len(op) > 1 else "."


_CACHE: dict[str, list[tuple]] = {}


def parse(template: str) -> list[tuple]:
    tree = _CACHE.get(template)
    if tree is None:
        tree = _Parser(template).parse()
        if len(_CACHE) < 64:
            _CACHE[template] = tree
    return tree


def render(template: str, data: Any, funcs: dict[str, Callable[..., Any]] | None = None) -> str:
    """Execute a Go template over ``data`` (JSON-shaped dicts and lists)."""
    tree = parse(template)
    ex = _Exec(data, {**FUNCS, **(funcs or {})})
    try:
        ex.run(tree, data)
    except (_Break, _Continue):
        raise TemplateError("template: :1: {{break}}/{{continue}} outside {{range}}") from None
    return "".join(ex.out)
