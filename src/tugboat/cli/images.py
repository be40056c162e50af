"""Image commands working on the data root: `tug images`, `tug image …`, `tug tag`, `tug rmi`,
`tug history`, `tug save`, `tug load`, `tug import`, `tug system df|check|prune` (images part).

Imports stay lazy: nothing heavy is imported before a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tugboat.cli.main import Context
    from tugboat.images.service import Image, ImageService


def _service(ctx: Context) -> ImageService:
    from tugboat.images.service import ImageService

    return ImageService(ctx.data_root)


def _containers_using(root: str) -> dict[str, str]:
    """image ID -> one container ID using it, read from the engine's container records."""
    out: dict[str, str] = {}
    d = os.path.join(root, "containers")
    with contextlib.suppress(FileNotFoundError):
        for cid in sorted(os.listdir(d)):
            p = os.path.join(d, cid, "container.json")
            with contextlib.suppress(OSError, ValueError), open(p, "rb") as f:
                data = json.loads(f.read())
                img = data.get("Image")
                if isinstance(img, str):
                    out.setdefault(img, data.get("Id", cid))
    return out


def _in_use(ctx: Context) -> Any:
    users = _containers_using(ctx.data_root)
    return lambda image_id: users.get(image_id)


def _parser(prog: str, desc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=desc)


# ---- tug images ----------------------------------------------------------------------------------

IMAGE_HEADERS = {
    "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "ID": "IMAGE ID",
    "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS",
    "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE",
}


def _image_rows(images: list[Image], no_trunc: bool, users: dict[str, str]) -> list[dict[str, Any]]:
    from tugboat.cli.image_format import human_size, since

    rows = []
    for img in images:
        iid = img.id if no_trunc else img.short_id
        digests = {}
        for d in img.repo_digests:
            name, _, dg = d.partition("@")
            digests.setdefault(name, dg)
        pairs: list[tuple[str, str]] = []
        for t in img.repo_tags:
            repo, _, tag = t.rpartition(":")
            pairs.append((repo, tag))
        if not pairs:
            for name in digests:
                pairs.append((name, "<none>"))
        if not pairs:
            pairs.append(("<none>", "<none>"))
        for repo, tag in pairs:
            digest = digests.get(repo, "<none>")
            created_at = img.created
            rows.append({
                "Repository": repo, "Tag": tag, "Digest": digest, "ID": iid,
                "CreatedSince": since(img.created), "CreatedAt": _created_at(created_at),
                "Size": human_size(img.size), "VirtualSize": human_size(img.size),
                "SharedSize": "N/A", "UniqueSize": "N/A",
                "Containers": "N/A" if not users else str(sum(1 for v in users if v == img.id)),
            })
    return rows


def _created_at(rfc: str) -> str:
    from tugboat.cli.image_format import parse_time

    t = parse_time(rfc)
    if t is None:
        return ""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(t))


def _filter_images(svc: ImageService, images: list[Image], filters: list[str]) -> list[Image]:
    from tugboat.errors import InvalidArgument
    from tugboat.oci.reference import parse_normalized

    out = images
    for f in filters:
        key, eq, val = f.partition("=")
        if not eq:
            raise InvalidArgument(f"bad format of filter (expected name=value): {f}")
        if key == "dangling":
            want = val.lower() in ("true", "1")
            out = [i for i in out if (not i.repo_tags) == want]
        elif key == "reference":
            def ok(img: Image, pattern: str = val) -> bool:
                for t in img.repo_tags:
                    repo = t.rpartition(":")[0]
                    full = parse_normalized(t)
                    if fnmatch.fnmatchcase(t, pattern) or fnmatch.fnmatchcase(repo, pattern) or \
                            fnmatch.fnmatchcase(str(full), pattern):
                        return True
                return False
            out = [i for i in out if ok(i)]
        elif key == "label":
            k, eq2, v = val.partition("=")
            out = [i for i in out if k in (((i.config.get("config") or {}).get("Labels")) or {})
                   and (not eq2 or ((i.config.get("config") or {}).get("Labels") or {}).get(k) == v)]
        elif key in ("before", "since"):
            ref = svc.resolve(val)
            out = [i for i in out if (i.created < ref.created if key == "before" else i.created > ref.created)]
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
    return out


