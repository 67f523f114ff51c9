"""Issue 16, item 1: nodes keep the facial image of every record, for the expert who checks a
hit: a face crop with margin at most 480 px (not the photograph), sealed at rest like the
template (same data key, bound to the record and to its kind), erased with the record,
re-sealed by a key rotation; records enrolled from a template alone are "not verifiable".
Real photos (the shared set), real SQLite files, real keys."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from fedmatch.biometrics.detect import Face
from fedmatch.biometrics.pipeline import FacePipeline
from fedmatch.biometrics.portrait import PORTRAIT_LONG_SIDE, portrait
from fedmatch.domain import Category, Sex
from fedmatch.errors import InvalidInput, NotFound, PreconditionFailed
from node.records import NewRecord, RecordMeta
from node.sealing import KeyEncryptionKey, create_key_file, rotate_register_key
from node.store import RecordStore

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
PHOTOS = ("img12.jpg", "img16.jpg", "img22.jpg")
D = dt.date


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline()


def _meta(reference: str) -> RecordMeta:
    return RecordMeta(
        reference, Category.APPLICANT, D(2026, 1, 2), "Roma", D(2026, 1, 2), Sex.FEMALE, "op",
        birth_date=D(1990, 1, 1),
    )  # fmt: skip


def _decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image)


@pytest.mark.parametrize("name", PHOTOS)
def test_enrolment_keeps_a_face_crop_not_the_photograph(pipeline: FacePipeline, name: str) -> None:
    data = (FACES / name).read_bytes()
    photo = _decode(data)
    got = pipeline.enrolment_bytes(data, name)
    assert got.image.startswith(b"\xff\xd8")  # a JPEG
    crop = _decode(got.image)
    assert max(crop.shape[:2]) <= PORTRAIT_LONG_SIDE
    # Data minimisation: far less than the photograph.
    assert crop.shape[0] * crop.shape[1] < 0.8 * photo.shape[0] * photo.shape[1]
    # The crop is the face: found again in it, and the same person as the photo says.
    again = pipeline.template(crop, name="crop")
    assert float(again @ got.template) > 0.6
    assert 0.0 < got.quality <= 1.0
    # Nothing of the image in its printed form.
    assert str(len(got.image)) in repr(got) and "\\x" not in repr(got)


def test_a_large_photo_gives_a_crop_of_480_px_and_a_small_one_is_not_upscaled() -> None:
    big = np.full((3000, 4000, 3), 128, np.uint8)
    face = Face((1500.0, 1000.0, 900.0, 1100.0), ((0.0, 0.0),) * 5, 0.9)
    assert max(_decode(portrait(big, face)).shape[:2]) == PORTRAIT_LONG_SIDE
    small = np.full((200, 160, 3), 128, np.uint8)
    tiny = Face((50.0, 60.0, 60.0, 70.0), ((0.0, 0.0),) * 5, 0.9)
    crop = _decode(portrait(small, tiny))
    assert max(crop.shape[:2]) < 200  # the face with its margin, at the photo's own pixels
    outside = Face((500.0, 500.0, 10.0, 10.0), ((0.0, 0.0),) * 5, 0.9)
    with pytest.raises(InvalidInput, match="outside the photo"):
        portrait(small, outside)


def _store(path: Path, key: KeyEncryptionKey | None) -> RecordStore:
    return RecordStore(path, "IT", 128, "model-x", key)


def _records(pipeline: FacePipeline) -> list[NewRecord]:
    out = []
    for i, name in enumerate(PHOTOS):
        got = pipeline.enrolment_bytes((FACES / name).read_bytes(), name)
        out.append(NewRecord(_meta(f"IT-F-{i}"), got.template, "model-x", got.image, got.quality))
    return out


def _column(path: Path, column: str) -> list[tuple[int, bytes | None]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT id, {column} FROM records ORDER BY id").fetchall()
    finally:
        db.close()


def _sealed(
    tmp_path: Path, pipeline: FacePipeline
) -> tuple[Path, KeyEncryptionKey, list[NewRecord], list[int]]:
    """A sealed register holding the shared photos' records, closed again."""
    key = create_key_file(tmp_path / "kek")
    db = tmp_path / "it.sqlite"
    batch = _records(pipeline)
    store = _store(db, key)
    try:
        ids = store.add_many(batch)
    finally:
        store.close()
    return db, key, batch, ids


