"""The build plan: which stages to build, ARG/ENV scoping, and each instruction's effect on the image config.

Everything here is pure logic over a parsed :class:`~tugboat.build.dockerfile.Dockerfile`; the
executor (``builder.py``) calls it for every step, and unit tests drive it without root.

Scoping follows Docker:
- ARGs before the first FROM (global/"meta" ARGs) are visible only in FROM lines, unless a stage
  re-declares them (``ARG NAME`` without a value takes the global value).
- In a stage, ``--build-arg`` values override ARG defaults; an undeclared build-arg is not
  visible, except the predefined proxy ARGs (HTTP_PROXY …), which RUN sees but which never enter
  the image history nor the cache key; the platform ARGs (TARGETPLATFORM, BUILDARCH …) are set
  automatically in the global scope and in a stage when declared there.
- ENV always wins over an ARG of the same name. ARG values are in RUN's environment but not in
  the image config.
"""

from __future__ import annotations

import os
import posixpath
import re
import signal as _signal
from typing import Any

from tugboat.build.dockerfile import Dockerfile, Instruction, Stage
from tugboat.build.shell import Lex
from tugboat.errors import InvalidArgument

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ["/bin/sh", "-c"]
PROXY_ARGS = frozenset({
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
})


def clone(obj: Any) -> Any:
    """A deep copy of JSON-like data (dicts, lists, tuples, scalars); ``copy.deepcopy`` for anything else.

    Faster than ``copy.deepcopy`` for image configs, and keeps the ``copy`` module (and ``weakref``)
    out of the start-up of a cached ``tug build``."""
    t = type(obj)
    if t is dict:
        return {k: clone(v) for k, v in obj.items()}
    if t is list:
        return [clone(v) for v in obj]
    if t is str or t is int or t is bool or t is float or obj is None:
        return obj
    if t is tuple:
        return tuple(clone(v) for v in obj)
    import copy

    return copy.deepcopy(obj)


def platform_args(os_name: str = "linux", arch: str | None = None, variant: str = "") -> dict[str, str]:
    """TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT and the BUILD* equivalents."""
    if arch is None:
        m = os.uname().machine  # what platform.machine() returns, without importing platform
        arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(m, m)
    plat = f"{os_name}/{arch}" + (f"/{variant}" if variant else "")
    out = {}
    for prefix in ("TARGET", "BUILD"):
        out[prefix + "PLATFORM"] = plat
        out[prefix + "OS"] = os_name
        out[prefix + "ARCH"] = arch
        out[prefix + "VARIANT"] = variant
    return out


class BuildOptions:
    def __init__(self, build_args: dict[str, str] | None = None, target: str | None = None,
                 labels: dict[str, str] | None = None, platform: dict[str, str] | None = None) -> None:
        self.build_args: dict[str, str] = {} if build_args is None else build_args
        self.target = target
        self.labels: dict[str, str] = {} if labels is None else labels
        self.platform: dict[str, str] = platform_args() if platform is None else platform


class ArgTracker:
    """The build's ARG values: global ones, and which --build-args were consumed."""

    def __init__(self, df: Dockerfile, opts: BuildOptions) -> None:
        self.df = df
        self.opts = opts
        self.consumed: set[str] = set()
        self.lex = Lex(df.escape)
        self.meta: dict[str, str] = dict(opts.platform)
        self.meta_declared: set[str] = set()
        for ins in df.meta_args:
            for name, default in ins.pairs:
                name = self.lex.process_word(name, self.meta)
                self.meta_declared.add(name)
                if name in opts.build_args:
                    self.meta[name] = opts.build_args[name]
                    self.consumed.add(name)
                elif default is not None:
                    try:
                        self.meta[name] = self.lex.process_word(default, self.meta)
                    except InvalidArgument as exc:
                        raise InvalidArgument(f"{df.filename}:{ins.line}: {exc.message}") from None

    def base_of(self, stage: Stage) -> str:
        """The FROM image with global ARGs substituted."""
        try:
            base = self.lex.process_word(stage.base, self.meta)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{self.df.filename}:{stage.line}: {exc.message}") from None
        if not base:
            raise InvalidArgument(
                f"{self.df.filename}:{stage.line}: base name ({stage.base}) should not be blank"
            )
        return base

    def platform_of(self, stage: Stage) -> str | None:
        if stage.platform is None:
            return None
        return self.lex.process_word(stage.platform, self.meta)

    def unconsumed(self) -> list[str]:
        return sorted(k for k in self.opts.build_args if k not in self.consumed and k not in PROXY_ARGS)


