"""``fedmatch demo --scenario dublin``: from enrolment to confirmed Dublin decisions.

The same federation as the default demo (:mod:`fedmatch.demo.federation`: three node
processes DE, IT, FR and a coordinator process on 127.0.0.1, a federation PKI, mutual TLS on
every channel, signed requests, signed audit logs), and six people who later apply for
protection in DE:

1. *irregular entry*: photographed crossing irregularly into IT about 9 months ago (enrolled at
   IT as ``irregular_crossing``); the case proposal is IT, take charge (criterion 4, AMMR);
2. *take back, AMMR, indicated state*: an earlier application in FR about 4 months ago, for
   which FR's record indicates IT as responsible in Eurodac (``node status``); the take back
   notification goes to IT (AMMR Art. 36(1)(b), Eurodac recast Art. 16(1)), not to FR;
3. *take back, AMMR, none indicated*: an earlier application in FR 2 months ago, determination
   still running: the notification goes to FR (AMMR Art. 38(4));
4. *take back, Dublin III*: an application registered in DE on 2026-06-15 (before the AMMR
   applies) after one in FR in February 2026 that FR rejected (the case file says so): a take
   back request to FR under Art. 18(1)(d);
5. *family outranks the hit*: photographed crossing into IT, but DE's case file says the
   spouse is a beneficiary of international protection in FR; the proposal is FR, take
   charge, on the family criterion (2), which comes before irregular entry;
6. *protection granted elsewhere*: an applicant record at FR marked "protection granted"
   (Eurodac recast Art. 31(1), ``node mark --kind protection_granted``): no Dublin case, no
   state is proposed, the checklist flags inadmissibility or readmission; nothing to confirm.

In each case two DE experts (each with a ``verifier`` certificate) sign their verdicts on the
candidate hits, the coordinator asks for the details of the verified hits only, proposes the
responsible state with its evidence and due dates, and a DE official confirms the proposal in
a signed request (logged as ``decision_confirmed``); where a request follows, its standard
form (``fedmatch dublin-form``: Annex I / III, or the AMMR notification) is written, as JSON
and as printable HTML, to ``<work dir>/forms/<case>/``. An auditor then verifies every log.
The last stdout line is JSON: each case's criterion, addressee, basis, procedure, deadlines
with what missing them means and what follows, the form's fields and confirmation, and the
audit's verdict.

Photographs: with ``--photos DIR`` (an ``identities.csv`` of ``file,identity``), the three
identities with the most photos, one photo enrolled and another looked up; otherwise the
photos the insightface package ships (the portrait, and two faces of the group photo), each
looked up through :func:`fedmatch.demo.photos.second_capture`.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fedmatch.audit.auditor import AuditorConfig
from fedmatch.biometrics.pipeline import FacePipeline
from fedmatch.demo.parties import (
    AUDITOR,
    DIM,
    LEGAL_BASIS,
    MODEL,
    OFFICER,
    OFFICERS,
    OFFICIAL,
    auditor_toml,
    enroll,
    node_register,
    nodes_tables,
    officer_signer,
    operator_toml,
    say,
    start_coordinator,
    start_nodes,
)
from fedmatch.demo.parties import requester as officer_requester
from fedmatch.demo.photos import encoded, read_identities, read_image, second_capture
from fedmatch.domain import Category, Purpose, QueryHeader
from fedmatch.errors import InvalidInput
from fedmatch.grpcutil.server import make_channel
from fedmatch.pki.names import dns_name
from fedmatch.pki.provision import PartyFiles, provision
from fedmatch.protocol.casefile import case_inputs_from_json
from fedmatch.protocol.limits import MAX_RECEIVE_BYTES
from fedmatch.protocol.transport import Security
from fedmatch.protocol.verification import Evidence, HitKey, SignedVerdict, VerdictSigner
from fedmatch.protocol.wire import header_to_pb
from fedmatch.requester import Requester
from fedmatch.requester.forms import FormOptions, build_form, check_verdicts, write_form
from fedmatch.requester.officer_channel import officer_channel
from fedmatch.rpc.v1 import node_pb2, node_pb2_grpc

__all__ = ["run_dublin_demo"]

REQUESTING, ENTRY, EARLIER = "DE", "IT", "FR"
# A Dublin III case: registered before the AMMR applies (coordinator.dublin.AMMR_START).
DUBLIN_III_REGISTRATION = dt.date(2026, 6, 15)
STATES = (REQUESTING, ENTRY, EARLIER)
EXPERTS = ("anna", "ben")  # DE's hit verifiers


@dataclass(frozen=True)
class _Person:
    enrol: Any  # a path or a BGR image
    probe: Any


@dataclass(frozen=True)
class _Case:
    name: str
    person: _Person
    enrol_state: str
    category: Category
    event: dt.date
    place: str
    case_file: dict[str, Any] | None
    expected: tuple[str, str, str]  # criterion, responsible state, procedure
    registration: dt.date  # of DE's application
    mark: str = ""  # the enrolling state marks its record (Eurodac recast Art. 31)
    indicated: tuple[str, str] | None = None  # (state, basis) indicated as responsible


def _people(photos: Path | None) -> tuple[str, list[_Person]]:
    if photos is not None:
        return _folder_people(photos)
    images = resources.files("insightface") / "data" / "images"
    portrait = read_image(Path(str(images / "Tom_Hanks_54745.png")))
    group = read_image(Path(str(images / "t1.jpg")))
    people = [_Person(portrait, second_capture(portrait, 2))] + [
        _Person(face, second_capture(face, 2)) for face in _faces(group)[: PEOPLE - 1]
    ]
    return (
        f"photos shipped by the insightface package (a portrait, {PEOPLE - 1} faces of a group)",
        people,
    )


def _faces(group: Any) -> list[Any]:
    """Each face of a group photo in its own image, left to right, with a margin of 0.7 of
    its box on every side: a face picked by index in the whole photo and in its second
    capture need not be the same person (the detector's order follows its scores)."""
    from fedmatch.biometrics.detect import FaceDetector

    height, width = group.shape[:2]
    crops = []
    for face in sorted(FaceDetector().detect(group), key=lambda f: f.bbox[0]):
        x, y, w, h = face.bbox
        x0, y0 = int(max(0, x - 0.7 * w)), int(max(0, y - 0.7 * h))
        x1, y1 = int(min(width, x + 1.7 * w)), int(min(height, y + 1.7 * h))
        crops.append(group[y0:y1, x0:x1].copy())
    return crops


def _folder_people(folder: Path) -> tuple[str, list[_Person]]:
    by_person = read_identities(folder)
    ranked = sorted(by_person.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    chosen = [(p, sorted(files)) for p, files in ranked if len(files) >= 2][:PEOPLE]
    if len(chosen) < PEOPLE:
        raise InvalidInput(f"--photos needs {PEOPLE} identities with at least two photos each")
    people = [_Person(folder / files[0], folder / files[1]) for _, files in chosen]
    names = ", ".join(f"{p}: {files[0]} enrolled, {files[1]} looked up" for p, files in chosen)
    return f"photos from {folder.name} ({names})", people


PEOPLE = 6  # one per case


def _cases(people: list[_Person], today: dt.date) -> list[_Case]:
    def ago(days: int) -> dt.date:
        return today - dt.timedelta(days=days)

    spouse = {
        "lodging_date": today.isoformat(),
        "family": [
            {
                "member_state": EARLIER,
                "relation": "spouse_or_partner",
                "status": "beneficiary_of_protection",
            }
        ],
    }
    rejected = {"earlier_application": "rejected"}
    return [
        _Case("irregular_entry", people[0], ENTRY, Category.IRREGULAR_CROSSING, ago(270),
              "Lampedusa", None, ("irregular_entry", ENTRY, "take_charge"), today),
        _Case("take_back_ammr_indicated", people[1], EARLIER, Category.APPLICANT, ago(120),
              "Paris", None, ("first_application", ENTRY, "take_back"), today,
              indicated=(ENTRY, "AMMR Art. 33(1)")),
        _Case("take_back_ammr_determining", people[2], EARLIER, Category.APPLICANT, ago(60),
              "Lyon", None, ("first_application", EARLIER, "take_back"), today),
        _Case("take_back_dublin_iii", people[3], EARLIER, Category.APPLICANT,
              dt.date(2026, 2, 2), "Calais", rejected,
              ("first_application", EARLIER, "take_back"), DUBLIN_III_REGISTRATION),
        _Case("family_outranks_hit", people[4], ENTRY, Category.IRREGULAR_CROSSING, ago(200),
              "Pozzallo", spouse, ("family", EARLIER, "take_charge"), today),
        _Case("protection_granted_elsewhere", people[5], EARLIER, Category.APPLICANT,
              ago(400), "Marseille", None,
              ("protection_granted", "", "protection_elsewhere"), today,
              mark="protection_granted"),
    ]  # fmt: skip


def _configure(workdir: Path, parties: dict[str, PartyFiles], records: int, today: dt.date) -> str:
    """Registers, node configurations and operator files, as the default demo writes them;
    returns the auditor's verifier key."""
    coordinator_key = parties["coordinator"].vkey
    auditor_key = parties[f"auditor-{AUDITOR}"].vkey
    for old in [*workdir.glob("audit-*"), workdir / "auditor-state"]:
        if old.is_dir():
            shutil.rmtree(old)
    for old in [
        *workdir.glob("*.replay.sqlite*"),
        *workdir.glob("*.cases.sqlite*"),
        *workdir.glob("*.notices.sqlite*"),
    ]:
        old.unlink()
    for i, state in enumerate(STATES):
        operator_toml(
            workdir / f"operator-{state}.toml", parties[f"operator-{state}"],
            parties[f"officer-{OFFICER}-{state}"], workdir,
        )  # fmt: skip
        node_register(
            workdir, parties, state, records, 2000 + i, today, auditor_key, coordinator_key
        )
    return auditor_key


def run_dublin_demo(
    records: int = 20_000, workdir: Path | None = None, photos: Path | None = None
) -> int:
    started = time.perf_counter()
    # The coordinator counts hit receipt days in UTC; the scenario's dates follow it.
    today = dt.datetime.now(dt.UTC).date()
    with ExitStack() as stack:
        temporary = workdir is None
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="fedmatch-dublin-"))
            )
        workdir.mkdir(parents=True, exist_ok=True)
        say(f"fedmatch demo --scenario dublin: nodes {', '.join(STATES)} + coordinator "
             f"(work dir {workdir})")  # fmt: skip

        t0 = time.perf_counter()
        parties = provision(
            workdir, list(STATES), auditors=(AUDITOR,), experts={REQUESTING: EXPERTS},
            officers={state: OFFICERS for state in STATES},
        )  # fmt: skip
        auditor_key = _configure(workdir, parties, records, today)
        say(
            f"1. PKI (root, a CA per state and for the EU; nodes, coordinator, an operator "
            f"workstation and {len(OFFICERS)} officers (personal certificates: their keys "
            f"sign the requests) per state, {len(EXPERTS)} hit verifiers of {REQUESTING}, an "
            "auditor) "
            f"and {records:,} synthetic records per node ({time.perf_counter() - t0:.1f}s)"
        )

        t0 = time.perf_counter()
        addresses = start_nodes(stack, workdir, STATES)
        node_keys = {state: parties[f"node-{state}"].vkey for state in STATES}
        nodes_toml = nodes_tables(addresses, node_keys)
        coordinator = start_coordinator(stack, workdir, parties, auditor_key, nodes_toml)
        auditor_file = workdir / "auditor.toml"
        auditor_toml(
            auditor_file,
            parties[f"auditor-{AUDITOR}"],
            coordinator,
            parties["coordinator"].vkey,
            nodes_toml,
        )
        say(
            f"2. servers up over mutual TLS ({time.perf_counter() - t0:.1f}s): "
            + ", ".join(f"{s} at {a}" for s, a in addresses.items())
            + f", coordinator at {coordinator}"
        )

        t0 = time.perf_counter()
        source, people = _people(photos)
        pipeline = FacePipeline()
        if pipeline.model_id != MODEL or pipeline.dimension != DIM:
            raise InvalidInput("the demo registers are built for the default SFace model")
        cases = _cases(people, today)
        for i, case in enumerate(cases):
            event = case.event
            reference = f"{case.enrol_state}-{event.year}-{case.place[:3].upper()}-{4711 + i}"
            enroll(
                addresses[case.enrol_state],
                parties[f"operator-{case.enrol_state}"].tls,
                parties[f"officer-{OFFICER}-{case.enrol_state}"],
                case.enrol_state,
                encoded(case.person.enrol),
                reference,
                case.category,
                event,
                case.place,
            )
            status = _record_status(
                addresses[case.enrol_state], parties[f"operator-{case.enrol_state}"],
                parties[f"officer-{OFFICER}-{case.enrol_state}"], case, reference,
            )  # fmt: skip
            say(
                f"3.{i + 1} enrolled person {i + 1} at {case.enrol_state} as "
                f"{case.category.value} ({event}, {case.place}){status}"
            )
        say(f"   faces from {source} ({time.perf_counter() - t0:.1f}s)")

        # The officer who looks up and resolves, and the official who confirms: each signs
        # with their own key, over the same workstation's mTLS channel.
        workstation = parties[f"operator-{REQUESTING}"]
        unit = f"{REQUESTING}-dublin-unit"
        requester = officer_requester(
            coordinator, workstation, parties[f"officer-{OFFICER}-{REQUESTING}"], unit
        )
        stack.callback(requester.close)
        official = officer_requester(
            coordinator, workstation, parties[f"officer-{OFFICIAL}-{REQUESTING}"], unit
        )
        stack.callback(official.close)
        experts = [
            VerdictSigner(
                parties[f"verifier-{p}-{REQUESTING}"].signer(),
                parties[f"verifier-{p}-{REQUESTING}"].tls.chain.read_bytes(),
            )
            for p in EXPERTS
        ]
        results: list[dict[str, Any]] = []
        forms = workdir / "forms"
        for i, case in enumerate(cases):
            results.append(
                _run_case(
                    i + 1,
                    case,
                    pipeline,
                    (requester, official),
                    experts,
                    today,
                    workstation,
                    forms,
                )
            )

        from fedmatch.audit.auditor import load_auditor_config, run_audit

        auditor_config = load_auditor_config(auditor_file)
        audit = run_audit(auditor_config)
        confirmed = _confirmations_verified(auditor_config)
        say(
            "5. audit verify: "
            + ", ".join(
                f"{origin.rsplit('/', 1)[-1]} {p['tree_size']} entries"
                + ("" if p["verified"] else " NOT VERIFIED")
                for origin, p in audit.summary["parties"].items()
            )
            + f"; {audit.summary['violations']} violations; the coordinator's log holds "
            f"{confirmed} decision_confirmed entries"
            + (" (work dir removed: use --workdir to keep it)" if temporary else "")
        )
        to_confirm = sum(1 for r in results if r["confirmation"] is not None)
        ok = audit.ok and confirmed == to_confirm and all(r["as_expected"] for r in results)
        summary: dict[str, Any] = {
            "scenario": "dublin",
            "ok": ok,
            "requesting_state": REQUESTING,
            "registration_date": today.isoformat(),
            "forms_dir": str(forms) if not temporary else "",
            "cases": results,
            "audit": {
                k: audit.summary[k]
                for k in ("ok", "violations", "searches_checked", "hit_reveals_checked")
            }
            | {"decisions_confirmed_logged": confirmed},
            "records_per_node": records,
            "photos": source,
            "security": {"transport": "mtls", "signed_requests": True, "signed_verdicts": True},
            "total_ms": round((time.perf_counter() - started) * 1e3, 1),
        }
        say("6. shutting down")
    print(json.dumps(summary), flush=True)
    return 0 if ok else 1


