"""Native key switching (fedmatch.he.keyswitch) against SEAL: without hoisting bit for bit
(several steps, fresh encryptions and uniformly random words), hoisted within the mod-down's
rounding of SEAL's result, the hoisting tree, the key cache and refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tenseal.sealapi as seal

from fedmatch.errors import DeadlineExceeded, HEError
from fedmatch.he import ckks_encode, keyswitch, sealmem
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.keys import EvaluationKeys, open_key_bundle
from fedmatch.he.params import KERNEL_PARAM_SET
from tests.he_keys import keys_for

PS = KERNEL_PARAM_SET
N = PS.poly_modulus_degree
BASE = PS.rotation_base
STEPS = keyswitch.key_steps(128, BASE)


@pytest.fixture(scope="module")
def keys() -> RequesterKeys:
    return keys_for(PS)


@pytest.fixture(scope="module")
def evaluation(keys: RequesterKeys) -> EvaluationKeys:
    return open_key_bundle(keys.public_bundle()).searching_copy()


@pytest.fixture(scope="module")
def rotation_keys(evaluation: EvaluationKeys) -> keyswitch.RotationKeys:
    return keyswitch.RotationKeys(PS, evaluation.galois_keys, STEPS)


def _encrypted(evaluation: EvaluationKeys, seed: int) -> seal.Ciphertext:
    ctx = PS.context()
    values = np.random.default_rng(seed).uniform(-1, 1, N // 2)
    plain = seal.Plaintext()
    seal.CKKSEncoder(ctx).encode(values.tolist(), 2.0**25, plain)
    ct = seal.Ciphertext()
    seal.Encryptor(ctx, evaluation.public_key).encrypt(plain, ct)
    return ct


def _words(ct: seal.Ciphertext) -> npt.NDArray[np.uint32]:
    out = np.empty((ct.size(), ct.coeff_modulus_size(), N), dtype=np.uint32)
    sealmem.read_ciphertext(ct, out)
    return out


def _as_ciphertext(like: seal.Ciphertext, words: npt.NDArray[np.uint32]) -> seal.Ciphertext:
    ct = seal.Ciphertext()
    seal.Evaluator(PS.context()).negate(like, ct)
    sealmem.write_ciphertext(ct, PS.context(), words.astype(np.uint64))
    ct.scale = like.scale
    return ct


def _seal_rotated(ct: seal.Ciphertext, step: int, evaluation: EvaluationKeys) -> seal.Ciphertext:
    out = seal.Ciphertext()
    seal.Evaluator(PS.context()).rotate_vector(ct, step, evaluation.galois_keys, out)
    return out


def _count_native_steps(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The steps ``engine`` (a KernelEngine) rotates by natively without hoisting, as they
    are taken (the list fills as the engine runs)."""
    native_steps: list[int] = []
    exact = engine._hoister.exact

    def counted(words: npt.NDArray[np.uint32], step: int, keys: keyswitch.RotationKeys) -> Any:
        native_steps.append(step)
        return exact(words, step, keys)

    monkeypatch.setattr(engine._hoister, "exact", counted)
    return native_steps


def _random_words(seed: int) -> npt.NDArray[np.uint32]:
    moduli = [m.value() for m in PS.context().first_context_data().parms().coeff_modulus()]
    rng = np.random.default_rng(seed)
    rows = [rng.integers(0, q, size=(2, N), dtype=np.uint64) for q in moduli]
    return np.stack(rows, axis=1).astype(np.uint32)


@pytest.mark.parametrize("step", [1, 3, 7, 8, 40, 64])
def test_a_rotation_without_hoisting_is_seals_bit_for_bit(
    evaluation: EvaluationKeys, rotation_keys: keyswitch.RotationKeys, step: int
) -> None:
    hoister = keyswitch.Hoister(PS)
    for seed in range(2):
        ct = _encrypted(evaluation, seed)
        expected = _words(_seal_rotated(ct, step, evaluation))
        assert np.array_equal(hoister.exact(_words(ct), step, rotation_keys), expected)
    # Uniformly random words (every residue in range, any value the requester could send).
    ct = _encrypted(evaluation, 9)
    random = _as_ciphertext(ct, _random_words(step))
    expected = _words(_seal_rotated(random, step, evaluation))
    assert np.array_equal(hoister.exact(_words(random), step, rotation_keys), expected)


