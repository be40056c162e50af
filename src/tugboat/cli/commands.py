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
    "system": "tugboat.cli.system:cmd_system",  # engine (df/prune/events/info via the daemon; check -> images)
    # runtime/engine/network/build/registry/cluster commands are added by their areas
    "daemon": "tugboat.cli.daemon:cmd_daemon",  # engine
    "ps": "tugboat.cli.containers:cmd_ps",  # engine
    "run": "tugboat.cli.containers:cmd_run",  # engine
    "create": "tugboat.cli.containers:cmd_create",  # engine
    "start": "tugboat.cli.containers:cmd_start",  # engine
    "stop": "tugboat.cli.containers:cmd_stop",  # engine
    "restart": "tugboat.cli.containers:cmd_restart",  # engine
    "kill": "tugboat.cli.containers:cmd_kill",  # engine
    "rm": "tugboat.cli.containers:cmd_rm",  # engine
    "logs": "tugboat.cli.containers:cmd_logs",  # engine
    "exec": "tugboat.cli.containers:cmd_exec",  # engine
    "attach": "tugboat.cli.containers:cmd_attach",  # engine
    "inspect": "tugboat.cli.containers:cmd_inspect",  # engine
    "top": "tugboat.cli.containers:cmd_top",  # engine
    "stats": "tugboat.cli.containers:cmd_stats",  # engine
    "cp": "tugboat.cli.containers:cmd_cp",  # engine
    "port": "tugboat.cli.containers:cmd_port",  # engine
    "rename": "tugboat.cli.containers:cmd_rename",  # engine
    "wait": "tugboat.cli.containers:cmd_wait",  # engine
    "export": "tugboat.cli.containers:cmd_export",  # engine
    "diff": "tugboat.cli.containers:cmd_diff",  # engine
    "pause": "tugboat.cli.containers:cmd_pause",  # engine
    "unpause": "tugboat.cli.containers:cmd_unpause",  # engine
    "update": "tugboat.cli.containers:cmd_update",  # engine
    "commit": "tugboat.cli.containers:cmd_commit",  # engine
    "container": "tugboat.cli.containers:cmd_container",  # engine
    "volume": "tugboat.cli.system:cmd_volume",  # engine
    "info": "tugboat.cli.system:cmd_info",  # engine
    "version": "tugboat.cli.system:cmd_version",  # engine
    "events": "tugboat.cli.system:cmd_events",  # engine
    "network": "tugboat.cli.network:network",  # network helper
    "registry": "tugboat.cli.registry:registry",
    "pull": "tugboat.cli.registry:pull",
    "push": "tugboat.cli.registry:push",
    "login": "tugboat.cli.registry:login",
    "logout": "tugboat.cli.registry:logout",
    "cluster": "tugboat.cli.cluster:main",  # cluster components (apiserver helper; subcommands in cli/cluster.py)
    "build": "tugboat.cli.build:build_cmd",  # builder
    "builder": "tugboat.cli.build:builder_cmd",  # builder: prune, du
}

# docker's aliases, e.g. `tug rmi` = `tug image rm`
ALIASES: dict[str, list[str]] = {}
