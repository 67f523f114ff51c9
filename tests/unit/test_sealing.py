"""Templates encrypted at rest (node/sealing.py) through real SQLite registers."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedmatch.demo.synthetic import unit_vectors
from fedmatch.domain import Category, Sex
from fedmatch.errors import ConfigError, PreconditionFailed
from node.config import StorageConfig, load_storage_config
from node.locks import OpenLock
from node.records import NewRecord, RecordMeta
from node.sealing import (
    KeyEncryptionKey,
    check_register_key,
    create_key_file,
    rotate_register_key,
    seal_clear_register,
)
from node.store import RecordStore

STATE, DIM, MODEL = "IT", 16, "model-x"
D = dt.date


def records(n: int, seed: int = 0, prefix: str = "IT") -> list[NewRecord]:
    templates = unit_vectors(np.random.default_rng(seed), n, DIM)
    return [
        NewRecord(
            RecordMeta(
                f"{prefix}-{seed}-{i}",
                Category.APPLICANT,
                D(2026, 1, 2),
                "Roma",
                D(2026, 1, 2),
                Sex.FEMALE,
                "op",
                birth_date=D(1990, 1, 1),
            ),
            t.astype(np.float32),
            MODEL,
        )
        for i, t in enumerate(templates)
    ]


def kek(tmp_path: Path, name: str = "kek") -> KeyEncryptionKey:
    return create_key_file(tmp_path / name)


def raw_rows(db_path: Path) -> list[tuple[int, str, bytes]]:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT id, reference, template FROM records ORDER BY id").fetchall()
    finally:
        db.close()


def sealed_register(path: Path, key: KeyEncryptionKey, n: int = 5, seed: int = 0) -> np.ndarray:
    batch = records(n, seed)
    store = RecordStore(path, STATE, DIM, MODEL, key)
    try:
        store.add_many(batch)
        assert store.storage_key_id == key.key_id
    finally:
        store.close()
    return np.stack([r.template for r in batch])


def read_templates(path: Path, key: KeyEncryptionKey | None) -> np.ndarray:
    store = RecordStore(path, STATE, DIM, MODEL, key)
    try:
        return store.templates()[1]
    finally:
        store.close()


def test_round_trip_and_nothing_clear_on_disk(tmp_path: Path) -> None:
    key = kek(tmp_path)
    db = tmp_path / "it.sqlite"
    originals = sealed_register(db, key)
    np.testing.assert_array_equal(read_templates(db, key), originals)
    stored = {t for _, _, t in raw_rows(db)}
    for template in originals:
        clear = template.astype("<f4").tobytes()
        assert clear not in stored
        # Not in the file either (WAL checkpointed at close), nor any 16-byte piece of it.
        assert clear[:16] not in db.read_bytes()
    # Every blob has its own nonce: equal templates give different blobs.
    blobs = [t for _, _, t in raw_rows(db)]
    assert len({b[1:13] for b in blobs}) == len(blobs)


def test_blob_swapped_between_rows_is_refused(tmp_path: Path) -> None:
    key = kek(tmp_path)
    db = tmp_path / "it.sqlite"
    sealed_register(db, key)
    rows = raw_rows(db)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE records SET template = ? WHERE id = ?", (rows[1][2], rows[0][0]))
        conn.execute("UPDATE records SET template = ? WHERE id = ?", (rows[0][2], rows[1][0]))
    conn.close()
    with pytest.raises(PreconditionFailed, match="does not authenticate") as err:
        read_templates(db, key)
    assert rows[0][1] not in str(err.value)  # the reference (personal data) is not echoed


def test_blob_moved_from_another_register_is_refused(tmp_path: Path) -> None:
    key = kek(tmp_path)
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    sealed_register(a, key)
    sealed_register(b, key)  # same references, same key, another register id
    donor = raw_rows(a)[2][2]
    conn = sqlite3.connect(b)
    with conn:
        conn.execute("UPDATE records SET template = ? WHERE id = ?", (donor, raw_rows(b)[2][0]))
    conn.close()
    with pytest.raises(PreconditionFailed, match="moved from another row or register"):
        read_templates(b, key)


def test_tampered_blob_is_refused(tmp_path: Path) -> None:
    key = kek(tmp_path)
    db = tmp_path / "it.sqlite"
    sealed_register(db, key)
    row_id, _, blob = raw_rows(db)[3]
    flipped = blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE records SET template = ? WHERE id = ?", (flipped, row_id))
    conn.close()
    with pytest.raises(PreconditionFailed, match="does not authenticate"):
        read_templates(db, key)
    with pytest.raises(PreconditionFailed, match="does not authenticate"):
        check_register_key(db, key)


def test_wrong_or_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    key, other = kek(tmp_path), kek(tmp_path, "other")
    db = tmp_path / "it.sqlite"
    sealed_register(db, key)
    with pytest.raises(PreconditionFailed, match=f"sealed under key id {key.key_id}") as err:
        read_templates(db, other)
    secret = base64.b64encode(other.key).decode()
    assert secret not in str(err.value) and other.key.hex() not in str(err.value)
    assert secret not in repr(other)
    # No key: refused, never read as clear templates.
    with pytest.raises(PreconditionFailed, match="holds encrypted templates"):
        read_templates(db, None)
    # Same key id claimed, other key material: the wrapped key does not open.
    forged = KeyEncryptionKey(key.key_id, other.key)
    with pytest.raises(PreconditionFailed, match="does not open its data key"):
        read_templates(db, forged)


def test_key_file_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = kek(tmp_path)
    path = tmp_path / "kek"
    assert (path.stat().st_mode & 0o777) == 0o600
    assert KeyEncryptionKey.from_file(path) == key
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        KeyEncryptionKey.from_file(path)
    with pytest.raises(ConfigError, match="never overwritten"):
        create_key_file(path)
    monkeypatch.setenv("FEDMATCH_TEST_KEK", base64.b64encode(key.key).decode())
    assert KeyEncryptionKey.from_env("FEDMATCH_TEST_KEK") == key
    monkeypatch.setenv("FEDMATCH_TEST_KEK", "not base64!")
    with pytest.raises(ConfigError, match="not a base64 storage key"):
        KeyEncryptionKey.from_env("FEDMATCH_TEST_KEK")
    monkeypatch.delenv("FEDMATCH_TEST_KEK")
    with pytest.raises(ConfigError, match="is not set"):
        KeyEncryptionKey.from_env("FEDMATCH_TEST_KEK")


def test_rotation_by_rewrapping_keeps_every_template(tmp_path: Path) -> None:
    old, new = kek(tmp_path), kek(tmp_path, "new")
    db = tmp_path / "it.sqlite"
    originals = sealed_register(db, old, n=40)
    before = raw_rows(db)
    running = RecordStore(db, STATE, DIM, MODEL, old)  # a node that keeps serving
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert rotate_register_key(conn, old, new, db.name) == 0
    finally:
        conn.close()
    assert raw_rows(db) == before  # no template was touched
    # The running node's data key is unchanged: what it enrols after the re-wrap is
    # readable under the new key.
    later = records(3, seed=9)
    running.add_many(later)
    running.close()
    expected = np.concatenate([originals, np.stack([r.template for r in later])])
    np.testing.assert_array_equal(read_templates(db, new), expected)
    with pytest.raises(PreconditionFailed, match=f"sealed under key id {new.key_id}"):
        read_templates(db, old)


def test_rotation_with_reencryption_replaces_the_data_key(tmp_path: Path) -> None:
    old, new = kek(tmp_path), kek(tmp_path, "new")
    db = tmp_path / "it.sqlite"
    originals = sealed_register(db, old, n=12)
    before = {r[0]: r[2] for r in raw_rows(db)}
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert rotate_register_key(conn, old, new, db.name, reencrypt=True) == 12
    finally:
        conn.close()
    after = {r[0]: r[2] for r in raw_rows(db)}
    assert before.keys() == after.keys() and all(before[i] != after[i] for i in before)
    np.testing.assert_array_equal(read_templates(db, new), originals)
    # An old blob does not open under the new data key (nothing of the old key remains).
    conn = sqlite3.connect(db)
    with conn:
        first = min(before)
        conn.execute("UPDATE records SET template = ? WHERE id = ?", (before[first], first))
    conn.close()
    with pytest.raises(PreconditionFailed, match="does not authenticate"):
        read_templates(db, new)


def test_failed_rotation_changes_nothing(tmp_path: Path) -> None:
    key, wrong, new = kek(tmp_path), kek(tmp_path, "wrong"), kek(tmp_path, "new")
    db = tmp_path / "it.sqlite"
    originals = sealed_register(db, key)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        with pytest.raises(PreconditionFailed, match="sealed under key id"):
            rotate_register_key(conn, wrong, new, db.name)
        assert not conn.in_transaction
    finally:
        conn.close()
    np.testing.assert_array_equal(read_templates(db, key), originals)


def test_clear_register_is_migrated_explicitly(tmp_path: Path) -> None:
    db = tmp_path / "it.sqlite"
    batch = records(7)
    store = RecordStore(db, STATE, DIM, MODEL)
    store.add_many(batch)
    assert store.storage_key_id is None
    store.close()
    key = kek(tmp_path)
    # A key configured over clear templates: refused with the way out, not mixed.
    with pytest.raises(PreconditionFailed, match="fedmatch node seal"):
        read_templates(db, key)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert seal_clear_register(conn, key, db.name) == 7
        with pytest.raises(PreconditionFailed, match="already encrypted"):
            seal_clear_register(conn, key, db.name)
    finally:
        conn.close()
    np.testing.assert_array_equal(read_templates(db, key), np.stack([r.template for r in batch]))
    assert check_register_key(db, key) == 7
    # New enrolments after migration are sealed too, and all stay readable.
    store = RecordStore(db, STATE, DIM, MODEL, key)
    try:
        store.add_many(records(3, seed=1))
        assert store.templates()[1].shape == (10, DIM)
    finally:
        store.close()


def test_restore_lock_refuses_while_a_store_is_open(tmp_path: Path) -> None:
    db = tmp_path / "it.sqlite"
    store = RecordStore(db, STATE, DIM, MODEL)
    with pytest.raises(PreconditionFailed, match="open in a running node"):
        OpenLock(db, exclusive=True)
    store.close()
    with OpenLock(db, exclusive=True), pytest.raises(PreconditionFailed, match="being restored"):
        RecordStore(db, STATE, DIM, MODEL)


def test_storage_config(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nmember_state = "IT"\ndatabase = "x"\n[storage]\nkey_file = "k"\n')
    storage, present = load_storage_config(cfg)
    assert present and storage.key_file == tmp_path / "k" and storage.encrypt_templates
    cfg.write_text('[node]\nmember_state = "IT"\ndatabase = "x"\n')
    storage, present = load_storage_config(cfg)
    assert not present and not storage.has_key
    with pytest.raises(ConfigError, match="not both"):
        StorageConfig(key_file=tmp_path / "k", key_env="X")
    with pytest.raises(ConfigError, match="contradicts"):
        StorageConfig(encrypt_templates=False, key_env="X")


def test_cli_storage_key_seal_and_rotate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedmatch.cli.main import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    db = tmp_path / "it.sqlite"
    toml = tmp_path / "node.toml"
    node = f'[node]\nmember_state = "IT"\ndatabase = "it.sqlite"\ndimension = {DIM}\n'
    node += f'model_id = "{MODEL}"\n'
    toml.write_text(node + '[storage]\nkey_file = "k1"\n')
    code, out, _ = run("node", "storage-key", "--out", str(tmp_path / "k1"))
    assert code == 0 and json.loads(out)["key_id"].startswith("kek-")
    k1 = KeyEncryptionKey.from_file(tmp_path / "k1")
    # A clear register, then migrated by `node seal`.
    store = RecordStore(db, STATE, DIM, MODEL)
    store.add_many(records(9))
    store.close()
    code, out, _ = run("node", "seal", "--config", str(toml))
    assert code == 0 and json.loads(out) == {"sealed_templates": 9, "key_id": k1.key_id}
    originals = read_templates(db, k1)
    # Re-wrap under k2, then re-encrypt under k3; every template stays readable.
    run("node", "storage-key", "--out", str(tmp_path / "k2"))
    code, out, _ = run(
        "node", "rotate-key", "--config", str(toml), "--new-key", str(tmp_path / "k2")
    )
    assert code == 0 and json.loads(out)["reencrypted_templates"] == 0
    toml.write_text(node + '[storage]\nkey_file = "k2"\n')
    k2 = KeyEncryptionKey.from_file(tmp_path / "k2")
    np.testing.assert_array_equal(read_templates(db, k2), originals)
    run("node", "storage-key", "--out", str(tmp_path / "k3"))
    argv = ("node", "rotate-key", "--config", str(toml), "--new-key", str(tmp_path / "k3"))
    code, out, _ = run(*argv, "--reencrypt")
    assert code == 0 and json.loads(out)["reencrypted_templates"] == 9
    np.testing.assert_array_equal(
        read_templates(db, KeyEncryptionKey.from_file(tmp_path / "k3")), originals
    )
    # The config still names k2, which no longer opens the register: a clear error, exit 2.
    code, out, err = run(*argv)
    assert code == 2 and out == ""
    assert f"sealed under key id {KeyEncryptionKey.from_file(tmp_path / 'k3').key_id}" in err
    assert "Traceback" not in err and base64.b64encode(k2.key).decode() not in err
    # [storage] present without a key is a configuration error, not clear storage.
    toml.write_text(node + "[storage]\nencrypt_templates = true\n")
    code, _, err = run("node", "seal", "--config", str(toml))
    assert code == 2 and "key_file or key_env is required" in err
