"""Tests of node.store.RecordStore and the self-validating records of node.records.

Every test uses a real SQLite file under ``tmp_path``; nothing is mocked.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from fedmatch.domain import RESETTLEMENT_BASES, Category, MarkKind, Sex
from fedmatch.errors import AlreadyExists, InvalidInput, NotFound, PreconditionFailed
from fedmatch.protocol.limits import MAX_TEXT_FIELD
from node.records import NewRecord, RecordMeta, RecordStatus
from node.store import SCHEMA_VERSION, RecordStore

D = dt.date
STATE = "IT"
DIM = 8
MODEL = "test-model-v1"
EVENT = D(2025, 3, 1)

Vector = npt.NDArray[np.float32]


def unit(seed: int, dim: int = DIM) -> Vector:
    """A reproducible random unit-norm float32 vector."""
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def meta(
    reference: str,
    *,
    category: Category = Category.APPLICANT,
    event: dt.date = EVENT,
    place: str = "Lampedusa",
    capture: dt.date | None = None,
    sex: Sex = Sex.UNSPECIFIED,
    operator: str = "",
) -> RecordMeta:
    return RecordMeta(
        reference=reference,
        category=category,
        event_date=event,
        event_place=place,
        capture_date=capture or event,
        sex=sex,
        operator_id=operator,
        birth_date=dt.date(1990, 5, 17),
    )


def record(reference: str, seed: int = 0, *, model: str = MODEL, dim: int = DIM) -> NewRecord:
    return NewRecord(meta=meta(reference), template=unit(seed, dim), model_id=model)


def bits(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.uint32]:
    """The raw IEEE-754 bit patterns, so that -0.0 != 0.0 and NaN payloads would count."""
    return np.ascontiguousarray(matrix, dtype=np.float32).view(np.uint32)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    # A missing parent directory: the store must create it.
    return tmp_path / "registers" / "it.sqlite"


@pytest.fixture
def store(db_path: Path) -> Iterator[RecordStore]:
    s = RecordStore(db_path, STATE, DIM, MODEL)
    yield s
    s.close()


def snapshot(s: RecordStore) -> tuple[int, list[int], bytes, list[RecordMeta]]:
    """Everything observable about a store's content."""
    ids, matrix = s.templates()
    return s.count(), ids.tolist(), bits(matrix).tobytes(), [s.get(int(i)) for i in ids]


# --------------------------------------------------------------------------- persistence


def test_new_register_is_empty_and_created_with_parents(db_path: Path, store: RecordStore) -> None:
    assert db_path.is_file()
    assert store.count() == 0
    ids, matrix = store.templates()
    assert ids.dtype == np.int64 and ids.shape == (0,)
    assert matrix.dtype == np.float32 and matrix.shape == (0, DIM)


def test_records_survive_close_and_reopen(db_path: Path) -> None:
    # A template with a negative zero: bit-identical storage must keep its sign bit.
    signed_zero = np.zeros(DIM, dtype=np.float32)
    signed_zero[0] = np.float32(-0.0)
    signed_zero[1] = np.float32(1.0)
    originals = [
        NewRecord(
            meta("IT-0001", category=Category.IRREGULAR_CROSSING, sex=Sex.MALE, operator="op-7"),
            unit(1),
            MODEL,
        ),
        NewRecord(
            meta(
                "  IT-0002 ",  # surrounding spaces are kept as given
                category=Category.SAR_DISEMBARKED,
                event=D(2024, 12, 31),
                capture=D(2024, 12, 30),  # one day early: allowed (time zones)
                place="Pozzallo – molo «Nord» 港",
                sex=Sex.FEMALE,
            ),
            unit(2),
            MODEL,
        ),
        NewRecord(meta("IT-0003", category=Category.TEMPORARY_PROTECTION), signed_zero, MODEL),
        NewRecord(
            meta("R" * MAX_TEXT_FIELD, sex=Sex.OTHER, place="P" * MAX_TEXT_FIELD),
            unit(3),
            MODEL,
        ),
        NewRecord(
            meta("IT-0005", event=D(2020, 2, 29), capture=D(2026, 1, 1), operator="x" * 256),
            # A hair off unit norm, within tolerance: stored exactly as given.
            unit(4) * np.float32(1 + 5e-4),
            MODEL,
        ),
    ]
    s = RecordStore(db_path, STATE, DIM, MODEL)
    first = s.add(originals[0])
    rest = s.add_many(originals[1:])
    ids_written = [first, *rest]
    s.close()

    reopened = RecordStore(db_path, STATE, DIM, MODEL)
    try:
        assert reopened.count() == len(originals)
        ids, matrix = reopened.templates()
        assert ids.tolist() == ids_written
        assert ids_written == sorted(ids_written)
        assert len(set(ids_written)) == len(ids_written)
        assert matrix.dtype == np.float32 and matrix.shape == (len(originals), DIM)
        expected = np.stack([np.asarray(r.template, dtype=np.float32) for r in originals])
        assert bits(matrix).tobytes() == bits(expected).tobytes()
        assert np.signbit(matrix[2, 0])
        for row_id, original in zip(ids_written, originals, strict=True):
            assert reopened.get(row_id) == original.meta
    finally:
        reopened.close()


