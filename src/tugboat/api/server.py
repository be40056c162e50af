"""The Docker Engine API server: an aiohttp application composed of route modules.

Each module named in :data:`ROUTE_MODULES` has ``setup(app, engine) -> None`` and registers its
routes with :func:`tugboat.api.common.add_route` (so both ``/path`` and ``/v1.NN/path`` work).
Modules that are not built yet (ImportError of the module itself) are skipped.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from aiohttp import web

from tugboat.api import common

log = logging.getLogger("tugboat.api")

ROUTE_MODULES: list[str] = [
    "tugboat.api.system",
    "tugboat.api.containers",
    "tugboat.api.exec",
    "tugboat.api.images",
    "tugboat.api.volumes",
    "tugboat.api.networks",  # network helper
    "tugboat.api.build",  # builder helper
    "tugboat.api.distribution",  # registry helper (images/create, push, distribution)
]


async def _not_found(request: web.Request) -> web.StreamResponse:
    return common.error_response(404, "page not found")


def make_app(engine: Any, modules: list[str] | None = None) -> web.Application:
    """The Engine API application for ``engine`` (a :class:`tugboat.engine.engine.Engine`)."""
    app = web.Application(middlewares=[common.middleware], client_max_size=0)
    app[common.ENGINE_KEY] = engine
    app.on_response_prepare.append(common.on_prepare)
    for name in ROUTE_MODULES if modules is None else modules:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                log.debug("route module %s not present; skipped", name)
                continue
            raise
        setup = getattr(mod, "setup", None)
        if setup is None:
            log.warning("route module %s has no setup(); skipped", name)
            continue
        setup(app, engine)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app
