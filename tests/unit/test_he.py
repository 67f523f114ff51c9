"""The HE layer: parameters, key bundles, probe validation and the engine's correctness."""

from __future__ import annotations

import logging
import pickle
from dataclasses import replace

import numpy as np
import pytest
import tenseal.sealapi as seal

from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.errors import DeadlineExceeded, HEError, ImplausibleResult, InvalidInput
from fedmatch.he import resultfmt, sealfmt, sealio, uniform
from fedmatch.he.engine import PackedEngine, SearchOutput, padded_block_count, with_padding
from fedmatch.he.engines import create_engine
from fedmatch.he.keypair import MAX_BLOCK_POSITIVES, RequesterKeys
from fedmatch.he.keys import EvaluationKeys, KeyBundle, open_key_bundle
from fedmatch.he.params import (
    DEFAULT_PARAM_SET,
    KERNEL_PARAM_SET,
    MAX_BITS_128,
    PARAM_SETS,
    ParamSet,
)
from fedmatch.protocol.wire import encode_handle
from fedmatch.requester.client import node_candidates
from fedmatch.rpc.v1 import common_pb2, coordinator_pb2
from tests.federation import as_sent, shared_keys
from tests.he_flood import noise_and_flood
from tests.he_keys import keys_for
from tests.he_magnitudes import near_and_far

THRESHOLD = 0.45


@pytest.mark.parametrize("name", sorted(PARAM_SETS))
def test_parameter_sets_are_128_bit_secure(name: str) -> None:
    ps = PARAM_SETS[name]
    # HomomorphicEncryption.org table, and SEAL's own copy of it, must both agree.
    assert ps.total_bits <= MAX_BITS_128[ps.poly_modulus_degree]
    assert ps.total_bits <= seal.CoeffModulus.MaxBitCount(
        ps.poly_modulus_degree, seal.SEC_LEVEL_TYPE.TC128
    )
    assert ps.context().parameters_set()


def test_insecure_parameter_set_is_refused() -> None:
    weak = replace(DEFAULT_PARAM_SET, name="weak", poly_modulus_degree=4096)  # 170 > 109 bits
    with pytest.raises(HEError, match="128-bit"):
        weak.context()


def test_public_bundle_has_no_secret_and_a_stable_digest() -> None:
    keys = shared_keys()
    bundle = keys.public_bundle()
    assert bundle.secret_key == b""
    assert "has_secret_key=False" in repr(bundle)
    assert bundle.digest() == keys.key_id
    private = keys.private_bundle()
    assert private.secret_key and private.digest() == bundle.digest()
    assert private.secret_key.hex() not in repr(private)
    # Computed once per bundle (a lookup reads the key id twice), and of the bundle's own
    # fields: a copy with another key has its own, and a pickled bundle keeps its own.
    assert bundle.digest() is bundle.digest()
    other = replace(bundle, galois_keys=bundle.galois_keys[:-1] + b"\x00")
    assert other.digest() != bundle.digest()
    assert pickle.loads(pickle.dumps(bundle)).digest() == bundle.digest()
    fresh = replace(bundle)
    assert fresh == bundle and fresh.digest() == bundle.digest()


@pytest.mark.parametrize("ps", [DEFAULT_PARAM_SET, KERNEL_PARAM_SET], ids=["default", "kernel"])
def test_the_rebinding_of_a_ciphertext_is_exact(ps: ParamSet) -> None:
    """``(c0, c1)`` to ``(c0 + (c1 - a) s, a)`` modulo each prime: uint64 words for the
    primes below 2^32, Python's integers above, both the exact residues."""
    keys = keys_for(ps)
    moduli = uniform.key_moduli(ps)
    rng = np.random.default_rng(11)
    n = ps.poly_modulus_degree

    def words() -> np.ndarray:
        return np.stack([rng.integers(0, q, n, dtype=np.uint64) for q in moduli])

    data, a = np.stack([words(), words()]), words()
    data[:, :, :3] = np.array(moduli, dtype=np.uint64)[None, :, None] - 1  # the largest
    a[:, :2] = 0
    rebound = data.copy()
    keys._rebind(rebound, a, moduli)
    for limb, q in enumerate(moduli):
        s = [int(w) for w in keys._secret_words[limb]]
        for j in range(n):
            c0, c1 = int(data[0, limb, j]), int(data[1, limb, j])
            assert int(rebound[0, limb, j]) == (c0 + (c1 - int(a[limb, j])) * s[j]) % q
        assert np.array_equal(rebound[1, limb], a[limb])


