"""The `tug` command table: command name -> "module:function".

Kept as plain data so that `tug` imports only the module of the command it runs (start-up speed).
Each function has the signature ``fn(args: list[str], ctx: tugboat.cli.main.Context) -> int``
and parses its own arguments. Management groups (``image``, ``container``, ``volume`` …) are
commands whose function dispatches on the next word.
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    # images (issue: images)
    "images": "tugboat.cli.images:images_cmd",
    "image": "tugboat.cli.images:image_cmd",
    "tag": "tugboat.cli.images:tag_cmd",
    "rmi": "tugboat.cli.images:rmi_cmd",
    "history": "tugboat.cli.images:history_cmd",
    "save": "tugboat.cli.images:save_cmd",
    "load": "tugboat.cli.images:load_cmd",
    "import": "tugboat.cli.images:import_cmd",
    "system": "tugboat.cli.images:system_cmd",  # images: df/check/prune (engine may take it over)
    # runtime/engine/network/build/registry/cluster commands are added by their areas
    "daemon": "tugboat.cli.daemon:cmd_daemon",  # engine
    "network": "tugboat.cli.network:network",  # network helper
    "registry": "tugboat.cli.registry:registry",
    "pull": "tugboat.cli.registry:pull",
    "push": "tugboat.cli.registry:push",
    "login": "tugboat.cli.registry:login",
    "logout": "tugboat.cli.registry:logout",
    "cluster": "tugboat.cli.cluster:main",
    "build": "tugboat.cli.build:build_cmd",  # builder
    "builder": "tugboat.cli.build:builder_cmd",  # builder: prune, du  # cluster components (apiserver helper; subcommands in cli/cluster.py)
}

# docker's aliases, e.g. `tug rmi` = `tug image rm`
ALIASES: dict[str, list[str]] = {}
