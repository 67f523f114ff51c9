"""``fedmatch node status`` / ``fedmatch coordinator status``: what an operator asks first.

One JSON object: is the server up (the health check of :mod:`fedmatch.ops.health`, over mTLS
with the party's own certificate from its TOML file), the register (records, model, and its
reconciliation with the audit log: every row has its enrolment entry, no row of an erased
record is left, :mod:`node.reconcile`), the audit log (entries, bytes, last checkpoint and
its age, and whether the log verifies against that signed checkpoint), key epochs and search
workers (read from the party's own ``/metrics`` when ``[metrics]`` is on), and where the
metrics are.

Everything local is read read-only, so it is safe while the party runs: the register is
opened with SQLite's ``mode=ro`` and the log is read as a file, never through
:class:`~fedmatch.audit.log.AuditLog` (which would open it for appending and may cut a torn
tail). The checkpoint is read before the log: a checkpoint covers only entries already in
the file, so a log growing meanwhile can never look shorter than its checkpoint.
"""

from __future__ import annotations

import sqlite3
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.log import CHECKPOINT_FILE, LOG_FILE, scan_records
from fedmatch.audit.merkle import MerkleTree, leaf_hash
from fedmatch.audit.note import NoteSigner, NoteVerifier, open_checkpoint
from fedmatch.audit.party import COORDINATOR_ORIGIN, AuditConfig, load_audit_config, node_origin
from fedmatch.errors import FedmatchError, InvalidInput
from fedmatch.ops.health import listen_target, server_health
from fedmatch.ops.metrics_http import load_metrics_config

__all__ = ["EXIT_UNHEALTHY", "Status", "coordinator_status", "node_status", "verify_log_files"]

# The command's exit code when any check failed (the JSON's "problems" say which).
EXIT_UNHEALTHY = 7


@dataclass
class Status:
    report: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {**self.report, "healthy": self.healthy, "problems": self.problems}


def verify_log_files(
    directory: Path, verifier_key: NoteSigner | str, origin: str
) -> dict[str, Any]:
    """Read-only check of the log in ``directory`` against its last signed checkpoint;
    raises AuditVerificationError naming what is wrong. Returns sizes and the age."""
    verifier = (
        verifier_key.verifier()
        if isinstance(verifier_key, NoteSigner)
        else NoteVerifier.from_vkey(verifier_key)
    )
    checkpoint_path = directory / CHECKPOINT_FILE
    try:
        note = checkpoint_path.read_bytes()
        age = max(0.0, time.time() - checkpoint_path.stat().st_mtime)
    except FileNotFoundError:
        raise AuditVerificationError(f"no checkpoint in {directory}") from None
    checkpoint, _ = open_checkpoint(note, verifier, origin)
    try:
        data = (directory / LOG_FILE).read_bytes()
    except FileNotFoundError:
        raise AuditVerificationError(f"no log file in {directory}") from None
    records, end = scan_records(data)
    tree = MerkleTree()
    tree.extend(leaf_hash(data[start : start + length]) for start, length in records)
    if checkpoint.size > len(tree):
        raise AuditVerificationError(
            f"the log has {len(tree)} readable entries, its checkpoint covers {checkpoint.size}"
        )
    if tree.root(checkpoint.size) != checkpoint.root:
        raise AuditVerificationError(
            f"the log's first {checkpoint.size} entries do not match the signed checkpoint"
        )
    return {
        "entries": len(tree),
        "bytes": len(data),
        "unreadable_tail_bytes": len(data) - end,
        "checkpoint_entries": checkpoint.size,
        "checkpoint_age_seconds": round(age, 3),
    }


def _audit_status(status: Status, config: AuditConfig, origin: str) -> None:
    try:
        signer = NoteSigner.load(config.signing_key)
        status.report["audit_log"] = {
            "directory": str(config.directory / "log"),
            **verify_log_files(config.directory / "log", signer, origin),
            "verifies": True,
        }
    except (FedmatchError, OSError) as exc:
        status.report["audit_log"] = {"directory": str(config.directory / "log"), "verifies": False}
        status.problems.append(f"audit log: {exc}")


def _scrape(listen: str, timeout: float) -> dict[str, float]:
    """The unlabelled gauges of the party's own /metrics (their names to values)."""
    url = f"http://{listen_target(listen)}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                out[sample.name] = sample.value
    return out


def _metrics_status(status: Status, config_path: Path, timeout: float) -> dict[str, float]:
    metrics = load_metrics_config(config_path)
    if not metrics.enabled:
        status.report["metrics"] = {"address": None}
        return {}
    try:
        values = _scrape(metrics.listen, timeout)
    except (OSError, urllib.error.URLError, ValueError, InvalidInput) as exc:
        status.report["metrics"] = {"address": metrics.listen, "reachable": False}
        status.problems.append(f"metrics endpoint {metrics.listen}: {type(exc).__name__}")
        return {}
    status.report["metrics"] = {"address": metrics.listen, "reachable": True}
    return values


