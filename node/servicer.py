"""gRPC edge of the node: decode, call :class:`NodeService`, encode. Nothing else."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import grpc
import numpy as np

from fedmatch.domain import parse_date
from fedmatch.errors import InvalidInput
from fedmatch.grpcutil.errors import translated
from fedmatch.grpcutil.server import RunningServer, ServerLimits, start_server
from fedmatch.limits import MAX_NODE_RESPONSE_BYTES, MAX_RECEIVE_BYTES
from fedmatch.rpc.v1 import common_pb2, node_pb2, node_pb2_grpc
from fedmatch.wire import (
    category_from_pb,
    header_from_pb,
    hit_to_pb,
    key_bundle_from_pb,
    probe_from_pb,
    sex_from_pb,
)
from node.records import NewRecord, RecordMeta
from node.service import NodeService

__all__ = ["NODE_LIMITS", "NodeServicer", "serve_node"]

NODE_LIMITS = ServerLimits(
    max_receive_bytes=MAX_RECEIVE_BYTES, max_send_bytes=MAX_NODE_RESPONSE_BYTES
)


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, service: NodeService) -> None:
        self.service = service

    @translated
    def Enroll(  # noqa: N802 - gRPC method names
        self, request: node_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> node_pb2.EnrollResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        r = request.record
        meta = RecordMeta(
            reference=r.reference,
            category=category_from_pb(r.category),
            event_date=parse_date(r.event_date, "record.event_date"),
            event_place=r.event_place,
            capture_date=parse_date(r.capture_date, "record.capture_date"),
            sex=sex_from_pb(r.sex),
            operator_id=r.operator_id,
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
    def RegisterKeys(  # noqa: N802
        self, request: common_pb2.RegisterKeysRequest, context: grpc.ServicerContext
    ) -> node_pb2.RegisterKeysResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        if not request.HasField("key_bundle"):
            raise InvalidInput("key_bundle is required")
        key_id, expires = self.service.register_keys(header, key_bundle_from_pb(request.key_bundle))
        return node_pb2.RegisterKeysResponse(key_id=key_id, expires_unix=int(expires))

    @translated
    def Search(  # noqa: N802
        self, request: node_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> node_pb2.SearchResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        if not request.HasField("probe"):
            raise InvalidInput("probe is required")
        probe = probe_from_pb(request.probe)
        result = self.service.search(
            header, probe, request.threshold_version, should_stop=lambda: not context.is_active()
        )
        return node_pb2.SearchResponse(
            member_state=result.member_state,
            record_count=result.record_count,
            blocks=[common_pb2.ResultBlock(ciphertext=b) for b in result.blocks],
        )

    @translated
    def GetHitDetails(  # noqa: N802
        self, request: node_pb2.HitDetailsRequest, context: grpc.ServicerContext
    ) -> node_pb2.HitDetailsResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        hits = self.service.hit_details(header, list(request.handles))
        return node_pb2.HitDetailsResponse(hits=[hit_to_pb(h) for h in hits])

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


def serve_node(service: NodeService, listen: str | None = None) -> RunningServer:
    servicer = NodeServicer(service)
    limits = replace(NODE_LIMITS, max_workers=service.config.max_workers)
    return start_server(
        lambda s: node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, s),
        listen or service.config.listen,
        limits,
    )
