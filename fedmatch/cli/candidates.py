"""The candidate hits file: written by ``fedmatch lookup --candidates-out``, read by
``fedmatch verify-hit`` and ``fedmatch resolve``. Only the query's header and each hit's
state and opaque per-query handle: nothing personal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedmatch.domain import Purpose, QueryHeader
from fedmatch.errors import InvalidInput
from fedmatch.protocol.limits import HANDLE_BYTES, MAX_HANDLES_PER_REQUEST

__all__ = ["read_candidates", "write_candidates"]

_CANDIDATES = "fedmatch-candidate-hits-v1"


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
    }
    write_atomically(path, (json.dumps(body, indent=1) + "\n").encode(), mode=0o644)


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
    if len(hits) > MAX_HANDLES_PER_REQUEST or any(len(h) != HANDLE_BYTES for _, h in hits):
        raise InvalidInput(f"candidates file {path} is malformed")
    return header, hits
