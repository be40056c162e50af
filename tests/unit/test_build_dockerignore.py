""".dockerignore patterns: Go filepath.Match semantics, **, ! exceptions, parent matching."""

from __future__ import annotations

import pytest

from tugboat.build.dockerignore import Matcher, clean, parse_patterns
from tugboat.errors import InvalidArgument


def m(text: str) -> Matcher:
    return Matcher.from_text(text)


def test_parse_patterns_cleans_and_skips_comments() -> None:
    text = "# comment\n\n  *.pyc  \n/build/\n!  keep.pyc\n./a/../b\n"
    assert parse_patterns(text) == ["*.pyc", "build", "!keep.pyc", "b"]
    with pytest.raises(InvalidArgument, match="illegal exclusion pattern"):
        parse_patterns("!\n")


def test_clean() -> None:
    assert clean("a//b/./c/..") == "a/b"
    assert clean("/../x") == "/x"
    assert clean("../x") == "../x"
    assert clean("") == "."


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),
        ("*/*.md", "docs/README.md", True),
        ("**/*.md", "docs/a/README.md", True),
        ("**/*.md", "README.md", True),
        ("docs", "docs/a/b.txt", True),
        ("docs/", "docs/a/b.txt", True),
        ("/docs", "docs", True),
        ("temp?", "temp1", True),
        ("temp?", "temp12", False),
        ("temp?", "temp/", False),
        ("[a-c].txt", "b.txt", True),
        ("[!a-c].txt", "d.txt", False),  # Go regexp: "!" is literal in a class
        ("[^a-c].txt", "d.txt", True),
        ("[^a-c].txt", "b.txt", False),
        ("a/**", "a/b/c", True),
        ("a/**", "a", False),
        ("**", "anything/at/all", True),
        ("**/foo", "foo", True),
        ("**/foo", "x/y/foo", True),
        ("**/foo", "xfoo", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("*", "x/y", True),
        ("\\*", "*", True),
        ("\\*", "x", False),
        ("a.b", "axb", False),
        ("node_modules", "node_modules/pkg/index.js", True),
        ("*.pyc\n!keep.pyc", "keep.pyc", False),
        ("*.pyc\n!keep.pyc", "x.pyc", True),
        ("*.md\n!README*.md\nREADME-secret.md", "README-secret.md", True),
        ("*.md\n!README*.md\nREADME-secret.md", "README-public.md", False),
        ("docs\n!docs/keep.txt", "docs/keep.txt", False),
        ("docs\n!docs/keep.txt", "docs/other.txt", True),
        ("!x\ny", "x", False),
    ],
)
def test_matching(patterns: str, path: str, excluded: bool) -> None:
    assert m(patterns).excluded(path) is excluded


def test_descend_into_excluded_dirs_only_when_an_exception_may_apply() -> None:
    assert not m("docs").may_contain_included("docs")
    assert m("docs\n!docs/keep.txt").may_contain_included("docs")
    assert not m("docs\n!other/keep.txt").may_contain_included("docs")
    assert m("docs\n!**/*.txt").may_contain_included("docs")
