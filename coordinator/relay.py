"""The coordinator's relay of notices between nodes (marks, erasures, routed rights requests).

Nodes talk only to the coordinator. A node sends a notice in its own state's name: the
coordinator checks that the TLS peer is that state's node (its certificate's state and the
signing key the federation configured for that node), logs the relay, and forwards the
notice to the receiving node's inbox. The notice is opaque to the coordinator beyond its
routing fields; it carries no biometric data.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import grpc

from fedmatch.audit.entry import AuditEvent, EventKind
from fedmatch.audit.party import PartyAudit
from fedmatch.domain import check_member_state
from fedmatch.errors import (
    FedmatchError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    Unavailable,
)
from fedmatch.grpcutil.auth import caller
from fedmatch.rpc.v1 import common_pb2, node_pb2, node_pb2_grpc

__all__ = ["NOTICE_KINDS", "NoticeRelay"]

log = logging.getLogger("fedmatch.coordinator.relay")

NOTICE_KINDS = frozenset(
    {"record_marked", "record_unmarked", "record_erased", "correction_request", "erasure_request"}
)
_MAX_TEXT = 256
_ID = re.compile(r"^[0-9a-f]{32}$")
_DIGEST = re.compile(r"^([0-9a-f]{64})?$")


_REFUSALS: dict[grpc.StatusCode, type[FedmatchError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionFailed,
}


class NoticeRelay:
    def __init__(
        self,
        audit: PartyAudit,
        stubs: Mapping[str, node_pb2_grpc.NodeServiceStub],
        node_keys: Mapping[str, bytes],
        timeout: float,
    ) -> None:
        """``node_keys``: each member state's node signing key (raw Ed25519), as configured."""
        self.audit = audit
        self._stubs = stubs
        self._keys = node_keys
        self._timeout = timeout

    def relay(self, notice: common_pb2.Notice) -> tuple[int, str]:
        """Forward ``notice``; (the receiver's inbox item id, its due time)."""
        if not _ID.fullmatch(notice.notice_id) or notice.kind not in NOTICE_KINDS:
            raise InvalidInput("notice needs a 32-hex notice_id and a known kind")
        if not _DIGEST.fullmatch(notice.reference_digest):
            raise InvalidInput("notice.reference_digest must be 64 hex digits")
        check_member_state(notice.from_state, "notice.from_state")
        check_member_state(notice.to_state, "notice.to_state")
        for name in ("reference", "query_id", "case_reference"):
            value = getattr(notice, name)
            if len(value) > _MAX_TEXT or not value.isprintable():
                raise InvalidInput(
                    f"notice.{name} must be at most {_MAX_TEXT} printable characters"
                )
        peer = caller()
        if peer is not None and (
            peer.member_state != notice.from_state
            or peer.signing_key != self._keys.get(notice.from_state)
        ):
            raise PermissionDenied("a node sends notices only in its own state's name")
        if notice.from_state not in self._stubs:
            raise PermissionDenied(f"{notice.from_state} has no node in this federation")
        stub = self._stubs.get(notice.to_state)
        if stub is None or notice.to_state == notice.from_state:
            raise NotFound(f"no other node of {notice.to_state} in this federation")
        labels = {
            "notice_id": notice.notice_id,
            "notice_kind": notice.kind,
            "from_state": notice.from_state,
            "to_state": notice.to_state,
        }
        if notice.reference_digest:
            labels["record_digest"] = notice.reference_digest
        try:
            answer: node_pb2.DeliverNoticeResponse = stub.DeliverNotice(
                node_pb2.DeliverNoticeRequest(notice=notice), timeout=self._timeout
            )
        except grpc.RpcError as err:
            code = err.code().name
            # The node's refusal is passed on as such; anything else is its unavailability.
            error = _REFUSALS.get(err.code(), Unavailable)
            self.audit.record(
                AuditEvent(
                    EventKind.NOTICE_RELAYED,
                    requesting_state=notice.from_state,
                    query_id=notice.query_id[:64],
                    registers=(notice.to_state,),
                    outcome="failed",
                    reason=code.lower(),
                    labels=labels,
                )
            )
            raise error(f"node {notice.to_state} did not take the notice: {code}") from None
        self.audit.record(
            AuditEvent(
                EventKind.NOTICE_RELAYED,
                requesting_state=notice.from_state,
                query_id=notice.query_id[:64],
                registers=(notice.to_state,),
                outcome="delivered",
                labels=labels | {"item": str(answer.item_id), "due": answer.due[:64]},
            )
        )
        log.info("notice %s relayed %s -> %s", notice.kind, notice.from_state, notice.to_state)
        return int(answer.item_id), answer.due
