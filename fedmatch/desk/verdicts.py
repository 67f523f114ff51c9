"""The verdicts given at the desk: one file per verifier per lookup, and what they add up to.

``X.json.verdicts/<verifier certificate name>.json`` holds that person's signed verdicts on
the lookup's hits (:func:`fedmatch.protocol.verification.write_verdicts`, the format of
``fedmatch verify-hit``), rewritten atomically with each new verdict. A person gives at most
one verdict per hit. The tallies here only count (the coordinator and the owning node verify
every signature again); a file whose verdicts name another person or lookup is ignored.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from fedmatch.desk.cases import Case
from fedmatch.errors import AlreadyExists, FedmatchError, InvalidInput
from fedmatch.protocol.verification import (
    HitKey,
    SignedVerdict,
    Verdict,
    VerdictStatement,
    read_verdicts,
    write_verdicts,
)

__all__ = [
    "REQUIRED_CONFIRMATIONS",
    "Tally",
    "all_verdicts",
    "given_by",
    "record",
    "tallies",
    "verdict_file",
]

log = logging.getLogger("fedmatch.desk")

# Two people confirm a hit before anything follows from it (AI Act Art. 14(5)).
REQUIRED_CONFIRMATIONS = 2
_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,127}")
# One desk process writes each file; the lock keeps two requests of one person (two tabs)
# from both passing the "no verdict yet" check.
_LOCK = threading.Lock()


def verdict_file(case: Case, verifier: str) -> Path:
    if not _NAME.fullmatch(verifier):
        raise InvalidInput("a verifier's certificate name is lowercase letters, digits, dots")
    return case.verdicts_dir / f"{verifier}.json"


def _statements(case: Case, path: Path) -> list[tuple[SignedVerdict, VerdictStatement]]:
    out = []
    for signed in read_verdicts(path):
        statement = VerdictStatement.decode(signed.statement)
        if statement.query_id != case.query_id or f"{statement.verifier}.json" != path.name:
            raise InvalidInput(f"verdict file {path.name} holds another lookup's or person's")
        out.append((signed, statement))
    return out


def _read(case: Case) -> list[tuple[SignedVerdict, VerdictStatement]]:
    if not case.verdicts_dir.is_dir():
        return []
    found = []
    for path in sorted(case.verdicts_dir.glob("*.json")):
        try:
            found.extend(_statements(case, path))
        except FedmatchError as exc:
            log.warning("lookup %s: verdict file ignored: %s", case.query_id, exc)
    return found


def all_verdicts(case: Case) -> list[SignedVerdict]:
    """Every verdict given on the lookup, for its resolve."""
    return [signed for signed, _ in _read(case)]


def given_by(case: Case, verifier: str) -> dict[HitKey, VerdictStatement]:
    """The verdicts ``verifier`` gave on the lookup, by hit."""
    path = verdict_file(case, verifier)
    if not path.exists():
        return {}
    return {s.hit: s for _, s in _statements(case, path)}


def record(case: Case, signed: SignedVerdict) -> VerdictStatement:
    """Add one verdict to its signer's file; AlreadyExists if they gave one on that hit."""
    statement = VerdictStatement.decode(signed.statement)
    if statement.query_id != case.query_id or statement.hit not in case.hits:
        raise InvalidInput("the verdict is not on a candidate of this lookup")
    path = verdict_file(case, statement.verifier)
    with _LOCK:
        existing = _statements(case, path) if path.exists() else []
        if any(s.hit == statement.hit for _, s in existing):
            raise AlreadyExists("you already gave a verdict on this candidate")
        case.verdicts_dir.mkdir(mode=0o700, exist_ok=True)
        write_verdicts([*(v for v, _ in existing), signed], path)
    log.info(
        "lookup %s: %s %ss hit %s%s", case.query_id, statement.verifier,
        statement.verdict.value, statement.hit.label(),
        f" ({statement.reason})" if statement.reason else "",
    )  # fmt: skip
    return statement


@dataclass(frozen=True)
class Tally:
    """What the verdicts on one hit add up to (counted, not verified)."""

    hit: HitKey
    confirmed_by: tuple[str, ...]
    rejected_by: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def status(self) -> str:
        if self.rejected_by:
            return "rejected"
        return "verified" if len(self.confirmed_by) >= REQUIRED_CONFIRMATIONS else "pending"

    @property
    def decided(self) -> bool:
        return self.status != "pending"


def tallies(case: Case) -> dict[HitKey, Tally]:
    statements = [s for _, s in _read(case)]
    out = {}
    for hit in case.hits:
        mine = [s for s in statements if s.hit == hit]
        out[hit] = Tally(
            hit,
            tuple(sorted({s.verifier for s in mine if s.verdict is Verdict.CONFIRM})),
            tuple(sorted({s.verifier for s in mine if s.verdict is Verdict.REJECT})),
            tuple(sorted({s.reason for s in mine if s.verdict is Verdict.REJECT})),
        )
    return out
