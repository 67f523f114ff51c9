"""Seeding a node's register with synthetic records (demo, tests, benchmarks), and the
``records_seeded`` entry that logs them (:func:`seed_logged`)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedmatch.audit.entry import AuditEvent, EventKind
from fedmatch.audit.register import SEED_OPERATOR, synthetic_prefix
from fedmatch.demo.synthetic import synthetic_metadata, unit_vectors
from fedmatch.domain import Category
from fedmatch.errors import InvalidInput

if TYPE_CHECKING:
    from fedmatch.audit.log import AuditLog
    from node.retention import RetentionPolicy
    from node.sealing import KeyEncryptionKey

__all__ = [
    "SEED_OPERATOR",
    "RegisterCensus",
    "Seeded",
    "register_census",
    "seed_logged",
    "seed_node",
    "seed_register",
    "seeded_event",
]

# The articles synthetic resettlement records are taken under, in turn (Eurodac recast Art.
# 18(2)(a)-(c), 20; 18(1) data are not recorded, Art. 29(2)).
_SEED_BASES = ("18(2)(a)", "18(2)(b)", "18(2)(c)", "20")

# How long a seeded record stays inside its retention after the seeding day. A register is
# often served on a later day than it was seeded (a demo kept for a week, a test suite that
# runs across midnight): the node's erasure job at start must then find nothing due, or the
# register it serves is not the one that was seeded and logged.
SEED_RETENTION_MARGIN = dt.timedelta(days=30)


def _within_retention(
    retention: RetentionPolicy, category: Category, basis: str, today: dt.date, n: int
) -> dt.date:
    """A capture date ``n``-dependent but still inside ``category``'s retention for
    :data:`SEED_RETENTION_MARGIN` after ``today`` (under the recast's rules, the regime of
    recent events)."""
    for back in (n % 400, n % 30, 0):
        day = today - dt.timedelta(days=back)
        if not _expires_soon(retention, category, day, basis, today):
            return day
    return today


def _expires_soon(
    retention: RetentionPolicy, category: Category, captured: dt.date, basis: str, today: dt.date
) -> bool:
    """Whether a record taken on ``captured`` and transmitted ``today`` is due for erasure
    within :data:`SEED_RETENTION_MARGIN`."""
    from node.retention import RetentionFacts

    facts = RetentionFacts(category, captured, today, basis)
    return retention.expired(facts, today + SEED_RETENTION_MARGIN)


@dataclass(frozen=True)
class RegisterCensus:
    """What a register file holds, as far as seeding it is concerned."""

    records: int
    # Records not added by `seed_register`: enrolled by an officer, or loaded in bulk.
    not_synthetic: int
    # The key id its templates are sealed under (node/sealing.py); "" when stored clear.
    sealing_key_id: str


def register_census(path: Path, member_state: str) -> RegisterCensus:
    """Count the records of an existing register, read only (no lock, nothing created)."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "records" not in tables:
            return RegisterCensus(0, 0, "")
        (records,) = db.execute("SELECT COUNT(*) FROM records").fetchone()
        prefix = synthetic_prefix(member_state)
        (real,) = db.execute(
            "SELECT COUNT(*) FROM records WHERE operator_id != ? OR substr(reference, 1, ?) != ?",
            (SEED_OPERATOR, len(prefix), prefix),
        ).fetchone()
        key = (
            db.execute("SELECT value FROM meta WHERE key = 'sealing_key_id'").fetchone()
            if "meta" in tables
            else None
        )
    finally:
        db.close()
    return RegisterCensus(int(records), int(real), key[0] if key else "")


@dataclass(frozen=True)
class Seeded:
    """What a seeding added: the row ids (consecutive), and the register's size after."""

    rows: tuple[int, ...]
    records: int


def seeded_event(member_state: str, seeded: Seeded, dev: bool = False) -> AuditEvent:
    """The ``records_seeded`` entry of ``seeded``: counts, and the row ids the records got
    (what the register's reconciliation with the log reads, fedmatch/audit/register.py).
    ``dev``: the --dev escape hatch let it seed a register of real or sealed records."""
    labels = {"dev": "yes" if dev else "no"}
    if seeded.rows:
        labels |= {"first_record": str(seeded.rows[0]), "last_record": str(seeded.rows[-1])}
    return AuditEvent(
        EventKind.RECORDS_SEEDED,
        registers=(member_state,),
        operator=SEED_OPERATOR,
        outcome="ok",
        counts={"added": len(seeded.rows), "records": seeded.records},
        labels=labels,
    )


