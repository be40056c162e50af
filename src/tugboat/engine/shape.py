"""dockerd's shape of `GET /containers/{id}/json`: its field order and the zero values it always
sends (Go structs), so clients that print the JSON (`docker inspect`, `{{json .HostConfig}}`,
docker-py's ``attrs``) see what dockerd would show. Records keep only what we set; this module is
applied to a copy on the way out.
"""

from __future__ import annotations

from typing import Any

_OMIT = object()  # a Go `omitempty` field: sent only when set

CONTAINER: list[tuple[str, Any]] = [
    ("Id", ""), ("Created", ""), ("Path", ""), ("Args", []), ("State", {}), ("Image", ""),
    ("ResolvConfPath", ""), ("HostnamePath", ""), ("HostsPath", ""), ("LogPath", ""), ("Node", _OMIT),
    ("Name", ""), ("RestartCount", 0), ("Driver", ""), ("Platform", ""), ("ImageManifestDescriptor", _OMIT),
    ("MountLabel", ""), ("ProcessLabel", ""), ("AppArmorProfile", ""), ("ExecIDs", None), ("HostConfig", {}),
    ("GraphDriver", {}), ("SizeRw", _OMIT), ("SizeRootFs", _OMIT), ("Mounts", []), ("Config", {}),
    ("NetworkSettings", {}),
]

HOST_CONFIG: list[tuple[str, Any]] = [
    ("Binds", None), ("ContainerIDFile", ""), ("LogConfig", {"Type": "json-file", "Config": {}}),
    ("NetworkMode", ""), ("PortBindings", {}), ("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0}),
    ("AutoRemove", False), ("VolumeDriver", ""), ("VolumesFrom", None), ("ConsoleSize", [0, 0]),
    ("Annotations", _OMIT), ("CapAdd", None), ("CapDrop", None), ("CgroupnsMode", ""), ("Dns", []),
    ("DnsOptions", []), ("DnsSearch", []), ("ExtraHosts", None), ("GroupAdd", None), ("IpcMode", ""),
    ("Cgroup", ""), ("Links", None), ("OomScoreAdj", 0), ("PidMode", ""), ("Privileged", False),
    ("PublishAllPorts", False), ("ReadonlyRootfs", False), ("SecurityOpt", None), ("StorageOpt", _OMIT),
    ("Tmpfs", _OMIT), ("UTSMode", ""), ("UsernsMode", ""), ("ShmSize", 0), ("Sysctls", _OMIT),
    ("Runtime", ""), ("Isolation", ""), ("CpuShares", 0), ("Memory", 0), ("NanoCpus", 0),
    ("CgroupParent", ""), ("BlkioWeight", 0), ("BlkioWeightDevice", None), ("BlkioDeviceReadBps", None),
    ("BlkioDeviceWriteBps", None), ("BlkioDeviceReadIOps", None), ("BlkioDeviceWriteIOps", None),
    ("CpuPeriod", 0), ("CpuQuota", 0), ("CpuRealtimePeriod", 0), ("CpuRealtimeRuntime", 0),
    ("CpusetCpus", ""), ("CpusetMems", ""), ("Devices", None), ("DeviceCgroupRules", None),
    ("DeviceRequests", None), ("KernelMemoryTCP", _OMIT), ("MemoryReservation", 0), ("MemorySwap", 0),
    ("MemorySwappiness", None), ("OomKillDisable", None), ("PidsLimit", None), ("Ulimits", None),
    ("CpuCount", 0), ("CpuPercent", 0), ("IOMaximumIOps", 0), ("IOMaximumBandwidth", 0),
    ("Mounts", _OMIT), ("MaskedPaths", None), ("ReadonlyPaths", None), ("Init", _OMIT),
]

CONFIG: list[tuple[str, Any]] = [
    ("Hostname", ""), ("Domainname", ""), ("User", ""), ("AttachStdin", False), ("AttachStdout", False),
    ("AttachStderr", False), ("ExposedPorts", _OMIT), ("Tty", False), ("OpenStdin", False),
    ("StdinOnce", False), ("Env", None), ("Cmd", None), ("Healthcheck", _OMIT), ("ArgsEscaped", _OMIT),
    ("Image", ""), ("Volumes", None), ("WorkingDir", ""), ("Entrypoint", None),
    ("NetworkDisabled", _OMIT), ("MacAddress", _OMIT), ("OnBuild", None), ("Labels", None),
    ("StopSignal", _OMIT), ("StopTimeout", _OMIT), ("Shell", _OMIT),
]

NETWORK_SETTINGS: list[tuple[str, Any]] = [
    ("Bridge", ""), ("SandboxID", ""), ("SandboxKey", ""), ("Ports", {}), ("HairpinMode", False),
    ("LinkLocalIPv6Address", ""), ("LinkLocalIPv6PrefixLen", 0), ("SecondaryIPAddresses", None),
    ("SecondaryIPv6Addresses", None), ("EndpointID", ""), ("Gateway", ""), ("GlobalIPv6Address", ""),
    ("GlobalIPv6PrefixLen", 0), ("IPAddress", ""), ("IPPrefixLen", 0), ("IPv6Gateway", ""),
    ("MacAddress", ""), ("Networks", {}),
]

GRAPH_DRIVER: list[tuple[str, Any]] = [("Data", {}), ("Name", "")]

MOUNT_POINT: list[tuple[str, Any]] = [
    ("Type", _OMIT), ("Name", _OMIT), ("Source", ""), ("Destination", ""), ("Driver", _OMIT), ("Mode", ""),
    ("RW", False), ("Propagation", ""),
]


def _empty(v: Any) -> bool:
    return v is None or v == "" or (v == 0 and not isinstance(v, bool)) or v is False or v in ([], {})


def ordered(d: dict, fields: list[tuple[str, Any]]) -> dict:
    """``d`` with Go's field order; missing fields get their zero value (omitempty ones stay out,
    as do empty values of omitempty fields); fields Go does not know keep their place at the end."""
    out: dict = {}
    for key, zero in fields:
        if key in d:
            if zero is _OMIT and _empty(d[key]):
                continue
            out[key] = d[key]
        elif zero is not _OMIT:
            out[key] = zero.copy() if isinstance(zero, (dict, list)) else zero
    for key, v in d.items():
        if key not in out and not any(key == k for k, _ in fields):
            out[key] = v
    return out


def container(d: dict) -> dict:
    """The inspect document of a container (a copy of the record without private fields)."""
    out = ordered(d, CONTAINER)
    if isinstance(out.get("HostConfig"), dict):
        out["HostConfig"] = ordered(out["HostConfig"], HOST_CONFIG)
    if isinstance(out.get("Config"), dict):
        out["Config"] = ordered(out["Config"], CONFIG)
    if isinstance(out.get("NetworkSettings"), dict):
        out["NetworkSettings"] = ordered(out["NetworkSettings"], NETWORK_SETTINGS)
    if isinstance(out.get("GraphDriver"), dict):
        out["GraphDriver"] = ordered(out["GraphDriver"], GRAPH_DRIVER)
    if isinstance(out.get("Mounts"), list):
        out["Mounts"] = [ordered(m, MOUNT_POINT) if isinstance(m, dict) else m for m in out["Mounts"]]
    return out
