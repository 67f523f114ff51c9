"""gRPC edge of the node: decode, call :class:`NodeService`, encode. Nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import grpc
import numpy as np

from fedmatch.audit.events import logs_refusals
from fedmatch.audit.servicer import AuditServicer
from fedmatch.domain import parse_date
from fedmatch.errors import InvalidInput
from fedmatch.grpcutil.auth import AUDIT_AND_HEALTH_RULES, AccessRule
from fedmatch.grpcutil.errors import translated
from fedmatch.grpcutil.server import RunningServer, ServerLimits, start_server
from fedmatch.grpcutil.shares import PeerShares, Shares
from fedmatch.protocol.limits import MAX_NODE_RESPONSE_BYTES, MAX_RECEIVE_BYTES
from fedmatch.protocol.packet import check_image_digest
from fedmatch.protocol.transport import Security
from fedmatch.protocol.wire import (
    authorization_from_pb,
    category_from_pb,
    header_from_pb,
    hit_to_pb,
    key_bundle_from_pb,
    packet_to_pb,
    probe_from_pb,
    sex_from_pb,
    signed_from_pb,
    verdicts_from_pb,
    witness_answer_to_pb,
)
from fedmatch.rpc.v1 import audit_pb2, audit_pb2_grpc, common_pb2, node_pb2, node_pb2_grpc
from node.lifecycle import Lifecycle
from node.lifecycle_servicer import LIFECYCLE_RULES_OWN_STATE, LifecycleRpcs
from node.officer_actions import officer_header
from node.records import NewRecord, RecordMeta
from node.service import NodeService

__all__ = ["NODE_LIMITS", "NODE_RULES", "NodeServicer", "WitnessServicer", "serve_node"]

NODE_LIMITS = ServerLimits(
    max_receive_bytes=MAX_RECEIVE_BYTES, max_send_bytes=MAX_NODE_RESPONSE_BYTES
)


class NodeServicer(LifecycleRpcs, node_pb2_grpc.NodeServiceServicer):
    def __init__(self, service: NodeService, lifecycle: Lifecycle | None = None) -> None:
        self.service = service
        self.lifecycle = lifecycle  # marks, erasure, notices (node/lifecycle_servicer.py)

    @translated
    @logs_refusals("enroll")
    def Enroll(  # noqa: N802 - gRPC method names
        self, request: node_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> node_pb2.EnrollResponse:
        header = officer_header(self.service, request, "Enroll")
        r = request.record
        meta = RecordMeta(
            reference=r.reference,
            category=category_from_pb(r.category),
            event_date=parse_date(r.event_date, "record.event_date"),
            event_place=r.event_place,
            capture_date=parse_date(r.capture_date, "record.capture_date"),
            sex=sex_from_pb(r.sex),
            operator_id=r.operator_id,
            # Required by the minimum-age check at enrolment (node/retention.py).
            birth_date=parse_date(r.birth_date, "record.birth_date") if r.birth_date else None,
            birth_date_estimated=r.birth_date_estimated,
            # Resettlement records: the article the data were taken under (their retention).
            resettlement_basis=r.resettlement_basis,
        )
        if request.HasField("photo"):
            photo = request.photo
            pick: int | Literal["largest"] | None = (
                None if photo.pick == -1 else "largest" if photo.pick == -2 else photo.pick
            )
            if isinstance(pick, int) and pick < 0:
                raise InvalidInput("photo.pick is -1 (none), -2 (largest) or a face index")
            size = self.service.enroll_photo(header, meta, photo.data, photo.name[:64], pick)
            return node_pb2.EnrollResponse(register_size=size)
        if not request.HasField("template"):
            raise InvalidInput("a template or a photo is required")
        template = np.asarray(request.template.values, dtype=np.float32)
        if template.shape[0] != self.service.store.dimension:
            raise InvalidInput(f"template dimension must be {self.service.store.dimension}")
        record = NewRecord(meta=meta, template=template, model_id=request.template.model_id)
        size = self.service.enroll(header, record)
        return node_pb2.EnrollResponse(register_size=size)

    @translated
    @logs_refusals("register_keys")
    def RegisterKeys(  # noqa: N802
        self, request: common_pb2.RegisterKeysRequest, context: grpc.ServicerContext
    ) -> node_pb2.RegisterKeysResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        if not request.HasField("key_bundle"):
            raise InvalidInput("key_bundle is required")
        key_id, expires = self.service.register_keys(header, key_bundle_from_pb(request.key_bundle))
        return node_pb2.RegisterKeysResponse(key_id=key_id, expires_unix=int(expires))

    @translated
    @logs_refusals("search")
    def Search(  # noqa: N802
        self, request: node_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> node_pb2.SearchResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        if not request.HasField("probe"):
            raise InvalidInput("probe is required")
        probe = probe_from_pb(request.probe)
        result = self.service.search(
            header,
            probe,
            request.threshold_version,
            authorization_from_pb(request.authorization),
            signed_from_pb(request.header),
            should_stop=lambda: not context.is_active(),
        )
        return node_pb2.SearchResponse(
            member_state=result.member_state,
            blocks=[common_pb2.ResultBlock(ciphertext=b) for b in result.blocks],
            opening_key=result.opening_key,
        )

    @translated
    @logs_refusals("hit_details")
    def GetHitDetails(  # noqa: N802
        self, request: node_pb2.HitDetailsRequest, context: grpc.ServicerContext
    ) -> node_pb2.HitDetailsResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        hits = self.service.hit_details(
            header,
            list(request.handles),
            authorization_from_pb(request.authorization),
            signed_from_pb(request.header),
            verdicts_from_pb(request.verdicts),
            request.sealed_opening,
        )
        return node_pb2.HitDetailsResponse(
            hits=[hit_to_pb(h) for h in hits.hits], held_for_review=hits.held_for_review
        )

    @translated
    @logs_refusals("verification_packets")
    def GetVerificationPackets(  # noqa: N802
        self, request: node_pb2.PacketsRequest, context: grpc.ServicerContext
    ) -> node_pb2.PacketsResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        packets = self.service.verification_packets(
            header,
            list(request.handles),
            authorization_from_pb(request.authorization),
            signed_from_pb(request.header),
            request.sealed_opening,
            check_image_digest(request.probe_image_sha256, "probe_image_sha256"),
        )
        return node_pb2.PacketsResponse(packets=[packet_to_pb(p) for p in packets])

    @translated
    @logs_refusals("report_rejections")
    def ReportRejections(  # noqa: N802
        self, request: node_pb2.ReportRejectionsRequest, context: grpc.ServicerContext
    ) -> node_pb2.ReportRejectionsResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        new = self.service.record_rejections(header, verdicts_from_pb(request.verdicts))
        return node_pb2.ReportRejectionsResponse(recorded=new)

    @translated
    def GetInfo(  # noqa: N802
        self, request: node_pb2.InfoRequest, context: grpc.ServicerContext
    ) -> node_pb2.InfoResponse:
        header_from_pb(request.header, request.HasField("header"))
        svc = self.service
        return node_pb2.InfoResponse(
            member_state=svc.member_state,
            model_id=svc.store.model_id,
            dimension=svc.store.dimension,
            record_count=svc.record_count(),
            he_param_sets=[svc.engine.params.name],
            threshold_version=svc.config.threshold_version,
        )


class WitnessServicer(audit_pb2_grpc.WitnessServiceServicer):
    """The node as a witness of the coordinator's log."""

    def __init__(self, service: NodeService) -> None:
        self.service = service

    @translated
    def AddCheckpoint(  # noqa: N802
        self, request: audit_pb2.AddCheckpointRequest, context: grpc.ServicerContext
    ) -> audit_pb2.AddCheckpointResponse:
        answer = self.service.add_checkpoint(
            request.old_size, list(request.consistency_proof), request.checkpoint
        )
        return witness_answer_to_pb(answer)


