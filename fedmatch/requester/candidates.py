"""The candidate hits file: written by ``fedmatch lookup --candidates-out``, read by
``fedmatch verify-hit`` and ``fedmatch resolve``. Only the query's header and each hit's
state and opaque per-query handle: nothing personal; and the states whose node did not
answer the lookup (a resolve on them proposes a provisional decision only when the operator
accepts the incomplete federation).

The file holds every candidate, however many: listing and signing verdicts are local steps.
Requests to the federation carry at most ``MAX_HANDLES_PER_REQUEST`` of them, and say so
(:func:`fedmatch.requester.client.check_candidate_count`).

Next to it, ``<file>.opening`` (mode 0600) keeps what a resolve seals to each node it claims
hits at (fedmatch/protocol/opening.py): the salt and the probe template, personal data like
the photo it came from, and each node's opening key for the query. Only ``fedmatch resolve``
reads it; verifiers never need it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedmatch.domain import Purpose, QueryHeader, check_member_state
from fedmatch.errors import InvalidInput
from fedmatch.protocol.limits import HANDLE_BYTES, MAX_TEXT_FIELD

__all__ = [
    "opening_path",
    "read_candidates",
    "read_release",
    "read_unanswered",
    "write_candidates",
]

_CANDIDATES = "fedmatch-candidate-hits-v1"
_OPENING = "fedmatch-probe-opening-v1"


def opening_path(path: Path) -> Path:
    return path.with_name(path.name + ".opening")


def write_candidates(report: Any, path: Path) -> None:
    """A lookup's candidate hits for the verifiers and a later resolve (``report``: a
    LookupReport). Only the header and opaque per-query handles: nothing personal."""
    from fedmatch.fileio import write_atomically

    h: QueryHeader = report.header
    body = {
        "format": _CANDIDATES,
        "query_id": h.query_id,
        "requesting_state": h.requesting_state,
        "purpose": h.purpose.value,
        "legal_basis": h.legal_basis,
        "case_reference": h.case_reference,
        "unit": h.unit,
        "operator": h.operator,
        "hits": [{"member_state": s, "handle": handle.hex()} for s, handle in report.matches],
        # State -> outcome ("unavailable", "deadline_exceeded", ...) of every node that did
        # not answer the lookup, or whose answer was dropped.
        "unanswered": {
            n.member_state: n.outcome for n in getattr(report, "nodes", ()) if n.outcome != "ok"
        },
    }
    write_atomically(path, (json.dumps(body, indent=1) + "\n").encode(), mode=0o644)
    if report.opening is not None:
        opening = {
            "format": _OPENING,
            "query_id": h.query_id,
            "opening": report.opening.encode().hex(),
            "dimension": int(report.opening.template.shape[0]),
            "opening_keys": {s: key.hex() for s, key in sorted(report.opening_keys.items())},
        }
        write_atomically(opening_path(path), json.dumps(opening).encode(), mode=0o600)


def read_release(path: Path, query_id: str) -> tuple[Any, dict[str, bytes]]:
    """(the probe's opening, the nodes' opening keys) from ``<path>.opening``; (None, {})
    when it is missing (the nodes then refuse the details)."""
    from fedmatch.protocol.opening import ProbeOpening

    source = opening_path(path)
    if not source.exists():
        return None, {}
    try:
        obj = json.loads(source.read_bytes())
        if obj.get("format") != _OPENING or obj.get("query_id") != query_id:
            raise ValueError
        opening = ProbeOpening.decode(bytes.fromhex(obj["opening"]), int(obj["dimension"]))
        keys = {str(s): bytes.fromhex(k) for s, k in obj["opening_keys"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InvalidInput(f"probe opening file {source} is malformed") from None
    return opening, keys


def read_candidates(path: Path) -> tuple[QueryHeader, list[tuple[str, bytes]]]:
    try:
        obj = json.loads(path.read_bytes())
    except OSError as exc:
        raise InvalidInput(f"candidates file {path} could not be read ({exc.strerror})") from None
    except ValueError:
        raise InvalidInput(f"candidates file {path} is not JSON") from None
    if not isinstance(obj, dict) or obj.get("format") != _CANDIDATES:
        raise InvalidInput(f"{path} is not a file of `fedmatch lookup --candidates-out`")
    try:
        header = QueryHeader(
            obj["query_id"], obj["requesting_state"], Purpose.parse(obj["purpose"]),
            obj["legal_basis"], obj["case_reference"], obj["unit"], obj["operator"],
        )  # fmt: skip
        hits = [(str(h["member_state"]), bytes.fromhex(h["handle"])) for h in obj["hits"]]
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f"candidates file {path} is malformed") from None
    for index, (_, handle) in enumerate(hits):
        if len(handle) != HANDLE_BYTES:
            raise InvalidInput(
                f"candidates file {path}: hit {index} has a handle of {len(handle)} bytes, "
                f"not {HANDLE_BYTES}"
            )
    return header, hits


def read_unanswered(path: Path) -> dict[str, str]:
    """The states whose node did not answer the lookup of ``path`` (a file of
    :func:`write_candidates`), each with its outcome; {} for a file written before they
    were recorded."""
    try:
        raw = json.loads(path.read_bytes()).get("unanswered", {})
        if not isinstance(raw, dict):
            raise TypeError
        unanswered = {
            check_member_state(str(s), "unanswered"): str(o)[:MAX_TEXT_FIELD]
            for s, o in raw.items()
        }
    except (OSError, ValueError, TypeError, AttributeError, InvalidInput):
        raise InvalidInput(f"candidates file {path}: 'unanswered' is malformed") from None
    return dict(sorted(unanswered.items()))
