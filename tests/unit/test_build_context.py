"""Build context: source resolution (globs, escapes, symlinks, .dockerignore) and content digests."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from tugboat.build.cache import BuildCache, State, step_key
from tugboat.build.context import BuildContext, go_match, scoped_join
from tugboat.errors import InvalidArgument, NotFound
from tugboat.oci.image import LayerBlob


def make(tmp_path, files: dict[str, str], ignore: str | None = None) -> BuildContext:
    for name, content in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    if ignore is not None:
        (tmp_path / ".dockerignore").write_text(ignore)
    return BuildContext.open(str(tmp_path), str(tmp_path / ".tmp"))


def test_go_match() -> None:
    assert go_match("*.txt", "a.txt")
    assert not go_match("*.txt", "a.txt.bak")
    assert go_match("[a-c]?", "bz")
    assert go_match("[^a-c]x", "dx")
    assert go_match("\\*", "*")
    with pytest.raises(InvalidArgument):
        go_match("[abc", "a")


def test_resolve_plain_glob_and_dot(tmp_path) -> None:
    ctx = make(tmp_path, {"a.txt": "a", "b.txt": "b", "dir/c.txt": "c", "dir/sub/d.md": "d"})
    assert ctx.resolve("a.txt") == [("a.txt", "a.txt")]
    assert ctx.resolve("./dir/../a.txt") == [("a.txt", "a.txt")]
    assert ctx.resolve("*.txt") == [("a.txt", "a.txt"), ("b.txt", "b.txt")]
    assert ctx.resolve("dir/*/*.md") == [("dir/sub/d.md", "dir/sub/d.md")]
    assert ctx.resolve(".") == [(".", ".")]
    assert ctx.resolve("/a.txt") == [("a.txt", "a.txt")]


def test_resolve_errors(tmp_path) -> None:
    ctx = make(tmp_path, {"a.txt": "a"})
    with pytest.raises(InvalidArgument, match=r"forbidden path outside the build context: \.\./x"):
        ctx.resolve("../x")
    with pytest.raises(NotFound, match="file not found in build context"):
        ctx.resolve("missing")
    with pytest.raises(NotFound, match="no source files were specified"):
        ctx.resolve("*.nope")


def test_symlinks_stay_inside_the_context(tmp_path) -> None:
    ctx = make(tmp_path, {"real/file.txt": "x"})
    os.symlink("real", tmp_path / "link")
    os.symlink("/etc", tmp_path / "abs")
    assert ctx.resolve("link/file.txt") == [("link/file.txt", "real/file.txt")]
    assert scoped_join(str(tmp_path), "abs/passwd") == os.path.join(ctx.root, "etc/passwd")
    os.symlink("../../..", tmp_path / "up")
    assert scoped_join(str(tmp_path), "up/x") == os.path.join(ctx.root, "x")


def test_dockerignore_hides_sources_and_changes_no_digest(tmp_path) -> None:
    ctx = make(tmp_path, {"app/main.py": "print()", "app/cache.pyc": "x", "secret": "s"}, "*.pyc\n**/*.pyc\nsecret\n")
    with pytest.raises(NotFound, match=r"excluded by \.dockerignore"):
        ctx.resolve("secret")
    walked = [p for p, _ in ctx.walk("app")]
    assert walked == ["app", "app/main.py"]
    d1 = ctx.checksum(["app"])
    (tmp_path / "app" / "cache.pyc").write_text("changed")
    assert ctx.checksum(["app"]) == d1
    (tmp_path / "app" / "main.py").write_text("print(1)")
    assert BuildContext.open(str(tmp_path), str(tmp_path / ".tmp")).checksum(["app"]) != d1


def test_checksum_ignores_times_but_not_modes(tmp_path) -> None:
    ctx = make(tmp_path, {"f": "data"})
    d1 = ctx.checksum(["f"])
    os.utime(tmp_path / "f", (1, 1))
    assert BuildContext.open(str(tmp_path), str(tmp_path / ".tmp")).checksum(["f"]) == d1
    os.chmod(tmp_path / "f", 0o755)
    assert BuildContext.open(str(tmp_path), str(tmp_path / ".tmp")).checksum(["f"]) != d1


def test_tar_context_is_extracted_and_removed(tmp_path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("Dockerfile", b"FROM scratch\n"), ("x/y.txt", b"y")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o640
            tf.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    ctx = BuildContext.open(buf, str(tmp_path / "tmp"))
    assert ctx.read_dockerfile("Dockerfile") == b"FROM scratch\n"
    assert oct(os.stat(os.path.join(ctx.root, "x/y.txt")).st_mode & 0o777) == "0o640"
    root = ctx.root
    ctx.close()
    assert not os.path.exists(root)


def test_hostile_tar_context_is_refused(tmp_path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("../escape")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"x"))
    buf.seek(0)
    with pytest.raises((InvalidArgument, tarfile.TarError)):
        BuildContext.open(buf, str(tmp_path / "tmp"))
    assert not (tmp_path / "escape").exists()


def test_missing_dockerfile(tmp_path) -> None:
    ctx = make(tmp_path, {"a": "a"})
    with pytest.raises(NotFound, match="Cannot locate specified Dockerfile: Dockerfile"):
        ctx.read_dockerfile("Dockerfile")


def test_cache_records_round_trip_atomically(tmp_path) -> None:
    cache = BuildCache(str(tmp_path / "cache"))
    key = step_key("sha256:base", "RUN x")
    assert key != step_key("sha256:base", "RUN y") and key.startswith("sha256:")
    assert cache.get(key) is None
    st = State(key, {"config": {"Env": ["A=1"]}}, [LayerBlob("sha256:b", "m", "sha256:d", 3)])
    cache.put(st)
    got = cache.get(key)
    assert got is not None and got.config == st.config and got.layers == st.layers
    assert [n for n in os.listdir(tmp_path / "cache") if ".tmp" in n] == []
    assert cache.count() == 1 and cache.clear() == 1 and cache.get(key) is None


def test_big_file_digests_are_remembered_across_builds(tmp_path) -> None:
    import json

    from tugboat.build.context import BuildContext, FileDigests

    ctx_dir = tmp_path / "ctx"
    ctx_dir.mkdir()
    big = ctx_dir / "big.bin"
    big.write_bytes(b"a" * FileDigests.MIN_SIZE)
    (ctx_dir / "small.txt").write_text("s")
    store = str(tmp_path / "build" / "filedigests.json")
    ctx = BuildContext.open(str(ctx_dir), str(tmp_path / "tmp"), digests_file=store)
    first = ctx.checksum(["."])
    ctx.close()
    with open(store) as f:
        saved = json.load(f)
    assert len(saved) == 1 and next(iter(saved)).startswith(str(big) + "\0")  # only the big file
    # a second build reads the remembered digest instead of the file (a forged one shows it)
    forged = {k: "0" * 64 for k in saved}
    with open(store, "w") as f:
        json.dump(forged, f)
    ctx2 = BuildContext.open(str(ctx_dir), str(tmp_path / "tmp"), digests_file=store)
    forged_sum = ctx2.checksum(["."])
    assert forged_sum != first
    ctx2.close()
    # rewriting the file (same size, mtime put back) changes its ctime: it is hashed again
    st = os.stat(big)
    big.write_bytes(b"b" * FileDigests.MIN_SIZE)
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    ctx3 = BuildContext.open(str(ctx_dir), str(tmp_path / "tmp"), digests_file=store)
    third = ctx3.checksum(["."])
    ctx3.close()
    assert third not in (first, forged_sum)
    big.write_bytes(b"a" * FileDigests.MIN_SIZE)
    ctx4 = BuildContext.open(str(ctx_dir), str(tmp_path / "tmp"), digests_file=store)
    assert ctx4.checksum(["."]) == first
