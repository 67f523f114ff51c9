"""The lifecycle of a node's records: retention and erasure, marks, and the notices that pass
a mark or an erasure on to the states that received the record's details (DOMAIN.md
sections 1 and 6).

Erasure removes a record from every place it lives: the register file (secure delete, WAL
truncated), the engine's encoded blocks, the node's row arrays, pending queries' handles and
the answers kept for retries (:meth:`NodeService.forget_records`). Each erasure leaves a
signed receipt in the node's audit log: the digest of the reference, the category, the
reason and the retention rule, never personal data.

The node remembers every reveal of a record's details (record, requesting state, query id,
case reference, time); a mark, an unmark or an erasure queues one notice per reveal, sent
through the coordinator at once and retried by :class:`LifecycleJob` until delivered.

Marks come in two kinds (Eurodac recast Art. 31(1) protection granted, on applicant records;
31(4) residence document issued, on irregular-crossing, illegal-stay and SAR records), each
checked against the record's category. Art. 31(1) has every state whose data produced a hit
with the marked record told, in both directions: besides the reveals, the node keeps the
links its own authority reported after a resolve ("my record produced a hit with that
state's record", :meth:`Lifecycle.link_own_hit`; the node cannot tell on its own which of
its records a probe came from), and a mark or unmark also goes to those states, naming
their record by digest. The record's Dublin status (the state indicated as responsible and
its basis, Art. 16(1); transfer, removal, left-territory dates; relocation, Art. 28(4)) is
recorded by :meth:`Lifecycle.set_status` and released with its hit details.

The clock is injectable so that tests can move through years.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from fedmatch.audit.entry import AuditEvent, EventKind
from fedmatch.audit.events import header_event
from fedmatch.domain import (
    MARKABLE_CATEGORIES,
    MAX_BASIS_TEXT,
    MarkKind,
    QueryHeader,
    check_member_state,
)
from fedmatch.errors import FedmatchError, InvalidInput, PermissionDenied, Unavailable
from fedmatch.rpc.v1 import common_pb2
from node.inbox import NOTICE_DUE, InboxItem, Notice, NoticeBox, NoticeKind, reference_digest
from node.notices import verified_notice
from node.records import RecordMeta, RecordStatus
from node.retention import LEFT_TERRITORY, RetentionPolicy, early_erasure_reason
from node.service import NodeService

__all__ = [
    "EARLY_ERASURE_REASONS",
    "Lifecycle",
    "LifecycleJob",
    "LifecycleOutcome",
    "Relay",
    "StatusChange",
    "utc_now",
]

log = logging.getLogger("fedmatch.node.lifecycle")

# Why an operator may erase a record before its retention ends.
EARLY_ERASURE_REASONS = ("citizenship_acquired", "erasure_request")
RETENTION_EXPIRED = "retention_expired"

# Sends a notice through the coordinator; returns (receiver's inbox item id, due time) or
# raises (the notice then stays pending).
Relay = Callable[[Notice], tuple[int, str]]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# What an operator is told when a mark's kind is missing or unknown.
_MARK_KINDS = (
    "'protection_granted' (Eurodac recast Art. 31(1), applicant records) or "
    "'residence_document' (Art. 31(4), irregular_crossing, illegal_stay and "
    "sar_disembarked records)"
)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_QUERY_ID = re.compile(r"^[0-9a-f]{32}$")


def mark_kind(value: str, marked: bool) -> MarkKind:
    """The kind of a mark or unmark request: required to mark; "" or a kind to unmark."""
    try:
        kind = MarkKind(value)
    except ValueError:
        raise InvalidInput(f"mark_kind must be {_MARK_KINDS}") from None
    if marked and kind is MarkKind.NONE:
        raise InvalidInput(f"a mark needs its kind: mark_kind {_MARK_KINDS}")
    return kind


# The status fields an operator may reset, each naming the columns it resets together.
STATUS_FIELDS = ("responsible", "transferred_on", "removed_on", "left_territory_on", "relocation")


@dataclass(frozen=True)
class StatusChange:
    """A change to a record's Dublin status: the fields given are set, those in ``clear``
    reset (names of :data:`STATUS_FIELDS`). Checks its own shape; the dates are checked
    against the record and the node's clock by :meth:`Lifecycle.set_status`."""

    responsible_state: str = ""
    responsible_basis: str = ""
    transferred_on: dt.date | None = None
    removed_on: dt.date | None = None
    left_territory_on: dt.date | None = None
    relocated_to: str = ""
    relocated_on: dt.date | None = None
    clear: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        unknown = self.clear - set(STATUS_FIELDS)
        if unknown:
            raise InvalidInput(f"clear names one of: {', '.join(STATUS_FIELDS)}")
        if self.responsible_state:
            check_member_state(self.responsible_state, "responsible_state")
        if self.relocated_to:
            check_member_state(self.relocated_to, "relocated_to")
        basis = self.responsible_basis
        if len(basis) > MAX_BASIS_TEXT or not basis.isprintable():
            raise InvalidInput(f"responsible_basis must be at most {MAX_BASIS_TEXT} characters")
        if basis and not self.responsible_state:
            raise InvalidInput("responsible_basis goes with responsible_state")
        if bool(self.relocated_to) != (self.relocated_on is not None):
            raise InvalidInput("relocated_to and relocated_on go together (Art. 28(4))")
        if not self.changed and not self.clear:
            raise InvalidInput("nothing to set or clear")
        if set(self.changed) & self.clear:
            raise InvalidInput("a field is either set or cleared, not both")

    @property
    def changed(self) -> tuple[str, ...]:
        """The names (of :data:`STATUS_FIELDS`) of the fields this change sets."""
        given = {
            "responsible": bool(self.responsible_state),
            "transferred_on": self.transferred_on is not None,
            "removed_on": self.removed_on is not None,
            "left_territory_on": self.left_territory_on is not None,
            "relocation": bool(self.relocated_to),
        }
        return tuple(name for name in STATUS_FIELDS if given[name])

    def dates(self) -> dict[str, dt.date]:
        named = {
            "transferred_on": self.transferred_on,
            "removed_on": self.removed_on,
            "left_territory_on": self.left_territory_on,
            "relocated_on": self.relocated_on,
        }
        return {k: v for k, v in named.items() if v is not None}

    def applied(self, status: RecordStatus) -> RecordStatus:
        """``status`` with this change: cleared fields reset, given fields set."""

        def day(name: str, given: dt.date | None, old: dt.date | None) -> dt.date | None:
            return None if name in self.clear else given if given is not None else old

        out = replace(
            status,
            transferred_on=day("transferred_on", self.transferred_on, status.transferred_on),
            removed_on=day("removed_on", self.removed_on, status.removed_on),
            left_territory_on=day(
                "left_territory_on", self.left_territory_on, status.left_territory_on
            ),
        )
        if "responsible" in self.clear:
            out = replace(out, responsible_state="", responsible_basis="")
        if "relocation" in self.clear:
            out = replace(out, relocated_to="", relocated_on=None)
        if self.responsible_state:
            out = replace(
                out,
                responsible_state=self.responsible_state,
                responsible_basis=self.responsible_basis,
            )
        if self.relocated_to:
            out = replace(out, relocated_to=self.relocated_to, relocated_on=self.relocated_on)
        return out


