"""From docker's Config/HostConfig to a container record and an OCI runtime config.json."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
from typing import Any

from tugboat.engine.util import ZERO_TIME, now_rfc3339, parse_bytes, read_colon_file_in_root
from tugboat.errors import Conflict, Internal, InvalidArgument, TugError
from tugboat.oci.user import lookup_user

_log = logging.getLogger("tugboat.engine")

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

RESOURCE_KEYS = (
    "CpuShares", "Memory", "NanoCpus", "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems",
    "MemoryReservation", "MemorySwap", "PidsLimit", "BlkioWeight", "KernelMemory", "Ulimits",
)

_INT_FIELDS = {
    "Memory": 0, "MemorySwap": -1, "MemoryReservation": 0, "NanoCpus": 0, "CpuShares": 0,
    "CpuPeriod": 0, "CpuQuota": -1, "PidsLimit": -1, "ShmSize": 0, "BlkioWeight": 0,
    "OomScoreAdj": -1000, "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0,
}


def validate(cfg: dict, host: dict) -> None:
    """Reject wrong types and absurd values with a message naming the field (400)."""
    for key in ("Env", "Cmd", "Entrypoint"):
        v = cfg.get(key)
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            if key != "Env" and isinstance(v, str):
                continue
            raise InvalidArgument(f"invalid value for Config.{key}: must be an array of strings")
    for key in ("Labels",):
        v = cfg.get(key)
        if v is not None and not isinstance(v, dict):
            raise InvalidArgument(f"invalid value for Config.{key}: must be an object")
    if not isinstance(host, dict):
        raise InvalidArgument("invalid value for HostConfig: must be an object")
    for key, lo in _INT_FIELDS.items():
        v = host.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidArgument(f"invalid value for HostConfig.{key}: must be an integer")
        if v < lo:
            if key == "Memory":
                raise InvalidArgument("invalid value for HostConfig.Memory: Minimum memory limit can not be less than 6MB (got a negative value)")
            raise InvalidArgument(f"invalid value for HostConfig.{key}: {v} is negative")
    mem = host.get("Memory") or 0
    if mem and mem < 6 * 1024 * 1024:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    swap = host.get("MemorySwap") or 0
    if swap > 0 and mem and swap < mem:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, see usage")
    ncpu = os.cpu_count() or 1
    nano = host.get("NanoCpus") or 0
    if nano and nano > ncpu * 1_000_000_000:
        raise InvalidArgument(
            f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
        )
    if nano and (host.get("CpuQuota") or 0) > 0:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    rp = host.get("RestartPolicy") or {}
    if rp and not isinstance(rp, dict):
        raise InvalidArgument("invalid value for HostConfig.RestartPolicy: must be an object")
    name = (rp or {}).get("Name") or ""
    if name not in ("", "no", "always", "on-failure", "unless-stopped"):
        raise InvalidArgument(f"invalid restart policy '{name}'")
    if name != "on-failure" and (rp or {}).get("MaximumRetryCount"):
        raise InvalidArgument("invalid restart policy: maximum retry count can only be used with 'on-failure'")
    if host.get("AutoRemove") and name not in ("", "no"):
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
    binds = host.get("Binds")
    if binds is not None and not (isinstance(binds, list) and all(isinstance(b, str) for b in binds)):
        raise InvalidArgument("invalid value for HostConfig.Binds: must be an array of strings")
    cs = host.get("ConsoleSize")
    if cs is not None and not (isinstance(cs, list) and len(cs) == 2 and all(isinstance(x, int) and x >= 0 for x in cs)):
        raise InvalidArgument("invalid value for HostConfig.ConsoleSize")


def _entry_cmd(cfg: dict, icfg: dict) -> tuple[list[str], list[str]]:
    ep = cfg.get("Entrypoint")
    cmd = cfg.get("Cmd")
    if isinstance(ep, str):
        ep = [ep]
    if isinstance(cmd, str):
        cmd = ["/bin/sh", "-c", cmd]
    if ep is not None:
        if ep == [""] or ep == []:
            ep = []
        cmd = cmd or []
    else:
        ep = icfg.get("Entrypoint") or []
        if cmd is None or cmd == []:
            cmd = icfg.get("Cmd") or []
    return list(ep), list(cmd)


def merge_env(image_env: list[str] | None, env: list[str] | None) -> list[str]:
    out: dict[str, str] = {}
    order: list[str] = []
    for e in [*(image_env or []), *(env or [])]:
        k = e.split("=", 1)[0]
        if k not in out:
            order.append(k)
        out[k] = e
    if "PATH" not in out:
        order.insert(0, "PATH")
        out["PATH"] = DEFAULT_PATH
    return [out[k] for k in order]


def fill_defaults(cid: str, cname: str, cfg: dict, host: dict, netcfg: dict, image: Any, icfg: dict) -> dict:
    """The container record (docker's inspect shape) with dockerd's defaults filled in."""
    ep, cmd = _entry_cmd(cfg, icfg)
    args = ep + cmd
    if not args:
        raise InvalidArgument("no command specified")
    config = dict(cfg)
    config["Hostname"] = cfg.get("Hostname") or cid[:12]
    config.setdefault("Domainname", "")
    config["User"] = cfg.get("User") if cfg.get("User") is not None else (icfg.get("User") or "")
    if not config["User"] and icfg.get("User"):
        config["User"] = icfg["User"]
    for k in ("AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin", "StdinOnce"):
        config[k] = bool(cfg.get(k))
    config["Env"] = merge_env(icfg.get("Env"), cfg.get("Env"))
    config["Cmd"] = cmd if cfg.get("Cmd") is not None or not ep else (icfg.get("Cmd") if cfg.get("Entrypoint") is None else cmd)
    config["Cmd"] = cmd
    config["Entrypoint"] = ep or None
    config["WorkingDir"] = cfg.get("WorkingDir") or icfg.get("WorkingDir") or ""
    labels = dict(icfg.get("Labels") or {})
    labels.update(cfg.get("Labels") or {})
    config["Labels"] = labels
    vols = dict(icfg.get("Volumes") or {})
    vols.update(cfg.get("Volumes") or {})
    config["Volumes"] = vols or None
    exposed = dict(icfg.get("ExposedPorts") or {})
    exposed.update(cfg.get("ExposedPorts") or {})
    if exposed:
        config["ExposedPorts"] = exposed
    if not cfg.get("StopSignal") and icfg.get("StopSignal"):
        config["StopSignal"] = icfg["StopSignal"]
    if cfg.get("Healthcheck") is None and icfg.get("Healthcheck"):
        config["Healthcheck"] = icfg["Healthcheck"]
    config.setdefault("OnBuild", None)
    hc = dict(host)
    lc = dict(hc.get("LogConfig") or {})
    lc["Type"] = lc.get("Type") or "json-file"
    lc["Config"] = lc.get("Config") or {}
    hc["LogConfig"] = lc
    nm = hc.get("NetworkMode") or "default"
    hc["NetworkMode"] = "bridge" if nm == "default" else nm
    rp = dict(hc.get("RestartPolicy") or {})
    rp["Name"] = rp.get("Name") or "no"
    rp["MaximumRetryCount"] = int(rp.get("MaximumRetryCount") or 0)
    hc["RestartPolicy"] = rp
    hc.setdefault("AutoRemove", False)
    hc.setdefault("Binds", None)
    hc.setdefault("PortBindings", {})
    hc.setdefault("Privileged", False)
    hc.setdefault("ReadonlyRootfs", False)
    hc.setdefault("ConsoleSize", [0, 0])
    for k in ("Memory", "NanoCpus", "CpuShares", "MemoryReservation", "CpuPeriod", "CpuQuota"):
        hc.setdefault(k, 0)
    hc.setdefault("MemorySwap", 0)
    hc.setdefault("PidsLimit", None)
    hc.setdefault("ShmSize", 67108864)
    if not hc.get("ShmSize"):
        hc["ShmSize"] = 67108864
    hc.setdefault("CapAdd", None)
    hc.setdefault("CapDrop", None)
    hc.setdefault("SecurityOpt", None)
    hc.setdefault("Tmpfs", None)
    hc.setdefault("Init", None)
    hc.setdefault("Runtime", "runc")
    return {
        "Id": cid,
        "Created": now_rfc3339(),
        "Path": args[0],
        "Args": args[1:],
        "State": {
            "Status": "created", "Running": False, "Paused": False, "Restarting": False,
            "OOMKilled": False, "Dead": False, "Pid": 0, "ExitCode": 0, "Error": "",
            "StartedAt": ZERO_TIME, "FinishedAt": ZERO_TIME,
        },
        "Image": image.id,
        "Name": cname,
        "RestartCount": 0,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": hc,
        "GraphDriver": {"Name": "overlay2", "Data": {}},
        "Mounts": [],
        "Config": config,
        "NetworkSettings": {
            "Bridge": "", "SandboxID": "", "SandboxKey": "", "Ports": {},
            "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
            "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": "",
            "Networks": {},
        },
        "Tug": {"NetworkingConfig": netcfg},
    }


# -- user lookup ---------------------------------------------------------------------------------
def resolve_user(rootfs: str, user: str) -> dict:
    """OCI ``process.user`` from docker's ``User`` (name, uid, name:group, uid:gid)."""
    passwd = read_colon_file_in_root(rootfs, "etc/passwd")
    groups = read_colon_file_in_root(rootfs, "etc/group")
    return lookup_user(passwd, groups, user or "0")


def _group_add(rootfs: str, wanted: list[Any]) -> list[int]:
    """``--group-add`` entries (gids or group names of the image's /etc/group) as gids."""
    out: list[int] = []
    groups: list[list[str]] | None = None
    for g in wanted:
        g = str(g)
        if g.isdigit():
            out.append(int(g))
            continue
        if groups is None:
            groups = read_colon_file_in_root(rootfs, "etc/group")
        gid = next((int(e[2]) for e in groups if len(e) >= 3 and e[0] == g and e[2].isdigit()), None)
        if gid is None:
            raise InvalidArgument(f"Unable to find group {g}: no matching entries in group file")
        out.append(gid)
    return out


def _home(rootfs: str, uid: int) -> str:
    for p in read_colon_file_in_root(rootfs, "etc/passwd"):
        if len(p) >= 6 and p[2] == str(uid):
            return p[5]
    return "/"


# -- OCI spec --------------------------------------------------------------------------------------
def _clamp_rlimit(name: str, soft: int, hard: int) -> tuple[int, int]:
    rl = getattr(resource, name, None)
    if rl is None:
        return soft, hard
    with contextlib.suppress(ValueError, OSError):
        _, cur_hard = resource.getrlimit(rl)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard) if hard >= 0 else cur_hard
            soft = min(soft, hard) if soft >= 0 else hard
    return soft, hard


