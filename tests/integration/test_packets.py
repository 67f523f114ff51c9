"""Issue 16, items 2 and 3, over real servers: verification packets and verdicts that bind
the images compared.

Photos are enrolled through the node's RPC (the node keeps a face crop), a probe photo is
looked up from DE, and the candidates' packets are fetched through the coordinator. Each
attack is written as a hostile requester or verifier would try it.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import cv2
import grpc
import numpy as np
import pytest
from prometheus_client import generate_latest

from fedmatch.audit.auditor import run_audit
from fedmatch.audit.entry import EventKind
from fedmatch.audit.events import header_event
from fedmatch.biometrics.pipeline import FacePipeline
from fedmatch.domain import Category, Purpose, Sex
from fedmatch.ops.metrics import coordinator_metrics, node_metrics
from fedmatch.protocol.packet import image_digest
from fedmatch.protocol.verification import Evidence, HitKey
from fedmatch.requester.client import LookupReport
from fedmatch.rpc.v1 import node_pb2
from tests.federation import (
    BIRTH_DATE,
    Federation,
    auditor_config,
    confirmations,
    enrol,
    enrol_photo,
    expert,
    expert_name,
    federation,
)

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
APPLICATION = "2026-11-21"


def _people() -> dict[str, list[str]]:
    with (FACES / "identities.csv").open(newline="") as fh:
        out: dict[str, list[str]] = {}
        for row in csv.DictReader(fh):
            out.setdefault(row["identity"], []).append(row["file"])
    return {p: sorted(files) for p, files in sorted(out.items()) if len(files) >= 2}


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("packets"), ("DE", "IT", "FR"), records=40) as f:
        people = _people()
        for i, (person, files) in enumerate(people.items()):
            # Each person enrolled at IT from one photo; looked up later with another.
            sex = Sex.FEMALE if i % 2 else Sex.MALE
            enrol_photo(f, "IT", (FACES / files[0]).read_bytes(), f"IT-{person}", sex)
        yield f


def _lookup(
    fed: Federation, pipeline: FacePipeline, person: str, case: str
) -> tuple[LookupReport, bytes]:
    path = FACES / _people()[person][1]
    requester = fed.requester("DE")
    report = requester.lookup(
        pipeline.template(path), requester.header(Purpose.ASYLUM_DUBLIN, "Art. 21", case)
    )
    photo = path.read_bytes()
    assert [s for s, _ in report.matches] == ["IT"], report.matches
    return report, photo


def _entries(fed: Federation, party: str, kind: EventKind, qid: str) -> list[object]:
    log = fed.coordinator.audit.log if party == "coordinator" else fed.nodes[party].audit.log
    return [e for e in log.iter_entries() if e.kind is kind and e.event.query_id == qid]


def _always(evidence: Evidence) -> Callable[[HitKey], Evidence]:
    return lambda _: evidence


def _denied(call: object, message: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call()  # type: ignore[operator]
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    assert message in str(err.value.details()), err.value.details()


def test_packet_then_two_verdicts_then_details(fed: Federation, pipeline: FacePipeline) -> None:
    """The whole path: a packet for the proven candidate only, with the face crop and the
    non-identifying metadata; two verdicts binding both images; resolve; details."""
    person = next(iter(_people()))
    report, photo = _lookup(fed, pipeline, person, "P-1")
    fetched = fed.packets(report, photo)
    assert fetched.failed == {} and fetched.probe_sha256 == image_digest(photo)
    (packet,) = fetched.packets
    assert (packet.member_state, packet.handle) == report.matches[0]
    record = fed.nodes["IT"].store.find(f"IT-{person}")
    kept = fed.nodes["IT"].store.face_image(record)
    assert kept is not None and packet.image == kept[0]  # the node's face crop, unaltered
    picture = cv2.imdecode(np.frombuffer(packet.image, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and max(picture.shape[:2]) <= 480
    assert packet.sex is Sex.MALE and packet.capture_date == "2026-02-01"
    assert packet.age_band == "35-49"  # born BIRTH_DATE, captured 2026-02-01
    assert BIRTH_DATE.year == 1990 and 0.0 < packet.image_quality <= 1.0
    # Logged at both ends, without the image: the coordinator's authorization names the
    # handles as a digest; the node's release entry names counts and the images' digest.
    (authorized,) = _entries(
        fed, "coordinator", EventKind.PACKETS_AUTHORIZED, report.header.query_id
    )
    (released,) = _entries(fed, "IT", EventKind.PACKETS_RELEASED, report.header.query_id)
    assert released.event.counts == {"packets": 1, "not_verifiable": 0}  # type: ignore[attr-defined]
    assert authorized.event.labels["handles_it"] == released.event.labels["handles"]  # type: ignore[attr-defined]

    resolved = fed.requester("DE").resolve(report, APPLICATION, fed.verdicts(report))
    assert [h["reference"] for h in resolved.hits] == [f"IT-{person}"]
    (status,) = resolved.statuses
    assert status["status"] == "verified" and not status.get("not_verifiable")


def test_the_coordinator_sees_no_image(fed: Federation, pipeline: FacePipeline) -> None:
    """What the coordinator relays is ciphertext: the image is not in it in any form, and
    a packet sealed for one query does not open under another query's key."""
    person = list(_people())[1]
    report, photo = _lookup(fed, pipeline, person, "P-2")
    captured: list[bytes] = []
    requester = fed.requester("DE")
    real = requester._stub

    class Recording:
        """The coordinator stub, keeping what the coordinator answers."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def GetVerificationPackets(self, request: Any, timeout: float) -> Any:
            answer = real.GetVerificationPackets(request, timeout=timeout)
            captured.append(answer.SerializeToString())
            return answer

    requester._stub = cast(Any, Recording())
    fetched = requester.fetch_packets(report, photo)
    image = fetched.packets[0].image
    wire = b"".join(captured)
    for piece in (image[200:232], image[-64:-32]):
        assert piece not in wire and base64.b64encode(piece)[:40] not in wire


def test_a_non_candidate_gets_no_image(fed: Federation, pipeline: FacePipeline) -> None:
    """A requester asking for the packet of a record its probe does not match (a guessed
    handle of another person) is refused: no image, and the refusal is on record."""
    people = list(_people())
    report, photo = _lookup(fed, pipeline, people[2], "P-3")
    node = fed.nodes["IT"]
    query = node.handles._queries[report.header.query_id]
    assert query.layout is not None
    other = node.store.find(f"IT-{people[3]}")
    guess = next(
        (b, p)
        for b in range(len(query.layout.order))
        for p in range(2 * query.layout.slots)
        if (row := query.layout.row(b, p)) is not None and int(query.ids[row]) == other
    )
    from fedmatch.protocol.wire import encode_handle

    forged = replace(report, matches=(("IT", encode_handle(*guess)),))
    fetched = fed.requester("DE").fetch_packets(forged, photo)
    assert fetched.packets == () and fetched.failed["IT"].startswith("refused")
    assert "not a match this search may see" in fetched.failed["IT"]
    assert not _entries(fed, "IT", EventKind.PACKETS_RELEASED, report.header.query_id)


def test_verdicts_on_other_images_are_refused(fed: Federation, pipeline: FacePipeline) -> None:
    """A verdict names the SHA-256 of the images compared: one naming another candidate
    image, another probe image, or given before any packet was released is refused by the
    coordinator, and by the node when asked directly (as a coordinator would)."""
    person = list(_people())[4]
    report, photo = _lookup(fed, pipeline, person, "P-4")
    hdr = report.header
    requester = fed.requester("DE")
    # Before the packet: nothing to bind, refused.
    early = confirmations(fed.tmp, hdr, report.matches)
    _denied(lambda: requester.resolve(report, APPLICATION, early), "verification packet")
    fetched = fed.packets(report, photo)
    right = Evidence(fetched.probe_sha256, fetched.packets[0].image_sha256)
    wrong_candidate = Evidence(right.probe_image, image_digest(b"another face"))
    wrong_probe = Evidence(image_digest(b"another probe"), right.candidate_image)
    for evidence in (wrong_candidate, wrong_probe):
        bad = confirmations(fed.tmp, hdr, report.matches, evidence=_always(evidence))
        _denied(lambda b=bad: requester.resolve(report, APPLICATION, b), "other images")

    # The node checks too: a hit-details request on the coordinator's record, with valid
    # signatures, but verdicts naming an image that was not released.
    def ask(evidence: Evidence) -> object:
        verdicts = confirmations(fed.tmp, hdr, report.matches, evidence=_always(evidence))
        return fed.details_at_node(report, verdicts)

    _denied(lambda: ask(wrong_candidate), "other images")
    _denied(lambda: ask(wrong_probe), "other images")
    assert not _entries(fed, "IT", EventKind.HIT_DETAILS_REVEALED, hdr.query_id)
    reply = ask(right)
    assert isinstance(reply, node_pb2.HitDetailsResponse) and len(reply.hits) == 1


def test_the_probe_image_cannot_change(fed: Federation, pipeline: FacePipeline) -> None:
    """The probe image is fixed by the first packet request; packet requests per query are
    bounded (3), each logged and counted in the requesting state's quota."""
    person = list(_people())[5]
    report, photo = _lookup(fed, pipeline, person, "P-5")
    requester = fed.requester("DE")
    first = requester.fetch_packets(report, photo)
    assert len(first.packets) == 1
    _denied(lambda: requester.fetch_packets(report, photo + b"\x00"), "probe image differs")
    guard = fed.nodes["IT"].gate.replay
    before = guard.used_today("DE")
    requester.fetch_packets(report, photo)  # a retry after a lost answer
    assert guard.used_today("DE") == before + 1
    requester.fetch_packets(report, photo)
    _denied(lambda: requester.fetch_packets(report, photo), "at most 3")


