"""A second writer of a register file: what reconciliation must find (node/reconcile.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def insert_behind_the_back(
    database: Path, reference: str, operator: str = "intruder", row_id: int | None = None
) -> int:
    """A plain sqlite3 INSERT into ``database``, not through the node: row 1's columns under
    another reference and operator (at ``row_id`` if given, else the next free row id)."""
    db = sqlite3.connect(database)
    try:
        columns = [r[1] for r in db.execute("PRAGMA table_info(records)") if r[1] != "id"]
        values = ", ".join("?" if c in ("reference", "operator_id") else c for c in columns)
        cur = db.execute(
            f"INSERT INTO records (id, {', '.join(columns)}) SELECT ?, {values} FROM records"
            " ORDER BY id LIMIT 1",
            [row_id, *(reference if c == "reference" else operator for c in columns
                       if c in ("reference", "operator_id"))],
        )  # fmt: skip
        db.commit()
        assert cur.lastrowid is not None
        return cur.lastrowid
    finally:
        db.close()
