"""Quality-gate errors of the face path, one class per reason.

Each is an :class:`~fedmatch.errors.InvalidInput` (INVALID_ARGUMENT on the wire) with a
stable ``code`` that CLI exit paths, gRPC status details and reject summaries use. Messages
name the file and the measured quantity against its threshold, never pixel data or
templates.
"""

from __future__ import annotations

from fedmatch.errors import FedmatchError, InvalidInput

__all__ = [
    "FaceQualityError",
    "FaceTooSmall",
    "ModelError",
    "NoFace",
    "SeveralFaces",
    "TooBlurred",
    "TooDark",
    "UnreadableImage",
]


class FaceQualityError(InvalidInput):
    """A photo that must not become a template. ``code`` names the reason."""

    code = "quality"


class UnreadableImage(FaceQualityError):
    code = "unreadable_image"


class NoFace(FaceQualityError):
    code = "no_face"


class SeveralFaces(FaceQualityError):
    code = "several_faces"


class FaceTooSmall(FaceQualityError):
    code = "face_too_small"


class TooBlurred(FaceQualityError):
    code = "too_blurred"


class TooDark(FaceQualityError):
    code = "too_dark"


class ModelError(FedmatchError):
    """A face model is missing, fails its checksum, or does not load."""
