"""What a photo's header says, read without decoding a pixel: :class:`PhotoHeader`.

The format readers (:mod:`~fedmatch.biometrics.photofile.jpeg`,
:mod:`~fedmatch.biometrics.photofile.png`, :mod:`~fedmatch.biometrics.photofile.jpeg2000`)
return one, or raise :class:`HeaderError` with the reason a file is refused; the reason names
structures of the format and counts, never bytes of the file.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HeaderError", "PhotoHeader", "u16", "u32"]


class HeaderError(Exception):
    """A header that is malformed or outside the accepted profile of its format. Internal:
    :func:`~fedmatch.biometrics.photofile.check.check_photo` turns it into
    :class:`~fedmatch.biometrics.errors.UnreadableImage` with the file's name."""


@dataclass(frozen=True)
class PhotoHeader:
    """The size of the image a decoder will allocate, as the header declares it.

    ``channels`` and ``bits`` are what the file stores (components and the largest sample
    precision), not what OpenCV hands back (always 8-bit BGR here).
    """

    format: str
    width: int
    height: int
    channels: int
    bits: int
    tiles: int = 1
    """Tiles a JPEG 2000 codestream is cut into (each has its own decoder state)."""

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise HeaderError(f"an image of {self.width} x {self.height} pixels")
        if not 1 <= self.channels <= 4:
            raise HeaderError(f"{self.channels} colour components (at most 4 are accepted)")
        if not 1 <= self.bits <= 16:
            raise HeaderError(f"{self.bits}-bit samples (at most 16 are accepted)")

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.bits <= 8 else 2


def u16(data: bytes | memoryview, pos: int) -> int:
    """The big-endian 16-bit number at ``pos``; :class:`HeaderError` past the end."""
    if pos + 2 > len(data):
        raise HeaderError("the header ends early")
    return int.from_bytes(data[pos : pos + 2], "big")


def u32(data: bytes | memoryview, pos: int) -> int:
    """The big-endian 32-bit number at ``pos``; :class:`HeaderError` past the end."""
    if pos + 4 > len(data):
        raise HeaderError("the header ends early")
    return int.from_bytes(data[pos : pos + 4], "big")
