# ruff: noqa: F811
"""The builder end to end on the real kernel: RUN in containers, COPY/ADD, cache, stages, errors."""

from __future__ import annotations

import gzip
import http.server
import io
import os
import tarfile
import threading

import pytest
from build_fixtures import BuildEnv, busybox_root, env  # noqa: F401

from tugboat.build.builder import BuildError
from tugboat.errors import InvalidArgument, NotFound


def test_run_and_copy_make_layers_and_config(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox
        ENV GREETING=hello
        WORKDIR /app
        RUN echo "$GREETING from $(pwd)" > /x && echo printed
        COPY small.txt .
        EXPOSE 8080
        CMD ["cat", "/x"]
    """, {"small.txt": "small\n"})
    img = env.build(ctx, tags=["bt-basic:latest"])
    assert "bt-basic:latest" in img.repo_tags
    assert env.read(img, "/x") == b"hello from /app\n"
    assert env.read(img, "/app/small.txt") == b"small\n"
    assert "printed\n" in env.output()
    base = env.images.resolve("busybox")
    assert len(img.layers) == len(base.layers) + 2  # RUN and COPY; ENV/WORKDIR/EXPOSE/CMD add none
    cfg = img.config["config"]
    assert cfg["Cmd"] == ["cat", "/x"]
    assert cfg["WorkingDir"] == "/app"
    assert "GREETING=hello" in cfg["Env"]
    assert cfg["ExposedPorts"] == {"8080/tcp": {}}
    hist = img.config["history"]
    assert [h.get("empty_layer", False) for h in hist[-6:]] == [True, True, False, False, True, True]
    assert hist[-4]["created_by"] == 'RUN /bin/sh -c echo "$GREETING from $(pwd)" > /x && echo printed'
    # only the changed files are in the RUN layer
    run_layer = env.images.snapshots.layer_fs(img.chain_ids[-2])
    assert sorted(os.listdir(run_layer)) == ["app", "x"]


def test_cache_hits_and_invalidation_from_the_changed_copy(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox
        RUN echo one > /one
        COPY a.txt /a.txt
        RUN cat /a.txt > /copy-of-a
    """, {"a.txt": "v1\n"})
    first = env.build(ctx)
    second = env.build(ctx)
    assert second.id == first.id
    assert env.cached_steps() == [2, 3, 4]
    with open(os.path.join(ctx, "a.txt"), "w") as f:
        f.write("v2\n")
    third = env.build(ctx)
    assert env.cached_steps() == [2]
    assert env.read(third, "/copy-of-a") == b"v2\n"
    env.build(ctx, no_cache=True)
    assert env.cached_steps() == []


def test_failing_run_shows_output_tags_nothing_and_does_not_poison_the_cache(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox
        RUN echo out; echo err >&2; test -e /flag || exit 3
    """)
    with pytest.raises(BuildError) as ei:
        env.build(ctx, tags=["bt-fail:latest"])
    assert ei.value.code == 3
    assert str(ei.value) == "The command '/bin/sh -c echo out; echo err >&2; test -e /flag || exit 3' returned a non-zero code: 3"
    assert "out\n" in env.output() and "err\n" in env.output()
    with pytest.raises(NotFound):
        env.images.resolve("bt-fail:latest")
    with pytest.raises(BuildError):  # the failure was not cached
        env.build(ctx, tags=["bt-fail:latest"])
    assert not [s for s in env.images.snapshots.list() if s.startswith("build-")]


def test_multi_stage_copy_from_and_target(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox AS builder
        RUN mkdir -p /out && echo built > /out/artifact && ln -s artifact /out/link
        FROM busybox AS other
        RUN echo other > /other
        FROM scratch
        COPY --from=builder /out/ /dist/
        COPY --from=busybox /bin/busybox /bin/busybox
    """)
    img = env.build(ctx, tags=["bt-multi:latest"])
    assert env.read(img, "/dist/artifact") == b"built\n"
    assert os.readlink(env.lookup(img, "/dist/link")) == "artifact"
    assert env.read(img, "/bin/busybox")[:4] == b"\x7fELF"
    assert len(img.layers) == 2
    steps = [e["text"] for e in env.events if e["type"] == "step"]
    assert "RUN echo other > /other" not in steps  # not needed by the target
    other = env.build(ctx, target="other")
    assert env.read(other, "/other") == b"other\n"
    with pytest.raises(InvalidArgument, match="failed to reach build target nope"):
        env.build(ctx, target="nope")


