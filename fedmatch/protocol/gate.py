"""What a party checks of every signed request: the signer's certificate chain against the
federation root and revocation lists, the statement, and replays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedmatch.domain import QueryHeader
from fedmatch.protocol.replay import ReplayGuard
from fedmatch.protocol.statement import SignedRequest, VerifiedRequest, verify_request

__all__ = ["Gate"]


@dataclass
class Gate:
    # Verifies a PEM chain (federation root, intermediates, CRLs) -> Identity.
    verify_chain: Callable[[bytes], Any]
    replay: ReplayGuard

    def verify(
        self, signed: SignedRequest | None, header: QueryHeader, kind: str, probe_hash: str
    ) -> VerifiedRequest:
        """The verified request; its nonce is not consumed yet (see :meth:`consume`)."""
        return verify_request(signed, header, kind, probe_hash, self.verify_chain)

    def consume(self, verified: VerifiedRequest) -> None:
        """Accept the request's nonce once (persisted); a replay is refused."""
        self.replay.use_nonce(verified.statement.nonce, verified.statement.issued_ms)

    def close(self) -> None:
        self.replay.close()
