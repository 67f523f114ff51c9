"""The coordinator's hit gate: which candidate hits of a resolve are usable.

A hit is usable (its details may be asked for, and only then can it reach the Dublin
decision) when enough distinct verifiers of the requesting state confirmed it in signed
verdicts and nobody rejected it (:mod:`fedmatch.protocol.verification` checks each verdict). Two by
default (AI Act Art. 14(5)); one only under an explicit waiver with its legal reference in
the coordinator's configuration, logged with the policy at start.

A rejection is final for that query: it is logged (``hit_rejected``: verifiers and reason
codes, the hit only as a digest) and remembered, rebuilt from the log at start, so that no
later resolve of the same query can have the hit's details asked for, whatever it carries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedmatch.audit.entry import EventKind
from fedmatch.audit.events import handles_digest, header_event
from fedmatch.audit.log import AuditLog
from fedmatch.domain import HitDetail, QueryHeader, Sex
from fedmatch.protocol.verification import (
    DIFFERENT_SEX_CONFIRMATIONS,
    Assessment,
    HitKey,
    SignedVerdict,
    VerdictStatement,
    assess_all,
    different_sex,
    needs_two_people,
)

__all__ = ["HitGate", "HitOutcome", "Screening", "hit_digest", "settle"]


def hit_digest(hit: HitKey) -> str:
    """How one hit appears in the logs: its handle's digest (with the state beside it)."""
    return handles_digest([hit.handle])


@dataclass(frozen=True)
class Screening:
    """The verdicts of one resolve, assessed: every hit's assessment, in request order."""

    assessments: tuple[Assessment, ...]
    # The verdicts on each hit, as received: what the owning node gets to check itself.
    verdicts: Mapping[HitKey, tuple[SignedVerdict, ...]] = field(default_factory=dict)

    @property
    def verified(self) -> tuple[HitKey, ...]:
        """The usable hits: what resolve may ask details for."""
        return tuple(a.hit for a in self.assessments if a.verified)

    @property
    def confirmers(self) -> tuple[str, ...]:
        """Everyone who confirmed a usable hit (for the hit_verified entry)."""
        return tuple(sorted({v for a in self.assessments if a.verified for v in a.confirmed_by}))

    def verdicts_for(self, hits: Sequence[HitKey]) -> list[SignedVerdict]:
        return [v for hit in hits for v in self.verdicts.get(hit, ())]


@dataclass(frozen=True)
class HitOutcome:
    """What became of one hit of a resolve, for the answer (no personal data)."""

    hit: HitKey
    status: str  # verified, rejected, pending, review
    different_sex: bool
    confirmed_by: tuple[str, ...]
    rejected_by: tuple[str, ...]
    reasons: tuple[str, ...]
    # No image comparison was possible (coordinator/packets.py): said with every status.
    not_verifiable: bool = False

    @classmethod
    def of(
        cls, a: Assessment, status: str | None = None, different_sex: bool = False
    ) -> HitOutcome:
        return cls(
            a.hit, status or a.status, different_sex, a.confirmed_by, a.rejected_by, a.reasons
        )


class HitGate:
    def __init__(
        self,
        log: AuditLog,
        verify_chain: Callable[[bytes], Any],
        required: int,
    ) -> None:
        """``required``: distinct confirmations per hit (the configuration's count, or 1
        under a waiver)."""
        self._log = log
        self._verify_chain = verify_chain
        self.required = required
        self._lock = threading.Lock()
        # (query id, member state, hit digest) of every rejected hit on record.
        self._rejected: set[tuple[str, str, str]] = set()
        for entry in log.iter_entries():
            if entry.kind is EventKind.HIT_REJECTED:
                self._rejected.add(_key(entry.event.query_id, entry.event.registers,
                                        entry.event.labels.get("hit", "")))  # fmt: skip

    def screen(
        self,
        header: QueryHeader,
        hits: Sequence[HitKey],
        verdicts: Sequence[SignedVerdict],
        request_digest: str,
        evidence: Callable[[Sequence[SignedVerdict]], None] = lambda _: None,
    ) -> Screening:
        """Verify the verdicts (PermissionDenied for any that does not verify: a forged
        one, a revoked, unauthorized or other state's signer) and assess each hit. New
        rejections are logged before this returns; earlier ones stay rejected."""
        assessed = assess_all(
            hits,
            verdicts,
            header.query_id,
            header.requesting_state,
            self.required,
            self._verify_chain,
        )
        # The verdicts are authentic: now they must name the images that were released
        # (coordinator/packets.py), before any of them is logged.
        evidence(verdicts)
        out: list[Assessment] = []
        for hit, assessment in assessed.items():
            key = (header.query_id, hit.member_state, hit_digest(hit))
            # The check and the entry under one lock: two concurrent resolves log a
            # rejection once.
            with self._lock:
                known = key in self._rejected
                if assessment.status == "rejected" and not known:
                    self._log.append(
                        header_event(
                            EventKind.HIT_REJECTED,
                            header,
                            registers=(hit.member_state,),
                            outcome="rejected",
                            reason=",".join(assessment.reasons),
                            verifiers=assessment.rejected_by,
                            labels={"hit": hit_digest(hit), "request": request_digest},
                        )
                    )
                    self._rejected.add(key)
            if known and assessment.status != "rejected":
                # Rejected in an earlier resolve: new confirmations do not undo that.
                assessment = Assessment(
                    hit,
                    "rejected",
                    assessment.confirmed_by,
                    (),
                    ("rejected_earlier",),
                    assessment.probe_sex,
                )
            out.append(assessment)
        by_hit: dict[HitKey, list[SignedVerdict]] = {}
        for signed in verdicts:
            # Already verified by assess_all: decoding cannot fail here.
            by_hit.setdefault(VerdictStatement.decode(signed.statement).hit, []).append(signed)
        return Screening(tuple(out), {h: tuple(v) for h, v in by_hit.items()})


def _key(query_id: str, registers: Sequence[str], digest: str) -> tuple[str, str, str]:
    return (query_id, registers[0] if registers else "", digest)


def settle(
    screening: Screening, details: Sequence[HitDetail], held: Sequence[HitKey]
) -> tuple[list[HitDetail], list[HitOutcome]]:
    """After the owning nodes answered: the details that may reach the decision, and what
    became of every hit. A different-sex hit with fewer than two confirmations is never
    usable (a node holds it back; should one reveal it anyway, it is dropped here)."""
    by_hit = {HitKey(d.member_state, d.handle): d for d in details}
    usable: list[HitDetail] = []
    outcomes: list[HitOutcome] = []
    for a in screening.assessments:
        detail = by_hit.get(a.hit)
        if not a.verified:
            outcomes.append(HitOutcome.of(a))
        elif a.hit in held:
            # Held by its node: of another sex than the one declared, or none was declared.
            declared = a.probe_sex is not Sex.UNSPECIFIED
            outcomes.append(HitOutcome.of(a, "review", different_sex=declared))
        elif detail is None:
            outcomes.append(HitOutcome.of(a))  # its node did not answer (see the calls)
        elif needs_two_people(detail.sex, a.probe_sex):
            differs = different_sex(detail.sex, a.probe_sex)
            if len(a.confirmed_by) < DIFFERENT_SEX_CONFIRMATIONS:
                outcomes.append(HitOutcome.of(a, "review", different_sex=differs))
            else:
                usable.append(detail)
                outcomes.append(HitOutcome.of(a, different_sex=differs))
        else:
            usable.append(detail)
            outcomes.append(HitOutcome.of(a))
    return usable, outcomes
