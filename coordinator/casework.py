"""Between the wire and the Dublin case engine: case inputs in, proposals and confirmations out.

This module owns the conversion of a resolve's case inputs (``CaseInputs``) and its verified
hits into a :class:`coordinator.case.DublinCase`, of the resulting
:class:`coordinator.case.CaseProposal` into its wire message, the proposal's canonical JSON and
digest (what an official's confirmation names and what the log records), and the checked form
of a confirmation request (:class:`ConfirmationRequest`). It holds no state; the proposals are
kept by :mod:`coordinator.casestore`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.case import (
    ApplicantSituation,
    CaseProposal,
    Criterion,
    DocumentKind,
    DublinCase,
    EarlierApplication,
    Evidence,
    Fact,
    FamilyMember,
    FamilyStatus,
    ReceivedHit,
    Relation,
    TravelDocument,
)
from coordinator.dublin import Procedure, Regime
from fedmatch.domain import HitDetail, check_member_state, parse_date
from fedmatch.errors import InvalidInput
from fedmatch.protocol.canonical import canonical_json
from fedmatch.protocol.casefile import MAX_CASE_ITEMS, confirmation_digest
from fedmatch.protocol.wire import hit_to_pb
from fedmatch.rpc.v1 import coordinator_pb2 as cpb

__all__ = [
    "CaseFacts",
    "ConfirmationRequest",
    "confirmation_from_pb",
    "criterion_from_pb",
    "criterion_to_pb",
    "facts_from_pb",
    "proposal_digest",
    "proposal_json",
    "proposal_to_pb",
    "received_hits",
]

_RELATIONS: dict[int, Relation] = {
    cpb.FAMILY_RELATION_SPOUSE_OR_PARTNER: Relation.SPOUSE_OR_PARTNER,
    cpb.FAMILY_RELATION_CHILD: Relation.CHILD,
    cpb.FAMILY_RELATION_PARENT: Relation.PARENT,
    cpb.FAMILY_RELATION_SIBLING: Relation.SIBLING,
    cpb.FAMILY_RELATION_RELATIVE: Relation.RELATIVE,
}
_RELATIONS_PB = {v: k for k, v in _RELATIONS.items()}
_STATUSES: dict[int, FamilyStatus] = {
    cpb.FAMILY_STATUS_LEGALLY_PRESENT: FamilyStatus.LEGALLY_PRESENT,
    cpb.FAMILY_STATUS_BENEFICIARY_OF_PROTECTION: FamilyStatus.BENEFICIARY_OF_PROTECTION,
    cpb.FAMILY_STATUS_APPLICANT: FamilyStatus.APPLICANT,
}
_STATUSES_PB = {v: k for k, v in _STATUSES.items()}
_KINDS: dict[int, DocumentKind] = {
    cpb.DOCUMENT_KIND_RESIDENCE_DOCUMENT: DocumentKind.RESIDENCE_DOCUMENT,
    cpb.DOCUMENT_KIND_LONG_STAY_VISA: DocumentKind.LONG_STAY_VISA,
    cpb.DOCUMENT_KIND_SHORT_STAY_VISA: DocumentKind.SHORT_STAY_VISA,
    cpb.DOCUMENT_KIND_AIRPORT_TRANSIT_VISA: DocumentKind.AIRPORT_TRANSIT_VISA,
}
_KINDS_PB = {v: k for k, v in _KINDS.items()}
_CRITERIA: dict[int, Criterion] = {int(c): c for c in Criterion}  # same numbers on the wire
_REGIMES_PB = {Regime.DUBLIN_III: cpb.REGIME_DUBLIN_III, Regime.AMMR: cpb.REGIME_AMMR}
_PROCEDURES_PB = {
    Procedure.TAKE_CHARGE: cpb.PROCEDURE_TAKE_CHARGE,
    Procedure.TAKE_BACK: cpb.PROCEDURE_TAKE_BACK,
    Procedure.NONE: cpb.PROCEDURE_NONE,
    Procedure.PROTECTION_ELSEWHERE: cpb.PROCEDURE_PROTECTION_ELSEWHERE,
}
_ACTIONS: dict[int, str] = {
    cpb.CONFIRM_ACTION_ACCEPT: "accept",
    cpb.CONFIRM_ACTION_OVERRIDE: "override",
}
_HEX64 = frozenset("0123456789abcdef")
MAX_REASON_CHARS = 256


def _enum(table: dict[int, Any], value: int, name: str) -> Any:
    found = table.get(value)
    if found is None:
        raise InvalidInput(f"{name} is missing or unknown")
    return found


def criterion_from_pb(value: int, name: str = "criterion") -> Criterion:
    return _enum(_CRITERIA, value, name)  # type: ignore[no-any-return]


def criterion_to_pb(criterion: Criterion) -> cpb.Criterion.ValueType:
    return cpb.Criterion.ValueType(int(criterion))


@dataclass(frozen=True)
class CaseFacts:
    """What the requesting authority supplied for a case: the applicant's situation and the
    lodging date (None: lodged on the registration date)."""

    situation: ApplicantSituation = field(default_factory=ApplicantSituation)
    lodging_date: dt.date | None = None

    def case(
        self, requesting_state: str, registration_date: dt.date, hits: Sequence[ReceivedHit] = ()
    ) -> DublinCase:
        """The case of an application registered on ``registration_date``, with the verified
        hits as received; raises InvalidInput (e.g. lodged before it was registered)."""
        return DublinCase(
            requesting_state=requesting_state,
            lodging_date=self.lodging_date or registration_date,
            registration_date=registration_date,
            situation=self.situation,
            hits=tuple(hits),
        )


def facts_from_pb(inputs: cpb.CaseInputs | None) -> CaseFacts:
    """A resolve's case inputs (None: none given). Raises InvalidInput naming the field."""
    inputs = inputs if inputs is not None else cpb.CaseInputs()
    if len(inputs.family) > MAX_CASE_ITEMS or len(inputs.documents) > MAX_CASE_ITEMS:
        raise InvalidInput(f"case_inputs: at most {MAX_CASE_ITEMS} family members and documents")
    family = tuple(
        FamilyMember(
            state=check_member_state(m.member_state, f"case_inputs.family[{i}].member_state"),
            relation=_enum(_RELATIONS, m.relation, f"case_inputs.family[{i}].relation"),
            status=_enum(_STATUSES, m.status, f"case_inputs.family[{i}].status"),
        )
        for i, m in enumerate(inputs.family)
    )
    documents = tuple(
        TravelDocument(
            issuing_state=check_member_state(
                d.issuing_state, f"case_inputs.documents[{i}].issuing_state"
            ),
            kind=_enum(_KINDS, d.kind, f"case_inputs.documents[{i}].kind"),
            valid_from=parse_date(d.valid_from, f"case_inputs.documents[{i}].valid_from"),
            valid_until=parse_date(d.valid_until, f"case_inputs.documents[{i}].valid_until"),
        )
        for i, d in enumerate(inputs.documents)
    )
    situation = ApplicantSituation(
        unaccompanied_minor=inputs.unaccompanied_minor,
        family=family,
        documents=documents,
        visa_waived_entry_state=_optional_state(
            inputs.visa_waived_entry_state, "case_inputs.visa_waived_entry_state"
        ),
        visa_waived_in_requesting_state=inputs.visa_waived_in_requesting_state,
        earlier_application=_earlier(inputs.earlier_application),
        expired_document_enabled_entry=(
            inputs.expired_document_enabled_entry
            if inputs.HasField("expired_document_enabled_entry")
            else None
        ),
        left_territory_since=(
            inputs.left_territory_since if inputs.HasField("left_territory_since") else None
        ),
        airport_transit_state=_optional_state(
            inputs.airport_transit_state, "case_inputs.airport_transit_state"
        ),
    )
    lodging = (
        parse_date(inputs.lodging_date, "case_inputs.lodging_date") if inputs.lodging_date else None
    )
    return CaseFacts(situation, lodging)