def test_a_rejection_reaches_the_owning_node(fed: Federation, pipeline: FacePipeline) -> None:
    """A verifier rejects: the coordinator logs it, reports it to the owning node with the
    signed verdict, and the node logs it and never releases that record's details."""
    person = next(iter(_people()))
    report, photo = _lookup(fed, pipeline, person, "P-6")
    hdr, hit = report.header, HitKey(*report.matches[0])
    fetched = fed.packets(report, photo)
    seen = Evidence(fetched.probe_sha256, fetched.packets[0].image_sha256)
    ben = expert(fed.tmp, "DE", "ben").reject(hdr.query_id, "DE", hit, seen, "different_person")
    anna = expert(fed.tmp, "DE", "anna").confirm(hdr.query_id, "DE", hit, seen)
    resolved = fed.requester("DE").resolve(report, APPLICATION, [anna, ben])
    assert resolved.hits == () and resolved.statuses[0]["status"] == "rejected"
    (at_node,) = _entries(fed, "IT", EventKind.HIT_REJECTED, hdr.query_id)
    assert at_node.event.reason == "different_person"  # type: ignore[attr-defined]
    assert at_node.event.verifiers == (expert_name("DE", "ben"),)  # type: ignore[attr-defined]
    assert hit.handle in fed.nodes["IT"].handles.rejected(hdr.query_id, "DE")


