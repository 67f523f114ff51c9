"""Error translation: domain errors -> gRPC status codes, with sanitized messages.

Every handler runs inside :func:`translated`. A :class:`FedmatchError` becomes its status
code with its own message (written to be safe to show); anything else becomes INTERNAL with a
fixed message, and only its class name is logged: exception text from libraries may quote
input bytes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

import grpc

from fedmatch import errors
from fedmatch.grpcutil.metrics import note_refusal

__all__ = ["status_for", "translated"]

log = logging.getLogger("fedmatch.grpc")

_CODES: list[tuple[type[errors.FedmatchError], grpc.StatusCode]] = [
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ResourceLimit, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]


def status_for(exc: errors.FedmatchError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")


def translated(
    method: Callable[[Self, Req, grpc.ServicerContext], Resp],
) -> Callable[[Self, Req, grpc.ServicerContext], Resp]:
    """Decorate a unary servicer method so that errors become clean statuses."""

    @functools.wraps(method)
    def wrapper(self: Self, request: Req, context: grpc.ServicerContext) -> Resp:
        try:
            return method(self, request, context)
        except errors.FedmatchError as exc:
            code = status_for(exc)
            note_refusal(exc)  # the error class, for the refusal metrics
            log.info("%s refused: %s (%s)", method.__name__, code.name, type(exc).__name__)
            # Errors with a machine-readable reason (the face quality gates) lead with it, so
            # a client can tell "no_face" from "too_dark" without parsing prose.
            reason = getattr(exc, "code", "")
            context.abort(
                code, f"{reason}: {exc}" if isinstance(reason, str) and reason else str(exc)
            )
        except Exception as exc:  # noqa: BLE001 - the last line of defence of a handler
            log.error("%s failed: %s", method.__name__, type(exc).__name__)
            note_refusal(exc)
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable: context.abort raises")

    return wrapper
