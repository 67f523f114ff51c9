"""``fedmatch bench search`` at a tiny size: every query goes on the coordinator's record
first (as a real search must), the node answers it, and the JSON reports that time."""

from __future__ import annotations

from fedmatch.bench import bench_search


def test_bench_search_authorizes_every_query_and_agrees_with_numpy() -> None:
    result = bench_search(records=300, dimension=32, queries=2, threads=1)
    assert result["bench"] == "search" and result["queries"] == 2
    assert result["agreement"] == 1.0
    # The authorization (coordinator entry + the node witnessing it) is timed on its own
    # and is part of the end-to-end latency.
    assert 0 < result["authorization_ms_p50"] < result["p50_s"] * 1e3
