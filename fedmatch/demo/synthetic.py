"""Synthetic registers and captures for the demo, tests and benchmarks.

Templates are random unit vectors (what a face model's embeddings of distinct people look
like to first order: nearly orthogonal in high dimension). A "capture" of a person is a unit
vector at a chosen cosine to that person's identity vector, so genuine and impostor scores
are controlled exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from fedmatch.domain import Category, Sex

__all__ = ["capture", "synthetic_metadata", "unit_vectors"]


def unit_vectors(rng: np.random.Generator, n: int, dimension: int) -> npt.NDArray[np.float32]:
    v = rng.standard_normal((n, dimension))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32)


def capture(
    identity: npt.NDArray[np.floating], rng: np.random.Generator, similarity: float
) -> npt.NDArray[np.float32]:
    """A unit vector whose cosine with ``identity`` is exactly ``similarity``."""
    t = np.asarray(identity, dtype=np.float64)
    t = t / np.linalg.norm(t)
    noise = rng.standard_normal(size=(t.shape[0],))
    noise -= float(noise @ t) * t
    noise /= np.linalg.norm(noise)
    out = similarity * t + np.sqrt(max(0.0, 1.0 - similarity**2)) * noise
    result: npt.NDArray[np.float32] = (out / np.linalg.norm(out)).astype(np.float32)
    return result


_PLACES = {
    "IT": ["Lampedusa", "Pozzallo", "Bari"],
    "GR": ["Lesvos", "Samos", "Evros"],
    "ES": ["Ceuta", "Melilla", "Almeria"],
}


def synthetic_metadata(
    member_state: str, n: int, rng: np.random.Generator, today: dt.date, first: int = 0
) -> Iterator[tuple[str, Category, dt.date, str, dt.date, Sex]]:
    """(reference, category, event_date, event_place, capture_date, sex) for n records,
    numbered from ``first``."""
    categories = list(Category)
    weights = np.array([0.5, 0.25, 0.12, 0.06, 0.04, 0.03])
    places = _PLACES.get(member_state, [f"{member_state} office {i}" for i in range(1, 4)])
    cats = rng.choice(len(categories), size=n, p=weights / weights.sum())
    days = rng.integers(30, 5 * 365, size=n)
    sexes = rng.choice([Sex.FEMALE, Sex.MALE], size=n)
    for i in range(n):
        event = today - dt.timedelta(days=int(days[i]))
        yield (
            f"{member_state}-SYN-{first + i:08d}",
            categories[int(cats[i])],
            event,
            places[i % len(places)],
            event,
            Sex(sexes[i]),
        )
