"""JSON-ready summaries of a lookup and its resolution (counts and metadata, never scores),
and what they say when some member state's node did not answer: which states, and that a
decision is then provisional."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from fedmatch.domain import QueryHeader
from fedmatch.requester.client import LookupReport, NodeSummary, ResolveReport

__all__ = [
    "decision_summary",
    "incomplete_text",
    "log_accepted_incomplete",
    "lookup_summary",
    "unanswered",
]

log = logging.getLogger("fedmatch.requester")


def unanswered(nodes: Iterable[NodeSummary]) -> dict[str, str]:
    """State -> outcome of every node that did not answer (or whose answer was dropped)."""
    return {n.member_state: n.outcome for n in sorted(nodes, key=lambda n: n.member_state)
            if n.outcome != "ok"}  # fmt: skip


def incomplete_text(missing: Mapping[str, str]) -> str:
    """'FR did not answer (unavailable)': the sentence every human-readable output carries."""
    return ", ".join(f"{s} did not answer ({o})" for s, o in sorted(missing.items()))


def log_accepted_incomplete(header: QueryHeader, missing: Mapping[str, str]) -> None:
    """The requester's log entry of a decision proposed on an incomplete federation at the
    operator's request (``--accept-incomplete``)."""
    log.warning(
        "resolve query=%s accepted as incomplete by operator=%s unit=%s: %s; the proposal "
        "is provisional",
        header.query_id,
        header.operator,
        header.unit,
        incomplete_text(missing),
    )


def decision_summary(
    resolved: ResolveReport, missing: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``missing``: the states that did not answer the lookup (:func:`unanswered`); with
    the states that did not give the details asked of them at resolve, the explanation
    names them and says that the proposal is provisional."""
    gone = dict(missing or {}) | unanswered(resolved.nodes)
    explanation = resolved.explanation
    if gone:
        explanation = (
            f"{explanation} This proposal is provisional: {incomplete_text(gone)}, and a "
            "record held there could change it."
        ).strip()
    return {
        "responsible_state": resolved.responsible_state,
        "rule": resolved.rule,
        "procedure": resolved.procedure,
        "regime": resolved.regime,
        "complete": resolved.complete and not gone,
        "unanswered": sorted(gone),
        "provisional": bool(gone) or not resolved.complete,
        "tie": resolved.tie,
        "evidence": [
            {
                k: e[k]
                for k in ("member_state", "reference", "category", "event_date", "event_place")
            }
            for e in resolved.evidence
        ],
        "explanation": explanation,
    }


def lookup_summary(report: LookupReport, resolved: ResolveReport | None) -> dict[str, Any]:
    """``resolved`` is None while candidate hits await human verification (or when no
    decision was proposed on an incomplete federation)."""
    missing = unanswered(report.nodes)
    return {
        "query_id": report.header.query_id,
        "requesting_state": report.header.requesting_state,
        "threshold": report.threshold,
        "threshold_version": report.threshold_version,
        # Every member state whose node did not answer: the answer is partial.
        "complete": not missing,
        "unanswered": sorted(missing),
        "decision": decision_summary(resolved, missing) if resolved else None,
        # The Dublin case proposal (whole criteria order, due dates) for an official to confirm.
        "proposal": resolved.proposal if resolved else None,
        "pending_verification": len(report.matches) if resolved is None else 0,
        "nodes": [{k: v for k, v in asdict(n).items()} for n in report.nodes],
        "hits": len(report.matches),
        "timings_ms": {
            **report.timings_ms,
            "resolve_ms": resolved.elapsed_ms if resolved else 0.0,
        },
        "bytes": {
            "sent": report.bytes_sent + (resolved.bytes_sent if resolved else 0),
            "received": report.bytes_received + (resolved.bytes_received if resolved else 0),
            # Public key material registered for the key epoch (once, not per query).
            "keys_sent_once": report.key_bytes_sent,
        },
    }
