"""``fedmatch bench search`` at a tiny size: every query is signed by an operator and goes on
the coordinator's record first (as a real search must), the node answers it over mutual TLS
after all its checks, and the JSON reports the authorization time."""

from __future__ import annotations

from typing import Any

import pytest

from fedmatch.bench.search import bench_search
from fedmatch.protocol.gate import Gate
from fedmatch.protocol.transport import Security


def test_bench_search_authorizes_every_query_and_agrees_with_numpy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumed: list[str] = []
    peers: list[str] = []
    consume, identify = Gate.consume, Security.identify

    def counting_consume(self: Gate, verified: Any) -> None:
        consumed.append(verified.signer.dns)
        consume(self, verified)

    def counting_identify(self: Security, context: Any) -> Any:
        identity = identify(self, context)
        peers.append(identity.role)
        return identity

    monkeypatch.setattr(Gate, "consume", counting_consume)
    monkeypatch.setattr(Security, "identify", counting_identify)
    result = bench_search(records=300, dimension=32, queries=2, threads=1)
    assert result["bench"] == "search" and result["queries"] == 2
    assert result["agreement"] == 1.0
    # Result blocks in the compact format (fedmatch.he.resultfmt), measured from the bytes.
    assert result["result_block_bytes"] == 97_284
    assert result["result_bytes_per_record"] == 11.875
    # The authorization (coordinator entry + the node witnessing it) is timed on
    # its own and is part of the end-to-end latency.
    assert 0 < result["authorization_ms_p50"] < result["p50_s"] * 1e3
    # Each search (the warm-up too) was a request signed by DE's bench officer that the node
    # verified and accepted once; every call reached the node over mTLS as the coordinator.
    assert (result["transport"], result["signed_requests"]) == ("mtls", True)
    assert consumed == ["bench-officer.officer.de.fedmatch.eu"] * 3
    assert peers and set(peers) == {"coordinator"}
