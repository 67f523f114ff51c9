"""The header of a JPEG 2000 file (JP2 boxes or a bare J2K codestream), and its profile.

OpenJPEG (OpenCV's JPEG 2000 decoder) allocates the image from the codestream's SIZ segment:
one 32-bit plane per component of ``(Xsiz - XOsiz) x (Ysiz - YOsiz)`` samples. Its other
allocations follow the coding parameters, and a small file can make them huge (measured on a
4 MP RGB image, bytes of peak memory per pixel: 18 with the usual 64 x 64 code-blocks, 101
with 4 x 4 code-blocks, 63 with 16 x 16 tiles, 47 with precincts smaller than the
code-blocks). So the accepted profile bounds each of them, read from the main header and
every tile-part header (COD and COC segments may appear in both):

- at most 4 components of at most 16 bits, no palette (a ``pclr`` box expands one component
  into as many as it lists);
- at most :data:`MAX_TILES` tiles and :data:`MAX_TILE_PARTS` tile-parts;
- code-blocks of :data:`MIN_CODE_BLOCK_SAMPLES` samples or more on average, once clipped by
  the precincts (16 x 16 code-blocks pass, 8 x 8 do not);
- at most :data:`MAX_LAYERS` quality layers and :data:`MAX_LEVELS` decomposition levels.

What cameras, passports' chips and the usual encoders write (one or a few tiles, 64 x 64
code-blocks, few layers, default or large precincts) fits well inside it.
"""

from __future__ import annotations

from fedmatch.biometrics.photofile.formats import JPEG2000
from fedmatch.biometrics.photofile.header import HeaderError, PhotoHeader, u16, u32

__all__ = [
    "MAX_LAYERS",
    "MAX_LEVELS",
    "MAX_TILES",
    "MAX_TILE_PARTS",
    "MIN_CODE_BLOCK_SAMPLES",
    "read",
]

MAX_TILES = 1024
MAX_TILE_PARTS = 4096
MAX_LAYERS = 32
# Wavelet decomposition levels: 5 is the usual, 10 takes 50 MP down to a few pixels.
MAX_LEVELS = 10
# OpenJPEG keeps about 440 bytes of state per code-block: at this average size that is at
# most 2.2 bytes per sample (the usual 64 x 64 code-blocks: 0.1).
MIN_CODE_BLOCK_SAMPLES = 200
_SOC_SIZ = b"\xff\x4f\xff\x51"
_SOT, _SOD, _EOC, _COD, _COC = 0xFF90, 0xFF93, 0xFFD9, 0xFF52, 0xFF53


def read(data: bytes) -> PhotoHeader:
    """The header of a JP2 file or J2K codestream; :class:`HeaderError` if malformed or
    outside the profile."""
    view = memoryview(data)
    if view[:4] == _SOC_SIZ:
        return _codestream(view, None)
    ihdr: tuple[int, int, int] | None = None
    pos, end = 0, len(view)
    while pos + 8 <= end:
        length, kind, body = _box(view, pos)
        if kind == b"jp2h":
            ihdr = _jp2_header(body)
        elif kind == b"jp2c":
            if ihdr is None:
                raise HeaderError("a codestream before the JP2 header box")
            return _codestream(body, ihdr)
        pos += length
    raise HeaderError("no codestream (jp2c box)")


def _box(view: memoryview, pos: int) -> tuple[int, bytes, memoryview]:
    """Length, type and contents of the box at ``pos`` (a box cut short by the end of the
    file is read as far as it goes, as OpenJPEG reads a truncated codestream)."""
    length, kind, start = u32(view, pos), bytes(view[pos + 4 : pos + 8]), pos + 8
    if length == 1:
        length, start = (u32(view, pos + 8) << 32) | u32(view, pos + 12), pos + 16
    elif length == 0:
        length = len(view) - pos
    if length < start - pos:
        raise HeaderError("a box shorter than its own header")
    return length, kind, view[start : pos + length]


def _jp2_header(body: memoryview) -> tuple[int, int, int]:
    """(height, width, components) from the ``ihdr`` box of the JP2 header box."""
    ihdr: tuple[int, int, int] | None = None
    pos = 0
    while pos + 8 <= len(body):
        length, kind, inner = _box(body, pos)
        if kind == b"ihdr":
            if len(inner) < 14:
                raise HeaderError("an ihdr box too short")
            ihdr = (u32(inner, 0), u32(inner, 4), u16(inner, 8))
        elif kind in (b"pclr", b"cmap"):
            raise HeaderError("a palette (pclr or cmap box)")
        pos += length
    if ihdr is None:
        raise HeaderError("no ihdr box")
    return ihdr


