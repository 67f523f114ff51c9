"""Requester: encrypts a probe under its own key, asks the coordinator, decrypts locally.

The secret key never leaves :class:`~fedmatch.he.keypair.RequesterKeys`; what is sent is the
public key bundle and the probe ciphertext. Decrypted scores stay inside :meth:`lookup`:
the report holds only which per-query handles matched at the federation's threshold.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from fedmatch.audit.entry import digest_hex
from fedmatch.domain import EncryptedProbe, Purpose, QueryHeader
from fedmatch.errors import HEError, ImplausibleResult, InvalidInput, PreconditionFailed
from fedmatch.grpcutil.server import make_channel
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.params import get_param_set
from fedmatch.pki.names import dns_name
from fedmatch.protocol.casefile import ACTIONS, CRITERIA, confirmation_digest, proposal_summary
from fedmatch.protocol.limits import (
    MAX_HANDLES_PER_REQUEST,
    MAX_LOOKUP_RESPONSE_BYTES,
    MAX_RECEIVE_BYTES,
)
from fedmatch.protocol.opening import ProbeOpening, seal_opening, seal_opening_with_reply
from fedmatch.protocol.packet import CandidatePacket, image_digest, open_packet
from fedmatch.protocol.statement import RequestSigner
from fedmatch.protocol.verification import SignedVerdict
from fedmatch.protocol.wire import (
    encode_handle,
    header_to_pb,
    hit_from_pb,
    key_bundle_to_pb,
    packets_from_pb,
    probe_to_pb,
    verdict_to_pb,
)
from fedmatch.rpc.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

# The name the coordinator's certificate carries, wherever it is reached.
COORDINATOR_DNS = dns_name("coordinator", "eu")

__all__ = [
    "IMPLAUSIBLE",
    "ConfirmationReport",
    "LookupReport",
    "NodeSummary",
    "Requester",
    "ResolveReport",
    "SubjectReply",
    "check_candidate_count",
    "enum_name",
    "node_candidates",
]

log = logging.getLogger("fedmatch.requester")


def enum_name(enum_type: Any, value: int, prefix: str) -> str:
    """'NODE_OUTCOME_DEADLINE_EXCEEDED' -> 'deadline_exceeded'."""
    return str(enum_type.Name(value)).removeprefix(prefix).lower()


@dataclass(frozen=True)
class NodeSummary:
    member_state: str
    outcome: str
    detail: str
    matches: int
    elapsed_ms: float
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True)
class LookupReport:
    header: QueryHeader
    threshold: float
    threshold_version: str
    matches: tuple[tuple[str, bytes], ...] = field(repr=False)
    nodes: tuple[NodeSummary, ...]
    bytes_sent: int
    bytes_received: int
    timings_ms: dict[str, float]
    # Key material sent for this lookup (a registration at the start of an epoch), if any.
    key_bytes_sent: int = 0
    # The declared category of the person searched (signed; see Requester.lookup).
    subject_category: str = ""
    # What opens the probe's commitment at resolve (salt and template: personal data, kept
    # by the requester only), and each answering node's opening key for this query.
    opening: ProbeOpening | None = field(default=None, repr=False)
    opening_keys: dict[str, bytes] = field(default_factory=dict, repr=False)


def _lost_keys(node: NodeSummary) -> bool:
    return node.outcome == "refused" and "unknown key id" in node.detail


@dataclass(frozen=True)
class PacketFetch:
    """The verification packets a lookup's candidates released, opened: the probe image's
    SHA-256 the request named, the packets, and the states that gave none (and why)."""

    probe_sha256: str
    packets: tuple[CandidatePacket, ...]
    failed: dict[str, str]


@dataclass(frozen=True)
class ResolveReport:
    regime: str
    rule: str
    procedure: str
    responsible_state: str | None
    evidence: tuple[dict[str, str], ...]
    tie: bool
    complete: bool
    explanation: str
    hits: tuple[dict[str, str], ...]
    nodes: tuple[NodeSummary, ...]
    bytes_sent: int
    bytes_received: int
    elapsed_ms: float
    # The case proposal under the whole Dublin criteria order (fedmatch.protocol.casefile's summary:
    # criterion, procedure, responsible state, evidence, deadlines with due dates, digest).
    proposal: dict[str, Any] | None = None
    # What became of each candidate hit: state, status (verified, rejected, pending,
    # review), different_sex, not_verifiable (no image comparison was possible),
    # confirmed_by, rejected_by, reasons (never the handle).
    statuses: tuple[dict[str, Any], ...] = ()


def _status_dict(st: coordinator_pb2.HitStatus) -> dict[str, Any]:
    return {
        "member_state": st.member_state,
        "status": st.status,
        "different_sex": st.different_sex,
        "not_verifiable": st.not_verifiable,
        "confirmed_by": list(st.confirmed_by),
        "rejected_by": list(st.rejected_by),
        "reasons": list(st.reasons),
    }


@dataclass(frozen=True)
class SubjectReply:
    """The coordinator's answer to a data subject's request
    (:meth:`Requester.answer_data_subject`): the states named, each candidate's status
    (:func:`_status_dict`, with its handle in hex) and the states whose node did not answer
    the lookup."""

    states: tuple[str, ...]
    statuses: tuple[dict[str, Any], ...] = field(repr=False)
    unanswered: tuple[str, ...]


@dataclass(frozen=True)
class ConfirmationReport:
    """What the coordinator recorded of an official's confirmation."""

    query_id: str
    proposal_digest: str
    action: str
    responsible_state: str
    criterion: str
    official_id: str
    confirmed_at: str
    log_index: int


