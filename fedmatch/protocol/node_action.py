"""Operator actions at a state's own node, signed by the officer who takes them.

Enrolment, marks, record status, own hit links, erasure, routed rights requests and the
inbox are asked of a state's own node directly, over the operator workstation's mTLS
channel. The workstation certificate only makes that channel: each request carries, in its
header's ``signed`` field, the same signed statement a search does
(:mod:`fedmatch.protocol.statement`), signed by the key of the officer's personal
certificate and naming that officer as its operator. Its kind is ``enrol`` or
``lifecycle``, and its ``probe_hash`` binds the whole request: the SHA-256 of the request
message's type name and of its deterministic serialization with the statement cleared.
A statement therefore signs one action on one record, never another, and its nonce makes
it good for one call only (the node's replay guard).
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

from google.protobuf.message import Message

from fedmatch.protocol.statement import RequestSigner
from fedmatch.protocol.wire import header_from_pb, header_to_pb

__all__ = ["NODE_ACTIONS", "action_digest", "sign_action"]

# The node methods an officer signs, and the statement kind each is signed as.
NODE_ACTIONS: dict[str, str] = {
    "Enroll": "enrol",
    "MarkRecord": "lifecycle",
    "SetRecordStatus": "lifecycle",
    "LinkOwnHit": "lifecycle",
    "EraseRecord": "lifecycle",
    "RouteRightsRequest": "lifecycle",
    "ListInbox": "lifecycle",
    "AcknowledgeInbox": "lifecycle",
}

M = TypeVar("M", bound=Message)


def action_digest(request: Message) -> str:
    """What the statement of a node-direct ``request`` names as its probe hash: SHA-256
    hex of the message's full type name, a NUL, and the message serialized
    deterministically without its header's signed statement."""
    unsigned = type(request)()
    unsigned.CopyFrom(request)
    # Every node-direct request has a RequestHeader named header (node.proto).
    unsigned.header.ClearField("signed")  # type: ignore[attr-defined]
    name = request.DESCRIPTOR.full_name.encode()
    return hashlib.sha256(
        name + b"\x00" + unsigned.SerializeToString(deterministic=True)
    ).hexdigest()


def sign_action(signer: RequestSigner, request: M, method: str) -> M:
    """A copy of ``request`` (of the node method ``method``, one of :data:`NODE_ACTIONS`)
    carrying the officer's signed statement. InvalidInput if its header is malformed or
    names another operator than the officer (the node would refuse either)."""
    header_pb = request.header  # type: ignore[attr-defined]
    header = header_from_pb(header_pb, request.HasField("header"))
    signed = signer.sign(header, NODE_ACTIONS[method], action_digest(request))
    out = type(request)()
    out.CopyFrom(request)
    out.header.signed.CopyFrom(header_to_pb(header, signed).signed)  # type: ignore[attr-defined]
    return out
