"""Variable substitution with Docker's rules (shell word processing)."""

from __future__ import annotations

import pytest

from tugboat.build.shell import Lex
from tugboat.errors import InvalidArgument

ENV = {"A": "hello", "E": "", "P": "a/b/c.tar.gz", "SP": "x  y"}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$A", "hello"),
        ("${A}x", "hellox"),
        ("$Ax", ""),
        ("${A:-d}", "hello"),
        ("${E:-d}", "d"),
        ("${E-d}", ""),
        ("${U-d}", "d"),
        ("${U:-$A}", "hello"),
        ("${A:+alt}", "alt"),
        ("${E:+alt}", ""),
        ("${E+alt}", "alt"),
        ("${U+alt}", ""),
        ('"$A world"', "hello world"),
        ("'$A'", "$A"),
        ("\\$A", "$A"),
        ('"\\$A"', "$A"),
        ('"a\\b"', "a\\b"),
        ('"a\\"b"', 'a"b'),
        ("a\\ b", "a b"),
        ("${P#*/}", "b/c.tar.gz"),
        ("${P##*/}", "c.tar.gz"),
        ("${P%.*}", "a/b/c.tar"),
        ("${P%%.*}", "a/b/c"),
        ("${P/\\//_}", "a_b/c.tar.gz"),
        ("${P//\\//_}", "a_b_c.tar.gz"),
        ("$", "$"),
        ("a$", "a$"),
        ("$1x", "x"),
        ("${A:?}", "hello"),
        ("", ""),
        ("$SP", "x  y"),
    ],
)
def test_process_word(word: str, expected: str) -> None:
    assert Lex().process_word(word, ENV) == expected


def test_process_words_splits_unquoted_expansions() -> None:
    lex = Lex()
    assert lex.process_words("$SP z", ENV) == ["x", "y", "z"]
    assert lex.process_words('"$SP" z', ENV) == ["x  y", "z"]
    assert lex.process_words("a 'b c'  d", ENV) == ["a", "b c", "d"]


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${A", "missing '}'"),
        ("${}", "bad substitution"),
        ("${:a}", "bad substitution"),
        ("${U:?must be set}", "U: must be set"),
        ("${U?}", "U: is not allowed to be unset"),
        ("${E:?}", "E: is not allowed to be empty"),
        ("'abc", "matching single-quote"),
        ('"abc', "matching double-quote"),
        ("${A!x}", "unsupported modifier (!) in substitution"),
    ],
)
def test_errors(word: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        Lex().process_word(word, ENV)


def test_backtick_escape() -> None:
    lex = Lex("`")
    assert lex.process_word("c:\\dir", {}) == "c:\\dir"
    assert lex.process_word("`$A", ENV) == "$A"


def test_used_names_are_reported() -> None:
    _, used = Lex().process_word_used("$A ${B:-x}", ENV)
    assert used == {"A", "B"}
