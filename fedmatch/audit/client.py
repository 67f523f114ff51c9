"""An auditor's client of one party's AuditService: every request signed by the auditor."""

from __future__ import annotations

import grpc

from fedmatch.audit.access import sign_query
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.note import NoteSigner
from fedmatch.grpcutil.server import make_channel
from fedmatch.protocol.limits import MAX_RECEIVE_BYTES
from fedmatch.rpc.v1 import audit_pb2_grpc

__all__ = ["AuditClient"]

# A page of up to 1,000 entries of at most 16 KiB each.
_MAX_ANSWER_BYTES = 20 * 1024 * 1024


class AuditClient:
    def __init__(
        self,
        address: str,
        signer: NoteSigner,
        timeout: float = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
    ) -> None:
        """``credentials``: the auditor's mTLS credentials; ``server_name``: the DNS name
        the party's certificate carries (None only with --dev-insecure)."""
        self._channel = make_channel(
            address, _MAX_ANSWER_BYTES, MAX_RECEIVE_BYTES, credentials, server_name
        )
        self._stub = audit_pb2_grpc.AuditServiceStub(self._channel)
        self._signer = signer
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AuditClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def checkpoint(self, fresh: bool = True) -> bytes:
        request = sign_query(self._signer, "GetCheckpoint", fresh=fresh)
        return bytes(self._stub.GetCheckpoint(request, timeout=self._timeout).checkpoint)

    def entries(self, start: int, end: int) -> list[bytes]:
        """Entries [start, end), fetched page by page."""
        out: list[bytes] = []
        while start + len(out) < end:
            request = sign_query(self._signer, "GetEntries", start=start + len(out), end=end)
            page = list(self._stub.GetEntries(request, timeout=self._timeout).entries)
            if not page:
                raise AuditVerificationError(f"party returned no entries from {start + len(out)}")
            out.extend(bytes(e) for e in page)
        return out

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        request = sign_query(self._signer, "GetInclusionProof", index=index, tree_size=tree_size)
        return list(self._stub.GetInclusionProof(request, timeout=self._timeout).hashes)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        request = sign_query(self._signer, "GetConsistencyProof", size1=size1, size2=size2)
        return list(self._stub.GetConsistencyProof(request, timeout=self._timeout).hashes)
