"""The executor: Dockerfile + context -> image, step by step, with the layer cache.

For every step of every needed stage (independent stages run in parallel threads):

- metadata instructions (ENV, LABEL, CMD …) change only the config: no layer;
- RUN prepares a writable snapshot over the parent's layers, mounts it, runs the command in a
  container (our runtime, or runc when ``tugboat.runtime.api`` is missing) on the build's network
  (the daemon's default bridge, the host's, none, a named network), streams its output, and turns
  the upper dir into a layer;
- COPY/ADD mount the same kind of snapshot and write into it directly (no container).

A new layer's upper dir is adopted as the unpacked layer of its chain ID (it already is one:
overlay whiteouts and all), so the next RUN does not unpack the blob just written. Each step's
result is a cache record (``cache.py``); the final state becomes an image through
``ImageService.create_image``, and only then are tags applied: a failed or killed build tags
nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from tugboat.build import plan as planmod
from tugboat.build.cache import BuildCache, LayerBlob, State, sha256, step_key
from tugboat.build.context import BuildContext, has_glob, resolve_in, scoped_join
from tugboat.build.copy import CopyOptions, copy_sources, parse_chmod, resolve_chown, write_file
from tugboat.build.dockerfile import Dockerfile, Instruction, Stage, is_heredoc_word, parse
from tugboat.build.lazyimages import normalize
from tugboat.build.shell import Lex
from tugboat.errors import InvalidArgument, NotFound, TugError, Unavailable
from tugboat.oci.user import lookup_user, read_colon_file
from tugboat.util.proc import pid_alive

Progress = Callable[[dict[str, Any]], None]


class BuildError(TugError):
    """A build step failed; ``code`` is what ``docker build`` exits with (a RUN's exit status)."""

    http_status = 400

    def __init__(self, message: str, code: int = 1, output: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.output = output


class BuildCancelled(TugError):
    http_status = 499

    def __init__(self) -> None:
        super().__init__("build cancelled")


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


class _ImageView:
    """What Snapshotter.prepare needs of an image, for a build state that is not an image."""

    def __init__(self, key: str, layers: list[LayerBlob]) -> None:
        self.id = key
        self.manifest = {"layers": [{"digest": lb.digest, "mediaType": lb.media_type, "size": lb.size}
                                    for lb in layers]}
        self.layers = [lb.diff_id for lb in layers]
        from tugboat.oci.digest import chain_ids

        self.chain_ids = chain_ids(self.layers)


class _OnceFd:
    """A file descriptor closed exactly once (a second close could hit another thread's file)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)


class _Future:
    """A stage's result, set by its thread (concurrent.futures costs import time we do not need)."""

    def __init__(self) -> None:
        self._ev = threading.Event()
        self._res: Any = None
        self._exc: BaseException | None = None

    def set_result(self, r: Any) -> None:
        self._res = r
        self._ev.set()

    def set_exception(self, e: BaseException) -> None:
        self._exc = e
        self._ev.set()

    def done(self) -> bool:
        return self._ev.is_set()

    def exception(self) -> BaseException | None:
        return self._exc

    def result(self) -> Any:
        self._ev.wait()
        if self._exc is not None:
            raise self._exc
        return self._res


class _Run:
    """Per-build mutable state shared by the stage threads."""

    def __init__(self, df: Dockerfile, ctx: BuildContext, tracker: planmod.ArgTracker, opts: dict[str, Any],
                 progress: Progress, lock: threading.Lock | None = None, cancel: threading.Event | None = None,
                 futures: dict[int, _Future] | None = None, step_base: dict[int, int] | None = None,
                 total: int = 0, image_cache: dict[str, Any] | None = None) -> None:
        self.df = df
        self.ctx = ctx
        self.tracker = tracker
        self.opts = opts
        self.progress = progress
        self.lock = threading.Lock() if lock is None else lock
        self.cancel = threading.Event() if cancel is None else cancel
        self.futures: dict[int, _Future] = {} if futures is None else futures
        self.step_base: dict[int, int] = {} if step_base is None else step_base
        self.total = total
        self.image_cache: dict[str, Any] = {} if image_cache is None else image_cache


class Builder:
    """``build(context, ...) -> Image`` over an ImageService, its snapshotter and a runtime."""

    def __init__(self, images: Any, snapshotter: Any = None, runtime: Any = None, network: Any = None,
                 root: str | None = None) -> None:
        self.images = images
        self._snapshotter = snapshotter
        self.runtime = runtime
        self.network = network
        self.root = os.path.abspath(root or images.root)
        self.build_dir = os.path.join(self.root, "build")
        self.cache = BuildCache(os.path.join(self.build_dir, "cache"), images.content)
        self.tmp_dir = os.path.join(self.build_dir, "tmp")
        self.run_dir = os.path.join(self.build_dir, "run")
        self._runtime_checked = False
        self._snapshots_swept = False
        self._own_network: Any = None  # a private NetworkManager when none was given
        self._net_lock = threading.Lock()

    @property
    def snapshotter(self) -> Any:
        """The snapshotter (the image service's unless given); loaded on first use, when build
        snapshots that killed builds left behind are removed too (see ``cleanup``)."""
        if self._snapshotter is None:
            self._snapshotter = self.images.snapshots
        if not self._snapshots_swept:
            self._snapshots_swept = True
            self._sweep_snapshots()
        return self._snapshotter

    # ---- public -------------------------------------------------------------------------------

    def build(
        self,
        context: str | IO[bytes],
        *,
        dockerfile: str = "Dockerfile",
        tags: list[str] | tuple[str, ...] = (),
        build_args: dict[str, str] | None = None,
        target: str | None = None,
        no_cache: bool = False,
        pull: bool = False,
        labels: dict[str, str] | None = None,
        progress: Progress | None = None,
        dockerfile_text: str | bytes | None = None,
        cancel: threading.Event | None = None,
        network_mode: str = "default",
    ) -> Any:
        progress = progress or (lambda _e: None)
        network_mode = check_network_mode(network_mode)
        self.cleanup(snapshots=False)
        self._snapshots_swept = False  # swept again at this build's first use of the snapshotter
        for t in tags:
            if normalize(t) is None:
                from tugboat.oci.reference import parse_reference

                parse_reference(t)
        ctx = BuildContext.open(context, self.tmp_dir, dockerfile,
                                digests_file=os.path.join(self.build_dir, "filedigests.json"))
        try:
            text = dockerfile_text if dockerfile_text is not None else ctx.read_dockerfile(dockerfile)
            df = parse(text, filename=os.path.basename(dockerfile) if dockerfile else "Dockerfile")
            for w in df.warnings:
                progress({"type": "warning", "text": w})
            opts = planmod.BuildOptions(build_args=dict(build_args or {}), target=target, labels=dict(labels or {}))
            tracker = planmod.ArgTracker(df, opts)
            needed = planmod.stages_to_build(df, tracker, target)
            run = _Run(df=df, ctx=ctx, tracker=tracker, progress=progress,
                       opts={"no_cache": no_cache, "pull": pull, "network": network_mode},
                       cancel=cancel or threading.Event())
            n = 0
            for i in needed:
                run.step_base[i] = n
                n += 1 + len(df.stages[i].instructions)
            run.total = n
            with self.images.lease():
                final = self._build_stages(run, needed)
                unused = tracker.unconsumed()
                if unused:
                    progress({"type": "warning",
                              "text": f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed"})
                config = planmod.clone(final.config)
                if opts.labels:
                    cfg = config.setdefault("config", {}) or {}
                    config["config"] = cfg
                    merged = dict(cfg.get("Labels") or {})
                    merged.update(opts.labels)
                    cfg["Labels"] = merged
                image = self._existing(config, final.layers, list(tags))
                if image is None:
                    image = self.images.create_image(config, final.layers, tags=list(tags))
            progress({"type": "done", "id": image.id, "tags": list(tags)})
            return image
        finally:
            ctx.close()
            self._close_own_network()

    def _existing(self, config: dict[str, Any], layers: list[LayerBlob], tags: list[str]) -> Any:
        """The image a fully cached build gives again, when it exists with every tag already on it
        (saves the image store's write and fsyncs on a cached rebuild)."""
        cfg = dict(config)
        cfg["rootfs"] = {"type": "layers", "diff_ids": [lb.diff_id for lb in layers]}
        if "created" not in cfg or "architecture" not in cfg or "os" not in cfg:
            return None
        try:
            # the bytes ImageService.create_image (msgspec) writes, for JSON without floats; a
            # difference only makes this a miss (then create_image finds or writes the image)
            data = json.dumps(cfg, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError, UnicodeEncodeError):
            return None
        image_id = "sha256:" + sha256(data).hexdigest()
        try:
            img = self.images.resolve(image_id)
            for t in tags:
                if self.images.resolve(t).id != image_id:
                    return None
        except TugError:
            return None
        return img

    # ---- stages -------------------------------------------------------------------------------

    def _build_stages(self, run: _Run, needed: list[int]) -> State:
        for i in needed:
            run.futures[i] = _Future()
        if len(needed) == 1:
            f = run.futures[needed[0]]
            try:
                f.set_result(self._build_stage(run, run.df.stages[needed[0]]))
            except BaseException as exc:
                f.set_exception(exc)
                raise
            return f.result()

        def work(i: int) -> None:
            fut = run.futures[i]
            try:
                fut.set_result(self._build_stage(run, run.df.stages[i]))
            except BaseException as exc:
                run.cancel.set()
                fut.set_exception(exc)

        threads = [threading.Thread(target=work, args=(i,), name=f"build-stage-{i}", daemon=True) for i in needed]
        for t in threads:
            t.start()
        try:
            while not all(run.futures[i].done() for i in needed):
                time.sleep(0.005)
        except BaseException:
            run.cancel.set()
            for t in threads:
                t.join()
            raise
        errors = [run.futures[i].exception() for i in needed if run.futures[i].exception() is not None]
        real = [e for e in errors if not isinstance(e, BuildCancelled)]
        if real:
            raise real[0]  # type: ignore[misc]
        if errors:
            raise errors[0]  # type: ignore[misc]
        return run.futures[needed[-1]].result()

    def _stage_result(self, run: _Run, index: int) -> State:
        fut = run.futures.get(index)
        if fut is None:
            raise InvalidArgument(f"stage {index} is not part of this build")
        while not fut.done():
            if run.cancel.is_set():
                raise BuildCancelled()
            time.sleep(0.002)
        return fut.result()

    def _stage_label(self, stage: Stage) -> str:
        return stage.name or f"stage-{stage.index}"

    def _event(self, run: _Run, stage: Stage, ev: dict[str, Any]) -> None:
        ev.setdefault("stage", self._stage_label(stage))
        with run.lock:
            run.progress(ev)

    def _base_state(self, run: _Run, stage: Stage) -> State:
        base = run.tracker.base_of(stage)
        low = base.lower()
        names = {st.name: st.index for st in run.df.stages if st.name}
        if low in names and names[low] < stage.index:
            prev = self._stage_result(run, names[low])
            return State(prev.key, planmod.clone(prev.config), list(prev.layers))
        if low == "scratch":
            cfg = planmod.empty_image_config(run.tracker.opts.platform)
            return State("scratch", cfg, [])
        img = self._image(run, base, stage)
        return self._image_state(img)

    def _image_state(self, img: Any) -> State:
        descs = img.manifest.get("layers", [])
        layers = [LayerBlob(d["digest"], d["mediaType"], diff, d["size"])
                  for d, diff in zip(descs, img.layers, strict=True)]
        return State(img.id, planmod.clone(img.config), layers)

    def _image(self, run: _Run, ref: str, stage: Stage | None) -> Any:
        with run.lock:
            cached = run.image_cache.get(ref)
        if cached is not None:
            return cached
        img = None
        if not run.opts.get("pull"):
            with contextlib.suppress(NotFound):
                img = self.images.resolve(ref)
        if img is None:
            img = self._pull(run, ref, stage)
        with run.lock:
            run.image_cache[ref] = img
        return img

    def _pull(self, run: _Run, ref: str, stage: Stage | None) -> Any:
        try:
            from tugboat.distribution.client import RegistryClient  # type: ignore[import-not-found]
        except ImportError:
            RegistryClient = None
        if RegistryClient is not None:
            try:
                client = RegistryClient()
                if stage is not None:
                    self._event(run, stage, {"type": "pull", "ref": ref})
                return client.pull(self.images, ref, progress=lambda e: None)
            except TugError as exc:
                if run.opts.get("pull"):
                    with contextlib.suppress(NotFound):
                        return self.images.resolve(ref)
                if isinstance(exc, NotFound):
                    raise NotFound(f"pull access denied for {ref}, repository does not exist or may require "
                                   f"'docker login': {exc.message}") from None
                raise type(exc)(f"{ref} is not here and could not be pulled: {exc.message}") from None
            except Exception as exc:  # the registry client may fail in many ways (network)
                if run.opts.get("pull"):
                    with contextlib.suppress(NotFound):
                        return self.images.resolve(ref)
                raise Unavailable(f"failed to pull {ref}: {exc}") from None
        return self.images.resolve(ref)

    def _build_stage(self, run: _Run, stage: Stage) -> State:
        if run.cancel.is_set():
            raise BuildCancelled()
        n = run.step_base[stage.index] + 1
        t0 = time.monotonic()
        self._event(run, stage, {"type": "step", "n": n, "total": run.total, "text": stage.original,
                                 "line": stage.line})
        state = self._base_state(run, stage)
        ss = planmod.StageState(state.config, run.tracker)
        state.config = ss.image
        self._event(run, stage, {"type": "step-done", "n": n, "id": state.key, "cached": False,
                                 "duration": time.monotonic() - t0})
        triggers = planmod.onbuild_triggers(state.config, run.df.filename, run.df.escape)
        if triggers:
            (state.config.get("config") or {}).pop("OnBuild", None)
            for trig in triggers:
                self._event(run, stage, {"type": "trigger", "text": trig.original})
                state = self._step(run, stage, ss, state, trig, n)
        for ins in stage.instructions:
            n += 1
            if run.cancel.is_set():
                raise BuildCancelled()
            t0 = time.monotonic()
            self._event(run, stage, {"type": "step", "n": n, "total": run.total, "text": ins.original,
                                     "line": ins.line})
            before = state.key
            state = self._step(run, stage, ss, state, ins, n)
            self._event(run, stage, {"type": "step-done", "n": n, "id": state.key,
                                     "cached": getattr(state, "_hit", False) and before != state.key,
                                     "duration": time.monotonic() - t0})
        return state

    # ---- steps -------------------------------------------------------------------------------

    def _finish(self, run: _Run, ss: planmod.StageState, parent: State, key: str, text: str,
                layer: LayerBlob | None) -> State:
        cfg = planmod.clone(ss.image)
        created = now_rfc3339()
        hist = list(cfg.get("history") or [])
        entry: dict[str, Any] = {"created": created, "created_by": text}
        if layer is None:
            entry["empty_layer"] = True
        hist.append(entry)
        cfg["history"] = hist
        cfg["created"] = created
        layers = list(parent.layers) + ([layer] if layer is not None else [])
        cfg["rootfs"] = {"type": "layers", "diff_ids": [lb.diff_id for lb in layers]}
        state = State(key, cfg, layers)
        self.cache.put(state)
        return state

    def _lookup(self, run: _Run, key: str) -> State | None:
        if run.opts.get("no_cache"):
            return None
        st = self.cache.get(key)
        if st is not None:
            st._hit = True  # type: ignore[attr-defined]
        return st

    def _step(self, run: _Run, stage: Stage, ss: planmod.StageState, state: State, ins: Instruction,
              n: int) -> State:
        try:
            return self._step_inner(run, stage, ss, state, ins, n)
        except (BuildError, BuildCancelled):
            raise
        except TugError as exc:
            prefix = f"{run.df.filename}:{ins.line}: "
            if exc.message.startswith(run.df.filename + ":"):
                raise
            raise type(exc)(prefix + exc.message) from None

    def _step_inner(self, run: _Run, stage: Stage, ss: planmod.StageState, state: State, ins: Instruction,
                    n: int) -> State:
        if ins.cmd in planmod.METADATA_INSTRUCTIONS:
            ss.image = state.config
            text = ss.apply(ins)
            key = step_key(state.key, text)
            hit = self._lookup(run, key)
            if hit is not None:
                self._event(run, stage, {"type": "cached", "n": n})
                ss.image = hit.config
                return hit
            new = self._finish(run, ss, state, key, text, None)
            ss.image = new.config
            return new
        ss.image = state.config
        if ins.cmd == "RUN":
            return self._run_step(run, stage, ss, state, ins, n)
        if ins.cmd in ("COPY", "ADD"):
            return self._copy_step(run, stage, ss, state, ins, n)
        raise InvalidArgument(f"unsupported instruction {ins.cmd}")  # pragma: no cover

    # ---- RUN -----------------------------------------------------------------------------------

    def _run_argv(self, ss: planmod.StageState, ins: Instruction) -> list[str]:
        if ins.json:
            return list(ins.args)
        cmdline = ins.args[0]
        if ins.heredocs:
            doc = is_heredoc_word(cmdline.strip())
            if doc is not None and len(ins.heredocs) == 1:
                data = ins.heredocs[0].data
                if data.startswith("#!"):
                    return [*ss.shell(), data]  # the shell runs it through its shebang below
                return [*ss.shell(), data]
            full = cmdline
            for d in ins.heredocs:
                full += "\n" + d.content + d.name
            return [*ss.shell(), full]
        return [*ss.shell(), cmdline]

    def _run_step(self, run: _Run, stage: Stage, ss: planmod.StageState, state: State, ins: Instruction,
                  n: int) -> State:
        argv = self._run_argv(ss, ins)
        shebang_script = None
        if (not ins.json and ins.heredocs and len(ins.heredocs) == 1
                and is_heredoc_word(ins.args[0].strip()) is not None
                and ins.heredocs[0].data.startswith("#!")):
            shebang_script = ins.heredocs[0].data
        network = ins.flags.get("network", "default")
        if network not in ("default", "host", "none"):
            raise InvalidArgument(f"unsupported network mode {network!r} for RUN (default, host, none)")
        if network == "default":
            network = run.opts.get("network") or "default"
        if network == "default":
            # dockerd's legacy builder: the default bridge. Without a daemon (no NetworkManager
            # given) the host network, as buildkitd without CNI: a private bridge would cost the
            # CLI ~0.3 s (pyroute2's import, a bridge and nft tables) per build; --network=bridge
            # asks for it.
            network = "bridge" if self.network is not None else "host"
        text = ss.run_created_by(argv)
        mounts = self._run_mounts(run, stage, ss, ins)
        extra = [f"{m['type']}:{m['target']}:{m.get('digest', '')}" for m in mounts]
        key = step_key(state.key, text, json.dumps(ins.flags, sort_keys=True), json.dumps(ss.run_env()), *extra)
        hit = self._lookup(run, key)
        if hit is not None:
            self._event(run, stage, {"type": "cached", "n": n})
            return hit
        layer = self._execute_run(run, stage, ss, state, argv, network, shebang_script, n, mounts)
        return self._finish(run, ss, state, key, text, layer)

    def _run_mounts(self, run: _Run, stage: Stage, ss: planmod.StageState, ins: Instruction) -> list[dict[str, Any]]:
        """RUN --mount=type=cache|bind|tmpfs,target=… (secret/ssh are refused)."""
        out: list[dict[str, Any]] = []
        lex = Lex(run.df.escape)
        env = ss.expansion_env()
        for spec in ins.flags.get("mount", []):
            m: dict[str, Any] = {"type": "bind"}
            for part in lex.process_word(spec, env).split(","):
                k, eq, v = part.strip().partition("=")
                k = k.lower()
                if k in ("target", "dst", "destination"):
                    m["target"] = v
                elif k in ("source", "src"):
                    m["source"] = v
                elif k in ("readonly", "ro"):
                    m["readonly"] = (not eq) or v.lower() == "true"
                elif k in ("rw", "readwrite"):
                    m["readonly"] = not ((not eq) or v.lower() == "true")
                elif k:
                    m[k] = v
            if m["type"] not in ("bind", "cache", "tmpfs"):
                raise InvalidArgument(f"RUN --mount=type={m['type']} is not supported (bind, cache, tmpfs)")
            if not m.get("target"):
                raise InvalidArgument(f"RUN --mount {spec!r}: a target is required")
            if not m["target"].startswith("/"):
                m["target"] = posixpath_join(ss.workdir(), m["target"])
            if m["type"] == "bind":
                src = m.get("source", ".")
                if m.get("from"):
                    st = self._from_state(run, stage, m["from"])
                    m["state"] = st
                    m["digest"] = st.key + ":" + src
                else:
                    pairs = run.ctx.resolve(src)
                    m["source_path"] = os.path.join(run.ctx.root, pairs[0][1]) if pairs[0][1] != "." else run.ctx.root
                    m["digest"] = run.ctx.checksum([pairs[0][1]])
            out.append(m)
        return out

    def _check_runtime(self) -> None:
        if self._runtime_checked:
            return
        if os.geteuid() != 0:
            raise Unavailable("RUN needs root (mounts and namespaces); run the build as root")
        self._runtime_checked = True

    def _execute_run(self, run: _Run, stage: Stage, ss: planmod.StageState, state: State, argv: list[str],
                     network: str, shebang_script: str | None, n: int = 0,
                     mounts: list[dict[str, Any]] | None = None) -> LayerBlob:
        self._check_runtime()
        key = f"build-{os.getpid()}-{os.urandom(6).hex()}"
        view = _ImageView(state.key, state.layers) if state.layers else None
        self.snapshotter.prepare(key, view)
        bundle = os.path.join(self.run_dir, key)
        rootfs = os.path.join(bundle, "rootfs")
        os.makedirs(rootfs, exist_ok=True)
        mounted = False
        placeholders: list[str] = []
        ok = False
        stack = contextlib.ExitStack()
        try:
            self.snapshotter.spec(key).mount(rootfs)
            mounted = True
            cfg = ss.cfg
            wd = ss.workdir()
            host_wd = scoped_join(rootfs, wd)
            if not os.path.isdir(host_wd):
                os.makedirs(host_wd, 0o755, exist_ok=True)
            user = _resolve_user(rootfs, cfg.get("User") or "")
            spec = _default_spec(argv)
            spec["root"] = {"path": rootfs, "readonly": False}
            proc = spec["process"]
            proc["env"] = ss.run_env()
            proc["cwd"] = wd
            proc["user"] = user
            proc["terminal"] = False
            spec["hostname"] = key[-12:]
            nss = spec["linux"]["namespaces"]
            net_files: list[tuple[str, str]] = []
            if network == "host":
                spec["linux"]["namespaces"] = [ns for ns in nss if ns["type"] != "network"]
                net_files = [("/etc/resolv.conf", "etc/resolv.conf"), ("/etc/hosts", "etc/hosts")]
            elif network != "none":  # the default bridge, or a network of the daemon's by name
                info = self._attach_network(stack, key, network, spec["hostname"])
                for ns in nss:
                    if ns["type"] == "network":
                        ns["path"] = info.netns_path
                for name, text in (("resolv.conf", info.resolv_conf), ("hosts", info.hosts)):
                    path = os.path.join(bundle, name)
                    with open(path, "w") as f:
                        f.write(text)
                    net_files.append((path, "etc/" + name))
            for src, dst in net_files:
                if not os.path.exists(src):
                    continue
                host_dst = scoped_join(rootfs, dst)
                if not os.path.lexists(host_dst):
                    if not os.path.isdir(os.path.dirname(host_dst)):
                        continue
                    with open(host_dst, "w"):
                        pass
                    placeholders.append(dst)
                elif not os.path.isfile(host_dst):
                    continue
                spec["mounts"].append({"destination": "/" + dst, "type": "bind", "source": src,
                                       "options": ["rbind", "ro"]})
            for m in mounts or []:
                target = m["target"]
                host_t = scoped_join(rootfs, target)
                if not os.path.lexists(host_t):
                    placeholders.append(target.strip("/"))
                if m["type"] == "tmpfs":
                    opts = ["nosuid", "nodev"] + ([f"size={m['size']}"] if m.get("size") else [])
                    spec["mounts"].append({"destination": target, "type": "tmpfs", "source": "tmpfs",
                                           "options": opts})
                    continue
                if m["type"] == "cache":
                    cache_id = m.get("id") or target
                    src = os.path.join(self.build_dir, "mounts", "cache", step_key("", cache_id)[7:23])
                    os.makedirs(src, exist_ok=True)
                    ro = bool(m.get("readonly"))
                else:
                    if "state" in m:
                        view = stack.enter_context(self._mounted_readonly(m["state"]))
                        src = scoped_join(view, m.get("source", "."))
                    else:
                        src = m["source_path"]
                    ro = True
                spec["mounts"].append({"destination": target, "type": "bind", "source": src,
                                       "options": ["rbind", "ro" if ro else "rw"]})
            if shebang_script is not None:
                script_dir = os.path.join(bundle, "pipes")
                os.makedirs(script_dir, exist_ok=True)
                script = os.path.join(script_dir, "script")
                with open(script, "w") as f:
                    f.write(shebang_script)
                os.chmod(script, 0o755)
                spec["mounts"].append({"destination": "/dev/pipes", "type": "bind", "source": script_dir,
                                       "options": ["rbind", "ro"]})
                proc["args"] = ["/dev/pipes/script"]
            with open(os.path.join(bundle, "config.json"), "w") as f:
                json.dump(spec, f)
            code, output = self._run_container(run, stage, key, bundle, n)
            if code != 0:
                raise BuildError(
                    f"The command '{' '.join(argv)}' returned a non-zero code: {code}", code=code, output=output
                )
            ok = True
        finally:
            stack.close()
            if mounted:
                _umount(rootfs)
            _shutil().rmtree(bundle, ignore_errors=True)
            if not ok:
                with contextlib.suppress(TugError, OSError):
                    self.snapshotter.remove(key)
        upper = self.snapshotter.upperdir(key)
        for p in placeholders:
            with contextlib.suppress(OSError):
                f = os.path.join(upper, p)
                if os.path.isfile(f) and not os.path.islink(f) and os.path.getsize(f) == 0:
                    os.unlink(f)
                elif os.path.isdir(f) and not os.path.islink(f) and not os.listdir(f) and not _is_opaque(f):
                    os.rmdir(f)
                # the copy-up of the parent that creating the mount point caused, when nothing else changed
                parent = os.path.dirname(f)
                if parent != upper and not os.listdir(parent) and not _is_opaque(parent):
                    os.rmdir(parent)
        return self._commit_snapshot(key, state)

    # ---- RUN networking ------------------------------------------------------------------------

    def _network_manager(self) -> Any:
        """The daemon's NetworkManager when the builder was given one; otherwise a private one
        for this build process (its own bridge ``tug-b<pid>`` and nft tables, under
        ``build/tmp/<pid>-net``), removed again when the build ends."""
        if self.network is not None:
            return self.network
        with self._net_lock:
            if self._own_network is None:
                from tugboat.network.manager import NetworkManager

                d = os.path.join(self.tmp_dir, f"{os.getpid()}-net")
                os.makedirs(d, exist_ok=True)
                self._own_network = NetworkManager(d, instance=f"b{os.getpid()}", fsync=False)
            return self._own_network

    def _attach_network(self, stack: contextlib.ExitStack, cid: str, network: str, hostname: str) -> Any:
        from tugboat.network.models import ContainerNetworkSpec

        nm = self._network_manager()
        info = nm.setup_container(cid, ContainerNetworkSpec(mode=network, hostname=hostname))
        stack.callback(nm.teardown_container, cid)
        if not info.netns_path:
            raise InvalidArgument(f"network {network!r} gives no network namespace to a RUN step")
        return info

    def _close_own_network(self) -> None:
        with self._net_lock:
            nm, self._own_network = self._own_network, None
        if nm is not None:
            _shutdown_private_network(nm, os.path.join(self.tmp_dir, f"{os.getpid()}-net"))

    def _commit_snapshot(self, key: str, state: State) -> LayerBlob:
        """The snapshot's upper dir -> a layer blob, and adopted as that layer's unpacked dir."""
        try:
            blob = self.snapshotter.diff(key)
            diff_ids = [lb.diff_id for lb in state.layers] + [blob.diff_id]
            from tugboat.oci.digest import chain_ids

            chain_id = chain_ids(diff_ids)[-1]
            with contextlib.suppress(OSError, TugError):
                self._adopt(key, chain_id, blob)
            return blob
        finally:
            with contextlib.suppress(TugError, OSError):
                self.snapshotter.remove(key)

    def _adopt(self, key: str, chain_id: str, blob: LayerBlob) -> None:
        sn = self.snapshotter
        if sn.has_layer(chain_id):
            return
        upper = sn.upperdir(key)
        os.makedirs(sn.tmp_dir, exist_ok=True)
        os.makedirs(sn.layers_dir, exist_ok=True)
        import tempfile

        tmp = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=sn.tmp_dir)
        try:
            os.rename(upper, os.path.join(tmp, "fs"))
            os.mkdir(upper, 0o755)
            size = entries = 0
            for dirpath, dirnames, filenames in os.walk(os.path.join(tmp, "fs")):
                entries += len(dirnames) + len(filenames)
                for fn in filenames:
                    with contextlib.suppress(OSError):
                        st = os.lstat(os.path.join(dirpath, fn))
                        if st.st_nlink >= 1 and (st.st_mode & 0o170000) == 0o100000:
                            size += st.st_size
            meta = {"chain_id": chain_id, "diff_id": blob.diff_id, "blob": blob.digest, "size": blob.size,
                    "unpacked_size": size, "entries": entries}
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(meta, f)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.rename(tmp, sn.layer_dir(chain_id))
            except OSError:
                _shutil().rmtree(tmp, ignore_errors=True)  # someone else adopted/unpacked it first
        except BaseException:
            _shutil().rmtree(tmp, ignore_errors=True)
            raise

    def _run_container(self, run: _Run, stage: Stage, cid: str, bundle: str, n: int = 0) -> tuple[int, str]:
        """Run the bundle's process; its output goes to progress events. No extra thread here:
        the runtime forks in-process only from a single-threaded caller."""
        rt = self.runtime
        if rt is None and os.environ.get("TUG_BUILD_RUNTIME", "tugboat") != "runc":
            with contextlib.suppress(ImportError):
                from tugboat.runtime.api import Runtime  # type: ignore[import-not-found]

                rt = self.runtime = Runtime(os.path.join(self.build_dir, "runtime"))
        tail: list[str] = []

        def emit(chunk: bytes) -> None:
            text = chunk.decode("utf-8", "replace")
            tail.append(text)
            if len(tail) > 200:
                del tail[:100]
            self._event(run, stage, {"type": "output", "text": text, "n": n})

        r, w_fd = os.pipe()
        w = _OnceFd(w_fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            mode = os.environ.get("TUG_BUILD_RUNTIME", "tugboat")
            if rt is not None and mode == "tugboat-cli":
                code = self._run_with_cli(rt, run, cid, bundle, devnull, r, w, emit)
            elif rt is not None:
                code = self._run_with_api(rt, run, cid, bundle, devnull, r, w, emit)
            else:
                code = self._run_with_runc(run, cid, bundle, devnull, r, w, emit)
        finally:
            os.close(devnull)
            w.close()
            os.close(r)
        return code, "".join(tail)

    @staticmethod
    def _pump(r: int, emit: Callable[[bytes], None], done: Callable[[], bool], cancel: threading.Event,
              on_cancel: Callable[[], None]) -> None:
        import select

        poller = select.poll()
        poller.register(r, select.POLLIN | select.POLLHUP)
        eof = False
        while not eof:
            if cancel.is_set():
                on_cancel()
                raise BuildCancelled()
            events = poller.poll(50)
            if not events:
                if done():
                    # drain what is left without blocking
                    import fcntl

                    fl = fcntl.fcntl(r, fcntl.F_GETFL)
                    fcntl.fcntl(r, fcntl.F_SETFL, fl | os.O_NONBLOCK)
                    with contextlib.suppress(BlockingIOError):
                        while chunk := os.read(r, 65536):
                            emit(chunk)
                    return
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                eof = True
            else:
                emit(chunk)

    def _run_with_api(self, rt: Any, run: _Run, cid: str, bundle: str, stdin: int, r: int, w: _OnceFd,
                      emit: Callable[[bytes], None]) -> int:
        try:
            rt.create(cid, bundle, stdin=stdin, stdout=w.fd, stderr=w.fd)
        finally:
            w.close()
        try:
            rt.start(cid)
            exited: list[int] = []

            def done() -> bool:
                if exited:
                    return True
                with contextlib.suppress(Exception):
                    exited.append(int(rt.wait(cid, timeout=0)))
                    return True
                return False

            def kill() -> None:
                with contextlib.suppress(Exception):
                    rt.kill(cid, 9, all=True)

            self._pump(r, emit, done, run.cancel, kill)
            if not exited:
                exited.append(int(rt.wait(cid)))
            return exited[0]
        except BaseException:
            with contextlib.suppress(Exception):
                rt.kill(cid, 9, all=True)
            raise
        finally:
            with contextlib.suppress(Exception):
                rt.delete(cid, force=True)

    def _run_with_cli(self, rt: Any, run: _Run, cid: str, bundle: str, stdin: int, r: int, w: _OnceFd,
                      emit: Callable[[bytes], None]) -> int:
        import subprocess
        import sys

        import tugboat

        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(tugboat.__file__)))
        cmd = [sys.executable, "-I", "-S", "-c",
               f"import sys; sys.path.insert(0, {pkg_parent!r}); from tugboat.runtime.cli import main; "
               "sys.exit(main())",
               "--root", rt.root, "--cgroup-parent", getattr(rt, "cgroup_parent", None) or "/tugboat",
               "run", "--bundle", bundle, cid]
        try:
            proc = subprocess.Popen(cmd, stdin=stdin, stdout=w.fd, stderr=w.fd, start_new_session=True)
        finally:
            w.close()

        def kill() -> None:
            with contextlib.suppress(Exception):
                rt.kill(cid, 9, all=True)

        try:
            self._pump(r, emit, lambda: proc.poll() is not None, run.cancel, kill)
            return proc.wait()
        except BaseException:
            if proc.poll() is None:
                kill()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            raise
        finally:
            with contextlib.suppress(Exception):
                rt.delete(cid, force=True)

    def _run_with_runc(self, run: _Run, cid: str, bundle: str, stdin: int, r: int, w: _OnceFd,
                       emit: Callable[[bytes], None]) -> int:
        import subprocess

        runc = _shutil().which("runc")
        if runc is None:
            raise Unavailable("no container runtime: tugboat.runtime.api is missing and runc is not installed")
        state_root = os.path.join(self.build_dir, "runc")
        os.makedirs(state_root, exist_ok=True)
        try:
            proc = subprocess.Popen([runc, "--root", state_root, "run", "--bundle", bundle, cid],
                                    stdin=stdin, stdout=w.fd, stderr=w.fd, start_new_session=True)
        finally:
            w.close()

        def kill() -> None:
            subprocess.run([runc, "--root", state_root, "kill", "--all", cid, "KILL"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

        try:
            self._pump(r, emit, lambda: proc.poll() is not None, run.cancel, kill)
            return proc.wait()
        except BaseException:
            if proc.poll() is None:
                kill()
                proc.wait()
            raise
        finally:
            subprocess.run([runc, "--root", state_root, "delete", "--force", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    # ---- COPY / ADD ----------------------------------------------------------------------------

    def _copy_step(self, run: _Run, stage: Stage, ss: planmod.StageState, state: State, ins: Instruction,
                   n: int) -> State:
        cmd = ins.cmd
        env = ss.expansion_env()
        lex = Lex(run.df.escape)
        flags = dict(ins.flags)
        for k in ("from", "chown", "chmod"):
            if k in flags:
                flags[k] = lex.process_word(flags[k], env)
        if "exclude" in flags:
            flags["exclude"] = [lex.process_word(p, env) for p in flags["exclude"]]
        if cmd == "ADD" and "from" in ins.flags:
            raise InvalidArgument("ADD does not support --from; use COPY --from")
        link = bool(flags.get("link"))
        parents = bool(flags.get("parents"))
        exclude = None
        if flags.get("exclude"):
            from tugboat.build.dockerignore import Matcher, parse_patterns

            exclude = Matcher(parse_patterns("\n".join(flags["exclude"])))
        words = list(ins.args)
        dest = lex.process_word(words[-1], env)
        heredoc_map = {h.name: h for h in ins.heredocs}
        srcs: list[tuple[str, Any]] = []  # ("path", str) | ("heredoc", (name, data)) | ("url", str)
        for w in words[:-1]:
            doc = is_heredoc_word(w) if ins.heredocs else None
            if doc is not None and doc.name in heredoc_map:
                h = heredoc_map[doc.name]
                data = h.data
                if h.expand:
                    data = Lex(run.df.escape, raw_quotes=True, raw_escapes=True).process_word(data, env)
                srcs.append(("heredoc", (h.name, data)))
                continue
            value = lex.process_word(w, env)
            if cmd == "ADD" and (value.startswith("http://") or value.startswith("https://")):
                srcs.append(("url", value))
            elif cmd == "ADD" and (value.startswith("git@") or (value.endswith(".git") and "://" in value)):
                raise InvalidArgument(f"ADD from a git repository is not supported: {value}")
            else:
                srcs.append(("path", value))
        chmod = parse_chmod(flags["chmod"]) if flags.get("chmod") else None
        from_ref = flags.get("from")
        parts: list[str] = [cmd, json.dumps(flags, sort_keys=True), dest, ss.workdir()]
        src_root = run.ctx.root
        excluded = run.ctx.excluded
        matcher = run.ctx.matcher
        from_state: State | None = None
        if from_ref:
            from_state = self._from_state(run, stage, from_ref)
            parts.append("from:" + from_state.key)
        downloads: dict[str, tuple[str, float | None]] = {}
        resolved: list[list[tuple[str, str]]] = []
        kept: list[list[str]] = []  # --parents: per source, the paths to recreate under dest
        with contextlib.ExitStack() as stack:
            if from_state is not None:
                src_root = stack.enter_context(self._mounted_readonly(from_state))
                excluded = lambda _p: False  # noqa: E731
                matcher = None
            for kind, val in srcs:
                if kind == "heredoc":
                    name, data = val
                    parts.append(f"heredoc:{name}:{step_key('', data)}")
                    resolved.append([])
                    kept.append([])
                elif kind == "url":
                    path, mtime, digest = self._download(val, flags.get("checksum"))
                    stack.callback(_unlink_quiet, path)
                    downloads[val] = (path, mtime)
                    parts.append(f"url:{val}:{digest}")
                    resolved.append([])
                    kept.append([])
                else:
                    if from_state is not None:
                        pairs = resolve_in(src_root, val, excluded, what="source image")
                    else:
                        pairs = run.ctx.resolve(val)
                    if exclude is not None and has_glob(val):  # a glob's matches are excluded by name
                        pairs = [(nm, real) for nm, real in pairs
                                 if not exclude.excluded(os.path.basename(nm.rstrip("/")) or nm)]
                        if not pairs:
                            raise NotFound(f"no source files were specified (pattern {val!r} matched nothing "
                                           "but excluded files)")
                    reals = [real for _n, real in pairs]
                    if from_state is not None:
                        digest = self._tree_digest(src_root, reals, exclude)
                    else:
                        digest = run.ctx.checksum(reals, exclude)
                    parts.append(f"src:{val}:{digest}")
                    resolved.append(pairs)
                    kept.append(_kept_paths(val, pairs) if parents else [])
            text = f"{cmd} " + " ".join(
                (f"--{k}" if v is True else f"--{k}={str(v).lower()}" if isinstance(v, bool)
                 else " ".join(f"--{k}={x}" for x in v) if isinstance(v, list) else f"--{k}={v}")
                for k, v in flags.items()
            )
            text = (text + " " + " ".join(words)).replace("  ", " ")
            key = step_key(state.key, *parts)
            hit = self._lookup(run, key)
            if hit is not None:
                self._event(run, stage, {"type": "cached", "n": n})
                return hit
            link_key = step_key("link", *parts) if link else ""
            linked = self._lookup(run, link_key) if link else None
            if linked is not None and len(linked.layers) == 1:
                # --link: the layer does not depend on the parent; the one made over another
                # parent is used again as it is
                self._event(run, stage, {"type": "cached", "n": n, "link": True})
                return self._finish(run, ss, state, key, text, linked.layers[0])
            self._check_runtime()
            layer = self._execute_copy(state, ss, srcs, resolved, downloads, dest, flags, chmod, src_root,
                                       excluded, matcher, cmd, len(words) - 1,
                                       keep=kept if parents else None, exclude=exclude, link=link)
            if link:
                self.cache.put(State(link_key, {}, [layer]))
        return self._finish(run, ss, state, key, text, layer)

    def _tree_digest(self, root: str, rels: list[str], exclude: Any = None) -> str:
        import hashlib

        from tugboat.build.context import tree_entry_digest, walk_tree
        from tugboat.build.copy import _Descend, excluding

        h = hashlib.sha256()
        for rel in rels:
            descend = _Descend(None, exclude, rel) if exclude else None
            for path, st in walk_tree(root, rel, excluding(lambda _p: False, exclude, rel), descend):
                h.update(tree_entry_digest(root, path, st).encode())
        return "sha256:" + h.hexdigest()

    def _download(self, url: str, checksum: str | None) -> tuple[str, float | None, str]:
        import email.utils
        import hashlib
        import tempfile
        import urllib.request

        os.makedirs(self.tmp_dir, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"{os.getpid()}-dl-", dir=self.tmp_dir)
        h = hashlib.sha256()
        mtime: float | None = None
        try:
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as resp:
                lm = resp.headers.get("Last-Modified")
                if lm:
                    with contextlib.suppress(TypeError, ValueError):
                        mtime = email.utils.parsedate_to_datetime(lm).timestamp()
                while chunk := resp.read(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
        except OSError as exc:
            _unlink_quiet(path)
            raise Unavailable(f"failed to download {url}: {exc}") from None
        digest = "sha256:" + h.hexdigest()
        if checksum and checksum != digest:
            _unlink_quiet(path)
            raise InvalidArgument(f"digest mismatch for {url}: expected {checksum}, got {digest}")
        return path, mtime, digest

    @contextlib.contextmanager
    def _mounted_readonly(self, state: State) -> Any:
        self._check_runtime()
        if not state.layers:
            import tempfile

            d = tempfile.mkdtemp(prefix=f"{os.getpid()}-empty-", dir=self._tmp())
            try:
                yield d
            finally:
                _shutil().rmtree(d, ignore_errors=True)
            return
        key = f"build-{os.getpid()}-{os.urandom(6).hex()}"
        view = _ImageView(state.key, state.layers)
        self.snapshotter.prepare(key, view, readonly=True)
        target = os.path.join(self.run_dir, key)
        os.makedirs(target, exist_ok=True)
        mounted = False
        try:
            self.snapshotter.spec(key).mount(target)
            mounted = True
            yield target
        finally:
            if mounted:
                _umount(target)
            with contextlib.suppress(OSError):
                os.rmdir(target)
            with contextlib.suppress(TugError, OSError):
                self.snapshotter.remove(key)

    def _tmp(self) -> str:
        os.makedirs(self.tmp_dir, exist_ok=True)
        return self.tmp_dir

    def _from_state(self, run: _Run, stage: Stage, ref: str) -> State:
        low = ref.lower()
        for st in run.df.stages:
            if st.name == low and st.index < stage.index:
                return self._stage_result(run, st.index)
        if ref.isdigit() and int(ref) < stage.index:
            return self._stage_result(run, int(ref))
        if ref.isdigit():
            raise InvalidArgument(f"invalid from flag value {ref}: refers to current or future build stage")
        return self._image_state(self._image(run, ref, stage))

    def _execute_copy(self, state: State, ss: planmod.StageState, srcs: list[tuple[str, Any]],
                      resolved: list[list[tuple[str, str]]], downloads: dict[str, tuple[str, float | None]],
                      dest: str, flags: dict[str, Any], chmod: int | None, src_root: str, excluded: Any,
                      matcher: Any, cmd: str, n_args: int, keep: list[list[str]] | None = None,
                      exclude: Any = None, link: bool = False) -> LayerBlob:
        """Copy into a snapshot over the parent's layers, or (``link``) over nothing: a --link
        layer is made apart from the parent (no symlink of the parent is followed, a file or
        directory of the parent at the destination is not looked at) and stacked on it."""
        key = f"build-{os.getpid()}-{os.urandom(6).hex()}"
        view = _ImageView(state.key, state.layers) if state.layers and not link else None
        self.snapshotter.prepare(key, view)
        rootfs = os.path.join(self.run_dir, key)
        os.makedirs(rootfs, exist_ok=True)
        mounted = False
        ok = False
        try:
            self.snapshotter.spec(key).mount(rootfs)
            mounted = True
            chown = None
            if flags.get("chown"):
                if link and not all(p.isdigit() for p in flags["chown"].split(":") if p):
                    with self._mounted_readonly(state) as parent_root:  # names: the parent's /etc/passwd
                        chown = resolve_chown(parent_root, flags["chown"])
                else:
                    chown = resolve_chown(rootfs, flags["chown"])
            opts = CopyOptions(chown=chown, chmod=chmod, add=cmd == "ADD")
            wd = ss.workdir()
            if n_args > 1 and not (dest.endswith("/") or dest in (".", "./")):
                raise InvalidArgument(
                    f"When using {cmd} with more than one source file, the destination must be a directory "
                    "and end with a /"
                )
            for i, ((kind, val), pairs) in enumerate(zip(srcs, resolved, strict=True)):
                if kind == "heredoc":
                    name, data = val
                    write_file(rootfs, dest, wd, data.encode(), name, opts, mode=0o644)
                elif kind == "url":
                    path, mtime = downloads[val]
                    from urllib.parse import urlparse

                    name = os.path.basename(urlparse(val).path.rstrip("/"))
                    if not name and (dest.endswith("/") or dest in (".", "./")):
                        raise InvalidArgument(f"cannot determine filename from url: {val}")
                    with open(path, "rb") as f:
                        data_b = f.read()
                    write_file(rootfs, dest, wd, data_b, name or "download", opts, mode=0o600, mtime=mtime)
                else:
                    copy_sources(rootfs, src_root, pairs, dest, wd, opts, source_args=n_args, excluded=excluded,
                                 matcher=matcher, cmd=cmd, keep=keep[i] if keep is not None else None,
                                 exclude=exclude)
            ok = True
        finally:
            if mounted:
                _umount(rootfs)
            with contextlib.suppress(OSError):
                os.rmdir(rootfs)
            if not ok:
                with contextlib.suppress(TugError, OSError):
                    self.snapshotter.remove(key)
        return self._commit_snapshot(key, state)

    # ---- housekeeping -------------------------------------------------------------------------

    def cleanup(self, snapshots: bool = True) -> int:
        """Remove what killed builds left: mounts and bundles under build/run, build-* snapshots.
        ``snapshots=False`` (the start of a build) leaves the snapshots to the first use of the
        snapshotter, so that a fully cached build never loads it."""
        n = 0
        rt_root = os.path.join(self.build_dir, "runtime")
        if os.path.isdir(rt_root) and any(_dead_owner(c) for c in os.listdir(rt_root)):
            with contextlib.suppress(ImportError):
                from tugboat.runtime.api import Runtime  # type: ignore[import-not-found]

                rt = Runtime(rt_root)
                for cid in os.listdir(rt_root):
                    if _dead_owner(cid):
                        with contextlib.suppress(Exception):
                            rt.kill(cid, 9, all=True)
                        with contextlib.suppress(Exception):
                            rt.delete(cid, force=True)
                        n += 1
        for d in (self.run_dir,):
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(d):
                    if not _dead_owner(name):
                        continue
                    path = os.path.join(d, name)
                    for mp in (os.path.join(path, "rootfs"), path):
                        _umount(mp, quiet=True)
                    _shutil().rmtree(path, ignore_errors=True)
                    n += 1
        if snapshots:
            n += self._sweep_snapshots()
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.tmp_dir):
                pid = name.split("-", 1)[0]
                if pid.isdigit() and not pid_alive(int(pid)):
                    p = os.path.join(self.tmp_dir, name)
                    if name == f"{pid}-net":  # a killed build's private network: bridge, nft tables
                        with contextlib.suppress(Exception):
                            from tugboat.network.manager import NetworkManager

                            _shutdown_private_network(NetworkManager(p, instance=f"b{pid}", fsync=False), p)
                    if os.path.isdir(p):
                        _shutil().rmtree(p, ignore_errors=True)
                    else:
                        _unlink_quiet(p)
                    n += 1
        return n

    def _sweep_snapshots(self) -> int:
        n = 0
        self._snapshots_swept = True
        with contextlib.suppress(Exception):
            sn = self.snapshotter
            for key in sn.list():
                if key.startswith("build-") and _dead_owner(key):
                    with contextlib.suppress(TugError, OSError):
                        sn.remove(key)
                        n += 1
        return n

    def prune(self) -> int:
        """Forget every cache record and remembered file digest (``tug builder prune``)."""
        _unlink_quiet(os.path.join(self.build_dir, "filedigests.json"))
        return self.cache.clear()


NETWORK_MODES = ("default", "bridge", "host", "none")


def _kept_paths(src: str, pairs: list[tuple[str, str]]) -> list[str]:
    """COPY --parents: the path each match keeps under the destination: the path as named,
    or its part after a ``/./`` pivot in the source."""
    from tugboat.build.dockerignore import clean

    i = src.find("/./")
    prefix = clean(src[:i]).lstrip("/") if i != -1 else "."
    prefix = clean("/" + prefix).lstrip("/") or "."
    out = []
    for named, _real in pairs:
        if prefix != "." and (named == prefix or named.startswith(prefix + "/")):
            out.append(named[len(prefix):].lstrip("/") or ".")
        else:
            out.append(named)
    return out


def check_network_mode(mode: str | None) -> str:
    """``docker build --network``: default (the default bridge), bridge, host, none, or the
    name of a network of the daemon's; ``container:…`` is refused."""
    mode = (mode or "default").strip()
    if mode.startswith("container:"):
        raise InvalidArgument(f"network mode {mode!r} is not supported for builds "
                              "(default, bridge, host, none or a network name)")
    return mode


def _shutdown_private_network(nm: Any, path: str) -> None:
    with contextlib.suppress(Exception):
        nm.shutdown(remove_all=True)
    _shutil().rmtree(path, ignore_errors=True)


def posixpath_join(a: str, b: str) -> str:
    import posixpath

    return posixpath.normpath(posixpath.join(a, b))


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _dead_owner(name: str) -> bool:
    parts = name.split("-")
    if len(parts) >= 2 and parts[0] == "build" and parts[1].isdigit():
        return not pid_alive(int(parts[1]))
    return False


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _umount(path: str, quiet: bool = False) -> None:
    from tugboat.snapshots.mount import MNT_DETACH, umount

    try:
        umount(path)
    except OSError:
        try:
            umount(path, MNT_DETACH)
        except OSError:
            if not quiet:
                pass


_SPEC_TEMPLATE: dict[str, Any] | None = None


def _default_spec(argv: list[str]) -> dict[str, Any]:
    """The runtime's default spec (computed once: the seccomp profile resolution is not free)."""
    global _SPEC_TEMPLATE
    if _SPEC_TEMPLATE is None:
        from tugboat.runtime.spec import default_spec

        _SPEC_TEMPLATE = default_spec(["sh"])
    spec = planmod.clone(_SPEC_TEMPLATE)
    spec["process"]["args"] = list(argv)
    return spec


def _resolve_user(rootfs: str, user: str) -> dict[str, Any]:
    """OCI ``process.user`` for the image's USER (name, uid, name:group, uid:gid)."""
    if not user:
        return {"uid": 0, "gid": 0}
    passwd = read_colon_file(scoped_join(rootfs, "etc/passwd"))
    groups = read_colon_file(scoped_join(rootfs, "etc/group"))
    return lookup_user(passwd, groups, user)


def _shutil() -> Any:
    """``shutil`` on first use: it imports bz2 and lzma, start-up time a cached build does not need."""
    import shutil

    return shutil