_NODE = "/fedmatch.rpc.v1.NodeService/"
# Bounded by the server's own limits only: the coordinator carries every state's searches.
_FANOUT = frozenset({"coordinator"})

# Who may call what at a node; anything else is refused (deny by default).
NODE_RULES: dict[str, AccessRule] = {
    _NODE + "Enroll": AccessRule(frozenset({"operator"}), own_state=True),
    _NODE + "RegisterKeys": AccessRule(frozenset({"coordinator"})),
    _NODE + "Search": AccessRule(frozenset({"coordinator"})),
    _NODE + "GetHitDetails": AccessRule(frozenset({"coordinator"})),
    _NODE + "GetVerificationPackets": AccessRule(frozenset({"coordinator"})),
    _NODE + "ReportRejections": AccessRule(frozenset({"coordinator"})),
    _NODE + "GetInfo": AccessRule(frozenset({"coordinator", "auditor", "operator"})),
    "/fedmatch.rpc.v1.WitnessService/AddCheckpoint": AccessRule(frozenset({"coordinator"})),
    # Record lifecycle: the node's own state's operators; notices come only via the relay.
    **{
        _NODE + m: AccessRule(frozenset({"operator"}), own_state=True)
        for m in LIFECYCLE_RULES_OWN_STATE
    },
    _NODE + "DeliverNotice": AccessRule(frozenset({"coordinator"})),
    **AUDIT_AND_HEALTH_RULES,
}


def serve_node(
    service: NodeService,
    security: Security,
    listen: str | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),  # type: ignore[type-arg]
    lifecycle: Lifecycle | None = None,
) -> RunningServer:
    """``interceptors`` run before the access rules (the metrics interceptor, which also
    counts refusals by those rules)."""
    servicer = NodeServicer(service, lifecycle)
    witness = WitnessServicer(service)
    # A fresh checkpoint for an auditor carries the register's reconciliation when due.
    audit = AuditServicer(
        service.audit.log, service.audit.auditors, lambda fresh: service.publish_checkpoint()
    )
    limits = replace(NODE_LIMITS, max_workers=service.config.max_workers)
    # Every search comes through the coordinator; any other scope (a state's operators
    # enrolling, its verifiers fetching packets, auditors) holds at most half the threads.
    workers = service.config.max_workers
    shares = PeerShares(Shares(calls=max(1, workers // 2), streams=2, unbounded=_FANOUT))

    def add(server: grpc.Server) -> None:
        node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, server)
        audit_pb2_grpc.add_WitnessServiceServicer_to_server(witness, server)
        audit_pb2_grpc.add_AuditServiceServicer_to_server(audit, server)

    return start_server(
        add,
        listen or service.config.listen,
        limits,
        security.server_credentials(),
        [*interceptors, security.interceptor(NODE_RULES, service.member_state, shares)],
    )
