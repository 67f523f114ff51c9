"""The requesting authority's side of a Dublin case: case inputs, proposals, confirmations.

A requesting authority supplies what it knows of the applicant for the Dublin criteria (a JSON
case file: unaccompanied minor, family members, residence documents and visas, visa-waived entry,
airport transit, lodging date) and gets back the coordinator's proposal, which an official then
accepts or overrides. This module turns the case file into the wire message
(:func:`case_inputs_from_json`), the proposal into a JSON-ready summary (:func:`proposal_summary`)
and states the body of a confirmation whose digest the official's statement signs
(:func:`confirmation_digest`). The coordinator checks the case inputs again against
``coordinator/case.py``; what is checked here is the shape, so that a wrong file fails before
anything is sent.

Case file (every key optional)::

    {"lodging_date": "2026-11-20", "unaccompanied_minor": false,
     "family": [{"member_state": "FR", "relation": "spouse_or_partner",
                 "status": "beneficiary_of_protection"}],
     "documents": [{"issuing_state": "AT", "kind": "short_stay_visa",
                    "valid_from": "2026-09-01", "valid_until": "2026-09-30"}],
     "visa_waived_entry_state": "", "visa_waived_in_requesting_state": false,
     "airport_transit_state": "", "earlier_application": "under_examination"}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedmatch.domain import Sex, check_member_state, parse_date
from fedmatch.errors import InvalidInput
from fedmatch.protocol.canonical import canonical_json
from fedmatch.rpc.v1 import common_pb2
from fedmatch.rpc.v1 import coordinator_pb2 as cpb

__all__ = [
    "ACTIONS",
    "CRITERIA",
    "DOCUMENT_KINDS",
    "FAMILY_RELATIONS",
    "FAMILY_STATUSES",
    "MAX_CASE_ITEMS",
    "case_inputs_from_json",
    "confirmation_digest",
    "load_case_file",
    "proposal_summary",
]

# A family or a set of documents longer than this is not a case, it is a mistake.
MAX_CASE_ITEMS = 16
MAX_CASE_FILE_BYTES = 64 * 1024

FAMILY_RELATIONS: dict[str, cpb.FamilyRelation.ValueType] = {
    "spouse_or_partner": cpb.FAMILY_RELATION_SPOUSE_OR_PARTNER,
    "child": cpb.FAMILY_RELATION_CHILD,
    "parent": cpb.FAMILY_RELATION_PARENT,
    "sibling": cpb.FAMILY_RELATION_SIBLING,
    "relative": cpb.FAMILY_RELATION_RELATIVE,
}
FAMILY_STATUSES: dict[str, cpb.FamilyStatus.ValueType] = {
    "legally_present": cpb.FAMILY_STATUS_LEGALLY_PRESENT,
    "beneficiary_of_protection": cpb.FAMILY_STATUS_BENEFICIARY_OF_PROTECTION,
    "applicant": cpb.FAMILY_STATUS_APPLICANT,
}
DOCUMENT_KINDS: dict[str, cpb.DocumentKind.ValueType] = {
    "residence_document": cpb.DOCUMENT_KIND_RESIDENCE_DOCUMENT,
    "long_stay_visa": cpb.DOCUMENT_KIND_LONG_STAY_VISA,
    "short_stay_visa": cpb.DOCUMENT_KIND_SHORT_STAY_VISA,
    "airport_transit_visa": cpb.DOCUMENT_KIND_AIRPORT_TRANSIT_VISA,
}
CRITERIA: dict[str, cpb.Criterion.ValueType] = {
    "unaccompanied_minor": cpb.CRITERION_UNACCOMPANIED_MINOR,
    "family": cpb.CRITERION_FAMILY,
    "documents": cpb.CRITERION_DOCUMENTS,
    "irregular_entry": cpb.CRITERION_IRREGULAR_ENTRY,
    "visa_waiver_or_transit": cpb.CRITERION_VISA_WAIVER_OR_TRANSIT,
    "first_application": cpb.CRITERION_FIRST_APPLICATION,
}
ACTIONS: dict[str, cpb.ConfirmAction.ValueType] = {
    "accept": cpb.CONFIRM_ACTION_ACCEPT,
    "override": cpb.CONFIRM_ACTION_OVERRIDE,
}

_CASE_KEYS = {
    "lodging_date",
    "unaccompanied_minor",
    "family",
    "documents",
    "visa_waived_entry_state",
    "visa_waived_in_requesting_state",
    "airport_transit_state",
    "earlier_application",
    "expired_document_enabled_entry",
    "left_territory_since",
}
# Where an earlier application elsewhere stands (coordinator/case.py EarlierApplication).
EARLIER_APPLICATION = (
    "under_examination",
    "withdrawn",
    "rejected",
    "withdrawn_during_determination",
)


def load_case_file(path: Path) -> cpb.CaseInputs:
    """Read a JSON case file (see the module docstring); raises InvalidInput naming the key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the case file: {exc.strerror}") from None
    if len(data) > MAX_CASE_FILE_BYTES:
        raise InvalidInput(f"the case file exceeds {MAX_CASE_FILE_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidInput("the case file is not JSON") from None
    return case_inputs_from_json(obj)


def case_inputs_from_json(obj: object) -> cpb.CaseInputs:
    """The wire message for a case file's content (a JSON object)."""
    if not isinstance(obj, dict):
        raise InvalidInput("a case file is a JSON object")
    unknown = sorted(set(obj) - _CASE_KEYS)
    if unknown:
        raise InvalidInput(f"case file: unknown key {unknown[0][:40]!r}")
    flags = {
        k: obj.get(k, False) for k in ("unaccompanied_minor", "visa_waived_in_requesting_state")
    }
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise InvalidInput(f"case file: {key} must be true or false")
    out = cpb.CaseInputs(
        unaccompanied_minor=flags["unaccompanied_minor"],
        visa_waived_in_requesting_state=flags["visa_waived_in_requesting_state"],
        visa_waived_entry_state=_state(obj, "visa_waived_entry_state", optional=True),
        airport_transit_state=_state(obj, "airport_transit_state", optional=True),
        lodging_date=_date(obj, "lodging_date", optional=True),
        earlier_application=_earlier_application(obj),
    )
    # Dublin III Art. 12(4): true, false or absent (not known).
    for key in ("expired_document_enabled_entry", "left_territory_since"):
        value = obj.get(key)
        if value is not None and not isinstance(value, bool):
            raise InvalidInput(f"case file: {key} must be true, false or absent")
        if value is not None:
            setattr(out, key, value)
    for i, item in enumerate(_items(obj, "family")):
        where = f"family[{i}]"
        out.family.append(
            cpb.FamilyMember(
                member_state=_state(item, "member_state", where=where),
                relation=_choice(item, "relation", FAMILY_RELATIONS, where),
                status=_choice(item, "status", FAMILY_STATUSES, where),
            )
        )
    for i, item in enumerate(_items(obj, "documents")):
        where = f"documents[{i}]"
        out.documents.append(
            cpb.TravelDocument(
                issuing_state=_state(item, "issuing_state", where=where),
                kind=_choice(item, "kind", DOCUMENT_KINDS, where),
                valid_from=_date(item, "valid_from", where=where),
                valid_until=_date(item, "valid_until", where=where),
            )
        )
    return out


def _items(obj: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = obj.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidInput(f"case file: {key} must be a list of objects")
    if len(items) > MAX_CASE_ITEMS:
        raise InvalidInput(f"case file: at most {MAX_CASE_ITEMS} {key}")
    return items


def _label(key: str, where: str) -> str:
    return f"{where}.{key}" if where else key


def _state(obj: Mapping[str, Any], key: str, optional: bool = False, where: str = "") -> str:
    value = obj.get(key)
    if optional and value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"case file: {_label(key, where)} must be a member state code")
    return check_member_state(value, f"case file: {_label(key, where)}")


def _date(obj: Mapping[str, Any], key: str, optional: bool = False, where: str = "") -> str:
    value = obj.get(key)
    if optional and value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"case file: {_label(key, where)} must be a date in YYYY-MM-DD form")
    return parse_date(value, f"case file: {_label(key, where)}").isoformat()


