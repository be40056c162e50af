"""Image references, parsed and normalised exactly as docker does (distribution/reference).

``postgres`` -> ``docker.io/library/postgres:latest``; ``localhost:5000/app:1``;
``name@sha256:…``. Errors carry docker's messages, e.g. ``invalid reference format``,
``invalid reference format: repository name (library/Foo) must be lowercase``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tugboat.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_alnum = r"[a-z0-9]+"
_separator = r"(?:[._]|__|[-]+)"
_path_component = _alnum + r"(?:" + _separator + _alnum + r")*"
_domain_name_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_ipv6 = r"\[(?:[a-fA-F0-9:]+)\]"
_domain_name = _domain_name_component + r"(?:\." + _domain_name_component + r")*"
_host = r"(?:" + _domain_name + r"|" + _ipv6 + r")"
_domain = _host + r"(?::[0-9]+)?"
_tag = r"[\w][\w.-]{0,127}"
_digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_remote_name = _path_component + r"(?:/" + _path_component + r")*"
_name = r"(?:" + _domain + r"/)?" + _remote_name

REFERENCE_RE = re.compile(
    r"^(" + _name + r")(?::(" + _tag + r"))?(?:@(" + _digest + r"))?$"
)
TAG_RE = re.compile(r"^" + _tag + r"$")
ANCHORED_NAME_RE = re.compile(r"^(?:(" + _domain + r")/)?(" + _remote_name + r")$")
IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
SHORT_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{6,64}$")


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The fully qualified repository name, e.g. ``docker.io/library/postgres``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as docker prints it: ``postgres``, ``user/app``, ``localhost:5000/app``."""
        if self.domain == DEFAULT_DOMAIN:
            if self.path.startswith(OFFICIAL_REPO_PREFIX) and self.path.count("/") == 1:
                return self.path[len(OFFICIAL_REPO_PREFIX):]
            return self.path
        return self.name

    @property
    def familiar(self) -> str:
        """The short form docker prints, e.g. ``postgres:latest``."""
        return self.familiar_name + self._suffix()

    def _suffix(self) -> str:
        s = ""
        if self.tag is not None:
            s += ":" + self.tag
        if self.digest is not None:
            s += "@" + self.digest
        return s

    def with_tag(self, tag: str) -> Reference:
        if not TAG_RE.match(tag):
            raise InvalidArgument("invalid tag format")
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    @property
    def tagged(self) -> str:
        """``name:tag`` (fully qualified), or ``name`` when there is no tag."""
        return self.name + (":" + self.tag if self.tag else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def split_docker_domain(name: str) -> tuple[str, str]:
    """Split ``name`` into (domain, remainder) as docker's ``splitDockerDomain`` does."""
    i = name.find("/")
    if i == -1 or (
        not any(c in name[:i] for c in ".:") and name[:i] != "localhost" and name[:i].lower() == name[:i]
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = name[:i], name[i + 1:]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def _validate_digest_part(digest: str) -> None:
    from tugboat.oci.digest import validate_digest

    validate_digest(digest)


def parse(s: str) -> Reference:
    """Parse a reference without normalising (docker's ``reference.Parse``): must be fully qualified
    or a bare path; no ``docker.io/library`` defaulting. Raises ``InvalidArgument``."""
    m = REFERENCE_RE.match(s)
    if m is None:
        if s == "":
            raise InvalidArgument("repository name must have at least one component")
        if REFERENCE_RE.match(s.lower()):
            raise InvalidArgument("repository name must be lowercase")
        raise InvalidArgument("invalid reference format")
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if digest is not None:
        _validate_digest_part(digest)
    nm = ANCHORED_NAME_RE.match(name)
    assert nm is not None
    domain, path = nm.group(1) or "", nm.group(2)
    return Reference(domain, path, tag, digest)


def parse_normalized(s: str) -> Reference:
    """docker's ``ParseNormalizedNamed``: default domain and ``library/``, no default tag."""
    if IDENTIFIER_RE.match(s):
        raise InvalidArgument(f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = split_docker_domain(s)
    tag_sep = remainder.find(":")
    remote_name = remainder[:tag_sep] if tag_sep > -1 else remainder
    if remote_name.lower() != remote_name:
        raise InvalidArgument(
            f"invalid reference format: repository name ({remote_name}) must be lowercase"
        )
    return parse(domain + "/" + remainder)


def parse_reference(s: str, default_tag: bool = True) -> Reference:
    """Parse and normalise like ``docker pull``: ``postgres`` -> ``docker.io/library/postgres:latest``.

    With ``default_tag`` (the default) a reference with neither tag nor digest gets ``:latest``.
    """
    ref = parse_normalized(s)
    if default_tag and ref.tag is None and ref.digest is None:
        ref = Reference(ref.domain, ref.path, DEFAULT_TAG, None)
    return ref


def familiar(s: str) -> str:
    """The familiar string of a reference string (``docker.io/library/x:latest`` -> ``x:latest``)."""
    return parse_normalized(s).familiar


def is_name_only(ref: Reference) -> bool:
    return ref.tag is None and ref.digest is None
