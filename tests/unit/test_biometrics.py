"""The face path on real photos: templates, pair separation, model checksums, quality gates."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from fedmatch.biometrics.config import QualityConfig
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
from fedmatch.biometrics.models import (
    SFACE_MODEL_ID,
    SFACE_SHA256,
    YUNET_SHA256,
    ModelSpec,
    builtin_detector,
    builtin_recognizer,
    sha256_file,
)
from fedmatch.biometrics.pipeline import FacePipeline
from fedmatch.errors import ConfigError, InvalidInput

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
THRESHOLD = 0.45

# pytest resets warning filters per test, which undoes the narrow filter that
# fedmatch.biometrics.align installs for insightface's use of a deprecated scikit-image call.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`estimate` is deprecated:FutureWarning:insightface\.utils\.face_align"
)

Image = npt.NDArray[np.uint8]


def _photos() -> list[str]:
    with (FACES / "identities.csv").open(newline="") as fh:
        return [row["file"] for row in csv.DictReader(fh)]


def _read(name: str) -> Image:
    image = cv2.imread(str(FACES / name), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image, dtype=np.uint8)


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline()


@pytest.fixture(scope="module")
def templates(pipeline: FacePipeline) -> dict[str, npt.NDArray[np.float32]]:
    return {name: pipeline.template(FACES / name) for name in _photos()}


def _write_jpg(path: Path, image: Image) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def test_every_shared_photo_gives_a_unit_template(
    pipeline: FacePipeline, templates: dict[str, npt.NDArray[np.float32]]
) -> None:
    assert len(templates) == 28
    for name, t in templates.items():
        assert t.dtype == np.float32 and t.shape == (pipeline.dimension,) == (128,), name
        assert abs(float(np.linalg.norm(t)) - 1.0) < 1e-5, name


def test_labelled_pairs_separate_at_the_threshold(
    templates: dict[str, npt.NDArray[np.float32]],
) -> None:
    same: list[float] = []
    different: list[float] = []
    with (FACES / "pairs.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            score = float(templates[row["file_a"]] @ templates[row["file_b"]])
            (same if row["same_person"] == "yes" else different).append(score)
    assert len(same) + len(different) == 104
    # Measured: same-person 0.485 .. , different-person .. 0.291.
    assert min(same) >= THRESHOLD, min(same)
    assert max(different) < THRESHOLD, max(different)


def test_pipeline_reports_its_model(pipeline: FacePipeline) -> None:
    spec = builtin_recognizer()
    assert pipeline.model_id == spec.model_id == SFACE_MODEL_ID == "sface-2021dec-int8bq"
    assert spec.sha256 == SFACE_SHA256 == sha256_file(spec.path)
    assert builtin_detector().sha256 == YUNET_SHA256 == sha256_file(builtin_detector().path)


def test_corrupted_model_fails_its_checksum(tmp_path: Path) -> None:
    original = builtin_recognizer()
    copy = tmp_path / original.path.name
    shutil.copyfile(original.path, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    spec = ModelSpec(original.model_id, copy, original.sha256, 128, "sface")
    with pytest.raises(ModelError, match="checksum") as err:
        FacePipeline(recognizer=spec).template(FACES / "img12.jpg")
    assert copy.name in str(err.value)


def test_model_by_path_gets_a_digest_id_and_reads_its_dimension(
    tmp_path: Path, templates: dict[str, npt.NDArray[np.float32]]
) -> None:
    copy = tmp_path / "my-recognizer.onnx"
    shutil.copyfile(builtin_recognizer().path, copy)
    spec = ModelSpec.from_path(copy, preprocess="sface")
    assert spec.model_id == f"my-recognizer-{SFACE_SHA256[:12]}"
    assert spec.dimension is None
    other = FacePipeline(recognizer=spec)
    assert other.model_id == spec.model_id and other.dimension == 128
    t = other.template(FACES / "img12.jpg")
    assert float(t @ templates["img12.jpg"]) > 0.9999
    # ArcFace-style input scaling runs the same network on (x - 127.5) / 127.5.
    arcface = FacePipeline(recognizer=ModelSpec.from_path(copy, model_id="as-arcface"))
    assert abs(float(np.linalg.norm(arcface.template(FACES / "img12.jpg"))) - 1) < 1e-5


def _arcface_like(path: Path, side: int = 112, dim: int = 512) -> Path:
    """A tiny ONNX model shaped like insightface's recognizers: [N,3,side,side] -> [N,dim]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(7).standard_normal((3, dim)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["683"]),
        ],
        "arcface-like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, side, side])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", dim])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_arcface_style_model_by_path(tmp_path: Path) -> None:
    path = _arcface_like(tmp_path / "w600k_r50.onnx")
    spec = ModelSpec.from_path(path)
    assert spec.preprocess == "arcface" and spec.model_id.startswith("w600k_r50-")
    pipeline = FacePipeline(recognizer=spec)
    assert pipeline.dimension == 512
    t = pipeline.template(FACES / "img12.jpg")
    assert t.shape == (512,) and abs(float(np.linalg.norm(t)) - 1) < 1e-5
    with pytest.raises(ModelError, match="outputs 512 values, its spec says 128"):
        FacePipeline(recognizer=ModelSpec(spec.model_id + "x", path, spec.sha256, 128)).load()
    wrong = ModelSpec.from_path(_arcface_like(tmp_path / "r128.onnx", side=128))
    with pytest.raises(ModelError, match=r"r128\.onnx takes input"):
        FacePipeline(recognizer=wrong).load()


