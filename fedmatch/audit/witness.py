"""A node witnessing the coordinator's log, and checking that a request is on its record.

Witness (C2SP tlog-witness, over gRPC): the node cosigns a coordinator checkpoint only after
checking its signature and a consistency proof against the latest checkpoint it cosigned, so
the coordinator cannot show the node one history and an auditor another. A checkpoint that
fails is kept as evidence (both signed notes and the proof) and refused. Older checkpoints
may arrive late (concurrent lookups); they are accepted when proved to be prefixes of the
latest, so every verified checkpoint lies on one chain.

Authorization: a search (or a hit-details request) carries the coordinator's signed entry
for it, with an inclusion proof in a checkpoint this node has verified. No verified
checkpoint containing the entry, no work: no search can happen off the record.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedmatch.audit.entry import MAX_ENTRY_BYTES, SignedEntry
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from fedmatch.audit.note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    Signature,
    cosign,
    open_checkpoint,
)
from fedmatch.errors import InvalidInput, PermissionDenied, PreconditionFailed

__all__ = ["Authorization", "Witness", "WitnessAnswer"]

log = logging.getLogger("fedmatch.audit.witness")

# Verified sizes kept for late (smaller) checkpoints and for authorizations in flight.
_KEEP_VERIFIED = 4096
_MAX_PROOF = 64


@dataclass(frozen=True)
class Authorization:
    """A coordinator entry, its index and its inclusion proof in a tree of ``tree_size``."""

    entry: bytes
    index: int
    tree_size: int
    proof: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.entry:
            raise PermissionDenied("request carries no coordinator log entry (not on record)")
        if len(self.entry) > MAX_ENTRY_BYTES:
            raise InvalidInput(f"authorization entry exceeds {MAX_ENTRY_BYTES} bytes")
        if len(self.proof) > _MAX_PROOF or any(len(h) != HASH_SIZE for h in self.proof):
            raise InvalidInput("authorization inclusion proof is malformed")


@dataclass(frozen=True)
class WitnessAnswer:
    conflict: bool
    witnessed_size: int
    cosignature: Signature | None


class Witness:
    """This node's view of the coordinator's log; persisted in ``state_file``."""

    def __init__(
        self,
        state_file: Path,
        evidence_dir: Path,
        log_verifier: NoteVerifier,
        origin: str,
        signer: NoteSigner,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state_file = state_file
        self._evidence_dir = evidence_dir
        self._verifier = log_verifier
        self.origin = origin
        self._signer = signer
        self._clock = clock
        self._lock = threading.Lock()
        self._latest_note: bytes | None = None
        self._latest: Checkpoint | None = None
        self._verified: OrderedDict[int, bytes] = OrderedDict()
        self._load()

    # -- state -------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            state = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return
        note = base64.b64decode(state["latest_note"])
        # Our own state file is re-verified like any input: a tampered file must not make
        # this node accept a history it never checked.
        self._latest, _ = open_checkpoint(note, self._verifier, self.origin)
        self._latest_note = note
        # Only the signed latest checkpoint is trusted across a restart: a list of bare
        # (size, root) pairs could be edited into an invented history. The coordinator
        # re-witnesses the current checkpoint before every request, so nothing is lost.
        self._verified[self._latest.size] = self._latest.root

    def _save(self) -> None:
        assert self._latest_note is not None
        state = {"latest_note": base64.b64encode(self._latest_note).decode()}
        tmp = self._state_file.with_name(self._state_file.name + ".tmp")
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_file)

    @property
    def coordinator_key(self) -> bytes:
        """The raw Ed25519 key of the log this node witnesses."""
        return self._verifier.public_key_bytes()

    @property
    def witnessed_size(self) -> int:
        with self._lock:
            return self._latest.size if self._latest else 0

    def root_for(self, size: int) -> bytes | None:
        with self._lock:
            return self._verified.get(size)

    def _remember(self, checkpoint: Checkpoint) -> None:
        self._verified[checkpoint.size] = checkpoint.root
        self._verified.move_to_end(checkpoint.size)
        while len(self._verified) > _KEEP_VERIFIED:
            oldest = next(iter(self._verified))
            if self._latest is not None and oldest == self._latest.size:
                self._verified.move_to_end(oldest)
                continue
            del self._verified[oldest]

    # -- witnessing --------------------------------------------------------------------

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: bytes) -> WitnessAnswer:
        try:
            checkpoint, _ = open_checkpoint(note, self._verifier, self.origin)
        except AuditVerificationError as exc:
            raise PermissionDenied(f"checkpoint is not the coordinator's: {exc}") from None
        if len(proof) > _MAX_PROOF or any(len(h) != HASH_SIZE for h in proof):
            raise InvalidInput("consistency proof is malformed")
        with self._lock:
            latest = self._latest
            if latest is None:
                # First contact: nothing to be consistent with (trust on first use, as for
                # any witness). The size is kept from now on.
                if old_size != 0:
                    return WitnessAnswer(True, 0, None)
                self._latest, self._latest_note = checkpoint, note
                self._remember(checkpoint)
                self._save()
            elif old_size != latest.size:
                return WitnessAnswer(True, latest.size, None)
            else:
                self._check_against(latest, checkpoint, note, proof)
            size = self._latest.size if self._latest else 0
        signature = cosign(checkpoint.body(), self._signer, int(self._clock()))
        return WitnessAnswer(False, size, signature)

    def _check_against(
        self, latest: Checkpoint, new: Checkpoint, note: bytes, proof: Sequence[bytes]
    ) -> None:
        known = self._verified.get(new.size)
        try:
            if known is not None:
                if known != new.root:
                    raise AuditVerificationError(
                        f"two checkpoints of size {new.size} with different roots (a fork)"
                    )
                return
            if new.size > latest.size:
                if latest.size == 0:
                    if proof:
                        raise AuditVerificationError("proof from an empty tree must be empty")
                else:
                    verify_consistency(latest.size, new.size, proof, latest.root, new.root)
                self._latest, self._latest_note = new, note
            elif new.size == 0:
                if new.root != EMPTY_ROOT:
                    raise AuditVerificationError("an empty tree has the empty root")
            else:
                verify_consistency(new.size, latest.size, proof, new.root, latest.root)
        except AuditVerificationError as exc:
            self._keep_evidence(note, proof, str(exc))
            raise PreconditionFailed(
                f"coordinator checkpoint of size {new.size} is not consistent with the one of "
                f"size {latest.size} this node cosigned; evidence kept"
            ) from None
        self._remember(new)
        if self._latest is new:
            self._save()

    def _keep_evidence(self, note: bytes, proof: Sequence[bytes], reason: str) -> None:
        self._evidence_dir.mkdir(parents=True, exist_ok=True)
        stamp = int(self._clock() * 1000)
        path = self._evidence_dir / f"{stamp}-coordinator-inconsistent.json"
        n = 1
        while path.exists():  # two refusals in one millisecond: keep both (under self._lock)
            path = self._evidence_dir / f"{stamp}-{n}-coordinator-inconsistent.json"
            n += 1
        evidence = {
            "reason": reason,
            "cosigned_checkpoint": (self._latest_note or b"").decode(),
            "presented_checkpoint": note.decode(errors="replace"),
            "consistency_proof": [base64.b64encode(h).decode() for h in proof],
        }
        path.write_text(json.dumps(evidence, indent=2))
        log.error("coordinator checkpoint refused, evidence in %s: %s", path, reason)

    # -- authorizations ----------------------------------------------------------------

    def check(self, auth: Authorization) -> SignedEntry:
        """The coordinator's entry, if it is included in a checkpoint verified here."""
        root = self.root_for(auth.tree_size)
        if root is None:
            raise PermissionDenied(
                f"not on record: no verified coordinator checkpoint of size {auth.tree_size}"
            )
        try:
            verify_inclusion(leaf_hash(auth.entry), auth.index, auth.tree_size, auth.proof, root)
            entry = SignedEntry.decode(auth.entry)
            entry.verify(self._verifier)
        except AuditVerificationError as exc:
            raise PermissionDenied(f"not on record: {exc}") from None
        if entry.seq != auth.index or entry.party != self.origin:
            raise PermissionDenied("not on record: the entry's index or log does not match")
        return entry
