"""What a node's audit log says about its register, and the node's signed reconciliations.

A node logs every record that enters or leaves its register:

- ``record_enrolled``: label ``record`` (the row id) and ``record_digest`` (the digest of the
  record's reference, :func:`fedmatch.domain.reference_digest`; entries written before that
  label existed name the row id only);
- ``records_seeded`` (``fedmatch node seed``: synthetic records): counts ``added`` and
  ``records`` (the register's size after), labels ``first_record`` and ``last_record`` (the
  row ids they got). Entries written before those labels existed have the counts only;
  seeding numbers its references ``<state>-SYN-<n>`` from the register's size before it
  (:func:`fedmatch.demo.seed.seed_register`), so those counts name the references added:
  ``records - added`` to ``records - 1`` (:class:`SeededRange`);
- ``record_erased``: label ``record_digest``. The erasure of a row that had no standing
  enrolment (one the reconciliation found unlogged, or a row left after its record's
  logged erasure) says so in label ``register_row``: it does not cancel an enrolment.

The node compares its register with its log at start, in ``node status``, and whenever its
register changed (node/reconcile.py): each row must have its enrolment entry (or lie in a
seeded range and be synthetic), no row may be of a record whose erasure is logged, and the
records the log accounts for (enrolled + seeded - erased) must be the rows that are logged.
It signs the outcome as a ``register_reconciled`` entry (:func:`reconciled_event`): the
counts, the digest of the register's references (:func:`register_digest`) and the first row
ids of each kind of mismatch (row ids only, never a reference or anything of a record).

An auditor (:func:`check_reconciled`) recounts the log up to the node's latest such entry:
the records it accounts for must agree with the entry's count of logged rows (a node that
misstates its register is found), and an entry that says the register does not reconcile is
itself a finding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fedmatch.audit.entry import AuditEvent, EventKind, SignedEntry
from fedmatch.audit.log import scan_records

__all__ = [
    "ERASED_ROW",
    "FIRST_ROWS",
    "SEED_OPERATOR",
    "UNLOGGED_ROW",
    "LogLedger",
    "ReconciledCheck",
    "ReconciledEntry",
    "Reconciliation",
    "SeededRange",
    "check_reconciled",
    "digest_of_sorted",
    "reconciled_event",
    "register_digest",
    "synthetic_prefix",
]

# The values of a remedial erasure's ``register_row`` label (see the module docstring).
UNLOGGED_ROW = "unlogged"
ERASED_ROW = "already_erased"

# The operator id of every record `node seed` adds; with the ``<state>-SYN-`` reference
# (:func:`synthetic_prefix`), what tells a synthetic record from a real one.
SEED_OPERATOR = "seed"


def synthetic_prefix(member_state: str) -> str:
    """The reference prefix of a synthetic record; its number follows (8 digits)."""
    return f"{member_state}-SYN-"


_DIGEST_DOMAIN = b"fedmatch/register-references/v1\x00"
# Row ids named in a reconciliation entry's labels and in the start-up warning.
FIRST_ROWS = 8
# The entries a ledger reads; any other entry is skipped before it is parsed.
_KINDS = (
    EventKind.RECORD_ENROLLED,
    EventKind.RECORDS_SEEDED,
    EventKind.RECORD_ERASED,
    EventKind.REGISTER_RECONCILED,
)
_MARKERS = tuple(f'"kind":"{k.value}"'.encode() for k in _KINDS)


def register_digest(reference_digests: Iterable[bytes]) -> str:
    """SHA-256 (hex) over a register's 32-byte reference digests in ascending order, under
    its own domain prefix: what a ``register_reconciled`` entry commits to."""
    return digest_of_sorted(b"".join(sorted(reference_digests)))


def digest_of_sorted(concatenated: bytes) -> str:
    """:func:`register_digest` of digests already sorted and concatenated."""
    return hashlib.sha256(_DIGEST_DOMAIN + concatenated).hexdigest()


def _rows(rows: Sequence[int]) -> str:
    return ",".join(str(r) for r in rows[:FIRST_ROWS])


@dataclass(frozen=True)
class Reconciliation:
    """A register compared with its log. Row ids only: nothing else of a record."""

    records: int  # rows in the register
    digest: str  # register_digest of the rows' references
    accounted: int  # records the log accounts for: enrolled + seeded - erased
    unlogged_rows: tuple[int, ...] = ()  # rows without an enrolment entry
    erased_rows: tuple[int, ...] = ()  # rows of records whose erasure is logged

    @property
    def logged(self) -> int:
        """Rows that have their entry in the log (and no erasure after it)."""
        return self.records - len(self.unlogged_rows) - len(self.erased_rows)

    @property
    def missing(self) -> int:
        """Records the log accounts for that are not in the register (deleted unlogged)."""
        return max(0, self.accounted - self.logged)

    @property
    def unaccounted(self) -> int:
        """Logged rows beyond what the log accounts for (a row in a seeded range that the
        seeding did not add, e.g. after an erasure)."""
        return max(0, self.logged - self.accounted)

    @property
    def reconciled(self) -> bool:
        return not (self.unlogged_rows or self.erased_rows or self.missing or self.unaccounted)

    def problems(self) -> list[str]:
        """What does not reconcile, for an operator: counts and the first row ids."""
        out = []
        if self.unlogged_rows:
            n = len(self.unlogged_rows)
            out.append(
                f"{n} record{'s' if n != 1 else ''} without an enrolment entry in the audit log "
                f"(row id{'s' if n != 1 else ''} {_first(self.unlogged_rows)})"
            )
        if self.erased_rows:
            n = len(self.erased_rows)
            out.append(
                f"{n} row{'s' if n != 1 else ''} of erased records still in the register "
                f"(row id{'s' if n != 1 else ''} {_first(self.erased_rows)}): their erasure "
                "is logged"
            )
        if self.missing:
            out.append(
                f"{self.missing} logged record{'s' if self.missing != 1 else ''} missing from "
                "the register with no erasure entry"
            )
        if self.unaccounted:
            out.append(
                f"{self.unaccounted} row{'s' if self.unaccounted != 1 else ''} more than the "
                "log accounts for (enrolled + seeded - erased)"
            )
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "reconciled": self.reconciled,
            "records": self.records,
            "logged": self.logged,
            "accounted_by_log": self.accounted,
            "unlogged": len(self.unlogged_rows),
            "unlogged_rows": list(self.unlogged_rows[:10]),
            "erased_present": len(self.erased_rows),
            "erased_rows": list(self.erased_rows[:10]),
            "missing": self.missing,
            "unaccounted": self.unaccounted,
            "register_digest": self.digest,
        }


def _first(rows: Sequence[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:FIRST_ROWS])
    return shown + (f" and {len(rows) - FIRST_ROWS} more" if len(rows) > FIRST_ROWS else "")


def reconciled_event(result: Reconciliation) -> AuditEvent:
    """The signed statement of a reconciliation (counts, digest, first row ids)."""
    labels = {"register_digest": result.digest}
    if result.unlogged_rows:
        labels["unlogged_rows"] = _rows(result.unlogged_rows)
    if result.erased_rows:
        labels["erased_rows"] = _rows(result.erased_rows)
    return AuditEvent(
        EventKind.REGISTER_RECONCILED,
        outcome="reconciled" if result.reconciled else "not_reconciled",
        counts={
            "records": result.records,
            "unlogged": len(result.unlogged_rows),
            "erased_present": len(result.erased_rows),
            "missing": result.missing,
            "unaccounted": result.unaccounted,
        },
        labels=labels,
    )


@dataclass(frozen=True)
class SeededRange:
    """What one ``records_seeded`` entry added: synthetic records with row ids ``first`` to
    ``last`` (``by_reference`` False) or, for an entry older than its row-id labels, with
    reference numbers ``first`` to ``last`` (``<state>-SYN-<n>``)."""

    seq: int
    first: int
    last: int
    by_reference: bool


@dataclass(frozen=True)
class ReconciledEntry:
    """A ``register_reconciled`` entry, with what the log accounted for before it."""

    seq: int
    event: AuditEvent
    accounted: int  # enrolled + seeded - erased in the entries before it


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() else None


@dataclass
class LogLedger:
    """The register-related entries of one node's log, read once in order."""

    # Each enrolment: row id, reference digest (b"" for an entry without one), index.
    enrolled_rows: list[int] = field(default_factory=list)
    enrolled_digests: list[bytes] = field(default_factory=list)
    enrolled_seqs: list[int] = field(default_factory=list)
    seeded: list[SeededRange] = field(default_factory=list)
    # Reference digest -> index of its latest erasure.
    erased: dict[bytes, int] = field(default_factory=dict)
    enrolments: int = 0
    seeded_records: int = 0
    erasures: int = 0  # those that cancel an enrolment (not remedial ones)
    last_reconciled: ReconciledEntry | None = None
    size: int = 0  # entries read

    @property
    def accounted(self) -> int:
        """Records the log accounts for: enrolled + seeded - erased."""
        return self.enrolments + self.seeded_records - self.erasures

    def add(
        self, seq: int, kind: EventKind, counts: Mapping[str, int], labels: Mapping[str, str]
    ) -> None:
        self.size = max(self.size, seq + 1)
        if kind is EventKind.RECORD_ENROLLED:
            row = _int(labels.get("record", ""))
            if row is None:
                return
            self.enrolments += 1
            self.enrolled_rows.append(row)
            self.enrolled_digests.append(_digest(labels.get("record_digest", "")))
            self.enrolled_seqs.append(seq)
        elif kind is EventKind.RECORDS_SEEDED:
            added = counts.get("added", 0)
            self.seeded_records += added
            first, last = _int(labels.get("first_record", "")), _int(labels.get("last_record", ""))
            if first is not None and last is not None:
                self.seeded.append(SeededRange(seq, first, last, by_reference=False))
            elif added:
                records = counts.get("records", added)
                self.seeded.append(SeededRange(seq, records - added, records - 1, True))
        elif kind is EventKind.RECORD_ERASED:
            digest = _digest(labels.get("record_digest", ""))
            if digest:
                self.erased[digest] = seq
            if "register_row" not in labels:
                self.erasures += 1
        elif kind is EventKind.REGISTER_RECONCILED:
            event = AuditEvent(kind, counts=counts, labels=labels)
            self.last_reconciled = ReconciledEntry(seq, event, self.accounted)

    def add_entry(self, entry: SignedEntry) -> None:
        if entry.kind in _KINDS:
            event = entry.event
            self.add(entry.seq, entry.kind, event.counts, event.labels)
        else:
            self.size = max(self.size, entry.seq + 1)

    @classmethod
    def from_entries(cls, entries: Iterable[SignedEntry]) -> LogLedger:
        ledger = cls()
        for entry in entries:
            ledger.add_entry(entry)
        return ledger

    @classmethod
    def from_log_data(cls, data: bytes) -> LogLedger:
        """The ledger of a party's own log file (``log.bin``), whose integrity its reader
        checked against the signed checkpoint: entries of other kinds are skipped without
        being parsed, so that a log of millions of searches reads in seconds."""
        ledger = cls()
        records, _ = scan_records(data)
        for start, length in records:
            raw = data[start : start + length]
            if not any(marker in raw for marker in _MARKERS):
                continue
            payload = json.loads(raw.rpartition(b"\n")[0])
            event = payload["event"]
            ledger.add(
                payload["seq"],
                EventKind(event["kind"]),
                event.get("counts", {}),
                event.get("labels", {}),
            )
        ledger.size = len(records)
        return ledger