def _cap_names() -> list[str]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    mask = int(line.split()[1], 16)
                    break
            else:
                mask = (1 << 41) - 1
    except OSError:
        mask = (1 << 41) - 1
    names = [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
        "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
        "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
        "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
        "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
        "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
    ]
    return ["CAP_" + n for i, n in enumerate(names) if mask & (1 << i)]


def _norm_cap(c: str) -> str:
    c = c.upper()
    return c if c.startswith("CAP_") else "CAP_" + c


_SECCOMP_CACHE: dict[tuple[str, ...], dict] = {}
_DEFAULT_SPECS: dict[tuple[Any, bool], bytes] = {}


def _default_spec(args: list[str], tty: bool) -> dict:
    """The runtime's default spec for ``args``: built once per TTY setting (it resolves the
    default seccomp profile: ~0.25 ms) and copied by decoding its JSON (~0.03 ms) per start."""
    import msgspec

    from tugboat.runtime import spec as rtspec

    key = (rtspec.default_spec, tty)
    raw = _DEFAULT_SPECS.get(key)
    if raw is None:
        raw = _DEFAULT_SPECS[key] = msgspec.json.encode(rtspec.default_spec(["sh"], terminal=tty))
    spec = msgspec.json.decode(raw)
    spec["process"]["args"] = list(args) if args else ["sh"]
    return spec


