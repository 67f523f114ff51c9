"""``fedmatch config check FILE``: would this party's TOML file be accepted at start?

The file is read by the very loaders its service uses at start (node, coordinator, auditor,
operator workstation), with the same ``FEDMATCH_*`` environment overrides, so a bad value
fails here with the same message naming its key. Tables the party does not read are refused
too (a misspelt ``[polcy]`` would otherwise be silently ignored, and its defaults applied).
Then the key, certificate and CRL files it names are looked for: they are made on the
party's machine, never committed, and a missing one would stop the start.

An auditor's loader reads its root certificate and CRLs, so its ``[auditor]`` table is
checked only once they exist (``valid`` is null until then).

Prints one JSON object (``config``, ``kind``, ``valid``, ``missing``) and exits 0 when the
file is valid and names no missing file, :data:`EXIT_FILES_MISSING` when it is valid but
names files that do not exist, and 2 (through :mod:`fedmatch.cli.main`, with the key's
name) when it is not valid. Nothing is created, opened for writing, or connected to.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fedmatch.cli.common import EXIT_OK
from fedmatch.errors import ConfigError

__all__ = ["EXIT_FILES_MISSING", "KINDS", "add_parsers", "run"]

# The file is valid, but some key, certificate or CRL file it names does not exist.
EXIT_FILES_MISSING = 9

# The tables each kind of party reads; any other table is a mistake.
_TABLES = {
    "node": {"node", "audit", "tls", "policy", "retention", "storage", "metrics", "logging"},
    "coordinator": {"coordinator", "nodes", "audit", "tls", "metrics", "logging"},
    "auditor": {"auditor", "coordinator", "nodes", "tls", "logging"},
    "operator": {"operator", "officer", "tls", "logging"},
}
KINDS = tuple(_TABLES)


def add_parsers(sub: Any) -> None:
    """Register ``config check`` on the ``fedmatch`` subcommands."""
    config = sub.add_parser("config", help="check a party's configuration file")
    config.set_defaults(run=run)
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser(
        "check",
        help="check a node, coordinator, auditor or operator TOML file as its service would "
        f"at start (exit 0 valid, 2 invalid, {EXIT_FILES_MISSING} valid but files missing)",
    )
    check.add_argument("file", type=Path, help="the TOML file")
    check.add_argument("--kind", choices=KINDS, help="the party (default: from the file's tables)")


def _kind(tables: dict[str, Any], path: Path) -> str:
    # An auditor's file also has [coordinator] (the party it audits): look for it first.
    for kind in ("auditor", "node", "coordinator", "operator"):
        if kind in tables:
            return kind
    if "officer" in tables:
        return "operator"  # a workstation's file: [tls] and the officer's [officer]
    raise ConfigError(
        f"{path} has no [node], [coordinator], [auditor], [operator] or [officer] table: "
        "give --kind"
    )


def _named_files(kind: str, path: Path) -> tuple[dict[str, Path], bool]:
    """Load the file as ``kind``'s service does: the files it names that must exist, and
    whether every table could be checked."""
    from fedmatch.ops.logjson import load_logging_config
    from fedmatch.protocol.transport import load_tls_files

    load_logging_config(path, None)
    tls = load_tls_files(path)
    files = {"tls.key": tls.key, "tls.chain": tls.chain, "tls.root": tls.root}
    files.update({f"tls.crls[{i}]": p for i, p in enumerate(tls.crls)})
    if kind in ("node", "coordinator"):
        from fedmatch.audit.party import load_audit_config
        from fedmatch.ops.metrics_http import load_metrics_config

        files["audit.signing_key"] = load_audit_config(path).signing_key
        load_metrics_config(path)
    if kind == "node":
        from node.config import load_node_config, load_storage_config
        from node.policy import load_policy
        from node.retention import load_retention

        load_node_config(path)
        load_policy(path)
        load_retention(path)
        storage, _ = load_storage_config(path)
        if storage.key_file is not None:
            files["storage.key_file"] = storage.key_file
    elif kind == "coordinator":
        from coordinator.config import load_coordinator_config

        load_coordinator_config(path)
    elif kind == "auditor":
        from fedmatch.audit.auditor import load_auditor_config

        # The auditor's loader reads its root and CRLs: it runs once they exist.
        if all(Path(p).exists() for p in files.values()):
            files["auditor.signing_key"] = load_auditor_config(path).signing_key
        else:
            return files, False
    else:
        from fedmatch.config import read_toml
        from fedmatch.requester.officer import officer_files

        # Only a workstation that signs (lookups, resolves...) needs an [officer]; one that
        # only enrols or marks at its own node has none.
        table = read_toml(path).get("officer")
        if table is not None:
            officer = officer_files(path, table)
            files["officer.chain"] = officer.chain
            files["officer.key"] = officer.key
            if officer.passphrase_file is not None:
                files["officer.key_passphrase_file"] = officer.passphrase_file
    return files, True


def run(args: argparse.Namespace) -> int:
    from fedmatch.config import read_toml

    path: Path = args.file
    tables = read_toml(path)
    kind = args.kind or _kind(tables, path)
    unknown = sorted(set(tables) - _TABLES[kind])
    if unknown:
        raise ConfigError(
            f"[{unknown[0]}]: a {kind}'s file has no such table "
            f"(it reads {', '.join('[' + t + ']' for t in sorted(_TABLES[kind]))})"
        )
    if kind == "operator":
        _check_operator_table(tables)
    files, complete = _named_files(kind, path)
    missing = [{"key": key, "path": str(p)} for key, p in files.items() if not Path(p).exists()]
    # valid is null when a table can be checked only once the missing files exist.
    valid = True if complete else None
    print(json.dumps({"config": str(path), "kind": kind, "valid": valid, "missing": missing}))
    return EXIT_FILES_MISSING if missing else EXIT_OK


def _check_operator_table(tables: dict[str, Any]) -> None:
    """[operator] as :func:`fedmatch.cli.common.load_operator` checks it."""
    from fedmatch.requester.officer import check_operator_table

    check_operator_table(tables)
