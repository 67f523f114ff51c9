"""gRPC edge of the record lifecycle (marks, Dublin status, own hit links, erasure, notices,
inbox): check the officer's signature of the request (node/officer_actions.py), decode,
call :class:`node.lifecycle.Lifecycle`, encode. Mixed into the node's servicer."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import grpc

from fedmatch.audit.events import logs_refusals
from fedmatch.domain import parse_date
from fedmatch.errors import PreconditionFailed
from fedmatch.grpcutil.errors import translated
from fedmatch.rpc.v1 import node_pb2
from node.inbox import InboxItem
from node.lifecycle import Lifecycle, LifecycleOutcome, StatusChange
from node.notices import notice_to_pb
from node.officer_actions import officer_header

if TYPE_CHECKING:
    from node.service import NodeService

__all__ = ["LIFECYCLE_RULES_OWN_STATE", "LifecycleRpcs", "inbox_item_to_pb"]

# Methods only the node's own state's operators may call (see NODE_RULES).
LIFECYCLE_RULES_OWN_STATE = (
    "MarkRecord",
    "SetRecordStatus",
    "LinkOwnHit",
    "EraseRecord",
    "RouteRightsRequest",
    "ListInbox",
    "AcknowledgeInbox",
)


def _optional_date(value: str, name: str) -> dt.date | None:
    return parse_date(value, name) if value else None


def status_change_from_pb(request: node_pb2.SetRecordStatusRequest) -> StatusChange:
    return StatusChange(
        responsible_state=request.responsible_state,
        responsible_basis=request.responsible_basis,
        transferred_on=_optional_date(request.transferred_on, "transferred_on"),
        removed_on=_optional_date(request.removed_on, "removed_on"),
        left_territory_on=_optional_date(request.left_territory_on, "left_territory_on"),
        relocated_to=request.relocated_to,
        relocated_on=_optional_date(request.relocated_on, "relocated_on"),
        clear=frozenset(request.clear),
    )


def _outcome_pb(out: LifecycleOutcome) -> node_pb2.LifecycleResponse:
    return node_pb2.LifecycleResponse(
        outcome=out.outcome, notices_sent=out.notices_sent, notices_pending=out.notices_pending
    )


def inbox_item_to_pb(item: InboxItem, now: dt.datetime) -> node_pb2.InboxItem:
    return node_pb2.InboxItem(
        item_id=item.item_id,
        notice=notice_to_pb(item.notice),
        received=item.received.isoformat(timespec="seconds"),
        due=item.due.isoformat(timespec="seconds"),
        status=item.status,
        overdue=item.overdue(now),
        acknowledged_by=item.acknowledged_by,
    )


class LifecycleRpcs:
    service: NodeService
    lifecycle: Lifecycle | None

    def _lifecycle(self) -> Lifecycle:
        if self.lifecycle is None:
            raise PreconditionFailed("the record lifecycle is not enabled on this node")
        return self.lifecycle

    @translated
    @logs_refusals("mark_record")
    def MarkRecord(  # noqa: N802 - gRPC method names
        self, request: node_pb2.MarkRecordRequest, context: grpc.ServicerContext
    ) -> node_pb2.LifecycleResponse:
        header = officer_header(self.service, request, "MarkRecord")
        out = self._lifecycle().mark(header, request.reference, request.marked, request.mark_kind)
        return _outcome_pb(out)

    @translated
    @logs_refusals("set_record_status")
    def SetRecordStatus(  # noqa: N802
        self, request: node_pb2.SetRecordStatusRequest, context: grpc.ServicerContext
    ) -> node_pb2.LifecycleResponse:
        header = officer_header(self.service, request, "SetRecordStatus")
        change = status_change_from_pb(request)
        return _outcome_pb(self._lifecycle().set_status(header, request.reference, change))

    @translated
    @logs_refusals("link_own_hit")
    def LinkOwnHit(  # noqa: N802
        self, request: node_pb2.LinkOwnHitRequest, context: grpc.ServicerContext
    ) -> node_pb2.LifecycleResponse:
        header = officer_header(self.service, request, "LinkOwnHit")
        out = self._lifecycle().link_own_hit(
            header, request.reference, request.other_state, request.other_digest,
            request.query_id,
        )  # fmt: skip
        return _outcome_pb(out)

    @translated
    @logs_refusals("erase_record")
    def EraseRecord(  # noqa: N802
        self, request: node_pb2.EraseRecordRequest, context: grpc.ServicerContext
    ) -> node_pb2.LifecycleResponse:
        header = officer_header(self.service, request, "EraseRecord")
        out = self._lifecycle().erase(header, request.reference, request.reason)
        return node_pb2.LifecycleResponse(
            outcome=out.outcome, notices_sent=out.notices_sent, notices_pending=out.notices_pending
        )

    @translated
    @logs_refusals("route_rights_request")
    def RouteRightsRequest(  # noqa: N802
        self, request: node_pb2.RouteRightsRequestRequest, context: grpc.ServicerContext
    ) -> node_pb2.RouteRightsRequestResponse:
        header = officer_header(self.service, request, "RouteRightsRequest")
        notice_id, outcome = self._lifecycle().route(
            header, request.kind, request.to_state, request.reference, request.query_id
        )
        return node_pb2.RouteRightsRequestResponse(notice_id=notice_id, outcome=outcome)

    @translated
    @logs_refusals("list_inbox")
    def ListInbox(  # noqa: N802
        self, request: node_pb2.ListInboxRequest, context: grpc.ServicerContext
    ) -> node_pb2.ListInboxResponse:
        header = officer_header(self.service, request, "ListInbox")
        lifecycle = self._lifecycle()
        items = lifecycle.inbox(header, request.open_only)
        now = lifecycle.clock()
        return node_pb2.ListInboxResponse(
            items=[inbox_item_to_pb(i, now) for i in items],
            overdue=sum(i.overdue(now) for i in items),
        )

    @translated
    @logs_refusals("acknowledge_inbox")
    def AcknowledgeInbox(  # noqa: N802
        self, request: node_pb2.AcknowledgeInboxRequest, context: grpc.ServicerContext
    ) -> node_pb2.InboxItem:
        header = officer_header(self.service, request, "AcknowledgeInbox")
        lifecycle = self._lifecycle()
        item = lifecycle.acknowledge(header, request.item_id)
        return inbox_item_to_pb(item, lifecycle.clock())

    @translated
    @logs_refusals("deliver_notice")
    def DeliverNotice(  # noqa: N802
        self, request: node_pb2.DeliverNoticeRequest, context: grpc.ServicerContext
    ) -> node_pb2.DeliverNoticeResponse:
        item = self._lifecycle().deliver(request.notice)
        return node_pb2.DeliverNoticeResponse(
            item_id=item.item_id, due=item.due.isoformat(timespec="seconds")
        )