def test_a_record_without_image_is_not_verifiable(fed: Federation, pipeline: FacePipeline) -> None:
    """A record enrolled from a template alone: its packet carries no image, its hit says
    so at every step, and its verdicts bind "no image"."""
    rng = np.random.default_rng(16)
    vector = rng.standard_normal(128)
    vector /= np.linalg.norm(vector)
    enrol(fed.nodes["IT"], vector, "IT-TEMPLATE-ONLY", Category.APPLICANT, dt.date(2026, 3, 1))
    requester = fed.requester("DE")
    report = requester.lookup(vector, requester.header(Purpose.ASYLUM_DUBLIN, "Art. 21", "P-7"))
    fetched = fed.packets(report)
    (packet,) = fetched.packets
    assert not packet.verifiable and packet.image_sha256 == ""
    (released,) = _entries(fed, "IT", EventKind.PACKETS_RELEASED, report.header.query_id)
    assert released.event.counts["not_verifiable"] == 1  # type: ignore[attr-defined]
    resolved = requester.resolve(report, APPLICATION, fed.verdicts(report))
    (status,) = resolved.statuses
    assert status["status"] == "verified" and status["not_verifiable"] is True


def test_no_image_in_logs_or_audit_files(
    tmp_path: Path, pipeline: FacePipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """Scan: through enrolment, packets, verdicts and resolve, no log line, audit file or
    error message holds a piece of a facial image or of the probe photo, raw, hex or
    base64."""
    caplog.set_level(logging.DEBUG)
    person, files = next(iter(_people().items()))
    with federation(tmp_path, ("DE", "IT"), records=10) as f:
        enrol_photo(f, "IT", (FACES / files[0]).read_bytes(), "IT-SCAN")
        report, photo = _lookup(f, pipeline, person, "P-8")
        fetched = f.packets(report, photo)
        image = fetched.packets[0].image
        f.requester("DE").resolve(report, APPLICATION, f.verdicts(report))
        bad = replace(report, matches=(("IT", b"\x00" * 8),))
        refused = f.requester("DE").fetch_packets(bad, photo)
        errors = " ".join(refused.failed.values())
        metrics = generate_latest(node_metrics(f.nodes["IT"]).registry) + generate_latest(
            coordinator_metrics(f.coordinator).registry
        )
    files_text = b"".join(p.read_bytes() for p in tmp_path.rglob("audit-*/**/*") if p.is_file())
    # What every party logged, the errors the requester got and the metrics exported.
    text = caplog.text.encode() + errors.encode() + metrics
    assert b"verification packets query=" in text  # both ends logged the release
    for blob in (image, photo):
        for piece in (blob[300:324], blob[-48:-24]):
            for form in (piece, piece.hex().encode(), base64.b64encode(piece)):
                assert form not in files_text and form not in text


def test_auditors_match_each_release_to_its_authorization(
    fed: Federation, pipeline: FacePipeline, tmp_path: Path
) -> None:
    """An auditor finds every packet release authorized; a node entry releasing packets
    under any other coordinator entry (here: the search's) is reported as a violation."""
    person = list(_people())[3]
    report, photo = _lookup(fed, pipeline, person, "P-9")
    fed.packets(report, photo)
    clean = run_audit(auditor_config(fed.tmp, fed, state_dir=tmp_path / "a"))
    assert clean.ok and not [f for f in clean.findings if f.severity == "violation"]
    search = next(
        e for e in fed.coordinator.audit.log.iter_entries()
        if e.kind is EventKind.SEARCH_AUTHORIZED and e.event.query_id == report.header.query_id
    )  # fmt: skip
    fed.nodes["IT"].audit.record(
        header_event(
            EventKind.PACKETS_RELEASED,
            report.header,
            registers=("IT",),
            outcome="ok",
            counts={"packets": 1, "not_verifiable": 0},
            labels={"coordinator_index": str(search.seq), "handles": "0" * 64},
        )
    )
    caught = run_audit(auditor_config(fed.tmp, fed, state_dir=tmp_path / "b"))
    assert any(
        f.kind == "packets-without-authorization" and f.party == "IT" for f in caught.findings
    ), caught.report
