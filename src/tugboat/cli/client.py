"""The `tug` CLI's client to the daemon: raw HTTP/1.1 over the unix socket, lean imports.

``DaemonClient(host)``: ``.get/.post/.put/.delete/.head`` return parsed JSON (or ``None``),
``.stream`` yields body chunks, ``.hijack`` returns the raw socket after ``101 UPGRADED``.
HTTP errors become :mod:`tugboat.errors` classes carrying the daemon's ``message``.
"""

from __future__ import annotations

import _socket

from tugboat.cli import fastjson as json

TYPE_CHECKING = False  # not `typing`: importing it costs start-up time

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

API_VERSION = "1.50"
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(s: str, safe: str = "/") -> str:
    ok = _SAFE | frozenset(safe.encode())
    return "".join(chr(b) if b in ok else f"%{b:02X}" for b in s.encode())


def urlencode(query: dict, doseq: bool = True) -> str:
    parts = []
    for k, v in query.items():
        vals = v if isinstance(v, list | tuple) and doseq else [v]
        for x in vals:
            parts.append(f"{quote(str(k), '')}={quote(str(x), '')}")
    return "&".join(parts)



def _unavailable_base() -> type:
    from tugboat.errors import Unavailable

    return Unavailable


class DaemonUnreachable(_unavailable_base()):  # type: ignore[misc]
    """No daemon answers at the address (the CLI may then work on the data root directly)."""

