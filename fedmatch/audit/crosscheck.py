"""Federation-wide checks over verified logs: every use of a register has its authorization.

- Every search a node answered names a coordinator ``search_authorized`` entry (by index)
  for the same query, probe hash and requesting state, addressed to that node.
- Every authorized search reached each addressed node (an answer or a refusal in the
  node's log) or is explained by a logged failure in the coordinator's dispatch entry; a
  search still in flight (recent) or cut short by a coordinator restart is reported, not
  counted against anyone.
- Every hit detail a node revealed names a coordinator ``hit_verified`` entry for the same
  query and handles, with enough distinct verifiers.
- Each node's latest ``register_reconciled`` entry agrees with its log: the records the log
  accounts for (enrolled + seeded - erased) are the logged rows the entry counts, and the
  entry says the register reconciles (:func:`fedmatch.audit.register.check_reconciled`).

A node restored from a backup no longer has the entries it wrote after the backup: a search
it answered between the backup and the restore is then a dispatch without the node's entry.
That stays a violation (the auditor cannot check the answer against the log any more); when
the auditor acknowledged that restore (:mod:`fedmatch.audit.restores`), the finding names
it, and the entry of the superseded history that held the answer when the auditor had it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.audit.register import check_reconciled
from fedmatch.audit.restores import AcknowledgedRestore

__all__ = ["CrossCheck", "Finding", "cross_check"]


@dataclass(frozen=True)
class Finding:
    severity: str  # "violation", "warning" or "info"
    party: str
    kind: str
    message: str
    evidence: str = ""


@dataclass
class CrossCheck:
    findings: list[Finding] = field(default_factory=list)
    searches: int = 0
    reveals: int = 0
    registers: int = 0  # nodes whose latest register reconciliation was checked


def _index(entry: SignedEntry) -> int | None:
    raw = entry.event.labels.get("coordinator_index", "")
    return int(raw) if raw.isdigit() else None


def cross_check(
    coordinator: Sequence[SignedEntry] | None,
    nodes: Mapping[str, Sequence[SignedEntry] | None],
    now: float,
    grace_seconds: float,
    hit_verifiers_required: int,
    restores: Mapping[str, Sequence[AcknowledgedRestore]] | None = None,
) -> CrossCheck:
    out = CrossCheck()
    restores = restores or {}
    if coordinator is None:
        out.findings.append(
            Finding("violation", "coordinator", "not-verified",
                    "the coordinator's log is not verified: no cross-check is possible")
        )  # fmt: skip
        return out
    dispatched = {e.event.query_id: e for e in coordinator if e.kind is EventKind.SEARCH_DISPATCHED}
    restarts = [e.seq for e in coordinator if e.kind is EventKind.PARTY_STARTED]
    # Per node: the queries it answered or refused.
    seen_at: dict[str, set[str]] = defaultdict(set)

    for state, entries in nodes.items():
        if entries is None:
            continue
        _check_register(out, state, entries)
        for e in entries:
            if e.kind in (EventKind.SEARCH_ANSWERED, EventKind.SEARCH_REFUSED):
                seen_at[state].add(e.event.query_id)
            if e.kind is EventKind.SEARCH_ANSWERED:
                out.searches += 1
                _check_answer(out, state, e, coordinator)
            elif e.kind is EventKind.HIT_DETAILS_REVEALED:
                out.reveals += 1
                _check_reveal(out, state, e, coordinator, hit_verifiers_required)
            elif e.kind is EventKind.PACKETS_RELEASED:
                _check_packets(out, state, e, coordinator)

    for a in coordinator:
        if a.kind is not EventKind.SEARCH_AUTHORIZED:
            continue
        q = a.event.query_id
        d = dispatched.get(q)
        for state in a.event.registers:
            if nodes.get(state) is None:
                continue  # not audited: reported as such by the auditor
            if q in seen_at[state]:
                continue
            outcome = d.event.labels.get(state.lower(), "") if d else ""
            if d is not None and outcome and outcome != "ok":
                continue  # a logged failure: unreachable, deadline, refused before work
            if d is not None:
                out.findings.append(Finding(
                    "violation", state, "dispatch-not-at-node",
                    f"coordinator entry {d.seq} says {state} answered query {q}, "
                    f"but {state}'s log has no entry for it"
                    + _restore_note(restores.get(state, ()), state, q, d),
                ))  # fmt: skip
            elif any(r > a.seq for r in restarts):
                out.findings.append(Finding(
                    "info", "coordinator", "interrupted",
                    f"query {q} (entry {a.seq}) was cut short by a coordinator restart",
                ))  # fmt: skip
                break
            elif now - a.unix_ms / 1000 < grace_seconds:
                out.findings.append(Finding(
                    "info", "coordinator", "in-flight",
                    f"query {q} (entry {a.seq}) is recent and may still be in flight",
                ))  # fmt: skip
                break
            else:
                out.findings.append(Finding(
                    "violation", "coordinator", "dispatch-unexplained",
                    f"query {q} was authorized (entry {a.seq}) for {state}, which has no "
                    "record of it, and the coordinator logged no failure",
                ))  # fmt: skip
    return out


def _restore_note(
    restores: Sequence[AcknowledgedRestore], state: str, query_id: str, d: SignedEntry
) -> str:
    """Names an acknowledged restore of ``state`` that explains a missing answer."""
    for ack in reversed(restores):
        index = ack.dropped_answers.get(query_id)
        if index is not None:
            return (
                f" (its answer is entry {index} of {state}'s history superseded by the restore "
                f"this auditor acknowledged, {ack.path}: the restore dropped it)"
            )
        if ack.backup_created_unix * 1000 <= d.unix_ms <= ack.restored_unix * 1000:
            return (
                f" (dispatched between the backup and the restore of {state} this auditor "
                f"acknowledged, {ack.path}: its answer would be among the entries the "
                "restore dropped)"
            )
    return ""


def _authorizing(
    out: CrossCheck, state: str, e: SignedEntry, coordinator: Sequence[SignedEntry]
) -> SignedEntry | None:
    index = _index(e)
    if index is None or index >= len(coordinator):
        out.findings.append(Finding(
            "violation", state, "no-authorization",
            f"{state} entry {e.seq} ({e.kind.value}, query {e.event.query_id}) names coordinator "
            f"entry {index}, which is not in the coordinator's verified log",
        ))  # fmt: skip
        return None
    return coordinator[index]


def _check_answer(
    out: CrossCheck, state: str, e: SignedEntry, coordinator: Sequence[SignedEntry]
) -> None:
    a = _authorizing(out, state, e, coordinator)
    if a is None:
        return
    if (
        a.kind is not EventKind.SEARCH_AUTHORIZED
        or a.event.query_id != e.event.query_id
        or a.event.probe_hash != e.event.probe_hash
        or a.event.requesting_state != e.event.requesting_state
        or state not in a.event.registers
    ):
        out.findings.append(Finding(
            "violation", state, "answer-without-authorization",
            f"{state} entry {e.seq} answered query {e.event.query_id}, but coordinator entry "
            f"{a.seq} is not its authorization",
        ))  # fmt: skip


def _names_handles(a: SignedEntry, kind: EventKind, state: str, e: SignedEntry) -> bool:
    """Whether coordinator entry ``a`` is a ``kind`` entry of ``e``'s query naming
    ``state`` and exactly the handles ``e`` (a node's entry) names."""
    return (
        a.kind is kind
        and a.event.query_id == e.event.query_id
        and state in a.event.registers
        and a.event.labels.get(f"handles_{state.lower()}") == e.event.labels.get("handles")
    )


def _check_packets(
    out: CrossCheck, state: str, e: SignedEntry, coordinator: Sequence[SignedEntry]
) -> None:
    """A node released verification packets (facial images): only for the handles a
    ``packets_authorized`` entry of the coordinator named."""
    a = _authorizing(out, state, e, coordinator)
    if a is None:
        return
    if not _names_handles(a, EventKind.PACKETS_AUTHORIZED, state, e):
        out.findings.append(Finding(
            "violation", state, "packets-without-authorization",
            f"{state} entry {e.seq} released verification packets for query "
            f"{e.event.query_id} without a matching authorization (coordinator entry {a.seq})",
        ))  # fmt: skip


def _check_reveal(
    out: CrossCheck,
    state: str,
    e: SignedEntry,
    coordinator: Sequence[SignedEntry],
    required: int,
) -> None:
    v = _authorizing(out, state, e, coordinator)
    if v is None:
        return
    if not _names_handles(v, EventKind.HIT_VERIFIED, state, e):
        out.findings.append(Finding(
            "violation", state, "reveal-without-verified-hit",
            f"{state} entry {e.seq} revealed hit details for query {e.event.query_id} "
            f"without a matching verified hit (coordinator entry {v.seq})",
        ))  # fmt: skip
    elif len(set(v.event.verifiers)) < required:
        out.findings.append(Finding(
            "violation", "coordinator", "too-few-verifiers",
            f"hit of query {v.event.query_id} verified by {len(set(v.event.verifiers))} "
            f"people, {required} required",
        ))  # fmt: skip


def _check_register(out: CrossCheck, state: str, entries: Sequence[SignedEntry]) -> None:
    """The node's register as its latest reconciliation entry states it, against its log."""
    checked = check_reconciled(entries)
    if checked.seq is None:
        if any(e.kind in (EventKind.RECORD_ENROLLED, EventKind.RECORDS_SEEDED) for e in entries):
            out.findings.append(Finding(
                "warning", state, "register-not-reconciled-yet",
                f"{state}'s log has enrolments but no register_reconciled entry (a node "
                "older than the reconciliation, or one that never published a checkpoint)",
            ))  # fmt: skip
        return
    out.registers += 1
    for kind, message in checked.problems:
        out.findings.append(Finding("violation", state, kind, f"{state} {message}"))
