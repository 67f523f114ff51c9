"""The `fedmatch` command end to end: demo, enroll and lookup as an operator runs them, over
mutual TLS with signed requests (and once in plaintext, with --dev-insecure)."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedmatch.audit.note import NoteSigner
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.pki.ca import TlsFiles
from fedmatch.protocol.transport import load_security
from tests.federation import DIM, federation, operator_toml, pki

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
# Who asks: logged by the coordinator, which refuses a lookup without both.
WHO = ["--unit", "dublin-unit-1", "--operator", "officer-1"]


def _fedmatch(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedmatch", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _tls_table(files: TlsFiles) -> str:
    crls = ", ".join(f'"{c}"' for c in files.crls)
    return (
        f'[tls]\nkey = "{files.key}"\nchain = "{files.chain}"\nroot = "{files.root}"\n'
        f"crls = [{crls}]\n"
    )


def operator(fed_dir: Path, state: str) -> list[str]:
    """``--config`` of an operator workstation of ``state`` in the test federation's PKI:
    its mTLS certificate, and the officer officer-1's certificate and protected key."""
    return ["--config", str(operator_toml(fed_dir, state))]


def verifier(fed_dir: Path, state: str, person: str) -> list[str]:
    """``--config`` of a hit verifier of ``state`` (a `verifier` certificate and its key)."""
    party = pki(fed_dir, state)[f"verifier-{person}-{state}"]
    path = fed_dir / f"verifier-{person}-{state}.toml"
    path.write_text(f'[verifier]\nsigning_key = "{party.signing_key}"\n' + _tls_table(party.tls))
    return ["--config", str(path)]


def sign_verdicts(fed_dir: Path, candidates: Path, people: tuple[str, ...]) -> list[str]:
    """Each of ``people`` (DE verifiers) signs a confirmation of every candidate in a
    verdict file, as by hand: list where each hit's two images are and their hashes, then
    sign naming them (``--seen``); without ``--seen`` nothing is signed."""
    listed = _fedmatch("verify-hit", "--candidates", str(candidates))
    assert listed.returncode == 0, listed.stderr
    seen = [f"--seen={h['seen']}" for h in json.loads(listed.stdout)["hits"]]
    files = []
    for person in people:
        out = fed_dir / f"verdict-{person}.json"
        config = verifier(fed_dir, "DE", person)
        before = out.read_bytes() if out.exists() else None
        unseen = _fedmatch(
            "verify-hit", *config, "--candidates", str(candidates), "--confirm",
            "--out", str(out),
        )  # fmt: skip
        assert unseen.returncode == 2 and "not signed" in unseen.stderr, unseen.stderr
        assert (out.read_bytes() if out.exists() else None) == before  # nothing signed
        signed = _fedmatch(
            "verify-hit", *config, "--candidates", str(candidates), "--confirm",
            *seen, "--out", str(out),
        )  # fmt: skip
        assert signed.returncode == 0, signed.stderr
        files.append(str(out))
    return files


