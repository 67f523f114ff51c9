"""The standard Dublin request an officer files, pre-filled from a proposal: as JSON and as a
printable, self-contained HTML page.

A resolve (``fedmatch resolve``) ends with the coordinator's proposal
(:func:`fedmatch.protocol.casefile.proposal_summary`); the verifiers' signed verdicts say who
compared which images and when. This module turns both, with the query's header
(:mod:`fedmatch.requester.candidates`), into the form the proposal's procedure calls for
(:func:`build_form`), and renders it (:func:`render_html`). Nothing is sent anywhere: the
document is a **proposal**, to be checked, completed and signed by the official.

Which form (:data:`FORM_KINDS`):

- Dublin III take charge: the request of Reg. (EC) No 1560/2003 Annex I (as replaced by
  Implementing Reg. (EU) No 118/2014); take back: its Annex III.
- AMMR (Reg. (EU) 2024/1351) take charge (Art. 39) and take back **notification** (Art. 41).
  Their standard forms are set by the AMMR's implementing act (Implementing Reg. (EU)
  2025/2055, which repeals 1560/2003 for the AMMR); its annexes could not be checked here, so
  these documents follow the structure of Annex I / Annex III and say so.

What was confirmed from the texts, and what was not (looked up for this module):

- Confirmed, Reg. 1560/2003 Art. 20 (as amended): every transmission carries a reference
  number that identifies the case and the requesting state; it begins with the letters that
  identify the requesting state in Eurodac, followed by the type of request (1 take charge,
  2 take back, 3 information, ...), and, for a request based on Eurodac data, the requested
  state's Eurodac reference number is added. The letters are taken to be the ISO 3166-1 code
  the federation uses everywhere (fedmatch.domain); Eurodac's own letter codes were not checked.
- Confirmed, Art. 1(1) and 2: the take charge form has mandatory fields and fields filled as
  the information is available, plus a free field; a request carries copies of the proof and
  circumstantial evidence with reference to the lists of Annex II; a take back request sets
  out its nature, reasons and provisions and includes the Eurodac hit.
- Confirmed, Annex II (as replaced by 118/2014), List A points I.1-3 (family of an
  unaccompanied minor, Art. 8; family member beneficiary of protection, Art. 9; family member
  applicant, Art. 10: written confirmation by the other state, register extracts, residence
  permits, documents proving the relationship) and I.4 (residence documents, Art. 12(1), (3),
  (4): the document, register extracts). List B for family links: verifiable information from
  the applicant, statements by the family members, reports of an international organisation.
- Not confirmed verbatim (the text was not retrievable here): the exact field list of
  Annexes I and III (the personal data below follow the forms' known headings: names, birth,
  nationality, documents, languages, family), and the point numbers of Annex II after I.4
  (visas, visa-waived entry, irregular entry, airport transit, take back); those are cited
  by article and subject, not by point number. The AMMR's urgent-reply article and its
  detention article were not confirmed either: the document says so instead of citing one.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmatch.domain import QueryHeader, parse_date
from fedmatch.errors import FedmatchError, InvalidInput, PreconditionFailed
from fedmatch.protocol.verification import (
    SignedVerdict,
    Verdict,
    VerifiedVerdict,
    verify_verdict,
)

__all__ = [
    "FORM_FORMAT",
    "FORM_KINDS",
    "PROPOSAL_BANNER",
    "FormOptions",
    "build_form",
    "check_verdicts",
    "form_kind",
    "read_resolve_output",
    "render_html",
    "write_form",
]

FORM_FORMAT = "fedmatch-dublin-form-v1"
PROPOSAL_BANNER = "PROPOSAL \u2014 to be checked and signed by the official"
TO_FILL = "to be filled by the officer"
MAX_RESOLVE_BYTES = 1024 * 1024
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class _Kind:
    name: str
    title: str
    model: str
    dublinet_type: int
    note: str = ""


_AMMR_FORM_NOTE = (
    "The AMMR's standard form is set by its implementing act (Implementing Reg. (EU) "
    "2025/2055); its annex could not be checked when this tool was written, so this document "
    "follows the structure of Reg. (EC) No 1560/2003 Annex {annex}. Transfer it to the "
    "official form before sending."
)

# (regime, procedure) -> the form; DubliNet types from Reg. 1560/2003 Art. 20(1).
FORM_KINDS: dict[tuple[str, str], _Kind] = {
    ("dublin_iii", "take_charge"): _Kind(
        "take_charge_request",
        "Request for taking charge (Dublin III, Reg. (EU) No 604/2013, Art. 21)",
        "Reg. (EC) No 1560/2003 Annex I, as replaced by Implementing Reg. (EU) No 118/2014",
        1,
    ),
    ("dublin_iii", "take_back"): _Kind(
        "take_back_request",
        "Request for taking back (Dublin III, Reg. (EU) No 604/2013, Art. 23 / 24)",
        "Reg. (EC) No 1560/2003 Annex III, as replaced by Implementing Reg. (EU) No 118/2014",
        2,
    ),
    ("ammr", "take_charge"): _Kind(
        "take_charge_request",
        "Take charge request (AMMR, Reg. (EU) 2024/1351, Art. 39)",
        "structure of Reg. (EC) No 1560/2003 Annex I (AMMR form not checked)",
        1,
        _AMMR_FORM_NOTE.format(annex="I"),
    ),
    ("ammr", "take_back"): _Kind(
        "take_back_notification",
        "Take back notification (AMMR, Reg. (EU) 2024/1351, Art. 41)",
        "structure of Reg. (EC) No 1560/2003 Annex III (AMMR form not checked)",
        2,
        _AMMR_FORM_NOTE.format(annex="III"),
    ),
}

_REGULATION = {
    "dublin_iii": "Dublin III (Reg. (EU) No 604/2013)",
    "ammr": "AMMR (Reg. (EU) 2024/1351)",
}

# The applicant's personal data of the forms that the federation does not hold (it keeps
# record metadata only, DOMAIN.md section 1): left blank for the officer.
_PERSONAL_FIELDS = (
    ("surname", "Surname(s)"),
    ("forenames", "Forename(s)"),
    ("other_names", "Former names, nicknames or pseudonyms"),
    ("date_of_birth", "Date of birth"),
    ("place_of_birth", "Place and country of birth"),
    ("nationality", "Nationality (or statelessness)"),
    ("identity_document", "Identity or travel document (type, number, validity, issuer)"),
    ("languages", "Language(s) spoken"),
    ("family", "Accompanying family members (names, dates of birth, relation)"),
    ("requesting_eurodac_reference", "Eurodac reference number of the requesting state"),
    ("address", "Address or place of stay (or of detention) in the requesting state"),
)

# Hit categories as the forms name them (Eurodac recast Art. 15, 22, 23, 24, 18, 26).
_CATEGORY_TEXT = {
    "applicant": "applicant for international protection",
    "irregular_crossing": "apprehended crossing an external border irregularly",
    "illegal_stay": "found staying illegally",
    "sar_disembarked": "disembarked after a search and rescue operation",
    "resettlement": "resettlement or admission",
    "temporary_protection": "beneficiary of temporary protection",
}
_MARK_TEXT = {
    "": "none",
    "protection_granted": "protection granted (Eurodac recast Art. 31(1))",
    "residence_document": "residence document issued (Eurodac recast Art. 31(4))",
}
# The Eurodac status fields a hit carries, in the order the form lists them.
_STATUS_FIELDS = (
    ("mark", "Mark"),
    ("marked_on", "Marked on"),
    ("responsible_state", "State indicated as responsible (Eurodac recast Art. 16(1))"),
    ("responsible_basis", "Basis of that indication"),
    ("transmitted_on", "Data transmitted on"),
    ("transferred_on", "Transferred on"),
    ("removed_on", "Removed on"),
    ("left_territory_on", "Left the territory on"),
    ("relocated_to", "Relocated to (Eurodac recast Art. 28(4))"),
    ("relocated_on", "Relocated on"),
)


@dataclass(frozen=True)
class FormOptions:
    """What the officer adds: the date of the request (always given, never defaulted), an
    urgent reply with its reason (Dublin III Art. 21(2)) and detention (Art. 28)."""

    request_date: dt.date
    urgent_reason: str = ""
    detention: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.request_date, dt.date):
            raise InvalidInput("the date of the request is required (YYYY-MM-DD)")
        reason = self.urgent_reason
        if reason != reason.strip() or len(reason) > MAX_REASON_CHARS:
            raise InvalidInput(
                f"the urgent reason is one line of at most {MAX_REASON_CHARS} characters, "
                "without leading or trailing blanks"
            )
        if not reason.isprintable():
            raise InvalidInput("the urgent reason must be printable text on one line")


# -- the inputs ------------------------------------------------------------------------------


def read_resolve_output(path: Path) -> tuple[str, dict[str, Any]]:
    """(query id, proposal) from the JSON ``fedmatch resolve`` printed, saved to ``path``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"resolve output {path} could not be read ({exc.strerror})") from None
    if len(data) > MAX_RESOLVE_BYTES:
        raise InvalidInput(f"resolve output {path} exceeds {MAX_RESOLVE_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidInput(f"resolve output {path} is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("query_id"), str):
        raise InvalidInput(f"{path} is not the output of `fedmatch resolve`")
    proposal = obj.get("proposal")
    if proposal is None:
        raise PreconditionFailed(
            f"resolve output {path} holds no proposal (no case was resolved): no form"
        )
    if not isinstance(proposal, dict):
        raise InvalidInput(f"resolve output {path}: proposal must be an object")
    return obj["query_id"], proposal


