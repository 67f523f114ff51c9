"""Seeded registers stay whole for days: the erasure job of a node started after the seeding
day (a test suite across midnight, a demo kept for a week) finds nothing due."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from fedmatch.demo.seed import SEED_RETENTION_MARGIN, seed_register
from node.retention import RetentionPolicy, early_erasure_reason
from node.store import RecordStore

STATE, DIM, MODEL = "IT", 8, "test-model"


# The register's rows are enrolled (transmitted) on the real day; the seed's ``today`` is that
# day, or the one before when a suite computes it before midnight and seeds after.
@pytest.mark.parametrize("days_before", [0, 1])
def test_no_seeded_record_is_due_within_the_margin(tmp_path: Path, days_before: int) -> None:
    today = dt.date.today() - dt.timedelta(days=days_before)
    path = tmp_path / "reg.sqlite"
    # Enough records that every category and both regimes occur, as in the federations
    # of the integration tests (a fault test saw 4 of 20,000 erased one day later).
    seed_register(path, STATE, 20_000, 501, DIM, MODEL, today)
    policy = RetentionPolicy()
    store = RecordStore(path, STATE, DIM, MODEL)
    try:
        rows = store.retention_rows()
    finally:
        store.close()
    assert len(rows) == 20_000
    last = today + SEED_RETENTION_MARGIN - dt.timedelta(days=1)
    for _, facts, residence_on, left_on in rows:
        # The job's own test (node/lifecycle.py, erase_expired), on the margin's last day.
        assert last < policy.rule(facts).expires
        assert early_erasure_reason(
            policy.rule(facts).regime, facts.category, residence_document_on=residence_on,
            left_territory_on=left_on, today=last,
        ) is None  # fmt: skip
    # Not vacuous: some records end inside the window that follows the margin (the seed
    # spreads them across their whole period, up to its edge).
    soon = [f for _, f, _, _ in rows if policy.rule(f).expires <= last + dt.timedelta(days=60)]
    assert soon
