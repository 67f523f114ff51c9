"""Encoded photo -> 8-bit BGR pixels, only after :func:`~.check.check_photo` let it through."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from fedmatch.biometrics.errors import UnreadableImage
from fedmatch.biometrics.photofile.check import check_photo

__all__ = ["decode_photo"]


def decode_photo(data: bytes, name: str) -> npt.NDArray[np.uint8]:
    """The photo's pixels (BGR, its EXIF orientation applied), or :class:`UnreadableImage`
    naming ``name``: refused unread by :func:`check_photo`, or not decodable."""
    header = check_photo(data, name)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        raise UnreadableImage(f"{name}: not a decodable {header.format} ({len(data):,} bytes)")
    # The decoder allocated what the header read by check_photo declares (turned by the EXIF
    # orientation); anything else means the two read different headers, and its pixels are
    # not used.
    if sorted(image.shape[:2]) != sorted((header.height, header.width)):
        raise UnreadableImage(
            f"{name}: decoded to {image.shape[1]} x {image.shape[0]} pixels, its "
            f"{header.format} header says {header.width} x {header.height}"
        )
    return np.asarray(image, dtype=np.uint8)