def test_images_are_sealed_at_rest_bound_to_their_record_and_kind(
    tmp_path: Path, pipeline: FacePipeline
) -> None:
    db, key, batch, ids = _sealed(tmp_path, pipeline)
    store = _store(db, key)
    try:
        for record_id, record in zip(ids, batch, strict=True):
            got = store.face_image(record_id)
            assert got is not None and got[0] == record.image
        assert store.image_count() == len(batch)
    finally:
        store.close()
    raw = db.read_bytes()
    for record in batch:
        assert record.image is not None and record.image[200:232] not in raw
    stored = [blob for _, blob in _column(db, "face_image")]
    assert all(blob is not None and not blob.startswith(b"\xff\xd8") for blob in stored)
    # Another record's image blob, or a template blob, in this record's place: refused.
    conn = sqlite3.connect(db)
    conn.execute("UPDATE records SET face_image = ? WHERE id = ?", (stored[1], ids[0]))
    templates = dict(_column(db, "template"))
    conn.execute("UPDATE records SET face_image = ? WHERE id = ?", (templates[ids[1]], ids[1]))
    conn.commit()
    conn.close()
    store = _store(db, key)
    try:
        for record_id in ids[:2]:
            with pytest.raises(PreconditionFailed, match="does not authenticate"):
                store.face_image(record_id)
        assert store.face_image(ids[2]) is not None
    finally:
        store.close()


def test_records_from_a_template_alone_are_not_verifiable(
    tmp_path: Path, pipeline: FacePipeline
) -> None:
    with_image = _records(pipeline)[0]
    bare = NewRecord(_meta("IT-BULK-1"), with_image.template, "model-x")
    store = _store(tmp_path / "it.sqlite", None)
    try:
        first, second = store.add_many([with_image, bare])
        assert store.face_image(second) is None
        assert store.face_image(first) is not None
        assert store.image_count() == 1
    finally:
        store.close()
    with pytest.raises(InvalidInput, match="JPEG"):
        NewRecord(_meta("IT-BAD"), with_image.template, "model-x", b"GIF89a" + bytes(100))


def test_erasure_takes_the_image_and_rotation_reseals_it(
    tmp_path: Path, pipeline: FacePipeline
) -> None:
    db, key, batch, ids = _sealed(tmp_path, pipeline)
    new = create_key_file(tmp_path / "kek2")
    conn = sqlite3.connect(db)
    try:
        rotate_register_key(conn, key, new, "it.sqlite", reencrypt=True)
    finally:
        conn.close()
    store = _store(db, new)
    try:
        got = store.face_image(ids[1])
        assert got is not None and got[0] == batch[1].image
        store.erase([ids[1]])
        with pytest.raises(NotFound):
            store.face_image(ids[1])
        assert store.image_count() == len(batch) - 1
    finally:
        store.close()


def test_a_register_of_schema_2_is_migrated(tmp_path: Path, pipeline: FacePipeline) -> None:
    """A register written before facial images were kept opens, its records not verifiable,
    and new records keep theirs."""
    db = tmp_path / "it.sqlite"
    record = _records(pipeline)[0]
    store = _store(db, None)
    try:
        (old,) = store.add_many([NewRecord(record.meta, record.template, "model-x")])
    finally:
        store.close()
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE records DROP COLUMN face_image")
    conn.execute("ALTER TABLE records DROP COLUMN image_quality")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    store = _store(db, None)
    try:
        assert store.face_image(old) is None
        fresh = NewRecord(
            _meta("IT-NEW"), record.template, "model-x", record.image, record.image_quality
        )
        (new,) = store.add_many([fresh])
        assert store.face_image(new) is not None and store.image_count() == 1
    finally:
        store.close()
