"""Container mounts: ``-v``/``Binds``, ``--mount``, ``--tmpfs``, image VOLUMEs, ``--volumes-from``.

:func:`resolve_mounts` turns a container's HostConfig into docker's ``Mounts`` entries (creating
named and anonymous volumes, with Docker's copy-up of the image content); :func:`oci_mounts` turns
those entries into OCI mounts; :func:`secure_join` resolves a path inside a root without ever
leaving it (symlinks are resolved relative to the root).
"""

from __future__ import annotations

import os
import posixpath
import subprocess
from typing import Any

from tugboat.errors import InvalidArgument, NotFound
from tugboat.util.fs import scoped_join


def secure_join(root: str, path: str, *, follow_last: bool = True) -> str:
    """``root``/``path`` with every symlink resolved as if ``root`` were ``/``."""
    return scoped_join(os.path.realpath(root), path, follow_last=follow_last, max_hops=255)


def _parse_bind(spec: str) -> dict:
    parts = spec.split(":")
    if len(parts) == 1:
        return {"src": "", "dst": parts[0], "opts": []}
    if len(parts) == 2:
        if parts[1].startswith("/"):
            return {"src": parts[0], "dst": parts[1], "opts": []}
        return {"src": "", "dst": parts[0], "opts": parts[1].split(",")}
    if len(parts) == 3:
        return {"src": parts[0], "dst": parts[1], "opts": parts[2].split(",")}
    raise InvalidArgument(f"invalid volume specification: '{spec}'")


def resolve_mounts(engine: Any, c: Any, icfg: dict) -> list[dict]:
    hc = c.data["HostConfig"]
    rootfs = c.tug["Rootfs"]
    out: list[dict] = []
    seen: set[str] = set()

    def add_volume(name: str | None, dst: str, rw: bool, nocopy: bool = False,
                   labels: dict | None = None, anonymous: bool = False) -> None:
        vol, created = engine.volumes.create(name or None, labels=labels, anonymous=anonymous)
        name = vol["Name"]
        if created:
            engine.events.emit("volume", "create", name, {"driver": "local"})
        meta = engine.volumes.meta(name)
        src = engine.volumes.mountpoint(name)
        if not nocopy and not meta.get("CopiedUp") and not os.listdir(src):
            _copy_up(rootfs, dst, src)
            engine.volumes.set_meta(name, CopiedUp=True)
        out.append({"Type": "volume", "Name": name, "Source": src, "Destination": dst,
                    "Driver": "local", "Mode": "z" if rw else "ro", "RW": rw, "Propagation": "",
                    "Tug_Anonymous": bool(anonymous or "com.docker.volume.anonymous" in (vol.get("Labels") or {}))})
        seen.add(dst)

    for spec in hc.get("Binds") or []:
        b = _parse_bind(spec)
        dst = b["dst"]
        if not dst.startswith("/"):
            raise InvalidArgument(f"invalid mount config: destination {dst!r} must be an absolute path")
        opts = b["opts"]
        rw = "ro" not in opts
        if dst in seen:
            raise InvalidArgument(f"Duplicate mount point: {dst}")
        if b["src"].startswith("/"):
            src = b["src"]
            if not os.path.exists(src):
                os.makedirs(src, exist_ok=True)
            prop = next((o for o in opts if o in ("shared", "rshared", "slave", "rslave", "private", "rprivate")), "rprivate")
            out.append({"Type": "bind", "Source": src, "Destination": dst, "Mode": ",".join(o for o in opts if o not in ("rw",)),
                        "RW": rw, "Propagation": prop})
            seen.add(dst)
        else:
            add_volume(b["src"] or None, dst, rw, nocopy="nocopy" in opts, anonymous=not b["src"])
    for m in hc.get("Mounts") or []:
        typ = (m.get("Type") or "volume").lower()
        dst = m.get("Target") or m.get("Destination") or ""
        if not dst.startswith("/"):
            raise InvalidArgument(f"invalid mount config for type \"{typ}\": invalid mount path: '{dst}' mount path must be absolute")
        if dst in seen:
            raise InvalidArgument(f"Duplicate mount point: {dst}")
        rw = not m.get("ReadOnly")
        if typ == "bind":
            src = m.get("Source") or ""
            if not os.path.exists(src):
                raise InvalidArgument(f'invalid mount config for type "bind": bind source path does not exist: {src}')
            prop = (m.get("BindOptions") or {}).get("Propagation") or "rprivate"
            out.append({"Type": "bind", "Source": src, "Destination": dst, "Mode": "", "RW": rw, "Propagation": prop})
            seen.add(dst)
        elif typ == "volume":
            vo = m.get("VolumeOptions") or {}
            add_volume(m.get("Source") or None, dst, rw, nocopy=bool(vo.get("NoCopy")),
                       labels=vo.get("Labels"), anonymous=not m.get("Source"))
        elif typ == "tmpfs":
            to = m.get("TmpfsOptions") or {}
            opts = []
            if to.get("SizeBytes"):
                opts.append(f"size={int(to['SizeBytes'])}")
            if to.get("Mode"):
                opts.append(f"mode={int(to['Mode']):o}")
            out.append({"Type": "tmpfs", "Source": "", "Destination": dst, "Mode": ",".join(opts), "RW": rw,
                        "Propagation": ""})
            seen.add(dst)
        else:
            raise InvalidArgument(f"mount type unknown: {typ!r}")
    for dst, opts in (hc.get("Tmpfs") or {}).items():
        if dst in seen:
            raise InvalidArgument(f"Duplicate mount point: {dst}")
        out.append({"Type": "tmpfs", "Source": "", "Destination": dst, "Mode": opts or "", "RW": "ro" not in (opts or "").split(","),
                    "Propagation": ""})
        seen.add(dst)
    for ref in hc.get("VolumesFrom") or []:
        name, _, mode = ref.partition(":")
        other = engine.get(name)
        for m in other.data.get("Mounts") or []:
            if m["Destination"] in seen:
                continue
            mm = dict(m)
            mm["Tug_Anonymous"] = False
            if mode == "ro":
                mm["RW"] = False
            out.append(mm)
            seen.add(m["Destination"])
    for dst in sorted((c.data["Config"].get("Volumes") or {}).keys()):
        if dst in seen or not dst.startswith("/"):
            continue
        add_volume(None, dst, True, anonymous=True)
    return out


