"""The `tug` command table: command name -> "module:function".

Kept as plain data so that `tug` imports only the module of the command it runs (start-up speed).
Each function has the signature ``fn(args: list[str], ctx: tugboat.cli.main.Context) -> int``
and parses its own arguments. Management groups (``image``, ``container``, ``volume`` …) are
commands whose function dispatches on the next word.
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    # images (issue: images)
    # runtime/engine/network/build/registry/cluster commands are added by their areas
}

# docker's aliases, e.g. `tug rmi` = `tug image rm`
ALIASES: dict[str, list[str]] = {}
