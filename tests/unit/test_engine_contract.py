"""One contract, every engine: the in-process engine and the multi-process one give the same
answers, refuse the same input and stop the same way."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from fedmatch.errors import DeadlineExceeded, HEError, InvalidInput
from fedmatch.he.engine import SearchEngine, SearchOutput, create_engine
from fedmatch.he.keys import EvaluationKeys, RequesterKeys, open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET
from fedmatch.synthetic import capture, unit_vectors
from tests.federation import shared_keys

THRESHOLD = 0.45
SIZE = 20000  # three blocks: spread over both workers of the sharded engine


@pytest.fixture(scope="module")
def gallery() -> np.ndarray:
    return unit_vectors(np.random.default_rng(42), SIZE, 128)


@pytest.fixture(scope="module", params=[1, 2], ids=["local", "sharded-2"])
def engine(request: pytest.FixtureRequest, gallery: np.ndarray) -> Iterator[SearchEngine]:
    e = create_engine(DEFAULT_PARAM_SET, 128, workers=request.param)
    try:
        e.load(gallery)
        yield e
    finally:
        e.close()


@pytest.fixture(scope="module")
def evaluation() -> EvaluationKeys:
    return open_key_bundle(shared_keys().public_bundle())


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
    keys = shared_keys()
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
    keys = shared_keys()
    probe = keys.encrypt_probe(capture(gallery[5], np.random.default_rng(1), 0.8))
    calls = iter(range(10_000))
    with pytest.raises(DeadlineExceeded):
        engine.search(evaluation, probe, THRESHOLD, lambda: next(calls) >= 2)
    out = engine.search(evaluation, probe, THRESHOLD, lambda: False)
    assert _rows(keys, out) == {5}


def test_bad_probe_is_refused(engine: SearchEngine, evaluation: EvaluationKeys) -> None:
    with pytest.raises(HEError, match="could not be decoded"):
        engine.search(evaluation, b"\x00" * 1000, THRESHOLD, lambda: False)


def test_append_is_searchable(engine: SearchEngine, evaluation: EvaluationKeys) -> None:
    keys = shared_keys()
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
    keys = shared_keys()
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
