"""Request metrics of a gRPC server: one interceptor, every RPC kind, closed label sets.

The interceptor counts calls started and finished (per method and status code), times
them in a histogram per method, counts refusals per reason class and keeps an in-flight
gauge (what a graceful shutdown is draining). Metric and label names follow the usual
``grpc_server_*`` conventions so existing dashboards apply.

Every label value comes from a closed set, never from a request: the service and method
names of a handler registered on this server (unknown methods are not counted), status code
names, the four RPC kinds, and the *class* of a refusal (a :class:`FedmatchError` subclass
name, noted by :func:`fedmatch.grpcutil.errors.translated` through :func:`note_refusal`). A
message, query id, operator id, reference or key id never becomes a label.

Like :mod:`fedmatch.grpcutil.auth`, the interceptor wraps the handler it returns (a server
interceptor cannot see the call's outcome otherwise). Put it first in the interceptor list
so that it also sees the authorizing interceptor's refusals.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fedmatch.errors import FedmatchError
from fedmatch.grpcutil.handlers import is_non_blocking, keep_non_blocking

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]

__all__ = [
    "LATENCY_BUCKETS",
    "NO_CLASS_REASONS",
    "RPC_TYPES",
    "MetricsInterceptor",
    "RpcMetrics",
    "note_refusal",
]

# Seconds: from a health check (~1 ms) to a key registration (~36 MB) or a search of a
# large register on a busy machine (README: 1M records ~2 s, more under load).
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0,
)  # fmt: skip

RPC_TYPES = ("unary", "server_stream", "client_stream", "bidi_stream")

# Refusal reasons when no domain error class was noted: an abort of the authorizing
# interceptor (its codes), an error outside our hierarchy, or anything else gRPC decided.
NO_CLASS_REASONS = ("access_rule", "internal", "other")
_ACCESS_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)

_REFUSAL: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "fedmatch_refusal", default=None
)


def note_refusal(exc: BaseException) -> None:
    """Tell the metrics interceptor of the current call why it was refused: the error's
    class name for our own errors (a name in the code, never a caller's string), else
    ``internal``. Does nothing outside an intercepted call."""
    holder = _REFUSAL.get()
    if holder is not None:
        cls = type(exc)
        holder.append(cls.__name__ if issubclass(cls, FedmatchError) else "internal")


class RpcMetrics:
    """The request metrics of one server, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        service_method = ["grpc_service", "grpc_method", "grpc_type"]
        self.started = Counter(
            "grpc_server_started",
            "RPCs started on the server.",
            service_method,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            [*service_method, "grpc_code"],
            registry=registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC's handler to its completion.",
            service_method,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.refusals = Counter(
            "fedmatch_rpc_refusals",
            "RPCs that did not complete OK, by status code and reason class (the error "
            "class, or access_rule / internal / other).",
            ["grpc_service", "grpc_method", "grpc_code", "reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "fedmatch_rpc_in_flight",
            "RPCs being handled now.",
            ["grpc_service", "grpc_method"],
            registry=registry,
        )


def _split(method: str) -> tuple[str, str]:
    # "/fedmatch.rpc.v1.NodeService/Search" -> ("fedmatch.rpc.v1.NodeService", "Search")
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


def _code_set(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    # ServicerContext.code() (grpcio >= 1.38) is the code set by abort() or set_code().
    code = getattr(context, "code", lambda: None)()
    return code if isinstance(code, grpc.StatusCode) else None


class _Call:
    """The bookkeeping of one call, from its handler's start to its completion."""

    def __init__(self, metrics: RpcMetrics, service: str, name: str, kind: str) -> None:
        self.metrics = metrics
        self.labels = (service, name, kind)
        self.reasons: list[str] = []
        self.token: contextvars.Token[list[str] | None] | None = _REFUSAL.set(self.reasons)
        self.started = time.perf_counter()
        metrics.started.labels(*self.labels).inc()
        metrics.in_flight.labels(service, name).inc()

    def detach(self) -> None:
        """The handler returned but its stream goes on (non-blocking): this thread's
        context lets go of the call, which :meth:`finish` completes from gRPC's callback."""
        self._reset()
        self.token = None

    def _reset(self) -> None:
        if self.token is None:
            return
        try:
            _REFUSAL.reset(self.token)
        except ValueError:
            _REFUSAL.set(None)  # a generator resumed in another context: just clear it

    def finish(self, context: grpc.ServicerContext, raised: BaseException | None) -> None:
        self._reset()
        m, (service, name, kind) = self.metrics, self.labels
        code = _code_set(context)
        if code is None:
            # No code set: a handler that returned is OK; one that raised without aborting
            # ends as UNKNOWN (what gRPC sends for an exception from the application).
            code = grpc.StatusCode.OK if raised is None else grpc.StatusCode.UNKNOWN
            reason = "internal"
        elif self.reasons:
            reason = self.reasons[-1]
        else:
            reason = "access_rule" if code in _ACCESS_CODES else "other"
        m.in_flight.labels(service, name).dec()
        m.latency.labels(service, name, kind).observe(time.perf_counter() - self.started)
        m.handled.labels(service, name, kind, code.name).inc()
        if code is not grpc.StatusCode.OK:
            m.refusals.labels(service, name, code.name, reason).inc()


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        metrics: RpcMetrics,
        observe: Callable[[str, Any], None] | None = None,
    ) -> None:
        """``observe(method, response)`` is called with every unary response returned OK
        (the coordinator counts its per-node fan-out outcomes from them)."""
        self.metrics = metrics
        self._observe = observe

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # an unknown method: gRPC answers UNIMPLEMENTED, not counted
        method = handler_call_details.method
        service, name = _split(method)
        metrics, observe = self.metrics, self._observe

        def unary(inner: Callable[[Any, grpc.ServicerContext], Any], kind: str) -> Any:
            def behavior(request: Any, context: grpc.ServicerContext) -> Any:
                call = _Call(metrics, service, name, kind)
                try:
                    response = inner(request, context)
                except BaseException as exc:
                    call.finish(context, exc)
                    raise
                call.finish(context, None)
                if observe is not None:
                    observe(method, response)
                return response

            return behavior

        def streaming(inner: Callable[..., Any], kind: str) -> Any:
            if is_non_blocking(inner):
                return keep_non_blocking(inner, non_blocking(inner, kind))

            def behavior(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                call = _Call(metrics, service, name, kind)
                try:
                    yield from inner(request, context)
                except BaseException as exc:
                    call.finish(context, exc)
                    raise
                call.finish(context, None)

            return behavior

        def non_blocking(inner: Callable[..., Any], kind: str) -> Any:
            # The stream outlives this call: it is counted as finished when gRPC ends it.
            def behavior(
                request: Any, context: grpc.ServicerContext, send_response_callback: Any = None
            ) -> Any:
                call = _Call(metrics, service, name, kind)
                try:
                    result = inner(request, context, send_response_callback=send_response_callback)
                except BaseException as exc:
                    call.finish(context, exc)
                    raise
                call.detach()
                if not context.add_callback(lambda: call.finish(context, None)):
                    call.finish(context, None)
                return result

            return behavior

        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary, "unary"), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                streaming(handler.unary_stream, "server_stream"), **kw
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                unary(handler.stream_unary, "client_stream"), **kw
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                streaming(handler.stream_stream, "bidi_stream"), **kw
            )
        return None
