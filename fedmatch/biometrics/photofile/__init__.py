"""Photo files: which are decoded, and at what cost, decided before any pixel is decoded.

Only JPEG, PNG and JPEG 2000 are accepted (:mod:`.formats`), each identified by its magic
bytes and its header read here (:mod:`.jpeg`, :mod:`.png`, :mod:`.jpeg2000`); every other
format OpenCV or PIL would decode is refused by name. :func:`check_photo` applies the bounds
(:data:`MAX_PIXELS`, :data:`MAX_DECODE_BYTES`) and says why they bound memory (:mod:`.check`);
:func:`decode_photo` decodes what it let through.

OpenCV's own limit (``OPENCV_IO_MAX_IMAGE_PIXELS``) is a second line: ``fedmatch/__init__.py``
sets it to :data:`MAX_PIXELS` before any fedmatch module loads OpenCV, which reads it once.

Part of ``biometrics``: imports only the shared top-level modules and the face path's errors;
imported by the face pipeline and by every other module that decodes a photo (``evaluation``,
``bench``).
"""

from fedmatch.biometrics.photofile.check import (
    MAX_DECODE_BYTES,
    MAX_PIXELS,
    check_photo,
    decode_bytes,
    read_header,
)
from fedmatch.biometrics.photofile.decode import decode_photo
from fedmatch.biometrics.photofile.formats import ACCEPTED, SUFFIXES, identify
from fedmatch.biometrics.photofile.header import PhotoHeader

__all__ = [
    "ACCEPTED",
    "MAX_DECODE_BYTES",
    "MAX_PIXELS",
    "SUFFIXES",
    "PhotoHeader",
    "check_photo",
    "decode_bytes",
    "decode_photo",
    "identify",
    "read_header",
]
