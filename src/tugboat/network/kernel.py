"""The kernel edge of the network area: network namespaces, netlink (pyroute2), sysctls.

Network namespaces are made without forking: a short-lived thread calls ``unshare(CLONE_NEWNET)``
(which moves only that thread), bind-mounts its ``/proc/self/task/<tid>/ns/net`` at the path the
runtime will join, and opens the sockets we need inside (a netlink socket for pyroute2, the
embedded DNS listeners). A socket stays in the namespace it was created in whichever thread uses
it later, so everything after that runs in the daemon's ordinary threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tugboat.errors import Internal, Unavailable

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2
NETLINK_ROUTE = 0
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def run_in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread (whose namespaces it may change) and return its result."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    th = threading.Thread(target=target, name="tug-netns", daemon=True)
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def create_netns(path: str, then: Callable[[], T] | None = None) -> T | None:
    """Create a new network namespace bind-mounted at ``path``; run ``then()`` inside it."""

    def work() -> T | None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o444)
        os.close(fd)
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        _check(_libc.mount(src, path.encode(), None, MS_BIND, None), f"bind mount of netns at {path}")
        return then() if then is not None else None

    return run_in_thread(work)


def in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` with the calling context switched into the netns at ``path`` (in a thread)."""

    def work() -> T:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"setns({path})")
        finally:
            os.close(fd)
        return fn()

    return run_in_thread(work)


def remove_netns(path: str) -> None:
    """Unmount and delete a netns bind mount (idempotent)."""
    for _ in range(4):  # a path may carry stacked mounts (e.g. propagated back): peel them all
        rc = _libc.umount2(path.encode(), MNT_DETACH)
        if rc != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):
                raise OSError(err, f"umount {path}: {os.strerror(err)}")
            break
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def is_netns_mount(path: str) -> bool:
    """Whether ``path`` is a live netns bind mount (nsfs)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4 and parts[4] == path:
                    return True
    except OSError:
        return False
    return False


def lo_up() -> None:
    """Bring ``lo`` up in the calling thread's netns (one ioctl; no netlink round trips)."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))


CONTAINER_SYSCTLS = (
    # IPv4-only networks: no IPv6 link-local chatter from containers (docker does the same)
    ("net/ipv6/conf/all/disable_ipv6", "1"),
    ("net/ipv6/conf/default/disable_ipv6", "1"),
    # docker's defaults: any user may bind low ports and ping inside the container's netns
    ("net/ipv4/ip_unprivileged_port_start", "0"),
    ("net/ipv4/ping_group_range", "0 2147483647"),
)


def container_sysctls() -> None:
    """Docker's per-container network sysctls, in the calling thread's (new) netns."""
    for key, value in CONTAINER_SYSCTLS:
        try:
            fd = os.open("/proc/sys/" + key, os.O_WRONLY)
        except OSError:
            continue
        try:
            os.write(fd, value.encode())
        except OSError:
            pass
        finally:
            os.close(fd)