def verified_resolve(
    fed_dir: Path, coordinator: str, lookup: list[str], people: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    """Lookup to the candidates, each of ``people`` (DE verifiers) confirms them in a signed
    verdict file, then resolve with those files, as the commands are run by hand."""
    candidates = fed_dir / "candidates.json"
    pending = _fedmatch(*lookup, "--candidates-out", str(candidates))
    assert pending.returncode == 0, pending.stderr
    files = sign_verdicts(fed_dir, candidates, people)
    return _fedmatch(
        "resolve", *operator(fed_dir, "DE"), "--coordinator", coordinator,
        "--candidates", str(candidates), "--verdicts", *files,
        "--application-date", "2026-11-21",
    )  # fmt: skip


def _as_at_a_terminal() -> None:
    """In the child before it runs: Ctrl-C's default action, as a shell gives a foreground
    command. A test run started in the background by a shell without job control (CI under
    ``cmd &``) inherits SIGINT ignored, and so would the demo: it then ignored the Ctrl-C
    and the test waited its 120 s (measured: the demo's SigIgn held SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_demo_with_the_desk_serves_it_until_ctrl_c(tmp_path: Path) -> None:
    """``make demo DEMO_ARGS=--desk``: the demo prints the desk's address, serves it (its
    login page answers, the case is in its folder with the candidate's packet) and stops
    cleanly on Ctrl-C, with its audit."""
    import re
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "fedmatch", "demo", "--desk", "--records", "2000",
         "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_as_at_a_terminal,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        url = ""
        while not url:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines)
            lines.append(line)
            found = re.search(r"verifier desk: (https?://\S+) ", line)
            url = found.group(1) if found else ""
        with urllib.request.urlopen(url + "login", timeout=10) as page:
            html = page.read().decode()
            assert "expert1" in html and "expert2" in html and "(official)" in html
            assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
        (case,) = (tmp_path / "desk-cases").glob("*.json")
        manifest = json.loads(
            (case.with_name(case.name + ".packets") / "manifest.json").read_text()
        )
        assert sorted(c["member_state"] for c in manifest["candidates"]) == ["FR", "IT"]
        assert all(c["verifiable"] for c in manifest["candidates"])
        # Ctrl-C at a terminal: SIGINT to the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["desk"]["candidates"] == str(case)
    assert summary["audit"]["ok"] is True and summary["pending_verification"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("photos", ["packaged", "shared"])
def test_demo_prints_the_correct_decision(tmp_path: Path, photos: str) -> None:
    extra = ["--photos", str(FACES)] if photos == "shared" else []
    result = _fedmatch("demo", "--records", "3000", "--workdir", str(tmp_path), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    decision = summary["decision"]
    # FR found the traveller staying illegally (no application there): first entry, IT.
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
    # Every channel was mutual TLS and every request signed (the nodes refuse anything
    # else): the work dir holds the federation PKI, and every party's TOML a [tls] table
    # naming its own certificate, which binds the key it signs with.
    assert summary["security"] == {"transport": "mtls", "signed_requests": True}
    assert "mutual TLS" in result.stdout and "signed by its officer" in result.stdout
    assert {p.name for p in (tmp_path / "ca").glob("*.crl")} == {
        "root.crl",
        "eu.crl",
        "de.crl",
        "it.crl",
        "fr.crl",
    }
    # Every party signed its own audit log with its own key (mode 0600), and the work dir
    # holds an auditor configuration naming every party by address and verifier key.
    keys = {k.stem: NoteSigner.load(k) for k in (tmp_path / "keys").glob("*.key")}
    states = ("DE", "IT", "FR")
    assert set(keys) == {"auditor-demo", "coordinator"} | {
        f"{role}-{s}" for role in ("node", "operator") for s in states
    } | {"verifier-expert1-DE", "verifier-expert2-DE"} | {
        f"officer-{o}-{s}" for o in ("officer-12", "official-3") for s in states
    }
    # Every register keeps its templates encrypted at rest under its node's storage key.
    for s in states:
        assert (tmp_path / "storage-keys" / f"{s}.key").stat().st_mode & 0o077 == 0
        assert "[storage]" in (tmp_path / f"node-{s}.toml").read_text()
        with sqlite3.connect(tmp_path / f"{s}.sqlite") as db:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        assert meta.get("sealing_algorithm") == "aes256gcm-envelope-v1", s
    for party in ("coordinator", "DE", "IT", "FR"):
        assert (tmp_path / f"audit-{party}" / "log" / "checkpoint").is_file(), party
    configs: dict[str, tuple[str, str | None, str]] = {
        "coordinator.toml": ("coordinator", None, "coordinator"),
        "auditor.toml": ("auditor", None, "auditor-demo"),
    }
    configs |= {f"node-{s}.toml": ("node", s, f"node-{s}") for s in states}
    configs |= {f"operator-{s}.toml": ("operator", s, f"operator-{s}") for s in states}
    for name, (role, state, key) in configs.items():
        security = load_security(tmp_path / name)
        identity = security.verify_chain(security.chain_pem())
        assert (identity.role, identity.member_state) == (role, state), name
        assert identity.signing_key == keys[key].public_key_bytes(), name
    assert tomllib.loads((tmp_path / "node-IT.toml").read_text())["policy"]["version"]
    auditor_toml = tmp_path / "auditor.toml"
    assert str(auditor_toml) in result.stdout
    auditor = tomllib.loads(auditor_toml.read_text())
    assert auditor["auditor"]["name"] == keys["auditor-demo"].name
    signing_key = tmp_path / auditor["auditor"]["signing_key"]
    assert signing_key == tmp_path / "keys" / "auditor-demo.key"
    assert auditor["coordinator"]["key"] == keys["coordinator"].vkey()
    assert {n["member_state"]: n["key"] for n in auditor["nodes"]} == {
        s: keys[f"node-{s}"].vkey() for s in states
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
            ["reference", "category", "event_date", "event_place", "capture_date", "sex", "row",
             "birth_date"]
        )  # fmt: skip
        w.writerow(["FR-CLI-2", "applicant", "2025-12-01", "Calais", "2025-12-01", "M", "0",
                    "1990-05-17"])  # fmt: skip
        w.writerow(["FR-CLI-3", "illegal_stay", "2026-01-01", "Calais", "", "", "1",
                    "1985-01-02"])  # fmt: skip
    np.save(tmp_path / "probe.npy", capture(person, rng, 0.9))
    header = ["--legal-basis", "Reg. 2024/1358 Art. 15", "--case-reference", "C-9"]

    fed_dir = tmp_path / "fed"
    with federation(fed_dir, ("DE", "IT", "FR"), records=20) as fed:
        it, fr = fed.servers["IT"].address, fed.servers["FR"].address
        one = _fedmatch(
            "enroll", *operator(fed_dir, "IT"), "--node", it, "--state", "IT", *header,
            "--template", str(tmp_path / "one.npy"), "--reference", "IT-CLI-1", "--category",
            "irregular_crossing", "--event-date", "2026-03-02", "--event-place", "Bari",
            "--birth-date", "1990-05-17",
        )  # fmt: skip
        assert one.returncode == 0, one.stderr
        one_summary = json.loads(one.stdout.splitlines()[-1])
        assert (one_summary["enrolled"], one_summary["rejected"], one_summary["register_size"]) == (
            1,
            0,
            21,
        )
        many = _fedmatch(
            "enroll", *operator(fed_dir, "FR"), "--node", fr, "--state", "FR", *header,
            "--template", str(tmp_path / "bulk.npy"), "--manifest", str(tmp_path / "manifest.csv"),
        )  # fmt: skip
        assert many.returncode == 0, many.stderr
        assert json.loads(many.stdout.splitlines()[-1])["enrolled"] == 2

        # Enrolment is for a state's own node: DE's operator reaching FR's node finds no
        # node.de certificate there (TLS refuses it), and a DE certificate cannot enrol
        # for FR (refused before anything is sent).
        other = [*header, "--template", str(tmp_path / "one.npy"), "--reference", "X-1",
                 "--category", "applicant", "--event-date", "2026-03-02",
                 "--event-place", "Bari", "--birth-date", "1990-05-17"]  # fmt: skip
        refused = _fedmatch("enroll", *operator(fed_dir, "DE"), "--node", fr, "--state", "DE",
                            *other)  # fmt: skip
        assert refused.returncode == 4 and "UNAVAILABLE" in refused.stderr, refused.stderr
        foreign = _fedmatch("enroll", *operator(fed_dir, "DE"), "--node", fr, "--state", "FR",
                            *other)  # fmt: skip
        assert foreign.returncode == 2 and "not the operator of FR" in foreign.stderr
        assert fed.nodes["FR"].record_count() == 22

        keys = tmp_path / "de.keys"
        assert _fedmatch("keys", "generate", "--out", str(keys)).returncode == 0
        lookup = [
            "lookup", *operator(fed_dir, "DE"), "--coordinator", fed.coordinator_server.address,
            "--state", "DE",
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

        address = fed.coordinator_server.address
        found = verified_resolve(fed_dir, address, lookup, ("anna", "ben"))
        assert found.returncode == 0, found.stderr
        summary = json.loads(found.stdout.splitlines()[-1])
        # FR's earlier application comes before IT's crossing record: take back.
        assert summary["decision"]["responsible_state"] == "FR"
        assert summary["decision"]["procedure"] == "take_back"
        assert [h["status"] for h in summary["hits"]] == ["verified", "verified"]

        # One person is not enough to see the details of candidate hits.
        alone = verified_resolve(fed_dir, address, lookup, ("anna",))
        assert alone.returncode == 3 and "PERMISSION_DENIED" in alone.stderr

    down = _fedmatch(
        "lookup", *operator(fed_dir, "DE"), "--coordinator", "127.0.0.1:9", "--state", "DE",
        *header, *WHO, "--template", str(tmp_path / "probe.npy"), "--timeout", "3",
        "--application-date", "2026-11-21",
    )  # fmt: skip
    assert down.returncode == 4 and "UNAVAILABLE" in down.stderr


def test_photo_commands(tmp_path: Path) -> None:
    import cv2

    header = ["--legal-basis", "Reg. 2024/1358 Art. 15", "--case-reference", "C-10"]
    meta = ["--category", "applicant", "--event-date", "2026-01-10", "--event-place", "Bari",
            "--birth-date", "1990-05-17"]  # fmt: skip
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("img26.jpg", "img3.jpg"):
        (folder / name).write_bytes((FACES / name).read_bytes())
    (folder / "broken.jpg").write_text("not a photo")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((400, 400, 3), 120, np.uint8))
    fed_dir = tmp_path / "fed"
    with federation(fed_dir, ("DE", "IT"), records=20) as fed:
        it = fed.servers["IT"].address
        op_it = operator(fed_dir, "IT")
        bulk = _fedmatch("enroll", *op_it, "--node", it, "--state", "IT", *header, *meta,
                         "--images", str(folder))  # fmt: skip
        assert bulk.returncode == 5, bulk.stderr  # some rejected: a summary says which, why
        summary = json.loads(bulk.stdout.splitlines()[-1])
        assert summary["enrolled"] == 2 and summary["register_size"] == 22
        assert summary["rejected_files"] == [{"file": "broken.jpg", "reason": "unreadable_image"}]
        no_face = _fedmatch("enroll", *op_it, "--node", it, "--state", "IT", *header, *meta,
                            "--image", str(blank))  # fmt: skip
        assert no_face.returncode == 11 and "no_face" in no_face.stderr
        lookup = [
            "lookup", *operator(fed_dir, "DE"), "--coordinator", fed.coordinator_server.address,
            "--state", "DE", *header, *WHO, "--image", str(FACES / "img27.jpg"),
            "--application-date", "2026-11-21",
        ]  # fmt: skip
        address = fed.coordinator_server.address
        found = verified_resolve(fed_dir, address, lookup, ("anna", "ben"))
        assert found.returncode == 0, found.stderr
        result = json.loads(found.stdout.splitlines()[-1])
        assert len(result["hits"]) == 1
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
                    "image", "birth_date", "birth_date_estimated"])  # fmt: skip
        w.writerow(["IT-M-1", "irregular_crossing", "2026-03-01", "Lampedusa", "", "M",
                    "img26.jpg", "1990-05-17", ""])  # fmt: skip
        w.writerow(["IT-M-2", "applicant", "2026-04-01", "Bari", "", "F", "img3.jpg",
                    "2001-01-01", "1"])  # fmt: skip
    with federation(tmp_path / "fed", ("DE", "IT"), records=10) as fed:
        result = _fedmatch(
            "enroll", *operator(tmp_path / "fed", "IT"), "--node", fed.servers["IT"].address,
            "--state", "IT", *header,
            "--images", str(FACES), "--manifest", str(manifest),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.splitlines()[-1])
        assert (summary["enrolled"], summary["register_size"]) == (2, 12)
        assert "[2/2] enrolled 2, rejected 0" in result.stderr  # the progress line


def test_dev_insecure_serves_and_enrols_in_plaintext_with_a_warning(tmp_path: Path) -> None:
    """--dev-insecure: a node serves plaintext gRPC and an enrolment reaches it without TLS;
    both warn on stderr at start, and the node's [tls] root still loads: it verifies the
    officer's signature of the enrolment, which --dev-insecure does not waive."""
    parties = pki(tmp_path, "IT")
    node = parties["node-IT"]
    config = tmp_path / "node-it.toml"
    config.write_text(
        '[node]\nmember_state = "IT"\ndatabase = "it.sqlite"\ndimension = 128\n'
        '[audit]\ndirectory = "audit-it"\n'
        f'signing_key = "{node.signing_key}"\ncoordinator_key = "{parties["coordinator"].vkey}"\n'
        + _tls_table(node.tls)
    )
    port_file = tmp_path / "node.port"
    log = (tmp_path / "node.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedmatch", "node", "serve", "--config", str(config),
         "--listen", "127.0.0.1:0", "--port-file", str(port_file), "--dev-insecure"],
        stderr=log, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "node did not start"
            time.sleep(0.05)
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        np.save(tmp_path / "t.npy", unit_vectors(np.random.default_rng(3), 1, DIM)[0])
        argv = [
            "enroll", "--node", address, "--state", "IT", "--legal-basis", "x",
            "--case-reference", "y", "--template", str(tmp_path / "t.npy"), "--reference",
            "IT-DEV-1", "--category", "applicant", "--event-date", "2026-01-02",
            "--event-place", "Bari", "--birth-date", "1990-05-17",
        ]  # fmt: skip
        enrol = _fedmatch(*argv, *operator(tmp_path, "IT"), "--dev-insecure")
        assert enrol.returncode == 0, enrol.stderr
        assert enrol.stderr.startswith("WARNING: --dev-insecure: PLAINTEXT")
        assert json.loads(enrol.stdout.splitlines()[-1])["register_size"] == 1
        # Without --config nothing goes out, --dev-insecure or not: an officer signs.
        refused = _fedmatch(*argv, "--dev-insecure")
        assert refused.returncode == 2 and "--config" in refused.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.seek(0)
        text = log.read()
        log.close()
    assert text.startswith("WARNING: --dev-insecure: PLAINTEXT"), text[:300]
    assert "PLAINTEXT gRPC on 127.0.0.1:0" in text  # the server's own warning, logged
    assert "signal 15: stopping" in text
