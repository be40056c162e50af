"""kubectl exec / attach / port-forward over plain SPDY/3.1 (the fallback client-go and older kubectl
use), through the API server's splice to a real node agent of a 1-node `tug cluster up`; and the bad
input a hand-made SPDY client can send (nodes area)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import ssl
import struct
import subprocess
import termios
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster_support import KubectlCluster as Cluster
from cluster_support import up_cluster
from tugboat.cluster.node.spdy import (
    FLAG_FIN,
    PROTOCOL_ERROR,
    RST_STREAM,
    SYN_REPLY,
    SYN_STREAM,
    control_frame,
    data_frame,
    encode_headers,
    parse_headers,
)
from tugboat.cluster.node.spdy_dict import SPDY3_DICTIONARY
from tugboat.cluster.upgrade import dial

pytestmark = pytest.mark.slow

SPDY_EXEC = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
SPDY_PORTFORWARD = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("spdy")
    with up_cluster(base, nodes=1, prefix="s", subnet16="172.28", cluster_cidr="10.245.0.0/16") as state:
        c = Cluster(state, str(base / "kcache"))
        c.kubectl("run", "shell", "--image=busybox", "--image-pull-policy=IfNotPresent", "--", "sleep", "3600")
        c.wait("shell running", lambda: c.pod("shell")["status"].get("phase") == "Running", 60)
        yield c


def kubectl_env(cluster: Cluster, extra: dict[str, str]) -> dict[str, str]:
    return dict(os.environ, KUBECONFIG=cluster.state["kubeconfig"], **extra)


def assert_spdy_used(log: str, protocol: str) -> None:
    """kubectl -v=8 prints the upgrade request's headers and the 101 answer."""
    assert re.search(r"Upgrade: SPDY/3\.1", log), log[-3000:]
    assert "101 Switching Protocols" in log, log[-3000:]
    assert f"X-Stream-Protocol-Version: {protocol}" in log, log[-3000:]
    assert "Upgrade: websocket" not in log, log[-3000:]  # no WebSocket attempt first


