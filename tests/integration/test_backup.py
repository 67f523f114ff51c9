"""Backup and restore of a node (node/backup.py) with real registers, logs, servers and HE.

The main test is the issue's must-show: a node with templates encrypted at rest is backed
up, changed, restored, and then its register and log verify and it answers the same
encrypted lookups with the same records as before the backup.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmatch.audit.auditor import run_audit
from fedmatch.audit.entry import AuditEvent, EventKind, SignedEntry
from fedmatch.audit.log import AuditLog
from fedmatch.audit.note import NoteSigner
from fedmatch.audit.party import COORDINATOR_ORIGIN, AuditConfig, node_origin
from fedmatch.demo.seed import seed_register
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, MarkKind
from fedmatch.errors import PreconditionFailed
from fedmatch.protocol.replay import ReplayGuard
from node.backup import (
    MANIFEST,
    REGISTER,
    BackupError,
    RestoreLossRefused,
    restore_backup,
    take_backup,
    verify_backup,
    verify_log_files,
)
from node.config import NodeConfig
from node.sealing import create_key_file
from node.store import RecordStore
from tests.federation import (
    DIM,
    MODEL,
    TODAY,
    Federation,
    Keyring,
    auditor_config,
    enrol,
    federation,
    header,
    node_audit,
)

STATE = "IT"
ROOT = Path(__file__).resolve().parents[2]


def configs(tmp: Path, state: str = STATE) -> tuple[NodeConfig, AuditConfig]:
    """The node and audit configuration of tests.federation's node of ``state`` in ``tmp``."""
    keys = Keyring(tmp / "keys")
    node = NodeConfig(
        member_state=state,
        database=tmp / f"{state}.sqlite",
        dimension=DIM,
        model_id=MODEL,
        replay_db=tmp / f"replay-node-{state}.sqlite",
    )
    audit = AuditConfig(
        directory=tmp / f"audit-{state}",
        signing_key=keys.path(node_origin(state)),
        coordinator_key=keys.vkey(COORDINATOR_ORIGIN),
    )
    return node, audit


def matched_references(fed: Federation, probe: np.ndarray) -> dict[str, list[str]]:
    """The records a DE lookup of ``probe`` matched, per node: the requester decrypts the
    match positions, and each node's own handle table names the record behind each one."""
    report = fed.requester("DE").lookup(probe, header("DE"))
    assert all(n.outcome == "ok" for n in report.nodes), report.nodes
    out: dict[str, list[str]] = {n.member_state: [] for n in report.nodes}
    for state, handle in report.matches:
        node = fed.nodes[state]
        record_id = node.handles.resolve(report.header.query_id, "DE", handle)
        out[state].append(node.store.get(record_id).reference)
    return {state: sorted(refs) for state, refs in out.items()}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_restore_verifies_and_searches_identically(tmp_path: Path) -> None:
    """Must show (issue 8): restored register and log verify; same answers to lookups."""
    kek = create_key_file(tmp_path / "storage.key")
    rng = np.random.default_rng(8)
    people = unit_vectors(rng, 4, DIM)
    node_cfg, audit_cfg = configs(tmp_path)
    with federation(tmp_path, ("DE", STATE), records=200, kek=kek) as fed:
        for i, person in enumerate(people[:3]):
            enrol(fed.nodes[STATE], capture(person, rng, 0.85), f"IT-B-{i}",
                  Category.APPLICANT, dt.date(2026, 3, 1 + i))  # fmt: skip
        # One person twice: a lookup answer with two records.
        enrol(fed.nodes[STATE], capture(people[0], rng, 0.85), "IT-B-0bis",
              Category.IRREGULAR_CROSSING, dt.date(2026, 2, 1))  # fmt: skip
        probes = [capture(p, rng, 0.85) for p in people] + [unit_vectors(rng, 1, DIM)[0]]
        before = [matched_references(fed, p) for p in probes]
        assert before[0] == {STATE: ["IT-B-0", "IT-B-0bis"]}
        assert before[3] == {STATE: []} and before[4] == {STATE: []}
        records_before = fed.nodes[STATE].record_count()

        manifest = take_backup(node_cfg, audit_cfg, tmp_path / "backup")
        assert manifest["register"]["records"] == records_before
        assert manifest["register"]["storage_key_id"] == kek.key_id

        # After the backup: one more enrolment, which the restore will not have, and an
        # auditor who saw the node's longer log.
        enrol(fed.nodes[STATE], capture(people[3], rng, 0.85), "IT-AFTER",
              Category.APPLICANT, dt.date(2026, 4, 1))  # fmt: skip
        fed.nodes[STATE].audit.log.checkpoint()
        seen = run_audit(auditor_config(tmp_path, fed, state_dir=tmp_path / "auditor-saw"))
        assert seen.summary["parties"][node_origin(STATE)]["verified"]
        live_size = fed.nodes[STATE].audit.log.size

    # The backup never holds the storage key, and templates are stored sealed in it.
    backup_bytes = b"".join(p.read_bytes() for p in (tmp_path / "backup").rglob("*") if p.is_file())
    assert base64.b64encode(kek.key) not in backup_bytes and kek.key not in backup_bytes

    # IT-AFTER would be lost: refused unless the loss is accepted.
    with pytest.raises(RestoreLossRefused, match="--accept-loss"):
        restore_backup(tmp_path / "backup", node_cfg, audit_cfg, kek, force=True)
    report = restore_backup(
        tmp_path / "backup", node_cfg, audit_cfg, kek, force=True, accept_loss=True
    )
    assert report.manifest["audit"]["entries"] == manifest["audit"]["entries"] < live_size
    assert [r["reference"] for r in report.losses.to_json()["records_lost"]] == ["IT-AFTER"]
    assert all(Path(p).exists() for p in report.moved_aside)
    # What the node witnessed of the coordinator's log since the backup is not forgotten.
    assert any("kept the live witness state" in n for n in report.notes), report.notes

    # The restored log verifies entry by entry against its checkpoint, and the node's own
    # log opens it (which refuses any log that does not match its checkpoint). It is the
    # backup's log and the restore's own entry.
    signer = NoteSigner.load(audit_cfg.signing_key)
    state = verify_log_files(audit_cfg.directory / "log", signer.verifier(), node_origin(STATE))
    assert state.entries == manifest["audit"]["entries"] + 1
    assert _decode(state.raw[-1]).kind is EventKind.NODE_RESTORED
    log = AuditLog(audit_cfg.directory / "log", signer, node_origin(STATE))
    assert log.size == state.entries
    log.close()

    with federation(tmp_path, ("DE", STATE), records=0, kek=kek) as fed:
        assert fed.nodes[STATE].record_count() == records_before
        after = [matched_references(fed, p) for p in probes]
        assert after == before  # IT-AFTER was enrolled after the backup: not restored
        # An auditor new to the node verifies the restored log in full...
        fresh = run_audit(auditor_config(tmp_path, fed, state_dir=tmp_path / "auditor-new"))
        assert fresh.summary["parties"][node_origin(STATE)]["verified"]
        assert not [f for f in fresh.findings if f.party == STATE], fresh.findings
        # ... and one who saw the longer log detects that history was rolled back.
        again = run_audit(auditor_config(tmp_path, fed, state_dir=tmp_path / "auditor-saw"))
        kinds = {f.kind for f in again.findings if f.party == STATE}
        assert kinds & {"rollback", "fork-saved", "inconsistent-saved"}, again.findings
        assert not again.ok


