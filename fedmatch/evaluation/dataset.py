"""The listing of an evaluation data set: which image shows whom, and which groups it is in.

Two CSV files describe a data set. ``identities.csv`` has the columns ``file,identity`` (one
row per image; ``file`` is relative to the images folder). The optional ``groups.csv`` has a
``file`` column plus one column per grouping attribute (for example ``sex``, ``age_band``,
``region``, ``skin_tone``); a group is one (attribute, value) pair. An empty cell means the
attribute is not known for that image, which keeps the image out of that attribute's groups.
Malformed listings raise :class:`~fedmatch.errors.InvalidInput` naming the file and line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from fedmatch.errors import InvalidInput

__all__ = ["GroupListing", "ImageListing", "read_groups", "read_identities"]


@dataclass(frozen=True)
class ImageListing:
    """The images of a data set in file order, each with its identity label."""

    files: tuple[str, ...]
    identities: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.files) != len(self.identities):
            raise InvalidInput("an image listing needs one identity per file")
        if len(set(self.files)) != len(self.files):
            raise InvalidInput("an image listing names a file more than once")


@dataclass(frozen=True)
class GroupListing:
    """Grouping attributes in column order, and each file's value per attribute."""

    attributes: tuple[str, ...]
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    """``values[attribute][file]``; files whose cell is empty are absent."""

    unlisted_files: int = 0
    """Rows of the groups file whose image is not in the identities file (ignored)."""


def _rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[dict[str, str]]]:
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [
                {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
                for row in reader
            ]
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(
            f"{path}: not a readable UTF-8 CSV file ({type(exc).__name__})"
        ) from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InvalidInput(
            f"{path}: header must have the column(s) {', '.join(required)}; "
            f"missing {', '.join(missing)}"
        )
    if len(set(header)) != len(header):
        raise InvalidInput(f"{path}: header names a column more than once")
    return header, rows


def read_identities(path: Path, images: Path) -> ImageListing:
    """Reads ``file,identity`` rows; every file must exist under ``images``."""
    _, rows = _rows(path, ("file", "identity"))
    files: list[str] = []
    identities: list[str] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        name, identity = row.get("file", ""), row.get("identity", "")
        if not name or not identity:
            raise InvalidInput(f"{path} line {line}: file and identity must both be non-empty")
        if name in seen:
            raise InvalidInput(f"{path} line {line}: file {name!r} is listed more than once")
        if not (images / name).is_file():
            raise InvalidInput(f"{path} line {line}: {name!r} is not a file under {images}")
        seen.add(name)
        files.append(name)
        identities.append(identity)
    if not files:
        raise InvalidInput(f"{path}: lists no images")
    return ImageListing(tuple(files), tuple(identities))


def read_groups(path: Path, listing: ImageListing) -> GroupListing:
    """Reads ``file,<attribute>...`` rows for the images of ``listing``."""
    header, rows = _rows(path, ("file",))
    attributes = tuple(h for h in header if h != "file")
    if not attributes:
        raise InvalidInput(f"{path}: has no grouping column besides 'file'")
    if any(not a for a in attributes):
        raise InvalidInput(f"{path}: a grouping column has an empty name")
    known = set(listing.files)
    values: dict[str, dict[str, str]] = {a: {} for a in attributes}
    seen: set[str] = set()
    unlisted = 0
    for line, row in enumerate(rows, start=2):
        name = row.get("file", "")
        if not name:
            raise InvalidInput(f"{path} line {line}: file must be non-empty")
        if name in seen:
            raise InvalidInput(f"{path} line {line}: file {name!r} is listed more than once")
        seen.add(name)
        if name not in known:
            unlisted += 1
            continue
        for attribute in attributes:
            value = row.get(attribute, "")
            if value:
                values[attribute][name] = value
    return GroupListing(attributes, values, unlisted)