def build_spec(engine: Any, c: Any, netinfo: Any) -> dict:
    cfg = c.data["Config"]
    hc = c.data["HostConfig"]
    rootfs = c.tug["Rootfs"]
    tty = bool(cfg.get("Tty"))
    args = [c.data["Path"], *c.data["Args"]]
    if hc.get("Init"):
        args = ["/sbin/docker-init", "--", *args]
    spec = _default_spec(args, tty)
    proc = spec["process"]
    proc["noNewPrivileges"] = False
    user = resolve_user(rootfs, cfg.get("User") or "")
    extra = [g for g in _group_add(rootfs, hc.get("GroupAdd") or []) if g not in (user.get("additionalGids") or [])]
    if extra:
        user["additionalGids"] = [*(user.get("additionalGids") or []), *dict.fromkeys(extra)]
    proc["user"] = user
    env = list(cfg.get("Env") or [])
    keys = {e.split("=", 1)[0] for e in env}
    hostname = cfg.get("Hostname") or c.id[:12]
    if netinfo is not None and getattr(netinfo, "hostname", None):
        hostname = netinfo.hostname
    joined = _etc_files_owner(engine, hc)
    if joined is not None:  # dockerd takes the hostname of the container whose network it joins
        hostname = cfg["Hostname"] = joined.data["Config"].get("Hostname") or joined.id[:12]
    if "HOSTNAME" not in keys:
        env.append(f"HOSTNAME={hostname}")
    if tty and "TERM" not in keys:
        env.append("TERM=xterm")
    if "HOME" not in keys:
        env.append(f"HOME={_home(rootfs, user['uid'])}")
    proc["env"] = env
    proc["cwd"] = cfg.get("WorkingDir") or "/"
    if proc["cwd"] != "/":
        with contextlib.suppress(OSError):
            from tugboat.engine.mounts import secure_join

            d = secure_join(rootfs, proc["cwd"])
            if not os.path.exists(d):
                os.makedirs(d, exist_ok=True)
                os.chown(d, user["uid"], user["gid"])
    if tty:
        size = hc.get("ConsoleSize") or [0, 0]
        if size[0] and size[1]:
            proc["consoleSize"] = {"height": size[0], "width": size[1]}
    # capabilities
    bounding = set(_cap_names())
    if hc.get("Privileged"):
        caps = sorted(bounding)
    else:
        caps = list(proc["capabilities"]["bounding"])
        adds = [_norm_cap(x) for x in hc.get("CapAdd") or []]
        drops = [_norm_cap(x) for x in hc.get("CapDrop") or []]
        if "CAP_ALL" in adds:
            caps = sorted(bounding)
        else:
            caps.extend(a for a in adds if a not in caps)
        caps = [a for a in caps if a in adds] if "CAP_ALL" in drops else [x for x in caps if x not in drops]
        caps = [x for x in caps if x in bounding or not bounding]
    for k in ("bounding", "effective", "permitted"):
        proc["capabilities"][k] = list(caps)
    # security options
    linux = spec["linux"]
    seccomp_off = bool(hc.get("Privileged"))
    for opt in hc.get("SecurityOpt") or []:
        key, _, val = opt.replace(":", "=", 1).partition("=")
        if key == "no-new-privileges":
            proc["noNewPrivileges"] = val in ("", "true", "1")
        elif key == "seccomp":
            if val == "unconfined":
                seccomp_off = True
            else:
                import json as _json

                from tugboat.runtime.spec import resolve_seccomp_profile

                try:
                    with open(val) as f:
                        prof = _json.load(f)
                except (OSError, ValueError) as exc:
                    raise InvalidArgument(f"opening seccomp profile ({val}) failed: {exc}") from None
                linux["seccomp"] = resolve_seccomp_profile(prof, caps)
        elif key in ("label", "apparmor"):
            continue
        else:
            raise InvalidArgument(f"invalid --security-opt: {opt!r}")
    if seccomp_off:
        linux.pop("seccomp", None)
    elif "seccomp" in linux and not any(o.startswith("seccomp") for o in hc.get("SecurityOpt") or []):
        key = tuple(caps)
        prof = _SECCOMP_CACHE.get(key)
        if prof is None:  # the same few capability sets every time: resolve each once
            try:
                from tugboat.runtime.spec import default_seccomp

                prof = default_seccomp(caps)
            except Exception as exc:  # never fall back to no filter at all: refuse the container
                _log.error("loading the default seccomp profile failed", exc_info=True)
                raise Internal(
                    f"cannot load the default seccomp profile ({type(exc).__name__}); refusing to run "
                    "the container unconfined (--security-opt seccomp=unconfined runs it without a filter)"
                ) from None
            _SECCOMP_CACHE[key] = prof
        linux["seccomp"] = prof  # shared: the spec is only serialised, never changed
    if engine.runtime.kind == "runc":
        # runc 1.1 knows only OCI 1.0.2 actions; our profile may use newer ones
        sc = linux.get("seccomp")
        if sc and any(s.get("action") == "SCMP_ACT_KILL_PROCESS" for s in sc.get("syscalls", [])):
            pass
    if hc.get("Privileged"):
        linux["maskedPaths"] = []
        linux["readonlyPaths"] = []
        linux["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
        for m in spec["mounts"]:
            if m["destination"] in ("/sys", "/sys/fs/cgroup"):
                m["options"] = [o for o in m["options"] if o != "ro"]
    # rlimits: Docker passes none by default (inherits); clamp requested ones to our hard limits
    rlimits = []
    for u in hc.get("Ulimits") or []:
        name = "RLIMIT_" + str(u.get("Name", "")).upper()
        soft, hard = _clamp_rlimit(name, int(u.get("Soft", 0)), int(u.get("Hard", 0)))
        rlimits.append({"type": name, "soft": soft, "hard": hard})
    if rlimits:
        proc["rlimits"] = rlimits
    else:
        soft, hard = _clamp_rlimit("RLIMIT_NOFILE", 1048576, 1048576)
        proc["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": soft, "hard": hard}]
    # root, hostname, namespaces
    spec["root"] = {"path": rootfs, "readonly": bool(hc.get("ReadonlyRootfs"))}
    spec["hostname"] = hostname
    ns = [n for n in linux["namespaces"] if n["type"] != "network"]
    nm = hc.get("NetworkMode") or "bridge"
    if netinfo is not None:
        if getattr(netinfo, "netns_path", None):
            ns.append({"type": "network", "path": netinfo.netns_path})
        elif nm != "host":
            ns.append({"type": "network"})
    elif nm != "host":
        ns.append({"type": "network"})
    if nm == "host" or (netinfo is not None and not getattr(netinfo, "netns_path", None) and nm == "host"):
        ns = [n for n in ns if n["type"] != "uts"]
        spec.pop("hostname", None)
    if hc.get("PidMode") == "host":
        ns = [n for n in ns if n["type"] != "pid"]
    ipc_mode = hc.get("IpcMode") or ""
    if ipc_mode == "host":
        ns = [n for n in ns if n["type"] != "ipc"]
    elif ipc_mode.startswith("container:"):
        # join the other container's IPC namespace (SysV IPC, POSIX message queues), as dockerd
        other = engine.get(ipc_mode.split(":", 1)[1])
        opid = int(other.state.get("Pid") or 0)
        if not other.running or not opid:
            raise Conflict(f"cannot join IPC of a non running container: {other.id}")
        ns = [n for n in ns if n["type"] != "ipc"] + [{"type": "ipc", "path": f"/proc/{opid}/ns/ipc"}]
    linux["namespaces"] = ns
    linux["cgroupsPath"] = f"/tugboat/{c.id}"
    linux["resources"].update(_resources(hc))
    # files: hostname, hosts, resolv.conf (as dockerd: a container joined to another's network
    # namespace shares that container's three files instead of writing its own)
    for key, fname in _ETC_FILES:
        c.data[key] = joined.data[key] if joined is not None else os.path.join(c.dir, fname)
    if joined is None:
        _write_etc_files(c, hostname, netinfo)
    mounts = [m for m in spec["mounts"] if m["destination"] != "/dev/shm"]
    shm = int(hc.get("ShmSize") or 67108864)
    mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                   "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm}"]})
    for dest, path in (("/etc/hostname", c.data["HostnamePath"]), ("/etc/hosts", c.data["HostsPath"]),
                       ("/etc/resolv.conf", c.data["ResolvConfPath"])):
        if any(m.get("Destination") == dest for m in c.data.get("Mounts") or []):
            continue
        mounts.append({"destination": dest, "type": "bind", "source": path,
                       "options": ["rbind", "rprivate"]})
    if hc.get("Init"):
        import shutil

        tini = shutil.which("tini-static") or shutil.which("tini") or "/usr/bin/tini"
        mounts.append({"destination": "/sbin/docker-init", "type": "bind", "source": tini,
                       "options": ["bind", "ro"]})
    from tugboat.engine.mounts import oci_mounts

    user_mounts = oci_mounts(c)
    if hc.get("ReadonlyRootfs"):
        # docker's rule: under a read-only rootfs every mount the user did not ask for is read-only
        # too (/etc/hosts, resolv.conf, hostname …), except the kernel's /proc and /dev ones
        user_dests = {m["destination"] for m in user_mounts}
        for i, m in enumerate(mounts):
            if m["destination"] in _RO_EXEMPT or m["destination"] in user_dests:
                continue
            if "ro" not in (m.get("options") or []):
                mounts[i] = {**m, "options": [*(m.get("options") or []), "ro"]}
    mounts.extend(user_mounts)
    spec["mounts"] = mounts
    return spec


