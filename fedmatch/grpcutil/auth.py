"""Who may call what: deny-by-default authorization of every RPC from the TLS peer.

The peer's role and member state come from its verified client certificate. gRPC server
interceptors cannot see the TLS peer, so the interceptor wraps the handler it returns (all
four RPC kinds) and checks ``context.auth_context()`` when the call runs, before the
servicer. A method missing from the rules is refused. The checked identity is available to
the servicer through :func:`caller`.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]

from fedmatch.errors import FedmatchError
from fedmatch.grpcutil.handlers import is_non_blocking, keep_non_blocking
from fedmatch.grpcutil.metrics import note_refusal
from fedmatch.grpcutil.shares import PeerShareExceeded, PeerShares

__all__ = [
    "AUDIT_AND_HEALTH_RULES",
    "AccessRule",
    "AuthorizingInterceptor",
    "caller",
    "require_caller",
]

log = logging.getLogger("fedmatch.grpc.auth")

_CALLER: contextvars.ContextVar[Any] = contextvars.ContextVar("fedmatch_caller", default=None)


@dataclass(frozen=True)
class AccessRule:
    """Roles allowed to call a method; ``own_state`` restricts them to the serving party's
    own member state (e.g. enrolment at a node is for that state's operators only)."""

    roles: frozenset[str]
    own_state: bool = False


_ANYONE = frozenset({"node", "coordinator", "auditor", "operator", "verifier"})

# Served by every party: its audit log to auditors, its health to any federation member.
AUDIT_AND_HEALTH_RULES: dict[str, AccessRule] = {
    **{
        "/fedmatch.rpc.v1.AuditService/" + m: AccessRule(frozenset({"auditor"}))
        for m in ("GetCheckpoint", "GetEntries", "GetInclusionProof", "GetConsistencyProof")
    },
    "/grpc.health.v1.Health/Check": AccessRule(_ANYONE),
    # A stream stays open for as long as its caller likes: only for the coordinator, which
    # may watch the nodes it fans out to (probes and monitors use Check).
    "/grpc.health.v1.Health/Watch": AccessRule(frozenset({"coordinator"})),
}


def caller() -> Any:
    """The verified identity of the current call's peer (None in --dev-insecure mode)."""
    return _CALLER.get()


def require_caller() -> Any:
    identity = _CALLER.get()
    if identity is None:
        raise FedmatchError("no authenticated caller")
    return identity


def _parsed(
    parse: Callable[[bytes], Any] | None, request: Any, context: grpc.ServicerContext
) -> Any:
    """The request message of an admitted call. gRPC would parse every request on its one
    dispatching thread, before any access rule, and log a traceback for each that does not
    parse: a caller refused here costs no parsing, a 37 MB request holds up no other call's
    dispatch, and a malformed one is refused as gRPC refuses it (INTERNAL, the same
    words) without filling the log."""
    if parse is None:
        return request
    try:
        return parse(request)
    except Exception:  # any parser failure: a body that does not parse
        log.debug("request does not parse")
        context.abort(grpc.StatusCode.INTERNAL, "Exception deserializing request!")
        raise  # abort raises; this keeps type checkers aware


class AuthorizingInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        rules: Mapping[str, AccessRule],
        identify: Callable[[grpc.ServicerContext], Any] | None,
        own_state: str | None = None,
        shares: PeerShares | None = None,
    ) -> None:
        """``identify`` verifies the peer's certificate and returns its identity (raising a
        FedmatchError); None means plaintext transport (--dev-insecure): every call is let
        through without an identity (and without shares: they need an identity).
        ``shares`` bounds what each peer's scope holds at once."""
        self._rules = dict(rules)
        self._identify = identify
        self._own_state = own_state
        self._shares = shares

    def _check(self, method: str, context: grpc.ServicerContext) -> Any:
        if self._identify is None:
            return None
        rule = self._rules.get(method)
        if rule is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "method not allowed")
        try:
            identity = self._identify(context)
        except FedmatchError as exc:
            log.info("%s: peer refused (%s)", method, type(exc).__name__)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"peer not accepted: {exc}")
        if identity.role not in rule.roles:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"a {identity.role} may not call {method.rsplit('/', 1)[-1]}",
            )
        if rule.own_state and identity.member_state != self._own_state:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"only {self._own_state}'s own {', '.join(sorted(rule.roles))} may call this",
            )
        return identity

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        check, shares = self._check, self._shares

        def admit(context: grpc.ServicerContext, kind: str) -> tuple[Any, Any]:
            """The caller's identity and its share's slot (refused: RESOURCE_EXHAUSTED)."""
            identity = check(method, context)
            if identity is None or shares is None:
                return identity, None
            try:
                return identity, shares.acquire(identity, kind)
            except PeerShareExceeded as exc:
                note_refusal(exc)
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
                raise  # abort raises; this keeps type checkers aware

        def release(slot: Any) -> None:
            if shares is not None:
                shares.release(slot)

        def unary(
            inner: Callable[[Any, grpc.ServicerContext], Any], parse: Any = None
        ) -> Callable[..., Any]:
            def behavior(request: Any, context: grpc.ServicerContext) -> Any:
                identity, slot = admit(context, "call")
                token = _CALLER.set(identity)
                try:
                    return inner(_parsed(parse, request, context), context)
                finally:
                    _CALLER.reset(token)
                    release(slot)

            return behavior

        def streaming(inner: Callable[..., Any], parse: Any = None) -> Callable[..., Any]:
            if is_non_blocking(inner):
                return _non_blocking(inner)

            def behavior(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                identity, slot = admit(context, "stream")
                token = _CALLER.set(identity)
                try:
                    yield from inner(_parsed(parse, request, context), context)
                finally:
                    _CALLER.reset(token)
                    release(slot)

            return behavior

        def _non_blocking(inner: Callable[..., Any]) -> Callable[..., Any]:
            # A stream that answers through a callback (the health service's Watch) holds
            # no worker thread while it is open: kept so here, its share held until gRPC
            # ends the call, however it ends.
            def behavior(
                request: Any, context: grpc.ServicerContext, send_response_callback: Any = None
            ) -> Any:
                identity, slot = admit(context, "stream")
                if slot is not None and not context.add_callback(lambda: release(slot)):
                    release(slot)  # already over: nothing will call back
                token = _CALLER.set(identity)
                try:
                    return inner(request, context, send_response_callback=send_response_callback)
                finally:
                    _CALLER.reset(token)

            return keep_non_blocking(inner, behavior)

        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        # A unary request arrives as bytes and is parsed once the caller is admitted (see
        # _parsed); the health service's Watch and streams of requests keep gRPC's parsing.
        parse, raw = handler.request_deserializer, {**kw, "request_deserializer": None}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary, parse), **raw)
        if handler.unary_stream and is_non_blocking(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                streaming(handler.unary_stream, parse), **raw
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kw)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kw)
        return None