def _choice(obj: Mapping[str, Any], key: str, choices: Mapping[str, int], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, str) or value not in choices:
        raise InvalidInput(f"case file: {_label(key, where)} must be one of: {', '.join(choices)}")
    return choices[value]


def confirmation_digest(
    query_id: str,
    proposal_digest: str,
    action: str,
    override_state: str = "",
    override_criterion: str = "",
    reason: str = "",
) -> str:
    """SHA-256 hex of a confirmation's body (canonical JSON): what the official's signed
    statement carries in its ``probe_hash``, so that the signature covers the decision itself
    (which proposal, accepted or overridden, to which state, by which criterion, why)."""
    body = {
        "v": 1,
        "query_id": query_id,
        "proposal": proposal_digest,
        "action": action,
        "override_state": override_state,
        "override_criterion": override_criterion,
        "reason": reason,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _name(enum_type: Any, value: int, prefix: str) -> str:
    return str(enum_type.Name(value)).removeprefix(prefix).lower()


# The sex a record carries, as the domain writes it ("" when none was recorded).
_SEXES = {
    common_pb2.SEX_UNSPECIFIED: Sex.UNSPECIFIED.value,
    common_pb2.SEX_FEMALE: Sex.FEMALE.value,
    common_pb2.SEX_MALE: Sex.MALE.value,
    common_pb2.SEX_OTHER: Sex.OTHER.value,
}


def _hit(h: common_pb2.HitDetail) -> dict[str, str]:
    # Everything the hit detail says about the record, Eurodac's status fields included (the
    # mark, the state indicated as responsible and its basis, transfer / removal / left /
    # relocation dates): the standard request forms quote them (fedmatch/requester/forms.py).
    return {
        "member_state": h.member_state,
        "category": _name(common_pb2.Category, h.category, "CATEGORY_"),
        "reference": h.reference,
        "event_date": h.event_date,
        "event_place": h.event_place,
        "capture_date": h.capture_date,
        "sex": _SEXES.get(h.sex, ""),
        "mark": h.mark,
        "marked_on": h.marked_on,
        "responsible_state": h.responsible_state,
        "responsible_basis": h.responsible_basis,
        "transmitted_on": h.transmitted_on,
        "transferred_on": h.transferred_on,
        "removed_on": h.removed_on,
        "left_territory_on": h.left_territory_on,
        "relocated_to": h.relocated_to,
        "relocated_on": h.relocated_on,
    }


def _evidence(e: cpb.CaseEvidence) -> dict[str, str]:
    which = e.WhichOneof("item")
    if which == "hit":
        return {"kind": "hit", **_hit(e.hit.hit), "received_on": e.hit.received_on}
    if which == "family_member":
        m = e.family_member
        return {
            "kind": "family_member",
            "member_state": m.member_state,
            "relation": _name(cpb.FamilyRelation, m.relation, "FAMILY_RELATION_"),
            "status": _name(cpb.FamilyStatus, m.status, "FAMILY_STATUS_"),
        }
    if which == "document":
        d = e.document
        return {
            "kind": _name(cpb.DocumentKind, d.kind, "DOCUMENT_KIND_"),
            "issuing_state": d.issuing_state,
            "valid_from": d.valid_from,
            "valid_until": d.valid_until,
        }
    if which == "fact":
        return {"kind": "fact", "field": e.fact.field, "value": e.fact.value}
    return {"kind": "unknown"}


def proposal_summary(p: cpb.CaseProposal) -> dict[str, Any]:
    """A proposal as JSON-ready values: criterion, regime, procedure, responsible state,
    evidence (record metadata only), explanation and the deadlines with their due dates."""
    return {
        "digest": p.digest,
        "criterion": _name(cpb.Criterion, p.criterion, "CRITERION_"),
        "criterion_number": int(p.criterion),
        "regime": _name(cpb.Regime, p.regime, "REGIME_"),
        "procedure": _name(cpb.Procedure, p.procedure, "PROCEDURE_"),
        "responsible_state": p.responsible_state,
        "basis": p.basis,
        "registration_date": p.registration_date,
        "lodging_date": p.lodging_date,
        "complete": p.complete,
        "evidence": [_evidence(e) for e in p.evidence],
        "explanation": p.explanation,
        "deadlines": [
            {
                "name": d.name,
                "due": d.due,
                "start_event": d.start_event,
                "start_date": d.start_date,
                "period": _period(d.length, d.unit),
                "basis": d.basis,
                "consequence": d.consequence,
                "then": d.then,
                # Dated for a request sent on the due date: reply, silence, transfer.
                "follow_on": [
                    {
                        "name": f.name,
                        "latest": f.latest,
                        "after": f.after,
                        "period": _period(f.length, f.unit),
                        "basis": f.basis,
                        "meaning": f.meaning,
                    }
                    for f in d.follow_on
                ],
            }
            for d in p.deadlines
        ],
        # What the engine cannot decide: the official checks each on every proposal.
        "checklist": [{"code": c.code, "text": c.text} for c in p.checklist],
        # No state proposed: the official chooses among these (an override).
        "candidates": list(p.candidates),
    }


def _period(length: int, unit: str) -> str:
    return f"{length} {unit.removesuffix('s') if length == 1 else unit}"


def _earlier_application(obj: Mapping[str, Any]) -> str:
    value = obj.get("earlier_application", "")
    if value != "" and value not in EARLIER_APPLICATION:
        raise InvalidInput(
            f"case file: earlier_application must be one of {', '.join(EARLIER_APPLICATION)}"
        )
    return str(value)
