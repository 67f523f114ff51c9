"""Fuzzing every RPC of a live node and coordinator: random bytes and structured garbage
get only expected status codes, never a crash, and honest requests keep working. The fuzzer
calls over mTLS as the party allowed to call each method, so that its bytes reach the
servicers (and signed statements their parser), not just the access check."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedmatch.demo.synthetic import unit_vectors
from fedmatch.protocol.statement import RequestStatement
from fedmatch.protocol.wire import header_to_pb
from fedmatch.rpc.v1 import common_pb2, coordinator_pb2, node_pb2
from tests.federation import (
    DIM,
    Federation,
    coordinator_channel,
    federation,
    header,
    node_channel,
    pki,
)

EXPECTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    # grpcio's own answer to a body that does not parse as the request message.
    grpc.StatusCode.INTERNAL,
}

NODE_METHODS = ["Enroll", "RegisterKeys", "Search", "GetHitDetails", "GetInfo"]
COORD_METHODS = ["GetFederation", "RegisterKeys", "Lookup", "Resolve"]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("fuzz"), ("DE", "IT"), records=30) as f:
        yield f


def _raw_call(
    fed: Federation, target: str, service: str, method: str, body: bytes, parses: bool = False
) -> None:
    """Send ``body``; only expected codes may come back. A body that ``parses`` as the
    request must never meet INTERNAL: that would be an unexpected exception in our code."""
    if target == "node":
        # Enrolment is for IT's own operators; everything else at a node, the coordinator's.
        party = "operator-IT" if method == "Enroll" else "coordinator"
        channel = node_channel(fed.tmp, "IT", fed.servers["IT"].address, party, 64 << 20, 8 << 20)
    else:
        channel = coordinator_channel(
            fed.tmp, fed.coordinator_server.address, "operator-DE", 64 << 20, 8 << 20
        )
    try:
        call = channel.unary_unary(
            f"/fedmatch.rpc.v1.{service}/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            call(body, timeout=20)
        except grpc.RpcError as err:
            assert err.code() in EXPECTED, (method, err.code(), err.details())
            assert not (parses and err.code() == grpc.StatusCode.INTERNAL), err.details()
            # Internal errors carry no detail beyond our fixed text or grpcio's parse error.
            if err.code() == grpc.StatusCode.INTERNAL:
                assert "Traceback" not in (err.details() or "")
    finally:
        channel.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=st.sampled_from(NODE_METHODS), body=st.binary(max_size=2048))
def test_node_survives_random_bytes(fed: Federation, method: str, body: bytes) -> None:
    _raw_call(fed, "node", "NodeService", method, body)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=st.sampled_from(COORD_METHODS), body=st.binary(max_size=2048))
def test_coordinator_survives_random_bytes(fed: Federation, method: str, body: bytes) -> None:
    _raw_call(fed, "coordinator", "CoordinatorService", method, body)


_text = st.text(max_size=40)
_hex32 = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
# Signed statements: random bytes, and canonical statements with random fields.
_statements = st.one_of(
    st.binary(max_size=600),
    st.builds(
        lambda **kw: RequestStatement(**kw).encode(),
        kind=st.sampled_from(["lookup", "resolve", "x"]),
        query_id=st.one_of(_text, _hex32),
        requesting_state=st.sampled_from(["DE", "IT", "XX"]),
        purpose=_text,
        legal_basis=_text,
        case_reference=_text,
        unit=_text,
        operator=_text,
        categories=st.lists(_text, max_size=4).map(tuple),
        probe_hash=_text,
        nonce=st.one_of(_text, _hex32),
        issued_ms=st.integers(min_value=0, max_value=2**53),
        signer=_text,
        prior_check=_text,
        urgent=st.booleans(),
    ),
)
_signature = st.builds(
    common_pb2.RequestSignature,
    statement=_statements,
    signature=st.one_of(st.binary(min_size=64, max_size=64), st.binary(max_size=80)),
    signer_chain=st.one_of(
        st.binary(max_size=300),
        st.just(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
    ),
    approval=st.one_of(st.just(b""), st.binary(min_size=64, max_size=64)),
    approver_chain=st.binary(max_size=100),
)
_signatures = st.one_of(st.none(), _signature)
_headers = st.builds(
    common_pb2.RequestHeader,
    query_id=st.one_of(_text, _hex32),
    requesting_state=st.sampled_from(["DE", "IT", "FR", "XX", "", "de"]),
    purpose=st.integers(min_value=0, max_value=9),
    legal_basis=_text,
    case_reference=_text,
    requesting_unit=st.one_of(st.just(""), _text),
    operator_id=st.one_of(st.just(""), _text),
    signed=_signatures,
)
_probes = st.builds(
    common_pb2.EncryptedProbe,
    he_param_set=st.sampled_from(["ckks-n8192-q60.50.60-c", "", "x"]),
    ciphertext=st.binary(max_size=4096),
    model_id=st.sampled_from(["sface-2021dec-int8bq", "other"]),
    dimension=st.integers(min_value=0, max_value=5000),
    key_id=st.one_of(_text, st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    request=st.one_of(
        st.builds(node_pb2.SearchRequest, header=_headers, probe=_probes, threshold_version=_text),
        st.builds(
            node_pb2.HitDetailsRequest, header=_headers, handles=st.lists(st.binary(max_size=12))
        ),
        st.builds(
            node_pb2.EnrollRequest,
            header=_headers,
            record=st.builds(
                node_pb2.RecordMetadata,
                reference=_text,
                category=st.integers(0, 9),
                event_date=_text,
                event_place=_text,
                capture_date=_text,
                sex=st.integers(0, 5),
            ),
            template=st.builds(
                node_pb2.Template,
                model_id=st.sampled_from(["sface-2021dec-int8bq", "x"]),
                values=st.lists(st.floats(width=32), max_size=200),
            ),
        ),
    )
)
def test_node_survives_structured_garbage(fed: Federation, request: object) -> None:
    method = {
        "SearchRequest": "Search",
        "HitDetailsRequest": "GetHitDetails",
        "EnrollRequest": "Enroll",
    }[type(request).__name__]
    _raw_call(fed, "node", "NodeService", method, request.SerializeToString(), True)  # type: ignore[attr-defined]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    request=st.one_of(
        st.builds(coordinator_pb2.LookupRequest, header=_headers, probe=_probes),
        st.builds(
            coordinator_pb2.ResolveRequest,
            header=_headers,
            application_date=st.one_of(_text, st.just("2026-11-21")),
            hits=st.lists(
                st.builds(
                    coordinator_pb2.HitRef,
                    member_state=st.sampled_from(["IT", "DE", "ZZ", ""]),
                    handle=st.binary(max_size=12),
                ),
                max_size=5,
            ),
        ),
    )
)
def test_coordinator_survives_structured_garbage(fed: Federation, request: object) -> None:
    method = "Lookup" if type(request).__name__ == "LookupRequest" else "Resolve"
    _raw_call(fed, "coordinator", "CoordinatorService", method, request.SerializeToString(), True)  # type: ignore[attr-defined]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(signed=_signature, real_chain=st.booleans())
def test_coordinator_survives_garbage_signed_statements(
    fed: Federation, signed: common_pb2.RequestSignature, real_chain: bool
) -> None:
    """A well-formed resolve from DE's operator whose signed statement is garbage (with,
    half the time, the operator's real certificate chain): every one reaches the statement's
    parser and gets a clear refusal."""
    if real_chain:
        signed.signer_chain = pki(fed.tmp)["operator-DE"].tls.chain.read_bytes()
    request = coordinator_pb2.ResolveRequest(
        header=header_to_pb(header("DE")), application_date="2026-11-21"
    )
    request.header.signed.CopyFrom(signed)
    _raw_call(
        fed, "coordinator", "CoordinatorService", "Resolve", request.SerializeToString(), True
    )


def test_honest_lookup_after_the_fuzzing(fed: Federation) -> None:
    report = fed.requester("DE").lookup(
        unit_vectors(np.random.default_rng(), 1, DIM)[0], header("DE")
    )
    assert [(n.member_state, n.outcome) for n in report.nodes] == [("IT", "ok")]