def _plain_coefficients(
    keys: RequesterKeys, words: npt.NDArray[np.uint32]
) -> npt.NDArray[np.int64]:
    """``c0 + c1 s`` modulo the first prime, out of NTT form, centred."""
    q = int(PS.context().first_context_data().parms().coeff_modulus()[0].value())
    s = keys._secret_words[0]
    c0, c1 = words[0, 0].astype(np.uint64), words[1, 0].astype(np.uint64)
    m = (c0 + (c1 * s) % q) % q
    encoder = ckks_encode.native_encoder(PS)
    coeffs = ckks_encode.ntt_inverse(encoder, m[None, :], list(PS.context().first_parms_id()), [0])
    centred: npt.NDArray[np.int64] = coeffs[0].astype(np.int64)
    centred[centred > q // 2] -= q
    return centred


def test_a_hoisted_rotation_decrypts_to_seals_within_the_mod_downs_rounding(
    keys: RequesterKeys, evaluation: EvaluationKeys, rotation_keys: keyswitch.RotationKeys
) -> None:
    """Hoisted, digit J is lifted from (-q_J, q_J) instead of [0, q_J): the key switch of
    the difference (q_J times a 0/1 polynomial per digit) is zero modulo Q up to the key
    error over P (below 2^-20 here) and each result's mod-down rounds differently: within
    (1 + N ||s||_inf) / 2 per coefficient and result, so the two decryptions differ by at
    most N + 1 (|s| <= 1, ternary)."""
    hoister = keyswitch.Hoister(PS)
    ct = _encrypted(evaluation, 3)
    source = hoister.decompose(_words(ct))
    worst = 0
    for step in STEPS:
        hoisted = hoister.rotate(source, step, rotation_keys)
        assert not np.array_equal(hoisted, _words(_seal_rotated(ct, step, evaluation)))
        diff = _plain_coefficients(keys, hoisted) - _plain_coefficients(
            keys, _words(_seal_rotated(ct, step, evaluation))
        )
        worst = max(worst, int(np.abs(diff).max()))
    assert worst <= N + 1
    # Far below a slot unit at the query's scale: the same decrypted values.
    assert worst < 2.0**25 / 2**8


def test_the_tree_gives_every_rotation_and_decrypts_to_the_rotated_values(
    keys: RequesterKeys, evaluation: EvaluationKeys, rotation_keys: keyswitch.RotationKeys
) -> None:
    ctx = PS.context()
    values = np.random.default_rng(5).uniform(-1, 1, N // 2)
    plain = seal.Plaintext()
    encoder = seal.CKKSEncoder(ctx)
    encoder.encode(values.tolist(), 2.0**25, plain)
    ct = seal.Ciphertext()
    seal.Encryptor(ctx, evaluation.public_key).encrypt(plain, ct)
    got = dict(keyswitch.Hoister(PS).rotations(_words(ct), range(128), rotation_keys))
    assert sorted(got) == list(range(128))
    for k in (0, 1, 9, 63, 64, 65, 127):
        out = seal.Plaintext()
        keys._decryptor.decrypt(_as_ciphertext(ct, got[k]), out)
        decoded = np.array(encoder.decode_double(out))
        assert np.abs(decoded - np.roll(values, -k)).max() < 1e-3


def test_the_hoisting_tree_uses_one_key_per_edge_and_few_decompositions() -> None:
    parent = keyswitch.hoisting_tree(range(1, 128), BASE)
    assert set(parent) == set(range(1, 128))
    assert all(k - p in STEPS for k, p in parent.items())
    # Decompositions: every node with children (the root 0 and the 15 multiples of 8).
    assert len(set(parent.values())) == 16
    # A share of the rotations brings its ancestors along (they are computed, not kept).
    assert keyswitch.hoisting_tree([100], BASE) == {100: 96, 96: 64, 64: 0}
    assert keyswitch.key_steps(512, BASE) == [*range(1, 8), *range(8, 64, 8), *range(64, 512, 64)]


def test_the_rotations_stop_when_asked(
    evaluation: EvaluationKeys, rotation_keys: keyswitch.RotationKeys
) -> None:
    words = _words(_encrypted(evaluation, 4))
    with pytest.raises(DeadlineExceeded):
        list(keyswitch.Hoister(PS).rotations(words, range(128), rotation_keys, lambda: True))


def test_refusals(evaluation: EvaluationKeys, rotation_keys: keyswitch.RotationKeys) -> None:
    hoister = keyswitch.Hoister(PS)
    with pytest.raises(HEError):
        hoister.decompose(np.zeros((3, 4, N), dtype=np.uint32))
    empty = seal.GaloisKeys()
    with pytest.raises(HEError):
        keyswitch.RotationKeys(PS, empty, [1])


def test_the_cache_keeps_the_last_keys(evaluation: EvaluationKeys) -> None:
    cache = keyswitch.KeyCache(PS, 16, keep=1)
    first = cache.get(evaluation)
    assert cache.get(evaluation) is first
    assert 1 in first and 8 in first and 64 not in first


def test_the_kernel_engines_stack_holds_the_hoisted_rotations(
    keys: RequesterKeys, evaluation: EvaluationKeys
) -> None:
    """KernelEngine's rotations come from the hoisting tree, placed in its stack as the
    kernel reads them (words(k) reads them back), and decrypt to the rotated probe."""
    from fedmatch.demo.synthetic import capture, unit_vectors
    from fedmatch.he.kernel_engine import KernelEngine

    engine = KernelEngine(PS, 128)
    rng = np.random.default_rng(2)
    probe = capture(unit_vectors(rng, 1, 128)[0], rng, 0.8)
    query = engine.open_probe(keys.encrypt_probe(probe)).query
    stack = engine._rotations(query, evaluation, lambda: False, 128)
    assert len(stack) == 1 and stack.residues.shape[2] == 128
    expected = dict(
        keyswitch.Hoister(PS).rotations(
            _words(query), range(128), keyswitch.RotationKeys(PS, evaluation.galois_keys, STEPS)
        )
    )
    for k in (0, 1, 77, 127):
        assert np.array_equal(stack.words(k), expected[k])


def test_the_kernel_engines_norm_check_is_seals_word_for_word(
    keys: RequesterKeys, evaluation: EvaluationKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The norm check's seven rotations of probe data, native on the kernel engine: the
    excess is PackedBase's (SEAL's rotations) bit for bit, for an honest probe and a long
    one; a step no baby-step key takes still goes to SEAL."""
    from fedmatch.demo.synthetic import unit_vectors
    from fedmatch.he.engine import PackedBase
    from fedmatch.he.kernel_engine import KernelEngine

    engine = KernelEngine(PS, 128)
    native_steps = _count_native_steps(engine, monkeypatch)
    rng = np.random.default_rng(4)
    probe = unit_vectors(rng, 1, 128)[0]
    for template in (probe, 1.1 * probe):
        slots = np.tile(template, PS.slots // 128)
        opened = engine.open_probe(keys._encrypt_slots(slots))
        native_steps.clear()
        native = engine._norm_excess(opened, evaluation)
        assert native_steps == [1, 2, 4, 8, 16, 32, 64]
        with monkeypatch.context() as seal_only:
            seal_only.setattr(
                engine, "_rotated", lambda ct, step, k: PackedBase._rotated(engine, ct, step, k)
            )
            reference = engine._norm_excess(opened, evaluation)
        assert native is not None and reference is not None
        assert native.scale == reference.scale
        assert np.array_equal(_words(native), _words(reference))
    # 256 is no key of the baby steps at dp = 128: SEAL's rotation, the same ciphertext.
    ct = _encrypted(evaluation, 3)
    native_steps.clear()
    assert np.array_equal(
        _words(engine._rotated(ct, 256, evaluation)),
        _words(_seal_rotated(ct, 256, evaluation)),
    )
    assert native_steps == []


def test_the_kernel_engines_giant_step_rotations_are_seals_word_for_word(
    evaluation: EvaluationKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PackedBase._rotate on the kernel engine (a giant step's rotation of a block's partial
    sum, at the top level): every digit of the shift that a baby-step key takes is a native
    key switch, the rest SEAL's, and the words are SEAL's all the same; below the top level
    every digit goes to SEAL."""
    from fedmatch.he.engine import PackedBase
    from fedmatch.he.kernel_engine import KernelEngine

    engine = KernelEngine(PS, 128)
    native_steps = _count_native_steps(engine, monkeypatch)
    evaluator = seal.Evaluator(PS.context())
    # 16 and 32: giant steps at dp = 128; 19 = 3 + 2 x 8; 3 x 64 + 5: 192 has no native key.
    for shift, native in ((16, [16]), (32, [32]), (19, [3, 16]), (197, [5])):
        for seed in (5, 6):
            ct = _encrypted(evaluation, seed)
            reference = _as_ciphertext(ct, _words(ct))
            native_steps.clear()
            engine._rotate(ct, shift, evaluation)
            assert native_steps == native
            PackedBase._rotate(engine, reference, shift, evaluation)
            assert ct.scale == reference.scale
            assert np.array_equal(_words(ct), _words(reference))
    lower = _encrypted(evaluation, 7)
    evaluator.mod_switch_to_next_inplace(lower)
    reference = _as_ciphertext(lower, _words(lower))
    native_steps.clear()
    engine._rotate(lower, 19, evaluation)
    PackedBase._rotate(engine, reference, 19, evaluation)
    assert native_steps == []
    assert np.array_equal(_words(lower), _words(reference))
