"""The node's check of an operator action: an officer of its own state signed this very
request (:mod:`fedmatch.protocol.node_action`), once.

Enrolment and every record-lifecycle method call :func:`officer_header` before any handler
logic. The workstation's certificate (checked by the access rules) only made the channel:
the header's operator, which every log entry of the action records, is the id of the
officer whose personal certificate signed, never free text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedmatch.domain import QueryHeader, check_member_state
from fedmatch.errors import PermissionDenied
from fedmatch.protocol.node_action import NODE_ACTIONS, action_digest
from fedmatch.protocol.wire import header_from_pb, signed_from_pb

if TYPE_CHECKING:
    from node.service import NodeService

__all__ = ["officer_header"]


def officer_header(service: NodeService, request: Any, method: str) -> QueryHeader:
    """The header of ``request`` (of the node method ``method``) once its signed statement
    verifies: signed by an officer of this node's state whose certificate's id is the
    header's operator, of the method's kind, for this request's digest, with a nonce not
    used before (consumed here: a replay is refused). Raises InvalidInput for a malformed
    header, PermissionDenied for anything else."""
    header = header_from_pb(request.header, request.HasField("header"))
    check_member_state(header.requesting_state, "header.requesting_state")
    if header.requesting_state != service.member_state:
        raise PermissionDenied("only this node's own member state may do this")
    gate = service.gate
    verified = gate.verify(
        signed_from_pb(request.header), header, NODE_ACTIONS[method], action_digest(request)
    )
    gate.consume(verified)
    return header
