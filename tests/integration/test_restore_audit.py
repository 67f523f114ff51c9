"""An announced restore, acknowledged by auditors (issue 19, item 3), over real servers,
real logs and the real command line.

A node is restored from a backup: its log goes back to the backup's, and an auditor who saw
a later checkpoint reports a rollback, as it must. The restore writes a signed announcement;
`fedmatch audit accept-restore` checks it (the node's signature, and that the backup's
checkpoint is a prefix of what this auditor verified) and makes the backup's checkpoint the
auditor's accepted state, keeping the old one as evidence. `audit verify` then goes on from
the new history, while a rollback nobody announced is still reported.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedmatch.audit.entry import AuditEvent, EventKind
from fedmatch.audit.note import NoteSigner
from fedmatch.audit.party import AuditConfig, PartyAudit, node_origin
from fedmatch.demo.seed import seed_register
from fedmatch.demo.synthetic import unit_vectors
from fedmatch.domain import Category, Purpose
from fedmatch.protocol.canonical import canonical_json
from node.backup import take_backup
from node.config import NodeConfig
from node.sealing import create_key_file
from tests.federation import (
    DIM,
    MODEL,
    TODAY,
    Federation,
    auditor_config,
    auditor_signer,
    enrol,
    federation,
    write_auditor_toml,
)
from tests.integration.test_backup import configs, write_node_toml

STATE = "IT"
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # each test starts a federation twice or more (~20-40 s)


def fedmatch(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedmatch", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def verify(
    tmp: Path, fed: Federation, name: str, peer: str = ""
) -> subprocess.CompletedProcess[str]:
    """`fedmatch audit verify` by auditor ``name`` (state in ``tmp/name``), with the
    federation's current addresses; ``peer``: another auditor's state to compare with."""
    peers = (tmp / peer,) if peer else ()
    config = auditor_config(tmp, fed, state_dir=tmp / name, peers=peers)
    toml = write_auditor_toml(config, tmp / f"{name}.toml")
    return fedmatch("audit", "verify", "--config", str(toml))


def accept(tmp: Path, name: str, announcement: Path) -> subprocess.CompletedProcess[str]:
    """`fedmatch audit accept-restore` by auditor ``name`` (its TOML file as `verify` wrote it)."""
    return fedmatch(
        "audit", "accept-restore", "--config", str(tmp / f"{name}.toml"),
        "--announcement", str(announcement),
    )  # fmt: skip


def restore(tmp: Path, toml: Path, backup: Path) -> Path:
    """`fedmatch node restore --accept-loss` (node stopped); the announcement it wrote."""
    done = fedmatch("node", "restore", "--config", str(toml), "--from", str(backup),
                    "--force", "--accept-loss")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["restored"] is True
    return Path(doc["announcement"])


def it_findings(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The report's lines about IT."""
    return [line for line in done.stdout.splitlines() if "[IT]" in line]