def images_cmd(args: list[str], ctx: Context) -> int:
    p = _parser("tug images", "List images")
    p.add_argument("repository", nargs="?")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--digests", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format")
    o = p.parse_args(args)
    svc = _service(ctx)
    images = svc.list()
    filters = list(o.filter)
    if o.repository:
        filters.append(f"reference={o.repository}")
    images = _filter_images(svc, images, filters)
    if o.quiet:
        seen = []
        for img in images:
            iid = img.id if o.no_trunc else img.short_id
            if iid not in seen:
                seen.append(iid)
        sys.stdout.write("".join(s + "\n" for s in seen))
        return 0
    rows = _image_rows(images, o.no_trunc, {})
    patterns = [f.partition("=")[2] for f in filters if f.startswith("reference=")]
    for pat in patterns:
        rows = [r for r in rows if r["Repository"] != "<none>" and (
            fnmatch.fnmatchcase(r["Repository"], pat) or fnmatch.fnmatchcase(f"{r['Repository']}:{r['Tag']}", pat))]
    from tugboat.cli.image_format import format_rows

    fmt = o.format
    if not fmt:
        cols = ["Repository", "Tag"] + (["Digest"] if o.digests else []) + ["ID", "CreatedSince", "Size"]
        fmt = "table " + "\t".join("{{." + c + "}}" for c in cols)
    sys.stdout.write(format_rows(fmt, rows, IMAGE_HEADERS))
    return 0


# ---- tug image … -----------------------------------------------------------------------------------

IMAGE_USAGE = """Usage:  tug image COMMAND

Manage images

Commands:
  bootstrap   Build a base image from Debian packages (busybox, debian:bookworm, debian:bookworm-slim)
  history     Show the history of an image
  import      Import the contents from a tarball to create a filesystem image
  inspect     Display detailed information on one or more images
  load        Load an image from a tar archive or STDIN
  ls          List images
  prune       Remove unused images
  rm          Remove one or more images
  save        Save one or more images to a tar archive (streamed to STDOUT by default)
  tag         Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
"""


def image_cmd(args: list[str], ctx: Context) -> int:
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(IMAGE_USAGE)
        return 0
    sub, rest = args[0], args[1:]
    table = {
        "ls": images_cmd, "list": images_cmd, "inspect": inspect_cmd, "rm": rmi_cmd, "remove": rmi_cmd,
        "tag": tag_cmd, "history": history_cmd, "save": save_cmd, "load": load_cmd,
        "import": import_cmd, "prune": prune_cmd, "bootstrap": bootstrap_cmd,
    }
    fn = table.get(sub)
    if fn is None:
        if sub == "pull" or sub == "push":
            import importlib

            return int(getattr(importlib.import_module("tugboat.cli.registry"), sub)(rest, ctx) or 0)
        sys.stderr.write(f"tug: 'image {sub}' is not a tug command.\nSee 'tug image --help'\n")
        return 1
    return fn(rest, ctx)


def inspect_cmd(args: list[str], ctx: Context) -> int:
    p = _parser("tug image inspect", "Display detailed information on one or more images")
    p.add_argument("images", nargs="+")
    p.add_argument("-f", "--format")
    o = p.parse_args(args)
    from tugboat.errors import NotFound

    svc = _service(ctx)
    found: list[dict[str, Any]] = []
    missing: list[str] = []
    for name in o.images:
        try:
            found.append(svc.resolve(name).inspect())
        except NotFound:
            missing.append(name)
    if o.format:
        from tugboat.cli.image_format import render

        for doc in found:
            sys.stdout.write(render(o.format, doc) + "\n")
    else:
        sys.stdout.write(json.dumps(found, indent=4) + "\n")
    if missing:
        for m in missing:
            sys.stderr.write(f"Error: No such image: {m}\n")
        return 1
    return 0