def test_row_order_is_enrolment_order(store: RecordStore) -> None:
    refs = [f"IT-{i:04d}" for i in (5, 1, 4, 2, 3)]  # not sorted by reference
    for n, ref in enumerate(refs):
        store.add(record(ref, seed=n))
    ids, matrix = store.templates()
    assert [store.get(int(i)).reference for i in ids] == refs
    for n, row in enumerate(matrix):
        assert bits(row).tobytes() == bits(unit(n)).tobytes()


@pytest.mark.parametrize(
    ("key", "member_state", "dimension", "model_id"),
    [
        pytest.param("dimension", STATE, DIM * 2, MODEL, id="dimension"),
        pytest.param("model_id", STATE, DIM, "other-model", id="model_id"),
        pytest.param("member_state", "FR", DIM, MODEL, id="member_state"),
    ],
)
def test_reopen_with_other_parameters_is_refused(
    db_path: Path, key: str, member_state: str, dimension: int, model_id: str
) -> None:
    s = RecordStore(db_path, STATE, DIM, MODEL)
    s.add(record("IT-0001"))
    s.close()

    with pytest.raises(PreconditionFailed, match=key):
        RecordStore(db_path, member_state, dimension, model_id)

    # The refused open did not rewrite the register's parameters.
    again = RecordStore(db_path, STATE, DIM, MODEL)
    try:
        assert again.count() == 1
    finally:
        again.close()


@pytest.mark.parametrize(
    ("member_state", "dimension"),
    [
        pytest.param("XX", DIM, id="unknown-state"),
        pytest.param("it", DIM, id="lowercase-state"),
        pytest.param(STATE, 0, id="zero-dimension"),
        pytest.param(STATE, -1, id="negative-dimension"),
    ],
)
def test_constructor_refuses_bad_parameters(
    tmp_path: Path, member_state: str, dimension: int
) -> None:
    with pytest.raises(InvalidInput):
        RecordStore(tmp_path / "x.sqlite", member_state, dimension, MODEL)


# --------------------------------------------------------------------------- enrolment refusals


def test_template_from_another_model_is_refused(store: RecordStore) -> None:
    store.add(record("IT-0001"))
    before = snapshot(store)
    with pytest.raises(PreconditionFailed, match="other-model"):
        store.add(record("IT-0002", model="other-model"))
    assert snapshot(store) == before


@pytest.mark.parametrize("dim", [DIM - 1, DIM + 1, 1], ids=["shorter", "longer", "one"])
def test_wrong_dimension_is_invalid_input(store: RecordStore, dim: int) -> None:
    with pytest.raises(InvalidInput, match="dimension"):
        store.add(record("IT-0001", dim=dim))
    assert store.count() == 0


def test_duplicate_reference_leaves_store_unchanged(store: RecordStore) -> None:
    store.add(record("IT-0001", seed=1))
    store.add(record("IT-0002", seed=2))
    before = snapshot(store)
    with pytest.raises(AlreadyExists):
        store.add(record("IT-0001", seed=99))  # same reference, other template
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("batch", "error"),
    [
        pytest.param(["IT-0100", "IT-0001", "IT-0101"], AlreadyExists, id="dup-of-existing"),
        pytest.param(["IT-0100", "IT-0101", "IT-0100"], AlreadyExists, id="dup-inside-batch"),
        pytest.param(["IT-0100", "IT-0101", "IT-0001"], AlreadyExists, id="dup-last"),
        pytest.param(["IT-0100", "model:other", "IT-0101"], PreconditionFailed, id="other-model"),
        pytest.param(["IT-0100", "dim:3", "IT-0101"], InvalidInput, id="wrong-dimension"),
    ],
)
def test_add_many_is_all_or_nothing(
    store: RecordStore, batch: list[str], error: type[Exception]
) -> None:
    store.add(record("IT-0001", seed=1))
    before = snapshot(store)

    def build(n: int, spec: str) -> NewRecord:
        if spec.startswith("model:"):
            return record(f"IT-9{n}", seed=n, model=spec.removeprefix("model:"))
        if spec.startswith("dim:"):
            return record(f"IT-9{n}", seed=n, dim=int(spec.removeprefix("dim:")))
        return record(spec, seed=n)

    with pytest.raises(error):
        store.add_many([build(n, spec) for n, spec in enumerate(batch)])
    assert snapshot(store) == before

    # The failed transaction left the store usable.
    new_ids = store.add_many([record("IT-0100", 5), record("IT-0101", 6)])
    assert store.count() == 3
    assert [store.get(i).reference for i in new_ids] == ["IT-0100", "IT-0101"]