def netlink_socket() -> socket.socket:
    """A rtnetlink socket in the calling thread's current netns."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)


def iproute(sock: socket.socket | None = None) -> Any:
    """A pyroute2 IPRoute, on ``sock`` when given (a socket opened inside another netns)."""
    from pyroute2 import IPRoute

    if sock is None:
        return IPRoute()
    return IPRoute(use_socket=sock)


@contextlib.contextmanager
def iproute_in(path: str) -> Iterator[Any]:
    """An IPRoute working inside the netns at ``path`` (closed at the end)."""
    sock = in_netns(path, netlink_socket)
    ipr = iproute(sock)
    try:
        yield ipr
    finally:
        ipr.close()
        with contextlib.suppress(OSError):
            sock.close()


# sysctls -------------------------------------------------------------------------------------

def read_sysctl(name: str) -> str | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    path = "/proc/sys/" + name.replace(".", "/")
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise Unavailable(f"cannot set {name}={value}: {exc.strerror}") from None


def set_iface_sysctl(ifname: str, key: str, value: str) -> None:
    """``net.ipv4.conf.<ifname>.<key>`` (interface names may hold dots, so no dotted form)."""
    path = f"/proc/sys/net/ipv4/conf/{ifname}/{key}"
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise Unavailable(f"cannot set {path}={value}: {exc.strerror}") from None


# links ---------------------------------------------------------------------------------------

def link_index(ipr: Any, ifname: str) -> int | None:
    """The index of ``ifname`` (one RTM_GETLINK request, not a dump of every link)."""
    try:
        msgs = ipr.link("get", ifname=ifname)
    except Exception as exc:
        if getattr(exc, "code", None) in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
            return None
        raise
    for m in msgs:
        return int(m["index"])
    return None


def ensure_bridge(ipr: Any, ifname: str, gateway: str, prefixlen: int) -> int:
    """Create (or adopt) bridge ``ifname`` with ``gateway/prefixlen``, up. Idempotent."""
    idx = link_index(ipr, ifname)
    if idx is None:
        try:
            ipr.link("add", ifname=ifname, kind="bridge")
        except Exception as exc:
            if getattr(exc, "code", None) != errno.EEXIST:
                raise Internal(f"cannot create bridge {ifname}: {exc}") from None
        idx = link_index(ipr, ifname)
        if idx is None:
            raise Internal(f"bridge {ifname} vanished after creation")
    have = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
    if (gateway, prefixlen) not in have:
        try:
            ipr.addr("add", index=idx, address=gateway, prefixlen=prefixlen)
        except Exception as exc:
            if getattr(exc, "code", None) != errno.EEXIST:
                raise Internal(f"cannot add {gateway}/{prefixlen} to {ifname}: {exc}") from None
    ipr.link("set", index=idx, state="up")
    return idx


def set_hairpin(ifname: str) -> None:
    """Let the bridge send frames back out of the port ``ifname`` they came in by."""
    try:
        with open(f"/sys/class/net/{ifname}/brport/hairpin_mode", "w") as f:
            f.write("1")
    except OSError as exc:
        raise Internal(f"cannot set hairpin mode on {ifname}: {exc.strerror}") from None


def delete_link(ipr: Any, ifname: str) -> bool:
    """Delete ``ifname`` if present; True when something was deleted."""
    idx = link_index(ipr, ifname)
    if idx is None:
        return False
    try:
        ipr.link("del", index=idx)
    except Exception as exc:
        if getattr(exc, "code", None) in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    return True


def host_routes(ipr: Any) -> list[tuple[str, int, str]]:
    """IPv4 routes of the main table as (dst, dst_len, oif name) — used to avoid collisions."""
    names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
    out = []
    for r in ipr.get_routes(family=socket.AF_INET, table=254):
        dst = r.get("dst")
        if dst is None:
            continue
        out.append((dst, r["dst_len"], names.get(r.get("oif"), "")))
    return out


# container-side addressing by ioctl ------------------------------------------------------------
# Inside a container's fresh netns the three steps after the veth exists (address, up, default
# route) are plain SIOCSIF*/SIOCADDRT ioctls made from a thread that joined the netns: a few µs
# each, against ~1 ms per pyroute2 request (and ~1 ms to build an IPRoute on the netns socket).
# The veth itself, bridges and everything on the host side stay netlink through pyroute2.

SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCSIFBRDADDR = 0x891A
SIOCADDRT = 0x890B
RTF_UP = 0x1
RTF_GATEWAY = 0x2


class _SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_ushort), ("addr", ctypes.c_ubyte * 4),
                ("zero", ctypes.c_ubyte * 8)]


class _RtEntry(ctypes.Structure):
    _fields_ = [("rt_pad1", ctypes.c_ulong), ("rt_dst", _SockaddrIn), ("rt_gateway", _SockaddrIn),
                ("rt_genmask", _SockaddrIn), ("rt_flags", ctypes.c_ushort), ("rt_pad2", ctypes.c_short),
                ("rt_pad3", ctypes.c_ulong), ("rt_pad4", ctypes.c_void_p), ("rt_metric", ctypes.c_short),
                ("rt_dev", ctypes.c_char_p), ("rt_mtu", ctypes.c_ulong), ("rt_window", ctypes.c_ulong),
                ("rt_irtt", ctypes.c_ushort)]


def _sin(ip: str) -> _SockaddrIn:
    sa = _SockaddrIn()
    sa.family = socket.AF_INET
    sa.addr[:] = list(socket.inet_aton(ip))
    return sa


def _ifreq_addr(ifname: str, ip: str) -> bytes:
    return ifname.encode().ljust(16, b"\0") + bytes(_sin(ip)) + b"\0" * 8


def configure_iface(ifname: str, ip: str, prefixlen: int, gateway: str | None) -> None:
    """In the calling thread's netns: ``ip/prefixlen`` on ``ifname``, up, default via ``gateway``."""
    import fcntl
    import ipaddress
    import struct

    net = ipaddress.IPv4Network(f"{ip}/{prefixlen}", strict=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fd = s.fileno()
        fcntl.ioctl(fd, SIOCSIFADDR, _ifreq_addr(ifname, ip))
        fcntl.ioctl(fd, SIOCSIFNETMASK, _ifreq_addr(ifname, str(net.netmask)))
        fcntl.ioctl(fd, SIOCSIFBRDADDR, _ifreq_addr(ifname, str(net.broadcast_address)))
        req = struct.pack("16sh14x", ifname.encode(), 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(fd, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(fd, SIOCSIFFLAGS, struct.pack("16sh14x", ifname.encode(), flags | IFF_UP))
        if gateway:
            rt = _RtEntry()
            rt.rt_dst = _sin("0.0.0.0")
            rt.rt_genmask = _sin("0.0.0.0")
            rt.rt_gateway = _sin(gateway)
            rt.rt_flags = RTF_UP | RTF_GATEWAY
            rt.rt_dev = ifname.encode()
            fcntl.ioctl(fd, SIOCADDRT, bytes(rt))
