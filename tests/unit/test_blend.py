"""The kernel engine's native garbling and masks (fedmatch.he.blend) against PackedBase's SEAL
steps: the same draws give the same result block word for word, with and without the norm
excess and excluded rows; a search takes the native path; anything SEAL would refuse still
goes to SEAL."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
import tenseal.sealapi as seal

import fedmatch.he.engine as engine_module
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.he.engine import PackedBase
from fedmatch.he.kernel_engine import KernelEngine
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.keys import EvaluationKeys, open_key_bundle
from fedmatch.he.params import KERNEL_PARAM_SET
from tests.he_keys import keys_for

PS = KERNEL_PARAM_SET
N = PS.poly_modulus_degree
THRESHOLD = 0.45


@pytest.fixture(scope="module")
def keys() -> RequesterKeys:
    return keys_for(PS)


@pytest.fixture(scope="module")
def evaluation(keys: RequesterKeys) -> EvaluationKeys:
    return open_key_bundle(keys.public_bundle()).searching_copy()


@pytest.fixture(scope="module")
def engine() -> KernelEngine:
    """Two blocks (the second partial) without giant steps: the split the engine takes for
    more blocks (a block with giant steps has no conjugate sum and keeps SEAL's steps)."""
    rng = np.random.default_rng(3)
    eng = KernelEngine(PS, 128)
    eng.choose_baby_steps = lambda blocks: 128  # type: ignore[method-assign]
    eng.load(unit_vectors(rng, PS.block_records + 900, 128))
    return eng


def _copy(ct: seal.Ciphertext) -> seal.Ciphertext:
    out = seal.Ciphertext()
    ev = seal.Evaluator(PS.context())
    ev.negate(ct, out)
    ev.negate_inplace(out)
    return out


def _words(ct: seal.Ciphertext) -> npt.NDArray[np.uint64]:
    from fedmatch.he import sealmem

    out = np.empty((ct.size(), ct.coeff_modulus_size(), N), dtype=np.uint64)
    sealmem.read_ciphertext(ct, out)
    return out


class Seeded:
    """The engine's uniform draws from a seeded generator; :meth:`reset` starts the same
    stream again."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._gen = np.random.default_rng(20261206)

    def __call__(self, n: int) -> npt.NDArray[np.float64]:
        return self._gen.random(n)


@pytest.fixture
def seeded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Seeded]:
    stream = Seeded()
    monkeypatch.setattr(engine_module, "_uniform", stream)
    yield stream


@pytest.mark.parametrize("case", ["excess", "no-excess", "flags"])
def test_the_native_blend_is_seals_word_for_word(
    engine: KernelEngine,
    keys: RequesterKeys,
    evaluation: EvaluationKeys,
    seeded: Seeded,
    case: str,
) -> None:
    rng = np.random.default_rng(9)
    probe = capture(unit_vectors(rng, 1, 128)[0], rng, 0.8)
    opened = engine.open_probe(keys.encrypt_probe(probe))
    stop = lambda: False  # noqa: E731
    rotations = engine._rotations(opened.query, evaluation, stop)
    terms = engine._malformation(opened, evaluation)
    excess = None if case == "no-excess" else engine._norm_excess(opened, evaluation)
    assert case == "no-excess" or excess is not None
    block = engine._blocks[1]  # the partial block
    sums = engine._rotated_products(rotations, [(block, 37)], evaluation, stop)
    acc, conj = sums.sums[0], sums.conjugates[0]
    assert conj is not None
    conjugated = engine._conjugated_terms(terms, evaluation)
    thresholds = engine._threshold(acc, THRESHOLD)
    conj_thresholds = engine._conjugate_plain(thresholds)
    flags = None
    if case == "flags":
        flags = np.zeros(PS.block_records, dtype=np.bool_)
        flags[[3, 77, PS.slots + 5]] = True
    results = []
    for path in (PackedBase._blend, KernelEngine._blend):
        seeded.reset()  # both paths draw the same stream
        out = path(
            engine, _copy(acc), terms, evaluation, THRESHOLD, thresholds, flags, excess,
            _copy(conj), conjugated, conj_thresholds,
        )  # fmt: skip
        results.append(out)
    seal_result, native_result = results
    assert list(seal_result.parms_id()) == list(native_result.parms_id())
    assert seal_result.scale == native_result.scale
    assert np.array_equal(_words(seal_result), _words(native_result))


def test_a_search_takes_the_native_path_and_keeps_the_plain_decisions(
    engine: KernelEngine, keys: RequesterKeys, evaluation: EvaluationKeys
) -> None:
    rng = np.random.default_rng(4)
    gallery = engine._rows.read(0, engine.size)
    probe = capture(gallery[11], rng, 0.8)
    engine._blend_words = None
    output = engine.search(evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False)
    assert engine._blend_words is not None
    found = set()
    for k, block in enumerate(output.blocks):
        for position in np.flatnonzero(keys.decrypt_matches(block)):
            row = output.layout.row(k, int(position))
            if row is not None:
                found.add(row)
    expected = set(np.flatnonzero(gallery @ probe >= THRESHOLD).tolist())
    assert found == expected and 11 in found


def test_operands_seal_would_refuse_go_to_seal(
    engine: KernelEngine, keys: RequesterKeys, evaluation: EvaluationKeys
) -> None:
    """A term at another scale: the native pass declines, SEAL raises as before."""
    rng = np.random.default_rng(5)
    opened = engine.open_probe(keys.encrypt_probe(capture(unit_vectors(rng, 1, 128)[0], rng, 0.8)))
    stop = lambda: False  # noqa: E731
    rotations = engine._rotations(opened.query, evaluation, stop)
    terms = engine._malformation(opened, evaluation)
    sums = engine._rotated_products(rotations, [(engine._blocks[0], 0)], evaluation, stop)
    acc, conj = sums.sums[0], sums.conjugates[0]
    assert conj is not None
    conjugated = engine._conjugated_terms(terms, evaluation)
    thresholds = engine._threshold(acc, THRESHOLD)
    assert engine._blendable(acc, conj, terms, conjugated, None, thresholds)
    odd = _copy(terms[0][0])
    odd.scale = odd.scale * 2
    wrong = [(odd, terms[0][1]), *terms[1:]]
    assert not engine._blendable(acc, conj, wrong, conjugated, None, thresholds)
    with pytest.raises(ValueError):
        engine._blend(
            acc, wrong, evaluation, THRESHOLD, thresholds, None, None, conj, conjugated,
            engine._conjugate_plain(thresholds),
        )  # fmt: skip
