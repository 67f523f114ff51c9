"""Bulk enrolment that can be interrupted (issue 19, item 6): ``fedmatch enroll`` over a
manifest of templates, stopped by Ctrl-C (a real SIGINT to a real process) mid-run, then
resumed with ``--skip-existing``; the counts of each run are exact."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedmatch.demo.synthetic import unit_vectors
from tests.federation import DIM, federation
from tests.integration.test_cli_e2e import operator

HEADER = ["--legal-basis", "Reg. 2024/1358 Art. 15", "--case-reference", "C-19"]
SEEDED = 10
TOTAL = 150  # Ctrl-C comes after 20: 130 more enrolments (~9 s here) of margin


def _bulk_files(tmp: Path) -> tuple[Path, Path]:
    """``TOTAL`` templates and their manifest (references IT-B-0000...)."""
    templates = tmp / "bulk.npy"
    np.save(templates, unit_vectors(np.random.default_rng(19), TOTAL, DIM))
    manifest = tmp / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["reference", "category", "event_date", "event_place", "row", "birth_date"])
        for i in range(TOTAL):
            w.writerow([f"IT-B-{i:04d}", "applicant", "2026-01-02", "Bari", i, "1990-05-17"])
    return templates, manifest


@pytest.mark.slow
def test_ctrl_c_during_bulk_enrolment_prints_its_summary_and_skip_existing_resumes(
    tmp_path: Path,
) -> None:
    templates, manifest = _bulk_files(tmp_path)
    fed_dir = tmp_path / "fed"
    with federation(fed_dir, ("DE", "IT"), records=SEEDED) as fed:
        it = fed.nodes["IT"]
        argv = [
            sys.executable, "-m", "fedmatch", "enroll", *operator(fed_dir, "IT"),
            "--node", fed.servers["IT"].address, "--state", "IT", *HEADER,
            "--template", str(templates), "--manifest", str(manifest),
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while it.record_count() < SEEDED + 20:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "no progress"
                time.sleep(0.01)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, err
        first = json.loads(out.splitlines()[-1])
        before = it.record_count() - SEEDED
        assert 20 <= before < TOTAL, "the run ended before Ctrl-C: make TOTAL larger"
        # Exact: the record being sent at Ctrl-C is finished and counted, none is lost.
        assert first["interrupted"] is True and first["abandoned"] is None
        assert (first["enrolled"], first["skipped"], first["rejected"]) == (before, 0, 0)
        assert first["not_attempted"] == TOTAL - before
        assert first["last_enrolled"] == f"IT-B-{before - 1:04d}"
        assert first["register_size"] == SEEDED + before
        assert f"[{before}/{TOTAL}] enrolled {before}, rejected 0" in err
        assert "--skip-existing to resume" in err and "Traceback" not in err

        # The same command again stops at the first record already enrolled, and says how
        # to go on.
        again = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        assert again.returncode == 3, again.stderr
        assert "ALREADY_EXISTS" in again.stderr and "--skip-existing" in again.stderr
        stopped = json.loads(again.stdout.splitlines()[-1])
        assert stopped["stopped_at"] == "IT-B-0000" and stopped["enrolled"] == 0
        assert stopped["not_attempted"] == TOTAL - 1

        resumed = subprocess.run(
            [*argv, "--skip-existing"], capture_output=True, text=True, timeout=300, check=False
        )
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads(resumed.stdout.splitlines()[-1])
        assert (summary["enrolled"], summary["skipped"], summary["not_attempted"]) == (
            TOTAL - before,
            before,
            0,
        )
        assert summary["last_enrolled"] == f"IT-B-{TOTAL - 1:04d}"
        assert summary["register_size"] == it.record_count() == SEEDED + TOTAL
        assert (
            f"[{TOTAL}/{TOTAL}] enrolled {TOTAL - before}, rejected 0, skipped {before}"
            in resumed.stderr
        )
