# ruff: noqa: F811
"""COPY/ADD --link, COPY --parents and --exclude (Dockerfile 1.7+ syntax) on the real kernel."""

from __future__ import annotations

import os

import pytest
from build_fixtures import BuildEnv, busybox_root, env  # noqa: F401

from tugboat.errors import NotFound


def _files(env: BuildEnv, img, paths: list[str]) -> dict[str, bytes | None]:
    return {p: env.read(img, p) for p in paths}


def test_copy_parents_keeps_the_source_paths(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox
        COPY --parents ./x/a.txt y/b.txt /p/
        COPY --parents src/./pkg/*.py /q
        COPY --parents dir /r/
        WORKDIR /w
        COPY --parents x/a.txt .
    """, {"x/a.txt": "a", "y/b.txt": "b", "src/pkg/m.py": "m", "src/pkg/n.py": "n", "src/pkg/skip.txt": "s",
          "dir/sub/c.txt": "c"})
    img = env.build(ctx)
    assert _files(env, img, ["/p/x/a.txt", "/p/y/b.txt", "/q/pkg/m.py", "/q/pkg/n.py", "/q/pkg/skip.txt",
                             "/q/src/pkg/m.py", "/r/dir/sub/c.txt", "/r/sub/c.txt", "/w/x/a.txt"]) == {
        "/p/x/a.txt": b"a", "/p/y/b.txt": b"b", "/q/pkg/m.py": b"m", "/q/pkg/n.py": b"n",
        "/q/pkg/skip.txt": None, "/q/src/pkg/m.py": None, "/r/dir/sub/c.txt": b"c", "/r/sub/c.txt": None,
        "/w/x/a.txt": b"a"}
    # without --parents the same sources are flattened
    img2 = env.build(env.context(tmp_path, "FROM busybox\nCOPY ./x/a.txt y/b.txt /p/\n"))
    assert env.read(img2, "/p/a.txt") == b"a" and env.read(img2, "/p/x/a.txt") is None


def test_exclude_filters_relative_to_the_source(env: BuildEnv, tmp_path) -> None:
    files = {"dir1/a.1": "1", "dir1/a.2": "2", "dir1/dir2/a.1": "3", "dir1/dir2/a.2": "4",
             "home.txt": "h", "homer.md": "m", "homedir/x.txt": "x", "homedir/y.md": "y"}
    ctx = env.context(tmp_path, """
        FROM busybox
        COPY --exclude=*.1 dir1 /one/
        COPY --exclude=**/*.1 dir1 /all/
        COPY --exclude=*.txt hom* /mydir/
        COPY --exclude=dir2 --exclude=a.2 dir1 /two/
    """, files)
    img = env.build(ctx)
    got = _files(env, img, ["/one/a.1", "/one/a.2", "/one/dir2/a.1", "/one/dir2/a.2", "/all/a.1",
                            "/all/dir2/a.1", "/all/dir2/a.2", "/mydir/home.txt", "/mydir/homer.md",
                            "/mydir/x.txt", "/mydir/y.md", "/two/a.1", "/two/a.2", "/two/dir2/a.2"])
    assert got == {"/one/a.1": None, "/one/a.2": b"2", "/one/dir2/a.1": b"3", "/one/dir2/a.2": b"4",
                   "/all/a.1": None, "/all/dir2/a.1": None, "/all/dir2/a.2": b"4",
                   "/mydir/home.txt": None, "/mydir/homer.md": b"m", "/mydir/x.txt": None, "/mydir/y.md": b"y",
                   "/two/a.1": b"1", "/two/a.2": None, "/two/dir2/a.2": None}
    # an excluded file does not take part in the cache key; an included one does
    env.build(ctx)
    assert env.cached_steps() == [2, 3, 4, 5]
    with open(os.path.join(ctx, "dir1", "a.1"), "w") as f:
        f.write("changed")
    env.build(ctx)
    assert env.cached_steps() == [2, 3, 4]  # only /two/ copies a.1
    with pytest.raises(NotFound, match="matched nothing"):
        env.build(env.context(tmp_path, "FROM busybox\nCOPY --exclude=*.txt home.t?t /x/\n"))


def test_exclude_in_copy_from_a_stage(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox AS build
        RUN mkdir -p /out/logs && echo bin > /out/app && echo log > /out/logs/x.log && echo k > /out/keep.log
        FROM busybox
        COPY --from=build --exclude=logs /out /dist/
    """)
    img = env.build(ctx)
    assert env.read(img, "/dist/app") == b"bin\n" and env.read(img, "/dist/keep.log") == b"k\n"
    assert env.read(img, "/dist/logs/x.log") is None