def _hit_dict(h: common_pb2.HitDetail) -> dict[str, str]:
    # The record and what Eurodac keeps of its Dublin status (recast Art. 16(1), 28(4), 31).
    return hit_from_pb(h).record_json()


# A node whose answer held a result block no honest search produces (fedmatch.he.keys): its
# candidates are dropped, and the lookup is not complete.
IMPLAUSIBLE = "implausible"


def _summary(n: coordinator_pb2.NodeResult, matches: int, implausible: bool = False) -> NodeSummary:
    return NodeSummary(
        member_state=n.member_state,
        outcome=(
            IMPLAUSIBLE
            if implausible
            else enum_name(coordinator_pb2.NodeOutcome, n.outcome, "NODE_OUTCOME_")
        ),
        detail="answer dropped: a result block no honest search produces"
        if implausible
        else n.detail,
        matches=matches,
        elapsed_ms=n.elapsed_ms,
        bytes_sent=n.bytes_sent,
        bytes_received=n.bytes_received,
    )


def node_candidates(keys: RequesterKeys, node: coordinator_pb2.NodeResult) -> list[bytes] | None:
    """Position handles of one node's positive positions (only match bits are read), or
    None when a block of its answer is implausible, or not a result block at all (bytes
    that are not the compact format: HEError): then none of its positions is used, and the
    node is flagged in the log (its state only)."""
    try:
        flags = keys.decrypt_matches_many([block.ciphertext for block in node.blocks])
    except HEError as exc:  # ImplausibleResult included
        log.warning("node %s: answer dropped (%s)", node.member_state, exc)
        return None
    return [
        encode_handle(index, int(p))
        for index, positive in enumerate(flags)
        for p in np.flatnonzero(positive)
    ]


def check_candidate_count(count: int, request: str) -> None:
    """Refuse (InvalidInput, with the true reason) a request that would carry more
    candidates than :data:`MAX_HANDLES_PER_REQUEST`. Such requests are not split into
    batches: a resolve (or a data subject's answer) is judged on all of a lookup's
    candidates together, one decision over them all, and a query gets one packet request
    (its two retries are for a lost answer: ``MAX_PACKET_REQUESTS`` of
    :mod:`fedmatch.protocol.packet`); the limit bounds what one query can ask of the
    registers, a privacy bound."""
    if count > MAX_HANDLES_PER_REQUEST:
        raise InvalidInput(
            f"{count} candidates; at most {MAX_HANDLES_PER_REQUEST} per {request}: the "
            "limit bounds what one query may ask of the registers and a query's candidates "
            "are not split over several requests. So many candidates for one probe mean a "
            "probe unfit for identification (check its quality, or look up a better capture)"
        )