def _server_status(
    status: Status, config_path: Path, listen: str, address: str | None, insecure: bool,
    timeout: float,
) -> None:  # fmt: skip
    """The standard health check of :mod:`fedmatch.ops.health` (the server must present the
    party's own certificate name)."""
    try:
        target = address or listen_target(listen)
    except InvalidInput as exc:
        status.report["server"] = {"address": listen, "health": "UNKNOWN_PORT"}
        status.problems.append(str(exc))
        return
    try:
        health = str(server_health(config_path, target, None, insecure, timeout).detail["status"])
    except grpc.RpcError as err:
        health = err.code().name
    status.report["server"] = {
        "address": target,
        "transport": "plaintext" if insecure else "mTLS",
        "health": health,
    }
    if health != "SERVING":
        status.problems.append(f"server at {target}: {health}")


def _register_status(status: Status, database: Path) -> None:
    from node.store import facial_image_count

    # mode=ro: never opened for writing, never created (a missing file is a problem).
    uri = database.resolve().as_uri() + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=5.0)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            (records,) = db.execute("SELECT COUNT(*) FROM records").fetchone()
            images = facial_image_count(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        status.report["register"] = {"path": str(database)}
        status.problems.append(f"register {database}: {type(exc).__name__}: {exc}")
        return
    status.report["register"] = {
        "path": str(database),
        "records": int(records),
        # Records an expert can check a hit on by image; the others were enrolled from a
        # template alone (bulk loads) and their hits say "not verifiable".
        "with_facial_image": int(images),
        "not_verifiable": int(records) - int(images),
        "model_id": meta.get("model_id"),
        "dimension": int(meta["dimension"]) if "dimension" in meta else None,
    }


def _reconciliation_status(
    status: Status, database: Path, log_dir: Path, member_state: str
) -> None:
    """The register compared with the audit log (node/reconcile.py): every row has its
    enrolment entry, no row is of an erased record, the counts agree. A mismatch is a
    problem naming how many rows and the first row ids (never anything else of a record)."""
    from node.reconcile import reconcile_files

    if "records" not in status.report.get("register", {}) or not status.report.get(
        "audit_log", {}
    ).get("verifies"):
        return  # the register or the log is unreadable: already a problem
    try:
        result = reconcile_files(database, log_dir, member_state)
    except (sqlite3.Error, OSError, ValueError) as exc:
        status.problems.append(f"register reconciliation: {type(exc).__name__}: {exc}")
        return
    status.report["register"]["reconciliation"] = result.as_json()
    for problem in result.problems():
        status.problems.append(f"register does not reconcile with the audit log: {problem}")


def node_status(
    config_path: Path, address: str | None = None, insecure: bool = False, timeout: float = 5.0
) -> Status:
    """The status of the node configured by ``config_path`` (configuration errors raise)."""
    from node.config import load_node_config

    cfg = load_node_config(config_path)
    audit = load_audit_config(config_path)
    status = Status({"role": "node", "member_state": cfg.member_state})
    _server_status(status, config_path, cfg.listen, address, insecure, timeout)
    _register_status(status, cfg.database)
    _audit_status(status, audit, node_origin(cfg.member_state))
    _reconciliation_status(status, cfg.database, audit.directory / "log", cfg.member_state)
    scraped = _metrics_status(status, config_path, timeout)
    live = scraped.get("fedmatch_key_epochs_live")
    status.report["key_epochs"] = {
        "live": int(live) if live is not None else None,
        "max": cfg.max_key_epochs,
        "epoch_seconds": cfg.key_epoch_seconds,
    }
    workers = scraped.get("fedmatch_search_workers")
    status.report["search_workers"] = int(workers) if workers is not None else None
    return status


def coordinator_status(
    config_path: Path, address: str | None = None, insecure: bool = False, timeout: float = 5.0
) -> Status:
    """The status of the coordinator configured by ``config_path``."""
    from coordinator.config import load_coordinator_config

    cfg = load_coordinator_config(config_path)
    audit = load_audit_config(config_path)
    status = Status({"role": "coordinator", "nodes": [n.member_state for n in cfg.nodes]})
    _server_status(status, config_path, cfg.listen, address, insecure, timeout)
    _audit_status(status, audit, COORDINATOR_ORIGIN)
    _metrics_status(status, config_path, timeout)
    _node_checks_status(
        status, audit.directory, [n.member_state for n in cfg.nodes], cfg.witness_interval_seconds
    )
    return status


def _node_checks_status(
    status: Status, audit_directory: Path, states: list[str], interval: float
) -> None:
    """The coordinator's latest check of each node (reachable, cosigning with the key its
    config names), from the file it rewrites with every witness round; a node not ``ok``,
    or checks older than three rounds, is a problem that names it."""
    from coordinator.nodecheck import node_checks_path, read_node_checks

    path = node_checks_path(audit_directory)
    try:
        at, checks = read_node_checks(path)
    except InvalidInput as exc:
        status.report["node_checks"] = None
        status.problems.append(f"node checks: {exc}")
        return
    age = max(0.0, time.time() - at.timestamp())
    status.report["node_checks"] = {
        "checked_at": at.isoformat(),
        "age_seconds": round(age, 1),
        "nodes": {s: {"state": c.state, "detail": c.detail} for s, c in checks.items()},
    }
    for state in states:
        check = checks.get(state)
        if check is None:
            status.problems.append(f"node {state}: not checked yet")
        elif not check.ok:
            status.problems.append(check.problem())
    # Three missed rounds (and a minute's slack): the checks no longer say how nodes are.
    if age > 3 * interval + 60:
        status.problems.append(f"node checks: last run {age:.0f} s ago (stale)")
