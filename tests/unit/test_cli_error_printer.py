"""The CLI's one error printer: an exception raised without a message is still named (type and
where), never a bare ``Error: TimeoutError:``."""

from __future__ import annotations

from typing import Any

import pytest

from tugboat.cli.commands import COMMANDS
from tugboat.cli.main import main
from tugboat.errors import Unavailable


def _slow_step() -> None:
    raise TimeoutError


def boom_bare(args: list[str], ctx: Any) -> int:
    _slow_step()
    return 0


def boom_tug(args: list[str], ctx: Any) -> int:
    raise Unavailable("node n1: start-up failed: registering the node: still failing")


def boom_message(args: list[str], ctx: Any) -> int:
    raise KeyError("spec")


@pytest.mark.parametrize("fn, expect", [
    ("boom_bare", "Error: TimeoutError without a message (in _slow_step, "),
    ("boom_tug", "Error: node n1: start-up failed: registering the node: still failing\n"),
    ("boom_message", "Error: KeyError: 'spec'\n"),
])
def test_errors_are_printed_with_a_useful_message(fn: str, expect: str, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("TUG_DEBUG", raising=False)
    monkeypatch.setitem(COMMANDS, "test-boom", f"test_cli_error_printer:{fn}")
    assert main(["test-boom"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(expect), err
    assert "TimeoutError:\n" not in err
    if fn == "boom_bare":
        assert "test_cli_error_printer.py:" in err and err.rstrip().endswith("(TUG_DEBUG=1 shows the traceback)")
