"""Registry authentication: htpasswd (bcrypt) basic auth and the Docker token flow.

Basic: every request carries ``Authorization: Basic``; users come from an htpasswd file with
bcrypt entries (``htpasswd -B``). Token: the registry answers ``401`` with
``WWW-Authenticate: Bearer realm=…,service=…,scope=repository:<name>:pull,push``; the client
gets a token from the realm (our token endpoint, ``GET /token?service=&scope=`` with basic auth,
or ``POST /token`` with an OAuth2 password grant), and retries with ``Authorization: Bearer``.
Tokens are JWTs signed with HMAC-SHA256 under a key kept in ``<root>/auth/token.key`` (mode 0600),
carrying the granted ``access`` list; a token without ``push`` for a repository cannot push to it
(401 with ``error="insufficient_scope"``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field

import bcrypt

from tugboat.errors import InvalidArgument
from tugboat.util.fs import write_atomic

DEFAULT_SERVICE = "tugboat-registry"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Htpasswd:
    """Users and bcrypt hashes from an htpasswd file (re-read when the file changes)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime = -1.0
        self._users: dict[str, bytes] = {}
        self._cache: dict[tuple[str, str], bool] = {}
        self._load()

    def _load(self) -> None:
        st = os.stat(self.path)
        if st.st_mtime == self._mtime:
            return
        users: dict[str, bytes] = {}
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#") or ":" not in line:
                    continue
                user, h = line.split(":", 1)
                if not h.startswith(("$2y$", "$2b$", "$2a$")):
                    raise InvalidArgument(f"{self.path}: user {user!r} has a non-bcrypt hash (use htpasswd -B)")
                users[user] = h.encode()
        self._users = users
        self._cache.clear()
        self._mtime = st.st_mtime

    def verify(self, user: str, password: str) -> bool:
        try:
            self._load()
        except OSError:
            return False
        h = self._users.get(user)
        if h is None:
            return False
        key = (user, hashlib.sha256(password.encode()).hexdigest())
        if key in self._cache:  # bcrypt costs ~0.1-0.3 s; remember successes for this file version
            return True
        ok = bcrypt.checkpw(password.encode(), h.replace(b"$2y$", b"$2b$", 1))
        if ok:
            self._cache[key] = True
        return ok


def parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if ":" not in raw:
        return None
    user, pw = raw.split(":", 1)
    return user, pw


@dataclass
class Scope:
    type: str
    name: str
    actions: set[str] = field(default_factory=set)

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


def parse_scopes(values: list[str]) -> list[Scope]:
    """``repository:name:pull,push`` (several per value, space separated, as docker sends them)."""
    out = []
    for v in values:
        for item in v.split():
            parts = item.split(":")
            if len(parts) < 3:
                continue
            typ, actions = parts[0], parts[-1]
            name = ":".join(parts[1:-1])
            out.append(Scope(typ, name, {a for a in actions.split(",") if a}))
    return out


