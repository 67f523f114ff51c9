"""Whether an encoded photo may be decoded: its format, its header, and what decoding costs.

:func:`check_photo` is the one gate every decode of untrusted bytes goes through (the face
pipeline, the evaluation's duplicate screening, the benchmark). It refuses, before any pixel
is decoded:

- every format but JPEG, PNG and JPEG 2000, by name (:mod:`.formats`);
- a header that is malformed or outside its format's accepted profile (:mod:`.jpeg`,
  :mod:`.png`, :mod:`.jpeg2000`);
- more than :data:`MAX_PIXELS` pixels;
- a photo whose decoding would need more than :data:`MAX_DECODE_BYTES` of memory, by
  :func:`decode_bytes`.

Why this bounds the memory of a decode: OpenCV (like PIL) allocates the decoded image from
the header it reads, which is the header read here (the one frame header of a JPEG, the IHDR
of a PNG, the SIZ segment of a JPEG 2000 codestream, checked against its ihdr box), and never
grows it: data beyond what the header declares is skipped or refused, missing data leaves the
rest blank (tested with lying headers in ``tests/unit/test_photo_files.py``). The decoder's
other allocations scale with the same header under each format's profile, and
:func:`decode_bytes` is an upper bound on the peak, measured per format (the same tests
decode the costliest accepted files in a fresh process and compare). A refusal costs reading
the header, and for a PNG inflating at most what its accepted header declares.
"""

from __future__ import annotations

from collections.abc import Callable

from fedmatch.biometrics.errors import UnreadableImage
from fedmatch.biometrics.photofile import jpeg, jpeg2000, png
from fedmatch.biometrics.photofile.formats import ACCEPTED_TEXT, JPEG, JPEG2000, PNG, identify
from fedmatch.biometrics.photofile.header import HeaderError, PhotoHeader

__all__ = ["MAX_DECODE_BYTES", "MAX_PIXELS", "check_photo", "decode_bytes", "read_header"]

# A photograph for enrolment or search is at most a few tens of megapixels.
MAX_PIXELS = 50_000_000
# Peak memory of one decode: what a 50 MP colour JPEG needs (see decode_bytes).
MAX_DECODE_BYTES = 12 * MAX_PIXELS

# Bytes per pixel of every decode into 8-bit BGR: the result and the one copy imdecode makes
# of it (measured: 6.2 bytes per pixel for JPEG, PNG, TIFF and WebP alike).
_RESULT_BYTES = 6
# Decoders work on blocks: a side is counted as if rounded up to this many pixels (a JPEG's
# largest MCU is 32 pixels, a code-block 64), so that a 1-pixel-wide image is not cheap.
_BLOCK = 64
# OpenJPEG's state per tile, beyond its samples (measured about 12 KB per tile of a 3-component
# image with 5 decomposition levels; counted for 4 components and 10 levels).
_TILE_BYTES = 64 << 10
_READERS: dict[str, Callable[[bytes], PhotoHeader]] = {
    JPEG: jpeg.read,
    PNG: png.read,
    JPEG2000: jpeg2000.read,
}


def _working_bytes(header: PhotoHeader) -> int:
    """Bytes per stored sample a decoder holds beyond the result."""
    if header.format == JPEG:
        # libjpeg keeps a 16-bit coefficient per sample of a progressive or multi-scan file
        # (measured 9.1 bytes per pixel in all for a progressive 4:4:4 colour JPEG).
        return 2
    if header.format == PNG:
        # libpng decodes a row at a time into the result; counted as if the stored samples
        # were held once (OpenCV does so when asked for full depth).
        return header.bytes_per_sample
    # OpenJPEG: a 32-bit plane per component, a tile's working copy and the code-block state
    # (measured up to 5.8 bytes per sample under the profile, 16 x 16 code-blocks).
    return 8


def decode_bytes(header: PhotoHeader) -> int:
    """An upper bound on the peak memory of decoding the photo ``header`` describes."""
    padded = -(-header.width // _BLOCK) * _BLOCK * (-(-header.height // _BLOCK) * _BLOCK)
    tiles = header.tiles * _TILE_BYTES if header.format == JPEG2000 else 0
    return padded * (_RESULT_BYTES + header.channels * _working_bytes(header)) + tiles


def read_header(data: bytes) -> PhotoHeader:
    """The header of a photo in an accepted format, with no bound applied;
    :class:`UnreadableImage` (naming no file) when there is none."""
    return _header(data, "image")


def _header(data: bytes, name: str) -> PhotoHeader:
    if not data:
        raise UnreadableImage(f"{name}: empty file")
    found = identify(data)
    if found is None:
        raise UnreadableImage(
            f"{name}: not an image in an accepted photo format ({len(data):,} bytes); "
            f"{ACCEPTED_TEXT}"
        )
    reader = _READERS.get(found)
    if reader is None:
        raise UnreadableImage(f"{name}: {found} is not an accepted photo format; {ACCEPTED_TEXT}")
    try:
        return reader(data)
    except HeaderError as exc:
        raise UnreadableImage(f"{name}: {found} refused unread: {exc}") from None


def check_photo(data: bytes, name: str) -> PhotoHeader:
    """The header of a photo that may be decoded; :class:`UnreadableImage` naming ``name``
    (a display name, never a path) and the reason otherwise. Never decodes a pixel."""
    header = _header(data, name)
    size = f"{header.width} x {header.height}"
    if header.pixels > MAX_PIXELS:
        raise UnreadableImage(f"{name}: {size} pixels, more than {MAX_PIXELS:,} (refused unread)")
    need = decode_bytes(header)
    if need > MAX_DECODE_BYTES:
        raise UnreadableImage(
            f"{name}: a {size} {header.format} of {header.channels} components of "
            f"{header.bits} bits needs about {need // 10**6:,} MB to decode, more than "
            f"{MAX_DECODE_BYTES // 10**6:,} MB (refused unread)"
        )
    if header.format == PNG:
        try:
            png.check_streams(data)
        except HeaderError as exc:
            raise UnreadableImage(f"{name}: PNG refused unread: {exc}") from None
    return header
