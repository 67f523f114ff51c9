"""The ``fedmatch node`` storage commands: storage-key, seal, rotate-key, backup, restore.

:mod:`fedmatch.cli.node` registers the parsers with :func:`add_parsers` under ``fedmatch
node`` and hands the parsed arguments to :func:`run`; everything else lives in
:mod:`node.sealing` and :mod:`node.backup`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from fedmatch.errors import ConfigError, PreconditionFailed
from node.config import NodeConfig, load_node_config, load_storage_config
from node.locks import OpenLock, OwnerLock
from node.sealing import (
    KeyEncryptionKey,
    create_key_file,
    rotate_register_key,
    seal_clear_register,
    storage_key,
)

__all__ = ["COMMANDS", "add_parsers", "node_storage_key", "run"]

log = logging.getLogger("fedmatch.node")

COMMANDS = ("storage-key", "seal", "rotate-key", "backup", "restore")


def add_parsers(node_sub: Any) -> None:
    key = node_sub.add_parser(
        "storage-key", help="create a key-encryption key for templates at rest (mode 0600)"
    )
    key.add_argument("--out", type=Path, required=True, help="new key file (never overwritten)")
    seal = node_sub.add_parser(
        "seal", help="encrypt the templates of a clear register with the [storage] key"
    )
    seal.add_argument("--config", type=Path, required=True, help="node TOML config")
    rotate = node_sub.add_parser(
        "rotate-key", help="re-wrap the register's data key under a new [storage] key"
    )
    rotate.add_argument("--config", type=Path, required=True, help="node TOML config")
    rotate.add_argument("--new-key", type=Path, required=True, help="the new key file")
    rotate.add_argument(
        "--reencrypt",
        action="store_true",
        help="also replace the data key and re-encrypt every template (node stopped)",
    )
    backup = node_sub.add_parser(
        "backup", help="consistent, signed backup of register, replay store and audit log"
    )
    backup.add_argument("--config", type=Path, required=True, help="node TOML config")
    backup.add_argument("--out", type=Path, required=True, help="new or empty directory")
    restore = node_sub.add_parser(
        "restore", help="verify a backup and make it the node's register and log (node stopped)"
    )
    restore.add_argument("--from", dest="source", type=Path, required=True, help="backup dir")
    restore.add_argument("--config", type=Path, required=True, help="node TOML config")
    restore.add_argument(
        "--force", action="store_true", help="replace existing files (they are moved aside)"
    )
    restore.add_argument(
        "--accept-loss", action="store_true",
        help="restore even though records, changes or log entries of the live node are lost "
        "(without it such a restore is refused and the losses listed)",
    )  # fmt: skip
    restore.add_argument(
        "--dry-run", action="store_true",
        help="only list what the restore would lose (node stopped; nothing is changed)",
    )  # fmt: skip


def node_storage_key(config: Path | None) -> KeyEncryptionKey | None:
    """The ``[storage]`` key of a node's config; warns when templates stay in the clear."""
    storage, present = load_storage_config(config)
    if storage.encrypt_templates and not storage.has_key:
        if present:
            raise ConfigError(
                "storage: key_file or key_env is required (encrypt_templates is true); "
                "set encrypt_templates = false to keep templates in the clear"
            )
        log.warning(
            "templates are stored in the clear: the node config has no [storage] key "
            "(see `fedmatch node storage-key`)"
        )
    return storage_key(storage.key_file, storage.key_env)


def _connect(cfg: NodeConfig) -> sqlite3.Connection:
    if not cfg.database.exists():
        raise ConfigError(f"node.database {cfg.database} does not exist")
    return sqlite3.connect(str(cfg.database), isolation_level=None, timeout=30.0)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except sqlite3.Error as exc:
        # SQLite's messages name the condition (locked, not a database), never row data.
        raise PreconditionFailed(f"register: {type(exc).__name__}: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    command = args.node_command
    if command == "storage-key":
        key = create_key_file(args.out)
        print(json.dumps({"key_file": str(args.out), "key_id": key.key_id}))
        return 0
    cfg = load_node_config(args.config)
    # A backup copies encrypted templates as they are: it never reads the storage key.
    kek = None if command == "backup" else node_storage_key(args.config)
    out: dict[str, Any]
    if command == "seal":
        if kek is None:
            raise ConfigError("storage: configure key_file or key_env to seal the register")
        # The register's only writer (no running node keeps writing clear templates
        # meanwhile), and exclusive of any store opened in another process.
        with OwnerLock(cfg.database, None, "node seal"), OpenLock(cfg.database, exclusive=True):
            db = _connect(cfg)
            try:
                sealed = seal_clear_register(db, kek, cfg.database.name)
            finally:
                db.close()
        out = {"sealed_templates": sealed, "key_id": kek.key_id}
    elif command == "rotate-key":
        if kek is None:
            raise ConfigError("storage: configure the current key to rotate from")
        new = KeyEncryptionKey.from_file(args.new_key)
        if new.key_id == kek.key_id:
            raise PreconditionFailed(f"the new key is the current key ({kek.key_id})")
        # A re-wrap leaves the data key a running node holds unchanged (and writes neither
        # a record nor the log); a re-encryption does not, so it needs the node stopped.
        with ExitStack() as locks:
            if args.reencrypt:
                locks.enter_context(OwnerLock(cfg.database, None, "node rotate-key"))
                locks.enter_context(OpenLock(cfg.database, exclusive=True))
            db = _connect(cfg)
            try:
                count = rotate_register_key(db, kek, new, cfg.database.name, args.reencrypt)
            finally:
                db.close()
        out = {
            "key_id": new.key_id,
            "previous_key_id": kek.key_id,
            "reencrypted_templates": count,
            "next_step": "point [storage] at the new key; keep the old one until backups "
            "made under it have expired",
        }
    else:
        from fedmatch.audit.party import load_audit_config
        from node.backup import restore_backup, take_backup

        audit = load_audit_config(args.config)
        if command == "backup":
            manifest = take_backup(cfg, audit, args.out)
            out = {
                "backup": str(args.out),
                "records": manifest["register"]["records"],
                "log_entries": manifest["audit"]["entries"],
                "writes_paused_ms": manifest["writes_paused_ms"],
                "files": len(manifest["files"]),
            }
        else:
            from node.backup import RestoreLossRefused

            # Restore replaces the register and the log: their only writer meanwhile.
            with OwnerLock(cfg.database, audit.directory, "node restore"):
                try:
                    report = restore_backup(
                        args.source, cfg, audit, kek, args.force, args.accept_loss, args.dry_run
                    )
                except RestoreLossRefused as refused:
                    # The full list of what would be lost, then the refusal (exit 2).
                    print(json.dumps(refused.report.to_json() | {"refused": str(refused)}))
                    raise
            out = report.to_json()
            if report.announcement:
                print(
                    f"restored; announce it to the auditors with {report.announcement} "
                    "(each runs `fedmatch audit accept-restore --announcement FILE`)",
                    file=sys.stderr,
                )
    print(json.dumps(out))
    return 0
