"""Personal officer identity at the node (issue 19, item 8): enrolment and every record
lifecycle action a state asks of its own node directly is signed by the key of the
officer's own certificate, for that very request, once; the operator workstation's
certificate only makes the channel. A refusal is PERMISSION_DENIED, changes nothing and is
on the node's record; an accepted action's log entry names the signing officer."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message

from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.demo.synthetic import unit_vectors
from fedmatch.domain import Category, Purpose, QueryHeader, Sex
from fedmatch.errors import InvalidInput
from fedmatch.protocol.node_action import NODE_ACTIONS, action_digest, sign_action
from fedmatch.protocol.statement import RequestSigner, sign_request
from fedmatch.protocol.wire import header_from_pb, header_to_pb
from fedmatch.requester.enrolment import EnrolmentRecord, NodeEnroller
from fedmatch.rpc.v1 import common_pb2, node_pb2, node_pb2_grpc
from tests.federation import (
    BIRTH_DATE,
    DIM,
    MODEL,
    OPERATOR,
    OTHER_OFFICER,
    UNIT,
    Federation,
    federation,
    request_signer,
    security,
    workstation_signer,
)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("node-officers"), ("DE", "IT"), records=10) as f:
        yield f


def _header(state: str = "IT", operator: str = OPERATOR) -> QueryHeader:
    return QueryHeader(
        secrets.token_hex(16), state, Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 29",
        "C-NODE-OFFICER", UNIT, operator,
    )  # fmt: skip


def _enrolment(header: QueryHeader) -> node_pb2.EnrollRequest:
    template = unit_vectors(np.random.default_rng(), 1, DIM)[0]
    return node_pb2.EnrollRequest(
        header=header_to_pb(header),
        record=node_pb2.RecordMetadata(
            reference=f"IT-OFFICER-{secrets.token_hex(4)}",
            category=common_pb2.CATEGORY_APPLICANT,
            event_date="2026-05-01", event_place="Bari", capture_date="2026-05-01",
            birth_date=BIRTH_DATE.isoformat(),
        ),
        template=node_pb2.Template(model_id=MODEL, values=template.tolist()),
    )  # fmt: skip


def _forged(signer: RequestSigner, request: Message, method: str) -> Message:
    """``request`` with a statement ``signer``'s key made of exactly its header, whatever
    officer that names (what a forger sends: the library itself refuses to)."""
    header = request.header  # type: ignore[attr-defined]
    signed = sign_request(
        signer.key, signer.chain_pem, header_from_pb(header), NODE_ACTIONS[method],
        signer.categories, action_digest(request),
    )  # fmt: skip
    out = type(request)()
    out.CopyFrom(request)
    out.header.CopyFrom(header_to_pb(header_from_pb(header), signed))  # type: ignore[attr-defined]
    return out


def _raw(fed: Federation) -> node_pb2_grpc.NodeServiceStub:
    """IT's node over IT's workstation channel, nothing signed by the channel itself."""
    return node_pb2_grpc.NodeServiceStub(fed.node_channel("IT", "operator-IT", officer=None))


def _entries(fed: Federation, kind: EventKind, query_id: str) -> list[SignedEntry]:
    log = fed.nodes["IT"].audit.log
    return [e for e in log.iter_entries() if e.kind is kind and e.event.query_id == query_id]


def _refused(fed: Federation, call: Callable[[], object], query_id: str, message: str) -> None:
    """``call`` is refused with ``message``, logged as refused, and enrols nothing."""
    size = fed.nodes["IT"].record_count()
    refusals = len(_entries(fed, EventKind.REQUEST_REFUSED, query_id))
    enrolments = len(_entries(fed, EventKind.RECORD_ENROLLED, query_id))
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    assert message in (err.value.details() or ""), err.value.details()
    logged = _entries(fed, EventKind.REQUEST_REFUSED, query_id)
    assert len(logged) == refusals + 1
    assert logged[-1].event.reason == "permission_denied:PermissionDenied"
    assert fed.nodes["IT"].record_count() == size
    assert len(_entries(fed, EventKind.RECORD_ENROLLED, query_id)) == enrolments


def test_an_unsigned_enrolment_is_refused(fed: Federation) -> None:
    request = _enrolment(_header())
    _refused(
        fed, lambda: _raw(fed).Enroll(request, timeout=30), request.header.query_id,
        "request is not signed by the requesting authority",
    )  # fmt: skip


def test_an_enrolment_signed_with_the_workstation_key_is_refused(fed: Federation) -> None:
    request = sign_action(workstation_signer(fed.tmp, "IT"), _enrolment(_header()), "Enroll")
    _refused(
        fed, lambda: _raw(fed).Enroll(request, timeout=30), request.header.query_id,
        "request signed by a operator of IT, not by an officer of IT",
    )  # fmt: skip


def test_an_enrolment_naming_another_officer_than_its_signer_is_refused(fed: Federation) -> None:
    officer_1 = request_signer(fed.tmp, "IT", OPERATOR)
    for named in (OTHER_OFFICER, "desk-clerk"):  # another officer, or free text
        request = _forged(officer_1, _enrolment(_header(operator=named)), "Enroll")
        _refused(
            fed, lambda r=request: _raw(fed).Enroll(r, timeout=30),  # type: ignore[misc]
            request.header.query_id,  # type: ignore[attr-defined]
            "request names another officer than the one who signed it",
        )  # fmt: skip
    # The library does not sign such a request at all.
    with pytest.raises(InvalidInput, match="signed by officer 'officer-1'"):
        sign_action(officer_1, _enrolment(_header(operator=OTHER_OFFICER)), "Enroll")


def test_an_officer_of_another_state_is_refused(fed: Federation) -> None:
    german = request_signer(fed.tmp, "DE", OPERATOR)
    request = sign_action(german, _enrolment(_header()), "Enroll")
    _refused(
        fed, lambda: _raw(fed).Enroll(request, timeout=30), request.header.query_id,
        "request signed by a officer of DE, not by an officer of IT",
    )  # fmt: skip


def test_a_replayed_enrolment_is_refused(fed: Federation) -> None:
    officer = request_signer(fed.tmp, "IT")
    request = sign_action(officer, _enrolment(_header()), "Enroll")
    size = _raw(fed).Enroll(request, timeout=30).register_size
    # The same reference under a fresh signature is ALREADY_EXISTS; the same signed request
    # again is a replay, refused before the register is even looked at.
    _refused(
        fed, lambda: _raw(fed).Enroll(request, timeout=30), request.header.query_id,
        "request nonce was already used (replay)",
    )  # fmt: skip
    assert fed.nodes["IT"].record_count() == size


def test_a_signature_covers_its_own_request_only(fed: Federation) -> None:
    """A statement signed for one record's enrolment does not enrol another record, nor
    mark anything: the digest of the whole request is in what the officer signed."""
    officer = request_signer(fed.tmp, "IT")
    signed = sign_action(officer, _enrolment(_header()), "Enroll")
    other = node_pb2.EnrollRequest()
    other.CopyFrom(signed)
    other.record.reference = "IT-OFFICER-SWAPPED"
    _refused(
        fed, lambda: _raw(fed).Enroll(other, timeout=30), other.header.query_id,
        "signed statement is for another probe",
    )  # fmt: skip
    mark = node_pb2.MarkRecordRequest(
        header=signed.header, reference="IT-OFFICER-SWAPPED", marked=True,
        mark_kind="protection_granted",
    )  # fmt: skip
    _refused(
        fed, lambda: _raw(fed).MarkRecord(mark, timeout=30), mark.header.query_id,
        "signed statement is for a enrol, not a lifecycle",
    )  # fmt: skip


def test_lifecycle_actions_are_signed_and_logged_with_the_officer(fed: Federation) -> None:
    """Through the officer's channel (fedmatch.requester.officer_channel) the enrolment,
    mark and inbox listing go through, and the node logs the certificate's officer; the
    same mark unsigned is refused."""
    day = dt.date(2026, 5, 2)
    reference = f"IT-OFFICER-{secrets.token_hex(4)}"
    record = EnrolmentRecord(
        reference, Category.APPLICANT, day, "Bari", day, Sex.FEMALE, OPERATOR,
        birth_date=BIRTH_DATE,
    )  # fmt: skip
    credentials = security(fed.tmp, "operator-IT").channel_credentials()
    address = fed.servers["IT"].address
    signer = request_signer(fed.tmp, "IT")
    header = _header()
    with NodeEnroller(address, MODEL, 30.0, credentials, "IT", signer=signer) as node:
        node.enroll(header, record, unit_vectors(np.random.default_rng(5), 1, DIM)[0])
        # The enroller refuses, before sending, a header naming anyone but its officer.
        with pytest.raises(InvalidInput, match="signed by officer 'officer-1'"):
            node.enroll(_header(operator=OTHER_OFFICER), record, np.zeros(DIM))
    (enrolled,) = _entries(fed, EventKind.RECORD_ENROLLED, header.query_id)
    assert enrolled.event.operator == OPERATOR
    mark = node_pb2.MarkRecordRequest(
        header=header_to_pb(_header()), reference=reference, marked=True,
        mark_kind="protection_granted",
    )  # fmt: skip
    _refused(
        fed, lambda: _raw(fed).MarkRecord(mark, timeout=30), mark.header.query_id,
        "request is not signed by the requesting authority",
    )  # fmt: skip
    signed = node_pb2_grpc.NodeServiceStub(fed.node_channel("IT", "operator-IT"))
    assert signed.MarkRecord(mark, timeout=30).outcome == "marked"
    (marked,) = _entries(fed, EventKind.RECORD_MARKED, mark.header.query_id)
    assert marked.event.operator == OPERATOR
    inbox = node_pb2.ListInboxRequest(header=header_to_pb(_header()))
    signed.ListInbox(inbox, timeout=30)
    _refused(
        fed, lambda: _raw(fed).ListInbox(inbox, timeout=30), inbox.header.query_id,
        "request is not signed by the requesting authority",
    )  # fmt: skip