def _earlier(value: str) -> EarlierApplication:
    try:
        return EarlierApplication(value)
    except ValueError:
        known = ", ".join(e.value for e in EarlierApplication if e.value)
        raise InvalidInput(f"case_inputs.earlier_application must be one of {known}") from None


def received_hits(hits: Sequence[HitDetail], received_on: dt.date) -> tuple[ReceivedHit, ...]:
    """The verified hits of a resolve, received on the day of their lookup at the coordinator
    (the day the requesting state learnt of them; DOMAIN.md section 3: the clocks start then).
    A record dated after that day (a node's clock ahead of the coordinator's) counts as
    received on its own date: a hit cannot be received before its record exists."""
    return tuple(
        ReceivedHit(hit, max(received_on, hit.event_date, hit.capture_date)) for hit in hits
    )


def _optional_state(value: str, name: str) -> str | None:
    return check_member_state(value, name) if value else None


# --- the proposal ------------------------------------------------------------------------


def _hit_json(hit: HitDetail) -> dict[str, str]:
    # The handle is a per-query position, not part of the record: it stays out of the
    # proposal, so that the same case always has the same digest.
    return hit.record_json()


def _evidence_json(item: Evidence) -> dict[str, str]:
    if isinstance(item, ReceivedHit):
        return {"kind": "hit", **_hit_json(item.hit), "received_on": item.received_on.isoformat()}
    if isinstance(item, FamilyMember):
        return {
            "kind": "family_member",
            "member_state": item.state,
            "relation": item.relation.value,
            "status": item.status.value,
        }
    if isinstance(item, TravelDocument):
        return {
            "kind": item.kind.value,
            "issuing_state": item.issuing_state,
            "valid_from": item.valid_from.isoformat(),
            "valid_until": item.valid_until.isoformat(),
        }
    return {"kind": "fact", "field": item.field, "value": item.value}