def small_node(tmp: Path, state: str = STATE, records: int = 30) -> tuple[NodeConfig, AuditConfig]:
    """A register and an audit log with a few entries, without servers."""
    node_cfg, audit_cfg = configs(tmp, state)
    seed_register(node_cfg.database, state, records, 1, DIM, MODEL, TODAY)
    audit = node_audit(tmp, state)
    for i in range(5):
        audit.record(AuditEvent(EventKind.PARTY_STARTED, counts={"records": i}))
    audit.log.checkpoint()
    audit.close()
    return node_cfg, audit_cfg


def live_digests(node_cfg: NodeConfig, audit_cfg: AuditConfig) -> dict[str, str]:
    files = [node_cfg.database, *sorted((audit_cfg.directory / "log").iterdir())]
    return {str(p): digest(p) for p in files}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("register-byte", "register.sqlite does not match its manifest"),
        ("log-byte", "does not match its manifest"),
        ("manifest-edit", "signature does not verify"),
        ("extra-file", "differ from its manifest"),
        ("missing-file", "differ from its manifest"),
        ("signature", "signature does not verify"),
    ],
)
def test_damaged_backup_is_refused_and_nothing_changes(
    tmp_path: Path, damage: str, message: str
) -> None:
    node_cfg, audit_cfg = small_node(tmp_path)
    backup = tmp_path / "backup"
    take_backup(node_cfg, audit_cfg, backup)
    if damage == "register-byte":
        data = bytearray((backup / REGISTER).read_bytes())
        data[len(data) // 2] ^= 0x01
        (backup / REGISTER).write_bytes(bytes(data))
    elif damage == "log-byte":
        path = backup / "audit" / "log" / "log.bin"
        data = bytearray(path.read_bytes())
        data[-10] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "manifest-edit":
        manifest = json.loads((backup / MANIFEST).read_text())
        manifest["register"]["records"] += 1
        (backup / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    elif damage == "extra-file":
        (backup / "audit" / "planted.json").write_text("{}")
    elif damage == "missing-file":
        (backup / "audit" / "log" / "checkpoint").unlink()
    elif damage == "signature":
        (backup / "manifest.sig").write_text(base64.b64encode(bytes(64)).decode())
    before = live_digests(node_cfg, audit_cfg)
    with pytest.raises(BackupError, match=message):
        restore_backup(backup, node_cfg, audit_cfg, None, force=True)
    assert live_digests(node_cfg, audit_cfg) == before


def test_restore_refusals(tmp_path: Path) -> None:
    node_cfg, audit_cfg = small_node(tmp_path)
    backup = tmp_path / "backup"
    take_backup(node_cfg, audit_cfg, backup)
    verify_backup(backup, NoteSigner.load(audit_cfg.signing_key).verifier(), STATE)
    # Over existing files only when told.
    with pytest.raises(PreconditionFailed, match="pass --force"):
        restore_backup(backup, node_cfg, audit_cfg, None)
    # Never under a process that has the register open.
    store = RecordStore(node_cfg.database, STATE, DIM, MODEL)
    with pytest.raises(PreconditionFailed, match="open in a running node"):
        restore_backup(backup, node_cfg, audit_cfg, None, force=True)
    store.close()
    # Another node's backup: its manifest is not signed by this node's key.
    fr_node, fr_audit = small_node(tmp_path, "FR")
    take_backup(fr_node, fr_audit, tmp_path / "backup-fr")
    with pytest.raises(BackupError, match="another node's backup"):
        restore_backup(tmp_path / "backup-fr", node_cfg, audit_cfg, None, force=True)
    # Into an empty place: no force needed; the log opens and the register reads.
    shutil.rmtree(audit_cfg.directory)
    for p in tmp_path.glob(f"{STATE}.sqlite*"):
        p.unlink()
    report = restore_backup(backup, node_cfg, audit_cfg, None)
    assert report.moved_aside == ()
    store = RecordStore(node_cfg.database, STATE, DIM, MODEL)
    assert store.count() == 30
    store.close()


def test_sealed_backup_needs_the_right_key_before_anything_is_replaced(tmp_path: Path) -> None:
    kek = create_key_file(tmp_path / "storage.key")
    node_cfg, audit_cfg = configs(tmp_path)
    seed_register(node_cfg.database, STATE, 20, 1, DIM, MODEL, TODAY, kek=kek)
    node_audit(tmp_path, STATE).close()
    take_backup(node_cfg, audit_cfg, tmp_path / "backup")
    before = live_digests(node_cfg, audit_cfg)
    other = create_key_file(tmp_path / "other.key")
    with pytest.raises(PreconditionFailed, match="sealed under key id"):
        restore_backup(tmp_path / "backup", node_cfg, audit_cfg, other, force=True)
    with pytest.raises(PreconditionFailed, match="holds encrypted templates"):
        restore_backup(tmp_path / "backup", node_cfg, audit_cfg, None, force=True)
    assert live_digests(node_cfg, audit_cfg) == before
    restore_backup(tmp_path / "backup", node_cfg, audit_cfg, kek, force=True)
    store = RecordStore(node_cfg.database, STATE, DIM, MODEL, kek)
    assert store.templates()[1].shape == (20, DIM)
    store.close()


def write_node_toml(tmp: Path, node_cfg: NodeConfig, audit_cfg: AuditConfig) -> Path:
    path = tmp / "node-it.toml"
    path.write_text(
        f'[node]\nmember_state = "{node_cfg.member_state}"\ndatabase = "{node_cfg.database}"\n'
        f'dimension = {node_cfg.dimension}\nmodel_id = "{node_cfg.model_id}"\n'
        f'replay_db = "{node_cfg.replay_db}"\n'
        f'[audit]\ndirectory = "{audit_cfg.directory}"\nsigning_key = "{audit_cfg.signing_key}"\n'
        f'coordinator_key = "{audit_cfg.coordinator_key}"\n'
        '[storage]\nkey_file = "storage.key"\n'
    )
    return path


@pytest.mark.slow  # ~15-45 s: four `fedmatch` processes besides the federation
def test_backup_while_the_node_enrols_is_consistent(tmp_path: Path) -> None:
    """Backups taken by `fedmatch node backup` processes while a served node enrols
    continuously: each has every enrolled record together with its log entry, or neither
    (without the node's shared write lock this fails: a row without its entry). Then
    `fedmatch node restore` refuses a damaged backup and restores an intact one."""
    kek = create_key_file(tmp_path / "storage.key")
    node_cfg, audit_cfg = configs(tmp_path)
    toml = write_node_toml(tmp_path, node_cfg, audit_cfg)
    rng = np.random.default_rng(3)
    stop = threading.Event()
    enrolled: list[str] = []
    errors: list[BaseException] = []
    with federation(tmp_path, ("DE", STATE), records=50, kek=kek) as fed:
        node = fed.nodes[STATE]

        def keep_enrolling() -> None:
            try:
                while not stop.is_set():
                    ref = f"IT-LIVE-{len(enrolled)}"
                    enrol(node, unit_vectors(rng, 1, DIM)[0], ref, Category.APPLICANT,
                          dt.date(2026, 5, 1))  # fmt: skip
                    enrolled.append(ref)
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)

        worker = threading.Thread(target=keep_enrolling)
        worker.start()
        outputs = []
        try:
            for n in range(2):
                out = tmp_path / f"backup-{n}"
                done = subprocess.run(
                    [sys.executable, "-m", "fedmatch", "node", "backup", "--config", str(toml),
                     "--out", str(out)],
                    cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                )  # fmt: skip
                assert done.returncode == 0, done.stderr[-2000:]
                outputs.append((out, json.loads(done.stdout.strip().splitlines()[-1])))
        finally:
            stop.set()
            worker.join(timeout=60)
        assert not errors, errors
    signer = NoteSigner.load(audit_cfg.signing_key)
    counts = []
    for out, summary in outputs:
        manifest = verify_backup(out, signer.verifier(), STATE)
        counts.append(manifest["register"]["records"])
        log_state = verify_log_files(out / "audit" / "log", signer.verifier(), node_origin(STATE))
        logged = {
            int(entry.event.labels["record"])
            for entry in map(_decode, log_state.raw)
            if entry.kind is EventKind.RECORD_ENROLLED
        }
        store_ids = _live_record_ids(out / REGISTER)
        assert logged == store_ids, (summary, sorted(logged ^ store_ids)[:10])
    assert counts == sorted(counts) and counts[-1] > counts[0] > 50  # enrolments went on
    assert len(enrolled) > counts[-1] - 50
    # `fedmatch node restore`, node stopped: a damaged backup is refused with exit 2 and a
    # message; the intact one is restored.
    restore = [sys.executable, "-m", "fedmatch", "node", "restore", "--config", str(toml)]
    damaged = tmp_path / "damaged"
    shutil.copytree(outputs[0][0], damaged)
    (damaged / "audit" / "policy.json").write_text("{}")
    done = subprocess.run(
        [*restore, "--from", str(damaged), "--force"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "does not match its manifest" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    # The enrolments after the last backup would be lost: refused, each one listed, and
    # nothing changed; restored with --accept-loss.
    later = _live_references(node_cfg.database) - _live_references(outputs[-1][0] / REGISTER)
    assert later
    before = live_digests(node_cfg, audit_cfg)
    done = subprocess.run(
        [*restore, "--from", str(outputs[-1][0]), "--force"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--accept-loss" in done.stderr, done.stderr[-2000:]
    refused = json.loads(done.stdout.strip().splitlines()[-1])
    assert refused["restored"] is False
    assert {r["reference"] for r in refused["lost"]["records_lost"]} == later
    assert refused["lost"]["log"]["dropped_by_kind"]["record_enrolled"] == len(later)
    assert live_digests(node_cfg, audit_cfg) == before
    done = subprocess.run(
        [*restore, "--from", str(outputs[-1][0]), "--force", "--accept-loss"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    restored = json.loads(done.stdout.strip().splitlines()[-1])
    assert restored["records"] == counts[-1]
    assert {r["reference"] for r in restored["lost"]["records_lost"]} == later


def _decode(raw: bytes) -> SignedEntry:
    return SignedEntry.decode(raw)


def _live_references(register: Path) -> set[str]:
    db = sqlite3.connect(str(register))  # read-write: its -wal and -shm go when it closes
    try:
        rows = db.execute("SELECT reference FROM records WHERE reference LIKE 'IT-LIVE-%'")
        return {str(r[0]) for r in rows}
    finally:
        db.close()


def _live_record_ids(register: Path) -> set[int]:
    db = sqlite3.connect(register.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id FROM records WHERE reference LIKE 'IT-LIVE-%'").fetchall()
    finally:
        db.close()
    return {int(r[0]) for r in rows}


def change_after_backup(tmp: Path) -> tuple[NodeConfig, AuditConfig]:
    """A node of 10 records (and a replay store) backed up to ``tmp/backup``, then record 4
    erased and record 6 marked, each with its entry in the live log."""
    from node.inbox import reference_digest

    node_cfg, audit_cfg = small_node(tmp, records=10)
    ReplayGuard(node_cfg.replay_path).close()
    take_backup(node_cfg, audit_cfg, tmp / "backup")
    store = RecordStore(node_cfg.database, STATE, DIM, MODEL)
    victim, protected = store.get(4).reference, store.get(6).reference
    store.erase([4])
    # Marked when its entry is logged, as the node's lifecycle does.
    store.set_marked(6, MarkKind.PROTECTION_GRANTED, dt.datetime.now(dt.UTC))
    store.close()
    audit = node_audit(tmp, STATE)
    for kind, reference in (
        (EventKind.RECORD_ERASED, victim),
        (EventKind.RECORD_MARKED, protected),
    ):
        audit.record(
            AuditEvent(
                kind,
                registers=(STATE,),
                outcome="erased" if kind is EventKind.RECORD_ERASED else "marked",
                labels={"record_digest": reference_digest(STATE, reference)},
            )
        )
    audit.log.checkpoint()
    audit.close()
    return node_cfg, audit_cfg


def test_erasures_and_marks_after_the_backup_are_reapplied_on_restore(tmp_path: Path) -> None:
    """A record erased after the backup (its RECORD_ERASED entry in the live log) does not
    come back with the restore, a record marked after it is marked again, and the restored
    log records both again."""
    node_cfg, audit_cfg = change_after_backup(tmp_path)
    # Nothing is lost: both changes are applied again, so no --accept-loss is needed.
    report = restore_backup(tmp_path / "backup", node_cfg, audit_cfg, None, force=True)
    assert (report.erasures_reapplied, report.marks_reapplied) == ((4,), (6,))
    assert not report.losses.anything, report.losses.to_json()
    assert report.losses.to_json()["log"]["reapplied"] == 2
    store = RecordStore(node_cfg.database, STATE, DIM, MODEL)
    ids = store.templates()[0].tolist()
    assert store.count() == 9 and 4 not in ids
    assert store.marked_flags().tolist() == [i == 6 for i in ids]
    store.close()
    signer = NoteSigner.load(audit_cfg.signing_key)
    state = verify_log_files(audit_cfg.directory / "log", signer.verifier(), node_origin(STATE))
    last = [_decode(raw) for raw in state.raw[-2:]]
    assert [e.kind for e in last] == [EventKind.RECORD_ERASED, EventKind.RECORD_MARKED]
    assert {e.event.reason for e in last} == {"reapplied_after_restore"}
    assert not list(tmp_path.glob("*.restoring*")), "staged copies left behind"


def test_changes_are_reapplied_before_a_node_can_open_the_restored_register(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erasures after the backup are applied while the restore still holds the open
    lock: a node starting meanwhile is refused, and never serves an erased record."""
    node_cfg, audit_cfg = change_after_backup(tmp_path)
    refused: list[str] = []
    erase = RecordStore.erase

    def erase_while_a_node_starts(store: RecordStore, record_ids: Iterable[int]) -> None:
        try:
            RecordStore(node_cfg.database, STATE, DIM, MODEL).close()
        except PreconditionFailed as exc:
            refused.append(str(exc))
        erase(store, record_ids)

    monkeypatch.setattr(RecordStore, "erase", erase_while_a_node_starts)
    report = restore_backup(tmp_path / "backup", node_cfg, audit_cfg, None, force=True)
    assert report.erasures_reapplied == (4,)
    assert len(refused) == 1 and "being restored" in refused[0], refused


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path) with its SHA-256."""
    return {p.relative_to(root).as_posix(): digest(p) for p in root.rglob("*") if p.is_file()}


def half_copytree(real: Callable[..., object]) -> Callable[..., object]:
    """shutil.copytree on a disk that fills up after the first file."""
    copied: list[str] = []

    def copy(source: str, target: str, *, follow_symlinks: bool = True) -> object:
        if copied:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
        copied.append(source)
        return shutil.copy2(source, target, follow_symlinks=follow_symlinks)

    # copytree calls itself (the patched name) for subdirectories, copy function included.
    def copytree(src: Path, dst: Path, symlinks: bool = False, ignore: object = None,
                 copy_function: object = None, *rest: object) -> object:  # fmt: skip
        return real(src, dst, symlinks, ignore, copy, *rest)

    return copytree


def test_restore_that_fails_midway_leaves_the_node_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up while the backup's audit directory is copied: the restore fails,
    the node's files are byte for byte as before (no staged copy, nothing moved aside), and
    the node opens, its log verifies, and it answers lookups as before. A second restore
    then succeeds."""
    kek = create_key_file(tmp_path / "storage.key")
    rng = np.random.default_rng(11)
    people = unit_vectors(rng, 2, DIM)
    node_cfg, audit_cfg = configs(tmp_path)
    with federation(tmp_path, ("DE", STATE), records=30, kek=kek) as fed:
        enrol(fed.nodes[STATE], capture(people[0], rng, 0.85), "IT-F-0",
              Category.APPLICANT, dt.date(2026, 3, 1))  # fmt: skip
        take_backup(node_cfg, audit_cfg, tmp_path / "backup")
        enrol(fed.nodes[STATE], capture(people[1], rng, 0.85), "IT-F-AFTER",
              Category.APPLICANT, dt.date(2026, 4, 1))  # fmt: skip
        fed.nodes[STATE].audit.log.checkpoint()
        probes = [capture(p, rng, 0.85) for p in people]
        before = [matched_references(fed, p) for p in probes]
        assert before == [{STATE: ["IT-F-0"]}, {STATE: ["IT-F-AFTER"]}]
        records, entries = fed.nodes[STATE].record_count(), fed.nodes[STATE].audit.log.size
    files = tree(tmp_path)

    monkeypatch.setattr(shutil, "copytree", half_copytree(shutil.copytree))
    with pytest.raises(OSError, match="No space left on device"):
        restore_backup(tmp_path / "backup", node_cfg, audit_cfg, kek, force=True)
    monkeypatch.undo()
    assert tree(tmp_path) == files

    signer = NoteSigner.load(audit_cfg.signing_key)
    state = verify_log_files(audit_cfg.directory / "log", signer.verifier(), node_origin(STATE))
    assert state.entries == entries
    with federation(tmp_path, ("DE", STATE), records=0, kek=kek) as fed:
        assert fed.nodes[STATE].record_count() == records
        assert [matched_references(fed, p) for p in probes] == before
    # The node went on with the same log: what it wrote since extends it.
    later = verify_log_files(audit_cfg.directory / "log", signer.verifier(), node_origin(STATE))
    assert later.entries > entries and later.tree.root(entries) == state.root

    report = restore_backup(
        tmp_path / "backup", node_cfg, audit_cfg, kek, force=True, accept_loss=True
    )
    assert report.manifest["register"]["records"] == records - 1
    assert [r["reference"] for r in report.losses.to_json()["records_lost"]] == ["IT-F-AFTER"]
    assert not list(tmp_path.glob("*.restoring*"))


@pytest.mark.parametrize("step", ["audit", "replay", "register"])
def test_restore_that_fails_at_a_rename_puts_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """The renames into place fail one by one (the register's, the last, after the audit
    directory was swapped and the changes since the backup re-applied to the staged
    copies): each time everything moved is put back, every copy removed."""
    node_cfg, audit_cfg = change_after_backup(tmp_path)
    node_cfg.replay_path.unlink()  # so that the backup's replay store is restored too
    files = tree(tmp_path)
    target = {
        "audit": audit_cfg.directory,
        "replay": node_cfg.replay_path,
        "register": node_cfg.database,
    }[step]
    replace = os.replace

    def failing_replace(source: str | Path, dest: str | Path) -> None:
        if Path(dest) == target and Path(source).name.endswith(".restoring"):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(dest))
        replace(source, dest)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="Input/output error"):
        restore_backup(tmp_path / "backup", node_cfg, audit_cfg, None, force=True)
    monkeypatch.undo()
    assert tree(tmp_path) == files
    store = RecordStore(node_cfg.database, STATE, DIM, MODEL)
    assert store.count() == 9 and store.marked_flags().sum() == 1
    store.close()
    signer = NoteSigner.load(audit_cfg.signing_key)
    state = verify_log_files(audit_cfg.directory / "log", signer.verifier(), node_origin(STATE))
    log = AuditLog(audit_cfg.directory / "log", signer, node_origin(STATE))
    assert log.size == state.entries
    log.close()


def test_restore_over_a_register_left_with_committed_writes_in_its_wal(tmp_path: Path) -> None:
    """A node that crashed leaves committed writes in the register's -wal, beside an older
    file: they are in the moved-aside copy, and never applied to the restored register."""
    node_cfg, audit_cfg = small_node(tmp_path, records=10)
    take_backup(node_cfg, audit_cfg, tmp_path / "backup")
    files = [node_cfg.database.with_name(node_cfg.database.name + s) for s in ("", "-wal", "-shm")]
    store = RecordStore(node_cfg.database, STATE, DIM, MODEL)
    store.set_marked(2, MarkKind.PROTECTION_GRANTED, dt.datetime(2026, 11, 21, tzinfo=dt.UTC))
    crashed = [p.read_bytes() for p in files]  # the files as a crash would leave them
    store.close()
    for path, data in zip(files, crashed, strict=True):
        path.write_bytes(data)
    assert len(crashed[1]) > 0  # the mark is in the -wal only

    # The mark is in the live register only (no entry in the log): a loss, listed.
    with pytest.raises(RestoreLossRefused) as refused:
        restore_backup(tmp_path / "backup", node_cfg, audit_cfg, None, force=True)
    (changed,) = refused.value.losses.to_json()["records_changed"]
    assert changed["row_id"] == 2 and set(changed["fields"]) == {"mark_kind", "marked_at"}
    assert [p.read_bytes() for p in files[:2]] == crashed[:2]  # nothing folded or changed
    report = restore_backup(
        tmp_path / "backup", node_cfg, audit_cfg, None, force=True, accept_loss=True
    )
    store = RecordStore(node_cfg.database, STATE, DIM, MODEL)
    assert store.count() == 10 and not store.marked_flags().any()
    store.close()
    aside = sqlite3.connect(Path(report.moved_aside[0]).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        assert aside.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        marked = aside.execute("SELECT id FROM records WHERE marked_at IS NOT NULL").fetchall()
    finally:
        aside.close()
    assert marked == [(2,)]


# -- a restore says what it loses (issue 19, item 3) ------------------------------------------


def _fedmatch(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedmatch", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _last_json(out: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return doc


def _register_rows(register: Path) -> dict[str, int]:
    """Reference -> row id of every record (read-write, so no -wal is left behind)."""
    db = sqlite3.connect(str(register))
    try:
        return {str(r): int(i) for i, r in db.execute("SELECT id, reference FROM records")}
    finally:
        db.close()


def test_restore_lists_what_it_loses_and_refuses_without_accept_loss(tmp_path: Path) -> None:
    """Records enrolled after the backup and a status recorded after it (neither is
    re-applied): `fedmatch node restore` refuses without --accept-loss, prints each lost
    record (reference, row id), the changed record and the log entries it drops by kind,
    and changes nothing; --dry-run prints the same; with --accept-loss it restores, reports
    the same losses, logs a node_restored entry (counts and digests only) and writes a
    signed announcement for the auditors."""
    from fedmatch.audit.restores import open_announcement
    from fedmatch.protocol.wire import header_to_pb
    from fedmatch.rpc.v1 import node_pb2
    from fedmatch.rpc.v1 import node_pb2_grpc as npg

    kek = create_key_file(tmp_path / "storage.key")
    rng = np.random.default_rng(19)
    node_cfg, audit_cfg = configs(tmp_path)
    toml = write_node_toml(tmp_path, node_cfg, audit_cfg)
    with federation(tmp_path, ("DE", STATE), records=20, kek=kek) as fed:
        it = fed.nodes[STATE]
        enrol(it, unit_vectors(rng, 1, DIM)[0], "IT-KEPT", Category.APPLICANT,
              dt.date(2026, 3, 1))  # fmt: skip
        take_backup(node_cfg, audit_cfg, tmp_path / "backup")
        for ref in ("IT-LATE-0", "IT-LATE-1"):
            enrol(it, unit_vectors(rng, 1, DIM)[0], ref, Category.APPLICANT,
                  dt.date(2026, 4, 1))  # fmt: skip
        stub = npg.NodeServiceStub(fed.node_channel(STATE, f"operator-{STATE}"))
        status = node_pb2.SetRecordStatusRequest(
            header=header_to_pb(header(STATE)), reference="IT-KEPT",
            responsible_state="DE", responsible_basis="AMMR Art. 36",
        )  # fmt: skip
        out = stub.SetRecordStatus(status)
        assert out.outcome == "status_set"
        it.audit.log.checkpoint()
        live_size = it.audit.log.size
    rows = _register_rows(node_cfg.database)
    late = [{"reference": r, "row_id": rows[r]} for r in ("IT-LATE-0", "IT-LATE-1")]
    backup_audit = json.loads((tmp_path / "backup" / MANIFEST).read_text())["audit"]
    backup_entries = backup_audit["entries"]
    before = live_digests(node_cfg, audit_cfg)
    restore = ("node", "restore", "--config", str(toml), "--from", str(tmp_path / "backup"))

    def check_losses(lost: dict[str, Any]) -> None:
        assert lost["records_lost"] == late, lost
        (changed,) = lost["records_changed"]
        assert changed["reference"] == "IT-KEPT" and changed["row_id"] == rows["IT-KEPT"]
        assert {"responsible_state", "responsible_basis"} <= set(changed["fields"])
        assert lost["records_returning"] == []
        log = lost["log"]
        assert log["usable"] is True, log
        assert log["live_entries"] == live_size
        assert log["entries_dropped"] == live_size - backup_entries
        dropped = log["dropped_by_kind"]
        assert dropped["record_enrolled"] == 2 and dropped["record_status_set"] == 1
        assert sum(dropped.values()) == live_size - backup_entries
        assert log["reapplied"] == 0

    refused = _fedmatch(*restore, "--force")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "--accept-loss" in refused.stderr and "Traceback" not in refused.stderr
    doc = _last_json(refused.stdout)
    assert doc["restored"] is False and doc["loss_accepted"] is False
    check_losses(doc["lost"])
    assert live_digests(node_cfg, audit_cfg) == before
    assert not list(tmp_path.glob("*.restoring*")) and not list(tmp_path.glob("*before-restore*"))

    dry = _fedmatch(*restore, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    doc = _last_json(dry.stdout)
    assert doc["restored"] is False and doc["dry_run"] is True
    check_losses(doc["lost"])
    assert live_digests(node_cfg, audit_cfg) == before

    done = _fedmatch(*restore, "--force", "--accept-loss")
    assert done.returncode == 0, done.stderr[-2000:]
    doc = _last_json(done.stdout)
    assert doc["restored"] is True and doc["loss_accepted"] is True
    check_losses(doc["lost"])
    assert set(_register_rows(node_cfg.database)) == set(rows) - {"IT-LATE-0", "IT-LATE-1"}

    # The restored log: the backup's, then the restore's entry: counts and digests only.
    signer = NoteSigner.load(audit_cfg.signing_key)
    state = verify_log_files(audit_cfg.directory / "log", signer.verifier(), node_origin(STATE))
    assert state.entries == state.checkpoint_size == backup_entries + 1
    entry = _decode(state.raw[backup_entries])
    assert entry.kind is EventKind.NODE_RESTORED and entry.event.reason == "loss_accepted"
    counts, labels = entry.event.counts, entry.event.labels
    assert counts["records_lost"] == 2 and counts["record_changes_lost"] == 1
    assert counts["entries_dropped"] == live_size - backup_entries
    assert counts["previous_entries"] == live_size and counts["backup_entries"] == backup_entries
    assert labels["manifest_sha256"] == digest(tmp_path / "backup" / MANIFEST)
    aside = Path(next(p for p in doc["moved_aside"] if "audit-IT" in p))
    previous = verify_log_files(aside / "log", signer.verifier(), node_origin(STATE))
    assert labels["previous_root"] == base64.b64encode(previous.root).decode()
    assert b"IT-LATE" not in b"".join(state.raw) and b"IT-KEPT" not in b"".join(state.raw)

    # The announcement for the auditors: signed by the node's key, nothing personal in it.
    path = Path(str(doc["announcement"]))
    assert path.parent == audit_cfg.directory / "restores"
    data = path.read_bytes()
    assert b"IT-LATE" not in data and b"IT-KEPT" not in data
    announcement = open_announcement(data, signer.verifier())
    assert announcement.origin == node_origin(STATE)
    # The backup's signed checkpoint (it covers a prefix of the backup's log).
    assert announcement.backup_checkpoint.size == backup_audit["checkpoint_size"]
    assert announcement.restored_checkpoint.size == backup_entries + 1
    assert announcement.manifest_sha256 == digest(tmp_path / "backup" / MANIFEST)
    assert announcement.previous_checkpoint is not None
    assert announcement.previous_checkpoint.size == live_size
    assert announcement.lost["records_lost"] == 2 and announcement.lost["record_changes_lost"] == 1
    assert announcement.lost["entries_dropped"] == live_size - backup_entries


def test_restore_with_nothing_lost_needs_no_flag(tmp_path: Path) -> None:
    """The node's register and log are still as they were at the backup: the restore loses
    nothing and needs no --accept-loss; its entry says so."""
    node_cfg, audit_cfg = small_node(tmp_path)
    take_backup(node_cfg, audit_cfg, tmp_path / "backup")
    report = restore_backup(tmp_path / "backup", node_cfg, audit_cfg, None, force=True)
    lost = report.losses.to_json()
    assert not report.losses.anything and lost["records_lost"] == []
    assert lost["log"]["usable"] is True and lost["log"]["entries_dropped"] == 0
    signer = NoteSigner.load(audit_cfg.signing_key)
    state = verify_log_files(audit_cfg.directory / "log", signer.verifier(), node_origin(STATE))
    last = _decode(state.raw[-1])
    assert last.kind is EventKind.NODE_RESTORED and last.event.reason == "nothing_lost"
    assert last.event.counts["records_lost"] == last.event.counts["entries_dropped"] == 0
    assert Path(report.announcement).is_file()


def test_restore_over_an_unusable_live_log_says_so(tmp_path: Path) -> None:
    """A damaged live log: what it held after the backup cannot be known, so the restore
    refuses without --accept-loss and its report says the log was not usable (the losses
    listed are the register's only)."""
    node_cfg, audit_cfg = small_node(tmp_path)
    take_backup(node_cfg, audit_cfg, tmp_path / "backup")
    log_file = audit_cfg.directory / "log" / "log.bin"
    data = bytearray(log_file.read_bytes())
    data[-10] ^= 0x01
    log_file.write_bytes(bytes(data))
    before = live_digests(node_cfg, audit_cfg)
    with pytest.raises(RestoreLossRefused, match="log not usable") as refused:
        restore_backup(tmp_path / "backup", node_cfg, audit_cfg, None, force=True)
    lost = refused.value.losses.to_json()
    assert lost["log"]["usable"] is False and "damaged after entry" in lost["log"]["why"]
    assert lost["records_lost"] == [] and lost["records_changed"] == []
    assert live_digests(node_cfg, audit_cfg) == before
    report = restore_backup(
        tmp_path / "backup", node_cfg, audit_cfg, None, force=True, accept_loss=True
    )
    assert any("log not usable" in n for n in report.notes), report.notes
    signer = NoteSigner.load(audit_cfg.signing_key)
    state = verify_log_files(audit_cfg.directory / "log", signer.verifier(), node_origin(STATE))
    last = _decode(state.raw[-1])
    assert last.kind is EventKind.NODE_RESTORED
    assert last.event.labels["previous_log"] == "not_usable"
