"""Data-subject access ("which states hold my data") and the published statistics, over
real servers (mTLS, real HE, real PKI, real logs).

An answer names a state only after that state's record was confirmed to be the same person
by the same human image comparison as a hit (DOMAIN.md section 6): the search alone names
none. Each attack is written as a hostile requester or verifier would try it.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.audit.stats import federation_stats, suppress
from fedmatch.biometrics.pipeline import FacePipeline
from fedmatch.cli.main import main
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, Purpose
from fedmatch.errors import InvalidInput
from fedmatch.protocol.packet import image_digest
from fedmatch.protocol.verification import Evidence, HitKey, SignedVerdict, VerdictSigner
from fedmatch.protocol.wire import authorization_to_pb, header_to_pb, verdict_to_pb
from fedmatch.requester.rights import (
    StatesAnswer,
    SubjectSearch,
    subject_answer,
    subject_search,
)
from fedmatch.rpc.v1 import node_pb2, node_pb2_grpc
from tests.federation import (
    DIM,
    VERIFIERS,
    Federation,
    confirmations,
    enrol,
    enrol_photo,
    expert,
    expert_name,
    federation,
    header,
    hit_verified,
    operator_toml,
    pki,
    sealed_opening,
    signed_resolve,
)

DSR_BASIS = "Reg. (EU) 2024/1358 Art. 43"
APPLICATION = "2026-11-21"
FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("rights"), ("DE", "IT", "FR"), records=20) as f:
        yield f


def _people() -> list[list[Path]]:
    """The photos of each person with at least two (enrolled from one, searched with another)."""
    with (FACES / "identities.csv").open(newline="") as fh:
        out: dict[str, list[Path]] = {}
        for row in csv.DictReader(fh):
            out.setdefault(row["identity"], []).append(FACES / row["file"])
    return [sorted(files) for _, files in sorted(out.items()) if len(files) >= 2]


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline()


@pytest.fixture(scope="module")
def faces(fed: Federation) -> list[list[Path]]:
    """Four people enrolled from a photograph at IT (a facial image kept), the first also
    at FR: records a data subject's answer can name once verifiers compared the images."""
    people = _people()[:4]
    for i, files in enumerate(people):
        for state in ("IT", "FR") if i == 0 else ("IT",):
            enrol_photo(fed, state, files[0].read_bytes(), f"{state}-FACE-{i}")
    return people


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


def _kinds(fed: Federation, party: str, query_id: str) -> list[EventKind]:
    return [e.kind for e in _entries(fed, party, query_id)]


def _search(
    fed: Federation, pipeline: FacePipeline, photo: Path, case: str
) -> tuple[SubjectSearch, bytes]:
    """A data subject's search from a photograph, with the candidates' packets fetched."""
    image = photo.read_bytes()
    found = subject_search(
        fed.requester("DE"), pipeline.template(photo), DSR_BASIS, case, probe_image=image
    )
    return found, image


def _seen(found: SubjectSearch) -> Callable[[HitKey], Evidence]:
    """The images released for each candidate: what an honest verdict binds."""
    assert found.packets is not None
    fetched = found.packets
    released = {HitKey(p.member_state, p.handle): p.image_sha256 for p in fetched.packets}
    return lambda hit: Evidence(fetched.probe_sha256, released[hit])


def _hits(found: SubjectSearch, state: str) -> list[tuple[str, bytes]]:
    return [(s, h) for s, h in found.report.matches if s == state]


def _answer(fed: Federation, found: SubjectSearch, verdicts: list[SignedVerdict]) -> StatesAnswer:
    return subject_answer(fed.requester("DE"), found.report.header, found.report.matches, verdicts)


