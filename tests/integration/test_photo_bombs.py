"""Issue 21, attack 3, at a real node: photo bombs are refused unread.

A real ``fedmatch node serve`` process (mutual TLS on loopback, SQLite) receives, from its
own state's operator, the 56 MP Radiance HDR of the issue (3.6 MB) and a large TIFF, WebP,
PNM and BMP (each under the 50 MP bound, so that only the format can refuse them), and a
PNG whose image data inflates past its header: through the EnrollPhoto RPC and through
``fedmatch enroll --images``. Each is refused with INVALID_ARGUMENT naming its format, in
well under a second, and the node's peak memory (VmHWM of its process) grows by less than
100 MB; photos in JPEG, PNG and JPEG 2000 are still enrolled.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import pytest

from fedmatch.domain import Category, Sex
from fedmatch.requester.enrolment import EnrolmentRecord, NodeEnroller
from tests.federation import MODEL, header, operator_toml, pki, request_signer, security
from tests.integration.test_operations import Party, _fedmatch, _node_config, _start, _stop
from tests.photo_bombs import FORMAT_BOMBS, png_idat_bomb

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
ACCEPTED = "send JPEG, PNG or JPEG 2000"
MB = 1_000_000


@dataclass
class Node:
    fed: Path
    party: Party

    def peak(self) -> int:
        """The node process's peak resident memory so far (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.party.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def enrol(self, photo: bytes, reference: str) -> int:
        day = dt.date(2026, 2, 1)
        record = EnrolmentRecord(
            reference, Category.APPLICANT, day, "Centre", day, Sex.UNSPECIFIED, "officer-1",
            birth_date=dt.date(1990, 5, 17),
        )  # fmt: skip
        credentials = security(self.fed, "operator-IT").channel_credentials()
        signer = request_signer(self.fed, "IT")
        with NodeEnroller(
            self.party.address, MODEL, 60.0, credentials, "IT", signer=signer
        ) as node:
            return node.enroll_photo(header("IT"), record, photo, reference)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """IT's node with 5 records, warmed up by one photo enrolment (its face models loaded),
    so that what follows is measured against a node that has decoded a photo."""
    fed = tmp_path_factory.mktemp("bombs")
    pki(fed, "IT")
    party = _start(fed, "node", _node_config(fed, "IT", 5, json_table=False), "node-it")
    try:
        running = Node(fed, party)
        assert running.enrol((FACES / "img26.jpg").read_bytes(), "IT-WARM") == 6
        yield running
    finally:
        assert _stop(party) == 0


def _photo(name: str, suffix: str) -> bytes:
    image = cv2.imread(str(FACES / name))
    assert image is not None
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return data.tobytes()


def test_photo_bombs_sent_to_enrol_photo_are_refused_unread(node: Node) -> None:
    before = node.peak()
    bombs = {file: (name, make()) for file, (name, make) in FORMAT_BOMBS.items()}
    for file, (name, data) in bombs.items():
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as err:
            node.enrol(data, file)
        seconds = time.perf_counter() - start
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, file
        details = err.value.details() or ""
        assert details == (
            f"unreadable_image: {file}: {name} is not an accepted photo format; {ACCEPTED}"
        )
        assert seconds < 1.0, f"{file}: {seconds:.2f} s"
    with pytest.raises(grpc.RpcError) as err:
        node.enrol(png_idat_bomb(100, 100, 1 << 30), "idat.png")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").endswith("(a decompression bomb)")
    growth = node.peak() - before
    assert growth < 100 * MB, f"the node grew by {growth / MB:.0f} MB"
    # Photos in the accepted formats are still enrolled, by the same node.
    size = node.enrol((FACES / "img27.jpg").read_bytes(), "IT-JPEG")
    assert node.enrol(_photo("img28.jpg", ".png"), "IT-PNG") == size + 1
    assert node.enrol(_photo("img42.jpg", ".jp2"), "IT-JP2") == size + 2
    assert node.party.process.poll() is None


def test_fedmatch_enroll_of_a_folder_with_bombs_enrols_the_photos_only(
    node: Node, tmp_path: Path
) -> None:
    """The bulk command: each bomb, named as a JPEG, is rejected with its reason and
    counted; the real photo in the same folder is enrolled."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a-real.jpg").write_bytes((FACES / "img43.jpg").read_bytes())
    for file, (_, make) in FORMAT_BOMBS.items():
        (folder / f"{Path(file).stem}.jpg").write_bytes(make())
    # The workstation's [tls] (the channel) and the officer's [officer] (who signs each).
    config = operator_toml(node.fed, "IT", path=tmp_path / "operator-it.toml")
    before = node.peak()
    done = _fedmatch(
        "enroll", "--config", str(config), "--node", node.party.address,
        "--state", "IT", "--legal-basis", "Reg. (EU) 2024/1358 Art. 15",
        "--case-reference", "IT-BOMBS", "--category", "applicant",
        "--event-date", "2026-01-10", "--event-place", "Bari", "--birth-date", "1990-05-17",
        "--images", str(folder),
    )  # fmt: skip
    assert done.returncode == 5, done.stderr  # some photos rejected
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["enrolled"] == 1
    assert summary["reject_reasons"] == {"unreadable_image": len(FORMAT_BOMBS)}
    growth = node.peak() - before
    assert growth < 100 * MB, f"the node grew by {growth / MB:.0f} MB"