def test_announced_restore_is_acknowledged_and_verification_goes_on(tmp_path: Path) -> None:
    """verify passes; enrol more; restore (announced); verify reports the rollback with a
    hint to acknowledge it; a forged or foreign announcement is refused; accept-restore;
    verify passes again, a peer that has not acknowledged is named as such; and a second,
    unannounced rollback is reported again."""
    kek = create_key_file(tmp_path / "storage.key")
    rng = np.random.default_rng(23)
    node_cfg, audit_cfg = configs(tmp_path)
    toml = write_node_toml(tmp_path, node_cfg, audit_cfg)
    with federation(tmp_path, ("DE", STATE), records=20, kek=kek) as fed:
        enrol(fed.nodes[STATE], unit_vectors(rng, 1, DIM)[0], "IT-A-0", Category.APPLICANT,
              dt.date(2026, 3, 1))  # fmt: skip
        fed.nodes[STATE].audit.log.checkpoint()
        for name in ("auditor-a", "auditor-b"):
            done = verify(tmp_path, fed, name)
            assert done.returncode == 0, done.stdout[-3000:]
        take_backup(node_cfg, audit_cfg, tmp_path / "backup")
        for i in range(2):
            enrol(fed.nodes[STATE], unit_vectors(rng, 1, DIM)[0], f"IT-LATER-{i}",
                  Category.APPLICANT, dt.date(2026, 4, 1))  # fmt: skip
        fed.nodes[STATE].audit.log.checkpoint()
        for name in ("auditor-a", "auditor-b"):  # both saw the later checkpoint
            done = verify(tmp_path, fed, name)
            assert done.returncode == 0, done.stdout[-3000:]
    saved = (tmp_path / "auditor-a" / "fedmatch_node_IT" / "checkpoint").read_bytes()

    announcement = restore(tmp_path, toml, tmp_path / "backup")
    with federation(tmp_path, ("DE", STATE), records=0, kek=kek) as fed:
        done = verify(tmp_path, fed, "auditor-a")
        assert done.returncode == 6, done.stdout[-3000:]
        lines = it_findings(done)
        assert any(
            k in line for line in lines for k in ("rollback", "fork-saved", "inconsistent-saved")
        ), lines
        assert any("fedmatch audit accept-restore" in line for line in lines), lines

        # A forged announcement: one bit flipped, or signed by another key.
        data = announcement.read_bytes()
        doc = json.loads(data)
        flipped = tmp_path / "flipped.json"
        body = doc["announcement"]
        body["lost"]["records_lost"] += 1
        flipped.write_text(json.dumps(doc))
        done = accept(tmp_path, "auditor-a", flipped)
        assert done.returncode == 6 and "signature" in done.stderr, done.stderr[-2000:]
        impostor = NoteSigner.generate(node_origin(STATE))
        body["lost"]["records_lost"] -= 1
        doc["signature"] = base64.b64encode(
            impostor.sign(b"fedmatch/restore-announcement/v1\x00" + canonical_json(body))
        ).decode()
        foreign = tmp_path / "foreign.json"
        foreign.write_text(json.dumps(doc))
        done = accept(tmp_path, "auditor-a", foreign)
        assert done.returncode == 6 and "signature" in done.stderr, done.stderr[-2000:]
        raw = bytearray(data)
        raw[raw.index(b'"member_state": "IT"') + 17] ^= 0x01  # IT -> HT
        (tmp_path / "bitflip.json").write_bytes(bytes(raw))
        done = accept(tmp_path, "auditor-a", tmp_path / "bitflip.json")
        assert done.returncode == 6 and "signature" in done.stderr, done.stderr[-2000:]
        # Nothing was accepted by the refusals.
        assert (tmp_path / "auditor-a" / "fedmatch_node_IT" / "checkpoint").read_bytes() == saved

        done = accept(tmp_path, "auditor-a", announcement)
        assert done.returncode == 0, done.stderr[-3000:]
        ack = json.loads(done.stdout.strip().splitlines()[-1])
        assert ack["party"] == node_origin(STATE) and ack["accepted"] is True
        # The acknowledgement is signed by the auditor; the old state is kept as evidence.
        signed = json.loads(Path(ack["acknowledgement"]).read_text())
        auditor_signer(tmp_path).verifier().verify(
            b"fedmatch/restore-acknowledgement/v1\x00" + canonical_json(signed["acknowledgement"]),
            base64.b64decode(signed["signature"]),
        )
        assert (Path(ack["previous_state"]) / "checkpoint").read_bytes() == saved
        again = accept(tmp_path, "auditor-a", announcement)  # once is enough
        assert again.returncode == 0 and '"already_acknowledged": true' in again.stdout

        done = verify(tmp_path, fed, "auditor-a")
        assert done.returncode == 0, done.stdout[-3000:]
        assert not it_findings(done), done.stdout[-3000:]
        # Auditor B still holds the history before the restore: as A's peer it conflicts,
        # and the finding says B must acknowledge the restore itself (still a violation).
        done = verify(tmp_path, fed, "auditor-a", peer="auditor-b")
        assert done.returncode == 6, done.stdout[-3000:]
        (line,) = [line for line in it_findings(done) if "-peer" in line]
        assert "acknowledged" in line and "accept-restore" in line, line
        # B also sees the rollback, acknowledges, and both agree again.
        assert verify(tmp_path, fed, "auditor-b").returncode == 6
        assert accept(tmp_path, "auditor-b", announcement).returncode == 0
        done = verify(tmp_path, fed, "auditor-a", peer="auditor-b")
        assert done.returncode == 0, done.stdout[-3000:]

    # An announcement of another history of IT (same key, another log) is not a prefix of
    # what A verified: refused.
    other = tmp_path / "other"
    other.mkdir()
    other_node = NodeConfig(member_state=STATE, database=other / "IT.sqlite", dimension=DIM,
                            model_id=MODEL, replay_db=other / "replay.sqlite")  # fmt: skip
    other_audit = AuditConfig(directory=other / "audit-IT", signing_key=audit_cfg.signing_key,
                              coordinator_key=audit_cfg.coordinator_key)  # fmt: skip
    seed_register(other_node.database, STATE, 5, 7, DIM, MODEL, TODAY)
    party = PartyAudit(other_audit, node_origin(STATE))
    for i in range(3):
        party.record(AuditEvent(EventKind.PARTY_STARTED, counts={"records": i}))
    party.log.checkpoint()
    party.close()
    take_backup(other_node, other_audit, other / "backup")
    other_toml = other / "node-it.toml"
    other_toml.write_text(
        write_node_toml(other, other_node, other_audit)
        .read_text()
        .replace('[storage]\nkey_file = "storage.key"\n', "[storage]\nencrypt_templates = false\n")
    )
    foreign_history = restore(other, other_toml, other / "backup")
    done = accept(tmp_path, "auditor-a", foreign_history)
    assert done.returncode == 6 and "not a prefix" in done.stderr, done.stderr[-2000:]

    # A second restore, announced to nobody: reported again.
    restore(tmp_path, toml, tmp_path / "backup")
    with federation(tmp_path, ("DE", STATE), records=0, kek=kek) as fed:
        done = verify(tmp_path, fed, "auditor-a")
        assert done.returncode == 6, done.stdout[-3000:]
        assert any(
            k in line
            for line in it_findings(done)
            for k in ("rollback", "fork-saved", "inconsistent-saved")
        )


