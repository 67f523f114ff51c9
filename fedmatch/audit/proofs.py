"""Portable audit evidence: entries as JSON, inclusion and consistency proofs, search bundles.

What ``fedmatch audit entries|proof|bundle`` print and what ``audit proof --verify`` and
``audit verify --bundle`` check, offline, in the manner of rekor-cli and Trillian clients:

* an entry as one JSON object (:func:`entry_json`): its party, index, time, kind, RFC 9162
  leaf hash and the event exactly as logged (entries hold digests, never personal data);
* an inclusion proof document: one entry's leaf bytes, its index, the audit path and the
  party's signed checkpoint it leads to;
* a consistency proof document: two tree sizes, the path between them, the signed checkpoint
  of the larger tree and, when the auditor has it, the signed one of the smaller;
* a search bundle: for one query id, every party's entries about it, each with its inclusion
  proof, each party's signed checkpoint and the ids of the keys that signed them.

Verification raises :class:`AuditVerificationError` naming the part that failed (party,
entry index, proof), and checks signatures only against keys the caller trusts (its
configuration or saved state), never against keys the document brings along, unless the
caller asks for that explicitly. A bundle proves that the entries it holds are in the logs
the parties signed; it cannot prove that a party logged nothing else about the query.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from fedmatch.audit.note import (
    Checkpoint,
    CosignatureVerifier,
    NoteVerifier,
    cosignatures,
    open_checkpoint,
)
from fedmatch.audit.party import COORDINATOR_ORIGIN
from fedmatch.audit.readers import PartyLog, party_name
from fedmatch.errors import InvalidInput

__all__ = [
    "BUNDLE_TYPE",
    "CONSISTENCY_TYPE",
    "INCLUSION_TYPE",
    "MAX_DOCUMENT_BYTES",
    "EntryFilter",
    "build_bundle",
    "bundle_keys",
    "consistency_document",
    "entry_json",
    "inclusion_document",
    "load_document",
    "parse_time",
    "verify_bundle",
    "verify_proof_document",
]

INCLUSION_TYPE = "fedmatch/inclusion-proof/v1"
CONSISTENCY_TYPE = "fedmatch/consistency-proof/v1"
BUNDLE_TYPE = "fedmatch/search-bundle/v1"
# A bundle is read whole; a search touches a few dozen entries of at most 16 KiB.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise AuditVerificationError(f"{what} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AuditVerificationError(f"{what} is not base64") from None


def entry_json(entry: SignedEntry) -> dict[str, Any]:
    """One entry as printed by ``audit entries``: metadata, leaf hash and the event."""
    return {
        "party": entry.party,
        "index": entry.seq,
        "time": entry.time,
        "time_ms": entry.unix_ms,
        "kind": entry.kind.value,
        "leaf_hash": leaf_hash(entry.raw).hex(),
        "key_id": entry.key_id.hex(),
        "event": entry.event.to_json(),
    }


def parse_time(value: str) -> int:
    """An ISO 8601 date or time (UTC unless it says otherwise), as Unix milliseconds."""
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"not an ISO 8601 date or time: {value[:40]!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


@dataclass(frozen=True)
class EntryFilter:
    """Which entries ``audit entries`` prints; an empty field does not filter."""

    kinds: frozenset[EventKind] = frozenset()
    query_id: str = ""
    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive

    def __post_init__(self) -> None:
        if self.since_ms is not None and self.until_ms is not None:
            if self.until_ms <= self.since_ms:
                raise InvalidInput("--until must be later than --since")

    @classmethod
    def from_args(
        cls, kinds: Iterable[str], query_id: str, since: str | None, until: str | None
    ) -> EntryFilter:
        chosen = set()
        for k in kinds:
            try:
                chosen.add(EventKind(k))
            except ValueError:
                known = ", ".join(e.value for e in EventKind)
                raise InvalidInput(f"unknown entry kind {k!r} (known: {known})") from None
        return cls(
            frozenset(chosen),
            query_id,
            parse_time(since) if since else None,
            parse_time(until) if until else None,
        )

    def matches(self, entry: SignedEntry) -> bool:
        if self.kinds and entry.kind not in self.kinds:
            return False
        if self.query_id and entry.event.query_id != self.query_id:
            return False
        if self.since_ms is not None and entry.unix_ms < self.since_ms:
            return False
        return self.until_ms is None or entry.unix_ms < self.until_ms


# -- proof documents ---------------------------------------------------------------------


def inclusion_document(log: PartyLog, index: int) -> dict[str, Any]:
    proof = log.inclusion_proof(index)
    raw = log.entries[index]
    return {
        "type": INCLUSION_TYPE,
        "origin": log.origin,
        "key_id": log.verifier.key_id.hex(),
        "index": index,
        "tree_size": log.checkpoint.size,
        "leaf_hash": leaf_hash(raw).hex(),
        "entry": _b64(raw),
        "hashes": [_b64(h) for h in proof],
        "checkpoint": log.note.decode(),
    }


def consistency_document(
    log: PartyLog, size1: int, size2: int | None = None, old_note: bytes | None = None
) -> dict[str, Any]:
    """Proof from ``size1`` to ``size2`` (default: the signed size). ``old_note``: a signed
    checkpoint of size ``size1`` (e.g. one the auditor accepted before) to include."""
    size2 = log.checkpoint.size if size2 is None else size2
    proof = log.consistency_proof(size1, size2)
    if old_note is not None:
        old, _ = open_checkpoint(old_note, log.verifier, log.origin)
        if old.size != size1 or old.root != log.root(size1):
            raise AuditVerificationError(
                f"{log.origin}: the older checkpoint (size {old.size}) is not the tree of "
                f"size {size1} that the current log holds"
            )
    return {
        "type": CONSISTENCY_TYPE,
        "origin": log.origin,
        "key_id": log.verifier.key_id.hex(),
        "size1": size1,
        "size2": size2,
        "root1": _b64(log.root(size1)),
        "root2": _b64(log.root(size2)),
        "hashes": [_b64(h) for h in proof],
        "checkpoint": log.note.decode(),
        "old_checkpoint": old_note.decode() if old_note is not None else None,
    }


def _trusted(origin: object, verifiers: Mapping[str, NoteVerifier], where: str) -> NoteVerifier:
    if not isinstance(origin, str) or origin not in verifiers:
        raise AuditVerificationError(f"{where}: no trusted verifier key for log {origin!r}")
    return verifiers[origin]


def _int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if type(value) is not int or value < 0:
        raise AuditVerificationError(f"{where}: {key} is missing or not a non-negative integer")
    return value


def _hashes(obj: Mapping[str, Any], where: str) -> list[bytes]:
    value = obj.get("hashes")
    if not isinstance(value, list):
        raise AuditVerificationError(f"{where}: hashes is missing")
    return [_unb64(h, f"{where}: proof hash {i}") for i, h in enumerate(value)]


def _checkpoint(obj: Mapping[str, Any], key: str, verifier: NoteVerifier, where: str) -> Checkpoint:
    text = obj.get(key)
    if not isinstance(text, str):
        raise AuditVerificationError(f"{where}: {key} is missing")
    try:
        checkpoint, _ = open_checkpoint(text.encode(), verifier, verifier.name)
    except AuditVerificationError as exc:
        raise AuditVerificationError(f"{where}: {key} does not verify: {exc}") from None
    return checkpoint


def _check_inclusion(
    item: Mapping[str, Any], checkpoint: Checkpoint, verifier: NoteVerifier, where: str
) -> SignedEntry:
    """One entry with its proof against a verified checkpoint: the entry's signature, index
    and party, the leaf hash and the audit path. Returns the decoded entry."""
    raw = _unb64(item.get("entry"), f"{where}: entry")
    index = _int(item, "index", where)
    size = item.get("tree_size", checkpoint.size)
    if size != checkpoint.size:
        raise AuditVerificationError(
            f"{where}: proof is for a tree of size {size}, the checkpoint is of size "
            f"{checkpoint.size}"
        )
    try:
        entry = SignedEntry.decode(raw)
        entry.verify(verifier)
    except AuditVerificationError as exc:
        raise AuditVerificationError(f"{where}: {exc}") from None
    if entry.seq != index or entry.party != verifier.name:
        raise AuditVerificationError(
            f"{where}: entry says index {entry.seq} of {entry.party[:60]!r}, "
            f"not index {index} of {verifier.name}"
        )
    leaf = leaf_hash(raw)
    if "leaf_hash" in item and item["leaf_hash"] != leaf.hex():
        raise AuditVerificationError(f"{where}: leaf_hash is not the hash of the entry")
    try:
        verify_inclusion(leaf, index, checkpoint.size, _hashes(item, where), checkpoint.root)
    except AuditVerificationError as exc:
        raise AuditVerificationError(f"{where}: {exc}") from None
    return entry


def verify_proof_document(
    doc: Mapping[str, Any], verifiers: Mapping[str, NoteVerifier]
) -> dict[str, Any]:
    """Check an inclusion or consistency proof document offline; what it shows, as JSON."""
    kind = doc.get("type")
    origin = doc.get("origin")
    verifier = _trusted(origin, verifiers, "proof")
    where = f"{verifier.name} proof"
    if kind == INCLUSION_TYPE:
        where += f", entry {doc.get('index')}"
    checkpoint = _checkpoint(doc, "checkpoint", verifier, where)
    if kind == INCLUSION_TYPE:
        entry = _check_inclusion(doc, checkpoint, verifier, where)
        return {
            "verified": True,
            "type": kind,
            "origin": verifier.name,
            "index": entry.seq,
            "tree_size": checkpoint.size,
            "shows": f"entry {entry.seq} ({entry.kind.value}, {entry.time}) is in the log "
            f"{verifier.name} signed at size {checkpoint.size}",
            "entry": entry_json(entry),
        }
    if kind != CONSISTENCY_TYPE:
        raise AuditVerificationError(f"proof: unknown document type {str(kind)[:60]!r}")
    size1, size2 = _int(doc, "size1", where), _int(doc, "size2", where)
    if size2 != checkpoint.size:
        raise AuditVerificationError(
            f"{where}: size2 {size2} is not the signed checkpoint's size {checkpoint.size}"
        )
    old_signed = doc.get("old_checkpoint") is not None
    if old_signed:
        old = _checkpoint(doc, "old_checkpoint", verifier, where)
        if old.size != size1:
            raise AuditVerificationError(
                f"{where}: old_checkpoint is of size {old.size}, not size1 {size1}"
            )
        root1 = old.root
    else:
        root1 = _unb64(doc.get("root1"), f"{where}: root1")
    try:
        verify_consistency(size1, size2, _hashes(doc, where), root1, checkpoint.root)
    except AuditVerificationError as exc:
        raise AuditVerificationError(f"{where}: {exc}") from None
    shows = f"the log {verifier.name} signed at size {size2} extends "
    shows += (
        f"the one it signed at size {size1}"
        if old_signed
        else f"the tree of size {size1} with root {_b64(root1)} (that root is not signed "
        "here: compare it with a checkpoint you hold)"
    )
    return {
        "verified": True,
        "type": kind,
        "origin": verifier.name,
        "size1": size1,
        "size2": size2,
        "old_checkpoint_signed": old_signed,
        "shows": shows,
    }


# -- search bundles ----------------------------------------------------------------------


def build_bundle(query_id: str, logs: Sequence[PartyLog]) -> dict[str, Any]:
    """Every party's entries about ``query_id``, each with its inclusion proof."""
    if not query_id:
        raise InvalidInput("a bundle needs a query id")
    parties = []
    for log in logs:
        items = []
        for entry in log.decoded:
            if entry.event.query_id == query_id:
                items.append(
                    {
                        "index": entry.seq,
                        "leaf_hash": leaf_hash(entry.raw).hex(),
                        "entry": _b64(entry.raw),
                        "hashes": [_b64(h) for h in log.inclusion_proof(entry.seq)],
                    }
                )
        if not items:
            # A checkpoint alone would claim nothing: a bundle cannot show an absence.
            continue
        parties.append(
            {
                "origin": log.origin,
                "key_id": log.verifier.key_id.hex(),
                # Given for convenience only: verification uses the keys the verifier trusts.
                "verifier_key": log.verifier.vkey(),
                "tree_size": log.checkpoint.size,
                "checkpoint": log.note.decode(),
                "entries": items,
            }
        )
    if not parties:
        raise InvalidInput(f"no log holds an entry about query {query_id[:80]!r}")
    return {"type": BUNDLE_TYPE, "query_id": query_id, "parties": parties}


