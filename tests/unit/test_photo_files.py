"""Photo files are decoded only in JPEG, PNG or JPEG 2000, and only when the header bounds
the decode (issue 21, attack 3: a 3.6 MB, 56 MP Radiance HDR grew a node by 4.7 GB).

Every other format this build of OpenCV decodes is refused by name before a pixel is
decoded, at a cost of milliseconds and with the process's peak memory (VmHWM, measured in a
fresh interpreter) growing by less than 100 MB. Lying headers decode to the header's size; a
PNG whose image data inflates past its IHDR is refused; the memory estimate of each accepted
format is checked against a real decode of its costliest accepted files; the shared photos
pass as JPEG and re-encoded as PNG and JPEG 2000.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from fedmatch.biometrics.errors import UnreadableImage
from fedmatch.biometrics.photofile import (
    MAX_DECODE_BYTES,
    MAX_PIXELS,
    check_photo,
    decode_bytes,
    decode_photo,
    identify,
    read_header,
)
from fedmatch.biometrics.photofile.jpeg import MAX_SCANS
from fedmatch.biometrics.photofile.jpeg2000 import MAX_LAYERS, MAX_TILES
from tests.photo_bombs import FORMAT_BOMBS, png_idat_bomb, rss_probe

ROOT = Path(__file__).resolve().parents[2]
FACES = ROOT.parent / "shared" / "data" / "faces"
ACCEPTED = "send JPEG, PNG or JPEG 2000"
MB = 1_000_000


def _refusal(data: bytes, name: str) -> str:
    with pytest.raises(UnreadableImage) as err:
        check_photo(data, name)
    message = str(err.value)
    _no_image_bytes(message, data)
    return message


def _no_image_bytes(message: str, data: bytes) -> None:
    """No run of 8 bytes of the message is a run of the file's bytes, in any spelling."""
    raw = message.encode("utf-8", "replace")
    assert message.isprintable() and len(message) < 300, message
    for i in range(len(raw) - 7):
        assert raw[i : i + 8] not in data, message
    assert data[:8].hex() not in message


def _run(script: str, *args: str) -> dict[str, Any]:
    """Runs ``script`` in a fresh interpreter (with :func:`rss_probe`'s ``peak``), returns
    the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", rss_probe() + script, *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ----------------------------------------------------------------- formats by name


def _grey(image: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))


def _float(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, np.float32) / 255


# The formats this build's OpenCV reads (cv2.getBuildInformation(), Media I/O), each as
# OpenCV itself writes it: (suffix, name in the refusal, conversion before encoding).
OTHER_FORMATS: list[tuple[str, str, Callable[[np.ndarray], np.ndarray]]] = [
    (".hdr", "Radiance HDR", _float),
    (".pfm", "PFM", _float),
    (".tif", "TIFF", np.asarray),
    (".webp", "WebP", np.asarray),
    (".bmp", "BMP", np.asarray),
    (".ppm", "PNM (PBM, PGM or PPM)", np.asarray),
    (".pgm", "PNM (PBM, PGM or PPM)", _grey),
    (".pbm", "PNM (PBM, PGM or PPM)", _grey),
    (".pam", "PAM", np.asarray),
    (".ras", "Sun Raster", np.asarray),
    (".gif", "GIF", np.asarray),
    (".avif", "AVIF", np.asarray),
]


@pytest.mark.parametrize(
    ("suffix", "name", "convert"), OTHER_FORMATS, ids=[f[0] for f in OTHER_FORMATS]
)
def test_every_other_format_opencv_decodes_is_refused_by_name(
    suffix: str, name: str, convert: Callable[[np.ndarray], np.ndarray]
) -> None:
    photo = cv2.imread(str(FACES / "img3.jpg"))
    assert photo is not None
    ok, encoded = cv2.imencode(suffix, convert(photo))
    assert ok
    data = encoded.tobytes()
    # OpenCV would decode it: only the allow-list stands between it and the decoder.
    assert cv2.imdecode(encoded, cv2.IMREAD_COLOR) is not None
    message = _refusal(data, f"photo{suffix}")
    assert message == f"photo{suffix}: {name} is not an accepted photo format; {ACCEPTED}"


def test_formats_without_an_encoder_here_and_unknown_bytes_are_refused_too() -> None:
    assert identify(b"\x76\x2f\x31\x01" + bytes(12)) == "OpenEXR"
    assert identify(b"\xff\x0a" + bytes(14)) == "JPEG XL"
    assert identify(b"\x00\x00\x00\x18ftypheic" + bytes(8)) == "HEIF"
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    message = _refusal(svg, "face.jpg")
    expected = f"not an image in an accepted photo format ({len(svg)} bytes); {ACCEPTED}"
    assert message == f"face.jpg: {expected}"


# ------------------------------------------------------------------ the bombs


_BOMB_SCRIPT = """
import json, sys, time
from pathlib import Path
import cv2
from fedmatch.biometrics.errors import UnreadableImage
from fedmatch.biometrics.pipeline import FacePipeline

