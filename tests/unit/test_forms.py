"""The standard Dublin request forms (fedmatch/requester/forms.py) and `fedmatch dublin-form`:
every field pre-filled under both regimes, Annex II List A / B labels, the verification record
read from real signed verdicts, escaping, and the refusals (another query's verdict, a
proposal that names no state)."""

from __future__ import annotations

import copy
import json
import secrets
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from fedmatch.cli.main import main
from fedmatch.domain import Purpose, QueryHeader, Sex
from fedmatch.errors import InvalidInput, PermissionDenied, PreconditionFailed
from fedmatch.protocol.casefile import proposal_summary
from fedmatch.protocol.transport import Security
from fedmatch.protocol.verification import (
    Evidence,
    HitKey,
    SignedVerdict,
    Verdict,
    VerifiedVerdict,
    sign_verdict,
    write_verdicts,
)
from fedmatch.requester.forms import (
    PROPOSAL_BANNER,
    FormOptions,
    build_form,
    check_verdicts,
    form_kind,
    render_html,
)
from fedmatch.rpc.v1 import common_pb2
from fedmatch.rpc.v1 import coordinator_pb2 as cpb
from tests.federation import OPERATOR, UNIT, expert, expert_name, pki

D = __import__("datetime").date
IT_HANDLE = bytes.fromhex("0000000100000007")
IT_OTHER = bytes.fromhex("0000000100000009")
FR_HANDLE = bytes.fromhex("0000000200000003")
PROBE = "a" * 64
IT_IMAGE = "b" * 64
# 2025-01-02T09:30:00Z and five minutes later: verdicts in the past of any test run.
T_ANNA = 1_735_810_200_000
T_BEN = T_ANNA + 300_000
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("forms")
    pki(out)
    return out


def _trust(tmp: Path) -> Security:
    return Security(pki(tmp)["operator-DE"].tls)


def _header(query_id: str | None = None) -> QueryHeader:
    return QueryHeader(
        query_id or secrets.token_hex(16), "DE", Purpose.ASYLUM_DUBLIN,
        "Reg. (EU) 2024/1358 Art. 15", "DE-BAMF-2026-0042", UNIT, OPERATOR,
    )  # fmt: skip


CANDIDATES = [("IT", IT_HANDLE), ("IT", IT_OTHER), ("FR", FR_HANDLE)]


def _hit(state: str, category: str, reference: str, place: str = "Lampedusa") -> dict[str, str]:
    return {
        "kind": "hit", "member_state": state, "category": category, "reference": reference,
        "event_date": "2025-03-10", "event_place": place, "capture_date": "2025-03-11",
        "sex": "F", "mark": "", "marked_on": "", "responsible_state": "IT",
        "responsible_basis": "AMMR Art. 33(1)", "transmitted_on": "2025-03-11",
        "transferred_on": "", "removed_on": "", "left_territory_on": "2025-04-01",
        "relocated_to": "", "relocated_on": "", "received_on": "2025-09-01",
    }  # fmt: skip


DEADLINE = {
    "name": "take_charge_request_after_hit", "due": "2025-11-01",
    "start_event": "hit_received", "start_date": "2025-09-01", "period": "2 months",
    "basis": "Dublin III (Reg. 604/2013) Art. 21(1) second subparagraph",
    "consequence": "missing it makes DE responsible (Art. 21(1))",
    "then": "the requested state replies within 2 months of the request (Art. 22(1))",
    "follow_on": [{
        "name": "reply_due", "latest": "2026-01-01", "after": "request_sent",
        "period": "2 months", "basis": "Dublin III Art. 22(1)",
        "meaning": "the requested state's reply is due",
    }],
}  # fmt: skip
CHECKLIST = [
    {"code": "best_interests", "text": "the best interests of any child concerned (Art. 6)"},
    {"code": "detention", "text": "detention: shorter time limits apply (Art. 28(3))"},
]


