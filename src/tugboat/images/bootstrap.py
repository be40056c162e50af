"""Base images without an image hub: ``tug image bootstrap busybox | debian:bookworm[-slim]``.

``busybox`` is built from Debian's ``busybox-static`` (the host's installed copy, or the package
fetched with ``apt-get download``): ``/bin/busybox``, one symlink per applet, a minimal ``/etc``.
The layer is reproducible: sorted entries, uid/gid 0, every mtime and the config's ``created`` set
to the busybox binary's mtime (which dpkg takes from the package), gzip without a timestamp.
So the same package version always gives the same layer digest and image ID.

``debian:bookworm`` and ``debian:bookworm-slim`` run ``debootstrap --variant=minbase`` against the
mirror the host's apt sources use; the root filesystem tarball is cached under
``<root>/cache/bootstrap/`` so a second bootstrap reuses it (and gives the same digest).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

from tugboat.errors import InvalidArgument, NotFound, Unavailable
from tugboat.oci import image as oci
from tugboat.oci.image import LayerBlob
from tugboat.oci.reference import parse_reference
from tugboat.snapshots.layer import HashingGzipWriter

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:8:
www-data:x:33:
users:x:100:
nogroup:x:65534:
"""
SHADOW = "root:*:0:0:99999:7:::\nnobody:*:0:0:99999:7:::\n"


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def _dpkg_version(pkg: str) -> str | None:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}\t${Version}", pkg],
            capture_output=True, text=True, check=False,
        )
    except FileNotFoundError:
        return None
    status, _, version = out.stdout.partition("\t")
    return version if out.returncode == 0 and status.endswith("installed") and version else None


def find_busybox(cache_dir: str) -> tuple[str, str]:
    """(path of the static busybox binary from Debian's busybox-static, package version)."""
    version = _dpkg_version("busybox-static")
    if version and os.path.exists("/bin/busybox"):
        return "/bin/busybox", version
    os.makedirs(cache_dir, exist_ok=True)
    debs = [n for n in os.listdir(cache_dir) if n.startswith("busybox-static_") and n.endswith(".deb")]
    if not debs:
        r = subprocess.run(["apt-get", "download", "busybox-static"], cwd=cache_dir,
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise Unavailable(
                "busybox-static is not installed and could not be downloaded "
                f"(apt-get download busybox-static: {r.stderr.strip()})"
            )
        debs = [n for n in os.listdir(cache_dir) if n.startswith("busybox-static_") and n.endswith(".deb")]
    deb = os.path.join(cache_dir, sorted(debs)[-1])
    x = os.path.join(cache_dir, "busybox-static")
    if not os.path.exists(os.path.join(x, "bin", "busybox")):
        subprocess.run(["dpkg-deb", "-x", deb, x], check=True)
    version = os.path.basename(deb).split("_")[1].replace("%3a", ":")
    return os.path.join(x, "bin", "busybox"), version


def _applets(busybox: str) -> list[str]:
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    paths = sorted({p.strip().lstrip("/") for p in out.split() if p.strip()})
    if "bin/sh" not in paths:
        paths.append("bin/sh")
    return sorted(p for p in paths if p != "bin/busybox" and ".." not in p.split("/"))


def busybox_rootfs_tar(busybox: str, out: IO[bytes], mtime: int) -> None:
    """Write the busybox root filesystem tar (reproducible) to ``out``."""
    entries: dict[str, tuple[str, Any]] = {}

    def d(path: str, mode: int = 0o755) -> None:
        entries[path] = ("dir", mode)

    for p in ("bin", "dev", "etc", "home", "proc", "root", "sbin", "sys", "tmp", "usr", "usr/bin",
              "usr/sbin", "var", "var/spool", "var/spool/mail", "var/www", "run"):
        d(p, 0o700 if p == "root" else 0o1777 if p == "tmp" else 0o755)
    for path in _applets(busybox):
        parts = path.split("/")
        for i in range(1, len(parts)):
            entries.setdefault("/".join(parts[:i]), ("dir", 0o755))
        entries[path] = ("symlink", "../" * (len(parts) - 1) + "bin/busybox")
    with open(busybox, "rb") as f:
        entries["bin/busybox"] = ("file", (0o755, f.read()))
    entries["etc/passwd"] = ("file", (0o644, PASSWD.encode()))
    entries["etc/group"] = ("file", (0o644, GROUP.encode()))
    entries["etc/shadow"] = ("file", (0o640, SHADOW.encode()))
    entries["etc/hostname"] = ("file", (0o644, b"busybox\n"))
    entries["etc/nsswitch.conf"] = ("file", (0o644, b"hosts: files dns\n"))
    tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
    for path in sorted(entries):
        kind, val = entries[path]
        ti = tarfile.TarInfo(path)
        ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = mtime, 0, 0, "", ""
        if kind == "dir":
            ti.type, ti.mode = tarfile.DIRTYPE, val
            tf.addfile(ti)
        elif kind == "symlink":
            ti.type, ti.mode, ti.linkname = tarfile.SYMTYPE, 0o777, val
            tf.addfile(ti)
        else:
            mode, data = val
            ti.type, ti.mode, ti.size = tarfile.REGTYPE, mode, len(data)
            tf.addfile(ti, io.BytesIO(data))
    tf.close()


def _gzip_layer(images: Any, write_tar: Callable[[IO[bytes]], None]) -> LayerBlob:
    with images.content.writer() as w:
        gz = HashingGzipWriter(w, level=6)
        write_tar(gz)  # type: ignore[arg-type]
        gz.close()
        digest = w.commit()
        return LayerBlob(digest, oci.OCI_LAYER_GZIP, gz.diff_id, w.size)


def bootstrap_busybox(images: Any, name: str = "busybox:latest") -> Any:
    ref = parse_reference(name)
    cache = os.path.join(images.root, "cache", "bootstrap")
    busybox, version = find_busybox(cache)
    mtime = int(os.stat(busybox).st_mtime)
    with images.lease():
        lb = _gzip_layer(images, lambda out: busybox_rootfs_tar(busybox, out, mtime))
        created = rfc3339(mtime)
        config = {
            "architecture": oci.host_platform().architecture,
            "os": "linux",
            "created": created,
            "config": {"Env": [PATH_ENV], "Cmd": ["sh"],
                       "Labels": {"org.tugboat.bootstrap.source": f"debian busybox-static {version}"}},
            "history": [{"created": created,
                         "created_by": f"tug image bootstrap busybox (Debian busybox-static {version})"}],
        }
        return images.create_image(config, [lb], [str(ref)])


# ---- debian via debootstrap ----------------------------------------------------------------


def host_debian_mirror() -> str:
    """The Debian mirror the host's apt sources use (deb822 or one-line format)."""
    candidates: list[str] = []
    files = ["/etc/apt/sources.list"]
    with contextlib.suppress(FileNotFoundError):
        files += [os.path.join("/etc/apt/sources.list.d", n) for n in sorted(os.listdir("/etc/apt/sources.list.d"))]
    for path in files:
        try:
            with open(path) as fh:
                text = fh.read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in text.split("\n\n"):
                fields = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith("#"):
                        k, v = line.split(":", 1)
                        fields[k.strip().lower()] = v.strip()
                suites = fields.get("suites", "").split()
                if "bookworm" in suites:
                    candidates += fields.get("uris", "").split()
        else:
            for line in text.splitlines():
                w = line.split()
                if len(w) >= 3 and w[0] == "deb":
                    words = [x for x in w[1:] if not x.startswith("[")]
                    if len(words) >= 2 and words[1] == "bookworm":
                        candidates.append(words[0])
    for c in candidates:
        if "security" not in c:
            return c.rstrip("/")
    return "http://deb.debian.org/debian"


SLIM_REMOVE = ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
               "usr/share/lintian", "usr/share/linda", "var/cache/man"]
