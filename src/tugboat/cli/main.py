"""`tug`: the command-line entry point.

Start-up speed matters (``tug ps`` is typed all day), so this module imports nothing heavy: it
parses the global options by hand, looks the command up in :mod:`tugboat.cli.commands` and imports
only that command's module.
"""

from __future__ import annotations

import os
import sys

USAGE = """Usage:  tug [OPTIONS] COMMAND

A self-sufficient runtime for containers, and a cluster to run them on.

Global options:
      --root DIR      data root (default /var/lib/tugboat, or $TUG_ROOT)
  -H, --host HOST     daemon socket to connect to (default unix:///run/tugboat/tug.sock, or $TUG_HOST)
  -D, --debug         show tracebacks on errors
  -v, --version       print version information and quit

Run 'tug COMMAND --help' for more information on a command.
"""


class Context:
    """Global options shared by every command (a plain class: `dataclasses` costs ~10 ms to import)."""

    __slots__ = ("debug", "extra", "host", "root")

    def __init__(self, root: str | None = None, host: str | None = None, debug: bool = False) -> None:
        self.root = root
        self.host = host
        self.debug = debug
        self.extra: dict[str, str] = {}

    @property
    def data_root(self) -> str:
        from tugboat.paths import data_root

        return data_root(self.root)

    @property
    def daemon_host(self) -> str:
        from tugboat.paths import daemon_host

        return daemon_host(self.host)


def _split_globals(argv: list[str]) -> tuple[Context, list[str]]:
    ctx = Context()
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--root", "-H", "--host") and i + 1 < len(argv):
            if a == "--root":
                ctx.root = argv[i + 1]
            else:
                ctx.host = argv[i + 1]
            i += 2
        elif a.startswith("--root="):
            ctx.root = a.split("=", 1)[1]
            i += 1
        elif a.startswith("--host="):
            ctx.host = a.split("=", 1)[1]
            i += 1
        elif a in ("-D", "--debug"):
            ctx.debug = True
            i += 1
        else:
            break
    return ctx, argv[i:]


# Commands whose work is over when they return (output written to stdout/stderr only, no file
# left open, no thread to join): the lean launcher then ends the process with os._exit instead of
# the interpreter's teardown (~1.5 ms of every `tug stop`, `tug rm` …).
QUICK_EXIT = frozenset({"ps", "run", "create", "start", "stop", "restart", "kill", "rm", "pause", "unpause",
                        "rename", "wait", "port", "inspect", "top", "exec"})
quick_exit = False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ctx, rest = _split_globals(argv)
    if not rest or rest[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        from tugboat.cli.commands import COMMANDS

        if COMMANDS:
            sys.stdout.write("\nCommands:\n")
            for name in sorted(COMMANDS):
                sys.stdout.write(f"  {name}\n")
        return 0
    if rest[0] in ("-v", "--version"):
        from tugboat import __version__

        sys.stdout.write(f"tugboat version {__version__}\n")
        return 0
    from tugboat.cli.commands import ALIASES, COMMANDS

    name, args = rest[0], rest[1:]
    if name in ALIASES:
        expanded = ALIASES[name]
        name, args = expanded[0], [*expanded[1:], *args]
    target = COMMANDS.get(name)
    if target is None:
        sys.stderr.write(f"tug: '{name}' is not a tug command.\nSee 'tug --help'\n")
        return 1
    modname, funcname = target.split(":")
    try:
        # __import__ rather than importlib.import_module: `importlib` pulls in `warnings` (start-up)
        fn = getattr(__import__(modname, fromlist=(funcname,)), funcname)
        rc = int(fn(args, ctx) or 0)
        global quick_exit
        quick_exit = name in QUICK_EXIT
        return rc
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the one place where errors become messages and exit codes
        from tugboat.errors import TugError, describe

        if ctx.debug or os.environ.get("TUG_DEBUG"):
            raise
        if isinstance(exc, TugError) and str(exc):
            sys.stderr.write(f"Error: {exc}\n")
            return 1
        # never a bare "Error: TimeoutError:": an exception without a message is named by its type
        # and where it was raised
        hint = "" if str(exc) else " (TUG_DEBUG=1 shows the traceback)"
        sys.stderr.write(f"Error: {describe(exc)}{hint}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
