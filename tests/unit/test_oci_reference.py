"""Image references: docker's normalisation and error messages (distribution/reference tests)."""

from __future__ import annotations

import pytest

from tugboat.errors import InvalidArgument
from tugboat.oci.reference import familiar, parse, parse_normalized, parse_reference

HEX = "a" * 64


@pytest.mark.parametrize(
    ("given", "full", "fam"),
    [
        ("postgres", "docker.io/library/postgres:latest", "postgres:latest"),
        ("postgres:15", "docker.io/library/postgres:15", "postgres:15"),
        ("library/postgres", "docker.io/library/postgres:latest", "postgres:latest"),
        ("docker.io/postgres", "docker.io/library/postgres:latest", "postgres:latest"),
        ("index.docker.io/library/postgres", "docker.io/library/postgres:latest", "postgres:latest"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("localhost:5000/app:1", "localhost:5000/app:1", "localhost:5000/app:1"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("example.com/a/b/c:v1.2", "example.com/a/b/c:v1.2", "example.com/a/b/c:v1.2"),
        ("[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000/app:latest"),
        ("foo-bar.com:8080/x", "foo-bar.com:8080/x:latest", "foo-bar.com:8080/x:latest"),
        (f"busybox@sha256:{HEX}", f"docker.io/library/busybox@sha256:{HEX}", f"busybox@sha256:{HEX}"),
        (f"busybox:1@sha256:{HEX}", f"docker.io/library/busybox:1@sha256:{HEX}", f"busybox:1@sha256:{HEX}"),
        ("a__b/c-d---e.f", "docker.io/a__b/c-d---e.f:latest", "a__b/c-d---e.f:latest"),
        ("docker.io/library/foo/bar", "docker.io/library/foo/bar:latest", "library/foo/bar:latest"),
        ("Example.com/foo", "Example.com/foo:latest", "Example.com/foo:latest"),
        ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b:c"),
        ("foo:v1.2-rc_3", "docker.io/library/foo:v1.2-rc_3", "foo:v1.2-rc_3"),
    ],
)
def test_normalisation(given: str, full: str, fam: str) -> None:
    ref = parse_reference(given)
    assert str(ref) == full
    assert ref.familiar == fam


def test_parts() -> None:
    r = parse_reference("localhost:5000/team/app:2")
    assert (r.domain, r.path, r.tag, r.digest) == ("localhost:5000", "team/app", "2", None)
    assert r.name == "localhost:5000/team/app"
    assert parse_normalized("busybox").tag is None  # no default tag without parse_reference
    assert familiar("docker.io/library/busybox:latest") == "busybox:latest"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("Foo", "invalid reference format: repository name (library/Foo) must be lowercase"),
        ("user/Foo:1", "invalid reference format: repository name (user/Foo) must be lowercase"),
        (HEX, f"invalid repository name ({HEX}), cannot specify 64-byte hexadecimal strings"),
        ("", "invalid reference format"),
        ("foo:bad tag", "invalid reference format"),
        ("foo::1", "invalid reference format"),
        ("-foo", "invalid reference format"),
        ("foo/", "invalid reference format"),
        ("foo@sha256:abc", "invalid reference format"),
        (f"foo@sha256:{'a' * 63}", "invalid checksum digest length"),
        (f"foo@sha512:{HEX}", "invalid checksum digest length"),
        (f"foo@md5:{'a' * 32}", "unsupported digest algorithm"),
        ("a/" + "b" * 260, "repository name must not be more than 255 characters"),
        ("foo:" + "t" * 129, "invalid reference format"),
    ],
)
def test_errors(given: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as ei:
        parse_reference(given)
    assert str(ei.value) == message


def test_strict_parse_uppercase() -> None:
    with pytest.raises(InvalidArgument, match="repository name must be lowercase"):
        parse("docker.io/Foo")
    assert parse("Example.com/foo").domain == "Example.com"
