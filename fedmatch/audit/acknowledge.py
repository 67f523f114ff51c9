"""``fedmatch audit accept-restore``: an auditor acknowledges a node's announced restore.

The node's restore announcement (:mod:`fedmatch.audit.restores`) is checked against the
party's key from the auditor's configuration, then against what this auditor verified
itself: the backup's signed checkpoint must be a prefix of the party's history in the
auditor's state (the Merkle root of the first N saved entries is recomputed and compared).
Only then is the state replaced, in this order:

1. ``<state_dir>/restores/<party>-<time>/`` gets a copy of the announcement, the new state
   (the backup's checkpoint and the first N entries) and the acknowledgement signed with
   the auditor's own key;
2. the old state is moved there (``previous/``, kept as evidence: the entries the restore
   dropped, as this auditor verified them) and the new one renamed into its place.

``audit verify`` then compares the party's log with the backup's checkpoint: the restored
log extends it, and a later rollback or fork is reported as before. Each auditor, peers
included, acknowledges for itself.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from fedmatch.audit.auditor import AuditorConfig, PartyState
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.merkle import MerkleTree, leaf_hash
from fedmatch.audit.note import NoteSigner, open_checkpoint
from fedmatch.audit.restores import (
    ACKNOWLEDGEMENT_FILE,
    ANNOUNCEMENT_COPY,
    PREVIOUS_STATE,
    RESTORES,
    announced_origin,
    load_acknowledged,
    make_acknowledgement,
    open_announcement,
)
from fedmatch.errors import ConfigError, InvalidInput
from fedmatch.fileio import fsync_directory, write_atomically

__all__ = ["accept_restore"]

_MAX_BYTES = 1 << 20


def accept_restore(
    config: AuditorConfig, announcement_path: Path, state_dir: Path | None = None
) -> dict[str, Any]:
    """Check the announcement and make its backup checkpoint this auditor's accepted state
    of the party; raises :class:`AuditVerificationError` when it is not to be trusted and
    :class:`InvalidInput` when there is nothing to acknowledge. What was done, as JSON."""
    state_dir = state_dir or config.state_dir
    signer = NoteSigner.load(config.signing_key)
    if signer.name != config.name:
        raise ConfigError(f"auditor.signing_key is named {signer.name!r}, not {config.name!r}")
    try:
        with announcement_path.open("rb") as fh:
            data = fh.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read {announcement_path}: {exc.strerror}") from None
    origin = announced_origin(data)
    party = next((p for p in config.nodes if p.origin == origin), None)
    if party is None:
        raise AuditVerificationError(
            f"the announcement is of {origin[:80]!r}, not of a node this auditor audits "
            f"({', '.join(p.origin for p in config.nodes)})"
        )
    announcement = open_announcement(data, party.verifier)

    acknowledged, _ = load_acknowledged(state_dir, signer.verifier())
    for ack in acknowledged.get(origin, []):
        if ack.announcement_sha256 == announcement.sha256:
            return {
                "accepted": True,
                "already_acknowledged": True,
                "party": origin,
                "acknowledgement": str(ack.path),
                "previous_state": str(ack.path.parent / PREVIOUS_STATE),
            }

    state = PartyState(state_dir, origin)
    note = state.checkpoint()
    if note is None:
        raise InvalidInput(
            f"this auditor holds no verified history of {origin} in {state_dir}: nothing to "
            "acknowledge (`audit verify` checks the restored log as it is)"
        )
    saved, _ = open_checkpoint(note, party.verifier, origin)
    entries = state.entries()
    tree = MerkleTree()
    tree.extend(leaf_hash(e) for e in entries)
    if len(entries) < saved.size or tree.root(saved.size) != saved.root:
        raise AuditVerificationError(
            f"the saved state of {origin} in {state_dir} does not match its own checkpoint "
            "(damaged): nothing is accepted"
        )
    backup = announcement.backup_checkpoint
    if backup.size > saved.size:
        raise InvalidInput(
            f"this auditor verified {saved.size} entries of {origin}, fewer than the backup's "
            f"checkpoint ({backup.size}): nothing to acknowledge (`audit verify` checks that "
            "the restored log extends what it verified)"
        )
    if backup.size and tree.root(backup.size) != backup.root:
        raise AuditVerificationError(
            f"the backup's checkpoint of {origin} (size {backup.size}) is not a prefix of the "
            f"history this auditor verified (size {saved.size}): refused. The backup is of "
            "another history than the one auditors saw"
        )

    restored = announcement.restored_checkpoint
    if saved.size >= restored.size and tree.root(restored.size) == restored.root:
        raise InvalidInput(
            f"the history of {origin} this auditor verified ({saved.size} entries) already "
            f"extends the restored log ({restored.size}): nothing to acknowledge"
        )

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    directory = state_dir / RESTORES / f"{state.directory.name}-{stamp}"
    n = 1
    while directory.exists():
        n += 1
        directory = state_dir / RESTORES / f"{state.directory.name}-{stamp}-{n}"
    directory.mkdir(parents=True, mode=0o700)
    write_atomically(directory / ANNOUNCEMENT_COPY, data)
    fresh = PartyState(directory / "accepted", origin)
    fresh.save(announcement.backup_note, entries[: backup.size], party.key)
    signed = make_acknowledgement(signer, announcement, note, int(time.time()))
    write_atomically(directory / ACKNOWLEDGEMENT_FILE, signed)
    previous = directory / PREVIOUS_STATE
    os.replace(state.directory, previous)
    os.replace(fresh.directory, state.directory)
    shutil.rmtree(directory / "accepted", ignore_errors=True)
    fsync_directory(state_dir)
    fsync_directory(directory)
    return {
        "accepted": True,
        "party": origin,
        "announcement_sha256": announcement.sha256,
        "backup_checkpoint_size": backup.size,
        "previous_checkpoint_size": saved.size,
        "entries_dropped": saved.size - backup.size,
        "restored_checkpoint_size": restored.size,
        "acknowledgement": str(directory / ACKNOWLEDGEMENT_FILE),
        "previous_state": str(previous),
        "lost": announcement.lost,
    }