def _record_status(
    address: str, operator: PartyFiles, officer: PartyFiles, case: _Case, reference: str
) -> str:
    """The enrolling state's officer marks its record or records the state indicated as
    responsible (the node's lifecycle RPCs, signed by the officer's key, as ``fedmatch node
    mark|record-status`` call them)."""
    if not case.mark and case.indicated is None:
        return ""
    signer = officer_signer(officer)
    header = header_to_pb(
        QueryHeader(secrets.token_hex(16), case.enrol_state, Purpose.ASYLUM_DUBLIN,
                    LEGAL_BASIS, reference, unit=f"{case.enrol_state}-dublin-unit",
                    operator=signer.officer)
    )  # fmt: skip
    security = Security(operator.tls)
    channel = make_channel(
        address, MAX_RECEIVE_BYTES, MAX_RECEIVE_BYTES, security.channel_credentials(),
        dns_name("node", case.enrol_state),
    )  # fmt: skip
    try:
        stub = node_pb2_grpc.NodeServiceStub(officer_channel(channel, signer))
        if case.mark:
            stub.MarkRecord(
                node_pb2.MarkRecordRequest(
                    header=header, reference=reference, marked=True, mark_kind=case.mark
                ),
                timeout=30,
            )
            return f", marked {case.mark}"
        assert case.indicated is not None
        state, basis = case.indicated
        stub.SetRecordStatus(
            node_pb2.SetRecordStatusRequest(
                header=header, reference=reference, responsible_state=state,
                responsible_basis=basis,
            ),
            timeout=30,
        )  # fmt: skip
        return f", {state} indicated as responsible ({basis})"
    finally:
        channel.close()