SLIM_DPKG_CFG = """# tugboat slim image: keep docs, man pages and translations out
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
"""


def _debian_rootfs_tar(images: Any, suite: str, slim: bool, progress: Callable[[str], None]) -> str:
    cache = os.path.join(images.root, "cache", "bootstrap")
    os.makedirs(cache, exist_ok=True)
    tar_path = os.path.join(cache, f"debian-{suite}{'-slim' if slim else ''}.tar")
    if os.path.exists(tar_path):
        progress(f"using cached root filesystem {tar_path}")
        return tar_path
    if shutil.which("debootstrap") is None:
        raise Unavailable("debootstrap is not installed (apt-get install debootstrap)")
    mirror = host_debian_mirror()
    work = tempfile.mkdtemp(prefix="debootstrap-", dir=cache)
    try:
        rootfs = os.path.join(work, "rootfs")
        progress(f"debootstrap --variant=minbase {suite} from {mirror} (takes a few minutes)")
        r = subprocess.run(
            ["debootstrap", "--variant=minbase", "--merged-usr", suite, rootfs, mirror],
            capture_output=True, text=True, check=False,
        )
        if r.returncode != 0:
            raise Unavailable(f"debootstrap failed: {(r.stdout + r.stderr)[-2000:]}")
        epoch = _debian_epoch(rootfs)
        _clean_debian(rootfs, slim, epoch)
        tmp = tar_path + ".tmp"
        with open(tmp, "wb") as out:
            from tugboat.snapshots.layer import write_tree_tar

            write_tree_tar(rootfs, out, overlay=False, mtime=epoch)
        os.rename(tmp, tar_path)
        return tar_path
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _debian_epoch(rootfs: str) -> int:
    """A fixed timestamp for the image: the ``Date:`` of the suite's Release file (the same
    mirror state gives the same timestamp), else the newest Release file's mtime."""
    from email.utils import parsedate_to_datetime

    d = os.path.join(rootfs, "var/lib/apt/lists")
    best = 0
    with contextlib.suppress(FileNotFoundError):
        for n in sorted(os.listdir(d)):
            if not (n.endswith("_Release") or n.endswith("_InRelease")):
                continue
            p = os.path.join(d, n)
            with open(p, errors="replace") as f:
                for line in f:
                    if line.startswith("Date:"):
                        with contextlib.suppress(TypeError, ValueError):
                            best = max(best, int(parsedate_to_datetime(line[5:].strip()).timestamp()))
                        break
            if not best:
                best = max(best, int(os.stat(p).st_mtime))
    return best or int(time.time())


