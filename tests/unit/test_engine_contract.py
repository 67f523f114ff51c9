"""One contract, every engine: the in-process engine, the multi-process one and the Ray one
(1 and 2 actors) give the same answers, refuse the same input and stop the same way; so do
the kernel parameter set's engines (native products: in-process, 2 processes, 2 actors),
and an in-process one held to a split without giant steps, the split of large registers,
where the kernel rotates each block's sum and sums its conjugate (no key switch of the
scores): this module's registers are small enough for giant steps otherwise.

The Ray engines run on a real local Ray runtime (raylet, object store and one worker process
per actor), started once for this module and shut down after it: ~2-4 s of start-up, paid
once. Not Ray's deprecated ``local_mode``, which would run the actors serially inside this
process and so test neither the object store nor cancellation across processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.errors import DeadlineExceeded, HEError, ImplausibleResult, InvalidInput
from fedmatch.he.engine import PackedBase, SearchEngine, SearchOutput
from fedmatch.he.engines import create_engine
from fedmatch.he.kernel_engine import KernelEngine
from fedmatch.he.keypair import MAX_BLOCK_POSITIVES, RequesterKeys
from fedmatch.he.keys import EvaluationKeys, open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET, KERNEL_PARAM_SET, ParamSet
from tests.he_keys import keys_for

THRESHOLD = 0.45
SIZE = 20000  # three blocks: spread over both workers of the sharded engine


@pytest.fixture(scope="module")
def gallery() -> np.ndarray:
    return unit_vectors(np.random.default_rng(42), SIZE, 128)


# (backend, workers, parameter set) of every engine the contract runs against: SEAL's
# products with the default set, the native kernel's with the kernel set.
ENGINES = [
    ("local", 1, DEFAULT_PARAM_SET),
    ("local", 2, DEFAULT_PARAM_SET),
    ("ray", 1, DEFAULT_PARAM_SET),
    ("ray", 2, DEFAULT_PARAM_SET),
    ("local", 1, KERNEL_PARAM_SET),
    ("local", 2, KERNEL_PARAM_SET),
    ("ray", 2, KERNEL_PARAM_SET),
    ("no-giant-steps", 1, KERNEL_PARAM_SET),
]
ENGINE_IDS = [
    "local",
    "sharded-2",
    "ray-1",
    "ray-2",
    "kernel",
    "kernel-sharded-2",
    "kernel-ray-2",
    "kernel-no-giant-steps",
]


class _NoGiantSteps(KernelEngine):
    """The kernel engine with the split a large register gets (n1 = dp) at any size."""

    def choose_baby_steps(self, blocks: int) -> int:
        return self._dp


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    """A real local Ray runtime for this module's Ray engines (they join it, and leave it
    running when they close)."""
    import ray  # in the lock: a missing Ray fails the contract, it never skips it

    # As the engine does for a runtime it starts: no usage reports to Ray's vendor.
    before = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Four logical CPUs (scheduling tokens; Ray still starts workers for the 2 cores only):
    # each actor asks for one, and a 2-actor engine may start before the last one's actors
    # are gone.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        yield
    finally:
        ray.shutdown()
        if before is None:
            del os.environ["RAY_USAGE_STATS_ENABLED"]
        else:
            os.environ["RAY_USAGE_STATS_ENABLED"] = before


def _engine(request: pytest.FixtureRequest) -> SearchEngine:
    backend, workers, params = request.param
    if backend == "no-giant-steps":
        return _NoGiantSteps(params, 128)
    if backend == "ray":
        request.getfixturevalue("ray_runtime")
    return create_engine(params, 128, workers=workers, backend=backend)


class _Built:
    """One engine of ENGINES for the whole module, with the register it holds now: each
    engine is built once (a kernel set's compiles for ~10 s per process, twice for the
    2-actor Ray engine) and loaded with another register when a test needs that one. The
    exclusion tests come last in this file, so each engine is loaded twice: the gallery,
    then the exclusion rows."""

    def __init__(self, engine: SearchEngine) -> None:
        self.engine = engine
        self.holds = ""

    def holding(self, name: str, rows: np.ndarray) -> SearchEngine:
        if self.holds != name:
            self.engine.load(rows)
            self.holds = name
        return self.engine


@pytest.fixture(scope="module", params=ENGINES, ids=ENGINE_IDS)
def built(request: pytest.FixtureRequest) -> Iterator[_Built]:
    e = _engine(request)
    try:
        yield _Built(e)
    finally:
        e.close()


@pytest.fixture
def engine(built: _Built, gallery: np.ndarray) -> SearchEngine:
    """The engine with the gallery (and whatever earlier tests enrolled or erased)."""
    return built.holding("gallery", gallery)


_OPENED: dict[tuple[str, str], EvaluationKeys] = {}


def _opened(params: ParamSet, state: str = "DE") -> EvaluationKeys:
    """The node's view of a requester's keys for ``params`` (opened once per module)."""
    if (params.name, state) not in _OPENED:
        _OPENED[params.name, state] = open_key_bundle(keys_for(params, state).public_bundle())
    return _OPENED[params.name, state]


@pytest.fixture
def evaluation(engine: SearchEngine) -> EvaluationKeys:
    # What a node keeps of the keys for this engine (NodeService.register_keys).
    return engine.kept_keys(_opened(engine.params))


def test_the_keys_kept_hold_what_the_engine_uses_and_no_more(
    engine: SearchEngine, evaluation: EvaluationKeys
) -> None:
    opened = _opened(engine.params)
    assert opened.galois_keys.size() > 0 and opened.bundle is not None
    if isinstance(engine, PackedBase):
        # It searches here: the loaded keys, not the bundle's bytes a second time.
        assert evaluation.bundle is None
        assert evaluation.galois_keys is opened.galois_keys
        with pytest.raises(HEError, match="handed to worker processes"):
            evaluation.dispatching_copy()
    else:
        # Its workers search: the bundle to send them, the public key for decoy blocks,
        # no loaded rotation or relinearization keys in this process.
        assert evaluation.bundle is opened.bundle
        assert evaluation.public_key is opened.public_key
        assert evaluation.galois_keys.size() == 0 and evaluation.relin_keys.size() == 0
        assert not evaluation.galois_keys.has_key(engine.params.galois_elements()[0])


def _rows(keys: RequesterKeys, out: SearchOutput) -> set[int]:
    found = set()
    for b, ct in enumerate(out.blocks):
        for p in np.flatnonzero(keys.decrypt_matches(ct)):
            row = out.layout.row(b, int(p))
            assert row is not None
            found.add(row)
    return found


def test_matches_equal_numpy(
    engine: SearchEngine, gallery: np.ndarray, evaluation: EvaluationKeys
) -> None:
    keys = keys_for(engine.params)
    rng = np.random.default_rng(7)
    for row in (0, 8191, 8192, 16384, SIZE - 1):
        probe = capture(gallery[row], rng, 0.75)
        out = engine.search(evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False)
        assert len(out.blocks) == 3
        plain = set(np.flatnonzero(gallery.astype(np.float64) @ probe >= THRESHOLD).tolist())
        assert _rows(keys, out) == plain and row in plain
    impostor = unit_vectors(rng, 1, 128)[0]
    out = engine.search(evaluation, keys.encrypt_probe(impostor), THRESHOLD, lambda: False)
    assert _rows(keys, out) == set()


def test_cancellation_stops_and_the_engine_still_serves(
    engine: SearchEngine, gallery: np.ndarray, evaluation: EvaluationKeys
) -> None:
    keys = keys_for(engine.params)
    probe = keys.encrypt_probe(capture(gallery[5], np.random.default_rng(1), 0.8))
    calls = iter(range(10_000))
    with pytest.raises(DeadlineExceeded):
        engine.search(evaluation, probe, THRESHOLD, lambda: next(calls) >= 2)
    out = engine.search(evaluation, probe, THRESHOLD, lambda: False)
    assert _rows(keys, out) == {5}


def test_bad_probe_is_refused(engine: SearchEngine, evaluation: EvaluationKeys) -> None:
    with pytest.raises(HEError, match="not in seeded form"):
        engine.search(evaluation, b"\x00" * 1000, THRESHOLD, lambda: False)


def test_append_is_searchable(engine: SearchEngine, evaluation: EvaluationKeys) -> None:
    keys = keys_for(engine.params)
    rng = np.random.default_rng(3)
    newcomer = unit_vectors(rng, 1, 128)
    before = engine.size
    engine.append(newcomer)
    assert engine.size == before + 1
    out = engine.search(
        evaluation, keys.encrypt_probe(capture(newcomer[0], rng, 0.8)), THRESHOLD, lambda: False
    )
    assert _rows(keys, out) == {before}


def test_erase_reencodes_only_its_block_and_never_matches_again(
    engine: SearchEngine, gallery: np.ndarray, evaluation: EvaluationKeys
) -> None:
    keys = keys_for(engine.params)
    rng = np.random.default_rng(11)
    row = 9000  # in the second block
    probe = keys.encrypt_probe(capture(gallery[row], rng, 0.8))
    assert row in _rows(keys, engine.search(evaluation, probe, THRESHOLD, lambda: False))
    size = engine.size
    if hasattr(engine, "_blocks"):
        before = list(engine._blocks)
    engine.erase([row])
    assert engine.size == size  # positions of every other row are unchanged
    if hasattr(engine, "_blocks"):
        after = engine._blocks
        assert [a is b for a, b in zip(before, after, strict=True)] == [True, False, True]
    assert row not in _rows(keys, engine.search(evaluation, probe, THRESHOLD, lambda: False))
    with pytest.raises(InvalidInput, match="outside the register"):
        engine.erase([size + 5])


# The Ray engine's own promises, on the same engines.


def _ray_only(engine: SearchEngine) -> Any:
    from fedmatch.he.ray_engine import RayEngine

    if not isinstance(engine, RayEngine):
        pytest.skip("a property of the Ray engine")
    return engine


def test_ray_actor_errors_come_back_as_fedmatch_errors(
    engine: SearchEngine, evaluation: EvaluationKeys
) -> None:
    """A bad probe that reaches an actor (past the driver's own check) raises the same
    HEError as the local engine, not a Ray exception type."""
    from ray.exceptions import RayError

    ray_engine = _ray_only(engine)
    actor = ray_engine._actors[0]
    ref = actor.search.remote(
        evaluation.key_id, [ray_engine._key_ref(evaluation)], b"\x00" * 1000, THRESHOLD,
        [(0, 0, 0, None)],
    )  # fmt: skip
    with pytest.raises(HEError, match="not in seeded form") as caught:
        ray_engine._wait([ref])
    assert type(caught.value) is HEError and not isinstance(caught.value, RayError)


def test_ray_keys_cross_once_per_key_id(
    engine: SearchEngine, gallery: np.ndarray, evaluation: EvaluationKeys
) -> None:
    import ray

    ray_engine = _ray_only(engine)
    keys, other = keys_for(engine.params), keys_for(engine.params, "IT")
    other_evaluation = open_key_bundle(other.public_bundle())
    rng = np.random.default_rng(5)
    for requester, opened in ((keys, evaluation), (other, other_evaluation), (keys, evaluation)):
        probe = requester.encrypt_probe(capture(gallery[100], rng, 0.8))
        assert 100 in _rows(requester, engine.search(opened, probe, THRESHOLD, lambda: False))
    # The driver put each bundle in the object store once; every actor holds both keys,
    # the last used last.
    assert list(ray_engine._key_refs) == [other.key_id, keys.key_id]
    held = ray.get([actor.key_ids.remote() for actor in ray_engine._actors])
    assert held == [[other.key_id, keys.key_id]] * ray_engine.workers


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown search engine backend"):
        create_engine(DEFAULT_PARAM_SET, 128, backend="spark")


def test_the_local_path_never_imports_ray() -> None:
    """A node with the local engine (its service, CLI and bench modules) does not load ray."""
    code = (
        "import sys\n"
        "import fedmatch.cli.main, fedmatch.bench.search, node.service\n"
        "from fedmatch.he.engines import create_engine\n"
        "from fedmatch.he.params import DEFAULT_PARAM_SET\n"
        "create_engine(DEFAULT_PARAM_SET, 128, 1).close()\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


def _raw_positives(keys: RequesterKeys, out: SearchOutput) -> tuple[set[int], int]:
    """What a hostile requester reads from its own decryption: the rows at positive
    positions, and how many positions were positive (padding included)."""
    rows, count = set(), 0
    for b, ct in enumerate(out.blocks):
        values = keys.decrypt_values(ct)
        for p in np.flatnonzero(np.concatenate([values.real, values.imag]) > 0):
            count += 1
            row = out.layout.row(b, int(p))
            if row is not None:
                rows.add(row)
    return rows, count


@pytest.mark.parametrize("pattern", ["32-people", "two-halves", "imaginary"])
def test_a_packed_or_complex_probe_yields_no_valid_result(
    engine: SearchEngine, gallery: np.ndarray, evaluation: EvaluationKeys, pattern: str
) -> None:
    """Issue 15, attack 3: 32 templates of 128 packed into the 4,096 slots found all 32
    people in one query. Planted here: captures of 32 register rows, each in the period
    that meets its row's slot. The node's malformation term now moves every score by ~1 at
    random: thousands of positives, the planted rows no more likely than any other, and
    the library refuses the block. Variants: two people, each repeated over half the slots
    (a fixed one-period comparison would pass all but two periods), and a second person
    in the imaginary parts."""
    keys = keys_for(engine.params)
    rng = np.random.default_rng(77)
    slots, dp = keys.params.slots, 128
    planted = [p * dp for p in range(slots // dp)]  # row r sits in slot r of block 0
    if pattern == "32-people":
        values = np.concatenate([capture(gallery[r], rng, 0.9) for r in planted]).astype(complex)
    elif pattern == "two-halves":
        planted = [0, slots // 2]
        halves = [np.tile(capture(gallery[r], rng, 0.9), slots // dp // 2) for r in planted]
        values = np.concatenate(halves).astype(complex)
    else:
        planted = [0, slots]  # the real and the imaginary part of slot 0
        real, imag = (np.tile(capture(gallery[r], rng, 0.9), slots // dp) for r in planted)
        values = real + 1j * imag
    out = engine.search(evaluation, keys._encrypt_slots(values), THRESHOLD, lambda: False)
    rows, count = _raw_positives(keys, out)
    # At least two garbled periods (512 records) per block: far more positives than the
    # 32 people planted, or than any block of a register can hold (MAX_BLOCK_POSITIVES).
    assert count > 2 * MAX_BLOCK_POSITIVES * len(out.blocks)
    precision = len(rows & set(planted)) / max(len(rows), 1)
    assert precision < 0.01
    with pytest.raises(ImplausibleResult):
        _rows(keys, out)


def test_the_malformation_term_leaves_honest_scores_alone(
    engine: SearchEngine, gallery: np.ndarray, evaluation: EvaluationKeys
) -> None:
    """A well-formed probe's w is noise (~4e-7): the garbled scores keep every decision
    of numpy's plaintext scores at least 1e-4 from the threshold."""
    keys = keys_for(engine.params)
    rng = np.random.default_rng(78)
    for row in (17, 12000, 19990):  # rows no other test of the module erases
        probe = capture(gallery[row], rng, 0.8)
        scores = gallery @ probe
        clear = np.abs(scores - THRESHOLD) > 1e-4
        expected = set(np.flatnonzero((scores >= THRESHOLD) & clear).tolist())
        found = _rows(
            keys, engine.search(evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False)
        )
        assert found & set(np.flatnonzero(clear).tolist()) == expected


# Row exclusion and hostile probes, on the same engines with another register (last in
# the module, see _Built): a full block and a partial one, holding copies of one probe.

EXCL_SIZE = 9000  # blocks of 8,192 rows: one full block, then 808 rows
DUPLICATES = (0, 4095, 4096, 8191, 8192, 8600, EXCL_SIZE - 1)  # score 1.0 or 0.999
GENUINE = (17, 5000, 8300)  # score 0.8


@pytest.fixture(scope="module")
def excl_probe() -> np.ndarray:
    probe: np.ndarray = unit_vectors(np.random.default_rng(21), 1, 128)[0]
    return probe


@pytest.fixture(scope="module")
def excl_rows(excl_probe: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(22)
    rows = unit_vectors(rng, EXCL_SIZE, 128)
    for i, row in enumerate(DUPLICATES):  # exact copies and near-duplicates
        rows[row] = excl_probe if i % 2 == 0 else capture(excl_probe, rng, 0.999)
    for row in GENUINE:
        rows[row] = capture(excl_probe, rng, 0.8)
    return rows


@pytest.fixture
def excl_engine(built: _Built, excl_rows: np.ndarray) -> SearchEngine:
    """The same engine with the exclusion tests' register."""
    return built.holding("exclusions", excl_rows)


def _search(
    engine: SearchEngine, probe: np.ndarray, exclude: np.ndarray | None = None
) -> SearchOutput:
    keys, evaluation = keys_for(engine.params), _opened(engine.params)
    return engine.search(
        evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False, exclude=exclude
    )


def test_excluded_rows_never_match_and_nothing_else_changes(
    excl_engine: SearchEngine, excl_probe: np.ndarray
) -> None:
    keys = keys_for(excl_engine.params)
    everyone = set(DUPLICATES) | set(GENUINE)
    baseline = _search(excl_engine, excl_probe)
    assert _rows(keys, baseline) == everyone
    assert _rows(keys, _search(excl_engine, excl_probe, np.zeros(EXCL_SIZE, bool))) == everyone
    rng = np.random.default_rng(23)
    for hidden in (
        {0, 8191, 8192, EXCL_SIZE - 1},  # block edges, the real / imaginary edge, the last row
        {4095, 4096, 8600, 17},  # the other half of each edge
        set(range(8000, 8700)),  # a run across the block boundary
        set(range(8192, EXCL_SIZE)),  # the whole partial block
    ):
        exclude = rng.random(EXCL_SIZE) < 0.3  # and many rows that would not match anyway
        exclude[sorted(hidden)] = True
        out = _search(excl_engine, excl_probe, exclude)
        assert len(out.blocks) == len(baseline.blocks)
        assert _rows(keys, out) == everyone - set(np.flatnonzero(exclude).tolist())
        for ct in out.blocks:  # same result shape, decrypts like any block
            assert keys.decrypt_matches(ct).shape == (excl_engine.params.block_records,)


def test_excluding_every_row_matches_nothing(
    excl_engine: SearchEngine, excl_probe: np.ndarray
) -> None:
    out = _search(excl_engine, excl_probe, np.ones(EXCL_SIZE, bool))
    assert len(out.blocks) == 2
    assert _rows(keys_for(excl_engine.params), out) == set()


def test_exclusion_of_the_wrong_length_is_refused(
    excl_engine: SearchEngine, excl_probe: np.ndarray
) -> None:
    for bad in (
        np.zeros(EXCL_SIZE - 1, bool),
        np.zeros(EXCL_SIZE + 1, bool),
        np.zeros((1, EXCL_SIZE), bool),
        np.zeros(EXCL_SIZE, np.int64),
    ):
        with pytest.raises(InvalidInput, match="one per register row"):
            _search(excl_engine, excl_probe, bad)


def _hostile_probe(keys: RequesterKeys, template: np.ndarray) -> bytes:
    """What a hostile requester sends: its own encoding of any vector (the library's
    encrypt_probe takes unit-norm templates only), encrypted under its own key."""
    from fedmatch.he.layout import replicate_probe

    return keys._encrypt_slots(replicate_probe(np.asarray(template, np.float64), keys.params.slots))


def _auc(a: np.ndarray, b: np.ndarray) -> float:
    """P(a value of ``a`` > one of ``b``) (Mann-Whitney, ties counted half)."""
    ranks = np.empty(a.size + b.size)
    order = np.argsort(np.concatenate([a, b]), kind="stable")
    ranks[order] = np.arange(1, a.size + b.size + 1)
    values = np.concatenate([a, b])[order]
    # Average ranks over ties.
    _, start, counts = np.unique(values, return_index=True, return_counts=True)
    for s, c in zip(start, counts, strict=True):
        if c > 1:
            ranks[order[s : s + c]] = ranks[order[s : s + c]].mean()
    return float((ranks[: a.size].sum() - a.size * (a.size + 1) / 2) / (a.size * b.size))


def test_excluded_rows_are_indistinguishable_from_non_matches(
    excl_engine: SearchEngine, excl_probe: np.ndarray
) -> None:
    """Issue 15: an excluded row gets a zero mask and a fresh negative decoy, so that the
    decrypted values of the excluded rows of a full block (4,096 of its 8,192) and of the
    ordinary non-matches cannot be told apart: AUC within five standard deviations of 0.5
    of two samples of one distribution (0.032 at these sizes), in value and in magnitude.
    Measured over 40 searches: mean 0.001, sd 0.0060 (the null's 0.0064); a fixed bound of
    0.02 was 3.1 of them, and with 16 such checks per run it failed a clean-clone run."""
    keys = keys_for(excl_engine.params)
    exclude = np.zeros(EXCL_SIZE, bool)
    exclude[0:8192:2] = True
    out = _search(excl_engine, excl_probe, exclude)
    block = out.layout.order.index(0)
    values = keys.decrypt_values(out.blocks[block])
    flat = np.concatenate([values.real, values.imag])
    rows = np.array([out.layout.row(block, p) for p in range(flat.shape[0])])
    hidden = exclude[rows]
    other = ~hidden & ~np.isin(rows, DUPLICATES + GENUINE)
    assert np.all(flat[hidden] < 0)
    n, m = int(hidden.sum()), int(other.sum())
    bound = 5 * np.sqrt((n + m + 1) / (12 * n * m))  # Mann-Whitney's sd under the null
    assert abs(_auc(flat[hidden], flat[other]) - 0.5) <= bound
    magnitudes = np.log2(np.abs(flat))
    assert abs(_auc(magnitudes[hidden], magnitudes[other]) - 0.5) <= bound


def _noise_signs(keys: RequesterKeys, out: SearchOutput, rows: int) -> np.ndarray:
    """Per register row, whether a hostile requester's own decryption shows it positive,
    once the library refused every block of the answer as implausible (noise)."""
    positive = np.zeros(rows, bool)
    for b, ct in enumerate(out.blocks):
        with pytest.raises(ImplausibleResult):
            keys.decrypt_matches(ct)
        values = keys.decrypt_values(ct)
        for p in np.flatnonzero(np.concatenate([values.real, values.imag]) > 0):
            row = out.layout.row(b, int(p))
            if row is not None:
                positive[row] = True
    return positive


@pytest.mark.parametrize("factor", [3.0, 10.0])
def test_a_scaled_probe_never_matches_an_excluded_row(
    excl_engine: SearchEngine, excl_rows: np.ndarray, excl_probe: np.ndarray, factor: float
) -> None:
    """Issue 15: a probe of norm 3 or 10 chose its own threshold: s - 1.5 > 0 for a row
    scoring 0.5 or more at norm 3 (0.15 at norm 10), so excluded rows matched. Now the
    zero mask takes an excluded row's score away whatever the probe, and the node's norm
    check turns the whole answer to a long probe into noise: the library refuses every
    block, and the signs a hostile requester reads say nothing of any score (excluded
    rows' included: |correlation| < 0.1 over the ~2,700 excluded rows)."""
    keys = keys_for(excl_engine.params)
    evaluation = _opened(excl_engine.params)
    exclude = np.zeros(EXCL_SIZE, bool)
    exclude[[*DUPLICATES, *GENUINE]] = True
    exclude[np.random.default_rng(24).random(EXCL_SIZE) < 0.3] = True
    probe = _hostile_probe(keys, factor * excl_probe)
    out = excl_engine.search(evaluation, probe, THRESHOLD, lambda: False, exclude=exclude)
    positive = _noise_signs(keys, out, EXCL_SIZE)
    scores = excl_rows @ excl_probe
    for rows in (np.flatnonzero(exclude), np.flatnonzero(~exclude)):
        signs = positive[rows]
        # Constant signs (no row positive, or all) say nothing either.
        assert signs.all() or not signs.any() or abs(np.corrcoef(scores[rows], signs)[0, 1]) < 0.1


# How much likelier a row scoring between t/3 and t comes out positive than one below 0,
# for a probe of norm 3 with an honest unit-norm copy (measured, see the test below).
LONG_PROBE_EXCESS = 0.067


def test_a_long_probe_with_a_unit_norm_copy_gets_noise(
    excl_engine: SearchEngine, excl_rows: np.ndarray, excl_probe: np.ndarray
) -> None:
    """The norm check reads the probe's copy: a requester sending a probe of norm 3 with an
    honest unit-norm copy is caught by the consistency term (probe minus copy, ~0.2 per
    slot): noise again, signs that say nothing of the scores, refused by the library."""
    from fedmatch.he.layout import replicate_probe

    keys = keys_for(excl_engine.params)
    evaluation = _opened(excl_engine.params)
    slots = keys.params.slots
    probe = keys._encrypt_slots(
        replicate_probe(3.0 * excl_probe, slots), norm_copy=replicate_probe(excl_probe, slots)
    )
    out = excl_engine.search(evaluation, probe, THRESHOLD, lambda: False)
    positive = _noise_signs(keys, out, EXCL_SIZE)
    scores = excl_rows @ excl_probe
    assert abs(np.corrcoef(scores, positive)[0, 1]) < 0.1
    # What a long probe is for, rows between t/3 and t (no match for an honest probe), are
    # hardly likelier positive than rows scoring below 0 (bounded, not nil: the threat
    # model gives the bound). Measured over 1,000 queries (default set; 300 on the kernel
    # set alike): 0.067 more on average, sd 0.025, at most 0.144, the sd being the band's
    # own binomial spread (395 rows). A fixed 0.15 failed a clean-clone run at 0.158:
    # bounded at that mean plus five of the band's largest binomial sd (~0.19 here).
    in_band = (scores >= THRESHOLD / 3) & (scores < THRESHOLD)
    band = positive[in_band].mean()
    below = positive[scores < 0].mean()
    assert band - below < LONG_PROBE_EXCESS + 5 * np.sqrt(0.25 / in_band.sum())
