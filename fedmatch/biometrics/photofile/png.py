"""The header of a PNG file, and a check that its compressed parts hold no more than it says.

libpng allocates nothing from the image data: OpenCV allocates the image from IHDR and libpng
fills it row by row. But libpng inflates every IDAT byte it is given, also beyond the last
row ("Too much image data" is only a warning), and OpenCV gives it all of them: a PNG whose
IHDR says 100 x 100 with a deflate stream of zeros behind it costs seconds of CPU per
megabyte of file (measured: 3 s for 1 GB inflated from a 1 MB file). The same goes for the
compressed metadata chunks (zTXt, iTXt, iCCP), up to libpng's 8 MB per chunk. So the
streams are inflated here first, into a small buffer that is thrown away, and a file whose
image data inflates to more than its IHDR needs, or whose metadata inflates to more than
:data:`MAX_METADATA_BYTES`, is refused: a refusal costs at most the inflating of what an
honest file of that size holds. Animated PNGs (acTL, fcTL, fdAT) are not photographs, and
OpenCV decodes them with several full-size frame buffers: refused.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from fedmatch.biometrics.photofile.formats import PNG
from fedmatch.biometrics.photofile.header import HeaderError, PhotoHeader, u32

__all__ = ["MAX_CHUNKS", "MAX_METADATA_BYTES", "check_streams", "read"]

MAX_CHUNKS = 65_536
MAX_METADATA_BYTES = 4 << 20
_STEP = 1 << 20  # bytes inflated at a time, then dropped
# Colour type -> (samples per pixel stored, bit depths allowed); a palette index is 1 sample.
_COLOUR_TYPES = {
    0: (1, (1, 2, 4, 8, 16)),
    2: (3, (8, 16)),
    3: (1, (1, 2, 4, 8)),
    4: (2, (8, 16)),
    6: (4, (8, 16)),
}
# Adam7 passes: first column, first row, column step, row step.
_ADAM7 = (
    (0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
    (0, 1, 1, 2),
)  # fmt: skip
_ANIMATION = frozenset({b"acTL", b"fcTL", b"fdAT"})


def read(data: bytes) -> PhotoHeader:
    """The IHDR of a file that starts with the PNG signature; :class:`HeaderError` if it is
    malformed."""
    view = memoryview(data)
    width, height, depth, colour, _ = _ihdr(view)
    samples = _COLOUR_TYPES[colour][0]
    # A palette is expanded to RGB, with alpha when tRNS says so: counted as 4 channels.
    return PhotoHeader(PNG, width, height, 4 if colour == 3 else samples, depth)


def check_streams(data: bytes) -> None:
    """Refuses (:class:`HeaderError`) a file with an animation, whose image data inflates to
    more than its IHDR needs, or whose compressed metadata inflates to more than
    :data:`MAX_METADATA_BYTES`. Called once the size in IHDR is accepted: the inflating
    costs at most what an honest file of that size needs."""
    view = memoryview(data)
    width, height, depth, colour, interlaced = _ihdr(view)
    expected = _raw_size(width, height, _COLOUR_TYPES[colour][0] * depth, interlaced)
    if _inflated(_chunks(view), expected + 1) > expected:
        raise HeaderError(
            f"more image data than its {width} x {height} pixels hold (a decompression bomb)"
        )


def _ihdr(view: memoryview) -> tuple[int, int, int, int, bool]:
    """Width, height, bit depth, colour type and interlacing, checked."""
    if u32(view, 8) != 13 or bytes(view[12:16]) != b"IHDR" or len(view) < 29:
        raise HeaderError("no IHDR chunk first")
    width, height = u32(view, 16), u32(view, 20)
    depth, colour, compression, filter_method, interlace = bytes(view[24:29])
    if colour not in _COLOUR_TYPES or depth not in _COLOUR_TYPES[colour][1]:
        raise HeaderError(f"colour type {colour} with {depth}-bit samples")
    if compression != 0 or filter_method != 0 or interlace not in (0, 1):
        raise HeaderError("an unknown compression, filter or interlace method")
    if width == 0 or height == 0 or width > 2**31 - 1 or height > 2**31 - 1:
        raise HeaderError(f"an image of {width} x {height} pixels")
    return width, height, depth, colour, interlace == 1


def _chunks(view: memoryview) -> list[memoryview]:
    """The IDAT payloads, in order, after checking every other chunk."""
    idat: list[memoryview] = []
    metadata = 0
    pos, count = 8, 0
    end = len(view)
    while pos + 12 <= end:
        count += 1
        if count > MAX_CHUNKS:
            raise HeaderError(f"more than {MAX_CHUNKS:,} chunks")
        length, kind = u32(view, pos), bytes(view[pos + 4 : pos + 8])
        payload = view[pos + 8 : pos + 8 + length]
        if len(payload) < length:
            break  # truncated: libpng stops here too
        if kind == b"IDAT":
            idat.append(payload)
        elif kind in _ANIMATION:
            raise HeaderError("an animation (APNG)")
        elif kind in (b"zTXt", b"iTXt", b"iCCP"):
            metadata += _inflated([_compressed_part(kind, payload)], MAX_METADATA_BYTES + 1)
            if metadata > MAX_METADATA_BYTES:
                raise HeaderError(
                    f"more than {MAX_METADATA_BYTES >> 20} MiB of compressed metadata"
                )
        elif kind == b"IEND":
            break
        pos += 12 + length
    if not idat:
        raise HeaderError("no image data (IDAT)")
    return idat


def _compressed_part(kind: bytes, payload: memoryview) -> memoryview:
    """The deflate stream of a zTXt, iTXt or iCCP chunk (empty when it holds none)."""
    text = bytes(payload[:80])
    keyword_end = text.find(b"\x00")
    if keyword_end < 0:
        return payload[:0]
    if kind == b"iTXt":
        # keyword NUL, compression flag, method, language NUL, translated keyword NUL, text
        if len(payload) < keyword_end + 3 or payload[keyword_end + 1] != 1:
            return payload[:0]
        rest = bytes(payload[keyword_end + 3 :])
        language_end = rest.find(b"\x00")
        translated_end = rest.find(b"\x00", language_end + 1) if language_end >= 0 else -1
        if translated_end < 0:
            return payload[:0]
        return payload[keyword_end + 3 + translated_end + 1 :]
    # zTXt and iCCP: keyword NUL, method, stream.
    return payload[keyword_end + 2 :]


def _raw_size(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> int:
    """Bytes of filtered scanlines (a filter byte per row) the image data must inflate to."""
    if not interlaced:
        return height * (1 + (width * bits_per_pixel + 7) // 8)
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        cols = (width - x0 + dx - 1) // dx if width > x0 else 0
        rows = (height - y0 + dy - 1) // dy if height > y0 else 0
        if cols and rows:
            total += rows * (1 + (cols * bits_per_pixel + 7) // 8)
    return total


def _inflated(parts: Iterable[memoryview], limit: int) -> int:
    """Bytes the zlib stream split over ``parts`` inflates to, counted up to ``limit`` (the
    count stops there). A corrupt stream counts what it gave before the error: the decoder
    stops at the same place."""
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for part in parts:
            pending = bytes(part)
            while pending and not inflater.eof:
                produced += len(inflater.decompress(pending, min(_STEP, limit - produced)))
                if produced >= limit:
                    return produced
                pending = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error:
        pass
    return produced