class Response:
    def __init__(self, sock: _socket.socket, status: int, reason: str, headers: dict[str, str], rest: bytes) -> None:
        self.sock = sock
        self.status = status
        self.reason = reason
        self.headers = headers
        self._buf = rest
        self._done = False

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self._buf += data
        return True

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                break
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _read_line(self) -> bytes:
        while b"\r\n" not in self._buf:
            if not self._fill():
                out, self._buf = self._buf, b""
                return out
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives (chunked, Content-Length or until close)."""
        if self._done:
            return
        te = self.headers.get("transfer-encoding", "").lower()
        if self.status in (204, 304) or self.headers.get("content-length") == "0":
            self._done = True
            return
        if "chunked" in te:
            while True:
                line = self._read_line()
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self._read_line()
                    break
                data = self._read_exact(size)
                self._read_line()
                yield data
        elif "content-length" in self.headers:
            left = int(self.headers["content-length"])
            if self._buf:
                take = self._buf[:left]
                self._buf = self._buf[left:]
                left -= len(take)
                yield take
            while left > 0:
                data = self.sock.recv(min(left, 65536))
                if not data:
                    break
                left -= len(data)
                yield data
        else:
            if self._buf:
                yield self._buf
                self._buf = b""
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                yield data
        self._done = True

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def json(self) -> Any:
        data = self.read()
        return json.loads(data) if data.strip() else None


def _error_for(status: int, message: str) -> Exception:
    from tugboat import errors

    cls = {
        400: errors.InvalidArgument, 401: errors.Unauthorized, 403: errors.PermissionDenied,
        404: errors.NotFound, 409: errors.Conflict, 503: errors.Unavailable,
    }.get(status, errors.TugError)
    exc = cls(message)
    exc.http_status = status  # type: ignore[misc]
    exc.from_daemon = True  # type: ignore[attr-defined]
    return exc


def _tls_context():  # type: ignore[no-untyped-def]
    """TLS for tcp:// as docker's CLI does it: when ``TUG_TLS_VERIFY``/``DOCKER_TLS_VERIFY`` or a
    certificate directory (``TUG_CERT_PATH``/``DOCKER_CERT_PATH``, default ``~/.docker``) is given:
    its ``ca.pem`` verifies the daemon, ``cert.pem``/``key.pem`` identify us. None: plain TCP."""
    import os

    env = os.environ
    certs = env.get("TUG_CERT_PATH") or env.get("DOCKER_CERT_PATH")
    if not (certs or env.get("TUG_TLS_VERIFY") or env.get("DOCKER_TLS_VERIFY")):
        return None
    import ssl

    certs = certs or os.path.join(os.path.expanduser("~"), ".docker")
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
        cert = os.path.join(certs, "cert.pem")
        if os.path.exists(cert):
            ctx.load_cert_chain(cert, os.path.join(certs, "key.pem"))
    except (OSError, ssl.SSLError) as exc:
        raise DaemonUnreachable(f"TLS setup from {certs} failed: {exc}") from None
    return ctx


def half_close(sock: Any) -> None:
    """End our side of a hijacked stream (stdin EOF). On TLS the socket cannot half-close without
    ending the session, so nothing is sent there (the daemon still ends the stream at exit)."""
    if hasattr(sock, "unwrap"):
        return
    try:
        sock.shutdown(_socket.SHUT_WR)
    except OSError:
        pass


class DaemonClient:
    def __init__(self, host: str | None = None, version: str = API_VERSION, timeout: float | None = None) -> None:
        if host is None:
            from tugboat.paths import daemon_host

            host = daemon_host()
        self.host = host
        self.version = version
        self.timeout = timeout
        self._sock: _socket.socket | None = None

    # -- connection ---------------------------------------------------------------------------
    def connect(self) -> _socket.socket:
        h = self.host
        try:
            if h.startswith("unix://") or h.startswith("/"):
                path = h[7:] if h.startswith("unix://") else h
                s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                s.settimeout(self.timeout)
                s.connect(path)
            elif h.startswith("tcp://"):
                hostport = h[6:].rstrip("/")
                host, _, port = hostport.rpartition(":")
                import socket

                s = socket.create_connection((host, int(port)), timeout=self.timeout)
                ctx = _tls_context()
                if ctx is not None:
                    s = ctx.wrap_socket(s, server_hostname=host.strip("[]"))
            else:
                raise ValueError(h)
        except (OSError, ValueError):
            raise DaemonUnreachable(
                f"Cannot connect to the tugboat daemon at {h}. Is the daemon running?"
            ) from None
        return s

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _path(self, path: str, query: dict | None) -> str:
        if not path.startswith("/_ping"):
            path = f"/v{self.version}{path}"
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            for k, v in list(q.items()):
                if isinstance(v, bool):
                    q[k] = "1" if v else "0"
                elif isinstance(v, dict):
                    q[k] = json.dumps(v)
            if q:
                path += "?" + urlencode(q, doseq=True)
        return path

    def request(self, method: str, path: str, *, query: dict | None = None, body: Any = None,
                headers: dict | None = None, raw_body: bytes | None = None, upgrade: bool = False,
                fresh: bool = False) -> Response:
        hdrs = {"Host": "tugboat", "User-Agent": "tug-cli"}
        data = b""
        if raw_body is not None:
            data = raw_body
        elif body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs["Content-Length"] = str(len(data))
        if upgrade:
            hdrs["Connection"] = "Upgrade"
            hdrs["Upgrade"] = "tcp"
        if headers:
            hdrs.update(headers)
        head = f"{method} {self._path(path, query)} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs.items()
        ) + "\r\n"
        sock = self.connect() if (fresh or upgrade) else (self._sock or self.connect())
        if not (fresh or upgrade):
            self._sock = sock
        try:
            sock.sendall(head.encode() + data)
            resp = self._read_head(sock)
        except OSError:
            if fresh or upgrade or self._sock is None:
                raise
            # stale keep-alive connection: retry once on a new one
            self.close()
            sock = self.connect()
            self._sock = sock
            sock.sendall(head.encode() + data)
            resp = self._read_head(sock)
        if method == "HEAD":  # a HEAD response has no body, whatever its Content-Length says
            resp._done = True
        return resp

    def _read_head(self, sock: _socket.socket) -> Response:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("daemon closed the connection")
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        return Response(sock, status, parts[2] if len(parts) > 2 else "", headers, rest)

    def _check(self, resp: Response) -> Response:
        if resp.status >= 400:
            data = resp.read()
            msg = data.decode(errors="replace").strip()
            if resp.headers.get("content-type", "").startswith("application/json"):
                try:
                    msg = json.loads(data).get("message", msg)  # type: ignore[union-attr]
                except (ValueError, AttributeError):
                    pass
            if not msg:
                msg = f"request returned {resp.status} {resp.reason}"
            raise _error_for(resp.status, msg)
        return resp

    def call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._check(self.request(method, path, **kw))
        if resp.status in (204, 304):
            resp.read()
            return None
        ctype = resp.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            return resp.json()
        return resp.read()

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, body=body, **kw)

    def put(self, path: str, raw_body: bytes | None = None, **kw: Any) -> Any:
        return self.call("PUT", path, raw_body=raw_body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.call("DELETE", path, **kw)

    def head(self, path: str, **kw: Any) -> Response:
        resp = self._check(self.request("HEAD", path, **kw))
        resp._done = True
        return resp

    def status_of(self, method: str, path: str, **kw: Any) -> int:
        """Like :meth:`call` but returns the status (304 "not modified" is not an error)."""
        resp = self._check(self.request(method, path, **kw))
        resp.read()
        return resp.status

    def stream(self, method: str, path: str, *, fresh: bool = True, **kw: Any) -> Iterator[bytes]:
        resp = self._check(self.request(method, path, fresh=fresh, **kw))
        try:
            yield from resp.chunks()
        finally:
            if fresh:
                resp.sock.close()

    def stream_response(self, method: str, path: str, **kw: Any) -> Response:
        return self._check(self.request(method, path, fresh=True, **kw))

    def json_stream(self, method: str, path: str, **kw: Any) -> Iterator[Any]:
        buf = ""
        for chunk in self.stream(method, path, **kw):
            buf += chunk.decode(errors="replace")
            while True:
                buf = buf.lstrip()
                if not buf:
                    break
                try:
                    obj, end = json.raw_decode(buf)
                except ValueError:
                    break
                buf = buf[end:]
                yield obj

    def hijack(self, path: str, *, query: dict | None = None, body: Any = None) -> tuple[_socket.socket, bytes]:
        """POST with ``Upgrade: tcp``; returns the raw socket and any bytes already read."""
        resp = self.request("POST", path, query=query, body=body, upgrade=True,
                            headers=None if body is not None else {"Content-Type": "text/plain"})
        if resp.status != 101 and resp.status != 200:
            self._check(resp)
        return resp.sock, resp._buf

    def ping(self) -> bool:
        try:
            resp = self.request("GET", "/_ping", fresh=True)
            ok = resp.status == 200
            resp.sock.close()
            return ok
        except Exception:
            return False


def q(s: str) -> str:
    """Quote a path parameter (names may contain ``/`` and ``:``, which stay unescaped)."""
    return quote(s, safe="/:@")
