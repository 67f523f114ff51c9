"""Issue 15, attack 1: a requester that crafts its key material and probe reads the register.

The construction of the issue: Galois keys ``(k0, k1) = (0, P * gadget_j)`` make every key
switch return ``(0, sigma(c1))``, so the node's rotations and conjugation act on the two
parts of a ciphertext separately; the public key ``(0, 0)`` makes the re-randomization add
nothing to the second part; the probe ``(0, Delta * encode(p))``. The first part of the
answer then decodes to ``-t * mask``, the second to ``mask * score``: every record's score,
exactly. The attack is run first against the kernel with both defenses out of the way, to
show it is real; then each defense is shown to stop it.
"""

from __future__ import annotations

import numpy as np
import pytest
import tenseal.sealapi as seal

from fedmatch.demo.synthetic import unit_vectors
from fedmatch.errors import HEError
from fedmatch.he import resultfmt, sealfmt, sealio, uniform
from fedmatch.he.engine import OpenedProbe, PackedEngine
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.keys import EvaluationKeys, KeyBundle, open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET
from tests.federation import shared_keys

THRESHOLD = 0.5
PARAMS = DEFAULT_PARAM_SET


def _crafted_bundle(keys: RequesterKeys) -> KeyBundle:
    """The issue's key material, built from the requester's honest bundle."""
    honest = keys.public_bundle()
    body, version = sealfmt.unpack(honest.public_key, "public key", 1 << 26)
    sealfmt.ciphertext_at(body, 0, "public key").data[:] = 0
    public_key = sealfmt.pack(body, version)
    moduli = uniform.key_moduli(PARAMS)
    special = moduli[-1]
    body, version = sealfmt.unpack(honest.galois_keys, "rotation keys", 1 << 28)
    for _, j, key in sealfmt.kswitch_keys(body, "rotation keys"):
        key.data[:] = 0
        # P * gadget_j: the constant P (mod q_j) in limb j, so in every NTT slot of it.
        key.data[1, j] = special % moduli[j]
    galois_keys = sealfmt.pack(body, version)
    return KeyBundle(
        honest.param_set, honest.parms, public_key, galois_keys, relin_keys=honest.relin_keys
    )


def _load_unchecked(bundle: KeyBundle) -> EvaluationKeys:
    """What a node without the uniform-part check would have made of the bundle (SEAL
    loads it: nothing else stood in the way)."""
    ctx = PARAMS.context()
    public, galois, relin = seal.PublicKey(), seal.GaloisKeys(), seal.RelinKeys()
    sealio.load_bytes(lambda p: public.load(ctx, p), bundle.public_key, "public key")
    sealio.load_bytes(lambda p: galois.load(ctx, p), bundle.galois_keys, "rotation keys")
    sealio.load_bytes(lambda p: relin.load(ctx, p), bundle.relin_keys, "relin keys")
    return EvaluationKeys(PARAMS, "crafted", galois, public, relin, bundle)


def _probe_parts(
    keys: RequesterKeys,
    c0: np.ndarray | None,
    c1: np.ndarray | None,
    scale: float = PARAMS.query_scale,
) -> bytes:
    """A two-part ciphertext at the top level with the given NTT-form parts (None: zero)."""
    ct = seal.Ciphertext()
    keys._encryptor.encrypt_zero(ct)
    ct.scale = scale
    body, version = sealfmt.unpack(sealio.to_bytes(ct), "ciphertext", 1 << 26)
    data = sealfmt.ciphertext_at(body, 0, "ciphertext").data
    data[0] = 0 if c0 is None else c0
    data[1] = 0 if c1 is None else c1
    return sealfmt.pack(body, version)


def _encoded(keys: RequesterKeys, probe: np.ndarray) -> np.ndarray:
    """``Delta * encode(p)`` in NTT form, replicated as the kernel expects."""
    from fedmatch.he.layout import replicate_probe

    plain = seal.Plaintext()
    slots = replicate_probe(probe, PARAMS.slots).tolist()
    keys._encoder.encode(slots, keys._ctx.first_parms_id(), PARAMS.query_scale, plain)
    body, _ = sealfmt.unpack(sealio.to_bytes(plain), "plaintext", 1 << 26)
    _, words = sealfmt.plaintext_words(body, "plaintext")
    return words.reshape(len(uniform.data_moduli(PARAMS)), PARAMS.poly_modulus_degree).copy()


def _part(keys: RequesterKeys, result: bytes, index: int) -> np.ndarray:
    """Decode one part of a (compact) result on its own: the decryption with the secret 0
    reads the first part; the second read the same way."""
    values = resultfmt.part_slots(result, PARAMS, index)
    return np.concatenate([values.real, values.imag])


def _read_out(keys: RequesterKeys, result: bytes) -> np.ndarray:
    """The issue's estimate of every score: ``-t * second / first``."""
    estimate: np.ndarray = -THRESHOLD * _part(keys, result, 1) / _part(keys, result, 0)
    return estimate