def check_verdicts(
    signed: Sequence[SignedVerdict],
    header: QueryHeader,
    candidates: Sequence[tuple[str, bytes]],
    verify_chain: Callable[[bytes], Any],
    now_ms: int | None = None,
) -> list[VerifiedVerdict]:
    """Every verdict verified for this query (:func:`verify_verdict`: query, signer's chain
    to the federation root and CRLs, role, key, signature) and naming one of its candidate
    hits. Any bad verdict refuses the whole form: a verification record is only as good as
    its weakest line."""
    wanted = {(state, handle) for state, handle in candidates}
    out = []
    for i, item in enumerate(signed, 1):
        try:
            verified = verify_verdict(
                item, header.query_id, header.requesting_state, verify_chain, now_ms
            )
        except FedmatchError as exc:
            raise type(exc)(
                f"verdict {i} refused: {exc} (this form is for query {header.query_id} of "
                f"{header.requesting_state})"
            ) from None
        hit = verified.statement.hit
        if (hit.member_state, hit.handle) not in wanted:
            raise InvalidInput(f"verdict {i} names a hit that is not a candidate of this query")
        out.append(verified)
    return out


# -- the form --------------------------------------------------------------------------------


def form_kind(proposal: Mapping[str, Any], requesting_state: str) -> str:
    """The form a proposal calls for; PreconditionFailed, saying why, when it calls for none
    (no state proposed, the requesting state itself responsible, protection granted
    elsewhere)."""
    return _kind(proposal, requesting_state).name