def _codestream(code: memoryview, ihdr: tuple[int, int, int] | None) -> PhotoHeader:
    if code[:4] != _SOC_SIZ:
        raise HeaderError("no SIZ segment at the start of the codestream")
    lsiz = u16(code, 4)
    siz = code[6 : 4 + lsiz]
    if len(siz) < 36 or lsiz != 38 + 3 * u16(siz, 34):
        raise HeaderError("a SIZ segment of the wrong length")
    xsiz, ysiz, xo, yo = u32(siz, 2), u32(siz, 6), u32(siz, 10), u32(siz, 14)
    xt, yt, xto, yto = u32(siz, 18), u32(siz, 22), u32(siz, 26), u32(siz, 30)
    components = u16(siz, 34)
    if not (xsiz > xo and ysiz > yo and xt and yt and xto <= xo and yto <= yo):
        raise HeaderError("image and tile offsets out of order")
    if xto + xt <= xo or yto + yt <= yo:
        raise HeaderError("a first tile outside the image")
    width, height = xsiz - xo, ysiz - yo
    if ihdr is not None and ihdr != (height, width, components):
        raise HeaderError("an ihdr box and a SIZ segment that disagree")
    bits = 1
    for i in range(components):
        precision, dx, dy = siz[36 + 3 * i], siz[37 + 3 * i], siz[38 + 3 * i]
        bits = max(bits, (precision & 0x7F) + 1)
        if dx == 0 or dy == 0:
            raise HeaderError("a component subsampled by 0")
    tiles = -(-(xsiz - xto) // xt) * -(-(ysiz - yto) // yt)
    if tiles > MAX_TILES:
        raise HeaderError(f"{tiles:,} tiles, more than {MAX_TILES:,}")
    header = PhotoHeader(JPEG2000, width, height, components, bits, tiles)
    _coding_parameters(code, 4 + lsiz, components, tiles)
    return header


def _coding_parameters(code: memoryview, pos: int, components: int, tiles: int) -> None:
    """Checks every COD and COC segment of the main header and of each tile-part header."""
    pos = _header_segments(code, pos, components, stop=_SOT)
    parts = 0
    while pos + 12 <= len(code) and u16(code, pos) == _SOT:
        parts += 1
        if parts > MAX_TILE_PARTS:
            raise HeaderError(f"more than {MAX_TILE_PARTS:,} tile-parts")
        if u16(code, pos + 2) != 10 or u16(code, pos + 4) >= tiles:
            raise HeaderError("a tile-part header (SOT) out of range")
        length = u32(code, pos + 6)
        _header_segments(code, pos + 12, components, stop=_SOD)
        if length == 0:
            return  # the last tile-part runs to the end of the codestream
        if length < 14:
            raise HeaderError("a tile-part shorter than its header")
        pos += length


def _header_segments(code: memoryview, pos: int, components: int, stop: int) -> int:
    """Walks marker segments from ``pos`` to the ``stop`` marker (or the end); returns the
    position of the stop marker."""
    while pos + 2 <= len(code):
        marker = u16(code, pos)
        if marker in (stop, _EOC):
            return pos
        if marker >> 8 != 0xFF:
            raise HeaderError("no marker where the next segment must start")
        length = u16(code, pos + 2)
        segment = code[pos + 4 : pos + 2 + length]
        if length < 2 or len(segment) < length - 2:
            raise HeaderError("a marker segment runs past the end")
        if marker == _COD:
            _coding_style(segment, offset=0, layers=True)
        elif marker == _COC:
            _coding_style(segment, offset=1 if components < 257 else 2, layers=False)
        pos += 2 + length
    return pos


def _coding_style(segment: memoryview, offset: int, layers: bool) -> None:
    """Checks a COD segment (``layers``: with its progression, layers and colour transform)
    or a COC segment (``offset``: the size of its component index)."""
    if len(segment) < offset + (10 if layers else 6):
        raise HeaderError("a coding style segment too short")
    custom_precincts = segment[offset] & 1
    if layers:
        count = u16(segment, offset + 2)
        if not 1 <= count <= MAX_LAYERS:
            raise HeaderError(f"{count} quality layers (1 to {MAX_LAYERS} are accepted)")
        offset += 4
    levels, xcb, ycb = segment[offset + 1], segment[offset + 2] + 2, segment[offset + 3] + 2
    if levels > MAX_LEVELS:
        raise HeaderError(f"{levels} decomposition levels (at most {MAX_LEVELS} are accepted)")
    if xcb + ycb > 12 or max(xcb, ycb) > 10:
        raise HeaderError(f"code-blocks of {1 << xcb} x {1 << ycb} samples")
    precincts = [0xFF] * (levels + 1)  # no partition: precincts of 2^15 x 2^15
    if custom_precincts:
        precincts = list(segment[offset + 6 : offset + 7 + levels])
        if len(precincts) < levels + 1:
            raise HeaderError("a coding style segment too short for its precincts")
    samples = _samples_per_code_block(levels, xcb, ycb, precincts)
    if samples < MIN_CODE_BLOCK_SAMPLES:
        raise HeaderError(
            f"code-blocks of {samples:.0f} samples on average (at least "
            f"{MIN_CODE_BLOCK_SAMPLES} are accepted)"
        )


def _samples_per_code_block(levels: int, xcb: int, ycb: int, precincts: list[int]) -> float:
    """The average size of a component's code-blocks. A precinct clips the code-blocks of
    its subbands (to half its size above resolution 0), so small precincts make small
    code-blocks; each resolution's subbands hold their share of the component's samples."""
    blocks = 0.0
    for resolution, size in enumerate(precincts):
        split = 1 if resolution else 0
        width = max(0, min(xcb, (size & 0x0F) - split))
        height = max(0, min(ycb, (size >> 4) - split))
        # Resolution 0 is the LL subband, 4^-levels of the samples; resolution r > 0 adds
        # three subbands of 4^-(levels - r + 1) each.
        bands, share = (3, 4.0 ** -(levels - resolution + 1)) if resolution else (1, 4.0**-levels)
        blocks += bands * share / (1 << (width + height))
    return 1 / blocks
