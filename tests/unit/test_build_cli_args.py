"""`tug build`'s argument parsing without argparse gives what argparse gives, or defers to it."""

from __future__ import annotations

import pytest

from tugboat.build.lazyimages import familiar, normalize
from tugboat.cli.build import _fast_parse, _parser
from tugboat.errors import InvalidArgument
from tugboat.oci.reference import parse_reference

ATTRS = ("path", "tag", "file", "build_arg", "target", "no_cache", "pull", "label", "iidfile", "quiet",
         "progress", "network")


@pytest.mark.parametrize("args", [
    ["."],
    ["-"],
    ["-q", "-t", "app", "ctx"],
    ["-t", "a:1", "--tag=b:2", "-tc", "--no-cache", "--pull", "ctx"],
    ["--build-arg", "A=1", "--build-arg=B", "--label", "k=v", "--target", "s", "ctx"],
    ["-f", "-", "--iidfile", "/tmp/iid", "--progress=quiet", "--network", "none", "ctx"],
    ["ctx", "-f", "sub/Dockerfile", "--quiet"],
    ["--network=host", "--file=Dockerfile.x", "ctx"],
])
def test_fast_parse_matches_argparse(args: list[str]) -> None:
    fast = _fast_parse(args)
    slow = _parser().parse_args(args)
    assert fast is not None
    assert {a: getattr(fast, a) for a in ATTRS} == {a: getattr(slow, a) for a in ATTRS}


@pytest.mark.parametrize("args", [
    [], ["-h"], ["--help"], ["a", "b"], ["--no-c", "ctx"], ["-qt", "x", "ctx"], ["-t"], ["-t", "-q", "ctx"],
    ["--progress=fancy", "ctx"], ["--pull=yes", "ctx"], ["--unknown", "ctx"], ["--", "ctx"],
])
def test_fast_parse_leaves_the_rest_to_argparse(args: list[str]) -> None:
    assert _fast_parse(args) is None


@pytest.mark.parametrize("ref", [
    "busybox", "busybox:1.36", "library/busybox", "user/app:v1.2-rc_3", "docker.io/library/x:latest",
    "index.docker.io/x", "localhost/app", "localhost:5000/a/b:c", "registry.example.com:443/team/app:1",
    "my-registry.local/app", "a.b-c_d/e", "x__y", "UPPER", "bad:tag!", "x@sha256:" + "a" * 64, "-x", "a//b",
    "a/", ":tag", "sha256:" + "b" * 64, "a" * 64, "host:port/x",
])
def test_light_normalize_agrees_with_parse_reference(ref: str) -> None:
    light = normalize(ref)
    try:
        full = parse_reference(ref)
    except InvalidArgument:
        assert light is None
        return
    if light is not None:
        assert light == full.tagged and familiar(light) == full.familiar