def _clean_debian(rootfs: str, slim: bool, epoch: int) -> None:
    def rm_children(rel: str) -> None:
        p = os.path.join(rootfs, rel)
        with contextlib.suppress(FileNotFoundError):
            for n in os.listdir(p):
                q = os.path.join(p, n)
                if os.path.isdir(q) and not os.path.islink(q):
                    shutil.rmtree(q)
                else:
                    os.unlink(q)

    for rel in ("dev", "proc", "sys", "tmp", "run", "var/lib/apt/lists", "var/cache/apt/archives",
                "var/log", "var/cache/ldconfig"):
        rm_children(rel)
    for rel in ("var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin", "etc/machine-id",
                "var/lib/dbus/machine-id", "etc/hostname"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(rootfs, rel))
    open(os.path.join(rootfs, "etc/machine-id"), "w").close()
    with open(os.path.join(rootfs, "etc/apt/apt.conf.d/docker-clean"), "w") as f:
        f.write('DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };\n'
                'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n')
    shadow = os.path.join(rootfs, "etc/shadow")
    with contextlib.suppress(FileNotFoundError):
        day = str(epoch // 86400)
        lines = []
        with open(shadow) as fh:
            old = fh.read().splitlines()
        for line in old:
            f2 = line.split(":")
            if len(f2) > 2 and f2[2]:
                f2[2] = day
            lines.append(":".join(f2))
        with open(shadow, "w") as f:
            f.write("\n".join(lines) + "\n")
    if slim:
        for rel in SLIM_REMOVE:
            p = os.path.join(rootfs, rel)
            if os.path.isdir(p):
                for n in os.listdir(p):
                    q = os.path.join(p, n)
                    if rel == "usr/share/doc" and os.path.isdir(q):
                        for m in os.listdir(q):
                            if m != "copyright":
                                x = os.path.join(q, m)
                                shutil.rmtree(x) if os.path.isdir(x) and not os.path.islink(x) else os.unlink(x)
                        continue
                    shutil.rmtree(q) if os.path.isdir(q) and not os.path.islink(q) else os.unlink(q)
        os.makedirs(os.path.join(rootfs, "etc/dpkg/dpkg.cfg.d"), exist_ok=True)
        with open(os.path.join(rootfs, "etc/dpkg/dpkg.cfg.d/docker"), "w") as f:
            f.write(SLIM_DPKG_CFG)


def bootstrap_debian(images: Any, name: str, progress: Callable[[str], None] | None = None) -> Any:
    ref = parse_reference(name)
    tag = ref.tag or "bookworm"
    slim = tag.endswith("-slim")
    suite = tag[: -len("-slim")] if slim else tag
    if suite in ("latest", "12", "stable"):
        suite = "bookworm"
    if suite != "bookworm":
        raise InvalidArgument(f"tug image bootstrap: unsupported Debian suite {suite!r} (bookworm only)")
    progress = progress or (lambda s: None)
    tar_path = _debian_rootfs_tar(images, suite, slim, progress)
    epoch = int(os.stat(tar_path).st_mtime)
    with images.lease():
        lb = _gzip_layer(images, lambda out: _copy_file(tar_path, out))
        # the image's created time comes from the tar's newest entry (fixed by the clamp)
        created = rfc3339(_tar_newest_mtime(tar_path) or epoch)
        config = {
            "architecture": oci.host_platform().architecture,
            "os": "linux",
            "created": created,
            "config": {"Env": [PATH_ENV], "Cmd": ["bash"]},
            "history": [{"created": created,
                         "created_by": f"tug image bootstrap debian:{tag} (debootstrap --variant=minbase {suite})"}],
        }
        return images.create_image(config, [lb], [str(ref)])


def _copy_file(path: str, out: IO[bytes]) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            out.write(chunk)


def _tar_newest_mtime(path: str) -> int:
    """The mtime of the first entry (all entries carry the same clamped mtime)."""
    with tarfile.open(path) as tf:
        for ti in tf:
            return int(ti.mtime)
    return 0


def bootstrap(images: Any, name: str, progress: Callable[[str], None] | None = None) -> Any:
    ref = parse_reference(name)
    repo = ref.familiar_name
    if repo == "busybox":
        return bootstrap_busybox(images, str(ref))
    if repo == "debian":
        return bootstrap_debian(images, str(ref), progress)
    from tugboat.build.library import bootstrap_library, known  # builder's library/ Dockerfiles

    if known(name):
        return bootstrap_library(images, name, progress)
    raise NotFound(f"tug image bootstrap: no recipe for {name!r} (known: busybox, debian:bookworm, debian:bookworm-slim)")
