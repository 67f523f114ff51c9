"""The face path end to end: photographs in, encrypted search over real gRPC, hits out."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedmatch.biometrics.pipeline import FacePipeline
from fedmatch.domain import Category
from fedmatch.he.engines import create_engine
from fedmatch.he.keys import open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET
from fedmatch.protocol.wire import category_to_pb, header_to_pb
from fedmatch.rpc.v1 import node_pb2, node_pb2_grpc
from tests.federation import (
    Federation,
    enrol_photo,
    federation,
    gate,
    header,
    node_audit,
    node_channel,
    security,
    shared_keys,
)

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
THRESHOLD = 0.45


def _people() -> dict[str, list[str]]:
    with (FACES / "identities.csv").open(newline="") as fh:
        out: dict[str, list[str]] = {}
        for row in csv.DictReader(fh):
            out.setdefault(row["identity"], []).append(row["file"])
    return {p: sorted(files) for p, files in sorted(out.items())}


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("faces"), ("DE", "IT", "FR"), records=50) as f:
        yield f


def _enrol_photo(fed: Federation, state: str, file: str, reference: str) -> None:
    # Enrolment at a node is for its own member state's operator workstations.
    enrol_photo(fed, state, (FACES / file).read_bytes(), reference)


def test_photos_enrolled_at_two_nodes_are_found_from_a_third(
    fed: Federation, pipeline: FacePipeline
) -> None:
    people = _people()
    enrolled = [p for p, files in people.items() if len(files) >= 3][:3]
    outsider = next(p for p in people if p not in enrolled)
    for person in enrolled:
        first, second = people[person][:2]
        _enrol_photo(fed, "IT", first, f"IT-{person}")  # the node makes the template
        _enrol_photo(fed, "FR", second, f"FR-{person}")
    requester = fed.requester("DE")
    target = enrolled[0]
    probe = pipeline.template(FACES / people[target][2])  # a photo not enrolled anywhere
    report = requester.lookup(probe, header("DE"))
    resolved = requester.resolve(report, "2026-11-21", fed.verdicts(report))
    assert sorted(h["reference"] for h in resolved.hits) == [f"FR-{target}", f"IT-{target}"]

    stranger = pipeline.template(FACES / people[outsider][0])
    report = requester.lookup(stranger, header("DE"))
    assert report.matches == ()


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: b"not an image at all", "unreadable_image"),
        (lambda: _blank_png(), "no_face"),
    ],
    ids=["unreadable", "no-face"],
)
def test_photo_quality_errors_reach_the_grpc_status(
    fed: Federation, make: object, code: str
) -> None:
    channel = node_channel(fed.tmp, "IT", fed.servers["IT"].address, "operator-IT")
    try:
        request = node_pb2.EnrollRequest(
            header=header_to_pb(header("IT")),
            record=node_pb2.RecordMetadata(
                reference="IT-BAD-PHOTO", category=category_to_pb(Category.APPLICANT),
                event_date="2026-02-01", event_place="Centre", capture_date="2026-02-01",
                birth_date="1990-05-17",
            ),
            photo=node_pb2.Photo(data=make(), name="x.jpg", pick=-1),  # type: ignore[operator]
        )  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            node_pb2_grpc.NodeServiceStub(channel).Enroll(request, timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith(f"{code}: ")
    finally:
        channel.close()


def _blank_png() -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", np.full((480, 640, 3), 128, np.uint8))
    assert ok
    return bytes(data)


def test_encrypted_decisions_equal_plaintext_on_all_pairs_of_the_shared_photos(
    pipeline: FacePipeline,
) -> None:
    files = sorted(p.name for p in FACES.glob("*.jpg"))
    templates = np.stack([pipeline.template(FACES / f) for f in files]).astype(np.float32)
    engine = create_engine(DEFAULT_PARAM_SET, pipeline.dimension)
    engine.load(templates)
    keys = shared_keys()
    evaluation = open_key_bundle(keys.public_bundle())
    plain = templates.astype(np.float64) @ templates.astype(np.float64).T >= THRESHOLD
    for i in range(len(files)):
        out = engine.search(evaluation, keys.encrypt_probe(templates[i]), THRESHOLD, lambda: False)
        found = np.zeros(len(files), dtype=bool)
        for b, ct in enumerate(out.blocks):
            for p in np.flatnonzero(keys.decrypt_matches(ct)):
                row = out.layout.row(b, int(p))
                assert row is not None
                found[row] = True
        np.testing.assert_array_equal(found, plain[i], err_msg=files[i])
    # The shared photos separate cleanly at the threshold: every identity matches itself.
    assert plain.sum() > len(files)


def test_photo_for_a_register_of_another_model_is_refused(tmp_path: Path) -> None:
    from node.config import NodeConfig
    from node.service import NodeService
    from node.servicer import serve_node
    from node.store import RecordStore

    db = tmp_path / "AT.sqlite"
    store = RecordStore(db, "AT", 128, "arcface-other-model")
    audit = node_audit(tmp_path, "AT")
    node_gate = gate(tmp_path, "node-AT")
    service = NodeService(
        NodeConfig(member_state="AT", database=db, dimension=128,
                   model_id="arcface-other-model", search_workers=1),
        store,
        audit,
        node_gate,
    )  # fmt: skip
    server = serve_node(service, security(tmp_path, "node-AT"), "127.0.0.1:0")
    channel = node_channel(tmp_path, "AT", server.address, "operator-AT")
    try:
        request = node_pb2.EnrollRequest(
            header=header_to_pb(header("AT")),
            record=node_pb2.RecordMetadata(
                reference="AT-1", category=category_to_pb(Category.APPLICANT),
                event_date="2026-02-01", event_place="Wien", capture_date="2026-02-01",
                birth_date="1990-05-17",
            ),
            photo=node_pb2.Photo(data=(FACES / "img3.jpg").read_bytes(), name="img3.jpg", pick=-1),
        )  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            node_pb2_grpc.NodeServiceStub(channel).Enroll(request, timeout=60)
        # The node's face model (SFace) is not the register's: never mix templates.
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "sface-2021dec-int8bq" in (err.value.details() or "")
        assert store.count() == 0
    finally:
        channel.close()
        server.stop(0.2)
        service.close()
        node_gate.close()
        audit.close()
        store.close()


def test_facial_images_are_kept_sealed_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16, item 1, over real servers: a photo enrolled through the node's RPC leaves
    its facial image (the face crop, not the photo) in the register, sealed at rest; the
    enrolment entry says an image is kept; no log line and no audit file holds any piece of
    it, of the photo or of the template, in raw, hex or base64 form."""
    import base64
    import logging

    from node.sealing import create_key_file

    caplog.set_level(logging.DEBUG)
    people = _people()
    file = next(files for files in people.values() if len(files) >= 2)[0]
    photo = (FACES / file).read_bytes()
    kek = create_key_file(tmp_path / "kek")
    with federation(tmp_path, ("DE", "IT"), records=20, kek=kek) as fed:
        _enrol_photo(fed, "IT", file, "IT-FACE-1")
        node = fed.nodes["IT"]
        record = node.store.find("IT-FACE-1")
        kept = node.store.face_image(record)
        assert kept is not None
        image, quality = kept
        assert image.startswith(b"\xff\xd8") and 0.0 < quality <= 1.0
        assert len(image) < len(photo)  # a crop, not the photograph
        template = node.store.template(record)
        enrolled = [e for e in node.audit.log.iter_entries() if "record" in e.event.labels]
        assert enrolled[-1].event.labels["facial_image"] == "yes"
    audit = b"".join(p.read_bytes() for p in (tmp_path / "audit-IT").rglob("*") if p.is_file())
    register = (tmp_path / "IT.sqlite").read_bytes()
    for piece in (image[300:332], image[-64:-32], photo[400:432], template[:4].tobytes()):
        for form in (piece, piece.hex().encode(), base64.b64encode(piece)):
            assert form not in audit
            assert form.decode("latin-1") not in caplog.text
        assert piece not in register  # sealed at rest under the register's data key