def stage_dependencies(df: Dockerfile, args: ArgTracker) -> dict[int, set[int]]:
    """Stage index -> indices of the stages it needs (FROM <stage>, COPY --from, RUN --mount from=)."""
    deps: dict[int, set[int]] = {}
    names = {st.name: st.index for st in df.stages if st.name}
    for st in df.stages:
        need: set[int] = set()
        base = args.base_of(st).lower()
        if base in names and names[base] < st.index:
            need.add(names[base])
        for ins in st.instructions:
            refs: list[str] = []
            if ins.cmd == "COPY" and "from" in ins.flags:
                refs.append(ins.flags["from"])
            if ins.cmd == "RUN":
                for m in ins.flags.get("mount", []):
                    for part in m.split(","):
                        k, _, v = part.partition("=")
                        if k.strip() == "from":
                            refs.append(v.strip())
            for ref in refs:
                try:
                    ref = args.lex.process_word(ref, args.meta)
                except InvalidArgument:
                    pass
                low = ref.lower()
                if low in names and names[low] != st.index:
                    if names[low] > st.index:
                        raise InvalidArgument(
                            f"{df.filename}:{ins.line}: stage {ref!r} is defined after the stage using it"
                        )
                    need.add(names[low])
                elif ref.isdigit():
                    idx = int(ref)
                    if idx >= st.index:
                        raise InvalidArgument(
                            f"{df.filename}:{ins.line}: invalid from flag value {ref}: refers to current "
                            "or future build stage"
                        )
                    need.add(idx)
        deps[st.index] = need
    return deps


def stages_to_build(df: Dockerfile, args: ArgTracker, target: str | None) -> list[int]:
    """The target stage (default: the last) and every stage it needs, in Dockerfile order."""
    if target:
        st = None
        for s in df.stages:
            if s.name == target.lower():
                st = s
        if st is None:
            raise InvalidArgument(f"failed to reach build target {target} in Dockerfile")
        goal = st.index
    else:
        goal = len(df.stages) - 1
    deps = stage_dependencies(df, args)
    need: set[int] = set()
    todo = [goal]
    while todo:
        i = todo.pop()
        if i in need:
            continue
        need.add(i)
        todo.extend(deps[i])
    return sorted(need)


def empty_image_config(platform: dict[str, str]) -> dict[str, Any]:
    """The config of ``FROM scratch`` (BuildKit gives it the default PATH)."""
    return {
        "architecture": platform.get("TARGETARCH", "amd64"),
        "os": platform.get("TARGETOS", "linux"),
        "config": {"Env": [f"PATH={DEFAULT_PATH}"]},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }


