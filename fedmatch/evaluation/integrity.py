"""What an evaluation counts: one image per picture, one label per picture.

Copies inflate an evaluation without adding evidence: 25 copies of 28 photos make 196,875
impostor pairs out of 315, enough to "show" an FMR far below what 28 photos can. This module
finds copies and near-copies of a picture and keeps the first of them (in listing order), by
four rules, each reported under its own name:

- ``identical_file``: the same file bytes (SHA-256);
- ``identical_pixels``: the same decoded pixels (SHA-256 of mode, size and pixels after the
  EXIF orientation is applied), which catches a lossless re-encode;
- ``near_identical_pixels``: greyscale 32 x 32 thumbnails whose correlation is above the
  limit (0.99 by default), which catches a lossy re-encode or a shift by a pixel (measured
  on the shared photos: at least 0.996 for both, at most 0.45 between distinct photos);
- ``near_identical_template``: two templates of one identity whose cosine similarity is
  above the limit (0.99 by default). It is applied after the face model has run, to every
  picture the first three rules kept, so it also catches copies the pixels rules cannot
  read (a file PIL does not decode).

The pixel rules decode (with PIL) only what the face pipeline would decode, under the same
bounds: :func:`fedmatch.biometrics.photofile.check_photo` (JPEG, PNG or JPEG 2000, header
read first); any other file has its bytes hashed only.

The same picture under two identity labels is a labelling error, not a duplicate: it raises
:class:`~fedmatch.errors.InvalidInput` naming both files. Near-copies under two labels do
too, by any of the four rules: no two photos of different people come within 0.99.

The module also computes the digest that names the input of a run: SHA-256 over the sorted
lines ``file TAB sha256(file bytes) TAB identity``.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmatch.biometrics.errors import UnreadableImage
from fedmatch.biometrics.photofile import check_photo
from fedmatch.errors import InvalidInput

__all__ = [
    "NEAR_IDENTICAL",
    "REASONS",
    "FileFacts",
    "Screening",
    "file_facts",
    "input_digest",
    "screen_files",
    "screen_templates",
]

NEAR_IDENTICAL = 0.99
"""Default limit of both near-identity rules (thumbnail correlation, template cosine)."""

REASONS = (
    "identical_file",
    "identical_pixels",
    "near_identical_pixels",
    "near_identical_template",
)

# Thumbnails are this many pixels square: coarse enough that a one-pixel shift or JPEG noise
# barely moves them, fine enough that two different photos stay far apart.
_THUMB = 32
# PIL's name of each format the face pipeline accepts: PIL opens that one and no other.
_PIL_FORMATS = {"JPEG": ("JPEG",), "PNG": ("PNG",), "JPEG 2000": ("JPEG2000",)}
# Cells of a similarity block held in memory at once (float32 each).
_BLOCK_CELLS = 8_000_000
# Pairs named in a refusal message, at most.
_NAMED = 5

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FileFacts:
    """What the pixel rules know about one file."""

    sha256: str
    pixels_sha256: str | None = None
    """None when the file is not an image this module can decode."""
    thumbnail: FloatArray | None = field(default=None, compare=False, repr=False)
    """Zero-mean unit-norm greyscale thumbnail; None when undecodable or uniform."""


def file_facts(paths: Sequence[Path]) -> list[FileFacts]:
    """Hashes each file's bytes and, when it decodes as an image, its pixels and thumbnail;
    a file whose bytes were seen before is not decoded again."""
    seen: dict[str, FileFacts] = {}
    facts: list[FileFacts] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"{path.name}: cannot be read ({exc.strerror})") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest not in seen:
            seen[digest] = _decoded_facts(digest, data)
        facts.append(seen[digest])
    return facts


def _decoded_facts(digest: str, data: bytes) -> FileFacts:
    from PIL import Image, ImageOps

    # Only what the face pipeline would decode is decoded here, under the same bounds
    # (format, header, pixels, memory); anything else has its bytes hashed only.
    try:
        header = check_photo(data, "image")
    except UnreadableImage:
        return FileFacts(digest)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=_PIL_FORMATS[header.format]) as opened:
                # PIL reads the header itself: a size other than the one checked is refused.
                if tuple(opened.size) != (header.width, header.height):
                    return FileFacts(digest)
                image = ImageOps.exif_transpose(opened)
                image.load()
    except Exception:  # noqa: BLE001 - whatever PIL cannot decode has no pixel facts
        return FileFacts(digest)
    pixels = hashlib.sha256()
    pixels.update(f"{image.mode} {image.size[0]}x{image.size[1]}\n".encode())
    pixels.update(image.tobytes())
    grey = image.convert("L").resize((_THUMB, _THUMB), Image.Resampling.BOX)
    thumb = np.asarray(grey, dtype=np.float64).ravel()
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    # A uniform picture has no shape to compare; the byte and pixel hashes still apply.
    thumbnail = (thumb / norm).astype(np.float32) if norm > 1e-6 else None
    return FileFacts(digest, pixels.hexdigest(), thumbnail)


def input_digest(
    files: Sequence[str], identities: Sequence[str], facts: Sequence[FileFacts]
) -> str:
    """SHA-256 over the sorted lines ``file TAB sha256 TAB identity`` (UTF-8, each ending
    in a newline): it changes when a file is added, removed, relabelled or altered."""
    lines = sorted(
        f"{f}\t{x.sha256}\t{i}\n" for f, i, x in zip(files, identities, facts, strict=True)
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass
class Screening:
    """The outcome of the rules: which images are kept, and why each other one was not."""

    kept: list[int]
    """Indices into the listing, in listing order."""
    dropped: dict[int, tuple[str, int]] = field(default_factory=dict)
    """``dropped[i] = (reason, j)``: image ``i`` is a copy of kept image ``j``."""

    def by_reason(self) -> dict[str, int]:
        counts = Counter(reason for reason, _ in self.dropped.values())
        return {r: counts.get(r, 0) for r in REASONS}

    def original(self, index: int) -> int:
        """The kept image that ``index`` stands for (itself when kept)."""
        while index in self.dropped:
            index = self.dropped[index][1]
        return index


def _refuse(
    files: Sequence[str], pairs: list[tuple[int, int, str]], identities: Sequence[str], what: str
) -> None:
    named = "; ".join(
        f"{files[i]!r} ({identities[i]}) and {files[j]!r} ({identities[j]}): {how}"
        for i, j, how in pairs[:_NAMED]
    )
    more = f" and {len(pairs) - _NAMED} more" if len(pairs) > _NAMED else ""
    raise InvalidInput(f"{what}: {named}{more}")


def _cross_identity_error(
    files: Sequence[str], identities: Sequence[str], pairs: list[tuple[int, int, str]]
) -> None:
    if pairs:
        _refuse(
            files,
            pairs,
            identities,
            "the same picture is labelled as two different people (a labelling error; fix "
            "identities.csv)",
        )


def _similar_pairs(vectors: FloatArray, limit: float) -> list[tuple[int, int, float]]:
    """Every pair ``(i, j, similarity)`` with ``i < j`` of rows whose dot product exceeds
    ``limit``, computed in blocks of rows."""
    n = vectors.shape[0]
    found: list[tuple[int, int, float]] = []
    block = max(1, _BLOCK_CELLS // max(n, 1))
    for start in range(0, n, block):
        stop = min(n, start + block)
        scores = vectors[start:stop] @ vectors[start:].T
        rows, cols = np.nonzero(scores > limit)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i, j = start + r, start + c
            if j > i:
                found.append((i, j, float(scores[r, c])))
    return found


def _apply(
    screening: Screening,
    candidates: list[int],
    keys: dict[int, Any],
    reason: str,
    files: Sequence[str],
    identities: Sequence[str],
) -> None:
    """Drops later images whose key equals an earlier kept image's (exact rules)."""
    first: dict[Any, int] = {}
    clashes: list[tuple[int, int, str]] = []
    for i in candidates:
        key = keys.get(i)
        if key is None:
            continue
        if key not in first:
            first[key] = i
            continue
        j = first[key]
        if identities[i] != identities[j]:
            clashes.append((j, i, reason.replace("_", " ")))
        else:
            screening.dropped[i] = (reason, j)
    _cross_identity_error(files, identities, clashes)


