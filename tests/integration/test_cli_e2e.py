"""The `fedmatch` command end to end: demo, enroll and lookup as an operator runs them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedmatch.audit.note import NoteSigner
from fedmatch.synthetic import capture, unit_vectors
from tests.federation import DIM, federation

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
# Who asks: logged by the coordinator, which refuses a lookup without both.
WHO = ["--unit", "dublin-unit-1", "--operator", "officer-1"]


def _fedmatch(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedmatch", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("photos", ["packaged", "shared"])
def test_demo_prints_the_correct_decision(tmp_path: Path, photos: str) -> None:
    extra = ["--photos", str(FACES)] if photos == "shared" else []
    result = _fedmatch("demo", "--records", "3000", "--workdir", str(tmp_path), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    decision = summary["decision"]
    assert decision["responsible_state"] == "IT"
    assert (decision["rule"], decision["procedure"]) == ("irregular_entry", "take_charge")
    assert decision["complete"] is True
    assert decision["evidence"][0]["reference"] == "IT-2026-LMP-004711"
    assert {n["member_state"]: n["outcome"] for n in summary["nodes"]} == {"IT": "ok", "FR": "ok"}
    assert summary["control_hits"] == 0  # a photograph of someone else: no hit
    # The demo's own auditor verified every log and matched each node search (IT and FR,
    # for the lookup and the control) to a coordinator authorization.
    assert summary["audit"]["ok"] is True and summary["audit"]["violations"] == 0
    assert summary["audit"]["searches_checked"] == 4
    assert summary["audit"]["hit_reveals_checked"] >= 1
    assert ("insightface" in summary["photos"]) == (photos == "packaged")
    assert summary["bytes"]["sent"] > 0 and summary["timings_ms"]["lookup_ms"] > 0
    assert any("decision:" in line for line in lines)
    # Every process was shut down: the logs end with a graceful stop.
    for log in tmp_path.glob("*.log"):
        assert "signal 15: stopping" in log.read_text(), log.name
    # Every party signed its own audit log with its own key (mode 0600), and the work dir
    # holds an auditor configuration naming every party by address and verifier key.
    keys = {k.stem: NoteSigner.load(k) for k in (tmp_path / "keys").glob("*.key")}
    assert set(keys) == {"auditor", "coordinator", "node-DE", "node-IT", "node-FR"}
    for party in ("coordinator", "DE", "IT", "FR"):
        assert (tmp_path / f"audit-{party}" / "log" / "checkpoint").is_file(), party
    auditor_toml = tmp_path / "auditor.toml"
    assert str(auditor_toml) in result.stdout
    auditor = tomllib.loads(auditor_toml.read_text())
    assert auditor["auditor"]["name"] == keys["auditor"].name
    assert (tmp_path / auditor["auditor"]["signing_key"]) == tmp_path / "keys" / "auditor.key"
    assert auditor["coordinator"]["key"] == keys["coordinator"].vkey()
    assert {n["member_state"]: n["key"] for n in auditor["nodes"]} == {
        s: keys[f"node-{s}"].vkey() for s in ("DE", "IT", "FR")
    }


def test_enroll_and_lookup_commands(tmp_path: Path) -> None:
    rng = np.random.default_rng(31)
    person = unit_vectors(rng, 1, DIM)[0]
    np.save(tmp_path / "one.npy", capture(person, rng, 0.9))
    bulk = np.stack([capture(person, rng, 0.9), unit_vectors(rng, 1, DIM)[0]])
    np.save(tmp_path / "bulk.npy", bulk)
    with (tmp_path / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["reference", "category", "event_date", "event_place", "capture_date", "sex", "row"]
        )
        w.writerow(["FR-CLI-2", "applicant", "2025-12-01", "Calais", "2025-12-01", "M", "0"])
        w.writerow(["FR-CLI-3", "illegal_stay", "2026-01-01", "Calais", "", "", "1"])
    np.save(tmp_path / "probe.npy", capture(person, rng, 0.9))
    header = ["--legal-basis", "Reg. 2024/1358 Art. 15", "--case-reference", "C-9"]

    with federation(tmp_path / "fed", ("DE", "IT", "FR"), records=20) as fed:
        it, fr = fed.servers["IT"].address, fed.servers["FR"].address
        one = _fedmatch(
            "enroll", "--node", it, "--state", "IT", *header, "--template",
            str(tmp_path / "one.npy"), "--reference", "IT-CLI-1", "--category",
            "irregular_crossing", "--event-date", "2026-03-02", "--event-place", "Bari",
        )  # fmt: skip
        assert one.returncode == 0, one.stderr
        one_summary = json.loads(one.stdout.splitlines()[-1])
        assert (one_summary["enrolled"], one_summary["rejected"], one_summary["register_size"]) == (
            1,
            0,
            21,
        )
        many = _fedmatch(
            "enroll", "--node", fr, "--state", "FR", *header, "--template",
            str(tmp_path / "bulk.npy"), "--manifest", str(tmp_path / "manifest.csv"),
        )  # fmt: skip
        assert many.returncode == 0, many.stderr
        assert json.loads(many.stdout.splitlines()[-1])["enrolled"] == 2

        refused = _fedmatch(
            "enroll", "--node", fr, "--state", "DE", *header, "--template",
            str(tmp_path / "one.npy"), "--reference", "X-1", "--category", "applicant",
            "--event-date", "2026-03-02", "--event-place", "Bari",
        )  # fmt: skip
        assert refused.returncode == 3 and "PERMISSION_DENIED" in refused.stderr

        keys = tmp_path / "de.keys"
        assert _fedmatch("keys", "generate", "--out", str(keys)).returncode == 0
        lookup = [
            "lookup", "--coordinator", fed.coordinator_server.address, "--state", "DE",
            *header, *WHO, "--template", str(tmp_path / "probe.npy"), "--keys", str(keys),
            "--application-date", "2026-11-21",
        ]  # fmt: skip
        # Without verifiers the lookup stops at the candidates: no details are asked for.
        pending = _fedmatch(*lookup)
        assert pending.returncode == 0, pending.stderr
        candidates = json.loads(pending.stdout.splitlines()[-1])
        assert candidates["decision"] is None
        assert candidates["hits"] == candidates["pending_verification"] == 2
        assert candidates["timings_ms"]["resolve_ms"] == 0.0

        found = _fedmatch(*lookup, "--verified-by", "DE-expert-1,DE-expert-2")
        assert found.returncode == 0, found.stderr
        summary = json.loads(found.stdout.splitlines()[-1])
        assert summary["decision"]["responsible_state"] == "IT"
        assert summary["decision"]["procedure"] == "take_charge"
        assert summary["hits"] == 2 and summary["pending_verification"] == 0

        # One person is not enough to see the details of candidate hits.
        alone = _fedmatch(*lookup, "--verified-by", "DE-expert-1")
        assert alone.returncode == 3 and "PERMISSION_DENIED" in alone.stderr

    down = _fedmatch(
        "lookup", "--coordinator", "127.0.0.1:9", "--state", "DE", *header, *WHO, "--template",
        str(tmp_path / "probe.npy"), "--timeout", "3",
    )  # fmt: skip
    assert down.returncode == 4 and "UNAVAILABLE" in down.stderr


def test_photo_commands(tmp_path: Path) -> None:
    import cv2

    header = ["--legal-basis", "Reg. 2024/1358 Art. 15", "--case-reference", "C-10"]
    meta = ["--category", "applicant", "--event-date", "2026-01-10", "--event-place", "Bari"]
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("img26.jpg", "img3.jpg"):
        (folder / name).write_bytes((FACES / name).read_bytes())
    (folder / "broken.jpg").write_text("not a photo")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((400, 400, 3), 120, np.uint8))
    with federation(tmp_path / "fed", ("DE", "IT"), records=20) as fed:
        it = fed.servers["IT"].address
        bulk = _fedmatch("enroll", "--node", it, "--state", "IT", *header, *meta,
                         "--images", str(folder))  # fmt: skip
        assert bulk.returncode == 5, bulk.stderr  # some rejected: a summary says which, why
        summary = json.loads(bulk.stdout.splitlines()[-1])
        assert summary["enrolled"] == 2 and summary["register_size"] == 22
        assert summary["rejected_files"] == [{"file": "broken.jpg", "reason": "unreadable_image"}]
        no_face = _fedmatch("enroll", "--node", it, "--state", "IT", *header, *meta,
                            "--image", str(blank))  # fmt: skip
        assert no_face.returncode == 11 and "no_face" in no_face.stderr
        found = _fedmatch(
            "lookup", "--coordinator", fed.coordinator_server.address, "--state", "DE",
            *header, *WHO, "--image", str(FACES / "img27.jpg"), "--application-date",
            "2026-11-21", "--verified-by", "DE-expert-1, DE-expert-2",
        )  # fmt: skip
        assert found.returncode == 0, found.stderr
        result = json.loads(found.stdout.splitlines()[-1])
        assert result["hits"] == 1
        assert result["decision"]["evidence"][0]["reference"] == "img26"
        assert result["decision"]["procedure"] == "take_back"


def test_evaluate_command_on_the_shared_photos(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = _fedmatch(
        "evaluate", "--images", str(FACES), "--identities", str(FACES / "identities.csv"),
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    # At the configured threshold: no false non-match, and FMR at most 1 %.
    assert summary["at_threshold"]["fnmr"]["errors"] == 0
    assert summary["at_threshold"]["fmr"]["rate"] <= 0.01
    assert summary["failure_to_enrol"]["rate"] == 0.0
    for name in ("det.png", "scores.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert "0.45" in (out / "report.md").read_text()


def test_bench_faces_prints_json(tmp_path: Path) -> None:
    result = _fedmatch("bench", "faces", "--photos", str(FACES), "--images", "16")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["photos_per_second"] > 0


def test_bulk_enrolment_from_a_manifest_of_photos(tmp_path: Path) -> None:
    header = ["--legal-basis", "Reg. 2024/1358 Art. 15", "--case-reference", "C-11"]
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["reference", "category", "event_date", "event_place", "capture_date", "sex",
                    "image"])  # fmt: skip
        w.writerow(
            ["IT-M-1", "irregular_crossing", "2026-03-01", "Lampedusa", "", "M", "img26.jpg"]
        )
        w.writerow(["IT-M-2", "applicant", "2026-04-01", "Bari", "", "F", "img3.jpg"])
    with federation(tmp_path / "fed", ("DE", "IT"), records=10) as fed:
        result = _fedmatch(
            "enroll", "--node", fed.servers["IT"].address, "--state", "IT", *header,
            "--images", str(FACES), "--manifest", str(manifest),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.splitlines()[-1])
        assert (summary["enrolled"], summary["register_size"]) == (2, 12)
        assert "[2/2] enrolled 2, rejected 0" in result.stderr  # the progress line
