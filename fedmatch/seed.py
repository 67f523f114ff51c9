"""Seeding a node's register with synthetic records (demo, tests, benchmarks)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from fedmatch.errors import InvalidInput
from fedmatch.synthetic import synthetic_metadata, unit_vectors

__all__ = ["seed_register"]


def seed_register(
    path: Path,
    member_state: str,
    count: int,
    seed: int,
    dimension: int,
    model_id: str,
    today: dt.date,
) -> None:
    """Create (or extend) a register file with ``count`` synthetic records."""
    # Imported here: fedmatch is the shared library and must not depend on node at import.
    from node.records import NewRecord, RecordMeta
    from node.store import RecordStore

    if count < 0:
        raise InvalidInput("record count must not be negative")
    rng = np.random.default_rng(seed)
    templates = unit_vectors(rng, count, dimension)
    store = RecordStore(path, member_state, dimension, model_id)
    try:
        batch = []
        # Number after what is there, so seeding twice extends the register.
        metadata = synthetic_metadata(member_state, count, rng, today, first=store.count())
        for template, (ref, cat, event, place, captured, sex) in zip(
            templates, metadata, strict=True
        ):
            meta = RecordMeta(ref, cat, event, place, captured, sex, operator_id="seed")
            batch.append(NewRecord(meta=meta, template=template, model_id=model_id))
        store.add_many(batch)
    finally:
        store.close()