def _denied(call: Callable[[], object], message: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    assert message in str(err.value.details()), err.value.details()


def _names_a_state(text: str) -> list[str]:
    return re.findall(r"\b(?:IT|FR)\b", text)


def test_a_model_match_alone_names_no_state(
    fed: Federation, faces: list[list[Path]], pipeline: FacePipeline,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The search finds candidates at IT and FR: it says how many await verification and
    names no state, in what it returns and in what the requester logs. An answer with no
    verdict names none either."""
    caplog.set_level(logging.DEBUG)
    found, _ = _search(fed, pipeline, faces[0][1], "DSR-2026-10")
    assert sorted(s for s, _ in found.report.matches) == ["FR", "IT"]
    assert found.candidates == 2 and found.complete and found.unanswered == ()
    # Nothing in the search's answer has room for a state (the candidates stay in the
    # report, for the candidates file the verifiers work from).
    assert not hasattr(found, "states")
    assert _names_a_state(repr(found)) == []
    # The packets were released, proven like any packet, but no details anywhere.
    assert found.packets is not None and len(found.packets.packets) == 2
    for state in ("IT", "FR"):
        assert _kinds(fed, state, found.query_id) == [
            EventKind.SEARCH_ANSWERED, EventKind.PACKETS_RELEASED,
        ]  # fmt: skip
    requester_logs = " ".join(
        r.getMessage() for r in caplog.records if r.name.startswith("fedmatch.requester")
    )
    assert "awaiting verification" in requester_logs
    assert _names_a_state(requester_logs) == []
    # Asked for an answer before anyone compared the images: no state.
    answer = _answer(fed, found, [])
    assert answer.states == () and answer.pending == 2 and not answer.complete
    # One verifier is not two.
    one = confirmations(fed.tmp, found.report.header, _hits(found, "IT"), ("anna",),
                        evidence=_seen(found))  # fmt: skip
    answer = _answer(fed, found, one)
    assert answer.states == () and answer.pending == 2
    coordinator = _kinds(fed, "coordinator", found.query_id)
    assert EventKind.HIT_VERIFIED not in coordinator
    answered = [e for e in _entries(fed, "coordinator", found.query_id)
                if e.kind is EventKind.SUBJECT_ANSWERED]  # fmt: skip
    assert [e.event.registers for e in answered] == [(), ()]


def test_forged_verdicts_name_no_state(
    fed: Federation, faces: list[list[Path]], pipeline: FacePipeline
) -> None:
    """Confirmations that are not two of the requesting state's verifiers on this query's
    released images are refused at the coordinator: signed with a non-verifier
    certificate (the operator's own), by another state's verifiers, for another query, or
    naming images other than those released."""
    found, _ = _search(fed, pipeline, faces[1][1], "DSR-2026-11")
    other, _ = _search(fed, pipeline, faces[2][1], "DSR-2026-12")
    hdr, hits, seen = found.report.header, _hits(found, "IT"), _seen(found)
    assert len(hits) == 1
    hit = HitKey(*hits[0])
    operator = pki(fed.tmp)["operator-DE"]
    clerk = VerdictSigner(operator.signer(), operator.tls.chain.read_bytes())
    anna = expert(fed.tmp, "DE", "anna").confirm(hdr.query_id, "DE", hit, seen(hit))
    forged: dict[str, list[SignedVerdict]] = {
        "not by an authorized verifier": [anna, clerk.confirm(hdr.query_id, "DE", hit, seen(hit))],
        "not by an authorized verifier of DE": [
            expert(fed.tmp, "IT", p).confirm(hdr.query_id, "DE", hit, seen(hit))
            for p in ("anna", "ben")
        ],
        "for another query": [
            anna, expert(fed.tmp, "DE", "ben").confirm(other.query_id, "DE", hit, seen(hit))
        ],
        "other images": [
            anna,
            expert(fed.tmp, "DE", "ben").confirm(
                hdr.query_id, "DE", hit, Evidence(seen(hit).probe_image, image_digest(b"x"))
            ),
        ],
    }  # fmt: skip
    for message, verdicts in forged.items():
        _denied(lambda v=verdicts: _answer(fed, found, v), message)  # type: ignore[misc]
    # Another query's honest confirmations do not answer this one.
    theirs = confirmations(fed.tmp, other.report.header, _hits(other, "IT"),
                           evidence=_seen(other))  # fmt: skip
    _denied(lambda: _answer(fed, found, theirs), "for another query")
    coordinator = _entries(fed, "coordinator", hdr.query_id)
    assert EventKind.REQUEST_REFUSED in [e.kind for e in coordinator]
    assert not [e for e in coordinator if e.kind is EventKind.SUBJECT_ANSWERED]


def test_two_confirmations_name_the_state(
    fed: Federation, faces: list[list[Path]], pipeline: FacePipeline
) -> None:
    """Two of DE's verifiers confirm IT's candidate on the released images: IT is named,
    FR (whose candidate nobody confirmed) is not. The coordinator logs the answer with the
    verifiers' names; no node released details."""
    found, _ = _search(fed, pipeline, faces[0][1], "DSR-2026-13")
    verdicts = confirmations(fed.tmp, found.report.header, _hits(found, "IT"),
                             evidence=_seen(found))  # fmt: skip
    answer = _answer(fed, found, verdicts)
    assert answer.states == ("IT",)
    assert (answer.confirmed, answer.rejected, answer.pending) == (1, 0, 1)
    assert not answer.complete  # FR's candidate still awaits its verifiers
    (logged,) = [e for e in _entries(fed, "coordinator", found.query_id)
                 if e.kind is EventKind.SUBJECT_ANSWERED]  # fmt: skip
    assert logged.event.registers == ("IT",)
    assert logged.event.verifiers == VERIFIERS
    assert logged.event.purpose == Purpose.DATA_SUBJECT_REQUEST.value
    # FR confirmed too: both named, and the answer is complete.
    verdicts += confirmations(fed.tmp, found.report.header, _hits(found, "FR"),
                              evidence=_seen(found))  # fmt: skip
    answer = _answer(fed, found, verdicts)
    assert answer.states == ("FR", "IT") and answer.complete
    for state in ("IT", "FR"):
        assert EventKind.HIT_DETAILS_REVEALED not in _kinds(fed, state, found.query_id)
    assert EventKind.HIT_VERIFIED not in _kinds(fed, "coordinator", found.query_id)


def test_a_rejection_names_no_state(
    fed: Federation, faces: list[list[Path]], pipeline: FacePipeline
) -> None:
    """A verifier rejects IT's candidate: IT is not named, the rejection is final (later
    confirmations do not undo it) and it is reported to IT, which logs it."""
    found, _ = _search(fed, pipeline, faces[3][1], "DSR-2026-14")
    hdr, seen = found.report.header, _seen(found)
    (hit,) = [HitKey(*h) for h in _hits(found, "IT")]
    anna = expert(fed.tmp, "DE", "anna").confirm(hdr.query_id, "DE", hit, seen(hit))
    ben = expert(fed.tmp, "DE", "ben").reject(
        hdr.query_id, "DE", hit, seen(hit), "different_person"
    )
    answer = _answer(fed, found, [anna, ben])
    assert answer.states == () and answer.rejected == 1 and answer.complete
    (at_node,) = [e for e in _entries(fed, "IT", hdr.query_id)
                  if e.kind is EventKind.HIT_REJECTED]  # fmt: skip
    assert at_node.event.verifiers == (expert_name("DE", "ben"),)
    assert hit.handle in fed.nodes["IT"].handles.rejected(hdr.query_id, "DE")
    carl = expert(fed.tmp, "DE", "carl").confirm(hdr.query_id, "DE", hit, seen(hit))
    assert _answer(fed, found, [anna, carl]).states == ()


def test_a_search_without_images_names_no_state(fed: Federation) -> None:
    """Records enrolled from a template and a probe template: nothing to compare, so two
    confirmations still name no state (they would rest on the model match alone)."""
    probe = _person(fed, 1, {"IT": Category.IRREGULAR_CROSSING, "FR": Category.APPLICANT})
    found = subject_search(fed.requester("DE"), probe, DSR_BASIS, "DSR-2026-1")
    assert found.candidates == 2 and found.packets is not None
    assert not any(p.verifiable for p in found.packets.packets)
    verdicts = confirmations(fed.tmp, found.report.header, found.report.matches,
                             evidence=_seen(found))  # fmt: skip
    answer = _answer(fed, found, verdicts)
    assert answer.states == () and answer.unverifiable == 2
    # Someone registered nowhere: no candidate, and the answer is final at once.
    stranger = unit_vectors(np.random.default_rng(99), 1, DIM)[0]
    nobody = subject_search(fed.requester("DE"), stranger, DSR_BASIS, "DSR-2026-2")
    assert nobody.candidates == 0 and nobody.packets is None
    # Logged as a data-subject search everywhere.
    (authorized,) = [
        e for e in _entries(fed, "coordinator", found.query_id)
        if e.kind is EventKind.SEARCH_AUTHORIZED
    ]  # fmt: skip
    assert authorized.event.purpose == Purpose.DATA_SUBJECT_REQUEST.value


def test_hit_details_are_refused_for_a_data_subject_search(fed: Federation) -> None:
    probe = _person(fed, 2, {"IT": Category.APPLICANT})
    requester = fed.requester("DE")
    header = requester.header(Purpose.DATA_SUBJECT_REQUEST, DSR_BASIS, "DSR-2026-3")
    report = requester.lookup(probe, header)
    assert [s for s, _ in report.matches] == ["IT"]
    # The verification packet is released (the verifiers need it), proven as any packet.
    fetched = requester.fetch_packets(report)
    assert len(fetched.packets) == 1 and fetched.failed == {}
    # Details at the coordinator: refused, even with two valid confirmations.
    verdicts = confirmations(fed.tmp, header, report.matches)  # on no image: a template
    with pytest.raises(grpc.RpcError) as err:
        requester.resolve(report, APPLICATION, verdicts)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "data-subject request" in (err.value.details() or "")
    # Logged as refused; nothing verified, nothing asked of the node.
    coordinator = [e.kind for e in _entries(fed, "coordinator", header.query_id)]
    assert EventKind.REQUEST_REFUSED in coordinator and EventKind.HIT_VERIFIED not in coordinator
    # At the node, even on the coordinator's record, with valid verdicts and the opening.
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
                sealed_opening=sealed_opening(report, "IT"),
            ),
            timeout=20,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "data-subject request" in (err.value.details() or "")
    # Refused and logged there too; nothing was revealed.
    node = [e.kind for e in _entries(fed, "IT", header.query_id)]
    assert EventKind.REQUEST_REFUSED in node
    assert EventKind.HIT_DETAILS_REVEALED not in node
    # A states answer for a search of another purpose is refused at the coordinator (as a
    # hostile requester would ask, past the library's own check).
    other = requester.lookup(probe, requester.header(Purpose.ASYLUM_DUBLIN, "Art. 21", "X"))
    with pytest.raises(InvalidInput):
        subject_answer(requester, other.header, other.matches, [])
    with pytest.raises(grpc.RpcError) as err:
        requester.answer_data_subject(other.header, other.matches, [])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _toml(tmp: Path, party_name: str, table: str) -> Path:
    party = pki(tmp)[party_name]
    f = party.tls
    crls = ", ".join(f'"{c}"' for c in f.crls)
    path = tmp / f"{party_name}.toml"
    path.write_text(
        f'[{table}]\nsigning_key = "{party.signing_key}"\n'
        f'[tls]\nkey = "{f.key}"\nchain = "{f.chain}"\nroot = "{f.root}"\ncrls = [{crls}]\n'
    )
    return path


def test_cli_which_states_then_answer(
    fed: Federation,
    faces: list[list[Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`rights which-states` prints how many candidates await verification and names no
    state; two verifiers sign with `verify-hit`; `rights answer` names the state."""
    candidates = tmp_path / "dsr.json"
    connect = ["--config", str(operator_toml(fed.tmp, "DE")),
               "--coordinator", fed.coordinator_server.address]  # fmt: skip
    code = main([
        "rights", "which-states", *connect, "--state", "DE",
        "--legal-basis", DSR_BASIS, "--case-reference", "DSR-2026-4",
        "--unit", "rights-desk",
        "--photo", str(faces[2][1]), "--candidates-out", str(candidates),
    ])  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0
    printed = json.loads(out)
    assert printed["candidates"] == 1 and printed["awaiting_verification"] == 1
    assert "states" not in printed and _names_a_state(out) == []
    # The verifiers list the images and each signs a confirmation naming them.
    assert main(["verify-hit", "--candidates", str(candidates)]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["hits"]
    files = []
    for person in ("anna", "ben"):
        config = _toml(fed.tmp, f"verifier-{person}-DE", "verifier")
        out_file = tmp_path / f"{person}.json"
        assert main([
            "verify-hit", "--config", str(config), "--candidates", str(candidates),
            "--seen", listed["seen"], "--confirm", "--out", str(out_file),
        ]) == 0  # fmt: skip
        files.append(str(out_file))
    capsys.readouterr()
    code = main(["rights", "answer", *connect, "--candidates", str(candidates),
                 "--verdicts", *files])  # fmt: skip
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert answer["states"] == ["IT"] and answer["complete"] is True


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
        assert subject_search(requester, applicant, DSR_BASIS, "S-5").candidates == 1
        # IT grants protection to the applicant (marked, unmarked, marked again) and erases
        # the doubtful record early: counted per category, never by record.
        it = fed.lifecycles["IT"]
        for marked in (True, False, True):
            it.mark(header("IT"), "IT-R-11", marked, "protection_granted" if marked else "")
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
