"""Reading templates from files: ``.npy`` (1-D or 2-D) or ``.json`` (a list, or a list of
lists), for ``enroll --template``, ``lookup --template`` and ``rights which-states
--template`` (photos go through :mod:`fedmatch.biometrics` instead)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedmatch.errors import InvalidInput

__all__ = ["read_templates"]


def read_templates(path: Path) -> npt.NDArray[np.float32]:
    """Always returns a 2-D float32 array (one row per template), finite and non-empty."""
    if path.suffix not in (".npy", ".json"):
        raise InvalidInput("template file must be .npy or .json")
    try:
        data = (
            np.load(path, allow_pickle=False)
            if path.suffix == ".npy"
            else json.loads(path.read_text())
        )
        arr = np.asarray(data, dtype=np.float32)
    except (OSError, ValueError, TypeError, EOFError) as exc:
        # The message names the file and the failure class, never the file's content.
        raise InvalidInput(
            f"template file {path.name} could not be read ({type(exc).__name__})"
        ) from None
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInput("template file must hold a vector or a matrix of templates")
    if not np.all(np.isfinite(arr)):
        raise InvalidInput("template file holds non-finite values")
    return arr