def _kind(proposal: Mapping[str, Any], requesting_state: str) -> _Kind:
    procedure = _text(proposal, "procedure")
    regime = _text(proposal, "regime")
    state = _text(proposal, "responsible_state")
    if "protection" in procedure or _protected_elsewhere(proposal, state):
        raise PreconditionFailed(
            "no form: international protection was granted elsewhere, so this is no Dublin "
            "case (inadmissibility or readmission, not a take charge or take back request)"
        )
    if not state:
        candidates = proposal.get("candidates") or []
        named = ", ".join(str(c) for c in candidates) if isinstance(candidates, list) else ""
        raise PreconditionFailed(
            "no form: the proposal names no state; the official must choose among the "
            f"candidates ({named or 'none listed'}) and confirm that choice first"
        )
    if state == requesting_state or procedure == "none":
        raise PreconditionFailed(
            f"no form: {state} is responsible itself (procedure {procedure!r}): no transfer, "
            "so no take charge or take back request"
        )
    kind = FORM_KINDS.get((regime, procedure))
    if kind is None:
        raise InvalidInput(f"no standard form for procedure {procedure!r} under {regime!r}")
    return kind


def _protected_elsewhere(proposal: Mapping[str, Any], state: str) -> bool:
    # A record marked "protection granted" at the proposed state is no Dublin case
    # (DOMAIN.md section 3): the engine proposes nothing then, and a form must not either.
    return any(
        e.get("kind") == "hit"
        and e.get("mark") == "protection_granted"
        and e.get("member_state") == state
        for e in _evidence_items(proposal)
    )


