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
    "/grpc.health.v1.Health/Watch": AccessRule(_ANYONE),
}


def caller() -> Any:
    """The verified identity of the current call's peer (None in --dev-insecure mode)."""
    return _CALLER.get()


def require_caller() -> Any:
    identity = _CALLER.get()
    if identity is None:
        raise FedmatchError("no authenticated caller")
    return identity


class AuthorizingInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        rules: Mapping[str, AccessRule],
        identify: Callable[[grpc.ServicerContext], Any] | None,
        own_state: str | None = None,
    ) -> None:
        """``identify`` verifies the peer's certificate and returns its identity (raising a
        FedmatchError); None means plaintext transport (--dev-insecure): every call is let
        through without an identity."""
        self._rules = dict(rules)
        self._identify = identify
        self._own_state = own_state

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
        check = self._check

        def unary(inner: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def behavior(request: Any, context: grpc.ServicerContext) -> Any:
                token = _CALLER.set(check(method, context))
                try:
                    return inner(request, context)
                finally:
                    _CALLER.reset(token)

            return behavior

        def streaming(
            inner: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
        ) -> Callable[..., Iterator[Any]]:
            def behavior(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                token = _CALLER.set(check(method, context))
                try:
                    yield from inner(request, context)
                finally:
                    _CALLER.reset(token)

            return behavior

        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kw)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kw)
        return None
