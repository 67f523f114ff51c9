"""A verifier desk's world for tests: a real PKI (DE's verifiers anna and ben, DE's
official officer-17 and operator workstation), their keys protected by passphrases, and one
lookup's case in a cases folder with real face photographs as probe and candidate images."""

from __future__ import annotations

import csv
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from fedmatch.desk.cases import Case, load_case
from fedmatch.desk.config import DeskConfig, load_config
from fedmatch.domain import Purpose, QueryHeader, Sex
from fedmatch.pki.keystore import protect, unlock
from fedmatch.pki.provision import PartyFiles, provision
from fedmatch.protocol.packet import CandidatePacket
from fedmatch.protocol.verification import HitKey, SignedVerdict, VerdictSigner
from fedmatch.protocol.wire import encode_handle
from fedmatch.requester.candidates import write_candidates
from fedmatch.requester.client import ConfirmationReport, LookupReport, Requester, ResolveReport
from fedmatch.requester.packets import PacketFolder, packets_path

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
STATE = "DE"
PEOPLE = ("anna", "ben")
PASSPHRASES = {"anna": "anna-correct-horse-1", "ben": "ben-battery-staple-2"}
OFFICER = "officer-17"
OFFICER_PASSPHRASE = "officer-passphrase-3"
UNIT = "dublin-unit-1"


