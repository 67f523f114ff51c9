"""Which format a file is in, by its first bytes (its magic number), and which are accepted.

Accepted are JPEG, PNG and JPEG 2000 (the JP2 file format and the bare J2K codestream):
what enrolment and border cameras deliver, and the two formats ISO/IEC 19794-5 and ICAO Doc
9303 store facial images in. Every other format that the OpenCV of this build decodes (see
``cv2.getBuildInformation()``, Media I/O) is named here so that its refusal says what it was:
several of them pack a huge image into a small file (run-length Radiance HDR, BMP and Sun
Raster, deflated TIFF, lossless WebP, LZW GIF) and none of their headers is read here.

The signatures are OpenCV's own (each decoder's ``checkSignature``), and the accepted ones
share no prefix with any other, so that the decoder OpenCV picks for an accepted file is the
one whose header was read.
"""

from __future__ import annotations

__all__ = ["ACCEPTED", "ACCEPTED_TEXT", "JPEG", "JPEG2000", "PNG", "SUFFIXES", "identify"]

JPEG = "JPEG"
PNG = "PNG"
JPEG2000 = "JPEG 2000"
ACCEPTED = (JPEG, PNG, JPEG2000)
ACCEPTED_TEXT = "send JPEG, PNG or JPEG 2000"
# File name suffixes of the accepted formats, for commands that pick photos from a folder.
SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".jp2", ".j2k", ".j2c", ".jpc"})

# (signature, format), tried in order; the first match names the file.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", JPEG),
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", JPEG2000),
    (b"\xff\x4f\xff\x51", JPEG2000),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"#?RGBE", "Radiance HDR"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"BM", "BMP"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x59\xa6\x6a\x95", "Sun Raster"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"PF", "PFM"),
    (b"Pf", "PFM"),
    (b"P7", "PAM"),
    (b"8BPS", "Photoshop"),
    (b"%PDF", "PDF"),
)
_PNM = frozenset(b"123456")
# ISO base media files name their kind in the brand of their first box, 'ftyp'.
_BRANDS = {
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"heic": "HEIF",
    b"heix": "HEIF",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
}


def identify(data: bytes | memoryview) -> str | None:
    """The format the file's first bytes name, accepted or not; None when unknown."""
    head = bytes(data[:16])
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    if len(head) >= 3 and head[0] == ord("P") and head[1] in _PNM and head[2:3].isspace():
        return "PNM (PBM, PGM or PPM)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp":
        return _BRANDS.get(head[8:12], "ISO base media (ftyp)")
    return None