def _env_dict(env_list: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env_list or []:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def _set_env(cfg: dict[str, Any], key: str, value: str) -> None:
    env = list(cfg.get("Env") or [])
    for i, item in enumerate(env):
        if item.partition("=")[0] == key:
            env[i] = f"{key}={value}"
            break
    else:
        env.append(f"{key}={value}")
    cfg["Env"] = env


_PORT_RE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_exposed_ports(spec: str) -> list[str]:
    """``80``, ``80/tcp``, ``8000-8002/udp`` -> ``["80/tcp"]`` … (Docker's nat.ParsePortSpecs)."""
    port, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid proto: {proto}")
    if ":" in port:
        raise InvalidArgument(f"invalid containerPort: {spec}")
    m = _PORT_RE.match(port)
    if m is None:
        raise InvalidArgument(f"invalid containerPort: {port}")
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else start
    if end < start or end > 65535:
        raise InvalidArgument(f"invalid containerPort: {port}")
    return [f"{p}/{proto}" for p in range(start, end + 1)]


def validate_signal(sig: str) -> str:
    s = sig.upper()
    if s.isdigit():
        if int(s) <= 0 or int(s) > 64:
            raise InvalidArgument(f"Invalid signal: {sig}")
        return sig
    name = s if s.startswith("SIG") else "SIG" + s
    if name.startswith("SIGRTMIN") or name.startswith("SIGRTMAX") or hasattr(_signal.Signals, name):
        return sig
    try:
        _signal.Signals[name]
    except KeyError:
        raise InvalidArgument(f"Invalid signal: {sig}") from None
    return sig


class StageState:
    """One stage's config while it is being built: the OCI image config plus ARG scope."""

    def __init__(self, image: dict[str, Any], tracker: ArgTracker) -> None:
        self.image = clone(image)
        self.image.setdefault("config", {})
        if self.image["config"] is None:
            self.image["config"] = {}
        self.image.setdefault("history", [])
        self.image.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        self.tracker = tracker
        self.args: dict[str, str] = {}
        self.cmd_set = False
        self.lex = tracker.lex

    # ---- scopes ---------------------------------------------------------------------------

    @property
    def cfg(self) -> dict[str, Any]:
        return self.image["config"]

    @property
    def env(self) -> dict[str, str]:
        return _env_dict(self.cfg.get("Env"))

    def expansion_env(self) -> dict[str, str]:
        """What ``$VAR`` sees in this stage: ARG values overridden by ENV."""
        out = dict(self.args)
        out.update(self.env)
        return out

    def expand(self, word: str) -> str:
        return self.lex.process_word(word, self.expansion_env())

    def shell(self) -> list[str]:
        return list(self.cfg.get("Shell") or DEFAULT_SHELL)

    def workdir(self) -> str:
        return self.cfg.get("WorkingDir") or "/"

    def run_args(self) -> dict[str, str]:
        """ARG values (and proxy build-args) RUN sees, minus those an ENV overrides."""
        env = self.env
        out = {k: v for k, v in self.args.items() if k not in env}
        for k in PROXY_ARGS:
            if k in self.tracker.opts.build_args and k not in env and k not in out:
                out[k] = self.tracker.opts.build_args[k]
        return out

    def run_env(self) -> list[str]:
        """RUN's environment: config Env, then ARGs; PATH defaulted."""
        env = list(self.cfg.get("Env") or [])
        names = {e.partition("=")[0] for e in env}
        for k, v in self.run_args().items():
            env.append(f"{k}={v}")
        if "PATH" not in names:
            env.append(f"PATH={DEFAULT_PATH}")
        return env

    def cache_args(self) -> list[str]:
        """ARG values that enter RUN's cache key and history (not the proxy ones)."""
        env = self.env
        return [f"{k}={v}" for k, v in sorted(self.args.items()) if k not in env]

    # ---- commands ---------------------------------------------------------------------------

    def command(self, ins: Instruction) -> list[str]:
        """The argv of RUN/CMD/ENTRYPOINT: JSON form as is, shell form wrapped in SHELL."""
        if ins.json:
            return list(ins.args)
        return [*self.shell(), *ins.args]

    def run_created_by(self, argv: list[str]) -> str:
        args = self.cache_args()
        prefix = f"|{len(args)} " + " ".join(args) + " " if args else ""
        return "RUN " + prefix + " ".join(argv)

    # ---- metadata instructions --------------------------------------------------------------

    def apply(self, ins: Instruction) -> str:
        """Apply a metadata instruction to the config; returns the canonical text (history, cache)."""
        try:
            return self._apply(ins)
        except InvalidArgument as exc:
            if exc.message.startswith(self.tracker.df.filename + ":"):
                raise
            raise InvalidArgument(f"{self.tracker.df.filename}:{ins.line}: {exc.message}") from None

    def _apply(self, ins: Instruction) -> str:
        cmd = ins.cmd
        cfg = self.cfg
        if cmd == "ENV":
            env = self.expansion_env()
            pairs = [(self.lex.process_word(k, env), self.lex.process_word(v or "", env)) for k, v in ins.pairs]
            for k, v in pairs:
                if not k:
                    raise InvalidArgument("ENV names can not be blank")
                _set_env(cfg, k, v)
            return "ENV " + " ".join(f"{k}={v}" for k, v in pairs)
        if cmd == "ARG":
            env = self.expansion_env()
            parts = []
            for name, default in ins.pairs:
                name = self.lex.process_word(name, env)
                value: str | None
                build_args = self.tracker.opts.build_args
                if name in build_args:
                    value = build_args[name]
                    self.tracker.consumed.add(name)
                elif default is not None:
                    value = self.lex.process_word(default, env)
                elif name in self.tracker.meta_declared and name in self.tracker.meta:
                    value = self.tracker.meta[name]
                elif name in self.tracker.opts.platform:
                    value = self.tracker.opts.platform[name]
                else:
                    value = None
                if value is not None:
                    self.args[name] = value
                    parts.append(f"{name}={value}")
                else:
                    self.args.pop(name, None)
                    parts.append(name)
            return "ARG " + " ".join(parts)
        if cmd == "LABEL":
            env = self.expansion_env()
            labels = dict(cfg.get("Labels") or {})
            pairs = [(self.lex.process_word(k, env), self.lex.process_word(v or "", env)) for k, v in ins.pairs]
            for k, v in pairs:
                if not k:
                    raise InvalidArgument("LABEL names can not be blank")
                labels[k] = v
            cfg["Labels"] = labels
            return "LABEL " + " ".join(f"{k}={v}" for k, v in pairs)
        if cmd == "WORKDIR":
            path = self.expand(ins.args[0])
            if not path:
                raise InvalidArgument("WORKDIR requires exactly one argument")
            if not path.startswith("/"):
                path = posixpath.join(self.workdir(), path)
            path = posixpath.normpath(path)
            if path.startswith("//"):
                path = "/" + path.lstrip("/")
            cfg["WorkingDir"] = path
            return f"WORKDIR {path}"
        if cmd == "USER":
            user = self.expand(ins.args[0])
            if not user:
                raise InvalidArgument("USER requires exactly one argument")
            cfg["User"] = user
            return f"USER {user}"
        if cmd == "EXPOSE":
            env = self.expansion_env()
            ports = dict(cfg.get("ExposedPorts") or {})
            words: list[str] = []
            for w in ins.args:
                words.extend(self.lex.process_words(w, env))
            for w in words:
                for p in parse_exposed_ports(w):
                    ports[p] = {}
            cfg["ExposedPorts"] = ports
            return "EXPOSE " + " ".join(sorted(ports))
        if cmd == "VOLUME":
            env = self.expansion_env()
            vols = dict(cfg.get("Volumes") or {})
            added = []
            for w in ins.args:
                v = self.lex.process_word(w, env)
                if not v.strip():
                    raise InvalidArgument("VOLUME specified can not be an empty string")
                vols[v] = {}
                added.append(v)
            cfg["Volumes"] = vols
            return "VOLUME " + str(added)
        if cmd == "STOPSIGNAL":
            sig = self.expand(ins.args[0]).strip()
            validate_signal(sig)
            cfg["StopSignal"] = sig
            return f"STOPSIGNAL {sig}"
        if cmd == "HEALTHCHECK":
            assert ins.health is not None
            cfg["Healthcheck"] = dict(ins.health)
            return "HEALTHCHECK " + str(ins.health)
        if cmd == "SHELL":
            cfg["Shell"] = list(ins.args)
            return "SHELL " + str(ins.args)
        if cmd == "CMD":
            argv = self.command(ins)
            cfg["Cmd"] = argv
            self.cmd_set = True
            return "CMD " + str(argv)
        if cmd == "ENTRYPOINT":
            argv = self.command(ins) if (ins.json or ins.args) else []
            cfg["Entrypoint"] = argv or None
            if not self.cmd_set:
                cfg["Cmd"] = None
            return "ENTRYPOINT " + str(argv)
        if cmd == "ONBUILD":
            triggers = list(cfg.get("OnBuild") or [])
            triggers.append(ins.trigger_text)
            cfg["OnBuild"] = triggers
            return "ONBUILD " + ins.trigger_text
        if cmd == "MAINTAINER":
            self.image["author"] = ins.args[0].strip()
            return "MAINTAINER " + ins.args[0].strip()
        raise InvalidArgument(f"{cmd} is not a metadata instruction")  # pragma: no cover


METADATA_INSTRUCTIONS = frozenset({
    "ENV", "ARG", "LABEL", "WORKDIR", "USER", "EXPOSE", "VOLUME", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
    "CMD", "ENTRYPOINT", "ONBUILD", "MAINTAINER",
})


def onbuild_triggers(image_config: dict[str, Any], filename: str, escape: str = "\\") -> list[Instruction]:
    """The ONBUILD triggers of a base image, parsed as instructions (run right after FROM)."""
    from tugboat.build.dockerfile import parse

    triggers = list((image_config.get("config") or {}).get("OnBuild") or [])
    out: list[Instruction] = []
    for i, text in enumerate(triggers):
        prefix = f"# escape={escape}\n" if escape != "\\" else ""
        df = parse(prefix + "FROM scratch\n" + text + "\n", filename=f"{filename} (ONBUILD trigger {i + 1})")
        for ins in df.stages[0].instructions:
            if ins.cmd in ("ONBUILD", "FROM", "MAINTAINER"):
                raise InvalidArgument(f"{ins.cmd} isn't allowed as an ONBUILD trigger")
            out.append(ins)
    return out
