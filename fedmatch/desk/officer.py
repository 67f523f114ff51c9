"""The official's steps at the desk: resolve a lookup once its hits are decided, then
confirm the proposal. The federation calls live here, apart from the web pages, so that a
test (or another front end) drives them with a :class:`~fedmatch.requester.client.Requester`
of its own.

- :func:`status`: per hit, the confirmations and rejections so far; whether the lookup is
  ready (every released candidate confirmed by two people or rejected); the states whose
  node did not answer the lookup;
- :func:`resolve`: the coordinator's resolve with every verdict given at the desk, exactly
  as ``fedmatch resolve`` sends it; the answer is kept at ``X.json.resolve.json``. A lookup
  some state did not answer (an incomplete federation: a record held there is not among the
  candidates) is refused, naming those states, unless the official explicitly accepts a
  provisional proposal, which is logged (``fedmatch resolve --accept-incomplete``);
- :func:`confirm`: the official accepts the proposal (``Requester.confirm_decision``); the
  coordinator's record is kept at ``X.json.decision.json``;
- :func:`check_key` and :func:`connect`: the official's own ``officer`` certificate and
  protected key (which signs their requests; a revoked certificate is refused) and a
  Requester over the workstation's mTLS channel (the operator TOML's ``[tls]``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedmatch.desk.cases import Case
from fedmatch.desk.verdicts import Tally, all_verdicts, tallies
from fedmatch.domain import parse_date
from fedmatch.errors import (
    AlreadyExists,
    FedmatchError,
    InvalidInput,
    PermissionDenied,
    PreconditionFailed,
)
from fedmatch.fileio import write_atomically
from fedmatch.protocol.verification import HitKey
from fedmatch.requester.candidates import read_release, read_unanswered

if TYPE_CHECKING:
    from fedmatch.audit.note import NoteSigner
    from fedmatch.desk.config import OfficerConfig
    from fedmatch.pki.names import Identity
    from fedmatch.protocol.statement import RequestSigner
    from fedmatch.protocol.transport import Security
    from fedmatch.requester.client import Requester

__all__ = [
    "CaseStatus",
    "HitStatus",
    "check_confirmable",
    "check_key",
    "check_resolvable",
    "confirm",
    "connect",
    "resolve",
    "status",
    "workstation",
]

log = logging.getLogger("fedmatch.desk")


@dataclass(frozen=True)
class HitStatus:
    hit: HitKey
    released: bool  # a verification packet is at the desk for it
    tally: Tally
    removed: bool = False  # its image was deleted after a rejection

    @property
    def decided(self) -> bool:
        """Confirmed by enough people, rejected, or never released (not a candidate the
        owning node stands by: nothing to verify)."""
        return not self.released or self.removed or self.tally.decided

    @property
    def label(self) -> str:
        if not self.released:
            return "no packet released"
        if self.tally.rejected_by or self.removed:
            return "rejected"
        return self.tally.status


@dataclass(frozen=True)
class CaseStatus:
    case: Case
    hits: tuple[HitStatus, ...]
    packets: bool  # the lookup's packet folder is at the desk
    resolved: dict[str, Any] | None
    decision: dict[str, Any] | None
    # The states whose node did not answer the lookup, with their outcome ({}: complete).
    unanswered: dict[str, str] = field(default_factory=dict)

    @property
    def incomplete(self) -> str:
        """What the official reads when some state did not answer ("" when all did)."""
        from fedmatch.requester.report import incomplete_text

        return incomplete_text(self.unanswered) if self.unanswered else ""

    @property
    def ready(self) -> bool:
        """Whether the lookup can be resolved: its packets are here and every hit is decided."""
        return self.packets and all(h.decided for h in self.hits)


def _load(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise InvalidInput(f"{path.name} is unreadable") from None
    return obj if isinstance(obj, dict) else None


def status(case: Case) -> CaseStatus:
    counted = tallies(case)
    listed = {c.hit: c for c in case.packets.candidates()} if case.has_packets else {}
    hits = tuple(
        HitStatus(hit, hit in listed, counted[hit], hit in listed and listed[hit].removed)
        for hit in case.hits
    )
    return CaseStatus(
        case, hits, case.has_packets, _load(case.resolve_path), _load(case.decision_path),
        read_unanswered(case.path),
    )  # fmt: skip


def check_resolvable(case: Case, accept_incomplete: bool = False) -> CaseStatus:
    """PreconditionFailed unless every hit is decided, or when a state did not answer the
    lookup and the official did not accept that (the message names the states);
    AlreadyExists once resolved. Returns the case's status."""
    current = status(case)
    if not current.ready:
        raise PreconditionFailed(
            "every candidate needs two confirmations or a rejection before the resolve"
        )
    if current.resolved is not None:
        raise AlreadyExists("this lookup is resolved already")
    if current.unanswered and not accept_incomplete:
        raise PreconditionFailed(
            f"incomplete federation: {current.incomplete} at the lookup; a record held there "
            "is not among the candidates, so no decision is proposed: look up again once "
            "every node answers, or accept a provisional proposal on an incomplete federation"
        )
    return current


def check_confirmable(case: Case) -> str:
    """The digest of the proposal to confirm; PreconditionFailed before a resolve that
    gave one, AlreadyExists once confirmed."""
    current = status(case)
    if current.resolved is None:
        raise PreconditionFailed("resolve the lookup before confirming its decision")
    if current.decision is not None:
        raise AlreadyExists("this lookup's decision is confirmed already")
    proposal = current.resolved.get("proposal")
    if not isinstance(proposal, dict) or not isinstance(proposal.get("digest"), str):
        raise PreconditionFailed("the resolve gave no proposal to confirm")
    return str(proposal["digest"])