class TokenIssuer:
    """Signs and verifies bearer tokens (JWT, HS256)."""

    def __init__(self, key: bytes, issuer: str = "tugboat", service: str = DEFAULT_SERVICE, ttl: int = 300) -> None:
        self.key = key
        self.issuer = issuer
        self.service = service
        self.ttl = ttl

    @classmethod
    def from_root(cls, root: str, **kw: object) -> TokenIssuer:
        d = os.path.join(root, "auth")
        os.makedirs(d, mode=0o700, exist_ok=True)
        path = os.path.join(d, "token.key")
        if not os.path.exists(path):
            write_atomic(path, secrets.token_bytes(32), mode=0o600)
        with open(path, "rb") as f:
            return cls(f.read(), **kw)  # type: ignore[arg-type]

    def issue(self, subject: str, access: list[Scope]) -> tuple[str, int]:
        now = int(time.time())
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "iat": now,
            "nbf": now - 5,
            "exp": now + self.ttl,
            "jti": secrets.token_hex(8),
            "access": [{"type": s.type, "name": s.name, "actions": sorted(s.actions)} for s in access],
        }
        signing = _b64(json.dumps(header, separators=(",", ":")).encode()) + "." + _b64(
            json.dumps(claims, separators=(",", ":")).encode()
        )
        sig = hmac.new(self.key, signing.encode(), hashlib.sha256).digest()
        return signing + "." + _b64(sig), self.ttl

    def verify(self, token: str) -> dict | None:
        """The token's claims, or None if it is forged, expired or for another service."""
        try:
            h, c, s = token.split(".")
            want = hmac.new(self.key, f"{h}.{c}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(want, _unb64(s)):
                return None
            if json.loads(_unb64(h)).get("alg") != "HS256":
                return None
            claims = json.loads(_unb64(c))
        except (ValueError, TypeError):
            return None
        now = time.time()
        if claims.get("exp", 0) < now or claims.get("nbf", 0) > now + 30:
            return None
        if claims.get("iss") != self.issuer or claims.get("aud") != self.service:
            return None
        return claims


def granted(claims: dict, typ: str, name: str) -> set[str]:
    out: set[str] = set()
    for a in claims.get("access") or []:
        if a.get("type") == typ and a.get("name") == name:
            out.update(a.get("actions") or [])
    if "*" in out:
        out.update({"pull", "push", "delete"})
    return out


class AuthFailure(Exception):
    """Raised by an authorizer: becomes 401 UNAUTHORIZED (with a challenge) or 403 DENIED."""

    def __init__(self, status: int, code: str, message: str, challenge: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.challenge = challenge


class Authorizer:
    """No authentication: everything is allowed."""

    def check(self, headers: dict[str, str] | object, scopes: list[Scope]) -> str | None:
        return None


class BasicAuthorizer(Authorizer):
    def __init__(self, htpasswd: Htpasswd, realm: str = DEFAULT_SERVICE) -> None:
        self.htpasswd = htpasswd
        self.realm = realm

    def check(self, headers, scopes):  # type: ignore[no-untyped-def, override]
        creds = parse_basic(headers.get("Authorization"))
        challenge = f'Basic realm="{self.realm}"'
        if creds is None:
            raise AuthFailure(401, "UNAUTHORIZED", "authentication required", challenge)
        if not self.htpasswd.verify(*creds):
            raise AuthFailure(401, "UNAUTHORIZED", "invalid username or password", challenge)
        return creds[0]


class TokenAuthorizer(Authorizer):
    def __init__(self, issuer: TokenIssuer, realm: str) -> None:
        self.issuer = issuer
        self.realm = realm

    def challenge(self, scopes: list[Scope], error: str | None = None) -> str:
        c = f'Bearer realm="{self.realm}",service="{self.issuer.service}"'
        if scopes:
            c += ',scope="' + " ".join(str(s) for s in scopes) + '"'
        if error:
            c += f',error="{error}"'
        return c

    def check(self, headers, scopes):  # type: ignore[no-untyped-def, override]
        auth = headers.get("Authorization") or ""
        if not auth.lower().startswith("bearer "):
            raise AuthFailure(401, "UNAUTHORIZED", "authentication required", self.challenge(scopes))
        claims = self.issuer.verify(auth[7:].strip())
        if claims is None:
            raise AuthFailure(401, "UNAUTHORIZED", "invalid or expired token", self.challenge(scopes, "invalid_token"))
        for s in scopes:
            have = granted(claims, s.type, s.name)
            if not s.actions <= have:
                missing = ",".join(sorted(s.actions - have))
                raise AuthFailure(
                    401,
                    "UNAUTHORIZED" if "pull" not in have else "DENIED",
                    f"token lacks {missing} access to {s.type} {s.name}",
                    self.challenge(scopes, "insufficient_scope"),
                )
        return claims.get("sub")
