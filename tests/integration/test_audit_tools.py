"""The auditor's tools on a real federation: `fedmatch audit entries`, `proof` and `bundle`
read live and from the auditor's verified copy once the federation is gone, and what they
write verifies offline; a tampered entry, proof or checkpoint fails with a precise error."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmatch.audit.party import COORDINATOR_ORIGIN, node_origin
from fedmatch.cli.main import main
from fedmatch.domain import Category, Purpose
from tests.federation import TODAY, Keyring, auditor_config, enrol, federation, write_auditor_toml

APPLICATION = TODAY.isoformat()


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=128)
    return np.asarray(v / np.linalg.norm(v), dtype=np.float32)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.strip().splitlines() if line]


def _flip_entry_byte(entry_b64: str) -> str:
    raw = bytearray(base64.b64decode(entry_b64))
    at = raw.index(b'"kind":"') + len(b'"kind":"')
    raw[at] ^= 0x01  # one bit of the kind's first letter: still printable JSON
    return base64.b64encode(bytes(raw)).decode()


def _flip_hash_byte(hash_b64: str) -> str:
    raw = bytearray(base64.b64decode(hash_b64))
    raw[7] ^= 0xFF
    return base64.b64encode(bytes(raw)).decode()


def test_entries_proofs_and_bundle_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(21)
    state = tmp_path / "auditor-state"
    with federation(tmp_path, records=12) as fed:
        person = _unit(rng)
        enrol(fed.nodes["IT"], person, "IT-7", Category.IRREGULAR_CROSSING, dt.date(2026, 5, 1))
        requester = fed.requester("DE")
        other = requester.lookup(
            _unit(rng),
            requester.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27", "C-0"),
        )
        h = requester.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27", "C-1")
        report = requester.lookup(person, h)
        assert report.matches
        requester.resolve(report, APPLICATION, fed.verdicts(report))
        query = h.query_id
        toml = write_auditor_toml(auditor_config(tmp_path, fed, state), tmp_path / "auditor.toml")

        # Live: the query's entries at every party, nothing about the other search.
        code, out, _ = _run(capsys, "audit", "entries", "--config", str(toml), "--query-id", query)
        assert code == 0
        listed = _lines(out)
        assert {e["event"]["query_id"] for e in listed} == {query}
        assert {e["party"] for e in listed} == {
            COORDINATOR_ORIGIN, node_origin("IT"), node_origin("FR"),
        }  # fmt: skip
        kinds = {(e["party"], e["kind"]) for e in listed}
        assert (COORDINATOR_ORIGIN, "search_dispatched") in kinds
        assert (node_origin("IT"), "search_answered") in kinds
        assert (node_origin("IT"), "hit_details_revealed") in kinds
        assert all(len(e["leaf_hash"]) == 64 for e in listed)
        # Filters by party and kind, live.
        code, out, _ = _run(
            capsys, "audit", "entries", "--config", str(toml), "--party", "FR",
            "--kind", "search_answered",
        )  # fmt: skip
        assert code == 0
        answered = _lines(out)
        assert len(answered) == 2 and {e["party"] for e in answered} == {node_origin("FR")}
        assert {e["event"]["query_id"] for e in answered} == {query, other.header.query_id}

        # Live proof, straight from the party, verified offline against the config's keys.
        it_entry = next(e for e in listed if e["kind"] == "hit_details_revealed")
        live_proof = tmp_path / "live-proof.json"
        code, _, _ = _run(
            capsys, "audit", "proof", "--config", str(toml), "--party", "IT",
            "--leaf-hash", it_entry["leaf_hash"], "--out", str(live_proof),
        )  # fmt: skip
        assert code == 0
        code, out, _ = _run(
            capsys, "audit", "proof", "--verify", str(live_proof), "--config", str(toml)
        )
        assert code == 0 and json.loads(out)["index"] == it_entry["index"]

        # The auditor verifies once (its state keeps the logs and the parties' keys) ...
        code, _, _ = _run(capsys, "audit", "verify", "--config", str(toml))
        assert code == 0
        live_bundle = tmp_path / "live-bundle.json"
        code, _, _ = _run(
            capsys, "audit", "bundle", "--config", str(toml), "--query-id", query,
            "--out", str(live_bundle),
        )  # fmt: skip
        assert code == 0
        # ... and the searches go on after that audit.
        requester.lookup(
            _unit(rng),
            requester.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27", "C-2"),
        )
        code, _, _ = _run(capsys, "audit", "verify", "--config", str(toml))
        assert code == 0

    # -- the federation is gone: everything below reads files only ----------------------
    assert (state / "fedmatch_node_IT" / "vkey").exists()
    code, out, _ = _run(
        capsys, "audit", "entries", "--state-dir", str(state), "--query-id", query,
        "--party", "coordinator",
    )  # fmt: skip
    assert code == 0
    offline = _lines(out)
    assert offline and {e["party"] for e in offline} == {COORDINATOR_ORIGIN}
    assert [e for e in listed if e["party"] == COORDINATOR_ORIGIN] == offline
    # A time range with nothing in it.
    code, out, _ = _run(
        capsys, "audit", "entries", "--state-dir", str(state), "--until", "2000-01-01"
    )
    assert code == 0 and out == ""
    # The config works offline too (the parties' addresses are dead).
    code, out, _ = _run(
        capsys, "audit", "entries", "--config", str(toml), "--offline", "--query-id", query
    )
    assert code == 0 and len(_lines(out)) == len(listed)

    # Inclusion proof by index, from the saved copy, verified against the saved keys.
    proof = tmp_path / "proof.json"
    code, _, _ = _run(
        capsys, "audit", "proof", "--state-dir", str(state), "--party", "IT",
        "--index", str(it_entry["index"]), "--out", str(proof),
    )  # fmt: skip
    assert code == 0
    code, out, err = _run(
        capsys, "audit", "proof", "--verify", str(proof), "--state-dir", str(state)
    )
    assert code == 0 and json.loads(out)["verified"] is True
    assert "is in the log fedmatch/node/IT signed" in err
    # The same proof against another party's key only: no trusted key for that log.
    fr_key = Keyring(tmp_path / "keys").vkey(node_origin("FR"))
    code, out, err = _run(capsys, "audit", "proof", "--verify", str(proof), "--key", fr_key)
    assert code == 6 and "no trusted verifier key" in err

    # Consistency: the first audit's tree (its signed checkpoint in the live proof) to now.
    first = json.loads(live_proof.read_text())
    old_checkpoint = tmp_path / "old-checkpoint"
    old_checkpoint.write_text(first["checkpoint"])
    consistency = tmp_path / "consistency.json"
    code, _, _ = _run(
        capsys, "audit", "proof", "--state-dir", str(state), "--party", "IT",
        "--size1", str(first["tree_size"]), "--old-checkpoint", str(old_checkpoint),
        "--out", str(consistency),
    )  # fmt: skip
    assert code == 0
    code, out, _ = _run(
        capsys, "audit", "proof", "--verify", str(consistency), "--state-dir", str(state)
    )
    shown = json.loads(out)
    assert code == 0 and shown["old_checkpoint_signed"] is True
    assert shown["size1"] == first["tree_size"] < shown["size2"]

    # The bundle of the search, from the saved copy, verified offline.
    bundle = tmp_path / "bundle.json"
    code, out, _ = _run(
        capsys, "audit", "bundle", "--state-dir", str(state), "--query-id", query,
        "--out", str(bundle),
    )  # fmt: skip
    assert code == 0
    for path in (bundle, live_bundle):
        code, out, err = _run(
            capsys, "audit", "verify", "--bundle", str(path), "--config", str(toml)
        )
        assert code == 0, err
        result = json.loads(out)
        assert result["verified"] is True and result["query_id"] == query
        assert set(result["parties"]) == {
            COORDINATOR_ORIGIN, node_origin("IT"), node_origin("FR"),
        }  # fmt: skip
        assert set(result["parties"][COORDINATOR_ORIGIN]["witnesses"]) >= {node_origin("IT")}
        assert any("IT hit_details_revealed" in line for line in result["timeline"])
        assert f"about query {query}" in err

    # Tampering: one bit of an entry, one byte of a proof hash, a checkpoint re-signed by
    # nobody, a party's key swapped for another's.
    doc = json.loads(bundle.read_text())
    it = next(p for p in doc["parties"] if p["origin"] == node_origin("IT"))

    def tampered(name: str, edit: Any) -> Path:
        copy = json.loads(json.dumps(doc))
        edit(copy)
        path = tmp_path / f"tampered-{name}.json"
        path.write_text(json.dumps(copy))
        return path

    def it_of(d: dict[str, Any]) -> dict[str, Any]:
        return next(p for p in d["parties"] if p["origin"] == node_origin("IT"))

    def edit_entry(d: dict[str, Any]) -> None:
        e = it_of(d)["entries"][-1]
        e["entry"] = _flip_entry_byte(e["entry"])

    def edit_proof(d: dict[str, Any]) -> None:
        e = it_of(d)["entries"][0]
        e["hashes"][0] = _flip_hash_byte(e["hashes"][0])

    def edit_checkpoint(d: dict[str, Any]) -> None:
        lines = it_of(d)["checkpoint"].split("\n")
        lines[1] = str(int(lines[1]) + 1)
        it_of(d)["checkpoint"] = "\n".join(lines)

    cases = {
        "entry": (edit_entry, f"fedmatch/node/IT, entry {it['entries'][-1]['index']}"),
        "proof": (edit_proof, "inclusion proof for leaf index"),
        "checkpoint": (edit_checkpoint, "checkpoint does not verify"),
    }
    for name, (edit, expected) in cases.items():
        path = tampered(name, edit)
        code, out, err = _run(
            capsys, "audit", "verify", "--bundle", str(path), "--state-dir", str(state)
        )
        assert code == 6, (name, err)
        assert json.loads(out)["verified"] is False
        assert "verification FAILED" in err and expected in err, (name, err)
    # A tampered proof file fails the same way.
    bad_proof = json.loads(proof.read_text())
    bad_proof["hashes"][-1] = _flip_hash_byte(bad_proof["hashes"][-1])
    (tmp_path / "bad-proof.json").write_text(json.dumps(bad_proof))
    code, _, err = _run(
        capsys, "audit", "proof", "--verify", str(tmp_path / "bad-proof.json"),
        "--state-dir", str(state),
    )  # fmt: skip
    assert code == 6 and "does not lead to the root" in err
    # Keys: none given is a usage error; the bundle's own keys only on request, with a
    # warning; a bundle signed with keys other than the trusted ones fails.
    code, _, err = _run(capsys, "audit", "verify", "--bundle", str(bundle))
    assert code == 2 and "needs the parties' keys" in err
    code, _, err = _run(capsys, "audit", "verify", "--bundle", str(bundle), "--trust-bundle-keys")
    assert code == 0 and "WARNING" in err
    code, _, err = _run(capsys, "audit", "verify", "--bundle", str(bundle), "--key", fr_key)
    assert code == 6 and "no trusted verifier key for log 'fedmatch/coordinator'" in err
