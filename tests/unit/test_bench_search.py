"""``fedmatch bench search`` at a tiny size: every query is signed by an operator and goes on
the coordinator's record first (as a real search must), the node answers it over mutual TLS
after all its checks, and the JSON reports the authorization time, the plain baselines and
the node's memory by component."""

from __future__ import annotations

from typing import Any

import pytest

from fedmatch.bench.plain import faiss_module
from fedmatch.bench.search import DEFAULT_BENCH_PARAM_SET, bench_search
from fedmatch.cli.common import EXIT_INPUT
from fedmatch.cli.main import main
from fedmatch.protocol.gate import Gate
from fedmatch.protocol.transport import Security


def test_bench_search_authorizes_every_query_and_agrees_with_plaintext(
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
    # The parts of a query, each timed apart, each within the whole.
    parts = result["query_parts_ms_p50"]
    assert set(parts) == {"encrypt", "sign_and_authorize", "node_search", "decrypt"}
    assert all(0 < parts[name] < result["p95_s"] * 1e3 for name in parts), parts
    # Per query the authorization is inside this part, so its median is too (the part is
    # rounded to 0.1 ms).
    assert parts["sign_and_authorize"] >= result["authorization_ms_p50"] - 0.05
    # Each search (the warm-up too) was a request signed by DE's bench officer that the node
    # verified and accepted once; every call reached the node over mTLS as the coordinator.
    assert (result["transport"], result["signed_requests"]) == ("mtls", True)
    assert consumed == ["bench-officer.officer.de.fedmatch.eu"] * 3
    assert peers and set(peers) == {"coordinator"}
    # The node ran the bench's default set, and the requester's keys were made for it.
    assert result["param_set"] == DEFAULT_BENCH_PARAM_SET == result["params"]["name"]
    # The plain baselines of the same rows and probes: the float32 product with the
    # threshold compare is the one HE is measured against; float64 is the earlier one.
    for field in ("plain_p50_s", "plain_float64_p50_s", "he_over_plain"):
        assert result[field] > 0, field
    assert ("faiss_p50_s" in result) == (faiss_module() is not None)
    # The node's memory by component: the encoded register (one process: none in workers),
    # no float32 rows (the node re-reads them from its store), and the whole RSS (its sign
    # is not checked: in a test process the node gives back heap that earlier tests freed;
    # tests/integration/test_node_memory.py measures RSS in a process of its own making).
    assert "node_rss_bytes_per_record" in result
    assert "node_pss_bytes_per_record" in result  # this machine's kernel has smaps_rollup
    # Sampled ready, loaded and serving; the per-record figure is the whole node serving,
    # the marginal one what the load added.
    assert set(result["node_pss_mb"]) == {"ready", "loaded", "serving"}
    # node_pss_mb is rounded to 0.1 MB: at 300 records that alone is up to ~175 B a record
    # (a serving PSS of 0.94 MB reads 0.9, 4.6% off: this failed on a clean clone), and the
    # per-record figure to 0.1 B (a value at a rounding edge failed by 0.04 B at 0.05 MB).
    rounding = 0.06 * 1024 * 1024 / result["records"]
    assert result["node_pss_bytes_per_record"] == pytest.approx(
        result["node_pss_mb"]["serving"] * 1024 * 1024 / result["records"],
        rel=0.01,
        abs=rounding,
    )
    assert "node_marginal_pss_bytes_per_record" in result
    assert result["register_bytes_per_record"] > 0
    assert result["engine_rows_bytes_per_record"] == 0


def test_bench_search_refuses_an_unknown_parameter_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "search", "--records", "10", "--param-set", "ckks-none"]) == EXIT_INPUT
    assert "--param-set must be one of" in capsys.readouterr().err


def test_pss_counts_a_shared_page_once_where_rss_counts_it_twice() -> None:
    """A forked child touching 64 MiB its parent wrote: both RSS hold it, each PSS half."""
    import os
    import select
    import signal

    from fedmatch.bench.memory import pss_bytes, rss_bytes

    size = 64 * 1024 * 1024
    block = bytearray(b"\x01" * size)
    before_rss, before_pss = rss_bytes(), pss_bytes()
    assert before_pss is not None
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: read every page (allocating nothing), then wait to be measured
        total = 0
        for at in range(0, size, 4096):
            total += block[at]
        os.write(ready_w, b"x" if total else b"y")
        signal.pause()
        os._exit(0)
    try:
        readable, _, _ = select.select([ready_r], [], [], 60)
        assert readable, "the forked child did not read its pages within 60 s"
        assert os.read(ready_r, 1) == b"x"
        child_rss, child_pss = rss_bytes(pid), pss_bytes(pid)
        parent_pss = pss_bytes()
        assert child_pss is not None and parent_pss is not None
        assert child_rss >= size
        # The parent's share of the block fell by about half when the child mapped it.
        assert before_pss - parent_pss > 0.4 * size
        assert child_pss < child_rss - 0.4 * size
        assert before_rss > size
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)
