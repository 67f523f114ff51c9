"""gRPC edge of the coordinator: decode, call :class:`CoordinatorService`, encode."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from coordinator.casework import (
    confirmation_from_pb,
    criterion_to_pb,
    facts_from_pb,
    proposal_to_pb,
)
from coordinator.dublin import Decision, Procedure, Regime, Rule
from coordinator.fanout import NodeCall, NodeOutcome
from coordinator.service import CoordinatorService
from coordinator.verification import HitOutcome
from fedmatch.audit.events import logs_refusals
from fedmatch.audit.servicer import AuditServicer
from fedmatch.domain import parse_date
from fedmatch.errors import InvalidInput
from fedmatch.grpcutil.auth import AUDIT_AND_HEALTH_RULES, AccessRule
from fedmatch.grpcutil.errors import translated
from fedmatch.grpcutil.server import RunningServer, ServerLimits, start_server
from fedmatch.grpcutil.shares import PeerShares, Shares
from fedmatch.protocol.limits import MAX_LOOKUP_RESPONSE_BYTES, MAX_RECEIVE_BYTES
from fedmatch.protocol.opening import openings_by_state
from fedmatch.protocol.packet import check_image_digest
from fedmatch.protocol.transport import Security
from fedmatch.protocol.wire import (
    header_from_pb,
    hit_to_pb,
    packet_to_pb,
    probe_from_pb,
    signed_from_pb,
    verdicts_from_pb,
)
from fedmatch.rpc.v1 import audit_pb2_grpc, common_pb2, coordinator_pb2_grpc
from fedmatch.rpc.v1 import coordinator_pb2 as cpb

__all__ = ["COORDINATOR_RULES", "CoordinatorServicer", "serve_coordinator"]

_OUTCOMES = {
    NodeOutcome.OK: cpb.NODE_OUTCOME_OK,
    NodeOutcome.UNREACHABLE: cpb.NODE_OUTCOME_UNREACHABLE,
    NodeOutcome.DEADLINE_EXCEEDED: cpb.NODE_OUTCOME_DEADLINE_EXCEEDED,
    NodeOutcome.REFUSED: cpb.NODE_OUTCOME_REFUSED,
}
_REGIMES = {Regime.DUBLIN_III: cpb.REGIME_DUBLIN_III, Regime.AMMR: cpb.REGIME_AMMR}
_RULES = {
    Rule.IRREGULAR_ENTRY: cpb.RULE_IRREGULAR_ENTRY,
    Rule.SAR_DISEMBARKATION: cpb.RULE_SAR_DISEMBARKATION,
    Rule.EARLIER_APPLICATION: cpb.RULE_EARLIER_APPLICATION,
    Rule.NO_OTHER_STATE: cpb.RULE_NO_OTHER_STATE,
    Rule.PROTECTION_GRANTED: cpb.RULE_PROTECTION_GRANTED,
}
_PROCEDURES = {
    Procedure.TAKE_CHARGE: cpb.PROCEDURE_TAKE_CHARGE,
    Procedure.TAKE_BACK: cpb.PROCEDURE_TAKE_BACK,
    Procedure.NONE: cpb.PROCEDURE_NONE,
    Procedure.PROTECTION_ELSEWHERE: cpb.PROCEDURE_PROTECTION_ELSEWHERE,
}


def _node_result(call: NodeCall, with_blocks: bool) -> cpb.NodeResult:
    result = cpb.NodeResult(
        member_state=call.member_state,
        outcome=_OUTCOMES[call.outcome],
        detail=call.detail,
        elapsed_ms=call.elapsed_ms,
        bytes_sent=call.bytes_sent,
        bytes_received=call.bytes_received,
    )
    if with_blocks and call.response is not None:
        result.blocks.extend(call.response.blocks)
        result.opening_key = call.response.opening_key
    return result


def _decision_pb(decision: Decision, complete: bool) -> cpb.Decision:
    return cpb.Decision(
        regime=_REGIMES[decision.regime],
        rule=_RULES[decision.rule],
        procedure=_PROCEDURES[decision.procedure],
        responsible_state=decision.responsible_state or "",
        evidence=[hit_to_pb(h) for h in decision.evidence],
        tie=decision.tie,
        explanation=decision.explanation,
        complete=complete,
    )


def _status_pb(outcome: HitOutcome) -> cpb.HitStatus:
    return cpb.HitStatus(
        member_state=outcome.hit.member_state,
        handle=outcome.hit.handle,
        status=outcome.status,
        different_sex=outcome.different_sex,
        confirmed_by=outcome.confirmed_by,
        rejected_by=outcome.rejected_by,
        reasons=outcome.reasons,
        not_verifiable=outcome.not_verifiable,
    )


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServiceServicer):
    def __init__(self, service: CoordinatorService) -> None:
        self.service = service

    @translated
    def GetFederation(  # noqa: N802 - gRPC method names
        self, request: cpb.FederationRequest, context: grpc.ServicerContext
    ) -> cpb.FederationInfo:
        header_from_pb(request.header, request.HasField("header"))
        return self.service.federation_info()

    @translated
    @logs_refusals("register_keys")
    def RegisterKeys(  # noqa: N802
        self, request: common_pb2.RegisterKeysRequest, context: grpc.ServicerContext
    ) -> cpb.KeyRegistration:
        header = header_from_pb(request.header, request.HasField("header"))
        if not request.HasField("key_bundle"):
            raise InvalidInput("key_bundle is required")
        key_id, expires, calls = self.service.register_keys(
            header, request, context.time_remaining()
        )
        return cpb.KeyRegistration(
            key_id=key_id,
            expires_unix=int(expires),
            nodes=[_node_result(c, with_blocks=False) for c in calls],
        )

    @translated
    @logs_refusals("lookup")
    def Lookup(  # noqa: N802
        self, request: cpb.LookupRequest, context: grpc.ServicerContext
    ) -> cpb.LookupResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        if not request.HasField("probe"):
            raise InvalidInput("probe is required")
        probe = probe_from_pb(request.probe)
        calls = self.service.lookup(
            header, probe, signed_from_pb(request.header), context.time_remaining()
        )
        cfg = self.service.config
        return cpb.LookupResponse(
            query_id=header.query_id,
            threshold=cfg.threshold,
            threshold_version=cfg.threshold_version,
            nodes=[_node_result(c, with_blocks=True) for c in calls],
        )

    @translated
    @logs_refusals("resolve")
    def Resolve(  # noqa: N802
        self, request: cpb.ResolveRequest, context: grpc.ServicerContext
    ) -> cpb.ResolveResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        application_date = parse_date(request.application_date, "application_date")
        hits = [(h.member_state, h.handle) for h in request.hits]
        facts = facts_from_pb(request.case_inputs if request.HasField("case_inputs") else None)
        if request.verified_by:
            # Attested names are no verification: each verifier signs a verdict instead.
            raise InvalidInput(
                "verified_by is no longer accepted: send the verifiers' signed verdicts"
            )
        res = self.service.resolve(
            header,
            application_date,
            hits,
            verdicts_from_pb(request.verdicts),
            signed_from_pb(request.header),
            context.time_remaining(),
            facts,
            openings_by_state([(o.member_state, o.sealed) for o in request.openings]),
        )
        return cpb.ResolveResponse(
            decision=_decision_pb(res.decision, res.complete),
            proposal=(
                proposal_to_pb(res.proposal, res.proposal_digest, res.complete)
                if res.proposal is not None
                else None
            ),
            hits=[hit_to_pb(h) for h in res.hits],
            nodes=[_node_result(c, with_blocks=False) for c in res.calls],
            statuses=[_status_pb(o) for o in res.statuses],
        )

    @translated
    @logs_refusals("verification_packets")
    def GetVerificationPackets(  # noqa: N802
        self, request: cpb.VerificationPacketsRequest, context: grpc.ServicerContext
    ) -> cpb.VerificationPacketsResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        answers = self.service.verification_packets(
            header,
            [(h.member_state, h.handle) for h in request.hits],
            openings_by_state([(o.member_state, o.sealed) for o in request.openings]),
            check_image_digest(request.probe_image_sha256, "probe_image_sha256"),
            signed_from_pb(request.header),
            context.time_remaining(),
        )
        return cpb.VerificationPacketsResponse(
            nodes=[
                cpb.StatePackets(
                    member_state=a.member_state,
                    packets=[packet_to_pb(p) for p in a.packets],
                    outcome=a.outcome,
                    detail=a.detail,
                )
                for a in answers
            ]
        )

    @translated
    @logs_refusals("answer_data_subject")
    def AnswerDataSubject(  # noqa: N802
        self, request: cpb.DataSubjectAnswerRequest, context: grpc.ServicerContext
    ) -> cpb.DataSubjectAnswerResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        answer = self.service.answer_data_subject(
            header,
            [(h.member_state, h.handle) for h in request.hits],
            verdicts_from_pb(request.verdicts),
            signed_from_pb(request.header),
            context.time_remaining(),
        )
        return cpb.DataSubjectAnswerResponse(
            states=answer.states,
            statuses=[_status_pb(o) for o in answer.statuses],
            unanswered=answer.unanswered,
        )

    @translated
    @logs_refusals("confirm_decision")
    def ConfirmDecision(  # noqa: N802
        self, request: cpb.ConfirmDecisionRequest, context: grpc.ServicerContext
    ) -> cpb.ConfirmDecisionResponse:
        header = header_from_pb(request.header, request.HasField("header"))
        confirmed = self.service.confirm_decision(
            header, confirmation_from_pb(header.query_id, request), signed_from_pb(request.header)
        )
        return cpb.ConfirmDecisionResponse(
            query_id=confirmed.query_id,
            proposal_digest=confirmed.proposal_digest,
            action=request.action,
            responsible_state=confirmed.responsible_state,
            criterion=criterion_to_pb(confirmed.criterion),
            official_id=confirmed.official,
            confirmed_at=confirmed.at.isoformat(),
            log_index=confirmed.log_index,
        )

    @translated
    @logs_refusals("relay_notice")
    def RelayNotice(  # noqa: N802
        self, request: cpb.RelayNoticeRequest, context: grpc.ServicerContext
    ) -> cpb.RelayNoticeResponse:
        item_id, due = self.service.relay.relay(request.notice)
        return cpb.RelayNoticeResponse(item_id=item_id, due=due)


_COORD = "/fedmatch.rpc.v1.CoordinatorService/"

# Who may call what at the coordinator; anything else is refused (deny by default).
COORDINATOR_RULES: dict[str, AccessRule] = {
    _COORD + "GetFederation": AccessRule(frozenset({"operator", "auditor"})),
    _COORD + "RegisterKeys": AccessRule(frozenset({"operator"})),
    _COORD + "Lookup": AccessRule(frozenset({"operator"})),
    _COORD + "Resolve": AccessRule(frozenset({"operator"})),
    _COORD + "GetVerificationPackets": AccessRule(frozenset({"operator"})),
    # A data subject's answer from verified candidates, from an operator workstation.
    _COORD + "AnswerDataSubject": AccessRule(frozenset({"operator"})),
    # A node's notice to another node; the relay checks it is sent in the node's own name.
    _COORD + "RelayNotice": AccessRule(frozenset({"node"})),
    # An official's confirmation of a case proposal, from an operator workstation.
    _COORD + "ConfirmDecision": AccessRule(frozenset({"operator"})),
    **AUDIT_AND_HEALTH_RULES,
}


def serve_coordinator(
    service: CoordinatorService,
    security: Security,
    listen: str | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),  # type: ignore[type-arg]
) -> RunningServer:
    """``interceptors`` run before the access rules (the metrics interceptor, which also
    counts refusals by those rules)."""
    servicer = CoordinatorServicer(service)
    limits = ServerLimits(
        max_receive_bytes=MAX_RECEIVE_BYTES,
        max_send_bytes=MAX_LOOKUP_RESPONSE_BYTES,
        max_workers=service.config.max_workers,
    )
    audit = AuditServicer(
        service.audit.log, service.audit.auditors, checkpoint=service.published_checkpoint
    )
    # A member state (all its operators, verifiers and its node together) holds at most a
    # quarter of the threads: a lookup waits on the fan-out, so several states' lookups
    # run side by side whatever one state sends.
    workers = service.config.max_workers
    shares = PeerShares(Shares(calls=max(2, workers // 4), streams=2))

    def add(server: grpc.Server) -> None:
        coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(servicer, server)
        audit_pb2_grpc.add_AuditServiceServicer_to_server(audit, server)

    return start_server(
        add,
        listen or service.config.listen,
        limits,
        security.server_credentials(),
        [*interceptors, security.interceptor(COORDINATOR_RULES, shares=shares)],
    )