def test_searches_lost_by_an_acknowledged_restore_are_reported_naming_it(
    tmp_path: Path,
) -> None:
    """IT answered a search after the backup: the restore drops its answer from IT's log,
    so the cross-check still reports the coordinator's dispatch without IT's entry (a
    violation, not silently dropped), and the finding names the acknowledged restore."""
    kek = create_key_file(tmp_path / "storage.key")
    rng = np.random.default_rng(29)
    node_cfg, audit_cfg = configs(tmp_path)
    toml = write_node_toml(tmp_path, node_cfg, audit_cfg)
    with federation(tmp_path, ("DE", STATE), records=20, kek=kek) as fed:
        assert verify(tmp_path, fed, "auditor-a").returncode == 0
        take_backup(node_cfg, audit_cfg, tmp_path / "backup")
        requester = fed.requester("DE")
        h = requester.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27", "C-LOST")
        requester.lookup(unit_vectors(rng, 1, DIM)[0], h)
        fed.nodes[STATE].audit.log.checkpoint()
        done = verify(tmp_path, fed, "auditor-a")
        assert done.returncode == 0, done.stdout[-3000:]
    announcement = restore(tmp_path, toml, tmp_path / "backup")
    with federation(tmp_path, ("DE", STATE), records=0, kek=kek) as fed:
        assert verify(tmp_path, fed, "auditor-a").returncode == 6
        assert accept(tmp_path, "auditor-a", announcement).returncode == 0
        done = verify(tmp_path, fed, "auditor-a")
        assert done.returncode == 6, done.stdout[-3000:]
        (line,) = [line for line in it_findings(done) if "dispatch-not-at-node" in line]
        assert h.query_id in line and "VIOLATION" in line
        assert "restore" in line and "acknowledged" in line, line
        assert "superseded" in line, line  # A had verified IT's answer before the restore