def faces_by_identity() -> dict[str, list[str]]:
    """The photographs of each person, from the data set's labels file."""
    people: dict[str, list[str]] = {}
    with (FACES / "identities.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            people.setdefault(row["identity"], []).append(row["file"])
    return people


def verifier_name(person: str) -> str:
    return f"{person}.verifier.{STATE.lower()}.fedmatch.eu"


@dataclass(frozen=True)
class DeskWorld:
    root: Path
    parties: dict[str, PartyFiles]
    config_path: Path
    cases: Path
    case: Case
    probe_image: bytes
    images: dict[HitKey, bytes]  # the candidates' images (b"": none released)

    @property
    def config(self) -> DeskConfig:
        return load_config(self.config_path)

    @property
    def hits(self) -> tuple[HitKey, ...]:
        return self.case.hits


def _toml_list(paths: tuple[Path, ...]) -> str:
    return "[" + ", ".join(f'"{p}"' for p in paths) + "]"


def write_case(
    cases: Path,
    name: str,
    probe: bytes,
    candidates: list[CandidatePacket],
    probe_sex: Sex,
    unanswered: dict[str, str] | None = None,
) -> Case:
    """A lookup's case in ``cases``; ``unanswered``: the states whose node did not answer
    it, with their outcome (an incomplete federation)."""
    header = QueryHeader(
        secrets.token_hex(16), STATE, Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27",
        f"DE-2026-{name}", UNIT, "officer-1",
    )  # fmt: skip
    path = cases / f"{name}.json"
    matches = [(c.member_state, c.handle) for c in candidates]
    nodes = [SimpleNamespace(member_state=s, outcome=o) for s, o in (unanswered or {}).items()]
    # write_candidates reads a LookupReport's header, matches, nodes and opening (none here).
    write_candidates(
        SimpleNamespace(header=header, matches=matches, nodes=nodes, opening=None, opening_keys={}),
        path,
    )
    PacketFolder(packets_path(path)).write(header.query_id, probe, candidates, probe_sex)
    return load_case(path)


def build(root: Path, officer: bool = False, unanswered: dict[str, str] | None = None) -> DeskWorld:
    """The PKI, the protected keys, ``desk.toml`` and one lookup with three candidates at
    IT: the same person as the probe, another person of a different sex, and a record
    without a facial image (not verifiable). ``officer``: with the official (their own
    ``officer`` certificate, OFFICER, and protected key; DE's operator workstation for the
    channel); ``unanswered``: states that did not answer the lookup."""
    parties = provision(
        root / "pki", ["DE", "IT"], experts={STATE: list(PEOPLE)}, officers={STATE: [OFFICER]}
    )
    keys = root / "keys"
    keys.mkdir()
    for person in PEOPLE:
        protect(
            parties[f"verifier-{person}-{STATE}"].signer(),
            PASSPHRASES[person],
            keys / f"{person}.key.enc",
        )
    cases = root / "cases"
    cases.mkdir()
    people = faces_by_identity()
    same, other = people["person02"], people["person03"]
    probe = (FACES / same[0]).read_bytes()
    images = [(FACES / same[1]).read_bytes(), (FACES / other[0]).read_bytes(), b""]
    sexes = [Sex.MALE, Sex.FEMALE, Sex.MALE]
    candidates = [
        CandidatePacket("IT", encode_handle(0, 3 + i), image, sex, "25-34", "2024-03-1" + str(i),
                        0.8 - i / 10)
        for i, (image, sex) in enumerate(zip(images, sexes, strict=True))
    ]  # fmt: skip
    case = write_case(cases, "0001", probe, candidates, Sex.MALE, unanswered)
    # A file of another kind in the folder is left alone.
    (cases / "notes.json").write_text('{"not": "a candidates file"}')
    pki = parties[f"verifier-anna-{STATE}"].tls
    lines = [
        "[desk]",
        f'cases = "{cases}"',
        'listen = "127.0.0.1:0"',
        "idle_minutes = 15",
        f'root = "{pki.root}"',
        f"crls = {_toml_list(pki.crls)}",
    ]
    for person in PEOPLE:
        lines += [
            "",
            "[[verifier]]",
            f'chain = "{parties[f"verifier-{person}-{STATE}"].tls.chain}"',
            f'key = "keys/{person}.key.enc"',
        ]
    if officer:
        operator = parties[f"operator-{STATE}"]
        official = parties[f"officer-{OFFICER}-{STATE}"]
        protect(official.signer(), OFFICER_PASSPHRASE, keys / "officer.key.enc")
        tls = operator.tls
        (root / "operator.toml").write_text(
            f'[tls]\nkey = "{tls.key}"\nchain = "{tls.chain}"\nroot = "{tls.root}"\n'
            f"crls = {_toml_list(tls.crls)}\n"
        )
        lines += [
            "",
            "[officer]",
            f'chain = "{official.tls.chain}"',
            f'unit = "{UNIT}"',
            'operator = "operator.toml"',
            'coordinator = "127.0.0.1:1"',
            'key = "keys/officer.key.enc"',
        ]
    config_path = root / "desk.toml"
    config_path.write_text("\n".join(lines) + "\n")
    return DeskWorld(
        root, parties, config_path, cases, case, probe,
        {c_hit: img for c_hit, img in zip(case.hits, images, strict=True)},
    )  # fmt: skip


def unlocked_signer(world: DeskWorld, person: str) -> VerdictSigner:
    """A verifier's VerdictSigner, as the desk makes it at their login."""
    key = unlock(world.root / "keys" / f"{person}.key.enc", PASSPHRASES[person])
    chain = world.parties[f"verifier-{person}-{STATE}"].tls.chain.read_bytes()
    return VerdictSigner(key, chain)


PROPOSAL_DIGEST = "ab" * 32


class FakeRequester:
    """Stands in for a Requester in the desk's officer tests: records what it was asked and
    answers like a coordinator that found IT responsible (the real federation's flow is
    tested end to end elsewhere)."""

    def __init__(self, refuse: BaseException | None = None) -> None:
        self.operator = OFFICER
        self.refuse = refuse
        self.resolved: list[tuple[LookupReport, str, list[SignedVerdict]]] = []
        self.confirmed: list[tuple[QueryHeader, str]] = []
        self.closed = 0

    def resolve(
        self,
        report: LookupReport,
        application_date: str,
        verdicts: Sequence[SignedVerdict] = (),
        timeout: float = 30.0,
    ) -> ResolveReport:
        if self.refuse is not None:
            raise self.refuse
        self.resolved.append((report, application_date, list(verdicts)))
        evidence = {
            "member_state": "IT", "category": "irregular_crossing", "reference": "IT-REF-1",
            "event_date": "2025-06-01", "event_place": "Lampedusa", "capture_date": "2025-06-01",
        }  # fmt: skip
        proposal = {
            "digest": PROPOSAL_DIGEST, "criterion": "irregular_entry", "criterion_number": 13,
            "regime": "dublin_iii", "procedure": "take_charge", "responsible_state": "IT",
            "basis": "Art. 13(1)", "registration_date": application_date, "lodging_date": "",
            "complete": True, "evidence": [], "explanation": "irregular entry into IT",
            "deadlines": [{
                "name": "take_charge_request", "due": "2026-03-01", "start_event": "hit",
                "start_date": application_date, "period": "2 months", "basis": "Art. 21(1)",
            }],
        }  # fmt: skip
        return ResolveReport(
            regime="dublin_iii", rule="irregular_entry", procedure="take_charge",
            responsible_state="IT", evidence=(evidence,), tie=False, complete=True,
            explanation="irregular entry into IT", hits=(evidence,), nodes=(), bytes_sent=0,
            bytes_received=0, elapsed_ms=1.0, proposal=proposal,
            statuses=({"member_state": "IT", "status": "verified"},),
        )  # fmt: skip

    def confirm_decision(
        self, header: QueryHeader, proposal_digest: str, timeout: float = 30.0
    ) -> ConfirmationReport:
        if self.refuse is not None:
            raise self.refuse
        self.confirmed.append((header, proposal_digest))
        return ConfirmationReport(
            header.query_id, proposal_digest, "accept", "IT", "irregular_entry",
            header.operator, "2026-01-05T10:00:00Z", 7,
        )  # fmt: skip

    def close(self) -> None:
        self.closed += 1

    def as_requester(self) -> Requester:
        return cast("Requester", self)
