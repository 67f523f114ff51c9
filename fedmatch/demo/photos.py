"""Photographs for ``fedmatch demo``.

On a fresh machine the demo uses images that installed packages ship: insightface carries a
portrait (``Tom_Hanks_54745.png``) and a group photo (``t1.jpg``). The portrait is the
traveller; the other captures of the traveller are made from it by :func:`second_capture`,
a documented, realistic transformation (a different day at a different border post: head
turned a little, camera further away, other light, softer focus, stronger JPEG
compression). A face from the group photo is the impostor. Given ``--photos DIR`` with an
``identities.csv`` (``file,identity``), real different photographs of one person are used
instead, and a photo of someone else is the impostor.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from fedmatch.errors import InvalidInput

__all__ = [
    "DemoPhotos",
    "encoded",
    "folder_photos",
    "packaged_photos",
    "read_identities",
    "read_image",
    "second_capture",
]

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class DemoPhotos:
    source: str
    enrol_b: Path | Image  # the capture enrolled at node B
    enrol_c: Path | Image  # the capture enrolled at node C
    probe: Path | Image  # a different capture, looked up from node A
    impostor: Path | Image
    impostor_pick: int | Literal["largest"] | None = None


def encoded(photo: Path | Image) -> bytes:
    """A demo photograph as the bytes a camera would send: the file as it is, or a made
    capture (:func:`second_capture`) as JPEG."""
    if isinstance(photo, Path):
        return photo.read_bytes()
    import cv2

    ok, data = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise InvalidInput("a demo capture could not be encoded")
    return bytes(data.tobytes())


def read_image(path: Path) -> Image:
    # Decoded as the face pipeline decodes a photo: format and size checked first.
    from fedmatch.biometrics.photofile import decode_photo

    try:
        data = path.read_bytes()
    except OSError:
        raise InvalidInput(f"demo photo {path.name} could not be read") from None
    return decode_photo(data, path.name)


def second_capture(image: Image, variant: int) -> Image:
    """A realistic other capture of the same face (BGR in, BGR out).

    Rotation by 3 to 5 degrees (head pose), scaling to 85-90 % (distance to the camera),
    gamma 0.8 or 1.25 and contrast 0.9 (lighting), Gaussian blur with sigma 0.8 (focus), and a
    JPEG round trip at quality 70 (a different capture device). ``variant`` picks the sign
    of the rotation and the direction of the light change, so two variants differ.
    """
    import cv2

    h, w = image.shape[:2]
    angle = 4.0 if variant % 2 == 0 else -3.0
    scale = 0.88 if variant % 2 == 0 else 0.85
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    out = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
    gamma = 0.8 if variant % 2 == 0 else 1.25
    lut = np.clip(((np.arange(256) / 255.0) ** gamma) * 255.0 * 0.9 + 12, 0, 255)
    out = cv2.LUT(out, lut.astype(np.uint8))
    out = cv2.GaussianBlur(out, (0, 0), 0.8)
    ok, jpeg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 70])
    if not ok:
        raise InvalidInput("demo photo could not be re-encoded")
    return np.asarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), dtype=np.uint8)


def packaged_photos() -> DemoPhotos:
    images = resources.files("insightface") / "data" / "images"
    portrait = Path(str(images / "Tom_Hanks_54745.png"))
    group = Path(str(images / "t1.jpg"))
    face = read_image(portrait)
    return DemoPhotos(
        source="photos shipped by the insightface package (portrait + group photo)",
        enrol_b=face,
        enrol_c=second_capture(face, 1),
        probe=second_capture(face, 2),
        impostor=group,
        impostor_pick="largest",
    )


def read_identities(folder: Path) -> dict[str, list[str]]:
    """The photo files of each identity, from ``folder/identities.csv`` (file,identity)."""
    index = folder / "identities.csv"
    try:
        with index.open(newline="") as fh:
            rows = [(r["file"], r["identity"]) for r in csv.DictReader(fh)]
    except (OSError, KeyError) as exc:
        raise InvalidInput(f"{index.name} with columns file,identity is required ({exc})") from None
    by_person: dict[str, list[str]] = {}
    for file, person in rows:
        by_person.setdefault(person, []).append(file)
    return by_person


def folder_photos(folder: Path) -> DemoPhotos:
    """Three photos of the identity with the most photos, and one of another identity."""
    by_person = read_identities(folder)
    person, files = max(by_person.items(), key=lambda kv: (len(kv[1]), kv[0]))
    others = sorted(f for p, fs in by_person.items() if p != person for f in fs)
    if len(files) < 3 or not others:
        raise InvalidInput("--photos needs one identity with 3 photos and another identity")
    files = sorted(files)
    return DemoPhotos(
        source=f"photos from {folder.name} ({person}: {', '.join(files[:3])})",
        enrol_b=folder / files[0],
        enrol_c=folder / files[1],
        probe=folder / files[2],
        impostor=folder / others[0],
    )
