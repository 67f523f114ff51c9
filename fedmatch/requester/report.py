"""JSON-ready summaries of a lookup and its resolution (counts and metadata, never scores)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fedmatch.requester.client import LookupReport, ResolveReport

__all__ = ["decision_summary", "lookup_summary"]


def decision_summary(resolved: ResolveReport) -> dict[str, Any]:
    return {
        "responsible_state": resolved.responsible_state,
        "rule": resolved.rule,
        "procedure": resolved.procedure,
        "regime": resolved.regime,
        "complete": resolved.complete,
        "tie": resolved.tie,
        "evidence": [
            {
                k: e[k]
                for k in ("member_state", "reference", "category", "event_date", "event_place")
            }
            for e in resolved.evidence
        ],
        "explanation": resolved.explanation,
    }


def lookup_summary(report: LookupReport, resolved: ResolveReport | None) -> dict[str, Any]:
    """``resolved`` is None while candidate hits await human verification."""
    return {
        "query_id": report.header.query_id,
        "requesting_state": report.header.requesting_state,
        "threshold": report.threshold,
        "threshold_version": report.threshold_version,
        "decision": decision_summary(resolved) if resolved else None,
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
