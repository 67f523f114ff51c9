"""The HE layer: parameters, key bundles, probe validation and the engine's correctness."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal.sealapi as seal

from fedmatch.errors import DeadlineExceeded, HEError, InvalidInput
from fedmatch.he import sealio
from fedmatch.he.engine import DiagonalEngine, create_engine
from fedmatch.he.keys import KeyBundle, RequesterKeys, open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET, MAX_BITS_128, PARAM_SETS, ParamSet
from fedmatch.synthetic import capture, unit_vectors
from tests.federation import shared_keys

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
    weak = ParamSet("weak", 4096, (60, 60, 60), 40)  # 180 bits > 109 allowed at N=4096
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


def test_bundle_with_secret_key_is_refused() -> None:
    with pytest.raises(HEError, match="secret key"):
        open_key_bundle(shared_keys().private_bundle())


def _with(bundle: KeyBundle, **changes: object) -> KeyBundle:
    fields: dict[str, object] = {
        "param_set": bundle.param_set,
        "parms": bundle.parms,
        "public_key": bundle.public_key,
        "galois_keys": bundle.galois_keys,
    }
    fields.update(changes)
    return KeyBundle(**fields)  # type: ignore[arg-type]


def _other_parms() -> bytes:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(8192)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(8192, [50, 30, 50]))
    return sealio.to_bytes(parms)


def _galois_without_step_one() -> bytes:
    ctx = DEFAULT_PARAM_SET.context()
    gk = seal.GaloisKeys()
    seal.KeyGenerator(ctx).create_galois_keys([5], gk)
    return sealio.to_bytes(gk)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"param_set": "bfv-n4096"}, "unknown homomorphic-encryption parameter set"),
        ({"parms": b"\x00" * 80}, "encryption parameters could not be decoded"),
        ({"parms": "other"}, "differ from the named parameter set"),
        ({"public_key": b""}, "public key is empty"),
        ({"public_key": b"garbage" * 100}, "public key could not be decoded"),
        ({"galois_keys": "truncated"}, "rotation keys could not be decoded"),
        ({"galois_keys": "no-step-one"}, "lack the one-step rotation"),
        ({"galois_keys": "public-key"}, "rotation keys could not be decoded"),
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
def gallery() -> np.ndarray:
    # Two blocks (4,096 + 904 rows) so that block boundaries are exercised.
    return unit_vectors(np.random.default_rng(11), 5000, 128)


@pytest.fixture(scope="module")
def engine(gallery: np.ndarray) -> DiagonalEngine:
    e = create_engine(DEFAULT_PARAM_SET, 128)
    e.load(gallery)
    assert isinstance(e, DiagonalEngine)
    return e


@pytest.mark.slow
def test_encrypted_scores_match_numpy_on_hundreds_of_probes(
    gallery: np.ndarray, engine: DiagonalEngine
) -> None:
    keys = shared_keys()
    evaluation = open_key_bundle(keys.public_bundle())
    rng = np.random.default_rng(12)
    n_probes = 300
    genuine = rng.integers(0, gallery.shape[0], size=n_probes // 2)
    probes = [capture(gallery[i], rng, float(rng.uniform(0.3, 0.95))) for i in genuine]
    probes += list(unit_vectors(rng, n_probes - len(probes), 128))  # impostors
    exact = gallery.astype(np.float64)
    worst = 0.0
    genuine_hits = impostor_hits = 0
    for n, probe in enumerate(probes):
        blocks = engine.search(evaluation, keys.encrypt_probe(probe), lambda: False)
        assert [b.count for b in blocks] == [4096, 904]
        scores = np.concatenate([keys.decrypt_scores(b.ciphertext, b.count) for b in blocks])
        plain = exact @ probe.astype(np.float64)
        worst = max(worst, float(np.abs(scores - plain).max()))
        clear = np.abs(plain - THRESHOLD) > 1e-4  # decisions a rounding could not flip
        np.testing.assert_array_equal((scores >= THRESHOLD)[clear], (plain >= THRESHOLD)[clear])
        found = int((scores >= THRESHOLD).sum())
        if n < len(genuine):
            genuine_hits += found
        else:
            impostor_hits += found
    assert worst < 1e-4
    # The data really has both kinds of answer: genuine probes above the threshold hit,
    # impostors (random unit vectors) never do.
    assert genuine_hits > 50
    assert impostor_hits == 0


def test_append_reencodes_only_the_touched_block(gallery: np.ndarray) -> None:
    e = DiagonalEngine(DEFAULT_PARAM_SET, 128)
    e.load(gallery)
    first, last = e._blocks[0], e._blocks[1]
    e.append(gallery[:3])
    assert e.size == gallery.shape[0] + 3
    assert e._blocks[0] is first  # untouched block kept as is
    assert e._blocks[1] is not last  # the block that received rows was re-encoded


def test_search_stops_when_asked(engine: DiagonalEngine) -> None:
    keys = shared_keys()
    evaluation = open_key_bundle(keys.public_bundle())
    probe = keys.encrypt_probe(unit_vectors(np.random.default_rng(1), 1, 128)[0])
    with pytest.raises(DeadlineExceeded):
        engine.search(evaluation, probe, lambda: True)


def _lower_level_probe(keys: RequesterKeys) -> bytes:
    ctx = DEFAULT_PARAM_SET.context()
    ct = seal.Ciphertext()
    data = keys.encrypt_probe(unit_vectors(np.random.default_rng(2), 1, 128)[0])
    sealio.load_bytes(lambda p: ct.load(ctx, p), data, "probe")
    seal.Evaluator(ctx).mod_switch_to_next_inplace(ct)
    return sealio.to_bytes(ct)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "probe ciphertext is empty"),
        ("garbage", "probe ciphertext could not be decoded"),
        ("truncated", "probe ciphertext could not be decoded"),
        ("public-key", "probe ciphertext could not be decoded|two polynomials"),
        ("lower-level", "not at the top level"),
        ("oversize", "exceeds"),
    ],
)
def test_hostile_probes_are_refused(engine: DiagonalEngine, kind: str, message: str) -> None:
    keys = shared_keys()
    evaluation = open_key_bundle(keys.public_bundle())
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
        engine.search(evaluation, probe, lambda: False)


def test_probe_must_be_a_finite_vector() -> None:
    keys = shared_keys()
    with pytest.raises(InvalidInput):
        keys.encrypt_probe(np.full(128, np.nan))
    with pytest.raises(InvalidInput):
        keys.encrypt_probe(np.zeros((2, 64)))


def test_secret_key_round_trips_through_private_bundle() -> None:
    keys = shared_keys()
    again = RequesterKeys.from_private_bundle(keys.private_bundle())
    probe = unit_vectors(np.random.default_rng(4), 1, 128)[0]
    e = create_engine(DEFAULT_PARAM_SET, 128)
    e.load(probe.reshape(1, -1))
    blocks = e.search(
        open_key_bundle(keys.public_bundle()), keys.encrypt_probe(probe), lambda: False
    )
    assert abs(again.decrypt_scores(blocks[0].ciphertext, 1)[0] - 1.0) < 1e-4