@dataclass(frozen=True)
class LifecycleOutcome:
    outcome: str
    notices_sent: int
    notices_pending: int


class Lifecycle:
    def __init__(
        self,
        service: NodeService,
        box: NoticeBox,
        retention: RetentionPolicy | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        relay: Relay | None = None,
    ) -> None:
        self.service = service
        self.store = service.store
        self.box = box
        self.retention = retention or RetentionPolicy()
        self.clock = clock
        self.relay = relay
        # One erasure or mark at a time: the job and an operator may act on the same record.
        self._lock = threading.Lock()
        service.on_reveal = self._remember

    @property
    def member_state(self) -> str:
        return self.service.member_state

    def _remember(self, header: QueryHeader, record_ids: list[int]) -> None:
        self.store.add_links(
            record_ids, header.requesting_state, header.query_id, header.case_reference,
            self.clock(),
        )  # fmt: skip

    def _own(self, header: QueryHeader) -> None:
        if header.requesting_state != self.member_state:
            raise PermissionDenied("only this node's own member state may do this")
        if not header.operator:
            raise InvalidInput("header.operator_id is required (it is logged)")
        # Built (and so checked) before anything changes: a header the audit log would
        # refuse must not leave a mark or an erasure without its entry.
        header_event(EventKind.REQUEST_REFUSED, header)

    # --- erasure ---------------------------------------------------------------------------

    def erase_expired(self) -> int:
        """Erase every record whose retention has ended by the clock's date (counted from
        capture under Reg. 603/2013, from transmission under the recast, node/retention.py),
        and every 603/2013 irregular-crossing record whose person was issued a residence
        document or left the territory (Art. 16(2)(a), (b)); returns how many."""
        today = self.clock().date()
        due: dict[str, list[tuple[int, RecordMeta, str]]] = {}
        with self._lock:
            for record_id, facts, residence_on, left_on in self.store.retention_rows():
                rule = self.retention.rule(facts)
                if today >= rule.expires:
                    reason, name = RETENTION_EXPIRED, rule.name
                else:
                    early = early_erasure_reason(
                        rule.regime, facts.category, residence_document_on=residence_on,
                        left_territory_on=left_on, today=today,
                    )  # fmt: skip
                    if early is None:
                        continue
                    reason, name = early, f"early:{early}"
                due.setdefault(reason, []).append((record_id, self.store.get(record_id), name))
            for reason, records in due.items():
                self._erase(records, reason)
        for reason, records in due.items():
            log.info("erasure job: %d records erased (%s)", len(records), reason)
        return sum(len(records) for records in due.values())

    def erase(self, header: QueryHeader, reference: str, reason: str) -> LifecycleOutcome:
        """Early erasure at the request of the node's own authority."""
        self._own(header)
        if reason not in EARLY_ERASURE_REASONS:
            raise InvalidInput(f"an early erasure's reason is one of {EARLY_ERASURE_REASONS}")
        with self._lock:
            record_id = self.store.find(reference)
            meta = self.store.get(record_id)
            return self._erase([(record_id, meta, f"early:{reason}")], reason, header)

    def _erase(
        self,
        records: Sequence[tuple[int, RecordMeta, str]],
        reason: str,
        header: QueryHeader | None = None,
    ) -> LifecycleOutcome:
        """Erase (record id, metadata, rule name) records from every place, in one go (the
        engine re-encodes each touched block once), then write one receipt per record."""
        digests = {rid: reference_digest(self.member_state, m.reference) for rid, m, _ in records}
        # Queued before the records go: a crash in between repeats the erasure, never loses
        # the notices.
        notices = {
            rid: self._queue(rid, NoticeKind.RECORD_ERASED, digests[rid]) for rid, _, _ in records
        }
        ids = [rid for rid, _, _ in records]
        reconciler = self.service.reconciler
        # Under the shared write lock (node.locks): a backup sees the erasure and its
        # receipts together, or neither.
        with self.store.writes.shared():
            # A row without a standing enrolment (unlogged, or left after its record's
            # logged erasure) is erased too, and its receipt says so: it cancels no
            # enrolment in the register's reconciliation (fedmatch/audit/register.py).
            standing = {rid: reconciler.row_state(rid) for rid in ids}
            # Engine first: if blanking fails the rows stay in the store and the next run
            # erases them again (blanking is idempotent); the other order would leave a
            # record gone from the store, never retried, and still matching.
            self.service.forget_records(ids)
            self.store.erase(ids)
            logged: set[int] = set()
            try:
                for record_id, meta, rule in records:
                    row = standing[record_id]
                    self.service.audit.record(
                        header_event(
                            EventKind.RECORD_ERASED,
                            header,
                            registers=(self.member_state,),
                            outcome="erased",
                            reason=reason,
                            counts={meta.category.value: 1},
                            labels={
                                "record_digest": digests[record_id],
                                "category": meta.category.value,
                                "retention_rule": rule,
                                "notices": str(len(notices[record_id])),
                            }
                            | ({"register_row": row} if row is not None else {}),
                        )
                    )
                    logged.add(record_id)
            finally:
                reconciler.removed({rid: bytes.fromhex(digests[rid]) for rid in ids}, logged)
        return self._send_all([n for ns in notices.values() for n in ns], "erased")

    # --- marks -----------------------------------------------------------------------------

    def mark(
        self, header: QueryHeader, reference: str, marked: bool, kind: str = ""
    ) -> LifecycleOutcome:
        """Mark a record with ``kind`` (Eurodac recast Art. 31(1) protection granted, on an
        applicant record; 31(4) residence document issued, on an irregular-crossing,
        illegal-stay or SAR record) or unmark it (protection withdrawn, 31(3)). A kind that
        does not fit the record's category is refused and nothing is written. A residence
        document on a Reg. 603/2013 irregular-crossing record erases it instead (Art.
        16(2)(a)), with its receipt and notices: outcome "erased"."""
        self._own(header)
        wanted = mark_kind(kind, marked)
        with self._lock:
            record_id = self.store.find(reference)
            meta = self.store.get(record_id)
            current = self.store.status(record_id).mark
            if marked and meta.category not in MARKABLE_CATEGORIES[wanted]:
                allowed = ", ".join(sorted(c.value for c in MARKABLE_CATEGORIES[wanted]))
                raise InvalidInput(
                    f"{meta.category.value} records cannot carry a {wanted.value} mark "
                    f"(only {allowed} records can; Eurodac recast Art. 31(1), 31(4))"
                )
            if (
                not marked
                and wanted is not MarkKind.NONE
                and current not in (MarkKind.NONE, wanted)
            ):
                raise InvalidInput(f"the record carries no {wanted.value} mark")
            if marked and wanted is MarkKind.RESIDENCE_DOCUMENT:
                # Reg. 603/2013 Art. 16(2)(a): such a record is not marked but erased.
                today = self.clock().date()
                early = early_erasure_reason(
                    self.retention.regime(meta.capture_date), meta.category,
                    residence_document_on=today, left_territory_on=None, today=today,
                )  # fmt: skip
                if early is not None:
                    return self._erase([(record_id, meta, f"early:{early}")], early, header)
            new = wanted if marked else MarkKind.NONE
            # The notice names the kind set, or the kind removed.
            told = wanted if marked else current
            digest = reference_digest(self.member_state, meta.reference)
            notice_kind = NoticeKind.RECORD_MARKED if marked else NoticeKind.RECORD_UNMARKED
            # The mark and its entry under the shared write lock, as for an erasure.
            with self.store.writes.shared():
                if not self.store.set_marked(record_id, new, self.clock()):
                    return LifecycleOutcome("unchanged", 0, 0)
                self.service.set_marked(record_id, marked)
                notices = self._queue(record_id, notice_kind, digest, told)
                self.service.audit.record(
                    header_event(
                        EventKind.RECORD_MARKED if marked else EventKind.RECORD_UNMARKED,
                        header,
                        registers=(self.member_state,),
                        outcome="marked" if marked else "unmarked",
                        counts={meta.category.value: 1},
                        labels={
                            "record_digest": digest,
                            "category": meta.category.value,
                            "mark_kind": told.value,
                            "notices": str(len(notices)),
                        },
                    )
                )
        return self._send_all(notices, "marked" if marked else "unmarked")

    # --- Dublin status and own hit links -------------------------------------------------

    def set_status(
        self, header: QueryHeader, reference: str, change: StatusChange
    ) -> LifecycleOutcome:
        """Record the record's Dublin status as the node's own authority knows it: the
        state indicated as responsible and its basis (Eurodac recast Art. 16(1), (3)), the
        transfer, removal and left-territory dates, relocation (Art. 28(4)). No date may be
        after the node's today, nor before the record's event. A left-territory date on a
        Reg. 603/2013 irregular-crossing record erases it instead (Art. 16(2)(b)), with its
        receipt and notices: outcome "erased"."""
        self._own(header)
        today = self.clock().date()
        with self._lock:
            record_id = self.store.find(reference)
            meta = self.store.get(record_id)
            for name, day in change.dates().items():
                if day > today:
                    raise InvalidInput(f"{name} is in the future")
                if day < meta.event_date:
                    raise InvalidInput(f"{name} is before the record's event date")
            status = change.applied(self.store.status(record_id))
            # Reg. 603/2013 Art. 16(2)(b): an irregular-crossing record of a person who left
            # the territory of the member states is erased, not updated.
            early = early_erasure_reason(
                self.retention.regime(meta.capture_date), meta.category,
                residence_document_on=None, left_territory_on=status.left_territory_on,
                today=today,
            )  # fmt: skip
            if early == LEFT_TERRITORY:
                return self._erase([(record_id, meta, f"early:{early}")], early, header)
            digest = reference_digest(self.member_state, meta.reference)
            with self.store.writes.shared():
                if not self.store.set_status(record_id, status):
                    return LifecycleOutcome("unchanged", 0, 0)
                self.service.audit.record(
                    header_event(
                        EventKind.RECORD_STATUS_SET,
                        header,
                        registers=(self.member_state,),
                        outcome="status_set",
                        counts={meta.category.value: 1},
                        # Which fields changed, never their values.
                        labels={
                            "record_digest": digest,
                            "category": meta.category.value,
                            "set": ",".join(change.changed) or "-",
                            "cleared": ",".join(sorted(change.clear)) or "-",
                        },
                    )
                )
        return LifecycleOutcome("status_set", 0, 0)

    def link_own_hit(
        self,
        header: QueryHeader,
        reference: str,
        other_state: str,
        other_digest: str,
        query_id: str,
    ) -> LifecycleOutcome:
        """The node's own authority reports, after a resolve, that its record ``reference``
        (the one it searched with) produced a hit with ``other_state``'s record of reference
        digest ``other_digest`` in query ``query_id``. A later mark or unmark of the record
        is passed on to that state (Art. 31(1), both directions); a record already marked
        is passed on now."""
        self._own(header)
        check_member_state(other_state, "other_state")
        if other_state == self.member_state:
            raise InvalidInput("other_state is another member state")
        if not _DIGEST.fullmatch(other_digest):
            raise InvalidInput("other_digest must be 64 lowercase hex digits")
        if not _QUERY_ID.fullmatch(query_id):
            raise InvalidInput("query_id must be 32 lowercase hex digits")
        with self._lock:
            record_id = self.store.find(reference)
            meta = self.store.get(record_id)
            digest = reference_digest(self.member_state, meta.reference)
            current = self.store.status(record_id).mark
            with self.store.writes.shared():
                new = self.store.add_own_link(
                    record_id, other_state, other_digest, query_id, header.case_reference,
                    self.clock(),
                )  # fmt: skip
                if not new:
                    return LifecycleOutcome("unchanged", 0, 0)
                notices = []
                if current is not MarkKind.NONE:
                    notice = Notice(
                        Notice.new_id(), NoticeKind.RECORD_MARKED, self.member_state,
                        other_state, reference_digest=digest, query_id=query_id,
                        case_reference=header.case_reference, mark_kind=current,
                        hit_record_digest=other_digest,
                    )  # fmt: skip
                    self.box.queue(notice, self.clock())
                    notices.append(notice)
                self.service.audit.record(
                    header_event(
                        EventKind.OWN_HIT_LINKED,
                        header,
                        registers=(other_state,),
                        outcome="linked",
                        labels={
                            "record_digest": digest,
                            "hit_record_digest": other_digest,
                            "hit_query_id": query_id,
                            "notices": str(len(notices)),
                        },
                    )
                )
        return self._send_all(notices, "linked")

    # --- notices ---------------------------------------------------------------------------

    def _queue(
        self, record_id: int, kind: NoticeKind, digest: str, mark: MarkKind = MarkKind.NONE
    ) -> list[Notice]:
        """One notice per earlier reveal of the record, queued in the outbox; for a mark or
        an unmark also one per hit the record produced with another state's record (the
        other direction of Art. 31(1)), naming that record by its digest."""
        notices = []
        now = self.clock()
        for state, query_id, case_reference in self.store.links(record_id):
            notice = Notice(
                Notice.new_id(), kind, self.member_state, state,
                reference_digest=digest, query_id=query_id, case_reference=case_reference,
                mark_kind=mark,
            )  # fmt: skip
            self.box.queue(notice, now)
            notices.append(notice)
        if mark is not MarkKind.NONE:
            for state, other, query_id, case_reference in self.store.own_links(record_id):
                notice = Notice(
                    Notice.new_id(), kind, self.member_state, state,
                    reference_digest=digest, query_id=query_id, case_reference=case_reference,
                    mark_kind=mark, hit_record_digest=other,
                )  # fmt: skip
                self.box.queue(notice, now)
                notices.append(notice)
        return notices

    def route(
        self,
        header: QueryHeader,
        kind: str,
        to_state: str,
        reference: str,
        query_id: str = "",
    ) -> tuple[str, str]:
        """Route a data subject's correction or erasure request, lodged here, to the state
        holding the record; (notice id, "delivered" or "pending")."""
        self._own(header)
        try:
            notice_kind = NoticeKind(kind)
        except ValueError:
            raise InvalidInput("kind is correction_request or erasure_request") from None
        if not notice_kind.is_rights_request:
            raise InvalidInput("kind is correction_request or erasure_request")
        notice = Notice(
            Notice.new_id(), notice_kind, self.member_state, to_state,
            reference=reference, query_id=query_id, case_reference=header.case_reference,
        )  # fmt: skip
        self.box.queue(notice, self.clock())
        result = self._send_all([notice], "", header)
        return notice.notice_id, "delivered" if result.notices_sent else "pending"

    def _send_all(
        self, notices: Sequence[Notice], outcome: str, header: QueryHeader | None = None
    ) -> LifecycleOutcome:
        sent = sum(self._send(n, first=True, header=header) for n in notices)
        return LifecycleOutcome(outcome, sent, len(notices) - sent)

    def _send(self, notice: Notice, first: bool, header: QueryHeader | None = None) -> bool:
        """One delivery attempt, logged when delivered (and on the first failure)."""
        reason = ""
        try:
            if self.relay is None:
                raise Unavailable("no coordinator to relay notices through")
            item_id, due = self.relay(notice)
        except FedmatchError as exc:  # a failed relay leaves the notice pending, never lost
            reason = type(exc).__name__
            item_id, due = 0, ""
        delivered = not reason
        self.box.sent(notice.notice_id, delivered)
        if delivered or first:
            labels = _notice_labels(notice) | ({"due": due[:64]} if due else {})
            if delivered:
                labels["receiver_item"] = str(item_id)
            self.service.audit.record(
                header_event(
                    EventKind.NOTICE_SENT,
                    header,
                    registers=(notice.to_state,),
                    outcome="delivered" if delivered else "pending",
                    reason=reason[:64],
                    labels=labels,
                )
            )
        return delivered

    def flush_outbox(self) -> int:
        """Retry every pending notice; returns how many are still pending."""
        pending = 0
        for item in self.box.pending():
            if not self._send(item.notice, first=False):
                pending += 1
        return pending

    def deliver(self, signed: common_pb2.Notice) -> InboxItem:
        """A notice relayed by the coordinator, signed by its sending node, into the inbox
        (due in 72 hours)."""
        self.service._check_coordinator_peer()  # the same node's own check
        notice = verified_notice(signed, self.service.gate.verify_chain)
        if notice.to_state != self.member_state:
            raise PermissionDenied("the notice is for another state")
        item, new = self.box.receive(notice, self.clock())
        if new:
            self.service.audit.record(
                AuditEvent(
                    EventKind.NOTICE_RECEIVED,
                    requesting_state=notice.from_state,
                    query_id=notice.query_id,
                    registers=(self.member_state,),
                    outcome="open",
                    labels=_notice_labels(notice)
                    | {"due": item.due.isoformat(timespec="seconds"), "item": str(item.item_id)},
                )
            )
        return item

    def inbox(self, header: QueryHeader, open_only: bool) -> list[InboxItem]:
        self._own(header)
        return self.box.items(open_only)

    def acknowledge(self, header: QueryHeader, item_id: int) -> InboxItem:
        self._own(header)
        now = self.clock()
        item = self.box.acknowledge(item_id, header.operator, now)
        self.service.audit.record(
            header_event(
                EventKind.NOTICE_ACKNOWLEDGED,
                header,
                registers=(item.notice.from_state,),
                outcome="overdue" if now > item.due else "in_time",
                labels=_notice_labels(item.notice) | {"item": str(item_id)},
            )
        )
        return item


