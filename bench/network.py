"""Network benchmarks (root): set-up cost, published-port throughput, 50 endpoints.

    .venv/bin/python bench/network.py [--runs 20] [--mb 256]

1. The extra cost of a bridged container over ``--network none``: median time of
   ``NetworkManager.setup_container`` for each mode (netns + lo for none; + veth, address,
   route, record for bridge; + embedded DNS sockets for a user network). Goal: ≤ 10 ms extra.
   References (peer-baselines.md, whole `run`): podman +0.24 s, docker +0–0.07 s.
2. Throughput through a published port (127.0.0.1:HOSTPORT, nft DNAT) vs a direct connection to
   the container's address, same run, same sink server. Goal: ≥ 0.8×.
3. Time to set up (and tear down) 50 containers on one user network.
4. (unless --no-engine) `docker run --rm busybox true` through a real `tug daemon`, bridge vs
   none, as the peers were measured (whole run, CLI included).

Everything runs on kernel objects of its own (instance ``bench``) and is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from tugboat.network.manager import NetworkManager
from tugboat.network.models import ContainerNetworkSpec as Spec

SINK = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    n = 0
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        n += len(b)
    c.sendall(str(n).encode()); c.close()
"""


def cid() -> str:
    return os.urandom(32).hex()


def setup_cost(mgr: NetworkManager, runs: int) -> dict[str, float]:
    """Median set-up/teardown per mode; the modes are interleaved so load affects all alike."""
    modes = ("none", "bridge", "benchnet")
    times: dict[str, list[float]] = {m: [] for m in modes}
    downs: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(runs + 2):
        for mode in modes:
            c = cid()
            t0 = time.perf_counter()
            mgr.setup_container(c, Spec(mode=mode, name="b" + c[:6]))
            t1 = time.perf_counter()
            mgr.teardown_container(c)
            t2 = time.perf_counter()
            mgr.flush()  # background veth deletion done: the next set-up runs on a quiet kernel
            if i >= 2:  # the first rounds warm caches up
                times[mode].append(t1 - t0)
                downs[mode].append(t2 - t1)
    out = {}
    for mode in modes:
        out[mode] = statistics.median(times[mode])
        out[mode + "_teardown"] = statistics.median(downs[mode])
    return out


def send(host: str, port: int, total: int) -> float:
    buf = b"\0" * (1 << 20)
    with socket.create_connection((host, port), timeout=30) as s:
        t0 = time.perf_counter()
        left = total
        while left > 0:
            n = s.send(buf[: min(left, len(buf))])
            left -= n
        s.shutdown(socket.SHUT_WR)
        got = int(s.recv(64) or b"0")
        dt = time.perf_counter() - t0
    assert got == total, (got, total)
    return total / dt / 1e6