class Requester:
    """An authority of ``member_state`` asking the federation through a coordinator."""

    def __init__(
        self,
        coordinator: str | grpc.Channel,
        member_state: str,
        keys: RequesterKeys | None,
        unit: str,
        operator: str,
        signer: RequestSigner,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """``signer`` is the officer's: their key signs every request (the coordinator and
        the nodes refuse unsigned ones and ones another officer signed), and ``operator``
        must be their id, the instance of their certificate (or "": taken from it);
        ``credentials`` are this workstation's mTLS credentials (None only with
        --dev-insecure): they make the channel, they sign nothing."""
        if signer.officer and operator not in ("", signer.officer):
            raise InvalidInput(
                f"operator {operator!r} is not the officer whose certificate signs "
                f"({signer.officer!r})"
            )
        operator = operator or signer.officer
        if isinstance(coordinator, str):
            channel = make_channel(
                coordinator,
                MAX_LOOKUP_RESPONSE_BYTES,
                MAX_RECEIVE_BYTES,
                credentials,
                COORDINATOR_DNS if credentials is not None else None,
            )
            self._owned: grpc.Channel | None = channel
        else:
            channel, self._owned = coordinator, None
        self._stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        self.member_state = member_state
        # Who asks, for the logs: the coordinator refuses searches without both.
        self.unit = unit
        self.operator = operator
        self.signer = signer
        # None: a key pair of this session, generated for the federation's parameter set
        # at the first lookup (see _session_keys).
        self._keys = keys
        self._registered_until = 0.0
        self.key_registrations = 0

    @property
    def keys(self) -> RequesterKeys:
        if self._keys is None:
            self._keys = RequesterKeys.generate()
        return self._keys

    def _session_keys(self, header: QueryHeader) -> None:
        """Without a key file, generate this session's pair for the parameter set the
        federation announces (a key file's pair is checked against it at each lookup)."""
        if self._keys is not None:
            return
        info = self.federation(replace(header, query_id=secrets.token_hex(16)))
        try:
            params = get_param_set(info.he_param_set)
        except HEError:
            raise PreconditionFailed(
                "the federation announces an HE parameter set this version does not know"
            ) from None
        self._keys = RequesterKeys.generate(params)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

    def _signed_by_me(self, header: QueryHeader) -> QueryHeader:
        """``header`` as this officer sends it: they are its operator, whoever looked up
        (a resolve or a confirmation of another officer's lookup names who resolves)."""
        if not self.signer.officer or header.operator == self.signer.officer:
            return header
        return replace(header, operator=self.signer.officer)

    def header(self, purpose: Purpose, legal_basis: str, case_reference: str) -> QueryHeader:
        return QueryHeader(
            query_id=secrets.token_hex(16),
            requesting_state=self.member_state,
            purpose=purpose,
            legal_basis=legal_basis,
            case_reference=case_reference,
            unit=self.unit,
            operator=self.operator,
        )

    def federation(
        self, header: QueryHeader, timeout: float = 10.0
    ) -> coordinator_pb2.FederationInfo:
        request = coordinator_pb2.FederationRequest(header=header_to_pb(header))
        info: coordinator_pb2.FederationInfo = self._stub.GetFederation(request, timeout=timeout)
        return info

    def register_keys(self, header: QueryHeader, timeout: float = 120.0) -> int:
        """Register this requester's public key material at every node for the key epoch
        (~36 MB, once); returns the bytes sent."""
        request = common_pb2.RegisterKeysRequest(
            header=header_to_pb(header), key_bundle=key_bundle_to_pb(self.keys.public_bundle())
        )
        reply: coordinator_pb2.KeyRegistration = self._stub.RegisterKeys(request, timeout=timeout)
        if reply.key_id != self.keys.key_id:
            raise PreconditionFailed("the coordinator registered another key id than ours")
        self._registered_until = float(reply.expires_unix)
        self.key_registrations += 1
        return request.ByteSize()

    def lookup(
        self,
        template: npt.NDArray[np.floating],
        header: QueryHeader,
        timeout: float = 60.0,
        subject_category: str = "",
    ) -> LookupReport:
        """Encrypted lookup of one probe; registers keys first when this epoch has none,
        and once more if a node lost them (a restart), with a fresh query id.
        ``subject_category`` declares (signed) the register category of the person searched,
        e.g. ``applicant``: the published statistics count hits per pair of categories."""
        header = self._signed_by_me(header)
        key_bytes = 0
        t0 = time.perf_counter()
        self._session_keys(header)
        if self._registered_until <= time.time():
            key_bytes += self.register_keys(replace(header, query_id=secrets.token_hex(16)))
        try:
            report = self._lookup_once(template, header, timeout, subject_category)
        except grpc.RpcError as err:
            # The coordinator restarted and forgot the epoch: register again, then retry.
            if err.code() != grpc.StatusCode.FAILED_PRECONDITION or "unknown key id" not in (
                err.details() or ""
            ):
                raise
            key_bytes += self.register_keys(replace(header, query_id=secrets.token_hex(16)))
            header = replace(header, query_id=secrets.token_hex(16))
            report = self._lookup_once(template, header, timeout, subject_category)
        if any(_lost_keys(n) for n in report.nodes):
            key_bytes += self.register_keys(replace(header, query_id=secrets.token_hex(16)))
            report = self._lookup_once(
                template, replace(header, query_id=secrets.token_hex(16)), timeout,
                subject_category,
            )  # fmt: skip
        timings = {**report.timings_ms, "total_ms": round((time.perf_counter() - t0) * 1e3, 1)}
        return replace(report, key_bytes_sent=key_bytes, timings_ms=timings)

    def _lookup_once(
        self,
        template: npt.NDArray[np.floating],
        header: QueryHeader,
        timeout: float,
        subject_category: str = "",
    ) -> LookupReport:
        t0 = time.perf_counter()
        info = self.federation(header, timeout=timeout)
        vec = np.asarray(template, dtype=np.float64)
        if vec.ndim != 1 or vec.shape[0] != info.dimension:
            raise InvalidInput(f"probe template must have dimension {info.dimension}")
        if info.he_param_set != self.keys.params.name:
            raise PreconditionFailed(
                f"the federation uses the HE parameter set {info.he_param_set[:64]!r}, "
                f"this key pair is for {self.keys.params.name!r}: generate one with "
                f"`fedmatch keys generate --param-set {info.he_param_set[:64]}`"
            )
        t1 = time.perf_counter()
        # The commitment that a resolve opens to the nodes it claims hits at: details only
        # for real matches of this very template (fedmatch.protocol.opening).
        opening = ProbeOpening.new(vec)
        probe = EncryptedProbe(
            param_set=self.keys.params.name,
            ciphertext=self.keys.encrypt_probe(vec, opening.commitment()),
            model_id=info.model_id,
            dimension=info.dimension,
            key_id=self.keys.key_id,
        )
        signed = self.signer.sign(
            header, "lookup", digest_hex(probe.ciphertext), subject_category=subject_category
        )
        request = coordinator_pb2.LookupRequest(
            header=header_to_pb(header, signed), probe=probe_to_pb(probe)
        )
        t2 = time.perf_counter()
        response: coordinator_pb2.LookupResponse = self._stub.Lookup(request, timeout=timeout)
        t3 = time.perf_counter()
        matches: list[tuple[str, bytes]] = []
        nodes = []
        for node in response.nodes:
            found = node_candidates(self.keys, node)
            matches.extend((node.member_state, h) for h in found or ())
            nodes.append(_summary(node, len(found or ()), implausible=found is None))
        t4 = time.perf_counter()
        timings = {
            "federation_ms": (t1 - t0) * 1e3,
            "encrypt_ms": (t2 - t1) * 1e3,
            "lookup_ms": (t3 - t2) * 1e3,
            "decrypt_ms": (t4 - t3) * 1e3,
        }
        return LookupReport(
            header=header,
            threshold=response.threshold,
            threshold_version=response.threshold_version,
            matches=tuple(matches),
            nodes=tuple(nodes),
            bytes_sent=request.ByteSize(),
            bytes_received=response.ByteSize(),
            timings_ms={k: round(v, 1) for k, v in timings.items()},
            subject_category=subject_category,
            opening=opening,
            opening_keys={n.member_state: n.opening_key for n in response.nodes if n.opening_key},
        )

    def resolve(
        self,
        report: LookupReport,
        application_date: str,
        verdicts: Sequence[SignedVerdict] = (),
        timeout: float = 30.0,
        case_inputs: coordinator_pb2.CaseInputs | None = None,
    ) -> ResolveReport:
        """Ask for the details of the matched hits and the Dublin decision. ``verdicts`` are
        the signed verdicts of the requesting state's verifiers on the candidate hits
        (:mod:`fedmatch.protocol.verification`): a hit's details are asked for only when enough
        distinct people confirmed it (two by default) and nobody rejected it."""
        check_candidate_count(len(report.matches), "resolve")
        header = self._signed_by_me(report.header)
        request = coordinator_pb2.ResolveRequest(
            header=header_to_pb(
                header,
                self.signer.sign(header, "resolve", subject_category=report.subject_category),
            ),
            application_date=application_date,
            hits=[coordinator_pb2.HitRef(member_state=s, handle=h) for s, h in report.matches],
            verdicts=[verdict_to_pb(v) for v in verdicts],
            # What the authority knows of the applicant (fedmatch.protocol.casefile.load_case_file).
            case_inputs=case_inputs,
            openings=self._sealed_openings(report),
        )
        t0 = time.perf_counter()
        response: coordinator_pb2.ResolveResponse = self._stub.Resolve(request, timeout=timeout)
        elapsed = (time.perf_counter() - t0) * 1e3
        d = response.decision
        return ResolveReport(
            regime=enum_name(coordinator_pb2.Regime, d.regime, "REGIME_"),
            rule=enum_name(coordinator_pb2.Rule, d.rule, "RULE_"),
            procedure=enum_name(coordinator_pb2.Procedure, d.procedure, "PROCEDURE_"),
            responsible_state=d.responsible_state or None,
            evidence=tuple(_hit_dict(h) for h in d.evidence),
            tie=d.tie,
            # A node whose answer was dropped as implausible leaves the decision partial.
            complete=d.complete and all(n.outcome != IMPLAUSIBLE for n in report.nodes),
            explanation=d.explanation,
            hits=tuple(_hit_dict(h) for h in response.hits),
            nodes=tuple(_summary(n, 0) for n in response.nodes),
            bytes_sent=request.ByteSize(),
            bytes_received=response.ByteSize(),
            elapsed_ms=round(elapsed, 1),
            statuses=tuple(_status_dict(st) for st in response.statuses),
            proposal=proposal_summary(response.proposal) if response.HasField("proposal") else None,
        )

    def fetch_packets(
        self, report: LookupReport, probe_image: bytes = b"", timeout: float = 60.0
    ) -> PacketFetch:
        """The verification packets of the candidate hits (fedmatch/protocol/packet.py):
        the probe's opening is sealed to each node with hits, each node checks that the
        candidates really match and answers with packets only the sealer can open.
        ``probe_image``: the photo the lookup was made from (b"" for a template lookup);
        every verdict will name its SHA-256, as the signed request does."""
        digest = image_digest(probe_image)
        if not report.matches:
            return PacketFetch(digest, (), {})
        check_candidate_count(len(report.matches), "packet request")
        # Without the opening (lost .opening file) the nodes refuse, and say so.
        states = sorted({s for s, _ in report.matches} & set(report.opening_keys))
        keys: dict[str, bytes] = {}
        openings = []
        opening = report.opening
        for state in states:
            if opening is None:
                break
            sealed, keys[state] = seal_opening_with_reply(
                opening, report.opening_keys[state], report.header.query_id, state
            )
            openings.append(coordinator_pb2.SealedOpening(member_state=state, sealed=sealed))
        header = self._signed_by_me(report.header)
        request = coordinator_pb2.VerificationPacketsRequest(
            header=header_to_pb(header, self.signer.sign(header, "packets", digest)),
            hits=[coordinator_pb2.HitRef(member_state=s, handle=h) for s, h in report.matches],
            openings=openings,
            probe_image_sha256=digest,
        )
        stub = self._stub.GetVerificationPackets
        response: coordinator_pb2.VerificationPacketsResponse = stub(request, timeout=timeout)
        asked = set(report.matches)
        packets: list[CandidatePacket] = []
        failed: dict[str, str] = {}
        for node in response.nodes:
            if node.outcome != "ok" or node.member_state not in keys:
                failed[node.member_state] = f"{node.outcome or 'no answer'}: {node.detail}"
                continue
            state = node.member_state
            for sealed_packet in packets_from_pb(node.packets):
                if (state, sealed_packet.handle) not in asked:
                    raise ImplausibleResult(f"{state} sent a packet not asked for")
                qid = report.header.query_id
                packets.append(open_packet(sealed_packet, keys[state], qid, state))
        # The requesting end's record of what was received (no image, no hash of one). A
        # data-subject search's log names no state: a failure there would say where a
        # model match is, before anyone compared the images (DOMAIN.md section 6).
        subject = report.header.purpose is Purpose.DATA_SUBJECT_REQUEST
        log.info(
            "verification packets query=%s received=%d not_verifiable=%d failed=%s",
            report.header.query_id,
            len(packets),
            sum(1 for p in packets if not p.verifiable),
            (str(len(failed)) if subject else ",".join(sorted(failed))) or "-",
        )
        return PacketFetch(digest, tuple(packets), failed)

    def answer_data_subject(
        self,
        header: QueryHeader,
        hits: Sequence[tuple[str, bytes]],
        verdicts: Sequence[SignedVerdict],
        timeout: float = 30.0,
    ) -> SubjectReply:
        """A data subject's answer (``header``: the data-subject lookup's): the states whose
        candidate enough distinct verifiers confirmed on the released images and nobody
        rejected, as the coordinator found them (:mod:`fedmatch.requester.rights`)."""
        check_candidate_count(len(hits), "answer")
        header = self._signed_by_me(header)
        request = coordinator_pb2.DataSubjectAnswerRequest(
            header=header_to_pb(header, self.signer.sign(header, "answer")),
            hits=[coordinator_pb2.HitRef(member_state=s, handle=h) for s, h in hits],
            verdicts=[verdict_to_pb(v) for v in verdicts],
        )
        reply: coordinator_pb2.DataSubjectAnswerResponse = self._stub.AnswerDataSubject(
            request, timeout=timeout
        )
        return SubjectReply(
            tuple(reply.states),
            # With each candidate's handle: the requester matches it to its packet.
            tuple(_status_dict(st) | {"handle": st.handle.hex()} for st in reply.statuses),
            tuple(reply.unanswered),
        )

    @staticmethod
    def _sealed_openings(report: LookupReport) -> list[coordinator_pb2.SealedOpening]:
        """The probe's opening, sealed to each node a hit is claimed at (none without the
        opening: the nodes then refuse the details)."""
        if report.opening is None:
            return []
        states = sorted({state for state, _ in report.matches} & set(report.opening_keys))
        return [
            coordinator_pb2.SealedOpening(
                member_state=state,
                sealed=seal_opening(
                    report.opening, report.opening_keys[state], report.header.query_id, state
                ),
            )
            for state in states
        ]

    def confirm_decision(
        self,
        header: QueryHeader,
        proposal_digest: str,
        action: str = "accept",
        override_state: str = "",
        override_criterion: str = "",
        reason: str = "",
        timeout: float = 30.0,
    ) -> ConfirmationReport:
        """An official accepts (or overrides: a state, a criterion from
        :data:`fedmatch.protocol.casefile.CRITERIA` and a reason) the proposal
        ``proposal_digest`` of the case ``header.query_id``. The official is this
        requester's officer (``header.operator`` becomes their id), whose key signs the
        request, over the digest of the confirmation's body."""
        if action not in ACTIONS:
            raise InvalidInput("action must be accept or override")
        if override_criterion and override_criterion not in CRITERIA:
            raise InvalidInput(f"override criterion must be one of: {', '.join(CRITERIA)}")
        header = self._signed_by_me(header)
        body = confirmation_digest(
            header.query_id, proposal_digest, action, override_state, override_criterion, reason
        )
        request = coordinator_pb2.ConfirmDecisionRequest(
            header=header_to_pb(header, self.signer.sign(header, "confirm", body)),
            proposal_digest=proposal_digest,
            action=ACTIONS[action],
            override_state=override_state,
            override_criterion=CRITERIA.get(
                override_criterion, coordinator_pb2.CRITERION_UNSPECIFIED
            ),
            reason=reason,
        )
        reply: coordinator_pb2.ConfirmDecisionResponse = self._stub.ConfirmDecision(
            request, timeout=timeout
        )
        return ConfirmationReport(
            query_id=reply.query_id,
            proposal_digest=reply.proposal_digest,
            action=enum_name(coordinator_pb2.ConfirmAction, reply.action, "CONFIRM_ACTION_"),
            responsible_state=reply.responsible_state,
            criterion=enum_name(coordinator_pb2.Criterion, reply.criterion, "CRITERION_"),
            official_id=reply.official_id,
            confirmed_at=reply.confirmed_at,
            log_index=reply.log_index,
        )
