"""Slot layout shared by the requester's encryption and the node's kernel.

The probe is zero-padded to a power-of-two dimension ``dp`` and replicated ``slots / dp``
times, so that a rotation by ``i`` puts ``p[(s + i) mod dp]`` in every slot ``s``: that is
what lets one query ciphertext meet 4,096 gallery rows at once through the diagonals
``D_i[s] = M[s, (s + i) mod dp]``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedmatch.errors import InvalidInput

__all__ = ["MAX_DIMENSION", "padded_dimension", "replicate_probe"]

MAX_DIMENSION = 4096


def padded_dimension(dimension: int, slots: int) -> int:
    """Smallest power of two >= dimension; must divide the slot count."""
    if not 1 <= dimension <= min(MAX_DIMENSION, slots):
        raise InvalidInput(f"template dimension must be between 1 and {min(MAX_DIMENSION, slots)}")
    return 1 << (dimension - 1).bit_length()


def replicate_probe(probe: npt.NDArray[np.float64], slots: int) -> npt.NDArray[np.float64]:
    dp = padded_dimension(probe.shape[0], slots)
    padded = np.zeros(dp, dtype=np.float64)
    padded[: probe.shape[0]] = probe
    return np.tile(padded, slots // dp)