def tag_cmd(args: list[str], ctx: Context) -> int:
    p = _parser("tug tag", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    p.add_argument("source")
    p.add_argument("target")
    o = p.parse_args(args)
    _service(ctx).tag(o.source, o.target)
    return 0


def rmi_cmd(args: list[str], ctx: Context) -> int:
    p = _parser("tug rmi", "Remove one or more images")
    p.add_argument("images", nargs="+")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--no-prune", action="store_true")
    o = p.parse_args(args)
    from tugboat.errors import TugError

    svc = _service(ctx)
    rc = 0
    in_use = _in_use(ctx)
    for name in o.images:
        try:
            for ev in svc.remove(name, force=o.force, in_use=in_use, prune=not o.no_prune):
                for k, v in ev.items():
                    sys.stdout.write(f"{k}: {v}\n")
        except TugError as exc:
            sys.stderr.write(f"Error response from daemon: {exc}\n")
            rc = 1
    return rc


def history_cmd(args: list[str], ctx: Context) -> int:
    p = _parser("tug history", "Show the history of an image")
    p.add_argument("image")
    p.add_argument("-H", "--human", default="true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--format")
    o = p.parse_args(args)
    import time

    from tugboat.cli.image_format import format_rows, human_size, since

    svc = _service(ctx)
    img = svc.resolve(o.image)
    human = o.human.lower() not in ("false", "0")
    items = []
    for h in svc.history(o.image):
        by = h["CreatedBy"]
        if not o.no_trunc and len(by) > 45:
            by = by[:44] + "…"
        iid = h["Id"]
        if iid != "<missing>" and not o.no_trunc:
            iid = img.short_id
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h["Created"])) if h["Created"] else ""
        items.append({
            "ID": iid, "CreatedSince": since(created) if human else created, "CreatedAt": created,
            "CreatedBy": by, "Size": human_size(h["Size"]) if human else str(h["Size"]),
            "Comment": h["Comment"],
        })
    if o.quiet:
        sys.stdout.write("".join(it["ID"] + "\n" for it in items))
        return 0
    headers = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
               "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}
    fmt = o.format or "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    sys.stdout.write(format_rows(fmt, items, headers))
    return 0


def _progress_printer(quiet: bool) -> Any:
    """A rich progress bar on stderr (only on a terminal) fed with ``Loading layer i/n …``
    messages; other messages show as the description."""
    if quiet or not sys.stderr.isatty():
        return None
    import re

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    progress.start()
    task = progress.add_task("Loading", total=None)
    layer_re = re.compile(r"layer (\d+)/(\d+)")

    def cb(msg: str) -> None:
        m = layer_re.search(msg)
        if m:
            progress.update(task, description=msg, completed=int(m.group(1)) - 1, total=int(m.group(2)))
        else:
            progress.update(task, description=msg)

    cb.stop = progress.stop  # type: ignore[attr-defined]
    return cb