def test_bundle_with_secret_key_is_refused() -> None:
    with pytest.raises(HEError, match="secret key"):
        open_key_bundle(shared_keys().private_bundle())


def _with(bundle: KeyBundle, **changes: object) -> KeyBundle:
    fields: dict[str, object] = {
        "param_set": bundle.param_set,
        "parms": bundle.parms,
        "public_key": bundle.public_key,
        "galois_keys": bundle.galois_keys,
        "relin_keys": bundle.relin_keys,
    }
    fields.update(changes)
    return KeyBundle(**fields)  # type: ignore[arg-type]


def _other_parms() -> bytes:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(8192)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(8192, [50, 30, 50]))
    return sealio.to_bytes(parms)


def _galois_without_step_one() -> bytes:
    """Rotation keys with the federation's uniform parts, for one rotation only."""
    keys = shared_keys()
    gk = seal.GaloisKeys()
    seal.KeyGenerator(keys.params.context(), keys._secret).create_galois_keys([5], gk)
    body, version = sealfmt.unpack(sealio.to_bytes(gk), "rotation keys", 1 << 26)
    moduli = uniform.key_moduli(keys.params)
    for index, j, key in sealfmt.kswitch_keys(body, "rotation keys"):
        label = uniform.galois_label(keys.params, index, j)
        keys._rebind(key.data, uniform.expand(label, moduli, key.data.shape[2]), moduli)
    return sealfmt.pack(body, version)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"param_set": "bfv-n4096"}, "unknown homomorphic-encryption parameter set"),
        ({"parms": b"\x00" * 80}, "encryption parameters could not be decoded"),
        ({"parms": "other"}, "differ from the named parameter set"),
        ({"public_key": b""}, "public key is truncated"),
        ({"public_key": b"garbage" * 100}, "public key is not a SEAL object"),
        ({"galois_keys": "truncated"}, "rotation keys has a size that does not match"),
        ({"galois_keys": "no-step-one"}, "rotation keys lack"),
        ({"galois_keys": "public-key"}, "rotation keys (has|is) "),
    ],
    ids=[
        "unknown-set", "garbage-parms", "other-parms", "empty-pk", "garbage-pk",
        "truncated-galois", "galois-missing-step", "pk-as-galois",
    ],
)  # fmt: skip
def test_hostile_bundles_are_refused(change: dict[str, object], message: str) -> None:
    bundle = shared_keys().public_bundle()
    value = next(iter(change.values()))
    key = next(iter(change))
    if value == "other":
        value = _other_parms()
    elif value == "truncated":
        value = bundle.galois_keys[: len(bundle.galois_keys) // 2]
    elif value == "no-step-one":
        value = _galois_without_step_one()
    elif value == "public-key":
        value = bundle.public_key
    with pytest.raises(HEError, match=message):
        open_key_bundle(_with(bundle, **{key: value}))


@pytest.fixture(scope="module")
def evaluation() -> EvaluationKeys:
    return open_key_bundle(shared_keys().public_bundle())


def _match_rows(keys: RequesterKeys, output: SearchOutput) -> set[int]:
    rows = set()
    for b, ct in enumerate(output.blocks):
        for position in np.flatnonzero(keys.decrypt_matches(ct)):
            row = output.layout.row(b, int(position))
            assert row is not None, "a padding position decrypted as a match"
            rows.add(row)
    return rows


def _plain_rows(gallery: np.ndarray, probe: np.ndarray) -> set[int]:
    scores = gallery.astype(np.float64) @ probe.astype(np.float64)
    return set(np.flatnonzero(scores >= THRESHOLD).tolist())


@pytest.mark.parametrize("size", [1, 100, 8191, 8192, 8193, 20000])
def test_kernel_matches_numpy_on_registers_of_several_sizes(
    size: int, evaluation: EvaluationKeys
) -> None:
    rng = np.random.default_rng(size)
    gallery = unit_vectors(rng, size, 128)
    engine = create_engine(DEFAULT_PARAM_SET, 128)
    engine.load(gallery)
    keys = shared_keys()
    for row in (0, size - 1, size // 2):  # genuine probes at both ends and the middle
        probe = capture(gallery[row], rng, 0.7)
        out = engine.search(evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False)
        assert len(out.blocks) == -(-size // DEFAULT_PARAM_SET.block_records)
        assert _match_rows(keys, out) == _plain_rows(gallery, probe) and row in _match_rows(
            keys, out
        )
    impostor = unit_vectors(rng, 1, 128)[0]
    out = engine.search(evaluation, keys.encrypt_probe(impostor), THRESHOLD, lambda: False)
    assert _match_rows(keys, out) == _plain_rows(gallery, impostor) == set()


@pytest.mark.slow
def test_encrypted_matches_equal_numpy_on_hundreds_of_probes(evaluation: EvaluationKeys) -> None:
    rng = np.random.default_rng(12)
    gallery = unit_vectors(rng, 3000, 128)
    engine = create_engine(DEFAULT_PARAM_SET, 128)
    engine.load(gallery)
    keys = shared_keys()
    n_probes = 200  # 100 genuine probes across the threshold, 100 impostors
    genuine = rng.integers(0, gallery.shape[0], size=n_probes // 2)
    # Genuine probes at cosines spread across the threshold, impostors at random.
    probes = [capture(gallery[i], rng, float(rng.uniform(0.3, 0.95))) for i in genuine]
    probes += list(unit_vectors(rng, n_probes - len(probes), 128))
    agree = hits = 0
    exact = gallery.astype(np.float64)
    for probe in probes:
        out = engine.search(evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False)
        found = _match_rows(keys, out)
        scores = exact @ probe.astype(np.float64)
        clear = np.abs(scores - THRESHOLD) > 1e-3  # rows a quantization could not flip
        plain = set(np.flatnonzero((scores >= THRESHOLD) & clear).tolist())
        agree += {r for r in found if clear[r]} == plain
        hits += len(found)
    assert agree == n_probes
    assert hits > 50  # the data has both answers: genuine probes above the threshold hit


def test_masked_magnitudes_say_almost_nothing_about_the_score(
    evaluation: EvaluationKeys,
) -> None:
    """Statistically: log-magnitudes of decrypted slots for records far below the threshold
    and for records just below it are nearly the same distribution (the mask's 17 bits of
    log-uniform noise swamp the ~3 bits of difference), and magnitudes do not order
    records by score."""
    seen = near_and_far(shared_keys(), evaluation, seed=5)
    # log2(8) = 3 bits of shift in a 17-bit-wide uniform: expected distance 3/17 = 0.18.
    assert seen.total_variation < 0.25
    # Ranking records by magnitude barely beats chance at telling near from far.
    assert abs(seen.near_in_smaller_half - 0.5) < 0.15


def test_slot_order_is_fresh_per_query(evaluation: EvaluationKeys) -> None:
    rng = np.random.default_rng(6)
    gallery = unit_vectors(rng, 20000, 128)
    engine = create_engine(DEFAULT_PARAM_SET, 128)
    engine.load(gallery)
    keys = shared_keys()
    probe = capture(gallery[777], rng, 0.8)
    layouts, positions = [], []
    for _ in range(3):
        out = engine.search(evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False)
        found = [
            (b, int(p))
            for b, ct in enumerate(out.blocks)
            for p in np.flatnonzero(keys.decrypt_matches(ct))
        ]
        assert [out.layout.row(b, p) for b, p in found] == [777]
        layouts.append((out.layout.order, out.layout.shifts))
        positions.append(found[0])
    assert len(set(layouts)) == 3
    assert len(set(positions)) == 3  # the same record sits elsewhere every time


def test_rerandomization_changes_ciphertext_not_decryption(
    evaluation: EvaluationKeys,
) -> None:
    rng = np.random.default_rng(8)
    gallery = unit_vectors(rng, 500, 128)
    engine = create_engine(DEFAULT_PARAM_SET, 128)
    assert isinstance(engine, PackedEngine)
    engine.load(gallery)
    keys = shared_keys()
    probe = capture(gallery[3], rng, 0.8)
    out = engine.search(evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False)
    # A compact block cannot be loaded back into SEAL: re-randomize a result ciphertext made
    # like the engine's (masked values encrypted at the result level) instead.
    fmt = resultfmt.result_format(DEFAULT_PARAM_SET)
    values = keys.decrypt_values(out.blocks[0])
    plain, ct = seal.Plaintext(), seal.Ciphertext()
    keys._encoder.encode(values.tolist(), list(fmt.parms_id), fmt.scale, plain)
    seal.Encryptor(keys._ctx, keys._public).encrypt(plain, ct)
    first = resultfmt.compress(ct, DEFAULT_PARAM_SET)
    engine._rerandomize(ct, evaluation)
    again = resultfmt.compress(ct, DEFAULT_PARAM_SET)
    assert again != first
    before, after = keys.decrypt_values(first), keys.decrypt_values(again)
    np.testing.assert_array_equal(keys.decrypt_matches(again), keys.decrypt_matches(out.blocks[0]))
    # Only the flooding noise (at most 2^16 per part) and the compact format's rounding
    # separate the two decryptions.
    bound = 2**16 + 2 * resultfmt.error_bound(DEFAULT_PARAM_SET)
    assert np.max(np.abs((after - before).real)) < bound
    assert np.max(np.abs((after - before).imag)) < bound


def test_append_reencodes_only_the_touched_block() -> None:
    gallery = unit_vectors(np.random.default_rng(9), 9000, 128)
    e = PackedEngine(DEFAULT_PARAM_SET, 128)
    e.load(gallery)
    first, last = e._blocks[0], e._blocks[1]
    e.append(gallery[:3])
    assert e.size == gallery.shape[0] + 3
    assert e._blocks[0] is first  # untouched block kept as is
    assert e._blocks[1] is not last  # the block that received rows was re-encoded


def test_search_stops_when_asked(evaluation: EvaluationKeys) -> None:
    keys = shared_keys()
    e = create_engine(DEFAULT_PARAM_SET, 128)
    e.load(unit_vectors(np.random.default_rng(1), 10, 128))
    probe = keys.encrypt_probe(unit_vectors(np.random.default_rng(1), 1, 128)[0])
    with pytest.raises(DeadlineExceeded):
        e.search(evaluation, probe, THRESHOLD, lambda: True)
    calls = iter(range(1000))
    with pytest.raises(DeadlineExceeded):  # stops midway through the rotations, too
        e.search(evaluation, probe, THRESHOLD, lambda: next(calls) >= 3)


def _probe_ciphertext(keys: RequesterKeys, data: bytes) -> seal.Ciphertext:
    """A sent probe as the node computes with it (its uniform part expanded)."""
    ct = seal.Ciphertext()
    seal_bytes, _ = uniform.open_probe_bytes(keys.params, data)
    sealio.load_bytes(lambda p: ct.load(keys.params.context(), p), seal_bytes, "probe")
    return ct


def _lower_level_probe(keys: RequesterKeys) -> bytes:
    ct = _probe_ciphertext(
        keys, keys.encrypt_probe(unit_vectors(np.random.default_rng(2), 1, 128)[0])
    )
    seal.Evaluator(keys.params.context()).mod_switch_to_next_inplace(ct)
    return as_sent(ct)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "not in seeded form"),
        ("garbage", "not in seeded form"),
        ("truncated", "not in seeded form|size that does not match"),
        ("public-key", "not in seeded form"),
        ("lower-level", "two polynomials at the top level"),
        ("oversize", "exceeds"),
    ],
)
def test_hostile_probes_are_refused(evaluation: EvaluationKeys, kind: str, message: str) -> None:
    keys = shared_keys()
    engine = create_engine(DEFAULT_PARAM_SET, 128)
    engine.load(unit_vectors(np.random.default_rng(3), 10, 128))
    good = keys.encrypt_probe(unit_vectors(np.random.default_rng(3), 1, 128)[0])
    probe = {
        "empty": b"",
        "garbage": bytes(range(256)) * 40,
        "truncated": good[: len(good) // 2],
        "public-key": keys.public_bundle().public_key,
        "lower-level": _lower_level_probe(keys),
        "oversize": b"\x00" * (600 * 1024),
    }[kind]
    with pytest.raises(HEError, match=message):
        engine.search(evaluation, probe, THRESHOLD, lambda: False)


def test_probe_must_be_a_finite_vector() -> None:
    keys = shared_keys()
    with pytest.raises(InvalidInput):
        keys.encrypt_probe(np.full(128, np.nan))
    with pytest.raises(InvalidInput):
        keys.encrypt_probe(np.zeros((2, 64)))


@pytest.mark.parametrize("factor", [3.0, 10.0, 0.5, 1.0011, 0.9989])
def test_the_library_refuses_a_probe_that_is_not_unit_norm(factor: float) -> None:
    """Issue 15: a probe of norm 3 lowered the threshold for its sender (0 matches became
    351). The requester library encrypts only unit-norm templates (within 1e-3); the
    message names no value of the template."""
    probe = unit_vectors(np.random.default_rng(8), 1, 128)[0].astype(np.float64)
    with pytest.raises(InvalidInput, match=r"unit norm \(within 0\.001\)$"):
        shared_keys().encrypt_probe(factor * probe)


def test_the_library_takes_a_unit_probe_up_to_its_rounding() -> None:
    probe = unit_vectors(np.random.default_rng(9), 1, 128)[0].astype(np.float64)
    for factor in (1.0, 1.0009, 0.9991):
        assert shared_keys().encrypt_probe(factor * probe)


def test_secret_key_round_trips_through_private_bundle(evaluation: EvaluationKeys) -> None:
    keys = shared_keys()
    again = RequesterKeys.from_private_bundle(keys.private_bundle())
    assert again.key_id == keys.key_id
    probe = unit_vectors(np.random.default_rng(4), 1, 128)[0]
    e = create_engine(DEFAULT_PARAM_SET, 128)
    e.load(probe.reshape(1, -1))
    out = e.search(evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False)
    assert _match_rows(again, out) == {0}


# A malicious node shaping its answer (issue 15): the requester's client must not take slots
# of the node's choosing as candidates, whose resolve would tell the node about the probe.


def _node_block(keys: RequesterKeys, values: np.ndarray) -> bytes:
    """A result block a node made up: ``values`` (complex, one per slot) encrypted under the
    requester's public key at the last level and an honest result's scale (2^10), sent in
    the compact format."""
    ctx = keys._ctx
    parms_id = ctx.last_parms_id()
    plain, ct = seal.Plaintext(), seal.Ciphertext()
    keys._encoder.encode(values.tolist(), parms_id, 2.0**10, plain)
    seal.Encryptor(ctx, keys._public).encrypt(plain, ct)
    return resultfmt.compress(ct, keys.params)


def _masked(rng: np.random.Generator, scores: np.ndarray) -> np.ndarray:
    """What an honest block holds for these scores: r * (s - t), r log-uniform 2^30..2^47."""
    r = np.exp2(rng.uniform(30, 47, scores.shape))
    flat = r * (scores - THRESHOLD)
    half = flat.shape[0] // 2
    return flat[:half] + 1j * flat[half:]


def _impostors(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, 0.1, DEFAULT_PARAM_SET.block_records).clip(-1, 0.4)


def test_an_honest_looking_block_with_a_few_matches_decrypts() -> None:
    rng = np.random.default_rng(30)
    keys = shared_keys()
    scores = _impostors(rng)
    scores[rng.choice(scores.shape[0], MAX_BLOCK_POSITIVES, replace=False)] = 0.8
    matches = keys.decrypt_matches(_node_block(keys, _masked(rng, scores)))
    assert int(matches.sum()) == MAX_BLOCK_POSITIVES


def test_a_block_with_too_many_positives_is_implausible() -> None:
    rng = np.random.default_rng(31)
    keys = shared_keys()
    scores = _impostors(rng)
    scores[rng.choice(scores.shape[0], MAX_BLOCK_POSITIVES + 1, replace=False)] = 0.8
    with pytest.raises(ImplausibleResult, match=r"positive positions$"):
        keys.decrypt_matches(_node_block(keys, _masked(rng, scores)))
    everything = np.full(scores.shape[0], 0.9)  # an all-positive block
    with pytest.raises(ImplausibleResult, match=r"positive positions$"):
        keys.decrypt_matches(_node_block(keys, _masked(rng, everything)))


def test_a_block_beyond_the_masks_range_is_implausible() -> None:
    rng = np.random.default_rng(32)
    keys = shared_keys()
    values = _masked(rng, _impostors(rng))
    values[7] = -(2.0**49)
    with pytest.raises(ImplausibleResult, match=r"beyond the masks' range$"):
        keys.decrypt_matches(_node_block(keys, values))


def test_the_probe_itself_sent_back_is_implausible() -> None:
    """Enc(q - c): the node subtracts a constant of its choice from the probe and answers
    with it, so that the positives are the probe components above c."""
    keys = shared_keys()
    probe = unit_vectors(np.random.default_rng(33), 1, 128)[0]
    query = _probe_ciphertext(keys, keys.encrypt_probe(probe))
    evaluator = seal.Evaluator(keys._ctx)
    for c in (THRESHOLD, 0.05):
        shift = seal.Plaintext()
        slots = DEFAULT_PARAM_SET.slots
        keys._encoder.encode([complex(c, c)] * slots, query.parms_id(), query.scale, shift)
        answer = seal.Ciphertext()
        evaluator.sub_plain(query, shift, answer)
        # Brought to the result level and scale (times 1 at 2^20, rescaled), so that the
        # requester decodes q - c itself.
        one = seal.Plaintext()
        keys._encoder.encode([1.0 + 0j] * slots, answer.parms_id(), 2.0**20, one)
        evaluator.multiply_plain_inplace(answer, one)
        evaluator.rescale_to_next_inplace(answer)
        with pytest.raises(ImplausibleResult, match=r"range$|positions$"):
            keys.decrypt_matches(resultfmt.compress(answer, keys.params))
    # Scaled up into the masks' range, the positives give it away.
    scaled = np.concatenate([probe, probe])  # stand-in for the replicated slots
    values = np.resize(scaled - 0.05, 2 * DEFAULT_PARAM_SET.slots) * 2.0**40
    block = values[: DEFAULT_PARAM_SET.slots] + 1j * values[DEFAULT_PARAM_SET.slots :]
    with pytest.raises(ImplausibleResult, match=r"positive positions$"):
        keys.decrypt_matches(_node_block(keys, block))


def test_the_requester_drops_an_implausible_node_and_flags_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = np.random.default_rng(34)
    keys = shared_keys()
    honest = _impostors(rng)
    honest[5] = 0.8
    good = coordinator_pb2.NodeResult(
        member_state="IT",
        blocks=[common_pb2.ResultBlock(ciphertext=_node_block(keys, _masked(rng, honest)))],
    )
    bad = coordinator_pb2.NodeResult(
        member_state="FR",
        blocks=[
            common_pb2.ResultBlock(ciphertext=_node_block(keys, _masked(rng, honest))),
            common_pb2.ResultBlock(
                ciphertext=_node_block(keys, _masked(rng, np.full(honest.shape[0], 0.9)))
            ),
        ],
    )
    assert node_candidates(keys, good) == [encode_handle(0, 5)]
    with caplog.at_level(logging.WARNING, logger="fedmatch.requester"):
        assert node_candidates(keys, bad) is None
    assert "node FR: answer dropped" in caplog.text
    # Bytes that are not a compact result block (a hostile node's, truncated) likewise.
    truncated = coordinator_pb2.NodeResult(
        member_state="PL",
        blocks=[common_pb2.ResultBlock(ciphertext=good.blocks[0].ciphertext[:-7])],
    )
    with caplog.at_level(logging.WARNING, logger="fedmatch.requester"):
        assert node_candidates(keys, truncated) is None
    assert "node PL: answer dropped" in caplog.text


# Register size (issue 15): answers are padded with decoy blocks to a bucket.


def test_block_counts_are_padded_to_buckets() -> None:
    expected = {1: 4, 4: 4, 5: 8, 8: 8, 9: 12, 31: 32, 32: 32, 33: 36, 123: 128, 129: 144}
    assert {n: padded_block_count(n) for n in expected} == expected
    counts = [padded_block_count(n) for n in range(1, 2000)]
    assert counts == sorted(counts)  # never fewer blocks for a larger register
    assert all(c >= n for n, c in zip(range(1, 2000), counts, strict=True))
    assert all(c <= 1.125 * n for n, c in zip(range(32, 2000), counts[31:], strict=True))


def test_padding_blocks_map_to_no_row_and_look_like_non_matches(
    evaluation: EvaluationKeys,
) -> None:
    rng = np.random.default_rng(35)
    keys = shared_keys()
    probe = unit_vectors(rng, 1, 128)[0]
    rows = unit_vectors(rng, 5000, 128)
    rows[[7, 4321]] = [capture(probe, rng, 0.8), capture(probe, rng, 0.9)]
    engine = PackedEngine(DEFAULT_PARAM_SET, 128)
    engine.load(rows)
    out = engine.search(evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False)
    padding = [engine.padding_block(evaluation, THRESHOLD) for _ in range(3)]
    padded = with_padding(out, padding)
    assert len(padded.blocks) == 4 and set(padded.blocks) == {*out.blocks, *padding}
    found = set()
    for b, ct in enumerate(padded.blocks):
        matches = keys.decrypt_matches(ct)  # plausible, as any honest block
        for p in np.flatnonzero(matches):
            found.add(padded.layout.row(b, int(p)))
        if ct in padding:
            assert not matches.any()
            assert all(padded.layout.row(b, p) is None for p in range(0, 8192, 97))
    assert found == {7, 4321}
    # A padding block's values against a real block's non-matches.
    real = padded.blocks.index(out.blocks[0])
    values = keys.decrypt_values(out.blocks[0])
    flat = np.concatenate([values.real, values.imag])
    positions = np.array([padded.layout.row(real, p) for p in range(8192)], dtype=object)
    ordinary = np.array([r is not None and r not in (7, 4321) for r in positions])
    decoys = keys.decrypt_values(padding[0])
    decoy = np.concatenate([decoys.real, decoys.imag])
    a, b = np.log2(np.abs(decoy)), np.log2(np.abs(flat[ordinary]))
    assert abs(float(np.mean(a[:, None] > b[None, :5000])) - 0.5) <= 0.02


def _best_alignment(a: np.ndarray, b: np.ndarray) -> float:
    """The best agreement of two blocks' sign patterns (real and imaginary halves, one
    cyclic slot shift for both) over every shift, as a fraction of the positions."""
    slots = a.shape[0] // 2
    x, y = (2.0 * v.astype(np.float64) - 1.0 for v in (a, b))
    agree = np.zeros(slots)
    for half in (slice(0, slots), slice(slots, 2 * slots)):
        fx, fy = np.fft.rfft(x[half]), np.fft.rfft(y[half])
        agree += np.fft.irfft(np.conj(fx) * fy, n=slots)
    return float((agree.max() / (2 * slots) + 1.0) / 2.0)


def test_sign_patterns_of_a_long_probe_do_not_align_blocks_across_queries(
    evaluation: EvaluationKeys,
) -> None:
    """Issue 15, attack 4: with a probe of norm 3, the 8,192-bit sign patterns of a block
    aligned (up to its cyclic shift) across queries, 64 of 64 blocks; averaging the linked
    masks then estimated every record's score. The node's norm check makes those signs
    noise: the best alignment of any two blocks of two queries is no better than that of
    two random patterns (~0.52), while a block against itself in the same query aligns
    exactly (the measure works)."""
    from fedmatch.he.layout import replicate_probe

    rng = np.random.default_rng(44)
    gallery = unit_vectors(rng, 2 * DEFAULT_PARAM_SET.block_records, 128)
    engine = create_engine(DEFAULT_PARAM_SET, 128)
    engine.load(gallery)
    keys = shared_keys()
    probe = replicate_probe(3.0 * unit_vectors(rng, 1, 128)[0], DEFAULT_PARAM_SET.slots)
    patterns = []
    for _ in range(2):
        out = engine.search(evaluation, keys._encrypt_slots(probe), THRESHOLD, lambda: False)
        signs = []
        for ct in out.blocks[:2]:
            values = keys.decrypt_values(ct)
            signs.append(np.concatenate([values.real, values.imag]) > 0)
        patterns.append(signs)
    assert _best_alignment(patterns[0][0], patterns[0][0]) == 1.0
    best = max(_best_alignment(a, b) for a in patterns[0] for b in patterns[1])
    assert best < 0.56


def test_the_flood_bound_is_what_the_docs_say(evaluation: EvaluationKeys) -> None:
    """Issue 15, item 7, measured: the noise the re-randomization must hide, against its
    2^16 uniform flood. A block's accumulated scores are decrypted (exact to the product
    stage); the kernel's steps after it (threshold, the conjugation and the final rotation,
    both key switches on register data, masks, rescale) then run without the flood, with
    masks and shift from a recorded stream; the result against the same steps done in
    floating point is the noise they add. In the result's units (scale 2^10): noise of
    ~2^10, flood of 2^16, so the statistical distance per slot is ~2^-7 (noise over the
    flood's width): a bound, as the threat model says, not the 2^-40 of circuit privacy."""
    noise, flood = noise_and_flood(
        DEFAULT_PARAM_SET, shared_keys(), evaluation, THRESHOLD, encoded_masks=False
    )
    bound = 2.0**DEFAULT_PARAM_SET.flood_bits
    assert bound * 0.9 < flood.max() < bound * 1.1  # uniform in +-2^16, each part
    assert 2.0**8 < noise.max() < 2.0**11.5  # measured here: 2^9.96
    distance = noise.max() / (2 * bound)
    assert 2.0**-9 < distance < 2.0**-5.5  # ~2^-7


@pytest.mark.parametrize("ps", [DEFAULT_PARAM_SET, KERNEL_PARAM_SET], ids=["default", "kernel"])
def test_a_probes_members_are_what_seals_save_writes(ps: ParamSet) -> None:
    """The requester writes a probe ciphertext's members from a template SEAL wrote once
    per scale and the ciphertext's words (RequesterKeys._probe_members): byte for byte what
    SEAL's own save gives, for fresh encryptions at both scales a probe uses, after the
    template; a ciphertext of another shape is refused, not written into it."""
    keys = keys_for(ps)
    rng = np.random.default_rng(11)
    evaluator = seal.Evaluator(ps.context())
    for scale in (ps.query_scale, ps.norm_scale, ps.query_scale, ps.norm_scale):
        plain, ct = seal.Plaintext(), seal.Ciphertext()
        values = rng.uniform(-1.0, 1.0, ps.slots).tolist()
        keys._encoder.encode(values, keys._ctx.first_parms_id(), scale, plain)
        keys._encryptor.encrypt_symmetric(plain, ct)
        body, version = keys._probe_members(ct)
        expected, expected_version = sealfmt.unpack(sealio.to_bytes(ct), "probe", 1 << 26)
        assert body == expected
        assert version == expected_version
        evaluator.mod_switch_to_next_inplace(ct)
        with pytest.raises(HEError, match="shape"):
            keys._probe_members(ct)
