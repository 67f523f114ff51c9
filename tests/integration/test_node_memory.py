"""A node's memory per record (issue 20: at most 2 KB of node RAM per record at d = 128).

A real NodeService (one search process, each parameter set) loads a register of 98,304
synthetic records (twelve full blocks: no padding in the per-record figures) from its SQLite
store. What it holds per record:

- the encoded register, exactly its derived size: ``dp`` diagonals of N coefficients per
  block of ``block_records`` rows, each coefficient one word per data modulus in the
  default set (SEAL plaintexts: 2 moduli x 8 bytes, 2,048 bytes per record at d = 128),
  14 bytes in the kernel set (29, 29, 29 and 25-bit residues packed, see
  fedmatch.he.kernel.PackedBlock: 1,792 bytes per record);
- no float32 rows: the engine re-reads the rows of a block it re-encodes from the store
  (they were a second copy of the templates, 512 bytes per record at d = 128);
- the process's RSS growth while the register loads: with the kernel set, at most issue
  20's 2 KB per record (measured here: ~1,940 bytes, the register's 1,793 and ~145 beside
  it); with the default set, whose register alone takes the 2 KB (SEAL's uint64 words),
  within the register plus a stated margin (see ``_RSS_MARGIN_PER_RECORD``). Either way
  the load's freed temporaries are given back. This is what each record adds; the fixed
  part of a node (interpreters, libraries, compiled kernels, search workers, keys) is not
  per record: ``fedmatch bench search`` reports both.

Enrolment and erasure still re-encode their blocks correctly through the store: the
engine's blocks after an append and an erasure equal a fresh load of the same rows.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from fedmatch.demo.seed import seed_register
from fedmatch.demo.synthetic import unit_vectors
from fedmatch.domain import Category, Sex
from fedmatch.he import sealio
from fedmatch.he.engine import PackedBase, PackedEngine
from fedmatch.he.kernel_engine import KernelBlock, KernelEngine
from fedmatch.he.layout import padded_dimension
from fedmatch.he.params import DEFAULT_PARAM_SET, KERNEL_PARAM_SET, ParamSet
from fedmatch.heap import release_free_heap
from node.config import NodeConfig
from node.records import NewRecord, RecordMeta
from node.service import NodeService
from node.store import RecordStore
from tests.federation import MODEL, gate, header, node_audit

STATE = "IT"
DIM = 128
BLOCKS = 12
RECORDS = BLOCKS * DEFAULT_PARAM_SET.block_records
# RSS holds more than the register: the row ids, categories and marks (10 bytes per
# record), the reference digests the reconciliation keeps (32 and the array's room to
# grow), SQLite's page cache, what SEAL's memory pool and the allocators keep of the load's
# temporaries after the node returns its free heap (fedmatch.heap). Measured here: ~145
# bytes per record above the register with the kernel set, ~205 with the default set.
# For the default set, 768 leaves room for noise and still fails a node that keeps its
# float32 rows (512 more) or a second register; the kernel set has issue 20's bound.
_RSS_MARGIN_PER_RECORD = 768
_TARGET_PER_RECORD = 2048


def _seed(db: Path) -> None:
    seed_register(db, STATE, RECORDS, seed=3, dimension=DIM, model_id=MODEL,
                  today=dt.date(2026, 1, 1))  # fmt: skip


def _record(template: npt.NDArray[np.float32]) -> NewRecord:
    day = dt.date(2026, 1, 2)
    meta = RecordMeta("IT-MEM-1", Category.APPLICANT, day, "X", day, Sex.MALE, "officer",
                      dt.date(1990, 1, 1))  # fmt: skip
    return NewRecord(meta, template, MODEL)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _register_bytes_per_record(ps: ParamSet, dimension: int) -> float:
    """The encoded register's size per record, derived from the parameter set."""
    dp = padded_dimension(dimension, ps.slots)
    data = ps.coeff_bits[:-1]  # every prime but the special one
    if ps.kernel:
        # uint32 words, whose spare top bits hold the last (smallest) prime's residue above
        # its low 16 bits, which take a uint16.
        spare = min(32 - bits for bits in data[:-1])
        assert data[-1] - 16 <= spare * (len(data) - 1)
        coefficient = 4 * (len(data) - 1) + 2
    else:
        coefficient = 8 * len(data)  # SEAL's uint64 words
    return dp * ps.poly_modulus_degree * coefficient / ps.block_records