def save_cmd(args: list[str], ctx: Context) -> int:
    p = _parser("tug save", "Save one or more images to a tar archive (streamed to STDOUT by default)")
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output")
    p.add_argument("--format", default="docker-archive", choices=["docker-archive", "oci-archive", "oci"])
    o = p.parse_args(args)
    from tugboat.errors import InvalidArgument

    svc = _service(ctx)
    if o.output:
        if o.format == "oci" and os.path.exists(o.output) and not os.path.isdir(o.output):
            raise InvalidArgument(f"{o.output} exists and is not a directory")
        svc.save(o.images, o.output, o.format)
        return 0
    if o.format == "oci":
        raise InvalidArgument("--format oci writes a directory: give it with -o DIR")
    if sys.stdout.isatty():
        raise InvalidArgument("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    sys.stdout.flush()
    svc.save(o.images, sys.stdout.buffer, o.format)
    sys.stdout.buffer.flush()
    return 0


def load_cmd(args: list[str], ctx: Context) -> int:
    p = _parser("tug load", "Load an image from a tar archive or STDIN")
    p.add_argument("-i", "--input")
    p.add_argument("-q", "--quiet", action="store_true")
    o = p.parse_args(args)
    from tugboat.errors import InvalidArgument

    svc = _service(ctx)
    cb = _progress_printer(o.quiet)
    try:
        if o.input:
            loaded = svc.load(o.input, progress=cb)
        else:
            if sys.stdin.isatty():
                raise InvalidArgument("requested load from stdin, but stdin is empty")
            loaded = svc.load(sys.stdin.buffer, progress=cb)
    finally:
        if cb is not None:
            cb.stop()
    for name in loaded:
        if name.startswith("sha256:"):
            sys.stdout.write(f"Loaded image ID: {name}\n")
        else:
            sys.stdout.write(f"Loaded image: {name}\n")
    return 0


def import_cmd(args: list[str], ctx: Context) -> int:
    p = _parser("tug import", "Import the contents from a tarball to create a filesystem image")
    p.add_argument("file")
    p.add_argument("reference", nargs="?")
    p.add_argument("-c", "--change", action="append", default=[])
    p.add_argument("-m", "--message")
    p.add_argument("--platform")
    o = p.parse_args(args)
    svc = _service(ctx)
    if o.file == "-":
        img = svc.import_rootfs(sys.stdin.buffer, o.reference, o.change, o.message, o.platform)
    elif o.file.startswith(("http://", "https://")):
        from tugboat.errors import InvalidArgument

        raise InvalidArgument("importing from a URL is not supported; download the file first")
    else:
        img = svc.import_rootfs(o.file, o.reference, o.change, o.message, o.platform)
    sys.stdout.write(img.id + "\n")
    return 0


def _confirm(prompt: str) -> bool:
    sys.stdout.write(prompt + "\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    ans = sys.stdin.readline().strip().lower()
    return ans in ("y", "yes")


def _print_pruned(res: dict[str, Any]) -> None:
    """docker's ``image prune`` / ``system prune`` report: deleted images, then space reclaimed."""
    from tugboat.cli.image_format import human_size

    if res["ImagesDeleted"]:
        sys.stdout.write("Deleted Images:\n")
        for ev in res["ImagesDeleted"]:
            for k, v in ev.items():
                sys.stdout.write(f"{k.lower()}: {v}\n")
        sys.stdout.write("\n")
    sys.stdout.write(f"Total reclaimed space: {human_size(res['SpaceReclaimed'])}\n")


def prune_cmd(args: list[str], ctx: Context) -> int:
    p = _parser("tug image prune", "Remove unused images")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--filter", action="append", default=[])
    o = p.parse_args(args)
    if not o.force:
        warn = ("WARNING! This will remove all images without at least one container associated to them."
                if o.all else "WARNING! This will remove all dangling images.")
        if not _confirm(warn):
            return 0
    filters: dict[str, list[str]] = {}
    for f in o.filter:
        k, _, v = f.partition("=")
        filters.setdefault(k, []).append(v)
    res = _service(ctx).prune(all=o.all, in_use=_in_use(ctx), filters=filters)
    _print_pruned(res)
    return 0


def bootstrap_cmd(args: list[str], ctx: Context) -> int:
    p = _parser("tug image bootstrap", "Build a base image from Debian packages, without any image hub")
    p.add_argument("name", help="busybox, debian:bookworm or debian:bookworm-slim")
    p.add_argument("-q", "--quiet", action="store_true")
    o = p.parse_args(args)
    from tugboat.images.bootstrap import bootstrap

    svc = _service(ctx)

    def progress(msg: str) -> None:
        if not o.quiet:
            sys.stderr.write(msg + "\n")

    img = bootstrap(svc, o.name, progress)
    if o.quiet:
        sys.stdout.write(img.id + "\n")
    else:
        sys.stdout.write(f"Bootstrapped {', '.join(img.repo_tags)} ({img.id})\n")
    return 0


# ---- tug system (images part) ------------------------------------------------------------------


def system_cmd(args: list[str], ctx: Context) -> int:
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write("Usage:  tug system COMMAND\n\nCommands:\n  check   Check the consistency of the "
                         "image store\n  df      Show disk usage\n  prune   Remove unused data\n")
        return 0
    sub, rest = args[0], args[1:]
    if sub == "df":
        return system_df(rest, ctx)
    if sub == "check":
        return system_check(rest, ctx)
    if sub == "prune":
        return system_prune(rest, ctx)
    sys.stderr.write(f"tug: 'system {sub}' is not a tug command.\nSee 'tug system --help'\n")
    return 1


def system_df(args: list[str], ctx: Context) -> int:
    p = _parser("tug system df", "Show disk usage")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--format")
    o = p.parse_args(args)
    from tugboat.cli.image_format import format_rows, human_size

    svc = _service(ctx)
    imgs = svc.list()
    users = _containers_using(ctx.data_root)
    active = [i for i in imgs if i.id in users]
    size = sum(i.size for i in imgs)
    reclaim = sum(i.size for i in imgs if i.id not in users)
    pct = f" ({round(100 * reclaim / size)}%)" if size else ""
    rows = [
        {"Type": "Images", "TotalCount": str(len(imgs)), "Active": str(len(active)),
         "Size": human_size(size), "Reclaimable": human_size(reclaim) + pct},
        {"Type": "Containers", "TotalCount": str(len(set(users.values()))), "Active": "0", "Size": "0B",
         "Reclaimable": "0B"},
        {"Type": "Local Volumes", "TotalCount": "0", "Active": "0", "Size": "0B", "Reclaimable": "0B"},
        {"Type": "Build Cache", "TotalCount": "0", "Active": "0", "Size": "0B", "Reclaimable": "0B"},
    ]
    headers = {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
               "Reclaimable": "RECLAIMABLE"}
    fmt = o.format or "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
    sys.stdout.write(format_rows(fmt, rows, headers))
    if o.verbose:
        sys.stdout.write("\nImages space usage:\n\n")
        sys.stdout.write(format_rows(
            "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.Containers}}",
            _image_rows(imgs, False, users), IMAGE_HEADERS))
    return 0


def system_check(args: list[str], ctx: Context) -> int:
    p = _parser("tug system check", "Check the consistency of the image store (content, snapshots, records)")
    p.add_argument("--repair", action="store_true", help="remove leftovers of interrupted work")
    p.add_argument("--quick", action="store_true", help="do not re-hash every blob")
    p.add_argument("--json", action="store_true")
    o = p.parse_args(args)
    res = _service(ctx).check(repair=o.repair, verify_blobs=not o.quick)
    if o.json:
        sys.stdout.write(json.dumps(res, indent=2) + "\n")
        return 0 if res["ok"] else 1
    for prob in res["problems"]:
        sys.stdout.write(f"PROBLEM: {prob}\n")
    for g in res["garbage"]:
        sys.stdout.write(f"leftover: {g}" + (" (removed)" if o.repair else "") + "\n")
    state = "consistent" if res["ok"] else f"INCONSISTENT ({len(res['problems'])} problems)"
    sys.stdout.write(
        f"store {state}: {res['images']} images, {res['tags']} tags, {res['blobs']} blobs"
        + (f", {len(res['garbage'])} leftovers of interrupted work" if res["garbage"] else "") + "\n"
    )
    return 0 if res["ok"] else 1


def system_prune(args: list[str], ctx: Context) -> int:
    p = _parser("tug system prune", "Remove unused data")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-f", "--force", action="store_true")
    o = p.parse_args(args)
    if not o.force and not _confirm(
        "WARNING! This will remove:\n  - all dangling images\n  - unreferenced image content"
    ):
        return 0
    svc = _service(ctx)
    res = svc.prune(all=o.all, in_use=_in_use(ctx))
    svc.check(repair=True, verify_blobs=False)
    _print_pruned(res)
    return 0
