"""The frame header of a JPEG file, read as libjpeg (OpenCV's JPEG decoder) reads it.

libjpeg walks the marker segments from SOI to the first scan (SOS), takes the image size from
the one frame header (SOFn) among them, refuses a second one, and allocates the image from
it: data beyond what the frame declares is skipped, missing data leaves the rest grey. The
walk here finds markers as libjpeg does and refuses what libjpeg would refuse, so that every
file accepted has exactly the frame header libjpeg will use.

Scans are counted too: each scan of a progressive file is a pass over the whole image, and a
small file can hold tens of thousands of them (libjpeg-turbo's ``djpeg -maxscans`` exists for
this); photographs use about ten.
"""

from __future__ import annotations

from fedmatch.biometrics.photofile.formats import JPEG
from fedmatch.biometrics.photofile.header import HeaderError, PhotoHeader, u16

__all__ = ["MAX_SCANS", "read"]

MAX_SCANS = 100
_SOI, _EOI, _SOS, _TEM = 0xD8, 0xD9, 0xDA, 0x01
# Frame types libjpeg-turbo decodes: baseline, extended and progressive Huffman, lossless, and
# the same with arithmetic coding.
_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB})
# Hierarchical frames, the reserved JPG marker and JPEG-LS: libjpeg refuses them.
_OTHER_FRAMES = frozenset({0xC5, 0xC6, 0xC7, 0xC8, 0xCD, 0xCE, 0xCF, 0xF7})


def read(data: bytes) -> PhotoHeader:
    """The frame header of a file that starts with SOI; :class:`HeaderError` if there is
    none before the first scan, more than one, or one outside the accepted profile."""
    end = len(data)
    pos = 2
    frame: PhotoHeader | None = None
    while True:
        code, pos = _next_marker(data, pos)
        if 0xD0 <= code <= 0xD7 or code == _TEM:
            continue  # markers without a segment
        if code in (_SOI, _EOI):
            raise HeaderError("no scan after the header")
        length = u16(data, pos)
        if length < 2 or pos + length > end:
            raise HeaderError("a marker segment runs past the end of the file")
        if code in _OTHER_FRAMES:
            raise HeaderError("hierarchical or JPEG-LS coding (not decoded)")
        if code in _FRAMES:
            if frame is not None:
                raise HeaderError("two frame headers")
            frame = _frame(data[pos + 2 : pos + length])
        elif code == _SOS:
            if frame is None:
                raise HeaderError("a scan before the frame header")
            _count_scans(data)
            return frame
        pos += length


def _next_marker(data: bytes, pos: int) -> tuple[int, int]:
    """The next marker code at or after ``pos``, and the position after it, found as
    libjpeg's ``next_marker`` finds it: bytes before a 0xFF are skipped (libjpeg warns of
    "extraneous bytes"), then fill bytes; 0xFF 0x00 is no marker."""
    end = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0:
            raise HeaderError("the file ends before its first scan")
        while pos < end and data[pos] == 0xFF:
            pos += 1
        if pos >= end:
            raise HeaderError("the file ends before its first scan")
        if data[pos] != 0x00:
            return data[pos], pos + 1
        pos += 1


def _count_scans(data: bytes) -> None:
    # An upper bound: in entropy-coded data a 0xFF byte is always followed by 0x00 or a
    # restart marker, so only real scan headers and bytes inside other segments (an
    # embedded thumbnail's scan) read as SOS.
    scans = data.count(b"\xff\xda")
    if scans > MAX_SCANS:
        raise HeaderError(f"{scans:,} scans, more than {MAX_SCANS}")


def _frame(segment: bytes) -> PhotoHeader:
    if len(segment) < 6:
        raise HeaderError("a frame header too short")
    precision, height, width, components = segment[0], u16(segment, 1), u16(segment, 3), segment[5]
    if len(segment) < 6 + 3 * components:
        raise HeaderError("a frame header too short for its components")
    if height == 0:
        # The height would come later, in a DNL segment: libjpeg does not support it.
        raise HeaderError("no height in the frame header (DNL)")
    if components not in (1, 3, 4):
        raise HeaderError(f"{components} colour components (1, 3 or 4 are accepted)")
    for i in range(components):
        sampling = segment[6 + 3 * i + 1]
        if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 0x0F <= 4):
            raise HeaderError("a sampling factor outside 1 to 4")
    if not 2 <= precision <= 16:
        raise HeaderError(f"{precision}-bit samples")
    return PhotoHeader(JPEG, width, height, components, precision)