folder = Path(sys.argv[1])
pipeline = FacePipeline()
warm = cv2.imread(sys.argv[2])
pipeline.template(warm)
pipeline.template_bytes((Path(sys.argv[2])).read_bytes(), "warm.jpg")
before = peak()
out = {}
for path in sorted(folder.iterdir()):
    for how in ("bytes", "file"):
        start = time.perf_counter()
        try:
            if how == "bytes":
                pipeline.template_bytes(path.read_bytes(), path.name)
            else:
                pipeline.template(path)
            message = "decoded"
        except UnreadableImage as exc:
            message = str(exc)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
        out[f"{path.name} {how}"] = [message, (time.perf_counter() - start) * 1e3]
print(json.dumps({"growth": peak() - before, "results": out}))
"""


def test_format_bombs_are_refused_unread_in_milliseconds_without_memory(tmp_path: Path) -> None:
    """Issue 21, attack 3, through the face pipeline (encoded bytes, as a node receives
    them, and files, as the command line reads them)."""
    folder = tmp_path / "bombs"
    folder.mkdir()
    expected = {}
    for file, (name, make) in FORMAT_BOMBS.items():
        data = make()
        assert len(data) < 8 << 20  # small enough for an enrolment request
        (folder / file).write_bytes(data)
        expected[file] = f"{file}: {name} is not an accepted photo format; {ACCEPTED}"
    result = _run(_BOMB_SCRIPT, str(folder), str(FACES / "img3.jpg"))
    for key, (message, ms) in result["results"].items():
        file = key.split()[0]
        assert message == expected[file], key
        assert ms < 250, f"{key}: {ms:.0f} ms"
    assert result["growth"] < 100 * MB, f"grew by {result['growth'] / MB:.0f} MB"


@pytest.mark.slow
def test_the_bombs_are_real_opencv_decodes_each_to_its_full_size(tmp_path: Path) -> None:
    """Without the allow-list each of them would be decoded whole (in a fresh process
    without fedmatch, so that OpenCV's own limit is not set)."""
    for file, (_, make) in FORMAT_BOMBS.items():
        (tmp_path / file).write_bytes(make())
    script = (
        "import sys, json, cv2\nfrom pathlib import Path\nshapes = {}\n"
        "for path in sorted(Path(sys.argv[1]).iterdir()):\n"
        "    image = cv2.imdecode(__import__('numpy').frombuffer(path.read_bytes(), 'uint8'), 1)\n"
        "    shapes[path.name] = None if image is None else list(image.shape[:2])\n"
        "    del image\n"
        "print(json.dumps(shapes))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("OPENCV_IO_")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    shapes = json.loads(done.stdout)
    assert shapes.pop("radiance-56mp.hdr") == [7000, 8000]
    assert all(shape == [7000, 7000] for shape in shapes.values()), shapes


def test_a_png_whose_image_data_inflates_past_its_header_is_refused_in_milliseconds() -> None:
    # 100 x 100 pixels, then a gigabyte of zeros in the same deflate stream (1 MB of file):
    # libpng would inflate all of it, seconds of CPU, before OpenCV's decode returns.
    data = png_idat_bomb(100, 100, 1 << 30)
    start = time.perf_counter()
    message = _refusal(data, "bomb.png")
    assert time.perf_counter() - start < 0.25
    assert message == (
        "bomb.png: PNG refused unread: more image data than its 100 x 100 pixels hold "
        "(a decompression bomb)"
    )
    honest = png_idat_bomb(100, 100, 0)
    assert decode_photo(honest, "honest.png").shape == (100, 100, 3)


def test_more_pixels_than_the_bound_are_refused_unread_in_every_accepted_format() -> None:
    from PIL import Image

    side = int(MAX_PIXELS**0.5) + 100
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")
    expected = f"{side} x {side} pixels, more than {MAX_PIXELS:,} (refused unread)"
    assert _refusal(buffer.getvalue(), "big.png") == f"big.png: {expected}"
    small = _jpeg(np.zeros((64, 64, 3), np.uint8))
    assert _refusal(_with_frame_size(small, side, side), "big.jpg") == f"big.jpg: {expected}"
    jp2 = _jpeg2000({"no_jp2": True}, size=(64, 64))
    assert _refusal(_with_siz_size(jp2, side, side), "big.j2k") == f"big.j2k: {expected}"


def test_the_decode_memory_bound_counts_channels_and_sample_depth() -> None:
    # 7,000 x 6,500 = 45.5 MP, under the pixel bound: 8-bit grey is within the memory
    # bound, 16-bit RGBA needs twice as much and is refused.
    grey = read_header(_png_header(7000, 6500, depth=8, colour=0))
    assert grey.channels == 1 and decode_bytes(grey) <= MAX_DECODE_BYTES
    rgba16 = _png_header(7000, 6500, depth=16, colour=6)
    message = _refusal(rgba16, "deep.png")
    assert message.startswith("deep.png: a 7000 x 6500 PNG of 4 components of 16 bits needs")
    assert message.endswith("MB to decode, more than 600 MB (refused unread)")


def _png_header(width: int, height: int, depth: int, colour: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    crc = struct.pack(">I", __import__("zlib").crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc


# ------------------------------------------------------------- lying headers


def _jpeg(image: np.ndarray, *params: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, list(params))
    assert ok
    return encoded.tobytes()


def _frame_at(data: bytes) -> int:
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at > 0:
            return at
    raise AssertionError("no frame header")


def _with_frame_size(data: bytes, width: int, height: int) -> bytes:
    at = _frame_at(data)
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def test_a_jpeg_decodes_to_its_frame_header_size_whatever_its_data() -> None:
    photo = cv2.imread(str(FACES / "img3.jpg"))
    assert photo is not None
    large = cv2.resize(photo, (3000, 4000))
    # Frame header 100 x 100, data of 12 MP: 100 x 100 decoded, the rest skipped.
    small_frame = _with_frame_size(_jpeg(large), 100, 100)
    start = time.perf_counter()
    assert decode_photo(small_frame, "a.jpg").shape == (100, 100, 3)
    assert time.perf_counter() - start < 0.25
    # Frame header 3000 x 4000, data of 64 x 64: 3000 x 4000 decoded, as the header (and
    # the memory estimate) says.
    big_frame = _with_frame_size(_jpeg(np.full((64, 64, 3), 99, np.uint8)), 3000, 4000)
    assert decode_photo(big_frame, "b.jpg").shape == (4000, 3000, 3)


def test_jpegs_libjpeg_would_read_otherwise_are_refused() -> None:
    base = _jpeg(np.full((64, 64, 3), 99, np.uint8))
    at = _frame_at(base)
    frame_end = at + 2 + struct.unpack(">H", base[at + 2 : at + 4])[0]
    two_frames = base[:frame_end] + base[at:frame_end] + base[frame_end:]
    assert _refusal(two_frames, "a.jpg") == "a.jpg: JPEG refused unread: two frame headers"
    hierarchical = base[:at] + b"\xff\xc5" + base[at + 2 :]
    assert _refusal(hierarchical, "b.jpg") == (
        "b.jpg: JPEG refused unread: hierarchical or JPEG-LS coding (not decoded)"
    )
    no_height = _with_frame_size(base, 64, 0)
    assert "no height in the frame header (DNL)" in _refusal(no_height, "c.jpg")
    assert "no scan after the header" in _refusal(base[: base.find(b"\xff\xda")] + b"\xff\xd9", "d")


def test_a_jpeg_with_more_scans_than_a_photo_has_is_refused() -> None:
    image = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    progressive = _jpeg(image, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    last_scan = progressive.rfind(b"\xff\xda")
    scan = progressive[last_scan:-2]
    repeated = progressive[:-2] + scan * MAX_SCANS + b"\xff\xd9"
    message = _refusal(repeated, "scans.jpg")
    assert message.startswith("scans.jpg: JPEG refused unread: ")
    assert message.endswith(f"scans, more than {MAX_SCANS}")
    assert check_photo(progressive, "ok.jpg").format == "JPEG"


# ------------------------------------------------------------------ JPEG 2000


def _jpeg2000(
    options: dict[str, Any], size: tuple[int, int] = (512, 512), mode: str = "RGB"
) -> bytes:
    """A JPEG 2000 file made by PIL (OpenJPEG) with the given coding options: a noisy
    gradient, so that every code-block holds data."""
    from PIL import Image

    rng = np.random.default_rng(5)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    ramp = np.linspace(0, 200, size[0], dtype=np.float32)[None, :, None]
    noise = rng.integers(0, 40, (size[1], size[0], channels)).astype(np.float32)
    pixels = (ramp + noise).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(
        buffer, "JPEG2000", **options
    )
    return buffer.getvalue()


def _with_siz_size(codestream: bytes, width: int, height: int) -> bytes:
    """The codestream with its SIZ image size (and its one tile's) set."""
    assert codestream[:4] == b"\xff\x4f\xff\x51"
    size = struct.pack(">II", width, height)
    return codestream[:8] + size + codestream[16:24] + size + codestream[32:]


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"codeblock_size": (4, 4)}, "code-blocks of 16 samples on average (at least 200"),
        ({"precinct_size": (32, 32)}, "code-blocks of 64 samples on average (at least 200"),
        ({"tile_size": (16, 16)}, "1,444 tiles, more than 1,024"),
        ({"quality_layers": [float(n) for n in range(40, 0, -1)]}, "40 quality layers"),
        ({"num_resolutions": 12}, "11 decomposition levels (at most 10 are accepted)"),
    ],
    ids=["code-blocks", "precincts", "tiles", "layers", "levels"],
)
def test_jpeg2000_outside_the_profile_is_refused_unread(
    options: dict[str, Any], reason: str
) -> None:
    size = (2048, 2048) if "num_resolutions" in options else (600, 600)
    message = _refusal(_jpeg2000(options, size=size), "p.jp2")
    assert message.startswith("p.jp2: JPEG 2000 refused unread: ")
    assert reason in message


def test_jpeg2000_with_a_palette_or_a_header_that_disagrees_is_refused() -> None:
    data = _jpeg2000({}, size=(64, 64))
    at = data.find(b"ihdr")
    wrong = data[: at + 8] + struct.pack(">I", 65) + data[at + 12 :]  # ihdr width 65
    assert _refusal(wrong, "w.jp2") == (
        "w.jp2: JPEG 2000 refused unread: an ihdr box and a SIZ segment that disagree"
    )
    # A pclr box (one entry of three 8-bit columns) at the end of the JP2 header box,
    # whose length grows by the new box's.
    jp2h = data.find(b"jp2h") - 4
    length = struct.unpack(">I", data[jp2h : jp2h + 4])[0]
    body = struct.pack(">HB", 1, 3) + b"\x07" * 3 + b"\x00" * 3
    pclr = struct.pack(">I", 8 + len(body)) + b"pclr" + body
    boxed = (
        data[:jp2h]
        + struct.pack(">I", length + len(pclr))
        + data[jp2h + 4 : jp2h + length]
        + pclr
        + data[jp2h + length :]
    )
    message = _refusal(boxed, "p.jp2")
    assert message == "p.jp2: JPEG 2000 refused unread: a palette (pclr or cmap box)"


def test_jpeg2000_files_and_codestreams_in_the_profile_decode() -> None:
    for options in ({}, {"no_jp2": True}, {"codeblock_size": (16, 16), "tile_size": (128, 128)}):
        data = _jpeg2000(options, size=(300, 200))
        assert decode_photo(data, "ok.jp2").shape == (200, 300, 3)


# ------------------------------------------------------------ memory estimate


_MEASURE_SCRIPT = """
import json, sys
from pathlib import Path
import cv2, numpy as np
from fedmatch.biometrics.photofile import check_photo, decode_bytes, decode_photo
# Each decoder's libraries are initialised first, so that only the decode is measured.
for suffix in (".jpg", ".png", ".jp2"):
    cv2.imdecode(cv2.imencode(suffix, np.zeros((64, 64, 3), np.uint8))[1], cv2.IMREAD_COLOR)
data = Path(sys.argv[1]).read_bytes()
estimate = decode_bytes(check_photo(data, "x"))
before = peak()
decode_photo(data, "x")
print(json.dumps({"growth": peak() - before, "estimate": estimate}))
"""


@pytest.mark.slow
def test_decoding_stays_within_the_estimate_for_the_costliest_accepted_files(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(2)
    noise = rng.integers(0, 255, (2000, 2000, 4), dtype=np.uint8)
    files = {
        # libjpeg's coefficient buffer: progressive, no chroma subsampling.
        "progressive-444.jpg": _jpeg(
            noise[..., :3],
            cv2.IMWRITE_JPEG_PROGRESSIVE,
            1,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        ),
        "rgba16.png": cv2.imencode(".png", noise.astype(np.uint16) * 257)[1].tobytes(),
        # OpenJPEG at the edges of the profile: the smallest code-blocks with the most
        # levels, with the most layers, with the most tiles.
        "small-blocks.jp2": _jpeg2000(
            {"codeblock_size": (16, 16), "num_resolutions": 11}, size=(1600, 1600), mode="RGBA"
        ),
        "many-layers.jp2": _jpeg2000(
            {
                "codeblock_size": (16, 16),
                "quality_mode": "dB",
                "quality_layers": [float(n) for n in range(20, 20 + MAX_LAYERS)],
            },
            size=(800, 800),
            mode="RGBA",
        ),
        "many-tiles.jp2": _jpeg2000(
            {"codeblock_size": (16, 16), "tile_size": (38, 38)}, size=(1200, 1200), mode="RGBA"
        ),
    }
    assert read_header(files["many-tiles.jp2"]).tiles == MAX_TILES
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        result = _run(_MEASURE_SCRIPT, str(path))
        assert 0 < result["growth"] <= result["estimate"], (name, result)


# ------------------------------------------------------------ honest photos


def test_the_shared_photos_pass_as_jpeg_png_and_jpeg2000() -> None:
    from fedmatch.biometrics.pipeline import FacePipeline

    files = sorted(FACES.glob("*.jpg"))
    assert len(files) >= 28
    pipeline = FacePipeline()
    for index, path in enumerate(files):
        data = path.read_bytes()
        header = check_photo(data, path.name)
        pixels = decode_photo(data, path.name)
        assert sorted(pixels.shape[:2]) == sorted((header.height, header.width))
        for suffix in (".png", ".jp2"):
            ok, encoded = cv2.imencode(suffix, pixels)
            assert ok
            again = decode_photo(encoded.tobytes(), path.stem + suffix)
            assert again.shape == pixels.shape
        if index % 7 == 0:
            # The face path gives the same person from each format.
            reference = pipeline.template_bytes(data, path.name)
            for suffix in (".png", ".jp2"):
                other = cv2.imencode(suffix, pixels)[1].tobytes()
                template = pipeline.template_bytes(other, path.stem + suffix)
                assert float(template @ reference) > 0.95


def test_a_16_bit_png_and_a_grey_jpeg_still_decode() -> None:
    photo = cv2.imread(str(FACES / "img3.jpg"))
    assert photo is not None
    deep = cv2.imencode(".png", photo.astype(np.uint16) * 257)[1].tobytes()
    assert check_photo(deep, "deep.png").bits == 16
    assert decode_photo(deep, "deep.png").shape == photo.shape
    grey = _jpeg(_grey(photo))
    assert check_photo(grey, "grey.jpg").channels == 1
    assert decode_photo(grey, "grey.jpg").shape == photo.shape


# ------------------------------------------------------------ OpenCV's own limit


_LIMIT_SCRIPT = """
import json, os
import fedmatch
import cv2, numpy as np
from fedmatch.biometrics.photofile import MAX_PIXELS
def refused(width, height):
    header = f"P5\\n{width} {height}\\n255\\n".encode() + bytes(16)
    try:
        cv2.imdecode(np.frombuffer(header, np.uint8), cv2.IMREAD_GRAYSCALE)
    except cv2.error as exc:
        return "CV_IO_MAX_IMAGE_PIXELS" in str(exc)
    return False
print(json.dumps({
    "env": os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"], "bound": MAX_PIXELS,
    "set": fedmatch._OPENCV_MAX_PIXELS,
    "over": refused(8000, 7000), "under": refused(100, 100),
}))
"""


def test_opencv_s_own_pixel_limit_is_set_before_cv2_loads() -> None:
    # The second line of defence: OpenCV refuses a PGM header of 56 MP by itself.
    plain = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    result = _run_env(_LIMIT_SCRIPT, plain)
    assert result == {
        "env": str(MAX_PIXELS), "bound": MAX_PIXELS, "set": MAX_PIXELS,
        "over": True, "under": False,
    }  # fmt: skip
    # An operator's lower limit is kept.
    lower = _run_env(_LIMIT_SCRIPT, {**plain, "OPENCV_IO_MAX_IMAGE_PIXELS": "5000"})
    assert lower["env"] == "5000" and lower["under"] is True


def _run_env(script: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_damaged_headers_are_refused_cleanly_or_read() -> None:
    """Random byte changes in the headers of each accepted format: the check reads a
    header or refuses with UnreadableImage, never another exception."""
    import random

    original = cv2.imread(str(FACES / "img3.jpg"))
    assert original is not None
    photo = cv2.resize(original, (120, 160))
    seeds = [
        _jpeg(photo),
        _jpeg(photo, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        cv2.imencode(".png", photo)[1].tobytes(),
        cv2.imencode(".jp2", photo)[1].tobytes(),
        _jpeg2000({"no_jp2": True, "tile_size": (64, 64)}, size=(120, 160)),
    ]
    rng = random.Random(7)
    outcomes = {"read": 0, "refused": 0}
    for seed in seeds:
        for _ in range(300):
            damaged = bytearray(seed)
            for _ in range(rng.randint(1, 6)):
                damaged[rng.randrange(min(len(damaged), 400))] = rng.randrange(256)
            if rng.random() < 0.2:
                damaged = damaged[: rng.randrange(1, len(damaged))]
            try:
                check_photo(bytes(damaged), "damaged")
                outcomes["read"] += 1
            except UnreadableImage:
                outcomes["refused"] += 1
    assert min(outcomes.values()) > 100, outcomes