_RO_EXEMPT = ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue")


def _resources(hc: dict) -> dict:
    r: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    if hc.get("Memory"):
        mem["limit"] = int(hc["Memory"])
        swap = hc.get("MemorySwap") or 0
        if swap:
            mem["swap"] = int(swap)
    if hc.get("MemoryReservation"):
        mem["reservation"] = int(hc["MemoryReservation"])
    if mem:
        r["memory"] = mem
    cpu: dict[str, Any] = {}
    if hc.get("NanoCpus"):
        cpu["period"] = 100000
        cpu["quota"] = int(hc["NanoCpus"]) * 100000 // 1_000_000_000
    if hc.get("CpuQuota"):
        cpu["quota"] = int(hc["CpuQuota"])
        cpu["period"] = int(hc.get("CpuPeriod") or 100000)
    if hc.get("CpuShares"):
        cpu["shares"] = int(hc["CpuShares"])
    if hc.get("CpusetCpus"):
        cpu["cpus"] = hc["CpusetCpus"]
    if hc.get("CpusetMems"):
        cpu["mems"] = hc["CpusetMems"]
    if cpu:
        r["cpu"] = cpu
    if hc.get("PidsLimit") and int(hc["PidsLimit"]) > 0:
        r["pids"] = {"limit": int(hc["PidsLimit"])}
    return r


