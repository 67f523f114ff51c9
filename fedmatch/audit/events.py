"""Building audit events from requests, shared by nodes and the coordinator.

Also the servicer decorator that logs every refused call with its reason: refusals are
evidence too (DOMAIN.md section 4), and an auditor counts them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import grpc

from fedmatch.audit.entry import AuditEvent, EventKind, SignedEntry, digest_hex
from fedmatch.domain import QueryHeader
from fedmatch.errors import FedmatchError
from fedmatch.grpcutil.errors import status_for
from fedmatch.protocol.wire import header_from_pb

__all__ = [
    "handles_digest",
    "header_event",
    "logs_refusals",
    "refusal_event",
    "refusal_reason",
    "same_request",
]

log = logging.getLogger("fedmatch.audit")


def handles_digest(handles: Sequence[bytes]) -> str:
    """How a set of hit handles appears in the logs: one digest, order-independent."""
    return digest_hex(b"".join(sorted(handles)))


def header_event(kind: EventKind, header: QueryHeader | None, **fields: Any) -> AuditEvent:
    """An audit event carrying the request header's fields (purpose, basis, case, who)."""
    if header is not None:
        fields = {
            "query_id": header.query_id,
            "requesting_state": header.requesting_state,
            "purpose": header.purpose.value,
            "legal_basis": header.legal_basis,
            "case_reference": header.case_reference,
            "unit": header.unit,
            "operator": header.operator,
            **fields,
        }
    return AuditEvent(kind, **fields)


def same_request(entry: SignedEntry, header: QueryHeader) -> bool:
    """Whether a logged entry names exactly this request (who, why, for which case)."""
    e = entry.event
    return (
        e.query_id == header.query_id
        and e.requesting_state == header.requesting_state
        and e.purpose == header.purpose.value
        and e.legal_basis == header.legal_basis
        and e.case_reference == header.case_reference
        and e.unit == header.unit
        and e.operator == header.operator
    )


def refusal_event(request: str, header: QueryHeader | None, exc: FedmatchError) -> AuditEvent:
    """The log entry of a refused call: a refused search, or another refused request."""
    kind = (
        EventKind.SEARCH_REFUSED if request in ("search", "lookup") else EventKind.REQUEST_REFUSED
    )
    return header_event(
        kind, header, outcome="refused", reason=refusal_reason(exc), labels={"request": request}
    )


def refusal_reason(exc: FedmatchError) -> str:
    """A refusal's reason for the log: the status and the error class, never its text
    (error texts may quote caller-supplied values)."""
    return f"{status_for(exc).name.lower()}:{type(exc).__name__}"


class _RefusalLogger(Protocol):
    def refused(self, request: str, header: QueryHeader | None, exc: FedmatchError) -> None: ...


class _HasService(Protocol):
    @property
    def service(self) -> _RefusalLogger: ...


S = TypeVar("S", bound=_HasService)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[S, Req, grpc.ServicerContext], Resp]


def _header_or_none(request: Any) -> QueryHeader | None:
    try:
        return header_from_pb(request.header, request.HasField("header"))
    except (FedmatchError, AttributeError, ValueError):
        return None


def logs_refusals(request_name: str) -> Callable[[Handler[S, Req, Resp]], Handler[S, Req, Resp]]:
    """Log every refused call of a servicer method (apply under ``@translated``)."""

    def decorate(method: Handler[S, Req, Resp]) -> Handler[S, Req, Resp]:
        @functools.wraps(method)
        def wrapper(self: S, request: Req, context: grpc.ServicerContext) -> Resp:
            try:
                return method(self, request, context)
            except FedmatchError as exc:
                _log_refusal(self, request_name, request, exc)
                raise
            except Exception:
                _log_refusal(self, request_name, request, FedmatchError("internal error"))
                raise

        return wrapper

    return decorate


def _log_refusal(servicer: _HasService, name: str, request: Any, exc: FedmatchError) -> None:
    try:
        servicer.service.refused(name, _header_or_none(request), exc)
    except FedmatchError as log_exc:
        # The refusal stands; that it could not be logged is itself an operator alarm.
        log.error("refusal of %s not logged: %s", name, type(log_exc).__name__)