def test_add_many_of_nothing_adds_nothing(store: RecordStore) -> None:
    assert store.add_many([]) == []
    assert store.count() == 0


@pytest.mark.parametrize("record_id", [0, -1, 2, 10**12], ids=["zero", "negative", "next", "huge"])
def test_get_missing_id_is_not_found(store: RecordStore, record_id: int) -> None:
    store.add(record("IT-0001"))  # row id 1
    with pytest.raises(NotFound):
        store.get(record_id)


# --------------------------------------------------------------------------- record validation


def _template(values: list[float]) -> Vector:
    return np.asarray(values, dtype=np.float32)


INVALID: list[object] = [
    pytest.param(lambda: meta(""), "reference", id="empty-reference"),
    pytest.param(lambda: meta("   \t"), "reference", id="blank-reference"),
    pytest.param(lambda: meta("R" * (MAX_TEXT_FIELD + 1)), "reference", id="long-reference"),
    pytest.param(lambda: meta("IT-1", place=""), "event_place", id="empty-place"),
    pytest.param(lambda: meta("IT-1", place=" "), "event_place", id="blank-place"),
    pytest.param(
        lambda: meta("IT-1", place="P" * (MAX_TEXT_FIELD + 1)), "event_place", id="long-place"
    ),
    pytest.param(
        lambda: meta("IT-1", operator="o" * (MAX_TEXT_FIELD + 1)), "operator_id", id="long-operator"
    ),
    pytest.param(
        lambda: meta("IT-1", event=D(2025, 3, 10), capture=D(2025, 3, 8)),
        "capture_date",
        id="capture-two-days-early",
    ),
    pytest.param(
        lambda: meta("IT-1", event=D(2025, 3, 10), capture=D(2019, 1, 1)),
        "capture_date",
        id="capture-years-early",
    ),
    pytest.param(
        lambda: NewRecord(meta("IT-1"), unit(0) * np.float32(2), MODEL),
        "unit-norm",
        id="norm-two",
    ),
    pytest.param(
        lambda: NewRecord(meta("IT-1"), unit(0) * np.float32(1.01), MODEL),
        "unit-norm",
        id="norm-just-outside-tolerance",
    ),
    pytest.param(
        lambda: NewRecord(meta("IT-1"), np.zeros(DIM, np.float32), MODEL),
        "unit-norm",
        id="zero-vector",
    ),
    pytest.param(
        lambda: NewRecord(meta("IT-1"), _template([np.nan, 1.0, 0.0]), MODEL),
        "non-finite",
        id="nan",
    ),
    pytest.param(
        lambda: NewRecord(meta("IT-1"), _template([np.inf, 0.0]), MODEL), "non-finite", id="inf"
    ),
    pytest.param(
        lambda: NewRecord(meta("IT-1"), unit(0).reshape(2, DIM // 2), MODEL),
        "one-dimensional",
        id="matrix",
    ),
    pytest.param(
        lambda: NewRecord(meta("IT-1"), _template([]), MODEL), "one-dimensional", id="empty"
    ),
    pytest.param(lambda: NewRecord(meta("IT-1"), unit(0), " "), "model_id", id="blank-model"),
]


@pytest.mark.parametrize(("build", "message"), INVALID)
def test_invalid_records_are_refused(build: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        build()


VALID: list[object] = [
    pytest.param(lambda: meta("R" * MAX_TEXT_FIELD), id="reference-at-limit"),
    pytest.param(lambda: meta("IT-1", operator="o" * MAX_TEXT_FIELD), id="operator-at-limit"),
    pytest.param(
        lambda: meta("IT-1", event=D(2025, 3, 10), capture=D(2025, 3, 9)), id="capture-day-early"
    ),
    pytest.param(
        lambda: meta("IT-1", event=D(2025, 3, 10), capture=D(2026, 3, 10)), id="capture-later"
    ),
    pytest.param(
        lambda: NewRecord(meta("IT-1"), unit(0) * np.float32(1.0009), MODEL), id="norm-in-tolerance"
    ),
    pytest.param(lambda: NewRecord(meta("IT-1"), _template([1.0]), MODEL), id="one-dimension"),
]


@pytest.mark.parametrize("build", VALID)
def test_boundary_records_are_accepted(build: Callable[[], object]) -> None:
    build()


# --- regressions: bugs found in review, now fixed ---


def test_locked_database_error_is_not_masked(store: RecordStore, db_path: Path) -> None:
    # Only so that the test does not wait out sqlite3's default 5-second busy timeout.
    store._db.execute("PRAGMA busy_timeout = 0")
    writer = sqlite3.connect(str(db_path), isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.add(record("IT-0001"))
    finally:
        writer.close()


# --------------------------------------------------------------------------- schema 4


def _resettled(basis: str, category: Category = Category.RESETTLEMENT) -> RecordMeta:
    return RecordMeta(
        reference="IT-R-1",
        category=category,
        event_date=EVENT,
        event_place="Rome",
        capture_date=EVENT,
        birth_date=dt.date(1990, 5, 17),
        resettlement_basis=basis,
    )


@pytest.mark.parametrize("basis", ["", *sorted(RESETTLEMENT_BASES)])
def test_resettlement_basis_is_kept(store: RecordStore, basis: str) -> None:
    """The Eurodac recast article resettlement data were taken under (Art. 18(1), 18(2)(a)-(c),
    20) decides their retention (DOMAIN.md section 1): the register keeps it."""
    row = store.add(NewRecord(_resettled(basis), unit(0), MODEL))
    assert store.get(row).resettlement_basis == basis


@pytest.mark.parametrize(
    ("basis", "category"),
    [
        pytest.param("18(3)", Category.RESETTLEMENT, id="unknown-article"),
        pytest.param("18(2)", Category.RESETTLEMENT, id="no-point"),
        pytest.param("18(2)(a)", Category.APPLICANT, id="not-resettlement"),
        pytest.param("20", Category.IRREGULAR_CROSSING, id="art-20-on-crossing"),
    ],
)
def test_bad_resettlement_basis_is_refused(basis: str, category: Category) -> None:
    with pytest.raises(InvalidInput, match="resettlement_basis"):
        _resettled(basis, category)


def _downgrade_to_schema_3(path: Path) -> None:
    """Make ``path`` look like a register written by schema 3 (before marks had a kind and
    records a Dublin status)."""
    conn = sqlite3.connect(path)
    for column in (
        "mark_kind", "responsible_state", "responsible_basis", "transferred_on", "removed_on",
        "left_territory_on", "relocated_to", "relocated_on", "resettlement_basis",
    ):  # fmt: skip
        conn.execute(f"ALTER TABLE records DROP COLUMN {column}")
    conn.execute("DROP TABLE own_hit_links")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def test_a_register_of_schema_3_is_migrated(db_path: Path) -> None:
    """Schema 3 had one kind of mark, set on applicant records: protection granted (Eurodac
    recast Art. 31(1)). Its marked records keep their mark as that kind; the others get no
    mark, no status and no resettlement basis."""
    store = RecordStore(db_path, STATE, DIM, MODEL)
    when = dt.datetime(2026, 8, 1, 9, 30, tzinfo=dt.UTC)
    try:
        marked, plain = store.add_many([record("IT-M"), record("IT-P", 1)])
        store.set_marked(marked, MarkKind.PROTECTION_GRANTED, when)
    finally:
        store.close()
    _downgrade_to_schema_3(db_path)
    store = RecordStore(db_path, STATE, DIM, MODEL)
    try:
        assert store.status(marked) == RecordStatus(MarkKind.PROTECTION_GRANTED, when)
        assert store.status(plain) == RecordStatus()
        assert store.get(plain).resettlement_basis == ""
        assert store.marked_flags().tolist() == [True, False]
    finally:
        store.close()
    with sqlite3.connect(db_path) as check:
        (version,) = check.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert version == SCHEMA_VERSION == "4"
