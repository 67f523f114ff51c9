"""Small files that decode to huge images, made in memory for the photo-format tests.

Each is a real file of its format, small enough for an enrolment request (8 MiB), that
OpenCV decodes to the full size its header declares: run-length Radiance HDR and BMP, a
deflated TIFF whose strips all point at one compressed strip, a lossless WebP whose
single-symbol codes cost no bits per pixel, a binary PBM (one bit per pixel), and a PNG whose
IHDR is small but whose image data inflates to a gigabyte. ``FORMAT_BOMBS`` are the ones of
issue 21 (attack 3: the 56 MP Radiance HDR; a large TIFF, WebP and PNM), plus BMP.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

__all__ = [
    "FORMAT_BOMBS",
    "bmp_rle8",
    "pbm",
    "png_idat_bomb",
    "radiance_hdr",
    "rss_probe",
    "tiff_deflate",
    "webp_lossless",
]

# The attack of issue 21: 8000 x 7000 = 56 MP, about 3.6 MB.
HDR_SIZE = (8000, 7000)
# Just under the 50 MP bound, so that only the format can refuse them.
UNDER_BOUND = (7000, 7000)


def radiance_hdr(width: int, height: int) -> bytes:
    """A grey Radiance HDR with new-style run-length scanlines (width 8 to 32767)."""
    runs = []
    left = width
    while left:
        n = min(127, left)
        runs.append(bytes((128 + n, 128)))
        left -= n
    line = bytes((2, 2, width >> 8, width & 0xFF)) + b"".join(runs) * 4
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {height} +X {width}\n".encode()
    return header + line * height


def tiff_deflate(width: int, height: int) -> bytes:
    """A black RGB TIFF, deflate-compressed, every strip pointing at one compressed strip."""
    rows = 64
    strips = -(-height // rows)
    strip = zlib.compress(bytes(width * 3 * rows), 9)
    # Header, the compressed strip, BitsPerSample, StripOffsets, StripByteCounts, the IFD.
    at_strip = 8
    at_bits = at_strip + len(strip)
    at_offsets = at_bits + 6
    at_counts = at_offsets + 4 * strips
    at_ifd = at_counts + 4 * strips
    entries = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 3, at_bits),  # BitsPerSample 8, 8, 8
        (259, 3, 1, 8),  # Compression: deflate
        (262, 3, 1, 2),  # Photometric: RGB
        (273, 4, strips, at_offsets),  # StripOffsets
        (277, 3, 1, 3),  # SamplesPerPixel
        (278, 4, 1, rows),  # RowsPerStrip
        (279, 4, strips, at_counts),  # StripByteCounts
        (284, 3, 1, 1),  # PlanarConfiguration: chunky
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 and count == 1 else None
        ifd += struct.pack("<HHI", tag, kind, count) + (packed or struct.pack("<I", value))
    ifd += struct.pack("<I", 0)
    return (
        b"II*\x00"
        + struct.pack("<I", at_ifd)
        + strip
        + struct.pack("<3H", 8, 8, 8)
        + struct.pack(f"<{strips}I", *([at_strip] * strips))
        + struct.pack(f"<{strips}I", *([len(strip)] * (strips - 1)), len(strip))
        + ifd
    )


def webp_lossless(width: int, height: int) -> bytes:
    """A uniform lossless WebP (VP8L) of any size up to 16384 x 16384, in 38 bytes: PIL
    encodes a small one, whose codes have a single symbol each (zero bits per pixel), and
    its header's 14-bit width and height are set to the size wanted."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(
        buffer, "WEBP", lossless=True, method=0, quality=0
    )
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = int.from_bytes(data[21:25], "little")
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    data[21:25] = bits.to_bytes(4, "little")
    return bytes(data)


def pbm(width: int, height: int) -> bytes:
    """A binary (P4) white PBM: one bit per pixel, decoded to three bytes per pixel."""
    return f"P4\n{width} {height}\n".encode() + bytes(-(-width // 8) * height)


def bmp_rle8(width: int, height: int) -> bytes:
    """A grey 8-bit BMP, RLE8-compressed: runs of 255 pixels in 2 bytes."""
    row = b""
    left = width
    while left:
        n = min(255, left)
        row += bytes((n, 1))
        left -= n
    pixels = (row + b"\x00\x00") * height + b"\x00\x01"
    palette = b"".join(bytes((v, v, v, 0)) for v in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 0, 0, 256, 0)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + palette + pixels


def png_idat_bomb(width: int, height: int, extra: int) -> bytes:
    """A grey PNG whose IHDR is ``width`` x ``height`` and whose one zlib stream holds the
    image's rows followed by ``extra`` zero bytes (deflate packs about 1,000 in each).

    Zeros compress to the same blocks again and again once the window is all zeros, so one
    16 MiB block, sync-flushed, is compressed once and repeated (with the stream's Adler-32
    computed over everything it holds): a gigabyte in a second, not in ten."""
    step = 1 << 24
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: header and check below
    rows = bytes((width + 1) * height)
    body = packer.compress(rows) + packer.flush(zlib.Z_SYNC_FLUSH)
    check = zlib.adler32(rows)
    full, rest = divmod(extra, step)
    zeros = bytes(step)
    if full:
        body += packer.compress(zeros) + packer.flush(zlib.Z_SYNC_FLUSH)
        again = packer.compress(zeros) + packer.flush(zlib.Z_SYNC_FLUSH)
        body += again * (full - 1)
        for _ in range(full):
            check = zlib.adler32(zeros, check)
    body += packer.compress(bytes(rest)) + packer.flush()
    check = zlib.adler32(bytes(rest), check)
    stream = b"\x78\xda" + body + struct.pack(">I", check)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")
    )


# name -> (the format's name in the refusal, the file)
FORMAT_BOMBS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "radiance-56mp.hdr": ("Radiance HDR", lambda: radiance_hdr(*HDR_SIZE)),
    "radiance-49mp.hdr": ("Radiance HDR", lambda: radiance_hdr(*UNDER_BOUND)),
    "deflate-49mp.tif": ("TIFF", lambda: tiff_deflate(*UNDER_BOUND)),
    "lossless-49mp.webp": ("WebP", lambda: webp_lossless(*UNDER_BOUND)),
    "bitmap-49mp.pbm": ("PNM (PBM, PGM or PPM)", lambda: pbm(*UNDER_BOUND)),
    "rle8-49mp.bmp": ("BMP", lambda: bmp_rle8(*UNDER_BOUND)),
}


def rss_probe() -> str:
    """Python source of a function ``peak()``: this process's peak resident memory in bytes
    (VmHWM), for scripts run in a fresh interpreter so that the measurement is clean."""
    return (
        "def peak():\n"
        "    with open('/proc/self/status') as status:\n"
        "        for line in status:\n"
        "            if line.startswith('VmHWM:'):\n"
        "                return int(line.split()[1]) * 1024\n"
        "    raise RuntimeError('no VmHWM')\n"
    )