def test_exec_stdin_stdout_stderr_exit_code(cluster: Cluster) -> None:
    env = kubectl_env(cluster, SPDY_EXEC)
    r = subprocess.run(["kubectl", "--cache-dir", cluster.cache, "-v=8", "exec", "-i", "shell", "--",
                        "sh", "-c", "cat; echo err >&2; exit 3"], input="hello\nworld\n", capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 3, r.stderr[-3000:]
    assert r.stdout == "hello\nworld\n"
    assert "\nerr\n" in "\n" + r.stderr and "command terminated with exit code 3" in r.stderr
    assert_spdy_used(r.stderr, "v5.channel.k8s.io")
    # more than one DATA frame each way, and a clean exit 0
    blob = "".join(f"{i:07d}\n" for i in range(40000))  # 320 kB
    r = subprocess.run(["kubectl", "--cache-dir", cluster.cache, "exec", "-i", "shell", "--", "sh", "-c",
                        "cat | wc -c; head -c 200000 /dev/zero | tr '\\0' x"], input=blob, capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    count, rest = r.stdout.split("\n", 1)
    assert int(count) == len(blob) and rest == "x" * 200000


def test_client_killed_mid_exec_closes_stdin(cluster: Cluster) -> None:
    """kubectl SIGKILLed: the API server's splice ends, the node's session ends, the process's stdin
    is closed, so a command reading stdin finishes instead of lingering."""
    env = kubectl_env(cluster, SPDY_EXEC)
    proc = subprocess.Popen(["kubectl", "--cache-dir", cluster.cache, "exec", "-i", "shell", "--", "sh", "-c",
                             "rm -f /tmp/closed; echo started; cat >/dev/null; echo done > /tmp/closed"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
    finally:
        proc.kill()
        proc.wait(10)
    cluster.wait("the exec's stdin closed", lambda: cluster.kubectl(
        "exec", "shell", "--", "cat", "/tmp/closed", check=False).stdout == "done\n", 20)


def test_kubectl_cp_both_ways(cluster: Cluster, tmp_path: Path) -> None:
    """kubectl cp is tar through exec: binary data on stdin and stdout."""
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(150_000) + bytes(range(256)))
    env = kubectl_env(cluster, SPDY_EXEC)
    for args in (["cp", str(src), "shell:/tmp/payload.bin"], ["cp", "shell:/tmp/payload.bin", str(tmp_path / "back")]):
        r = subprocess.run(["kubectl", "--cache-dir", cluster.cache, *args], capture_output=True, text=True, env=env,
                           timeout=60)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "back").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_exec_tty_resize(cluster: Cluster, transport: str) -> None:
    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        proc = subprocess.Popen(["kubectl", "--cache-dir", cluster.cache, "-v=8", "exec", "-it", "shell", "--",
                                 "sh", "-c", "stty size; tty"], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                                env=kubectl_env(cluster, SPDY_EXEC if transport == "spdy" else {}),
                                start_new_session=True)
        os.close(slave)
        slave = -1
        out = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: kubectl exited and closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        rc = proc.wait(10)
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert rc == 0, err[-3000:]
        text = out.decode(errors="replace")
        assert "33 101" in text, text  # the resize stream carried the terminal's size
        assert "/dev/pts/" in text, text  # a real terminal inside
        if transport == "spdy":
            assert_spdy_used(err, "v5.channel.k8s.io")
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_attach_with_stdin(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    stdin: true
    command: ["sh", "-c", "read line; echo got:$line; echo to-stderr >&2; exit 0"]
""")
    cluster.wait("reader running", lambda: cluster.pod("reader")["status"].get("phase") == "Running", 60)
    r = subprocess.run(["kubectl", "--cache-dir", cluster.cache, "-v=8", "attach", "-i", "reader"],
                       input="hi-there\n", capture_output=True, text=True, env=kubectl_env(cluster, SPDY_EXEC),
                       timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "got:hi-there" in r.stdout and "to-stderr" in r.stderr
    assert_spdy_used(r.stderr, "v5.channel.k8s.io")


def test_attach_tty_resize(cluster: Cluster, tmp_path: Path) -> None:
    """attach -it to a tty container: the resize stream sets the container's terminal size."""
    cluster.kubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: ttyshell}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    stdin: true
    tty: true
    command: ["sh"]
""")
    cluster.wait("ttyshell running", lambda: cluster.pod("ttyshell")["status"].get("phase") == "Running", 60)
    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 41, 117, 0, 0))
        log = tmp_path / "kubectl.log"
        with open(log, "wb") as errf:
            proc = subprocess.Popen(["kubectl", "--cache-dir", cluster.cache, "-v=8", "attach", "-it", "ttyshell"],
                                    stdin=slave, stdout=slave, stderr=errf,
                                    env=kubectl_env(cluster, SPDY_EXEC), start_new_session=True)
        os.close(slave)
        slave = -1
        out = b""
        sent = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
            if not sent and "101 Switching Protocols" in log.read_text(errors="replace"):
                time.sleep(0.5)  # attached; kubectl sends the terminal's size first
                os.write(master, b"echo size=$(stty size); exit\r")
                sent = True
        rc = proc.wait(10)
        err = log.read_text(errors="replace")
        text = out.decode(errors="replace")
        assert "size=41 117" in text, (text, err[-3000:])
        assert rc == 0, err[-3000:]
        assert_spdy_used(err, "v5.channel.k8s.io")
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_port_forward(cluster: Cluster) -> None:
    cluster.kubectl("run", "pf", "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                    "sh", "-c", "mkdir -p /w && echo forwarded > /w/index.html && exec httpd -f -p 8080 -h /w")
    cluster.wait("pf running", lambda: cluster.pod("pf")["status"].get("phase") == "Running", 60)
    proc = subprocess.Popen(["kubectl", "--cache-dir", cluster.cache, "-v=8", "port-forward", "pod/pf",
                             ":8080", ":8081"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=kubectl_env(cluster, SPDY_PORTFORWARD))
    try:
        assert proc.stdout is not None
        log, ports = "", {}
        deadline = time.monotonic() + 30
        while len(ports) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            log += line
            m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", line)
            if m:
                ports[m.group(2)] = int(m.group(1))
        assert set(ports) == {"8080", "8081"}, log[-3000:]
        assert_spdy_used(log, "portforward.k8s.io")
        for _ in range(3):  # several connections over one SPDY session
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['8080']}/", timeout=10) as resp:
                assert resp.read() == b"forwarded\n"
        # nothing listens on 8081 in the pod: the node reports it on that request's error stream
        # (kubectl 1.32 then ends the whole port-forward: "lost connection to pod")
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{ports['8081']}/", timeout=10).read()
        rest, _ = proc.communicate(timeout=30)
        assert "error forwarding port 8081 to pod" in rest, rest[-3000:]
    finally:
        proc.kill()
        proc.wait(5)


# -- a hand-made SPDY client, for what kubectl never sends ------------------------------------------

class RawClient:
    """Just enough of a SPDY/3.1 client: SYN_STREAM with compressed headers, DATA, frame reading."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.deflate = zlib.compressobj(zdict=SPDY3_DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        self.next_id = 1

    def open(self, headers: dict[str, str], fin: bool = False) -> int:
        sid = self.next_id
        self.next_id += 2
        block = self.deflate.compress(encode_headers(headers)) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.writer.write(control_frame(SYN_STREAM, FLAG_FIN if fin else 0, struct.pack(">IIH", sid, 0, 0) + block))
        return sid

    def data(self, sid: int, payload: bytes, fin: bool = False) -> None:
        self.writer.write(data_frame(sid, FLAG_FIN if fin else 0, payload))

    async def frame(self, timeout: float = 10) -> tuple[bool, int, int, bytes]:
        """(control?, type or stream id, flags, payload)"""
        head = await asyncio.wait_for(self.reader.readexactly(8), timeout)
        n = struct.unpack(">I", head[4:8])[0] & 0xFFFFFF
        payload = await asyncio.wait_for(self.reader.readexactly(n), timeout) if n else b""
        if head[0] & 0x80:
            return True, struct.unpack(">H", head[2:4])[0], head[4], payload
        return False, struct.unpack(">I", head[:4])[0], head[4], payload

    async def control(self, want: int, timeout: float = 10) -> bytes:
        while True:
            ctl, kind, _flags, payload = await self.frame(timeout)
            if ctl and kind == want:
                return payload


def admin_tls(cluster: Cluster) -> ssl.SSLContext:
    pki = os.path.join(cluster.state["dir"], "apiserver", "pki")
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
    ctx.load_cert_chain(os.path.join(pki, "admin.crt"), os.path.join(pki, "admin.key"))
    return ctx


def test_bad_input_protocol_and_stream_type(cluster: Cluster) -> None:
    base = cluster.state["server"] + "/api/v1/namespaces/default/pods/shell"
    tls = admin_tls(cluster)

    async def scenario() -> None:
        # a protocol version the node does not offer: 403 with what it does offer, no upgrade
        up = await dial(base + "/exec", method="POST", ssl_context=tls,
                        params=[("command", "true"), ("stdout", "true")],
                        headers=[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                 ("X-Stream-Protocol-Version", "v9.channel.k8s.io")])
        body = (await up.body()).decode()
        up.close()
        assert up.status == 403, (up.status, body)
        assert "unable to negotiate protocol" in body and "v5.channel.k8s.io" in body, body
        assert "v4.channel.k8s.io" in up.header_values("X-Accepted-Stream-Protocol-Versions")
        # the same for port-forward
        up = await dial(base + "/portforward", method="POST", ssl_context=tls,
                        headers=[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                 ("X-Stream-Protocol-Version", "v4.channel.k8s.io")])
        assert up.status == 403, up.status
        up.close()
        # an upgrade to something else entirely
        up = await dial(base + "/exec", method="POST", ssl_context=tls, params=[("command", "true")],
                        headers=[("Connection", "Upgrade"), ("Upgrade", "h2c")])
        assert up.status == 400, up.status
        up.close()

        # v4 exec: an unknown stream type is reset, the right ones still work
        up = await dial(base + "/exec", method="POST", ssl_context=tls,
                        params=[("command", "sh"), ("command", "-c"), ("command", "echo out; exit 7"),
                                ("stdout", "true"), ("stderr", "true")],
                        headers=[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                 ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
                                 ("X-Stream-Protocol-Version", "v9.channel.k8s.io")])
        assert up.status == 101 and up.header("X-Stream-Protocol-Version") == "v4.channel.k8s.io", up.headers
        c = RawClient(up.reader, up.writer)
        try:
            err = c.open({"streamType": "error"})
            reply = await c.control(SYN_REPLY)
            assert struct.unpack(">I", reply[:4])[0] == err
            c.inflate.decompress(reply[4:])
            bogus = c.open({"streamType": "bogus"})
            rst = await c.control(RST_STREAM)
            assert struct.unpack(">II", rst) == (bogus, PROTOCOL_ERROR)
            out = c.open({"streamType": "stdout"})
            errs = c.open({"streamType": "stderr"})
            got: dict[int, bytes] = {out: b"", errs: b"", err: b""}
            fins: set[int] = set()
            while fins != {out, errs, err}:
                ctl, kind, flags, payload = await c.frame()
                if ctl:
                    if kind == SYN_REPLY:
                        assert parse_headers(c.inflate.decompress(payload[4:])) == {}
                    continue
                got[kind] += payload
                if flags & FLAG_FIN:
                    fins.add(kind)
            assert got[out] == b"out\n" and got[errs] == b""
            status = json.loads(got[err])
            assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
            assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
        finally:
            up.close()

        # a client that never opens the streams it asked for, then hangs up: the node does not hang
        up = await dial(base + "/exec", method="POST", ssl_context=tls,
                        params=[("command", "true"), ("stdout", "true")],
                        headers=[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                 ("X-Stream-Protocol-Version", "v5.channel.k8s.io")])
        assert up.status == 101
        c = RawClient(up.reader, up.writer)
        c.writer.write(b"\x80\x03\x00\x01\x00\x00\x00\x02xx")  # a truncated SYN_STREAM: malformed
        try:
            rest = await asyncio.wait_for(up.reader.read(), 10)  # the connection ends
            assert len(rest) < 100
        finally:
            up.close()

    asyncio.run(scenario())
    # and the node still serves
    r = subprocess.run(["kubectl", "--cache-dir", cluster.cache, "exec", "shell", "--", "echo", "still"],
                       capture_output=True, text=True, env=kubectl_env(cluster, SPDY_EXEC), timeout=60)
    assert r.returncode == 0 and r.stdout == "still\n", r.stderr
