"""OpenTelemetry tracing as a pair of interceptors: a CLIENT span per call, its W3C trace context
sent in the call's metadata, and a SERVER span per host call, the child of the context Go sent.

OpenTelemetry is optional: it is imported only when tracing is asked for, or when
``tracing=None`` looks for it (`tracing_interceptors`).
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import trio

from ._intercept import CallInfo, CallNext, HostCallInfo, HostCallNext, HostInterceptor, Interceptor
from ._stream import ItemStream

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

INSTRUMENTATION: Final = "trio_gotask"
"""The name of the tracer (OpenTelemetry's instrumentation scope) that makes the spans."""
RPC_SYSTEM: Final = "gotask"
NO_OPENTELEMETRY: Final = (
    "tracing=True needs OpenTelemetry's API, which is not installed: pip install opentelemetry-api "
    "(or trio-gotask[otel]), or leave tracing at None to trace only when it is installed"
)


def tracing_interceptors(
    tracing: bool | None, *, inject: bool = True, tracer_provider: TracerProvider | None = None
) -> tuple[Interceptor | None, HostInterceptor | None]:
    """The client and host interceptors that trace, or ``(None, None)`` when tracing is off.

    ``tracing`` is ``None`` (on when ``opentelemetry`` is importable), ``True`` (on; `ImportError`
    when it is not) or ``False`` (off). ``inject=False`` makes the client interceptor send no
    trace context (a wire format that carries no metadata). Spans go to ``tracer_provider``, by
    default the global one (as it is when each span starts).
    """
    if tracing is False:
        return None, None
    if tracing is not None and tracing is not True:
        raise TypeError(f"tracing must be None, True or False, not {tracing!r}")
    try:
        from opentelemetry import trace  # noqa: F401
    except ImportError as exc:
        if tracing is None:
            return None, None
        raise ImportError(NO_OPENTELEMETRY) from exc
    tracer = _tracer(tracer_provider)
    return _client_interceptor(tracer, inject), _host_interceptor(tracer)


def _tracer(tracer_provider: TracerProvider | None) -> Tracer:
    from opentelemetry import trace

    # Without a provider, a proxy that follows the global one, set before or after this.
    return trace.get_tracer(INSTRUMENTATION, _version(), tracer_provider=tracer_provider)


@functools.cache
def _version() -> str | None:
    try:
        return importlib.metadata.version("trio-gotask")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1024)
def _attributes(method: str) -> Mapping[str, str]:
    """A span's attributes for ``method`` (made once per method: OpenTelemetry copies them)."""
    service, dot, name = method.rpartition(".")
    if not dot:
        return MappingProxyType({"rpc.system": RPC_SYSTEM, "rpc.method": method})
    return MappingProxyType({"rpc.system": RPC_SYSTEM, "rpc.service": service, "rpc.method": name})


def _client_interceptor(tracer: Tracer, inject: bool) -> Interceptor:
    from opentelemetry import baggage, context, propagate, trace

    client = trace.SpanKind.CLIENT

    async def trace_call(info: CallInfo, call_next: CallNext) -> Any:
        attributes: Mapping[str, str | bool] = _attributes(info.method)
        if info.stream:
            attributes = {**attributes, "gotask.stream": True}
        span = tracer.start_span(info.method, kind=client, attributes=attributes)
        if not span.is_recording() and not span.get_span_context().is_valid:
            # A no-op span (no SDK configured): nothing to end, and no trace context to send.
            if inject and baggage.get_all():
                propagate.inject(info.metadata)
            return await call_next(info)
        ctx = trace.set_span_in_context(span)
        token = context.attach(ctx)
        ends_now = True
        try:
            if inject:
                propagate.inject(info.metadata, context=ctx)
            result = await call_next(info)
            if info.stream and isinstance(result, ItemStream):
                # A stream's span lasts until the stream ends, as the Go method's does.
                result.on_end(functools.partial(_stream_ended, span))
                ends_now = False
            return result
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            context.detach(token)
            if ends_now:
                span.end()

    return trace_call


def _host_interceptor(tracer: Tracer) -> HostInterceptor:
    from opentelemetry import context, propagate, trace

    server = trace.SpanKind.SERVER

    async def trace_host_call(info: HostCallInfo, call_next: HostCallNext) -> Any:
        # From an empty context, not the current one: a host call's task inherits the context of
        # whichever task read its request, perhaps a caller's in the middle of its own span.
        parent = propagate.extract(info.metadata, context=context.Context())
        span = tracer.start_span(
            info.method, context=parent, kind=server, attributes=_attributes(info.method)
        )
        token = context.attach(trace.set_span_in_context(span, parent))
        try:
            return await call_next(info)
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            context.detach(token)
            span.end()

    return trace_host_call


def _stream_ended(span: Span, error: BaseException | None) -> None:
    if error is not None:
        _failed(span, error)
    span.end()


def _failed(span: Span, exc: BaseException) -> None:
    """Mark ``span`` as failed by ``exc``: recorded when it is an error, and status ERROR."""
    from opentelemetry.trace import Status, StatusCode

    if not span.is_recording():
        return
    if isinstance(exc, trio.Cancelled):
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
        return
    if isinstance(exc, Exception):
        span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
