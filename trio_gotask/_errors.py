"""The exceptions a caller can see, and the factories the layers below hand them around with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


class GoTaskError(Exception):
    """Base class of every exception trio_gotask raises on its own account."""


class ProtocolError(GoTaskError):
    """The peer sent bytes that break the protocol (docs/protocol.md).

    ``code`` is one of ``too_large``, ``empty_frame``, ``bad_msgpack``, ``bad_message``,
    ``truncated``, ``unknown_msgid``, ``handshake``, ``bad_prefix`` (GoTask's format), or
    ``decoder_failed``: the client's decoder raised another exception on the peer's bytes, its
    ``__cause__`` (a bug of trio_gotask's). The connection that carried the bytes is closed and
    the calls in flight on it fail with this error; other connections are unaffected.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SidecarError(GoTaskError):
    """The sidecar could not be started, or it stopped serving.

    Raised by ``open_gotask`` when the program is missing, fails to build, exits before its
    handshake, does not hand shake in time, or speaks another protocol version; and by every call in
    flight (and every later call) when the sidecar dies or its connection is lost.

    ``returncode`` is the exit status when the process has exited (negative for a signal), else
    ``None``; ``stderr_tail`` holds the last lines the sidecar wrote to its standard error.
    """

    def __init__(self, message: str, *, returncode: int | None = None, stderr_tail: str = "") -> None:
        super().__init__(message)
        self._reason = message
        self.returncode = returncode
        self.stderr_tail = ""
        self.refresh_stderr_tail(stderr_tail)

    def refresh_stderr_tail(self, stderr_tail: str) -> None:
        """Carry ``stderr_tail``, the sidecar's last lines as read by now, in place of the lines
        known when this error was made (none, when the process had not written them yet)."""
        if not stderr_tail or stderr_tail == self.stderr_tail:
            return
        self.stderr_tail = stderr_tail
        self.args = (f"{self._reason}\n--- last lines of the sidecar's stderr ---\n{stderr_tail}",)


class RemoteError(GoTaskError):
    """A Go method returned an error (or failed in the sidecar before it could run).

    ``type`` is the protocol's error type (``error``, ``panic``, ``not_found``, ``bad_params``,
    ``bad_reply``, ``cancelled``, ``deadline_exceeded``, ``shutting_down``, ``too_large``,
    ``busy``, or one a Go error names itself);
    ``message`` is Go's error text and ``method`` the method called. Match on the subclass or on
    ``type``.
    """

    def __init__(self, method: str, type: str, message: str, stack: str | None = None) -> None:
        text = f"{method}: {message}" if type == "error" else f"{method}: {type}: {message}"
        if stack:
            text = f"{text}\n{stack}"
        super().__init__(text)
        self.method = method
        self.type = type
        self.message = message
        self.stack = stack


class PanicError(RemoteError):
    """The Go method panicked; ``stack`` holds a short Go stack trace. The sidecar keeps serving."""


class MethodNotFound(RemoteError):
    """No method of that name is registered in the sidecar."""


class BadParams(RemoteError):
    """The argument could not be decoded into the Go method's argument type."""


class BadReply(RemoteError):
    """The method ran, but its reply cannot reach Python faithfully: the sidecar could not encode
    it (a channel inside an ``any``, a time outside the years 1-9999, a map keyed by arrays), or
    this client could not decode it. Only this call fails; the connection goes on."""


class ShuttingDown(RemoteError):
    """The sidecar was shutting down and did not run the call."""


_BY_TYPE: dict[str, type[RemoteError]] = {
    "panic": PanicError,
    "not_found": MethodNotFound,
    "bad_params": BadParams,
    "bad_reply": BadReply,
    "shutting_down": ShuttingDown,
}


def remote_error(method: str, error: dict[str, Any]) -> RemoteError:
    """Build the exception for an error map that passed protocol validation."""
    type_ = error["type"]
    stack = error.get("stack")
    cls = _BY_TYPE.get(type_, RemoteError)
    return cls(method, type_, error["message"], stack if isinstance(stack, str) else None)


ErrorFactory = Callable[[], GoTaskError]
"""Makes a fresh exception for each failed caller (one exception object must not be raised twice)."""

Explain = Callable[[BaseException], Awaitable[ErrorFactory]]
"""Turns the reason a connection was lost into the error its callers see (the process layer knows
more: an exit status, the last lines of stderr)."""


def error_factory(
    cls: type[GoTaskError], *args: Any, cause: BaseException | None = None, **kw: Any
) -> ErrorFactory:
    """A factory of ``cls(*args, **kw)``, each with ``cause`` as its ``__cause__``."""

    def make() -> GoTaskError:
        exc = cls(*args, **kw)
        exc.__cause__ = cause
        return exc

    return make


def protocol_failure(cause: ProtocolError) -> ErrorFactory:
    """The error of every call on a connection that met a bad frame: ``cause``, afresh."""
    return error_factory(ProtocolError, cause.code, str(cause), cause=cause)


async def lost_without_explanation(cause: BaseException) -> ErrorFactory:
    """The `Explain` of a connection with no process to ask: the cause, as the caller's error."""
    if isinstance(cause, ProtocolError):
        return protocol_failure(cause)
    return error_factory(SidecarError, f"lost the connection to the sidecar: {cause}", cause=cause)
