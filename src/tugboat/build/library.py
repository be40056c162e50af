"""Base images built offline from the project's ``library/`` Dockerfiles (Debian packages only).

``tug image bootstrap python:3.11-slim`` (also ``postgres:15``, ``nginx``, ``redis``) builds
``library/<name>/<tag>/Dockerfile`` FROM the bootstrapped ``debian:bookworm-slim`` (made first
when missing, with debootstrap), and tags the result with the requested name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tugboat.errors import NotFound

# name -> (library dir, tag dir, extra tags)
RECIPES: dict[str, tuple[str, str]] = {
    "python:3.11-slim": ("python", "3.11-slim"),
    "python:3.11": ("python", "3.11-slim"),
    "python:3": ("python", "3.11-slim"),
    "python:latest": ("python", "3.11-slim"),
    "postgres:15": ("postgres", "15"),
    "postgres:latest": ("postgres", "15"),
    "nginx:latest": ("nginx", "latest"),
    "redis:latest": ("redis", "latest"),
}
BASE = "debian:bookworm-slim"


def library_dir() -> str:
    import tugboat

    return os.environ.get("TUG_LIBRARY") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(tugboat.__file__)))), "library"
    )


def known(name: str) -> bool:
    from tugboat.oci.reference import parse_reference

    return parse_reference(name).familiar in RECIPES


def bootstrap_library(images: Any, name: str, progress: Callable[[str], None] | None = None) -> Any:
    from tugboat.build.builder import Builder
    from tugboat.oci.reference import parse_reference

    familiar = parse_reference(name).familiar
    if familiar not in RECIPES:
        raise NotFound(f"no library recipe for {name!r} (known: {', '.join(sorted(RECIPES))})")
    repo, tag = RECIPES[familiar]
    ctx = os.path.join(library_dir(), repo, tag)
    if not os.path.isfile(os.path.join(ctx, "Dockerfile")):
        raise NotFound(f"library Dockerfile missing: {ctx}/Dockerfile")
    say = progress or (lambda _m: None)
    if not images.exists(BASE):
        from tugboat.images.bootstrap import bootstrap

        say(f"bootstrapping {BASE} first (debootstrap)")
        bootstrap(images, BASE, progress)

    def on_event(ev: dict[str, Any]) -> None:
        if ev.get("type") == "step":
            say(f"Step {ev['n']}/{ev['total']} : {ev['text']}")
        elif ev.get("type") == "output":
            for line in ev["text"].rstrip("\n").splitlines():
                say("  " + line)

    return Builder(images).build(ctx, tags=[familiar], progress=on_event)