def apply_resources_live(c: Any) -> None:
    """``docker update`` on a running container: write the v1 cgroup files of its init directly."""
    from tugboat.engine.rt import _cgroup_paths

    hc = c.data["HostConfig"]
    paths = _cgroup_paths(int(c.state.get("Pid") or 0))
    base = "/sys/fs/cgroup"
    writes = []
    if hc.get("Memory") and "memory" in paths:
        writes.append((f"{base}/memory{paths['memory']}/memory.limit_in_bytes", str(hc["Memory"])))
    if hc.get("NanoCpus") and "cpu" in paths:
        writes.append((f"{base}/cpu{paths['cpu']}/cpu.cfs_period_us", "100000"))
        writes.append((f"{base}/cpu{paths['cpu']}/cpu.cfs_quota_us", str(int(hc["NanoCpus"]) * 100000 // 10**9)))
    if hc.get("CpuShares") and "cpu" in paths:
        writes.append((f"{base}/cpu{paths['cpu']}/cpu.shares", str(hc["CpuShares"])))
    if hc.get("PidsLimit") and "pids" in paths:
        writes.append((f"{base}/pids{paths['pids']}/pids.max", str(hc["PidsLimit"])))
    for p, v in writes:
        try:
            with open(p, "w") as f:
                f.write(v)
        except OSError as exc:
            raise InvalidArgument(f"Cannot update container: {p}: {exc.strerror}") from None


_ETC_FILES = (("HostnamePath", "hostname"), ("HostsPath", "hosts"), ("ResolvConfPath", "resolv.conf"))


def _etc_files_owner(engine: Any, hc: dict) -> Any:
    """The container whose network namespace this one joins (``NetworkMode: container:X``) when
    its hostname/hosts/resolv.conf files exist, else None."""
    mode = hc.get("NetworkMode") or ""
    if not mode.startswith("container:"):
        return None
    try:
        other = engine.get(mode.split(":", 1)[1])
    except TugError:
        return None
    if all(os.path.isfile(other.data.get(key) or "") for key, _ in _ETC_FILES):
        return other
    return None


def _write_etc_files(c: Any, hostname: str, netinfo: Any) -> None:
    from tugboat.engine.util import write_json_atomic  # noqa: F401

    def put(path: str, text: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, path)

    put(c.data["HostnamePath"], hostname + "\n")
    hosts = getattr(netinfo, "hosts", None) if netinfo is not None else None
    if not hosts:
        hosts = (
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
            "ff02::2\tip6-allrouters\n"
        )
        for entry in c.data["HostConfig"].get("ExtraHosts") or []:
            name, _, ip = entry.partition(":")
            if "=" in entry and not ip:
                name, _, ip = entry.partition("=")
            hosts += f"{ip}\t{name}\n"
        hosts += f"127.0.1.1\t{hostname}\n"
    put(c.data["HostsPath"], hosts)
    resolv = getattr(netinfo, "resolv_conf", None) if netinfo is not None else None
    if not resolv:
        hc = c.data["HostConfig"]
        lines = [f"nameserver {d}" for d in hc.get("Dns") or []]
        if hc.get("DnsSearch"):
            lines.append("search " + " ".join(hc["DnsSearch"]))
        if hc.get("DnsOptions"):
            lines.append("options " + " ".join(hc["DnsOptions"]))
        if not lines:
            try:
                with open("/etc/resolv.conf") as f:
                    lines = [ln.rstrip("\n") for ln in f if not ln.startswith("nameserver 127.")]
            except OSError:
                lines = []
        resolv = "\n".join(lines) + "\n"
    put(c.data["ResolvConfPath"], resolv)


def network_spec(c: Any) -> Any:
    from tugboat.network.manager import ContainerNetworkSpec

    cfg = c.data["Config"]
    hc = c.data["HostConfig"]
    netcfg = (c.tug.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    mode = hc.get("NetworkMode") or "bridge"
    aliases: dict[str, list[str]] = {}
    ips: dict[str, str] = {}
    for net, ep in netcfg.items():
        net = mode if net == "default" else net
        if ep and ep.get("Aliases"):
            aliases[net] = list(ep["Aliases"])
        ipam = (ep or {}).get("IPAMConfig") or {}
        if ipam.get("IPv4Address"):
            ips[net] = ipam["IPv4Address"]
    kwargs = dict(
        mode=mode, name=c.name.lstrip("/"), hostname=cfg.get("Hostname") or c.id[:12],
        aliases=aliases, ips=ips, port_bindings=hc.get("PortBindings") or {},
        publish_all=bool(hc.get("PublishAllPorts")), exposed_ports=list((cfg.get("ExposedPorts") or {}).keys()),
        dns=list(hc.get("Dns") or []), dns_search=list(hc.get("DnsSearch") or []),
        dns_options=list(hc.get("DnsOptions") or []), extra_hosts=list(hc.get("ExtraHosts") or []),
    )
    if mode.startswith("container:"):
        kwargs["mode"] = mode
    elif mode not in ("host", "none"):  # network helper: the other EndpointsConfig networks too
        kwargs["extra_networks"] = [n for n in netcfg if n not in (mode, "default")]
    return ContainerNetworkSpec(**kwargs)


def network_settings(info: Any, c: Any) -> dict:
    ns = dict(c.data.get("NetworkSettings") or {})
    networks = dict(getattr(info, "networks", {}) or {})
    ns["Networks"] = networks
    ns["Ports"] = dict(getattr(info, "ports", {}) or {})
    ns["SandboxKey"] = getattr(info, "netns_path", "") or ""
    first = next(iter(networks.values()), None)
    if first and "bridge" in networks:
        first = networks["bridge"]
        ns["IPAddress"] = first.get("IPAddress", "")
        ns["IPPrefixLen"] = first.get("IPPrefixLen", 0)
        ns["Gateway"] = first.get("Gateway", "")
        ns["MacAddress"] = first.get("MacAddress", "")
    return ns


_ = parse_bytes
