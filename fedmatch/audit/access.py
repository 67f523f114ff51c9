"""Who may read a party's log: signed auditor requests, checked before anything is read.

An auditor signs the exact bytes of an :class:`AuditQuery` (with a domain-separation
prefix, the RPC name, a 128-bit nonce and a timestamp) with its Ed25519 key; the party
accepts it only from a configured auditor key, within a time window, once per nonce, and
for the method it names. Reads are idempotent, so the seen-nonce set is kept in memory.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from google.protobuf.message import DecodeError

from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.note import NoteSigner, NoteVerifier
from fedmatch.errors import ConfigError, InvalidInput, PermissionDenied
from fedmatch.rpc.v1 import audit_pb2

__all__ = ["REQUEST_DOMAIN", "AuditorRegistry", "sign_query"]

REQUEST_DOMAIN = b"fedmatch/audit-request/v1\x00"
MAX_QUERY_BYTES = 1024
_NONCES_KEPT = 100_000


def sign_query(signer: NoteSigner, method: str, **fields: int | bool) -> audit_pb2.AuditRequest:
    query = audit_pb2.AuditQuery(
        auditor=signer.name,
        issued_unix_ms=int(time.time() * 1000),
        nonce=secrets.token_bytes(16),
        method=method,
        **fields,  # type: ignore[arg-type]
    )
    body = query.SerializeToString()
    return audit_pb2.AuditRequest(query=body, signature=signer.sign(REQUEST_DOMAIN + body))


class AuditorRegistry:
    """The auditors a party serves, by key name."""

    def __init__(
        self,
        vkeys: Sequence[str],
        window_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._auditors: dict[str, NoteVerifier] = {}
        for vkey in vkeys:
            try:
                verifier = NoteVerifier.from_vkey(vkey)
            except (AuditVerificationError, InvalidInput) as exc:
                raise ConfigError(f"auditors: not a verifier key ({exc})") from None
            self._auditors[verifier.name] = verifier
        self._window = window_seconds
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, request: audit_pb2.AuditRequest, method: str) -> audit_pb2.AuditQuery:
        """The verified query, or PermissionDenied / InvalidInput (before any log read)."""
        if len(request.query) > MAX_QUERY_BYTES:
            raise InvalidInput(f"audit query exceeds {MAX_QUERY_BYTES} bytes")
        query = audit_pb2.AuditQuery()
        try:
            query.ParseFromString(request.query)
        except DecodeError:
            raise InvalidInput("audit query does not parse") from None
        verifier = self._auditors.get(query.auditor)
        if verifier is None:
            raise PermissionDenied("not an auditor of this party")
        try:
            verifier.verify(REQUEST_DOMAIN + request.query, request.signature)
        except AuditVerificationError:
            raise PermissionDenied("audit request signature does not verify") from None
        if query.method != method:
            raise PermissionDenied(f"audit request was signed for {query.method[:40]!r}")
        now = self._clock()
        if abs(query.issued_unix_ms / 1000 - now) > self._window:
            raise PermissionDenied("audit request time is outside the accepted window")
        if len(query.nonce) != 16:
            raise InvalidInput("audit request nonce must be 16 bytes")
        with self._lock:
            while self._seen and (
                next(iter(self._seen.values())) < now - self._window
                or len(self._seen) >= _NONCES_KEPT
            ):
                self._seen.popitem(last=False)
            if query.nonce in self._seen:
                raise PermissionDenied("audit request nonce was already used")
            # Kept until the request itself falls out of the window: a request dated in the
            # future stays valid past now + window, so its nonce must stay that long too.
            self._seen[query.nonce] = max(now, query.issued_unix_ms / 1000)
        return query
