"""`fedmatch bench federation` end to end on a tiny federation: three real node processes
and a coordinator over mutual TLS, signed lookups, encrypted search and resolve. About 5 s
on this machine when it is quiet (starting four processes and registering 36 MB of keys at
two nodes is most of it), 20 s when it is busy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fedmatch.bench.search import DEFAULT_BENCH_PARAM_SET

EXPECTED_KEYS = {
    "bench", "nodes", "searched_per_lookup", "records_per_node", "queries", "concurrency",
    "transport", "signed_requests", "p50_s", "p95_s", "max_s", "errors", "bytes_up_per_lookup",
    "bytes_down_per_lookup", "lookup_parts_ms_p50", "node_call_ms", "cpu_s_per_lookup",
    "searched_records", "plain_p50_s", "plain_float64_p50_s", "he_over_plain", "param_set",
    "agreement", "memory", "peak_rss_sum_mb",
    "rss_growth_max_mb", "memory_stable", "lookups_with_hits", "expected_lookups_with_hits",
    "key_bytes_once", "setup_s",
}  # fmt: skip


def test_bench_federation_prints_json_with_zero_errors_and_full_agreement(tmp_path: Path) -> None:
    # The real command, as an operator runs it: the JSON is the last line of stdout.
    done = subprocess.run(
        [
            sys.executable, "-m", "fedmatch", "bench", "federation", "--nodes", "3",
            "--records-per-node", "200", "--queries", "2", "--workdir", str(tmp_path / "fed"),
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert EXPECTED_KEYS <= set(result)
    assert result["bench"] == "federation"
    assert (result["nodes"], result["searched_per_lookup"], result["queries"]) == (3, 2, 2)
    assert result["errors"] == {"count": 0, "kinds": {}}
    assert result["agreement"] == 1.0
    # The first probe is genuine (planted at a node), the second an impostor.
    assert result["expected_lookups_with_hits"] == result["lookups_with_hits"] == 1
    assert result["transport"] == "mtls" and result["signed_requests"] is True
    # Every process was measured: three nodes, the coordinator and the requester.
    assert set(result["memory"]) == {"DE", "IT", "FR", "coordinator", "requester"}
    for name, memory in result["memory"].items():
        assert memory["peak_mb"] >= memory["end_mb"] > 0, name
    assert 0 < result["p50_s"] <= result["p95_s"] <= result["max_s"]
    assert result["bytes_up_per_lookup"] > 100_000  # one probe ciphertext (~126 KB)
    assert result["bytes_down_per_lookup"] > 2 * 100_000  # a result block per searched node
    assert result["searched_records"] >= 2 * 200
    # The plain baselines of the same registers and probes (float32 is HE's denominator).
    for field in ("plain_p50_s", "plain_float64_p50_s", "he_over_plain"):
        assert result[field] > 0, field
    assert result["param_set"] == DEFAULT_BENCH_PARAM_SET
    assert result["key_bytes_once"] > 30_000_000
