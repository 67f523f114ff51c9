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
through the coordinator at once and retried by :class:`LifecycleJob` until delivered. The
clock is injectable so that tests can move through years.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedmatch.audit.entry import AuditEvent, EventKind
from fedmatch.audit.events import header_event
from fedmatch.domain import MarkKind, QueryHeader
from fedmatch.errors import FedmatchError, InvalidInput, PermissionDenied, Unavailable
from fedmatch.rpc.v1 import common_pb2
from node.inbox import NOTICE_DUE, InboxItem, Notice, NoticeBox, NoticeKind, reference_digest
from node.notices import verified_notice
from node.records import RecordMeta
from node.retention import RetentionPolicy, early_erasure_reason
from node.service import NodeService

__all__ = [
    "EARLY_ERASURE_REASONS",
    "Lifecycle",
    "LifecycleJob",
    "LifecycleOutcome",
    "Relay",
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
        # Under the shared write lock (node.locks): a backup sees the erasure and its
        # receipts together, or neither.
        with self.store.writes.shared():
            # Engine first: if blanking fails the rows stay in the store and the next run
            # erases them again (blanking is idempotent); the other order would leave a
            # record gone from the store, never retried, and still matching.
            self.service.forget_records(ids)
            self.store.erase(ids)
            for record_id, meta, rule in records:
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
                        },
                    )
                )
        return self._send_all([n for ns in notices.values() for n in ns], "erased")

    # --- marks -----------------------------------------------------------------------------

    def mark(self, header: QueryHeader, reference: str, marked: bool) -> LifecycleOutcome:
        """Mark a record (protection granted) or unmark it (withdrawn)."""
        self._own(header)
        with self._lock:
            record_id = self.store.find(reference)
            meta = self.store.get(record_id)
            digest = reference_digest(self.member_state, meta.reference)
            kind = NoticeKind.RECORD_MARKED if marked else NoticeKind.RECORD_UNMARKED
            # The mark and its entry under the shared write lock, as for an erasure.
            with self.store.writes.shared():
                kind_of_mark = MarkKind.PROTECTION_GRANTED if marked else MarkKind.NONE
                if not self.store.set_marked(record_id, kind_of_mark, self.clock()):
                    return LifecycleOutcome("unchanged", 0, 0)
                self.service.set_marked(record_id, marked)
                notices = self._queue(record_id, kind, digest)
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
                            "notices": str(len(notices)),
                        },
                    )
                )
        return self._send_all(notices, "marked" if marked else "unmarked")

    # --- notices ---------------------------------------------------------------------------

    def _queue(self, record_id: int, kind: NoticeKind, digest: str) -> list[Notice]:
        """One notice per earlier reveal of the record, queued in the outbox."""
        notices = []
        now = self.clock()
        for state, query_id, case_reference in self.store.links(record_id):
            notice = Notice(
                Notice.new_id(), kind, self.member_state, state,
                reference_digest=digest, query_id=query_id, case_reference=case_reference,
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
    return {
        "notice_id": notice.notice_id,
        "notice_kind": notice.kind.value,
        "record_digest": digest,
        "from_state": notice.from_state,
        "to_state": notice.to_state,
    }


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