def test_copy_rules_chown_chmod_dirs_and_globs(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox
        COPY dir /d1
        COPY dir/ /d2/
        COPY --chown=1000:1001 --chmod=0750 f.txt /owned
        COPY *.md /docs/
        COPY f.txt g.txt /many/
        RUN stat -c '%u:%g %a' /owned > /owned.stat && ls /d1 > /d1.ls && ls /docs > /docs.ls
    """, {"dir/sub/inner.txt": "inner\n", "dir/top.txt": "top\n", "f.txt": "f\n", "g.txt": "g\n",
          "a.md": "a", "b.md": "b"})
    img = env.build(ctx)
    assert env.read(img, "/d1/top.txt") == b"top\n"
    assert env.read(img, "/d1/sub/inner.txt") == b"inner\n"
    assert env.read(img, "/d2/sub/inner.txt") == b"inner\n"
    assert env.read(img, "/owned.stat") == b"1000:1001 750\n"
    assert env.read(img, "/d1.ls") == b"sub\ntop.txt\n"
    assert env.read(img, "/docs.ls") == b"a.md\nb.md\n"
    assert env.read(img, "/many/g.txt") == b"g\n"


def test_copy_errors(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, "FROM busybox\nCOPY f.txt g.txt /notadir\n", {"f.txt": "f", "g.txt": "g"})
    with pytest.raises(InvalidArgument, match="the destination must be a directory and end with a /"):
        env.build(ctx)
    ctx = env.context(tmp_path, "FROM busybox\nCOPY missing.txt /x\n")
    with pytest.raises(NotFound, match=r"^Dockerfile:2: file not found in build context"):
        env.build(ctx)
    ctx = env.context(tmp_path, "FROM busybox\nCOPY ../outside /x\n")
    with pytest.raises(InvalidArgument, match="forbidden path outside the build context"):
        env.build(ctx)
    ctx = env.context(tmp_path, "FROM busybox\nCOPY --chown=nobody-here f.txt /x\n", {"f.txt": "f"})
    with pytest.raises(InvalidArgument, match="no such user: nobody-here"):
        env.build(ctx)


def test_dockerignore(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox
        COPY . /ctx/
    """, {".dockerignore": "secret.txt\nlogs\n!logs/keep.log\n", "secret.txt": "s", "ok.txt": "ok",
          "logs/a.log": "a", "logs/keep.log": "keep"})
    img = env.build(ctx)
    assert env.read(img, "/ctx/ok.txt") == b"ok"
    assert env.read(img, "/ctx/secret.txt") is None
    assert env.read(img, "/ctx/logs/a.log") is None
    assert env.read(img, "/ctx/logs/keep.log") == b"keep"
    ctx2 = env.context(tmp_path, "FROM busybox\nCOPY secret.txt /s\n")
    with pytest.raises(NotFound, match=r"excluded by \.dockerignore"):
        env.build(ctx2)


