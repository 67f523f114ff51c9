"""Publishable transparency statistics from verified log entries (DOMAIN.md section 6).

Counts only: searches per purpose and per requesting state, hits per category pair (the
searched person's category, from the purpose, against the matched record's category),
refusals by reason, enrolments, marks and erasures. No query id, case, operator, record or
date finer than the reporting period leaves this module.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from fedmatch.audit.entry import EventKind, SignedEntry

__all__ = ["SUBJECT_CATEGORY", "federation_stats"]

# Whom a search is about, by purpose: an asylum search is about an applicant, a border
# search about someone apprehended crossing, and so on (eu-LISA's category pairs).
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


def federation_stats(
    coordinator: Sequence[SignedEntry], nodes: Mapping[str, Sequence[SignedEntry]]
) -> dict[str, Any]:
    by_purpose: Counter[str] = Counter()
    by_state: Counter[str] = Counter()
    refused_coordinator: Counter[str] = Counter()
    refused_requests: Counter[str] = Counter()
    for e in coordinator:
        if e.kind is EventKind.SEARCH_AUTHORIZED:
            by_purpose[e.event.purpose] += 1
            by_state[e.event.requesting_state] += 1
        elif e.kind is EventKind.SEARCH_REFUSED:
            refused_coordinator[e.event.reason.split(":")[0] or "unknown"] += 1
        elif e.kind is EventKind.REQUEST_REFUSED:
            refused_requests[e.event.labels.get("request", "unknown")] += 1
    pairs: Counter[str] = Counter()
    refused_nodes: Counter[str] = Counter()
    enrolled: Counter[str] = Counter()
    answered = marked = erased = reveals = 0
    for entries in nodes.values():
        for e in entries:
            if e.kind is EventKind.SEARCH_ANSWERED:
                answered += 1
            elif e.kind is EventKind.SEARCH_REFUSED:
                refused_nodes[e.event.reason.split(":")[0] or "unknown"] += 1
            elif e.kind is EventKind.HIT_DETAILS_REVEALED:
                reveals += 1
                subject = SUBJECT_CATEGORY.get(e.event.purpose, e.event.purpose or "unknown")
                for category, n in e.event.counts.items():
                    pairs[f"{subject}/{category}"] += n
            elif e.kind is EventKind.RECORD_ENROLLED:
                enrolled[e.event.labels.get("category", "unknown")] += 1
            elif e.kind is EventKind.RECORD_MARKED:
                marked += 1
            elif e.kind is EventKind.RECORD_ERASED:
                erased += 1
    every = [*coordinator, *(e for entries in nodes.values() for e in entries)]
    return {
        "stats": "fedmatch-transparency-v1",
        "period": {"from": _day(every, 0), "to": _day(every, -1)},
        "searches": sum(by_purpose.values()),
        "searches_by_purpose": dict(sorted(by_purpose.items())),
        "searches_by_requesting_state": dict(sorted(by_state.items())),
        "node_searches_answered": answered,
        "refused_searches": {
            "coordinator": dict(sorted(refused_coordinator.items())),
            "nodes": dict(sorted(refused_nodes.items())),
        },
        "refused_requests": dict(sorted(refused_requests.items())),
        "hit_detail_requests": reveals,
        "hits_by_category_pair": dict(sorted(pairs.items())),
        "enrolments_by_category": dict(sorted(enrolled.items())),
        "records_marked": marked,
        "records_erased": erased,
        "member_states_reporting": sorted(nodes),
    }