@pytest.fixture(scope="module")
def register() -> tuple[PackedEngine, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(150)
    rows = unit_vectors(rng, PARAMS.block_records, 128)
    engine = PackedEngine(PARAMS, 128)
    engine.load(rows)
    probe = unit_vectors(rng, 1, 128)[0]
    return engine, rows, rows @ probe


def test_the_attack_reads_every_score_when_nothing_stops_it(
    register: tuple[PackedEngine, np.ndarray, np.ndarray],
) -> None:
    """The kernel itself, fed crafted keys and an unseeded probe (the node refuses both
    before this point): the read-out is the scores."""
    engine, _, scores = register
    keys = shared_keys()
    crafted = _load_unchecked(_crafted_bundle(keys))
    probe = unit_vectors(np.random.default_rng(150), PARAMS.block_records + 1, 128)[-1]
    query = seal.Ciphertext()
    raw = _probe_parts(keys, None, _encoded(keys, probe))
    sealio.load_bytes(lambda p: query.load(PARAMS.context(), p), raw, "probe")
    probe_ct = OpenedProbe(query, None)  # the kernel alone: no norm copy
    (result,) = engine.score(crafted, probe_ct, THRESHOLD, [(engine._blocks[0], 0)], lambda: False)
    estimate = _read_out(keys, result)
    assert np.corrcoef(estimate, scores)[0, 1] > 0.99
    assert np.max(np.abs(estimate - scores)) < 1e-2


def test_crafted_key_material_is_refused_at_registration() -> None:
    keys = shared_keys()
    crafted = _crafted_bundle(keys)
    with pytest.raises(HEError, match="uniform part is not the federation's"):
        open_key_bundle(crafted)
    honest = keys.public_bundle()
    # Each part alone is refused too: the public key (0, 0), and the Galois keys.
    relin = honest.relin_keys
    for bundle in (
        KeyBundle(
            honest.param_set, honest.parms, crafted.public_key, honest.galois_keys,
            relin_keys=relin,
        ),
        KeyBundle(
            honest.param_set, honest.parms, honest.public_key, crafted.galois_keys,
            relin_keys=relin,
        ),
    ):  # fmt: skip
        with pytest.raises(HEError, match="uniform part is not the federation's"):
            open_key_bundle(bundle)


def test_keys_made_by_seal_alone_have_a_foreign_uniform_part() -> None:
    """Honest SEAL keys with SEAL's own uniform parts: refused (a requester cannot pick
    its own, however innocent)."""
    ctx = PARAMS.context()
    keygen = seal.KeyGenerator(ctx)
    public, galois, relin = seal.PublicKey(), seal.GaloisKeys(), seal.RelinKeys()
    keygen.create_public_key(public)
    keygen.create_galois_keys(list(PARAMS.galois_elements()), galois)
    keygen.create_relin_keys(relin)
    bundle = KeyBundle(
        PARAMS.name, sealio.to_bytes(PARAMS.parms()), sealio.to_bytes(public),
        sealio.to_bytes(galois), relin_keys=sealio.to_bytes(relin),
    )  # fmt: skip
    with pytest.raises(HEError, match="uniform part is not the federation's"):
        open_key_bundle(bundle)


def test_an_unseeded_probe_is_refused(
    register: tuple[PackedEngine, np.ndarray, np.ndarray],
) -> None:
    engine, _, _ = register
    keys = shared_keys()
    evaluation = open_key_bundle(keys.public_bundle())
    probe = unit_vectors(np.random.default_rng(1), 1, 128)[0]
    chosen = _probe_parts(keys, None, _encoded(keys, probe))
    with pytest.raises(HEError, match="not in seeded form"):
        engine.search(evaluation, chosen, THRESHOLD, lambda: False)
    # The seeded form with a second part of its own: refused, not overwritten in silence.
    copy = _probe_parts(keys, None, None, PARAMS.norm_scale)
    sent = uniform.probe_envelope(bytes(32), bytes(32), chosen, copy)
    with pytest.raises(HEError, match="second part must be empty"):
        engine.search(evaluation, sent, THRESHOLD, lambda: False)


@pytest.mark.parametrize("first", ["zero", "probe"])
def test_crafted_keys_past_registration_read_nothing_through_a_seeded_probe(
    register: tuple[PackedEngine, np.ndarray, np.ndarray], first: str
) -> None:
    """Even keys that got past registration (the check taken away here) read nothing once
    the probe's second part is the node's: the requester chooses only the first part, and
    the read-out is uncorrelated with the scores (|r| < 0.05)."""
    engine, rows, scores = register
    keys = shared_keys()
    crafted = _load_unchecked(_crafted_bundle(keys))
    probe = unit_vectors(np.random.default_rng(150), PARAMS.block_records + 1, 128)[-1]
    c0 = None if first == "zero" else _encoded(keys, probe)
    copy = _probe_parts(keys, None, None, PARAMS.norm_scale)
    sent = uniform.probe_envelope(bytes(range(32)), bytes(32), _probe_parts(keys, c0, None), copy)
    out = engine.search(crafted, sent, THRESHOLD, lambda: False)
    estimate = np.empty(rows.shape[0])
    for block, result in enumerate(out.blocks):
        values = _read_out(keys, result)
        for position, value in enumerate(values):
            row = out.layout.row(block, position)
            if row is not None:
                estimate[row] = value
    finite = np.isfinite(estimate)
    assert abs(np.corrcoef(estimate[finite], scores[finite])[0, 1]) < 0.05
    # The second part alone (mask times score in the attack) says nothing either.
    assert abs(np.corrcoef(_part(keys, out.blocks[0], 1), scores)[0, 1]) < 0.05