def _write(path: Path, obj: dict[str, Any]) -> None:
    # Mode 0600: a resolve names the records of the verified hits (personal data).
    write_atomically(path, (json.dumps(obj, indent=1) + "\n").encode(), mode=0o600)


def resolve(
    case: Case,
    requester: Requester,
    application_date: str,
    timeout: float = 30.0,
    accept_incomplete: bool = False,
) -> dict[str, Any]:
    """Resolve ``case`` with every verdict given on it; returns (and keeps at
    ``X.json.resolve.json``) the query id, decision summary, proposal and hit statuses.
    A lookup some state did not answer is refused (PreconditionFailed naming the states)
    unless ``accept_incomplete``: then the proposal is provisional, its decision names those
    states, the result records ``accepted_incomplete`` and the acceptance is logged."""
    # Here, not at the top: the client brings the HE runtime, which only a resolve needs.
    from fedmatch.requester.client import LookupReport, NodeSummary
    from fedmatch.requester.report import decision_summary, log_accepted_incomplete, unanswered

    parse_date(application_date, "application date")
    missing = check_resolvable(case, accept_incomplete).unanswered
    header = case.header
    opening, keys = read_release(case.path, header.query_id)
    # The nodes that did not answer the lookup, as the candidates file recorded them.
    nodes = tuple(NodeSummary(s, o, "", 0, 0.0, 0, 0) for s, o in missing.items())
    report = LookupReport(
        header, 0.0, "", tuple((h.member_state, h.handle) for h in case.hits), nodes, 0, 0, {},
        opening=opening, opening_keys=keys,
    )  # fmt: skip
    if missing:
        # The official who accepts is the one resolving (whoever looked up).
        log_accepted_incomplete(replace(header, operator=requester.operator), missing)
    resolved = requester.resolve(report, application_date, all_verdicts(case), timeout=timeout)
    result = {
        "query_id": header.query_id,
        "application_date": application_date,
        "resolved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "decision": decision_summary(resolved, missing),
        "proposal": resolved.proposal,
        "hits": list(resolved.statuses),
    }
    gone = missing | unanswered(resolved.nodes)
    if gone:
        result["accepted_incomplete"] = gone
    _write(case.resolve_path, result)
    log.info("lookup %s resolved by %s%s", header.query_id, requester.operator,
             " on an incomplete federation (accepted)" if missing else "")  # fmt: skip
    return result


def confirm(
    case: Case, requester: Requester, official: str, unit: str, timeout: float = 30.0
) -> dict[str, Any]:
    """The official ``official`` of ``unit`` accepts the proposal of the resolve kept for
    ``case``; returns (and keeps at ``X.json.decision.json``) the coordinator's record."""
    digest = check_confirmable(case)
    header = replace(case.header, unit=unit, operator=official)
    report = requester.confirm_decision(header, digest, timeout=timeout)
    result = {**asdict(report), "official": official, "unit": unit}
    _write(case.decision_path, result)
    log.info("lookup %s: decision confirmed by %s", header.query_id, official)
    return result


def workstation(config: OfficerConfig) -> tuple[Security, Identity]:
    """The operator workstation's ``[tls]`` and the identity of its certificate (checked
    against the federation root and CRLs: an operator of the official's member state). It
    makes the channel only; the official's own key signs."""
    from fedmatch.protocol.transport import load_security

    security = load_security(config.operator)
    try:
        identity = security.verify_chain(security.chain_pem())
    except OSError as exc:
        raise InvalidInput(f"officer.operator: tls.chain unreadable ({exc.strerror})") from None
    except FedmatchError as exc:
        raise PermissionDenied(f"the workstation certificate is refused: {exc}") from None
    if identity.role != "operator" or identity.member_state != config.member_state:
        raise PermissionDenied(
            f"the workstation certificate names {identity.dns}, not an operator of "
            f"{config.member_state}"
        )
    return security, identity


def _signer(config: OfficerConfig, signer: NoteSigner) -> tuple[Security, RequestSigner]:
    """The workstation and the official's request signer: their ``officer`` certificate,
    verified now (root, CRLs: a revoked officer cannot act), binding ``signer``."""
    from fedmatch.requester.officer import officer_signer

    security, _ = workstation(config)
    try:
        chain = config.chain_pem()
    except OSError as exc:
        raise InvalidInput(f"officer.chain unreadable ({exc.strerror})") from None
    return security, officer_signer(signer, chain, security.verify_chain, config.member_state)


def check_key(config: OfficerConfig, signer: NoteSigner) -> str:
    """Refuse a key the official's certificate does not bind, or a certificate that is
    refused (revoked, another state's); returns the member state."""
    _signer(config, signer)
    return config.member_state


def connect(config: OfficerConfig, signer: NoteSigner) -> Requester:
    """A client of the coordinator whose requests ``signer`` (the official's unlocked key,
    bound by their ``officer`` certificate) signs, over the workstation's mTLS channel.
    The caller closes it."""
    from fedmatch.requester.client import Requester

    security, request_signer = _signer(config, signer)
    return Requester(
        config.coordinator, config.member_state, None, config.unit, config.name,
        request_signer, security.channel_credentials(),
    )  # fmt: skip