def _run_case(
    number: int,
    case: _Case,
    pipeline: FacePipeline,
    officers: tuple[Requester, Requester],
    experts: list[VerdictSigner],
    today: dt.date,
    workstation: PartyFiles,
    forms: Path,
) -> dict[str, Any]:
    """``officers``: the officer who looks up and resolves, and the official who confirms."""
    requester, official = officers
    probe = pipeline.template(case.person.probe)
    header = requester.header(
        Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, f"{REQUESTING}-BAMF-{today.year}-{5510 + number}"
    )
    report = requester.lookup(probe, header)
    # The candidates' face crops, released for proven matches only; each verdict binds the
    # SHA-256 of the probe image and of the candidate image its expert compared.
    fetched = requester.fetch_packets(report, encoded(case.person.probe))
    verdicts = [
        expert.confirm(
            header.query_id,
            REQUESTING,
            HitKey(p.member_state, p.handle),
            Evidence(fetched.probe_sha256, p.image_sha256),
        )
        for expert in experts
        for p in fetched.packets
    ]
    inputs = case_inputs_from_json(case.case_file) if case.case_file is not None else None
    resolved = requester.resolve(
        report, case.registration.isoformat(), verdicts, case_inputs=inputs
    )
    proposal = resolved.proposal
    if proposal is None:
        raise InvalidInput("the coordinator answered without a case proposal")
    due = {d["name"]: d["due"] for d in proposal["deadlines"]}
    say(
        f"4.{number} {case.name}: lookup from {REQUESTING} -> "
        + ", ".join(f"{n.member_state} {n.matches} hit(s)" for n in report.nodes)
        + f"; {' and '.join(e.name.split('.')[0] for e in experts)} signed their verdicts"
        + (f"; case file: {json.dumps(case.case_file)}" if case.case_file else "")
    )
    say(f"    proposal: {proposal['explanation']}")
    say("    due: " + (", ".join(f"{n} {d}" for n, d in due.items()) or "no transfer"))
    form = _form(proposal, header, report.matches, verdicts, today, workstation, forms / case.name)
    if form is not None:
        say(f"    form: {form['title']} to {form['requested_state']}, DubliNet reference "
            f"{form['dublinet_reference']}, written to {form['html']}")  # fmt: skip
    confirmed: dict[str, Any] | None = None
    if proposal["responsible_state"]:
        # The official signs the confirmation with their own key: they are its operator.
        confirmation = official.confirm_decision(header, proposal["digest"])
        say(
            f"    confirmed by {confirmation.official_id} at {confirmation.confirmed_at} "
            f"(coordinator log entry {confirmation.log_index})"
        )
        confirmed = {
            "official": confirmation.official_id,
            "action": confirmation.action,
            "responsible_state": confirmation.responsible_state,
            "confirmed_at": confirmation.confirmed_at,
            "log_index": confirmation.log_index,
        }
    else:
        # No Dublin case (protection granted elsewhere): nothing for an official to accept.
        say("    no state to confirm: " + ", ".join(c["code"] for c in proposal["checklist"][-1:]))
    got = (proposal["criterion"], proposal["responsible_state"], proposal["procedure"])
    return {
        "case": case.name,
        "query_id": header.query_id,
        "hits": [
            {k: h[k] for k in ("member_state", "category", "reference", "event_date")}
            for h in resolved.hits
        ],
        "registration_date": case.registration.isoformat(),
        "criterion": proposal["criterion"],
        "responsible_state": proposal["responsible_state"],  # the addressee of the request
        "procedure": proposal["procedure"],
        "regime": proposal["regime"],
        "basis": proposal["basis"],
        "explanation": proposal["explanation"],
        "due_dates": due,
        "deadlines": [
            {k: d[k] for k in ("name", "due", "basis", "consequence")}
            | {"follow_on": {f["name"]: f["latest"] for f in d["follow_on"]}}
            for d in proposal["deadlines"]
        ],
        "flags": [c["code"] for c in proposal["checklist"]],
        "complete": proposal["complete"],
        "proposal_digest": proposal["digest"],
        "hit_rule_decision": resolved.responsible_state,
        "form": form,
        "confirmation": confirmed,
        "as_expected": got == case.expected and proposal["complete"],
    }