def _digest(hex_digest: str) -> bytes:
    try:
        raw = bytes.fromhex(hex_digest)
    except ValueError:
        return b""
    return raw if len(raw) == 32 else b""


@dataclass(frozen=True)
class ReconciledCheck:
    """An auditor's reading of a node's latest reconciliation entry: empty ``problems``
    when the entry agrees with the log and says the register reconciles."""

    seq: int | None
    problems: tuple[tuple[str, str], ...]  # (finding kind, message)


def check_reconciled(entries: Sequence[SignedEntry]) -> ReconciledCheck:
    """Recount a node's log up to its latest ``register_reconciled`` entry: the records the
    log accounts for (enrolled + seeded - erased) must be the logged rows the entry counts
    (records - unlogged - rows of erased records + missing - unaccounted), and the entry
    must say the register reconciles."""
    ledger = LogLedger.from_entries(entries)
    last = ledger.last_reconciled
    if last is None:
        return ReconciledCheck(None, ())
    counts = last.event.counts
    records = counts.get("records", 0)
    claimed = (
        records
        - counts.get("unlogged", 0)
        - counts.get("erased_present", 0)
        + counts.get("missing", 0)
        - counts.get("unaccounted", 0)
    )
    problems = []
    if claimed != last.accounted:
        problems.append((
            "register-count-mismatch",
            f"entry {last.seq} (register_reconciled) counts {records} records, {claimed} of "
            f"them accounted for by the log; the log before it accounts for {last.accounted} "
            "(enrolled + seeded - erased)",
        ))  # fmt: skip
    mismatched = {
        name: counts.get(name, 0)
        for name in ("unlogged", "erased_present", "missing", "unaccounted")
        if counts.get(name, 0)
    }
    if mismatched:
        rows = {k: v for k, v in last.event.labels.items() if k.endswith("_rows")}
        problems.append((
            "register-not-reconciled",
            f"entry {last.seq}: the node's register does not reconcile with its log: "
            + ", ".join(f"{k} {v}" for k, v in mismatched.items())
            + "".join(f"; {k}: {v}" for k, v in sorted(rows.items())),
        ))  # fmt: skip
    return ReconciledCheck(last.seq, tuple(problems))