def build_form(
    proposal: Mapping[str, Any],
    header: QueryHeader,
    verdicts: Sequence[VerifiedVerdict],
    options: FormOptions,
) -> dict[str, Any]:
    """The pre-filled form for ``proposal`` (a :func:`proposal_summary` dict) as JSON-ready
    values. ``verdicts`` are this query's verified verdicts (:func:`check_verdicts`); each
    hit of the requested state used as evidence must have been confirmed by one of them."""
    kind = _kind(proposal, header.requesting_state)
    regime = _text(proposal, "regime")
    requested = _text(proposal, "responsible_state")
    registered = _text(proposal, "registration_date")
    if registered and options.request_date < parse_date(registered, "registration_date"):
        raise InvalidInput(
            f"the date of the request {options.request_date} is before the application's "
            f"registration on {registered}"
        )
    evidence = _evidence_items(proposal)
    hits = [e for e in evidence if e.get("kind") == "hit"]
    record = _verification_record(hits, verdicts, requested)
    # The requested state's own record; for an AMMR take back notification to the state
    # Eurodac indicates as responsible, the record that indicates it (another state's).
    deciding = next((h for h in hits if h.get("member_state") == requested), None) or next(
        (h for h in hits if h.get("responsible_state") == requested), None
    )
    return {
        "format": FORM_FORMAT,
        "kind": kind.name,
        "title": kind.title,
        "form_model": kind.model,
        "form_note": kind.note,
        "status": PROPOSAL_BANNER,
        "regime": regime,
        "regulation": _REGULATION.get(regime, regime),
        "procedure": _text(proposal, "procedure"),
        "requesting_state": header.requesting_state,
        "requested_state": requested,
        "request_date": options.request_date.isoformat(),
        "dublinet_reference": _dublinet(kind, header, deciding),
        "legal_basis": _text(proposal, "basis"),
        "criterion": _text(proposal, "criterion"),
        "urgent": _urgent(kind, regime, options),
        "detention": _detention(regime, options),
        "case": {
            "query_id": header.query_id,
            "case_reference": header.case_reference,
            "unit": header.unit,
            "operator": header.operator,
            "proposal_digest": _text(proposal, "digest"),
            "registration_date": registered,
            "lodging_date": _text(proposal, "lodging_date"),
            "complete": bool(proposal.get("complete", False)),
        },
        "applicant": _applicant(hits, verdicts, requested),
        "eurodac_records": [_record(h) for h in hits],
        "evidence": [_labelled(e, kind, regime) for e in evidence],
        "verification_record": record,
        "deadlines": [_deadline(d, options.request_date) for d in _items(proposal, "deadlines")],
        "checklist": [
            {"code": str(c.get("code", "")), "text": str(c.get("text", ""))}
            for c in _items(proposal, "checklist")
        ],
        "explanation": _text(proposal, "explanation"),
        "signature": {
            "official": "",
            "place_and_date": "",
            "note": f"{TO_FILL}: name, signature and stamp of the official who checked it",
        },
    }


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise InvalidInput(f"proposal: {key} must be text")
    return value