def seed_logged(
    log: AuditLog,
    path: Path,
    member_state: str,
    count: int,
    seed: int,
    dimension: int,
    model_id: str,
    today: dt.date,
    kek: KeyEncryptionKey | None = None,
    dev: bool = False,
) -> Seeded:
    """:func:`seed_register`, then its ``records_seeded`` entry in the node's ``log`` and a
    checkpoint: seeded records are logged like enrolled ones. The caller holds the register
    and the log alone (``node seed`` under its owner lock; a demo or test before its node
    starts)."""
    seeded = seed_register(path, member_state, count, seed, dimension, model_id, today, kek)
    log.append(seeded_event(member_state, seeded, dev))
    log.checkpoint()
    return seeded


def seed_node(
    audit_directory: Path,
    signing_key: Path,
    path: Path,
    member_state: str,
    count: int,
    seed: int,
    dimension: int,
    model_id: str,
    today: dt.date,
    kek: KeyEncryptionKey | None = None,
) -> Seeded:
    """:func:`seed_logged` for a node that is not running yet (a demo, a test, a bench): its
    log in ``audit_directory`` (``[audit] directory``), signed with its ``signing_key``."""
    from fedmatch.audit.log import AuditLog
    from fedmatch.audit.note import NoteSigner
    from fedmatch.audit.party import node_origin

    signer = NoteSigner.load(signing_key)
    log = AuditLog(audit_directory / "log", signer, node_origin(member_state))
    try:
        return seed_logged(
            log, path, member_state, count, seed, dimension, model_id, today, kek=kek
        )
    finally:
        log.close()


def seed_register(
    path: Path,
    member_state: str,
    count: int,
    seed: int,
    dimension: int,
    model_id: str,
    today: dt.date,
    kek: KeyEncryptionKey | None = None,
) -> Seeded:
    """Create (or extend) a register file with ``count`` synthetic records (templates
    encrypted at rest under ``kek`` when given, node/sealing.py). Unlogged: a register a
    node serves gets them through :func:`seed_logged`."""
    # Imported here: fedmatch is the shared library and must not depend on node at import.
    from node.records import NewRecord, RecordMeta
    from node.retention import RetentionPolicy
    from node.store import RecordStore

    if count < 0:
        raise InvalidInput("record count must not be negative")
    rng = np.random.default_rng(seed)
    templates = unit_vectors(rng, count, dimension)
    # Birth dates from their own stream, so templates and metadata stay as they were.
    # At least 14 at capture: the minimum age of captures under Reg. 603/2013 (6 under the
    # recast), so that a synthetic record of any capture date is one a node may hold.
    births = np.random.default_rng([seed, 1]).integers(14 * 366, 70 * 365, size=count)
    retention = RetentionPolicy()
    store = RecordStore(path, member_state, dimension, model_id, kek)
    try:
        batch = []
        # Number after what is there, so seeding twice extends the register. The audit log
        # relies on it: a records_seeded entry from before it named its rows reconciles
        # by these numbers (fedmatch/audit/register.py, SeededRange).
        metadata = synthetic_metadata(member_state, count, rng, today, first=store.count())
        for i, (template, age_days, (ref, cat, event, place, captured, sex)) in enumerate(
            zip(templates, births, metadata, strict=True)
        ):
            basis = _SEED_BASES[i % len(_SEED_BASES)] if cat is Category.RESETTLEMENT else ""
            # Transmitted (enrolled) today: the recast counts retention from that day.
            if _expires_soon(retention, cat, captured, basis, today):
                # A register never holds a record past its retention (the node's erasure
                # job would remove it at start, even days later): move it inside instead.
                event = captured = _within_retention(retention, cat, basis, today, int(age_days))
            born = captured - dt.timedelta(days=int(age_days))
            meta = RecordMeta(
                ref, cat, event, place, captured, sex, operator_id=SEED_OPERATOR, birth_date=born,
                resettlement_basis=basis,
            )  # fmt: skip
            batch.append(NewRecord(meta=meta, template=template, model_id=model_id))
        rows = store.add_many(batch)
        return Seeded(tuple(rows), store.count())
    finally:
        store.close()
