"""`tug registry serve|gc`, `tug pull`, `tug push`, `tug login`, `tug logout`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tugboat.cli.main import Context
    from tugboat.distribution.client import RegistryClient


def _registry_root(ctx: Context, explicit: str | None) -> str:
    if explicit:
        return os.path.abspath(explicit)
    return os.path.join(ctx.data_root, "registry")


def registry(args: list[str], ctx: Context) -> int:
    p = argparse.ArgumentParser(prog="tug registry", description="Run or maintain an OCI registry server")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve the OCI distribution API")
    s.add_argument("--addr", default="127.0.0.1:5000", help="listen address host:port (port 0 picks one)")
    s.add_argument("--root", help="registry data directory (default <data root>/registry)")
    s.add_argument("--htpasswd", help="htpasswd file with bcrypt entries: turns on authentication")
    s.add_argument("--token-realm", help="URL of the token endpoint (served by this registry at its path)")
    s.add_argument("--token-issuer", default="tugboat")
    s.add_argument("--token-service", default="tugboat-registry")
    s.add_argument("--anonymous-pull", action="store_true", help="with tokens: allow pulls without login")
    s.add_argument("--tls-cert")
    s.add_argument("--tls-key")
    s.add_argument("--read-only", action="store_true")
    s.add_argument("--allow-sparse-manifests", action="store_true",
                   help="accept manifests that name blobs or manifests not in the repository")
    s.add_argument("--max-manifest-size", type=int, default=4 * 1024 * 1024)
    s.add_argument("--port-file", help="write the bound port to this file once listening")
    g = sub.add_parser("gc", help="delete blobs no manifest refers to (run while nothing pushes)")
    g.add_argument("--root", help="registry data directory (default <data root>/registry)")
    g.add_argument("--dry-run", action="store_true")
    g.add_argument("--grace", type=float, default=0.0, help="spare blobs younger than this many seconds")
    o = p.parse_args(args)
    root = _registry_root(ctx, o.root)
    if o.cmd == "gc":
        from tugboat.distribution.storage import RegistryStorage

        res = RegistryStorage(root).gc(dry_run=o.dry_run, grace_seconds=o.grace)
        verb = "would remove" if o.dry_run else "removed"
        for d in res["removed"]:
            print(f"{verb} {d}")
        print(f"{verb} {len(res['removed'])} blobs, {res['freed_bytes']} bytes; {res['kept']} referenced")
        return 0
    import asyncio
    import logging

    from tugboat.distribution.server import make_app, serve, ssl_context

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    host, _, port_s = o.addr.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    app = make_app(root, htpasswd=o.htpasswd, token_realm=o.token_realm, token_issuer=o.token_issuer,
                   token_service=o.token_service, anonymous_pull=o.anonymous_pull, read_only=o.read_only,
                   allow_sparse=o.allow_sparse_manifests, max_manifest=o.max_manifest_size)

    def ready(port: int) -> None:
        if o.port_file:
            tmp = o.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(port))
            os.rename(tmp, o.port_file)
        scheme = "https" if o.tls_cert else "http"
        sys.stderr.write(f"tug registry listening on {scheme}://{host}:{port} (root {root})\n")
        sys.stderr.flush()

    try:
        asyncio.run(serve(app, host, int(port_s), ssl_context(o.tls_cert, o.tls_key), ready))
    except KeyboardInterrupt:
        pass
    return 0


class ProgressPrinter:
    """Renders docker's progress messages: one line per layer, redrawn in place on a terminal
    (as the docker CLI does), plain lines without progress bars otherwise."""

    def __init__(self, out: object = None) -> None:
        self.out = out or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.lines: dict[str, int] = {}

    def write(self, ev: dict) -> None:
        status = ev.get("status")
        if not status:
            return
        ident = ev.get("id")
        text = f"{ident}: {status}" if ident else str(status)
        if ev.get("progress"):
            text += " " + str(ev["progress"])
        out = self.out
        if not self.tty:
            if not ev.get("progressDetail"):
                out.write(text + "\n")  # type: ignore[attr-defined]
                out.flush()  # type: ignore[attr-defined]
            return
        if ident and ident in self.lines:
            up = len(self.lines) - self.lines[ident]
            out.write(f"\x1b[{up}A\r\x1b[2K{text}\r\x1b[{up}B")  # type: ignore[attr-defined]
        else:
            if ident:
                self.lines[ident] = len(self.lines)
            else:
                self.lines = {}
            out.write(text + "\n")  # type: ignore[attr-defined]
        out.flush()  # type: ignore[attr-defined]


def _run_stream(client: object, path: str, query: dict, headers: dict, quiet: bool) -> None:
    from tugboat.errors import TugError

    printer = ProgressPrinter()
    for ev in client.json_stream("POST", path, query=query, headers=headers):  # type: ignore[attr-defined]
        if ev.get("error") or ev.get("errorDetail"):
            raise TugError(ev.get("error") or ev["errorDetail"].get("message", "failed"))
        if not quiet:
            printer.write(ev)


def pull(args: list[str], ctx: Context) -> int:
    p = argparse.ArgumentParser(prog="tug pull", description="Download an image from a registry")
    p.add_argument("image")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--platform")
    o = p.parse_args(args)
    from tugboat.cli.client import DaemonClient
    from tugboat.oci.reference import parse_reference

    ref = parse_reference(o.image)
    query = {"fromImage": ref.name, "tag": ref.digest or ref.tag or "latest"}
    if o.platform:
        query["platform"] = o.platform
    client = DaemonClient(ctx.daemon_host)
    if client.ping():
        _run_stream(client, "/images/create", query, _auth_header_for(ref.domain), o.quiet)
    else:  # no daemon: pull straight into the data root, as `tug images` reads it
        from tugboat.images.service import ImageService

        printer = ProgressPrinter()
        _direct_client().pull(ImageService(ctx.data_root), str(ref), platform=o.platform,
                              progress=None if o.quiet else printer.write)
    if o.quiet:
        print(ref.familiar)
    return 0


def push(args: list[str], ctx: Context) -> int:
    p = argparse.ArgumentParser(prog="tug push", description="Upload an image to a registry")
    p.add_argument("image")
    p.add_argument("-q", "--quiet", action="store_true")
    o = p.parse_args(args)
    from urllib.parse import quote

    from tugboat.cli.client import DaemonClient
    from tugboat.oci.reference import parse_reference

    ref = parse_reference(o.image, default_tag=False)
    client = DaemonClient(ctx.daemon_host)
    if client.ping():
        _run_stream(client, f"/images/{quote(ref.name, safe='/:')}/push", {"tag": ref.tag or ""},
                    _auth_header_for(ref.domain), o.quiet)
        return 0
    from tugboat.errors import NotFound
    from tugboat.images.service import ImageService

    images = ImageService(ctx.data_root)
    if ref.tag or ref.digest:
        refs = [str(ref)]
    else:
        refs = sorted({str(parse_reference(t)) for im in images.list() for t in (im.repo_tags or [])
                       if parse_reference(t, default_tag=False).name == ref.name})
    if not refs:
        raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
    printer = ProgressPrinter()
    for r in refs:
        _direct_client().push(images, r, progress=None if o.quiet else printer.write)
    return 0


def _direct_client() -> RegistryClient:
    from tugboat.distribution.client import RegistryClient

    def env_list(name: str) -> list[str]:
        return [x.strip() for x in os.environ.get(name, "").split(",") if x.strip()]

    return RegistryClient(mirrors=env_list("TUG_REGISTRY_MIRRORS"), insecure=env_list("TUG_INSECURE_REGISTRIES"))


def _auth_header_for(domain: str) -> dict[str, str]:
    """X-Registry-Auth from ~/.docker/config.json, as the docker CLI sends it."""
    from tugboat.distribution.credentials import DockerConfig, encode_registry_auth

    creds = DockerConfig.load().get(domain)
    if creds is None:
        return {}
    return {"X-Registry-Auth": encode_registry_auth(creds[0], creds[1], domain)}


def login(args: list[str], ctx: Context) -> int:
    p = argparse.ArgumentParser(prog="tug login", description="Log in to a registry")
    p.add_argument("server", nargs="?", default="docker.io")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("--password-stdin", action="store_true")
    o = p.parse_args(args)
    import getpass

    from tugboat.distribution.client import RegistryClient
    from tugboat.distribution.credentials import DockerConfig, normalize_registry

    user = o.username or input("Username: ")
    if o.password_stdin:
        password = sys.stdin.read().rstrip("\n")
    else:
        password = o.password if o.password is not None else getpass.getpass("Password: ")
    server = normalize_registry(o.server)
    RegistryClient().login(server, user, password)
    cfg = DockerConfig.load()
    cfg.set(server, user, password)
    cfg.save()
    print("Login Succeeded")
    return 0


def logout(args: list[str], ctx: Context) -> int:
    p = argparse.ArgumentParser(prog="tug logout", description="Log out from a registry")
    p.add_argument("server", nargs="?", default="docker.io")
    o = p.parse_args(args)
    from tugboat.distribution.credentials import DockerConfig, normalize_registry

    server = normalize_registry(o.server)
    cfg = DockerConfig.load()
    if cfg.remove(server):
        cfg.save()
        print(f"Removing login credentials for {server}")
    else:
        print(f"Not logged in to {server}")
    return 0