def proposal_json(query_id: str, proposal: CaseProposal, complete: bool) -> dict[str, Any]:
    """Everything a proposal says, as JSON values (metadata only: no handle, template or
    score). The digest is taken over this; the case store keeps it."""
    return {
        "v": 1,
        "query_id": query_id,
        "requesting_state": proposal.requesting_state,
        "registration_date": proposal.registration_date.isoformat(),
        "lodging_date": proposal.lodging_date.isoformat(),
        "regime": proposal.regime.value,
        "criterion": int(proposal.criterion),
        "responsible_state": proposal.responsible_state,
        "procedure": proposal.procedure.value,
        "basis": proposal.basis,
        "evidence": [_evidence_json(e) for e in proposal.evidence],
        "explanation": proposal.explanation,
        "deadlines": [
            {
                "name": d.name,
                "due": d.due.isoformat(),
                "start_event": d.start_event.value,
                "start_date": d.start_date.isoformat(),
                "length": d.length,
                "unit": d.unit.value,
                "basis": d.basis,
                "consequence": d.consequence,
                "then": d.then,
                "follow_on": [
                    {
                        "name": f.name,
                        "after": f.after,
                        "length": f.length,
                        "unit": f.unit.value,
                        "basis": f.basis,
                        "meaning": f.meaning,
                        "latest": f.latest.isoformat(),
                    }
                    for f in d.follow_on
                ],
            }
            for d in proposal.deadlines
        ],
        "hit_rule": proposal.hit_rule.value if proposal.hit_rule is not None else "",
        "checklist": [{"code": c.code, "text": c.text} for c in proposal.checklist],
        "candidates": list(proposal.candidates),
        "complete": complete,
    }


