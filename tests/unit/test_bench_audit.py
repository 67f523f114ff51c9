"""Tests of ``fedmatch bench audit`` (fedmatch.bench.audit) at tiny sizes: the JSON it reports
and that the log it writes in the log's own format is one AuditLog opens and verifies.

No timing is asserted: the machine is shared, so only structure and sanity are checked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedmatch.audit.entry import EventKind
from fedmatch.audit.log import _FRAME, scan_records
from fedmatch.bench.audit import _event, _frame, bench_audit
from fedmatch.cli.main import build_parser

APPENDS, THREADS, ENTRIES = 200, 4, 2000

NUMBERS = (
    "cpu_count",
    "entry_bytes_mean",
    "durable_appends_per_s",
    "fsyncs",
    "entries_per_fsync",
    "fsync_ms_p50",
    "single_thread_appends_per_s",
    "single_thread_fsyncs",
    "baseline_raw_fsync_appends_per_s",
    "baseline_fsyncs",
    "processes",
    "generate_log_s",
    "log_bytes",
    "open_and_recover_s",
    "inclusion_proof_ms_p50",
    "inclusion_proof_ms_p99",
    "verify_ms_p50",
    "verify_ms_p99",
    "proof_and_verify_ms_p50",
    "proof_and_verify_ms_p99",
    "proof_hashes",
    "full_verification_s",
    "recompute_tree_s",
    "verify_signatures_s",
    "entries_per_s",
    "decode_us",
    "entry_signature_check_us",
    "baseline_raw_ed25519_verify_us",
)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    workdir = tmp_path_factory.mktemp("bench-audit")
    out = bench_audit(APPENDS, THREADS, ENTRIES, workdir=workdir, processes=2)
    # The bench cleans up after itself.
    assert list(workdir.iterdir()) == []
    return out


def test_report_is_one_json_line_of_positive_numbers(result: dict[str, object]) -> None:
    line = json.dumps(result)
    assert "\n" not in line and json.loads(line) == result
    assert result["bench"] == "audit"
    for key in NUMBERS:
        value = result[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), key
        assert value > 0, key
    assert isinstance(result["tree_leaves"], str) and result["tree_leaves"]
    assert isinstance(result["workdir"], str) and result["workdir"]
    assert result["target_appends_per_s"] == 5000
    assert result["target_proof_ms"] == 5.0
    for key in ("meets_append_target", "meets_proof_target"):
        assert isinstance(result[key], bool)


def test_counts_are_consistent(result: dict[str, object]) -> None:
    assert result["appends"] == APPENDS and result["threads"] == THREADS
    assert result["entries"] == ENTRIES and result["verified_entries"] == ENTRIES
    assert result["opened_log_verifies"] is True
    # Group commit: never more fsyncs than appends; one thread needs one per append.
    fsyncs = result["fsyncs"]
    assert isinstance(fsyncs, int) and 1 <= fsyncs <= APPENDS
    assert result["baseline_fsyncs"] == fsyncs  # the baseline replays the log's batching
    assert result["single_thread_appends"] == APPENDS // 10
    assert result["single_thread_fsyncs"] == APPENDS // 10
    # Index 0 is always sampled, and its RFC 9162 path has ceil(log2(size)) hashes, the most.
    assert result["proof_hashes"] == math.ceil(math.log2(ENTRIES))
    assert result["proof_samples"] == 1000


def test_cli_parses_bench_audit(tmp_path: Path) -> None:
    args = build_parser().parse_args(["bench", "audit"])
    assert (args.appends, args.threads, args.entries, args.workdir) == (20_000, 16, 1_000_000, None)
    args = build_parser().parse_args(
        ["bench", "audit", "--appends", "5", "--threads", "2", "--entries", "9",
         "--workdir", str(tmp_path)]
    )  # fmt: skip
    assert (args.appends, args.threads, args.entries, args.workdir) == (5, 2, 9, tmp_path)


def test_events_are_realistic_and_frames_match_the_log() -> None:
    event = _event(7)
    assert event.kind is EventKind.SEARCH_ANSWERED
    assert event.query_id and event.probe_hash and event.legal_basis and event.operator
    assert event.counts and event.labels and event.registers == ("IT",)
    framed = _frame(b"entry") + _frame(b"another")
    records, end = scan_records(framed)
    assert end == len(framed) and [n for _, n in records] == [5, 7]
    assert records[0][0] == _FRAME.size
