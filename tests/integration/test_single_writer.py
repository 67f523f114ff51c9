"""One writer per register (issue 19, items 1, 2 and 9).

A register and its audit log are written by one process at a time: the node that serves
them, or one offline command (seed, seal, restore...). A second writer is refused at once,
before it binds a port or writes anything. `node seed` adds synthetic records only to a
register of synthetic records in the clear (else `--dev`), and logs what it adds. A node's
start writes nothing to stderr but its log lines (no traceback from its search workers).

Every node here is a real `fedmatch node serve` process over mutual TLS on loopback port 0,
on real SQLite files; the offline commands run through the real CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.audit.log import LOG_FILE, scan_records
from fedmatch.audit.party import create_party_key, node_origin
from fedmatch.cli.main import main
from fedmatch.demo.synthetic import unit_vectors
from fedmatch.domain import Category, Sex
from node.records import NewRecord, RecordMeta
from node.store import RecordStore
from tests.federation import DIM, MODEL
from tests.integration.test_operations import _fedmatch, _free_port, _node_config, _start, _stop


def _entries(audit_dir: Path) -> list[SignedEntry]:
    path = audit_dir / "log" / LOG_FILE
    if not path.exists():
        return []
    data = path.read_bytes()
    return [SignedEntry.decode(data[a : a + n]) for a, n in scan_records(data)[0]]


def _copy(config: Path, name: str, database: str | None = None) -> Path:
    """A copy of a node's config, as an operator would make one: its own metrics port
    (and, when given, its own register file)."""
    text = config.read_text()
    metrics = text.split('[metrics]\nlisten = "')[1].split('"')[0]
    text = text.replace(metrics, f"127.0.0.1:{_free_port()}")
    if database is not None:
        text = text.replace('database = "fr.sqlite"', f'database = "{database}"')
    copy = config.with_name(name)
    copy.write_text(text)
    return copy


def _serve(config: Path, port_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedmatch", "node", "serve", "--config", str(config),
         "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_two_serves_on_one_register_the_second_is_refused_at_once(tmp_path: Path) -> None:
    config = _node_config(tmp_path, "FR", 5, json_table=False)
    first = _start(tmp_path, "node", config, "node-fr")
    try:
        entries = len(_entries(tmp_path / "audit-fr"))
        # The attack of issue 19: a copy of the config (same register and audit directory),
        # another port. It must not serve: it exits as on a configuration error.
        port_file = tmp_path / "second.port"
        second = _serve(_copy(config, "node-fr-copy.toml"), port_file)
        assert second.returncode == 2, second.stderr
        assert f"register fr.sqlite already served by pid {first.process.pid}" in second.stderr
        assert not port_file.exists()  # it never bound its port
        # Another register but the same audit directory: refused too, before the register
        # is even created.
        other = _serve(_copy(config, "node-fr-other.toml", "other.sqlite"), port_file)
        assert other.returncode == 2, other.stderr
        assert f"audit directory audit-fr already used by pid {first.process.pid}" in (other.stderr)
        assert not (tmp_path / "other.sqlite").exists()
        assert not port_file.exists()
        # An offline writer is refused under the running node, even with --dev.
        seeded = _fedmatch("node", "seed", "--config", str(config), "--count", "3", "--dev")
        assert seeded.returncode == 2, seeded.stderr
        assert f"register fr.sqlite already served by pid {first.process.pid}" in seeded.stderr
        # A restore is refused before it reads the backup.
        restored = _fedmatch(
            "node", "restore", "--config", str(config), "--from", str(tmp_path / "none"), "--force"
        )
        assert restored.returncode == 2, restored.stderr
        assert f"already served by pid {first.process.pid}" in restored.stderr
        assert len(_entries(tmp_path / "audit-fr")) == entries  # nothing logged by them
        # The running node still holds every record it had, and serves.
        assert first.process.poll() is None
    finally:
        assert _stop(first) == 0
    # The lock dies with its process: the copy now starts.
    again = _start(tmp_path, "node", _copy(config, "node-fr-again.toml"), "node-fr-again")
    assert _stop(again) == 0


# --------------------------------------------------------------------------- node seed


def _seed_config(tmp_path: Path, storage: bool = False) -> Path:
    key = tmp_path / "node-it.key"
    create_party_key(key, node_origin("IT"))
    text = (
        f'[node]\nmember_state = "IT"\ndatabase = "it.sqlite"\ndimension = {DIM}\n'
        f'model_id = "{MODEL}"\n[audit]\ndirectory = "audit-it"\nsigning_key = "{key}"\n'
    )
    if storage:
        assert main(["node", "storage-key", "--out", str(tmp_path / "storage.key")]) == 0
        text += f'[storage]\nkey_file = "{tmp_path / "storage.key"}"\n'
    config = tmp_path / "node-it.toml"
    config.write_text(text)
    return config


def _real_record(database: Path) -> None:
    """One record enrolled by an officer, as a running node would have stored it."""
    template = unit_vectors(np.random.default_rng(3), 1, DIM)[0]
    day = dt.date.today()
    meta = RecordMeta(
        "IT-2026-000123", Category.IRREGULAR_CROSSING, day, "Lampedusa", day, Sex.MALE,
        operator_id="officer-9", birth_date=dt.date(1990, 1, 1),
    )  # fmt: skip
    store = RecordStore(database, "IT", DIM, MODEL)
    try:
        store.add(NewRecord(meta=meta, template=template, model_id=MODEL))
    finally:
        store.close()


def _count(database: Path, storage: Path | None = None) -> int:
    from node.sealing import KeyEncryptionKey

    kek = KeyEncryptionKey.from_file(storage) if storage is not None else None
    store = RecordStore(database, "IT", DIM, MODEL, kek)
    try:
        return store.count()
    finally:
        store.close()


def test_seed_refuses_a_register_with_real_records_unless_dev(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _seed_config(tmp_path)
    _real_record(tmp_path / "it.sqlite")
    assert main(["node", "seed", "--config", str(config), "--count", "4"]) == 2
    err = capsys.readouterr().err
    assert "it.sqlite holds 1 record not added by `node seed`" in err
    assert "--dev" in err
    assert _count(tmp_path / "it.sqlite") == 1
    assert _entries(tmp_path / "audit-it") == []  # nothing added, nothing logged
    assert main(["node", "seed", "--config", str(config), "--count", "4", "--dev"]) == 0
    assert _count(tmp_path / "it.sqlite") == 5


def test_seed_refuses_a_sealed_register_unless_dev(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _seed_config(tmp_path, storage=True)
    # A new register: seeded (and sealed under the [storage] key as it is created).
    assert main(["node", "seed", "--config", str(config), "--count", "3"]) == 0
    capsys.readouterr()
    assert main(["node", "seed", "--config", str(config), "--count", "3"]) == 2
    err = capsys.readouterr().err
    assert "it.sqlite is sealed" in err and "--dev" in err
    assert _count(tmp_path / "it.sqlite", tmp_path / "storage.key") == 3
    assert main(["node", "seed", "--config", str(config), "--count", "3", "--dev"]) == 0
    assert _count(tmp_path / "it.sqlite", tmp_path / "storage.key") == 6


def test_seed_logs_what_it_adds(tmp_path: Path) -> None:
    config = _seed_config(tmp_path)
    assert main(["node", "seed", "--config", str(config), "--count", "4"]) == 0
    assert main(["node", "seed", "--config", str(config), "--count", "2", "--seed", "1"]) == 0
    seeded = [e for e in _entries(tmp_path / "audit-it") if e.kind is EventKind.RECORDS_SEEDED]
    assert [dict(e.event.counts) for e in seeded] == [
        {"added": 4, "records": 4},
        {"added": 2, "records": 6},
    ]
    assert all(e.event.registers == ("IT",) and e.event.labels["dev"] == "no" for e in seeded)
    # Counts only: no reference number, template or date of the records added.
    text = (tmp_path / "audit-it" / "log" / LOG_FILE).read_bytes()
    assert b"IT-SYN-" not in text


# --------------------------------------------------------------------------- item 9


def test_node_start_prints_no_traceback_and_json_logs_parse(tmp_path: Path) -> None:
    """Regression (issue 19 item 9): the search workers' shared memory was unregistered
    twice, and the resource tracker printed a KeyError traceback at every start."""
    config = _node_config(tmp_path, "FR", 40, json_table=False, workers=2)
    node = _start(tmp_path, "node", config, "node-fr", ("--log-format", "json"))
    assert _stop(node) == 0
    lines = node.lines()
    assert lines
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    for line in lines:
        json.loads(line)  # every stderr line is one JSON log record


def test_seed_without_an_audit_log_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "node-it.toml"
    config.write_text(
        f'[node]\nmember_state = "IT"\ndatabase = "it.sqlite"\ndimension = {DIM}\n'
        f'model_id = "{MODEL}"\n'
    )
    assert main(["node", "seed", "--config", str(config), "--count", "3"]) == 2
    assert "audit.directory is required" in capsys.readouterr().err
    assert not (tmp_path / "it.sqlite").exists()


# --------------------------------------------------------------------------- coordinator


def test_two_coordinators_on_one_audit_directory_the_second_is_refused(tmp_path: Path) -> None:
    """The coordinator's audit log and case file have one writer too: a second `coordinator
    serve` from a copy of the config (another metrics port) exits at once, naming the
    first, before it binds a port or logs anything."""
    from tests.integration.test_coordinator_startup import _coordinator_config

    config = _coordinator_config(tmp_path, {}, {})
    first = _start(tmp_path, "coordinator", config, "coordinator")
    try:
        port_file = tmp_path / "second.port"
        second = subprocess.run(
            [sys.executable, "-m", "fedmatch", "coordinator", "serve", "--config",
             str(_copy(config, "coordinator-copy.toml")), "--listen", "127.0.0.1:0",
             "--port-file", str(port_file)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert (
            f"audit directory audit-coordinator already used by pid {first.process.pid} "
            "(fedmatch coordinator serve); stop it first"
        ) in second.stderr
        assert not port_file.exists()
        starts = [
            e for e in _entries(tmp_path / "audit-coordinator") if e.kind is EventKind.PARTY_STARTED
        ]
        assert len(starts) == 1  # the second one logged nothing
        assert first.process.poll() is None
    finally:
        assert _stop(first) == 0
    # The lock dies with its process: the copy now starts.
    again = _start(tmp_path, "coordinator", _copy(config, "coordinator-again.toml"), "again")
    assert _stop(again) == 0
