"""`tug build`: build an image from a Dockerfile, with BuildKit-style plain progress.

Works directly on the data root (like the image commands). Output::

    #1 [1/3] FROM busybox
    #1 DONE 0.0s

    #2 [2/3] RUN echo hi > /x
    #2 0.041 hi
    #2 DONE 0.2s

    #3 [3/3] COPY small.txt /small.txt
    #3 CACHED

    #4 exporting to image
    #4 writing image sha256:… done
    #4 naming to docker.io/library/app:latest done
    #4 DONE 0.0s

Exit status: 0, or the failing RUN's exit code (1 for other errors).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from tugboat.cli.main import Context

USAGE = "tug build [OPTIONS] PATH | -"


def _parser() -> Any:
    import argparse

    p = argparse.ArgumentParser(prog="tug build", description="Build an image from a Dockerfile")
    p.add_argument("path", help="build context directory, a tar file, or - (tar on stdin)")
    p.add_argument("-t", "--tag", action="append", default=[], help="name:tag (repeatable)")
    p.add_argument("-f", "--file", default=None, help="Dockerfile path (default PATH/Dockerfile; - for stdin)")
    p.add_argument("--build-arg", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--target", default=None, help="stage to build")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--pull", action="store_true", help="always try to pull base images")
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE label (repeatable)")
    p.add_argument("--iidfile", default=None, help="write the image ID to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    p.add_argument("--progress", default="plain", choices=["auto", "plain", "tty", "quiet"])
    p.add_argument("--network", default="default",
                   help="network of RUN steps: default, bridge, host, none, or a network name "
                        "(default: the daemon's bridge with -H, else the host's)")
    return p


# option -> (attribute, kind): "str" takes a value, "list" a repeatable value, "bool" none
_OPTIONS: dict[str, tuple[str, str]] = {
    "-t": ("tag", "list"), "--tag": ("tag", "list"), "-f": ("file", "str"), "--file": ("file", "str"),
    "--build-arg": ("build_arg", "list"), "--target": ("target", "str"), "--no-cache": ("no_cache", "bool"),
    "--pull": ("pull", "bool"), "--label": ("label", "list"), "--iidfile": ("iidfile", "str"),
    "-q": ("quiet", "bool"), "--quiet": ("quiet", "bool"), "--progress": ("progress", "str"),
    "--network": ("network", "str"),
}


class _Options:
    """What ``_parser().parse_args`` returns, for the arguments ``_fast_parse`` understands."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.tag: list[str] = []
        self.file: str | None = None
        self.build_arg: list[str] = []
        self.target: str | None = None
        self.no_cache = False
        self.pull = False
        self.label: list[str] = []
        self.iidfile: str | None = None
        self.quiet = False
        self.progress = "plain"
        self.network = "default"


def _fast_parse(args: list[str]) -> _Options | None:
    """The usual ``tug build`` arguments without importing argparse (~6 ms of every build's
    start-up); None for anything else (help, abbreviations, errors): argparse then decides."""
    o = _Options()
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "-" or not a.startswith("-"):
            if o.path is not None:
                return None
            o.path = a
            continue
        name, eq, value = a.partition("=") if a.startswith("--") else (a[:2], "", a[2:])
        if name not in _OPTIONS:
            return None
        attr, kind = _OPTIONS[name]
        if kind == "bool":
            if eq or value:
                return None
            setattr(o, attr, True)
            continue
        if not eq and not value:
            if i >= len(args) or (args[i].startswith("-") and args[i] != "-"):
                return None
            value = args[i]
            i += 1
        if kind == "list":
            getattr(o, attr).append(value)
        else:
            setattr(o, attr, value)
    if o.path is None or o.progress not in ("auto", "plain", "tty", "quiet"):
        return None
    return o