def _items(obj: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = obj.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidInput(f"proposal: {key} must be a list of objects")
    return items


def _evidence_items(proposal: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return _items(proposal, "evidence")


def _dublinet(
    kind: _Kind, header: QueryHeader, deciding: Mapping[str, Any] | None
) -> dict[str, Any]:
    # Reg. 1560/2003 Art. 20(2): the requesting state's letters, the type, then (a request
    # based on Eurodac data) the requested state's Eurodac reference number (for a state
    # indicated as responsible on another state's record, that record's number). Without
    # such a record among the evidence, the national case number identifies the case
    # (Art. 20(1)) and the form says so.
    eurodac = str(deciding.get("reference", "")) if deciding else ""
    tail = eurodac or header.case_reference
    return {
        "value": f"{header.requesting_state}{kind.dublinet_type}{tail}",
        "requesting_state": header.requesting_state,
        "type": kind.dublinet_type,
        "type_text": "take charge" if kind.dublinet_type == 1 else "take back",
        "eurodac_reference": eurodac,
        "basis": "Reg. (EC) No 1560/2003 Art. 20",
        "note": ""
        if eurodac
        else "no Eurodac record of the requested state among the evidence: the case "
        "reference of the requesting state stands in for the Eurodac number",
    }


def _urgent(kind: _Kind, regime: str, options: FormOptions) -> dict[str, Any]:
    if not options.urgent_reason:
        return {"requested": False, "reason": "", "basis": ""}
    if kind.dublinet_type != 1:
        raise InvalidInput(
            "--urgent is the urgent reply of a take charge request (Dublin III Art. 21(2)); a "
            "take back request or notification has none (detention: --detention)"
        )
    basis = (
        "Dublin III Art. 21(2); the requested state replies within the time asked for, "
        "at the latest within 1 month (Art. 22(6))"
        if regime == "dublin_iii"
        else "AMMR: urgent reply; the article was not confirmed here, the official checks it"
    )
    return {"requested": True, "reason": options.urgent_reason, "basis": basis}


def _detention(regime: str, options: FormOptions) -> dict[str, Any]:
    basis = (
        "Dublin III Art. 28(3): request within 1 month of lodging, reply within 2 weeks"
        if regime == "dublin_iii"
        else "AMMR: detention shortens the time limits; the article was not confirmed here"
    )
    return {"detained": options.detention, "basis": basis if options.detention else ""}


def _applicant(
    hits: Sequence[Mapping[str, Any]], verdicts: Sequence[VerifiedVerdict], requested: str
) -> dict[str, Any]:
    # Sex is what the federation knows: the sex the requesting state's verifiers declared for
    # the person searched, else the one the requested state's record carries.
    declared = {v.statement.probe_sex.value for v in verdicts} - {""}
    recorded = [str(h.get("sex", "")) for h in hits if h.get("member_state") == requested]
    sex, source = "", ""
    if len(declared) == 1:
        sex, source = declared.pop(), "declared by the requesting state's verifiers"
    elif recorded and recorded[0]:
        sex, source = recorded[0], f"as recorded by {requested}"
    return {
        "known": {"sex": sex, "sex_source": source},
        "to_fill": [
            {"field": field, "label": label, "value": "", "note": TO_FILL}
            for field, label in _PERSONAL_FIELDS
        ],
    }


def _record(hit: Mapping[str, Any]) -> dict[str, str]:
    keys = ("member_state", "reference", "category", "event_date", "event_place",
            "capture_date", "sex", "received_on", *(k for k, _ in _STATUS_FIELDS))  # fmt: skip
    return {k: str(hit.get(k, "")) for k in keys}


def _labelled(item: Mapping[str, Any], kind: _Kind, regime: str) -> dict[str, Any]:
    """One evidence item with its list (A probative, B circumstantial) and the Annex II
    entry that puts it there."""
    what = str(item.get("kind", ""))
    state = str(item.get("member_state") or item.get("issuing_state") or "")
    if what == "hit":
        category = str(item.get("category", ""))
        if kind.dublinet_type == 2:
            point = "section II, take back (Art. 18(1)(b)-(d), 20(5)): the Eurodac result"
        elif category in ("irregular_crossing", "sar_disembarked"):
            point = (
                "section I, irregular entry at an external border (Art. 13(1)): the Eurodac result"
            )
        else:
            point = "the Eurodac result (Art. 1(2) of Reg. 1560/2003)"
        description = (
            f"Eurodac hit, verified by the requesting state's experts: record "
            f"{item.get('reference', '')} of {state}, "
            f"{_CATEGORY_TEXT.get(category, category)}, event {item.get('event_date', '')} at "
            f"{item.get('event_place', '')}"
        )
        entry = ("A", point, description, "")
    elif what in ("residence_document", "long_stay_visa", "short_stay_visa",
                  "airport_transit_visa"):  # fmt: skip
        name = what.replace("_", " ")
        point = (
            "section I point 4, residence documents (Art. 12(1), (3), (4))"
            if what == "residence_document"
            else "section I, visas (Art. 12(2), (3), (4))"
        )
        entry = (
            "A",
            point,
            f"{name} issued by {state}, valid {item.get('valid_from', '')} to "
            f"{item.get('valid_until', '')}",
            "List A when the document itself, a register extract or the issuing state's "
            "confirmation is attached; declared by the applicant only, it is List B",
        )
    elif what == "family_member":
        status = str(item.get("status", ""))
        article = {"beneficiary_of_protection": "Art. 9", "applicant": "Art. 10"}.get(
            status, "Art. 8"
        )
        entry = (
            "B",
            f"section I, family ({article}): verifiable information from the applicant, "
            "statements by the family members",
            f"{str(item.get('relation', '')).replace('_', ' ')} in {state}, "
            f"{status.replace('_', ' ')}, as reported",
            "proof (List A: written confirmation by that state, register extract, residence "
            "permit, documents proving the relationship) is to be attached by the officer",
        )
    elif what == "fact":
        field = str(item.get("field", ""))
        subject = {
            "visa_waived_entry_state": "visa-waived entry (Art. 14)",
            "visa_waived_in_requesting_state": "visa-waived entry (Art. 14(2))",
            "airport_transit_state": "international transit area of an airport (Art. 15)",
            "unaccompanied_minor": "unaccompanied minor (Art. 8)",
        }.get(field, "declarations")
        entry = (
            "B",
            f"section I, {subject}: declarations by the applicant, tickets and other "
            "circumstantial evidence",
            f"{field.replace('_', ' ')}: {item.get('value', '')}",
            "",
        )
    else:
        entry = ("B", "circumstantial", what, "")
    lst, point, description, note = entry
    annex = "Reg. (EC) No 1560/2003 Annex II" + (
        "" if regime == "dublin_iii" else " (by analogy: the AMMR's lists are not checked here)"
    )
    return {
        "list": lst,
        "list_name": "probative (proof)" if lst == "A" else "circumstantial (indicative)",
        "annex": f"{annex}, List {lst}, {point}",
        "kind": what,
        "member_state": state,
        "description": description,
        "note": note,
        "item": {str(k): str(v) for k, v in item.items()},
    }


def _verification_record(
    hits: Sequence[Mapping[str, Any]], verdicts: Sequence[VerifiedVerdict], requested: str
) -> list[dict[str, str]]:
    """Who compared which images, when: for each hit used as evidence, the verdicts on the
    candidate hits of its state. The proposal does not name a hit's handle, so a state's hit
    is matched by member state; each line names the handle, and a handle anyone rejected was
    discarded (Eurodac Art. 38(4)) and is left out."""
    rejected = {v.statement.hit for v in verdicts if v.statement.verdict is Verdict.REJECT}
    out: list[dict[str, str]] = []
    for hit in hits:
        state = str(hit.get("member_state", ""))
        mine = [
            v for v in verdicts
            if v.statement.member_state == state and v.statement.hit not in rejected
        ]  # fmt: skip
        if state == requested and not any(v.statement.verdict is Verdict.CONFIRM for v in mine):
            raise PreconditionFailed(
                f"no verdict of this query confirms the hit of {state} used as evidence: the "
                "form needs its verification record (Eurodac Art. 38(4)); pass the verdict "
                "files of `fedmatch verify-hit`"
            )
        for v in sorted(mine, key=lambda v: (v.statement.issued_ms, v.verifier)):
            s = v.statement
            out.append({
                "member_state": state,
                "reference": str(hit.get("reference", "")),
                "handle": s.handle,
                "verifier": v.verifier,
                "verdict": s.verdict.value,
                "probe_image_sha256": s.probe_image,
                "candidate_image_sha256": s.candidate_image,
                "compared_at": _utc(s.issued_ms),
            })  # fmt: skip
    return out


def _utc(ms: int) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _deadline(d: Mapping[str, Any], request_date: dt.date) -> dict[str, Any]:
    out: dict[str, Any] = {k: str(d.get(k, "")) for k in (
        "name", "due", "start_event", "start_date", "period", "basis", "consequence", "then"
    )}  # fmt: skip
    due = out["due"]
    # A request dated after a due date: the form says so next to what missing it means.
    out["passed_on_request_date"] = bool(due) and parse_date(due, "deadline due") < request_date
    # What follows a request sent on the due date, dated (reply, silence, transfer).
    follow_on = d.get("follow_on", [])
    out["follow_on"] = [
        {k: str(f.get(k, "")) for k in ("name", "latest", "after", "period", "basis", "meaning")}
        for f in (follow_on if isinstance(follow_on, list) else [])
        if isinstance(f, dict)
    ]
    return out


# -- the printable page ----------------------------------------------------------------------

_CSS = """
@page { size: A4; margin: 16mm 14mm 18mm 14mm; }
* { box-sizing: border-box; }
body { font: 10pt/1.35 "DejaVu Sans", Arial, sans-serif; color: #000; margin: 0 auto;
       max-width: 182mm; }
h1 { font-size: 14pt; margin: 4mm 0 1mm; }
h2 { font-size: 11pt; margin: 5mm 0 1.5mm; border-bottom: 1px solid #000;
     break-after: avoid; page-break-after: avoid; }
.banner { border: 2px solid #000; padding: 2mm; font-weight: bold; text-align: center;
          letter-spacing: .02em; margin: 2mm 0; }
.model, .note { font-size: 8.5pt; color: #333; }
table { width: 100%; border-collapse: collapse; margin: 1mm 0 2mm; }
th, td { border: 1px solid #666; padding: 1mm 1.5mm; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
th { background: #eee; width: 38%; font-weight: 600; }
table.grid th { width: auto; }
tr { break-inside: avoid; page-break-inside: avoid; }
.blank { color: #555; font-style: italic; }
.hash { font-family: "DejaVu Sans Mono", monospace; font-size: 7.5pt;
        overflow-wrap: anywhere; }
@media print { body { max-width: none; } }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: object) -> str:
    text = str(value)
    return _e(text) if text else '<span class="blank">\u2014</span>'


def _rows(pairs: Sequence[tuple[str, object]]) -> str:
    # A digest is set in a small monospace face and may break anywhere.
    return "".join(
        f'<tr><th>{_e(k)}</th><td class="hash">{_cell(v)}</td></tr>'
        if "SHA-256" in k
        else f"<tr><th>{_e(k)}</th><td>{_cell(v)}</td></tr>"
        for k, v in pairs
    )


def _grid(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    top = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="grid"><thead><tr>{top}</tr></thead><tbody>{body}</tbody></table>'


def render_html(form: Mapping[str, Any]) -> str:
    """The form as one printable A4 HTML page: no scripts, no external resources, every
    value escaped, marked as a proposal at its top and bottom."""
    ref = form["dublinet_reference"]
    urgent, detention, case = form["urgent"], form["detention"], form["case"]
    known = form["applicant"]["known"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # No resource may load from anywhere: the page is filed as it is.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        f"<title>{_e(form['title'])} \u2014 {_e(ref['value'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<div class="banner">{_e(form["status"])}</div>',
        f"<h1>{_e(form['title'])}</h1>",
        f'<p class="model">Form: {_e(form["form_model"])}</p>',
    ]
    if form["form_note"]:
        parts.append(f'<p class="note">{_e(form["form_note"])}</p>')
    parts += [
        "<h2>1. Request</h2><table>",
        _rows(
            [
                ("Requesting member state", form["requesting_state"]),
                ("Requested member state", form["requested_state"]),
                ("Date of the request", form["request_date"]),
                ("DubliNet reference number", ref["value"]),
                ("Type of request (Reg. 1560/2003 Art. 20)", f"{ref['type']} ({ref['type_text']})"),
                ("Requested state's Eurodac reference", ref["eurodac_reference"]),
                ("Legal basis", form["legal_basis"]),
                ("Regulation", form["regulation"]),
                ("Urgent reply requested", "yes" if urgent["requested"] else "no"),
                ("Reason for urgency", urgent["reason"]),
                ("Basis of the urgent reply", urgent["basis"]),
                ("Applicant in detention", "yes" if detention["detained"] else "no"),
                ("Basis (detention)", detention["basis"]),
            ]
        ),
        "</table>",
    ]
    if ref["note"]:
        parts.append(f'<p class="note">{_e(ref["note"])}</p>')
    parts += [
        "<h2>2. Case</h2><table>",
        _rows(
            [
                ("Case reference of the requesting state", case["case_reference"]),
                ("Unit / operator", f"{case['unit']} / {case['operator']}"),
                ("Application registered", case["registration_date"]),
                ("Application lodged", case["lodging_date"]),
                ("fedmatch query id", case["query_id"]),
                ("Proposal digest (SHA-256)", case["proposal_digest"]),
                (
                    "Every node answered",
                    "yes" if case["complete"] else "no: the proposal may be incomplete",
                ),
            ]
        ),
        "</table>",
        "<h2>3. Applicant</h2><table>",
        _rows([("Sex", known["sex"]), ("Source of the sex", known["sex_source"])]),
        "".join(
            f'<tr><th>{_e(f["label"])}</th><td><span class="blank">{_e(f["note"])}</span></td></tr>'
            for f in form["applicant"]["to_fill"]
        ),
        "</table>",
        "<h2>4. Eurodac records (hits)</h2>",
    ]
    for rec in form["eurodac_records"]:
        parts += [
            "<table>",
            _rows(
                [
                    ("Member state of origin", rec["member_state"]),
                    ("Eurodac reference number", rec["reference"]),
                    ("Category", _CATEGORY_TEXT.get(rec["category"], rec["category"])),
                    ("Date of the event", rec["event_date"]),
                    ("Place of the event", rec["event_place"]),
                    ("Date the biometric data were taken", rec["capture_date"]),
                    ("Sex on the record", rec["sex"]),
                    ("Hit received on", rec["received_on"]),
                    *[
                        (label, _MARK_TEXT.get(rec[key], rec[key]) if key == "mark" else rec[key])
                        for key, label in _STATUS_FIELDS
                    ],
                ]
            ),
            "</table>",
        ]
    if not form["eurodac_records"]:
        parts.append('<p class="blank">No Eurodac record among the evidence.</p>')
    parts += [
        "<h2>5. Evidence (Reg. 1560/2003 Annex II)</h2>",
        _grid(
            ["List", "Evidence", "Annex II"],
            [
                (
                    f"List {e['list']} \u2014 {e['list_name']}",
                    e["description"] + (f" (note: {e['note']})" if e["note"] else ""),
                    e["annex"],
                )
                for e in form["evidence"]
            ],
        ),
        "<h2>6. Verification record (Eurodac Art. 38(4); AI Act Art. 14(5))</h2>",
        "".join(
            "<table>"
            + _rows(
                [
                    ("Hit", f"{v['member_state']} {v['reference']} (handle {v['handle']})"),
                    ("Verifier (certificate name)", v["verifier"]),
                    ("Verdict", v["verdict"]),
                    ("Probe image SHA-256", v["probe_image_sha256"]),
                    ("Candidate image SHA-256", v["candidate_image_sha256"]),
                    ("Compared at (UTC)", v["compared_at"]),
                ]
            )
            + "</table>"
            for v in form["verification_record"]
        ),
        "<h2>7. Time limits and what missing them means</h2>",
        _grid(
            ["Time limit", "Due", "From", "Basis", "If missed", "Then"],
            [
                (
                    d["name"].replace("_", " ")
                    + (
                        " (passed on the date of the request)"
                        if d["passed_on_request_date"]
                        else ""
                    ),
                    d["due"],
                    f"{d['start_event'].replace('_', ' ')} {d['start_date']} + {d['period']}",
                    d["basis"],
                    d["consequence"],
                    "; ".join(
                        [d["then"]]
                        + [
                            f"{f['name'].replace('_', ' ')}: {f['latest']} ({f['meaning']}, "
                            f"{f['basis']})"
                            for f in d["follow_on"]
                        ]
                    ),
                )
                for d in form["deadlines"]
            ],
        ),
        "<h2>8. For the official to check (the engine cannot decide these)</h2><ul>",
        "".join(f"<li>{_e(c['text'])}</li>" for c in form["checklist"]),
        "</ul>",
        "<h2>9. Reasons (the proposal's explanation)</h2>",
        f"<p>{_cell(form['explanation'])}</p>",
        "<h2>10. Additional information and signature</h2><table>",
        _rows(
            [
                ("Additional information", ""),
                ("Official (name, signature, stamp)", form["signature"]["official"]),
                ("Place and date", form["signature"]["place_and_date"]),
            ]
        ),
        "</table>",
        f'<p class="note">{_e(form["signature"]["note"])}.</p>',
        f'<div class="banner">{_e(form["status"])}</div>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_form(form: Mapping[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write ``<kind>.json`` and ``<kind>.html`` into ``directory`` (created if missing),
    owner-only: the form carries personal data."""
    from fedmatch.fileio import write_atomically

    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"--out {directory} could not be created ({exc.strerror})") from None
    if not directory.is_dir():
        raise InvalidInput(f"--out {directory} is not a directory")
    kind = str(form["kind"])
    as_json = directory / f"{kind}.json"
    as_html = directory / f"{kind}.html"
    write_atomically(as_json, (json.dumps(form, indent=1) + "\n").encode(), mode=0o600)
    write_atomically(as_html, render_html(form).encode(), mode=0o600)
    return as_json, as_html
