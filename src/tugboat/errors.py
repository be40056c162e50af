"""One error hierarchy for every layer.

Lower layers raise these; only the API edges (the Engine API server, the Kubernetes API server,
the registry server, the CLI) map them to HTTP status codes or exit codes, keeping the message a
user can act on.
"""

from __future__ import annotations


class TugError(Exception):
    """Base of every error tugboat raises on purpose. ``http_status`` is used at API edges only."""

    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(TugError):
    """The caller asked for something malformed or impossible (HTTP 400)."""

    http_status = 400


class Unauthorized(TugError):
    """No or wrong credentials (HTTP 401)."""

    http_status = 401


class PermissionDenied(TugError):
    """Credentials are fine but the action is not allowed (HTTP 403)."""

    http_status = 403


class NotFound(TugError):
    """The named object does not exist (HTTP 404)."""

    http_status = 404


class Conflict(TugError):
    """The object exists, is in use, or changed underneath the caller (HTTP 409)."""

    http_status = 409


class NotModified(TugError):
    """The action was already done, e.g. starting a running container (HTTP 304)."""

    http_status = 304


class Unavailable(TugError):
    """A dependency (registry, network, kernel feature) cannot be reached or used now (HTTP 503)."""

    http_status = 503


class DataCorruption(TugError):
    """Stored or received bytes do not match their digest or format (HTTP 400 at an edge)."""

    http_status = 400


class Internal(TugError):
    """A bug or an unexpected system failure (HTTP 500)."""

    http_status = 500


def describe(exc: BaseException) -> str:
    """``Type: message`` of any exception, never empty: an exception raised without a message (a bare
    ``TimeoutError()``) is named by its type and the innermost place it was raised."""
    if isinstance(exc, TugError) and str(exc):
        return str(exc)
    msg = str(exc)
    if msg:
        return f"{type(exc).__name__}: {msg}"
    import os

    stdlib = os.path.dirname(os.__file__) + os.sep
    where = ""
    tb, ours, last = exc.__traceback__, None, None
    while tb is not None:  # the innermost frame outside libraries (a library's timer is no help)
        last = tb
        fname = tb.tb_frame.f_code.co_filename
        if "site-packages/tugboat/" in fname or ("site-packages" not in fname and not fname.startswith(stdlib)):
            ours = tb
        tb = tb.tb_next
    at = ours or last
    if at is not None:
        code = at.tb_frame.f_code
        fname = code.co_filename
        fname = fname.rsplit("/tugboat/", 1)[-1] if "/tugboat/" in fname else os.path.basename(fname)
        where = f" (in {code.co_name}, {fname}:{at.tb_lineno})"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause):
        where += f", caused by {type(cause).__name__}: {cause}"
    return f"{type(exc).__name__} without a message{where}"
