"""Data-subject access ("which states hold my data") and the published statistics, over
real servers (mTLS, real HE, real logs)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.audit.stats import federation_stats, suppress
from fedmatch.cli.main import main
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, Purpose
from fedmatch.protocol.verification import HitKey
from fedmatch.protocol.wire import authorization_to_pb, header_to_pb, verdict_to_pb
from fedmatch.requester.rights import StatesAnswer, which_states
from fedmatch.rpc.v1 import node_pb2, node_pb2_grpc
from tests.federation import (
    DIM,
    VERIFIERS,
    Federation,
    confirmations,
    enrol,
    expert,
    federation,
    header,
    hit_verified,
    pki,
    signed_resolve,
)

DSR_BASIS = "Reg. (EU) 2024/1358 Art. 43"
APPLICATION = "2026-11-21"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("rights"), ("DE", "IT", "FR"), records=20) as f:
        yield f


def _person(fed: Federation, seed: int, where: dict[str, Category]) -> npt.NDArray[np.float32]:
    """A person enrolled at the states of ``where``; returns a fresh capture to search."""
    rng = np.random.default_rng(seed)
    person = unit_vectors(rng, 1, DIM)[0]
    for state, category in where.items():
        enrol(fed.nodes[state], capture(person, rng, 0.9), f"{state}-R-{seed}", category,
              dt.date(2026, 4, 1))  # fmt: skip
    return capture(person, rng, 0.9)


def _entries(fed: Federation, party: str, query_id: str) -> list[SignedEntry]:
    audit = fed.coordinator.audit if party == "coordinator" else fed.nodes[party].audit
    return [e for e in audit.log.iter_entries() if e.event.query_id == query_id]


def test_which_states_returns_only_the_states(fed: Federation) -> None:
    probe = _person(fed, 1, {"IT": Category.IRREGULAR_CROSSING, "FR": Category.APPLICANT})
    answer = which_states(fed.requester("DE"), probe, DSR_BASIS, "DSR-2026-1")
    assert answer.states == ("FR", "IT") and answer.complete and answer.unanswered == ()
    # The answer has no place for anything else: no handle, no reference, no score.
    assert set(StatesAnswer.__dataclass_fields__) == {
        "query_id", "states", "complete", "unanswered",
    }  # fmt: skip
    # Someone registered nowhere: no state.
    stranger = unit_vectors(np.random.default_rng(99), 1, DIM)[0]
    assert which_states(fed.requester("DE"), stranger, DSR_BASIS, "DSR-2026-2").states == ()
    # Logged as a data-subject search everywhere; no details revealed anywhere.
    (authorized,) = [
        e for e in _entries(fed, "coordinator", answer.query_id)
        if e.kind is EventKind.SEARCH_AUTHORIZED
    ]  # fmt: skip
    assert authorized.event.purpose == Purpose.DATA_SUBJECT_REQUEST.value
    for state in ("IT", "FR"):
        kinds = [e.kind for e in _entries(fed, state, answer.query_id)]
        assert kinds == [EventKind.SEARCH_ANSWERED]


def test_hit_details_are_refused_for_a_data_subject_search(fed: Federation) -> None:
    probe = _person(fed, 2, {"IT": Category.APPLICANT})
    requester = fed.requester("DE")
    header = requester.header(Purpose.DATA_SUBJECT_REQUEST, DSR_BASIS, "DSR-2026-3")
    report = requester.lookup(probe, header)
    assert [s for s, _ in report.matches] == ["IT"]
    # No verification packet (no facial image) for such a search either.
    with pytest.raises(grpc.RpcError) as err:
        requester.fetch_packets(report)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "data-subject request" in (err.value.details() or "")
    # At the coordinator, even with two valid confirmations.
    verdicts = confirmations(fed.tmp, header, report.matches)
    with pytest.raises(grpc.RpcError) as err:
        requester.resolve(report, APPLICATION, verdicts)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "data-subject request" in (err.value.details() or "")
    # Logged as refused; nothing verified, nothing asked of the node.
    coordinator = [e.kind for e in _entries(fed, "coordinator", header.query_id)]
    assert EventKind.REQUEST_REFUSED in coordinator and EventKind.HIT_VERIFIED not in coordinator
    # At the node, even on the coordinator's record and with valid verdicts.
    signed = signed_resolve(fed.tmp, header)
    handles = [report.matches[0][1]]
    entry = hit_verified(header, "IT", handles, signed=signed)
    stub = node_pb2_grpc.NodeServiceStub(fed.node_channel("IT"))
    with pytest.raises(grpc.RpcError) as err:
        stub.GetHitDetails(
            node_pb2.HitDetailsRequest(
                header=header_to_pb(header, signed),
                handles=handles,
                authorization=authorization_to_pb(fed.authorize(entry, ["IT"])),
                verdicts=[verdict_to_pb(v) for v in verdicts],
            ),
            timeout=20,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "data-subject request" in (err.value.details() or "")
    # Refused and logged there too; nothing was revealed.
    node = [e.kind for e in _entries(fed, "IT", header.query_id)]
    assert EventKind.REQUEST_REFUSED in node
    assert EventKind.HIT_DETAILS_REVEALED not in node


def _operator_toml(tmp: Path) -> Path:
    party = pki(tmp)["operator-DE"]
    f = party.tls
    crls = ", ".join(f'"{c}"' for c in f.crls)
    path = tmp / "operator-DE.toml"
    path.write_text(
        f'[operator]\nsigning_key = "{party.signing_key}"\n'
        f'[tls]\nkey = "{f.key}"\nchain = "{f.chain}"\nroot = "{f.root}"\ncrls = [{crls}]\n'
    )
    return path


def test_cli_which_states_prints_only_the_states(
    fed: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    probe = _person(fed, 3, {"FR": Category.IRREGULAR_CROSSING})
    np.save(tmp_path / "person.npy", probe)
    code = main([
        "rights", "which-states", "--config", str(_operator_toml(fed.tmp)),
        "--coordinator", fed.coordinator_server.address, "--state", "DE",
        "--legal-basis", DSR_BASIS, "--case-reference", "DSR-2026-4",
        "--unit", "rights-desk", "--operator", "officer-9",
        "--template", str(tmp_path / "person.npy"),
    ])  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0
    assert json.loads(out) == {"states": ["FR"], "complete": True}


# -- statistics ---------------------------------------------------------------------------


def test_suppression_of_small_cells() -> None:
    assert suppress({"a": 7, "b": 0, "c": 12}) == {"a": 7, "b": 0, "c": 12}
    # One small cell: hidden, and the smallest published one with it (else a total gives
    # the small one away).
    assert suppress({"a": 7, "b": 2, "c": 12}) == {"a": None, "b": None, "c": 12}
    # Two small cells hide each other.
    assert suppress({"a": 7, "b": 2, "c": 1}) == {"a": 7, "b": None, "c": None}
    assert suppress({"a": 2}, threshold=1) == {"a": 2}


def test_statistics_of_a_small_federation(tmp_path: Path) -> None:
    with federation(tmp_path, ("DE", "IT"), records=10) as fed:
        requester = fed.requester("DE")
        crossing = _person(fed, 10, {"IT": Category.IRREGULAR_CROSSING})
        applicant = _person(fed, 11, {"IT": Category.APPLICANT})
        doubtful = _person(fed, 12, {"IT": Category.IRREGULAR_CROSSING})
        secret: list[str] = []

        def look(probe: Any, purpose: Purpose, subject: str, case: str) -> Any:
            report = requester.lookup(
                probe, requester.header(purpose, "Reg. (EU) 2024/1358 Art. 27", case),
                subject_category=subject,
            )  # fmt: skip
            assert len(report.matches) == 1
            secret.extend([report.header.query_id, case, report.matches[0][1].hex()])
            return report

        # Two applicants' searches (declared), verified: applicant/irregular_crossing and
        # applicant/applicant.
        for probe, case in ((crossing, "S-1"), (applicant, "S-2")):
            report = look(probe, Purpose.ASYLUM_DUBLIN, "applicant", case)
            requester.resolve(report, APPLICATION, fed.verdicts(report))
        # A border check without a declared category: counted by its purpose.
        report = look(crossing, Purpose.BORDER_CONTROL, "", "S-3")
        requester.resolve(report, APPLICATION, fed.verdicts(report))
        # A hit the verifiers reject.
        report = look(doubtful, Purpose.ASYLUM_DUBLIN, "applicant", "S-4")
        hit = HitKey(*report.matches[0])
        seen = fed.evidence(report)(hit)
        verdicts = [
            expert(fed.tmp, "DE", "anna").confirm(report.header.query_id, "DE", hit, seen),
            expert(fed.tmp, "DE", "ben").reject(
                report.header.query_id, "DE", hit, seen, "data_error"
            ),
        ]
        requester.resolve(report, APPLICATION, verdicts)
        # A data subject asks.
        assert which_states(requester, applicant, DSR_BASIS, "S-5").states == ("IT",)
        # IT grants protection to the applicant (marked, unmarked, marked again) and erases
        # the doubtful record early: counted per category, never by record.
        it = fed.lifecycles["IT"]
        for marked in (True, False, True):
            it.mark(header("IT"), "IT-R-11", marked)
        it.erase(header("IT"), "IT-R-12", "citizenship_acquired")
        logs = {s: list(n.audit.log.iter_entries()) for s, n in fed.nodes.items()}
        coordinator = list(fed.coordinator.audit.log.iter_entries())

    exact = federation_stats(coordinator, logs, threshold=1)
    assert exact["searches_by_purpose"] == {
        "asylum_dublin": 3, "border_control": 1, "data_subject_request": 1,
    }  # fmt: skip
    assert exact["searches_by_requesting_state"] == {"DE": 5}
    assert exact["data_subject_requests"] == 1
    assert exact["hits_by_category_pair"] == {
        "applicant/applicant": 1,
        "applicant/irregular_crossing": 1,
        "irregular_crossing/irregular_crossing": 1,
    }
    assert exact["hit_matrix"] == {
        "applicant": {"applicant": 1, "irregular_crossing": 1},
        "irregular_crossing": {"irregular_crossing": 1},
    }
    assert exact["hits_verified"] == 3 and exact["hit_detail_requests"] == 3
    assert exact["hits_rejected"] == 1 and exact["hits_rejected_by_reason"] == {"data_error": 1}
    assert exact["law_enforcement_hits"] == 0 and exact["hits_held_for_review"] == 0
    assert exact["enrolments_by_category"] == {"applicant": 1, "irregular_crossing": 2}
    assert exact["node_searches_answered"] == 5  # IT answered every search of DE
    assert exact["records_marked"] == 2 and exact["records_unmarked"] == 1
    assert exact["records_marked_by_category"] == {"applicant": 2}
    assert exact["records_erased"] == 1
    assert exact["records_erased_by_category"] == {"irregular_crossing": 1}
    assert exact["records_erased_by_reason"] == {"citizenship_acquired": 1}
    # Published (threshold 5): every one of these small cells is suppressed.
    published = federation_stats(coordinator, logs)
    assert published["suppression"]["threshold"] == 5
    assert published["searches"] == 5 and published["searches_by_requesting_state"] == {"DE": 5}
    assert set(published["hits_by_category_pair"].values()) == {None}
    assert published["hits_rejected"] is None and published["data_subject_requests"] is None
    assert published["law_enforcement_hits"] == 0
    # No individual data in either: no query, case, handle, reference, verifier or operator.
    for stats in (exact, published):
        text = json.dumps(stats)
        for value in (*secret, *VERIFIERS, "officer-1", "dublin-unit-1", "IT-R-1"):
            assert value not in text, value