def _proposal(
    regime: str = "dublin_iii",
    procedure: str = "take_charge",
    state: str = "IT",
    basis: str = "Dublin III (Reg. 604/2013) Art. 13(1)",
    evidence: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A proposal as `fedmatch resolve` prints it (casefile.proposal_summary)."""
    category = "applicant" if procedure == "take_back" else "irregular_crossing"
    return {
        "digest": "d" * 64, "criterion": "irregular_entry", "criterion_number": 4,
        "regime": regime, "procedure": procedure, "responsible_state": state, "basis": basis,
        "registration_date": "2025-09-01", "lodging_date": "2025-09-02", "complete": True,
        "evidence": evidence if evidence is not None else [_hit("IT", category, "IT1-0042")],
        "explanation": "Criterion 4 (irregular entry): IT is responsible.",
        "deadlines": [DEADLINE], "checklist": CHECKLIST, "candidates": [],
    }  # fmt: skip


def _confirm(
    tmp: Path, header: QueryHeader, person: str, handle: bytes, at: int, state: str = "IT"
) -> SignedVerdict:
    signer = expert(tmp, "DE", person)
    return sign_verdict(
        signer.key, signer.chain_pem, signer.name, header.query_id, "DE",
        HitKey(state, handle), Evidence(PROBE, IT_IMAGE), Verdict.CONFIRM, Sex.FEMALE,
        issued_ms=at,
    )  # fmt: skip


def _signed(tmp: Path, header: QueryHeader) -> list[SignedVerdict]:
    """Anna and Ben confirm the IT hit; Anna rejects the second IT candidate."""
    reject = expert(tmp, "DE", "anna").reject(
        header.query_id, "DE", HitKey("IT", IT_OTHER), Evidence(PROBE, "c" * 64),
        "different_person",
    )  # fmt: skip
    return [
        _confirm(tmp, header, "anna", IT_HANDLE, T_ANNA),
        _confirm(tmp, header, "ben", IT_HANDLE, T_BEN),
        reject,
    ]


def _verdicts(tmp: Path, header: QueryHeader) -> list[VerifiedVerdict]:
    return check_verdicts(_signed(tmp, header), header, CANDIDATES, _trust(tmp).verify_chain)


OPTIONS = FormOptions(D(2025, 9, 20), "arrested for illegal stay", detention=True)


# ---------------------------------------------------------------------------- every field


FORMS = [
    # (regime, procedure, kind, DubliNet type, form model's annex)
    ("dublin_iii", "take_charge", "take_charge_request", 1, "Annex I"),
    ("dublin_iii", "take_back", "take_back_request", 2, "Annex III"),
    ("ammr", "take_charge", "take_charge_request", 1, "Annex I"),
    ("ammr", "take_back", "take_back_notification", 2, "Annex III"),
]


@pytest.mark.parametrize(("regime", "procedure", "kind", "type_", "annex"), FORMS)
def test_every_field_is_filled_for_each_form(
    tmp: Path, regime: str, procedure: str, kind: str, type_: int, annex: str
) -> None:
    header = _header()
    basis = "Dublin III (Reg. 604/2013) Art. 18(1)(b)" if procedure == "take_back" else (
        "AMMR (Reg. 2024/1351) Art. 33(1)" if regime == "ammr" else
        "Dublin III (Reg. 604/2013) Art. 13(1)"
    )  # fmt: skip
    proposal = _proposal(regime, procedure, basis=basis)
    urgent = OPTIONS.urgent_reason if procedure == "take_charge" else ""
    options = FormOptions(OPTIONS.request_date, urgent, detention=True)
    form = build_form(proposal, header, _verdicts(tmp, header), options)

    assert form_kind(proposal, "DE") == form["kind"] == kind
    assert annex in form["form_model"]
    # The AMMR's own form was not checked: the document says it follows 1560/2003's annex.
    assert ("could not be checked" in form["form_note"]) is (regime == "ammr")
    assert form["status"] == PROPOSAL_BANNER
    assert (form["requesting_state"], form["requested_state"]) == ("DE", "IT")
    assert form["request_date"] == "2025-09-20"
    # Art. 20: the requesting state's letters, the type, the requested state's Eurodac number.
    ref = form["dublinet_reference"]
    assert ref["value"] == f"DE{type_}IT1-0042"
    assert (ref["type"], ref["eurodac_reference"], ref["note"]) == (type_, "IT1-0042", "")
    assert form["legal_basis"] == basis  # exactly as the proposal says
    assert form["urgent"]["requested"] is (procedure == "take_charge")
    if procedure == "take_charge":
        assert form["urgent"]["reason"] == "arrested for illegal stay"
        assert ("Art. 21(2)" in form["urgent"]["basis"]) is (regime == "dublin_iii")
    assert form["detention"]["detained"] is True
    assert ("Art. 28(3)" in form["detention"]["basis"]) is (regime == "dublin_iii")
    assert form["case"] == {
        "query_id": header.query_id, "case_reference": "DE-BAMF-2026-0042", "unit": UNIT,
        "operator": OPERATOR, "proposal_digest": "d" * 64, "registration_date": "2025-09-01",
        "lodging_date": "2025-09-02", "complete": True,
    }  # fmt: skip
    # What the federation knows of the person, and blanks for what it does not hold.
    assert form["applicant"]["known"]["sex"] == "F"
    blanks = form["applicant"]["to_fill"]
    assert {"surname", "forenames", "date_of_birth", "nationality"} <= {f["field"] for f in blanks}
    assert all(f["value"] == "" and f["note"] == "to be filled by the officer" for f in blanks)
    (record,) = form["eurodac_records"]
    assert record["reference"] == "IT1-0042" and record["event_place"] == "Lampedusa"
    assert (record["responsible_state"], record["responsible_basis"]) == ("IT", "AMMR Art. 33(1)")
    assert record["left_territory_on"] == "2025-04-01" and record["capture_date"] == "2025-03-11"
    # The deadline passed before the request date? No: due 2025-11-01, request 2025-09-20.
    (deadline,) = form["deadlines"]
    assert deadline["consequence"] == DEADLINE["consequence"]
    assert deadline["passed_on_request_date"] is False
    assert deadline["follow_on"] == DEADLINE["follow_on"]
    assert [c["code"] for c in form["checklist"]] == ["best_interests", "detention"]
    assert [v["verifier"] for v in form["verification_record"]] == [
        expert_name("DE", "anna"), expert_name("DE", "ben"),
    ]  # fmt: skip
    # Nothing of the JSON is left empty that the proposal and the header could fill.
    filled = {k: v for k, v in form.items() if k not in ("form_note", "signature")}
    assert all(v not in ("", None, [], {}) for v in filled.values()), filled

    page = render_html(form)
    for value in (
        f"DE{type_}IT1-0042",
        basis,
        "2025-09-20",
        header.query_id,
        "d" * 64,
        "IT1-0042",
        "Lampedusa",
        expert_name("DE", "ben"),
        IT_IMAGE,
        "missing it makes DE responsible (Art. 21(1))",
        "to be filled by the officer",
    ):
        assert value in page, value  # fmt: skip
    assert page.count(PROPOSAL_BANNER) >= 2


def test_a_deadline_already_passed_on_the_request_date_is_marked(tmp: Path) -> None:
    header = _header()
    late = FormOptions(D(2025, 11, 2))
    form = build_form(_proposal(), header, _verdicts(tmp, header), late)
    assert form["deadlines"][0]["passed_on_request_date"] is True
    assert "(passed on the date of the request)" in render_html(form)


# ---------------------------------------------------------------------------- List A / B


def test_evidence_is_labelled_list_a_or_list_b_per_annex_ii(tmp: Path) -> None:
    evidence = [
        _hit("IT", "irregular_crossing", "IT1-0042"),
        {"kind": "residence_document", "issuing_state": "IT",
         "valid_from": "2024-01-01", "valid_until": "2024-12-31"},
        {"kind": "short_stay_visa", "issuing_state": "IT",
         "valid_from": "2025-01-01", "valid_until": "2025-01-30"},
        {"kind": "family_member", "member_state": "IT", "relation": "spouse_or_partner",
         "status": "beneficiary_of_protection"},
        {"kind": "fact", "field": "visa_waived_entry_state", "value": "IT"},
        {"kind": "fact", "field": "airport_transit_state", "value": "IT"},
    ]  # fmt: skip
    header = _header()
    form = build_form(_proposal(evidence=evidence), header, _verdicts(tmp, header), OPTIONS)
    labels = [(e["kind"], e["list"]) for e in form["evidence"]]
    assert labels == [
        ("hit", "A"), ("residence_document", "A"), ("short_stay_visa", "A"),
        ("family_member", "B"), ("fact", "B"), ("fact", "B"),
    ]  # fmt: skip
    hit, residence, visa, family, waived, transit = form["evidence"]
    assert "Annex II, List A" in hit["annex"] and "Art. 13(1)" in hit["annex"]
    assert "point 4" in residence["annex"] and "Art. 12" in residence["annex"]
    assert "Art. 12(2)" in visa["annex"]
    assert "List B" in family["annex"] and "Art. 9" in family["annex"]
    assert family["list_name"] == "circumstantial (indicative)"
    assert "Art. 14" in waived["annex"] and "Art. 15" in transit["annex"]
    # A take back's Eurodac hit is the proof of section II.
    header = _header()
    back = build_form(_proposal(procedure="take_back"), header, _verdicts(tmp, header),
                      FormOptions(D(2025, 9, 20)))  # fmt: skip
    assert "section II" in back["evidence"][0]["annex"] and back["evidence"][0]["list"] == "A"
    page = render_html(form)
    assert "List A \u2014 probative (proof)" in page
    assert "List B \u2014 circumstantial (indicative)" in page


# ---------------------------------------------------------------------------- verification record


def test_the_verification_record_is_the_verdicts(tmp: Path) -> None:
    header = _header()
    form = build_form(_proposal(), header, _verdicts(tmp, header), OPTIONS)
    assert form["verification_record"] == [
        {
            "member_state": "IT", "reference": "IT1-0042", "handle": IT_HANDLE.hex(),
            "verifier": expert_name("DE", person), "verdict": "confirm",
            "probe_image_sha256": PROBE, "candidate_image_sha256": IT_IMAGE,
            "compared_at": at,
        }
        for person, at in (("anna", "2025-01-02T09:30:00.000Z"),
                           ("ben", "2025-01-02T09:35:00.000Z"))
    ]  # fmt: skip
    # The rejected second IT candidate was discarded: not part of the record.
    assert IT_OTHER.hex() not in json.dumps(form)


def test_a_hit_of_the_requested_state_without_a_confirmation_gets_no_form(tmp: Path) -> None:
    header = _header()
    only_fr = check_verdicts(
        [_confirm(tmp, header, "anna", FR_HANDLE, T_ANNA, state="FR")], header, CANDIDATES,
        _trust(tmp).verify_chain,
    )  # fmt: skip
    with pytest.raises(PreconditionFailed, match="no verdict of this query confirms the hit of IT"):
        build_form(_proposal(), header, only_fr, OPTIONS)


def test_verdicts_of_another_query_or_forged_are_refused(tmp: Path) -> None:
    header, other = _header(), _header()
    trust = _trust(tmp).verify_chain
    wrong = _confirm(tmp, other, "anna", IT_HANDLE, T_ANNA)
    with pytest.raises(PermissionDenied, match="verdict 2 refused: a verdict is for another query"):
        check_verdicts([_confirm(tmp, header, "ben", IT_HANDLE, T_BEN), wrong], header,
                       CANDIDATES, trust)  # fmt: skip
    good = _confirm(tmp, header, "anna", IT_HANDLE, T_ANNA)
    forged = SignedVerdict(good.statement, bytes(64), good.signer_chain)
    with pytest.raises(PermissionDenied, match="signature does not verify"):
        check_verdicts([forged], header, CANDIDATES, trust)
    # A verdict on a hit that is not among this query's candidates.
    with pytest.raises(InvalidInput, match="not a candidate of this query"):
        check_verdicts([good], header, [("FR", FR_HANDLE)], trust)


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"responsible_state": "", "procedure": "none", "candidates": ["FR", "IT"]},
         r"choose among the candidates \(FR, IT\)"),
        ({"responsible_state": "DE", "procedure": "none"}, "DE is responsible itself"),
        ({"procedure": "protection_elsewhere"}, "protection was granted elsewhere"),
    ],
)  # fmt: skip
def test_a_proposal_without_a_state_to_ask_gets_no_form(
    tmp: Path, change: dict[str, Any], why: str
) -> None:
    header = _header()
    with pytest.raises(PreconditionFailed, match=why):
        build_form({**_proposal(), **change}, header, _verdicts(tmp, header), OPTIONS)


def test_a_protection_marked_record_of_the_requested_state_gets_no_form(tmp: Path) -> None:
    proposal = _proposal()
    proposal["evidence"][0].update(mark="protection_granted", marked_on="2025-06-01")
    header = _header()
    with pytest.raises(PreconditionFailed, match="protection was granted elsewhere"):
        build_form(proposal, header, _verdicts(tmp, header), OPTIONS)


def test_options_are_checked(tmp: Path) -> None:
    header = _header()
    verdicts = _verdicts(tmp, header)
    with pytest.raises(InvalidInput, match="urgent reply of a take charge request"):
        build_form(_proposal(procedure="take_back"), header, verdicts, OPTIONS)
    with pytest.raises(InvalidInput, match="before the application's registration"):
        build_form(_proposal(), header, verdicts, FormOptions(D(2025, 8, 31)))
    with pytest.raises(InvalidInput, match="printable text on one line"):
        FormOptions(D(2025, 9, 20), "line one\nline two")


# ---------------------------------------------------------------------------- the page


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs |= {name for name, _ in attrs}


def test_hostile_values_are_escaped_and_the_page_is_self_contained(tmp: Path) -> None:
    proposal = _proposal(evidence=[_hit("IT", "irregular_crossing", "IT1-0042", HOSTILE)])
    proposal["explanation"] = HOSTILE
    header = _header()
    form = build_form(proposal, header, _verdicts(tmp, header),
                      FormOptions(D(2025, 9, 20), HOSTILE))  # fmt: skip
    page = render_html(form)
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    parsed = _Tags()
    parsed.feed(page)
    assert parsed.tags <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "div",
        "h1",
        "h2",
        "p",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "span",
        "ul",
        "li",
    }
    assert not parsed.attrs & {"src", "href", "onerror", "onload"}  # fmt: skip
    # Printable on A4, and nothing to fetch.
    assert "@page { size: A4;" in page and "url(" not in page and "@import" not in page


def test_the_proposal_on_the_wire_carries_the_hit_status_fields() -> None:
    # casefile.proposal_summary copies every field of a hit detail that a form quotes.
    detail = common_pb2.HitDetail(
        member_state="IT", handle=IT_HANDLE, category=common_pb2.CATEGORY_APPLICANT,
        reference="IT1-7", event_date="2025-03-10", event_place="Bari",
        capture_date="2025-03-10", sex=common_pb2.SEX_MALE, mark="", marked_on="",
        responsible_state="IT", responsible_basis="AMMR Art. 33(1)",
        transmitted_on="2025-03-11", transferred_on="2025-05-01", removed_on="2025-06-01",
        left_territory_on="2025-07-01", relocated_to="FR", relocated_on="2025-08-01",
    )  # fmt: skip
    pb = cpb.CaseProposal(
        evidence=[cpb.CaseEvidence(hit=cpb.ReceivedHit(hit=detail, received_on="2025-09-01"))]
    )
    (hit,) = proposal_summary(pb)["evidence"]
    assert hit == {
        "kind": "hit", "member_state": "IT", "category": "applicant", "reference": "IT1-7",
        "event_date": "2025-03-10", "event_place": "Bari", "capture_date": "2025-03-10",
        "sex": "M", "mark": "", "marked_on": "", "responsible_state": "IT",
        "responsible_basis": "AMMR Art. 33(1)", "transmitted_on": "2025-03-11",
        "transferred_on": "2025-05-01", "removed_on": "2025-06-01",
        "left_territory_on": "2025-07-01", "relocated_to": "FR", "relocated_on": "2025-08-01",
        "received_on": "2025-09-01",
    }  # fmt: skip


# ---------------------------------------------------------------------------- the command


def _files(tmp: Path, work: Path, header: QueryHeader, proposal: dict[str, Any]) -> list[str]:
    """The command's inputs in ``work``: operator TOML, candidates, resolve output, verdicts."""
    tls = pki(tmp)["operator-DE"].tls
    crls = ", ".join(f'"{c}"' for c in tls.crls)
    (work / "operator.toml").write_text(
        f'[tls]\nkey = "{tls.key}"\nchain = "{tls.chain}"\nroot = "{tls.root}"\ncrls = [{crls}]\n'
    )
    (work / "hits.json").write_text(json.dumps({
        "format": "fedmatch-candidate-hits-v1", "query_id": header.query_id,
        "requesting_state": "DE", "purpose": header.purpose.value,
        "legal_basis": header.legal_basis, "case_reference": header.case_reference,
        "unit": UNIT, "operator": OPERATOR,
        "hits": [{"member_state": s, "handle": h.hex()} for s, h in CANDIDATES],
    }))  # fmt: skip
    (work / "resolved.json").write_text(json.dumps(
        {"query_id": header.query_id, "decision": {}, "proposal": proposal, "hits": []}
    ))  # fmt: skip
    signed = _signed(tmp, header)
    write_verdicts(signed[:1], work / "anna.json")
    write_verdicts(signed[1:], work / "ben.json")
    return [
        "dublin-form", "--config", str(work / "operator.toml"),
        "--resolved", str(work / "resolved.json"), "--candidates", str(work / "hits.json"),
        "--verdicts", str(work / "anna.json"), str(work / "ben.json"),
        "--date", "2025-09-20", "--out", str(work / "forms"),
    ]  # fmt: skip


def test_the_command_writes_the_json_and_the_printable_page(
    tmp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = _header()
    argv = _files(tmp, tmp_path, header, _proposal("ammr", "take_back"))
    assert main([*argv, "--detention"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["kind"], out["dublinet_reference"]) == ("take_back_notification", "DE2IT1-0042")
    form = json.loads((tmp_path / "forms" / "take_back_notification.json").read_bytes())
    assert form["detention"]["detained"] is True
    assert len(form["verification_record"]) == 2
    page = (tmp_path / "forms" / "take_back_notification.html").read_text()
    assert PROPOSAL_BANNER in page and "Take back notification (AMMR" in page
    assert (tmp_path / "forms" / "take_back_notification.html").stat().st_mode & 0o077 == 0


def test_the_command_refuses_a_verdict_file_of_another_query(
    tmp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = _header()
    argv = _files(tmp, tmp_path, header, _proposal())
    write_verdicts([_confirm(tmp, _header(), "ben", IT_HANDLE, T_BEN)], tmp_path / "ben.json")
    assert main(argv) == 2
    assert "a verdict is for another query" in capsys.readouterr().err
    assert not (tmp_path / "forms" / "take_charge_request.json").exists()
    # No state proposed: a clear refusal, no file.
    no_state = copy.deepcopy(_proposal())
    no_state.update(responsible_state="", procedure="none", candidates=["FR", "IT"])
    argv = _files(tmp, tmp_path, header, no_state)
    assert main(argv) == 2
    assert "the official must choose among the candidates" in capsys.readouterr().err
