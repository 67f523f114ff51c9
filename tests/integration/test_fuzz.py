"""Fuzzing every RPC of a live node and coordinator: random bytes and structured garbage
get only expected status codes, never a crash, and honest requests keep working."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedmatch.grpcutil.server import make_channel
from fedmatch.rpc.v1 import common_pb2, coordinator_pb2, node_pb2
from fedmatch.synthetic import unit_vectors
from tests.federation import DIM, Federation, federation, header

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
    address = fed.servers["IT"].address if target == "node" else fed.coordinator_server.address
    channel = make_channel(address, 64 << 20, 8 << 20)
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
_headers = st.builds(
    common_pb2.RequestHeader,
    query_id=st.one_of(_text, st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)),
    requesting_state=st.sampled_from(["DE", "IT", "FR", "XX", "", "de"]),
    purpose=st.integers(min_value=0, max_value=9),
    legal_basis=_text,
    case_reference=_text,
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
            application_date=_text,
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


def test_honest_lookup_after_the_fuzzing(fed: Federation) -> None:
    report = fed.requester("DE").lookup(
        unit_vectors(np.random.default_rng(), 1, DIM)[0], header("DE")
    )
    assert [(n.member_state, n.outcome) for n in report.nodes] == [("IT", "ok")]