def _apply_similar(
    screening: Screening,
    candidates: list[int],
    vectors: dict[int, FloatArray],
    limit: float,
    reason: str,
    files: Sequence[str],
    identities: Sequence[str],
    what: str,
) -> None:
    """Drops each image that is above ``limit`` from an earlier image still kept."""
    order = [i for i in candidates if i in vectors]
    if len(order) < 2:
        return
    matrix = np.stack([vectors[i] for i in order]).astype(np.float32)
    pairs = _similar_pairs(matrix, limit)
    clashes = [
        (order[a], order[b], f"{what} {s:.4f}")
        for a, b, s in pairs
        if identities[order[a]] != identities[order[b]]
    ]
    _cross_identity_error(files, identities, clashes)
    # Greedy in listing order: an image is dropped for an earlier image that was kept.
    for a, b, _ in sorted(pairs):
        i, j = order[a], order[b]
        if i not in screening.dropped and j not in screening.dropped:
            screening.dropped[j] = (reason, i)


def screen_files(
    files: Sequence[str],
    identities: Sequence[str],
    facts: Sequence[FileFacts],
    limit: float = NEAR_IDENTICAL,
) -> Screening:
    """Applies the three file rules; raises InvalidInput for a picture under two labels."""
    screening = Screening(kept=[])
    every = list(range(len(files)))
    _apply(
        screening, every, {i: facts[i].sha256 for i in every}, "identical_file", files, identities
    )
    left = [i for i in every if i not in screening.dropped]
    _apply(
        screening,
        left,
        {i: facts[i].pixels_sha256 for i in left},
        "identical_pixels",
        files,
        identities,
    )
    left = [i for i in left if i not in screening.dropped]
    thumbnails = {i: t for i in left if (t := facts[i].thumbnail) is not None}
    _apply_similar(
        screening,
        left,
        thumbnails,
        limit,
        "near_identical_pixels",
        files,
        identities,
        "thumbnail correlation",
    )
    screening.kept = [i for i in every if i not in screening.dropped]
    return screening


def screen_templates(
    screening: Screening,
    enrolled: Sequence[int],
    templates: npt.NDArray[np.float64],
    files: Sequence[str],
    identities: Sequence[str],
    limit: float = NEAR_IDENTICAL,
) -> list[int]:
    """Applies the template rule to the enrolled images (rows of unit-norm ``templates``);
    returns the positions (into ``enrolled``) of the rows to keep."""
    position = {index: k for k, index in enumerate(enrolled)}
    vectors = {index: templates[k].astype(np.float32) for k, index in enumerate(enrolled)}
    _apply_similar(
        screening,
        list(enrolled),
        vectors,
        limit,
        "near_identical_template",
        files,
        identities,
        "template similarity",
    )
    screening.kept = [i for i in screening.kept if i not in screening.dropped]
    return [position[i] for i in enrolled if i not in screening.dropped]
