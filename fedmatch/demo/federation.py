"""``fedmatch demo``: a three-state federation on this machine, end to end.

Three node processes and a coordinator process, real gRPC servers on 127.0.0.1 (free ports),
each node with a synthetic background register (random unit vectors standing in for other
people's SFace templates). One traveller is enrolled from photographs at node B as an
irregular border crossing and at node C as found staying illegally (later; not an
application, which would come first: take back); a different photograph of the traveller is
then looked up from node A, and a photograph of someone else as a control (see
:mod:`fedmatch.demo.photos` for which photographs). B is responsible by first entry. The
last stdout line is JSON: decision, per-node outcomes, timings and bytes.

The demo first provisions a federation PKI in the work directory (as the `fedmatch pki`
commands would, step by step): a root CA, one CA per member state and one for the EU, and a
certificate and an Ed25519 signing key for every node, the coordinator, one operator
workstation and its officials per state and an auditor (``ca/``, ``keys/``,
``tls/<party>/``). Every channel is mutual TLS, every party checks its peer's certificate
and role, and every lookup and resolve is signed by the requesting officer with their own
key (a personal ``officer`` certificate; the workstation's certificate makes the channel).
Every party signs its own audit log with its key; nodes witness the coordinator's log and
search only for requests on its record. Two people of the requesting state verify the
candidate hits before their details are asked for. The work directory also gets an
``auditor.toml`` for ``fedmatch audit verify`` and an ``operator-<STATE>.toml`` per state
(its officer officer-12's) for ``fedmatch lookup|resolve|enroll --config``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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
    operator_toml,
    say,
    start_coordinator,
    start_nodes,
    verifier_toml,
)
from fedmatch.demo.parties import requester as officer_requester
from fedmatch.demo.photos import DemoPhotos, encoded, folder_photos, packaged_photos
from fedmatch.domain import Category, Purpose, Sex
from fedmatch.errors import InvalidInput
from fedmatch.pki.provision import PartyFiles, provision
from fedmatch.protocol.verification import Evidence, HitKey, VerdictSigner
from fedmatch.requester import PacketFetch, Requester
from fedmatch.requester.report import lookup_summary

if TYPE_CHECKING:
    from fedmatch.audit.auditor import AuditResult
    from fedmatch.requester.client import LookupReport, ResolveReport

__all__ = ["run_demo"]

# A = requesting state, B = state of first irregular entry, C = state of a later application.
STATES = {"A": "DE", "B": "IT", "C": "FR"}
# The requesting state's hit verifiers (certificate names expert1.verifier.de.fedmatch.eu...).
DEMO_EXPERTS = ("expert1", "expert2")


@dataclass
class _Federation:
    """The demo federation as it comes up: its files, then where its servers listen."""

    workdir: Path
    parties: dict[str, PartyFiles]
    node_keys: dict[str, str]  # each node's audit-log verifier key
    coordinator_key: str
    addresses: dict[str, str] = field(default_factory=dict)
    coordinator: str = ""
    auditor_toml: Path = Path()


def run_demo(
    records: int = 20_000,
    workdir: Path | None = None,
    photos: Path | None = None,
    desk: bool = False,
    desk_until: Callable[[], None] | None = None,
) -> int:
    """``desk``: hand the candidates to the verifier desk (fedmatch/demo/desk.py) and serve
    it until Ctrl-C (``desk_until``, for tests: until it returns) instead of signing the
    experts' verdicts here."""
    started = time.perf_counter()
    today = dt.date.today()
    with ExitStack() as stack:
        temporary = workdir is None
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="fedmatch-demo-"))
            )
        workdir.mkdir(parents=True, exist_ok=True)
        say(f"fedmatch demo: 3 member-state nodes + coordinator on 127.0.0.1 (work dir {workdir})")
        fed = _provision(workdir, records, today)
        _start_servers(stack, fed)
        pictures, probe, stranger = _enrol_traveller(fed, photos, today)
        requester, report, fetched = _look_up(stack, fed, pictures, probe)
        if desk:
            return _desk_demo(fed, requester, report, fetched, pictures, desk_until, temporary)
        resolved = _verify_and_resolve(fed, requester, report, fetched, today)
        a = STATES["A"]
        control_header = requester.header(Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, f"{a}-BAMF-2026-5513")
        control = requester.lookup(stranger, control_header)
        say(
            f"7. control: a photograph of someone else gives {len(control.matches)} hits "
            f"(keys reused: {control.key_bytes_sent} key bytes sent)"
        )

        summary: dict[str, Any] = lookup_summary(report, resolved)
        summary["control_hits"] = len(control.matches)
        summary["records_per_node"] = records
        summary["photos"] = pictures.source
        summary["security"] = {"transport": "mtls", "signed_requests": True}
        summary["timings_ms"]["total_ms"] = round((time.perf_counter() - started) * 1e3, 1)
        audit = _audit(fed, temporary)
        summary["audit"] = {
            k: audit.summary[k]
            for k in ("ok", "violations", "searches_checked", "hit_reveals_checked")
        }
        ok = (
            resolved.responsible_state == STATES["B"]
            and resolved.procedure == "take_charge"
            and resolved.complete
            and len(control.matches) == 0
            and audit.ok
        )
        say("9. shutting down")
    print(json.dumps(summary), flush=True)
    return 0 if ok else 1


