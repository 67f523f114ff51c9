"""gRPC edge of a party's log for auditors: checkpoints, entries, proofs.

Every call is authorized first (:class:`AuditorRegistry`); the start of an audit (a
checkpoint request) is itself logged, as DOMAIN.md section 5 requires of log access.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from fedmatch.audit.access import AuditorRegistry
from fedmatch.audit.entry import AuditEvent, EventKind
from fedmatch.audit.log import MAX_ENTRIES_PER_READ, AuditLog
from fedmatch.errors import InvalidInput
from fedmatch.grpcutil.errors import translated
from fedmatch.rpc.v1 import audit_pb2, audit_pb2_grpc

__all__ = ["AuditServicer"]


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(
        self,
        log: AuditLog,
        auditors: AuditorRegistry,
        checkpoint: Callable[[bool], bytes] | None = None,
    ) -> None:
        self.log = log
        self.auditors = auditors
        # The coordinator publishes checkpoints with its witnesses' cosignatures attached.
        self._checkpoint = checkpoint or (lambda fresh: log.checkpoint())

    @translated
    def GetCheckpoint(  # noqa: N802 - gRPC method names
        self, request: audit_pb2.AuditRequest, context: grpc.ServicerContext
    ) -> audit_pb2.CheckpointResponse:
        query = self.auditors.check(request, "GetCheckpoint")
        self.log.append(
            AuditEvent(EventKind.AUDIT_ACCESSED, operator=query.auditor, outcome="checkpoint")
        )
        return audit_pb2.CheckpointResponse(checkpoint=self._checkpoint(query.fresh))

    @translated
    def GetEntries(  # noqa: N802
        self, request: audit_pb2.AuditRequest, context: grpc.ServicerContext
    ) -> audit_pb2.EntriesResponse:
        query = self.auditors.check(request, "GetEntries")
        end = min(query.end, query.start + MAX_ENTRIES_PER_READ)
        return audit_pb2.EntriesResponse(entries=self.log.entries(query.start, end))

    @translated
    def GetInclusionProof(  # noqa: N802
        self, request: audit_pb2.AuditRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ProofResponse:
        query = self.auditors.check(request, "GetInclusionProof")
        return audit_pb2.ProofResponse(
            hashes=self.log.inclusion_proof(query.index, query.tree_size)
        )

    @translated
    def GetConsistencyProof(  # noqa: N802
        self, request: audit_pb2.AuditRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ProofResponse:
        query = self.auditors.check(request, "GetConsistencyProof")
        if query.size1 == 0:
            raise InvalidInput("a consistency proof starts from a non-empty tree")
        return audit_pb2.ProofResponse(hashes=self.log.consistency_proof(query.size1, query.size2))
