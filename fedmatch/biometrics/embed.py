"""Aligned face crop -> unit-norm template, with onnxruntime on the CPU.

Owns the only use of ``onnx`` and ``onnxruntime`` in fedmatch. Both are loosely typed (the
runtime has no type information at all), so every call into them stays inside the small
private helpers below, and the public :class:`Recognizer` is fully typed.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from fedmatch.biometrics.errors import ModelError
from fedmatch.biometrics.models import ModelSpec
from fedmatch.errors import InvalidInput

__all__ = ["CROP_SIZE", "Recognizer"]

CROP_SIZE = 112
"""Side in pixels of the aligned crop every supported recognizer takes."""


def _prune_inputs(model_bytes: bytes, name: str) -> bytes:
    """The model with graph inputs that are not real inputs removed.

    Some exported graphs (the OpenCV Zoo SFace file among them) list their weights as
    graph inputs too; onnxruntime then insists on being fed them. Inputs that duplicate an
    initializer, or that no node reads (the int8bq SFace file keeps the names of its
    original float weights), are dropped, leaving the image input only.
    """
    import onnx

    try:
        model = onnx.load_from_string(model_bytes)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
        raise ModelError(f"model file {name} is not an ONNX model ({type(exc).__name__})") from None
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    consumed = {i for node in graph.node for i in node.input}
    keep = [i for i in graph.input if i.name not in initializers and i.name in consumed]
    if len(keep) == len(graph.input):
        return model_bytes
    del graph.input[:]
    graph.input.extend(keep)
    return model.SerializeToString()


def _session(model_bytes: bytes, name: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread per session: throughput comes from running one process per core, and
    # intra-op threads in every process would only fight over the same cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # ERROR and above: the pruned SFace graph still carries two unused shape constants,
    # which onnxruntime reports as warnings on every load.
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            _prune_inputs(model_bytes, name), options, providers=["CPUExecutionProvider"]
        )
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ModelError(
            f"model file {name} does not load in onnxruntime: {str(exc)[:200]}"
        ) from None


def _io(session: Any, name: str) -> tuple[str, list[Any], list[Any]]:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"model file {name} has {len(inputs)} inputs, a recognizer has one")
    return str(inputs[0].name), list(inputs[0].shape), list(session.get_outputs()[0].shape)


def _run(session: Any, input_name: str, batch: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    out = session.run(None, {input_name: batch})
    return np.asarray(out[0])


class Recognizer:
    """One loaded recognizer. Thread-safe: onnxruntime sessions may run concurrently."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        name = spec.path.name
        self._session = _session(spec.read_verified(), name)
        self._input, in_shape, out_shape = _io(self._session, name)
        # NCHW with 3 channels and 112x112 pixels; the batch axis may be symbolic.
        if len(in_shape) != 4 or in_shape[1:] != [3, CROP_SIZE, CROP_SIZE]:
            raise ModelError(
                f"model file {name} takes input {in_shape}, a recognizer here takes "
                f"[N, 3, {CROP_SIZE}, {CROP_SIZE}]"
            )
        dim = out_shape[-1] if out_shape else None
        if not isinstance(dim, int):
            # A symbolic output size: ask the model once.
            dummy = np.zeros((1, 3, CROP_SIZE, CROP_SIZE), np.float32)
            dim = int(_run(self._session, self._input, dummy).reshape(1, -1).shape[1])
        if spec.dimension is not None and dim != spec.dimension:
            raise ModelError(
                f"model file {name} outputs {dim} values, its spec says {spec.dimension}"
            )
        self.dimension: int = dim

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    def _input_tensor(self, crop_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        if crop_bgr.shape != (CROP_SIZE, CROP_SIZE, 3):
            raise InvalidInput(f"crop must be {CROP_SIZE}x{CROP_SIZE}x3, not {crop_bgr.shape}")
        # Both SFace and the insightface models were trained on RGB.
        rgb = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
        if self.spec.preprocess == "arcface":
            rgb = (rgb - 127.5) / 127.5
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)[np.newaxis])

    def embed(self, crop_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """The L2-normalized template of one aligned 112x112 BGR crop."""
        raw = _run(self._session, self._input, self._input_tensor(crop_bgr))
        vec = raw.reshape(-1).astype(np.float32)
        norm = float(np.linalg.norm(vec))
        if not np.isfinite(norm) or norm == 0.0:
            raise ModelError(f"model {self.model_id} produced an empty or non-finite embedding")
        return (vec / norm).astype(np.float32)
