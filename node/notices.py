"""Notices on the wire: protobuf conversion, the sending node's signature over each notice
and its check at the receiver, and the node's client of the coordinator's relay (nodes talk
only to the coordinator; the signature makes the coordinator a carrier, not an author)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedmatch.audit.note import NoteSigner
from fedmatch.errors import FedmatchError, InvalidInput, PermissionDenied, Unavailable
from fedmatch.grpcutil.server import make_channel
from fedmatch.pki.names import dns_name
from fedmatch.protocol.canonical import canonical_json
from fedmatch.protocol.limits import MAX_RECEIVE_BYTES
from fedmatch.protocol.wire import mark_from_wire
from fedmatch.rpc.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from node.inbox import Notice, NoticeKind

__all__ = [
    "CoordinatorRelay",
    "NoticeSigner",
    "notice_from_pb",
    "notice_payload",
    "notice_to_pb",
    "verified_notice",
]

# Domain separation: a NUL never occurs in a note or an audit entry payload.
NOTICE_DOMAIN = b"fedmatch/notice/v1\x00"
# A certificate chain (leaf and intermediate, PEM) is about 2 KB.
_MAX_CHAIN_BYTES = 16 * 1024

# A notice is a few hundred bytes; so is the answer.
_MAX_NOTICE_BYTES = 64 * 1024


def notice_to_pb(notice: Notice) -> common_pb2.Notice:
    return common_pb2.Notice(
        notice_id=notice.notice_id,
        kind=notice.kind.value,
        from_state=notice.from_state,
        to_state=notice.to_state,
        reference=notice.reference,
        reference_digest=notice.reference_digest,
        query_id=notice.query_id,
        case_reference=notice.case_reference,
        mark_kind=notice.mark_kind.value,
        hit_record_digest=notice.hit_record_digest,
    )


def notice_payload(notice: Notice) -> bytes:
    """The exact bytes a sending node signs: the domain, then canonical JSON of the fields.
    The mark's kind and the receiver's hit record are in it when set (a notice without them
    signs the same bytes as before they existed; one stripped of them no longer verifies)."""
    fields = {
        "notice_id": notice.notice_id,
        "kind": notice.kind.value,
        "from_state": notice.from_state,
        "to_state": notice.to_state,
        "reference": notice.reference,
        "reference_digest": notice.reference_digest,
        "query_id": notice.query_id,
        "case_reference": notice.case_reference,
    }
    if notice.mark_kind:
        fields["mark_kind"] = notice.mark_kind.value
    if notice.hit_record_digest:
        fields["hit_record_digest"] = notice.hit_record_digest
    return NOTICE_DOMAIN + canonical_json(fields)


class NoticeSigner:
    """How a node signs the notices it sends: its audit signing key, which its node
    certificate binds, and that certificate chain."""

    def __init__(self, signer: NoteSigner, chain_pem: bytes) -> None:
        self._signer = signer
        self._chain = chain_pem

    def __call__(self, notice: Notice) -> common_pb2.Notice:
        pb = notice_to_pb(notice)
        pb.signature = self._signer.sign(notice_payload(notice))
        pb.signer_chain = self._chain
        return pb


def verified_notice(pb: common_pb2.Notice, verify_chain: Callable[[bytes], Any]) -> Notice:
    """The notice, checked (InvalidInput) and signed by the node of its ``from_state``
    (PermissionDenied otherwise): a relayed notice is the sending node's word."""
    notice = notice_from_pb(pb)
    if len(pb.signer_chain) > _MAX_CHAIN_BYTES or len(pb.signature) != 64:
        raise PermissionDenied("the notice is not signed by its sending node")
    try:
        identity = verify_chain(pb.signer_chain)
    except FedmatchError:
        raise PermissionDenied("the notice's signer certificate is not valid") from None
    if identity.role != "node" or identity.scope != notice.from_state:
        raise PermissionDenied(f"the notice is not signed by the node of {notice.from_state}")
    try:
        key = Ed25519PublicKey.from_public_bytes(identity.signing_key)
        key.verify(pb.signature, notice_payload(notice))
    except (InvalidSignature, ValueError):
        raise PermissionDenied("the notice's signature does not verify") from None
    return notice


def notice_from_pb(pb: common_pb2.Notice) -> Notice:
    """The notice, checked (InvalidInput on any bad field)."""
    return Notice(
        notice_id=pb.notice_id,
        kind=_kind(pb.kind),
        from_state=pb.from_state,
        to_state=pb.to_state,
        reference=pb.reference,
        reference_digest=pb.reference_digest,
        query_id=pb.query_id,
        case_reference=pb.case_reference,
        mark_kind=mark_from_wire(pb.mark_kind),
        hit_record_digest=pb.hit_record_digest,
    )


def _kind(value: str) -> NoticeKind:
    try:
        return NoticeKind(value)
    except ValueError:
        raise InvalidInput("unknown notice kind") from None


class CoordinatorRelay:
    """Sends a node's notices to the coordinator's RelayNotice (mTLS as this node)."""

    def __init__(
        self,
        address: str,
        credentials: grpc.ChannelCredentials | None,
        sign: Callable[[Notice], common_pb2.Notice],
        timeout: float = 20.0,
    ) -> None:
        """``sign``: this node's :class:`NoticeSigner`."""
        self._sign = sign
        self._channel = make_channel(
            address,
            MAX_RECEIVE_BYTES,
            _MAX_NOTICE_BYTES,
            credentials,
            dns_name("coordinator", "eu") if credentials is not None else None,
        )
        self._stub = coordinator_pb2_grpc.CoordinatorServiceStub(self._channel)
        self._timeout = timeout

    def __call__(self, notice: Notice) -> tuple[int, str]:
        request = coordinator_pb2.RelayNoticeRequest(notice=self._sign(notice))
        try:
            response: coordinator_pb2.RelayNoticeResponse = self._stub.RelayNotice(
                request, timeout=self._timeout
            )
        except grpc.RpcError as err:
            raise Unavailable(f"relay through the coordinator failed: {err.code().name}") from None
        return int(response.item_id), response.due

    def close(self) -> None:
        self._channel.close()