def _provision(workdir: Path, records: int, today: dt.date) -> _Federation:
    """Step 1: the federation PKI, every party's TOML file and the nodes' registers."""
    t0 = time.perf_counter()
    # The federation PKI (as `fedmatch pki init|intermediate|issue` make it): CAs, and a
    # certificate binding an Ed25519 signing key for each party; a node's and the
    # coordinator's key also signs its audit log. A work directory used again keeps its
    # PKI; a fresh federation: the audit logs and replay stores of an earlier run in
    # this work directory are removed.
    # Two hit verifiers (people with `verifier` certificates) of the requesting state.
    experts = {STATES["A"]: DEMO_EXPERTS}
    # Each state's officials (people with `officer` certificates) sign its requests.
    officers = {state: OFFICERS for state in STATES.values()}
    parties = provision(
        workdir, list(STATES.values()), auditors=(AUDITOR,), experts=experts, officers=officers
    )
    fed = _Federation(
        workdir,
        parties,
        node_keys={state: parties[f"node-{state}"].vkey for state in STATES.values()},
        coordinator_key=parties["coordinator"].vkey,
    )
    auditor_key = parties[f"auditor-{AUDITOR}"].vkey
    for old in [*workdir.glob("audit-*"), workdir / "auditor-state"]:
        if old.is_dir():
            shutil.rmtree(old)
    for old in [*workdir.glob("*.replay.sqlite*"), *workdir.glob("*.notices.sqlite*")]:
        old.unlink()
    for state in STATES.values():
        operator_toml(
            workdir / f"operator-{state}.toml", parties[f"operator-{state}"],
            parties[f"officer-{OFFICER}-{state}"], workdir,
        )  # fmt: skip
    for person in DEMO_EXPERTS:
        # For `fedmatch verify-hit --config verifier-expert1-DE.toml`.
        expert = parties[f"verifier-{person}-{STATES['A']}"]
        verifier_toml(workdir / f"{expert.name}.toml", expert, STATES["A"])
    for i, state in enumerate(STATES.values()):
        node_register(
            workdir, parties, state, records, 1000 + i, today, auditor_key, fed.coordinator_key
        )
    say(
        f"1. registers: {records:,} synthetic records per node, "
        f"{time.perf_counter() - t0:.1f}s; a federation PKI (root CA, a CA per state and "
        f"for the EU) with a TLS certificate and a bound signing key for {len(STATES)} "
        "nodes, the coordinator, an operator workstation and its officers per state and "
        "an auditor"
    )
    return fed


def _start_servers(stack: ExitStack, fed: _Federation) -> None:
    """Step 2: the node processes, then the coordinator that knows their addresses, and
    the auditor's file naming them all."""
    t0 = time.perf_counter()
    workdir = fed.workdir
    fed.addresses.update(start_nodes(stack, workdir, STATES.values()))
    nodes_toml = nodes_tables(fed.addresses, fed.node_keys)
    auditor = fed.parties[f"auditor-{AUDITOR}"]
    fed.coordinator = start_coordinator(stack, workdir, fed.parties, auditor.vkey, nodes_toml)
    fed.auditor_toml = workdir / "auditor.toml"
    auditor_toml(fed.auditor_toml, auditor, fed.coordinator, fed.coordinator_key, nodes_toml)
    say(
        f"2. servers up ({time.perf_counter() - t0:.1f}s): "
        + ", ".join(f"node {r}={s} at {fed.addresses[s]}" for r, s in STATES.items())
        + f", coordinator at {fed.coordinator}; every channel is mutual TLS (each party "
        "checks its peer's certificate, role and member state)"
    )