def userland_proxy(target: tuple[str, int]) -> tuple[int, socket.socket]:
    """A docker-proxy-like relay on 127.0.0.1 (one thread per direction), for comparison."""
    import threading

    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(1 << 20):
                b.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)

    def accept() -> None:
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            u = socket.create_connection(target)
            threading.Thread(target=pipe, args=(c, u), daemon=True).start()
            threading.Thread(target=pipe, args=(u, c), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return ls.getsockname()[1], ls


def throughput(mgr: NetworkManager, mb: int) -> dict[str, float]:
    c = cid()
    info = mgr.setup_container(c, Spec(mode="bridge", port_bindings={"5001/tcp": [{"HostPort": ""}]}))
    proc = subprocess.Popen(["nsenter", f"--net={info.netns_path}", sys.executable, "-c", SINK],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        host_port = int(info.ports["5001/tcp"][0]["HostPort"])
        direct_ip = info.networks["bridge"]["IPAddress"]
        total = mb << 20
        res: dict[str, list[float]] = {"direct": [], "published": [], "proxy": []}
        pport, plisten = userland_proxy((direct_ip, 5001))
        try:
            for _ in range(5):
                res["direct"].append(send(direct_ip, 5001, total))
                res["published"].append(send("127.0.0.1", host_port, total))
                res["proxy"].append(send("127.0.0.1", pport, total))
        finally:
            plisten.close()
        return {k: max(v) for k, v in res.items()}
    finally:
        proc.kill()
        proc.wait()
        mgr.teardown_container(c)


def fifty(mgr: NetworkManager) -> dict[str, float]:
    ids = [cid() for _ in range(50)]
    t0 = time.perf_counter()
    for i, c in enumerate(ids):
        mgr.setup_container(c, Spec(mode="benchnet", name=f"node{i}"))
    t1 = time.perf_counter()
    for c in ids:
        mgr.teardown_container(c)
    t2 = time.perf_counter()
    mgr.flush()
    t3 = time.perf_counter()
    return {"setup_total": t1 - t0, "teardown_total": t2 - t1, "reaped": t3 - t1}


def engine_run_cost(runs: int) -> dict[str, float] | None:
    """`docker run --rm busybox true` through a real `tug daemon`: bridge vs none (interleaved)."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    work = tempfile.mkdtemp(prefix="tug-netbench-engine-")
    root, sock = os.path.join(work, "root"), os.path.join(work, "tug.sock")
    env = {**os.environ, "TUG_NETWORK_INSTANCE": "benche", "DOCKER_HOST": f"unix://{sock}",
           "DOCKER_CONFIG": work}
    tug = [sys.executable, "-m", "tugboat.cli.main"]
    boot = subprocess.run([*tug, "--root", root, "image", "bootstrap", "busybox"], capture_output=True, env=env)
    if boot.returncode != 0:
        return None
    log = open(os.path.join(work, "daemon.log"), "wb")  # noqa: SIM115
    daemon = subprocess.Popen([*tug, "daemon", "--root", root, "--host", f"unix://{sock}"], env=env,
                              stdout=log, stderr=log)
    try:
        for _ in range(100):
            if os.path.exists(sock) and subprocess.run([docker, "version"], capture_output=True,
                                                       env=env).returncode == 0:
                break
            time.sleep(0.1)
        times: dict[str, list[float]] = {"none": [], "bridge": []}
        for i in range(runs + 1):
            for mode in ("none", "bridge"):
                t0 = time.perf_counter()
                r = subprocess.run([docker, "run", "--rm", "--network", mode, "busybox", "true"],
                                   capture_output=True, env=env, timeout=60)
                if r.returncode != 0:
                    return None
                if i:
                    times[mode].append(time.perf_counter() - t0)
        return {m: statistics.median(v) for m, v in times.items()}
    except (subprocess.TimeoutExpired, OSError):
        return None
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--no-engine", dest="engine", action="store_false",
                    help="skip the `docker run` comparison through a real tug daemon")
    ap.add_argument("--engine-runs", type=int, default=10)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/network.py needs root (network namespaces, bridges, nftables)")
        return 0
    root = tempfile.mkdtemp(prefix="tug-netbench-")
    mgr = NetworkManager(root, instance="bench")
    try:
        mgr.restore()
        mgr.create("benchnet")
        mgr.flush()
        cost = setup_cost(mgr, a.runs)
        extra_ms = (cost["bridge"] - cost["none"]) * 1000
        print(f"setup_container median of {a.runs}: none {cost['none'] * 1000:.1f} ms, "
              f"bridge {cost['bridge'] * 1000:.1f} ms, user network (+DNS) {cost['benchnet'] * 1000:.1f} ms")
        print(f"  teardown: none {cost['none_teardown'] * 1000:.1f} ms, bridge "
              f"{cost['bridge_teardown'] * 1000:.1f} ms")
        print(f"  bridged extra over none: {extra_ms:+.1f} ms (goal <= 10 ms; docker +0-70 ms, podman +240 ms)"
              f" {'OK' if extra_ms <= 10 else 'OVER'}")
        mgr.flush()
        tp = throughput(mgr, a.mb)
        mgr.flush()
        ratio = tp["published"] / tp["direct"]
        print(f"throughput ({a.mb} MiB, best of 5): direct {tp['direct']:.0f} MB/s, published "
              f"127.0.0.1 {tp['published']:.0f} MB/s, ratio {ratio:.2f} (goal >= 0.8) "
              f"{'OK' if ratio >= 0.8 else 'UNDER'}")
        print(f"  for comparison, a userland relay like docker-proxy: {tp['proxy']:.0f} MB/s "
              f"({tp['proxy'] / tp['direct']:.2f}x) — why 127.0.0.1 uses kernel DNAT + route_localnet")
        f = fifty(mgr)
        print(f"50 endpoints on one network: setup {f['setup_total']:.2f} s "
              f"({f['setup_total'] / 50 * 1000:.1f} ms each), teardown {f['teardown_total']:.2f} s "
              f"(veths deleted in the background, all gone after {f['reaped']:.2f} s)")
    finally:
        mgr.shutdown(remove_all=True)
        shutil.rmtree(root, ignore_errors=True)
    if a.engine:
        e = engine_run_cost(a.engine_runs)
        if e is None:
            print("docker run through tug daemon: not measured (docker CLI missing or the engine cannot "
                  "run containers on this checkout)")
        else:
            print(f"docker run --rm busybox true via tug daemon, median of {a.engine_runs}: none "
                  f"{e['none'] * 1000:.0f} ms, bridge {e['bridge'] * 1000:.0f} ms, extra "
                  f"{(e['bridge'] - e['none']) * 1000:+.0f} ms (docker +0-70 ms, podman +240 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
