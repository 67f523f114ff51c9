"""Publishable transparency statistics from verified log entries (DOMAIN.md section 6).

Counts only, as eu-LISA publishes them: searches per purpose and per requesting state; the
hit matrix per category pair (the searched person's category, which the requester declares
in its signed request, against the matched record's category: applicant/applicant is a
repeat application, applicant/irregular_crossing first-entry evidence); hits verified,
rejected by the verifiers and held for review; law-enforcement hits; data-subject requests;
refusals by reason; enrolments, marks and erasures. No query id, case, operator, verifier,
record, handle or date finer than the reporting day leaves this module.

Small cells are suppressed so that no individual can be singled out: a count from 1 to
``threshold - 1`` (default :data:`SMALL_CELL_THRESHOLD`, 5) is published as ``null``; and
when a table has exactly one such cell, its smallest published cell is suppressed too, so
that the table's total (published elsewhere, e.g. searches) cannot give it away. Zero is
published: that nobody is in a cell singles nobody out.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from fedmatch.audit.entry import EventKind, SignedEntry

__all__ = ["SMALL_CELL_THRESHOLD", "SUBJECT_CATEGORY", "federation_stats", "suppress"]

# The smallest count published as it is (Eurostat and eu-LISA practice suppress below 5).
SMALL_CELL_THRESHOLD = 5

# Whom a search is about when the request declares no category, by purpose: an asylum
# search is about an applicant, a border search about someone apprehended crossing...
SUBJECT_CATEGORY = {
    "asylum_dublin": "applicant",
    "border_control": "irregular_crossing",
    "illegal_stay_check": "illegal_stay",
    "resettlement": "resettlement",
    "law_enforcement": "law_enforcement",
    "data_subject_request": "data_subject_request",
}


def _day(entries: Sequence[SignedEntry], pick: int) -> str | None:
    if not entries:
        return None
    ms = sorted(e.unix_ms for e in entries)[pick]
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).date().isoformat()


def _cell(n: int, threshold: int) -> int | None:
    return n if n == 0 or n >= threshold else None


def suppress(counts: Mapping[str, int], threshold: int = SMALL_CELL_THRESHOLD) -> dict[str, Any]:
    """One published table: small cells as None, plus the secondary suppression above."""
    out: dict[str, Any] = {k: _cell(v, threshold) for k, v in sorted(counts.items())}
    small = [k for k, v in counts.items() if 0 < v < threshold]
    if len(small) == 1:
        shown = sorted((v, k) for k, v in counts.items() if v >= threshold)
        if shown:
            out[shown[0][1]] = None
    return out


def _subject(entry: SignedEntry) -> str:
    declared = entry.event.labels.get("subject_category", "")
    purpose = entry.event.purpose
    return declared or SUBJECT_CATEGORY.get(purpose, purpose or "unknown")


def federation_stats(
    coordinator: Sequence[SignedEntry],
    nodes: Mapping[str, Sequence[SignedEntry]],
    threshold: int = SMALL_CELL_THRESHOLD,
) -> dict[str, Any]:
    """The published aggregates over verified logs. ``threshold`` is the smallest count
    published as it is (1 publishes everything: for a party's own, unpublished view)."""
    by_purpose: Counter[str] = Counter()
    by_state: Counter[str] = Counter()
    refused_coordinator: Counter[str] = Counter()
    refused_requests: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    verified = 0
    for e in coordinator:
        if e.kind is EventKind.SEARCH_AUTHORIZED:
            by_purpose[e.event.purpose] += 1
            by_state[e.event.requesting_state] += 1
        elif e.kind is EventKind.SEARCH_REFUSED:
            refused_coordinator[e.event.reason.split(":")[0] or "unknown"] += 1
        elif e.kind is EventKind.REQUEST_REFUSED:
            refused_requests[e.event.labels.get("request", "unknown")] += 1
        elif e.kind is EventKind.HIT_VERIFIED:
            verified += sum(e.event.counts.values())
        elif e.kind is EventKind.HIT_REJECTED:
            for reason in (e.event.reason or "unknown").split(","):
                rejected[reason] += 1
    pairs: Counter[str] = Counter()
    refused_nodes: Counter[str] = Counter()
    refused_node_requests: Counter[str] = Counter()
    enrolled: Counter[str] = Counter()
    marked: Counter[str] = Counter()
    unmarked: Counter[str] = Counter()
    erased: Counter[str] = Counter()
    erased_by_reason: Counter[str] = Counter()
    answered = reveals = held = law_enforcement = 0
    for entries in nodes.values():
        for e in entries:
            if e.kind is EventKind.SEARCH_ANSWERED:
                answered += 1
            elif e.kind is EventKind.SEARCH_REFUSED:
                refused_nodes[e.event.reason.split(":")[0] or "unknown"] += 1
            elif e.kind is EventKind.REQUEST_REFUSED:  # enrolments (e.g. under 6), marks...
                refused_node_requests[e.event.labels.get("request", "unknown")] += 1
            elif e.kind is EventKind.HIT_DETAILS_REVEALED:
                reveals += 1
                held += int(e.event.labels.get("held_for_review", "0") or 0)
                subject = _subject(e)
                for category, n in e.event.counts.items():
                    pairs[f"{subject}/{category}"] += n
                    if e.event.purpose == "law_enforcement":
                        law_enforcement += n
            elif e.kind is EventKind.RECORD_ENROLLED:
                enrolled[e.event.labels.get("category", "unknown")] += 1
            elif e.kind is EventKind.RECORD_MARKED:
                marked[e.event.labels.get("category", "unknown")] += 1
            elif e.kind is EventKind.RECORD_UNMARKED:
                unmarked[e.event.labels.get("category", "unknown")] += 1
            elif e.kind is EventKind.RECORD_ERASED:
                erased[e.event.labels.get("category", "unknown")] += 1
                erased_by_reason[e.event.reason or "unknown"] += 1
    every = [*coordinator, *(e for entries in nodes.values() for e in entries)]

    def table(counts: Mapping[str, int]) -> dict[str, Any]:
        return suppress(counts, threshold)

    def cell(n: int) -> int | None:
        return _cell(n, threshold)

    # The matrix is the pairs table laid out by row: the same (suppressed) cells, so that
    # the two views cannot be combined to undo a suppression.
    published_pairs = table(pairs)
    matrix: dict[str, dict[str, Any]] = {}
    for pair, value in published_pairs.items():
        subject, _, category = pair.partition("/")
        matrix.setdefault(subject, {})[category] = value
    return {
        "stats": "fedmatch-transparency-v2",
        "period": {"from": _day(every, 0), "to": _day(every, -1)},
        "suppression": {
            "threshold": threshold,
            "rule": f"counts from 1 to {threshold - 1} are null; with a single such cell in "
            "a table, its smallest other cell is null too",
        },
        "searches": cell(sum(by_purpose.values())),
        "searches_by_purpose": table(by_purpose),
        "searches_by_requesting_state": table(by_state),
        "data_subject_requests": cell(by_purpose.get("data_subject_request", 0)),
        "node_searches_answered": cell(answered),
        "refused_searches": {
            "coordinator": table(refused_coordinator),
            "nodes": table(refused_nodes),
        },
        "refused_requests": table(refused_requests),
        "refused_requests_nodes": table(refused_node_requests),
        "hit_detail_requests": cell(reveals),
        "hits_verified": cell(verified),
        "hits_rejected": cell(sum(rejected.values())),
        "hits_rejected_by_reason": table(rejected),
        "hits_held_for_review": cell(held),
        "hits_by_category_pair": published_pairs,
        "hit_matrix": dict(sorted(matrix.items())),
        "law_enforcement_hits": cell(law_enforcement),
        "enrolments_by_category": table(enrolled),
        "records_marked": cell(sum(marked.values())),
        "records_marked_by_category": table(marked),
        "records_unmarked": cell(sum(unmarked.values())),
        "records_erased": cell(sum(erased.values())),
        "records_erased_by_category": table(erased),
        "records_erased_by_reason": table(erased_by_reason),
        "member_states_reporting": sorted(nodes),
    }
