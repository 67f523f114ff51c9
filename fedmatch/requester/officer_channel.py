"""A channel to the state's own node on which the officer signs every operator action.

The workstation's mTLS credentials make the channel; this wraps it so that each
node-direct call (:data:`fedmatch.protocol.node_action.NODE_ACTIONS`: enrolment, marks,
record status, links, erasure, routing, inbox) leaves with the officer's signed statement
of that very request. Callers build their requests as before, with the officer's id as the
header's operator: a request naming anyone else is refused here (InvalidInput), before it
is sent. Other methods pass unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from fedmatch.errors import InvalidInput
from fedmatch.protocol.node_action import NODE_ACTIONS, sign_action
from fedmatch.protocol.statement import RequestSigner
from fedmatch.protocol.wire import header_from_pb

__all__ = ["officer_channel"]

_NODE = "/fedmatch.rpc.v1.NodeService/"


class _OfficerSigns(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, signer: RequestSigner) -> None:
        self._signer = signer

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        path = details.method.decode() if isinstance(details.method, bytes) else details.method
        method = path.removeprefix(_NODE)
        if path.startswith(_NODE) and method in NODE_ACTIONS and isinstance(request, Message):
            if _header_parses(request):
                request = sign_action(self._signer, request, method)
            # A malformed header goes unsigned: the node refuses it, saying what is wrong.
        return continuation(details, request)


def _header_parses(request: Any) -> bool:
    try:
        header_from_pb(request.header, request.HasField("header"))
    except InvalidInput:
        return False
    return True


def officer_channel(channel: grpc.Channel, signer: RequestSigner) -> grpc.Channel:
    """``channel`` (the workstation's, to its own node) with ``signer``'s signature on
    every operator action sent through it."""
    return grpc.intercept_channel(channel, _OfficerSigns(signer))
