"""The coordinator's plain-Python service: authorize, fan out, gather, decide.

The coordinator relays the encrypted probe and results as opaque bytes (it forwards the
protobuf payloads without decoding them), never holds a secret key (a lookup carrying one is
refused before anything is sent), and sees hit metadata only for handles the requester chose
to resolve. It keeps a short-lived record of each lookup so that a resolve can only ask the
nodes that answered that lookup, for that requester.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import grpc

from coordinator.case import CaseProposal, Criterion, propose
from coordinator.casestore import CaseStore, StoredProposal, case_store_path
from coordinator.casework import (
    CaseFacts,
    ConfirmationRequest,
    proposal_digest,
    proposal_json,
    received_hits,
)
from coordinator.config import CoordinatorConfig
from coordinator.dublin import Decision, decide
from coordinator.fanout import NodeCall, NodeOutcome, fan_out
from coordinator.nodecheck import NodeCheck, NodeChecks, node_checks_path
from coordinator.packets import PacketLedger, StatePackets, received_packets, rejections_by_state
from coordinator.relay import NoticeRelay
from coordinator.verification import HitGate, HitOutcome, Screening, settle
from coordinator.witnessing import Witnesses
from fedmatch.audit.entry import EventKind, SignedEntry, digest_hex
from fedmatch.audit.events import handles_digest, header_event, refusal_event
from fedmatch.audit.note import CosignatureVerifier, NoteVerifier
from fedmatch.audit.party import PartyAudit
from fedmatch.audit.witness import Authorization
from fedmatch.domain import EncryptedProbe, HitDetail, Purpose, QueryHeader, check_member_state
from fedmatch.errors import (
    AlreadyExists,
    FedmatchError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
)
from fedmatch.grpcutil.auth import caller
from fedmatch.grpcutil.server import make_channel
from fedmatch.pki.names import dns_name
from fedmatch.protocol.epochs import EpochTable
from fedmatch.protocol.gate import Gate
from fedmatch.protocol.limits import (
    HANDLE_BYTES,
    MAX_HANDLES_PER_REQUEST,
    MAX_NODE_RESPONSE_BYTES,
    MAX_RECEIVE_BYTES,
)
from fedmatch.protocol.ratelimit import StateBuckets
from fedmatch.protocol.statement import SignedRequest, VerifiedRequest
from fedmatch.protocol.verification import HitKey, SignedVerdict
from fedmatch.protocol.wire import (
    authorization_to_pb,
    header_to_pb,
    hit_from_pb,
    key_bundle_from_pb,
    probe_to_pb,
    verdict_to_pb,
)
from fedmatch.rpc.v1 import audit_pb2_grpc, common_pb2, coordinator_pb2, node_pb2, node_pb2_grpc

__all__ = ["Confirmed", "CoordinatorService", "Resolution", "SubjectAnswer"]

log = logging.getLogger("fedmatch.coordinator")

# Lookups kept for a later resolve; at ~10,000 a day federation-wide (DOMAIN.md section 8)
# this holds more than a day's traffic.
MAX_PENDING_LOOKUPS = 20_000
_ANSWERS_KEPT = 16
# Live key ids per member state (ids only, a few bytes each): far more than a state's
# officers use at once.
_KEY_IDS_PER_STATE = 64


@dataclass
class _Lookup:
    requesting_state: str
    expires: float
    outcomes: dict[str, NodeOutcome]
    # The day the lookup ran at the coordinator: when its hits are received (their
    # Dublin clocks start then, DOMAIN.md section 3).
    received_on: dt.date = dt.date.min
    # The verification packets released for it (coordinator/packets.py).
    packets: PacketLedger = field(default_factory=PacketLedger)


@dataclass(frozen=True)
class Resolution:
    decision: Decision
    hits: tuple[HitDetail, ...]
    calls: tuple[NodeCall, ...]
    complete: bool
    # What became of each hit of the request (coordinator/verification.py).
    statuses: tuple[HitOutcome, ...] = ()
    # The case proposal under the whole criteria order, and its digest (what an official
    # confirms: confirm_decision).
    proposal: CaseProposal | None = None
    proposal_digest: str = ""


@dataclass(frozen=True)
class SubjectAnswer:
    """A data subject's answer: the states named, what became of each candidate, and the
    states whose node did not answer the lookup (the answer may miss them)."""

    states: tuple[str, ...]
    statuses: tuple[HitOutcome, ...]
    unanswered: tuple[str, ...]


@dataclass(frozen=True)
class Confirmed:
    """An official's confirmation of a case proposal, as logged."""

    query_id: str
    proposal_digest: str
    action: str
    responsible_state: str
    criterion: Criterion
    official: str
    at: dt.datetime
    log_index: int


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CoordinatorService:
    def __init__(
        self,
        config: CoordinatorConfig,
        audit: PartyAudit,
        gate: Gate,
        credentials: grpc.ChannelCredentials | None,
        clock: Callable[[], float] = time.monotonic,
        cases: CaseStore | None = None,
        now: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        """``credentials``: the coordinator's mTLS credentials for calling nodes (None only
        with --dev-insecure). ``cases`` keeps the case proposals across restarts (default:
        ``<audit directory>.cases.sqlite`` beside the audit directory); ``now`` is the
        wall clock (UTC) of hit receipt days and confirmations."""
        self.config = config
        self.audit = audit
        self.gate = gate
        directory = audit.config.directory
        self.cases = cases or CaseStore(case_store_path(directory))
        self._now = now
        self.purge_cases(now())
        # Answers of the last lookups, for a retried call with the same signed request.
        self._answers: OrderedDict[str, tuple[str, list[NodeCall]]] = OrderedDict()
        self._clock = clock
        self._stubs: dict[str, node_pb2_grpc.NodeServiceStub] = {}
        self._channels: list[grpc.Channel] = []
        witness_stubs: dict[str, audit_pb2_grpc.WitnessServiceStub] = {}
        witness_keys: dict[str, CosignatureVerifier] = {}
        for entry in config.nodes:
            channel = make_channel(
                entry.address,
                MAX_NODE_RESPONSE_BYTES,
                MAX_RECEIVE_BYTES,
                credentials,
                dns_name("node", entry.member_state) if credentials is not None else None,
            )
            self._channels.append(channel)
            self._stubs[entry.member_state] = node_pb2_grpc.NodeServiceStub(channel)
            witness_stubs[entry.member_state] = audit_pb2_grpc.WitnessServiceStub(channel)
            node_key = NoteVerifier.from_vkey(entry.key)
            witness_keys[entry.member_state] = CosignatureVerifier.from_public_key(
                node_key.name, node_key.public_key_bytes()
            )
        self.witnesses = Witnesses(audit.log, witness_stubs, witness_keys)
        # Reachable, and cosigning with the configured key: checked at start (the CLI) and
        # with every periodic witness round, for the log and `coordinator status`.
        self.node_checks = NodeChecks(self._stubs, node_checks_path(directory))
        # Notices between nodes (marks, erasures, rights requests): coordinator/relay.py.
        self.relay = NoticeRelay(
            audit,
            self._stubs,
            {s: k.public_key_bytes() for s, k in witness_keys.items()},
            config.node_deadline_seconds,
        )
        self._lock = threading.Lock()
        self._lookups: OrderedDict[str, _Lookup] = OrderedDict()
        # Key ids of registered epochs, with the state that registered them.
        # Key ids only (no keys), each state's own bounded set: one state's registrations
        # never push out another's (fedmatch.protocol.epochs).
        self._keys: EpochTable[None] = EpochTable(
            config.key_epoch_seconds, per_state=_KEY_IDS_PER_STATE
        )
        self._key_registrations = StateBuckets(
            config.key_registrations_per_hour, config.key_registration_burst, "key registration"
        )
        self.hit_gate = HitGate(audit.log, gate.verify_chain, config.confirmations_required)
        audit.start_publishing(self.witness_round, config.witness_interval_seconds)
        audit.started(
            {"nodes": len(config.nodes)},
            {
                "threshold": repr(config.threshold),
                "threshold_version": config.threshold_version,
                "model_id": config.model_id,
                "he_param_set": config.he_param_set,
                "hit_verifiers_required": str(config.confirmations_required),
                # The waiver of the second person, by its legal reference ("" = none).
                "hit_verification_waiver": config.verification_waiver,
                "members": ",".join(self.member_states()),
            },
        )

    def purge_cases(self, now: dt.datetime) -> None:
        """Drop proposals older than the case file's retention (on start and each resolve:
        the DELETE is indexed, and a quiet coordinator holds nothing new to expire)."""
        purged = self.cases.purge(now - dt.timedelta(days=self.config.case_retention_days))
        if purged:
            log.info("case file: %d proposals past their retention deleted", purged)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self.cases.close()

    def witness_round(self) -> None:
        """Have every node cosign the current checkpoint (periodically and for auditors);
        who did not, and why, is each node's check (a wrong key: an invalid cosignature)."""
        _, failures = self.witnesses.round(self.member_states(), self.config.node_deadline_seconds)
        self.node_checks.update(failures, self._now())

    def check_nodes(self) -> dict[str, NodeCheck]:
        """Check every node now (the start-up check): reachable, and its cosignature of
        this coordinator's checkpoint verifies with the key its ``[[nodes]]`` entry names.
        Each node not ``ok`` is logged as a warning naming it and its state."""
        self.witness_round()
        return self.node_checks.current()

    def published_checkpoint(self, fresh: bool) -> bytes:
        if fresh:
            self.witness_round()
        return self.witnesses.cosigned_checkpoint()

    def refused(self, request: str, header: QueryHeader | None, exc: FedmatchError) -> None:
        """Log a refused call with its reason (the servicer calls this for every one)."""
        self.audit.record(refusal_event(request, header, exc))

    def _on_record(
        self, entry: SignedEntry, states: list[str], deadline: float | None
    ) -> tuple[Authorization, dict[str, NodeCall]]:
        """Put ``entry`` in a checkpoint the ``states`` cosigned; states that could not
        cosign are reported with their outcome and never asked to work."""
        authorization, failures = self.witnesses.authorize(entry, states, self._timeout(deadline))
        failed = {
            state: NodeCall(state, outcome, detail[:300], 0.0, 0, 0, None)
            for state, (outcome, detail) in failures.items()
        }
        return authorization, failed

    def _require_operator(self, header: QueryHeader) -> None:
        if not header.unit or not header.operator:
            raise InvalidInput(
                "header.requesting_unit and header.operator_id are required (they are logged)"
            )

    def member_states(self) -> list[str]:
        return sorted(self._stubs)

    def _authorize(self, header: QueryHeader) -> None:
        if header.requesting_state not in self._stubs:
            raise PermissionDenied(
                f"member state {header.requesting_state} has no node in this federation"
            )

    def _deadline(self, time_remaining: float | None) -> float | None:
        """The caller's deadline as a point in time, fixed when the call starts: every later
        step (witnessing, fan-out) gets only the time actually left."""
        return None if time_remaining is None else time.monotonic() + time_remaining

    def _timeout(self, deadline: float | None) -> float:
        timeout = self.config.node_deadline_seconds
        if deadline is not None:
            # Leave the coordinator time to gather and answer within its caller's deadline.
            left = deadline - time.monotonic()
            timeout = min(timeout, max(0.05, left * 0.9 - 0.05))
        return timeout

    def register_keys(
        self,
        header: QueryHeader,
        request: common_pb2.RegisterKeysRequest,
        time_remaining: float | None,
    ) -> tuple[str, float, list[NodeCall]]:
        """Relay a key registration to every node but the requester's own. The coordinator
        keeps only the key id (to refuse unknown ids before a fan-out), never the keys."""
        deadline = self._deadline(time_remaining)
        self._authorize(header)
        peer = caller()
        if peer is not None and peer.member_state != header.requesting_state:
            # Key ids belong to the state that registered them: no registering for another.
            raise PermissionDenied(
                f"a caller of {peer.member_state or 'EU'} cannot register keys for "
                f"{header.requesting_state}"
            )
        if request.key_bundle.secret_key:
            raise InvalidInput("key bundle carries a secret key; refused (send public material)")
        bundle = key_bundle_from_pb(request.key_bundle)
        if bundle.param_set != self.config.he_param_set:
            # Refused here, not by every node after a 36 MB fan-out.
            raise PreconditionFailed(self._param_set_mismatch("key bundle"))
        key_id = bundle.digest()
        if self._keys.check_registrable(key_id, header.requesting_state) is None:
            self._key_registrations.take(header.requesting_state)
        forwarded = common_pb2.RegisterKeysRequest(
            header=header_to_pb(header), key_bundle=request.key_bundle
        )
        targets = {
            state: (stub.RegisterKeys, forwarded)
            for state, stub in self._stubs.items()
            if state != header.requesting_state
        }
        calls = fan_out(targets, self._timeout(deadline))
        if not any(c.outcome is NodeOutcome.OK for c in calls.values()):
            raise PreconditionFailed("no node accepted the key material")
        expires = self._keys.register(key_id, None, header.requesting_state)
        self.audit.record(
            header_event(
                EventKind.KEYS_REGISTERED,
                header,
                registers=tuple(sorted(calls)),
                outcome="ok",
                labels={"key_id": key_id} | {s.lower(): c.outcome.value for s, c in calls.items()},
            )
        )
        log.info(
            "keys registered key=%s from=%s outcomes=%s",
            key_id[:16],
            header.requesting_state,
            ",".join(f"{s}:{c.outcome.value}" for s, c in sorted(calls.items())),
        )
        return key_id, expires, [calls[s] for s in sorted(calls)]

    def lookup(
        self,
        header: QueryHeader,
        probe: EncryptedProbe,
        signed: SignedRequest | None,
        time_remaining: float | None,
    ) -> list[NodeCall]:
        deadline = self._deadline(time_remaining)
        probe_hash = digest_hex(probe.ciphertext)
        states = sorted(s for s in self._stubs if s != header.requesting_state)
        self.audit.record(
            header_event(
                EventKind.SEARCH_REQUESTED, header, probe_hash=probe_hash, registers=states
            )
        )
        self._authorize(header)
        self._require_operator(header)
        if probe.model_id != self.config.model_id:
            raise PreconditionFailed(
                f"probe from model {probe.model_id[:64]!r}; "
                f"the federation uses {self.config.model_id!r}"
            )
        if probe.dimension != self.config.dimension:
            raise InvalidInput(f"probe dimension must be {self.config.dimension}")
        if probe.param_set != self.config.he_param_set:
            raise PreconditionFailed(self._param_set_mismatch("probe"))
        if self._keys.get(probe.key_id)[1] != header.requesting_state:
            raise PermissionDenied("key id was registered by another member state")
        verified = self._verified(signed, header, "lookup", probe_hash)
        with self._lock:
            answered = self._answers.get(header.query_id)
        if answered is not None and answered[0] == verified.digest:
            return answered[1]  # a retry of the same signed call: the same answer
        self.gate.consume(verified)
        self._start_lookup(header)
        # On the record before anything leaves: the nodes check this entry's inclusion.
        authorized = self.audit.log.append(
            header_event(
                EventKind.SEARCH_AUTHORIZED,
                header,
                probe_hash=probe_hash,
                registers=states,
                labels={"key_id": probe.key_id, "request": verified.digest},
            )
        )
        authorization, failed = self._on_record(authorized, states, deadline)
        search = node_pb2.SearchRequest(
            header=header_to_pb(header, signed),
            probe=probe_to_pb(probe),
            threshold_version=self.config.threshold_version,
            authorization=authorization_to_pb(authorization),
        )
        targets = {
            state: (self._stubs[state].Search, search) for state in states if state not in failed
        }
        calls = fan_out(targets, self._timeout(deadline)) | failed
        self.audit.record(
            header_event(
                EventKind.SEARCH_DISPATCHED,
                header,
                registers=states,
                probe_hash=probe_hash,
                outcome="complete"
                if all(c.outcome is NodeOutcome.OK for c in calls.values())
                else "partial",
                counts={
                    "answered": sum(c.outcome is NodeOutcome.OK for c in calls.values()),
                    "failed": sum(c.outcome is not NodeOutcome.OK for c in calls.values()),
                },
                labels={"authorized_index": str(authorized.seq)}
                | {s.lower(): c.outcome.value for s, c in calls.items()},
            )
        )
        with self._lock:
            record = self._lookups.get(header.query_id)
            if record is not None:  # (evicted meanwhile only under a flood of lookups)
                record.outcomes = {s: c.outcome for s, c in calls.items()}
        log.info(
            "lookup query=%s from=%s purpose=%s outcomes=%s",
            header.query_id,
            header.requesting_state,
            header.purpose.value,
            ",".join(f"{s}:{c.outcome.value}" for s, c in sorted(calls.items())),
        )
        ordered = [calls[s] for s in sorted(calls)]
        with self._lock:
            self._answers[header.query_id] = (verified.digest, ordered)
            while len(self._answers) > _ANSWERS_KEPT:
                self._answers.popitem(last=False)
        return ordered

    def _verified(
        self, signed: SignedRequest | None, header: QueryHeader, kind: str, probe_hash: str
    ) -> VerifiedRequest:
        """The requester's signed statement: signed by an officer of the requesting state
        (their personal certificate; ``header.operator`` is its id), sent over a workstation
        channel of that same state (the access rules admit only operator certificates)."""
        peer = caller()
        if peer is not None and peer.member_state != header.requesting_state:
            raise PermissionDenied(
                f"a caller of {peer.member_state or 'EU'} cannot ask for {header.requesting_state}"
            )
        return self.gate.verify(signed, header, kind, probe_hash)

    def _start_lookup(self, header: QueryHeader) -> None:
        now = self._clock()
        with self._lock:
            # Oldest first: drop expired lookups, and the oldest beyond the bound, so a flood
            # of lookups cannot grow this table without limit.
            while self._lookups:
                qid, rec = next(iter(self._lookups.items()))
                if rec.expires > now and len(self._lookups) < MAX_PENDING_LOOKUPS:
                    break
                del self._lookups[qid]
            if header.query_id in self._lookups:
                raise AlreadyExists("this query id was already used")
            self._lookups[header.query_id] = _Lookup(
                header.requesting_state,
                now + self.config.lookup_ttl_seconds,
                {},
                self._now().astimezone(dt.UTC).date(),
            )

    def resolve(
        self,
        header: QueryHeader,
        application_date: dt.date,
        hits: Sequence[tuple[str, bytes]],
        verdicts: Sequence[SignedVerdict],
        signed: SignedRequest | None,
        time_remaining: float | None,
        facts: CaseFacts | None = None,
        openings: Mapping[str, bytes] | None = None,
    ) -> Resolution:
        """``facts``: what the requesting authority supplied for the Dublin criteria (None:
        nothing beyond the hits); ``application_date`` is the registration date;
        ``openings``: per state, the probe's opening sealed to that node (relayed unread:
        fedmatch/protocol/opening.py)."""
        deadline = self._deadline(time_remaining)
        self._authorize(header)
        self._require_operator(header)
        # The case is checked (dates, states) before anything is asked of the nodes.
        case = (facts or CaseFacts()).case(header.requesting_state, application_date)
        if header.purpose is Purpose.DATA_SUBJECT_REQUEST:
            # A data subject learns which states hold their data, nothing more: no handle
            # of such a search is ever resolved to a record (DOMAIN.md section 6).
            raise PermissionDenied("hit details are refused for a data-subject request")
        request = self._verified(signed, header, "resolve", "")
        self.gate.consume(request)
        rec = self._pending_lookup(header)
        self.cases.check_open(header.query_id)
        self._check_hits(rec, hits)
        # Only hits enough verifiers confirmed (and nobody rejected) go further; each
        # verdict must name the images its people compared: those released, or refused.
        screening = self.hit_gate.screen(
            header, [HitKey(s, h) for s, h in hits], verdicts, request.digest, rec.packets.check
        )
        self._report_rejections(header, screening, deadline)
        pending = [a for a in screening.assessments if a.status == "pending"]
        if pending and not screening.verified:
            raise PermissionDenied(
                f"hit details need {self.config.confirmations_required} distinct verifiers' "
                f"confirmations per hit; {len(pending)} hits have fewer"
            )
        by_state: dict[str, list[bytes]] = defaultdict(list)
        for hit in screening.verified:
            by_state[hit.member_state].append(hit.handle)
        calls = self._ask_for_details(
            header, signed, request, screening, by_state, deadline, openings or {}
        )
        details, outcomes = settle(screening, *self._received_details(calls))
        outcomes = [replace(o, not_verifiable=rec.packets.not_verifiable(o.hit)) for o in outcomes]
        # Hits still awaiting people (pending, or held for review) leave the decision partial.
        complete = (
            all(o is NodeOutcome.OK for o in rec.outcomes.values())
            and all(c.outcome is NodeOutcome.OK for c in calls.values())
            and all(o.status in ("verified", "rejected") for o in outcomes)
        )
        decision = decide(header.requesting_state, application_date, details)
        # Only verified hits whose details came back reach the case.
        proposal = propose(replace(case, hits=received_hits(details, rec.received_on)))
        digest = self._store_proposal(header, proposal, complete)
        self._record_proposal(
            header, sorted(by_state), screening.confirmers, details, decision, proposal, digest,
            complete,
        )  # fmt: skip
        log.info(
            "resolve query=%s from=%s hits=%d rule=%s responsible=%s complete=%s",
            header.query_id,
            header.requesting_state,
            len(details),
            decision.rule.value,
            decision.responsible_state or "-",
            complete,
        )
        return Resolution(
            decision,
            tuple(details),
            tuple(calls.values()),
            complete,
            tuple(outcomes),
            proposal=proposal,
            proposal_digest=digest,
        )

    def verification_packets(
        self,
        header: QueryHeader,
        hits: Sequence[tuple[str, bytes]],
        openings: Mapping[str, bytes],
        probe_image: str,
        signed: SignedRequest | None,
        time_remaining: float | None,
    ) -> list[StatePackets]:
        """Relay a request for the candidates' verification packets to their nodes (each
        checks the opening and releases packets for proven matches only) and relay the
        sealed packets back; logged (``packets_authorized``) before any node is asked."""
        deadline = self._deadline(time_remaining)
        self._authorize(header)
        self._require_operator(header)
        # A data-subject search's candidates get their packets too: its answer names a state
        # only once the verifiers compared these images (answer_data_subject).
        request = self._verified(signed, header, "packets", probe_image)
        rec = self._pending_lookup(header)
        self._check_hits(rec, hits)
        if not hits or len(set(hits)) != len(hits):
            raise InvalidInput("a packet request names each candidate hit once")
        # The nonce first: a replayed request does not use up one of the lookup's requests.
        self.gate.consume(request)
        with self._lock:
            rec.packets.begin(probe_image)
        by_state: dict[str, list[bytes]] = defaultdict(list)
        for state, handle in hits:
            by_state[state].append(handle)
        entry = self.audit.log.append(
            header_event(
                EventKind.PACKETS_AUTHORIZED,
                header,
                registers=sorted(by_state),
                outcome="authorized",
                counts={s.lower(): len(h) for s, h in by_state.items()},
                labels={f"handles_{s.lower()}": handles_digest(h) for s, h in by_state.items()}
                | {"request": request.digest},
            )
        )
        authorization, calls = self._on_record(entry, sorted(by_state), deadline)
        targets = {
            state: (
                self._stubs[state].GetVerificationPackets,
                node_pb2.PacketsRequest(
                    header=header_to_pb(header, signed),
                    handles=handles,
                    authorization=authorization_to_pb(authorization),
                    sealed_opening=openings.get(state, b""),
                    probe_image_sha256=probe_image,
                ),
            )
            for state, handles in by_state.items()
            if state not in calls
        }
        answers = received_packets(calls | fan_out(targets, self._timeout(deadline)), by_state)
        with self._lock:
            rec.packets.record(answers)
        log.info(
            "verification packets query=%s from=%s packets=%d nodes=%s",
            header.query_id,
            header.requesting_state,
            sum(len(a.packets) for a in answers),
            ",".join(f"{a.member_state}:{a.outcome}" for a in answers),
        )
        return answers

    def answer_data_subject(
        self,
        header: QueryHeader,
        hits: Sequence[tuple[str, bytes]],
        verdicts: Sequence[SignedVerdict],
        signed: SignedRequest | None,
        time_remaining: float | None,
    ) -> SubjectAnswer:
        """A data subject's "which states hold my data" (DOMAIN.md section 6): the states
        with a candidate of the data-subject search that enough distinct verifiers of the
        requesting state confirmed, on the images released for it, and nobody rejected.

        The verdicts pass the hit gate of a resolve (signatures and certificate chains to
        the federation root, this query, the released images); a rejection is logged,
        final and reported to the owning node. A candidate confirmed without images to
        compare (a template record or a template search) names no state: that would rest
        on the model match alone. No node is asked for details; the answer is logged
        (``subject_answered``: the states named and who confirmed them)."""
        deadline = self._deadline(time_remaining)
        self._authorize(header)
        self._require_operator(header)
        if header.purpose is not Purpose.DATA_SUBJECT_REQUEST:
            raise InvalidInput("only a data-subject request's candidates give a states answer")
        request = self._verified(signed, header, "answer", "")
        self.gate.consume(request)
        rec = self._pending_lookup(header)
        self._check_hits(rec, hits)
        if len(set(hits)) != len(hits):
            raise InvalidInput("an answer names each candidate hit once")
        screening = self.hit_gate.screen(
            header, [HitKey(s, h) for s, h in hits], verdicts, request.digest, rec.packets.check
        )
        self._report_rejections(header, screening, deadline)
        outcomes = []
        for a in screening.assessments:
            blind = rec.packets.not_verifiable(a.hit)
            outcome = HitOutcome.of(a, "unverifiable" if a.verified and blind else None)
            outcomes.append(replace(outcome, not_verifiable=blind))
        named = [o for o in outcomes if o.status == "verified"]
        states = tuple(sorted({o.hit.member_state for o in named}))
        unanswered = tuple(sorted(s for s, o in rec.outcomes.items() if o is not NodeOutcome.OK))
        counts: dict[str, int] = defaultdict(int)
        for o in outcomes:
            counts[o.status] += 1
        # Complete: every node answered and every candidate is settled by people (named or
        # rejected); a pending or unverifiable candidate may be a state the answer misses.
        settled = counts["verified"] + counts["rejected"] == len(outcomes)
        self.audit.record(
            header_event(
                EventKind.SUBJECT_ANSWERED,
                header,
                registers=states,
                verifiers=tuple(sorted({v for o in named for v in o.confirmed_by})),
                outcome="complete" if settled and not unanswered else "partial",
                counts=dict(counts),
                labels={"request": request.digest},
            )
        )
        log.info(
            "data-subject answer query=%s from=%s states=%d candidates=%d",
            header.query_id,
            header.requesting_state,
            len(states),
            len(outcomes),
        )
        return SubjectAnswer(states, tuple(outcomes), unanswered)

    def _report_rejections(
        self, header: QueryHeader, screening: Screening, deadline: float | None
    ) -> None:
        """Tell each owning node which of its candidates the requester's verifiers rejected
        (their signed verdicts): it logs them and never releases those records' details. A
        node that cannot be told is logged here; the rejection stands at the coordinator."""
        rejected = [a.hit for a in screening.assessments if a.status == "rejected"]
        by_state = rejections_by_state(screening.verdicts, rejected)
        targets = {
            state: (
                self._stubs[state].ReportRejections,
                node_pb2.ReportRejectionsRequest(
                    header=header_to_pb(header), verdicts=[verdict_to_pb(v) for v in verdicts]
                ),
            )
            for state, verdicts in by_state.items()
            if state in self._stubs
        }
        for state, call in fan_out(targets, self._timeout(deadline)).items():
            if call.outcome is not NodeOutcome.OK:
                log.warning(
                    "rejections not reported query=%s to=%s outcome=%s",
                    header.query_id,
                    state,
                    call.outcome.value,
                )

    def _pending_lookup(self, header: QueryHeader) -> _Lookup:
        """The lookup a resolve names: pending, not expired, and of the same state."""
        with self._lock:
            rec = self._lookups.get(header.query_id)
        if rec is None or rec.expires <= self._clock():
            raise NotFound("no lookup with this query id is pending")
        if rec.requesting_state != header.requesting_state:
            raise NotFound("no lookup with this query id is pending")
        return rec

    def _check_hits(self, rec: _Lookup, hits: Sequence[tuple[str, bytes]]) -> None:
        """A resolve's hits: few enough, each naming a state that answered the lookup, with
        a handle of the right size."""
        if len(hits) > MAX_HANDLES_PER_REQUEST:
            raise InvalidInput(f"at most {MAX_HANDLES_PER_REQUEST} hits per request")
        for state, handle in hits:
            check_member_state(state, "hits.member_state")
            if rec.outcomes.get(state) != NodeOutcome.OK:
                raise InvalidInput(f"hits name {state}, which did not answer this lookup")
            if len(handle) != HANDLE_BYTES:
                raise InvalidInput(f"a handle is {HANDLE_BYTES} bytes")

    def _ask_for_details(
        self,
        header: QueryHeader,
        signed: SignedRequest | None,
        request: VerifiedRequest,
        screening: Screening,
        by_state: dict[str, list[bytes]],
        deadline: float | None,
        openings: Mapping[str, bytes],
    ) -> dict[str, NodeCall]:
        """Log the verified hits, then ask each owning node for their details with the
        verdicts that confirmed them (no node is asked off the record)."""
        if not by_state:
            return {}
        verified = self.audit.log.append(
            header_event(
                EventKind.HIT_VERIFIED,
                header,
                registers=sorted(by_state),
                verifiers=screening.confirmers,
                outcome="confirmed",
                counts={s.lower(): len(h) for s, h in by_state.items()},
                labels={f"handles_{s.lower()}": handles_digest(h) for s, h in by_state.items()}
                | {"request": request.digest},
            )
        )
        authorization, calls = self._on_record(verified, sorted(by_state), deadline)
        targets = {
            state: (
                self._stubs[state].GetHitDetails,
                node_pb2.HitDetailsRequest(
                    header=header_to_pb(header, signed),
                    handles=handles,
                    authorization=authorization_to_pb(authorization),
                    verdicts=[
                        verdict_to_pb(v)
                        for v in screening.verdicts_for([HitKey(state, h) for h in handles])
                    ],
                    sealed_opening=openings.get(state, b""),
                ),
            )
            for state, handles in by_state.items()
            if state not in calls
        }
        return calls | fan_out(targets, self._timeout(deadline))

    @staticmethod
    def _received_details(calls: dict[str, NodeCall]) -> tuple[list[HitDetail], list[HitKey]]:
        """The hit details the nodes returned, and the hits they hold for review."""
        details: list[HitDetail] = []
        held: list[HitKey] = []
        for state, call in calls.items():
            if call.outcome is NodeOutcome.OK:
                resp: node_pb2.HitDetailsResponse = call.response
                held.extend(HitKey(state, h) for h in resp.held_for_review)
                for h in resp.hits:
                    detail = hit_from_pb(h)
                    if detail.member_state != state:
                        # A node may only speak for its own register.
                        raise PreconditionFailed(f"node {state} answered for another state")
                    details.append(detail)
        return details, held

    def _store_proposal(self, header: QueryHeader, proposal: CaseProposal, complete: bool) -> str:
        """Keep the case's proposal (the one an official confirms) and return its digest."""
        document = proposal_json(header.query_id, proposal, complete)
        digest = proposal_digest(document)
        now = self._now().astimezone(dt.UTC)
        self.cases.put(
            header.query_id,
            header.requesting_state,
            digest,
            document,
            now.isoformat(),
            header.case_reference,
        )
        self.purge_cases(now)
        return digest

    def _record_proposal(
        self,
        header: QueryHeader,
        registers: list[str],
        verifiers: tuple[str, ...],
        details: list[HitDetail],
        decision: Decision,
        proposal: CaseProposal,
        digest: str,
        complete: bool,
    ) -> None:
        self.audit.record(
            header_event(
                EventKind.DECISION_PROPOSED,
                header,
                registers=registers,
                outcome="complete" if complete else "partial",
                verifiers=verifiers,
                counts={"hits": len(details), "criterion": int(proposal.criterion)},
                labels={
                    # What the hits alone say (the legacy rule) and, separately, what the
                    # case proposes: with family or documents the two can name other states.
                    "hit_rule": decision.rule.value,
                    "hit_regime": decision.regime.value,
                    # The proposal, by its digest and what it names; no personal data.
                    "proposal": digest,
                    "criterion": proposal.criterion.name.lower(),
                    "regime": proposal.regime.value,
                    "procedure": proposal.procedure.value,
                    "responsible_state": proposal.responsible_state,
                    "earliest_due": (
                        proposal.earliest_due.isoformat() if proposal.earliest_due else ""
                    ),
                },
            )
        )

    def confirm_decision(
        self, header: QueryHeader, request: ConfirmationRequest, signed: SignedRequest | None
    ) -> Confirmed:
        """An official of the requesting state accepts or overrides the case's proposal.

        Signed by the official, an officer of that state (statement kind "confirm" over the
        confirmation's digest, replay-protected); ``header.operator`` is their id. Once
        per case, for the proposal last answered (coordinator/casestore.py)."""
        self._authorize(header)
        self._require_operator(header)
        if request.query_id != header.query_id:
            raise InvalidInput("the confirmation names another query than its header")
        verified = self._verified(signed, header, "confirm", request.digest())
        self.gate.consume(verified)
        at = self._now().astimezone(dt.UTC)
        signer = str(getattr(verified.signer, "dns", ""))

        def record(stored: StoredProposal) -> tuple[dict[str, object], Confirmed]:
            overridden = request.action == "override"
            if not overridden and not stored.responsible_state:
                if stored.proposal.get("procedure") == "protection_elsewhere":
                    raise PreconditionFailed(
                        "this proposal is no Dublin case (protection granted elsewhere): "
                        "nothing to accept; an override names a state only where the "
                        "official finds the protection no longer stands"
                    )
                # A tie or a minor's family in several states: the official chooses.
                candidates = ", ".join(str(c) for c in stored.proposal.get("candidates", []))
                raise PreconditionFailed(
                    "this proposal names no state: confirm it by an override naming one of "
                    f"the candidates ({candidates})"
                )
            state = request.override_state if overridden else stored.responsible_state
            criterion = (
                request.override_criterion
                if overridden and request.override_criterion is not None
                else Criterion(stored.criterion)
            )
            # The reason is the official's free text: the log gets only its digest.
            reason = (
                {"reason_digest": digest_hex(request.reason.encode())} if request.reason else {}
            )
            entry = self.audit.log.append(
                header_event(
                    EventKind.DECISION_CONFIRMED,
                    header,
                    outcome=request.action,
                    verifiers=(header.operator,),
                    counts={"criterion": int(criterion)},
                    labels={
                        "proposal": stored.digest,
                        "responsible_state": state,
                        "proposed_state": stored.responsible_state,
                        # An official may confirm a proposal resting on partial answers.
                        "complete": "true" if stored.proposal.get("complete") else "false",
                        "signer": signer[:256],
                        "request": verified.digest,
                    }
                    | reason,
                )
            )
            confirmation: dict[str, object] = {
                "action": request.action,
                "official": header.operator,
                "unit": header.unit,
                "signer": signer,
                "at": at.isoformat(),
                "responsible_state": state,
                "criterion": int(criterion),
                "reason": request.reason,
                "log_index": entry.seq,
            }
            return confirmation, Confirmed(
                header.query_id,
                stored.digest,
                request.action,
                state,
                criterion,
                header.operator,
                at,
                entry.seq,
            )

        confirmed = self.cases.confirm(
            header.query_id,
            header.requesting_state,
            request.proposal_digest,
            record,
            header.case_reference,
        )
        log.info(
            "decision confirmed query=%s from=%s action=%s responsible=%s",
            header.query_id,
            header.requesting_state,
            confirmed.action,
            confirmed.responsible_state,
        )
        return confirmed

    def _param_set_mismatch(self, what: str) -> str:
        # Names only the federation's set: the sender's is attacker-chosen text.
        return (
            f"{what} for another HE parameter set; the federation uses "
            f"{self.config.he_param_set!r} (fedmatch keys generate --param-set)"
        )

    def federation_info(self) -> coordinator_pb2.FederationInfo:
        return coordinator_pb2.FederationInfo(
            threshold=self.config.threshold,
            threshold_version=self.config.threshold_version,
            he_param_set=self.config.he_param_set,
            member_states=self.member_states(),
            model_id=self.config.model_id,
            dimension=self.config.dimension,
        )