def _enrol_traveller(
    fed: _Federation, photos: Path | None, today: dt.date
) -> tuple[DemoPhotos, np.ndarray, np.ndarray]:
    """Steps 3 and 4: templates of the photographs; the traveller enrolled at B and C.
    Returns the photographs, the probe's template and the stranger's."""
    t0 = time.perf_counter()
    crossing = today - dt.timedelta(days=270)  # about 9 months ago
    application_c = today - dt.timedelta(days=180)
    pictures = folder_photos(photos) if photos else packaged_photos()
    pipeline = FacePipeline()
    if pipeline.model_id != MODEL or pipeline.dimension != DIM:
        raise InvalidInput("the demo registers are built for the default SFace model")
    probe = pipeline.template(pictures.probe)
    stranger = pipeline.template(pictures.impostor, pick=pictures.impostor_pick)
    say(
        f"3. face templates from {pictures.source}: detected, aligned and embedded with "
        f"{pipeline.model_id} ({time.perf_counter() - t0:.1f}s)"
    )
    b, c = STATES["B"], STATES["C"]
    enroll(
        fed.addresses[b],
        fed.parties[f"operator-{b}"].tls,
        fed.parties[f"officer-{OFFICER}-{b}"],
        b,
        encoded(pictures.enrol_b),
        f"{b}-2026-LMP-004711",
        Category.IRREGULAR_CROSSING,
        crossing,
        "Lampedusa",
    )
    enroll(
        fed.addresses[c],
        fed.parties[f"operator-{c}"].tls,
        fed.parties[f"officer-{OFFICER}-{c}"],
        c,
        encoded(pictures.enrol_c),
        f"{c}-2026-PAR-118822",
        # Found staying illegally, not an applicant: an earlier application at C would come
        # first (take back, C-582/17), and the demo shows the first-entry rule.
        Category.ILLEGAL_STAY,
        application_c,
        "Paris",
    )
    say(
        f"4. enrolled the traveller at {b} as irregular_crossing ({crossing}) and at {c} "
        f"as found staying illegally ({application_c}), each from its own photograph, by an "
        "operator "
        "of that state over mTLS (each node made the template and kept a face crop)"
    )
    return pictures, probe, stranger


def _look_up(
    stack: ExitStack, fed: _Federation, pictures: DemoPhotos, probe: np.ndarray
) -> tuple[Requester, LookupReport, PacketFetch]:
    """Step 5: A's signed lookup and its candidates' verification packets. Returns A's
    requester (kept open for the resolve and the control)."""
    a = STATES["A"]
    # Who asks is on the record of every party: the unit and the officer, whose own key
    # (their personal `officer` certificate) signs every request; the operator
    # workstation's certificate only makes the mTLS channel.
    officer = fed.parties[f"officer-{OFFICER}-{a}"]
    requester = officer_requester(
        fed.coordinator, fed.parties[f"operator-{a}"], officer, f"{a}-dublin-unit"
    )
    stack.callback(requester.close)
    header = requester.header(Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, f"{a}-BAMF-2026-5512")
    report = requester.lookup(probe, header)
    say(
        f"5. {a} registered its public keys for this key epoch "
        f"({report.key_bytes_sent / 1e6:.1f} MB, once), encrypted the template of another "
        f"photograph "
        f"({report.bytes_sent / 1e3:.0f} KB) and looked it up in a request signed by its "
        f"officer with their own key ({officer.signer().name}; the operator workstation's "
        "certificate only makes the channel); the nodes checked the signature and answered "
        "with "
        f"masked match bits only: "
        + "; ".join(
            f"{n.member_state} {n.outcome} ("
            f"{n.matches} match{'es' if n.matches != 1 else ''}, {n.elapsed_ms:.0f} ms)"
            for n in report.nodes
        )
    )
    # Before any detail: the owning nodes release, for proven matches only, each
    # candidate's facial image and non-identifying metadata, encrypted to A.
    fetched = requester.fetch_packets(report, encoded(pictures.probe))
    say(
        f"   verification packets: {len(fetched.packets)} candidates' face crops "
        f"({', '.join(f'{p.member_state} {p.sex.value} {p.age_band}' for p in fetched.packets)})"
        ", released by their nodes once A proved the match, encrypted to A"
    )
    return requester, report, fetched


