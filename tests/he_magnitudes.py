"""What a requester reads from masked magnitudes, measured on a real engine's result: the
shared experiment of the tests that state each parameter set's magnitude bound."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.he.engines import create_engine
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.keys import EvaluationKeys

NEAR, FAR, THRESHOLD = 0.40, 0.05, 0.45


@dataclass(frozen=True)
class NearAndFar:
    total_variation: float  # between the log-magnitudes of the two halves
    near_in_smaller_half: float  # share of the near records among the smaller magnitudes


def near_and_far(keys: RequesterKeys, evaluation: EvaluationKeys, seed: int) -> NearAndFar:
    """One block: half the register scores NEAR (just below the threshold), half FAR: a
    factor 8 (3 bits) in ``|s - t|``. Every value must decrypt negative (the sign is what
    the requester may read); the rest is what its magnitudes tell of the two halves."""
    rng = np.random.default_rng(seed)
    probe = unit_vectors(rng, 1, 128)[0]
    near = np.stack([capture(probe, rng, NEAR) for _ in range(4096)])
    far = np.stack([capture(probe, rng, FAR) for _ in range(4096)])
    engine = create_engine(keys.params, 128)
    engine.load(np.concatenate([near, far]))
    out = engine.search(evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False)
    values = keys.decrypt_values(out.blocks[0])
    flat = np.concatenate([values.real, values.imag])
    rows = np.array([out.layout.row(0, p) for p in range(flat.shape[0])])
    assert np.all(flat < 0)
    logs = np.log2(np.abs(flat))
    bins = np.linspace(logs.min(), logs.max(), 40)
    h_near, _ = np.histogram(logs[rows < 4096], bins=bins)
    h_far, _ = np.histogram(logs[rows >= 4096], bins=bins)
    total_variation = 0.5 * np.abs(h_near / h_near.sum() - h_far / h_far.sum()).sum()
    order = np.argsort(np.abs(flat))
    smaller = rows[order[: flat.shape[0] // 2]]
    return NearAndFar(float(total_variation), float(np.mean(smaller < 4096)))