def test_add_extracts_local_tars_and_downloads_urls(env: BuildEnv, tmp_path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"from the tar\n"
        ti = tarfile.TarInfo("pkg/file.txt")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    served = b"downloaded\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(served)))
            self.send_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
            self.end_headers()
            self.wfile.write(served)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/files/remote.txt"
        ctx = env.context(tmp_path, f"""
            FROM busybox
            ADD archive.tar.gz /opt/
            ADD plain.txt /plain.txt
            ADD {url} /dl/
            RUN stat -c '%a %Y' /dl/remote.txt > /dl.stat
        """, {"archive.tar.gz": gzip.compress(buf.getvalue()), "plain.txt": "plain"})
        img = env.build(ctx)
    finally:
        srv.shutdown()
        srv.server_close()
    assert env.read(img, "/opt/pkg/file.txt") == b"from the tar\n"
    assert env.read(img, "/plain.txt") == b"plain"
    assert env.read(img, "/dl/remote.txt") == served
    assert env.read(img, "/dl.stat") == b"600 1445412480\n"


def test_heredocs(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox
        ARG NAME=world
        RUN <<EOF
        echo "hello $NAME" > /greeting
        echo second >> /greeting
        EOF
        COPY <<CONF <<'RAW' /etc/app/
        name=$NAME
        CONF
        literal=$NAME
        RAW
        RUN <<EOT sh
        echo shell-fed > /fed
        EOT
    """)
    img = env.build(ctx)
    assert env.read(img, "/greeting") == b"hello world\nsecond\n"
    assert env.read(img, "/etc/app/CONF") == b"name=world\n"
    assert env.read(img, "/etc/app/RAW") == b"literal=$NAME\n"
    assert env.read(img, "/fed") == b"shell-fed\n"


def test_args_env_user_workdir_in_run(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox
        ARG VERSION=1.0
        ARG UNSET
        ENV MODE=prod
        WORKDIR /srv/app
        RUN echo "$VERSION $MODE ${UNSET:-none} $(pwd)" > /info
        USER nobody
        RUN id -u > /tmp/uid
    """)
    img = env.build(ctx, build_args={"VERSION": "2.5", "UNUSED": "x"})
    assert env.read(img, "/info") == b"2.5 prod none /srv/app\n"
    assert env.read(img, "/tmp/uid") == b"65534\n"
    assert "VERSION=2.5" not in img.config["config"]["Env"]
    assert any("[UNUSED] were not consumed" in e.get("text", "") for e in env.events if e["type"] == "warning")


def test_onbuild_triggers_run_in_the_child(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox
        ONBUILD RUN echo triggered > /trig
    """)
    env.build(ctx, tags=["bt-onbuild-base:latest"])
    ctx2 = env.context(tmp_path / "child", "FROM bt-onbuild-base\nRUN cat /trig > /seen\n")
    child = env.build(ctx2)
    assert env.read(child, "/seen") == b"triggered\n"
    assert not child.config["config"].get("OnBuild")


def test_labels_and_build_labels(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, 'FROM busybox\nLABEL a=1 "b c"="d e"\nSTOPSIGNAL SIGQUIT\n'
                                'HEALTHCHECK --interval=5s CMD true\nVOLUME /data\n')
    img = env.build(ctx, labels={"from-cli": "yes"})
    cfg = img.config["config"]
    assert cfg["Labels"]["a"] == "1" and cfg["Labels"]["b c"] == "d e" and cfg["Labels"]["from-cli"] == "yes"
    assert cfg["StopSignal"] == "SIGQUIT"
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000}
    assert cfg["Volumes"] == {"/data": {}}


def test_parse_errors_point_at_the_line(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, "FROM busybox\nRUN true\nFORM x\n")
    with pytest.raises(InvalidArgument, match=r"^Dockerfile:3: unknown instruction: FORM"):
        env.build(ctx)


def test_independent_stages_build_in_parallel(env: BuildEnv, tmp_path) -> None:
    # each stage waits (up to 30 s) for the other one's mark in a shared cache mount: this only
    # succeeds when both RUN steps run at the same time
    wait = 'i=0; while [ ! -e /rv/{o} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; test -e /rv/{o}'
    ctx = env.context(tmp_path, f"""
        FROM busybox AS a
        ARG RV
        RUN --mount=type=cache,id=$RV,target=/rv touch /rv/a; {wait.format(o="b")}; echo a > /a
        FROM busybox AS b
        ARG RV
        RUN --mount=type=cache,id=$RV,target=/rv touch /rv/b; {wait.format(o="a")}; echo b > /b
        FROM busybox
        COPY --from=a /a /a
        COPY --from=b /b /b
    """)
    img = env.build(ctx, no_cache=True, build_args={"RV": os.urandom(8).hex()})
    assert env.read(img, "/a") == b"a\n" and env.read(img, "/b") == b"b\n"


def test_run_mounts_cache_bind_tmpfs(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox
        RUN --mount=type=cache,target=/var/cache/app echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /count
        RUN --mount=type=bind,source=data,target=/mnt/data cat /mnt/data/in.txt > /copied
        RUN --mount=type=tmpfs,target=/scratch echo tmp > /scratch/x && cat /scratch/x > /tmp-ok
    """, {"data/in.txt": "bound\n"})
    img = env.build(ctx)
    assert env.read(img, "/copied") == b"bound\n"
    assert env.read(img, "/tmp-ok") == b"tmp\n"
    assert env.lookup(img, "/mnt/data") is None  # mount points are not left in the layers
    assert env.lookup(img, "/scratch") is None
    first = int(env.read(img, "/count"))
    img2 = env.build(ctx, no_cache=True)
    assert int(env.read(img2, "/count")) == first + 1  # the cache mount persisted between builds


def test_dest_paths_resolve_inside_the_image(env: BuildEnv, tmp_path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("abs")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tf.addfile(link)
        data = b"inside\n"
        ti = tarfile.TarInfo("abs/from-tar")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    ctx = env.context(tmp_path, """
        FROM busybox
        RUN ln -s dangling-target /dangling && ln -s /nowhere/sub /abslink
        COPY f.txt /dangling/sub/
        COPY f.txt /abslink/../cleaned.txt
        ADD links.tar /unpacked/
    """, {"f.txt": "f\n", "links.tar": buf.getvalue(), ".dockerignore": "**\n!f.txt\n!links.tar\n"})
    img = env.build(ctx)
    assert env.read(img, "/dangling-target/sub/f.txt") == b"f\n"  # a dangling link's target is created
    assert env.read(img, "/cleaned.txt") == b"f\n"  # /abslink/.. is cleaned lexically, as Docker does
    assert env.read(img, "/etc/from-tar") == b"inside\n"  # the archive's /etc link points into the image
    assert not os.path.exists("/etc/from-tar")


def test_dockerignore_allowlist_keeps_parent_directories(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, "FROM busybox\nCOPY folder1 /f1\n",
                      {".dockerignore": "**\n!folder1/file1\n", "folder1/file1": "1", "folder1/file2": "2"})
    img = env.build(ctx)
    assert env.read(img, "/f1/file1") == b"1"
    assert env.read(img, "/f1/file2") is None