def test_copy_link_makes_a_layer_apart_from_the_parent(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, """
        FROM busybox
        ARG BASE=1
        RUN echo $BASE > /base && mkdir -p /real && ln -s /real /linked && mkdir /dirhere && echo keep > /dirhere/k
        COPY --link f.txt /linked/f.txt
        COPY --link --chown=nobody:nogroup --chmod=640 f.txt /dirhere/
        COPY --link f.txt /app/sub/
        RUN ls -l /linked /dirhere/f.txt /dirhere/k /app/sub/f.txt
    """, {"f.txt": "f\n"})
    img = env.build(ctx, no_cache=True)
    # the link layer was made over nothing: /linked became a real directory in it (not /real)
    assert env.read(img, "/linked/f.txt") == b"f\n" and env.read(img, "/real/f.txt") is None
    assert env.read(img, "/dirhere/k") == b"keep\n" and env.read(img, "/dirhere/f.txt") == b"f\n"
    st = os.lstat(env.lookup(img, "/dirhere/f.txt"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o640)
    assert env.read(img, "/app/sub/f.txt") == b"f\n"
    link_layer = env.images.snapshots.layer_fs(img.chain_ids[-4])
    assert sorted(os.listdir(link_layer)) == ["linked"]
    # a changed parent: the --link layers are used again as they are, the rest is rebuilt
    layers_before = img.layers[-4:-1]
    img2 = env.build(ctx, build_args={"BASE": "2"})
    assert env.read(img2, "/base") == b"2\n"
    linked = [e["n"] for e in env.events if e["type"] == "cached" and e.get("link")]
    assert linked == [4, 5, 6]
    assert img2.layers[-4:-1] == layers_before and img2.layers[-5] != img.layers[-5]
    assert "/linked/f.txt" in env.output() or "linked" in env.output()


def test_add_link_and_exclude(env: BuildEnv, tmp_path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("t/one.txt", b"1"), ("t/two.md", b"2")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    ctx = env.context(tmp_path, """
        FROM busybox
        ADD --link arch.tar /unpacked/
        ADD --exclude=*.log tree /tree/
    """, {"arch.tar": buf.getvalue(), "tree/keep.txt": "k", "tree/drop.log": "d"})
    img = env.build(ctx)
    assert env.read(img, "/unpacked/t/one.txt") == b"1" and env.read(img, "/unpacked/t/two.md") == b"2"
    assert env.read(img, "/tree/keep.txt") == b"k" and env.read(img, "/tree/drop.log") is None
    assert sorted(os.listdir(env.images.snapshots.layer_fs(img.chain_ids[-2]))) == ["unpacked"]


def test_history_shows_the_flags(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, "FROM busybox\nCOPY --link --exclude=*.log --exclude=x d /d/\n"
                      "COPY --link=false d /e/\n", {"d/a": "a"})
    img = env.build(ctx)
    hist = [h["created_by"] for h in img.config["history"][-2:]]
    assert hist == ["COPY --link --exclude=*.log --exclude=x d /d/", "COPY --link=false d /e/"]


def test_exclude_with_an_exception(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, "FROM busybox\nCOPY --exclude=logs --exclude=!logs/keep.log src /d/\n",
                      {"src/app": "a", "src/logs/x.log": "x", "src/logs/keep.log": "k"})
    img = env.build(ctx)
    assert env.read(img, "/d/app") == b"a" and env.read(img, "/d/logs/keep.log") == b"k"
    assert env.read(img, "/d/logs/x.log") is None
    with open(os.path.join(ctx, "src", "logs", "x.log"), "w") as f:
        f.write("changed, still excluded")
    env.build(ctx)
    assert env.cached_steps() == [2]
    with open(os.path.join(ctx, "src", "logs", "keep.log"), "w") as f:
        f.write("changed, re-included")
    env.build(ctx)
    assert env.cached_steps() == []