def _form(
    proposal: dict[str, Any],
    header: QueryHeader,
    candidates: Sequence[tuple[str, bytes]],
    verdicts: Sequence[SignedVerdict],
    today: dt.date,
    workstation: PartyFiles,
    out: Path,
) -> dict[str, Any] | None:
    """The standard form of the request the proposal calls for, as ``fedmatch dublin-form``
    writes it (JSON and printable HTML under ``out``), dated today; None when no request
    follows (no transfer, no state proposed, protection granted elsewhere)."""
    if proposal["procedure"] not in ("take_charge", "take_back"):
        return None
    checked = check_verdicts(verdicts, header, candidates, Security(workstation.tls).verify_chain)
    form = build_form(proposal, header, checked, FormOptions(today))
    _, as_html = write_form(form, out)
    return {
        "kind": form["kind"],
        "title": form["title"],
        "requested_state": form["requested_state"],
        "dublinet_reference": form["dublinet_reference"]["value"],
        "legal_basis": form["legal_basis"],
        "evidence": [
            {k: e[k] for k in ("kind", "member_state", "list", "annex")} for e in form["evidence"]
        ],
        "verification_record": form["verification_record"],
        "html": str(as_html),
    }


def _confirmations_verified(config: AuditorConfig) -> int:
    """The decision_confirmed entries of the coordinator's log, counted in the copy the
    auditor has just verified."""
    from fedmatch.audit.auditor import PartyState
    from fedmatch.audit.entry import EventKind, SignedEntry

    entries = PartyState(config.state_dir, config.coordinator.origin).entries()
    return sum(SignedEntry.decode(raw).kind is EventKind.DECISION_CONFIRMED for raw in entries)