def _kv(items: list[str], what: str, env_fallback: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not k:
            from tugboat.errors import InvalidArgument

            raise InvalidArgument(f"invalid {what}: {item!r}")
        if not eq and env_fallback:
            if k in os.environ:
                out[k] = os.environ[k]
            continue
        out[k] = v
    return out


class PlainProgress:
    """BuildKit's plain progress: one ``#N`` vertex per step."""

    def __init__(self, out: Any, multi_stage: bool) -> None:
        self.out = out
        self.multi = multi_stage
        self.vertex = 0
        self.by_step: dict[tuple[str, int], int] = {}
        self.started: dict[int, float] = {}
        self.stage_steps: dict[str, int] = {}
        self.stage_count: dict[str, int] = {}
        self.last_output_vertex: int | None = None
        self.partial: dict[int, str] = {}

    def write(self, s: str) -> None:
        self.out.write(s)
        self.out.flush()

    def __call__(self, ev: dict[str, Any]) -> None:
        t = ev.get("type")
        stage = ev.get("stage", "")
        if t == "step":
            self.vertex += 1
            v = self.vertex
            self.by_step[(stage, ev["n"])] = v
            self.started[v] = time.monotonic()
            idx = self.stage_steps.get(stage, 0) + 1
            self.stage_steps[stage] = idx
            total = ev.get("stage_total") or "?"
            label = f"[{stage} {idx}/{total}]" if self.multi else f"[{idx}/{total}]"
            self.write(f"#{v} {label} {ev['text']}\n")
        elif t == "cached":
            v = self.by_step.get((stage, ev["n"]), self.vertex)
            self.write(f"#{v} CACHED\n\n")
            self.started.pop(v, None)
        elif t == "output":
            v = self.by_step.get((stage, ev.get("n", 0)), self.vertex)
            el = time.monotonic() - self.started.get(v, time.monotonic())
            text = self.partial.pop(v, "") + ev["text"]
            lines = text.split("\n")
            self.partial[v] = lines.pop()
            for line in lines:
                self.write(f"#{v} {el:.3f} {line}\n")
        elif t == "step-done":
            v = self.by_step.get((stage, ev["n"]), self.vertex)
            rest = self.partial.pop(v, "")
            if rest:
                self.write(f"#{v} {ev.get('duration', 0):.3f} {rest}\n")
            if v in self.started:
                self.write(f"#{v} DONE {ev.get('duration', 0):.1f}s\n\n")
                self.started.pop(v, None)
        elif t == "trigger":
            self.write(f"#{self.vertex} ONBUILD {ev['text']}\n")
        elif t == "warning":
            self.write(f"WARNING: {ev['text']}\n")
        elif t == "error":
            v = self.vertex
            rest = self.partial.pop(v, "")
            if rest:
                self.write(f"#{v} {rest}\n")
            self.write(f"#{v} ERROR: {ev['text']}\n")


def _context_tar(path: str, dockerfile: str, dockerfile_text: bytes | None) -> bytes:
    """The context as an uncompressed tar, .dockerignore applied (Dockerfile and .dockerignore kept)."""
    import io
    import tarfile

    from tugboat.build.context import BuildContext

    if os.path.isdir(path):
        tmp = ""  # a directory is read in place
    else:
        import tempfile

        tmp = tempfile.gettempdir()
    ctx = BuildContext.open(path, tmp, dockerfile)
    keep = {dockerfile, ".dockerignore", dockerfile + ".dockerignore"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for rel, _st in ctx.walk("."):
            if rel == ".":
                continue
            full = os.path.join(ctx.root, rel)
            tf.add(full, arcname=rel, recursive=False)
        for name in keep:
            full = os.path.join(ctx.root, name)
            if ctx.excluded(name) and os.path.isfile(full):
                tf.add(full, arcname=name, recursive=False)
        if dockerfile_text is not None:
            ti = tarfile.TarInfo(dockerfile)
            ti.size = len(dockerfile_text)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(dockerfile_text))
    return buf.getvalue()


def _build_via_daemon(o: Any, ctx: Context, build_args: dict[str, str], labels: dict[str, str]) -> int:
    """`tug -H unix://… build`: POST /build to the daemon (the legacy builder's stream)."""
    from tugboat.cli.client import DaemonClient

    dockerfile = o.file or "Dockerfile"
    text = None
    if o.file == "-":
        text = sys.stdin.buffer.read()
        dockerfile = "Dockerfile"
    elif o.file and os.path.isabs(o.file):
        dockerfile = os.path.relpath(o.file, o.path)
    data = sys.stdin.buffer.read() if o.path == "-" else _context_tar(o.path, dockerfile, text)
    query: dict[str, Any] = {"t": list(o.tag), "dockerfile": dockerfile, "q": bool(o.quiet)}
    if build_args:
        query["buildargs"] = build_args
    if labels:
        query["labels"] = labels
    if o.no_cache:
        query["nocache"] = True
    if o.pull:
        query["pull"] = True
    if o.target:
        query["target"] = o.target
    if o.network and o.network != "default":
        query["networkmode"] = o.network
    client = DaemonClient(ctx.daemon_host)
    image_id = ""
    for msg in client.json_stream("POST", "/build", query=query, raw_body=data,
                                  headers={"Content-Type": "application/x-tar"}):
        if not isinstance(msg, dict):
            continue
        if msg.get("errorDetail"):
            sys.stderr.write(f"ERROR: {msg['errorDetail'].get('message', '')}\n")
            return int(msg["errorDetail"].get("code") or 1)
        if msg.get("aux", {}).get("ID"):
            image_id = msg["aux"]["ID"]
        elif "stream" in msg and not o.quiet:
            sys.stderr.write(msg["stream"])
    if o.iidfile and image_id:
        with open(o.iidfile, "w") as f:
            f.write(image_id)
    if o.quiet:
        sys.stdout.write(image_id + "\n")
    return 0


def build_cmd(args: list[str], ctx: Context) -> int:
    o: Any = _fast_parse(args) or _parser().parse_args(args)
    if ctx.host or os.environ.get("TUG_HOST"):
        return _build_via_daemon(o, ctx, _kv(o.build_arg, "build-arg", env_fallback=True), _kv(o.label, "label"))
    from tugboat.build.builder import Builder, BuildError
    from tugboat.build.lazyimages import LazyImages
    from tugboat.errors import TugError

    build_args = _kv(o.build_arg, "build-arg", env_fallback=True)
    labels = _kv(o.label, "label")
    quiet = o.quiet or o.progress == "quiet"
    err = sys.stderr
    builder = Builder(LazyImages(ctx.data_root))  # a cached build loads no image-store code

    context: Any = o.path
    dockerfile_text = None
    dockerfile = o.file or "Dockerfile"
    if o.path == "-":
        context = sys.stdin.buffer
    if o.file == "-":
        dockerfile_text = sys.stdin.buffer.read()
        dockerfile = "Dockerfile"
        if o.path == "-":
            from tugboat.errors import InvalidArgument

            raise InvalidArgument("invalid argument: can't use stdin for both build context and dockerfile")
    elif o.file and o.path != "-" and os.path.isdir(o.path):
        # -f relative to the current directory, as docker does
        p = os.path.abspath(o.file)
        root = os.path.realpath(o.path)
        dockerfile = os.path.relpath(os.path.realpath(p), root) if os.path.realpath(p).startswith(root + "/") else p

    progress = None if quiet else PlainProgress(err, multi_stage=True)

    def on_event(ev: dict[str, Any]) -> None:
        if progress is not None:
            progress(ev)

    # stage sizes for the [i/N] labels
    stage_sizes: dict[str, int] = {}
    multi = [False]

    def wrapped(ev: dict[str, Any]) -> None:
        if ev.get("type") == "step":
            ev["stage_total"] = stage_sizes.get(ev.get("stage", ""), "?")
        on_event(ev)

    try:
        text_for_sizes = dockerfile_text
        # the sizes only label progress lines: with -q the Dockerfile is not parsed twice
        if text_for_sizes is None and progress is not None and isinstance(context, str) and os.path.isdir(context):
            path = dockerfile if os.path.isabs(dockerfile) else os.path.join(context, dockerfile)
            try:
                with open(path, "rb") as f:
                    text_for_sizes = f.read()
            except OSError:
                text_for_sizes = None
        if text_for_sizes is not None and progress is not None:
            from tugboat.build.dockerfile import parse

            try:
                df = parse(text_for_sizes, filename=os.path.basename(dockerfile))
                for st in df.stages:
                    stage_sizes[st.name or f"stage-{st.index}"] = 1 + len(st.instructions)
                multi[0] = len(df.stages) > 1
            except TugError:
                pass
        if progress is not None:
            progress.multi = multi[0]
    except OSError:
        pass

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt()

    old = signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    try:
        image = builder.build(context, dockerfile=dockerfile, tags=o.tag, build_args=build_args, target=o.target,
                              no_cache=o.no_cache, pull=o.pull, labels=labels, progress=wrapped,
                              dockerfile_text=dockerfile_text, network_mode=o.network)
    except KeyboardInterrupt:
        err.write("\nERROR: build cancelled; nothing was tagged\n")
        return 130
    except BuildError as exc:
        if progress is not None:
            progress({"type": "error", "text": exc.message})
        err.write(f"ERROR: failed to solve: {exc.message}\n")
        return exc.code or 1
    except TugError as exc:
        if progress is not None:
            progress({"type": "error", "text": exc.message})
        err.write(f"ERROR: failed to solve: {exc.message}\n")
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)
    if o.iidfile:
        tmp = o.iidfile + ".tmp"
        with open(tmp, "w") as f:
            f.write(image.id)
        os.replace(tmp, o.iidfile)
    if quiet:
        sys.stdout.write(image.id + "\n")
        return 0
    v = (progress.vertex if progress is not None else 0) + 1
    err.write(f"#{v} exporting to image\n#{v} writing image {image.id} done\n")
    from tugboat.build.lazyimages import normalize

    for t in o.tag:
        name = normalize(t)
        if name is None:
            from tugboat.oci.reference import parse_reference

            name = str(parse_reference(t))
        err.write(f"#{v} naming to {name} done\n")
    err.write(f"#{v} DONE {time.monotonic() - t0:.1f}s\n")
    return 0


def builder_cmd(args: list[str], ctx: Context) -> int:
    """`tug builder prune` (forget the build cache) and `tug builder du` (records count)."""
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write("Usage:  tug builder prune | du\n")
        return 0
    from tugboat.build.builder import Builder
    from tugboat.images.service import ImageService

    b = Builder(ImageService(ctx.data_root))
    if args[0] == "prune":
        n = b.prune()
        b.cleanup()
        sys.stdout.write(f"Deleted build cache records: {n}\n")
        return 0
    if args[0] == "du":
        sys.stdout.write(f"Build cache records: {b.cache.count()}\n")
        return 0
    sys.stderr.write(f"tug builder: unknown command {args[0]!r}\n")
    return 1