def bundle_keys(bundle: Mapping[str, Any]) -> dict[str, NoteVerifier]:
    """The verifier keys a bundle carries (only for ``--trust-bundle-keys``)."""
    out: dict[str, NoteVerifier] = {}
    for p in bundle.get("parties", []) if isinstance(bundle.get("parties"), list) else []:
        try:
            v = NoteVerifier.from_vkey(p.get("verifier_key", ""))
        except (AuditVerificationError, InvalidInput, AttributeError):
            continue
        out[v.name] = v
    return out


def verify_bundle(
    bundle: Mapping[str, Any], verifiers: Mapping[str, NoteVerifier]
) -> dict[str, Any]:
    """Check a search bundle offline; raises on the first part that fails. Returns what the
    bundle shows: per party, the query's entries in order, and the witnesses of the
    coordinator's checkpoint among the trusted node keys."""
    if bundle.get("type") != BUNDLE_TYPE:
        raise AuditVerificationError("bundle: not a fedmatch search bundle")
    query_id = bundle.get("query_id")
    parties = bundle.get("parties")
    if not isinstance(query_id, str) or not query_id or not isinstance(parties, list):
        raise AuditVerificationError("bundle: query_id or parties missing")
    shown: dict[str, Any] = {}
    timeline: list[SignedEntry] = []
    for i, party in enumerate(parties):
        if not isinstance(party, dict):
            raise AuditVerificationError(f"bundle: party {i} is malformed")
        verifier = _trusted(party.get("origin"), verifiers, f"bundle party {i}")
        where = f"bundle, {verifier.name}"
        if verifier.name in shown:
            raise AuditVerificationError(f"{where}: the log appears twice")
        if party.get("key_id") not in (None, verifier.key_id.hex()):
            raise AuditVerificationError(
                f"{where}: signed by key {str(party.get('key_id'))[:16]}, trusted key is "
                f"{verifier.key_id.hex()}"
            )
        checkpoint = _checkpoint(party, "checkpoint", verifier, where)
        items = party.get("entries")
        if not isinstance(items, list):
            raise AuditVerificationError(f"{where}: entries missing")
        kinds = []
        for item in items:
            if not isinstance(item, dict):
                raise AuditVerificationError(f"{where}: an entry is malformed")
            entry = _check_inclusion(
                item, checkpoint, verifier, f"{where}, entry {item.get('index')}"
            )
            if entry.event.query_id != query_id:
                raise AuditVerificationError(f"{where}: entry {entry.seq} is about another query")
            kinds.append(f"{entry.seq}:{entry.kind.value}")
            timeline.append(entry)
        shown[verifier.name] = {
            "tree_size": checkpoint.size,
            "key_id": verifier.key_id.hex(),
            "entries": kinds,
        }
    if not timeline:
        raise AuditVerificationError("bundle: no entries")
    coordinator = next((p for p in parties if p.get("origin") == COORDINATOR_ORIGIN), None)
    if coordinator is not None:
        witnesses = [
            CosignatureVerifier.from_public_key(v.name, v.public_key_bytes())
            for v in verifiers.values()
            if v.name != COORDINATOR_ORIGIN
        ]
        verifier = verifiers[COORDINATOR_ORIGIN]
        _, note = open_checkpoint(coordinator["checkpoint"].encode(), verifier, verifier.name)
        shown[COORDINATOR_ORIGIN]["witnesses"] = sorted(cosignatures(note, witnesses))
    timeline.sort(key=lambda e: (e.unix_ms, e.party, e.seq))
    return {
        "verified": True,
        "query_id": query_id,
        "parties": shown,
        "timeline": [
            f"{e.time} {party_name(e.party)} {e.kind.value}"
            + (f" outcome={e.event.outcome}" if e.event.outcome else "")
            + (f" registers={','.join(e.event.registers)}" if e.event.registers else "")
            for e in timeline
        ],
        "shows": (
            f"{len(timeline)} entries about query {query_id} are in the logs "
            f"{', '.join(shown)} signed (each entry signed by its party and included in "
            "the party's signed checkpoint); a bundle cannot show that a party logged "
            "nothing else about the query"
        ),
    }


def load_document(data: bytes, what: str) -> dict[str, Any]:
    """A proof or bundle file's JSON object; malformed files fail verification."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise AuditVerificationError(f"{what} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise AuditVerificationError(f"{what} is not JSON") from None
    if not isinstance(obj, dict):
        raise AuditVerificationError(f"{what} is not a JSON object")
    return obj