def _copy_up(rootfs: str, dst: str, volume_dir: str) -> None:
    """Docker's copy-up: a new volume starts with the image's content at the mount point."""
    src = secure_join(rootfs, dst)
    if not os.path.isdir(src):
        return
    if not os.listdir(src):
        st = os.stat(src)
        os.chown(volume_dir, st.st_uid, st.st_gid)
        os.chmod(volume_dir, st.st_mode & 0o7777)
        return
    subprocess.run(["cp", "-a", "--", src + "/.", volume_dir + "/"], check=False, capture_output=True)
    st = os.stat(src)
    os.chown(volume_dir, st.st_uid, st.st_gid)
    os.chmod(volume_dir, st.st_mode & 0o7777)


def oci_mounts(c: Any) -> list[dict]:
    out = []
    rootfs = os.path.realpath(c.tug["Rootfs"])  # once, not per mount (an lstat per component)
    for m in c.data.get("Mounts") or []:
        dst = m["Destination"]
        if m["Type"] == "tmpfs":
            opts = ["nosuid", "nodev", "noexec"] if "exec" not in (m.get("Mode") or "") else ["nosuid", "nodev"]
            for o in (m.get("Mode") or "").split(","):
                if o and o not in ("rw", "exec"):
                    opts.append(o)
            if not m.get("RW") and "ro" not in opts:
                opts.append("ro")
            out.append({"destination": dst, "type": "tmpfs", "source": "tmpfs", "options": opts})
            continue
        src = m["Source"]
        if not os.path.exists(src):
            raise NotFound(f"mount source {src!r} of {dst} does not exist")
        target = scoped_join(rootfs, dst, max_hops=255)  # = secure_join, rootfs resolved above
        if not os.path.lexists(target):
            if os.path.isdir(src):
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                open(target, "a").close()
        prop = m.get("Propagation") or "rprivate"
        opts = ["rbind", prop]
        if not m.get("RW"):
            opts.append("ro")
        out.append({"destination": posixpath.normpath(dst), "type": "bind", "source": src, "options": opts})
    return out
