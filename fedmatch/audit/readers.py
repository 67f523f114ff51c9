"""An auditor's verified view of one party's log, read live or from the auditor's own copy.

:class:`PartyLog` is what the auditor's tools (``fedmatch audit entries|proof|bundle``) work
on: a signed checkpoint that verified against the party's key, every entry of that tree (their
Merkle root recomputed and compared with the signed one, each entry's signature, index and
party checked) and proofs for it. It is opened either

* live (:func:`open_live`): from the party's AuditService, with the auditor's signed
  requests; the party's own inclusion and consistency proofs are verified before use; or
* offline (:func:`open_local`): from the copy ``fedmatch audit verify`` kept in the
  auditor's state directory (``<state_dir>/<origin>/``); proofs are computed from the
  verified entries. No network is needed, so this works after the parties are gone (the
  demo's federation, a decommissioned node).

Which keys are trusted comes from the auditor's configuration or, offline, from the key file
``audit verify`` writes next to each accepted checkpoint (:func:`local_verifiers`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedmatch.audit.auditor import PartyState
from fedmatch.audit.client import AuditClient
from fedmatch.audit.entry import SignedEntry
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from fedmatch.audit.note import Checkpoint, NoteVerifier, open_checkpoint
from fedmatch.audit.party import COORDINATOR_ORIGIN
from fedmatch.errors import InvalidInput

__all__ = [
    "KEY_FILE",
    "PartyLog",
    "local_verifiers",
    "open_live",
    "open_local",
    "party_name",
]

# The party's verifier key, written by `audit verify` next to the checkpoint it accepted.
KEY_FILE = "vkey"
_NODE_PREFIX = "fedmatch/node/"


def party_name(origin: str) -> str:
    """``coordinator`` or the member state code of a log origin."""
    if origin == COORDINATOR_ORIGIN:
        return "coordinator"
    return origin.removeprefix(_NODE_PREFIX)


@dataclass
class PartyLog:
    """One party's log as far as its signed checkpoint goes, every entry verified."""

    verifier: NoteVerifier
    note: bytes  # the signed checkpoint (C2SP note, with any cosignatures)
    checkpoint: Checkpoint
    entries: list[bytes]
    # Proofs from the party itself (live), or None to compute them from the entries.
    fetch_inclusion: Callable[[int, int], list[bytes]] | None = None
    fetch_consistency: Callable[[int, int], list[bytes]] | None = None
    _tree: MerkleTree = field(default_factory=MerkleTree, repr=False)
    _decoded: list[SignedEntry] = field(default_factory=list, repr=False)

    @property
    def origin(self) -> str:
        return self.checkpoint.origin

    @property
    def name(self) -> str:
        return party_name(self.origin)

    @property
    def decoded(self) -> list[SignedEntry]:
        return self._decoded

    def check(self) -> None:
        """Recompute the tree and check every entry; raises AuditVerificationError."""
        if len(self.entries) != self.checkpoint.size:
            raise AuditVerificationError(
                f"{self.origin}: {len(self.entries)} entries for a signed tree of size "
                f"{self.checkpoint.size}"
            )
        self._tree = MerkleTree()
        self._tree.extend(leaf_hash(e) for e in self.entries)
        if self._tree.root() != self.checkpoint.root:
            raise AuditVerificationError(
                f"{self.origin}: the entries do not make the signed tree of size "
                f"{self.checkpoint.size}"
            )
        self._decoded = []
        for i, raw in enumerate(self.entries):
            entry = SignedEntry.decode(raw)
            entry.verify(self.verifier)
            if entry.seq != i or entry.party != self.origin:
                raise AuditVerificationError(
                    f"{self.origin}: entry at {i} says index {entry.seq} of another party"
                )
            self._decoded.append(entry)

    def index_of(self, leaf: bytes) -> int:
        """The index of the entry whose RFC 9162 leaf hash is ``leaf``."""
        for i in range(len(self._tree)):
            if self._tree.leaf(i) == leaf:
                return i
        raise InvalidInput(f"no entry of {self.origin} has that leaf hash")

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Proof of entry ``index`` in the signed tree, checked before it is returned."""
        size = self.checkpoint.size
        if not 0 <= index < size:
            raise InvalidInput(f"{self.origin} has no entry {index} (tree of size {size})")
        if self.fetch_inclusion is not None:
            proof = self.fetch_inclusion(index, size)
        else:
            proof = self._tree.inclusion_proof(index, size)
        verify_inclusion(self._tree.leaf(index), index, size, proof, self.checkpoint.root)
        return proof

    def root(self, size: int) -> bytes:
        if not 0 <= size <= self.checkpoint.size:
            raise InvalidInput(f"{self.origin}: no tree of size {size} (signed size is "
                               f"{self.checkpoint.size})")  # fmt: skip
        return self._tree.root(size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Proof that the tree of ``size2`` extends the one of ``size1``, checked."""
        if not 0 < size1 <= size2 <= self.checkpoint.size:
            raise InvalidInput(
                f"consistency needs 0 < size1 <= size2 <= {self.checkpoint.size} "
                f"(the signed size of {self.origin}), got {size1} and {size2}"
            )
        if self.fetch_consistency is not None and size1 != size2:
            proof = self.fetch_consistency(size1, size2)
        else:
            proof = self._tree.consistency_proof(size1, size2)
        verify_consistency(size1, size2, proof, self.root(size1), self.root(size2))
        return proof


def open_live(client: AuditClient, verifier: NoteVerifier) -> PartyLog:
    """The party's current log: a fresh signed checkpoint and every entry it covers."""
    note = client.checkpoint(fresh=True)
    checkpoint, _ = open_checkpoint(note, verifier, verifier.name)
    log = PartyLog(
        verifier,
        note,
        checkpoint,
        client.entries(0, checkpoint.size),
        client.inclusion_proof,
        client.consistency_proof,
    )
    log.check()
    return log


def open_local(state_dir: Path, verifier: NoteVerifier) -> PartyLog:
    """The copy of the party's log this auditor verified last (``fedmatch audit verify``)."""
    state = PartyState(state_dir, verifier.name)
    note = state.checkpoint()
    if note is None:
        raise InvalidInput(
            f"no verified copy of {verifier.name} in {state_dir}: run `fedmatch audit verify`"
        )
    checkpoint, _ = open_checkpoint(note, verifier, verifier.name)
    log = PartyLog(verifier, note, checkpoint, state.entries())
    log.check()
    return log


def local_verifiers(state_dir: Path) -> list[NoteVerifier]:
    """The verifier keys ``audit verify`` saved with the checkpoints in ``state_dir``."""
    if not state_dir.is_dir():
        raise InvalidInput(f"auditor state directory {state_dir} does not exist")
    found: list[NoteVerifier] = []
    for path in sorted(state_dir.glob(f"*/{KEY_FILE}")):
        try:
            found.append(NoteVerifier.from_vkey(path.read_text().strip()))
        except (AuditVerificationError, InvalidInput):
            raise InvalidInput(f"{path} is not a verifier key") from None
    if not found:
        raise InvalidInput(
            f"no party keys in {state_dir} (run `fedmatch audit verify` once with this "
            "version, or pass --config with --offline)"
        )
    return found
