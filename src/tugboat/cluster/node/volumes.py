"""Pod volumes on the node's disk: ``<root>/pods/<uid>/volumes/<plugin>/<name>``.

emptyDir (a directory; ``medium: Memory`` a tmpfs with ``sizeLimit``), hostPath, configMap, secret,
downwardAPI and projected (files written atomically), persistentVolumeClaim (the bound PV's
``local.path``/``hostPath.path``, created if missing; its data outlives the pod). Containers get
them as bind mounts (:func:`container_mounts`, honouring ``subPath`` and ``readOnly``).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from typing import Any

from tugboat.cluster.client.util import quantity
from tugboat.cluster.node.cri import Mount
from tugboat.cluster.node.podspec import ConfigError, field_ref, resource_ref
from tugboat.util.fs import write_atomic


def _write(path: str, data: bytes, mode: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, data, mode=mode)


def _safe_rel(p: str) -> str:
    p = os.path.normpath(p)
    if p.startswith("..") or os.path.isabs(p):
        raise ConfigError(f"invalid path {p!r}: must be relative and may not contain '..'")
    return p


def _items(data: Mapping[str, bytes], items: list[dict] | None, name: str, kind: str,
           optional: bool) -> dict[str, tuple[bytes, int | None]]:
    out: dict[str, tuple[bytes, int | None]] = {}
    if items:
        for it in items:
            if it["key"] not in data:
                if optional:
                    continue
                raise ConfigError(f"configmap references non-existent config key: {it['key']}" if kind == "configmap"
                                  else f"references non-existent secret key: {it['key']}")
            out[_safe_rel(it.get("path") or it["key"])] = (data[it["key"]], it.get("mode"))
    else:
        for k, v in data.items():
            out[k] = (v, None)
    return out


def _cm_data(obj: dict) -> dict[str, bytes]:
    d = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    d.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return d


def _secret_data(obj: dict) -> dict[str, bytes]:
    d = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    d.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
    return d


def _downward(pod: dict, items: list[dict], node_allocatable: Mapping[str, str]) -> dict[str, tuple[bytes, int | None]]:
    out: dict[str, tuple[bytes, int | None]] = {}
    for it in items or []:
        if it.get("fieldRef"):
            val = field_ref(pod, it["fieldRef"]["fieldPath"])
        elif it.get("resourceFieldRef"):
            ref = it["resourceFieldRef"]
            c = next((c for c in (pod.get("spec") or {}).get("containers") or []
                      if c.get("name") == ref.get("containerName")), {})
            val = resource_ref(c, ref, node_allocatable)
        else:
            continue
        out[_safe_rel(it["path"])] = (val.encode(), it.get("mode"))
    return out


def _fill(dirpath: str, files: dict[str, tuple[bytes, int | None]], default_mode: int) -> None:
    os.makedirs(dirpath, exist_ok=True)
    for rel, (data, mode) in files.items():
        _write(os.path.join(dirpath, rel), data, mode if mode is not None else default_mode)


def pod_dir(root: str, uid: str) -> str:
    return os.path.join(root, "pods", uid)


POD_SHM_SIZE = 64 * 1024 * 1024  # the size dockerd and the kubelet give a sandbox's /dev/shm


def pod_shm(root: str, uid: str, size: int = POD_SHM_SIZE) -> str:
    """The pod's /dev/shm: a tmpfs at ``<pod dir>/shm`` (mounted once; :func:`cleanup_pod_dir`
    unmounts it), bound into every container of the pod so POSIX shared memory is shared."""
    from tugboat.snapshots.mount import mount

    d = os.path.join(pod_dir(root, uid), "shm")
    os.makedirs(d, exist_ok=True)
    if not os.path.ismount(d):
        ms_nosuid, ms_nodev, ms_noexec = 2, 4, 8
        mount("shm", d, "tmpfs", ms_nosuid | ms_nodev | ms_noexec, f"mode=1777,size={size}")
    return d


def prepare_volumes(root: str, pod: dict[str, Any], *, configmaps: Mapping[str, dict | None],
                    secrets: Mapping[str, dict | None], pv_paths: Mapping[str, str],
                    node_allocatable: Mapping[str, str] | None = None,
                    sa_tokens: Mapping[str, bytes] | None = None) -> dict[str, str]:
    """Make every volume of the pod; returns volume name -> host path. ``sa_tokens``: the tokens of
    projected ``serviceAccountToken`` sources by ``VOLUME/SOURCE-INDEX`` (see :mod:`.satokens`)."""
    uid = pod["metadata"]["uid"]
    base = os.path.join(pod_dir(root, uid), "volumes")
    alloc = node_allocatable or {}
    out: dict[str, str] = {}
    for v in (pod.get("spec") or {}).get("volumes") or []:
        name = v["name"]
        if "emptyDir" in v:
            d = os.path.join(base, "empty-dir", name)
            os.makedirs(d, exist_ok=True)
            ed = v.get("emptyDir") or {}
            if ed.get("medium") == "Memory" and not os.path.ismount(d):
                opts = "mode=0777"
                if ed.get("sizeLimit"):
                    opts += f",size={int(quantity(ed['sizeLimit']))}"
                subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", d], check=True, capture_output=True)
            else:  # (keeping the set-group-ID bit an fsGroup gave it)
                os.chmod(d, 0o777 | (os.stat(d).st_mode & stat.S_ISGID))
            out[name] = d
        elif "hostPath" in v:
            hp = v["hostPath"]
            path, typ = hp["path"], hp.get("type") or ""
            if typ == "DirectoryOrCreate":
                os.makedirs(path, exist_ok=True)
            elif typ == "FileOrCreate" and not os.path.exists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "a").close()
            elif typ == "Directory" and not os.path.isdir(path):
                raise ConfigError(f"hostPath type check failed: {path} is not a directory")
            elif typ == "File" and not os.path.isfile(path):
                raise ConfigError(f"hostPath type check failed: {path} is not a file")
            out[name] = path
        elif "configMap" in v:
            src = v["configMap"]
            obj = configmaps.get(src["name"])
            d = os.path.join(base, "configmap", name)
            if obj is None and not src.get("optional"):
                raise ConfigError(f'configmap "{src["name"]}" not found')
            files = _items(_cm_data(obj) if obj else {}, src.get("items"), src["name"], "configmap",
                           bool(src.get("optional")))
            _fill(d, files, src.get("defaultMode", 0o644))
            out[name] = d
        elif "secret" in v:
            src = v["secret"]
            obj = secrets.get(src["secretName"])
            d = os.path.join(base, "secret", name)
            if obj is None and not src.get("optional"):
                raise ConfigError(f'secret "{src["secretName"]}" not found')
            files = _items(_secret_data(obj) if obj else {}, src.get("items"), src["secretName"], "secret",
                           bool(src.get("optional")))
            _fill(d, files, src.get("defaultMode", 0o644))
            out[name] = d
        elif "downwardAPI" in v:
            src = v["downwardAPI"]
            d = os.path.join(base, "downward-api", name)
            _fill(d, _downward(pod, src.get("items") or [], alloc), src.get("defaultMode", 0o644))
            out[name] = d
        elif "projected" in v:
            src = v["projected"]
            d = os.path.join(base, "projected", name)
            files: dict[str, tuple[bytes, int | None]] = {}
            for i, s in enumerate(src.get("sources") or []):
                if s.get("serviceAccountToken"):
                    tok = (sa_tokens or {}).get(f"{name}/{i}")
                    if tok is None:
                        raise ConfigError(f"volume {name}: no service account token was issued for this pod")
                    files[_safe_rel(s["serviceAccountToken"].get("path") or "token")] = (tok, None)
                elif s.get("configMap"):
                    cm = s["configMap"]
                    obj = configmaps.get(cm["name"])
                    if obj is None and not cm.get("optional"):
                        raise ConfigError(f'configmap "{cm["name"]}" not found')
                    files.update(_items(_cm_data(obj) if obj else {}, cm.get("items"), cm["name"], "configmap",
                                        bool(cm.get("optional"))))
                elif s.get("secret"):
                    sc = s["secret"]
                    obj = secrets.get(sc["name"])
                    if obj is None and not sc.get("optional"):
                        raise ConfigError(f'secret "{sc["name"]}" not found')
                    files.update(_items(_secret_data(obj) if obj else {}, sc.get("items"), sc["name"], "secret",
                                        bool(sc.get("optional"))))
                elif s.get("downwardAPI"):
                    files.update(_downward(pod, s["downwardAPI"].get("items") or [], alloc))
            _fill(d, files, src.get("defaultMode", 0o644))
            out[name] = d
        elif "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]["claimName"]
            path = pv_paths.get(claim)
            if not path:
                raise ConfigError(f'persistentvolumeclaim "{claim}" is not bound')
            os.makedirs(path, exist_ok=True)
            out[name] = path
        else:
            kind = next((k for k in v if k != "name"), "?")
            raise ConfigError(f"volume {name}: type {kind} is not supported on this node")
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    if psc.get("fsGroup") is not None:
        gid = int(psc["fsGroup"])
        for v in (pod.get("spec") or {}).get("volumes") or []:
            kind = next((k for k in v if k != "name"), "")
            if kind not in _OWNERSHIP_MANAGED or v["name"] not in out:
                continue
            ro = kind in _OWNERSHIP_READ_ONLY
            if psc.get("fsGroupChangePolicy") == "OnRootMismatch" and _root_owned(out[v["name"]], gid, ro):
                continue
            set_volume_ownership(out[v["name"]], gid, read_only=ro)
    return out


# the volume plugins whose ownership the kubelet manages (hostPath is left as it is)
_OWNERSHIP_MANAGED = ("emptyDir", "configMap", "secret", "downwardAPI", "projected", "persistentVolumeClaim")
_OWNERSHIP_READ_ONLY = ("configMap", "secret", "downwardAPI", "projected")


def _root_owned(path: str, gid: int, read_only: bool) -> bool:
    """fsGroupChangePolicy OnRootMismatch: the volume's top directory already has the group and
    the permissions (then the walk is skipped, as the kubelet does)."""
    st = os.stat(path)
    want = stat.S_ISGID | (0o050 if read_only else 0o070)
    return st.st_gid == gid and st.st_mode & want == want


def set_volume_ownership(path: str, gid: int, *, read_only: bool) -> None:
    """The kubelet's SetVolumeOwnership for ``fsGroup``: every file and directory gets the group,
    group read (+ write unless read-only), directories set-group-ID and search, executables group
    execute. Symbolic links are re-grouped, never followed."""
    rw = 0o440 if read_only else 0o660

    def fix(p: str, is_dir: bool) -> None:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            os.lchown(p, -1, gid)
            return
        mask = rw
        if is_dir:
            mask |= stat.S_ISGID | 0o110
        elif st.st_mode & 0o100:
            mask |= 0o110
        os.lchown(p, -1, gid)
        os.chmod(p, stat.S_IMODE(st.st_mode) | mask)

    fix(path, True)
    for dirpath, dirnames, filenames in os.walk(path):
        for d in dirnames:
            fix(os.path.join(dirpath, d), not os.path.islink(os.path.join(dirpath, d)))
        for f in filenames:
            fix(os.path.join(dirpath, f), False)


_READ_ONLY_PLUGINS = ("configmap", "secret", "downward-api", "projected")


def container_mounts(container: dict[str, Any], volumes: Mapping[str, str], *,
                     termination_log: str | None = None) -> list[Mount]:
    out: list[Mount] = []
    for vm in container.get("volumeMounts") or []:
        src = volumes.get(vm["name"])
        if src is None:
            raise ConfigError(f'volumeMount "{vm["name"]}" refers to a volume the pod does not define')
        # as the kubelet: configMap, secret, downwardAPI and projected volumes are always read-only
        plugin_dir = os.path.dirname(src)
        read_only = bool(vm.get("readOnly")) or (
            os.path.basename(os.path.dirname(plugin_dir)) == "volumes"
            and os.path.basename(plugin_dir) in _READ_ONLY_PLUGINS)
        if vm.get("subPath"):
            src = os.path.join(src, _safe_rel(vm["subPath"]))
            if not os.path.exists(src):
                os.makedirs(src, exist_ok=True)
        out.append(Mount(src, vm["mountPath"], read_only))
    if termination_log:
        path = container.get("terminationMessagePath") or "/dev/termination-log"
        out.append(Mount(termination_log, path, False))
    return out


def cleanup_pod_dir(root: str, uid: str) -> None:
    d = pod_dir(root, uid)
    if not os.path.isdir(d):
        return
    from tugboat.snapshots.mount import MNT_DETACH, umount

    for dirpath, _dirs, _files in os.walk(d, topdown=False):
        if os.path.ismount(dirpath):
            try:
                umount(dirpath, MNT_DETACH)
            except OSError:
                subprocess.run(["umount", "-l", dirpath], capture_output=True)
    with contextlib.suppress(OSError):
        shutil.rmtree(d)
