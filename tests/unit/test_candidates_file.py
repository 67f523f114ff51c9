"""The candidates file (fedmatch/requester/candidates.py) and what the requester says of a
partial answer (fedmatch/requester/report.py): every candidate kept, however many; the
states that did not answer recorded; a decision on them provisional."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from types import SimpleNamespace

import pytest

from fedmatch.domain import Purpose, QueryHeader
from fedmatch.errors import InvalidInput
from fedmatch.protocol.limits import MAX_HANDLES_PER_REQUEST
from fedmatch.requester.candidates import read_candidates, read_unanswered, write_candidates
from fedmatch.requester.client import NodeSummary, ResolveReport, check_candidate_count
from fedmatch.requester.report import decision_summary, unanswered


def _header() -> QueryHeader:
    return QueryHeader(secrets.token_hex(16), "DE", Purpose.ASYLUM_DUBLIN, "Art. 27",
                       "DE-1", "unit-1", "officer-1")  # fmt: skip


def _node(state: str, outcome: str) -> NodeSummary:
    return NodeSummary(state, outcome, "", 0, 0.0, 0, 0)


def test_447_candidates_are_kept_and_refused_per_request_with_the_reason(tmp_path: Path) -> None:
    matches = [("IT", i.to_bytes(8, "big")) for i in range(447)]
    path = tmp_path / "hits.json"
    nodes = (_node("IT", "ok"), _node("FR", "unavailable"))
    report = SimpleNamespace(header=_header(), matches=matches, opening=None, nodes=nodes)
    write_candidates(report, path)
    header, hits = read_candidates(path)
    assert header == report.header and hits == matches
    assert read_unanswered(path) == {"FR": "unavailable"}
    with pytest.raises(InvalidInput, match=f"^447 candidates; at most {MAX_HANDLES_PER_REQUEST} "
                       "per resolve: "):  # fmt: skip
        check_candidate_count(len(hits), "resolve")
    check_candidate_count(MAX_HANDLES_PER_REQUEST, "resolve")


def test_a_bad_handle_is_named(tmp_path: Path) -> None:
    path = tmp_path / "hits.json"
    write_candidates(
        SimpleNamespace(header=_header(), matches=[("IT", b"\x00" * 8)], opening=None), path
    )
    body = json.loads(path.read_text())
    body["hits"].append({"member_state": "IT", "handle": "00"})
    path.write_text(json.dumps(body))
    with pytest.raises(InvalidInput, match="hit 1 has a handle of 1 bytes, not 8"):
        read_candidates(path)
    assert read_unanswered(path) == {}  # written without nodes: none recorded
    body["unanswered"] = {"XX": "unavailable"}
    path.write_text(json.dumps(body))
    with pytest.raises(InvalidInput, match="'unanswered' is malformed"):
        read_unanswered(path)


def test_a_decision_without_a_state_is_provisional_and_names_it() -> None:
    resolved = ResolveReport(
        "ammr", "no_hits", "none", "DE", (), False, False, "DE is responsible.", (),
        (_node("IT", "deadline_exceeded"),), 0, 0, 0.0,
    )  # fmt: skip
    summary = decision_summary(resolved, unanswered([_node("FR", "unavailable")]))
    assert summary["unanswered"] == ["FR", "IT"]
    assert summary["complete"] is False and summary["provisional"] is True
    assert summary["explanation"] == (
        "DE is responsible. This proposal is provisional: FR did not answer (unavailable), "
        "IT did not answer (deadline_exceeded), and a record held there could change it."
    )