def test_model_spec_checks_itself() -> None:
    with pytest.raises(ModelError, match="64 hex"):
        ModelSpec("m", Path("m.onnx"), "abc")
    with pytest.raises(ModelError, match="preprocess"):
        ModelSpec("m", Path("m.onnx"), SFACE_SHA256, 128, "vgg")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="not found"):
        ModelSpec.from_path(Path("/nonexistent/model.onnx"))


def test_unreadable_images_are_refused(pipeline: FacePipeline, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is a text file, not a photograph\n")
    with pytest.raises(UnreadableImage) as err:
        pipeline.template(text)
    assert "notes.jpg" in str(err.value) and str(tmp_path) not in str(err.value)
    assert err.value.code == "unreadable_image"
    with pytest.raises(UnreadableImage, match="not a file"):
        pipeline.template(tmp_path)
    with pytest.raises(UnreadableImage, match="empty"):
        pipeline.template_bytes(b"", "upload.jpg")
    with pytest.raises(UnreadableImage, match="pixel type"):
        pipeline.template(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(UnreadableImage, match=r"^passport\.jpg: "):
        pipeline.template_bytes(b"\xff\xd8 truncated", "../../etc/passport.jpg")


def test_blank_image_has_no_face(pipeline: FacePipeline) -> None:
    grey = np.full((480, 640, 3), 128, np.uint8)
    with pytest.raises(NoFace, match="no face") as err:
        pipeline.template(grey, name="blank.png")
    assert "blank.png" in str(err.value) and err.value.code == "no_face"


def test_two_faces_need_a_pick(pipeline: FacePipeline, tmp_path: Path) -> None:
    left, right = _read("img18.jpg"), _read("img19.jpg")  # both 800 px high
    both = _write_jpg(tmp_path / "two.jpg", np.hstack([left, right]))
    with pytest.raises(SeveralFaces, match=r"two\.jpg: 2 faces") as err:
        pipeline.template(both)
    assert err.value.code == "several_faces"
    faces = pipeline.faces(both)
    assert len(faces) == 2 and faces[0].score >= faces[1].score
    alone = {n: pipeline.template(FACES / n) for n in ("img18.jpg", "img19.jpg")}
    largest = pipeline.template(both, pick="largest")
    assert max(float(largest @ t) for t in alone.values()) > 0.95
    for index, face in enumerate(faces):
        t = pipeline.template(both, pick=index)
        # A face in the left half is img18, in the right half img19.
        source = "img18.jpg" if face.bbox[0] < left.shape[1] else "img19.jpg"
        assert float(t @ alone[source]) > 0.95
    with pytest.raises(NoFace, match="no face number 2"):
        pipeline.template(both, pick=2)
    with pytest.raises(InvalidInput, match="pick"):
        pipeline.template(both, pick=-1)


def test_bystanders_do_not_make_a_portrait_ambiguous(pipeline: FacePipeline) -> None:
    # img62 has a second, clearly smaller face in the background; img54 several tiny ones.
    for name in ("img54.jpg", "img62.jpg"):
        assert len(pipeline.faces(FACES / name)) >= 2
        assert pipeline.template(FACES / name).shape == (128,)


def test_small_face_is_refused(pipeline: FacePipeline) -> None:
    img = _read("img12.jpg")  # eyes ~66 px apart
    eyes = pipeline.faces(img)[0].inter_eye_px
    small = cv2.resize(img, None, fx=15 / eyes, fy=15 / eyes, interpolation=cv2.INTER_AREA)
    with pytest.raises(FaceTooSmall, match=r"small\.jpg: face too small: eyes 1\d\.\d px apart"):
        pipeline.template(small, name="small.jpg")


def test_blurred_face_is_refused(pipeline: FacePipeline) -> None:
    img = _read("img12.jpg")
    eyes = pipeline.faces(img)[0].inter_eye_px
    blurred = cv2.GaussianBlur(img, (0, 0), eyes / 10)
    with pytest.raises(TooBlurred, match=r"blurred\.jpg: .*Laplacian variance \d+\.\d, minimum 15"):
        pipeline.template(blurred, name="blurred.jpg")


def test_dark_face_is_refused(pipeline: FacePipeline) -> None:
    dark = (_read("img12.jpg") * 0.2).astype(np.uint8)
    with pytest.raises(TooDark, match=r"dark\.jpg: .*grey level \d+\.\d, minimum 50"):
        pipeline.template(dark, name="dark.jpg")


def test_photo_bytes_give_the_file_template(
    pipeline: FacePipeline, templates: dict[str, npt.NDArray[np.float32]]
) -> None:
    data = (FACES / "img3.jpg").read_bytes()
    t = pipeline.template_bytes(data, "img3.jpg")
    assert np.array_equal(t, templates["img3.jpg"])


def test_quality_errors_share_one_base() -> None:
    for cls in (UnreadableImage, NoFace, SeveralFaces, FaceTooSmall, TooBlurred, TooDark):
        assert issubclass(cls, FaceQualityError)


def test_quality_config_checks_its_values() -> None:
    with pytest.raises(ConfigError, match="min_brightness"):
        QualityConfig(min_brightness=300)
    with pytest.raises(ConfigError, match="min_inter_eye_px"):
        QualityConfig(min_inter_eye_px=float("nan"))


def test_decompression_bomb_is_refused_before_decoding() -> None:
    import io

    from PIL import Image as PILImage

    from fedmatch.biometrics.photofile import MAX_PIXELS

    # A tiny PNG whose header claims far more pixels than any photograph has.
    side = int(MAX_PIXELS**0.5) + 100
    buffer = io.BytesIO()
    PILImage.new("L", (side, side)).save(buffer, format="PNG", optimize=True)
    data = buffer.getvalue()
    assert len(data) < 1_000_000
    with pytest.raises(UnreadableImage, match="pixels, more than"):
        FacePipeline().template_bytes(data, "bomb.png")


def test_bomb_beyond_pils_own_guard_is_refused_too() -> None:
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("1", (20000, 20000)).save(buffer, format="PNG", optimize=True)  # 400 MP
    with pytest.raises(UnreadableImage, match="more than"):
        FacePipeline().template_bytes(buffer.getvalue(), "bigger.png")