def _verify_and_resolve(
    fed: _Federation,
    requester: Requester,
    report: LookupReport,
    fetched: PacketFetch,
    today: dt.date,
) -> ResolveReport:
    """Step 6: two experts' verdicts on the candidates, the resolve and its decision."""
    a = STATES["A"]
    # Two experts of the requesting state compared probe and candidate images, and each
    # signed a verdict binding both images' SHA-256 with the key their verifier
    # certificate binds; the coordinator and the owning node check signatures and hashes.
    signers = [
        VerdictSigner(p.signer(), p.tls.chain.read_bytes())
        for p in (fed.parties[f"verifier-{person}-{a}"] for person in DEMO_EXPERTS)
    ]
    verdicts = [
        s.confirm(
            report.header.query_id,
            a,
            HitKey(p.member_state, p.handle),
            Evidence(fetched.probe_sha256, p.image_sha256),
            Sex.MALE,
        )
        for s in signers
        for p in fetched.packets
    ]
    resolved = requester.resolve(report, today.isoformat(), verdicts)
    say(
        f"   {len(report.matches)} candidate hits confirmed in signed verdicts by "
        f"{' and '.join(s.name for s in signers)}, each binding the two images compared; "
        "the coordinator and the owning nodes checked signatures and image hashes, and the "
        "coordinator logged them before asking for details"
    )
    for h in resolved.hits:
        say(
            f"   hit detail: {h['member_state']} {h['category']} {h['reference']} "
            f"{h['event_date']} {h['event_place']}"
        )
    say(f"6. decision: {resolved.explanation}")
    return resolved


def _desk_demo(
    fed: _Federation,
    requester: Requester,
    report: LookupReport,
    fetched: PacketFetch,
    pictures: DemoPhotos,
    until: Callable[[], None] | None,
    temporary: bool,
) -> int:
    """Step 6 at the verifier desk, in a browser, until Ctrl-C; then the audit."""
    from fedmatch.demo.desk import DeskCase, serve_demo_desk

    a = STATES["A"]
    candidates = serve_demo_desk(
        fed.workdir,
        DeskCase(report, encoded(pictures.probe), fetched, Sex.MALE),
        [fed.parties[f"verifier-{person}-{a}"] for person in DEMO_EXPERTS],
        fed.parties[f"operator-{a}"],
        fed.parties[f"officer-{OFFICIAL}-{a}"],
        fed.coordinator,
        requester.unit,
        until,
    )
    audit = _audit(fed, temporary)
    summary: dict[str, Any] = lookup_summary(report, None)
    summary["desk"] = {
        "candidates": str(candidates),
        "resolved": candidates.with_name(candidates.name + ".resolve.json").exists(),
        "decision_confirmed": candidates.with_name(candidates.name + ".decision.json").exists(),
    }
    summary["audit"] = {
        k: audit.summary[k] for k in ("ok", "violations", "searches_checked", "hit_reveals_checked")
    }
    say("9. shutting down")
    print(json.dumps(summary), flush=True)
    return 0 if audit.ok else 1


def _audit(fed: _Federation, temporary: bool) -> AuditResult:
    """Step 8: what every party logged, verified by an outside auditor as `fedmatch audit
    verify --config auditor.toml` does, with the federation cross-checked."""
    from fedmatch.audit.auditor import load_auditor_config, run_audit

    say(
        f"8. audit: each party signed its own log ({', '.join(sorted(fed.node_keys))}, "
        f"coordinator; keys in {fed.workdir / 'keys'}, certificates in {fed.workdir / 'tls'}); "
        "the nodes searched only for signed requests on the coordinator's record, in "
        f"checkpoints they cosigned. Auditor config: {fed.auditor_toml}"
        + (" (removed with the temporary work dir: use --workdir to keep it)" if temporary
           else "")
    )  # fmt: skip
    audit = run_audit(load_auditor_config(fed.auditor_toml))
    say(
        "   audit verify: "
        + ", ".join(
            f"{origin.rsplit('/', 1)[-1]} {p['tree_size']} entries"
            + ("" if p["verified"] else " NOT VERIFIED")
            for origin, p in audit.summary["parties"].items()
        )
        + f"; {audit.summary['searches_checked']} node searches matched to authorizations,"
        f" {audit.summary['violations']} violations"
    )
    return audit