def _engine(ps: ParamSet) -> PackedBase[Any]:
    return KernelEngine(ps, DIM) if ps.kernel else PackedEngine(ps, DIM)


def _same_block(got: Any, want: Any) -> bool:
    if isinstance(got, KernelBlock):
        return bool(
            np.array_equal(got.residues.words, want.residues.words)
            and np.array_equal(got.residues.low, want.residues.low)
        )
    return [sealio.to_bytes(p) for p in got] == [sealio.to_bytes(p) for p in want]


@pytest.mark.parametrize(
    ("ps", "derived"), [(DEFAULT_PARAM_SET, 2048.0), (KERNEL_PARAM_SET, 1792.0)],
    ids=["default", "kernel"],
)  # fmt: skip
def test_node_holds_the_register_and_no_rows(tmp_path: Path, ps: ParamSet, derived: float) -> None:
    db = tmp_path / f"{STATE}.sqlite"
    # Seeded in another process: seeding here would leave freed heap that the load then
    # reuses, and the growth would miss part of what the node holds.
    seeder = mp.get_context("spawn").Process(target=_seed, args=(db,))
    seeder.start()
    seeder.join()
    assert seeder.exitcode == 0
    store = RecordStore(db, STATE, DIM, MODEL)
    cfg = NodeConfig(member_state=STATE, database=db, dimension=DIM, model_id=MODEL,
                     search_workers=1, he_param_set=ps.name)  # fmt: skip
    audit = node_audit(tmp_path, STATE)
    node_gate = gate(tmp_path, f"node-{STATE}")
    # The engine (a SEAL context, no register yet) is made before the baseline: its fixed
    # cost is not per record.
    engine = _engine(ps)
    # The baseline without free heap (earlier tests in this process leave some): the node
    # gives it back at load, which would hide part of its own growth.
    release_free_heap()
    rss0 = _rss_bytes()
    service = NodeService(cfg, store, audit, node_gate, engine=engine)
    try:
        growth = _rss_bytes() - rss0
        held = engine.held_bytes()
        register = _register_bytes_per_record(ps, DIM)
        assert register == derived
        # The kernel set also keeps a flag per diagonal and block (whether it is all zero).
        flags = BLOCKS * padded_dimension(DIM, ps.slots) if ps.kernel else 0
        assert held["register"] == RECORDS * register + flags
        assert held["rows"] == 0
        bound = _TARGET_PER_RECORD if ps.kernel else register + _RSS_MARGIN_PER_RECORD
        assert growth / RECORDS <= bound, f"node RSS grew {growth / RECORDS:.0f} bytes per record"

        # Enrolment and erasure, as the node runs them, re-encode their blocks from rows
        # read back from the store: the same blocks as a fresh load of the same rows.
        ids, templates = store.templates()
        erased = [5, RECORDS - 3]
        store.erase([int(ids[r]) for r in erased])
        service.forget_records([int(ids[r]) for r in erased])
        new = unit_vectors(np.random.default_rng(1), 1, DIM)
        service.enroll(header(STATE), _record(new[0]))
        expected = np.concatenate([templates, new])
        expected[erased] = 0.0
        fresh = _engine(ps)
        fresh.load(expected)
        assert engine.size == fresh.size == RECORDS + 1
        for b in (0, BLOCKS - 1):
            assert _same_block(engine._blocks[b], fresh._blocks[b])
    finally:
        service.close()
        node_gate.close()
        audit.close()
        store.close()
