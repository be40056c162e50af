from __future__ import annotations

import subprocess
import sys

from tugboat.cli.main import _split_globals, main


def test_global_options_are_split_from_the_command() -> None:
    ctx, rest = _split_globals(["--root", "/tmp/r", "-H", "unix:///x.sock", "ps", "-a"])
    assert ctx.root == "/tmp/r"
    assert ctx.host == "unix:///x.sock"
    assert rest == ["ps", "-a"]


def test_unknown_command_is_an_error(capsys) -> None:
    assert main(["no-such-command"]) == 1
    assert "'no-such-command' is not a tug command" in capsys.readouterr().err


def test_version_prints_and_exits_zero() -> None:
    out = subprocess.run([sys.executable, "-m", "tugboat.cli.main", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith("tugboat version ")