def _notice_labels(notice: Notice) -> dict[str, str]:
    """A notice in the logs: its id and kind and the digest of the record's reference (a
    rights request's reference is the receiver's, so its digest is taken in that name)."""
    digest = notice.reference_digest or reference_digest(notice.to_state, notice.reference)
    labels = {
        "notice_id": notice.notice_id,
        "notice_kind": notice.kind.value,
        "record_digest": digest,
        "from_state": notice.from_state,
        "to_state": notice.to_state,
    }
    if notice.mark_kind:
        labels["mark_kind"] = notice.mark_kind.value
    if notice.hit_record_digest:
        labels["hit_record_digest"] = notice.hit_record_digest
    return labels


class LifecycleJob:
    """The node's scheduled job: erase expired records and retry pending notices, once at
    start and then every ``interval`` seconds, on a daemon thread."""

    def __init__(self, lifecycle: Lifecycle, interval: float) -> None:
        self.lifecycle = lifecycle
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lifecycle-job", daemon=True)

    def start(self) -> LifecycleJob:
        self._thread.start()
        return self

    def run_once(self) -> tuple[int, int]:
        """(records erased, notices still pending). Overdue inbox items are reported to the
        operator's log on every run (counts only) until the authority acknowledges them."""
        erased, pending = self.lifecycle.erase_expired(), self.lifecycle.flush_outbox()
        now = self.lifecycle.clock()
        box = self.lifecycle.box
        overdue = sum(i.overdue(now) for i in box.items(open_only=True))
        if overdue:
            log.warning("inbox: %d notices are past their 72-hour deadline", overdue)
        # The sender's side of the same deadline (DOMAIN.md: the other states are told
        # within 72 hours of the mark or erasure): notices the relay has not taken yet.
        late = sum(now - item.created > NOTICE_DUE for item in box.pending())
        if late:
            log.warning("outbox: %d notices not delivered within 72 hours of the change", late)
        return erased, pending

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the job must outlive one bad run; the next one retries
                log.exception("lifecycle job run failed")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
