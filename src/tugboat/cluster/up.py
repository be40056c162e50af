"""`tug cluster up|down|join`: a whole cluster on one machine, and nodes joining from others.

``up`` starts, as background processes of their own session: the API server (listening on the
cluster bridge's address), the controller manager, the scheduler, and N node agents. Node 1 runs
in the host's network namespace (unless ``--isolated``); every other node runs in its own network
namespace ``tug-<name>-n<i>`` attached by a veth to the cluster bridge, with its own address —
a separate host as far as the cluster can tell. Pod subnets are 10.244.<i>.0/24, routed between
nodes through their addresses on the bridge.

Everything ``up`` made is listed in ``<state>/cluster.json`` (written atomically); ``down`` stops
the processes (node agents first: they remove their pods), then removes namespaces, bridges,
routes, nftables tables, mounts and the state directory, even when a process died.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from tugboat.util.fs import write_atomic
from tugboat.util.net import free_port as _free_port

STATE_FILE = "cluster.json"


def _ip(*args: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["ip", *args] if ns is None else ["ip", "-n", ns, *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def _write_state(path: str, state: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(state, indent=1).encode())


def _tug() -> list[str]:
    exe = shutil.which("tug", path=os.path.dirname(sys.executable)) or shutil.which("tug")
    return [exe] if exe else [sys.executable, "-m", "tugboat.cli.main"]


def _spawn(state: dict[str, Any], name: str, argv: list[str], log_dir: str, env: dict[str, str] | None = None) -> int:
    log = open(os.path.join(log_dir, f"{name}.log"), "ab")  # noqa: SIM115 - handed to the child
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env={**os.environ, **(env or {})})
    log.close()
    state["processes"].append({"name": name, "pid": p.pid, "argv": argv})
    return p.pid


def _wait_nodes_ready(kubeconfig: str, n: int, timeout: float, state: dict[str, Any]) -> list[str]:
    import asyncio

    from tugboat.cluster.client import resources as R
    from tugboat.cluster.client.rest import ApiClient, failure

    async def poll() -> list[str]:
        # one slow answer must not end the wait: each list gets a few seconds, the wait goes on to the deadline
        async with ApiClient.from_kubeconfig(kubeconfig, request_timeout=10) as c:
            deadline = time.monotonic() + timeout
            ready: list[str] = []
            last_error = ""
            while time.monotonic() < deadline:
                try:
                    nodes = await c.request("GET", R.NODES.path(None), timeout=10)
                    items = nodes.get("items", []) if isinstance(nodes, dict) else []
                    ready = [x["metadata"]["name"] for x in items
                             if any(cd.get("type") == "Ready" and cd.get("status") == "True"
                                    for cd in (x.get("status") or {}).get("conditions") or [])]
                    last_error = ""
                    if len(ready) >= n:
                        return ready
                except Exception as e:
                    last_error = failure(e)
                for p in state["processes"]:
                    if not _alive(p["pid"]):
                        raise RuntimeError(f"{p['name']} exited (the state dir is removed again); the end of its "
                                           f"log:\n{_log_tail(state, p['name'])}")
                await asyncio.sleep(0.2)
            want = [x["name"] for x in state["nodes"]]
            missing = [x for x in want if x not in ready] or want
            tails = "".join(f"\n--- the end of {m}'s log:\n{_log_tail(state, m, 8)}" for m in missing)
            raise RuntimeError(f"waiting for the nodes to be Ready: {len(ready)} of {n} were within {timeout:.0f}s "
                               f"(not Ready: {', '.join(missing)})"
                               + (f"; listing nodes failed: {last_error}" if last_error else "") + tails)

    return asyncio.run(poll())


def _log_tail(state: dict[str, Any], name: str, lines: int = 15) -> str:
    try:
        with open(os.path.join(state["dir"], "logs", f"{name}.log"), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        if f.read().split(") ", 1)[1].startswith("Z"):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def _wait_port(host: str, port: int, timeout: float, pid: int, log: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        if not _alive(pid):
            raise RuntimeError(f"the API server exited; see {log}")
        time.sleep(0.1)
    raise RuntimeError(f"the API server did not listen on {host}:{port} within {timeout:.0f}s")


def _wait_file(path: str, timeout: float, pid: int, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if not _alive(pid):
            raise RuntimeError(f"the API server exited before writing {what} ({path})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"waiting for {what}: {path} did not appear within {timeout:.0f}s")
        time.sleep(0.05)


def cluster_up(*, state_dir: str, nodes: int = 1, datastore: str | None = None, name: str = "tug",
               subnet: str = "172.30.0.0/24", cluster_cidr: str = "10.244.0.0/16", isolated: bool = False,
               port: int | None = None, image_archives: list[str] | None = None, timeout: float = 120,
               node_args: list[str] | None = None, controller_args: list[str] | None = None) -> dict[str, Any]:
    """Bring a cluster up; returns the recorded state (``kubeconfig``, ``nodes`` …)."""
    if os.path.exists(os.path.join(state_dir, STATE_FILE)):
        raise RuntimeError(f"a cluster is already recorded in {state_dir}; run `tug cluster down` first")
    os.makedirs(state_dir, exist_ok=True)
    log_dir = os.path.join(state_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    net = ipaddress.ip_network(subnet)
    hosts = list(net.hosts())
    bridge = f"tugc-{name}"[:15]
    host_ip = str(hosts[0])
    state: dict[str, Any] = {"dir": state_dir, "name": name, "bridge": bridge, "subnet": subnet, "host_ip": host_ip,
                             "namespaces": [], "processes": [], "nodes": [], "host_routes": [],
                             "host_tables": [], "host_bridges": [], "cluster_cidr": cluster_cidr}
    path = os.path.join(state_dir, STATE_FILE)
    _write_state(path, state)
    try:
        # the cluster network
        if not isolated and _ip("link", "show", "tugpods0", check=False).returncode == 0:
            raise RuntimeError("tugpods0 exists: a node agent already runs in this network namespace "
                               "(use --isolated for a second cluster)")
        if _ip("link", "show", bridge, check=False).returncode == 0:
            raise RuntimeError(f"interface {bridge} already exists (another cluster named {name!r}?)")
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{host_ip}/{net.prefixlen}", "dev", bridge)
        _ip("link", "set", bridge, "up")
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        _write_state(path, state)
        # control plane
        api_port = port or _free_port(host_ip)
        api_dir = os.path.join(state_dir, "apiserver")
        from tugboat.cluster.apiserver.certs import ClusterPKI

        ClusterPKI(api_dir).ensure([host_ip])
        api_argv = [*_tug(), "cluster", "apiserver", "--listen", f"{host_ip}:{api_port}", "--data-dir", api_dir]
        if datastore:
            api_argv += ["--datastore", datastore]
        api_pid = _spawn(state, "apiserver", api_argv, log_dir)
        _write_state(path, state)
        _wait_port(host_ip, api_port, 60, api_pid, os.path.join(log_dir, "apiserver.log"))
        kubeconfig = os.path.join(api_dir, "admin.kubeconfig")
        _wait_file(kubeconfig, 30, api_pid, "the API server's admin kubeconfig")
        state["kubeconfig"] = kubeconfig
        state["server"] = f"https://{host_ip}:{api_port}"
        pki_dir = os.path.join(api_dir, "pki")
        _spawn(state, "controller-manager", [*_tug(), "cluster", "controller-manager", "--kubeconfig", kubeconfig,
                                             "--leader-elect", "false",
                                             # node serving certificates (CSRs) are signed with the cluster CA
                                             "--cluster-signing-cert-file", os.path.join(pki_dir, "ca.crt"),
                                             "--cluster-signing-key-file", os.path.join(pki_dir, "ca.key"),
                                             # local PersistentVolumes live in the state dir: `down` removes them
                                             "--local-volume-dir", os.path.join(state_dir, "local-volumes"),
                                             *(controller_args or [])], log_dir)
        _spawn(state, "scheduler", [*_tug(), "cluster", "scheduler", "--kubeconfig", kubeconfig,
                                    "--leader-elect", "false"], log_dir)
        _write_state(path, state)
        # nodes
        cnet = ipaddress.ip_network(cluster_cidr)
        pod_subnets = list(cnet.subnets(new_prefix=24))
        for i in range(1, nodes + 1):
            node_name = f"{name}-node-{i}"
            root = os.path.join(state_dir, "nodes", node_name)
            os.makedirs(root, exist_ok=True)
            _prepare_images(root, image_archives or [])
            in_host = i == 1 and not isolated
            if in_host:
                node_ip = host_ip
                ns = None
            else:
                ns = f"tug-{name}-n{i}"
                node_ip = str(hosts[i] if isolated else hosts[i - 1])
                subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
                state["namespaces"].append(ns)
                _write_state(path, state)
                veth = f"tv-{name}-{i}"[:15]
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", veth, "master", bridge, "up")
                _ip("link", "set", "lo", "up", ns=ns)
                _ip("addr", "add", f"{node_ip}/{net.prefixlen}", "dev", "eth0", ns=ns)
                _ip("link", "set", "eth0", "up", ns=ns)
            pod_cidr = str(pod_subnets[i])
            kport = _free_port(host_ip) if in_host else 10250
            argv = [*_tug(), "--root", root, "cluster", "node", "--kubeconfig", kubeconfig, "--name", node_name,
                    "--engine-root", root, "--pod-cidr", pod_cidr, "--cluster-cidr", cluster_cidr,
                    "--node-ip", node_ip, "--port", str(kport), "--listen", node_ip, "--cleanup-on-exit",
                    *(node_args or [])]
            if ns:
                # nsenter, not `ip netns exec`: that one also remounts /sys, hiding the cgroup hierarchies
                argv = ["nsenter", f"--net=/var/run/netns/{ns}", *argv]
            else:
                state["host_tables"] += ["tugboat-svc", "tugboat-podnet"]
                state["host_bridges"].append("tugpods0")
                state["host_routes"] += [str(s) for s in pod_subnets[1:nodes + 1] if str(s) != pod_cidr]
            _spawn(state, node_name, argv, log_dir)
            state["nodes"].append({"name": node_name, "ip": node_ip, "netns": ns, "root": root,
                                   "pod_cidr": pod_cidr, "port": kport})
            _write_state(path, state)
        _wait_nodes_ready(kubeconfig, nodes, timeout, state)
        return state
    except BaseException:
        with contextlib.suppress(Exception):
            cluster_down(state_dir=state_dir)
        raise


def _prepare_images(root: str, archives: list[str]) -> None:
    from tugboat.images.bootstrap import bootstrap_busybox
    from tugboat.images.service import ImageService

    images = ImageService(root)
    for name in ("busybox:latest", "tugboat/pause:1"):
        try:
            images.resolve(name)
        except Exception:
            bootstrap_busybox(images, name)
    for a in archives:
        images.load(a)


def _stop_pid(pid: int, timeout: float) -> None:
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.1)


def cluster_down(*, state_dir: str) -> list[str]:
    """Undo everything recorded in ``state_dir``; returns what could not be removed."""
    path = os.path.join(state_dir, STATE_FILE)
    try:
        with open(path) as f:
            state = json.load(f)
    except FileNotFoundError:
        return []
    problems: list[str] = []
    procs = state.get("processes") or []
    nodes = [p for p in procs if p["name"] not in ("apiserver", "controller-manager", "scheduler")]
    # node agents first (they remove their pods while the API server still answers), in parallel
    for p in nodes:
        if _alive(p["pid"]):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p["pid"], signal.SIGTERM)
    for p in nodes:
        _stop_pid(p["pid"], 30)
    for p in procs:
        if p not in nodes:
            _stop_pid(p["pid"], 10)
    # containers the agents did not remove (an agent that crashed)
    for n in state.get("nodes") or []:
        _remove_engine_leftovers(n, problems)
    for ns in state.get("namespaces") or []:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for r in state.get("host_routes") or []:
        subprocess.run(["ip", "route", "del", r], capture_output=True)
    for t in state.get("host_tables") or []:
        subprocess.run(["nft", "delete", "table", "ip", t], capture_output=True)
    for b in [*(state.get("host_bridges") or []), state.get("bridge")]:
        if b:
            subprocess.run(["ip", "link", "del", b], capture_output=True)
    # mounts under the state dir (container root filesystems, memory emptyDirs)
    _unmount_under(state_dir, problems)
    shutil.rmtree(state_dir, ignore_errors=True)
    if os.path.exists(state_dir):
        problems.append(f"could not remove {state_dir}")
    return problems


def _remove_engine_leftovers(node: dict[str, Any], problems: list[str]) -> None:
    root = node.get("root")
    if not root or not os.path.isdir(os.path.join(root, "containers")) or not os.listdir(
            os.path.join(root, "containers")):
        return
    code = ("import sys\nfrom tugboat.engine.engine import Engine\ne = Engine(sys.argv[1])\n"
            "for c in e.containers():\n    e.remove(c.id, force=True)\ne.shutdown()\n")
    argv = [sys.executable, "-c", code, root]
    if node.get("netns") and os.path.exists(f"/var/run/netns/{node['netns']}"):
        argv = ["nsenter", f"--net=/var/run/netns/{node['netns']}", *argv]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        problems.append(f"removing containers of {node['name']}: {r.stderr.strip()[-300:]}")


def _unmount_under(d: str, problems: list[str]) -> None:
    real = os.path.realpath(d)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for mp in sorted((p for p in points if p == real or p.startswith(real + "/")), key=len, reverse=True):
        r = subprocess.run(["umount", "-l", mp], capture_output=True, text=True)
        if r.returncode != 0:
            problems.append(f"umount {mp}: {r.stderr.strip()}")


# ---- CLI
def _default_state(ctx: Any) -> str:
    return os.path.join(ctx.data_root, "cluster-up")


def up(args: list[str], ctx: Any) -> int:
    p = argparse.ArgumentParser(prog="tug cluster up", description="Start a cluster on this machine: API server, "
                                "controller manager, scheduler and N node agents (nodes after the first each in "
                                "their own network namespace).")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--datastore", default=None, help="sqlite (default) or etcd://HOST:PORT[,…]")
    p.add_argument("--state-dir", default=None, help="where the cluster lives (default ROOT/cluster-up)")
    p.add_argument("--name", default="tug", help="cluster name (prefix of nodes, namespaces, bridge)")
    p.add_argument("--subnet", default="172.30.0.0/24", help="the network the nodes share")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16")
    p.add_argument("--isolated", action="store_true", help="run node 1 in its own network namespace too")
    p.add_argument("--port", type=int, default=None, help="API server port (default: a free one)")
    p.add_argument("--image-archive", action="append", default=[],
                   help="a `tug save`/`docker save` archive to load on every node (repeatable)")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--node-monitor-grace-period", type=float, default=None,
                   help="seconds without a heartbeat before a node is NotReady (controller manager; default 40)")
    o = p.parse_args(args)
    if o.datastore == "sqlite":
        o.datastore = None
    state_dir = o.state_dir or _default_state(ctx)
    t0 = time.monotonic()
    try:
        st = cluster_up(state_dir=state_dir, nodes=o.nodes, datastore=o.datastore, name=o.name, subnet=o.subnet,
                        cluster_cidr=o.cluster_cidr, isolated=o.isolated, port=o.port,
                        image_archives=o.image_archive, timeout=o.timeout,
                        controller_args=(["--node-monitor-grace-period", str(o.node_monitor_grace_period),
                                          "--node-monitor-period", "1"] if o.node_monitor_grace_period else None),
                        node_args=(["--lease-renew", str(max(1.0, o.node_monitor_grace_period / 4))]
                                   if o.node_monitor_grace_period else None))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        sys.stderr.write(f"tug cluster up: {e}\n")
        return 1
    sys.stdout.write(
        f"Cluster {o.name!r} is up with {o.nodes} node(s) in {time.monotonic() - t0:.1f}s "
        f"(API server {st['server']}).\n\n"
        f"  export KUBECONFIG={st['kubeconfig']}\n  kubectl get nodes -o wide\n"
        "  kubectl create deployment web --image=busybox --replicas=3 -- httpd -f -p 8080\n\n"
        f"Logs: {state_dir}/logs/. Take it down with: tug"
        + (f" --root {ctx.root}" if getattr(ctx, "root", None) and not o.state_dir else "")
        + " cluster down" + (f" --state-dir {state_dir}" if o.state_dir else "") + "\n")
    with contextlib.suppress(Exception):
        from tugboat.cluster.apiserver.certs import ClusterPKI
        from tugboat.cluster.node.tls import ca_cert_hash

        pki = ClusterPKI(os.path.join(state_dir, "apiserver"))
        with open(pki.ca_cert, "rb") as f:
            pin = ca_cert_hash(f.read())
        sys.stdout.write(f"Another machine joins as a node with:\n  tug cluster join --server {st['server']} "
                         f"--token {pki.admin_token()} --ca-cert-hash {pin}\n")
    return 0


def down(args: list[str], ctx: Any) -> int:
    p = argparse.ArgumentParser(prog="tug cluster down", description="Stop and remove everything `tug cluster up` made.")
    p.add_argument("--state-dir", default=None)
    o = p.parse_args(args)
    state_dir = o.state_dir or _default_state(ctx)
    if not os.path.exists(os.path.join(state_dir, STATE_FILE)):
        sys.stderr.write(f"tug cluster down: no cluster recorded in {state_dir}\n")
        return 1
    problems = cluster_down(state_dir=state_dir)
    for pr in problems:
        sys.stderr.write(f"tug cluster down: {pr}\n")
    sys.stdout.write("Cluster removed.\n" if not problems else "")
    return 1 if problems else 0


def join(args: list[str], ctx: Any) -> int:
    p = argparse.ArgumentParser(prog="tug cluster join", description="Join this machine to a cluster as a node.")
    p.add_argument("--server", required=True, help="https://HOST:PORT of the API server")
    p.add_argument("--token", required=True, help="a bearer token the API server accepts (DATA_DIR/tokens.csv)")
    p.add_argument("--ca-file", default=None, help="the cluster CA (default: do not verify the server; the CA "
                   "then comes back with the node's serving certificate, checked against --ca-cert-hash)")
    p.add_argument("--ca-cert-hash", default=None,
                   help="sha256:<hex> of the cluster CA's public key (`tug cluster up` prints it)")
    p.add_argument("--name", default=None)
    o, rest = p.parse_known_args(args)
    kc_dir = os.path.join(ctx.data_root, "node")
    os.makedirs(kc_dir, exist_ok=True)
    kc = os.path.join(kc_dir, "kubeconfig")
    cluster: dict[str, Any] = {"server": o.server}
    if o.ca_file:
        cluster["certificate-authority"] = os.path.abspath(o.ca_file)
    else:
        cluster["insecure-skip-tls-verify"] = True
    doc = {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "c", "cluster": cluster}],
           "users": [{"name": "node", "user": {"token": o.token}}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": "node"}}], "current-context": "c"}
    fd = os.open(kc + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(kc + ".tmp", kc)
    from tugboat.cluster.node.cli import node

    return node(["--kubeconfig", kc, *(["--name", o.name] if o.name else []),
                 *(["--ca-cert-hash", o.ca_cert_hash] if o.ca_cert_hash else []), "--pin-kubeconfig-ca", *rest], ctx)
