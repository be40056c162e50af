"""resolv.conf: read the machine's, parse one, write one (for containers, pods and the cluster DNS)."""

from __future__ import annotations


def read_host_resolv(path: str = "/etc/resolv.conf") -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def parse_resolv(text: str) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, search domains, options) of a resolv.conf text."""
    ns: list[str] = []
    search: list[str] = []
    opts: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith(("#", ";")):
            continue
        if parts[0] == "nameserver" and len(parts) > 1:
            ns.append(parts[1])
        elif parts[0] in ("search", "domain"):
            search = parts[1:]
        elif parts[0] == "options":
            opts.extend(parts[1:])
    return ns, search, opts


def render_resolv_conf(servers: list[str], search: list[str], opts: list[str]) -> str:
    """resolv.conf text in the container runtimes' layout (search, nameservers, options)."""
    text = f"search {' '.join(search)}\n" if search else ""
    text += "".join(f"nameserver {n}\n" for n in servers)
    return text + (f"options {' '.join(opts)}\n" if opts else "")