def proposal_digest(document: dict[str, Any]) -> str:
    """SHA-256 hex of a proposal's canonical JSON (sorted keys, no spaces, ASCII)."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def _evidence_pb(item: Evidence) -> cpb.CaseEvidence:
    if isinstance(item, ReceivedHit):
        return cpb.CaseEvidence(
            hit=cpb.ReceivedHit(hit=hit_to_pb(item.hit), received_on=item.received_on.isoformat())
        )
    if isinstance(item, FamilyMember):
        return cpb.CaseEvidence(
            family_member=cpb.FamilyMember(
                member_state=item.state,
                relation=_RELATIONS_PB[item.relation],  # type: ignore[arg-type]
                status=_STATUSES_PB[item.status],  # type: ignore[arg-type]
            )
        )
    if isinstance(item, TravelDocument):
        return cpb.CaseEvidence(
            document=cpb.TravelDocument(
                issuing_state=item.issuing_state,
                kind=_KINDS_PB[item.kind],  # type: ignore[arg-type]
                valid_from=item.valid_from.isoformat(),
                valid_until=item.valid_until.isoformat(),
            )
        )
    assert isinstance(item, Fact)
    return cpb.CaseEvidence(fact=cpb.CaseFact(field=item.field, value=item.value))


def proposal_to_pb(proposal: CaseProposal, digest: str, complete: bool) -> cpb.CaseProposal:
    return cpb.CaseProposal(
        digest=digest,
        regime=_REGIMES_PB[proposal.regime],
        criterion=criterion_to_pb(proposal.criterion),
        procedure=_PROCEDURES_PB[proposal.procedure],
        responsible_state=proposal.responsible_state,
        basis=proposal.basis,
        evidence=[_evidence_pb(e) for e in proposal.evidence],
        explanation=proposal.explanation,
        deadlines=[
            cpb.Deadline(
                name=d.name,
                due=d.due.isoformat(),
                start_event=d.start_event.value,
                start_date=d.start_date.isoformat(),
                length=d.length,
                unit=d.unit.value,
                basis=d.basis,
                consequence=d.consequence,
                then=d.then,
                follow_on=[
                    cpb.FollowOn(
                        name=f.name,
                        after=f.after,
                        length=f.length,
                        unit=f.unit.value,
                        basis=f.basis,
                        meaning=f.meaning,
                        latest=f.latest.isoformat(),
                    )
                    for f in d.follow_on
                ],
            )
            for d in proposal.deadlines
        ],
        registration_date=proposal.registration_date.isoformat(),
        lodging_date=proposal.lodging_date.isoformat(),
        complete=complete,
        checklist=[cpb.CheckItem(code=c.code, text=c.text) for c in proposal.checklist],
        candidates=proposal.candidates,
    )


# --- the confirmation --------------------------------------------------------------------


@dataclass(frozen=True)
class ConfirmationRequest:
    """An official's answer to a proposal: accept it, or override it with a state, a
    criterion and a reason (the reason is kept in the case store, never in the log)."""

    query_id: str
    proposal_digest: str
    action: str  # "accept" or "override"
    override_state: str = ""
    override_criterion: Criterion | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if len(self.proposal_digest) != 64 or not set(self.proposal_digest) <= _HEX64:
            raise InvalidInput("proposal_digest must be 64 lowercase hex digits")
        if self.action not in ("accept", "override"):
            raise InvalidInput("action must be accept or override")
        if len(self.reason) > MAX_REASON_CHARS or not self.reason.isprintable():
            raise InvalidInput(f"reason must be at most {MAX_REASON_CHARS} printable characters")
        if self.action == "override":
            check_member_state(self.override_state, "override_state")
            if self.override_criterion is None:
                raise InvalidInput("an override needs override_criterion")
            if not self.reason.strip():
                raise InvalidInput("an override needs a reason")
        elif self.override_state or self.override_criterion is not None:
            raise InvalidInput("an accepted proposal takes no override_state or criterion")

    def digest(self) -> str:
        """What the official's signed statement carries (fedmatch.protocol.casefile)."""
        return confirmation_digest(
            self.query_id,
            self.proposal_digest,
            self.action,
            self.override_state,
            self.override_criterion.name.lower() if self.override_criterion is not None else "",
            self.reason,
        )


def confirmation_from_pb(query_id: str, request: cpb.ConfirmDecisionRequest) -> ConfirmationRequest:
    action = _enum(_ACTIONS, request.action, "action")
    criterion = (
        criterion_from_pb(request.override_criterion, "override_criterion")
        if request.override_criterion
        else None
    )
    return ConfirmationRequest(
        query_id=query_id,
        proposal_digest=request.proposal_digest,
        action=action,
        override_state=request.override_state,
        override_criterion=criterion,
        reason=request.reason,
    )
